"""What the sync and the asyncio client share: endpoints, the retry decision,
request building and result conversion, the watch's resume bookkeeping.

Nothing here does I/O. A public method of either client builds a :class:`Call`
here (the request, how to convert its answer, whether it may be retried) and
hands it to its own transport loop (sync.py: blocking, aio.py: awaiting).
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
import urllib.parse
from typing import Any, Callable, Iterable

import grpc

from fastkv.proto.authpb import auth_pb2
from fastkv.proto.etcdserverpb import rpc_pb2 as pb
from fastkv.proto.etcdserverpb import rpc_pb2_grpc as pb_grpc

from . import errors
from ._types import (Alarm, AlarmType, DeleteResult, Event, EventType, Header, HashKV,
                     KeyValue, LeaseGrant, LeaseInfo, Member, MemberAddResult, PermType,
                     Permission, PutResult, RangeResult, Role, SortOrder, SortTarget, Status,
                     TxnResult, User, WatchResponse)

KeyLike = str | bytes | bytearray | memoryview

DEFAULT_ENDPOINT = "http://127.0.0.1:2379"
DEFAULT_TIMEOUT = 10.0
_BACKOFF_START, _BACKOFF_MAX = 0.05, 1.0

log = logging.getLogger("fastkv.client")

# ---- keys -----------------------------------------------------------------------------------


def to_bytes(value: KeyLike, what: str = "key") -> bytes:
    """str (UTF-8) or bytes-like -> bytes."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be str or bytes, not {type(value).__name__}")


def prefix_end(prefix: KeyLike) -> bytes:
    """The range end that covers every key starting with ``prefix`` (etcd's
    GetPrefixRangeEnd): the prefix with its last byte below 0xff incremented;
    ``b"\\0"`` (every key) for an empty or all-0xff prefix."""
    p = bytearray(to_bytes(prefix))
    for i in range(len(p) - 1, -1, -1):
        if p[i] < 0xFF:
            p[i] += 1
            return bytes(p[: i + 1])
    return b"\0"


def key_range(key: KeyLike, end: KeyLike | None = None, prefix: bool = False,
              from_key: bool = False) -> tuple[bytes, bytes]:
    """(key, range_end) for a key, a [key, end) range, a prefix or "from key on"."""
    k = to_bytes(key)
    if sum((end is not None, prefix, from_key)) > 1:
        raise ValueError("give at most one of end, prefix=True, from_key=True")
    if prefix:
        if not k:
            return b"\0", b"\0"
        return k, prefix_end(k)
    if from_key:
        return (k or b"\0"), b"\0"
    if end is not None:
        return k, to_bytes(end, "end")
    return k, b""


# ---- endpoints and channels -----------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Endpoint:
    url: str        # as given
    target: str     # host:port for grpc
    secure: bool


def parse_endpoint(url: str, tls_default: bool) -> Endpoint:
    """``http://h:p`` (plain), ``https://h:p`` (TLS) or ``h:p`` (TLS when TLS options
    were given)."""
    if "://" in url:
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https"):
            raise ValueError(f"endpoint {url!r}: scheme must be http or https")
        if not u.hostname or u.port is None:
            raise ValueError(f"endpoint {url!r}: host and port needed")
        host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
        return Endpoint(url, f"{host}:{u.port}", u.scheme == "https")
    if ":" not in url:
        raise ValueError(f"endpoint {url!r}: host:port needed")
    return Endpoint(url, url, tls_default)


@dataclasses.dataclass(frozen=True)
class TLSOptions:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None

    def __post_init__(self):
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file go together")

    @property
    def given(self) -> bool:
        return any((self.ca_file, self.cert_file, self.key_file))

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path):
            if path is None:
                return None
            with open(path, "rb") as f:
                return f.read()
        return grpc.ssl_channel_credentials(root_certificates=read(self.ca_file),
                                            private_key=read(self.key_file),
                                            certificate_chain=read(self.cert_file))


