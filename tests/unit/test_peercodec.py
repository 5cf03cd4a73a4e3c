"""Peer frame codec: the Cython module against the pure-Python reference,
round trips, frame packing, and truncated/garbled/oversized input."""
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastkv.raft import _peercodec as cy
from fastkv.raft import peercodec_ref as ref
from fastkv.raft.messages import (
    MSG_APP,
    MSG_HEARTBEAT,
    MSG_NAMES,
    MSG_SNAP,
    ConfState,
    Message,
    SnapshotMeta,
)
from fastkv.storage.wal import Entry

BOTH = pytest.mark.parametrize("codec", [cy, ref], ids=["cython", "ref"])

U64 = st.integers(0, (1 << 64) - 1)
entry_st = st.builds(Entry, U64, U64, st.integers(0, 255), st.binary(max_size=200))
snap_st = st.none() | st.builds(
    SnapshotMeta, U64, U64,
    st.builds(ConfState, st.lists(U64, max_size=5), st.lists(U64, max_size=5)))
msg_st = st.builds(
    Message, st.integers(0, max(MSG_NAMES)), U64, U64, U64, U64, U64,
    st.lists(entry_st, max_size=8), U64, st.booleans(), U64, st.binary(max_size=40), snap_st)
msgs_st = st.lists(msg_st, max_size=6)


def sample(n_entries=5, seed=7):
    rng = random.Random(seed)
    ents = [Entry(3, 100 + i, rng.randrange(2), rng.randbytes(rng.randrange(0, 60)))
            for i in range(n_entries)]
    return [
        Message(MSG_APP, to=2, frm=1, term=3, log_term=3, index=99, entries=ents, commit=98),
        Message(MSG_HEARTBEAT, to=2, frm=1, term=3, commit=98, context=b"read-ctx"),
        Message(MSG_SNAP, to=2, frm=1, term=3, reject=True, reject_hint=7,
                snapshot=SnapshotMeta(90, 2, ConfState([1, 2, 3], [4]))),
    ]


def outcome(fn, *args):
    """('ok', result) or ('err', type, message), to compare both codecs on bad input."""
    try:
        return ("ok", fn(*args))
    except (ValueError, TypeError, OverflowError) as exc:
        return ("err", type(exc), str(exc))


def test_constants_match():
    names = [n for n in dir(ref) if n.isupper() and not n.startswith("_")]
    assert names
    for name in names:
        assert getattr(cy, name) == getattr(ref, name), name
    assert cy.MAX_MSG_TYPE == max(MSG_NAMES)
    assert cy.DEFAULT_MAX_FRAME == 8 << 20
    assert cy.MSG_HEAD_SIZE == struct.calcsize("<BBQQQQQQQII")
    assert cy.ENTRY_HEAD_SIZE == struct.calcsize("<QQBI")


def test_layout_by_hand():
    m = Message(MSG_APP, to=2, frm=1, term=5, log_term=4, index=10, commit=9, reject=True,
                reject_hint=8, context=b"cx", entries=[Entry(5, 11, 1, b"data")],
                snapshot=SnapshotMeta(7, 3, ConfState([1, 2], [3])))
    want = (struct.pack("<I", 1)
            + struct.pack("<BBQQQQQQQII", MSG_APP, 3, 2, 1, 5, 4, 10, 9, 8, 2, 1) + b"cx"
            + struct.pack("<QQII", 7, 3, 2, 1) + struct.pack("<QQQ", 1, 2, 3)
            + struct.pack("<QQBI", 5, 11, 1, 4) + b"data")
    assert cy.encode_messages([m]) == ref.encode_messages([m]) == want
    assert cy.message_size(m) == ref.message_size(m) == len(want) - 4
    assert cy.encode_frame(cy.FRAME_MSGS, want) == struct.pack("<IB", len(want), 4) + want
    frames, too_big = cy.frame_messages([m])
    assert frames == [struct.pack("<IB", len(want), 4) + want] and too_big == []


@settings(max_examples=300, deadline=None)
@given(msgs_st)
def test_identical_and_round_trips(msgs):
    out = cy.encode_messages(msgs)
    assert out == ref.encode_messages(msgs)
    assert cy.decode_messages(out) == msgs
    assert ref.decode_messages(out) == msgs
    assert len(out) == 4 + sum(cy.message_size(m) for m in msgs)
    assert [cy.message_size(m) for m in msgs] == [ref.message_size(m) for m in msgs]


