"""The write-ahead log: segment files of CRC-framed records, group-committed.

Layout: ``<data-dir>/member/wal/<seq:016x>-<first index:016x>.wal``. Each
segment is preallocated (``SEGMENT_BYTES``) and starts with a METADATA record
(member and cluster identity) and a HARDSTATE record. Records are framed by
the Cython codec (csrc/walcodec.pyx): length, CRC32C, batch sequence, type.

Group commit: :meth:`WAL.save` writes everything the node hands it for one
Ready (all entries proposed during one event-loop turn, plus the hard state)
as ONE buffer with one ``write`` and one ``fdatasync``, in a worker thread, so
the event loop keeps serving while the disk works.

Opening a WAL tells a torn tail from corruption by the batch sequence number
every record carries. A crash mid-write can only damage the last batch, which
was never acknowledged (its fdatasync had not returned): a bad record whose
later valid records all belong to that same batch is a torn tail, truncated
and logged. A bad record followed by a valid record of another batch means
acknowledged data is damaged: the member refuses to start, naming the file and
offset.
"""
from __future__ import annotations

import asyncio
import logging
import marshal
import os
import threading
from dataclasses import dataclass, field

from fastkv.errors import StorageCorruption
from fastkv.storage import _walcodec as codec
from fastkv.storage.filenames import hex_pair_name, parse_hex_pair_name

log = logging.getLogger("fastkv.wal")

SEGMENT_BYTES = 64 * 1024 * 1024
WAL_SUFFIX = ".wal"


def segment_name(seq: int, first_index: int) -> str:
    return hex_pair_name(seq, first_index, WAL_SUFFIX)


def parse_segment_name(name: str) -> tuple[int, int] | None:
    return parse_hex_pair_name(name, WAL_SUFFIX)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Entry:
    """A Raft log entry: data is an encoded request (fastkv.requests), b"" for a no-op."""
    term: int
    index: int
    type: int = 0
    data: bytes = b""


@dataclass
class HardState:
    term: int = 0
    vote: int = 0
    commit: int = 0


@dataclass
class WALContents:
    """What replaying a WAL yields."""
    metadata: dict | None = None
    hardstate: HardState = field(default_factory=HardState)
    snapshot_index: int = 0           # newest SNAPSHOT marker seen
    snapshot_term: int = 0
    entries: list[Entry] = field(default_factory=list)  # after the snapshot marker the caller uses


