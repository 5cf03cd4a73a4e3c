"""A short real-process nemesis run (tests/chaos/nemesis.py), and proof that its checks can fail.

The run: a 3-member cluster on loopback, every workload at once (register, durability, append,
watch, lock) and a fault of each process/network/clock/disk-speed kind in turn (SIGKILL and
SIGSTOP of the leader and of a random member, partitions, a slow disk and a clock jump through
--experimental-fault-file) for about 25 s. The register history must be linearizable, the
append history strict serializable, every watch guarantee hold, the lock's writes be fenced,
and no acknowledged write be missing afterwards; each workload must also have done real work.
The on-disk and membership faults have their own short runs
(test_disk_and_membership_faults.py). ``ci/chaos --minutes N`` runs all of it for longer.
"""
from __future__ import annotations

import os
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from nemesis import Nemesis, Report, compare_durable  # noqa: E402

from checkers.linearizability import Op  # noqa: E402

SCHEDULE = ["kill-leader", "pause", "partition-leader", "clock-jump-leader", "kill",
            "pause-leader", "slow-disk", "partition"]
WORKLOADS = ["register", "durability", "append", "watch", "lock"]


def test_short_nemesis_run_with_every_workload_passes():
    nem = Nemesis(members=3, seed=7, seconds=22, schedule=SCHEDULE, workloads=WORKLOADS,
                  lock_clients=4, lock_ttl=2, lock_pause=0.3)
    rep = nem.run()
    summary = rep.summary()
    print(summary)
    assert not rep.failed, summary
    assert rep.anomalies == [] and rep.lost == []
    assert sum(rep.faults.values()) >= len(SCHEDULE), summary   # the nemesis did act
    assert rep.acknowledged > 0 and rep.durable_acked > 0, summary
    # register: linearizable, and not trivially so
    assert any(n.startswith("register:") and " linearizable" in n for n in rep.notes), summary
    # append: strict serializable over a real number of committed txns
    line = next(n for n in rep.notes if n.startswith("append:"))
    assert "strict serializable" in line, summary
    assert int(line.split("(")[1].split(" ok")[0]) >= 50, summary
    # watch: every guarantee held over events actually delivered, with progress notifications
    res = nem.workload("watch").result
    assert res is not None and res.ok, summary
    assert res.events > 100 and res.progress > 0 and res.sessions > 4, summary
    # lock: many fenced writes accepted, and a holder that paused past its TTL fenced off
    writes = nem.workload("lock").writes
    assert sum(w.status == "ok" for w in writes) >= 10, summary
    assert sum(w.status == "fail" and w.paused for w in writes) >= 1, summary


def _analysed(history: list[Op]) -> Report:
    """Run the harness's own analysis (the linearizability check and the summary) on a history."""
    n = Nemesis(seed=0, workloads=["register"])
    n.workload("register").history = history
    rep = Report(seed=0, members=3, seconds=0)
    n._analyse(rep)
    return rep


def test_harness_reports_a_stale_read():
    # put x=a, then put x=b acknowledged, then a read that starts after b was acknowledged
    # yet returns a: stale.
    h = [Op(0, 0, "put", ("r0", "a"), 0.0, 1.0),
         Op(1, 1, "put", ("r0", "b"), 2.0, 3.0),
         Op(2, 2, "get", ("r0",), 4.0, 5.0, "ok", "a")]
    rep = _analysed(h)
    assert rep.failed
    assert "not linearizable" in rep.anomalies[0] and "op#2" in rep.anomalies[0]
    assert "FAILED" in rep.summary()
    # The same history with the fresh value passes.
    h[2].result = "b"
    assert not _analysed(h).failed


