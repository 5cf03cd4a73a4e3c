"""A Wing–Gong / Porcupine-style linearizability checker for key-value histories.

A history is a list of :class:`Op`: what a client asked (``kind`` and ``args``),
when it asked (``invoke``) and when it heard back (``complete``), and what it
heard (``status`` and ``result``):

* ``status="ok"``: the op took effect exactly once, somewhere between invoke
  and complete, and ``result`` is what it returned;
* ``status="fail"``: the op certainly did not take effect (it is ignored);
* ``status="info"``: indeterminate (timed out, the member crashed): the op may
  have taken effect at any time after invoke, or never. Its result is unknown.

Operations (the model is a map of keys to values; a missing key reads None):

* ``get``  args ``(key,)``                   result: the value
* ``put``  args ``(key, value)``             result: ignored
* ``cas``  args ``(key, expected, new)``     result: True if it swapped
* ``txn``  args ``(read_keys, writes)``      result: tuple of the read keys' values
  (read before the txn's own writes); ``writes`` is a tuple of (key, value).

The history is split into independent parts first (P-compositionality): ops
that touch disjoint key sets never constrain each other, so a register
workload is checked key by key, and txns join the keys they touch into one
part. Each part is searched with the WGL algorithm (Lowe's formulation, as in
Porcupine): depth-first over "which pending op takes effect next", memoizing
(set of ops linearized, model state) so no configuration is explored twice.

When a part is not linearizable, the report names the first op (in completion
order) that no linearization can explain, found by bisecting over prefixes of
the history (any prefix of a linearizable history is linearizable), and lists
the ops around it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

INF = math.inf


@dataclass
class Op:
    id: int
    client: int
    kind: str
    args: tuple
    invoke: float
    complete: float | None = None
    status: str = "ok"
    result: Any = None

    def keys(self) -> tuple:
        if self.kind == "txn":
            reads, writes = self.args
            return tuple(reads) + tuple(k for k, _ in writes)
        return (self.args[0],)

    def __str__(self) -> str:
        end = "…" if self.complete is None or self.status != "ok" else f"{self.complete:g}"
        if self.kind == "get":
            what = f"get({self.args[0]!r})"
        elif self.kind == "put":
            what = f"put({self.args[0]!r}, {self.args[1]!r})"
        elif self.kind == "cas":
            what = f"cas({self.args[0]!r}, {self.args[1]!r} -> {self.args[2]!r})"
        else:
            reads, writes = self.args
            what = f"txn(read {list(reads)!r}, write {dict(writes)!r})"
        res = "" if self.status != "ok" or self.kind == "put" else f" = {self.result!r}"
        return (f"op#{self.id} client {self.client} [{self.invoke:g}, {end}] "
                f"{what}{res} ({self.status})")


@dataclass
class CheckResult:
    ok: bool
    report: str = ""
    keys: tuple = ()
    culprit: Op | None = None
    window: list | None = None

    def __bool__(self) -> bool:
        return self.ok


# ---- the key-value model --------------------------------------------------------------

def _step(state: tuple, pos: dict, op: Op):
    """The state after op, or None if op (with its recorded result) is impossible here."""
    kind = op.kind
    known = op.status == "ok"
    if kind == "get":
        return state if state[pos[op.args[0]]] == op.result else None
    if kind == "put":
        key, value = op.args
        s = list(state)
        s[pos[key]] = value
        return tuple(s)
    if kind == "cas":
        key, expected, new = op.args
        swapped = state[pos[key]] == expected
        if known and bool(op.result) != swapped:
            return None
        if not swapped:
            return state
        s = list(state)
        s[pos[key]] = new
        return tuple(s)
    if kind == "txn":
        reads, writes = op.args
        if known:
            got = tuple(state[pos[k]] for k in reads)
            if got != tuple(op.result):
                return None
        if not writes:
            return state
        s = list(state)
        for k, v in writes:
            s[pos[k]] = v
        return tuple(s)
    raise ValueError(f"unknown op kind {kind!r}")


def _relevant(op: Op) -> bool:
    if op.status == "fail":
        return False
    if op.status != "ok":
        # An indeterminate op with no effect on state constrains nothing.
        if op.kind == "get":
            return False
        if op.kind == "txn" and not op.args[1]:
            return False
    return True


# ---- WGL search -------------------------------------------------------------------------

class _Entry:
    __slots__ = ("op", "is_call", "match", "prev", "next")

    def __init__(self, op, is_call):
        self.op = op
        self.is_call = is_call
        self.match = None
        self.prev = None
        self.next = None


def _linearizable(ops: list[Op], keys: tuple, init: dict | None = None,
                  max_steps: int = 5_000_000) -> bool:
    """WGL over ops (all touching only ``keys``). Ops with status != ok never return."""
    pos = {k: i for i, k in enumerate(keys)}
    state = tuple((init or {}).get(k) for k in keys)
    events = []
    for i, op in enumerate(ops):
        events.append((op.invoke, 0, i, True))
        if op.status == "ok":
            events.append((op.complete, 1, i, False))
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    head = _Entry(None, True)
    last = head
    calls = {}
    remaining = 0
    for _, _, i, is_call in events:
        e = _Entry(i, is_call)
        if is_call:
            calls[i] = e
        else:
            calls[i].match = e
            remaining += 1
        e.prev = last
        last.next = e
        last = e

    def lift(e):
        e.prev.next = e.next
        if e.next is not None:
            e.next.prev = e.prev
        m = e.match
        if m is not None:
            m.prev.next = m.next
            if m.next is not None:
                m.next.prev = m.prev

    def unlift(e):
        m = e.match
        if m is not None:
            m.prev.next = m
            if m.next is not None:
                m.next.prev = m
        e.prev.next = e
        if e.next is not None:
            e.next.prev = e

    cache = set()
    stack = []
    bits = 0
    entry = head.next
    steps = 0
    while remaining:
        steps += 1
        if steps > max_steps:
            raise RuntimeError(f"linearizability search gave up after {max_steps} steps "
                               f"({len(ops)} ops on keys {keys!r})")
        if entry.is_call:
            nxt = _step(state, pos, ops[entry.op])
            if nxt is not None:
                nb = bits | (1 << entry.op)
                ck = (nb, nxt)
                if ck not in cache:
                    cache.add(ck)
                    stack.append((entry, state))
                    state, bits = nxt, nb
                    if entry.match is not None:
                        remaining -= 1
                    lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        else:
            # A return reached while its op is not linearized yet: backtrack.
            if not stack:
                return False
            entry, state = stack.pop()
            bits &= ~(1 << entry.op)
            if entry.match is not None:
                remaining += 1
            unlift(entry)
            entry = entry.next
    return True


def _partitions(ops: list[Op]) -> list[tuple[tuple, list[Op]]]:
    parent: dict = {}

    def find(k):
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for op in ops:
        ks = op.keys()
        for k in ks:
            parent.setdefault(k, k)
        r0 = find(ks[0])
        for k in ks[1:]:
            r = find(k)
            if r != r0:
                parent[r] = r0
    groups: dict = {}
    for op in ops:
        groups.setdefault(find(op.keys()[0]), []).append(op)
    out = []
    for root, group in groups.items():
        keys = sorted({k for op in group for k in op.keys()}, key=repr)
        out.append((tuple(keys), group))
    out.sort(key=lambda p: repr(p[0]))
    return out


def _prefix(ops: list[Op], t: float) -> list[Op]:
    """The history as it looked at time t: ops invoked by t; those not complete
    by t become indeterminate."""
    out = []
    for op in ops:
        if op.invoke > t:
            continue
        if op.status == "ok" and op.complete <= t:
            out.append(op)
        else:
            p = Op(op.id, op.client, op.kind, op.args, op.invoke, None, "info", None)
            if _relevant(p):
                out.append(p)
    return out


def _explain(ops: list[Op], keys: tuple, init: dict | None) -> CheckResult:
    done = sorted((op for op in ops if op.status == "ok"), key=lambda o: (o.complete, o.id))
    lo, hi = 0, len(done) - 1   # the answer is the smallest k with prefix(done[k]) failing
    while lo < hi:
        mid = (lo + hi) // 2
        if _linearizable(_prefix(ops, done[mid].complete), keys, init):
            lo = mid + 1
        else:
            hi = mid
    culprit = done[lo]
    t0 = culprit.invoke
    before = [op for op in ops if op.status == "ok" and op.complete < t0]
    before.sort(key=lambda o: (o.complete, o.id))
    context = before[-3:]
    concurrent = [op for op in ops if op is not culprit and op.invoke <= culprit.complete
                  and (op.status != "ok" or op.complete >= t0)]
    seen = {}
    for op in context + concurrent + [culprit]:
        seen[id(op)] = op
    window = sorted(seen.values(), key=lambda o: (o.invoke, o.id))
    lines = [f"not linearizable on keys {list(keys)!r}: no order of the ops explains",
             f"  >> {culprit}",
             f"  the last ops completed before it, and the ops concurrent with it "
             f"(indeterminate ops may or may not have happened):"]
    for op in window:
        mark = ">>" if op is culprit else "  "
        lines.append(f"  {mark} {op}")
    return CheckResult(False, "\n".join(lines), keys, culprit, window)


def _writes(op: Op) -> list:
    if op.kind == "put":
        return [(op.args[0], op.args[1])]
    if op.kind == "cas":
        return [(op.args[0], op.args[2])]
    if op.kind == "txn":
        return list(op.args[1])
    return []


def _prune_unobserved(ops: list[Op]) -> list[Op]:
    """Drop indeterminate writes nobody could have observed.

    If no completed op read a value an indeterminate op writes (reads, txn reads,
    the expected value of a successful cas), and no completed cas failed on one
    of its keys, then "it never happened" explains the history whenever any
    placement of it does: in a linearization, nothing reads its keys between it
    and the next write of them, so removing it changes no result. This keeps the
    search small when many ops time out (e.g. during a partition)."""
    observed = set()
    cas_failed = set()
    for op in ops:
        if op.status != "ok":
            continue
        if op.kind == "get":
            observed.add((op.args[0], op.result))
        elif op.kind == "cas":
            if op.result:
                observed.add((op.args[0], op.args[1]))
            else:
                cas_failed.add(op.args[0])
        elif op.kind == "txn":
            for k, v in zip(op.args[0], op.result):
                observed.add((k, v))
    out = []
    for op in ops:
        if op.status != "ok":
            w = _writes(op)
            if not any(kv in observed or kv[0] in cas_failed for kv in w):
                continue
        out.append(op)
    return out


def check(history: Iterable[Op], init: dict | None = None, prune: bool = True) -> CheckResult:
    """Check a key-value history (see the module doc). ``init``: the values
    before the history started (default: every key missing, i.e. None).
    ``prune``: drop indeterminate writes that no result observed (sound when
    written values are unique, as a test's workload makes them)."""
    ops = [op for op in history if _relevant(op)]
    if prune:
        ops = _prune_unobserved(ops)
    for op in ops:
        if op.status == "ok" and (op.complete is None or op.complete < op.invoke):
            raise ValueError(f"{op}: an ok op needs complete >= invoke")
    for keys, group in _partitions(ops):
        if not _linearizable(group, keys, init):
            return _explain(group, keys, init)
    return CheckResult(True, f"linearizable ({len(ops)} ops)")


def check_register(history: Iterable[Op], init: dict | None = None) -> CheckResult:
    """The register model: single-key get/put/cas only, checked key by key."""
    history = list(history)
    for op in history:
        if op.kind not in ("get", "put", "cas"):
            raise ValueError(f"{op}: not a register op")
    return check(history, init)
