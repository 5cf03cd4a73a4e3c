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

:class:`AsyncLock` (and :class:`AsyncFencedTxn`) is the same for an AsyncClient, on the
same keys. The protocol is written once, as steps (generators of client calls, see
``_common.run_steps``) in the shared base; :class:`Lock` and :class:`AsyncLock` are
shells that run them with a blocking or an asyncio runner.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import threading
from typing import Any, Callable

from fastkv.client import errors
from fastkv.client._requests import KeyLike, to_bytes
from fastkv.client._types import DeleteResult, KeyValue, PutResult, TxnResult
from fastkv.client.txn import Compare, TxnOp, create_revision, delete_op, get_op, put_op

from ._common import (AsyncSteps, Deadline, LockLost, SyncSteps, lease_id_of, lease_key,
                      name_prefix, remove_key_steps)

__all__ = ["Lock", "AsyncLock", "FencedTxn", "AsyncFencedTxn"]

log = logging.getLogger("fastkv.client.recipes")

DEFAULT_TTL = 60   # etcd's concurrency.Session default


def _first_created(prefix: bytes):
    return get_op(prefix, prefix=True, sort_target="create", sort_order="ascend", limit=1)


def _check_blocking(blocking: bool, timeout: float | None) -> None:
    if not blocking and timeout is not None:
        raise ValueError("can't specify a timeout for a non-blocking call")


class _LockState:
    """What the sync and async locks share: the state, and each operation as steps.
    A shell provides ``_run``/``_wait_deletes`` (SyncSteps/AsyncSteps) and
    ``_on_lease_lost`` (the on_lost of the lease it grants)."""

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

    # ---- steps ------------------------------------------------------------------------

    def _lease_lost_steps(self):
        if self._held and self.on_lost is not None:
            try:
                yield functools.partial(self.on_lost, self)   # (awaited if async)
            except Exception:   # noqa: BLE001
                log.exception("on_lost callback of %r failed", self)

    def _lease_id_steps(self):
        if self._given_lease is not None:
            return lease_id_of(self._given_lease)
        self._lease = yield lambda: self._client.lease(self.ttl, on_lost=self._on_lease_lost)
        return self._lease.id

    def _acquire_steps(self, blocking: bool, timeout: float | None):
        """etcd's Mutex.Lock (TryLock if not ``blocking``); the shell holds its mutex."""
        if self._held:
            raise RuntimeError(f"{self!r} is already held by this {type(self).__name__} object")
        deadline = Deadline(timeout)
        self._lost_reason = None
        lease_id = yield from self._lease_id_steps()
        key = lease_key(self.prefix, lease_id)
        c = self._client
        try:
            r = yield self._acquire_txn(c.txn(), key, lease_id).commit
            self.key = key
            self.token, owner = self._token_of(r)
            if not owner.kvs or owner[0].create_revision == self.token:
                self._held = True
                return True
            if not blocking:
                yield from self._abandon_steps()
                return False
            if not (yield lambda: self._wait_deletes(c, self.prefix, self.token - 1, deadline,
                                                     self._check_lease)):
                yield from self._abandon_steps()
                return False
            # our lease may have expired while we waited (etcd 3.5 checks too)
            kv = yield lambda: c.get(key)
            if kv is None or kv.create_revision != self.token:
                raise LockLost(self._lost_message())
            self._held = True
            return True
        except GeneratorExit:
            raise
        except BaseException:   # a timeout, an error, a cancel, KeyboardInterrupt
            yield from self._abandon_steps()
            raise

    def _drop_steps(self):
        """Forget the holding and remove our key."""
        key, token, lease = self.key, self.token, self._lease
        self._held = False
        self._lease = None
        self.key = self.token = None
        yield from remove_key_steps(self._client, key, token, lease)

    def _abandon_steps(self):
        """Leave the line (or drop the lock). Errors are logged, not raised: the lease
        expires anyway."""
        key = self.key
        try:
            yield from self._drop_steps()
        except errors.EtcdError as e:
            log.warning("could not remove lock key %r (%s); it goes with its lease", key, e)

    def _release_steps(self):
        if not self._held:
            raise RuntimeError(f"{self!r} is not held")
        yield from self._drop_steps()

    def _is_held_steps(self):
        if not self._held:
            return False
        kv = yield lambda: self._client.get(self.key)
        return kv is not None and kv.create_revision == self.token

    def _owner_steps(self):
        r = yield lambda: self._client.range(self.prefix, prefix=True, sort_target="create",
                                             sort_order="ascend", limit=1)
        return r.kvs[0] if r.kvs else None

    def _fenced_steps(self, make_op, *args, **kw):
        """``if guard() then make_op(*args, **kw)``: that op's result, or LockLost."""
        r = yield self._client.txn().if_(self.guard()).then(make_op(*args, **kw)).commit
        if not r.succeeded:
            raise LockLost(self._lost_message())
        return r[0]

    def _guarded_put_steps(self, key, value, lease, prev_kv):
        return self._fenced_steps(put_op, key, value, lease=lease, prev_kv=prev_kv)

    def _guarded_delete_steps(self, key, end, prefix, prev_kv):
        return self._fenced_steps(delete_op, key, end, prefix=prefix, prev_kv=prev_kv)