def channel_options(tls: TLSOptions, extra: Iterable[tuple[str, Any]] = ()) -> list:
    opts = [
        ("grpc.max_receive_message_length", -1),
        ("grpc.max_send_message_length", -1),
        # a restarted member is found again within a second
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
        # one client's connection troubles are its own
        ("grpc.use_local_subchannel_pool", 1),
    ]
    if tls.server_name:
        opts.append(("grpc.ssl_target_name_override", tls.server_name))
    return opts + list(extra)


class Stubs:
    """The etcdserverpb stubs on one channel (sync or asyncio)."""

    def __init__(self, channel):
        self.channel = channel
        self.KV = pb_grpc.KVStub(channel)
        self.Watch = pb_grpc.WatchStub(channel)
        self.Lease = pb_grpc.LeaseStub(channel)
        self.Cluster = pb_grpc.ClusterStub(channel)
        self.Maintenance = pb_grpc.MaintenanceStub(channel)
        self.Auth = pb_grpc.AuthStub(channel)

    def method(self, service: str, name: str):
        return getattr(getattr(self, service), name)


class EndpointPool:
    """Which endpoint a call goes to.

    ``balance="round-robin"`` (the default, as etcd clientv3 3.4's balancer): each
    call, stream or retry goes to the next endpoint in turn among those that have not
    failed lately. ``balance="pinned"``: the same endpoint until it fails, then the
    next one that has not failed lately (configured order). Either way an endpoint
    that failed is tried again only after the others, or after COOL_DOWN seconds.
    """

    COOL_DOWN = 5.0   # seconds an endpoint that failed is tried only after the others
    BALANCES = ("round-robin", "pinned")

    def __init__(self, endpoints: list[Endpoint], balance: str = "round-robin"):
        if not endpoints:
            raise ValueError("at least one endpoint")
        if balance not in self.BALANCES:
            raise ValueError(f"balance must be one of {self.BALANCES}, not {balance!r}")
        self.endpoints = endpoints
        self.balance = balance
        self._next = 0             # the endpoint to try first
        self._failed_at: dict[int, float] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.endpoints)

    def _choose(self) -> int:
        n = len(self.endpoints)
        now = time.monotonic()
        for step in range(n):
            i = (self._next + step) % n
            t = self._failed_at.get(i)
            if t is None or now - t > self.COOL_DOWN:
                return i
        # every endpoint failed lately: the one that failed longest ago
        return min(range(n), key=lambda i: self._failed_at.get(i, 0.0))

    def pick(self) -> int:
        """The endpoint for the next call (round-robin: and move on)."""
        with self._lock:
            i = self._choose()
            if self.balance == "round-robin":
                self._next = (i + 1) % len(self.endpoints)
            return i

    def failed(self, i: int) -> None:
        with self._lock:
            self._failed_at[i] = time.monotonic()
            if self._next == i:
                self._next = (i + 1) % len(self.endpoints)

    def succeeded(self, i: int) -> None:
        with self._lock:
            self._failed_at.pop(i, None)
            if self.balance == "pinned":
                self._next = i

    @property
    def current(self) -> Endpoint:
        """The endpoint the next call goes to (without moving on)."""
        with self._lock:
            return self.endpoints[self._choose()]


def backoff(round_: int) -> float:
    """Pause after a full round over the endpoints failed (grows to 1 s)."""
    return min(_BACKOFF_START * (2 ** max(round_ - 1, 0)), _BACKOFF_MAX)


# ---- retry policy ---------------------------------------------------------------------------
#
# etcd clientv3 3.4 (clientv3/retry.go, retry_interceptor.go): "repeatable" calls
# (reads, status, member list, lease keep-alive / time-to-live / leases, alarm list,
# hash, snapshot, user/role get and list) are retried on any UNAVAILABLE answer;
# "non-repeatable" calls (put, delete, txn, compact, lease grant, membership and
# auth changes, defragment) only when the request provably never left the client
# (no connection could be made). Before either, an "invalid auth token" (or "user
# name is empty" while the client has credentials) makes the client authenticate
# again and resend once: those errors come before the request does anything.

