"""What the leader knows of each member's log (etcd raft's tracker.Progress).

A follower is in one of three states:

* probe: the leader does not know where the follower's log ends; it sends one
  MSG_APP at a time and waits for the answer (or a heartbeat response) before
  the next, backing off ``next`` on each rejection;
* replicate: the follower accepted an append, so the leader streams entries
  optimistically (``next`` moves on at send time), at most ``max_inflight``
  messages unacknowledged;
* snapshot: the follower needs entries the leader compacted; a snapshot is on
  its way and nothing else is sent until the transport reports (MSG_SNAP_STATUS)
  or the follower answers.
"""
from __future__ import annotations

from collections import deque

PROBE, REPLICATE, SNAPSHOT = "StateProbe", "StateReplicate", "StateSnapshot"


class Progress:
    __slots__ = ("match", "next", "state", "pending_snapshot", "recent_active",
                 "probe_sent", "inflights", "max_inflight", "is_learner")

    def __init__(self, next_index: int, max_inflight: int, *, match: int = 0,
                 is_learner: bool = False, recent_active: bool = False):
        self.match = match
        self.next = next_index
        self.state = PROBE
        self.pending_snapshot = 0
        self.recent_active = recent_active
        self.probe_sent = False
        self.inflights: deque[int] = deque()   # last index of each unacknowledged MSG_APP
        self.max_inflight = max_inflight
        self.is_learner = is_learner

    def __repr__(self) -> str:
        return (f"<Progress {self.state} match={self.match} next={self.next}"
                f"{' learner' if self.is_learner else ''}"
                f"{' inflight=%d' % len(self.inflights) if self.inflights else ''}"
                f"{' paused' if self.is_paused() else ''}>")

    # ---- state transitions ----------------------------------------------------------

    def _reset_state(self, state: str) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.clear()

    def become_probe(self) -> None:
        # After a snapshot, probe from just after it: the follower should have it now.
        if self.state == SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(SNAPSHOT)
        self.pending_snapshot = snapshot_index

    # ---- acknowledgements --------------------------------------------------------------

    def maybe_update(self, n: int) -> bool:
        """The follower acknowledged entries up to n. Returns whether match moved."""
        updated = False
        if self.match < n:
            self.match = n
            updated = True
            self.probe_sent = False
        if self.next < n + 1:
            self.next = n + 1
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """The follower rejected an append at index ``rejected`` and hints that its log may
        match ours up to ``match_hint``. Returns False if the rejection is stale."""
        if self.state == REPLICATE:
            if rejected <= self.match:
                return False          # stale: that index was acknowledged already
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False              # stale: not the probe we are waiting for
        # Not clamped to match + 1 (as etcd 3.4): a follower whose disk lost entries it
        # had acknowledged must be backed up and repaired, not probed at the same
        # index forever (the simulator's ack_before_persist mode found that storm).
        self.next = max(min(rejected, match_hint + 1), 1)
        self.probe_sent = False
        return True

    # ---- flow control --------------------------------------------------------------------

    def is_paused(self) -> bool:
        state = self.state
        if state == REPLICATE:
            return len(self.inflights) >= self.max_inflight
        if state == PROBE:
            return self.probe_sent
        return True

    def inflight_full(self) -> bool:
        return len(self.inflights) >= self.max_inflight

    def sent_entries(self, last: int) -> None:
        """A MSG_APP with entries up to ``last`` went out."""
        if self.state == REPLICATE:
            self.next = last + 1
            self.inflights.append(last)
        elif self.state == PROBE:
            self.probe_sent = True

    def free_le(self, index: int) -> None:
        """Acknowledged up to index: those messages are no longer in flight."""
        q = self.inflights
        while q and q[0] <= index:
            q.popleft()

    def free_first_one(self) -> None:
        if self.inflights:
            self.inflights.popleft()

    def as_dict(self) -> dict:
        return {"match": self.match, "next": self.next, "state": self.state,
                "learner": self.is_learner, "recent_active": self.recent_active,
                "inflight": len(self.inflights), "pending_snapshot": self.pending_snapshot}
