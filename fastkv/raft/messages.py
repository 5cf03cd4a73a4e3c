"""What the Raft core exchanges with its driver and with its peers.

These are plain data, shared by the core (raft/core.py), the asyncio driver
(raft/node.py), the peer transport and its frame codec (raft/transport.py,
csrc/peercodec.pyx) and the deterministic simulator (tests/raft/sim.py).
Names follow etcd's raftpb so a reader of etcd raft finds their way.
"""
from __future__ import annotations

import marshal
from dataclasses import dataclass, field

from fastkv.storage.wal import Entry, HardState  # noqa: F401  (re-exported)

# ---- entry types -------------------------------------------------------------------

ENTRY_NORMAL = 0        # data: an encoded request (fastkv.requests), b"" for a leader's no-op
ENTRY_CONF_CHANGE = 1   # data: an encoded ConfChange

# ---- message types (etcd raftpb.MessageType names; our own numbering) -----------------

MSG_HUP = 0             # local: start an election (pre-vote first when enabled)
MSG_BEAT = 1            # local: leader sends heartbeats
MSG_PROP = 2            # a proposal: follower -> leader forwarding; entries carry the data
MSG_APP = 3             # AppendEntries
MSG_APP_RESP = 4
MSG_VOTE = 5
MSG_VOTE_RESP = 6
MSG_SNAP = 7            # InstallSnapshot: msg.snapshot is the SnapshotMeta; data travels beside
MSG_HEARTBEAT = 8       # context: a ReadIndex round's context, or b""
MSG_HEARTBEAT_RESP = 9
MSG_UNREACHABLE = 10    # local: the transport could not deliver to msg.frm
MSG_SNAP_STATUS = 11    # local: the transport finished (reject=False) or failed (True) a snapshot
MSG_CHECK_QUORUM = 12   # local
MSG_TRANSFER_LEADER = 13  # frm = the transferee
MSG_TIMEOUT_NOW = 14    # leader -> transferee: campaign now, skipping pre-vote
MSG_READ_INDEX = 15     # entries[0].data = the read's context
MSG_READ_INDEX_RESP = 16
MSG_PRE_VOTE = 17
MSG_PRE_VOTE_RESP = 18

MSG_NAMES = {v: k for k, v in list(globals().items()) if k.startswith("MSG_") and isinstance(v, int)}

# Messages that are only ever local (never on the wire).
LOCAL_MESSAGES = frozenset({MSG_HUP, MSG_BEAT, MSG_UNREACHABLE, MSG_SNAP_STATUS,
                            MSG_CHECK_QUORUM})


@dataclass
class ConfState:
    voters: list[int] = field(default_factory=list)
    learners: list[int] = field(default_factory=list)


@dataclass
class SnapshotMeta:
    """Which state a snapshot holds. The state itself is a snapshot file
    (storage/snapshot.py) that the transport streams beside the message."""
    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass
class Message:
    type: int
    to: int = 0
    frm: int = 0
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: list[Entry] = field(default_factory=list)
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""
    snapshot: SnapshotMeta | None = None

    def __repr__(self) -> str:  # short, for logs and failing simulator seeds
        t = MSG_NAMES.get(self.type, self.type)
        extra = f" ents={len(self.entries)}" if self.entries else ""
        if self.reject:
            extra += f" reject hint={self.reject_hint}"
        if self.snapshot:
            extra += f" snap={self.snapshot.index}@{self.snapshot.term}"
        return (f"<{t} {self.frm:x}->{self.to:x} t{self.term} lt{self.log_term} "
                f"i{self.index} c{self.commit}{extra}>")


# ---- membership changes ------------------------------------------------------------

CONF_ADD_NODE = 0          # add a voter, or promote a learner that is already a member
CONF_REMOVE_NODE = 1
CONF_UPDATE_NODE = 2       # peer URLs changed: no change of the voter set
CONF_ADD_LEARNER_NODE = 3


@dataclass
class ConfChange:
    type: int
    node_id: int
    context: bytes = b""   # the member's description (fastkv.membership), opaque to Raft
    id: int = 0            # the request id whose waiter hears the outcome

    def encode(self) -> bytes:
        return marshal.dumps((self.type, self.node_id, self.context, self.id), 4)

    @classmethod
    def decode(cls, data: bytes) -> "ConfChange":
        t, node, ctx, rid = marshal.loads(data)
        if not (isinstance(t, int) and isinstance(node, int) and isinstance(ctx, bytes)
                and isinstance(rid, int)):
            raise ValueError("malformed conf change")
        return cls(t, node, ctx, rid)


# ---- Ready ---------------------------------------------------------------------------

FOLLOWER, PRE_CANDIDATE, CANDIDATE, LEADER = "StateFollower", "StatePreCandidate", \
    "StateCandidate", "StateLeader"


@dataclass
class ReadState:
    """A ReadIndex round finished: reads with this context may be served once
    the applied index reaches ``index``."""
    index: int
    context: bytes


@dataclass
class Ready:
    """What the driver must do, in this order: persist ``snapshot`` (install the
    file's state), ``hardstate`` and ``entries`` (one WAL write + fdatasync);
    send ``messages`` (a leader may send before its own fsync finishes; a
    follower or candidate only after); apply ``committed_entries``; then call
    ``advance(rd)``. ``lead``/``state`` are the soft state at the time of ready()."""
    hardstate: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: SnapshotMeta | None = None
    committed_entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    lead: int = 0
    state: str = FOLLOWER

    def __bool__(self) -> bool:
        return bool(self.hardstate or self.entries or self.snapshot or self.committed_entries
                    or self.messages or self.read_states)
