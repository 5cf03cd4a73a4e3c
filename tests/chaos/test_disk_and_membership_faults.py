"""Member remove/add cycles and on-disk faults in the nemesis, and proof that their checks fail.

* a short real-process run (3 members, register and durability clients) through member
  replacement, a torn WAL tail, a bit flipped in the middle of a WAL and one in a snapshot:
  the damage must be detected, never applied, and every member end with the same data;
* the damage helpers (tests/chaos/diskfaults.py) on real WAL and snapshot files: a torn
  tail is repaired without a record made up, any flipped bit is refused;
* the judgement of a restart over damaged data, and the after-heal hash check, on crafted
  input; and the hash check on a real member whose WAL was changed with a valid CRC (silent
  corruption no CRC can see): it must name that member.
"""
from __future__ import annotations

import logging
import os
import random
import signal
import sys
import time

import pytest
import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import diskfaults  # noqa: E402
from disk_and_membership import compare_hashes, judge_restart  # noqa: E402
from nemesis import Nemesis, Report, b64  # noqa: E402

from fastkv._crc32c import crc32c  # noqa: E402
from fastkv.errors import StorageCorruption  # noqa: E402
from fastkv.storage import _walcodec as codec  # noqa: E402
from fastkv.storage.snapshot import Snapshotter  # noqa: E402
from fastkv.storage.wal import WAL, Entry, HardState  # noqa: E402

def _short_run(schedule: list[str]) -> Report:
    """A 3-member run through `schedule` (each kind once at least). Every member replaced
    waits for etcd's strict reconfiguration check (5 s of connection of every voter before
    an add), so two runs of two kinds each stay short where one of four would not."""
    rep = Nemesis(members=3, seed=11, seconds=4, schedule=schedule).run()
    summary = rep.summary()
    print(summary)
    assert not rep.failed, summary
    assert all(rep.faults.get(kind) for kind in schedule), summary
    assert "hash check: HashKV at revision" in summary, summary      # it ran, and agreed
    assert rep.acknowledged > 0 and rep.durable_acked > 0, summary
    return rep


@pytest.mark.long
def test_short_run_repairs_a_torn_tail_and_refuses_a_damaged_wal():
    summary = _short_run(["torn-tail", "wal-bitflip"]).summary()
    assert "torn-tail: repaired and started: 1" in summary
    assert "wal-bitflip: detected, refused to start: 1" in summary
    assert "members replaced (remove, wipe, add): 1" in summary


@pytest.mark.long
def test_short_run_refuses_a_damaged_snapshot_and_replaces_members():
    summary = _short_run(["snapshot-bitflip", "member-replace"]).summary()
    assert "snapshot-bitflip: detected, refused to start: 1" in summary
    assert "members replaced (remove, wipe, add): 2" in summary


# ---- the damage helpers on real files ------------------------------------------------------

def _wal_with_batches(data_dir, batches: int = 12) -> list[Entry]:
    """A WAL under data_dir as a member keeps it, with `batches` batches of 3 entries."""
    wal = WAL.create(diskfaults.wal_dir(str(data_dir)), {"member_id": 1, "cluster_id": 2},
                     segment_bytes=1 << 16)
    ents = []
    for b in range(batches):
        batch = [Entry(1, 3 * b + i, 0, os.urandom(20)) for i in (1, 2, 3)]
        wal.save_sync(batch, HardState(1, 1, 3 * b))
        ents += batch
    wal.close()
    return ents


def _records(path):
    with open(path, "rb") as f:
        return codec.decode(f.read(), 0)[0]


@pytest.mark.parametrize("seed", range(8))
def test_a_torn_tail_makes_up_no_record_and_is_repaired(tmp_path, caplog, seed):
    ents = _wal_with_batches(tmp_path)
    path = diskfaults.wal_segments(str(tmp_path))[-1]
    before = _records(path)
    torn, what = diskfaults.tear_wal_tail(str(tmp_path), random.Random(seed))
    assert torn == path and "unfinished batch" in what
    assert _records(path) == before          # no whole record added, none changed
    with caplog.at_level(logging.WARNING, logger="fastkv.wal"):
        wal, got = WAL.open(diskfaults.wal_dir(str(tmp_path)))
    wal.close()
    assert got.entries == ents
    assert "torn tail" in caplog.text and os.path.basename(path) in caplog.text


