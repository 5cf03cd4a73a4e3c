"""Pure-Python reference of the WAL record codec (fastkv.storage._walcodec).

Same API, same errors for bad input, byte-identical output. Only the property
tests use it; the WAL uses the Cython module.

Record format (little-endian, every record 8-byte aligned)::

    offset 0  u32 length      payload length in bytes
    offset 4  u32 crc         CRC32C over bytes [0:4] + bytes [8:16] + payload
    offset 8  u32 batch_seq   sequence number of the write batch
    offset 12 u8  type        record type, 1..255 (0 is invalid)
    offset 13 u8  flags       bit 0 = BATCH_END; other bits 0
    offset 14 u16 reserved    0
    offset 16 payload, then zero padding up to a multiple of 8

A 16-byte all-zero header (or an all-zero tail shorter than a header) is the
clean end of data: segments are preallocated with zeros.

A record is bad when its header is not all zeros and: fewer than 16 bytes are
left, length > MAX_PAYLOAD, the padded record runs past the end of the
buffer, type is 0, reserved or unknown flag bits are set, a padding byte is
not zero, or the CRC does not match.
"""
from operator import index as _as_int
import struct

from fastkv.crc32c_ref import crc32c

HEADER_SIZE = 16
TYPE_ENTRY = 1
TYPE_HARDSTATE = 2
TYPE_SNAPSHOT = 3
TYPE_METADATA = 4
FLAG_BATCH_END = 1
MAX_PAYLOAD = 1 << 30

_U8_MAX = 0xFF
_U32_MAX = 0xFFFFFFFF
_U64_MAX = 0xFFFFFFFFFFFFFFFF

_LEN = struct.Struct("<I")
_TAIL = struct.Struct("<IBBH")          # header bytes [8:16]
_HEADER = struct.Struct("<IIIBBH")
_ENTRY = struct.Struct("<QQB")
_HARDSTATE = struct.Struct("<QQQ")
_SNAPSHOT = struct.Struct("<QQ")
_ZERO_HEADER = bytes(HEADER_SIZE)


def _padded(length: int) -> int:
    return (length + 7) & ~7


def _uint(value, maximum: int, what: str) -> int:
    """An int in [0, maximum]; OverflowError otherwise (as Cython's conversion)."""
    value = _as_int(value)
    if not 0 <= value <= maximum:
        raise OverflowError(f"{what} out of range: {value}")
    return value


def _record_type(rtype) -> int:
    rtype = _as_int(rtype)
    if not 1 <= rtype <= _U8_MAX:
        raise ValueError(f"record type must be in 1..255, not {rtype}")
    return rtype


def _frame(out: bytearray, batch_seq: int, rtype: int, flags: int, payload) -> None:
    """Append one framed record to `out`."""
    length = len(payload)
    if length > MAX_PAYLOAD:
        raise ValueError(f"record payload too large: {length} > {MAX_PAYLOAD}")
    tail = _TAIL.pack(batch_seq, rtype, flags, 0)
    crc = crc32c(payload, crc32c(tail, crc32c(_LEN.pack(length))))
    out += _LEN.pack(length)
    out += _LEN.pack(crc)
    out += tail
    out += payload
    out += bytes(_padded(length) - length)


def encode_batch(batch_seq: int, records: list) -> bytes:
    """Frame each (type, payload) of one write batch; BATCH_END on the last."""
    batch_seq = _uint(batch_seq, _U32_MAX, "batch_seq")
    out = bytearray()
    last = len(records) - 1
    for i, (rtype, payload) in enumerate(records):
        flags = FLAG_BATCH_END if i == last else 0
        _frame(out, batch_seq, _record_type(rtype), flags, memoryview(payload).cast("B"))
    return bytes(out)


def encode_entries(batch_seq: int, entries: list, hardstate=None) -> bytes:
    """One ENTRY record per (term, index, entry_type, data), then a HARDSTATE
    record if `hardstate` (term, vote, commit) is given; BATCH_END on the last."""
    batch_seq = _uint(batch_seq, _U32_MAX, "batch_seq")
    records = []
    for term, index, entry_type, data in entries:
        head = _ENTRY.pack(_uint(term, _U64_MAX, "term"), _uint(index, _U64_MAX, "index"),
                           _uint(entry_type, _U8_MAX, "entry_type"))
        records.append((TYPE_ENTRY, head + bytes(memoryview(data).cast("B"))))
    if hardstate is not None:
        records.append((TYPE_HARDSTATE, encode_hardstate(*hardstate)))
    return encode_batch(batch_seq, records)


