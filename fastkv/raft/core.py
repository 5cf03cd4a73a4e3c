"""The Raft state machine: no I/O, no clock, no asyncio (ARCHITECTURE principle 1).

It follows etcd's raft library (go.etcd.io/raft) rule for rule, and keeps its
names where it can so that a reader of raft.go finds their way:

* inputs: ``tick()`` (one heartbeat interval), ``step(msg)`` (a peer's message or
  a local one), ``propose``, ``propose_conf_change``, ``read_index``,
  ``transfer_leader``, ``campaign``;
* output: ``ready()`` hands the driver (raft/node.py) what to persist, send and
  apply; ``advance(rd)`` says it was done. Randomness comes only from the
  injected ``rng``.

Persist before you promise (principle 2): a follower's or candidate's messages
leave only after its Ready is persisted (the driver's part); the leader sends in
parallel with its own WAL write but counts itself in the commit quorum only with
``stable``, the last index its ``advance`` reported durable. Entries are handed
out for applying only up to ``min(commit, stable)``.

Sending is lazy: a proposal, a commit or an acknowledgement marks the peers that
need a MSG_APP, and ``ready()`` builds one message per peer from everything new
(up to ``max_msg_bytes``), so one loop turn's proposals become one AppendEntries
per follower. ReadIndex heartbeat rounds are coalesced the same way.

The other modules: progress.py (per-follower replication state and in-flight
window), quorum.py (majorities), readindex.py (pending ReadIndex requests),
confchange.py (single-step membership changes), log.py (the in-memory log).
"""
from __future__ import annotations

import logging
import random

from fastkv.errors import ErrConfChangePending, ErrProposalDropped, StorageCorruption
from fastkv.raft import confchange, quorum
from fastkv.raft.log import RaftLog
from fastkv.raft.messages import (
    CANDIDATE, ENTRY_CONF_CHANGE, ENTRY_NORMAL, FOLLOWER, LEADER, MSG_APP, MSG_APP_RESP,
    MSG_BEAT, MSG_CHECK_QUORUM, MSG_HEARTBEAT, MSG_HEARTBEAT_RESP, MSG_HUP, MSG_PRE_VOTE,
    MSG_PRE_VOTE_RESP, MSG_PROP, MSG_READ_INDEX, MSG_READ_INDEX_RESP, MSG_SNAP,
    MSG_SNAP_STATUS, MSG_TIMEOUT_NOW, MSG_TRANSFER_LEADER, MSG_UNREACHABLE, MSG_VOTE,
    MSG_VOTE_RESP, PRE_CANDIDATE, ConfChange, ConfState, Message, Ready, ReadState,
    SnapshotMeta)
from fastkv.raft.progress import PROBE, REPLICATE, SNAPSHOT, Progress
from fastkv.raft.readindex import ReadOnly
from fastkv.storage.wal import Entry, HardState

log = logging.getLogger("fastkv.raft")

__all__ = ["RaftCore", "Ready", "ReadState", "FOLLOWER", "PRE_CANDIDATE", "CANDIDATE",
           "LEADER", "CAMPAIGN_TRANSFER"]

# The context of a leader transfer's vote requests: followers grant them even inside
# their leader lease (etcd's campaignTransfer).
CAMPAIGN_TRANSFER = b"CampaignTransfer"
_PRE_ELECTION, _ELECTION, _TRANSFER = 0, 1, 2

_KNOWN_TYPES = frozenset(range(MSG_HUP, MSG_PRE_VOTE_RESP + 1))
# Messages that may come without a term: the local ones, and the ones etcd forwards
# to the leader without a term (proposals, ReadIndex, a transfer request).
_TERMLESS = frozenset({MSG_HUP, MSG_BEAT, MSG_CHECK_QUORUM, MSG_UNREACHABLE, MSG_SNAP_STATUS,
                       MSG_PROP, MSG_READ_INDEX, MSG_TRANSFER_LEADER})
_VOTES = (MSG_VOTE, MSG_PRE_VOTE)


def _well_formed(m) -> bool:
    """Cheap shape checks for input that came off the wire (never raise on it)."""
    if not isinstance(m, Message):
        return False
    t = m.type
    if type(t) is not int or t not in _KNOWN_TYPES:
        return False
    for v in (m.term, m.index, m.log_term, m.commit, m.frm, m.to, m.reject_hint):
        if type(v) is not int or v < 0:
            return False
    ents = m.entries
    if ents:
        if type(ents) is not list:
            return False
        if t == MSG_APP:
            first, last = ents[0], ents[-1]
            if not (isinstance(first, Entry) and isinstance(last, Entry)
                    and first.index == m.index + 1 and last.index == m.index + len(ents)
                    and type(first.term) is int and type(last.term) is int
                    and m.log_term <= first.term and last.term <= m.term):
                return False
    if t == MSG_SNAP:
        s = m.snapshot
        if not (isinstance(s, SnapshotMeta) and type(s.index) is int and type(s.term) is int
                and s.index > 0 and isinstance(s.conf_state, ConfState)):
            return False
    if type(m.context) is not bytes:
        return False
    return True


