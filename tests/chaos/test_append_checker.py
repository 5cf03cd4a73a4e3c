"""The list-append checker (tests/checkers/append.py) on crafted histories: each anomaly it
claims to catch, valid histories it must accept (indeterminate txns either way), random
serializable histories and their corruptions; the append workload's txn building. The
real-process run (all workloads at once) is test_nemesis_short.py."""
from __future__ import annotations

import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from nemesis import Nemesis, Report  # noqa: E402
from workloads.append import decode, encode, guarded_txn, random_micro_ops  # noqa: E402

from checkers.append import Txn, check, sccs  # noqa: E402


def T(id, ops, invoke, complete=None, status="ok", client=0):
    return Txn(id, client, list(ops), invoke, complete, status)


def final(id, t, **lists):
    """The final read after heal: every key's list."""
    return T(id, [("r", k, v) for k, v in lists.items()], t, t + 1, client=-1)


def kinds(history):
    return check(history).kinds()


# ---- valid histories -----------------------------------------------------------------------

def test_serial_history_is_valid():
    h = [T(0, [("append", "x", 1)], 0, 1),
         T(1, [("r", "x", [1]), ("append", "y", 2)], 2, 3),
         T(2, [("r", "x", [1]), ("r", "y", [2]), ("r", "z", None)], 4, 5),
         final(3, 10, x=[1], y=[2], z=[])]
    res = check(h)
    assert res.ok, res.report()
    assert res.stats["committed"] == 4 and res.stats["edges"] > 0


def test_concurrent_txns_may_serialize_against_real_time_order_of_invocation():
    # T1 invoked first but its read saw T2's append: fine, they overlap.
    h = [T(1, [("r", "x", [2]), ("append", "y", 1)], 0, 3),
         T(2, [("append", "x", 2)], 1, 2),
         final(3, 10, x=[2], y=[1])]
    assert check(h).ok


def test_indeterminate_txn_may_or_may_not_have_happened():
    info = T(1, [("append", "x", 1), ("append", "y", 1)], 0, None, "info")
    happened = [T(0, [("append", "x", 0)], 0, 1), info,
                T(2, [("r", "x", [0, 1])], 5, 6), final(3, 10, x=[0, 1], y=[1])]
    res = check(happened)
    assert res.ok, res.report()
    assert res.stats["committed"] == 4          # the info txn counts once observed
    never = [T(0, [("append", "x", 0)], 0, 1), info,
             T(2, [("r", "x", [0])], 5, 6), final(3, 10, x=[0], y=[])]
    res = check(never)
    assert res.ok, res.report()
    assert res.stats["committed"] == 3


def test_failed_txn_unobserved_is_valid():
    h = [T(0, [("r", "x", None), ("append", "x", 1)], 0, 1, "fail"),
         T(1, [("append", "x", 2)], 0, 1), final(2, 10, x=[2])]
    assert check(h).ok


def test_a_txn_reads_its_own_appends():
    h = [T(0, [("append", "x", 5)], 0, 1),
         T(1, [("r", "x", [5]), ("append", "x", 6), ("r", "x", [5, 6]),
               ("append", "y", 7), ("r", "y", [7])], 2, 3),
         final(2, 10, x=[5, 6], y=[7])]
    assert check(h).ok


# ---- anomalies without cycles ----------------------------------------------------------------

def test_lost_append():
    # Acknowledged, then absent from the final read (though the later element is there).
    h = [T(0, [("append", "x", 1)], 0, 1), T(1, [("append", "x", 2)], 2, 3),
         final(2, 10, x=[2])]
    res = check(h)
    assert res.kinds() == {"lost-append"}, res.report()
    assert res.anomalies[0].txns == [0, 2]
    # A read concurrent with the append may miss it; a read after it may not.
    h = [T(0, [("append", "x", 1)], 0, 2), T(1, [("r", "x", [])], 1, 3)]
    assert check(h).ok
    h.append(T(2, [("r", "x", [])], 4, 5))
    assert "lost-append" in kinds(h)