@pytest.mark.parametrize("seed", range(40))
def test_a_bit_flipped_in_the_middle_of_the_wal_is_refused(tmp_path, seed):
    _wal_with_batches(tmp_path)
    path, what = diskfaults.flip_wal_bit(str(tmp_path), random.Random(seed))
    with pytest.raises(StorageCorruption) as exc:
        WAL.open(diskfaults.wal_dir(str(tmp_path)))
    assert os.path.basename(path) in str(exc.value) and "refusing to start" in str(exc.value)


def test_flip_wal_bit_only_picks_records_later_batches_follow(tmp_path):
    picked = set()
    for seed in range(30):
        data_dir = tmp_path / str(seed)
        _wal_with_batches(data_dir, batches=3)     # header batch 1, then batches 2..4
        _p, what = diskfaults.flip_wal_bit(str(data_dir), random.Random(seed))
        picked.add(int(what.rsplit("batch ", 1)[1].rstrip(")")))
    assert picked == {1, 2}, picked


@pytest.mark.parametrize("seed", range(20))
def test_a_bit_flipped_in_the_newest_snapshot_is_refused(tmp_path, seed):
    snaps = Snapshotter(diskfaults.snap_dir(str(tmp_path)))
    snaps.save(1, 10, {"applied_index": 10}, [b"old" * 50])
    snaps.save(1, 20, {"applied_index": 20}, [b"new" * 50])
    path, _what = diskfaults.flip_snapshot_bit(str(tmp_path), random.Random(seed))
    assert path.endswith("0000000000000001-0000000000000014.snap")
    with pytest.raises(StorageCorruption) as exc:
        snaps.load_newest()
    assert os.path.basename(path) in str(exc.value)


def test_flip_snapshot_bit_without_a_snapshot(tmp_path):
    assert diskfaults.flip_snapshot_bit(str(tmp_path), random.Random(0)) is None


# ---- judging a restart over damaged data -----------------------------------------------------

WAL_PATH = "/d/member/member/wal/0000000000000000-0000000000000001.wal"
REFUSAL = (f"fastkv: refusing to start: wal: corrupt record in {WAL_PATH} at offset 4096: "
           f"valid records of later writes follow it")


def test_judge_restart_over_a_damaged_wal():
    assert judge_restart("wal-bitflip", "exited", 1, REFUSAL, WAL_PATH) == (
        "wal-bitflip: detected, refused to start", None)
    # Started and served: the damage was applied or ignored.
    counted, anomaly = judge_restart("wal-bitflip", "started", None, "serving", WAL_PATH)
    assert counted is None and "started and served over damaged data" in anomaly
    # Exited, but for another reason, or without naming the file, or with status 0.
    for rc, text in [(1, "fastkv: address already in use"),
                     (1, "fastkv: refusing to start: wal: something"),
                     (0, REFUSAL)]:
        counted, anomaly = judge_restart("wal-bitflip", "exited", rc, text, WAL_PATH)
        assert counted is None and "did not refuse clearly" in anomaly
    counted, anomaly = judge_restart("wal-bitflip", "hung", None, "", WAL_PATH)
    assert counted is None and "hung" in anomaly


def test_judge_restart_over_a_damaged_snapshot():
    snap = "/d/member/member/snap/0000000000000002-000000000000012d.snap"
    text = f"fastkv: refusing to start: snapshot: {snap} failed its CRC check (corrupt file)"
    assert judge_restart("snapshot-bitflip", "exited", 1, text, snap)[1] is None
    # Starting is allowed (etcd 3.4 falls back to an older snapshot); the hash check judges.
    counted, anomaly = judge_restart("snapshot-bitflip", "started", None, "", snap)
    assert anomaly is None and "started without the damaged snapshot" in counted
    assert judge_restart("snapshot-bitflip", "exited", 1, "Traceback ...", snap)[1]


def test_judge_restart_over_a_torn_tail():
    text = f"WARNING fastkv.wal: wal: torn tail in {WAL_PATH} at offset 8 (9 bytes ...); truncating"
    assert judge_restart("torn-tail", "started", None, text, WAL_PATH) == (
        "torn-tail: repaired and started", None)
    assert "without noticing" in judge_restart("torn-tail", "started", None, "", WAL_PATH)[1]
    assert "did not start" in judge_restart("torn-tail", "exited", 1, REFUSAL, WAL_PATH)[1]


