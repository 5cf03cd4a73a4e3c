"""fastkv.client: a Python etcd v3 client, blocking (:class:`Client`) and asyncio
(:class:`AsyncClient`), for fastkv and etcd 3.4 alike.

    from fastkv.client import Client

    with Client("http://127.0.0.1:2379") as c:
        c.put("greeting", "hello")
        print(c.get("greeting").text)

See docs/client.md for the guide and the API reference.
"""
from . import errors
from ._requests import prefix_end
from ._types import (Alarm, AlarmType, DeleteResult, Event, EventType, HashKV, Header,
                     KeyValue, LeaseGrant, LeaseInfo, Member, MemberAddResult, Permission,
                     PermType, PutResult, RangeResult, Role, SortOrder, SortTarget, Status,
                     TxnResult, User, WatchResponse)
from .aio import AsyncClient, AsyncLease, AsyncWatch
from .errors import (AuthError, AuthFailed, Compacted, ConnectionFailed, ConnectionLost,
                     EtcdError, InvalidAuthToken, LeaseLost, LeaseNotFound, NoSpace,
                     PermissionDenied, Timeout, Unavailable, WatchCompacted)
from .sync import Client, Lease, Watch
from .txn import (AsyncTxn, Compare, Op, Txn, TxnOp, create_revision, delete_op, get_op,
                  lease, mod_revision, put_op, txn_op, value, version)

__all__ = [
    # clients
    "Client", "AsyncClient", "Lease", "AsyncLease", "Watch", "AsyncWatch",
    # transactions
    "Txn", "AsyncTxn", "TxnOp", "Compare", "Op", "value", "version", "create_revision",
    "mod_revision", "lease", "put_op", "get_op", "delete_op", "txn_op",
    # results
    "Header", "KeyValue", "Event", "EventType", "PutResult", "RangeResult", "DeleteResult",
    "TxnResult", "LeaseGrant", "LeaseInfo", "Member", "MemberAddResult", "Status", "Alarm",
    "AlarmType", "HashKV", "Permission", "PermType", "User", "Role", "WatchResponse",
    "SortOrder", "SortTarget",
    # helpers and errors
    "prefix_end", "errors", "EtcdError", "Unavailable", "ConnectionFailed", "ConnectionLost",
    "Timeout", "Compacted", "WatchCompacted", "NoSpace", "LeaseNotFound", "LeaseLost",
    "AuthError", "AuthFailed", "InvalidAuthToken", "PermissionDenied",
]
