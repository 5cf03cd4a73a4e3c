"""The lock workload (tests/chaos/workloads/lock.py) and its checks (tests/checkers/fencing.py).

Checker tests feed crafted histories: valid ones (with unanswered writes either way) pass;
each anomaly the checks claim to catch is caught, among them what an unfenced lock recipe
does (a paused holder's plain put landing after the next holder's write) and a lease
revoked early with no clock jump to explain it. The real-process run (all workloads, with
pauses, clock jumps and a slow disk) is test_nemesis_short.py: there every fenced write must
land in lock order, and the pausing holders' writes must be refused.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from nemesis import Nemesis, Report  # noqa: E402

from checkers.fencing import (EARLY, FencedWrite, LeaseLife, Version,  # noqa: E402
                              check_fencing, check_leases, lease_fate)


def W(client, lock_rev, seq, status="ok", paused=False, t=0.0):
    return FencedWrite(client, lock_rev, seq, t, t + 0.1, status, paused)


def history(*pairs) -> list[Version]:
    return [Version(rev, w.value) for rev, w in pairs]


# ---- fencing -----------------------------------------------------------------------------

def test_writes_in_lock_order_with_refused_and_unanswered_ones_pass():
    a1, a2 = W(0, 10, 1), W(0, 10, 2)
    a_late = W(0, 10, 3, status="fail", paused=True)      # refused: the fence worked
    b1 = W(1, 12, 1)
    b2 = W(1, 12, 2, status="info")                       # unanswered, and it landed
    c1 = W(2, 20, 1, status="info")                       # unanswered, and it did not
    c2 = W(2, 20, 2)
    writes = [a1, a2, a_late, b1, b2, c1, c2]
    res = check_fencing(writes, history((11, a1), (13, a2), (15, b1), (16, b2), (22, c2)))
    assert res.ok, res.anomalies
    assert (res.accepted, res.refused, res.refused_paused, res.unknown) == (4, 1, 1, 2)
    assert check_fencing([], []).ok


def test_an_unfenced_recipe_is_caught():
    """Holder A (lock rev 10) pauses past its lease TTL; B (lock rev 12) gets the lock and
    writes; A wakes and writes with a plain put (nothing compares the lock key), which is
    acknowledged and lands after B's write."""
    a1, b1 = W(0, 10, 1, t=1.0), W(1, 12, 1, t=5.0)
    a_wakes = W(0, 10, 2, paused=True, t=6.0)
    res = check_fencing([a1, b1, a_wakes], history((11, a1), (13, b1), (14, a_wakes)))
    assert not res.ok and len(res.anomalies) == 1
    assert "go backwards" in res.anomalies[0] and "'0/10/2'" in res.anomalies[0]
    assert "after a pause" in res.anomalies[0] and "'1/12/1'" in res.anomalies[0]
    # Fenced, the same write is refused and never lands: no anomaly.
    a_wakes.status = "fail"
    assert check_fencing([a1, b1, a_wakes], history((11, a1), (13, b1))).ok


def test_backwards_is_judged_against_the_highest_lock_so_far():
    a, b, c = W(0, 10, 1), W(1, 12, 1), W(2, 11, 1)
    res = check_fencing([a, b, c], history((11, a), (13, b), (14, c)))
    assert len(res.anomalies) == 1 and "'2/11/1'" in res.anomalies[0]


def test_a_lost_acknowledged_write_is_caught():
    a1, a2 = W(0, 10, 1), W(0, 10, 2)
    res = check_fencing([a1, a2], history((11, a1)))
    assert not res.ok and "'0/10/2'" in res.anomalies[0] and "lost" in res.anomalies[0]


def test_a_refused_write_in_the_history_is_caught():
    a1, a2 = W(0, 10, 1), W(0, 10, 2, status="fail")
    res = check_fencing([a1, a2], history((11, a1), (12, a2)))
    assert not res.ok and "refused" in res.anomalies[0]


def test_phantom_duplicate_and_disordered_versions_are_caught():
    a1 = W(0, 10, 1)
    res = check_fencing([a1], [Version(11, "0/10/1"), Version(12, "9/9/9")])
    assert len(res.anomalies) == 1 and "no fenced write wrote" in res.anomalies[0]
    res = check_fencing([a1], [Version(11, "0/10/1"), Version(12, "0/10/1")])
    assert len(res.anomalies) == 1 and "twice" in res.anomalies[0]
    a2 = W(0, 10, 2)
    res = check_fencing([a1, a2], history((12, a1), (11, a2)))
    assert len(res.anomalies) == 1 and "out of order" in res.anomalies[0]


