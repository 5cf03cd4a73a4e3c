"""Request checks done before a request is proposed (etcd 3.4's v3rpc/key.go).

They look only at the request, never at the state: what they reject never
reaches the log. State-dependent errors (ErrKeyNotFound for ignore_value on a
missing key, ErrLeaseNotFound, ErrCompacted...) are raised when applying, by
:class:`fastkv.mvcc.store.KVStore`.
"""
from __future__ import annotations

from fastkv.errors import (
    ErrDuplicateKey, ErrEmptyKey, ErrKeyNotFound, ErrLeaseProvided, ErrTooManyOps,
    ErrValueProvided,
)

__all__ = ["check_range", "check_put", "check_delete_range", "check_txn", "DEFAULT_MAX_TXN_OPS"]

DEFAULT_MAX_TXN_OPS = 128  # etcd's --max-txn-ops default


def check_range(req: dict) -> None:
    if not req.get("key"):
        raise ErrEmptyKey()


def check_put(req: dict) -> None:
    if not req.get("key"):
        raise ErrEmptyKey()
    if req.get("ignore_value") and req.get("value"):
        raise ErrValueProvided()
    if req.get("ignore_lease") and req.get("lease"):
        raise ErrLeaseProvided()


def check_delete_range(req: dict) -> None:
    if not req.get("key"):
        raise ErrEmptyKey()


def check_txn(req: dict, max_txn_ops: int = DEFAULT_MAX_TXN_OPS) -> None:
    """etcd's checkTxnRequest, then checkIntervals on success and failure."""
    _check_txn_ops(req, max_txn_ops)
    _check_intervals(req.get("success") or ())
    _check_intervals(req.get("failure") or ())


def _check_txn_ops(req: dict, max_txn_ops: int) -> None:
    compare = req.get("compare") or ()
    success = req.get("success") or ()
    failure = req.get("failure") or ()
    opc = max(len(compare), len(success), len(failure))
    if opc > max_txn_ops:
        raise ErrTooManyOps()
    for c in compare:
        if not c.get("key"):
            raise ErrEmptyKey()
    # as etcd: a nested txn may use what the outer level left of the budget
    for op in success:
        _check_op(op, max_txn_ops - opc)
    for op in failure:
        _check_op(op, max_txn_ops - opc)


def _check_op(op: dict, max_txn_ops: int) -> None:
    r = op.get("request_range")
    if r is not None:
        return check_range(r)
    r = op.get("request_put")
    if r is not None:
        return check_put(r)
    r = op.get("request_delete_range")
    if r is not None:
        return check_delete_range(r)
    r = op.get("request_txn")
    if r is not None:
        return _check_txn_ops(r, max_txn_ops)
    raise ErrKeyNotFound()  # an empty RequestOp: etcd answers "key not found"


# --- put/delete overlap check (etcd's checkIntervals) ----------------------
#
# A delete covers [key, range_end) or the point [key, key+"\0") when range_end
# is empty. As in etcd's adt.StringAffineComparable, an empty end compares above
# every key; a range_end of "\0" is compared as the string "\0" (etcd does not
# translate it here), so such a delete overlaps no put.

def _covers(dels: list, k: bytes) -> bool:
    pk_end = k + b"\0"
    for begin, end in dels:
        # interval [begin, end) intersects the point [k, k+"\0")
        if (not end or k < end) and begin < pk_end:
            return True
    return False


def _check_intervals(ops) -> tuple[set, list]:
    dels: list = []
    for op in ops:
        d = op.get("request_delete_range")
        if d is None:
            continue
        key = d.get("key", b"")
        end = d.get("range_end") or b""
        dels.append((key, end) if end else (key, key + b"\0"))

    puts: set = set()
    for op in ops:
        t = op.get("request_txn")
        if t is None:
            continue
        puts_then, dels_then = _check_intervals(t.get("success") or ())
        puts_else, dels_else = _check_intervals(t.get("failure") or ())
        for k in puts_then:
            if k in puts or _covers(dels, k):
                raise ErrDuplicateKey()
            puts.add(k)
        for k in puts_else:
            # then and else exclude each other: the same key in both is fine
            if (k in puts and k not in puts_then) or _covers(dels, k):
                raise ErrDuplicateKey()
            puts.add(k)
        dels.extend(dels_then)
        dels.extend(dels_else)

    for op in ops:
        p = op.get("request_put")
        if p is None:
            continue
        k = p.get("key", b"")
        if k in puts or _covers(dels, k):
            raise ErrDuplicateKey()
        puts.add(k)
    return puts, dels


def txn_is_read_only(req: dict) -> bool:
    """True if no branch of the txn (nested ones included) writes: etcd's isTxnReadonly.

    The server answers such a txn like a read, without a log entry."""
    for branch in ("success", "failure"):
        for op in req.get(branch) or ():
            if "request_put" in op or "request_delete_range" in op:
                return False
            nested = op.get("request_txn")
            if nested is not None and not txn_is_read_only(nested):
                return False
    return True
