"""Errors, typed once, with etcd 3.4's gRPC codes and exact messages.

Every API adapter maps an :class:`EtcdError` to its wire format: the v3 JSON
gateway as ``{"error", "message", "code"}`` with the HTTP status grpc-gateway
uses for the code; gRPC (a later issue) as the status code and message.
Clients match on these strings, so they are copied from etcd, not paraphrased.
"""
from __future__ import annotations


class GrpcCode:
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# grpc-gateway's runtime.HTTPStatusFromCode, which etcd's JSON gateway uses.
HTTP_STATUS_FOR_GRPC_CODE = {
    GrpcCode.OK: 200,
    GrpcCode.CANCELLED: 408,
    GrpcCode.UNKNOWN: 500,
    GrpcCode.INVALID_ARGUMENT: 400,
    GrpcCode.DEADLINE_EXCEEDED: 504,
    GrpcCode.NOT_FOUND: 404,
    GrpcCode.ALREADY_EXISTS: 409,
    GrpcCode.PERMISSION_DENIED: 403,
    GrpcCode.UNAUTHENTICATED: 401,
    GrpcCode.RESOURCE_EXHAUSTED: 429,
    GrpcCode.FAILED_PRECONDITION: 412,  # grpc-gateway answers 412 (checked against etcd)
    GrpcCode.ABORTED: 409,
    GrpcCode.OUT_OF_RANGE: 400,
    GrpcCode.UNIMPLEMENTED: 501,
    GrpcCode.INTERNAL: 500,
    GrpcCode.UNAVAILABLE: 503,
    GrpcCode.DATA_LOSS: 500,
}


class EtcdError(Exception):
    """An error a client sees: a gRPC code and etcd's message."""

    code: int = GrpcCode.UNKNOWN
    message: str = "etcdserver: unknown error"

    def __init__(self, message: str | None = None, code: int | None = None):
        if message is not None:
            self.message = message
        if code is not None:
            self.code = code
        super().__init__(self.message)

    @property
    def http_status(self) -> int:
        return HTTP_STATUS_FOR_GRPC_CODE.get(self.code, 500)

    def __eq__(self, other):  # two errors are the same if a client can't tell them apart
        return (isinstance(other, EtcdError) and other.code == self.code
                and other.message == self.message)

    def __hash__(self):
        return hash((self.code, self.message))


def _error(name: str, code: int, message: str) -> type[EtcdError]:
    return type(name, (EtcdError,), {"code": code, "message": message})


C = GrpcCode
# Request validation
ErrEmptyKey = _error("ErrEmptyKey", C.INVALID_ARGUMENT, "etcdserver: key is not provided")
ErrKeyNotFound = _error("ErrKeyNotFound", C.INVALID_ARGUMENT, "etcdserver: key not found")
ErrValueProvided = _error("ErrValueProvided", C.INVALID_ARGUMENT, "etcdserver: value is provided")
ErrLeaseProvided = _error("ErrLeaseProvided", C.INVALID_ARGUMENT, "etcdserver: lease is provided")
ErrTooManyOps = _error("ErrTooManyOps", C.INVALID_ARGUMENT,
                       "etcdserver: too many operations in txn request")
ErrDuplicateKey = _error("ErrDuplicateKey", C.INVALID_ARGUMENT,
                         "etcdserver: duplicate key given in txn request")
ErrRequestTooLarge = _error("ErrRequestTooLarge", C.INVALID_ARGUMENT,
                            "etcdserver: request is too large")
# etcd 3.4 maps this one (and ErrMemberNotEnoughStarted) to its client-side error
# type, which carries no gRPC status: clients see code Unknown with the message.
ErrTooManyRequests = _error("ErrTooManyRequests", C.UNKNOWN,
                            "etcdserver: too many requests")
# MVCC
ErrCompacted = _error("ErrCompacted", C.OUT_OF_RANGE,
                      "etcdserver: mvcc: required revision has been compacted")
ErrFutureRev = _error("ErrFutureRev", C.OUT_OF_RANGE,
                      "etcdserver: mvcc: required revision is a future revision")
