"""An Elle-style checker for list-append histories: strict serializability of multi-key txns.

Keys hold lists of integers; a txn is a list of micro-ops

* ``("r", key, value)``: read the key's list (``value``: the list read; None when unknown,
  as for a txn without an answer; in an ok txn None means the key was missing, i.e. ``[]``);
* ``("append", key, element)``: append ``element`` to the key's list. The workload makes
  every element unique per key, so each element names the txn that appended it.

and a :class:`Txn` has invoke/complete times and a status: ``ok`` (it committed and its reads
are what it saw), ``fail`` (it certainly did not happen) or ``info`` (indeterminate: it may
have happened, and its reads are unknown). An info txn whose appended element somebody read
did happen: it counts as committed.

Why lists: a read of a list shows the whole history of its key up to that read, so the order
in which every key's versions were installed (the version order) can be read off the
history itself: every value read of a key must be a prefix of the longest one. From the
version orders come the dependencies between committed txns (Adya's, as Elle derives them):

* ``ww`` T1 -> T2: T2 appended the element right after T1's in a key's list;
* ``wr`` T1 -> T2: the last element of a list T2 read is T1's;
* ``rw`` T1 -> T2: T1 read a key's list without T2's element, the next one appended;
* ``rt`` T1 -> T2: T1 completed before T2 was invoked (real time, for *strict*
  serializability). Only the frontier of recently completed txns is linked to each new one
  (the others precede it through that frontier), so these edges grow with the concurrency,
  not with the square of the history.

A cycle in that graph is a history no serial order explains; it is named after the edges it
needs (the most specific class wins): G0 (write cycle: ww only), G1c (ww/wr), G-single (one
rw: read skew, lost update), G2 (several rw: write skew); with ``-realtime`` when it needs an
``rt`` edge too (a strict-serializability violation only, e.g. a stale read). Cycles are
found with Tarjan's SCC algorithm; in each strongly connected component the report gives one
shortest cycle of its most specific class.

Anomalies found without the graph: ``incompatible-order`` (two reads of a key that are not
prefixes of one list), ``duplicate-elements`` (an element twice in a list), ``garbage-read``
(an element nobody appended), ``aborted-read`` (G1a: an element of a failed txn),
``intermediate-read`` (G1b: a list ending with an element its txn appended to before
appending another), ``internal`` (a txn's read that does not reflect its own earlier
reads and appends), ``lost-append`` (a committed append in no list read, though a read of
its key started after the txn must have taken effect), ``non-unique-append`` (the history
itself is unusable: one element appended twice to a key).
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

INF = math.inf

# The most specific first: a cycle is reported under the first class that has one.
CYCLE_CLASSES = (
    ("G0", {"ww"}, False),
    ("G1c", {"ww", "wr"}, False),
    ("G-single", {"ww", "wr"}, True),       # True: plus exactly one rw edge
    ("G2", {"ww", "wr", "rw"}, False),
    ("G0-realtime", {"ww", "rt"}, False),
    ("G1c-realtime", {"ww", "wr", "rt"}, False),
    ("G-single-realtime", {"ww", "wr", "rt"}, True),
    ("G2-realtime", {"ww", "wr", "rw", "rt"}, False),
)
_EDGE_RANK = {"ww": 0, "wr": 1, "rt": 2, "rw": 3}


@dataclass
class Txn:
    id: int
    client: int
    ops: list
    invoke: float
    complete: float | None = None
    status: str = "ok"

    def appends(self):
        return [(k, v) for f, k, v in self.ops if f == "append"]

    def __str__(self) -> str:
        end = "…" if self.complete is None or self.status == "info" else f"{self.complete:.3f}"
        parts = []
        for f, k, v in self.ops:
            if f == "append":
                parts.append(f"append {k} {v}")
            else:
                parts.append(f"r {k} {_short(v) if self.status == 'ok' else '?'}")
        return (f"T{self.id} client {self.client} [{self.invoke:.3f}, {end}] "
                f"{self.status}: {'; '.join(parts)}")


def _short(value, keep: int = 4) -> str:
    if value is None:
        return "nil"
    value = list(value)
    if len(value) <= keep:
        return repr(value)
    return f"[… {' '.join(map(str, value[-keep:]))}] ({len(value)})"


@dataclass
class Anomaly:
    kind: str
    text: str
    txns: list = field(default_factory=list)     # ids of the txns involved


@dataclass
class AppendResult:
    anomalies: list
    stats: dict

    @property
    def ok(self) -> bool:
        return not self.anomalies

    def __bool__(self) -> bool:
        return self.ok

    def kinds(self) -> set:
        return {a.kind for a in self.anomalies}

    def report(self, per_kind: int = 3) -> str:
        if self.ok:
            return "strict serializable"
        counts: dict = {}
        for a in self.anomalies:
            counts[a.kind] = counts.get(a.kind, 0) + 1
        lines = ["NOT strict serializable: " +
                 ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))]
        shown: dict = {}
        for a in self.anomalies:
            shown[a.kind] = shown.get(a.kind, 0) + 1
            if shown[a.kind] <= per_kind:
                lines.append(f"  {a.kind}: {a.text}")
        return "\n".join(lines)


def check(history) -> AppendResult:
    """Check a list-append history (see the module doc)."""
    return _Analysis(list(history)).run()


# ---- graph helpers ----------------------------------------------------------------------

def sccs(nodes, succ, singletons: bool = False) -> list[list]:
    """Tarjan's strongly connected components (iterative: histories are deep), over
    ``nodes`` with ``succ(node)`` giving the successors to follow, in the order Tarjan finds
    them: a component comes after every component it reaches (reverse topological order).
    Only components of two or more nodes, unless ``singletons`` (the graph has no
    self-loops)."""
    index: dict = {}
    low: dict = {}
    on_stack: set = set()
    stack: list = []
    out = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(succ(root)))]
        while work:
            v, it = work[-1]
            pushed = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(succ(w))))
                    pushed = True
                    break
                if w in on_stack and index[w] < low[v]:
                    low[v] = index[w]
            if pushed:
                continue
            work.pop()
            if work and low[v] < low[work[-1][0]]:
                low[work[-1][0]] = low[v]
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if singletons or len(comp) > 1:
                    out.append(comp)
    return out


class _Graph:
    """Dependencies between committed txns: adj[a][b] = list of (kind, key, detail)."""

    def __init__(self):
        self.adj: dict = {}
        self.n_edges = 0

    def add(self, a: int, b: int, kind: str, key=None, detail=None) -> None:
        if a == b:
            return
        edges = self.adj.setdefault(a, {}).setdefault(b, [])
        if not any(e[0] == kind for e in edges):
            edges.append((kind, key, detail))
            self.n_edges += 1

    def succ(self, a: int, kinds: set, within):
        """a's successors along edges of ``kinds``, among the nodes ``within`` holds."""
        for b, edges in self.adj.get(a, {}).items():
            if b in within and any(e[0] in kinds for e in edges):
                yield b

    def label(self, a: int, b: int, kinds: set):
        return min((e for e in self.adj[a][b] if e[0] in kinds), key=lambda e: _EDGE_RANK[e[0]])

    def path(self, src: int, is_end, kinds: set, within, budget: list) -> list | None:
        """A shortest path from src to a node for which ``is_end`` holds (nodes, src first),
        along edges of ``kinds`` among the nodes ``within`` holds; None if there is none or
        the search ``budget`` (steps, shared with the caller) ran out."""
        prev = {src: None}
        queue = deque([src])
        while queue:
            v = queue.popleft()
            if is_end(v):
                path = [v]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return path[::-1]
            budget[0] -= 1
            if budget[0] < 0:
                return None
            for w in self.succ(v, kinds, within):
                if w not in prev:
                    prev[w] = v
                    queue.append(w)
        return None