def _record_at(mv, off: int):
    """(length, batch_seq, type, flags) of a good record at `off`, else None."""
    n = len(mv)
    if n - off < HEADER_SIZE:
        return None
    length, crc, batch_seq, rtype, flags, reserved = _HEADER.unpack_from(mv, off)
    if length > MAX_PAYLOAD or HEADER_SIZE + _padded(length) > n - off:
        return None
    if rtype == 0 or flags & ~FLAG_BATCH_END or reserved:
        return None
    body_end = off + HEADER_SIZE + length
    if any(mv[body_end:off + HEADER_SIZE + _padded(length)]):
        return None
    if crc32c(mv[off + 8:body_end], crc32c(mv[off:off + 4])) != crc:
        return None
    return length, batch_seq, rtype, flags


def decode(buf, start: int = 0):
    """Decode records from `start`.

    Returns (records, end, clean): records are (offset, batch_seq, type,
    flags, payload); `end` is the offset just past the last good record.
    clean=True: the data ends there (end of buffer, or zeros). clean=False:
    the record at `end` is bad.
    """
    mv = memoryview(buf).cast("B")
    n = len(mv)
    start = _as_int(start)
    if not 0 <= start <= n:
        raise ValueError(f"start {start} outside the buffer (length {n})")
    records = []
    off = start
    while True:
        rem = n - off
        if rem == 0:
            return records, off, True
        if rem < HEADER_SIZE:
            return records, off, not any(mv[off:])
        if mv[off:off + HEADER_SIZE] == _ZERO_HEADER:
            return records, off, True
        rec = _record_at(mv, off)
        if rec is None:
            return records, off, False
        length, batch_seq, rtype, flags = rec
        payload = bytes(mv[off + HEADER_SIZE:off + HEADER_SIZE + length])
        records.append((off, batch_seq, rtype, flags, payload))
        off += HEADER_SIZE + _padded(length)


def find_next_valid(buf, start: int):
    """The first good record at an 8-byte-aligned offset strictly after
    `start`, as (offset, batch_seq, type, flags); None if there is none."""
    mv = memoryview(buf).cast("B")
    n = len(mv)
    off = max(0, (_as_int(start) // 8 + 1) * 8)
    while off + HEADER_SIZE <= n:
        # Cheap filter first: type byte must be non-zero.
        if mv[off + 12]:
            rec = _record_at(mv, off)
            if rec is not None:
                return off, rec[1], rec[2], rec[3]
        off += 8
    return None


def decode_entry(payload) -> tuple:
    """ENTRY payload -> (term, index, entry_type, data)."""
    mv = memoryview(payload).cast("B")
    if len(mv) < _ENTRY.size:
        raise ValueError(f"entry payload too short: {len(mv)} bytes")
    term, index, entry_type = _ENTRY.unpack_from(mv)
    return term, index, entry_type, bytes(mv[_ENTRY.size:])


def decode_hardstate(payload) -> tuple:
    """HARDSTATE payload -> (term, vote, commit)."""
    mv = memoryview(payload).cast("B")
    if len(mv) != _HARDSTATE.size:
        raise ValueError(f"hardstate payload must be {_HARDSTATE.size} bytes, not {len(mv)}")
    return _HARDSTATE.unpack(mv)


def decode_snapshot(payload) -> tuple:
    """SNAPSHOT payload -> (index, term)."""
    mv = memoryview(payload).cast("B")
    if len(mv) != _SNAPSHOT.size:
        raise ValueError(f"snapshot payload must be {_SNAPSHOT.size} bytes, not {len(mv)}")
    return _SNAPSHOT.unpack(mv)


def encode_hardstate(term: int, vote: int, commit: int) -> bytes:
    return _HARDSTATE.pack(_uint(term, _U64_MAX, "term"), _uint(vote, _U64_MAX, "vote"),
                           _uint(commit, _U64_MAX, "commit"))


def encode_snapshot(index: int, term: int) -> bytes:
    return _SNAPSHOT.pack(_uint(index, _U64_MAX, "index"), _uint(term, _U64_MAX, "term"))