ErrNoSpace = _error("ErrNoSpace", C.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded")
# Leases
ErrLeaseNotFound = _error("ErrLeaseNotFound", C.NOT_FOUND, "etcdserver: requested lease not found")
ErrLeaseExist = _error("ErrLeaseExist", C.FAILED_PRECONDITION, "etcdserver: lease already exists")
ErrLeaseTTLTooLarge = _error("ErrLeaseTTLTooLarge", C.OUT_OF_RANGE, "etcdserver: too large lease TTL")
# Watch
ErrWatchCanceled = _error("ErrWatchCanceled", C.CANCELLED, "etcdserver: watch canceled")
# Server state
ErrNoLeader = _error("ErrNoLeader", C.UNAVAILABLE, "etcdserver: no leader")
ErrNotLeader = _error("ErrNotLeader", C.FAILED_PRECONDITION, "etcdserver: not leader")
ErrLeaderChanged = _error("ErrLeaderChanged", C.UNAVAILABLE, "etcdserver: leader changed")
ErrStopped = _error("ErrStopped", C.UNAVAILABLE, "etcdserver: server stopped")
ErrTimeout = _error("ErrTimeout", C.UNAVAILABLE, "etcdserver: request timed out")
ErrCorrupt = _error("ErrCorrupt", C.DATA_LOSS, "etcdserver: corrupt cluster")
ErrUnhealthy = _error("ErrUnhealthy", C.UNAVAILABLE, "etcdserver: unhealthy cluster")
ErrTimeoutDueToLeaderFail = _error("ErrTimeoutDueToLeaderFail", C.UNAVAILABLE,
                                   "etcdserver: request timed out, possibly due to previous leader failure")
ErrTimeoutDueToConnectionLost = _error("ErrTimeoutDueToConnectionLost", C.UNAVAILABLE,
                                       "etcdserver: request timed out, possibly due to connection lost")
ErrLeaderTransferNotLeader = ErrNotLeader
# Membership (etcd's rpctypes; v2 maps them to its own statuses)
ErrMemberExist = _error("ErrMemberExist", C.FAILED_PRECONDITION, "etcdserver: member ID already exist")
ErrPeerURLExist = _error("ErrPeerURLExist", C.FAILED_PRECONDITION,
                         "etcdserver: Peer URLs already exists")
ErrMemberNotEnoughStarted = _error("ErrMemberNotEnoughStarted", C.UNKNOWN,
                                   "etcdserver: re-configuration failed due to not enough "
                                   "started members")
ErrMemberBadURLs = _error("ErrMemberBadURLs", C.INVALID_ARGUMENT,
                          "etcdserver: given member URLs are invalid")
ErrMemberNotFound = _error("ErrMemberNotFound", C.NOT_FOUND, "etcdserver: member not found")
ErrMemberNotLearner = _error("ErrMemberNotLearner", C.FAILED_PRECONDITION,
                             "etcdserver: can only promote a learner member")
ErrLearnerNotReady = _error("ErrLearnerNotReady", C.FAILED_PRECONDITION,
                            "etcdserver: can only promote a learner member which is in sync "
                            "with leader")
ErrTooManyLearners = _error("ErrTooManyLearners", C.FAILED_PRECONDITION,
                            "etcdserver: too many learner members in cluster")
ErrNotSupportedForLearner = _error("ErrNotSupportedForLearner", C.UNAVAILABLE,
                                   "etcdserver: rpc not supported for learner")
ErrBadLeaderTransferee = _error("ErrBadLeaderTransferee", C.FAILED_PRECONDITION,
                                "etcdserver: bad leader transferee")
# Raft core (fastkv/raft/core.py). etcd's raft.ErrProposalDropped surfaces to clients
# as an unknown gRPC error carrying raft's own text.
ErrProposalDropped = _error("ErrProposalDropped", C.UNKNOWN, "raft proposal dropped")
ErrConfChangePending = _error("ErrConfChangePending", C.FAILED_PRECONDITION,
                              "raft: a configuration change is already pending; "
                              "retry once it is applied")
# Auth (enforced in the security issue; the strings are fixed now)
ErrPermissionDenied = _error("ErrPermissionDenied", C.PERMISSION_DENIED,
                             "etcdserver: permission denied")
ErrInvalidAuthToken = _error("ErrInvalidAuthToken", C.UNAUTHENTICATED,
                             "etcdserver: invalid auth token")
ErrAuthNotEnabled = _error("ErrAuthNotEnabled", C.FAILED_PRECONDITION,
                           "etcdserver: authentication is not enabled")
del C


def error_named(name: str, code: int, message: str) -> EtcdError:
    """Rebuild an error that crossed the peer transport as (class name, code, message),
    as its own class when this member knows it (handlers match on classes)."""
    todo = [EtcdError]
    while todo:
        cls = todo.pop()
        if cls.__name__ == name and cls.message == message:
            return cls()
        todo.extend(cls.__subclasses__())
    return EtcdError(message, code)


def invalid_argument(message: str) -> EtcdError:
    """A decoding error (bad JSON, bad base64, wrong type): code 3 with the given text."""
    return EtcdError(message, GrpcCode.INVALID_ARGUMENT)


class StorageCorruption(Exception):
    """On-disk state that cannot be trusted (not a torn tail): the member must not start."""


# Auth store (fastkv/auth/store.py): etcd 3.4's rpctypes for auth.ErrXxx (v3rpc/util.go's
# toGRPCErrorMap). ErrPermissionDenied, ErrInvalidAuthToken and ErrAuthNotEnabled are above.
ErrRootUserNotExist = _error("ErrRootUserNotExist", GrpcCode.FAILED_PRECONDITION,
                             "etcdserver: root user does not exist")
ErrRootRoleNotExist = _error("ErrRootRoleNotExist", GrpcCode.FAILED_PRECONDITION,
                             "etcdserver: root user does not have root role")
ErrUserAlreadyExist = _error("ErrUserAlreadyExist", GrpcCode.FAILED_PRECONDITION,
                             "etcdserver: user name already exists")
ErrUserEmpty = _error("ErrUserEmpty", GrpcCode.INVALID_ARGUMENT, "etcdserver: user name is empty")
ErrUserNotFound = _error("ErrUserNotFound", GrpcCode.FAILED_PRECONDITION,
                         "etcdserver: user name not found")
ErrRoleAlreadyExist = _error("ErrRoleAlreadyExist", GrpcCode.FAILED_PRECONDITION,
                             "etcdserver: role name already exists")
ErrRoleNotFound = _error("ErrRoleNotFound", GrpcCode.FAILED_PRECONDITION,
                         "etcdserver: role name not found")
ErrRoleEmpty = _error("ErrRoleEmpty", GrpcCode.INVALID_ARGUMENT, "etcdserver: role name is empty")
ErrAuthFailed = _error("ErrAuthFailed", GrpcCode.INVALID_ARGUMENT,
                       "etcdserver: authentication failed, invalid user ID or password")
ErrRoleNotGranted = _error("ErrRoleNotGranted", GrpcCode.FAILED_PRECONDITION,
                           "etcdserver: role is not granted to the user")
ErrPermissionNotGranted = _error("ErrPermissionNotGranted", GrpcCode.FAILED_PRECONDITION,
                                 "etcdserver: permission is not granted to the role")
ErrInvalidAuthMgmt = _error("ErrInvalidAuthMgmt", GrpcCode.INVALID_ARGUMENT,
                            "etcdserver: invalid auth management")
ErrAuthOldRevision = _error("ErrAuthOldRevision", GrpcCode.INVALID_ARGUMENT,
                            "etcdserver: revision of auth store is old")
# etcd 3.4 has no rpctypes entry for auth.ErrNoPasswordUser: togRPCError passes it on as
# codes.Unknown with the auth package's own text.
ErrNoPasswordUser = _error("ErrNoPasswordUser", GrpcCode.UNKNOWN,
                           "auth: authentication failed, password was given for no password user")
# etcd 3.5's answer to a grant without a permission (3.4's apply dereferenced nil and panicked).
ErrPermissionNotGiven = _error("ErrPermissionNotGiven", GrpcCode.INVALID_ARGUMENT,
                               "etcdserver: permission not given")
