"""Snapshot files: the whole applied state at one log index, written atomically.

``<data-dir>/member/snap/<term:016x>-<index:016x>.snap`` holds a header
(magic, CRC32C of the body, body length) and the body: ``marshal`` of a dict
made only of plain values (the MVCC store, the leases, the applied index and
term, the member identity). Written to a temp file, fsynced, renamed, and the
directory fsynced, so a crash leaves either the old set of snapshots or the
new one, never half a file under a real name.
"""
from __future__ import annotations

import logging
import marshal
import os
import struct

from fastkv._crc32c import crc32c
from fastkv.errors import StorageCorruption
from fastkv.storage.filenames import hex_pair_name, parse_hex_pair_name
from fastkv.storage.wal import fsync_dir

log = logging.getLogger("fastkv.snapshot")

MAGIC = b"FKVSNAP1"
HEADER = struct.Struct("<8sIQ")  # magic, crc32c(body), len(body)
SUFFIX = ".snap"
KEEP = 5  # snapshot files kept (etcd's --max-snapshots default)


def snapshot_name(term: int, index: int) -> str:
    return hex_pair_name(term, index, SUFFIX)


def parse_snapshot_name(name: str) -> tuple[int, int] | None:
    return parse_hex_pair_name(name, SUFFIX)


def encode(state: dict) -> bytes:
    body = marshal.dumps(state)
    return HEADER.pack(MAGIC, crc32c(body), len(body)) + body


def decode(buf: bytes, path: str = "<snapshot>") -> dict:
    if len(buf) < HEADER.size:
        raise StorageCorruption(f"snapshot: {path} is truncated ({len(buf)} bytes)")
    magic, crc, length = HEADER.unpack_from(buf, 0)
    if magic != MAGIC:
        raise StorageCorruption(f"snapshot: {path} has a bad magic number")
    body = memoryview(buf)[HEADER.size:]
    if len(body) != length:
        raise StorageCorruption(
            f"snapshot: {path} is truncated (body {len(body)} of {length} bytes)")
    if crc32c(body) != crc:
        raise StorageCorruption(f"snapshot: {path} failed its CRC check (corrupt file)")
    try:
        state = marshal.loads(body)
    except (ValueError, EOFError, TypeError) as exc:
        raise StorageCorruption(f"snapshot: {path} cannot be decoded: {exc}") from None
    if not isinstance(state, dict):
        raise StorageCorruption(f"snapshot: {path} does not hold a state dict")
    return state


class Snapshotter:
    def __init__(self, snap_dir: str):
        self.dir = snap_dir
        os.makedirs(snap_dir, exist_ok=True)

    def files(self) -> list[tuple[int, int, str]]:
        """(term, index, path) of every snapshot file, oldest first."""
        found = []
        for name in os.listdir(self.dir):
            parsed = parse_snapshot_name(name)
            if parsed:
                found.append((parsed[0], parsed[1], os.path.join(self.dir, name)))
        found.sort(key=lambda t: (t[1], t[0]))
        return found

    def save(self, term: int, index: int, data: bytes) -> str:
        """Write an encoded snapshot atomically; drop the oldest beyond KEEP."""
        path = os.path.join(self.dir, snapshot_name(term, index))
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
        fsync_dir(self.dir)
        for _t, _i, old in self.files()[:-KEEP]:
            os.unlink(old)
        return path

    def load_newest(self) -> tuple[int, int, dict] | None:
        """(term, index, state) of the newest snapshot, None if there is none.

        A corrupt newest snapshot stops the member: the WAL segments it
        covered may already be released, so an older snapshot is no
        substitute."""
        for name in os.listdir(self.dir):
            if name.endswith(".tmp"):  # a save that a crash interrupted
                os.unlink(os.path.join(self.dir, name))
        files = self.files()
        if not files:
            return None
        term, index, path = files[-1]
        with open(path, "rb") as f:
            state = decode(f.read(), path)
        return term, index, state
