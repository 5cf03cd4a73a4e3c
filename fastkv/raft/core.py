"""The Raft state machine: no I/O, no clock, no asyncio (ARCHITECTURE principle 1).

The driver (node.py) calls ``propose``/``tick``, takes a :class:`Ready` (hard
state and entries to persist, committed entries to apply), does the I/O, and
calls ``advance``. The contract is etcd raft's Ready/Advance.

This core runs the one-voter configuration that a single member is: it elects
itself at the next term on its first tick, appends the leader's empty entry,
and commits an entry once its own fsync reported it durable (the leader counts
itself in the quorum only after persisting). Elections, replication and
membership between several members are the Raft cluster work; their messages
plug into ``step`` there.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from fastkv.errors import ErrNotLeader, StorageCorruption
from fastkv.raft.log import RaftLog
from fastkv.storage.wal import Entry, HardState

ENTRY_NORMAL = 0

FOLLOWER, CANDIDATE, LEADER = "follower", "candidate", "leader"


@dataclass
class Ready:
    hardstate: HardState | None = None              # to persist, when it changed
    entries: list[Entry] = field(default_factory=list)            # to persist
    committed_entries: list[Entry] = field(default_factory=list)  # to apply, in order

    def __bool__(self) -> bool:
        return bool(self.hardstate or self.entries or self.committed_entries)


class RaftCore:
    def __init__(self, member_id: int, voters: list[int], log: RaftLog,
                 hardstate: HardState, applied: int):
        if voters != [member_id]:
            raise ValueError("this Raft core drives a one-voter configuration "
                             f"(voters={voters}, member={member_id})")
        if hardstate.commit > log.last_index:
            # etcd raft panics here too: entries the member once committed are gone.
            raise StorageCorruption(
                f"raft: commit index {hardstate.commit} is beyond the last log index "
                f"{log.last_index}: the log lost committed entries (was it truncated or "
                f"corrupted?); refusing to start")
        self.id = member_id
        self.voters = voters
        self.log = log
        self.term = hardstate.term
        self.vote = hardstate.vote
        self.commit = max(hardstate.commit, log.snapshot_index)
        self.applied = applied
        self.state = FOLLOWER
        self.lead = 0
        self.stable = log.last_index      # last index known durable
        self._term_start = 0              # index of this leader's first (empty) entry
        self._prev_hs = HardState(self.term, self.vote, self.commit)

    # ---- inputs ------------------------------------------------------------------

    def tick(self) -> None:
        """One heartbeat interval passed. A lone voter that is not leader campaigns."""
        if self.state != LEADER:
            self.campaign()

    def campaign(self) -> None:
        self.term += 1
        self.vote = self.id
        self.state = CANDIDATE
        # One voter: our own vote is a quorum (counted once the vote is persisted,
        # which happens in the same Ready as the leader's first entry).
        self._become_leader()

    def _become_leader(self) -> None:
        self.state = LEADER
        self.lead = self.id
        self._term_start = self.log.append_new(self.term, ENTRY_NORMAL, b"")

    def propose(self, data: bytes) -> int:
        """Append a client entry; returns its index. Only the leader accepts proposals."""
        if self.state != LEADER:
            raise ErrNotLeader()
        return self.log.append_new(self.term, ENTRY_NORMAL, data)

    # ---- Ready / Advance -----------------------------------------------------------

    def has_ready(self) -> bool:
        return (self.log.last_index > self.stable or min(self.commit, self.stable) > self.applied
                or self._hardstate_changed())

    def _hardstate_changed(self) -> bool:
        hs = self._prev_hs
        return hs.term != self.term or hs.vote != self.vote or hs.commit != self.commit

    def ready(self) -> Ready:
        rd = Ready()
        if self._hardstate_changed():
            rd.hardstate = HardState(self.term, self.vote, self.commit)
        if self.log.last_index > self.stable:
            rd.entries = self.log.slice(self.stable + 1, self.log.last_index)
        # Never hand out an entry for applying that is not durable here.
        upto = min(self.commit, self.stable)
        if upto > self.applied:
            rd.committed_entries = self.log.slice(self.applied + 1, upto)
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver persisted rd's entries and hard state and applied its committed entries."""
        if rd.hardstate is not None:
            self._prev_hs = rd.hardstate
        if rd.entries:
            self.stable = max(self.stable, rd.entries[-1].index)
        if rd.committed_entries:
            self.applied = rd.committed_entries[-1].index
        self._maybe_commit()

    def _maybe_commit(self) -> None:
        # Commit by counting only entries of the current term (Raft §5.4.2): with one
        # voter, once our first entry of this term is durable, all durable entries are.
        if self.state == LEADER and self.stable >= self._term_start > 0 and self.stable > self.commit:
            self.commit = self.stable

    def compact(self, index: int) -> None:
        """A snapshot now covers the log up to index."""
        self.log.compact(min(index, self.applied))

    @property
    def is_leader(self) -> bool:
        return self.state == LEADER
