"""Transactions: comparisons, operations, and the ``if_/then/else_`` builder.

    from fastkv.client import value, version, put_op, get_op

    result = (client.txn()
              .if_(value("config") == "v1", version("lock") == 0)
              .then(put_op("config", "v2"), get_op("config"))
              .else_(get_op("config"))
              .commit())

A comparison is made by comparing a *target* of a key (``value``, ``version``,
``create_revision``, ``mod_revision``, ``lease``) with ``==``, ``!=``, ``<`` or
``>``. A missing key has version, create and mod revision 0 (so
``create_revision(k) == 0`` means "k does not exist"), and its value compares
as not equal to anything.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Iterable, Union

from fastkv.proto.etcdserverpb import rpc_pb2 as pb

from ._requests import (KeyLike, delete_request, key_range, put_request, range_request,
                        to_bytes)

if TYPE_CHECKING:
    from ._types import SortOrder, SortTarget, TxnResult

__all__ = ["Compare", "value", "version", "create_revision", "mod_revision", "lease",
           "Op", "put_op", "get_op", "delete_op", "txn_op", "TxnOp", "Txn", "AsyncTxn"]

_RESULT = {"==": pb.Compare.EQUAL, ">": pb.Compare.GREATER, "<": pb.Compare.LESS,
           "!=": pb.Compare.NOT_EQUAL}


@dataclasses.dataclass(frozen=True, slots=True)
class Compare:
    """One comparison of a transaction (made by ``value(k) == v`` and friends)."""
    target: str          # "value", "version", "create", "mod", "lease"
    op: str              # "==", "!=", "<", ">"
    key: bytes
    operand: Any
    range_end: bytes = b""

    def to_pb(self) -> pb.Compare:
        c = pb.Compare(result=_RESULT[self.op], key=self.key, range_end=self.range_end)
        if self.target == "value":
            c.target = pb.Compare.VALUE
            c.value = self.operand
        elif self.target == "version":
            c.target = pb.Compare.VERSION
            c.version = self.operand
        elif self.target == "create":
            c.target = pb.Compare.CREATE
            c.create_revision = self.operand
        elif self.target == "mod":
            c.target = pb.Compare.MOD
            c.mod_revision = self.operand
        else:
            c.target = pb.Compare.LEASE
            c.lease = self.operand
        return c


class _Target:
    """A key's value / version / revision / lease, waiting to be compared."""
    __slots__ = ("_target", "_key", "_end")
    __hash__ = None   # comparison operators build Compare objects

    def __init__(self, target: str, key: KeyLike, end: KeyLike | None, prefix: bool):
        self._target = target
        self._key, self._end = key_range(key, end, prefix)

    def _cmp(self, op: str, other) -> Compare:
        if self._target == "value":
            operand = to_bytes(other, "value")
        else:
            if isinstance(other, bool) or not isinstance(other, int):
                raise TypeError(f"{self._target} compares with an int, not {other!r}")
            operand = other
        return Compare(self._target, op, self._key, operand, self._end)

    def __eq__(self, other) -> Compare:   # type: ignore[override]
        return self._cmp("==", other)

    def __ne__(self, other) -> Compare:   # type: ignore[override]
        return self._cmp("!=", other)

    def __lt__(self, other) -> Compare:
        return self._cmp("<", other)

    def __gt__(self, other) -> Compare:
        return self._cmp(">", other)

    def __le__(self, other):
        raise TypeError("etcd compares with ==, !=, < and > only")

    __ge__ = __le__

    def __repr__(self) -> str:
        return f"{self._target}({self._key!r})"


def value(key: KeyLike, end: KeyLike | None = None, *, prefix: bool = False) -> _Target:
    """The key's value: ``value("k") == "v"``."""
    return _Target("value", key, end, prefix)


def version(key: KeyLike, end: KeyLike | None = None, *, prefix: bool = False) -> _Target:
    """The key's version (changes since creation; 0: absent): ``version("k") > 0``."""
    return _Target("version", key, end, prefix)


def create_revision(key: KeyLike, end: KeyLike | None = None, *,
                    prefix: bool = False) -> _Target:
    """The revision that created the key (0: absent): ``create_revision("k") == 0``."""
    return _Target("create", key, end, prefix)


def mod_revision(key: KeyLike, end: KeyLike | None = None, *, prefix: bool = False) -> _Target:
    """The revision of the key's last change: ``mod_revision("k") < 5``."""
    return _Target("mod", key, end, prefix)


def lease(key: KeyLike, end: KeyLike | None = None, *, prefix: bool = False) -> _Target:
    """The lease the key is attached to (0: none): ``lease("k") == lease_id``."""
    return _Target("lease", key, end, prefix)


