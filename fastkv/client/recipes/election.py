"""Leader election: etcd's ``concurrency.Election``.

The pattern (etcd clientv3/concurrency/election.go), key for key:

- A candidate owns a lease and creates ``<name>/<lease id in hex>`` holding its
  value (its *proposal*), attached to the lease::

      if create_revision(<name>/<lease>) == 0 then put(<name>/<lease>, value, lease)
      else range(<name>/<lease>)

- The candidate whose key has the smallest create revision is the leader; the
  others wait, each for the deletion of the key created just before its own (no
  thundering herd), exactly like the lock.
- The leader changes its value with ``proclaim`` (a put with ``ignore_lease``,
  only ``if create_revision(key) == our revision``), gives up with ``resign``
  (a delete under the same comparison), or loses leadership when its lease expires.
- ``leader()`` reads the oldest key under ``<name>/``; ``observe()`` reads it, then
  watches that key for new values and, once it is deleted, finds the next leader.

Same layout as etcd, so ``etcdctl elect <name> <proposal>`` and ``etcdctl elect -l
<name>`` interoperate with :class:`Election`, and so do Go programs.

The leader's key create revision (:attr:`Election.revision`) is a fencing token like
the lock's: :meth:`Election.guard` gives the comparison to put in a transaction so
that only the current leader's writes succeed.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
from fastkv.client import errors
from fastkv.client._requests import KeyLike, to_bytes
from fastkv.client._types import KeyValue
from fastkv.client.txn import Compare, create_revision, delete_op, get_op, put_op

from ._common import (Deadline, NotLeader, await_deletes, lease_id_of, lease_key, name_prefix,
                      wait_deletes)

__all__ = ["Election", "AsyncElection", "Observer", "AsyncObserver"]

log = logging.getLogger("fastkv.client.recipes")

DEFAULT_TTL = 60   # etcd's concurrency.Session default
_END = object()


class _ElectionState:
    def _init(self, client, name: KeyLike, ttl: int, lease) -> None:
        self._client = client
        self.name = to_bytes(name, "name")
        self.prefix = name_prefix(name)
        self.ttl = ttl
        self._given_lease = lease
        self._lease = None
        #: our candidate key and its create revision, while campaigning/leading
        self.key: bytes | None = None
        self.revision: int | None = None
        self._leader = False

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.name!r} key={self.key!r} "
                f"leader={self._leader}>")

    @property
    def is_leader(self) -> bool:
        """campaign() returned True and we have not resigned nor lost our lease (as far
        as this client knows; :meth:`guard` lets the server decide)."""
        lease = self._lease if self._lease is not None else self._given_lease
        return self._leader and not getattr(lease, "lost", False)

    def guard(self) -> Compare:
        """``create_revision(key) == revision``: holds while we are the leader."""
        if self.key is None or not self._leader:
            raise NotLeader("not the leader")
        return create_revision(self.key) == self.revision

    def _check_lease(self) -> None:
        lease = self._lease if self._lease is not None else self._given_lease
        if getattr(lease, "lost", False):
            raise NotLeader(f"election {self.name!r}: lease lost while campaigning")

    def _campaign_txn(self, txn, key: bytes, value: bytes, lease_id: int):
        return (txn.if_(create_revision(key) == 0)
                .then(put_op(key, value, lease=lease_id))
                .else_(get_op(key)))

    def _leader_op(self):
        return dict(prefix=True, sort_target="create", sort_order="ascend", limit=1)


# ---- blocking ---------------------------------------------------------------------------------

class Election(_ElectionState):
    """Leader election (etcd's ``concurrency.Election``).

    ``Election(client, name, ttl=60)``: :meth:`campaign` grants a lease of ``ttl``
    seconds (kept alive while campaigning and leading, revoked by :meth:`resign`);
    a leader that dies is replaced ``ttl`` seconds later. ``lease=`` uses your own
    Lease (or lease ID) instead, like an etcd Session.
    """

    def __init__(self, client, name: KeyLike, ttl: int = DEFAULT_TTL, *, lease=None):
        self._init(client, name, ttl, lease)

    def _lease_id(self) -> int:
        if self._given_lease is not None:
            return lease_id_of(self._given_lease)
        if self._lease is None or not self._lease.alive:
            self._lease = self._client.lease(self.ttl)
        return self._lease.id

    def campaign(self, value: KeyLike, timeout: float | None = None) -> bool:
        """Stand with ``value``; block until we are the leader (True) or ``timeout``
        seconds passed (False: we withdrew). :class:`NotLeader` if our lease was lost
        while waiting."""
        deadline = Deadline(timeout)
        value = to_bytes(value, "value")
        lease_id = self._lease_id()
        key = lease_key(self.prefix, lease_id)
        try:
            r = self._campaign_txn(self._client.txn(), key, value, lease_id).commit()
            self.key = key
            self.revision = r.revision if r.succeeded else r[0][0].create_revision
            self._leader = True   # proclaim/resign may act on our key from now on
            if not r.succeeded and r[0][0].value != value:
                self.proclaim(value)
            self._leader = False
            if not wait_deletes(self._client, self.prefix, self.revision - 1, deadline,
                                self._check_lease):
                self.resign()
                return False
            kv = self._client.get(key)
            if kv is None or kv.create_revision != self.revision:
                raise NotLeader(f"election {self.name!r}: our key is gone (lease expired)")
            self._leader = True
            return True
        except BaseException:
            self._leader = bool(self.key)
            try:
                self.resign()
            except errors.EtcdError as e:
                log.warning("could not withdraw from election %r: %s", self.name, e)
            raise

    def proclaim(self, value: KeyLike) -> None:
        """Change the leader's value (our key keeps its lease); :class:`NotLeader` if
        we are not the leader any more."""
        if self.key is None or not self._leader:
            raise NotLeader("not the leader")
        r = (self._client.txn().if_(create_revision(self.key) == self.revision)
             .then(put_op(self.key, value, ignore_lease=True)).commit())
        if not r.succeeded:
            self._leader = False
            raise NotLeader(f"election {self.name!r}: no longer the leader")

    def resign(self) -> None:
        """Give up leadership (or the candidacy): delete our key; the next candidate
        becomes leader. Our own lease is revoked. Nothing happens if not campaigning."""
        key, rev, lease = self.key, self.revision, self._lease
        self.key = self.revision = None
        self._leader = False
        self._lease = None
        if lease is not None:
            lease.revoke()
        elif key is not None:
            self._client.txn().if_(create_revision(key) == rev).then(delete_op(key)).commit()

    def leader(self) -> KeyValue | None:
        """The current leader's key and value, or None (etcd: ErrElectionNoLeader)."""
        r = self._client.range(self.prefix, **self._leader_op())
        return r.kvs[0] if r.kvs else None

    def observe(self, max_buffer: int = 1024) -> "Observer":
        """Follow the leadership: an :class:`Observer` yielding the leader's KeyValue
        now (if any), at every proclaim, and at every change of leader."""
        return Observer(self._client, self.prefix, max_buffer)


class Observer:
    """:meth:`Election.observe`: iterate it (or ``get(timeout)``) for the leader's
    :class:`~fastkv.client.KeyValue` at each change; ``close()`` (or leaving its
    ``with`` block) stops it. Runs etcd's observe loop in a thread."""

    def __init__(self, client, prefix: bytes, max_buffer: int = 1024):
        self._client = client
        self._prefix = prefix
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, max_buffer))
        self._closed = threading.Event()
        self._mu = threading.Lock()
        self._watch = None
        self._done = False
        # the first read is made now: every change after observe() returned is seen
        first = self._read()
        self._thread = threading.Thread(target=self._run, args=(first,),
                                        name="fastkv-observe", daemon=True)
        self._thread.start()

    def _read(self):
        return self._client.range(self._prefix, prefix=True, sort_target="create",
                                  sort_order="ascend", limit=1)

    def __enter__(self) -> "Observer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self):
        return self

    def __next__(self) -> KeyValue:
        try:
            return self.get()
        except errors.ClientClosed:
            raise StopIteration from None

    def get(self, timeout: float | None = None) -> KeyValue:
        """The next leader value; ``TimeoutError`` if none within ``timeout``;
        ``ClientClosed`` once closed."""
        if self._done:
            raise errors.ClientClosed("observer is closed")
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no leader change within {timeout} s") from None
        if item is _END:
            self._done = True
            raise errors.ClientClosed("observer is closed")
        if isinstance(item, BaseException):
            self._done = True
            raise item
        return item

    def close(self) -> None:
        self._closed.set()
        with self._mu:
            w = self._watch
        if w is not None:
            w.close()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _emit(self, item) -> bool:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _open(self, key: bytes, **kw):
        w = self._client.watch(key, **kw)
        with self._mu:
            self._watch = w
        if self._closed.is_set():
            w.close()
        return w

    def _run(self, first) -> None:
        try:
            while not self._closed.is_set():
                r = first if first is not None else self._read()
                first = None
                try:
                    if r.kvs:
                        kv, rev = r.kvs[0], r.revision
                    else:
                        # no leader: wait for the first key put under the prefix
                        kv = None
                        with self._open(self._prefix, prefix=True,
                                        start_revision=r.revision + 1) as w:
                            for ev in w:
                                if ev.is_put:
                                    kv, rev = ev.kv, ev.kv.mod_revision
                                    break
                        if kv is None:
                            return   # closed
                    if not self._emit(kv):
                        return
                    # follow this leader's key until it is deleted
                    deleted = False
                    with self._open(kv.key, start_revision=rev + 1) as w:
                        for ev in w:
                            if ev.is_delete:
                                deleted = True
                                break
                            if not self._emit(ev.kv):
                                return
                    if not deleted:
                        return   # closed
                except errors.WatchCompacted:
                    continue     # read the leader again
        except errors.ClientClosed:
            pass
        except Exception as e:   # noqa: BLE001 - handed to the reader
            if not self._closed.is_set():
                self._emit(e)
        finally:
            try:
                self._queue.put_nowait(_END)
            except queue.Full:
                pass


