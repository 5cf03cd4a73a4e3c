"""WAL record codec: the Cython module against the pure-Python reference,
round trips, torn tails, bit flips and resynchronisation."""
import mmap
import os
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastkv.crc32c_ref import crc32c as crc32c_ref
from fastkv.storage import _walcodec as cy
from fastkv.storage import walcodec_ref as ref

BOTH = pytest.mark.parametrize("codec", [cy, ref], ids=["cython", "ref"])

U64 = st.integers(0, (1 << 64) - 1)
entries_st = st.lists(
    st.tuples(U64, U64, st.integers(0, 255), st.binary(max_size=300)), max_size=12)
hardstate_st = st.none() | st.tuples(U64, U64, U64)
records_st = st.lists(st.tuples(st.integers(1, 255), st.binary(max_size=300)), max_size=12)
seq_st = st.integers(0, (1 << 32) - 1)


def sample_batch(n=5, seed=7, hardstate=(3, 2, 40)):
    rng = random.Random(seed)
    entries = [(3, 100 + i, rng.randrange(3), rng.randbytes(rng.randrange(1, 90)))
               for i in range(n)]
    return entries, cy.encode_entries(11, entries, hardstate)


def record_offsets(buf):
    """Offsets of the records of a well-formed buffer and its end."""
    offs, off = [], 0
    while off < len(buf):
        (length,) = struct.unpack_from("<I", buf, off)
        offs.append(off)
        off += 16 + ((length + 7) & ~7)
    return offs, off


def test_constants_match():
    for name in ("HEADER_SIZE", "TYPE_ENTRY", "TYPE_HARDSTATE", "TYPE_SNAPSHOT",
                 "TYPE_METADATA", "FLAG_BATCH_END", "MAX_PAYLOAD"):
        assert getattr(cy, name) == getattr(ref, name)
    assert (cy.HEADER_SIZE, cy.TYPE_ENTRY, cy.TYPE_HARDSTATE, cy.TYPE_SNAPSHOT,
            cy.TYPE_METADATA, cy.FLAG_BATCH_END, cy.MAX_PAYLOAD) == (16, 1, 2, 3, 4, 1, 1 << 30)


def test_record_layout_by_hand():
    """One record built field by field from the spec."""
    payload = b"hello"
    out = cy.encode_batch(0x01020304, [(4, payload)])
    length, crc, seq, rtype, flags, reserved = struct.unpack_from("<IIIBBH", out)
    assert (length, seq, rtype, flags, reserved) == (5, 0x01020304, 4, 1, 0)
    assert len(out) == 24 and out[16:21] == payload and out[21:] == b"\0\0\0"
    assert crc == crc32c_ref(out[0:4] + out[8:16] + payload)
    assert out == ref.encode_batch(0x01020304, [(4, payload)])


@settings(max_examples=200, deadline=None)
@given(seq_st, entries_st, hardstate_st)
def test_encode_entries_identical_and_round_trips(seq, entries, hardstate):
    out = cy.encode_entries(seq, entries, hardstate)
    assert out == ref.encode_entries(seq, entries, hardstate)
    assert len(out) % 8 == 0
    for codec in (cy, ref):
        records, end, clean = codec.decode(out)
        assert (end, clean) == (len(out), True)
        n = len(entries) + (hardstate is not None)
        assert len(records) == n
        for i, (off, rseq, rtype, flags, payload) in enumerate(records):
            assert rseq == seq
            assert flags == (cy.FLAG_BATCH_END if i == n - 1 else 0)
            if i < len(entries):
                assert rtype == cy.TYPE_ENTRY
                assert codec.decode_entry(payload) == entries[i]
            else:
                assert rtype == cy.TYPE_HARDSTATE
                assert codec.decode_hardstate(payload) == hardstate


@settings(max_examples=200, deadline=None)
@given(seq_st, records_st)
def test_encode_batch_identical_and_round_trips(seq, records):
    out = cy.encode_batch(seq, records)
    assert out == ref.encode_batch(seq, records)
    assert cy.decode(out) == ref.decode(out)
    got, end, clean = cy.decode(out)
    assert (end, clean) == (len(out), True)
    assert [(r[2], r[4]) for r in got] == records
    assert [r[3] for r in got] == [0] * (len(records) - 1) + [1] * bool(records)
    offs, _ = record_offsets(out)
    assert [r[0] for r in got] == offs


