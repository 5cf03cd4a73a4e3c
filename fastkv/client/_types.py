"""The typed results of :mod:`fastkv.client`: frozen dataclasses and enums.

Keys and values are always ``bytes`` in results; ``.text`` (and ``.key_text``)
decode them as UTF-8 for convenience.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Iterator, Union

__all__ = [
    "Header", "KeyValue", "EventType", "Event", "PutResult", "RangeResult", "DeleteResult",
    "TxnResult", "LeaseGrant", "LeaseInfo", "Member", "MemberAddResult", "Status", "AlarmType",
    "Alarm", "HashKV", "PermType", "Permission", "User", "Role", "WatchResponse",
    "SortOrder", "SortTarget",
]


class SortOrder(enum.IntEnum):
    """How ``range()`` sorts (etcd's RangeRequest.SortOrder)."""
    NONE = 0
    ASCEND = 1
    DESCEND = 2


class SortTarget(enum.IntEnum):
    """What ``range()`` sorts by (etcd's RangeRequest.SortTarget)."""
    KEY = 0
    VERSION = 1
    CREATE = 2
    MOD = 3
    VALUE = 4


class EventType(enum.IntEnum):
    PUT = 0
    DELETE = 1


class AlarmType(enum.IntEnum):
    NONE = 0
    NOSPACE = 1
    CORRUPT = 2


class PermType(enum.IntEnum):
    READ = 0
    WRITE = 1
    READWRITE = 2


@dataclass(frozen=True, slots=True)
class Header:
    """The response header every answer carries: which cluster and member answered,
    the store revision when it was served and the Raft term."""
    cluster_id: int
    member_id: int
    revision: int
    raft_term: int


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key with its value and its revision bookkeeping."""
    key: bytes
    value: bytes
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    lease: int = 0

    @property
    def text(self) -> str:
        """The value decoded as UTF-8."""
        return self.value.decode()

    @property
    def key_text(self) -> str:
        """The key decoded as UTF-8."""
        return self.key.decode()


@dataclass(frozen=True, slots=True)
class Event:
    """One change seen by a watch. For a DELETE, ``kv`` holds the key and the
    deletion's revision only; ``prev_kv`` is the pair before the change when the
    watch asked for it (``prev_kv=True``)."""
    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None = None

    @property
    def key(self) -> bytes:
        return self.kv.key

    @property
    def value(self) -> bytes:
        return self.kv.value

    @property
    def revision(self) -> int:
        """The revision of the change (``kv.mod_revision``)."""
        return self.kv.mod_revision

    @property
    def is_put(self) -> bool:
        return self.type == EventType.PUT

    @property
    def is_delete(self) -> bool:
        return self.type == EventType.DELETE


@dataclass(frozen=True, slots=True)
class PutResult:
    header: Header
    prev_kv: KeyValue | None = None

    @property
    def revision(self) -> int:
        """The revision of this put."""
        return self.header.revision


@dataclass(frozen=True, slots=True)
class RangeResult:
    """The keys found (iterate it, ``len()`` it, index it), ``count`` (all keys in
    the range, before ``limit``) and ``more`` (``limit`` cut the answer short)."""
    header: Header
    kvs: tuple[KeyValue, ...] = ()
    count: int = 0
    more: bool = False

    @property
    def revision(self) -> int:
        """The store revision the range was served at."""
        return self.header.revision

    def __iter__(self) -> Iterator[KeyValue]:
        return iter(self.kvs)

    def __len__(self) -> int:
        return len(self.kvs)

    def __getitem__(self, i):
        return self.kvs[i]

    def keys(self) -> list[bytes]:
        return [kv.key for kv in self.kvs]

    def to_dict(self) -> dict[bytes, bytes]:
        """``{key: value}`` of the keys found."""
        return {kv.key: kv.value for kv in self.kvs}


@dataclass(frozen=True, slots=True)
class DeleteResult:
    header: Header
    deleted: int = 0
    prev_kvs: tuple[KeyValue, ...] = ()

    @property
    def revision(self) -> int:
        return self.header.revision


@dataclass(frozen=True, slots=True)
class TxnResult:
    """``succeeded``: every comparison held (the ``then`` branch ran); ``responses``:
    one result per operation of the branch that ran, in order (RangeResult,
    PutResult, DeleteResult or TxnResult)."""
    header: Header
    succeeded: bool
    responses: tuple["OpResult", ...] = ()

    @property
    def revision(self) -> int:
        return self.header.revision

    def __iter__(self):
        return iter(self.responses)

    def __len__(self) -> int:
        return len(self.responses)

    def __getitem__(self, i):
        return self.responses[i]


OpResult = Union[RangeResult, PutResult, DeleteResult, TxnResult]


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """A granted lease: its ``id`` and the ``ttl`` (seconds) the server gave it."""
    header: Header
    id: int
    ttl: int


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """``lease_time_to_live()``: remaining ``ttl`` (-1 when the lease is gone),
    ``granted_ttl`` and, when asked for, the attached ``keys``."""
    header: Header
    id: int
    ttl: int
    granted_ttl: int
    keys: tuple[bytes, ...] = ()

    @property
    def alive(self) -> bool:
        return self.ttl > 0


@dataclass(frozen=True, slots=True)
class Member:
    """A cluster member. ``name`` and ``client_urls`` are empty until it has started."""
    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool = False


@dataclass(frozen=True, slots=True)
class MemberAddResult:
    header: Header
    member: Member
    members: tuple[Member, ...]


@dataclass(frozen=True, slots=True)
class Status:
    """``status()`` of one member."""
    header: Header
    version: str
    db_size: int
    leader: int
    raft_index: int
    raft_term: int
    raft_applied_index: int
    errors: tuple[str, ...] = ()
    db_size_in_use: int = 0
    is_learner: bool = False

    @property
    def member_id(self) -> int:
        """The member that answered."""
        return self.header.member_id

    @property
    def is_leader(self) -> bool:
        """This member is the leader."""
        return self.leader != 0 and self.leader == self.header.member_id


@dataclass(frozen=True, slots=True)
class Alarm:
    member_id: int
    alarm: AlarmType


@dataclass(frozen=True, slots=True)
class HashKV:
    header: Header
    hash: int
    compact_revision: int


@dataclass(frozen=True, slots=True)
class Permission:
    """A role's permission on the key range [key, range_end) (``range_end`` empty:
    the key alone; ``b"\\0"``: every key from ``key`` on)."""
    type: PermType
    key: bytes
    range_end: bytes = b""


@dataclass(frozen=True, slots=True)
class User:
    name: str
    roles: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    permissions: tuple[Permission, ...]


@dataclass(frozen=True, slots=True)
class WatchResponse:
    """One batch of a watch: ``events`` (possibly empty: a progress notification),
    ``header`` (``revision``: the store revision when it was sent)."""
    header: Header
    events: tuple[Event, ...] = field(default=())

    @property
    def revision(self) -> int:
        return self.header.revision

    @property
    def is_progress_notify(self) -> bool:
        """No events: the server says every change up to ``revision`` was sent."""
        return not self.events

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)