# ---- the hash check ------------------------------------------------------------------------

def test_compare_hashes_accepts_equal_members():
    assert compare_hashes(50, {0: 50, 1: 50, 2: 50}, {0: (7, 0), 1: (7, 0), 2: (7, 0)}) == []


def test_compare_hashes_names_the_odd_member():
    problems = compare_hashes(50, {0: 50, 1: 50, 2: 50}, {0: (7, 0), 1: (9, 0), 2: (7, 0)})
    assert len(problems) == 1 and "differs" in problems[0] and problems[0].endswith("odd: m1")
    # No majority: every member is named.
    problems = compare_hashes(50, {0: 50, 1: 50}, {0: (7, 0), 1: (9, 0)})
    assert problems[0].endswith("odd: m0, m1")


def test_compare_hashes_reports_revisions_compactions_and_silence():
    problems = compare_hashes(49, {0: 50, 1: 49, 2: 50}, {0: (7, 0), 1: (7, 0), 2: (7, 0)})
    assert problems == ["members at the same applied index are at different revisions: "
                        "m0 50, m1 49, m2 50"]
    problems = compare_hashes(50, {0: 50, 1: 50}, {0: (7, 0), 1: (7, 20)})
    assert problems and "compact revision" in problems[0]
    problems = compare_hashes(50, {0: 50, 1: None}, {0: (7, 0), 1: "UNAVAILABLE: down"})
    assert any("m1 gave no HashKV" in p for p in problems)


def _forge_wal_value(data_dir: str, old: bytes, new: bytes) -> int:
    """Silent corruption: replace `old` by `new` (same length) inside WAL records and give
    each changed record a valid CRC again, so no check of the WAL can see it. Returns how
    many records were changed."""
    assert len(old) == len(new)
    changed = 0
    for path in diskfaults.wal_segments(data_dir):
        with open(path, "r+b") as f:
            buf = bytearray(f.read())
            for off, _seq, _rtype, _flags, payload in codec.decode(bytes(buf), 0)[0]:
                if old not in payload:
                    continue
                body = off + codec.HEADER_SIZE
                buf[body:body + len(payload)] = payload.replace(old, new)
                crc = crc32c(bytes(buf[body:body + len(payload)]),
                             crc32c(bytes(buf[off + 8:off + 16]), crc32c(bytes(buf[off:off + 4]))))
                buf[off + 4:off + 8] = crc.to_bytes(4, "little")
                changed += 1
            f.seek(0)
            f.write(buf)
    return changed


def test_hash_check_names_a_member_whose_data_silently_differs():
    """Real processes: one follower's WAL is changed with valid CRCs while it is stopped, so
    it replays a put with another value and serves it; its applied index matches the
    others'. The check must flag exactly that member, and pass on the healthy cluster."""
    n = Nemesis(members=3, seed=0, workloads=[])
    try:
        n.start_cluster()
        lead = n.leader()
        victim = (lead + 1) % 3
        url = n.url(lead)
        for i, value in enumerate(["hash-check-good!", "x", "y"]):
            requests.post(url + "/v3/kv/put", json={"key": b64(f"h{i}"), "value": b64(value)},
                          timeout=10).raise_for_status()
        rep = Report(seed=0, members=3, seconds=0)
        assert n._converge(rep)
        n._check_hashes(rep)
        assert rep.anomalies == [] and "equal on all 3 members" in rep.notes[0]

        m = n.cluster.members[victim]
        m.kill(signal.SIGTERM)
        m._log.close()
        assert _forge_wal_value(n._data_dir(victim), b"hash-check-good!", b"hash-check-EVIL!") == 1
        m.start(timeout=30)
        deadline = time.monotonic() + 20
        while True:      # it replays its own (forged) log: the others still agree with it
            r = requests.post(m.url + "/v3/kv/range",
                              json={"key": b64("h2"), "serializable": True}, timeout=5).json()
            if r.get("kvs") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        rep = Report(seed=0, members=3, seconds=0)
        assert n._converge(rep)
        n._check_hashes(rep)
        assert len(rep.anomalies) == 1, rep.anomalies
        assert "differs" in rep.anomalies[0] and rep.anomalies[0].endswith(f"odd: m{victim}")
    finally:
        n.teardown()
