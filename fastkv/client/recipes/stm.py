"""Software transactional memory over etcd transactions: etcd's ``concurrency.STM``.

``stm(client, fn)`` runs ``fn(tx)``; ``tx.get`` reads keys (remembering what it
read, at which revision), ``tx.put``/``tx.delete`` only record writes. Then one
transaction commits the writes *if* nothing ``fn`` read has changed since (etcd's
``isKeyCurrent``: ``mod_revision(k) < read revision + 1`` for every key read); if
something did, ``fn`` runs again on fresh data, until a commit succeeds. ``fn``
must therefore have no side effects other than through ``tx`` (it may run more
than once) and returns a value, which ``stm`` returns.

Isolation levels (etcd's ``concurrency.Isolation``):

- ``SERIALIZABLE_SNAPSHOT`` (the default, as in etcd): every read is made at the
  revision of the first read (a consistent snapshot), and the commit also fails if
  a key we *write* was changed after that snapshot: serializable, and no lost
  update even for blind writes.
- ``SERIALIZABLE``: reads from the first read's revision; the commit checks the
  keys read.
- ``REPEATABLE_READS``: each key is read at its latest revision once (then cached);
  the commit checks the keys read.
- ``READ_COMMITTED``: reads are cached, the commit checks nothing (the writes are
  still applied atomically).

On a conflict (serializable levels), the failed transaction's ``else`` branch reads
the keys again, so the next attempt starts without another round trip (etcd's
prefetch).

:func:`async_stm` and :class:`AsyncSTM` are the same for an AsyncClient: the reads and
the retry loop are written once, as steps (generators of client calls, see
``_common.run_steps``), run by the blocking or the asyncio shell.
"""
from __future__ import annotations

import enum
from typing import Any, Awaitable, Callable, Iterable

from fastkv.client import errors
from fastkv.client._requests import KeyLike, to_bytes
from fastkv.client._types import KeyValue, RangeResult
from fastkv.client.txn import delete_op, get_op, mod_revision, put_op

from ._common import AsyncSteps, STMConflict, SyncSteps, arun_steps, run_steps

__all__ = ["stm", "async_stm", "Isolation", "STM", "AsyncSTM", "SERIALIZABLE_SNAPSHOT",
           "SERIALIZABLE", "REPEATABLE_READS", "READ_COMMITTED"]


class Isolation(enum.Enum):
    SERIALIZABLE_SNAPSHOT = "serializable_snapshot"
    SERIALIZABLE = "serializable"
    REPEATABLE_READS = "repeatable_reads"
    READ_COMMITTED = "read_committed"


SERIALIZABLE_SNAPSHOT = Isolation.SERIALIZABLE_SNAPSHOT
SERIALIZABLE = Isolation.SERIALIZABLE
REPEATABLE_READS = Isolation.REPEATABLE_READS
READ_COMMITTED = Isolation.READ_COMMITTED

_MAX_REV = 2 ** 63 - 2


class _Restart(Exception):
    """Raised inside fn when the snapshot revision was compacted: run fn again."""


class _STMBase:
    """What the blocking and the asyncio STM share: the read and write sets, the
    commit's comparisons, and the reads and the commit as steps."""

    def __init__(self, client, isolation: Isolation, prefetch: dict[bytes, RangeResult]):
        self._client = client
        self._isolation = isolation
        self._rset: dict[bytes, RangeResult] = {}
        self._wset: dict[bytes, tuple[bytes | None, Any]] = {}   # key -> (value, op)
        self._prefetch = prefetch
        self._snapshot_rev = 0

    def _cached(self, key: bytes) -> RangeResult | None:
        r = self._rset.get(key)
        if r is None:
            r = self._prefetch.pop(key, None)
            if r is not None:
                self._remember(key, r)
        return r

    def _read_revision(self) -> int:
        serial = self._isolation in (SERIALIZABLE, SERIALIZABLE_SNAPSHOT)
        return self._snapshot_rev if serial else 0

    def _remember(self, key: bytes, r: RangeResult) -> RangeResult:
        if not self._rset and not self._snapshot_rev:
            # the first read sets the revision every later read is made at
            self._snapshot_rev = r.revision
        self._rset[key] = r
        return r

    # ---- reads (as steps) -----------------------------------------------------------------

    def _fetch_steps(self, key: bytes):
        r = self._cached(key)
        if r is not None:
            return r
        try:
            r = yield lambda: self._client.range(key, revision=self._read_revision())
        except errors.Compacted:
            raise _Restart() from None
        return self._remember(key, r)

    def _get_steps(self, key: KeyLike):
        k = to_bytes(key)
        if k in self._wset:
            return self._wset[k][0]
        r = yield from self._fetch_steps(k)
        return r.kvs[0].value if r.kvs else None

    def _get_text_steps(self, key: KeyLike, default: str | None):
        v = yield from self._get_steps(key)
        return default if v is None else v.decode()

    def _get_kv_steps(self, key: KeyLike):
        r = yield from self._fetch_steps(to_bytes(key))
        return r.kvs[0] if r.kvs else None

    def _rev_steps(self, key: KeyLike):
        kv = yield from self._get_kv_steps(key)
        return kv.mod_revision if kv else 0

    # ---- writes (both flavours) -----------------------------------------------------------

    def put(self, key: KeyLike, value: KeyLike, *, lease: int | None = None) -> None:
        """Record a put (applied by the commit)."""
        k = to_bytes(key)
        v = to_bytes(value, "value")
        self._wset[k] = (v, put_op(k, v, lease=lease))

    def delete(self, key: KeyLike) -> None:
        """Record a delete (applied by the commit)."""
        k = to_bytes(key)
        self._wset[k] = (None, delete_op(k))

    # ---- commit -------------------------------------------------------------------------

    def _conflicts(self) -> list:
        if self._isolation is READ_COMMITTED:
            return []
        cmps = []
        for k, r in self._rset.items():   # etcd's isKeyCurrent
            rev = (r.kvs[0].mod_revision if r.kvs else r.revision) + 1
            cmps.append(mod_revision(k) < rev)
        if self._isolation is SERIALIZABLE_SNAPSHOT:
            first = min((r.revision for r in self._rset.values()), default=_MAX_REV)
            cmps.extend(mod_revision(k) < first + 1 for k in self._wset)
        return cmps

    def _commit_txn(self):
        """(the transaction, the keys its else branch reads again)."""
        keys = list(self._rset)
        prefetch = self._isolation in (SERIALIZABLE, SERIALIZABLE_SNAPSHOT)
        t = self._client.txn().if_(*self._conflicts()).then(
            *(op for _, op in self._wset.values()))
        if prefetch:
            t.else_(*(get_op(k) for k in keys))
        else:
            keys = []
        return t, keys

    def _commit_steps(self):
        """(committed?, the prefetch of the next attempt)."""
        t, keys = self._commit_txn()
        r = yield t.commit
        return r.succeeded, ({} if r.succeeded else dict(zip(keys, r.responses)))


