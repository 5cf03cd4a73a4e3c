"""Exceptions raised by :mod:`fastkv.client`.

Every error a server returns becomes an :class:`EtcdError` subclass that keeps
etcd's own message (``str(err)``, ``err.message``) and gRPC status code
(``err.code``). The class is chosen by the exact message first (etcd's messages
are a contract: ``etcdserver: mvcc: required revision has been compacted`` is
always :class:`Compacted`), then by the status code, so an unknown message still
lands in a sensible family (``except InvalidArgument``...).

Errors made by the client itself (no endpoint reachable, a lease that was lost,
a watch whose history was compacted) are subclasses too, so ``except EtcdError``
catches everything this package raises about the cluster.
"""
from __future__ import annotations

import re

import grpc

__all__ = [
    "EtcdError", "ClientClosed",
    "InvalidArgument", "NotFound", "AlreadyExists", "FailedPrecondition", "OutOfRange",
    "ResourceExhausted", "Unavailable", "Timeout", "Cancelled", "Internal", "DataLoss",
    "ConnectionFailed", "ConnectionLost", "NoLeader", "LeaderChanged", "RequestTimedOut",
    "NotLeader", "NotSupportedForLearner",
    "EmptyKey", "KeyNotFound", "TooManyOps", "DuplicateKey", "RequestTooLarge",
    "Compacted", "FutureRevision", "WatchCompacted", "WatchCanceled", "NoSpace",
    "TooManyRequests", "Corrupt",
    "LeaseError", "LeaseNotFound", "LeaseExists", "LeaseTTLTooLarge", "LeaseLost",
    "MemberError", "MemberExists", "PeerURLExists", "MemberNotFound", "MemberBadURLs",
    "MemberNotLearner", "LearnerNotReady", "TooManyLearners", "NotEnoughStartedMembers",
    "BadLeaderTransferee",
    "AuthError", "AuthFailed", "InvalidAuthToken", "PermissionDenied", "UserEmpty",
    "AuthNotEnabled", "AuthOldRevision", "UserExists", "UserNotFound", "RoleExists",
    "RoleNotFound", "RoleEmpty", "RoleNotGranted", "PermissionNotGranted", "RootUserNotExist",
    "RootRoleNotExist", "InvalidAuthManagement",
    "from_rpc_error",
]


