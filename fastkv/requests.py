"""The bytes of a log entry: (request id, kind, payload), marshal-encoded.

marshal is the fastest codec CPython has for dicts of bytes/ints/bools and is
stable within a marshal version (we pin version 4). Log data only ever comes
from this member's own WAL (CRC-checked) or, with a cluster, from authenticated
peers of the same cluster.
"""
from __future__ import annotations

import marshal

MARSHAL_VERSION = 4

# The kinds of change that travel through the log.
PUT = "put"
DELETE_RANGE = "delete_range"
TXN = "txn"
COMPACTION = "compaction"
LEASE_GRANT = "lease_grant"
LEASE_REVOKE = "lease_revoke"
MEMBER_ATTR = "member_attr"   # a member publishes its name and client URLs (etcd's publish)
ALARM = "alarm"               # raise or clear an alarm (AlarmRequest ACTIVATE/DEACTIVATE)
AUTH = "auth"                 # {"op": an AuthStore change, "req": its request dict}
V2 = "v2"                     # a v2 keys request (fastkv/v2store/apply.py)
KINDS = frozenset({PUT, DELETE_RANGE, TXN, COMPACTION, LEASE_GRANT, LEASE_REVOKE, MEMBER_ATTR,
                   ALARM, AUTH, V2})
# The AuthStore methods an AUTH entry may name (anything else is refused when applied).
AUTH_OPS = frozenset({"auth_enable", "auth_disable", "authenticate", "user_add", "user_delete",
                      "user_change_password", "user_grant_role", "user_revoke_role",
                      "role_add", "role_delete", "role_grant_permission",
                      "role_revoke_permission"})


def encode(req_id: int, kind: str, payload: dict, auth: tuple | None = None) -> bytes:
    """``auth`` is the proposer's identity, ``(user name, auth revision)`` (etcd's
    RequestHeader.Username and AuthRevision), for the checks made when the entry is
    applied; left out when the request carries none."""
    if auth is None:
        return marshal.dumps((req_id, kind, payload), MARSHAL_VERSION)
    return marshal.dumps((req_id, kind, payload, tuple(auth)), MARSHAL_VERSION)


def decode(data: bytes) -> tuple[int, str, dict]:
    t = marshal.loads(data)
    return t[0], t[1], t[2]


def decode_with_auth(data: bytes) -> tuple[int, str, dict, tuple | None]:
    """(request id, kind, payload, identity or None)."""
    t = marshal.loads(data)
    if len(t) == 3:
        return t[0], t[1], t[2], None
    return t[0], t[1], t[2], t[3]