RAISE, FAILOVER, REAUTH = "raise", "failover", "reauth"

_REAUTH_MESSAGES = {"etcdserver: invalid auth token", "etcdserver: revision of auth store is old",
                    "etcdserver: user name is empty"}

# UNAVAILABLE answers that say the member refused the request before acting on it:
# a write may go to another member.
_REFUSED_MESSAGES = {"etcdserver: rpc not supported for learner"}


def decide(repeatable: bool, code: grpc.StatusCode | None, details: str,
           can_reauth: bool) -> str:
    if can_reauth and details in _REAUTH_MESSAGES:
        return REAUTH
    if code == grpc.StatusCode.UNAVAILABLE:
        if repeatable or errors.is_not_sent(code, details) or details in _REFUSED_MESSAGES:
            return FAILOVER
    return RAISE


class Attempts:
    """The failover bookkeeping of one call, shared by the blocking and the asyncio
    transport loops (which only send, and sleep ``pause`` seconds when told)::

        att = Attempts(pool, deadline)
        while True:
            i = att.pick()                 # raises once the deadline passed
            try: send to endpoint i
            except grpc.RpcError as e:
                action, pause = att.failed(i, url, repeatable, e.code(), e.details(), creds)
                if action == REAUTH: authenticate again
                else: sleep(pause)         # FAILOVER; any other outcome raised
                continue
            att.succeeded(i)

    ``fixed``: this endpoint only (no failover). ``max_rounds``: give up after that
    many rounds over the endpoints even without a deadline.
    """

    def __init__(self, pool: EndpointPool, deadline: float | None, fixed: int | None = None,
                 max_rounds: int | None = None):
        self.pool = pool
        self.deadline = deadline
        self.fixed = fixed
        self.max_rounds = max_rounds
        self.failures = 0
        self.reauthed = False
        self.last: errors.EtcdError | None = None

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def pick(self) -> int:
        rem = self.remaining()
        if rem is not None and rem <= 0:
            raise self.last or errors.Timeout("deadline exceeded before the request was sent")
        return self.fixed if self.fixed is not None else self.pool.pick()

    def failed(self, idx: int, url: str, repeatable: bool, code: grpc.StatusCode | None,
               details: str, can_reauth: bool) -> tuple[str, float]:
        """(REAUTH, 0) or (FAILOVER, pause before the next attempt); raises the
        error when the call must not be sent again."""
        details = details or ""
        action = decide(repeatable, code, details, can_reauth and not self.reauthed)
        if action == REAUTH:
            self.reauthed = True
            return REAUTH, 0.0
        err = errors.from_status(code, details, url)
        if action != FAILOVER or self.fixed is not None:
            if isinstance(err, errors.ConnectionLost) and self.fixed is None:
                self.pool.failed(idx)   # a broken connection: the next calls go elsewhere
            raise err from None
        self.pool.failed(idx)
        self.last = err
        self.failures += 1
        n = len(self.pool)
        pause = 0.0
        if self.failures % n == 0:   # a whole round failed
            rounds = self.failures // n
            if self.max_rounds is not None and rounds >= self.max_rounds:
                raise err from None
            pause = backoff(rounds)
            rem = self.remaining()
            if rem is not None and rem <= pause:
                raise err from None
        return FAILOVER, pause

    def succeeded(self, idx: int) -> None:
        if self.fixed is None:
            self.pool.succeeded(idx)


@dataclasses.dataclass(frozen=True, slots=True)
class Call:
    """One unary RPC: where it goes, what it carries, how its answer converts, and
    whether it may be resent to another endpoint after an UNAVAILABLE answer."""
    service: str
    method: str
    request: Any
    convert: Callable[[Any], Any]
    repeatable: bool
    with_token: bool = True