# ---- operations -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class Op:
    """One operation of a transaction branch (made by put_op/get_op/delete_op/txn_op)."""
    request: Any   # a RangeRequest, PutRequest, DeleteRangeRequest or TxnRequest

    def to_pb(self) -> pb.RequestOp:
        r = self.request
        if isinstance(r, pb.RangeRequest):
            return pb.RequestOp(request_range=r)
        if isinstance(r, pb.PutRequest):
            return pb.RequestOp(request_put=r)
        if isinstance(r, pb.DeleteRangeRequest):
            return pb.RequestOp(request_delete_range=r)
        return pb.RequestOp(request_txn=r)


def put_op(key: KeyLike, value: KeyLike, *, lease: int | None = None, prev_kv: bool = False,
           ignore_value: bool = False, ignore_lease: bool = False) -> Op:
    """A put in a transaction (its result: PutResult)."""
    return Op(put_request(key, value, lease=lease, prev_kv=prev_kv, ignore_value=ignore_value,
                          ignore_lease=ignore_lease))


def get_op(key: KeyLike, end: KeyLike | None = None, *, prefix: bool = False,
           from_key: bool = False, limit: int = 0, revision: int = 0,
           sort_order: "SortOrder | str | None" = None,
           sort_target: "SortTarget | str | None" = None, keys_only: bool = False,
           count_only: bool = False, serializable: bool = False) -> Op:
    """A range read in a transaction (its result: RangeResult); same arguments as
    ``Client.range``."""
    return Op(range_request(key, end, prefix=prefix, from_key=from_key, limit=limit,
                            revision=revision, sort_order=sort_order, sort_target=sort_target,
                            keys_only=keys_only, count_only=count_only,
                            serializable=serializable))


def delete_op(key: KeyLike, end: KeyLike | None = None, *, prefix: bool = False,
              from_key: bool = False, prev_kv: bool = False) -> Op:
    """A delete in a transaction (its result: DeleteResult)."""
    return Op(delete_request(key, end, prefix=prefix, from_key=from_key, prev_kv=prev_kv))


OpLike = Union[Op, "TxnOp"]


def _ops(ops: Iterable[OpLike]) -> list[pb.RequestOp]:
    out = []
    for o in ops:
        if isinstance(o, TxnOp):
            out.append(pb.RequestOp(request_txn=o.to_request()))
        elif isinstance(o, Op):
            out.append(o.to_pb())
        else:
            raise TypeError(f"not a transaction operation: {o!r} (use put_op, get_op, "
                            "delete_op or txn_op)")
    return out


class TxnOp:
    """A transaction: comparisons, and the operations of each branch. Used as is,
    it is a nested transaction (``txn_op(...)`` inside ``then``/``else_``); its
    result is a TxnResult."""

    def __init__(self, compare: Iterable[Compare] = (), success: Iterable[OpLike] = (),
                 failure: Iterable[OpLike] = ()):
        self.compares: list[Compare] = []
        self.success: list[OpLike] = []
        self.failure: list[OpLike] = []
        self.if_(*compare)
        self.then(*success)
        self.else_(*failure)

    def if_(self, *compares: Compare):
        """Add comparisons (all must hold for ``then`` to run)."""
        for c in compares:
            if not isinstance(c, Compare):
                raise TypeError(f"not a comparison: {c!r} (e.g. value('k') == 'v')")
        self.compares.extend(compares)
        return self

    def then(self, *ops: OpLike):
        """Add operations run when every comparison holds."""
        _ops(ops)   # type check early
        self.success.extend(ops)
        return self

    def else_(self, *ops: OpLike):
        """Add operations run otherwise."""
        _ops(ops)
        self.failure.extend(ops)
        return self

    def to_request(self) -> pb.TxnRequest:
        return pb.TxnRequest(compare=[c.to_pb() for c in self.compares],
                             success=_ops(self.success), failure=_ops(self.failure))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(compare={self.compares!r}, success={self.success!r}, "
                f"failure={self.failure!r})")


def txn_op(compare: Iterable[Compare] = (), success: Iterable[OpLike] = (),
           failure: Iterable[OpLike] = ()) -> TxnOp:
    """A nested transaction, for a branch of another one:
    ``txn_op().if_(...).then(...).else_(...)`` or ``txn_op([cmp], [ops], [ops])``."""
    return TxnOp(compare, success, failure)


class Txn(TxnOp):
    """``Client.txn()``: a transaction bound to a client; ``commit()`` runs it."""

    def __init__(self, client, compare=(), success=(), failure=()):
        super().__init__(compare, success, failure)
        self._client = client

    def commit(self) -> "TxnResult":
        """Run the transaction: a TxnResult (``succeeded``, ``responses``)."""
        return self._client._commit(self.to_request())


class AsyncTxn(TxnOp):
    """``AsyncClient.txn()``: ``await txn.commit()`` runs it."""

    def __init__(self, client, compare=(), success=(), failure=()):
        super().__init__(compare, success, failure)
        self._client = client

    async def commit(self) -> "TxnResult":
        """Run the transaction: a TxnResult (``succeeded``, ``responses``)."""
        return await self._client._commit(self.to_request())