def test_encode_entries_equals_encode_batch():
    entries, out = sample_batch()
    records = [(cy.TYPE_ENTRY, struct.pack("<QQB", t, i, et) + d) for t, i, et, d in entries]
    records.append((cy.TYPE_HARDSTATE, cy.encode_hardstate(3, 2, 40)))
    assert out == cy.encode_batch(11, records) == ref.encode_batch(11, records)


@BOTH
def test_empty_inputs(codec):
    assert codec.encode_batch(1, []) == b""
    assert codec.encode_entries(1, []) == b""
    assert codec.decode(b"") == ([], 0, True)
    only_hs = codec.encode_entries(1, [], (1, 2, 3))
    (rec,), end, clean = codec.decode(only_hs)
    assert rec[2:4] == (cy.TYPE_HARDSTATE, cy.FLAG_BATCH_END) and clean


@BOTH
def test_payload_helpers(codec):
    hs = codec.encode_hardstate(1, 2, (1 << 64) - 1)
    assert hs == ref.encode_hardstate(1, 2, (1 << 64) - 1) == struct.pack("<QQQ", 1, 2, (1 << 64) - 1)
    assert codec.decode_hardstate(hs) == (1, 2, (1 << 64) - 1)
    snap = codec.encode_snapshot(500, 7)
    assert snap == struct.pack("<QQ", 500, 7)
    assert codec.decode_snapshot(snap) == (500, 7)
    assert codec.decode_entry(struct.pack("<QQB", 5, 6, 1) + b"data") == (5, 6, 1, b"data")
    assert codec.decode_entry(memoryview(struct.pack("<QQB", 5, 6, 1))) == (5, 6, 1, b"")
    with pytest.raises(ValueError):
        codec.decode_entry(b"\0" * 16)
    with pytest.raises(ValueError):
        codec.decode_hardstate(b"\0" * 23)
    with pytest.raises(ValueError):
        codec.decode_snapshot(b"\0" * 17)


@BOTH
def test_bad_arguments(codec):
    with pytest.raises(ValueError):
        codec.encode_batch(1, [(0, b"x")])
    with pytest.raises(ValueError):
        codec.encode_batch(1, [(256, b"x")])
    with pytest.raises(OverflowError):
        codec.encode_batch(1 << 32, [(1, b"x")])
    with pytest.raises(OverflowError):
        codec.encode_entries(-1, [(1, 1, 0, b"")])
    with pytest.raises(OverflowError):
        codec.encode_entries(1, [(-1, 1, 0, b"")])
    with pytest.raises(OverflowError):
        codec.encode_entries(1, [(1, 1 << 64, 0, b"")])
    with pytest.raises(OverflowError):
        codec.encode_entries(1, [(1, 1, 256, b"")])
    with pytest.raises(OverflowError):
        codec.encode_entries(1, [], (1, -2, 3))
    with pytest.raises(TypeError):
        codec.encode_entries(1, [(1, 1, 0, "str")])
    with pytest.raises(ValueError):
        codec.decode(b"\0" * 16, 17)
    with pytest.raises(ValueError):
        codec.decode(b"\0" * 16, -1)


@BOTH
def test_buffer_types(codec, tmp_path):
    entries, out = sample_batch()
    want = cy.decode(out)
    data = out + bytes(4096)
    for buf in (bytearray(data), memoryview(data), memoryview(b"xx" + data)[2:]):
        assert codec.decode(buf) == want
    path = tmp_path / "seg"
    path.write_bytes(data)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        assert codec.decode(m) == want
        assert codec.find_next_valid(m, 0) == cy.find_next_valid(data, 0)
    # Any sequence of records; entry data may be any bytes-like object.
    assert codec.encode_entries(11, tuple(entries), (3, 2, 40)) == out
    assert codec.encode_batch(5, ((1, b"a"), (2, b"b"))) == cy.encode_batch(5, [(1, b"a"), (2, b"b")])
    e2 = [(t, i, et, bytearray(d)) for t, i, et, d in entries]
    assert codec.encode_entries(11, e2, (3, 2, 40)) == out
    e3 = [(t, i, et, memoryview(d)) for t, i, et, d in entries]
    assert codec.encode_entries(11, e3, (3, 2, 40)) == out