class WAL:
    """An open WAL positioned at its end, ready for appends."""

    def __init__(self, wal_dir: str, metadata: dict, segment_bytes: int = SEGMENT_BYTES):
        self.dir = wal_dir
        self.metadata = metadata
        self.segment_bytes = segment_bytes
        self._segments: list[tuple[int, int, str]] = []  # (seq, first_index, path)
        self._fd = -1
        self._offset = 0            # write position in the current segment
        self._batch_seq = 0
        self._last_index = 0
        self._hardstate = HardState()
        self._lock = threading.Lock()  # one writer at a time (the node also serialises)
        self.bytes_written = 0
        self.bytes_since_snapshot = 0   # record bytes after the newest snapshot marker
        self.fsyncs = 0

    # ---- creation and opening -------------------------------------------------

    @staticmethod
    def exists(wal_dir: str) -> bool:
        return os.path.isdir(wal_dir) and any(
            parse_segment_name(n) for n in os.listdir(wal_dir))

    @classmethod
    def create(cls, wal_dir: str, metadata: dict, segment_bytes: int = SEGMENT_BYTES) -> "WAL":
        """A new, empty WAL. Made in a temp dir and renamed, so a crash leaves no half WAL."""
        parent = os.path.dirname(os.path.abspath(wal_dir))
        os.makedirs(parent, exist_ok=True)
        tmp = wal_dir + ".tmp"
        if os.path.exists(tmp):
            for n in os.listdir(tmp):
                os.unlink(os.path.join(tmp, n))
            os.rmdir(tmp)
        os.makedirs(tmp)
        wal = cls(tmp, metadata, segment_bytes)
        wal._open_new_segment(seq=0, first_index=1)
        wal._close_fd()
        os.rename(tmp, wal_dir)
        fsync_dir(parent)
        wal.dir = wal_dir
        wal._segments = [(s, f, os.path.join(wal_dir, os.path.basename(p)))
                         for s, f, p in wal._segments]
        wal._fd = os.open(wal._segments[-1][2], os.O_RDWR)
        return wal

    @classmethod
    def open(cls, wal_dir: str, segment_bytes: int = SEGMENT_BYTES
             ) -> tuple["WAL", WALContents]:
        """Read every segment, repair a torn tail, and return the WAL ready to append."""
        names = sorted((parse_segment_name(n), n) for n in os.listdir(wal_dir)
                       if parse_segment_name(n))
        if not names:
            raise StorageCorruption(f"wal: no segment files in {wal_dir}")
        contents = WALContents()
        wal = cls(wal_dir, {}, segment_bytes)
        last_seq = None
        for pos, ((seq, first_index), name) in enumerate(names):
            if last_seq is not None and seq != last_seq + 1:
                raise StorageCorruption(f"wal: segment sequence gap before {name} in {wal_dir}")
            last_seq = seq
            path = os.path.join(wal_dir, name)
            is_last = pos == len(names) - 1
            end = wal._replay_segment(path, is_last, contents)
            wal._segments.append((seq, first_index, path))
            if is_last:
                wal._offset = end
        if contents.metadata is None:
            raise StorageCorruption(f"wal: no metadata record in {wal_dir}")
        wal.metadata = contents.metadata
        wal._hardstate = contents.hardstate
        wal._last_index = contents.entries[-1].index if contents.entries else contents.snapshot_index
        wal._fd = os.open(wal._segments[-1][2], os.O_RDWR)
        return wal, contents

    def _replay_segment(self, path: str, is_last: bool, contents: WALContents) -> int:
        with open(path, "rb") as f:
            buf = f.read()
        records, end, clean = codec.decode(buf, 0)
        if not clean:
            self._check_torn_tail(path, buf, records, end, is_last)
        for offset, batch_seq, rtype, _flags, payload in records:
            self._batch_seq = max(self._batch_seq, batch_seq)
            if rtype == codec.TYPE_ENTRY:
                term, index, etype, data = codec.decode_entry(payload)
                ents = contents.entries
                # A later entry at an index we already have replaces that entry and
                # everything after it (a Raft follower overwriting a conflicting tail).
                if ents and index <= ents[-1].index:
                    cut = index - ents[0].index
                    if cut < 0:
                        cut = 0
                    del ents[cut:]
                if ents and index != ents[-1].index + 1:
                    raise StorageCorruption(
                        f"wal: {path} offset {offset}: entry index {index} after "
                        f"{ents[-1].index} (missing entries)")
                ents.append(Entry(term, index, etype, data))
            elif rtype == codec.TYPE_HARDSTATE:
                contents.hardstate = HardState(*codec.decode_hardstate(payload))
            elif rtype == codec.TYPE_SNAPSHOT:
                index, term = codec.decode_snapshot(payload)
                if index >= contents.snapshot_index:
                    contents.snapshot_index, contents.snapshot_term = index, term
                    contents.entries = [e for e in contents.entries if e.index > index]
            elif rtype == codec.TYPE_METADATA:
                meta = marshal.loads(payload)
                if contents.metadata is not None and meta != contents.metadata:
                    raise StorageCorruption(f"wal: {path} offset {offset}: metadata changed")
                contents.metadata = meta
            else:
                raise StorageCorruption(f"wal: {path} offset {offset}: unknown record type {rtype}")
        return end

    def _check_torn_tail(self, path, buf, records, bad_offset, is_last) -> None:
        """Decide between a torn tail (repair) and corruption (refuse to start)."""
        if not records:
            # Every segment starts with its header batch, fsynced before the segment got
            # its name: a segment whose first record is bad was damaged after the fact.
            raise StorageCorruption(
                f"wal: corrupt record in {path} at offset {bad_offset} (the segment header); "
                f"refusing to start")
        last_seq, last_flags = records[-1][1], records[-1][3]
        torn_seq = last_seq if not (last_flags & codec.FLAG_BATCH_END) else last_seq + 1
        pos = bad_offset
        while True:
            found = codec.find_next_valid(buf, pos)
            if found is None:
                break
            offset, batch_seq, _type, _flags = found
            # A record of a later batch means the bad one was acknowledged. One of an
            # older batch cannot follow legitimately: it is bytes inside some entry's
            # data that happen to look like a record, and says nothing.
            if batch_seq > torn_seq or (batch_seq == torn_seq and not is_last):
                raise StorageCorruption(
                    f"wal: corrupt record in {path} at offset {bad_offset}: valid records of "
                    f"later writes follow it (at offset {offset}); refusing to start. "
                    f"Restore this member from a snapshot or remove and re-add it.")
            pos = offset
        if not is_last:
            raise StorageCorruption(
                f"wal: corrupt record in {path} at offset {bad_offset}, and it is not the last "
                f"segment; refusing to start")
        # Torn tail: zero everything from the bad record to the end of the file.
        size = len(buf)
        log.warning("wal: torn tail in %s at offset %d (%d bytes of an unacknowledged write); "
                    "truncating", path, bad_offset, size - bad_offset)
        fd = os.open(path, os.O_RDWR)
        try:
            zeros = bytes(min(size - bad_offset, 1 << 20))
            pos = bad_offset
            while pos < size:
                n = min(len(zeros), size - pos)
                os.pwrite(fd, zeros[:n], pos)
                pos += n
            os.fdatasync(fd)
        finally:
            os.close(fd)

    # ---- appending -----------------------------------------------------------------

    def _open_new_segment(self, seq: int, first_index: int) -> None:
        path = os.path.join(self.dir, segment_name(seq, first_index))
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            try:
                os.posix_fallocate(fd, 0, self.segment_bytes)
            except OSError:  # filesystems without fallocate: zeros are written lazily
                os.ftruncate(fd, self.segment_bytes)
            self._batch_seq += 1
            head = codec.encode_batch(self._batch_seq, [
                (codec.TYPE_METADATA, marshal.dumps(self.metadata)),
                (codec.TYPE_HARDSTATE, codec.encode_hardstate(
                    self._hardstate.term, self._hardstate.vote, self._hardstate.commit)),
            ])
            os.pwrite(fd, head, 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        os.rename(tmp, path)
        fsync_dir(self.dir)
        self._close_fd()
        self._fd = fd
        self._offset = len(head)
        self._segments.append((seq, first_index, path))

    def _close_fd(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def save_sync(self, entries: list[Entry], hardstate: HardState | None) -> None:
        """Write entries and the hard state as one batch: one write, one fdatasync."""
        with self._lock:
            if not entries and hardstate is None:
                return
            self._batch_seq += 1
            hs = None
            if hardstate is not None:
                hs = (hardstate.term, hardstate.vote, hardstate.commit)
                self._hardstate = hardstate
            buf = codec.encode_entries(
                self._batch_seq, [(e.term, e.index, e.type, e.data) for e in entries], hs)
            self._write(buf, entries[0].index if entries else self._last_index + 1)
            if entries:
                self._last_index = entries[-1].index

    def save_snapshot_marker(self, index: int, term: int) -> None:
        """Record that a snapshot covers the log up to index (its own batch, fsynced)."""
        with self._lock:
            self._batch_seq += 1
            buf = codec.encode_batch(
                self._batch_seq, [(codec.TYPE_SNAPSHOT, codec.encode_snapshot(index, term))])
            self._write(buf, self._last_index + 1)
            self.bytes_since_snapshot = 0

    def _write(self, buf: bytes, first_index: int) -> None:
        if self._offset + len(buf) > self.segment_bytes:
            self._open_new_segment(self._segments[-1][0] + 1, first_index)
            if self._offset + len(buf) > self.segment_bytes:
                # A batch larger than a whole segment: grow this segment to fit it.
                os.posix_fallocate(self._fd, 0, self._offset + len(buf))
        os.pwrite(self._fd, buf, self._offset)
        os.fdatasync(self._fd)
        self._offset += len(buf)
        self.bytes_written += len(buf)
        self.bytes_since_snapshot += len(buf)
        self.fsyncs += 1

    async def save(self, entries: list[Entry], hardstate: HardState | None) -> None:
        """save_sync in a worker thread: the event loop keeps serving during the fsync."""
        await asyncio.to_thread(self.save_sync, entries, hardstate)

    def release_to(self, snapshot_index: int) -> int:
        """Delete segments holding only entries at or below snapshot_index. Returns how many."""
        with self._lock:
            removed = 0
            # A segment may go when the NEXT segment starts at or below snapshot_index + 1.
            while len(self._segments) > 1 and self._segments[1][1] <= snapshot_index + 1:
                _seq, _first, path = self._segments.pop(0)
                os.unlink(path)
                removed += 1
            if removed:
                fsync_dir(self.dir)
            return removed

    @property
    def segment_paths(self) -> list[str]:
        return [p for _s, _f, p in self._segments]

    def close(self) -> None:
        with self._lock:
            self._close_fd()
