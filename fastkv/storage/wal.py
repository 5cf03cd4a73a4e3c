"""The write-ahead log: segment files of CRC-framed records, group-committed.

Layout: ``<data-dir>/member/wal/<seq:016x>-<first index:016x>.wal``. Each
segment is preallocated (``SEGMENT_BYTES``) and starts with a METADATA record
(member and cluster identity) and a HARDSTATE record. Records are framed by
the Cython codec (csrc/walcodec.pyx): length, CRC32C, batch sequence, type.

Group commit: :meth:`WAL.save` writes everything the node hands it for one
Ready (all entries proposed during one event-loop turn, plus the hard state)
as ONE buffer with one ``pwrite`` and one ``fdatasync``, off the event loop, so
it keeps serving while the disk works. The batch is encoded on the loop (Cython)
and written by a thread that never takes the GIL (csrc/syncwriter.pyx), which
tells the loop through a pipe: a Python worker thread waited ~1 ms for the GIL
at each hop while the loop served requests. Rare cases (a new segment, the
test-only slow disk) take the plain worker thread.

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
import errno
import logging
import marshal
import os
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fastkv.errors import StorageCorruption
from fastkv.faults import slow_disk
from fastkv.storage import _walcodec as codec
from fastkv.storage._syncwriter import SyncWriter
from fastkv.storage.filenames import hex_pair_name, parse_hex_pair_name

log = logging.getLogger("fastkv.wal")

SEGMENT_BYTES = 64 * 1024 * 1024
WAL_SUFFIX = ".wal"


def segment_name(seq: int, first_index: int) -> str:
    return hex_pair_name(seq, first_index, WAL_SUFFIX)


def parse_segment_name(name: str) -> tuple[int, int] | None:
    return parse_hex_pair_name(name, WAL_SUFFIX)


_U32 = struct.Struct("<I")


def _pwrite_all(fd: int, buf: bytes, offset: int) -> None:
    """pwrite until all of buf is written; a short write (ENOSPC, EFBIG) raises."""
    view = memoryview(buf)
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(f"wal: short write at offset {offset}")
        view = view[n:]
        offset += n


def _preallocate(fd: int, size: int) -> None:
    """Reserve size bytes. Only a filesystem without fallocate falls back to a sparse
    file; ENOSPC and other errors are errors."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
        os.ftruncate(fd, max(size, os.fstat(fd).st_size))


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
        self.unsynced_batches = 0   # commit-only hard states written without an fsync
        # called with the seconds of each batch's write and fsync (the member's metrics)
        self.observe_fsync: Callable[[float], None] | None = None
        self.failed: BaseException | None = None  # a write or fsync error: no more writes
        self.fsync_delay = 0.0      # testing only (fastkv/faults.py): a slow disk
        self._read_only = False     # replaying for a tool: repair nothing
        self._writer: _DurableWriter | None = None   # created by the first save()

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
        wal, contents = cls._replay_all(wal_dir, segment_bytes, read_only=False)
        wal._fd = os.open(wal._segments[-1][2], os.O_RDWR)
        # After a crash of the process (not the machine) the last writes may sit in the
        # page cache, fsync never confirmed: make them durable before trusting them.
        os.fdatasync(wal._fd)
        return wal, contents

    @classmethod
    def read_all(cls, wal_dir: str) -> WALContents:
        """Replay without repairing anything or opening for writing (etcd's OpenForRead),
        for tools that read a WAL a running member may be appending to: an unfinished
        last write is left out, not truncated."""
        return cls._replay_all(wal_dir, SEGMENT_BYTES, read_only=True)[1]

    @classmethod
    def _replay_all(cls, wal_dir: str, segment_bytes: int, read_only: bool
                    ) -> tuple["WAL", WALContents]:
        names = sorted((parse_segment_name(n), n) for n in os.listdir(wal_dir)
                       if parse_segment_name(n))
        if not names:
            raise StorageCorruption(f"wal: no segment files in {wal_dir}")
        contents = WALContents()
        wal = cls(wal_dir, {}, segment_bytes)
        wal._read_only = read_only
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
        return wal, contents

    def _replay_segment(self, path: str, is_last: bool, contents: WALContents) -> int:
        with open(path, "rb") as f:
            buf = f.read()
        records, end, clean = codec.decode(buf, 0)
        self._check_tail(path, buf, records, end, clean, is_last)
        # Batch numbers count within a segment (a new segment's header is batch 1).
        self._batch_seq = records[-1][1]
        for offset, batch_seq, rtype, _flags, payload in records:
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

    def _check_tail(self, path, buf, records, end, clean, is_last) -> None:
        """Classify what follows the last good record: nothing, a torn tail (repair),
        or damage to acknowledged data (refuse to start).

        Looked at whether decoding stopped at a bad record or at zeros: a crash can
        leave the first page of the last write unwritten (zeros) and later pages
        written, and a zeroed block can hide acknowledged batches behind it."""
        if not records:
            # Every segment starts with its header batch, fsynced before the segment got
            # its name: a segment whose first record is bad was damaged after the fact.
            raise StorageCorruption(
                f"wal: corrupt record in {path} at offset {end} (the segment header); "
                f"refusing to start")
        last_seq, last_flags = records[-1][1], records[-1][3]
        # The batch a crash could have torn: the last one's rest, or the next one.
        torn_seq = last_seq if not (last_flags & codec.FLAG_BATCH_END) else last_seq + 1
        what = "corrupt record" if not clean else "unreadable data"
        pos = end - 1
        while True:
            found = codec.find_next_valid(buf, pos)
            if found is None:
                break
            offset, batch_seq, _type, _flags = found
            # A record of a later batch means the damaged one was acknowledged. One of
            # an older batch cannot follow legitimately: it is bytes inside some entry's
            # data that happen to look like a record, and says nothing.
            if batch_seq > torn_seq or (batch_seq == torn_seq and not is_last):
                raise StorageCorruption(
                    f"wal: {what} in {path} at offset {end}: valid records of later writes "
                    f"follow it (at offset {offset}); refusing to start. Restore this member "
                    f"from a snapshot or remove and re-add it.")
            (length,) = _U32.unpack_from(buf, offset)
            pos = offset + codec.HEADER_SIZE + ((length + 7) & ~7) - 1  # skip its payload
        if not clean and not is_last:
            raise StorageCorruption(
                f"wal: corrupt record in {path} at offset {end}, and it is not the last "
                f"segment; refusing to start")
        # Whatever non-zero bytes lie past the end are the remains of an unacknowledged
        # write: zero them, so later appends never sit in front of stale records.
        dirty_end = len(bytes(buf).rstrip(b"\0"))
        if dirty_end <= end or (self._read_only and is_last):
            return
        if not is_last:
            raise StorageCorruption(
                f"wal: {path} holds data past its end at offset {end}, and it is not the last "
                f"segment; refusing to start")
        log.warning("wal: torn tail in %s at offset %d (%d bytes of an unacknowledged write); "
                    "truncating", path, end, dirty_end - end)
        fd = os.open(path, os.O_RDWR)
        try:
            zeros = bytes(min(dirty_end - end, 1 << 20))
            pos = end
            while pos < dirty_end:
                n = min(len(zeros), dirty_end - pos)
                _pwrite_all(fd, zeros[:n], pos)
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
            _preallocate(fd, self.segment_bytes)
            self._batch_seq = 1  # batch numbers count within a segment
            head = codec.encode_batch(self._batch_seq, [
                (codec.TYPE_METADATA, marshal.dumps(self.metadata)),
                (codec.TYPE_HARDSTATE, codec.encode_hardstate(
                    self._hardstate.term, self._hardstate.vote, self._hardstate.commit)),
            ])
            _pwrite_all(fd, head, 0)
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

    def must_sync(self, entries: list[Entry], hardstate: HardState | None) -> bool:
        """etcd's raft.MustSync: new entries, a new term or a new vote must be durable
        before Raft acts on them; a hard state that only moves the commit index need
        not be (a lost commit index is learned again from the leader, or, alone, from
        the log at the next election). Such a batch is written but not fsynced: the next
        synced batch makes it durable, and a crash can only tear or drop it at the
        tail, which opening the WAL repairs."""
        if entries:
            return True
        prev = self._hardstate
        return hardstate is not None and (hardstate.term != prev.term
                                          or hardstate.vote != prev.vote)

    def save_sync(self, entries: list[Entry], hardstate: HardState | None) -> None:
        """Write entries and the hard state as one batch: one write, and one fdatasync
        unless only the commit index moved (must_sync)."""
        with self._lock:
            if not entries and hardstate is None:
                return
            sync = self.must_sync(entries, hardstate)
            hs = None
            if hardstate is not None:
                hs = (hardstate.term, hardstate.vote, hardstate.commit)
                self._hardstate = hardstate
            ents = [(e.term, e.index, e.type, e.data) for e in entries]
            self._append(lambda seq: codec.encode_entries(seq, ents, hs),
                         entries[0].index if entries else self._last_index + 1, sync)
            if entries:
                self._last_index = entries[-1].index

    def save_snapshot_marker(self, index: int, term: int) -> None:
        """Record that a snapshot covers the log up to index (its own batch, fsynced)."""
        with self._lock:
            marker = [(codec.TYPE_SNAPSHOT, codec.encode_snapshot(index, term))]
            self._append(lambda seq: codec.encode_batch(seq, marker), self._last_index + 1)
            self.bytes_since_snapshot = 0

    def _append(self, encode, first_index: int, sync: bool = True) -> None:
        """Number, frame and write one batch: one pwrite, one fdatasync (if sync).

        The roll-over to a new segment is decided before the batch gets its number,
        so batch numbers strictly increase in file order (the torn-tail check relies
        on it). After any write or fsync error the WAL refuses every later write:
        after a failed fsync, Linux may report a later one as fine though data was
        lost, so the member must stop, never carry on."""
        if self.failed is not None:
            raise StorageCorruption(f"wal: an earlier write failed ({self.failed!r}); "
                                    f"refusing to write") from self.failed
        try:
            buf = encode(self._batch_seq + 1)
            if self._offset + len(buf) > self.segment_bytes:
                self._open_new_segment(self._segments[-1][0] + 1, first_index)
                buf = encode(self._batch_seq + 1)
                if self._offset + len(buf) > self.segment_bytes:
                    # A batch larger than a whole segment: grow this segment to fit it.
                    _preallocate(self._fd, self._offset + len(buf))
            _pwrite_all(self._fd, buf, self._offset)
            if sync:
                started = time.perf_counter()
                os.fdatasync(self._fd)
                if self.fsync_delay:
                    slow_disk(self.fsync_delay)
                if self.observe_fsync is not None:
                    self.observe_fsync(time.perf_counter() - started)
        except BaseException as exc:
            self.failed = exc
            raise
        self._written(len(buf), sync)

    def _written(self, n: int, synced: bool = True) -> None:
        """Account for a batch of n bytes that is now written (durable if synced)."""
        self._batch_seq += 1
        self._offset += n
        self.bytes_written += n
        self.bytes_since_snapshot += n
        if synced:
            self.fsyncs += 1
        else:
            self.unsynced_batches += 1

    def try_save_unsynced(self, entries: list[Entry], hardstate: HardState | None) -> bool:
        """A batch that needs no fsync (only the commit index moved: must_sync) is
        written right here, on the caller's thread: one small pwrite. False, having
        written nothing, for any other batch (or when the segment is full, or another
        writer holds the WAL): that one takes save() or save_sync()."""
        if (entries or hardstate is None or self.must_sync(entries, hardstate)
                or self.failed is not None or self._offset + 64 > self.segment_bytes
                or not self._lock.acquire(blocking=False)):
            return False
        try:
            self._hardstate = hardstate
            hs = (hardstate.term, hardstate.vote, hardstate.commit)
            self._append(lambda seq: codec.encode_entries(seq, [], hs),
                         self._last_index + 1, sync=False)
        finally:
            self._lock.release()
        return True

    async def save(self, entries: list[Entry], hardstate: HardState | None) -> None:
        """save_sync's batch, written and fsynced off the loop by the GIL-free writer.

        Encoded here (so the batch number and offset are this write's), then handed
        to the writer thread; the WAL lock is held until the batch is durable. A batch
        that needs no fsync is written inline (try_save_unsynced). A
        batch that needs a new segment, the test-only slow disk, or a lock held by
        another writer (a snapshot marker being written) take save_sync in a worker
        thread instead."""
        if not entries and hardstate is None:
            return
        if self.try_save_unsynced(entries, hardstate):
            return
        if self.fsync_delay or not self._lock.acquire(blocking=False):
            await asyncio.to_thread(self.save_sync, entries, hardstate)
            return
        held = True
        try:
            if self.failed is not None:
                raise StorageCorruption(f"wal: an earlier write failed ({self.failed!r}); "
                                        f"refusing to write") from self.failed
            hs = None if hardstate is None else (hardstate.term, hardstate.vote,
                                                 hardstate.commit)
            buf = codec.encode_entries(self._batch_seq + 1,
                                       [(e.term, e.index, e.type, e.data) for e in entries], hs)
            if self._offset + len(buf) > self.segment_bytes:
                held = False
                self._lock.release()
                await asyncio.to_thread(self.save_sync, entries, hardstate)
                return
            if self._writer is None:
                self._writer = _DurableWriter(asyncio.get_running_loop())
            started = time.perf_counter()
            try:
                await self._writer.write(self._fd, buf, self._offset)
            except BaseException as exc:   # also a cancelled wait: the write's fate is unknown
                self.failed = exc
                raise
            if self.observe_fsync is not None:
                self.observe_fsync(time.perf_counter() - started)
            if hardstate is not None:
                self._hardstate = hardstate
            if entries:
                self._last_index = entries[-1].index
            self._written(len(buf))
        finally:
            if held:
                self._lock.release()

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
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        with self._lock:
            self._close_fd()


class _DurableWriter:
    """The event loop's side of the GIL-free writer thread (csrc/syncwriter.pyx): the
    thread writes a byte to a pipe when a job is done; the loop watches the pipe."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        self._core = SyncWriter(self._w)
        self._waiter: asyncio.Future | None = None
        loop.add_reader(self._r, self._on_done)

    async def write(self, fd: int, buf: bytes, offset: int) -> None:
        """pwrite buf at offset, then fdatasync; raises OSError if either failed."""
        fut = self._loop.create_future()
        self._waiter = fut
        self._core.submit(fd, buf, offset, True)
        err = await fut
        if err:
            raise OSError(err, os.strerror(err))

    def _on_done(self) -> None:
        try:
            os.read(self._r, 64)
        except BlockingIOError:
            return
        err = self._core.result()
        fut, self._waiter = self._waiter, None
        if err is not None and fut is not None and not fut.done():
            fut.set_result(err)

    def close(self) -> None:
        """Let a write in flight finish, then stop the thread and close the pipe."""
        try:
            self._loop.remove_reader(self._r)
        except (RuntimeError, ValueError):   # the loop is already closed
            pass
        self._core.close()
        os.close(self._r)
        os.close(self._w)
