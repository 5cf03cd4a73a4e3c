"""On-disk damage for the nemesis: what a crash or a bad disk leaves in a stopped member's files.

Each function takes a member's ``--data-dir`` (fastkv keeps ``member/wal/*.wal`` and
``member/snap/*.snap`` under it, as etcd does), changes one file, and returns a line saying
what it did (for the nemesis log). The member must not be running.

* :func:`tear_wal_tail`: a crash in the middle of a write. The write a crash can tear is one
  whose fdatasync had not returned, so nobody was told it happened: the bytes are the start
  of one more batch after the last whole record, cut inside its first record (never a whole
  record: that would be an entry no leader ever sent). Half the time the file also ends
  there (cut short), as on a filesystem without preallocated segments. The last whole
  record is left alone: it was fsynced and may have been acknowledged, and losing it would
  be a disk that lies, not a crash. A member must start over this, repairing the tail.
* :func:`flip_wal_bit`: one bit of a record in the middle of the WAL (batches written after
  it follow): acknowledged data is damaged, and the member must refuse to start.
* :func:`flip_snapshot_bit`: one bit of the newest snapshot file: the member must not load
  it (fastkv refuses to start; etcd 3.4 renames it ``*.broken`` and uses an older one).
"""
from __future__ import annotations

import os
import random

from fastkv.storage import _walcodec as codec
from fastkv.storage.snapshot import parse_snapshot_name
from fastkv.storage.wal import parse_segment_name


def wal_dir(data_dir: str) -> str:
    return os.path.join(data_dir, "member", "wal")


def snap_dir(data_dir: str) -> str:
    return os.path.join(data_dir, "member", "snap")


def wal_segments(data_dir: str) -> list[str]:
    """The WAL segment files, oldest first."""
    d = wal_dir(data_dir)
    return [os.path.join(d, n) for n in sorted(os.listdir(d)) if parse_segment_name(n)]


def snapshots(data_dir: str) -> list[str]:
    """The snapshot files, oldest first (by index, as fastkv and etcd order them)."""
    d = snap_dir(data_dir)
    if not os.path.isdir(d):
        return []
    found = [(parse_snapshot_name(n), n) for n in os.listdir(d) if parse_snapshot_name(n)]
    return [os.path.join(d, n) for (term, index), n in sorted(found, key=lambda t: (t[0][1], t[0][0]))]


def _records(path: str) -> tuple[bytes, list, int]:
    """(bytes, whole records, offset just past the last whole record) of a segment."""
    with open(path, "rb") as f:
        buf = f.read()
    records, end, _clean = codec.decode(buf, 0)
    return buf, records, end


def tear_wal_tail(data_dir: str, rng: random.Random) -> tuple[str, str]:
    """(the file, what was done) after leaving an unfinished write at the end of the newest
    WAL segment."""
    path = wal_segments(data_dir)[-1]
    buf, records, end = _records(path)
    last_seq = records[-1][1] if records else 0
    term, index = 1, 0
    for _off, _seq, rtype, _flags, payload in records:
        if rtype == codec.TYPE_ENTRY:
            term, index, _etype, _data = codec.decode_entry(payload)
    # What the member would have written next: an entry and its hard state, one batch.
    data = rng.randbytes(rng.randrange(16, 400))
    batch = codec.encode_entries(last_seq + 1, [(term, index + 1, 0, data)], (term, 0, index))
    first_record = codec.HEADER_SIZE + len(data) + 17        # entry head: term, index, type
    keep = rng.randrange(8, first_record)    # at least the length and the CRC: not zeros
    cut_short = rng.random() < 0.5
    with open(path, "r+b") as f:
        f.seek(end)
        f.write(batch[:keep])
        if cut_short:
            f.truncate(end + keep)
    how = "and the file cut there" if cut_short else "zeros after it"
    return path, (f"{os.path.basename(path)}: {keep} of {len(batch)} bytes of an unfinished "
                  f"batch at offset {end} ({how})")


def flip_wal_bit(data_dir: str, rng: random.Random) -> tuple[str, str]:
    """(the file, what was done) after flipping a bit in a record that later batches follow:
    in any segment but the newest, any record; in the newest, a record at least two batches
    before its last."""
    segments = wal_segments(data_dir)
    candidates = []
    for pos, path in enumerate(segments):
        _buf, records, _end = _records(path)
        newest = pos == len(segments) - 1
        last_seq = records[-1][1] if records else 0
        for off, seq, _rtype, _flags, payload in records:
            if not newest or seq <= last_seq - 2:
                candidates.append((path, off, seq, codec.HEADER_SIZE + len(payload)))
    if not candidates:
        raise RuntimeError(f"flip_wal_bit: no record in the middle of the WAL in {data_dir}")
    path, off, seq, size = rng.choice(candidates)
    at = off + rng.randrange(size)
    bit = rng.randrange(8)
    _flip(path, at, bit)
    return path, f"{os.path.basename(path)}: bit {bit} of byte {at} (record at {off}, batch {seq})"


def flip_snapshot_bit(data_dir: str, rng: random.Random) -> tuple[str, str] | None:
    """(the file, what was done) after flipping a bit of the newest snapshot; None if the
    member has no snapshot yet."""
    files = snapshots(data_dir)
    if not files:
        return None
    path = files[-1]
    at = rng.randrange(os.path.getsize(path))
    bit = rng.randrange(8)
    _flip(path, at, bit)
    return path, f"{os.path.basename(path)}: bit {bit} of byte {at}"


def _flip(path: str, at: int, bit: int) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)[0]
        f.seek(at)
        f.write(bytes([byte ^ (1 << bit)]))
