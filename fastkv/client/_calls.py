"""What :class:`~fastkv.client.Client` and :class:`~fastkv.client.AsyncClient`
share, written once: their state and constructor (:class:`ClientCore`) and their unary
calls (:class:`UnaryCalls`).

Each method builds its request with the sans-IO layer (``_requests``) and hands it to
the client's ``_invoke`` (failover, retries, token refresh), returning what that
returns: the result for the blocking Client, a coroutine for the AsyncClient.
:class:`AsyncUnaryCalls` turns each into a coroutine function (``async def``), so
``await client.put(...)`` and ``inspect.iscoroutinefunction`` work as for any asyncio
API. The calls with more to them (leases kept alive, watches, snapshots, moving the
leader) are in sync.py and aio.py.
"""
from __future__ import annotations

import functools
import threading
import time
from typing import Iterable

from fastkv.proto.etcdserverpb import rpc_pb2 as pb

from . import _requests as R
from . import errors
from ._requests import KeyLike
from ._types import (Alarm, AlarmType, DeleteResult, HashKV, KeyValue, LeaseGrant, LeaseInfo,
                     Member, MemberAddResult, PermType, PutResult, RangeResult, Role, SortOrder,
                     SortTarget, Status, TxnResult, User)

__all__ = ["ClientCore", "UnaryCalls", "AsyncUnaryCalls"]

_UNSET = object()   # "the client's timeout" (None is "no deadline")


class ClientCore:
    """The endpoints, connections (made on first use), timeout and credentials of a
    client. A subclass names its connection class (``_conn_class``: one endpoint's
    channel and stubs) and the lock its authentication takes (``_lock_class``)."""

    _conn_class: type
    _lock_class: type

    def __init__(self, endpoints: str | Iterable[str] = R.DEFAULT_ENDPOINT, *,
                 timeout: float | None = R.DEFAULT_TIMEOUT, user: str | None = None,
                 password: str | None = None, ca_file: str | None = None,
                 cert_file: str | None = None, key_file: str | None = None,
                 server_name: str | None = None, grpc_options: Iterable = (),
                 balance: str = "round-robin"):
        if isinstance(endpoints, str):
            endpoints = [e for e in endpoints.split(",") if e]
        self._tls = R.TLSOptions(ca_file, cert_file, key_file, server_name)
        eps = [R.parse_endpoint(e.strip(), self._tls.given) for e in endpoints]
        self._pool = R.EndpointPool(eps, balance)
        opts = R.channel_options(self._tls, grpc_options)
        # TLS files are read now: a missing file is an error here, not at first use
        creds = self._tls.credentials() if any(e.secure for e in eps) else None
        self._conns = [self._conn_class(e, creds, opts) for e in eps]
        self.timeout = timeout
        self._auth = R.AuthState(user, password)
        self._auth_lock = self._lock_class()
        self._closed = False
        self._children: set = set()   # open watches and leases, closed with the client
        self._children_lock = threading.Lock()

    @property
    def endpoints(self) -> list[str]:
        """The endpoints, as given."""
        return [e.url for e in self._pool.endpoints]

    @property
    def current_endpoint(self) -> str:
        """The endpoint the next request goes to."""
        return self._pool.current.url

    def _check_open(self) -> None:
        if self._closed:
            raise errors.ClientClosed("client is closed")

    def _deadline(self, timeout) -> float | None:
        t = self.timeout if timeout is _UNSET else timeout
        return None if t is None else time.monotonic() + t

    @staticmethod
    def _remaining(deadline: float | None) -> float | None:
        return None if deadline is None else deadline - time.monotonic()


