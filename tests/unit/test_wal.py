"""WAL: group-committed batches, replay, torn tails, corruption, segments."""
import logging
import os

import pytest

from fastkv.errors import StorageCorruption
from fastkv.storage import _walcodec as codec
from fastkv.storage.wal import WAL, Entry, HardState

META = {"member_id": 1, "cluster_id": 2, "name": "t"}


def make(tmp_path, **kw):
    return WAL.create(str(tmp_path / "wal"), META, **kw)


def entries(lo, hi, term=1, size=10):
    return [Entry(term, i, 0, bytes([i % 251]) * size) for i in range(lo, hi + 1)]


def test_create_save_reopen(tmp_path):
    wal = make(tmp_path)
    wal.save_sync(entries(1, 3), HardState(1, 1, 0))
    wal.save_sync(entries(4, 10), HardState(1, 1, 3))
    wal.close()
    wal2, got = WAL.open(str(tmp_path / "wal"))
    assert got.metadata == META
    assert [e.index for e in got.entries] == list(range(1, 11))
    assert got.entries[4].data == entries(5, 5)[0].data
    assert got.hardstate == HardState(1, 1, 3)
    # appends continue after the replayed end
    wal2.save_sync(entries(11, 12), None)
    wal2.close()
    _, got = WAL.open(str(tmp_path / "wal"))
    assert got.entries[-1].index == 12


def test_one_write_and_one_fsync_per_batch(tmp_path):
    wal = make(tmp_path)
    before = wal.fsyncs
    wal.save_sync(entries(1, 500), HardState(1, 1, 0))
    assert wal.fsyncs == before + 1
    wal.close()


def test_a_commit_only_hard_state_is_written_without_an_fsync(tmp_path, monkeypatch):
    """etcd's raft.MustSync: entries, a new term or a new vote are fsynced; a hard state
    that only moves the commit index is written and made durable by the next fsync."""
    wal = make(tmp_path)
    wal.save_sync(entries(1, 3), HardState(1, 1, 0))
    assert (wal.fsyncs, wal.unsynced_batches) == (1, 0)
    synced = []
    monkeypatch.setattr(os, "fdatasync", lambda fd: synced.append(fd))
    assert wal.try_save_unsynced([], HardState(1, 1, 3))          # the commit moved
    wal.save_sync([], HardState(1, 1, 3))                         # the same, via save_sync
    assert synced == [] and (wal.fsyncs, wal.unsynced_batches) == (1, 2)
    for hs in (HardState(2, 1, 3), HardState(1, 2, 3)):           # a new term; a new vote
        assert not wal.must_sync([], HardState(1, 1, 4)) and wal.must_sync([], hs)
        assert not wal.try_save_unsynced([], hs)
    assert not wal.try_save_unsynced(entries(4, 4), HardState(1, 1, 3))   # entries
    wal.save_sync([], HardState(2, 2, 3))
    wal.save_sync(entries(4, 4), None)
    assert len(synced) == 2 and wal.fsyncs == 3
    wal.close()
    _, got = WAL.open(str(tmp_path / "wal"))
    assert got.hardstate == HardState(2, 2, 3) and got.entries[-1].index == 4


def test_a_lost_unsynced_commit_index_is_a_torn_tail(tmp_path):
    """A crash that drops the unsynced commit-only batch leaves the synced log whole."""
    wal = make(tmp_path)
    wal.save_sync(entries(1, 3), HardState(1, 1, 0))
    path = _last_segment(tmp_path)
    good_end = _data_end(path)
    assert wal.try_save_unsynced([], HardState(1, 1, 3))
    end = _data_end(path)
    wal.close()
    with open(path, "r+b") as f:       # the page cache never reached the disk
        f.seek(good_end)
        f.write(bytes(end - good_end))
    _, got = WAL.open(str(tmp_path / "wal"))
    assert [e.index for e in got.entries] == [1, 2, 3] and got.hardstate == HardState(1, 1, 0)


def test_conflicting_entries_replace_the_tail(tmp_path):
    wal = make(tmp_path)
    wal.save_sync(entries(1, 5, term=1), HardState(1, 1, 0))
    wal.save_sync(entries(4, 6, term=2), HardState(2, 1, 0))
    wal.close()
    _, got = WAL.open(str(tmp_path / "wal"))
    assert [(e.index, e.term) for e in got.entries] == [
        (1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 2)]


def _last_segment(tmp_path):
    d = tmp_path / "wal"
    return str(d / sorted(os.listdir(d))[-1])


def _data_end(path):
    with open(path, "rb") as f:
        buf = f.read()
    _recs, end, clean = codec.decode(buf, 0)
    assert clean
    return end