class EtcdError(Exception):
    """Base class of every error of this package.

    ``message`` is the server's message (etcd's exact text, e.g.
    ``"etcdserver: requested lease not found"``); ``code`` the gRPC status code
    (``grpc.StatusCode``), or None for errors the client made up itself;
    ``endpoint`` the endpoint that answered, when known.
    """

    default_code: grpc.StatusCode | None = None

    def __init__(self, message: str = "", code: grpc.StatusCode | None = None,
                 endpoint: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code if code is not None else self.default_code
        self.endpoint = endpoint

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class ClientClosed(EtcdError):
    """The client (or the watch / lease) was closed before or during the call."""


# ---- families, one per gRPC status code -------------------------------------------------

class InvalidArgument(EtcdError):
    default_code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(EtcdError):
    default_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(EtcdError):
    default_code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(EtcdError):
    default_code = grpc.StatusCode.FAILED_PRECONDITION


class OutOfRange(EtcdError):
    default_code = grpc.StatusCode.OUT_OF_RANGE


class ResourceExhausted(EtcdError):
    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(EtcdError):
    """The cluster could not serve the request now (no connection, no leader, timeout
    inside the server...). Reads were already retried on the other endpoints."""
    default_code = grpc.StatusCode.UNAVAILABLE


class Timeout(EtcdError, TimeoutError):
    """The call's deadline passed (``timeout=`` of the client or of the call). For a
    write, the outcome is unknown: it may or may not have been applied."""
    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(EtcdError):
    default_code = grpc.StatusCode.CANCELLED


class Internal(EtcdError):
    default_code = grpc.StatusCode.INTERNAL


class DataLoss(EtcdError):
    default_code = grpc.StatusCode.DATA_LOSS


# ---- connection ----------------------------------------------------------------------------

class ConnectionFailed(Unavailable):
    """No endpoint could be connected to: the request was never sent (so it was not
    applied). Raised after every endpoint was tried."""


class ConnectionLost(Unavailable):
    """The connection broke after the request was sent. For a write (put, delete,
    txn, compact, lease grant, membership and auth changes) the outcome is unknown:
    the client does not resend it, because it may have been applied."""


class NoLeader(Unavailable):
    pass


class LeaderChanged(Unavailable):
    pass


class RequestTimedOut(Unavailable):
    """etcd's ``etcdserver: request timed out`` family (the server gave up waiting
    for the cluster; the write may still be applied later)."""


class NotSupportedForLearner(Unavailable):
    pass


class NotLeader(FailedPrecondition):
    pass


# ---- KV -------------------------------------------------------------------------------------

class EmptyKey(InvalidArgument):
    pass


class KeyNotFound(InvalidArgument):
    pass


class TooManyOps(InvalidArgument):
    pass


class DuplicateKey(InvalidArgument):
    pass


class RequestTooLarge(InvalidArgument):
    pass


class Compacted(OutOfRange):
    """The revision asked for has been compacted away."""


class FutureRevision(OutOfRange):
    pass


class WatchCompacted(Compacted):
    """A watch's start revision (or the revision it had to resume from after a
    reconnect) has been compacted: events between it and ``compact_revision`` are
    gone. Start a new watch from ``compact_revision`` (after re-reading the state)."""

    def __init__(self, compact_revision: int, message: str = "", endpoint: str | None = None):
        super().__init__(message or ("etcdserver: mvcc: required revision has been compacted"
                                     f" (compact revision {compact_revision})"),
                         grpc.StatusCode.OUT_OF_RANGE, endpoint)
        self.compact_revision = compact_revision


class WatchCanceled(EtcdError):
    """The server canceled the watch; ``message`` is its cancel reason."""
    default_code = grpc.StatusCode.CANCELLED


class NoSpace(ResourceExhausted):
    """``etcdserver: mvcc: database space exceeded`` (the NOSPACE alarm is raised:
    compact, defragment, then ``alarm_disarm()``)."""


class TooManyRequests(ResourceExhausted):
    pass


class Corrupt(DataLoss):
    pass


# ---- leases ---------------------------------------------------------------------------------

class LeaseError(EtcdError):
    pass


class LeaseNotFound(LeaseError, NotFound):
    pass


class LeaseExists(LeaseError, FailedPrecondition):
    pass


class LeaseTTLTooLarge(LeaseError, OutOfRange):
    pass


class LeaseLost(LeaseError):
    """A kept-alive lease is gone: it expired (keep-alives did not reach the cluster
    in time) or it was revoked. Keys attached to it are deleted."""


# ---- membership -----------------------------------------------------------------------------

class MemberError(EtcdError):
    pass


class MemberExists(MemberError, FailedPrecondition):
    pass


class PeerURLExists(MemberError, FailedPrecondition):
    pass


class MemberNotFound(MemberError, NotFound):
    pass


class MemberBadURLs(MemberError, InvalidArgument):
    pass


class MemberNotLearner(MemberError, FailedPrecondition):
    pass


class LearnerNotReady(MemberError, FailedPrecondition):
    pass


class TooManyLearners(MemberError, FailedPrecondition):
    pass


class NotEnoughStartedMembers(MemberError, FailedPrecondition):
    pass


class BadLeaderTransferee(MemberError, FailedPrecondition):
    pass


# ---- auth -----------------------------------------------------------------------------------

class AuthError(EtcdError):
    pass


class AuthFailed(AuthError, InvalidArgument):
    """Wrong user name or password."""


class InvalidAuthToken(AuthError):
    """The token expired or the server forgot it (restart). The client re-authenticates
    once by itself when it has a user and password."""
    default_code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(AuthError):
    default_code = grpc.StatusCode.PERMISSION_DENIED


class UserEmpty(AuthError, InvalidArgument):
    """``etcdserver: user name is empty``: auth is enabled and the request carried no
    credentials (no token, no client certificate)."""


class AuthNotEnabled(AuthError, FailedPrecondition):
    pass


class AuthOldRevision(AuthError, InvalidArgument):
    pass


class UserExists(AuthError, FailedPrecondition):
    pass


class UserNotFound(AuthError, FailedPrecondition):
    pass


class RoleExists(AuthError, FailedPrecondition):
    pass


class RoleNotFound(AuthError, FailedPrecondition):
    pass


class RoleEmpty(AuthError, InvalidArgument):
    pass


class RoleNotGranted(AuthError, FailedPrecondition):
    pass


class PermissionNotGranted(AuthError, FailedPrecondition):
    pass


class RootUserNotExist(AuthError, FailedPrecondition):
    pass


class RootRoleNotExist(AuthError, FailedPrecondition):
    pass


class InvalidAuthManagement(AuthError, InvalidArgument):
    pass


# ---- mapping --------------------------------------------------------------------------------

# etcd 3.4's messages (etcdserver/api/v3rpc/rpctypes/error.go), exactly.
_BY_MESSAGE: dict[str, type[EtcdError]] = {
    "etcdserver: key is not provided": EmptyKey,
    "etcdserver: key not found": KeyNotFound,
    "etcdserver: too many operations in txn request": TooManyOps,
    "etcdserver: duplicate key given in txn request": DuplicateKey,
    "etcdserver: mvcc: required revision has been compacted": Compacted,
    "etcdserver: mvcc: required revision is a future revision": FutureRevision,
    "etcdserver: mvcc: database space exceeded": NoSpace,
    "etcdserver: requested lease not found": LeaseNotFound,
    "etcdserver: lease already exists": LeaseExists,
    "etcdserver: too large lease TTL": LeaseTTLTooLarge,
    "etcdserver: watch canceled": WatchCanceled,
    "etcdserver: member ID already exist": MemberExists,
    "etcdserver: Peer URLs already exists": PeerURLExists,
    "etcdserver: re-configuration failed due to not enough started members":
        NotEnoughStartedMembers,
    "etcdserver: given member URLs are invalid": MemberBadURLs,
    "etcdserver: member not found": MemberNotFound,
    "etcdserver: can only promote a learner member": MemberNotLearner,
    "etcdserver: can only promote a learner member which is in sync with leader":
        LearnerNotReady,
    "etcdserver: too many learner members in cluster": TooManyLearners,
    "etcdserver: request is too large": RequestTooLarge,
    "etcdserver: too many requests": TooManyRequests,
    "etcdserver: root user does not exist": RootUserNotExist,
    "etcdserver: root user does not have root role": RootRoleNotExist,
    "etcdserver: user name already exists": UserExists,
    "etcdserver: user name is empty": UserEmpty,
    "etcdserver: user name not found": UserNotFound,
    "etcdserver: role name already exists": RoleExists,
    "etcdserver: role name not found": RoleNotFound,
    "etcdserver: role name is empty": RoleEmpty,
    "etcdserver: authentication failed, invalid user ID or password": AuthFailed,
    "etcdserver: permission denied": PermissionDenied,
    "etcdserver: role is not granted to the user": RoleNotGranted,
    "etcdserver: permission is not granted to the role": PermissionNotGranted,
    "etcdserver: authentication is not enabled": AuthNotEnabled,
    "etcdserver: invalid auth token": InvalidAuthToken,
    "etcdserver: invalid auth management": InvalidAuthManagement,
    "etcdserver: revision of auth store is old": AuthOldRevision,
    "etcdserver: no leader": NoLeader,
    "etcdserver: not leader": NotLeader,
    "etcdserver: leader changed": LeaderChanged,
    "etcdserver: not capable": Unavailable,
    "etcdserver: server stopped": Unavailable,
    "etcdserver: request timed out": RequestTimedOut,
    "etcdserver: request timed out, possibly due to previous leader failure": RequestTimedOut,
    "etcdserver: request timed out, possibly due to connection lost": RequestTimedOut,
    "etcdserver: request timed out, waiting for the applied index took too long":
        RequestTimedOut,
    "etcdserver: unhealthy cluster": Unavailable,
    "etcdserver: corrupt cluster": Corrupt,
    "etcdserver: rpc not supported for learner": NotSupportedForLearner,
    "etcdserver: bad leader transferee": BadLeaderTransferee,
}

_BY_CODE: dict[grpc.StatusCode, type[EtcdError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRange,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: ConnectionLost,   # transport errors; etcd's have messages
    grpc.StatusCode.DEADLINE_EXCEEDED: Timeout,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: InvalidAuthToken,
    grpc.StatusCode.INTERNAL: Internal,
    grpc.StatusCode.DATA_LOSS: DataLoss,
}

# grpc-core's words for "there was no connection to send the request on" (etcd's
# "there is no connection available"): the request never left this process.
_NOT_SENT_MARKERS = (
    "failed to connect to all addresses",
    "dns resolution failed",
    "failed to connect to remote host",
    "connection refused",
    "empty address list",
    "name resolution failure",
)


def is_not_sent(code: grpc.StatusCode | None, details: str) -> bool:
    """True when an UNAVAILABLE error says no connection could be made: the request
    was never sent, so even a write may go to another endpoint."""
    if code != grpc.StatusCode.UNAVAILABLE:
        return False
    d = (details or "").lower()
    return any(m in d for m in _NOT_SENT_MARKERS)


def from_rpc_error(err: grpc.RpcError, endpoint: str | None = None) -> EtcdError:
    """The EtcdError for a failed gRPC call (sync or asyncio)."""
    code = err.code() if hasattr(err, "code") else None
    details = (err.details() if hasattr(err, "details") else None) or ""
    return from_status(code, details, endpoint)


def _go_status(text: str) -> tuple[grpc.StatusCode | None, str] | None:
    """A Go gRPC status error's text ("rpc error: code = Unauthenticated desc = ..."),
    as etcd puts it in a watch's cancel reason: (code, message)."""
    m = _GO_STATUS.match(text)
    if m is None:
        return None
    name = re.sub(r"(?<!^)(?=[A-Z])", "_", m.group(1)).upper()
    name = {"CANCELED": "CANCELLED"}.get(name, name)
    return getattr(grpc.StatusCode, name, None), m.group(2)


_GO_STATUS = re.compile(r"^rpc error: code = (\w+) desc = (.*)$", re.S)


def from_status(code: grpc.StatusCode | None, details: str,
                endpoint: str | None = None) -> EtcdError:
    go = _go_status(details or "")
    if go is not None:
        code, details = go[0] or code, go[1]
    cls = _BY_MESSAGE.get(details)
    if cls is None and details.startswith("etcdserver: request timed out"):
        cls = RequestTimedOut
    if cls is None:
        if is_not_sent(code, details):
            cls = ConnectionFailed
        elif code == grpc.StatusCode.UNAVAILABLE and details.startswith("etcdserver:"):
            cls = Unavailable
        else:
            cls = _BY_CODE.get(code, EtcdError)
    message = details or (code.name if code is not None else "unknown error")
    if endpoint and cls in (ConnectionFailed, ConnectionLost):
        message = f"{message} (endpoint {endpoint})"
    return cls(message, code, endpoint)