class AuthState:
    """The user/password and the current token (shared by threads or tasks)."""

    def __init__(self, user: str | None, password: str | None):
        if (user is None) != (password is None):
            raise ValueError("user and password go together")
        self.user = user
        self.password = password
        self.token: str | None = None
        self.generation = 0        # bumped whenever the token changes
        self.known_disabled = False

    @property
    def has_credentials(self) -> bool:
        return self.user is not None

    def needs_token(self) -> bool:
        return self.has_credentials and self.token is None and not self.known_disabled

    def metadata(self) -> tuple | None:
        return (("token", self.token),) if self.token else None

    def set_token(self, token: str | None, disabled: bool = False) -> None:
        self.token = token
        self.known_disabled = disabled
        self.generation += 1


# ---- converters: protobuf -> dataclasses ----------------------------------------------------

def header(h) -> Header:
    return Header(h.cluster_id, h.member_id, h.revision, h.raft_term)


def kv(k) -> KeyValue:
    return KeyValue(k.key, k.value, k.create_revision, k.mod_revision, k.version, k.lease)


def opt_kv(parent, field_name: str) -> KeyValue | None:
    return kv(getattr(parent, field_name)) if parent.HasField(field_name) else None


def event(e) -> Event:
    return Event(EventType(e.type), kv(e.kv), opt_kv(e, "prev_kv"))


def range_result(r) -> RangeResult:
    return RangeResult(header(r.header), tuple(kv(k) for k in r.kvs), r.count, r.more)


def put_result(r) -> PutResult:
    return PutResult(header(r.header), opt_kv(r, "prev_kv"))


def delete_result(r) -> DeleteResult:
    return DeleteResult(header(r.header), r.deleted, tuple(kv(k) for k in r.prev_kvs))


def txn_result(r) -> TxnResult:
    out = []
    for op in r.responses:
        which = op.WhichOneof("response")
        if which == "response_range":
            out.append(range_result(op.response_range))
        elif which == "response_put":
            out.append(put_result(op.response_put))
        elif which == "response_delete_range":
            out.append(delete_result(op.response_delete_range))
        elif which == "response_txn":
            out.append(txn_result(op.response_txn))
        else:   # an empty ResponseOp (should not happen)
            out.append(None)
    return TxnResult(header(r.header), r.succeeded, tuple(out))


def member(m) -> Member:
    return Member(m.ID, m.name, tuple(m.peerURLs), tuple(m.clientURLs), m.isLearner)


def members(r) -> tuple[Member, ...]:
    return tuple(member(m) for m in r.members)


def status(r) -> Status:
    return Status(header(r.header), r.version, r.dbSize, r.leader, r.raftIndex, r.raftTerm,
                  r.raftAppliedIndex, tuple(r.errors), r.dbSizeInUse, r.isLearner)


def permission(p) -> Permission:
    return Permission(PermType(p.permType), p.key, p.range_end)


def _none(_r) -> None:
    return None


# ---- request builders -----------------------------------------------------------------------

def _enum(enum_cls, value, what: str):
    if value is None:
        return enum_cls(0)
    if isinstance(value, str):
        try:
            return enum_cls[value.upper()]
        except KeyError:
            raise ValueError(f"{what}: one of {[m.name.lower() for m in enum_cls]}") from None
    return enum_cls(value)


def range_request(key: KeyLike, end: KeyLike | None = None, *, prefix: bool = False,
                  from_key: bool = False, limit: int = 0, revision: int = 0,
                  sort_order: SortOrder | str | None = None,
                  sort_target: SortTarget | str | None = None, keys_only: bool = False,
                  count_only: bool = False, serializable: bool = False,
                  min_mod_revision: int = 0, max_mod_revision: int = 0,
                  min_create_revision: int = 0, max_create_revision: int = 0) -> pb.RangeRequest:
    k, e = key_range(key, end, prefix, from_key)
    return pb.RangeRequest(
        key=k, range_end=e, limit=limit, revision=revision,
        sort_order=int(_enum(SortOrder, sort_order, "sort_order")),
        sort_target=int(_enum(SortTarget, sort_target, "sort_target")),
        serializable=serializable, keys_only=keys_only, count_only=count_only,
        min_mod_revision=min_mod_revision, max_mod_revision=max_mod_revision,
        min_create_revision=min_create_revision, max_create_revision=max_create_revision)