@BOTH
def test_decode_from_start(codec):
    _, out = sample_batch()
    offs, _ = record_offsets(out)
    full, _, _ = codec.decode(out)
    for k, off in enumerate(offs):
        records, end, clean = codec.decode(out, off)
        assert records == full[k:] and (end, clean) == (len(out), True)
    assert codec.decode(out, len(out)) == ([], len(out), True)


@BOTH
def test_zero_tail_is_clean(codec):
    _, out = sample_batch()
    full, _, _ = codec.decode(out)
    for pad in range(0, 41):
        assert codec.decode(out + bytes(pad)) == (full, len(out), True)
    # A non-zero tail shorter than a header is a bad (torn) record.
    for pad in range(1, 16):
        tail = bytearray(pad)
        tail[-1] = 1
        assert codec.decode(out + bytes(tail)) == (full, len(out), False)
    # Two batches back to back, then the preallocated zeros.
    _, out2 = sample_batch(3, seed=9)
    buf = out + out2 + bytes(64)
    records, end, clean = codec.decode(buf)
    assert (end, clean) == (len(out) + len(out2), True)
    assert len(records) == len(full) + 4


@BOTH
@pytest.mark.parametrize("zero_fill", [False, True], ids=["truncated", "preallocated"])
def test_truncation_at_every_offset(codec, zero_fill):
    """A write torn at any byte decodes to the records wholly written, and
    reports the partial one as bad at its offset (or, in a preallocated
    segment, as the clean end when what was written of it is all zeros)."""
    _, out = sample_batch(4)
    offs, total = record_offsets(out)
    full, _, _ = cy.decode(out)
    for cut in range(len(out) + 1):
        buf = out[:cut] + (bytes(64) if zero_fill else b"")
        records, end, clean = codec.decode(buf)
        # A record survives when all its bytes are there. In a zero-filled
        # segment, its trailing zeros (padding, zero bytes at the end of the
        # payload) are there before they are written.
        done = 0
        for off, rec in zip(offs, full):
            rec_end = off + 16 + ((len(rec[4]) + 7) & ~7)
            if buf[off:rec_end] != out[off:rec_end]:
                break
            done += 1
        assert records == full[:done], cut
        assert end == (offs[done] if done < len(offs) else total), cut
        assert clean == (not any(buf[end:end + 16])), cut
        if not zero_fill and cut not in offs and cut != total:
            assert not clean or not any(buf[end:]), cut


@pytest.mark.parametrize("codec", [cy, ref], ids=["cython", "ref"])
def test_every_single_bit_flip_is_detected(codec):
    entries, out = sample_batch(3, seed=3)
    out += bytes(32)  # preallocated tail
    offs, total = record_offsets(out[:len(out) - 32])
    full, _, _ = cy.decode(out)
    buf = bytearray(out)
    for k, off in enumerate(offs):
        rec_end = offs[k + 1] if k + 1 < len(offs) else total
        for byte in range(off, rec_end):
            for bit in range(8):
                buf[byte] ^= 1 << bit
                records, end, clean = codec.decode(buf)
                buf[byte] ^= 1 << bit
                assert (records, end, clean) == (full[:k], off, False), (byte, bit)


def forge(length_field, seq, rtype, flags, reserved, payload, padding=None):
    """A record with a correct CRC but whatever header fields we like."""
    tail = struct.pack("<IBBH", seq, rtype, flags, reserved)
    head = struct.pack("<I", length_field)
    crc = crc32c_ref(payload, crc32c_ref(tail, crc32c_ref(head)))
    pad = bytes(-len(payload) % 8) if padding is None else padding
    return head + struct.pack("<I", crc) + tail + payload + pad


@BOTH
@pytest.mark.parametrize("what", ["ok", "type0", "flags", "reserved", "padding", "too_long",
                                  "past_end"])