def test_harness_reports_a_lost_cas_and_accepts_indeterminate_writes():
    # A successful CAS the next read does not see is an anomaly...
    h = [Op(0, 0, "put", ("r1", "a"), 0.0, 1.0),
         Op(1, 1, "cas", ("r1", "a", "c"), 2.0, 3.0, "ok", True),
         Op(2, 2, "get", ("r1",), 4.0, 5.0, "ok", "a")]
    assert _analysed(h).failed
    # ...but a write that timed out (info) may or may not have happened: both reads are fine.
    h = [Op(0, 0, "put", ("r1", "a"), 0.0, 1.0),
         Op(1, 1, "put", ("r1", "b"), 2.0, None, "info"),
         Op(2, 2, "get", ("r1",), 4.0, 5.0, "ok", "b"),
         Op(3, 3, "get", ("r1",), 6.0, 7.0, "ok", "b")]
    assert not _analysed(h).failed
    # A read going back from b to a after b was seen is not.
    h.append(Op(4, 4, "get", ("r1",), 8.0, 9.0, "ok", "a"))
    assert _analysed(h).failed


def test_harness_reports_lost_and_phantom_writes():
    acked, maybe = ["d/1/1", "d/1/2", "d/1/3"], ["d/1/4"]
    lost, anomalies = compare_durable(acked, maybe, [set(acked), set(acked) | {"d/1/4"}])
    assert lost == [] and anomalies == []
    lost, anomalies = compare_durable(acked, maybe, [set(acked), {"d/1/1", "d/1/3"}])
    assert lost == ["m1:d/1/2"] and anomalies == []
    lost, anomalies = compare_durable(acked, maybe, [set(acked) | {"d/9/9"}])
    assert lost == [] and "d/9/9" in anomalies[0]
    rep = Report(seed=0, members=3, seconds=0, lost=["m1:d/1/2"])
    assert rep.failed and "LOST" in rep.summary() and "FAILED" in rep.summary()


def test_harness_catches_a_real_stale_read_from_a_partitioned_member():
    """Real processes: cut a follower off (through --experimental-fault-file), write through the
    leader, read the follower's own state (a serializable read: allowed to be stale, so not
    linearizable). The harness's check must flag the history; the same reads made
    linearizable (through ReadIndex) fail to answer instead of answering stale."""
    import requests
    from nemesis import b64, unb64

    n = Nemesis(members=3, seed=0, workloads=["register"])
    reg = n.workload("register")
    try:
        n.start_cluster()
        lead = n.leader()
        iso = (lead + 1) % 3
        lead_url, iso_url = n.cluster.members[lead].url, n.cluster.members[iso].url

        def now():
            return time.monotonic() - n.t0

        def put(value):
            op = Op(0, 0, "put", ("r0", value), now())
            requests.post(lead_url + "/v3/kv/put", json={"key": b64("r0"), "value": b64(value)},
                          timeout=10).raise_for_status()
            op.complete = now()
            reg.record(op)

        def get(serializable):
            op = Op(0, 1, "get", ("r0",), now())
            r = requests.post(iso_url + "/v3/kv/range",
                              json={"key": b64("r0"), "serializable": serializable}, timeout=2)
            r.raise_for_status()
            kvs = r.json().get("kvs") or []
            op.result, op.complete = (unb64(kvs[0]["value"]) if kvs else None), now()
            reg.record(op)
            return op.result

        put("v0")
        deadline = time.monotonic() + 10
        while get(True) != "v0":                      # the follower has applied v0
            assert time.monotonic() < deadline
        n._write_fault(iso, [i for i in range(3) if i != iso])
        for i in range(3):
            if i != iso:
                n._write_fault(i, [iso])
        seq, stale = 0, 0
        while stale < 3:       # until the partition bites (the file is re-read every 100 ms):
            seq += 1           # 3 stale reads in a row, 0.2 s apart (more than replication lag)
            put(f"v{seq}")
            stale = stale + 1 if get(True) != f"v{seq}" else 0
            assert time.monotonic() < deadline, "the fault file never cut the member off"
            time.sleep(0.2)
        rep = Report(seed=0, members=3, seconds=0)
        n._analyse(rep)
        assert rep.failed and "not linearizable" in rep.anomalies[0], rep.summary()
        # A linearizable read on the cut-off member cannot be served (no quorum for ReadIndex).
        with pytest.raises(requests.RequestException):
            get(False)
    finally:
        n.teardown()
