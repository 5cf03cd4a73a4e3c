#!/usr/bin/env python3
"""Deterministic simulation of a fastkv Raft cluster (TigerBeetle VOPR / FoundationDB style).

The whole cluster runs in one process on one ``random.Random(seed)``: every
member's :class:`RaftCore` (given its own RNG drawn from the seed), a simulated
clock (ticks), a simulated network (drop, delay, duplicate, reorder, partitions,
crashed members), a simulated disk per member (what was fsynced survives a
crash, what was not is lost, and the write in flight may be torn), a driver per
member that follows the Ready contract (fastkv/raft/messages.py, node.py), a
key-value state machine that snapshots every K applied entries (so lagging
members need snapshot transfer), membership changes, leader transfers, and
clients running register (get/put/cas) and multi-key txn workloads against
random members, with reads through ReadIndex.

Checked while it runs and at the end:

* election safety: at most one leader per term, over the whole run;
* log matching, on the durable logs: equal (index, term) => equal entry and
  equal previous term (hence identical prefixes);
* leader completeness: a new leader's log holds every entry applied anywhere;
* state-machine safety: the same index applies the same entry everywhere, and
  the same applied index gives the same state hash;
* the driver contract: entries handed out for applying are durable locally;
* no acknowledged write lost: every write a client heard "ok" for is in the
  final state;
* linearizability of the client history (tests/checkers/linearizability.py);
* liveness once the faults stop: a leader, and every member caught up.

A failure message starts with the seed and the command that reproduces it::

    python tests/raft/sim.py --seed 1234 -v          # readable trace of the run
    python -m pytest tests/raft/test_simulation.py -k 'seed_1234'

Bug modes (``--bug``) break the driver or the disk on purpose so the checkers
can be seen to fail: ack_before_persist, forget_vote, grant_any_vote (a
monkeypatched core that votes twice in a term), stale_read, fsync_lies.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import heapq
import logging
import marshal
import os
import random
import sys
import time
from collections import deque
from dataclasses import dataclass, field

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_HERE))                      # tests/ (checkers)
sys.path.insert(0, os.path.dirname(os.path.dirname(_HERE)))     # the repo (fastkv)

from checkers.linearizability import Op, check  # noqa: E402
from fastkv.raft import messages as M  # noqa: E402
from fastkv.raft.log import RaftLog  # noqa: E402
from fastkv.raft.messages import (CONF_ADD_LEARNER_NODE, CONF_ADD_NODE,  # noqa: E402
                                  CONF_REMOVE_NODE, ENTRY_CONF_CHANGE, LEADER, ConfChange,
                                  ConfState, Message, SnapshotMeta)
from fastkv.storage.wal import Entry, HardState  # noqa: E402

TICK = 10                     # sim time units per tick
BUG_MODES = ("ack_before_persist", "forget_vote", "grant_any_vote", "stale_read", "fsync_lies")


class _TraceLog(logging.Handler):
    """The core's log lines go into the running simulation's trace, not stderr."""
    sim = None

    def emit(self, record):
        if self.sim is not None and self.sim.verbose:
            self.sim.trace("log " + record.getMessage())


_trace_log = _TraceLog()
_raft_logger = logging.getLogger("fastkv.raft")
_raft_logger.addHandler(_trace_log)
_raft_logger.propagate = False


class Violation(Exception):
    """A safety (or liveness) property failed."""


def _core_class(bug: str | None = None):
    from fastkv.raft.core import RaftCore
    if bug != "grant_any_vote":
        return RaftCore

    class GrantAnyVote(RaftCore):
        """A monkeypatched core that forgets whom it voted for in this term (it grants
        every candidate whose log is up to date): two leaders per term follow."""

        def _handle_vote_request(self, m):
            saved = (self.vote, self.lead)
            if m.type == M.MSG_VOTE:
                self.vote, self.lead = 0, 0
            super()._handle_vote_request(m)
            if self.vote == 0:
                self.vote, self.lead = saved

    return GrantAnyVote


# ---- configuration ------------------------------------------------------------------------

@dataclass
class Config:
    nodes: int = 3
    ticks: int = 400                 # ticks with faults
    heal_ticks: int = 300            # at most this many quiet ticks to converge after
    clients: int = 4
    keys: int = 3
    txn_ratio: float = 0.25
    read_ratio: float = 0.4
    p_drop: float = 0.02
    p_dup: float = 0.02
    p_slow: float = 0.05
    fsync_max: int = 8               # sim units a fsync takes: 1..fsync_max
    crash_every: int = 60            # mean ticks between crashes (0: none)
    partition_every: int = 80
    conf_every: int = 120
    transfer_every: int = 150
    torn: bool = True
    snapshot_every: int = 20         # applied entries between state machine snapshots
    keep_entries: int = 5            # entries kept in the log behind a snapshot
    election_tick: int = 10
    heartbeat_tick: int = 1
    max_inflight: int = 256
    max_msg_bytes: int = 1 << 20
    pre_vote: bool = True
    check_quorum: bool = True
    op_timeout: int = 40             # ticks a client waits before giving up (indeterminate)
    power_loss_ratio: int = 8        # one whole-cluster power loss per this many crashes
    merged_snapshots: bool = True    # a leader sends its current state as the snapshot (etcd)

    @classmethod
    def random(cls, rng: random.Random, scale: float = 1.0) -> "Config":
        c = cls()
        c.nodes = rng.choice((3, 3, 3, 5, 5, 1)) if rng.random() < 0.95 else 1
        c.ticks = int(rng.randint(500, 900) * scale)
        c.clients = rng.randint(2, 6)
        c.keys = rng.randint(1, 4)
        c.txn_ratio = rng.choice((0.0, 0.2, 0.4))
        c.read_ratio = rng.uniform(0.2, 0.6)
        c.p_drop = rng.choice((0.0, 0.01, 0.03, 0.1))
        c.p_dup = rng.choice((0.0, 0.02, 0.05))
        c.p_slow = rng.choice((0.0, 0.05, 0.2))
        c.fsync_max = rng.choice((1, 4, 15))
        c.crash_every = rng.choice((0, 40, 80, 150))
        c.partition_every = rng.choice((0, 50, 100, 200))
        c.conf_every = rng.choice((0, 60, 120)) if c.nodes > 1 else rng.choice((0, 60))
        c.transfer_every = rng.choice((0, 100, 200))
        c.torn = rng.random() < 0.7
        c.snapshot_every = rng.choice((5, 10, 30, 100))
        c.keep_entries = rng.choice((0, 2, 5))
        c.election_tick = rng.choice((5, 10, 10, 20))
        c.heartbeat_tick = rng.choice((1, 1, 2))
        c.max_inflight = rng.choice((1, 4, 256))
        c.max_msg_bytes = rng.choice((64, 1024, 1 << 20))
        c.pre_vote = rng.random() < 0.8
        c.check_quorum = rng.random() < 0.8 if c.pre_vote else rng.random() < 0.5
        c.op_timeout = max(2 * c.election_tick + 10, 40)
        return c


# ---- the state machine -----------------------------------------------------------------------

class KV:
    """The replicated state machine: a dict of keys, plus each request's result (so a
    request that reaches the log twice, e.g. a duplicated forward, takes effect once)."""

    __slots__ = ("kv", "results", "applied", "applied_term")

    def __init__(self):
        self.kv: dict = {}
        self.results: dict = {}
        self.applied = 0
        self.applied_term = 0

    def snapshot(self):
        return (dict(self.kv), dict(self.results), self.applied, self.applied_term)

    @classmethod
    def restore(cls, data) -> "KV":
        kv = cls()
        d, r, kv.applied, kv.applied_term = data
        kv.kv, kv.results = dict(d), dict(r)
        return kv

    def apply(self, data: bytes):
        op_id, kind, args = marshal.loads(data)
        if op_id in self.results:
            return self.results[op_id]
        kv = self.kv
        if kind == "put":
            kv[args[0]] = args[1]
            res = None
        elif kind == "cas":
            k, old, new = args
            res = kv.get(k) == old
            if res:
                kv[k] = new
        elif kind == "txn":
            reads, writes = args
            res = tuple(kv.get(k) for k in reads)
            for k, v in writes:
                kv[k] = v
        else:
            raise ValueError(kind)
        self.results[op_id] = res
        return res

    def hash(self) -> str:
        h = hashlib.sha1(repr((sorted(self.kv.items()), sorted(self.results.items()))).encode())
        return h.hexdigest()[:16]


# ---- the disk --------------------------------------------------------------------------------

class Disk:
    """One member's durable state: snapshot (meta + state), hard state, log entries.

    Writes go to ``pending`` (the page cache); ``sync`` makes batches durable in
    order. A crash keeps the durable state, and (torn) maybe a prefix of the
    pending batches and a prefix of the entries of the next one, never its hard
    state (the WAL writes a batch's hard state after its entries, and a batch
    with a bad CRC is cut off): only writes never reported durable are affected."""

    def __init__(self, sim: "Sim", nid: int):
        self.sim = sim
        self.nid = nid
        self.snap: SnapshotMeta | None = None
        self.snap_data = None
        self.hs = HardState()
        self.entries: list[Entry] = []       # after snap.index, contiguous
        self.pending: list[tuple[int, HardState | None, list[Entry]]] = []
        self.seq = 0
        self.synced = 0

    @property
    def snap_index(self) -> int:
        return self.snap.index if self.snap else 0

    @property
    def last_index(self) -> int:
        return self.entries[-1].index if self.entries else self.snap_index

    def term_at(self, index: int) -> int | None:
        if index == self.snap_index:
            return self.snap.term if self.snap else 0
        i = index - self.snap_index - 1
        if 0 <= i < len(self.entries):
            return self.entries[i].term
        return None

    def write(self, hs: HardState | None, entries: list[Entry]) -> int:
        self.seq += 1
        self.pending.append((self.seq, hs, list(entries)))
        return self.seq

    def sync(self, upto: int) -> None:
        while self.pending and self.pending[0][0] <= upto:
            _, hs, ents = self.pending.pop(0)
            self._apply(hs, ents)
        self.synced = max(self.synced, upto)

    def _apply(self, hs, ents) -> None:
        if ents:
            first = ents[0].index
            if first <= self.snap_index:
                ents = [e for e in ents if e.index > self.snap_index]
                first = ents[0].index if ents else 0
            if ents:
                if first > self.last_index + 1:
                    raise Violation(f"member {self.nid:x}: persisting entries from {first} "
                                    f"leaves a hole after the durable log's last index "
                                    f"{self.last_index}")
                del self.entries[first - self.snap_index - 1:]
                prev = self.term_at(first - 1)
                self.entries.extend(ents)
                self.sim.check_durable_entries(self.nid, prev, ents)
        if hs is not None:
            self.hs = HardState(hs.term, hs.vote, hs.commit)

    def install_snapshot(self, meta: SnapshotMeta, data) -> None:
        """A snapshot received from the leader replaces the log (fsynced at once, as
        node.py awaits it before anything else)."""
        self.snap, self.snap_data = meta, data
        self.entries = []

    def save_local_snapshot(self, meta: SnapshotMeta, data, keep_from: int) -> None:
        if self.snap and meta.index <= self.snap.index:
            return
        self.snap, self.snap_data = meta, data
        # The WAL releases segments wholly below the snapshot; keep the rest.
        self.entries = [e for e in self.entries if e.index > meta.index]

    def crash(self, rng: random.Random, torn: bool, lose_synced: int = 0) -> str:
        note = ""
        if torn and self.pending:
            keep = rng.randint(0, len(self.pending))
            for _, hs, ents in self.pending[:keep]:
                self._apply(hs, ents)
            if keep < len(self.pending):
                _, _, ents = self.pending[keep]
                part = rng.randint(0, len(ents))
                if part:
                    self._apply(None, ents[:part])
                note = f"kept {keep}/{len(self.pending)} unsynced batches, torn one kept {part} entries"
            else:
                note = f"kept all {keep} unsynced batches"
        elif self.pending:
            note = f"lost {len(self.pending)} unsynced batches"
        self.pending = []
        return note


# ---- one member: core + driver ---------------------------------------------------------------

class Member:
    def __init__(self, sim: "Sim", nid: int, disk: Disk):
        self.sim = sim
        self.id = nid
        self.disk = disk
        self.alive = False
        self.removed = False
        self.incarnation = 0
        self.core = None
        self.log = None
        self.sm = KV()
        self.conf_state = ConfState()
        self.inflight = False
        self.snap_in: dict[int, object] = {}
        self.props: dict[int, "ClientOp"] = {}
        self.reads: dict[bytes, "ClientOp"] = {}
        self.read_waits: list[tuple[int, "ClientOp"]] = []
        self.leader_term_checked = -1
        self.tick_period = TICK

    # lifecycle
    def start(self) -> None:
        sim, d = self.sim, self.disk
        self.incarnation += 1
        self.alive = True
        self.inflight = False
        self.snap_in = {}
        if d.snap is not None:
            self.sm = KV.restore(d.snap_data)
            self.conf_state = ConfState(list(d.snap.conf_state.voters),
                                        list(d.snap.conf_state.learners))
        else:
            self.sm = KV()
            self.conf_state = ConfState()
        self.log = RaftLog(d.snap_index, d.snap.term if d.snap else 0, list(d.entries))
        hs = HardState(d.hs.term, d.hs.vote, d.hs.commit)
        cfg = sim.cfg
        core_rng = random.Random(sim.rng.getrandbits(64))
        snap = (SnapshotMeta(d.snap.index, d.snap.term,
                             ConfState(list(d.snap.conf_state.voters),
                                       list(d.snap.conf_state.learners)))
                if d.snap else None)
        self.core = sim.RaftCore(
            self.id, self.log, hs, self.sm.applied,
            ConfState(list(self.conf_state.voters), list(self.conf_state.learners)),
            rng=core_rng, election_tick=cfg.election_tick, heartbeat_tick=cfg.heartbeat_tick,
            pre_vote=cfg.pre_vote, check_quorum=cfg.check_quorum,
            max_inflight=cfg.max_inflight, max_msg_bytes=cfg.max_msg_bytes, snapshot=snap)
        sim.trace(f"start {self.id:x} (incarnation {self.incarnation}): snap "
                  f"{d.snap_index}, log ..{d.last_index}, hs {hs.term}/{hs.vote:x}/{hs.commit}",
                  always=True)
        inc = self.incarnation
        sim.at(sim.now + sim.rng.randint(1, self.tick_period), self._tick, inc)
        self.pump()

    def crash(self, why: str = "crash") -> None:
        if not self.alive:
            return
        sim = self.sim
        self.alive = False
        self.incarnation += 1
        lose = sim.bug == "fsync_lies"
        note = self.disk.crash(sim.rng, sim.cfg.torn)
        if lose:
            # the bug: fsync "succeeded" but the last synced batches never hit the platter
            self.disk.entries = self.disk.entries[:max(0, len(self.disk.entries)
                                                       - sim.rng.randint(0, 3))]
            if self.disk.hs.commit > self.disk.last_index:
                self.disk.hs.commit = self.disk.last_index
        if sim.bug == "forget_vote":
            self.disk.hs.vote = 0
        sim.trace(f"{why} {self.id:x} {note}", always=True)
        for op in list(self.props.values()) + list(self.reads.values()) + \
                [op for _, op in self.read_waits]:
            sim.indeterminate(op, f"member {self.id:x} crashed")
        self.props.clear()
        self.reads.clear()
        self.read_waits.clear()
        self.core = None

    def _tick(self, inc: int) -> None:
        if inc != self.incarnation or not self.alive:
            return
        self.core.tick()
        self.sim.after_core(self)
        self.pump()
        self.sim.at(self.sim.now + self.tick_period, self._tick, inc)

    def step(self, msg: Message) -> None:
        self.core.step(msg)
        self.sim.after_core(self)
        self.pump()

    # the driver: one Ready at a time, persist -> send -> apply -> advance
    def pump(self) -> None:
        sim = self.sim
        spins = 0
        while self.alive and not self.inflight and self.core.has_ready():
            rd = self.core.ready()
            sim.after_core(self)
            spins += 1
            if spins > 1000:
                st = self.core.status() if hasattr(self.core, "status") else {}
                raise Violation(f"member {self.id:x}: has_ready() stays true after 1000 "
                                f"ready()/advance() rounds with nothing to persist: last "
                                f"{rd!r}; core {st}")
            if rd.snapshot is not None:
                data = self.snap_in.get(rd.snapshot.index)
                if data is None:
                    raise Violation(f"member {self.id:x}: Ready.snapshot at "
                                    f"{rd.snapshot.index} but no such snapshot was received")
                self.disk.install_snapshot(rd.snapshot, data)
                self.sm = KV.restore(data)
                cs = rd.snapshot.conf_state
                self.conf_state = ConfState(list(cs.voters), list(cs.learners))
                sim.check_state_hash(self, "snapshot install")
                sim.trace(f"{self.id:x} installs snapshot {rd.snapshot.index}@{rd.snapshot.term}")
                self._serve_reads()
            send_now = rd.state == LEADER or sim.bug == "ack_before_persist"
            if send_now:
                sim.send_all(self, rd.messages)
            # Applying runs in parallel with the fsync (node.py): the core must hand out
            # only entries that are durable here already.
            self._apply(rd.committed_entries)
            for rs in rd.read_states:
                op = self.reads.pop(rs.context, None)
                if op is not None:
                    self.read_waits.append((rs.index, op))
            self._serve_reads()
            if rd.hardstate is not None or rd.entries:
                seq = self.disk.write(rd.hardstate, rd.entries)
                self.inflight = True
                inc = self.incarnation
                sim.at(sim.now + sim.rng.randint(1, sim.cfg.fsync_max),
                       self._persisted, inc, seq, rd, send_now)
                return
            self._finish(rd, send_now)

    def _persisted(self, inc: int, seq: int, rd, sent: bool) -> None:
        if inc != self.incarnation or not self.alive:
            return
        self.disk.sync(seq)
        self._finish(rd, sent)
        self.pump()

    def _finish(self, rd, sent: bool) -> None:
        if not sent:
            self.sim.send_all(self, rd.messages)
        self.inflight = False
        self.core.advance(rd)
        self.sim.after_core(self)

    def _apply(self, entries: list[Entry]) -> None:
        sim = self.sim
        for e in entries:
            if e.index != self.sm.applied + 1:
                raise Violation(f"member {self.id:x}: committed entry {e.index} handed out "
                                f"for applying after applied index {self.sm.applied}")
            if self.disk.term_at(e.index) != e.term:
                raise Violation(f"member {self.id:x}: committed entry {e.index}@{e.term} handed "
                                f"out for applying before it is durable here (durable log "
                                f"..{self.disk.last_index}; node.py applies in parallel with "
                                f"the fsync)")
            sim.check_applied(self, e)
            result = None
            if e.type == ENTRY_CONF_CHANGE:
                if e.data:
                    cc = ConfChange.decode(e.data)
                    cs = self.core.apply_conf_change(cc)
                    self.conf_state = ConfState(list(cs.voters), list(cs.learners))
                    sim.conf_applied(self, cc, e.index)
            elif e.data:
                result = self.sm.apply(e.data)
                op_id = marshal.loads(e.data)[0]
                if op_id not in sim.applied_ops:
                    sim.applied_ops[op_id] = (sim.now, self.sm.results[op_id])
                op = self.props.pop(op_id, None)
                if op is not None:
                    sim.complete(op, self.sm.results[op_id])
            self.sm.applied = e.index
            self.sm.applied_term = e.term
            if e.index % 16 == 0:
                sim.check_state_hash(self, "apply")
            del result
            self._maybe_snapshot()
        if entries:
            self._serve_reads()

    def snapshot_now(self) -> SnapshotMeta:
        if self.sm.applied > self.disk.snap_index:
            self._maybe_snapshot(force=True)
        return self.disk.snap

    def _maybe_snapshot(self, force: bool = False) -> None:
        cfg = self.sim.cfg
        applied = self.sm.applied
        if applied - self.disk.snap_index < cfg.snapshot_every and not force:
            return
        meta = SnapshotMeta(applied, self.sm.applied_term,
                            ConfState(list(self.conf_state.voters),
                                      list(self.conf_state.learners)))
        self.disk.save_local_snapshot(meta, self.sm.snapshot(), applied - cfg.keep_entries)
        self.sim.check_state_hash(self, "snapshot")
        self.core.set_snapshot(SnapshotMeta(meta.index, meta.term,
                                            ConfState(list(meta.conf_state.voters),
                                                      list(meta.conf_state.learners))))
        upto = applied - cfg.keep_entries
        if upto > self.log.snapshot_index:
            self.core.compact(upto)

    def _serve_reads(self) -> None:
        if not self.read_waits:
            return
        still = []
        for index, op in self.read_waits:
            if self.sm.applied >= index:
                self.sim.serve_read(self, op)
            else:
                still.append((index, op))
        self.read_waits = still


# ---- clients -----------------------------------------------------------------------------------

@dataclass
class ClientOp:
    op: Op
    member: int
    done: bool = False


# ---- the simulation --------------------------------------------------------------------------

@dataclass
class Result:
    seed: int
    ok: bool
    message: str = ""
    stats: dict = field(default_factory=dict)
    trace: list = field(default_factory=list)


class Sim:
    def __init__(self, seed: int, cfg: Config | None = None, bug: str | None = None,
                 verbose: bool = False, scale: float = 1.0, core_class=None):
        self.seed = seed
        self.rng = random.Random(seed)
        self.cfg = cfg or Config.random(self.rng, scale)
        self.bug = bug
        if bug is not None and bug not in BUG_MODES:
            raise ValueError(f"unknown bug mode {bug!r}; one of {BUG_MODES}")
        if bug in ("ack_before_persist", "fsync_lies", "forget_vote"):
            # make the window the bug opens likely to be hit
            self.cfg.crash_every = 15
            self.cfg.nodes = max(self.cfg.nodes, 3)
            self.cfg.fsync_max = 20
            self.cfg.torn = False
            self.cfg.power_loss_ratio = 2
        if bug == "grant_any_vote":
            self.cfg.pre_vote = False
            self.cfg.check_quorum = False
            self.cfg.election_tick = 5
            self.cfg.nodes = 5
            self.cfg.p_slow = 0.3
        if bug == "forget_vote":
            # a forgotten vote matters when a vote request of the same term arrives after
            # the reboot: late and duplicated messages, quick reboots, many elections
            self.cfg.pre_vote = False
            self.cfg.check_quorum = False
            self.cfg.election_tick = 5
            self.cfg.p_slow = 0.3
            self.cfg.p_dup = 0.2
            self.cfg.crash_every = 6
            self.cfg.power_loss_ratio = 10
            self.cfg.nodes = 5
            self.cfg.partition_every = 20
        if bug == "stale_read":
            self.cfg.partition_every = 30
            self.cfg.read_ratio = 0.6
            self.cfg.nodes = max(self.cfg.nodes, 3)
        self.scale = scale
        self.verbose = verbose
        _trace_log.sim = self
        _raft_logger.setLevel(logging.INFO if verbose else logging.WARNING)
        self.RaftCore = core_class or _core_class(bug)
        self.now = 0
        self.events = 0
        self._q: list = []
        self._qseq = 0
        self._trace: deque = deque(maxlen=20000 if verbose else 300)
        self.members: dict[int, Member] = {}
        self.next_id = 0x10
        # network
        self.groups: dict[int, int] = {}       # member -> partition group (absent: group 0)
        self.extra_drop = 0.0
        # checkers' state
        self.leaders: dict[int, int] = {}      # term -> leader
        self.committed: dict[int, tuple] = {}  # index -> (term, type, data)
        self.hashes: dict[int, str] = {}       # applied index -> state hash
        self.durable: dict[tuple, tuple] = {}  # (index, term) -> (prev_term, type, data)
        # clients
        self.history: list[Op] = []
        self.client_busy: dict[int, ClientOp | None] = {}
        self.next_op = 1
        self.next_value = 1
        self.acked_writes: list[Op] = []
        self.applied_ops: dict[int, tuple] = {}  # op id -> (first time applied anywhere, result)
        # membership
        self.conf_pending: tuple | None = None  # (cc, deadline tick)
        self.faults = True
        self.stats = {"msgs": 0, "dropped": 0, "crashes": 0, "power_losses": 0, "partitions": 0, "conf_changes": 0,
                      "snapshots_sent": 0, "transfers": 0, "ok_ops": 0, "info_ops": 0,
                      "fail_ops": 0, "leaders": 0}

    # -- event queue
    def at(self, t: int, fn, *args) -> None:
        self._qseq += 1
        heapq.heappush(self._q, (t, self._qseq, fn, args))

    def trace(self, s: str, always: bool = False) -> None:
        if always or self.verbose:
            self._trace.append(f"{self.now / TICK:8.1f} {s}")

    # -- network
    def connected(self, a: int, b: int) -> bool:
        return self.groups.get(a, 0) == self.groups.get(b, 0)

    def send_all(self, m: Member, msgs: list[Message]) -> None:
        for msg in msgs:
            self.send(m, msg)

    def send(self, m: Member, msg: Message) -> None:
        rng = self.rng
        self.stats["msgs"] += 1
        dst = self.members.get(msg.to)
        data = None
        if msg.type == M.MSG_SNAP:
            self.stats["snapshots_sent"] += 1
            if self.cfg.merged_snapshots:
                # etcd's server sends its current applied state, not the (maybe old) snapshot
                # the core names: an old snapshot may predate the receiver's membership, and
                # the core rightly ignores a snapshot whose configuration lacks it.
                meta = m.snapshot_now()
                msg = dataclasses.replace(msg, snapshot=meta)
            if m.disk.snap is None or m.disk.snap.index != msg.snapshot.index:
                # the core asked to send a snapshot the member does not hold
                raise Violation(f"member {m.id:x} sends snapshot {msg.snapshot.index} but holds "
                                f"{m.disk.snap_index}")
            data = m.disk.snap_data
        lost = (dst is None or not dst.alive or not self.connected(m.id, msg.to)
                or rng.random() < self.cfg.p_drop + self.extra_drop)
        if lost:
            self.stats["dropped"] += 1
            if self.verbose:
                self.trace(f"drop {msg!r}")
            if msg.type == M.MSG_SNAP:
                self.at(self.now + rng.randint(1, 3 * TICK), self._report, m.id,
                        m.incarnation, Message(M.MSG_SNAP_STATUS, to=m.id, frm=msg.to,
                                               reject=True))
            elif rng.random() < 0.1:
                self.at(self.now + rng.randint(1, TICK), self._report, m.id, m.incarnation,
                        Message(M.MSG_UNREACHABLE, to=m.id, frm=msg.to))
            return
        copies = 2 if rng.random() < self.cfg.p_dup else 1
        for _ in range(copies):
            delay = rng.randint(1, 4)
            if rng.random() < self.cfg.p_slow:
                delay += rng.randint(5, 6 * TICK)
            self.at(self.now + delay, self._deliver, msg, m.incarnation, dst.incarnation, data)

    def _deliver(self, msg: Message, frm_inc: int, to_inc: int, data) -> None:
        src = self.members.get(msg.frm)
        dst = self.members.get(msg.to)
        ok = (src is not None and src.incarnation == frm_inc and dst is not None and dst.alive
              and dst.incarnation == to_inc and self.connected(msg.frm, msg.to))
        if msg.type == M.MSG_SNAP and src is not None and src.alive and src.incarnation == frm_inc:
            self.at(self.now + self.rng.randint(1, TICK), self._report, src.id, frm_inc,
                    Message(M.MSG_SNAP_STATUS, to=src.id, frm=msg.to, reject=not ok))
        if not ok:
            self.stats["dropped"] += 1
            return
        if self.verbose:
            self.trace(f"deliver {msg!r}")
        if msg.type == M.MSG_SNAP:
            dst.snap_in[msg.snapshot.index] = data
        dst.step(msg)

    def _report(self, nid: int, inc: int, msg: Message) -> None:
        m = self.members.get(nid)
        if m is None or not m.alive or m.incarnation != inc:
            return
        m.step(msg)

    # -- checkers
    def fail(self, what: str) -> None:
        raise Violation(what)

    def after_core(self, m: Member) -> None:
        core = m.core
        if core is None or core.state != LEADER:
            return
        term = core.term
        if m.leader_term_checked == term:
            return
        m.leader_term_checked = term
        other = self.leaders.get(term)
        if other is not None and other != m.id:
            self.fail(f"election safety: two leaders in term {term}: {other:x} and {m.id:x}")
        if other is None:
            self.leaders[term] = m.id
            self.stats["leaders"] += 1
            self.trace(f"{m.id:x} is leader of term {term} (log ..{m.log.last_index}, "
                       f"commit {core.commit})", always=True)
        # leader completeness: every entry applied anywhere is in the new leader's log
        log = m.log
        for index, (t, _, _) in self.committed.items():
            if index <= log.snapshot_index:
                continue
            if index > log.last_index or log.term_at(index) != t:
                have = log.term_at(index) if index <= log.last_index else None
                self.fail(f"leader completeness: {m.id:x} became leader of term {term} without "
                          f"committed entry {index}@{t} (its log has "
                          f"{'nothing' if have is None else f'term {have}'} there, log "
                          f"..{log.last_index})")

    def check_durable_entries(self, nid: int, prev: int | None, ents: list[Entry]) -> None:
        durable = self.durable
        for e in ents:
            key = (e.index, e.term)
            val = (prev, e.type, e.data)
            old = durable.get(key)
            if old is None:
                durable[key] = val
            elif old != val:
                if old[1:] != val[1:]:
                    self.fail(f"log matching: two different entries at index {e.index} term "
                              f"{e.term} in durable logs (member {nid:x})")
                if old[0] is not None and prev is not None:
                    self.fail(f"log matching: entry {e.index}@{e.term} follows term {prev} on "
                              f"member {nid:x} but term {old[0]} elsewhere")
                if old[0] is None:
                    durable[key] = val
            prev = e.term

    def check_applied(self, m: Member, e: Entry) -> None:
        got = self.committed.get(e.index)
        mine = (e.term, e.type, e.data)
        if got is None:
            self.committed[e.index] = mine
        elif got != mine:
            self.fail(f"state machine safety: member {m.id:x} applies {e.index}@{e.term} but "
                      f"another member applied {e.index}@{got[0]} (a committed entry changed)")

    def check_state_hash(self, m: Member, why: str) -> None:
        h = m.sm.hash()
        i = m.sm.applied
        old = self.hashes.get(i)
        if old is None:
            self.hashes[i] = h
        elif old != h:
            self.fail(f"state machine safety: member {m.id:x} has state hash {h} at applied "
                      f"index {i} ({why}), another member had {old}")

    # -- clients
    def client_step(self, cid: int) -> None:
        rng, cfg = self.rng, self.cfg
        if not self.faults and self.now > self.stop_clients_at:
            return
        if self.client_busy.get(cid) is None:
            self.issue(cid)
        self.at(self.now + rng.randint(1, 3 * TICK), self.client_step, cid)

    def issue(self, cid: int) -> None:
        rng, cfg = self.rng, self.cfg
        keys = [f"k{i}" for i in range(cfg.keys)]
        op_id = self.next_op
        self.next_op += 1
        r = rng.random()
        if r < cfg.txn_ratio:
            rk = tuple(sorted(rng.sample(keys, rng.randint(0, len(keys)))))
            wk = sorted(rng.sample(keys, rng.randint(0, len(keys))))
            if not rk and not wk:
                rk = (keys[0],)
            writes = []
            for k in wk:
                writes.append((k, self.next_value))
                self.next_value += 1
            op = Op(op_id, cid, "txn", (rk, tuple(writes)), self.now)
        elif r < cfg.txn_ratio + cfg.read_ratio:
            op = Op(op_id, cid, "get", (rng.choice(keys),), self.now)
        elif rng.random() < 0.6:
            op = Op(op_id, cid, "put", (rng.choice(keys), self.next_value), self.now)
            self.next_value += 1
        else:
            old = rng.choice([None] + list(range(max(1, self.next_value - 5), self.next_value)))
            op = Op(op_id, cid, "cas", (rng.choice(keys), old, self.next_value), self.now)
            self.next_value += 1
        self.history.append(op)
        live = [m for m in self.members.values() if not m.removed]
        m = rng.choice(live)
        cop = ClientOp(op, m.id)
        self.client_busy[cid] = cop
        self.trace(f"client {cid} -> {m.id:x}: op#{op.id} {op.kind}{op.args!r}")
        if not m.alive:
            self.failop(cop, "member down")
            return
        self.at(self.now + cfg.op_timeout * TICK, self._timeout, cop)
        read_only = op.kind == "get" or (op.kind == "txn" and not op.args[1])
        if read_only:
            if self.bug == "stale_read":
                self.serve_read(m, cop)
                return
            ctx = b"r%d" % op_id
            m.reads[ctx] = cop
            try:
                m.core.read_index(ctx)
            except Exception as exc:
                if type(exc).__name__ not in ("ErrProposalDropped", "ErrNotLeader"):
                    raise
                m.reads.pop(ctx, None)
                self.failop(cop, type(exc).__name__)
                return
        else:
            m.props[op_id] = cop
            try:
                m.core.propose(marshal.dumps((op_id, op.kind, op.args)))
            except Exception as exc:
                if type(exc).__name__ not in ("ErrProposalDropped", "ErrNotLeader"):
                    raise
                m.props.pop(op_id, None)
                self.failop(cop, type(exc).__name__)
                return
        self.after_core(m)
        m.pump()

    def serve_read(self, m: Member, cop: ClientOp) -> None:
        op = cop.op
        if op.kind == "get":
            self.complete(cop, m.sm.kv.get(op.args[0]))
        else:
            self.complete(cop, tuple(m.sm.kv.get(k) for k in op.args[0]))

    def complete(self, cop: ClientOp, result) -> None:
        if cop.done:
            return
        cop.done = True
        op = cop.op
        op.complete, op.status, op.result = self.now, "ok", result
        self.stats["ok_ops"] += 1
        if op.kind != "get" and not (op.kind == "txn" and not op.args[1]):
            self.acked_writes.append(op)
        self.client_busy[op.client] = None
        self.trace(f"ok {op}")

    def failop(self, cop: ClientOp, why: str) -> None:
        if cop.done:
            return
        cop.done = True
        cop.op.status = "fail"
        self.stats["fail_ops"] += 1
        self.client_busy[cop.op.client] = None
        self.trace(f"fail op#{cop.op.id}: {why}")

    def indeterminate(self, cop: ClientOp, why: str) -> None:
        if cop.done:
            return
        cop.done = True
        cop.op.status = "info"
        self.stats["info_ops"] += 1
        self.client_busy[cop.op.client] = None
        self.trace(f"info op#{cop.op.id}: {why}")

    def _timeout(self, cop: ClientOp) -> None:
        if cop.done:
            return
        m = self.members.get(cop.member)
        if m is not None:
            m.props.pop(cop.op.id, None)
            m.reads.pop(b"r%d" % cop.op.id, None)
            m.read_waits = [(i, c) for i, c in m.read_waits if c is not cop]
        self.indeterminate(cop, "timed out")

    # -- nemesis
    def leader(self) -> Member | None:
        best = None
        for m in self.members.values():
            if m.alive and m.core.state == LEADER:
                if best is None or m.core.term > best.core.term:
                    best = m
        return best

    def nemesis(self) -> None:
        if not self.faults:
            return
        rng, cfg = self.rng, self.cfg
        self.at(self.now + TICK, self.nemesis)
        running = [m for m in self.members.values() if not m.removed]
        if cfg.crash_every and rng.random() < 1 / cfg.crash_every:
            up = [m for m in running if m.alive]
            down = len(running) - len(up)
            if up and down < max(1, (len(running) - 1) // 2):
                victim = rng.choice(up)
                self.stats["crashes"] += 1
                victim.crash()
                self.at(self.now + self._downtime(), self._restart, victim.id)
        if cfg.crash_every and rng.random() < 1 / (cfg.crash_every * cfg.power_loss_ratio):
            # power loss: every member at once (only fsynced data survives anywhere)
            self.stats["power_losses"] += 1
            self.trace("power loss: every member crashes", always=True)
            for m in running:
                if m.alive:
                    m.crash("power loss:")
                    self.at(self.now + self._downtime(), self._restart, m.id)
        if cfg.partition_every and rng.random() < 1 / cfg.partition_every:
            if self.groups:
                self.groups = {}
                self.trace("heal partition", always=True)
            else:
                ids = [m.id for m in running]
                rng.shuffle(ids)
                kind = rng.random()
                if kind < 0.4:
                    lead = self.leader()
                    iso = [lead.id] if lead else ids[:1]
                else:
                    iso = ids[:rng.randint(1, max(1, len(ids) // 2))]
                self.groups = {i: 1 for i in iso}
                self.stats["partitions"] += 1
                self.trace(f"partition {[f'{i:x}' for i in iso]} from the rest", always=True)
                self.at(self.now + rng.randint(5, 80) * TICK, self._heal, self.stats["partitions"])
        if rng.random() < 0.01:
            self.extra_drop = rng.choice((0.0, 0.3, 0.6)) if self.extra_drop == 0 else 0.0
            self.trace(f"extra message loss {self.extra_drop}", always=True)
        if cfg.conf_every and rng.random() < 1 / cfg.conf_every:
            self.change_membership()
        if cfg.transfer_every and rng.random() < 1 / cfg.transfer_every:
            lead = self.leader()
            if lead is not None:
                others = [v for v in lead.core.voters if v != lead.id]
                if others:
                    to = rng.choice(sorted(others))
                    self.stats["transfers"] += 1
                    self.trace(f"transfer leadership {lead.id:x} -> {to:x}", always=True)
                    lead.core.transfer_leader(to)
                    self.after_core(lead)
                    lead.pump()

    def _downtime(self) -> int:
        if self.rng.random() < (0.8 if self.bug == "forget_vote" else 0.3):
            return self.rng.randint(1, 3 * TICK)          # a quick reboot
        return self.rng.randint(1, 60) * TICK

    def _heal(self, n: int) -> None:
        if self.stats["partitions"] == n and self.groups:
            self.groups = {}
            self.trace("heal partition", always=True)

    def _restart(self, nid: int) -> None:
        m = self.members[nid]
        if not m.alive and not m.removed:
            m.start()

    def change_membership(self) -> None:
        rng = self.rng
        if self.conf_pending is not None and self.now < self.conf_pending[1]:
            return
        lead = self.leader()
        if lead is None:
            return
        voters = sorted(lead.core.voters)
        learners = sorted(lead.core.learners)
        choices = []
        if len(voters) + len(learners) < 6:
            choices.append("add_learner")
        if learners:
            choices += ["promote", "remove_learner"]
        if len(voters) > 3 or (len(voters) > 1 and rng.random() < 0.3):
            choices.append("remove_voter")
        if len(voters) < 3 and len(voters) + len(learners) < 6:
            choices.append("add_voter")
        if not choices:
            return
        what = rng.choice(choices)
        if what in ("add_learner", "add_voter"):
            nid = self.next_id
            self.next_id += 1
            cc = ConfChange(CONF_ADD_LEARNER_NODE if what == "add_learner" else CONF_ADD_NODE, nid)
        elif what == "promote":
            cc = ConfChange(CONF_ADD_NODE, rng.choice(learners))
        elif what == "remove_learner":
            cc = ConfChange(CONF_REMOVE_NODE, rng.choice(learners))
        else:
            cands = [v for v in voters if v != lead.id] if rng.random() < 0.8 else voters
            cc = ConfChange(CONF_REMOVE_NODE, rng.choice(cands))
        cc.id = self.next_op
        self.next_op += 1
        try:
            lead.core.propose_conf_change(cc)
        except Exception as exc:
            if type(exc).__name__ not in ("ErrProposalDropped", "ErrConfChangePending",
                                          "ErrNotLeader"):
                raise
            self.trace(f"conf change {what} refused: {type(exc).__name__}")
            return
        self.stats["conf_changes"] += 1
        self.trace(f"propose {what} {cc.node_id:x} at {lead.id:x}", always=True)
        self.conf_pending = (cc, self.now + 100 * TICK)
        if what in ("add_learner", "add_voter"):
            # the new member starts empty and learns everything from the leader
            m = Member(self, cc.node_id, Disk(self, cc.node_id))
            m.tick_period = TICK + rng.randint(-1, 1)
            self.members[cc.node_id] = m
            m.start()
        self.after_core(lead)
        lead.pump()

    def conf_applied(self, m: Member, cc: ConfChange, index: int) -> None:
        if self.conf_pending is not None and self.conf_pending[0].id == cc.id:
            self.conf_pending = None
        self.trace(f"{m.id:x} applies conf change {cc.type} {cc.node_id:x} at {index}: "
                   f"{m.conf_state}")
        if cc.type == CONF_REMOVE_NODE and cc.node_id == m.id and not m.removed:
            # the member learned it is removed: it stops (etcd's server does), a bit later
            self.at(self.now + self.rng.randint(1, 20) * TICK, self._stop_removed, m.id)

    def _stop_removed(self, nid: int) -> None:
        m = self.members[nid]
        if m.removed:
            return
        if m.alive and nid in m.conf_state.voters + m.conf_state.learners:
            return     # re-added since
        m.crash("stop removed member")
        m.removed = True

    # -- the run
    def setup(self) -> None:
        cfg, rng = self.cfg, self.rng
        ids = list(range(1, cfg.nodes + 1))
        self.next_id = cfg.nodes + 1
        boot = [Entry(1, i + 1, ENTRY_CONF_CHANGE, ConfChange(CONF_ADD_NODE, nid).encode())
                for i, nid in enumerate(ids)]
        for nid in ids:
            d = Disk(self, nid)
            d.entries = list(boot)
            d.hs = HardState(1, 0, len(ids))
            self.check_durable_entries(nid, 0, boot)
            m = Member(self, nid, d)
            m.tick_period = TICK + rng.randint(-1, 1)
            self.members[nid] = m
        for m in self.members.values():
            m.start()
        for cid in range(cfg.clients):
            self.client_busy[cid] = None
            self.at(rng.randint(1, 5 * TICK), self.client_step, cid)
        self.at(TICK, self.nemesis)

    def run_until(self, t_end: int, stop=None) -> None:
        q = self._q
        budget = (self.cfg.ticks + self.cfg.heal_ticks) * 300
        while q and q[0][0] <= t_end:
            t, _, fn, args = heapq.heappop(q)
            self.now = t
            fn(*args)
            self.events += 1
            if self.events > budget:
                self.storm()
            if stop is not None and stop():
                return
        self.now = max(self.now, t_end)

    def storm(self) -> None:
        """Far more events than a healthy cluster makes: say who talks to whom."""
        from collections import Counter
        recent = Counter()
        for t, _, fn, args in self._q:
            if fn == self._deliver:
                msg = args[0]
                recent[(M.MSG_NAMES.get(msg.type), msg.frm, msg.to, msg.reject)] += 1
        top = ", ".join(f"{n}x {k[0]}{' reject' if k[3] else ''} {k[1]:x}->{k[2]:x}"
                        for k, n in recent.most_common(4))
        members = "; ".join(f"{m.id:x}: {m.core.status()}" for m in self.members.values()
                            if m.alive and hasattr(m.core, "status"))
        self.fail(f"liveness: message storm ({self.events} events by tick "
                  f"{self.now // TICK}; in flight: {top}); members: {members}")

    def converged(self) -> bool:
        lead = self.leader()
        if lead is None:
            return False
        for m in self.members.values():
            if m.removed or not m.alive:
                continue
            if m.id not in lead.core.voters and m.id not in lead.core.learners:
                continue
            if m.sm.applied < lead.core.commit or m.sm.applied < lead.sm.applied:
                return False
        return lead.sm.applied >= max(self.committed, default=0) and not any(
            c is not None for c in self.client_busy.values())

    def run(self) -> Result:
        cfg = self.cfg
        self.stop_clients_at = 1 << 62
        try:
            self.setup()
            self.run_until(cfg.ticks * TICK)
            # quiet period: no more faults; everything heals and restarts
            self.faults = False
            self.groups = {}
            self.extra_drop = 0.0
            self.cfg.p_drop = 0.0
            self.trace("faults stop; heal and restart everything", always=True)
            for m in self.members.values():
                if not m.alive and not m.removed:
                    m.start()
            self.stop_clients_at = self.now + 40 * TICK
            t_end = self.now + cfg.heal_ticks * TICK
            self.run_until(self.stop_clients_at)
            self.run_until(t_end, stop=self.converged)
            for cop in [c for c in self.client_busy.values() if c is not None]:
                self.indeterminate(cop, "run ended")
            self.final_checks(converged=self.converged())
        except Violation as v:
            return self._result(False, str(v))
        return self._result(True)

    def final_checks(self, converged: bool) -> None:
        alive = [m for m in self.members.values() if m.alive and not m.removed]
        best = max(alive, key=lambda m: m.sm.applied, default=None)
        if best is not None:
            self.check_state_hash(best, "final")
            for op in self.acked_writes:
                if op.id not in best.sm.results:
                    self.fail(f"acknowledged write lost: {op} is not in the final state of "
                              f"{best.id:x} (applied {best.sm.applied})")
        lin = check(self.resolved_history())
        if not lin.ok:
            self.fail("client history " + lin.report)
        if not converged:
            lead = self.leader()
            state = ", ".join(f"{m.id:x}:{'up' if m.alive else 'down'}"
                              f"{'/' + m.core.state + ' t' + str(m.core.term) if m.alive else ''}"
                              f" applied {m.sm.applied}"
                              for m in self.members.values() if not m.removed)
            self.fail(f"liveness: no stable leader with every member caught up "
                      f"{self.cfg.heal_ticks} ticks after the faults stopped (leader "
                      f"{lead.id if lead else None}; {state})")

    def resolved_history(self) -> list[Op]:
        """The client history, with what the simulator saw resolving indeterminate writes:
        one some member applied took effect by the time it was first applied, with the
        result the state machine gave; one nobody applied by the end never happened
        (if a read saw its value anyway, the checker says so). Reads never change state."""
        out = []
        for op in self.history:
            if op.status == "info" and op.kind != "get":
                seen = self.applied_ops.get(op.id)
                if seen is None:
                    op = dataclasses.replace(op, status="fail")
                else:
                    op = dataclasses.replace(op, status="ok", complete=seen[0], result=seen[1])
            out.append(op)
        return out

    def _result(self, ok: bool, why: str = "") -> Result:
        if ok:
            return Result(self.seed, True, "", self.stats, list(self._trace))
        bug = f" --bug {self.bug}" if self.bug else ""
        extra = self.scale / seed_scale(self.seed)
        scale = f" --scale {extra:g}" if extra != 1.0 else ""
        sets = getattr(self, "overrides", "")
        msg = (f"seed {self.seed}: {why}\n"
               f"  reproduce: python tests/raft/sim.py --seed {self.seed}{scale}{bug}{sets} -v\n"
               + ("" if self.bug or scale or sets else
                  f"         or: python -m pytest tests/raft/test_simulation.py -k 'seed_{self.seed}'\n")
               + f"  (op times are sim units: 1 tick = {TICK}; the trace below is in ticks)\n"
               f"  config: {self.cfg}\n"
               f"  at t={self.now / TICK:.1f} ticks; last events:\n    "
               + "\n    ".join(list(self._trace)[-40:]))
        return Result(self.seed, False, msg, self.stats, list(self._trace))


def run_seed(seed: int, bug: str | None = None, verbose: bool = False, scale: float = 1.0,
             cfg: Config | None = None, **overrides) -> Result:
    """Run one seed; never raises for a property violation (see Result.ok / .message).
    Exceptions from the core (crashes) are reported as failures too, with the seed.
    ``overrides``: Config fields to force (after the seed drew the rest)."""
    sim = Sim(seed, cfg=cfg, bug=bug, verbose=verbose, scale=scale)
    for k, v in overrides.items():
        setattr(sim.cfg, k, v)
    sim.overrides = "".join(f" --set {k}={v!r}" for k, v in overrides.items())
    try:
        return sim.run()
    except Exception as exc:  # a crash in the core or the sim: still give the seed
        import traceback
        tb = traceback.format_exc()
        res = sim._result(False, f"exception {type(exc).__name__}: {exc}")
        res.message += "\n" + tb
        return res


def seed_scale(seed: int) -> float:
    """Most seeds are short; every 10th runs 3x longer."""
    return 3.0 if seed % 10 == 0 else 1.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, help="run this one seed")
    ap.add_argument("--seeds", type=int, default=1, help="how many seeds (from --start)")
    ap.add_argument("--start", type=int, default=1)
    ap.add_argument("--scale", type=float, default=None,
                    help="run length multiplier (on top of every 10th seed's 3x)")
    ap.add_argument("--bug", choices=BUG_MODES)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="force a Config field, e.g. --set merged_snapshots=False --set nodes=5")
    ap.add_argument("-v", "--verbose", action="store_true", help="print the trace")
    ap.add_argument("--max-failures", type=int, default=5)
    args = ap.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else range(args.start, args.start + args.seeds)
    overrides = {}
    for kv in args.set:
        k, _, v = kv.partition("=")
        if k not in Config.__dataclass_fields__:
            ap.error(f"--set: no Config field {k!r}")
        overrides[k] = eval(v, {})  # noqa: S307  (a test tool's command line)
    failures = 0
    t0 = time.monotonic()
    n = 0
    for seed in seeds:
        scale = seed_scale(seed) * (args.scale if args.scale is not None else 1.0)
        res = run_seed(seed, bug=args.bug, verbose=args.verbose, scale=scale, **overrides)
        n += 1
        if args.verbose:
            print("\n".join(res.trace))
        if res.ok:
            if args.verbose or args.seed is not None:
                print(f"seed {seed}: ok {res.stats}")
        else:
            failures += 1
            print(res.message, flush=True)
            if failures >= args.max_failures:
                break
    dt = time.monotonic() - t0
    print(f"{n} seeds, {failures} failed, {dt:.1f}s", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