def test_header_checks_beyond_crc(codec, what):
    """Records whose CRC matches but whose header is not sane are bad, both
    for decode and for find_next_valid."""
    _, good = sample_batch(1, hardstate=None)  # one record at offset 0
    payload = b"abc"
    forged = {
        "ok": forge(3, 1, 4, 1, 0, payload),
        "type0": forge(3, 1, 0, 1, 0, payload),
        "flags": forge(3, 1, 4, 3, 0, payload),
        "reserved": forge(3, 1, 4, 1, 1, payload),
        "padding": forge(3, 1, 4, 1, 0, payload, padding=b"\0\0\0\0\1"),
        "too_long": forge((1 << 30) + 1, 1, 4, 1, 0, payload),
        "past_end": forge(300, 1, 4, 1, 0, payload),
    }[what]
    buf = good + forged + bytes(8)
    records, end, clean = codec.decode(buf)
    if what == "ok":
        assert clean and records[-1][1:] == (1, 4, 1, payload)
        assert codec.find_next_valid(buf, 0) == (len(good), 1, 4, 1)
    else:
        assert (len(records), end, clean) == (1, len(good), False)
        assert codec.find_next_valid(buf, 0) is None


@BOTH
def test_find_next_valid_after_corruption(codec):
    _, out = sample_batch(5)
    offs, total = record_offsets(out)
    full, _, _ = cy.decode(out)
    buf = bytearray(out + bytes(256))
    for k, off in enumerate(offs):
        buf[off + 20] ^= 0x40  # corrupt record k's payload
        records, end, clean = codec.decode(buf)
        assert (end, clean) == (off, False)
        nxt = codec.find_next_valid(buf, end)
        if k + 1 < len(offs):
            o = offs[k + 1]
            assert nxt == (o, full[k + 1][1], full[k + 1][2], full[k + 1][3])
            assert codec.decode(buf, o)[0] == full[k + 1:]
        else:
            assert nxt is None  # only zeros follow: a torn tail, not corruption
        buf[off + 20] ^= 0x40
    # Strictly after start, 8-byte aligned, from anywhere.
    assert codec.find_next_valid(buf, -1)[0] == 0
    assert codec.find_next_valid(buf, 0)[0] == offs[1]
    assert codec.find_next_valid(buf, 1)[0] == offs[1]
    assert codec.find_next_valid(buf, offs[1] - 1)[0] == offs[1]
    assert codec.find_next_valid(buf, offs[1])[0] == offs[2]
    assert codec.find_next_valid(buf, len(buf)) is None
    assert codec.find_next_valid(b"", 0) is None


@BOTH
def test_find_next_valid_skips_garbage(codec):
    rng = random.Random(5)
    _, good = sample_batch(2, seed=1)
    garbage = bytes(rng.getrandbits(8) for _ in range(800))
    buf = garbage + good + bytes(16)
    records, end, clean = codec.decode(buf)
    assert (records, end, clean) == ([], 0, False)
    found = codec.find_next_valid(buf, 0)
    assert found is not None and found[0] == len(garbage)
    assert [r[4] for r in codec.decode(buf, found[0])[0]] == [r[4] for r in cy.decode(good)[0]]


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=400), st.integers(0, 399))
def test_arbitrary_bytes_decode_identically(data, start):
    """On any input, including garbage, both implementations agree."""
    start = min(start, len(data))
    assert cy.decode(data, start) == ref.decode(data, start)
    assert cy.find_next_valid(data, start) == ref.find_next_valid(data, start)


@settings(max_examples=100, deadline=None)
@given(entries_st, hardstate_st, st.integers(0, 2000), st.integers(0, 7), st.integers(0, 255))
def test_random_corruption_decodes_identically(entries, hardstate, pos, bit, newbyte):
    out = bytearray(cy.encode_entries(1, entries, hardstate) + bytes(24))
    if out:
        out[pos % len(out)] ^= 1 << bit
        out[(pos * 7) % len(out)] = newbyte
    assert cy.decode(out) == ref.decode(out)
    for s in (0, 5, 8, 40):
        assert cy.find_next_valid(out, s) == ref.find_next_valid(out, s)


def test_large_batch():
    entries = [(2, i, 0, os.urandom(100)) for i in range(1000)]
    out = cy.encode_entries(9, entries, (2, 1, 999))
    assert out == ref.encode_entries(9, entries, (2, 1, 999))
    records, end, clean = cy.decode(out + bytes(1 << 17))
    assert (end, clean) == (len(out), True) and len(records) == 1001
    assert cy.find_next_valid(out + bytes(1 << 17), len(out)) is None