def test_lost_append_of_an_indeterminate_txn_seen_elsewhere():
    # The info txn took effect (its y element was read by T1), so its x element must show in
    # any read invoked after T1 completed.
    h = [T(0, [("append", "x", 1), ("append", "y", 1)], 0, None, "info"),
         T(1, [("r", "y", [1])], 1, 2), final(2, 10, x=[], y=[1])]
    assert kinds(h) == {"lost-append"}


def test_duplicated_element():
    h = [T(0, [("append", "x", 1)], 0, 1), T(1, [("append", "x", 2)], 2, 3),
         T(2, [("r", "x", [1, 2, 1])], 4, 5)]
    assert "duplicate-elements" in kinds(h)


def test_incompatible_orders():
    h = [T(0, [("append", "x", 1)], 0, 5), T(1, [("append", "x", 2)], 0, 5),
         T(2, [("r", "x", [1, 2])], 6, 7), T(3, [("r", "x", [2, 1])], 6, 7)]
    res = check(h)
    assert res.kinds() == {"incompatible-order"}, res.report()
    assert "position 0" in res.anomalies[0].text


def test_garbage_read():
    h = [T(0, [("append", "x", 1)], 0, 1), T(1, [("r", "x", [1, 99])], 2, 3)]
    res = check(h)
    assert res.kinds() == {"garbage-read"} and "99" in res.anomalies[0].text


def test_aborted_read():
    h = [T(0, [("append", "x", 1)], 0, 1, "fail"), T(1, [("r", "x", [1])], 2, 3)]
    assert kinds(h) == {"aborted-read"}


def test_intermediate_read():
    h = [T(0, [("append", "x", 1), ("append", "x", 2)], 0, 3),
         T(1, [("r", "x", [1])], 1, 2), final(2, 10, x=[1, 2])]
    assert "intermediate-read" in kinds(h)


def test_internal_inconsistency():
    # The txn's read misses its own earlier append...
    h = [T(0, [("append", "x", 1), ("r", "x", [])], 0, 1)]
    assert kinds(h) == {"internal"}
    # ...or differs from its own earlier read.
    h = [T(0, [("append", "x", 1)], 0, 1), T(1, [("append", "x", 2)], 0, 1),
         T(2, [("r", "x", [1]), ("r", "x", [1, 2])], 2, 3)]
    assert "internal" in kinds(h)


def test_non_unique_appends_make_the_history_unusable():
    h = [T(0, [("append", "x", 1)], 0, 1), T(1, [("append", "x", 1)], 0, 1)]
    assert "non-unique-append" in kinds(h)


# ---- cycles -----------------------------------------------------------------------------------

def test_g0_write_cycle():
    # x says T0 before T1, y says T1 before T0.
    h = [T(0, [("append", "x", 1), ("append", "y", 1)], 0, 5),
         T(1, [("append", "x", 2), ("append", "y", 2)], 0, 5),
         final(2, 10, x=[1, 2], y=[2, 1])]
    res = check(h)
    assert res.kinds() == {"G0"}, res.report()
    assert sorted(res.anomalies[0].txns) == [0, 1]
    assert "ww x" in res.anomalies[0].text and "ww y" in res.anomalies[0].text


def test_g1c_circular_information_flow():
    # Each txn read the other's append.
    h = [T(0, [("append", "x", 1), ("r", "y", [2])], 0, 5),
         T(1, [("append", "y", 2), ("r", "x", [1])], 0, 5),
         final(2, 10, x=[1], y=[2])]
    res = check(h)
    assert res.kinds() == {"G1c"}, res.report()


def test_g_single_lost_update():
    # Both read x empty and appended: one overwrote the other's read (a lost update).
    h = [T(0, [("r", "x", []), ("append", "x", 1)], 0, 5),
         T(1, [("r", "x", []), ("append", "x", 2)], 0, 5),
         final(2, 10, x=[1, 2])]
    res = check(h)
    assert res.kinds() == {"G-single"}, res.report()
    assert "rw x" in res.anomalies[0].text


