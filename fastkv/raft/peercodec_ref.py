"""Peer frame codec, pure-Python reference of csrc/peercodec.pyx
(fastkv.raft._peercodec). Used by the property tests only; the transport uses
the Cython module. Both have the same API, the same errors and byte-identical
output.

Frames (everything little-endian)::

    u32 length | u8 frame type | body (length bytes)

``length`` counts the body only and is at most the receiver's frame cap.

A FRAME_MSGS body is a batch of Raft messages::

    u32 count, then count times:
      u8  type            (0..MAX_MSG_TYPE)
      u8  flags           (FLAG_REJECT | FLAG_SNAPSHOT; other bits must be 0)
      u64 to, frm, term, log_term, index, commit, reject_hint
      u32 context length
      u32 entry count
      context bytes
      if FLAG_SNAPSHOT:  u64 index, u64 term, u32 voters, u32 learners,
                         u64 per voter, u64 per learner
      per entry:         u64 term, u64 index, u8 type, u32 data length, data

A body is well-formed only if it is exactly consumed: truncated input, length
or count fields that point past the end, unknown flag bits or message types
and trailing bytes are all ValueError, with the reason and the offset.
"""
from __future__ import annotations

import struct

from fastkv.raft.messages import ConfState, Message, SnapshotMeta
from fastkv.storage.wal import Entry

# ---- frame layer -----------------------------------------------------------------------

FRAME_HEADER_SIZE = 5
FRAME_HELLO = 1        # dialer -> listener: magic, version, cluster id, from, to
FRAME_HELLO_OK = 2     # listener -> dialer: its cluster id and member id
FRAME_ERROR = 3        # either way: utf-8 reason, then the sender closes
FRAME_MSGS = 4         # a batch of Raft messages (this module's body format)
FRAME_SNAP_BEGIN = 5   # one MSG_SNAP message (FRAME_MSGS body) + u64 file size
FRAME_SNAP_CHUNK = 6   # raw bytes of the snapshot file
FRAME_SNAP_END = 7     # u64 file size, u32 crc32c of the whole file
FRAME_SNAP_DONE = 8    # receiver -> sender: the snapshot was stored and delivered
FRAME_CALL = 9         # marshal (call id, kind, payload)
FRAME_REPLY = 10       # marshal (call id, ok, result or error message)
MAX_FRAME_TYPE = 10

DEFAULT_MAX_FRAME = 8 << 20  # the Raft core's max message size is 1 MiB

MSG_HEAD_SIZE = 66
ENTRY_HEAD_SIZE = 21
SNAP_HEAD_SIZE = 24
MAX_MSG_TYPE = 18     # MSG_PRE_VOTE_RESP
FLAG_REJECT = 1
FLAG_SNAPSHOT = 2

_FRAME = struct.Struct("<IB")
_COUNT = struct.Struct("<I")
_MSG = struct.Struct("<BBQQQQQQQII")
_ENTRY = struct.Struct("<QQBI")
_SNAP = struct.Struct("<QQII")
_U64 = struct.Struct("<Q")


def encode_frame(ftype: int, body) -> bytes:
    """u32 length | u8 type | body."""
    if not 1 <= ftype <= 255:
        raise ValueError(f"frame type must be in 1..255, not {ftype}")
    n = len(memoryview(body))
    if n > 0xFFFFFFFF:
        raise ValueError(f"frame body too large: {n} bytes")
    return _FRAME.pack(n, ftype) + bytes(body)


def parse_frame_header(head, max_frame: int = DEFAULT_MAX_FRAME) -> tuple[int, int]:
    """(body length, frame type) of a 5-byte frame header; ValueError if the
    length is over max_frame or the type is unknown."""
    if len(head) != FRAME_HEADER_SIZE:
        raise ValueError(f"frame header must be {FRAME_HEADER_SIZE} bytes, not {len(head)}")
    length, ftype = _FRAME.unpack(head)
    if length > max_frame:
        raise ValueError(f"frame of {length} bytes is over the limit of {max_frame} bytes")
    if not 1 <= ftype <= MAX_FRAME_TYPE:
        raise ValueError(f"unknown frame type {ftype}")
    return length, ftype


# ---- messages --------------------------------------------------------------------------

def _check_type(t: int) -> int:
    if not 0 <= t <= MAX_MSG_TYPE:
        raise ValueError(f"unknown message type {t}")
    return t


def _u64(v: int) -> int:
    if v < 0 or v >> 64:
        raise OverflowError(f"{v} does not fit in 64 bits")
    return v


def _encode_one(m: Message, out: list) -> int:
    ctx = bytes(m.context)
    snap = m.snapshot
    flags = (FLAG_REJECT if m.reject else 0) | (FLAG_SNAPSHOT if snap is not None else 0)
    ents = m.entries
    out.append(_MSG.pack(_check_type(m.type), flags, m.to, m.frm, m.term, m.log_term,
                         m.index, m.commit, m.reject_hint, len(ctx), len(ents)))
    out.append(ctx)
    size = MSG_HEAD_SIZE + len(ctx)
    if snap is not None:
        voters, learners = snap.conf_state.voters, snap.conf_state.learners
        out.append(_SNAP.pack(snap.index, snap.term, len(voters), len(learners)))
        for v in list(voters) + list(learners):
            out.append(_U64.pack(v))
        size += SNAP_HEAD_SIZE + 8 * (len(voters) + len(learners))
    for e in ents:
        data = e.data
        if isinstance(data, str):
            raise TypeError("entry data must be bytes-like, not str")
        data = bytes(data)
        out.append(_ENTRY.pack(e.term, e.index, e.type, len(data)))
        out.append(data)
        size += ENTRY_HEAD_SIZE + len(data)
    return size