@pytest.mark.parametrize("keep_fraction", [0.0, 0.3, 0.7, 0.99])
def test_torn_tail_is_truncated_and_logged(tmp_path, caplog, keep_fraction):
    wal = make(tmp_path)
    wal.save_sync(entries(1, 20), HardState(1, 1, 0))
    path = _last_segment(tmp_path)
    good_end = _data_end(path)
    wal.save_sync(entries(21, 40), HardState(1, 1, 20))  # the write "the crash interrupted"
    wal.close()
    end = _data_end(path)
    # Keep only part of the last batch, as a crash mid-write would.
    cut = good_end + int((end - good_end) * keep_fraction)
    with open(path, "r+b") as f:
        f.seek(cut)
        f.write(bytes(end - cut))
    with caplog.at_level(logging.WARNING, logger="fastkv.wal"):
        wal2, got = WAL.open(str(tmp_path / "wal"))
    assert [e.index for e in got.entries][:20] == list(range(1, 21))
    assert all(e.index <= 40 for e in got.entries)
    if keep_fraction > 0:  # part of the batch made it to disk: repaired, and said so
        assert "torn tail" in caplog.text
    # The log goes on cleanly after the repair.
    nxt = got.entries[-1].index + 1
    wal2.save_sync(entries(nxt, nxt + 2), None)
    wal2.close()
    _, again = WAL.open(str(tmp_path / "wal"))
    assert [e.index for e in again.entries] == list(range(1, nxt + 3))


def test_torn_page_inside_the_last_batch_is_a_torn_tail(tmp_path):
    """A crash can persist later pages of the last write but not an earlier one."""
    wal = make(tmp_path)
    wal.save_sync(entries(1, 5), HardState(1, 1, 0))
    path = _last_segment(tmp_path)
    good_end = _data_end(path)
    wal.save_sync(entries(6, 200, size=100), None)
    wal.close()
    with open(path, "r+b") as f:  # a hole in the middle of the last batch
        f.seek(good_end + 4096)
        f.write(bytes(4096))
    _, got = WAL.open(str(tmp_path / "wal"))
    assert got.entries[-1].index < 200
    assert [e.index for e in got.entries][:5] == [1, 2, 3, 4, 5]


def test_bit_flip_before_valid_records_is_corruption(tmp_path):
    wal = make(tmp_path)
    wal.save_sync(entries(1, 5), HardState(1, 1, 0))
    wal.save_sync(entries(6, 10), HardState(1, 1, 5))
    wal.save_sync(entries(11, 15), HardState(1, 1, 10))
    wal.close()
    path = _last_segment(tmp_path)
    with open(path, "rb") as f:
        buf = f.read()
    recs, _end, _ = codec.decode(buf, 0)
    victim = [r for r in recs if r[2] == codec.TYPE_ENTRY][7]  # an entry of the 2nd batch
    with open(path, "r+b") as f:
        f.seek(victim[0] + codec.HEADER_SIZE + 17)
        byte = f.read(1)
        f.seek(victim[0] + codec.HEADER_SIZE + 17)
        f.write(bytes([byte[0] ^ 0x10]))
    with pytest.raises(StorageCorruption) as exc:
        WAL.open(str(tmp_path / "wal"))
    assert os.path.basename(path) in str(exc.value)
    assert f"offset {victim[0]}" in str(exc.value)


def test_segments_roll_over_and_are_released(tmp_path):
    wal = make(tmp_path, segment_bytes=4096)
    for lo in range(1, 200, 10):
        wal.save_sync(entries(lo, lo + 9, size=50), HardState(1, 1, lo - 1))
    assert len(wal.segment_paths) > 3
    wal.save_snapshot_marker(150, 1)
    removed = wal.release_to(150)
    assert removed >= 1
    wal.close()
    wal2, got = WAL.open(str(tmp_path / "wal"), segment_bytes=4096)
    assert got.snapshot_index == 150
    assert got.entries[0].index == 151 and got.entries[-1].index == 200
    wal2.close()


def test_corruption_in_an_older_segment_refuses(tmp_path):
    wal = make(tmp_path, segment_bytes=4096)
    for lo in range(1, 100, 10):
        wal.save_sync(entries(lo, lo + 9, size=50), None)
    wal.close()
    first = str(tmp_path / "wal" / sorted(os.listdir(tmp_path / "wal"))[0])
    with open(first, "r+b") as f:
        f.seek(200)
        b = f.read(1)
        f.seek(200)
        f.write(bytes([b[0] ^ 1]))
    with pytest.raises(StorageCorruption):
        WAL.open(str(tmp_path / "wal"), segment_bytes=4096)


def test_preallocated_segment(tmp_path):
    wal = make(tmp_path, segment_bytes=1 << 20)
    assert os.path.getsize(wal.segment_paths[0]) == 1 << 20
    wal.close()


def test_garbage_segment_is_refused_and_left_untouched(tmp_path):
    wal = make(tmp_path)
    wal.save_sync(entries(1, 3), HardState(1, 1, 0))
    wal.close()
    path = _last_segment(tmp_path)
    with open(path, "r+b") as f:
        f.write(b"junk" * 8)          # the segment header is gone
    before = open(path, "rb").read()
    with pytest.raises(StorageCorruption, match="offset 0"):
        WAL.open(str(tmp_path / "wal"))
    assert open(path, "rb").read() == before  # nothing "repaired"


