"""A tiny synchronous network of Raft cores for scenario tests (etcd raft_test.go's
``network``). Not the simulator (tests/raft/sim.py): no clock, no disk, no reordering;
messages are delivered in FIFO order the moment they are sent, and every Ready is
"persisted" at once. Enough to tell a story of the cluster step by step.

    nw = Network(3)                   # members 1, 2, 3, all voters
    nw.elect(1)                       # 1 campaigns and wins
    nw.propose(1, b"x")               # deliver until quiet
    nw.isolate(3); nw.recover()       # partitions
    nw.drop(MSG_APP, frm=1, to=2)     # or nw.filters.append(fn)
"""
from __future__ import annotations

import random

from fastkv.raft.core import RaftCore
from fastkv.raft.log import RaftLog
from fastkv.raft.messages import (CONF_ADD_LEARNER_NODE, CONF_ADD_NODE, ENTRY_CONF_CHANGE,
                                  MSG_HUP, MSG_SNAP, MSG_SNAP_STATUS, ConfChange, ConfState,
                                  Message, SnapshotMeta)
from fastkv.storage.wal import Entry, HardState


def new_core(mid, voters=(), learners=(), *, log=None, hs=None, applied=0, seed=None,
             **kw) -> RaftCore:
    kw.setdefault("election_tick", 10)
    kw.setdefault("heartbeat_tick", 1)
    return RaftCore(mid, log if log is not None else RaftLog(), hs or HardState(), applied,
                    ConfState(list(voters), list(learners)),
                    rng=random.Random(seed if seed is not None else mid), **kw)


def ents(*terms, start=1, data=b""):
    """Entries with the given terms at indexes start, start+1, ..."""
    return [Entry(t, start + i, 0, data) for i, t in enumerate(terms)]


def drain(core: RaftCore) -> list:
    """Play a driver that persists and applies instantly; return the Readys handled."""
    out = []
    while core.has_ready():
        rd = core.ready()
        for e in rd.committed_entries:
            if e.type == ENTRY_CONF_CHANGE:
                core.apply_conf_change(ConfChange.decode(e.data))
        core.advance(rd)
        out.append(rd)
    return out