def put_request(key: KeyLike, value: KeyLike, *, lease: int | None = None,
                prev_kv: bool = False, ignore_value: bool = False,
                ignore_lease: bool = False) -> pb.PutRequest:
    return pb.PutRequest(key=to_bytes(key), value=b"" if ignore_value else to_bytes(value, "value"),
                         lease=lease or 0, prev_kv=prev_kv, ignore_value=ignore_value,
                         ignore_lease=ignore_lease)


def delete_request(key: KeyLike, end: KeyLike | None = None, *, prefix: bool = False,
                   from_key: bool = False, prev_kv: bool = False) -> pb.DeleteRangeRequest:
    k, e = key_range(key, end, prefix, from_key)
    return pb.DeleteRangeRequest(key=k, range_end=e, prev_kv=prev_kv)


# ---- calls: one per public unary method ----------------------------------------------------

def c_range(req: pb.RangeRequest) -> Call:
    return Call("KV", "Range", req, range_result, True)


def c_get(req: pb.RangeRequest) -> Call:
    return Call("KV", "Range", req, lambda r: kv(r.kvs[0]) if r.kvs else None, True)


def c_put(req: pb.PutRequest) -> Call:
    return Call("KV", "Put", req, put_result, False)


def c_delete(req: pb.DeleteRangeRequest) -> Call:
    return Call("KV", "DeleteRange", req, delete_result, False)


def c_txn(req: pb.TxnRequest) -> Call:
    return Call("KV", "Txn", req, txn_result, False)


def c_compact(revision: int, physical: bool) -> Call:
    return Call("KV", "Compact", pb.CompactionRequest(revision=revision, physical=physical),
                _none, False)


def c_lease_grant(ttl: int, id: int = 0) -> Call:
    # Not resent once it may have reached a server (a second grant would leave a
    # stray lease behind until it expires); etcd 3.4 resends it.
    def conv(r):
        if r.error:
            raise errors.LeaseError(r.error)
        return LeaseGrant(header(r.header), r.ID, r.TTL)
    return Call("Lease", "LeaseGrant", pb.LeaseGrantRequest(TTL=int(ttl), ID=id), conv, False)


def c_lease_revoke(id: int) -> Call:
    return Call("Lease", "LeaseRevoke", pb.LeaseRevokeRequest(ID=id), _none, True)


def c_lease_time_to_live(id: int, keys: bool) -> Call:
    return Call("Lease", "LeaseTimeToLive", pb.LeaseTimeToLiveRequest(ID=id, keys=keys),
                lambda r: LeaseInfo(header(r.header), r.ID, r.TTL, r.grantedTTL, tuple(r.keys)),
                True)


def c_leases() -> Call:
    return Call("Lease", "LeaseLeases", pb.LeaseLeasesRequest(),
                lambda r: tuple(s.ID for s in r.leases), True)


def keepalive_ttl(id: int, resp) -> int:
    """A LeaseKeepAliveResponse's new TTL; LeaseNotFound when the lease is gone."""
    if resp is None or resp.TTL <= 0:
        raise errors.LeaseNotFound("etcdserver: requested lease not found",
                                   grpc.StatusCode.NOT_FOUND)
    return resp.TTL


def c_members() -> Call:
    return Call("Cluster", "MemberList", pb.MemberListRequest(), members, True)


def c_member_add(peer_urls: Iterable[str] | str, learner: bool) -> Call:
    urls = [peer_urls] if isinstance(peer_urls, str) else list(peer_urls)
    return Call("Cluster", "MemberAdd", pb.MemberAddRequest(peerURLs=urls, isLearner=learner),
                lambda r: MemberAddResult(header(r.header), member(r.member), members(r)), False)


def c_member_remove(id: int) -> Call:
    return Call("Cluster", "MemberRemove", pb.MemberRemoveRequest(ID=id), members, False)