def test_record_lookalike_inside_entry_data_does_not_block_repair(tmp_path):
    """A value that happens to contain WAL-framed bytes (an old batch number) in a torn
    last batch must not be mistaken for a later write."""
    wal = make(tmp_path)
    wal.save_sync(entries(1, 5), HardState(1, 1, 0))
    path = _last_segment(tmp_path)
    good_end = _data_end(path)
    lookalike = codec.encode_batch(1, [(codec.TYPE_ENTRY, b"\x00" * 17 + b"x")])
    # record header 16 + entry header 17 + 7 bytes: the lookalike is 8-byte aligned
    wal.save_sync([Entry(1, 6, 0, b"\x00" * 7 + lookalike + b"tail" * 100)], None)
    wal.close()
    buf = open(path, "rb").read()
    assert codec.find_next_valid(buf, good_end)[:2] == (good_end + 40, 1)  # seen, old batch
    with open(path, "r+b") as f:  # tear the last batch at its start
        f.seek(good_end + 4)
        f.write(b"\xff\xff\xff\xff")
    _, got = WAL.open(str(tmp_path / "wal"))
    assert [e.index for e in got.entries] == [1, 2, 3, 4, 5]


def test_zeroed_first_page_of_the_last_write_is_a_torn_tail(tmp_path):
    """The page holding the last batch's first header never reached disk, later pages
    did: the stale remainder must be cleared, or later appends would sit in front of
    it and a restart could resurrect never-acknowledged entries."""
    wal = make(tmp_path)
    wal.save_sync(entries(1, 10), HardState(1, 1, 0))
    path = _last_segment(tmp_path)
    good_end = _data_end(path)
    wal.save_sync(entries(11, 200, size=100), None)   # the write the crash tore
    wal.close()
    with open(path, "r+b") as f:
        f.seek(good_end)
        f.write(bytes(4096))
    wal2, got = WAL.open(str(tmp_path / "wal"))
    assert got.entries[-1].index == 10
    # New writes the same shape as the stale ones (record boundaries line up) and
    # longer than the zeroed page, then restart: only the new entries may come back.
    wal2.save_sync([Entry(2, i, 0, b"N" * 100) for i in range(11, 61)], None)
    wal2.close()
    _, again = WAL.open(str(tmp_path / "wal"))
    assert [(e.index, e.term) for e in again.entries][10:] == [(i, 2) for i in range(11, 61)]


def test_zeroed_block_inside_acknowledged_data_is_refused(tmp_path):
    wal = make(tmp_path)
    for lo in range(1, 100, 10):
        wal.save_sync(entries(lo, lo + 9, size=100), HardState(1, 1, lo - 1))
    wal.close()
    path = _last_segment(tmp_path)
    recs, _end, _ = codec.decode(open(path, "rb").read(), 0)
    start = recs[len(recs) // 3][0]  # zeros from a record boundary: decoding ends "cleanly"
    with open(path, "r+b") as f:
        f.seek(start)
        f.write(bytes(2048))
    with pytest.raises(StorageCorruption, match="later writes"):
        WAL.open(str(tmp_path / "wal"))


def _batch_seqs(path):
    recs, _end, _clean = codec.decode(open(path, "rb").read(), 0)
    return [r[1] for r in recs]


def test_batch_numbers_increase_across_a_roll_over(tmp_path):
    wal = make(tmp_path, segment_bytes=4096)
    for lo in range(1, 300, 10):
        wal.save_sync(entries(lo, lo + 9, size=50), HardState(1, 1, lo - 1))
        wal.save_snapshot_marker(lo, 1)
    for path in wal.segment_paths:
        seqs = _batch_seqs(path)
        assert seqs == sorted(seqs) and seqs[0] == 1
    wal.close()


def test_torn_second_batch_after_a_roll_over_is_repaired(tmp_path):
    wal = make(tmp_path, segment_bytes=4096)
    lo = 1
    while len(wal.segment_paths) < 2:
        wal.save_sync(entries(lo, lo + 4, size=60), None)
        lo += 5
    path = wal.segment_paths[-1]
    good_end = _data_end(path)
    wal.save_sync(entries(lo, lo + 4, size=60), None)  # torn below
    wal.close()
    with open(path, "r+b") as f:
        f.seek(good_end + 20)
        f.write(b"\xff" * 8)
    _, got = WAL.open(str(tmp_path / "wal"), segment_bytes=4096)
    assert got.entries[-1].index == lo - 1


def test_short_write_fails_and_the_wal_refuses_later_writes(tmp_path, monkeypatch):
    import fastkv.storage.wal as walmod
    wal = make(tmp_path)
    wal.save_sync(entries(1, 2), None)
    real = os.pwrite
    monkeypatch.setattr(walmod.os, "pwrite", lambda fd, buf, off: 0)
    with pytest.raises(OSError):
        wal.save_sync(entries(3, 4), None)
    monkeypatch.setattr(walmod.os, "pwrite", real)
    with pytest.raises(StorageCorruption, match="earlier write failed"):
        wal.save_sync(entries(3, 4), None)
    wal.close()