class UnaryCalls(ClientCore):
    """The unary calls: each hands its request to ``self._invoke(call, endpoint=None)``."""

    def _endpoint_index(self, endpoint: str | None) -> int | None:
        if endpoint is None:
            return None
        for i, e in enumerate(self._pool.endpoints):
            if e.url == endpoint or e.target == endpoint:
                return i
        raise ValueError(f"{endpoint!r} is not one of this client's endpoints")

    # ---- KV ----------------------------------------------------------------------------

    def put(self, key: KeyLike, value: KeyLike, *, lease: int | None = None,
            prev_kv: bool = False, ignore_value: bool = False,
            ignore_lease: bool = False) -> PutResult:
        """Set ``key`` to ``value`` (optionally attached to ``lease``). With
        ``prev_kv``, the result carries the pair before the put."""
        return self._invoke(R.c_put(R.put_request(key, value, lease=lease, prev_kv=prev_kv,
                                                  ignore_value=ignore_value,
                                                  ignore_lease=ignore_lease)))

    def get(self, key: KeyLike, *, revision: int = 0,
            serializable: bool = False) -> KeyValue | None:
        """The key's KeyValue (at ``revision`` if given), or None."""
        return self._invoke(R.c_get(R.range_request(key, revision=revision,
                                                    serializable=serializable)))

    def range(self, key: KeyLike, end: KeyLike | None = None, *, prefix: bool = False,
              from_key: bool = False, limit: int = 0, revision: int = 0,
              sort_order: SortOrder | str | None = None,
              sort_target: SortTarget | str | None = None, keys_only: bool = False,
              count_only: bool = False, serializable: bool = False,
              min_mod_revision: int = 0, max_mod_revision: int = 0,
              min_create_revision: int = 0, max_create_revision: int = 0) -> RangeResult:
        """Keys in [key, end), or with the prefix ``key`` (``prefix=True``), or from
        ``key`` on (``from_key=True``); or ``key`` alone."""
        return self._invoke(R.c_range(R.range_request(
            key, end, prefix=prefix, from_key=from_key, limit=limit, revision=revision,
            sort_order=sort_order, sort_target=sort_target, keys_only=keys_only,
            count_only=count_only, serializable=serializable, min_mod_revision=min_mod_revision,
            max_mod_revision=max_mod_revision, min_create_revision=min_create_revision,
            max_create_revision=max_create_revision)))

    def delete(self, key: KeyLike, end: KeyLike | None = None, *, prefix: bool = False,
               from_key: bool = False, prev_kv: bool = False) -> DeleteResult:
        """Delete ``key`` (or a range, a prefix, keys from ``key`` on)."""
        return self._invoke(R.c_delete(R.delete_request(key, end, prefix=prefix,
                                                        from_key=from_key, prev_kv=prev_kv)))

    def _commit(self, request: pb.TxnRequest) -> TxnResult:
        return self._invoke(R.c_txn(request))

    def compact(self, revision: int, *, physical: bool = False) -> None:
        """Discard the history before ``revision``. With ``physical``, return only
        once the compaction reached the backend."""
        return self._invoke(R.c_compact(revision, physical))

    # ---- leases ------------------------------------------------------------------------

    def lease_grant(self, ttl: int, *, id: int = 0) -> LeaseGrant:
        """Grant a lease of ``ttl`` seconds (``id``: ask for this ID). Not kept alive:
        see :meth:`lease` for that."""
        return self._invoke(R.c_lease_grant(ttl, id))

    def lease_revoke(self, id: int) -> None:
        """Revoke a lease (its keys are deleted)."""
        return self._invoke(R.c_lease_revoke(id))

    def lease_time_to_live(self, id: int, *, keys: bool = False) -> LeaseInfo:
        """Remaining TTL of a lease (``ttl == -1``: it is gone), and its keys."""
        return self._invoke(R.c_lease_time_to_live(id, keys))

    def leases(self) -> tuple[int, ...]:
        """IDs of every lease."""
        return self._invoke(R.c_leases())

    # ---- watch -------------------------------------------------------------------------

    # ---- cluster -----------------------------------------------------------------------

    def members(self) -> tuple[Member, ...]:
        """The cluster's members."""
        return self._invoke(R.c_members())

    def member_add(self, peer_urls: str | Iterable[str], *,
                   learner: bool = False) -> MemberAddResult:
        """Add a member (as a non-voting learner with ``learner=True``)."""
        return self._invoke(R.c_member_add(peer_urls, learner))

    def member_remove(self, id: int) -> tuple[Member, ...]:
        """Remove a member; the members left."""
        return self._invoke(R.c_member_remove(id))

    def member_update(self, id: int, peer_urls: str | Iterable[str]) -> tuple[Member, ...]:
        """Change a member's peer URLs; the members after."""
        return self._invoke(R.c_member_update(id, peer_urls))

    def member_promote(self, id: int) -> tuple[Member, ...]:
        """Make a learner a voting member (once it caught up with the leader)."""
        return self._invoke(R.c_member_promote(id))

    # ---- maintenance -------------------------------------------------------------------

    def status(self, endpoint: str | None = None) -> Status:
        """The status of the current endpoint's member, or of ``endpoint`` (one of
        the client's endpoints; no failover then)."""
        return self._invoke(R.c_status(), endpoint=self._endpoint_index(endpoint))

    def alarms(self) -> tuple[Alarm, ...]:
        """Active alarms (NOSPACE, CORRUPT) of every member."""
        return self._invoke(R.c_alarms())

    def alarm_disarm(self, member_id: int = 0,
                     alarm: AlarmType | str | None = None) -> tuple[Alarm, ...]:
        """Disarm alarms (0 / None: of every member, every type); the alarms disarmed."""
        return self._invoke(R.c_alarm_disarm(member_id, alarm))

    def defragment(self, endpoint: str | None = None) -> None:
        """Defragment the backend of the current endpoint's member (or ``endpoint``'s)."""
        return self._invoke(R.c_defragment(), endpoint=self._endpoint_index(endpoint))

    def hash_kv(self, revision: int = 0, endpoint: str | None = None) -> HashKV:
        """Hash of the keyspace up to ``revision`` (0: latest) on one member: equal on
        every member that applied the same history."""
        return self._invoke(R.c_hash_kv(revision), endpoint=self._endpoint_index(endpoint))

    # ---- auth --------------------------------------------------------------------------

    def authenticate(self, user: str, password: str) -> str:
        """Check a user's password; the token the server handed out (the client
        itself authenticates on its own when made with ``user``/``password``)."""
        return self._invoke(R.c_authenticate(user, password))

    def auth_enable(self) -> None:
        """Turn authentication on (a ``root`` user with the ``root`` role must exist)."""
        return self._invoke(R.c_auth_enable())

    def auth_disable(self) -> None:
        return self._invoke(R.c_auth_disable())

    def user_add(self, name: str, password: str | None = None, *,
                 no_password: bool = False) -> None:
        """Add a user (``no_password=True``: may only log in by TLS certificate)."""
        return self._invoke(R.c_user_add(name, password, no_password))

    def user_get(self, name: str) -> User:
        return self._invoke(R.c_user_get(name))

    def user_list(self) -> tuple[str, ...]:
        return self._invoke(R.c_user_list())

    def user_delete(self, name: str) -> None:
        return self._invoke(R.c_user_delete(name))

    def user_change_password(self, name: str, password: str) -> None:
        return self._invoke(R.c_user_change_password(name, password))

    def user_grant_role(self, user: str, role: str) -> None:
        return self._invoke(R.c_user_grant_role(user, role))

    def user_revoke_role(self, user: str, role: str) -> None:
        return self._invoke(R.c_user_revoke_role(user, role))

    def role_add(self, name: str) -> None:
        return self._invoke(R.c_role_add(name))

    def role_get(self, name: str) -> Role:
        return self._invoke(R.c_role_get(name))

    def role_list(self) -> tuple[str, ...]:
        return self._invoke(R.c_role_list())

    def role_delete(self, name: str) -> None:
        return self._invoke(R.c_role_delete(name))

    def role_grant_permission(self, role: str, key: KeyLike, end: KeyLike | None = None, *,
                              prefix: bool = False, from_key: bool = False,
                              perm: PermType | str = PermType.READWRITE) -> None:
        """Let ``role`` read / write / both (``perm``) the key, range, or prefix."""
        return self._invoke(R.c_role_grant_permission(role, key, end, prefix, from_key, perm))

    def role_revoke_permission(self, role: str, key: KeyLike, end: KeyLike | None = None, *,
                               prefix: bool = False, from_key: bool = False) -> None:
        return self._invoke(R.c_role_revoke_permission(role, key, end, prefix, from_key))


def _coroutine(fn):
    @functools.wraps(fn)
    async def call(self, *args, **kwargs):
        return await fn(self, *args, **kwargs)
    return call


class AsyncUnaryCalls(UnaryCalls):
    """The same calls as coroutine functions (the AsyncClient's ``_invoke`` is one)."""


for _name, _fn in list(vars(UnaryCalls).items()):
    if callable(_fn) and not _name.startswith("__") and _name != "_endpoint_index":
        setattr(AsyncUnaryCalls, _name, _coroutine(_fn))
del _name, _fn