def c_member_update(id: int, peer_urls: Iterable[str] | str) -> Call:
    urls = [peer_urls] if isinstance(peer_urls, str) else list(peer_urls)
    return Call("Cluster", "MemberUpdate", pb.MemberUpdateRequest(ID=id, peerURLs=urls), members,
                False)


def c_member_promote(id: int) -> Call:
    return Call("Cluster", "MemberPromote", pb.MemberPromoteRequest(ID=id), members, False)


def c_status() -> Call:
    return Call("Maintenance", "Status", pb.StatusRequest(), status, True)


def c_alarms() -> Call:
    return Call("Maintenance", "Alarm", pb.AlarmRequest(action=pb.AlarmRequest.GET),
                lambda r: tuple(Alarm(a.memberID, AlarmType(a.alarm)) for a in r.alarms), True)


def c_alarm_disarm(member_id: int, alarm: AlarmType | str | None) -> Call:
    a = _enum(AlarmType, alarm, "alarm")
    req = pb.AlarmRequest(action=pb.AlarmRequest.DEACTIVATE, memberID=member_id, alarm=int(a))
    return Call("Maintenance", "Alarm", req,
                lambda r: tuple(Alarm(x.memberID, AlarmType(x.alarm)) for x in r.alarms), True)


def c_defragment() -> Call:
    return Call("Maintenance", "Defragment", pb.DefragmentRequest(), _none, False)


def c_hash_kv(revision: int) -> Call:
    return Call("Maintenance", "HashKV", pb.HashKVRequest(revision=revision),
                lambda r: HashKV(header(r.header), r.hash, r.compact_revision), True)


def c_move_leader(target_id: int) -> Call:
    return Call("Maintenance", "MoveLeader", pb.MoveLeaderRequest(targetID=target_id), _none,
                True)


def c_authenticate(user: str, password: str) -> Call:
    # Two tokens for one login harm nobody: resent like a read.
    return Call("Auth", "Authenticate", pb.AuthenticateRequest(name=user, password=password),
                lambda r: r.token, True, with_token=False)


def _auth(method: str, req, convert=_none, repeatable: bool = False) -> Call:
    return Call("Auth", method, req, convert, repeatable)


def c_auth_enable() -> Call:
    return _auth("AuthEnable", pb.AuthEnableRequest())


def c_auth_disable() -> Call:
    return _auth("AuthDisable", pb.AuthDisableRequest())


def c_user_add(name: str, password: str | None, no_password: bool) -> Call:
    if password is None and not no_password:
        raise ValueError("give a password, or no_password=True (TLS common-name users)")
    return _auth("UserAdd", pb.AuthUserAddRequest(
        name=name, password=password or "",
        options=auth_pb2.UserAddOptions(no_password=no_password)))


def c_user_get(name: str) -> Call:
    return _auth("UserGet", pb.AuthUserGetRequest(name=name),
                 lambda r: User(name, tuple(r.roles)), True)


def c_user_list() -> Call:
    return _auth("UserList", pb.AuthUserListRequest(), lambda r: tuple(r.users), True)


def c_user_delete(name: str) -> Call:
    return _auth("UserDelete", pb.AuthUserDeleteRequest(name=name))


def c_user_change_password(name: str, password: str) -> Call:
    return _auth("UserChangePassword",
                 pb.AuthUserChangePasswordRequest(name=name, password=password))


def c_user_grant_role(user: str, role: str) -> Call:
    return _auth("UserGrantRole", pb.AuthUserGrantRoleRequest(user=user, role=role))


def c_user_revoke_role(user: str, role: str) -> Call:
    return _auth("UserRevokeRole", pb.AuthUserRevokeRoleRequest(name=user, role=role))


def c_role_add(name: str) -> Call:
    return _auth("RoleAdd", pb.AuthRoleAddRequest(name=name))


