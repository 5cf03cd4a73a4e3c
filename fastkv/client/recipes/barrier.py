"""Barriers: etcd's contrib/recipes ``Barrier`` and ``DoubleBarrier``.

**Barrier** (contrib/recipes/barrier.go): one key, ``<name>``. ``hold()`` creates it
(``if create_revision(<name>) == 0 then put``), ``release()`` deletes it, and
``wait()`` returns at once if it does not exist, else watches it (from the revision
of that read) until it is deleted. Processes block on a gate that one of them opens.

**DoubleBarrier** (contrib/recipes/double_barrier.go): ``count`` participants meet
before a phase and leave together after it.

- ``enter()`` creates an ephemeral key ``<name>/waiters/<unix time in ns>`` on the
  participant's lease, then counts ``<name>/waiters/``: the participant that makes
  it ``count`` puts ``<name>/ready``; the others watch ``<name>/ready`` (from the
  revision of their own key) until it is put. More than ``count`` waiters raises
  :class:`~fastkv.client.recipes.TooManyClients`.
- ``leave()``: the waiter with the lowest mod revision waits for the highest one to
  be deleted, the others delete their own key and wait for the lowest one to go;
  the last one left deletes ``<name>/ready`` and its key. A participant that dies
  loses its key with its lease, so the others are not stuck forever.

:class:`AsyncBarrier` and :class:`AsyncDoubleBarrier` are the same for an AsyncClient
(same keys: sync and async participants meet in one barrier). Each protocol is written
once, as generators of client calls in the shared bases, run by a blocking or an asyncio
runner (``_common.run_steps`` / ``arun_steps``).
"""
from __future__ import annotations

from fastkv.client._requests import KeyLike, to_bytes
from fastkv.client.txn import create_revision, put_op

from ._common import (AsyncSteps, Deadline, RECHECK, SyncSteps, TooManyClients, is_delete,
                      is_put, lease_id_of, name_prefix, unique_suffix)

__all__ = ["Barrier", "DoubleBarrier", "AsyncBarrier", "AsyncDoubleBarrier"]

DEFAULT_TTL = 60


class _BarrierBase:
    """What Barrier and AsyncBarrier share: the key, and each operation as steps."""

    def __init__(self, client, name: KeyLike):
        self._client = client
        self.key = to_bytes(name, "name")
        if not self.key:
            raise ValueError("a barrier needs a non-empty name")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key!r}>"

    def _hold_steps(self):
        r = yield (self._client.txn().if_(create_revision(self.key) == 0)
                   .then(put_op(self.key, b"")).commit)
        return r.succeeded

    def _release_steps(self):
        yield lambda: self._client.delete(self.key)

    def _is_held_steps(self):
        return (yield lambda: self._client.get(self.key)) is not None

    def _wait_steps(self, timeout: float | None):
        deadline = Deadline(timeout)
        c = self._client
        while True:
            r = yield lambda: c.range(self.key)
            if not r.kvs:
                return True
            if (yield lambda: self._wait_event(c, self.key, r.revision, deadline,
                                               is_delete)) is None:
                return False


