"""The cluster's membership: who the members are, as replicated through the log.

Membership changes travel as ENTRY_CONF_CHANGE entries (fastkv.raft.messages
.ConfChange) whose context is this module's encoding of the member; each
member's name and client URLs ("attributes") are published after it starts as
an ordinary entry (requests.MEMBER_ATTR), as etcd's publish does. A member
with published attributes is "started" (etcd's IsStarted), which the strict
reconfiguration check counts.

Every member applies the same entries in the same order, so every member has
the same membership at the same index; it is part of every snapshot.
"""
from __future__ import annotations

import hashlib
import marshal
import struct
from dataclasses import dataclass, field

from fastkv.errors import (ErrMemberExist, ErrMemberNotFound, ErrMemberNotLearner,
                           ErrPeerURLExist, ErrTooManyLearners, EtcdError)

from fastkv.identity import member_id
from fastkv.raft.messages import (CONF_ADD_LEARNER_NODE, CONF_ADD_NODE, CONF_REMOVE_NODE,
                                  CONF_UPDATE_NODE, ENTRY_CONF_CHANGE, ConfChange, ConfState)
from fastkv.storage.wal import Entry

MAX_LEARNERS = 1  # etcd 3.4's limit


class ErrIDRemoved(ErrMemberNotFound):
    """A removed member never comes back under its ID. v3 answers "member not found"
    (as etcd's togRPCError); v2 answers 410 "Member permanently removed"."""


def new_member_id(peer_urls: list[str], cluster_token: str, now: float | None = None) -> int:
    """etcd's NewMember: SHA-1 over the sorted peer URLs, the token and, for a member
    added at run time, the time (so re-adding the same URLs gives a new ID)."""
    b = "".join(sorted(peer_urls)).encode() + cluster_token.encode()
    if now is not None:
        b += str(int(now)).encode()
    return struct.unpack(">Q", hashlib.sha1(b).digest()[:8])[0]


@dataclass
class Member:
    id: int
    name: str = ""
    peer_urls: list[str] = field(default_factory=list)
    client_urls: list[str] = field(default_factory=list)
    is_learner: bool = False

    @property
    def started(self) -> bool:
        return bool(self.name)

    def to_state(self) -> tuple:
        return (self.id, self.name, list(self.peer_urls), list(self.client_urls), self.is_learner)

    @classmethod
    def from_state(cls, t) -> "Member":
        mid, name, peers, clients, learner = t
        return cls(mid, name, list(peers), list(clients), bool(learner))

    def v3(self) -> dict:
        """etcdserverpb.Member as the JSON gateway shows it (names as in rpc.proto)."""
        d = {"ID": self.id, "name": self.name, "peerURLs": list(self.peer_urls),
             "clientURLs": list(self.client_urls)}
        if self.is_learner:
            d["isLearner"] = True
        return d

    def v2(self) -> dict:
        return {"id": f"{self.id:x}", "name": self.name, "peerURLs": list(self.peer_urls),
                "clientURLs": list(self.client_urls)}


def encode_context(member: Member, promote: bool = False) -> bytes:
    return marshal.dumps({"member": member.to_state(), "promote": promote}, 4)


def decode_context(data: bytes) -> tuple[Member, bool]:
    d = marshal.loads(data)
    return Member.from_state(d["member"]), bool(d.get("promote"))


