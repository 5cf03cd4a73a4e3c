"""What :class:`~fastkv.client.Client` and :class:`~fastkv.client.AsyncClient`
share, written once: their state and constructor (:class:`ClientCore`) and their unary
calls (:class:`UnaryCalls`).

Each method builds its request with the sans-IO layer (``_requests``) and hands it to
the client's ``_invoke`` (failover, retries, token refresh), returning what that
returns: the result for the blocking Client, a coroutine for the AsyncClient.
:class:`AsyncUnaryCalls` turns each into a coroutine function (``async def``), so
``await client.put(...)`` and ``inspect.iscoroutinefunction`` work as for any asyncio
API. The calls with more to them (leases kept alive, watches, snapshots, moving the
leader) are in sync.py and aio.py, on threads or on tasks; what their logic shares is
here too: :class:`ConnCore` (a connection), :func:`snapshot_file`, :class:`LeaseCore`
(the keep-alive schedule, the lost state) and :class:`WatchCore` (the consumer side
of a watch's buffer).
"""
from __future__ import annotations

import collections
import contextlib
import functools
import os
import threading
import time
from typing import IO, Any, Iterable, Iterator

import grpc

from fastkv.proto.etcdserverpb import rpc_pb2 as pb

from . import _requests as R
from . import errors
from ._requests import KeyLike
from ._types import (Alarm, AlarmType, DeleteResult, Event, HashKV, KeyValue, LeaseGrant,
                     LeaseInfo, Member, MemberAddResult, PermType, PutResult, RangeResult, Role,
                     SortOrder, SortTarget, Status, TxnResult, User, WatchResponse)

__all__ = ["ClientCore", "UnaryCalls", "AsyncUnaryCalls", "ConnCore", "LeaseCore", "WatchCore",
           "snapshot_file"]

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

    def _can_reauth(self, with_token: bool = True) -> bool:
        return with_token and self._auth.has_credentials

    def _register(self, child) -> None:
        with self._children_lock:
            self._children.add(child)

    def _unregister(self, child) -> None:
        with self._children_lock:
            self._children.discard(child)


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


# ---- connections, snapshots ----------------------------------------------------------------

class ConnCore:
    """One endpoint's channel and stubs, made on first use by :meth:`_open` with
    ``_channels`` (the ``grpc`` module, or ``grpc.aio``)."""

    _channels: Any

    def __init__(self, endpoint: R.Endpoint, creds: grpc.ChannelCredentials | None,
                 options: list):
        self.endpoint = endpoint
        self._creds = creds
        self._options = options
        self._stubs: R.Stubs | None = None

    def _open(self) -> R.Stubs:
        if self.endpoint.secure:
            ch = self._channels.secure_channel(self.endpoint.target, self._creds,
                                               self._options)
        else:
            ch = self._channels.insecure_channel(self.endpoint.target, self._options)
        return R.Stubs(ch)


@contextlib.contextmanager
def snapshot_file(file: str | os.PathLike | IO[bytes]) -> Iterator[IO[bytes]]:
    """The binary file a snapshot is written to: ``file`` itself if it is a file
    object; for a path, a temporary name renamed to it once the block completes
    (and removed if the block fails)."""
    if not isinstance(file, (str, os.PathLike)):
        yield file
        return
    tmp = os.fspath(file) + ".part"
    try:
        with open(tmp, "wb") as f:
            yield f
        os.replace(tmp, file)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# ---- leases kept alive ---------------------------------------------------------------------

class LeaseCore:
    """What :class:`~fastkv.client.Lease` and :class:`~fastkv.client.AsyncLease` share:
    the keep-alive schedule and the lost state. A subclass sets ``_client``, ``id``,
    ``ttl``, ``_expires`` (when the lease expires unless renewed, time.monotonic()),
    ``last_keepalive`` and ``_lost`` (a threading or asyncio Event), and runs the loop::

        wait = keepalive_interval(ttl)
        every `wait` seconds until stopped:
            sent = time.monotonic()
            renew with deadline self._keepalive_deadline(sent)
            answered: wait = self._renewed(sent, new_ttl)
            lease not found: lost; other error: lost if self._expired(), else
            wait = self._retry_wait()
    """

    _client: Any
    id: int
    ttl: int
    lost_reason: str | None
    last_keepalive: float | None
    _expires: float
    _lost: Any

    @property
    def lost(self) -> bool:
        """The lease expired or was revoked by someone else."""
        return self._lost.is_set()

    def check(self) -> None:
        """Raise :class:`~fastkv.client.errors.LeaseLost` if the lease was lost."""
        if self._lost.is_set():
            raise errors.LeaseLost(f"lease {self.id} lost: {self.lost_reason}")

    def _keepalive_deadline(self, sent: float) -> float:
        """The deadline of a keep-alive sent at ``sent``: the lease's expiry (or a
        second if it passed), within the client's timeout."""
        deadline = self._expires if self._expires > sent else sent + 1.0
        if self._client.timeout is not None:
            deadline = min(deadline, sent + self._client.timeout)
        return deadline

    def _renewed(self, sent: float, new_ttl: int) -> float:
        """A keep-alive sent at ``sent`` was answered: the wait before the next one."""
        self._expires = sent + new_ttl
        self.last_keepalive = time.monotonic()
        return R.keepalive_interval(new_ttl)

    def _expired(self) -> bool:
        return time.monotonic() >= self._expires

    def _retry_wait(self) -> float:
        """The wait before trying again after a keep-alive that did not get through."""
        return min(0.5, R.keepalive_interval(self.ttl))

    def _record_loss(self, reason: str) -> None:
        """Mark the lease lost (the subclass then calls ``on_lost``)."""
        self.lost_reason = reason
        self._lost.set()
        self._client._unregister(self)


# ---- watches -------------------------------------------------------------------------------

_CLOSED = object()   # queued to wake a consumer: the watch was closed


class _Stop(Exception):
    """The watch was closed: iteration ends."""


class WatchCore:
    """What :class:`~fastkv.client.Watch` and :class:`~fastkv.client.AsyncWatch`
    share: the watch's state (:class:`~_requests.WatchState`), the stream's
    metadata, and how the consumer side reads the buffer (``_queue``, a
    ``queue.Queue`` or ``asyncio.Queue`` of :class:`WatchResponse`, errors and
    ``_CLOSED``)."""

    def __init__(self, client, state: R.WatchState, require_leader: bool):
        self._client = client
        #: the endpoint this watch's stream is on (None until it starts)
        self.endpoint: str | None = None
        self._state = state
        self._md_extra = (("hasleader", "true"),) if require_leader else ()
        self._events: collections.deque[Event] = collections.deque()
        self._error: BaseException | None = None
        self._finished = False

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self._state.key!r} "
                f"next_revision={self._state.next_revision}>")

    @property
    def next_revision(self) -> int:
        """The revision the watch would resume from (the last one handed over + 1)."""
        return self._state.next_revision

    def _check_finished(self, closed: bool) -> None:
        """Before taking from the buffer: raise the watch's error, or _Stop once it
        is closed and the buffer drained."""
        if self._finished:
            if self._error is not None:
                raise self._error
            raise _Stop
        if closed and self._queue.empty():
            self._finished = True
            raise _Stop

    def _taken(self, item) -> WatchResponse:
        """What was taken from the buffer: a response, or the end (raised)."""
        if item is _CLOSED or isinstance(item, BaseException):
            self._finished = True
            if isinstance(item, BaseException):
                self._error = item
                raise item
            raise _Stop
        return item