@settings(max_examples=200, deadline=None)
@given(msgs_st, st.integers(70, 3000))
def test_frame_messages_packs_in_order_under_the_cap(msgs, cap):
    frames, too_big = cy.frame_messages(msgs, cap)
    assert (frames, too_big) == ref.frame_messages(msgs, cap)
    assert too_big == [m for m in msgs if cy.message_size(m) + 4 > cap]
    got = []
    for i, frame in enumerate(frames):
        length, ftype = cy.parse_frame_header(frame[:5], cap)
        assert ftype == cy.FRAME_MSGS and length == len(frame) - 5 <= cap
        batch = cy.decode_messages(frame[5:])
        assert batch
        if i:  # greedy: the first message of this frame did not fit in the previous one
            assert len(frames[i - 1]) - 5 + cy.message_size(batch[0]) > cap
        got.extend(batch)
    assert got == [m for m in msgs if cy.message_size(m) + 4 <= cap]


def test_frame_messages_big_cap_is_one_frame():
    msgs = sample(50)
    frames, too_big = cy.frame_messages(msgs)
    assert too_big == [] and len(frames) == 1
    assert frames[0] == cy.encode_frame(cy.FRAME_MSGS, cy.encode_messages(msgs))
    assert cy.frame_messages([]) == ref.frame_messages([]) == ([], [])


@BOTH
def test_truncation_at_every_offset(codec):
    out = cy.encode_messages(sample(4))
    for cut in range(len(out)):
        with pytest.raises(ValueError):
            codec.decode_messages(out[:cut])
        assert outcome(cy.decode_messages, out[:cut]) == outcome(ref.decode_messages, out[:cut])


@BOTH
def test_trailing_bytes(codec):
    out = cy.encode_messages(sample(2))
    with pytest.raises(ValueError, match="trailing"):
        codec.decode_messages(out + b"\0")


@BOTH
def test_absurd_length_fields_are_checked_before_use(codec):
    """Counts and lengths are checked against what is left, never allocated."""
    with pytest.raises(ValueError, match="cannot fit"):
        codec.decode_messages(struct.pack("<I", 0xFFFFFFFF) + bytes(100))
    head = struct.pack("<BBQQQQQQQII", MSG_APP, 0, 2, 1, 1, 1, 1, 1, 0, 0, 0xFFFFFFFF)
    with pytest.raises(ValueError, match="entries"):
        codec.decode_messages(struct.pack("<I", 1) + head + bytes(40))
    head = struct.pack("<BBQQQQQQQII", MSG_APP, 0, 2, 1, 1, 1, 1, 1, 0, 0xFFFFFFF0, 0)
    with pytest.raises(ValueError, match="context"):
        codec.decode_messages(struct.pack("<I", 1) + head)
    head = struct.pack("<BBQQQQQQQII", MSG_APP, 0, 2, 1, 1, 1, 1, 1, 0, 0, 1)
    ent = struct.pack("<QQBI", 1, 1, 0, 0xFFFFFFFF)
    with pytest.raises(ValueError, match="entry data"):
        codec.decode_messages(struct.pack("<I", 1) + head + ent + b"abc")
    head = struct.pack("<BBQQQQQQQII", MSG_SNAP, 2, 2, 1, 1, 1, 1, 1, 0, 0, 0)
    snap = struct.pack("<QQII", 1, 1, 3, 0xFFFFFFFF)
    with pytest.raises(ValueError, match="learners"):
        codec.decode_messages(struct.pack("<I", 1) + head + snap + bytes(64))


@BOTH
def test_unknown_type_and_flags(codec):
    good = bytearray(cy.encode_messages([Message(MSG_HEARTBEAT, to=2, frm=1)]))
    bad = bytearray(good)
    bad[4] = max(MSG_NAMES) + 1
    with pytest.raises(ValueError, match="unknown message type"):
        codec.decode_messages(bytes(bad))
    bad = bytearray(good)
    bad[5] = 4
    with pytest.raises(ValueError, match="unknown flags"):
        codec.decode_messages(bytes(bad))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_identically(data):
    assert outcome(cy.decode_messages, data) == outcome(ref.decode_messages, data)