class RaftCore:
    def __init__(self, member_id: int, log: RaftLog, hardstate: HardState, applied: int,
                 conf_state: ConfState | None = None, *, rng: random.Random,
                 election_tick: int = 10, heartbeat_tick: int = 1, pre_vote: bool = True,
                 check_quorum: bool = True, max_inflight: int = 256,
                 max_msg_bytes: int = 1 << 20, snapshot: SnapshotMeta | None = None):
        if member_id <= 0:
            raise ValueError("raft: member id must be positive")
        if heartbeat_tick <= 0 or election_tick <= heartbeat_tick:
            raise ValueError(f"raft: election tick ({election_tick}) must be greater than "
                             f"heartbeat tick ({heartbeat_tick}) > 0")
        if max_inflight <= 0:
            raise ValueError("raft: max_inflight must be positive")
        if hardstate.commit > log.last_index:
            # etcd raft panics here too: entries the member once committed are gone.
            raise StorageCorruption(
                f"raft: commit index {hardstate.commit} is beyond the last log index "
                f"{log.last_index}: the log lost committed entries (was it truncated or "
                f"corrupted?); refusing to start")
        if applied > log.last_index:
            raise StorageCorruption(
                f"raft: applied index {applied} is beyond the last log index {log.last_index}")
        self.id = member_id
        self.log = log
        self.rng = rng
        self.election_tick = election_tick
        self.heartbeat_tick = heartbeat_tick
        self.pre_vote = pre_vote
        self.check_quorum = check_quorum
        self.max_inflight = max_inflight
        self.max_msg_bytes = max(1, max_msg_bytes)

        self.term = hardstate.term
        self.vote = hardstate.vote
        self.commit = max(hardstate.commit, log.snapshot_index, applied)
        self.applied = max(applied, log.snapshot_index)
        self.stable = log.last_index          # what we were given is durable
        self._snapshot = snapshot             # the latest snapshot file's metadata
        self._pending_snapshot: SnapshotMeta | None = None  # received, not yet persisted
        self._prev_hs = HardState(self.term, self.vote, self.commit)

        cs = conf_state or ConfState()
        self._voters: set[int] = set(cs.voters)
        self._learners: set[int] = set(cs.learners) - self._voters
        nxt = log.last_index + 1
        self.progress: dict[int, Progress] = {
            m: Progress(nxt, max_inflight, is_learner=m in self._learners)
            for m in self._voters | self._learners}

        self.state = FOLLOWER
        self.lead = 0
        self.lead_transferee = 0
        self.pending_conf_index = 0
        self._term_start = 0                  # index of this leader's first (empty) entry
        self._votes: dict[int, bool] = {}
        self.read_only = ReadOnly()
        self._pending_reads: list[Message] = []   # waiting for a commit in our term
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        # Lazy sending (flushed by ready()): the peers that need a MSG_APP (new entries
        # or a new commit index), and whether a ReadIndex heartbeat round is due.
        self._dirty: set[int] = set()
        self._read_round = False
        self._ecache: list[Entry] = []        # this Ready's new entries, shared with MSG_APPs
        self._ecache_lo = 0

        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = election_tick
        self._become_follower(self.term, 0)

    # ---- properties ---------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.state == LEADER

    @property
    def voters(self) -> list[int]:
        return sorted(self._voters)

    @property
    def learners(self) -> list[int]:
        return sorted(self._learners)

    @property
    def conf_state(self) -> ConfState:
        return confchange.conf_state(self._voters, self._learners)

    @property
    def snapshot(self) -> SnapshotMeta | None:
        return self._snapshot

    def promotable(self) -> bool:
        return self.id in self._voters

    # ---- state changes --------------------------------------------------------------------

    def _reset_randomized_election_timeout(self) -> None:
        et = self.election_tick
        self.randomized_election_timeout = et + self.rng.randrange(et)

    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = 0
        self.lead = 0
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_election_timeout()
        self.lead_transferee = 0
        self._votes = {}
        nxt = self.log.last_index + 1
        mi = self.max_inflight
        me = self.id
        for m, pr in self.progress.items():
            new = Progress(nxt, mi, is_learner=pr.is_learner)
            if m == me:
                new.match = self.stable
                new.recent_active = True
            self.progress[m] = new
        self.pending_conf_index = 0
        self._term_start = 0
        self.read_only = ReadOnly()
        self._pending_reads = []
        self._dirty.clear()
        self._read_round = False

    def _become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self.lead = lead
        self.state = FOLLOWER

    def _become_pre_candidate(self) -> None:
        # No term change and no vote: a pre-candidate only asks whether it could win.
        self._votes = {}
        self.lead = 0
        self.state = PRE_CANDIDATE

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.state = CANDIDATE

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.lead = self.id
        self.state = LEADER
        pr = self.progress.get(self.id)
        if pr is not None:
            pr.become_replicate()
            pr.match = self.stable
            pr.recent_active = True
        # Conservatively, any entry in the log might be an unapplied conf change.
        self.pending_conf_index = self.log.last_index
        self._term_start = self.log.append_new(self.term, ENTRY_NORMAL, b"")
        if pr is not None:
            pr.next = self._term_start + 1
        self._mark_all()
        log.info("raft: %x became leader at term %d", self.id, self.term)

    # ---- inputs: tick --------------------------------------------------------------------

    def tick(self) -> None:
        if self.state == LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.election_elapsed >= self.randomized_election_timeout and self.promotable():
            self.election_elapsed = 0
            self.step(Message(MSG_HUP, frm=self.id))

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.election_tick:
            self.election_elapsed = 0
            if self.check_quorum:
                self.step(Message(MSG_CHECK_QUORUM, frm=self.id))
            if self.state == LEADER and self.lead_transferee:
                self._abort_leader_transfer()
        if self.state != LEADER:
            return
        if self.heartbeat_elapsed >= self.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self.step(Message(MSG_BEAT, frm=self.id))

    # ---- inputs: local API -----------------------------------------------------------------

    def campaign(self) -> None:
        self.step(Message(MSG_HUP, frm=self.id))

    def propose(self, data: bytes) -> int | None:
        """Leader: append and return the index. Follower: forward to the leader, None."""
        return self._propose(ENTRY_NORMAL, data)

    def propose_conf_change(self, cc: ConfChange) -> int | None:
        return self._propose(ENTRY_CONF_CHANGE, cc.encode())

    def _propose(self, etype: int, data: bytes) -> int | None:
        if self.state == LEADER:
            if self.lead_transferee:
                raise ErrProposalDropped()
            if self.id not in self.progress:
                raise ErrProposalDropped()   # removed from the configuration
            if etype == ENTRY_CONF_CHANGE:
                if self.pending_conf_index > self.applied:
                    raise ErrConfChangePending()
            idx = self.log.append_new(self.term, etype, data)
            if etype == ENTRY_CONF_CHANGE:
                self.pending_conf_index = idx
            if len(self._dirty) < len(self.progress) - 1:
                self._mark_all()
            return idx
        if self.state != FOLLOWER or not self.lead:
            raise ErrProposalDropped()
        # Forward; the proposals of one loop turn travel in one MSG_PROP.
        ent = Entry(0, 0, etype, data)
        msgs = self.msgs
        if msgs:
            last = msgs[-1]
            if last.type == MSG_PROP and last.to == self.lead:
                last.entries.append(ent)
                return None
        msgs.append(Message(MSG_PROP, to=self.lead, frm=self.id, entries=[ent]))
        return None

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read point; the answer is a ReadState(index, context)
        in a later Ready. Raises ErrProposalDropped when no leader is known."""
        if self.state != LEADER and (self.state != FOLLOWER or not self.lead):
            raise ErrProposalDropped()
        self.step(Message(MSG_READ_INDEX, frm=self.id, entries=[Entry(0, 0, 0, context)]))

    def transfer_leader(self, to: int) -> None:
        self.step(Message(MSG_TRANSFER_LEADER, frm=to, to=self.id))

    # ---- inputs: step -------------------------------------------------------------------------

    def step(self, m: Message) -> None:
        """Process one message. Stale, unknown or malformed ones are dropped."""
        if not _well_formed(m):
            log.debug("raft: %x dropped a malformed message %r", self.id, m)
            return
        t = m.type
        if m.term == 0:
            if t not in _TERMLESS:
                return
        elif m.term > self.term:
            if t in _VOTES:
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = (self.check_quorum and self.lead != 0
                            and self.election_elapsed < self.election_tick)
                if not force and in_lease:
                    # We heard from a leader within the election timeout: ignore it
                    # (the leader lease), so a rejoining member cannot disrupt.
                    return
            if t == MSG_PRE_VOTE:
                pass                   # never change our term for a pre-vote
            elif t == MSG_PRE_VOTE_RESP and not m.reject:
                pass                   # granted for our future term; counted below
            elif t == MSG_APP or t == MSG_HEARTBEAT or t == MSG_SNAP:
                self._become_follower(m.term, m.frm)
            else:
                self._become_follower(m.term, 0)
        elif m.term < self.term:
            if (self.check_quorum or self.pre_vote) and (t == MSG_HEARTBEAT or t == MSG_APP):
                # A member with a stale term (e.g. after a partition): answering lets it
                # learn our term; otherwise, with check-quorum or pre-vote, it could
                # never win an election and never hear of ours.
                self.msgs.append(Message(MSG_APP_RESP, to=m.frm, frm=self.id, term=self.term))
            elif t == MSG_PRE_VOTE:
                self.msgs.append(Message(MSG_PRE_VOTE_RESP, to=m.frm, frm=self.id,
                                         term=self.term, reject=True))
            return

        if t == MSG_HUP:
            if self.pre_vote:
                self._hup(_PRE_ELECTION)
            else:
                self._hup(_ELECTION)
        elif t in _VOTES:
            self._handle_vote_request(m)
        elif self.state == LEADER:
            self._step_leader(m)
        elif self.state == FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _handle_vote_request(self, m: Message) -> None:
        can_vote = (self.vote == m.frm
                    or (self.vote == 0 and self.lead == 0)
                    or (m.type == MSG_PRE_VOTE and m.term > self.term))
        resp = MSG_VOTE_RESP if m.type == MSG_VOTE else MSG_PRE_VOTE_RESP
        if can_vote and m.frm and self.log.is_up_to_date(m.index, m.log_term):
            # Answer with the candidate's term: for a pre-vote that is our future term.
            self.msgs.append(Message(resp, to=m.frm, frm=self.id, term=m.term))
            if m.type == MSG_VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self.msgs.append(Message(resp, to=m.frm, frm=self.id, term=self.term, reject=True))

    # ---- elections ------------------------------------------------------------------------

    def _has_unapplied_conf_changes(self) -> bool:
        if self.applied >= self.commit:
            return False
        return self.log.has_conf_change(self.applied + 1, self.commit)

    def _hup(self, kind: int) -> None:
        if self.state == LEADER:
            return
        if not self.promotable():
            log.debug("raft: %x is not a voter; it does not campaign", self.id)
            return
        if self._has_unapplied_conf_changes():
            log.info("raft: %x cannot campaign at term %d: committed configuration "
                     "changes are not applied yet", self.id, self.term)
            return
        self._campaign(kind)

    def _campaign(self, kind: int) -> None:
        if kind == _PRE_ELECTION:
            self._become_pre_candidate()
            vote_type, term = MSG_PRE_VOTE, self.term + 1
        else:
            self._become_candidate()
            vote_type, term = MSG_VOTE, self.term
        if self._poll(self.id, True) == quorum.VOTE_WON:
            # A single voter wins at once.
            if kind == _PRE_ELECTION:
                self._campaign(_ELECTION)
            else:
                self._become_leader()
            return
        ctx = CAMPAIGN_TRANSFER if kind == _TRANSFER else b""
        li, lt = self.log.last_index, self.log.last_term
        for v in sorted(self._voters):
            if v != self.id:
                self.msgs.append(Message(vote_type, to=v, frm=self.id, term=term, index=li,
                                         log_term=lt, context=ctx))

    def _poll(self, member: int, granted: bool) -> int:
        if member not in self._votes:
            self._votes[member] = granted
        return quorum.vote_result(self._voters, self._votes)

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        my_resp = MSG_PRE_VOTE_RESP if self.state == PRE_CANDIDATE else MSG_VOTE_RESP
        if t == MSG_PROP:
            return                              # no leader: dropped
        if t == MSG_APP:
            self._become_follower(m.term, m.frm)
            self._handle_append_entries(m)
        elif t == MSG_HEARTBEAT:
            self._become_follower(m.term, m.frm)
            self._handle_heartbeat(m)
        elif t == MSG_SNAP:
            self._become_follower(m.term, m.frm)
            self._handle_snapshot(m)
        elif t == my_resp:
            res = self._poll(m.frm, not m.reject)
            if res == quorum.VOTE_WON:
                if self.state == PRE_CANDIDATE:
                    self._campaign(_ELECTION)
                else:
                    self._become_leader()
            elif res == quorum.VOTE_LOST:
                self._become_follower(self.term, 0)
        # MSG_TIMEOUT_NOW and anything else: ignored

    # ---- follower ------------------------------------------------------------------------------

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t == MSG_APP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_append_entries(m)
        elif t == MSG_HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_heartbeat(m)
        elif t == MSG_SNAP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_snapshot(m)
        elif t == MSG_PROP:
            if self.lead and m.entries:
                self.msgs.append(Message(MSG_PROP, to=self.lead, frm=m.frm,
                                         entries=m.entries))
        elif t == MSG_TRANSFER_LEADER:
            if self.lead:
                self.msgs.append(Message(MSG_TRANSFER_LEADER, to=self.lead, frm=m.frm,
                                         term=self.term))
        elif t == MSG_TIMEOUT_NOW:
            # The leader hands over: campaign at once, skipping pre-vote and the lease.
            self._hup(_TRANSFER)
        elif t == MSG_READ_INDEX:
            if self.lead and len(m.entries) == 1:
                self.msgs.append(Message(MSG_READ_INDEX, to=self.lead, frm=m.frm,
                                         entries=m.entries))
        elif t == MSG_READ_INDEX_RESP:
            if len(m.entries) == 1:
                self.read_states.append(ReadState(m.index, m.entries[0].data))

    def _handle_append_entries(self, m: Message) -> None:
        if m.index < self.commit:
            self.msgs.append(Message(MSG_APP_RESP, to=m.frm, frm=self.id, term=self.term,
                                     index=self.commit))
            return
        log_ = self.log
        ents = m.entries
        if log_.match_term(m.index, m.log_term):
            lastnew = m.index + len(ents)
            if ents:
                try:
                    terms = [e.term for e in ents]
                    types = [e.type for e in ents]
                    data = [e.data for e in ents]
                except AttributeError:
                    return
                ci = log_.find_conflict(m.index, terms)
                if ci:
                    if ci <= self.commit:
                        log.warning("raft: %x: append from %x conflicts with committed entry "
                                    "%d; dropped", self.id, m.frm, ci)
                        return
                    off = ci - m.index - 1
                    log_.truncate_and_append(ci - 1, terms[off:], types[off:], data[off:])
                    if self.stable >= ci:
                        self.stable = ci - 1
            c = min(m.commit, lastnew)
            if c > self.commit:
                self.commit = c
            self.msgs.append(Message(MSG_APP_RESP, to=m.frm, frm=self.id, term=self.term,
                                     index=lastnew))
        else:
            # Tell the leader where our logs might agree: the last index whose term is
            # <= the term the leader has at m.index (etcd's fast back-off).
            hint = min(m.index, log_.last_index)
            hint = log_.find_conflict_by_term(hint, m.log_term)
            hint_term = log_.term_or_none(hint) or 0
            self.msgs.append(Message(MSG_APP_RESP, to=m.frm, frm=self.id, term=self.term,
                                     index=m.index, reject=True, reject_hint=hint,
                                     log_term=hint_term))

    def _handle_heartbeat(self, m: Message) -> None:
        c = min(m.commit, self.log.last_index)
        if c > self.commit:
            self.commit = c
        self.msgs.append(Message(MSG_HEARTBEAT_RESP, to=m.frm, frm=self.id, term=self.term,
                                 context=m.context))

    def _handle_snapshot(self, m: Message) -> None:
        meta = m.snapshot
        if self._restore(meta):
            log.info("raft: %x installed snapshot %d@%d from %x", self.id, meta.index,
                     meta.term, m.frm)
            idx = self.log.last_index
        else:
            idx = self.commit
        self.msgs.append(Message(MSG_APP_RESP, to=m.frm, frm=self.id, term=self.term,
                                 index=idx))

    def _restore(self, meta: SnapshotMeta) -> bool:
        if meta.index <= self.commit:
            return False
        cs = meta.conf_state
        if self.id not in cs.voters and self.id not in cs.learners:
            log.warning("raft: %x ignores snapshot %d@%d: not in its configuration",
                        self.id, meta.index, meta.term)
            return False
        if self.log.match_term(meta.index, meta.term):
            # We have the snapshot's last entry: the log up to it is the same; just commit.
            self.commit = meta.index
            return False
        self.log.restore(meta.index, meta.term)
        self.commit = meta.index
        # The snapshot goes out in the next Ready and is persisted before anything after
        # it; entries are handed for applying only after it (see ready()).
        self.stable = meta.index
        self._pending_snapshot = meta
        if self._snapshot is None or self._snapshot.index < meta.index:
            self._snapshot = meta
        self._voters = set(cs.voters)
        self._learners = set(cs.learners) - self._voters
        nxt = meta.index + 1
        self.progress = {m: Progress(nxt, self.max_inflight, is_learner=m in self._learners)
                         for m in self._voters | self._learners}
        me = self.progress.get(self.id)
        if me is not None:
            me.match = meta.index
        return True

    # ---- leader -------------------------------------------------------------------------------

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t == MSG_BEAT:
            self._bcast_heartbeat(b"")
            return
        if t == MSG_CHECK_QUORUM:
            if not self._quorum_active():
                log.warning("raft: %x stepped down at term %d: no quorum heard from within "
                            "an election timeout", self.id, self.term)
                self._become_follower(self.term, 0)
                return
            for mid, pr in self.progress.items():
                if mid != self.id:
                    pr.recent_active = False
            return
        if t == MSG_PROP:
            self._leader_append_forwarded(m)
            return
        if t == MSG_READ_INDEX:
            if len(m.entries) != 1:
                return
            if not self._committed_entry_in_current_term():
                self._pending_reads.append(m)   # answered once our first entry commits
                return
            self._serve_read_index(m)
            return

        pr = self.progress.get(m.frm)
        if pr is None:
            return
        if t == MSG_APP_RESP:
            self._handle_append_response(m, pr)
        elif t == MSG_HEARTBEAT_RESP:
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state == REPLICATE and pr.inflight_full():
                pr.free_first_one()
            if pr.match < self.log.last_index:
                self._dirty.add(m.frm)
            if m.context:
                acks = self.read_only.recv_ack(m.frm, m.context)
                if acks is None or quorum.vote_result(self._voters, acks) != quorum.VOTE_WON:
                    return
                for rs in self.read_only.advance(m.context):
                    self._respond_read_index(rs.req, rs.index)
        elif t == MSG_SNAP_STATUS:
            if pr.state != SNAPSHOT:
                return
            if m.reject:
                pr.pending_snapshot = 0
            pr.become_probe()
            # Wait for the follower's answer (or a heartbeat response) before probing.
            pr.probe_sent = True
        elif t == MSG_UNREACHABLE:
            if pr.state == REPLICATE:
                pr.become_probe()
        elif t == MSG_TRANSFER_LEADER:
            if pr.is_learner:
                return
            transferee = m.frm
            if self.lead_transferee:
                if self.lead_transferee == transferee:
                    return
                self._abort_leader_transfer()
            if transferee == self.id:
                return
            log.info("raft: %x starts transferring leadership to %x at term %d", self.id,
                     transferee, self.term)
            # The transfer must finish within an election timeout.
            self.election_elapsed = 0
            self.lead_transferee = transferee
            if pr.match == self.log.last_index:
                self._send_timeout_now(transferee)
            else:
                self._dirty.add(transferee)

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        frm = m.frm
        if m.reject:
            hint = m.reject_hint
            if m.log_term > 0:
                hint = self.log.find_conflict_by_term(hint, m.log_term)
            if pr.maybe_decr_to(m.index, hint):
                if pr.state == REPLICATE:
                    pr.become_probe()
                self._dirty.add(frm)
            return
        if m.index > self.log.last_index:
            return                              # acknowledges what we never sent
        old_paused = pr.is_paused()
        if pr.maybe_update(m.index) or (pr.match == m.index and pr.state == PROBE):
            state = pr.state
            if state == PROBE:
                pr.become_replicate()
            elif state == SNAPSHOT:
                if pr.match + 1 >= self.log.first_index:
                    pr.become_probe()
                    pr.become_replicate()
            else:
                pr.free_le(m.index)
            if self._maybe_commit():
                self._on_commit()
            elif old_paused or pr.next <= self.log.last_index:
                self._dirty.add(frm)      # unpaused now, or more to send
            if frm == self.lead_transferee and pr.match == self.log.last_index:
                log.info("raft: %x sends MSG_TIMEOUT_NOW to %x: its log is up to date",
                         self.id, frm)
                self._send_timeout_now(frm)

    def _leader_append_forwarded(self, m: Message) -> None:
        if not m.entries or self.id not in self.progress or self.lead_transferee:
            return                              # dropped
        log_ = self.log
        term = self.term
        for e in m.entries:
            try:
                etype, data = e.type, e.data
            except AttributeError:
                continue
            if type(data) is not bytes:
                continue
            if etype == ENTRY_CONF_CHANGE:
                if self.pending_conf_index > self.applied:
                    # One change at a time: etcd replaces it with an empty entry.
                    log_.append_new(term, ENTRY_NORMAL, b"")
                else:
                    self.pending_conf_index = log_.append_new(term, etype, data)
            elif etype == ENTRY_NORMAL:
                log_.append_new(term, etype, data)
        self._mark_all()

    def _quorum_active(self) -> bool:
        votes = {}
        for mid, pr in self.progress.items():
            if not pr.is_learner:
                votes[mid] = pr.recent_active or mid == self.id
        return quorum.vote_result(self._voters, votes) == quorum.VOTE_WON

    def _committed_entry_in_current_term(self) -> bool:
        return self.log.term_or_none(self.commit) == self.term

    def _maybe_commit(self) -> bool:
        prs = self.progress
        me = self.id

        def match_of(v):
            if v == me:
                return self.stable
            pr = prs.get(v)
            return pr.match if pr is not None else 0

        mci = quorum.committed_index(self._voters, match_of)
        if mci > self.commit and mci <= self.log.last_index \
                and self.log.term_or_none(mci) == self.term:
            # Raft §5.4.2: only an entry of the current term commits by counting.
            self.commit = mci
            return True
        return False

    def _on_commit(self) -> None:
        self._mark_all()
        if self._pending_reads and self._committed_entry_in_current_term():
            pending, self._pending_reads = self._pending_reads, []
            for req in pending:
                self._serve_read_index(req)

    def _serve_read_index(self, m: Message) -> None:
        if len(self._voters) == 1 and self.id in self._voters:
            self._respond_read_index(m, self.commit)      # we alone are the quorum
            return
        if self.read_only.add_request(self.commit, m):
            self.read_only.recv_ack(self.id, m.entries[0].data)
            self._read_round = True                       # one heartbeat round, in ready()

    def _respond_read_index(self, req: Message, index: int) -> None:
        if req.frm == 0 or req.frm == self.id:
            self.read_states.append(ReadState(index, req.entries[0].data))
        else:
            self.msgs.append(Message(MSG_READ_INDEX_RESP, to=req.frm, frm=self.id,
                                     term=self.term, index=index, entries=req.entries))

    def _send_timeout_now(self, to: int) -> None:
        self.msgs.append(Message(MSG_TIMEOUT_NOW, to=to, frm=self.id, term=self.term))

    def _abort_leader_transfer(self) -> None:
        if self.lead_transferee:
            log.info("raft: %x aborts the leadership transfer to %x", self.id,
                     self.lead_transferee)
        self.lead_transferee = 0

    def _mark_all(self) -> None:
        self._dirty.update(self.progress)
        self._dirty.discard(self.id)

    # ---- sending (leader) ----------------------------------------------------------------------

    def _bcast_heartbeat(self, ctx: bytes) -> None:
        me = self.id
        commit = self.commit
        term = self.term
        for mid, pr in self.progress.items():
            if mid != me:
                self.msgs.append(Message(MSG_HEARTBEAT, to=mid, frm=me, term=term,
                                         commit=min(pr.match, commit), context=ctx))

    def _flush_sends(self) -> None:
        """Build the MSG_APPs marked since the last Ready: one per peer, as much as fits."""
        if self._read_round:
            self._read_round = False
            ctx = self.read_only.last_pending_ctx()
            if ctx is not None:
                self._bcast_heartbeat(ctx)
        dirty = self._dirty
        if not dirty:
            return
        me = self.id
        # As etcd's sendAppend: the first message goes even if empty (it carries the
        # commit index); more follow while there are entries and the window allows.
        for to in sorted(dirty):
            if to == me:
                continue
            empty_ok = True
            while self._maybe_send_append(to, empty_ok):
                empty_ok = False
        dirty.clear()

    def _maybe_send_append(self, to: int, send_if_empty: bool) -> bool:
        pr = self.progress.get(to)
        if pr is None or pr.is_paused():
            return False
        log_ = self.log
        prev = pr.next - 1
        prev_term = log_.term_or_none(prev)
        last = log_.last_index
        ents: list[Entry] = []
        if prev_term is not None and pr.next <= last:
            hi = log_.limit_bytes(pr.next, self.max_msg_bytes)
            lo = pr.next
            c = self._ecache
            clo = self._ecache_lo
            if c and lo >= clo and hi < clo + len(c):
                ents = c[lo - clo:hi - clo + 1]
            else:
                ents = log_.slice(lo, hi)
        elif prev_term is None and prev <= last:
            # The entries it needs are compacted away: send the snapshot.
            return self._send_snapshot(to, pr)
        if not ents and not send_if_empty:
            return False
        if prev_term is None:
            return False                        # next beyond our log: wait for a response
        self.msgs.append(Message(MSG_APP, to=to, frm=self.id, term=self.term, index=prev,
                                 log_term=prev_term, entries=ents, commit=self.commit))
        if ents:
            pr.sent_entries(ents[-1].index)
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            return False
        snap = self._snapshot
        if snap is None or snap.index < self.log.snapshot_index:
            log.warning("raft: %x needs to send a snapshot to %x but knows none at or after "
                        "index %d", self.id, to, self.log.snapshot_index)
            return False
        log.info("raft: %x sends snapshot %d@%d to %x (its next index %d is compacted)",
                 self.id, snap.index, snap.term, to, pr.next)
        pr.become_snapshot(snap.index)
        self.msgs.append(Message(MSG_SNAP, to=to, frm=self.id, term=self.term, snapshot=snap))
        return True

    # ---- membership -------------------------------------------------------------------------

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """The driver applies a committed ENTRY_CONF_CHANGE entry (also on replay)."""
        nxt = self.log.last_index + 1
        if not confchange.apply_change(self._voters, self._learners, self.progress, cc, nxt,
                                       self.max_inflight):
            return self.conf_state
        cs = self.conf_state
        me = self.progress.get(self.id)
        if self.state == LEADER and (me is None or me.is_learner):
            log.info("raft: %x was removed from the voters; it steps down", self.id)
            self._become_follower(self.term, 0)
            return cs
        if self.state != LEADER or not self._voters:
            return cs
        if self._maybe_commit():
            self._on_commit()
        else:
            self._mark_all()
        if self.lead_transferee and self.lead_transferee not in self._voters:
            self._abort_leader_transfer()
        return cs

    # ---- snapshots and compaction -------------------------------------------------------------

    def set_snapshot(self, meta: SnapshotMeta) -> None:
        """A snapshot file now exists at meta.index (the newest)."""
        if self._snapshot is None or meta.index >= self._snapshot.index:
            self._snapshot = meta

    def compact(self, index: int) -> None:
        """Forget log entries <= index (no further than applied, nor past the latest
        snapshot when one was set)."""
        index = min(index, self.applied)
        if self._snapshot is not None:
            index = min(index, self._snapshot.index)
        if index > self.log.snapshot_index:
            self.log.compact(index)

    # ---- Ready / Advance ---------------------------------------------------------------------------

    def _hardstate_changed(self) -> bool:
        hs = self._prev_hs
        return hs.term != self.term or hs.vote != self.vote or hs.commit != self.commit

    def has_ready(self) -> bool:
        if self.msgs or self.read_states or self._pending_snapshot is not None:
            return True
        if self.log.last_index > self.stable or min(self.commit, self.stable) > self.applied:
            return True
        if self.state == LEADER and (self._dirty or self._read_round):
            return True
        return self._hardstate_changed()

    def ready(self) -> Ready:
        """What to do now: persist, send, apply (see messages.Ready). Call advance(rd) after."""
        log_ = self.log
        rd = Ready()
        last = log_.last_index
        if last > self.stable:
            rd.entries = log_.slice(self.stable + 1, last)
        if self.state == LEADER:
            self._ecache, self._ecache_lo = rd.entries, self.stable + 1
            self._flush_sends()
            self._ecache = []
        if self._pending_snapshot is not None:
            rd.snapshot = self._pending_snapshot
        if self._hardstate_changed():
            rd.hardstate = HardState(self.term, self.vote, self.commit)
        # Never hand out an entry for applying that is not durable here.
        upto = min(self.commit, self.stable)
        if upto > self.applied:
            rd.committed_entries = log_.slice(self.applied + 1, upto)
        if self.msgs:
            rd.messages, self.msgs = self.msgs, []
        if self.read_states:
            rd.read_states, self.read_states = self.read_states, []
        rd.lead = self.lead
        rd.state = self.state
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver persisted rd's snapshot, hard state and entries, and applied its
        committed entries."""
        if rd.hardstate is not None:
            self._prev_hs = rd.hardstate
        if rd.snapshot is not None:
            if self._pending_snapshot is rd.snapshot:
                self._pending_snapshot = None
            if self.log.snapshot_index >= rd.snapshot.index:
                if rd.snapshot.index > self.applied:
                    self.applied = rd.snapshot.index
                if rd.snapshot.index > self.stable:
                    self.stable = rd.snapshot.index
        if rd.entries:
            e = rd.entries[-1]
            # Only if the log still holds that entry (no truncation or snapshot since).
            if e.index > self.stable and self.log.match_term(e.index, e.term):
                self.stable = e.index
        if rd.committed_entries:
            a = rd.committed_entries[-1].index
            if a > self.applied:
                self.applied = a
        if self.state == LEADER:
            pr = self.progress.get(self.id)
            if pr is not None and pr.match < self.stable:
                pr.match = self.stable
            if self._maybe_commit():
                self._on_commit()

    # ---- status --------------------------------------------------------------------------------

    def status(self) -> dict:
        st = {"id": self.id, "term": self.term, "vote": self.vote, "commit": self.commit,
              "applied": self.applied, "stable": self.stable, "lead": self.lead,
              "state": self.state, "voters": self.voters, "learners": self.learners,
              "first_index": self.log.first_index, "last_index": self.log.last_index,
              "lead_transferee": self.lead_transferee,
              "pending_conf_index": self.pending_conf_index,
              "snapshot_index": self._snapshot.index if self._snapshot else 0}
        if self.state == LEADER:
            st["progress"] = {mid: pr.as_dict() for mid, pr in self.progress.items()}
        return st

    def __repr__(self) -> str:
        return (f"<RaftCore {self.id:x} {self.state} t{self.term} lead={self.lead:x} "
                f"commit={self.commit} applied={self.applied} last={self.log.last_index}>")