class _Between:
    """The nodes of a component whose rank lies in [lo, hi] (a path's possible nodes)."""

    def __init__(self, rank: dict, lo: int, hi: int):
        self.rank, self.lo, self.hi = rank, lo, hi

    def __contains__(self, v) -> bool:
        r = self.rank.get(v)
        return r is not None and self.lo <= r <= self.hi


# ---- the analysis ----------------------------------------------------------------------

class _Analysis:
    def __init__(self, txns: list):
        self.txns = {t.id: t for t in txns}
        if len(self.txns) != len(txns):
            raise ValueError("txn ids must be unique")
        for t in txns:
            if t.status not in ("ok", "fail", "info"):
                raise ValueError(f"{t}: status must be ok, fail or info")
            if t.status == "ok" and (t.complete is None or t.complete < t.invoke):
                raise ValueError(f"T{t.id}: an ok txn needs complete >= invoke")
        self.anomalies: list[Anomaly] = []
        self.writer: dict = {}          # (key, element) -> txn id
        self.reads: dict = {}           # key -> {value tuple: [reader txn ids]}
        self.order: dict = {}           # key -> the longest list read (the version order)
        self.compatible: dict = {}      # key -> set of value tuples that are prefixes of it
        self.observed: dict = {}        # key -> every element in some list read
        self.first_seen: dict = {}      # txn id -> earliest completion of a txn reading it
        self.committed: set = set()
        self.graph = _Graph()

    def bad(self, kind: str, text: str, txns=()) -> None:
        self.anomalies.append(Anomaly(kind, text, list(txns)))

    def run(self) -> AppendResult:
        t0 = time.monotonic()
        self.index_appends()
        self.index_reads()
        for t in self.txns.values():
            if t.status == "ok":
                self.check_internal(t)
        for key in self.reads:
            self.check_key(key)
        self.find_committed()
        self.check_lost()
        self.build_graph()
        n_cycles = self.find_cycles()
        stats = {
            "txns": len(self.txns),
            "ok": sum(t.status == "ok" for t in self.txns.values()),
            "fail": sum(t.status == "fail" for t in self.txns.values()),
            "info": sum(t.status == "info" for t in self.txns.values()),
            "committed": len(self.committed),
            "keys": len(set(self.reads) | {k for k, _ in self.writer}),
            "edges": self.graph.n_edges,
            "cycles": n_cycles,
            "seconds": time.monotonic() - t0,
        }
        return AppendResult(self.anomalies, stats)

    # -- indexes

    def index_appends(self) -> None:
        for t in self.txns.values():
            for k, v in t.appends():
                other = self.writer.setdefault((k, v), t.id)
                if other != t.id:
                    self.bad("non-unique-append",
                             f"{v} appended to {k} by both T{other} and T{t.id}: elements "
                             f"must be unique per key", [other, t.id])

    def index_reads(self) -> None:
        for t in self.txns.values():
            if t.status != "ok":
                continue
            for f, k, v in t.ops:
                if f == "r":
                    self.reads.setdefault(k, {}).setdefault(tuple(v or ()), []).append(t.id)

    # -- checks on one txn, and on one key's lists

    def check_internal(self, t: Txn) -> None:
        """A txn's reads must show its own earlier reads and appends: after a read of v,
        exactly v plus what it appended since; before any read, lists ending with what it
        appended."""
        state: dict = {}     # key -> (the full list if known, else None; appended since)
        for f, k, v in t.ops:
            known, since = state.get(k, (None, ()))
            if f == "append":
                state[k] = (None, since + (v,)) if known is None else (known + (v,), ())
                continue
            value = tuple(v or ())
            if known is not None and value != known:
                self.bad("internal", f"T{t.id} read {k} {_short(value)} but its own earlier "
                         f"ops imply {_short(known)}: {t}", [t.id])
            elif known is None and since and value[-len(since):] != since:
                self.bad("internal", f"T{t.id} read {k} {_short(value)} without its own "
                         f"appends {list(since)}: {t}", [t.id])
            state[k] = (value, ())

    def check_key(self, key) -> None:
        values = self.reads[key]
        longest = max(values, key=len)
        self.order[key] = longest
        ok_values = set()
        suspects = [longest]
        for value, readers in values.items():
            if value == longest[:len(value)]:
                ok_values.add(value)
            else:
                suspects.append(value)
                # Not a prefix of a list at least as long: they differ somewhere.
                i = next(i for i, (a, b) in enumerate(zip(value, longest)) if a != b)
                self.bad("incompatible-order",
                         f"{key}: T{readers[0]} read {_short(value[:i + 3], 8)}… and "
                         f"T{values[longest][0]} read {_short(longest[:i + 3], 8)}…, which "
                         f"differ at position {i}: no one order of appends gives both",
                         [readers[0], values[longest][0]])
        self.compatible[key] = ok_values
        seen = self.observed.setdefault(key, set())
        for value in suspects:
            if len(set(value)) != len(value):
                dups = sorted({e for e in value if value.count(e) > 1})
                self.bad("duplicate-elements", f"{key}: T{values[value][0]} read a list "
                         f"holding {dups[:5]} more than once", values[value][:1])
            seen.update(value)
        for e in seen:
            w = self.writer.get((key, e))
            if w is None:
                readers = self.readers_of(key, e)
                self.bad("garbage-read", f"{key}: T{readers[0]} read {e}, which no txn "
                         f"appended to {key}", readers[:1])
            elif self.txns[w].status == "fail":
                readers = self.readers_of(key, e)
                self.bad("aborted-read", f"{key}: T{readers[0]} read {e}, appended by T{w} "
                         f"which failed (G1a)", [w] + readers[:1])
        self.check_intermediate(key)

    def readers_of(self, key, e) -> list:
        return sorted({r for value, rs in self.reads[key].items() if e in value for r in rs})

    def check_intermediate(self, key) -> None:
        """G1b: a list whose last element a txn appended before appending another to the same
        key shows that txn half done (to anyone but the txn itself)."""
        for value, readers in self.reads[key].items():
            if not value or (key, value[-1]) not in self.writer:
                continue
            w = self.txns[self.writer[(key, value[-1])]]
            mine = [v for k, v in w.appends() if k == key]
            if mine[-1] != value[-1]:
                for r in readers:
                    if r != w.id:
                        self.bad("intermediate-read", f"{key}: T{r} read a list ending with "
                                 f"{value[-1]}, but T{w.id} appended {mine[-1]} after it "
                                 f"(G1b)", [w.id, r])
                        break

    # -- which txns happened, and whether any append was lost

    def find_committed(self) -> None:
        """Which txns took effect (ok ones, and info ones somebody read an element of), and
        for each the earliest completion of a txn that read one of its elements."""
        for key, values in self.reads.items():
            order = self.order[key]
            # by_len[m]: the earliest completion of a read of the first m+1 elements; then a
            # suffix minimum gives, per position, the earliest read holding that element.
            by_len = [INF] * len(order)
            for value, readers in values.items():
                done = min(self.txns[r].complete for r in readers)
                if value in self.compatible[key]:
                    if value:
                        by_len[len(value) - 1] = min(by_len[len(value) - 1], done)
                else:
                    for e in value:
                        self.saw(key, e, done)
            earliest = INF
            for i in range(len(order) - 1, -1, -1):
                earliest = min(earliest, by_len[i])
                self.saw(key, order[i], earliest)
        for t in self.txns.values():
            if t.status == "ok" or (t.status == "info" and t.id in self.first_seen):
                self.committed.add(t.id)

    def saw(self, key, e, done: float) -> None:
        w = self.writer.get((key, e))
        if w is not None and done < self.first_seen.get(w, INF):
            self.first_seen[w] = done

    def check_lost(self) -> None:
        """A committed txn took effect before it completed, and before any txn that read one
        of its elements completed: every read of its keys invoked after that must hold its
        elements."""
        for tid in sorted(self.committed):
            t = self.txns[tid]
            done = min(t.complete if t.status == "ok" else INF, self.first_seen.get(tid, INF))
            if done == INF:
                continue
            for k, e in t.appends():
                if e in self.observed.get(k, ()):
                    continue
                later = [r for rs in self.reads.get(k, {}).values() for r in rs
                         if self.txns[r].invoke > done]
                if later:
                    r = min(later, key=lambda r: self.txns[r].invoke)
                    self.bad("lost-append", f"{k}: {e} appended by T{tid} (in effect by "
                             f"{done:.3f}) is in no list read, though T{r} read {k} from "
                             f"{self.txns[r].invoke:.3f} on: {t}", [tid, r])

    # -- the dependency graph

    def build_graph(self) -> None:
        g, committed = self.graph, self.committed
        for key, order in self.order.items():
            writers = [self.writer.get((key, e)) for e in order]
            for i in range(len(order) - 1):
                a, b = writers[i], writers[i + 1]
                if a in committed and b in committed:
                    g.add(a, b, "ww", key, (order[i], order[i + 1]))
            for value in self.compatible[key]:
                readers = self.reads[key][value]
                last = writers[len(value) - 1] if value else None
                nxt = writers[len(value)] if len(value) < len(order) else None
                for r in readers:
                    if last in committed:
                        g.add(last, r, "wr", key, value[-1])
                    if nxt in committed:
                        g.add(r, nxt, "rw", key, order[len(value)])
        self.add_realtime()

    def add_realtime(self) -> None:
        """rt edges to each txn from the frontier of txns completed before it was invoked:
        a txn leaves the frontier once a txn it precedes completes (that one stands in for
        it). Invocations sort before completions at the same instant (no edge for a tie)."""
        events = []
        for tid in self.committed:
            t = self.txns[tid]
            events.append((t.invoke, 0, tid))
            if t.status == "ok":
                events.append((t.complete, 1, tid))
        events.sort()
        frontier: set = set()
        preds: dict = {}
        for when, kind, tid in events:
            if kind == 0:
                preds[tid] = tuple(frontier)
                for p in preds[tid]:
                    self.graph.add(p, tid, "rt", None, (self.txns[p].complete, when))
            else:
                frontier.difference_update(preds[tid])
                frontier.add(tid)

    def find_cycles(self) -> int:
        g = self.graph
        all_kinds = {"ww", "wr", "rw", "rt"}
        comps = sccs(sorted(g.adj), lambda v: g.succ(v, all_kinds, self.committed))
        for comp in comps:
            self.explain_component(set(comp))
        return len(comps)

    def explain_component(self, comp: set) -> None:
        for name, kinds, one_rw in CYCLE_CLASSES:
            budget = [300_000]      # BFS steps per class: a huge component is still reported
            cycle = self.single_rw_cycle(comp, kinds, budget) if one_rw \
                else self.cycle_of(comp, kinds, budget)
            if cycle:
                self.report_cycle(name, cycle, kinds | ({"rw"} if one_rw else set()))
                return
        # Only reached when the search budget ran out: still a cycle.
        some = sorted(comp)[:8]
        self.bad("G2-realtime", f"a cycle through {len(comp)} txns (too large to "
                 f"search for the shortest): T{', T'.join(map(str, some))}…", some)

    def cycle_of(self, comp: set, kinds: set, budget: list) -> list | None:
        """A shortest cycle along ``kinds`` through the first node of a component of the
        ``kinds`` subgraph (nodes in order; the last has an edge back to the first)."""
        g = self.graph
        for sub in sccs(sorted(comp), lambda v: g.succ(v, kinds, comp)):
            sub = set(sub)
            start = min(sub)
            into_start = {a for a in sub if start in g.succ(a, kinds, {start})}
            p = g.path(start, into_start.__contains__, kinds, sub, budget)
            if p:
                return p
        return None

    def single_rw_cycle(self, comp: set, kinds: set, budget: list) -> list | None:
        """A cycle whose one rw edge is a -> b, closed by a path b ⇝ a along ``kinds``
        (returned from b to a). Such a path only runs through components of the ``kinds``
        subgraph between b's and a's in topological order, which prunes most rw edges at
        once; the rw edges inside one such component are tried first (they always close)."""
        g = self.graph
        order = sccs(sorted(comp), lambda v: g.succ(v, kinds, comp), singletons=True)
        rank = {v: i for i, c in enumerate(order) for v in c}    # an edge never raises it
        candidates = []
        for a in sorted(comp):
            for b, edges in g.adj.get(a, {}).items():
                if b in comp and rank[b] >= rank[a] and any(e[0] == "rw" for e in edges):
                    candidates.append((rank[b] - rank[a], a, b))
        for _, a, b in sorted(candidates):
            p = g.path(b, lambda v: v == a, kinds, _Between(rank, rank[a], rank[b]), budget)
            if p:
                return p
            if budget[0] < 0:
                return None
        return None

    def precedes(self, a: int, b: int) -> bool:
        ta, tb = self.txns[a], self.txns[b]
        return ta.status == "ok" and ta.complete < tb.invoke

    def shortcut_realtime(self, cycle: list) -> list:
        """The graph links each txn only to the frontier of those completed before it, so a
        cycle through real time wanders through many txns; real-time order is transitive,
        so from each txn jump to the farthest one further on that it precedes. The closing
        edge (last -> first) is kept as it is."""
        out, i = [], 0
        while i < len(cycle):
            out.append(cycle[i])
            j = next((j for j in range(len(cycle) - 1, i + 1, -1)
                      if self.precedes(cycle[i], cycle[j])), i + 1)
            i = j
        return out

    def report_cycle(self, name: str, cycle: list, kinds: set) -> None:
        g = self.graph
        if "rt" in kinds and len(cycle) <= 2000:
            cycle = self.shortcut_realtime(cycle)
        steps = []
        for a, b in zip(cycle, cycle[1:] + cycle[:1]):
            if b in g.adj.get(a, {}) and any(e[0] in kinds for e in g.adj[a][b]):
                kind, key, detail = g.label(a, b, kinds)
            else:       # a shortcut
                kind, key, detail = "rt", None, (self.txns[a].complete, self.txns[b].invoke)
            steps.append(f"T{a} -[{_describe(kind, key, detail)}]-> ")
        txns = "\n      ".join(str(self.txns[t]) for t in cycle)
        self.bad(name, f"cycle of {len(cycle)} txns: {''.join(steps)}T{cycle[0]}\n"
                 f"      {txns}", cycle)


def _describe(kind: str, key, detail) -> str:
    if kind == "ww":
        return f"ww {key}: {detail[0]} then {detail[1]}"
    if kind == "wr":
        return f"wr {key}: read {detail}"
    if kind == "rw":
        return f"rw {key}: read before {detail}"
    return f"rt: completed {detail[0]:.3f} before {detail[1]:.3f}"
