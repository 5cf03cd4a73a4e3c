"""Who may do what: etcd 3.4's permission checks of each kind of request.

An identity (``AuthInfo``) is ``(user name, auth revision)``: the user a token
or a client certificate names, and the auth revision the member resolved it at
(a simple token or a certificate: the store's revision then; a JWT: the revision
it was issued at). ``None`` is a request without one (etcd's empty AuthInfo,
revision 0, which gets "user name is empty" wherever a check runs).

Every function here is a pure check against an :class:`~fastkv.auth.store.AuthStore`
(and the lessor, for keys attached to leases): it returns, or raises etcd's
error, and changes nothing. They run in two places, exactly as in etcd:

* where a change is applied (fastkv/apply.py, etcd's authApplierV3): the identity
  travels in the log entry, so every member decides alike, against the store as
  of that entry. A request authorised at an older auth revision than the store's
  is refused with "revision of auth store is old" (the client authenticates
  again): permissions never outlive a change of the auth store;
* where a read is served (Range, read-only Txn, Watch create, the auth store's
  own reads, maintenance): right before the read, in the same event-loop turn.

What each request needs (etcd 3.4: etcdserver/apply_auth.go, v3_server.go,
v3rpc/watch.go, v3rpc/maintenance.go, server.go):

* Range: read on [key, range_end). Put: write on key, write on every key already
  attached to its lease, read on key with prev_kv. DeleteRange: write on the
  range, read on it with prev_kv. Txn: read on every compare's range, then each
  op's own (range: read; put: write; delete: write, and read with prev_kv), in
  both branches, and in nested txns too (etcd 3.4.23 does not look inside a
  nested txn; later etcd versions do, and so does fastkv: a nested txn is no way
  around the permissions). Watch create: read on the watched key or range (a
  from-key watch is checked as its key alone, as etcd).
* LeaseRevoke: write on every key attached to the lease.
* Auth changes and the user and role lists: role root ("admin"); UserGet: admin
  or the user asking about itself; RoleGet: admin or a holder of the role.
* Member add/remove/update/promote: admin (etcd's checkMembershipOperationPermission).
* Hash, HashKV, Defragment, Snapshot: admin, with the auth package's own error
  texts and code Unknown (etcd's maintenance server returns them untranslated).
* Compact, Alarm, LeaseGrant, LeaseTimeToLive, LeaseLeases, LeaseKeepAlive,
  Status, MemberList, MoveLeader: no check in etcd 3.4; neither here.
"""
from __future__ import annotations

from fastkv import requests
from fastkv.errors import (ErrAuthOldRevision, ErrInvalidAuthToken, ErrPermissionDenied,
                           ErrUserEmpty, ErrUserNotFound, EtcdError, GrpcCode)

__all__ = ["AuthInfo", "check_range", "check_put", "check_delete_range", "check_txn",
           "check_lease_revoke", "check_admin", "check_admin_raw", "check_user_get",
           "check_role_get", "watch_refusal", "check_entry", "raw_auth_error", "ADMIN_OPS"]

AuthInfo = tuple  # (user name, auth revision); None: no identity

# AUTH log entries that need role root (etcd's needAdminPermission; Authenticate does not)
ADMIN_OPS = frozenset(requests.AUTH_OPS - {"authenticate"})


def _who(info) -> tuple[str, int]:
    return ("", 0) if info is None else info


def check_range(store, info, key: bytes, range_end: bytes = b"") -> None:
    user, rev = _who(info)
    store.is_range_permitted(user, key, range_end, revision=rev)


def _check_write(store, info, key: bytes, range_end: bytes = b"") -> None:
    user, rev = _who(info)
    if range_end:
        store.is_delete_range_permitted(user, key, range_end, revision=rev)
    else:
        store.is_put_permitted(user, key, revision=rev)


def _check_lease_keys(store, lessor, info, lease_id: int) -> None:
    """etcd's checkLeasePuts: write on every key already attached to the lease."""
    if not lease_id:
        return
    lease = lessor.lookup(lease_id)
    if lease is None:
        return
    user, rev = _who(info)
    for key in sorted(lease.keys):
        store.is_put_permitted(user, key, revision=rev)


def check_put(store, lessor, info, req: dict) -> None:
    key = req.get("key", b"")
    _check_write(store, info, key)
    _check_lease_keys(store, lessor, info, req.get("lease", 0))
    if req.get("prev_kv"):
        check_range(store, info, key)


def check_delete_range(store, info, req: dict) -> None:
    key, end = req.get("key", b""), req.get("range_end", b"")
    user, rev = _who(info)
    store.is_delete_range_permitted(user, key, end, revision=rev)
    if req.get("prev_kv"):
        check_range(store, info, key, end)