class _FencedTxnBase(TxnOp):
    """Your transaction, nested in one that checks the lock's fencing token first."""

    def __init__(self, lock):
        super().__init__()
        self._lock = lock

    def _commit_steps(self):
        return self._lock._fenced_steps(TxnOp, self.compares, self.success, self.failure)


# ---- blocking ---------------------------------------------------------------------------------

class Lock(SyncSteps, _LockState):
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
        self._run(self._lease_lost_steps())

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take the lock. Blocks until it is ours (True), or until ``timeout`` seconds
        passed (False); ``blocking=False`` tries once (etcd's TryLock). Raises
        :class:`LockLost` if our lease was lost while waiting. Giving up (timeout,
        error, KeyboardInterrupt) removes our place in the line."""
        _check_blocking(blocking, timeout)
        with self._mu:
            return self._run(self._acquire_steps(blocking, timeout))

    def release(self) -> None:
        """Release the lock: delete our key (revoke our own lease). The next waiter
        in line gets it. Releasing a lock that was lost meanwhile is not an error."""
        with self._mu:
            self._run(self._release_steps())

    def is_held(self) -> bool:
        """Ask the server: does our lock key still exist with our fencing token?"""
        return self._run(self._is_held_steps())

    def owner(self) -> KeyValue | None:
        """The current holder's key (whoever it is), or None when the lock is free."""
        return self._run(self._owner_steps())

    # ---- fenced writes ----------------------------------------------------------------

    def guarded_put(self, key: KeyLike, value: KeyLike, *, lease: int | None = None,
                    prev_kv: bool = False) -> PutResult:
        """Put ``key`` only while we still hold the lock (one transaction comparing the
        lock key's create revision with our token). :class:`LockLost` otherwise."""
        return self._run(self._guarded_put_steps(key, value, lease, prev_kv))

    def guarded_delete(self, key: KeyLike, end: KeyLike | None = None, *, prefix: bool = False,
                       prev_kv: bool = False) -> DeleteResult:
        """Delete only while we still hold the lock; :class:`LockLost` otherwise."""
        return self._run(self._guarded_delete_steps(key, end, prefix, prev_kv))

    def txn(self) -> "FencedTxn":
        """A transaction that runs only while we hold the lock:
        ``lock.txn().if_(...).then(...).else_(...).commit()`` returns its TxnResult, or
        raises :class:`LockLost` (then neither branch ran)."""
        self.guard()
        return FencedTxn(self)


class FencedTxn(_FencedTxnBase):
    """:meth:`Lock.txn`: your transaction, nested in one that checks the fencing
    token first (``if guard then <your txn>``)."""

    def commit(self) -> TxnResult:
        return self._lock._run(self._commit_steps())


# ---- asyncio ----------------------------------------------------------------------------------

class AsyncLock(AsyncSteps, _LockState):
    """:class:`Lock` for an :class:`~fastkv.client.AsyncClient`: ``async with
    AsyncLock(ac, name):``, ``await lock.acquire(timeout=...)``, ``await
    lock.release()``, ``await lock.guarded_put(...)``, ``await lock.txn()...commit()``.
    ``lease=`` takes an AsyncLease or a lease ID; ``on_lost`` may be a coroutine
    function. A task cancelled while it waits leaves the line (its key is removed)."""

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
        if self._mu is None:
            self._mu = asyncio.Lock()
        return self._mu

    async def _on_lease_lost(self, lease) -> None:
        await self._run(self._lease_lost_steps())

    async def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """See :meth:`Lock.acquire`."""
        _check_blocking(blocking, timeout)
        async with self._mutex():
            return await self._run(self._acquire_steps(blocking, timeout))

    async def release(self) -> None:
        """See :meth:`Lock.release`."""
        async with self._mutex():
            await self._run(self._release_steps())

    async def is_held(self) -> bool:
        return await self._run(self._is_held_steps())

    async def owner(self) -> KeyValue | None:
        return await self._run(self._owner_steps())

    async def guarded_put(self, key: KeyLike, value: KeyLike, *, lease: int | None = None,
                          prev_kv: bool = False) -> PutResult:
        return await self._run(self._guarded_put_steps(key, value, lease, prev_kv))

    async def guarded_delete(self, key: KeyLike, end: KeyLike | None = None, *,
                             prefix: bool = False, prev_kv: bool = False) -> DeleteResult:
        return await self._run(self._guarded_delete_steps(key, end, prefix, prev_kv))

    def txn(self) -> "AsyncFencedTxn":
        self.guard()
        return AsyncFencedTxn(self)


class AsyncFencedTxn(_FencedTxnBase):
    """:meth:`AsyncLock.txn`: ``await lock.txn().if_(...).then(...).commit()``."""

    async def commit(self) -> TxnResult:
        return await self._lock._run(self._commit_steps())