class Barrier(SyncSteps, _BarrierBase):
    """A gate (etcd contrib/recipes ``Barrier``): ``hold()`` closes it, ``release()``
    opens it, ``wait(timeout=None)`` blocks while it is closed."""

    def hold(self) -> bool:
        """Close the gate: create the barrier key. False if it was already held."""
        return self._run(self._hold_steps())

    def release(self) -> None:
        """Open the gate: delete the key; every waiter goes on."""
        self._run(self._release_steps())

    def is_held(self) -> bool:
        return self._run(self._is_held_steps())

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the barrier is released (True; at once if it is not held), or
        ``timeout`` seconds passed (False)."""
        return self._run(self._wait_steps(timeout))


class AsyncBarrier(AsyncSteps, _BarrierBase):
    """:class:`Barrier` for an AsyncClient: ``await b.hold()``, ``await b.release()``,
    ``await b.is_held()``, ``await b.wait(timeout=None)``."""

    async def hold(self) -> bool:
        return await self._run(self._hold_steps())

    async def release(self) -> None:
        await self._run(self._release_steps())

    async def is_held(self) -> bool:
        return await self._run(self._is_held_steps())

    async def wait(self, timeout: float | None = None) -> bool:
        return await self._run(self._wait_steps(timeout))


class _DoubleBarrierBase:
    """What DoubleBarrier and AsyncDoubleBarrier share: the keys, the participant's
    state, and etcd's enter/leave protocol as steps."""

    def __init__(self, client, name: KeyLike, count: int, ttl: int = DEFAULT_TTL, *,
                 lease=None):
        if count < 1:
            raise ValueError("count must be >= 1")
        self._client = client
        self.name = to_bytes(name, "name")
        self.prefix = name_prefix(name)
        self.waiters = self.prefix + b"waiters/"
        self.ready_key = self.prefix + b"ready"
        self.count = count
        self.ttl = ttl
        self._given_lease = lease
        self._lease = None
        self.key: bytes | None = None
        self.revision: int | None = None

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.name!r} count={self.count} "
                f"key={self.key!r}>")

    def _lease_id_steps(self):
        if self._given_lease is not None:
            return lease_id_of(self._given_lease)
        self._lease = yield lambda: self._client.lease(self.ttl)
        return self._lease.id

    def _drop_steps(self):
        """Forget our key: revoke our own lease (the key goes with it), or delete the
        key from a lease of the caller's."""
        key, lease = self.key, self._lease
        self.key = self.revision = None
        self._lease = None
        if lease is not None:
            yield lease.revoke
        elif key is not None:
            yield lambda: self._client.delete(key)

    def _enter_steps(self, timeout: float | None):
        if self.key is not None:
            raise RuntimeError(f"{self!r} already entered")
        deadline = Deadline(timeout)
        c = self._client
        try:
            lease_id = yield from self._lease_id_steps()
            while True:
                key = self.waiters + unique_suffix()
                r = yield (c.txn().if_(create_revision(key) == 0)
                           .then(put_op(key, b"", lease=lease_id)).commit)
                if r.succeeded:
                    self.key, self.revision = key, r.revision
                    break
            n = (yield lambda: c.range(self.waiters, prefix=True, count_only=True)).count
            if n > self.count:
                raise TooManyClients(f"{self!r}: {n} participants for {self.count}")
            if n == self.count:
                yield lambda: c.put(self.ready_key, b"")
                return True
            while True:
                kv = yield lambda: c.get(self.ready_key)
                if kv is not None and kv.mod_revision > self.revision:
                    return True
                got = yield lambda: self._wait_event(c, self.ready_key, self.revision,
                                                     deadline, is_put)
                if got is None:
                    yield from self._drop_steps()
                    return False
                if got is not RECHECK:
                    return True
        except GeneratorExit:
            raise
        except BaseException:
            yield from self._drop_steps()
            raise

    def _leave_steps(self, timeout: float | None):
        deadline = Deadline(timeout)
        c = self._client
        while True:
            r = yield lambda: c.range(self.waiters, prefix=True)
            if not r.kvs:
                yield from self._drop_steps()
                return True
            lowest = min(r.kvs, key=lambda kv: kv.mod_revision)
            highest = max(r.kvs, key=lambda kv: kv.mod_revision)
            mine = self.key is not None and any(kv.key == self.key for kv in r.kvs)
            if len(r.kvs) == 1 and mine:
                # the last one out closes the door
                yield lambda: c.delete(self.ready_key)
                yield from self._drop_steps()
                return True
            if mine and lowest.key == self.key:
                target = highest
            else:
                if mine:
                    yield lambda: c.delete(self.key)
                target = lowest
            if (yield lambda: self._wait_event(c, target.key, r.revision, deadline,
                                               is_delete)) is None:
                return False


class DoubleBarrier(SyncSteps, _DoubleBarrierBase):
    """``count`` participants enter together and leave together (etcd contrib/recipes
    ``DoubleBarrier``). Each participant makes its own DoubleBarrier object; its key
    lives on a lease of ``ttl`` seconds (granted by :meth:`enter`, revoked once
    :meth:`leave` is done), or on ``lease=`` (a Lease or lease ID) of yours."""

    def enter(self, timeout: float | None = None) -> bool:
        """Join, and wait until ``count`` participants have joined (True). After
        ``timeout`` seconds: leave the barrier again and return False."""
        return self._run(self._enter_steps(timeout))

    def leave(self, timeout: float | None = None) -> bool:
        """Wait until every participant has left too (True), or ``timeout`` seconds
        passed (False; call it again to go on waiting)."""
        return self._run(self._leave_steps(timeout))


class AsyncDoubleBarrier(AsyncSteps, _DoubleBarrierBase):
    """:class:`DoubleBarrier` for an AsyncClient: ``await db.enter(timeout)``,
    ``await db.leave(timeout)``; ``lease=`` takes an AsyncLease or a lease ID."""

    async def enter(self, timeout: float | None = None) -> bool:
        return await self._run(self._enter_steps(timeout))

    async def leave(self, timeout: float | None = None) -> bool:
        return await self._run(self._leave_steps(timeout))
