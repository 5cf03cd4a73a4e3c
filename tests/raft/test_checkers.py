"""The checkers must be able to fail: known non-linearizable histories are rejected,
tricky linearizable ones accepted, and the simulator's Raft safety checkers catch
bugs injected into the driver (tests/raft/sim.py bug modes)."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from checkers.linearizability import Op, check, check_register  # noqa: E402


class H:
    """A tiny history builder: H().put(0, 3, "x", 1)... with (invoke, complete)."""

    def __init__(self):
        self.ops = []

    def _add(self, kind, args, t0, t1, result=None, status="ok", client=None):
        op = Op(len(self.ops), client if client is not None else len(self.ops), kind, args,
                t0, t1 if status == "ok" else None, status, result)
        self.ops.append(op)
        return self

    def put(self, t0, t1, k, v, status="ok"):
        return self._add("put", (k, v), t0, t1, None, status)

    def get(self, t0, t1, k, v, status="ok"):
        return self._add("get", (k,), t0, t1, v, status)

    def cas(self, t0, t1, k, old, new, ok, status="ok"):
        return self._add("cas", (k, old, new), t0, t1, ok, status)

    def txn(self, t0, t1, reads, writes, result, status="ok"):
        return self._add("txn", (tuple(reads), tuple(writes.items())), t0, t1,
                         tuple(result) if result is not None else None, status)


# ---- rejected ---------------------------------------------------------------------------

def test_stale_read_rejected():
    h = H().put(0, 1, "x", 1).put(2, 3, "x", 2).get(4, 5, "x", 1)
    r = check_register(h.ops)
    assert not r.ok
    assert r.culprit.kind == "get" and r.culprit.result == 1
    assert "not linearizable" in r.report and "get('x') = 1" in r.report


def test_lost_write_rejected():
    # put x=1 acknowledged, then two later reads see the initial value.
    h = H().put(0, 1, "x", 1).get(2, 3, "x", None)
    assert not check(h.ops).ok


def test_read_of_value_never_written_rejected():
    h = H().put(0, 1, "x", 1).get(0, 5, "x", 7)
    assert not check(h.ops).ok


def test_read_of_failed_write_rejected():
    # a write reported failed certainly did not happen
    h = H().put(0, 1, "x", 1, status="fail").get(2, 3, "x", 1)
    assert not check(h.ops).ok


def test_cas_outcome_inconsistent_rejected():
    # both CAS(x: None->1) and CAS(x: None->2) claim success
    h = H().cas(0, 5, "x", None, 1, True).cas(1, 6, "x", None, 2, True)
    assert not check(h.ops).ok


def test_non_monotonic_reads_rejected():
    # two concurrent writes; one reader sees 2 then 1 after both completed
    h = (H().put(0, 3, "x", 1).put(0, 3, "x", 2)
         .get(4, 5, "x", 2).get(6, 7, "x", 1))
    assert not check(h.ops).ok


def test_txn_atomicity_violated_rejected():
    # a txn writes x=1,y=1; a reader sees x=1 but y still None after the txn completed
    h = (H().txn(0, 1, [], {"x": 1, "y": 1}, ())
         .txn(2, 3, ["x", "y"], {}, (1, None)))
    r = check(h.ops)
    assert not r.ok
    # and a torn read concurrent with the write is still not atomic
    h = (H().txn(0, 10, [], {"x": 1, "y": 1}, ())
         .txn(1, 2, ["x", "y"], {}, (1, None)))
    assert not check(h.ops).ok


def test_txn_reads_own_snapshot_rejected():
    # a transfer txn: reads x, y and writes both; two concurrent transfers both read the
    # same pre-state (lost update) -> not serializable, hence not linearizable.
    h = (H().txn(0, 1, [], {"x": 10, "y": 0}, ())
         .txn(2, 5, ["x", "y"], {"x": 5, "y": 5}, (10, 0))
         .txn(2, 5, ["x", "y"], {"x": 7, "y": 3}, (10, 0)))
    assert not check(h.ops).ok


def test_report_points_at_first_bad_op_in_long_history():
    h = H()
    t = 0
    for i in range(50):
        h.put(t, t + 1, "x", i)
        h.get(t + 2, t + 3, "x", i)
        t += 4
    h.get(t, t + 1, "x", 17)     # stale
    for i in range(50, 60):
        h.put(t + 2, t + 3, "x", i)
        t += 4
    r = check(h.ops)
    assert not r.ok
    assert r.culprit.result == 17
    assert len(r.window) <= 6


# ---- accepted ---------------------------------------------------------------------------

def test_concurrent_ops_accepted():
    # a read concurrent with a write may see either value, and a later read must agree
    h = (H().put(0, 1, "x", 1).put(2, 10, "x", 2)
         .get(3, 4, "x", 2).get(5, 6, "x", 2).get(11, 12, "x", 2))
    assert check(h.ops).ok
    h = (H().put(0, 1, "x", 1).put(2, 10, "x", 2)
         .get(3, 4, "x", 1).get(5, 6, "x", 2).get(11, 12, "x", 2))
    assert check(h.ops).ok


def test_reads_order_concurrent_writes():
    # two overlapping writes; reads pin an order that differs from invocation order
    h = (H().put(0, 10, "x", 1).put(1, 10, "x", 2)
         .get(2, 3, "x", 2).get(4, 5, "x", 1).get(11, 12, "x", 1))
    assert check(h.ops).ok


def test_indeterminate_write_that_happened():
    h = H().put(0, None, "x", 1, status="info").get(5, 6, "x", 1).get(7, 8, "x", 1)
    assert check(h.ops).ok


def test_indeterminate_write_that_did_not_happen():
    h = H().put(0, None, "x", 1, status="info").get(5, 6, "x", None).get(100, 101, "x", None)
    assert check(h.ops).ok


def test_indeterminate_write_happens_late():
    # it may take effect long after its client gave up, but only once
    h = (H().put(0, 1, "x", 0).put(2, None, "x", 1, status="info")
         .get(5, 6, "x", 0).get(50, 51, "x", 1))
    assert check(h.ops).ok
    h.get(60, 61, "x", 0)     # ... and a later read cannot go back to 0
    assert not check(h.ops).ok


def test_indeterminate_write_cannot_precede_its_invoke():
    h = H().get(0, 1, "x", 1).put(2, None, "x", 1, status="info")
    assert not check(h.ops).ok


def test_indeterminate_cas():
    h = (H().put(0, 1, "x", 1).cas(2, None, "x", 1, 2, None, status="info")
         .get(10, 11, "x", 2))
    assert check(h.ops).ok
    h = (H().put(0, 1, "x", 5).cas(2, None, "x", 1, 2, None, status="info")
         .get(10, 11, "x", 2))
    assert not check(h.ops).ok     # the cas could not have swapped


def test_cas_chain_accepted():
    h = (H().put(0, 1, "x", 0)
         .cas(2, 9, "x", 0, 1, True).cas(2, 9, "x", 1, 2, True).cas(2, 9, "x", 0, 3, False)
         .get(10, 11, "x", 2))
    assert check(h.ops).ok


def test_txn_concurrent_accepted():
    h = (H().txn(0, 1, [], {"x": 10, "y": 0}, ())
         .txn(2, 5, ["x", "y"], {"x": 5, "y": 5}, (10, 0))
         .txn(2, 5, ["x", "y"], {"x": 7, "y": 3}, (5, 5))
         .txn(3, 4, ["x", "y"], {}, (10, 0))
         .txn(6, 7, ["x", "y"], {}, (7, 3)))
    assert check(h.ops).ok


def test_independent_keys_checked_separately():
    # many concurrent ops on many keys: P-compositionality keeps this fast
    h = H()
    for k in range(40):
        for c in range(6):
            h.put(0, 100, f"k{k}", c)
        h.get(101, 102, f"k{k}", 5)
    assert check(h.ops).ok


def test_many_concurrent_indeterminate_ops_fast():
    h = H()
    for i in range(12):
        h.put(i, None, "x", i, status="info")
    for i in range(12):
        h.get(20 + 2 * i, 21 + 2 * i, "x", 11 - i)   # could be anything, each once
    assert check(h.ops).ok


# ---- the simulator's safety checkers can fail -----------------------------------------

def _sim():
    import sim  # tests/raft/sim.py
    return sim


def _caught(bug, seeds, **kw):
    sim = _sim()
    failures = []
    for seed in seeds:
        res = sim.run_seed(seed, bug=bug, **kw)
        if not res.ok:
            failures.append(res)
    return failures


@pytest.mark.parametrize("bug,expect", [
    ("ack_before_persist", ("lost", "leader completeness", "state machine",
                            "not linearizable", "log matching", "committed entry")),
    ("grant_any_vote", ("two leaders", "election safety", "log matching", "lost",
                     "not linearizable", "state machine", "committed entry")),
    ("stale_read", ("not linearizable",)),
    ("fsync_lies", ("lost", "leader completeness", "state machine", "not linearizable",
                    "log matching", "committed entry")),
])
def test_sim_catches_injected_bug(bug, expect):
    failures = _caught(bug, range(1, 41))
    assert failures, f"bug mode {bug!r} went unnoticed over 40 seeds"
    for f in failures:
        assert f.message.startswith(f"seed {f.seed}: "), f.message
        assert f"--seed {f.seed}" in f.message and "--bug " + bug in f.message
    caught = [f for f in failures if any(e in f.message.split("\n")[0] for e in expect)]
    assert caught, "\n\n".join(f.message for f in failures)


def test_sim_clean_run_passes():
    sim = _sim()
    res = sim.run_seed(7)
    assert res.ok, res.message
    assert res.stats["ok_ops"] > 0 and res.stats["leaders"] >= 1
