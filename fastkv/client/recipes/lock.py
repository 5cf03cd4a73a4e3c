"""A distributed lock with a fencing token: etcd's ``concurrency.Mutex``.

The pattern (etcd clientv3/concurrency/mutex.go), key for key:

- Each contender owns a lease (etcd's Session) and creates the key
  ``<name>/<lease id in hex>`` (empty value, attached to the lease) in one
  transaction that also reads the oldest key under ``<name>/``::

      if create_revision(<name>/<lease>) == 0
      then put(<name>/<lease>, "", lease) ; range(<name>/, sort by create, limit 1)
      else range(<name>/<lease>)          ; range(<name>/, sort by create, limit 1)

- The contender whose key has the smallest create revision holds the lock.
  The others wait, each for the deletion of the key created just before its own
  (``range(<name>/, max_create_revision=mine - 1, sort by create descending,
  limit 1)`` then a watch on that key): a release wakes one waiter, not the herd.
- Releasing deletes the key (here: revokes the lease, which deletes it). A holder
  that dies stops renewing its lease; the key goes when the lease expires.

The same key layout as etcd's Mutex, so a :class:`Lock` excludes and is excluded by
``etcdctl lock <name>`` and Go programs using ``concurrency.NewMutex(s, name)``.

**Fencing.** The lock key's create revision is the *fencing token*: it grows with
every new holder, and it identifies this holding alone (a key made again after an
expiry gets a new create revision). :meth:`Lock.guarded_put`,
:meth:`Lock.guarded_delete` and :meth:`Lock.txn` write only ``if
create_revision(<lock key>) == token``, checked by the server in the same
transaction as the write: a holder that was paused past its lease (GC pause, SIGSTOP,
a VM migration) and wakes up thinking it still holds the lock gets
:class:`~fastkv.client.recipes.LockLost` instead of overwriting the new holder's data.
A plain ``client.put`` made "under the lock" has no such protection.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from fastkv.client import errors
from fastkv.client._requests import KeyLike, to_bytes
from fastkv.client._types import DeleteResult, KeyValue, PutResult, TxnResult
from fastkv.client.txn import Compare, TxnOp, create_revision, delete_op, get_op, put_op

from ._common import (Deadline, LockLost, await_deletes, lease_id_of, lease_key, name_prefix,
                      wait_deletes)

__all__ = ["Lock", "AsyncLock", "FencedTxn", "AsyncFencedTxn"]

log = logging.getLogger("fastkv.client.recipes")

DEFAULT_TTL = 60   # etcd's concurrency.Session default


def _first_created(prefix: bytes):
    return get_op(prefix, prefix=True, sort_target="create", sort_order="ascend", limit=1)


class _LockState:
    """What the sync and async locks share (no I/O)."""

    def _init(self, client, name: KeyLike, ttl: int, lease, on_lost) -> None:
        self._client = client
        self.name = to_bytes(name, "name")
        self.prefix = name_prefix(name)
        self.ttl = ttl
        self._given_lease = lease
        self.on_lost = on_lost
        self._lease = None            # our own kept-alive lease while we hold / wait
        self.key: bytes | None = None
        self.token: int | None = None
        self._held = False
        self._lost_reason: str | None = None

    def __repr__(self) -> str:
        state = "held" if self._held else "free"
        return f"<{type(self).__name__} {self.name!r} {state} key={self.key!r} token={self.token}>"

    @property
    def held(self) -> bool:
        """We acquired it, have not released it, and (as far as this client knows) its
        lease is alive. The server decides: see :meth:`is_held` and the guarded writes."""
        if not self._held:
            return False
        lease = self._lease if self._lease is not None else self._given_lease
        return not getattr(lease, "lost", False)

    @property
    def lease_id(self) -> int:
        """The lease the lock key is attached to (0 before acquiring)."""
        if self._lease is not None:
            return self._lease.id
        if self._given_lease is not None:
            return lease_id_of(self._given_lease)
        return 0

    def guard(self) -> Compare:
        """The comparison that holds while this holding lasts:
        ``create_revision(key) == token``; add it to your own transactions."""
        if self.key is None or self.token is None or not self._held:
            raise RuntimeError("the lock is not held")
        return create_revision(self.key) == self.token

    def _check_lease(self) -> None:
        lease = self._lease if self._lease is not None else self._given_lease
        if getattr(lease, "lost", False):
            raise LockLost(f"lock {self.name!r}: lease {lease.id:x} lost "
                           f"({getattr(lease, 'lost_reason', '')})")

    def _acquire_txn(self, txn, key: bytes, lease_id: int):
        return (txn.if_(create_revision(key) == 0)
                .then(put_op(key, b"", lease=lease_id), _first_created(self.prefix))
                .else_(get_op(key), _first_created(self.prefix)))

    @staticmethod
    def _token_of(r: TxnResult) -> tuple[int, Any]:
        token = r.revision if r.succeeded else r[0][0].create_revision
        return token, r[1]

    def _lost_message(self) -> str:
        return (f"lock {self.name!r}: key {self.key!r} with create revision {self.token} "
                "no longer exists (lease expired or revoked, or key deleted)")


# ---- blocking ---------------------------------------------------------------------------------

class Lock(_LockState):
    """A distributed lock (etcd's ``concurrency.Mutex``), with a fencing token.

    ``Lock(client, name, ttl=60)`` — each acquisition grants a lease of ``ttl``
    seconds, kept alive in the background while the lock is held and revoked by
    :meth:`release`; if the holder dies, the lock frees itself ``ttl`` seconds later.
    ``lease=`` (a :class:`~fastkv.client.Lease` or a lease ID) uses a lease of yours
    instead, like an etcd Session shared by several mutexes (it is not revoked on
    release; two Locks of one name on one lease are one holder, as in etcd).
    ``on_lost(lock)`` is called if the lease is lost while the lock is held.

    ``with Lock(c, "jobs/cleanup"):`` blocks until the lock is ours. Waiters are
    served in the order they arrived (by the create revision of their key).

    One Lock object is one contender: threads that compete each make their own.
    """

    def __init__(self, client, name: KeyLike, ttl: int = DEFAULT_TTL, *, lease=None,
                 on_lost: Callable[["Lock"], Any] | None = None):
        self._init(client, name, ttl, lease, on_lost)
        self._mu = threading.Lock()

    def __enter__(self) -> "Lock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _on_lease_lost(self, lease) -> None:
        if self._held and self.on_lost is not None:
            try:
                self.on_lost(self)
            except Exception:   # noqa: BLE001
                log.exception("on_lost callback of %r failed", self)

    def _lease_id_for_acquire(self) -> int:
        if self._given_lease is not None:
            return lease_id_of(self._given_lease)
        self._lease = self._client.lease(self.ttl, on_lost=self._on_lease_lost)
        return self._lease.id

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take the lock. Blocks until it is ours (True), or until ``timeout`` seconds
        passed (False); ``blocking=False`` tries once (etcd's TryLock). Raises
        :class:`LockLost` if our lease was lost while waiting. Giving up (timeout,
        error, KeyboardInterrupt) removes our place in the line."""
        if not blocking and timeout is not None:
            raise ValueError("can't specify a timeout for a non-blocking call")
        with self._mu:
            if self._held:
                raise RuntimeError(f"{self!r} is already held by this Lock object")
            deadline = Deadline(timeout)
            self._lost_reason = None
            lease_id = self._lease_id_for_acquire()
            key = lease_key(self.prefix, lease_id)
            try:
                r = self._acquire_txn(self._client.txn(), key, lease_id).commit()
                self.key = key
                self.token, owner = self._token_of(r)
                if not owner.kvs or owner[0].create_revision == self.token:
                    self._held = True
                    return True
                if not blocking:
                    self._abandon()
                    return False
                if not wait_deletes(self._client, self.prefix, self.token - 1, deadline,
                                    self._check_lease):
                    self._abandon()
                    return False
                # our lease may have expired while we waited (etcd 3.5 checks too)
                kv = self._client.get(key)
                if kv is None or kv.create_revision != self.token:
                    raise LockLost(self._lost_message())
                self._held = True
                return True
            except BaseException:
                self._abandon()
                raise

    def _abandon(self) -> None:
        """Leave the line (or drop the lock): delete our key, revoke our own lease.
        Errors are logged, not raised: the lease expires anyway."""
        key, token, lease = self.key, self.token, self._lease
        self._held = False
        self._lease = None
        self.key = self.token = None
        try:
            if lease is not None:
                lease.revoke()
            elif key is not None:
                self._client.txn().if_(create_revision(key) == token).then(
                    delete_op(key)).commit()
        except errors.EtcdError as e:
            log.warning("could not remove lock key %r (%s); it goes with its lease", key, e)

    def release(self) -> None:
        """Release the lock: delete our key (revoke our own lease). The next waiter
        in line gets it. Releasing a lock that was lost meanwhile is not an error."""
        with self._mu:
            if not self._held:
                raise RuntimeError(f"{self!r} is not held")
            key, token, lease = self.key, self.token, self._lease
            self._held = False
            self._lease = None
            self.key = self.token = None
            if lease is not None:
                lease.revoke()
            else:
                self._client.txn().if_(create_revision(key) == token).then(
                    delete_op(key)).commit()

    def is_held(self) -> bool:
        """Ask the server: does our lock key still exist with our fencing token?"""
        if not self._held:
            return False
        kv = self._client.get(self.key)
        return kv is not None and kv.create_revision == self.token

    def owner(self) -> KeyValue | None:
        """The current holder's key (whoever it is), or None when the lock is free."""
        r = self._client.range(self.prefix, prefix=True, sort_target="create",
                               sort_order="ascend", limit=1)
        return r.kvs[0] if r.kvs else None

    # ---- fenced writes ----------------------------------------------------------------

    def guarded_put(self, key: KeyLike, value: KeyLike, *, lease: int | None = None,
                    prev_kv: bool = False) -> PutResult:
        """Put ``key`` only while we still hold the lock (one transaction comparing the
        lock key's create revision with our token). :class:`LockLost` otherwise."""
        r = self._client.txn().if_(self.guard()).then(
            put_op(key, value, lease=lease, prev_kv=prev_kv)).commit()
        if not r.succeeded:
            raise LockLost(self._lost_message())
        return r[0]

    def guarded_delete(self, key: KeyLike, end: KeyLike | None = None, *, prefix: bool = False,
                       prev_kv: bool = False) -> DeleteResult:
        """Delete only while we still hold the lock; :class:`LockLost` otherwise."""
        r = self._client.txn().if_(self.guard()).then(
            delete_op(key, end, prefix=prefix, prev_kv=prev_kv)).commit()
        if not r.succeeded:
            raise LockLost(self._lost_message())
        return r[0]

    def txn(self) -> "FencedTxn":
        """A transaction that runs only while we hold the lock:
        ``lock.txn().if_(...).then(...).else_(...).commit()`` returns its TxnResult, or
        raises :class:`LockLost` (then neither branch ran)."""
        self.guard()
        return FencedTxn(self)


class FencedTxn(TxnOp):
    """:meth:`Lock.txn`: your transaction, nested in one that checks the fencing
    token first (``if guard then <your txn>``)."""

    def __init__(self, lock: Lock):
        super().__init__()
        self._lock = lock

    def commit(self) -> TxnResult:
        lock = self._lock
        inner = TxnOp(self.compares, self.success, self.failure)
        r = lock._client.txn().if_(lock.guard()).then(inner).commit()
        if not r.succeeded:
            raise LockLost(lock._lost_message())
        return r[0]


# ---- asyncio ----------------------------------------------------------------------------------

class AsyncLock(_LockState):
    """:class:`Lock` for an :class:`~fastkv.client.AsyncClient`: ``async with
    AsyncLock(ac, name):``, ``await lock.acquire(timeout=...)``, ``await
    lock.release()``, ``await lock.guarded_put(...)``, ``await lock.txn()...commit()``.
    ``lease=`` takes an AsyncLease or a lease ID; ``on_lost`` may be a coroutine
    function."""

    def __init__(self, client, name: KeyLike, ttl: int = DEFAULT_TTL, *, lease=None,
                 on_lost: Callable[["AsyncLock"], Any] | None = None):
        self._init(client, name, ttl, lease, on_lost)
        self._mu = None   # an asyncio.Lock, made in the running loop

    async def __aenter__(self) -> "AsyncLock":
        await self.acquire()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.release()

    def _mutex(self):
        import asyncio
        if self._mu is None:
            self._mu = asyncio.Lock()
        return self._mu

    async def _on_lease_lost(self, lease) -> None:
        if self._held and self.on_lost is not None:
            try:
                r = self.on_lost(self)
                if hasattr(r, "__await__"):
                    await r
            except Exception:   # noqa: BLE001
                log.exception("on_lost callback of %r failed", self)

    async def _lease_id_for_acquire(self) -> int:
        if self._given_lease is not None:
            return lease_id_of(self._given_lease)
        self._lease = await self._client.lease(self.ttl, on_lost=self._on_lease_lost)
        return self._lease.id

    async def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """See :meth:`Lock.acquire`."""
        if not blocking and timeout is not None:
            raise ValueError("can't specify a timeout for a non-blocking call")
        async with self._mutex():
            if self._held:
                raise RuntimeError(f"{self!r} is already held by this AsyncLock object")
            deadline = Deadline(timeout)
            lease_id = await self._lease_id_for_acquire()
            key = lease_key(self.prefix, lease_id)
            try:
                r = await self._acquire_txn(self._client.txn(), key, lease_id).commit()
                self.key = key
                self.token, owner = self._token_of(r)
                if not owner.kvs or owner[0].create_revision == self.token:
                    self._held = True
                    return True
                if not blocking:
                    await self._abandon()
                    return False
                if not await await_deletes(self._client, self.prefix, self.token - 1,
                                           deadline, self._check_lease):
                    await self._abandon()
                    return False
                kv = await self._client.get(key)
                if kv is None or kv.create_revision != self.token:
                    raise LockLost(self._lost_message())
                self._held = True
                return True
            except BaseException:
                await self._abandon()
                raise

    async def _abandon(self) -> None:
        key, token, lease = self.key, self.token, self._lease
        self._held = False
        self._lease = None
        self.key = self.token = None
        try:
            if lease is not None:
                await lease.revoke()
            elif key is not None:
                await self._client.txn().if_(create_revision(key) == token).then(
                    delete_op(key)).commit()
        except errors.EtcdError as e:
            log.warning("could not remove lock key %r (%s); it goes with its lease", key, e)

    async def release(self) -> None:
        """See :meth:`Lock.release`."""
        async with self._mutex():
            if not self._held:
                raise RuntimeError(f"{self!r} is not held")
            key, token, lease = self.key, self.token, self._lease
            self._held = False
            self._lease = None
            self.key = self.token = None
            if lease is not None:
                await lease.revoke()
            else:
                await self._client.txn().if_(create_revision(key) == token).then(
                    delete_op(key)).commit()

    async def is_held(self) -> bool:
        if not self._held:
            return False
        kv = await self._client.get(self.key)
        return kv is not None and kv.create_revision == self.token

    async def owner(self) -> KeyValue | None:
        r = await self._client.range(self.prefix, prefix=True, sort_target="create",
                                     sort_order="ascend", limit=1)
        return r.kvs[0] if r.kvs else None

    async def guarded_put(self, key: KeyLike, value: KeyLike, *, lease: int | None = None,
                          prev_kv: bool = False) -> PutResult:
        r = await self._client.txn().if_(self.guard()).then(
            put_op(key, value, lease=lease, prev_kv=prev_kv)).commit()
        if not r.succeeded:
            raise LockLost(self._lost_message())
        return r[0]

    async def guarded_delete(self, key: KeyLike, end: KeyLike | None = None, *,
                             prefix: bool = False, prev_kv: bool = False) -> DeleteResult:
        r = await self._client.txn().if_(self.guard()).then(
            delete_op(key, end, prefix=prefix, prev_kv=prev_kv)).commit()
        if not r.succeeded:
            raise LockLost(self._lost_message())
        return r[0]

    def txn(self) -> "AsyncFencedTxn":
        self.guard()
        return AsyncFencedTxn(self)


class AsyncFencedTxn(TxnOp):
    """:meth:`AsyncLock.txn`: ``await lock.txn().if_(...).then(...).commit()``."""

    def __init__(self, lock: AsyncLock):
        super().__init__()
        self._lock = lock

    async def commit(self) -> TxnResult:
        lock = self._lock
        inner = TxnOp(self.compares, self.success, self.failure)
        r = await lock._client.txn().if_(lock.guard()).then(inner).commit()
        if not r.succeeded:
            raise LockLost(lock._lost_message())
        return r[0]