def c_role_get(name: str) -> Call:
    return _auth("RoleGet", pb.AuthRoleGetRequest(role=name),
                 lambda r: Role(name, tuple(permission(p) for p in r.perm)), True)


def c_role_list() -> Call:
    return _auth("RoleList", pb.AuthRoleListRequest(), lambda r: tuple(r.roles), True)


def c_role_delete(name: str) -> Call:
    return _auth("RoleDelete", pb.AuthRoleDeleteRequest(role=name))


def c_role_grant_permission(role: str, key: KeyLike, end: KeyLike | None, prefix: bool,
                            from_key: bool, perm: PermType | str) -> Call:
    k, e = key_range(key, end, prefix, from_key)
    p = auth_pb2.Permission(permType=int(_enum(PermType, perm, "perm")), key=k, range_end=e)
    return _auth("RoleGrantPermission", pb.AuthRoleGrantPermissionRequest(name=role, perm=p))


def c_role_revoke_permission(role: str, key: KeyLike, end: KeyLike | None, prefix: bool,
                             from_key: bool) -> Call:
    k, e = key_range(key, end, prefix, from_key)
    return _auth("RoleRevokePermission",
                 pb.AuthRoleRevokePermissionRequest(role=role, key=k, range_end=e))


# ---- watch ----------------------------------------------------------------------------------

class WatchState:
    """One watch's request and resume point, shared by the sync and asyncio watch.

    ``next_revision`` is the first revision the consumer has not seen yet: after a
    broken stream the watch is created again from there (0 before the first creation
    of a watch "from now on"). Events below it are dropped, so a resumed watch never
    repeats one; since the new watch starts at it, none is lost either (or the
    server says the revision was compacted: :class:`~errors.WatchCompacted`).
    """

    def __init__(self, key: KeyLike, end: KeyLike | None = None, *, prefix: bool = False,
                 from_key: bool = False, start_revision: int = 0, prev_kv: bool = False,
                 no_put: bool = False, no_delete: bool = False, progress_notify: bool = False):
        self.key, self.range_end = key_range(key, end, prefix, from_key)
        self.next_revision = max(int(start_revision), 0)
        self.prev_kv = prev_kv
        self.filters = [f for f, on in ((pb.WatchCreateRequest.NOPUT, no_put),
                                        (pb.WatchCreateRequest.NODELETE, no_delete)) if on]
        self.progress_notify = progress_notify
        self.created_once = False

    def create_request(self) -> pb.WatchRequest:
        return pb.WatchRequest(create_request=pb.WatchCreateRequest(
            key=self.key, range_end=self.range_end, start_revision=self.next_revision,
            progress_notify=self.progress_notify, filters=self.filters, prev_kv=self.prev_kv))

    @staticmethod
    def progress_request() -> pb.WatchRequest:
        return pb.WatchRequest(progress_request=pb.WatchProgressRequest())

    def handle(self, resp, endpoint: str | None = None) -> WatchResponse | None:
        """What to hand the consumer for one server response (None: nothing), or
        raises WatchCompacted / the cancel reason's error."""
        if resp.canceled:
            if resp.compact_revision:
                raise errors.WatchCompacted(resp.compact_revision, endpoint=endpoint)
            reason = resp.cancel_reason or "etcdserver: watch canceled"
            err = errors.from_status(None, reason, endpoint)
            if type(err) is errors.EtcdError:
                err = errors.WatchCanceled(reason, None, endpoint)
            raise err
        if resp.compact_revision:   # defensive: compacted without canceled
            raise errors.WatchCompacted(resp.compact_revision, endpoint=endpoint)
        if resp.created:
            self.created_once = True
            if self.next_revision == 0:
                # a watch "from now on" covers what comes after the store revision it
                # was created at; a resume must start right after it
                self.next_revision = resp.header.revision + 1
            if not resp.events:
                return None
        events = [e for e in resp.events if e.kv.mod_revision >= self.next_revision]
        if events:
            self.next_revision = events[-1].kv.mod_revision + 1
        elif resp.events:
            return None   # only repeats of events already handed out
        elif not self.filters:
            # a progress notification: every change up to the header revision was sent
            self.next_revision = max(self.next_revision, resp.header.revision + 1)
        return WatchResponse(header(resp.header), tuple(event(e) for e in events))