class Network:
    def __init__(self, n: int | list = 3, *, learners=(), seed: int = 1, bootstrap=False,
                 **kw):
        """n members 1..n (or the given list of ids; None in it = a member that is not
        there: a black hole). Extra keyword arguments go to every RaftCore.
        bootstrap: start like a new etcd cluster (StartNode): an empty configuration and
        a log of committed CONF_ADD_NODE entries, one per member, that the driver
        applies; otherwise the configuration is given to the cores directly."""
        ids = list(range(1, n + 1)) if isinstance(n, int) else list(n)
        self.kw = kw
        self.peers: dict[int, RaftCore | None] = {}
        self.applied: dict[int, list[Entry]] = {}       # what each member's driver applied
        self.read_states: dict[int, list] = {}
        self.readys: dict[int, list] = {}                # every Ready, per member
        self.filters: list = []                          # fn(msg) -> bool (True: drop)
        self.cut_pairs: set[tuple[int, int]] = set()
        self.delivered: list[Message] = []               # everything that reached a member
        self.snap_status = True                          # report MSG_SNAP_STATUS like a transport
        self.rng = random.Random(seed)
        voters = [i for i in ids if i is not None]
        if bootstrap:
            boot = [Entry(1, k + 1, ENTRY_CONF_CHANGE,
                          ConfChange(CONF_ADD_LEARNER_NODE if v in learners else CONF_ADD_NODE,
                                     v).encode()) for k, v in enumerate(voters)]
            for i in voters:
                self.add_core(new_core(i, log=RaftLog(entries=boot),
                                       hs=HardState(1, 0, len(boot)), seed=seed * 1000 + i,
                                       **kw))
                self.collect(i)
            return
        for i in voters:
            self.add_core(new_core(i, [v for v in voters if v not in learners],
                                   [v for v in voters if v in learners],
                                   seed=seed * 1000 + i, **kw))

    # ---- membership of the test network -----------------------------------------------

    def add_core(self, core: RaftCore) -> RaftCore:
        self.peers[core.id] = core
        self.applied.setdefault(core.id, [])
        self.read_states.setdefault(core.id, [])
        self.readys.setdefault(core.id, [])
        return core

    def __getitem__(self, mid: int) -> RaftCore:
        return self.peers[mid]

    def leader(self) -> RaftCore | None:
        leaders = [c for c in self.peers.values() if c is not None and c.is_leader]
        return max(leaders, key=lambda c: c.term) if leaders else None

    # ---- faults ---------------------------------------------------------------------------

    def cut(self, a: int, b: int) -> None:
        self.cut_pairs |= {(a, b), (b, a)}

    def isolate(self, a: int) -> None:
        for b in self.peers:
            if b != a:
                self.cut(a, b)

    def recover(self) -> None:
        self.cut_pairs.clear()
        self.filters.clear()

    def drop(self, mtype=None, frm=None, to=None, rate: float = 1.0):
        def f(m):
            return ((mtype is None or m.type == mtype) and (frm is None or m.frm == frm)
                    and (to is None or m.to == to) and self.rng.random() < rate)
        self.filters.append(f)
        return f

    def _dropped(self, m: Message) -> bool:
        if (m.frm, m.to) in self.cut_pairs:
            return True
        return any(f(m) for f in self.filters)

    # ---- driving ------------------------------------------------------------------------------

    def collect(self, mid: int) -> list[Message]:
        """Run member mid's driver until it has nothing to do; return its messages."""
        core = self.peers[mid]
        out = []
        while core.has_ready():
            rd = core.ready()
            self.readys[mid].append(rd)
            if rd.snapshot is not None:
                self._install_snapshot(mid, rd.snapshot)
            for e in rd.committed_entries:
                if e.type == ENTRY_CONF_CHANGE:
                    core.apply_conf_change(ConfChange.decode(e.data))
            self.applied[mid].extend(rd.committed_entries)
            self.read_states[mid].extend(rd.read_states)
            core.advance(rd)
            out.extend(rd.messages)
        return out

    def _install_snapshot(self, mid: int, meta: SnapshotMeta) -> None:
        # The "state" of a test member is its applied entries: a snapshot at index k is
        # the applied entries up to k of whoever made it (all members agree on those).
        for other, entries in self.applied.items():
            if other != mid and entries and entries[-1].index >= meta.index:
                self.applied[mid] = [e for e in entries if e.index <= meta.index]
                return
        self.applied[mid] = [e for e in self.applied[mid] if e.index <= meta.index]

    def send(self, *msgs: Message) -> None:
        """Deliver messages, and whatever they cause, until the network is quiet."""
        queue = list(msgs)
        for mid, core in list(self.peers.items()):
            if core is not None:
                queue.extend(self.collect(mid))
        while queue:
            m = queue.pop(0)
            core = self.peers.get(m.to)
            if core is None or self._dropped(m):
                if m.type == MSG_SNAP and self.snap_status and self.peers.get(m.frm):
                    self.peers[m.frm].step(Message(MSG_SNAP_STATUS, frm=m.to, reject=True))
                    queue.extend(self.collect(m.frm))
                continue
            self.delivered.append(m)
            core.step(m)
            queue.extend(self.collect(m.to))
            if m.type == MSG_SNAP and self.snap_status and self.peers.get(m.frm):
                self.peers[m.frm].step(Message(MSG_SNAP_STATUS, frm=m.to))
                queue.extend(self.collect(m.frm))

    def stabilize(self) -> None:
        self.send()

    def elect(self, mid: int) -> RaftCore:
        self.send(Message(MSG_HUP, to=mid, frm=mid))
        return self.peers[mid]

    def propose(self, mid: int, data: bytes):
        idx = self.peers[mid].propose(data)
        self.send()
        return idx

    def tick(self, mid: int | None = None, n: int = 1) -> None:
        """Tick one member (or all) n times, delivering after each tick."""
        ids = [mid] if mid is not None else [i for i, c in self.peers.items() if c is not None]
        for _ in range(n):
            for i in ids:
                self.peers[i].tick()
            self.send()

    def applied_data(self, mid: int) -> list[bytes]:
        return [e.data for e in self.applied[mid] if e.data and e.type == 0]


def read_messages(core: RaftCore) -> list[Message]:
    """Persist/apply everything pending (instantly) and return the messages to send."""
    return [m for rd in drain(core) for m in rd.messages]


def msg(mtype, frm, to, term, **kw) -> Message:
    return Message(mtype, to=to, frm=frm, term=term, **kw)