class Membership:
    def __init__(self):
        self.members: dict[int, Member] = {}
        self.removed: set[int] = set()

    # ---- reading ------------------------------------------------------------------

    def sorted_members(self) -> list[Member]:
        return [self.members[i] for i in sorted(self.members)]

    def get(self, member_id: int) -> Member | None:
        return self.members.get(member_id)

    def voting(self) -> list[Member]:
        return [m for m in self.sorted_members() if not m.is_learner]

    def conf_state(self) -> ConfState:
        ms = self.sorted_members()
        return ConfState([m.id for m in ms if not m.is_learner], [m.id for m in ms if m.is_learner])

    def peer_url_owner(self, url: str) -> int:
        for m in self.members.values():
            if url in m.peer_urls:
                return m.id
        return 0

    # ---- etcd's checks ---------------------------------------------------------------

    def validate(self, cc: ConfChange) -> EtcdError | None:
        """etcd's ValidateConfigurationChange: the same answer on every member."""
        if cc.node_id in self.removed:
            return ErrIDRemoved()
        if cc.type in (CONF_ADD_NODE, CONF_ADD_LEARNER_NODE):
            try:
                member, promote = decode_context(cc.context)
            except Exception:
                return ErrMemberNotFound()
            if promote:
                m = self.members.get(cc.node_id)
                if m is None:
                    return ErrMemberNotFound()
                if not m.is_learner:
                    return ErrMemberNotLearner()
                return None
            if cc.node_id in self.members:
                return ErrMemberExist()
            for u in member.peer_urls:
                if self.peer_url_owner(u):
                    return ErrPeerURLExist()
            if member.is_learner and sum(m.is_learner for m in self.members.values()) >= MAX_LEARNERS:
                return ErrTooManyLearners()
        elif cc.type == CONF_REMOVE_NODE:
            if cc.node_id not in self.members:
                return ErrMemberNotFound()
        elif cc.type == CONF_UPDATE_NODE:
            if cc.node_id not in self.members:
                return ErrMemberNotFound()
            try:
                member, _ = decode_context(cc.context)
            except Exception:
                return ErrMemberNotFound()
            for u in member.peer_urls:
                owner = self.peer_url_owner(u)
                if owner and owner != cc.node_id:
                    return ErrPeerURLExist()
        else:
            return ErrMemberNotFound()
        return None

    def ready_to_add_voter(self) -> bool:
        """IsReadyToAddVotingMember: after the add, started voters keep a quorum."""
        voters = self.voting()
        nmembers = len(voters) + 1
        nstarted = sum(m.started for m in voters)
        if nstarted == 1 and nmembers == 2:
            return True
        return nstarted >= nmembers // 2 + 1

    def ready_to_remove_voter(self, member_id: int) -> bool:
        voters = [m for m in self.voting() if m.id != member_id]
        nstarted = sum(m.started for m in voters)
        return nstarted >= len(voters) // 2 + 1

    def ready_to_promote(self, member_id: int) -> bool:
        voters = self.voting()
        nmembers = len(voters) + 1
        nstarted = sum(m.started for m in voters) + 1
        return nstarted >= nmembers // 2 + 1

    # ---- applying (every member, in log order) --------------------------------------

    def apply(self, cc: ConfChange) -> None:
        """Apply a change that validate() accepted."""
        if cc.type in (CONF_ADD_NODE, CONF_ADD_LEARNER_NODE):
            member, promote = decode_context(cc.context)
            if promote:
                self.members[cc.node_id].is_learner = False
            else:
                member.id = cc.node_id
                self.members[cc.node_id] = member
        elif cc.type == CONF_REMOVE_NODE:
            del self.members[cc.node_id]
            self.removed.add(cc.node_id)
        elif cc.type == CONF_UPDATE_NODE:
            member, _ = decode_context(cc.context)
            self.members[cc.node_id].peer_urls = list(member.peer_urls)

    def set_attributes(self, member_id: int, name: str, client_urls: list[str]) -> bool:
        m = self.members.get(member_id)
        if m is None:
            return False  # removed meanwhile: etcd ignores it too
        m.name = name
        m.client_urls = list(client_urls)
        return True

    # ---- snapshots -------------------------------------------------------------------

    def snapshot_state(self) -> dict:
        return {"members": [m.to_state() for m in self.sorted_members()],
                "removed": sorted(self.removed)}

    @classmethod
    def from_snapshot_state(cls, state: dict) -> "Membership":
        ms = cls()
        for t in state.get("members", ()):
            m = Member.from_state(t)
            ms.members[m.id] = m
        ms.removed = set(state.get("removed", ()))
        return ms


# ---- a new cluster's first entries ----------------------------------------------------------

BOOTSTRAP_TERM = 1  # the term of a new cluster's first entries (etcd's StartNode)


def initial_members(initial_cluster: dict, token: str) -> list[Member]:
    """The members of a new cluster, by ID, as a fresh member bootstraps them (not yet
    started: no name or client URLs until each publishes its own)."""
    members = [Member(member_id(urls, token), "", list(urls))
               for _name, urls in initial_cluster.items()]
    return sorted(members, key=lambda m: m.id)


def bootstrap_entries(members: list[Member]) -> list[Entry]:
    """A new cluster's first log entries: one committed conf change per member."""
    return [Entry(BOOTSTRAP_TERM, i + 1, ENTRY_CONF_CHANGE,
                  ConfChange(CONF_ADD_NODE, m.id, encode_context(m)).encode())
            for i, m in enumerate(members)]