def _check_ops(store, info, ops) -> None:
    """etcd's checkTxnReqsPermission, recursing into nested txns."""
    for op in ops or ():
        r = op.get("request_range")
        if r is not None:
            check_range(store, info, r.get("key", b""), r.get("range_end", b""))
            continue
        p = op.get("request_put")
        if p is not None:
            _check_write(store, info, p.get("key", b""))
            continue
        d = op.get("request_delete_range")
        if d is not None:
            key, end = d.get("key", b""), d.get("range_end", b"")
            if d.get("prev_kv"):
                check_range(store, info, key, end)
            user, rev = _who(info)
            store.is_delete_range_permitted(user, key, end, revision=rev)
            continue
        t = op.get("request_txn")
        if t is not None:
            check_txn(store, info, t)


def check_txn(store, info, txn: dict) -> None:
    """etcd's checkTxnAuth: every compare's range readable, then each op's own check."""
    for c in txn.get("compare") or ():
        check_range(store, info, c.get("key", b""), c.get("range_end", b""))
    _check_ops(store, info, txn.get("success"))
    _check_ops(store, info, txn.get("failure"))


def check_lease_revoke(store, lessor, info, lease_id: int) -> None:
    _check_lease_keys(store, lessor, info, lease_id)


def check_admin(store, info) -> None:
    """etcd's IsAdminPermitted (no revision check): raises unless the user holds root."""
    store.is_admin(_who(info)[0])


# The auth package's own texts: what etcd's maintenance server (and its gateway) send
# for Hash, HashKV, Defragment and Snapshot, untranslated, with code Unknown.
_RAW_TEXT = {
    ErrUserEmpty: "auth: user name is empty",
    ErrUserNotFound: "auth: user not found",
    ErrPermissionDenied: "auth: permission denied",
    ErrInvalidAuthToken: "auth: invalid auth token",
    ErrAuthOldRevision: "auth: revision in header is old",
}


def raw_auth_error(err: EtcdError) -> EtcdError:
    """``err`` as etcd's maintenance server returns it (untranslated: code Unknown)."""
    for cls, text in _RAW_TEXT.items():
        if isinstance(err, cls):
            return EtcdError(text, GrpcCode.UNKNOWN)
    return err


def check_admin_raw(store, info) -> None:
    try:
        store.is_admin(_who(info)[0])
    except EtcdError as err:
        raise raw_auth_error(err) from None


def check_user_get(store, info, name: str) -> None:
    """etcd's authApplierV3.UserGet: admin, or asking about oneself."""
    try:
        check_admin(store, info)
    except EtcdError:
        if name != _who(info)[0]:
            raise


def check_role_get(store, info, role: str) -> None:
    """etcd's authApplierV3.RoleGet: admin, or holding the role."""
    try:
        check_admin(store, info)
    except EtcdError:
        if not store.has_role(_who(info)[0], role):
            raise


# v3rpc/watch.go: the cancel reason is the gRPC error's text.
_WATCH_REASON = {GrpcCode.INVALID_ARGUMENT: "InvalidArgument",
                 GrpcCode.UNAUTHENTICATED: "Unauthenticated"}


def watch_refusal(err: EtcdError) -> str:
    """The cancel_reason of a watch create refused with ``err`` (etcd maps every
    error but an invalid token, an old revision and an empty user to permission denied)."""
    if isinstance(err, (ErrInvalidAuthToken, ErrAuthOldRevision, ErrUserEmpty)):
        return f"rpc error: code = {_WATCH_REASON[err.code]} desc = {err.message}"
    return "rpc error: code = PermissionDenied desc = etcdserver: permission denied"


def check_watch_create(store, info, create: dict) -> None:
    """etcd's isWatchPermitted on the create request as its recvLoop normalises it:
    an empty key is b"\\0"; a range end of b"\\0" (from the key on) becomes empty, so
    the check is of the key alone."""
    key = create.get("key") or b"\0"
    end = create.get("range_end") or b""
    if end == b"\0":
        end = b""
    check_range(store, info, key, end)


def check_entry(store, lessor, kind: str, payload: dict, info) -> None:
    """The checks of etcd's authApplierV3 for a log entry about to be applied while
    auth is enabled; raises etcd's error (the entry then changes nothing)."""
    if kind == requests.PUT:
        check_put(store, lessor, info, payload)
    elif kind == requests.DELETE_RANGE:
        check_delete_range(store, info, payload)
    elif kind == requests.TXN:
        check_txn(store, info, payload)
    elif kind == requests.LEASE_REVOKE:
        if payload.get("expiry_term") is None:   # an expiry: the leader's own, as root
            check_lease_revoke(store, lessor, info, payload.get("ID", 0))
    elif kind == requests.AUTH:
        if payload.get("op") in ADMIN_OPS:
            check_admin(store, info)