# ---- asyncio ----------------------------------------------------------------------------------

class AsyncElection(_ElectionState):
    """:class:`Election` for an AsyncClient: ``await e.campaign(value)``,
    ``await e.proclaim(v)``, ``await e.resign()``, ``await e.leader()``,
    ``async for kv in e.observe()``."""

    def __init__(self, client, name: KeyLike, ttl: int = DEFAULT_TTL, *, lease=None):
        self._init(client, name, ttl, lease)

    async def _lease_id(self) -> int:
        if self._given_lease is not None:
            return lease_id_of(self._given_lease)
        if self._lease is None or not self._lease.alive:
            self._lease = await self._client.lease(self.ttl)
        return self._lease.id

    async def campaign(self, value: KeyLike, timeout: float | None = None) -> bool:
        deadline = Deadline(timeout)
        value = to_bytes(value, "value")
        lease_id = await self._lease_id()
        key = lease_key(self.prefix, lease_id)
        try:
            r = await self._campaign_txn(self._client.txn(), key, value, lease_id).commit()
            self.key = key
            self.revision = r.revision if r.succeeded else r[0][0].create_revision
            self._leader = True
            if not r.succeeded and r[0][0].value != value:
                await self.proclaim(value)
            self._leader = False
            if not await await_deletes(self._client, self.prefix, self.revision - 1, deadline,
                                       self._check_lease):
                await self.resign()
                return False
            kv = await self._client.get(key)
            if kv is None or kv.create_revision != self.revision:
                raise NotLeader(f"election {self.name!r}: our key is gone (lease expired)")
            self._leader = True
            return True
        except BaseException:
            self._leader = bool(self.key)
            try:
                await self.resign()
            except errors.EtcdError as e:
                log.warning("could not withdraw from election %r: %s", self.name, e)
            raise

    async def proclaim(self, value: KeyLike) -> None:
        if self.key is None or not self._leader:
            raise NotLeader("not the leader")
        r = await (self._client.txn().if_(create_revision(self.key) == self.revision)
                   .then(put_op(self.key, value, ignore_lease=True)).commit())
        if not r.succeeded:
            self._leader = False
            raise NotLeader(f"election {self.name!r}: no longer the leader")

    async def resign(self) -> None:
        key, rev, lease = self.key, self.revision, self._lease
        self.key = self.revision = None
        self._leader = False
        self._lease = None
        if lease is not None:
            await lease.revoke()
        elif key is not None:
            await self._client.txn().if_(create_revision(key) == rev).then(
                delete_op(key)).commit()

    async def leader(self) -> KeyValue | None:
        r = await self._client.range(self.prefix, **self._leader_op())
        return r.kvs[0] if r.kvs else None

    def observe(self, max_buffer: int = 1024) -> "AsyncObserver":
        """``async with election.observe() as obs:`` (or ``obs = await
        election.observe()``), then ``async for kv in obs`` / ``await obs.get(timeout)``;
        ``await obs.close()``. Changes after the ``await`` are all seen."""
        return AsyncObserver(self._client, self.prefix, max_buffer)