# ---- leases --------------------------------------------------------------------------------

def lease(renewed, gone_at=None, paused_at=None, released_at=None, ttl=3.0) -> LeaseLife:
    return LeaseLife(0xabc, ttl, 0, list(renewed), paused_at, released_at, gone_at,
                     "keep-alive answered TTL 0" if gone_at is not None else "")


def test_lease_fates():
    jumps = []
    assert lease_fate(lease([1.0, 2.0], released_at=5.0), jumps) == "released by its holder"
    assert lease_fate(lease([1.0]), jumps) == "alive at the end"
    # revoked after our own revoke: released
    assert lease_fate(lease([1.0], gone_at=4.0, released_at=3.9), jumps) == \
        "released by its holder"
    # its holder stopped keeping it alive: expiry expected
    assert lease_fate(lease([1.0, 2.0], gone_at=3.5, paused_at=2.5), jumps) == \
        "expired: its holder paused"
    # the last keep-alive that got through was sent at 2.0 (TTL 3): gone at 5.2 is fair
    assert lease_fate(lease([1.0, 2.0], gone_at=5.2), jumps) == "expired: not kept alive in time"
    # gone at 4.0, though renewed at 2.0 with a TTL of 3: early
    assert lease_fate(lease([1.0, 2.0], gone_at=4.0), jumps) == EARLY
    # ...unless a clock jumped in between
    assert lease_fate(lease([1.0, 2.0], gone_at=4.0), [(3.0, 3.5)]) == \
        "expired early: clock jump"
    assert lease_fate(lease([1.0, 2.0], gone_at=4.0), [(0.0, 1.5)]) == EARLY
    assert lease_fate(lease([1.0, 2.0], gone_at=4.0), [(4.5, 6.0)]) == EARLY
    # renewals sent after it was seen gone do not count
    assert lease_fate(lease([1.0, 4.5], gone_at=4.2), jumps) == "expired: not kept alive in time"


def test_a_lease_revoked_early_without_a_clock_jump_is_an_anomaly():
    leases = [lease([1.0, 2.0], gone_at=4.0), lease([1.0], released_at=2.0),
              lease([1.0, 2.0], gone_at=4.0, paused_at=2.1)]
    res = check_leases(leases, [])
    assert len(res.anomalies) == 1 and "revoked early" in res.anomalies[0]
    assert res.fates == {EARLY: 1, "released by its holder": 1, "expired: its holder paused": 1}
    # A clock jump that healed just before (the member re-reads its fault file every
    # 100 ms) still explains it: the margin.
    assert check_leases(leases, [(1.0, 1.8)]).anomalies == []
    assert len(check_leases(leases, [(1.0, 1.8)], margin=0.0).anomalies) == 1


# ---- through the harness -------------------------------------------------------------------

def _analysed(writes, hist, leases=(), fault_log=()) -> Report:
    n = Nemesis(seed=0, workloads=["lock"])
    lw = n.workload("lock")
    lw.writes, lw.history, lw.leases = list(writes), hist, list(leases)
    n.fault_log = list(fault_log)
    rep = Report(seed=0, members=3, seconds=0)
    n._analyse(rep)
    return rep


def test_harness_fails_the_run_on_an_unfenced_write_or_an_early_revocation():
    a1, b1, a2 = W(0, 10, 1), W(1, 12, 1), W(0, 10, 2, paused=True)
    rep = _analysed([a1, b1, a2], history((11, a1), (13, b1), (14, a2)))
    assert rep.failed and "NOT FENCED" in rep.summary() and "FAILED" in rep.summary()
    a2.status = "fail"
    assert not _analysed([a1, b1, a2], history((11, a1), (13, b1))).failed
    early = lease([1.0, 2.0], gone_at=4.0)
    assert _analysed([], [], [early]).failed
    log = [("clock-jump-leader", [0], 3.0, 3.5)]
    assert not _analysed([], [], [early], log).failed
    assert _analysed([], [], [early], [("slow-disk-leader", [0], 3.0, 3.5)]).failed
