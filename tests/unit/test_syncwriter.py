"""The GIL-free WAL writer (csrc/syncwriter.pyx) and WAL.save's use of it."""
import asyncio
import os
import select
import sys
import time

import pytest

from fastkv.errors import StorageCorruption
from fastkv.storage._syncwriter import SyncWriter
from fastkv.storage.wal import WAL, Entry, HardState

META = {"member_id": 1, "cluster_id": 2, "name": "t"}


def entries(lo, hi, term=1, size=10):
    return [Entry(term, i, 0, bytes([i % 251]) * size) for i in range(lo, hi + 1)]


def _wait_result(writer, notify_r, timeout=10.0):
    ready, _, _ = select.select([notify_r], [], [], timeout)
    assert ready, "the writer thread never reported"
    assert os.read(notify_r, 64) == b"\x01"
    return writer.result()


def test_writes_at_the_offset_and_reports_through_the_pipe(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"." * 16)
    r, w = os.pipe()
    writer = SyncWriter(w)
    fd = os.open(path, os.O_RDWR)
    try:
        writer.submit(fd, b"hello", 4)
        assert writer.busy
        with pytest.raises(RuntimeError, match="in flight"):
            writer.submit(fd, b"again", 0)
        assert _wait_result(writer, r) == 0
        assert not writer.busy
        writer.submit(fd, b"X" * 100_000, 20, False)   # past the end: the file grows
        assert _wait_result(writer, r) == 0
    finally:
        writer.close()
        os.close(fd)
        os.close(r)
        os.close(w)
    assert path.read_bytes() == b"....hello......." + b"\0" * 4 + b"X" * 100_000


def test_a_failed_write_reports_its_errno(tmp_path):
    r, w = os.pipe()
    writer = SyncWriter(w)
    fd = os.open(tmp_path / "ro", os.O_RDONLY | os.O_CREAT)
    try:
        writer.submit(fd, b"data", 0)
        assert _wait_result(writer, r) == 9  # EBADF: not open for writing
    finally:
        writer.close()
        os.close(fd)
        os.close(r)
        os.close(w)


def test_the_thread_works_while_another_thread_holds_the_gil(tmp_path):
    """Neither the job nor its report needs the GIL: with a 5 s switch interval and
    this thread spinning in pure Python (never releasing the GIL), the write is done
    and reported within the spin. A Python worker thread could not even start."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    writer = SyncWriter(w)
    fd = os.open(tmp_path / "g", os.O_RDWR | os.O_CREAT)
    old = sys.getswitchinterval()
    try:
        sys.setswitchinterval(5.0)
        writer.submit(fd, b"x" * 4096, 0)
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            pass
        sys.setswitchinterval(old)
        assert os.read(r, 64) == b"\x01"
        assert writer.result() == 0
    finally:
        sys.setswitchinterval(old)
        writer.close()
        os.close(fd)
        os.close(r)
        os.close(w)


def test_close_lets_the_pending_write_finish(tmp_path):
    r, w = os.pipe()
    writer = SyncWriter(w)
    fd = os.open(tmp_path / "c", os.O_RDWR | os.O_CREAT)
    writer.submit(fd, b"z" * 1_000_000, 0)
    writer.close()
    assert os.read(r, 64) == b"\x01"
    assert writer.result() == 0
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit(fd, b"late", 0)
    os.close(fd)
    os.close(r)
    os.close(w)
    assert (tmp_path / "c").read_bytes() == b"z" * 1_000_000


def test_wal_save_goes_through_the_writer_and_replays(tmp_path):
    async def run():
        wal = WAL.create(str(tmp_path / "wal"), META)
        await wal.save(entries(1, 3), HardState(1, 1, 0))
        assert wal._writer is not None
        before = wal.fsyncs
        await wal.save(entries(4, 200, size=300), HardState(2, 1, 3))
        assert wal.fsyncs == before + 1
        wal.save_sync(entries(201, 202), None)   # the two paths share one position
        await wal.save(entries(203, 203), None)
        wal.close()
    asyncio.run(run())
    wal, got = WAL.open(str(tmp_path / "wal"))
    wal.close()
    assert [e.index for e in got.entries] == list(range(1, 204))
    assert got.entries[150].data == entries(151, 151, size=300)[0].data
    assert got.hardstate == HardState(2, 1, 3)


def test_wal_save_rolls_over_segments(tmp_path):
    async def run():
        wal = WAL.create(str(tmp_path / "wal"), META, segment_bytes=64 * 1024)
        for lo in range(1, 2001, 100):
            await wal.save(entries(lo, lo + 99, size=100), HardState(1, 1, lo))
        wal.close()
        return len(wal._segments)
    assert asyncio.run(run()) > 1
    wal, got = WAL.open(str(tmp_path / "wal"))
    wal.close()
    assert [e.index for e in got.entries] == list(range(1, 2001))


def test_wal_save_failure_stops_later_writes(tmp_path):
    async def run():
        wal = WAL.create(str(tmp_path / "wal"), META)
        await wal.save(entries(1, 2), None)
        good_fd = wal._fd
        wal._fd = os.open(tmp_path / "readonly", os.O_RDONLY | os.O_CREAT)
        with pytest.raises(OSError):
            await wal.save(entries(3, 4), None)
        assert wal.failed is not None
        os.close(wal._fd)
        wal._fd = good_fd
        with pytest.raises(StorageCorruption, match="earlier write failed"):
            await wal.save(entries(3, 4), None)
        wal.close()
    asyncio.run(run())
    wal, got = WAL.open(str(tmp_path / "wal"))
    wal.close()
    assert [e.index for e in got.entries] == [1, 2]