class AsyncObserver:
    """:meth:`AsyncElection.observe`: etcd's observe loop as a task of the loop."""

    def __init__(self, client, prefix: bytes, max_buffer: int = 1024):
        self._client = client
        self._prefix = prefix
        self._max_buffer = max(1, max_buffer)
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._done = False

    async def _read(self):
        return await self._client.range(self._prefix, prefix=True, sort_target="create",
                                        sort_order="ascend", limit=1)

    async def _start(self) -> None:
        if self._task is None:
            self._queue = asyncio.Queue(self._max_buffer)
            first = await self._read()   # every change after this read is seen
            self._task = asyncio.get_running_loop().create_task(self._run(first),
                                                                name="fastkv-observe")

    def __await__(self):
        async def started():
            await self._start()
            return self
        return started().__await__()

    async def __aenter__(self) -> "AsyncObserver":
        await self._start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def __aiter__(self) -> "AsyncObserver":
        return self

    async def __anext__(self) -> KeyValue:
        try:
            return await self.get()
        except errors.ClientClosed:
            raise StopAsyncIteration from None

    async def get(self, timeout: float | None = None) -> KeyValue:
        await self._start()
        if self._done:
            raise errors.ClientClosed("observer is closed")
        try:
            item = await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no leader change within {timeout} s") from None
        if item is _END:
            self._done = True
            raise errors.ClientClosed("observer is closed")
        if isinstance(item, BaseException):
            self._done = True
            raise item
        return item

    async def close(self) -> None:
        task = self._task
        self._done = True
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):   # noqa: BLE001
                pass

    async def _run(self, first) -> None:
        c = self._client
        try:
            while True:
                r = first if first is not None else await self._read()
                first = None
                try:
                    if r.kvs:
                        kv, rev = r.kvs[0], r.revision
                    else:
                        kv = None
                        async with c.watch(self._prefix, prefix=True,
                                           start_revision=r.revision + 1) as w:
                            async for ev in w:
                                if ev.is_put:
                                    kv, rev = ev.kv, ev.kv.mod_revision
                                    break
                        if kv is None:
                            return
                    await self._queue.put(kv)
                    deleted = False
                    async with c.watch(kv.key, start_revision=rev + 1) as w:
                        async for ev in w:
                            if ev.is_delete:
                                deleted = True
                                break
                            await self._queue.put(ev.kv)
                    if not deleted:
                        return
                except errors.WatchCompacted:
                    continue
        except errors.ClientClosed:
            pass
        except asyncio.CancelledError:
            raise
        except Exception as e:   # noqa: BLE001
            await self._queue.put(e)
        finally:
            try:
                self._queue.put_nowait(_END)
            except asyncio.QueueFull:
                pass