class STM(SyncSteps, _STMBase):
    """The object ``fn`` receives from :func:`stm`: ``get``, ``get_text``, ``get_kv``,
    ``rev``, ``put``, ``delete``. Reads see this transaction's own writes."""

    def get(self, key: KeyLike) -> bytes | None:
        """The key's value (None: absent), as this transaction sees it."""
        return self._run(self._get_steps(key))

    def get_text(self, key: KeyLike, default: str | None = None) -> str | None:
        """:meth:`get` decoded as UTF-8 (``default`` when absent)."""
        return self._run(self._get_text_steps(key, default))

    def get_kv(self, key: KeyLike) -> KeyValue | None:
        """The key's KeyValue as read (ignores this transaction's own writes)."""
        return self._run(self._get_kv_steps(key))

    def rev(self, key: KeyLike) -> int:
        """The key's mod revision as read (0: absent)."""
        return self._run(self._rev_steps(key))


class AsyncSTM(AsyncSteps, _STMBase):
    """The object ``fn`` receives from :func:`async_stm`: ``await tx.get(k)``,
    ``await tx.get_text(k)``, ``await tx.get_kv(k)``, ``await tx.rev(k)``;
    ``tx.put(k, v)`` and ``tx.delete(k)`` (not awaited: they only record)."""

    async def get(self, key: KeyLike) -> bytes | None:
        return await self._run(self._get_steps(key))

    async def get_text(self, key: KeyLike, default: str | None = None) -> str | None:
        return await self._run(self._get_text_steps(key, default))

    async def get_kv(self, key: KeyLike) -> KeyValue | None:
        return await self._run(self._get_kv_steps(key))

    async def rev(self, key: KeyLike) -> int:
        return await self._run(self._rev_steps(key))


def _isolation(isolation) -> Isolation:
    return isolation if isinstance(isolation, Isolation) else Isolation(isolation)


def _stm_steps(client, tx_class, fn, isolation, prefetch, max_retries):
    """etcd's runSTM: ``fn(tx)`` (one call: ``tx_class``'s runner awaits it if async)
    on fresh reads, until its writes commit."""
    iso = _isolation(isolation)
    keys = [to_bytes(k) for k in prefetch]
    pre: dict[bytes, RangeResult] = {}
    if keys:
        r = yield client.txn().then(*(get_op(k) for k in keys)).commit
        pre = dict(zip(keys, r.responses))
    attempts = 0
    while True:
        tx = tx_class(client, iso, pre)
        try:
            result = yield lambda: fn(tx)
        except _Restart:
            pre = {}
            continue
        ok, pre = yield from tx._commit_steps()
        if ok:
            return result
        attempts += 1
        if max_retries is not None and attempts > max_retries:
            raise STMConflict(f"STM transaction still conflicting after {attempts} attempts")


def stm(client, fn: Callable[[STM], Any], *,
        isolation: Isolation | str = SERIALIZABLE_SNAPSHOT,
        prefetch: Iterable[KeyLike] = (), max_retries: int | None = None) -> Any:
    """Run ``fn(tx)`` as a transaction, again while it conflicts; ``fn``'s result.

    ``isolation``: an :class:`Isolation` (or its value as a string).
    ``prefetch``: keys to read in one go before the first attempt. ``max_retries``:
    give up with :class:`STMConflict` after that many conflicting attempts (None:
    retry until it commits, like etcd). An exception raised by ``fn`` aborts (nothing
    is written) and propagates."""
    return run_steps(_stm_steps(client, STM, fn, isolation, prefetch, max_retries))


async def async_stm(client, fn: Callable[[AsyncSTM], Awaitable[Any]], *,
                    isolation: Isolation | str = SERIALIZABLE_SNAPSHOT,
                    prefetch: Iterable[KeyLike] = (), max_retries: int | None = None) -> Any:
    """:func:`stm` for an AsyncClient: ``fn`` is a coroutine function taking an
    :class:`AsyncSTM`."""
    async def call(tx):   # fn's result must be awaitable (the runner would pass on others)
        return await fn(tx)
    return await arun_steps(_stm_steps(client, AsyncSTM, call, isolation, prefetch,
                                       max_retries))