def watch_should_reconnect(code: grpc.StatusCode | None, details: str) -> bool:
    """A broken watch stream (member stopped, connection lost, no leader...) is created
    again on the next endpoint; an etcd error that is no transport trouble is not."""
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL,
                grpc.StatusCode.CANCELLED):
        return True
    if code == grpc.StatusCode.UNKNOWN and not (details or "").startswith("etcdserver:"):
        return True
    return False


STOP, RETRY, FAIL = "stop", "retry", "fail"


class WatchAttempts:
    """The reconnect bookkeeping of one watch's stream, shared by the blocking and the
    asyncio watch (which only open streams, authenticate and sleep when told)::

        wa = WatchAttempts(pool, auth)
        while the watch is open:
            i = pool.pick()
            try:
                open a stream to endpoint i, send state.create_request(); for each
                response: state.handle(it), and wa.created(i) once the server created it
                pool.failed(i)             # the server ended the stream: make it again
            except (grpc.RpcError, errors.EtcdError) as e:
                action, err = wa.failed(e, i, url, closed, state.next_revision)
                REAUTH: authenticate again (its error fails the watch), retry at once
                FAIL: hand err to the consumer and end; STOP: end (the watch is closed)
            sleep(wa.pause())              # RETRY, or the stream ended
    """

    def __init__(self, pool: EndpointPool, auth: AuthState):
        self.pool = pool
        self.auth = auth
        self.failures = 0
        self.reauthed = False

    def created(self, idx: int) -> None:
        """The server created the watch on endpoint ``idx``."""
        self.failures = 0
        self.reauthed = False
        self.pool.succeeded(idx)

    def failed(self, exc: BaseException, idx: int, url: str, closed: bool,
               next_revision: int) -> tuple[str, BaseException | None]:
        """What to do after the stream to endpoint ``idx`` raised ``exc`` (a
        ``grpc.RpcError`` or an :class:`~errors.EtcdError`): (RETRY, None),
        (REAUTH, None), (FAIL, the error for the consumer) or (STOP, None)."""
        if isinstance(exc, grpc.RpcError):
            if closed:
                return STOP, None
            code, details = exc.code(), exc.details() or ""
            if details in _REAUTH_MESSAGES and self.auth.has_credentials and not self.reauthed:
                self.reauthed = True
                return REAUTH, None
            if not watch_should_reconnect(code, details):
                return FAIL, errors.from_status(code, details, url)
            self.pool.failed(idx)
            log.debug("watch stream to %s broke (%s: %s); resuming at revision %d",
                      url, code, details, next_revision)
            return RETRY, None
        if isinstance(exc, (errors.Unavailable, errors.Timeout)):
            # no leader (cancel reason), or no endpoint answered the authentication
            if closed:
                return STOP, None
            self.pool.failed(idx)
            log.debug("watch on %s: %s; resuming at revision %d", url, exc, next_revision)
            return RETRY, None
        if isinstance(exc, (errors.PermissionDenied, errors.InvalidAuthToken,
                            errors.UserEmpty)):
            # etcd answers a watch made with a stale token "permission denied":
            # authenticate again, once, before believing it
            if closed:
                return STOP, None
            if not self.auth.has_credentials or self.reauthed:
                return FAIL, exc
            self.reauthed = True
            return REAUTH, None
        return FAIL, exc   # compacted, canceled, auth trouble

    def pause(self) -> float:
        """Seconds to wait before the next stream (0 until a whole round failed)."""
        self.failures += 1
        n = len(self.pool)
        return backoff((self.failures + n - 1) // n) if self.failures >= n else 0.0


def keepalive_interval(ttl: float) -> float:
    """etcd clientv3: the next keep-alive a third of the TTL after the last answer."""
    return max(ttl / 3.0, 0.1)