def _pack_errors(fn, *args):
    try:
        return fn(*args)
    except struct.error as exc:  # the same errors as the Cython module
        if "integer" in str(exc) and "format" not in str(exc):
            raise TypeError(str(exc)) from None
        raise OverflowError(str(exc)) from None


def encode_messages(msgs) -> bytes:
    """One FRAME_MSGS body holding every message of msgs."""
    msgs = list(msgs)
    out = [_COUNT.pack(len(msgs))]
    for m in msgs:
        _pack_errors(_encode_one, m, out)
    return b"".join(out)


def message_size(m: Message) -> int:
    """Bytes msg takes in a FRAME_MSGS body (without the u32 count)."""
    out: list = []
    return _pack_errors(_encode_one, m, out)


def frame_messages(msgs, max_frame: int = DEFAULT_MAX_FRAME):
    """Complete FRAME_MSGS frames (header included) for msgs, in order, each
    body at most max_frame bytes, greedily packed. Returns (frames, too_big):
    too_big are the messages that do not fit in a frame on their own (left out)."""
    frames, too_big = [], []
    cur: list = []
    cur_size = 4
    for m in msgs:
        parts: list = []
        size = _pack_errors(_encode_one, m, parts)
        if 4 + size > max_frame:
            too_big.append(m)
            continue
        if cur and cur_size + size > max_frame:
            frames.append(_close(cur, cur_size))
            cur, cur_size = [], 4
        cur.append(b"".join(parts))
        cur_size += size
    if cur:
        frames.append(_close(cur, cur_size))
    return frames, too_big


def _close(parts: list, size: int) -> bytes:
    return _FRAME.pack(size, FRAME_MSGS) + _COUNT.pack(len(parts)) + b"".join(parts)


class _Reader:
    __slots__ = ("buf", "n", "pos")

    def __init__(self, buf):
        self.buf = buf
        self.pos = 0
        self.n = len(buf)

    def need(self, k: int, what: str) -> None:
        if k > self.n - self.pos:
            raise ValueError(f"truncated message batch: {what} needs {k} bytes at offset "
                             f"{self.pos}, {self.n - self.pos} left")


def decode_messages(body) -> list[Message]:
    """The messages of a FRAME_MSGS body; ValueError if it is not well-formed."""
    buf = bytes(memoryview(body).cast("B"))
    r = _Reader(buf)
    r.need(4, "the message count")
    (count,) = _COUNT.unpack_from(buf, 0)
    r.pos = 4
    if count > (r.n - r.pos) // MSG_HEAD_SIZE:
        raise ValueError(f"garbled message batch: {count} messages cannot fit in "
                         f"{r.n - r.pos} bytes")
    msgs = []
    for _ in range(count):
        r.need(MSG_HEAD_SIZE, "a message header")
        (mtype, flags, to, frm, term, log_term, index, commit, hint, ctx_len,
         n_ents) = _MSG.unpack_from(buf, r.pos)
        if mtype > MAX_MSG_TYPE:
            raise ValueError(f"garbled message batch: unknown message type {mtype} "
                             f"at offset {r.pos}")
        if flags & ~(FLAG_REJECT | FLAG_SNAPSHOT):
            raise ValueError(f"garbled message batch: unknown flags {flags:#x} "
                             f"at offset {r.pos + 1}")
        r.pos += MSG_HEAD_SIZE
        r.need(ctx_len, "a message context")
        context = buf[r.pos:r.pos + ctx_len]
        r.pos += ctx_len
        snapshot = None
        if flags & FLAG_SNAPSHOT:
            r.need(SNAP_HEAD_SIZE, "a snapshot header")
            s_index, s_term, nv, nl = _SNAP.unpack_from(buf, r.pos)
            r.pos += SNAP_HEAD_SIZE
            if nv > (r.n - r.pos) // 8 or nl > (r.n - r.pos) // 8 - nv:
                raise ValueError(f"truncated message batch: {nv} voters and {nl} learners "
                                 f"at offset {r.pos}, {r.n - r.pos} bytes left")
            ids = struct.unpack_from(f"<{nv + nl}Q", buf, r.pos)
            r.pos += 8 * (nv + nl)
            snapshot = SnapshotMeta(s_index, s_term, ConfState(list(ids[:nv]), list(ids[nv:])))
        if n_ents > (r.n - r.pos) // ENTRY_HEAD_SIZE:
            raise ValueError(f"truncated message batch: {n_ents} entries at offset {r.pos}, "
                             f"{r.n - r.pos} bytes left")
        entries = []
        for _ in range(n_ents):
            r.need(ENTRY_HEAD_SIZE, "an entry header")
            e_term, e_index, e_type, dlen = _ENTRY.unpack_from(buf, r.pos)
            r.pos += ENTRY_HEAD_SIZE
            r.need(dlen, "entry data")
            entries.append(Entry(e_term, e_index, e_type, buf[r.pos:r.pos + dlen]))
            r.pos += dlen
        msgs.append(Message(mtype, to, frm, term, log_term, index, entries, commit,
                            bool(flags & FLAG_REJECT), hint, context, snapshot))
    if r.pos != r.n:
        raise ValueError(f"garbled message batch: {r.n - r.pos} trailing bytes "
                         f"at offset {r.pos}")
    return msgs