@settings(max_examples=300, deadline=None)
@given(msgs_st, st.integers(0, 10_000), st.integers(0, 255))
def test_random_corruption_decodes_identically_or_fails_cleanly(msgs, pos, newbyte):
    out = bytearray(cy.encode_messages(msgs))
    out[pos % len(out)] = newbyte
    res = outcome(cy.decode_messages, bytes(out))
    assert res == outcome(ref.decode_messages, bytes(out))
    assert res[0] == "ok" or res[1] is ValueError


@BOTH
def test_frame_header(codec):
    assert codec.parse_frame_header(struct.pack("<IB", 10, 4), 10) == (10, 4)
    with pytest.raises(ValueError, match="over the limit"):
        codec.parse_frame_header(struct.pack("<IB", 11, 4), 10)
    with pytest.raises(ValueError, match="over the limit"):
        codec.parse_frame_header(struct.pack("<IB", 0xFFFFFFFF, 4))
    for t in (0, cy.MAX_FRAME_TYPE + 1, 255):
        with pytest.raises(ValueError, match="unknown frame type"):
            codec.parse_frame_header(struct.pack("<IB", 1, t))
    with pytest.raises(ValueError):
        codec.parse_frame_header(b"\0\0\0\0")
    assert codec.encode_frame(3, b"") == b"\0\0\0\0\3"
    assert codec.encode_frame(9, memoryview(b"xyz")) == b"\3\0\0\0\x09xyz"
    with pytest.raises(ValueError):
        codec.encode_frame(0, b"")
    with pytest.raises(ValueError):
        codec.encode_frame(256, b"")


@BOTH
def test_bad_messages_to_encode(codec):
    with pytest.raises(ValueError, match="unknown message type"):
        codec.encode_messages([Message(max(MSG_NAMES) + 1)])
    with pytest.raises(ValueError, match="unknown message type"):
        codec.encode_messages([Message(-1)])
    with pytest.raises(OverflowError):
        codec.encode_messages([Message(MSG_APP, to=-1)])
    with pytest.raises(OverflowError):
        codec.encode_messages([Message(MSG_APP, term=1 << 64)])
    with pytest.raises(OverflowError):
        codec.encode_messages([Message(MSG_APP, entries=[Entry(1, 1, 256, b"")])])
    with pytest.raises(OverflowError):
        codec.encode_messages([Message(MSG_SNAP, snapshot=SnapshotMeta(1, 1, ConfState([-1])))])
    with pytest.raises(TypeError):
        codec.encode_messages([Message(MSG_APP, entries=[Entry(1, 1, 0, "str")])])
    with pytest.raises(TypeError):
        codec.encode_messages([Message(MSG_APP, context="str")])


@BOTH
def test_buffer_types(codec):
    msgs = sample(3)
    want = cy.encode_messages(msgs)
    alt = [Message(m.type, m.to, m.frm, m.term, m.log_term, m.index,
                   [Entry(e.term, e.index, e.type, bytearray(e.data)) for e in m.entries],
                   m.commit, m.reject, m.reject_hint, memoryview(m.context), m.snapshot)
           for m in msgs]
    assert codec.encode_messages(alt) == want
    assert codec.encode_messages(tuple(msgs)) == want
    assert codec.encode_messages(iter(msgs)) == want
    for buf in (bytearray(want), memoryview(want), memoryview(b"xx" + want)[2:]):
        assert codec.decode_messages(buf) == msgs
    decoded = codec.decode_messages(want)
    assert all(type(e.data) is bytes for m in decoded for e in m.entries)
    assert all(type(m.context) is bytes and type(m.reject) is bool for m in decoded)


def test_large_batch():
    rng = random.Random(3)
    ents = [Entry(2, i, 0, rng.randbytes(100)) for i in range(1000)]
    msgs = [Message(MSG_APP, to=2, frm=1, term=2, index=i, entries=ents[i:i + 100])
            for i in range(0, 1000, 100)]
    out = cy.encode_messages(msgs)
    assert out == ref.encode_messages(msgs)
    assert cy.decode_messages(out) == msgs
    # A cap that forces many frames, and one message too big for any.
    big = Message(MSG_APP, to=2, frm=1, entries=[Entry(1, 1, 0, bytes(20_000))])
    frames, too_big = cy.frame_messages(msgs[:3] + [big] + msgs[3:], 15_000)
    assert too_big == [big]
    assert (frames, too_big) == ref.frame_messages(msgs[:3] + [big] + msgs[3:], 15_000)
    assert [m for f in frames for m in cy.decode_messages(f[5:])] == msgs