def test_g2_write_skew():
    h = [T(0, [("r", "x", []), ("r", "y", []), ("append", "x", 1)], 0, 5),
         T(1, [("r", "x", []), ("r", "y", []), ("append", "y", 2)], 0, 5),
         final(2, 10, x=[1], y=[2])]
    res = check(h)
    assert res.kinds() == {"G2"}, res.report()


def test_stale_read_is_a_realtime_violation():
    # The read began after the append was acknowledged, yet missed it.
    h = [T(0, [("append", "x", 1)], 0, 1), T(1, [("r", "x", [])], 2, 3),
         final(2, 10, x=[1])]
    res = check(h)
    assert res.kinds() == {"G-single-realtime"}, res.report()
    assert "rt:" in res.anomalies[0].text
    # Overlapping in time, the same read is fine (it serializes first).
    h[1] = T(1, [("r", "x", [])], 0.5, 3)
    assert check(h).ok


def test_realtime_edges_are_transitive_through_the_frontier():
    # T0 completes long before T3; between them T1 and T2 (serial) push T0 out of the
    # frontier, so there is no direct T0 -> T3 edge, yet T3's stale read is still caught, and
    # the cycle reported takes the real-time shortcut.
    h = [T(0, [("append", "x", 1)], 0, 1), T(1, [("append", "y", 1)], 2, 3),
         T(2, [("append", "z", 1)], 4, 5), T(3, [("r", "x", [])], 6, 7),
         final(4, 10, x=[1], y=[1], z=[1])]
    res = check(h)
    assert res.kinds() == {"G-single-realtime"}, res.report()
    assert res.anomalies[0].txns == [0, 3]
    assert "T0 -[rt: completed 1.000 before 6.000]-> T3 -[rw x: read before 1]-> T0" \
        in res.anomalies[0].text


def test_sccs():
    g = {1: [2], 2: [3], 3: [1, 4], 4: [5], 5: [4], 6: []}
    comps = sorted(sorted(c) for c in sccs(sorted(g), lambda v: g.get(v, [])))
    assert comps == [[1, 2, 3], [4, 5]]
    # Deep chains do not hit the recursion limit.
    n = 50_000
    chain = {i: [i + 1] for i in range(n)}
    chain[n] = [0]
    assert len(sccs(range(n + 1), lambda v: chain[v])[0]) == n + 1


# ---- random histories -------------------------------------------------------------------------

def simulate(n_txns: int, seed: int, keys: int = 8, clients: int = 6):
    """A strictly serializable history: txns run one at a time at instants 0, 1, 2, ... by
    the wall clock, each inside its client's [invoke, complete] window; some fail (not
    applied) and some are indeterminate (applied or not, reads unknown)."""
    rng = random.Random(seed)
    state = {f"k{i}": [] for i in range(keys)}
    free_at = [0.0] * clients
    history, element = [], 0
    for i in range(n_txns):
        c = min(range(clients), key=lambda c: free_at[c])
        at = float(i) + 0.5
        invoke = max(free_at[c], at - rng.uniform(0, 3))
        complete = at + rng.uniform(0, 3)
        free_at[c] = complete
        r = rng.random()
        status = "fail" if r < 0.1 else "info" if r < 0.2 else "ok"
        applied = status == "ok" or (status == "info" and rng.random() < 0.5)
        ops = []
        scratch = {k: list(v) for k, v in state.items()}
        for f, slot in random_micro_ops(rng, keys, 4):
            k = f"k{slot}"
            if f == "append":
                element += 1
                scratch[k].append(element)
                ops.append(("append", k, element))
            else:
                ops.append(("r", k, list(scratch[k]) if status == "ok" else None))
        if applied:
            state = scratch
        history.append(T(i, ops, invoke, complete if status != "info" else None, status,
                         client=c))
    history.append(T(n_txns, [("r", k, v) for k, v in state.items()], n_txns + 5,
                     n_txns + 6, client=-1))
    return history


