"""The test-only fault hooks (fastkv/faults.py, --experimental-fault-file): the file format,
and that each directive reaches what it slows or shifts, and that removing it undoes it.
tests/integration/test_fault_file.py shows the same on a real member."""
from __future__ import annotations

import asyncio
import threading
import types

import pytest

from fastkv import config, faults
from fastkv.server import Server
from fastkv.storage import snapshot as snapshot_mod
from fastkv.storage import wal as wal_mod
from fastkv.storage.snapshot import Snapshotter
from fastkv.storage.wal import WAL, Entry, HardState


# ---- the format ------------------------------------------------------------------------

def test_bare_hex_ids_still_mean_drop_traffic():
    d = faults.parse("8e9e05c52164694d\n\n  91bc3c398fb3c146  \n")
    assert d == faults.Directives(frozenset({0x8e9e05c52164694d, 0x91bc3c398fb3c146}))
    assert faults.parse("") == faults.Directives()


def test_fsync_delay_and_clock_jump_directives():
    d = faults.parse("a1\nfsync-delay 0.25\nclock-jump -3.5\n")
    assert d.drop == {0xa1} and d.fsync_delay == 0.25 and d.clock_offset == -3.5
    assert faults.parse(faults.render(d)) == d
    assert faults.render(faults.Directives()) == ""


@pytest.mark.parametrize("text", [
    "zz",                      # not hex
    "fsync-delay",             # no number
    "fsync-delay -1",          # a disk cannot be faster than itself
    "fsync-delay nan", "clock-jump inf", "clock-jump 1e999",
    "fsync-delay 1 2", "drop a1", "clock-jump soon",
])
def test_a_bad_line_is_refused_whole(text):
    with pytest.raises(ValueError):
        faults.parse("a1\nfsync-delay 0.1\n" + text + "\n")


def test_jump_clock_shifts_by_its_offset_and_back():
    now = [100.0]
    clock = faults.JumpClock(lambda: now[0])
    assert clock() == 100.0
    clock.offset = 7.5
    assert clock() == 107.5
    now[0] = 101.0
    assert clock() == 108.5
    clock.offset = 0.0
    assert clock() == 101.0


# ---- the server: absent by default, applied and undone ----------------------------------

def test_without_the_flag_the_server_keeps_the_clock_it_was_given():
    def clock():
        return 1.0
    assert Server(config.parse([], environ={}), clock=clock).clock is clock
    srv = Server(config.parse(["--experimental-fault-file", "/nonexistent/x"], environ={}),
                 clock=clock)
    assert isinstance(srv.clock, faults.JumpClock) and srv.clock() == 1.0


def _stub_server():
    """What Server._apply_faults touches, and nothing else."""
    return types.SimpleNamespace(
        transport=types.SimpleNamespace(drop_to=set(), drop_from=set()),
        wal=types.SimpleNamespace(fsync_delay=0.0),
        snapshotter=types.SimpleNamespace(fsync_delay=0.0),
        _jump_clock=faults.JumpClock(lambda: 50.0))


def test_apply_faults_sets_each_directive_and_removal_restores():
    srv = _stub_server()
    off = faults.Directives()
    on = faults.parse("a1\nfsync-delay 0.2\nclock-jump 4\n")
    Server._apply_faults(srv, off, on)
    assert srv.transport.drop_to == srv.transport.drop_from == {0xa1}
    assert srv.wal.fsync_delay == srv.snapshotter.fsync_delay == 0.2
    assert srv._jump_clock() == 54.0
    # Only the clock jump removed: the rest stays.
    less = faults.parse("a1\nfsync-delay 0.2\n")
    Server._apply_faults(srv, on, less)
    assert srv._jump_clock() == 50.0 and srv.wal.fsync_delay == 0.2
    assert srv.transport.drop_to == {0xa1}
    Server._apply_faults(srv, less, off)
    assert srv.transport.drop_to == srv.transport.drop_from == set()
    assert srv.wal.fsync_delay == srv.snapshotter.fsync_delay == 0.0


# ---- the slow disk -------------------------------------------------------------------------

@pytest.fixture
def slow_disk_calls(monkeypatch):
    """Record slow_disk calls (and the WAL's fsync count at each) instead of sleeping."""
    calls = []
    monkeypatch.setattr(wal_mod, "slow_disk", lambda d: calls.append(d))
    monkeypatch.setattr(snapshot_mod, "slow_disk", lambda d: calls.append(d))
    return calls


def _entry(i: int) -> Entry:
    return Entry(term=1, index=i, type=0, data=b"x")


def test_wal_fsync_delay_comes_after_the_fsync_and_before_the_write_counts(tmp_path, monkeypatch):
    w = WAL.create(str(tmp_path / "wal"), {"member_id": 1, "cluster_id": 2})
    seen = []
    monkeypatch.setattr(wal_mod, "slow_disk", lambda d: seen.append((d, w.fsyncs)))
    w.save_sync([_entry(1)], HardState(1, 0, 0))
    assert seen == [] and w.fsyncs == 1            # off by default
    w.fsync_delay = 0.3
    w.save_sync([_entry(2)], None)
    assert seen == [(0.3, 1)] and w.fsyncs == 2    # delayed before the batch was done
    w.fsync_delay = 0.0
    w.save_sync([_entry(3)], None)
    assert seen == [(0.3, 1)] and w.fsyncs == 3
    w.close()


def test_snapshot_fsync_delay(tmp_path, slow_disk_calls):
    snaps = Snapshotter(str(tmp_path / "snap"))
    snaps.save(1, 10, {"a": 1})
    assert slow_disk_calls == []
    snaps.fsync_delay = 0.4
    snaps.save(1, 20, {"a": 2})
    assert slow_disk_calls == [0.4]
    assert snaps.load(snaps.path_for(20))[0] == {"a": 2}


def test_a_slow_wal_fsync_does_not_block_the_event_loop(tmp_path, monkeypatch):
    """The delay sits in the WAL's worker thread, where the real fsync is: while a save is
    held up, the loop runs other tasks; the save returns only once the disk lets it."""
    w = WAL.create(str(tmp_path / "wal"), {"member_id": 1, "cluster_id": 2})
    w.fsync_delay = 1.0
    in_fsync, release = threading.Event(), threading.Event()

    def slow(_delay):
        in_fsync.set()
        assert release.wait(10), "never released"
    monkeypatch.setattr(wal_mod, "slow_disk", slow)

    async def main():
        save = asyncio.ensure_future(w.save([_entry(1)], HardState(1, 0, 0)))
        ticks = 0
        while not in_fsync.is_set():
            await asyncio.sleep(0.01)
        for _ in range(5):         # the loop keeps turning while the disk is slow
            await asyncio.sleep(0)
            ticks += 1
        assert not save.done() and w.fsyncs == 0
        release.set()
        await asyncio.wait_for(save, 10)
        return ticks

    assert asyncio.run(main()) == 5
    assert w.fsyncs == 1
    w.close()