def test_random_serializable_histories_pass():
    for seed in range(3):
        h = simulate(3000, seed)
        res = check(h)
        assert res.ok, res.report()
        assert res.stats["cycles"] == 0 and res.stats["edges"] > 3000


def test_random_history_with_a_dropped_element_fails():
    h = simulate(2000, 7)
    # Drop one element from the middle of one read of an ok txn: a stale or lost read.
    reads = [(t, i) for t in h[:-1] if t.status == "ok"
             for i, (f, k, v) in enumerate(t.ops) if f == "r" and len(v) >= 3]
    t, i = reads[len(reads) // 2]
    f, k, v = t.ops[i]
    t.ops[i] = (f, k, v[:1] + v[2:])
    res = check(h)
    assert not res.ok
    assert "incompatible-order" in res.kinds(), res.report()


def test_random_history_with_a_stale_read_fails():
    h = simulate(2000, 11)
    # Turn one late read-only txn's read into the key's list from long before: a stale read,
    # which only real time rules out.
    late = [t for t in h[1500:-1] if t.status == "ok" and len(t.ops) == 1
            and t.ops[0][0] == "r" and len(t.ops[0][2]) >= 20]
    f, k, v = late[0].ops[0]
    late[0].ops = [(f, k, v[:len(v) // 2])]
    res = check(h)
    assert not res.ok
    assert res.kinds() == {"G-single-realtime"}, res.report()
    assert len(res.anomalies[0].txns) < 20, res.report()     # a short cycle, not the SCC


# ---- the workload's txns, and its report in the harness ---------------------------------------

def test_micro_ops_keep_each_keys_appends_contiguous():
    rng = random.Random(3)
    for _ in range(2000):
        ops = random_micro_ops(rng, 3, 4)
        assert 1 <= len(ops) <= 4
        for slot in range(3):
            mine = [f for f, s in ops if s == slot]
            first = mine.index("append") if "append" in mine else len(mine)
            last = len(mine) - 1 - mine[::-1].index("append") if "append" in mine else -1
            assert "r" not in mine[first:last + 1]


def test_guarded_txn_body():
    ops = [("r", "a0", None), ("append", "a0", 7), ("append", "a1", 8),
           ("append", "a0", 9), ("r", "a0", None)]
    body, where = guarded_txn(ops, {"a0": (12, [1, 2]), "a1": (None, [])})
    assert body["compare"] == [
        {"key": "YTA=", "target": "MOD", "result": "EQUAL", "mod_revision": "12"},
        {"key": "YTE=", "target": "VERSION", "result": "EQUAL", "version": "0"}]
    kinds_ = [next(iter(op)) for op in body["success"]]
    assert kinds_ == ["request_range", "request_put", "request_put", "request_range"]
    assert where == [0, 3]
    import base64
    puts = {base64.b64decode(op["request_put"]["key"]).decode():
            decode(base64.b64decode(op["request_put"]["value"]).decode())
            for op in body["success"] if "request_put" in op}
    assert puts == {"a0": [1, 2, 7, 9], "a1": [8]}
    assert decode(encode([3, 14, 15])) == [3, 14, 15] and decode("") == []


def _analysed(history) -> Report:
    n = Nemesis(seed=0, workloads=["append"])
    n.workload("append").history = history
    rep = Report(seed=0, members=3, seconds=0)
    n._analyse(rep)
    return rep


def test_harness_reports_append_anomalies():
    good = [T(0, [("append", "a0", 1)], 0, 1), T(1, [("r", "a0", [1])], 2, 3),
            T(2, [("append", "a0", 2)], 2, None, "info")]
    rep = _analysed(good)
    assert not rep.failed, rep.summary()
    assert rep.acknowledged == 2 and rep.indeterminate == 1
    assert "strict serializable" in rep.summary()
    bad = good + [T(3, [("r", "a0", [])], 4, 5)]
    rep = _analysed(bad)
    assert rep.failed and "FAILED" in rep.summary()
    assert any(a.startswith("append ") for a in rep.anomalies)
