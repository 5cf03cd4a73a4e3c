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

:class:`AsyncElection` and :class:`AsyncObserver` are the same for an AsyncClient (same
keys). Campaigning, proclaiming, resigning and the observe loop are written once, as
steps (generators of client calls, see ``_common.run_steps``) in shared bases; the
sync and async classes are shells that run them (the observe loop in a thread or in
a task of the loop).
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import threading
from fastkv.client import errors
from fastkv.client._requests import KeyLike, to_bytes
from fastkv.client._types import KeyValue
from fastkv.client.txn import Compare, create_revision, get_op, put_op

from ._common import (AsyncSteps, Deadline, NotLeader, SyncSteps, arun_steps, cancel_task,
                      lease_id_of, lease_key, name_prefix, remove_key_steps, run_steps)

__all__ = ["Election", "AsyncElection", "Observer", "AsyncObserver"]

log = logging.getLogger("fastkv.client.recipes")

DEFAULT_TTL = 60   # etcd's concurrency.Session default
_END = object()


class _ElectionState:
    """What Election and AsyncElection share: the state, and each operation as steps
    (run by the shell's ``_run``, with its ``_wait_deletes``)."""

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

    # ---- steps ------------------------------------------------------------------------

    def _lease_id_steps(self):
        if self._given_lease is not None:
            return lease_id_of(self._given_lease)
        if self._lease is None or not self._lease.alive:
            self._lease = yield lambda: self._client.lease(self.ttl)
        return self._lease.id

    def _campaign_steps(self, value: KeyLike, timeout: float | None):
        deadline = Deadline(timeout)
        value = to_bytes(value, "value")
        lease_id = yield from self._lease_id_steps()
        key = lease_key(self.prefix, lease_id)
        c = self._client
        try:
            r = yield self._campaign_txn(c.txn(), key, value, lease_id).commit
            self.key = key
            self.revision = r.revision if r.succeeded else r[0][0].create_revision
            self._leader = True   # proclaim/resign may act on our key from now on
            if not r.succeeded and r[0][0].value != value:
                yield from self._proclaim_steps(value)
            self._leader = False
            if not (yield lambda: self._wait_deletes(c, self.prefix, self.revision - 1,
                                                     deadline, self._check_lease)):
                yield from self._resign_steps()
                return False
            kv = yield lambda: c.get(key)
            if kv is None or kv.create_revision != self.revision:
                raise NotLeader(f"election {self.name!r}: our key is gone (lease expired)")
            self._leader = True
            return True
        except GeneratorExit:
            raise
        except BaseException:   # a timeout, an error, a cancel, KeyboardInterrupt
            self._leader = bool(self.key)
            try:
                yield from self._resign_steps()
            except errors.EtcdError as e:
                log.warning("could not withdraw from election %r: %s", self.name, e)
            raise

    def _proclaim_steps(self, value: KeyLike):
        if self.key is None or not self._leader:
            raise NotLeader("not the leader")
        r = yield (self._client.txn().if_(create_revision(self.key) == self.revision)
                   .then(put_op(self.key, value, ignore_lease=True)).commit)
        if not r.succeeded:
            self._leader = False
            raise NotLeader(f"election {self.name!r}: no longer the leader")

    def _resign_steps(self):
        key, rev, lease = self.key, self.revision, self._lease
        self.key = self.revision = None
        self._leader = False
        self._lease = None
        yield from remove_key_steps(self._client, key, rev, lease)

    def _leader_steps(self):
        r = yield lambda: self._client.range(self.prefix, **self._leader_op())
        return r.kvs[0] if r.kvs else None


class _ObserverBase:
    """What Observer and AsyncObserver share: etcd's observe loop as steps, and what a
    reader is handed. A shell provides ``_queue`` (and its ``_QueueFull``), ``_closed``
    (an Event), ``_open(key, **kw)`` (a started watch) and ``_emit(item)`` (to the
    reader; False once closed)."""

    def _read(self):
        """The call that reads the current leader (the oldest key)."""
        return self._client.range(self._prefix, prefix=True, sort_target="create",
                                  sort_order="ascend", limit=1)

    def _end(self) -> None:
        """The reader's last item (unless the queue is full: it stopped reading)."""
        with contextlib.suppress(self._QueueFull):
            self._queue.put_nowait(_END)

    def _item(self, item) -> KeyValue:
        """What a reader gets for an item of the queue."""
        if item is _END:
            self._done = True
            raise errors.ClientClosed("observer is closed")
        if isinstance(item, BaseException):
            self._done = True
            raise item
        return item

    def _observe_steps(self, first):
        try:
            while not self._closed.is_set():
                r = first if first is not None else (yield self._read)
                first = None
                try:
                    if r.kvs:
                        kv, rev = r.kvs[0], r.revision
                    else:
                        # no leader: wait for the first key put under the prefix
                        w = yield lambda: self._open(self._prefix, prefix=True,
                                                     start_revision=r.revision + 1)
                        try:
                            ev = yield w.get   # a closed watch raises ClientClosed
                            while not ev.is_put:
                                ev = yield w.get
                        finally:
                            yield w.close
                        kv, rev = ev.kv, ev.kv.mod_revision
                    if not (yield lambda: self._emit(kv)):
                        return
                    # follow this leader's key (its new values) until it is deleted
                    w = yield lambda: self._open(kv.key, start_revision=rev + 1)
                    try:
                        ev = yield w.get
                        while not ev.is_delete:
                            if not (yield lambda: self._emit(ev.kv)):
                                return
                            ev = yield w.get
                    finally:
                        yield w.close
                except errors.WatchCompacted:
                    continue     # read the leader again
        except errors.ClientClosed:
            pass                 # closed (the observer, or the client)
        except Exception as e:   # noqa: BLE001 - handed to the reader
            yield functools.partial(self._emit, e)
        finally:
            self._end()


# ---- blocking ---------------------------------------------------------------------------------

class Election(SyncSteps, _ElectionState):
    """Leader election (etcd's ``concurrency.Election``).

    ``Election(client, name, ttl=60)``: :meth:`campaign` grants a lease of ``ttl``
    seconds (kept alive while campaigning and leading, revoked by :meth:`resign`);
    a leader that dies is replaced ``ttl`` seconds later. ``lease=`` uses your own
    Lease (or lease ID) instead, like an etcd Session.
    """

    def __init__(self, client, name: KeyLike, ttl: int = DEFAULT_TTL, *, lease=None):
        self._init(client, name, ttl, lease)

    def campaign(self, value: KeyLike, timeout: float | None = None) -> bool:
        """Stand with ``value``; block until we are the leader (True) or ``timeout``
        seconds passed (False: we withdrew). :class:`NotLeader` if our lease was lost
        while waiting."""
        return self._run(self._campaign_steps(value, timeout))

    def proclaim(self, value: KeyLike) -> None:
        """Change the leader's value (our key keeps its lease); :class:`NotLeader` if
        we are not the leader any more."""
        self._run(self._proclaim_steps(value))

    def resign(self) -> None:
        """Give up leadership (or the candidacy): delete our key; the next candidate
        becomes leader. Our own lease is revoked. Nothing happens if not campaigning."""
        self._run(self._resign_steps())

    def leader(self) -> KeyValue | None:
        """The current leader's key and value, or None (etcd: ErrElectionNoLeader)."""
        return self._run(self._leader_steps())

    def observe(self, max_buffer: int = 1024) -> "Observer":
        """Follow the leadership: an :class:`Observer` yielding the leader's KeyValue
        now (if any), at every proclaim, and at every change of leader."""
        return Observer(self._client, self.prefix, max_buffer)


class Observer(_ObserverBase):
    """:meth:`Election.observe`: iterate it (or ``get(timeout)``) for the leader's
    :class:`~fastkv.client.KeyValue` at each change; ``close()`` (or leaving its
    ``with`` block) stops it. Runs etcd's observe loop in a thread."""

    _QueueFull = queue.Full

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
        self._thread = threading.Thread(target=run_steps, args=(self._observe_steps(first),),
                                        name="fastkv-observe", daemon=True)
        self._thread.start()

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
        return self._item(item)

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


# ---- asyncio ----------------------------------------------------------------------------------

class AsyncElection(AsyncSteps, _ElectionState):
    """:class:`Election` for an AsyncClient: ``await e.campaign(value)``,
    ``await e.proclaim(v)``, ``await e.resign()``, ``await e.leader()``,
    ``async for kv in e.observe()``. A task cancelled while it campaigns withdraws
    (its key is removed)."""

    def __init__(self, client, name: KeyLike, ttl: int = DEFAULT_TTL, *, lease=None):
        self._init(client, name, ttl, lease)

    async def campaign(self, value: KeyLike, timeout: float | None = None) -> bool:
        return await self._run(self._campaign_steps(value, timeout))

    async def proclaim(self, value: KeyLike) -> None:
        await self._run(self._proclaim_steps(value))

    async def resign(self) -> None:
        await self._run(self._resign_steps())

    async def leader(self) -> KeyValue | None:
        return await self._run(self._leader_steps())

    def observe(self, max_buffer: int = 1024) -> "AsyncObserver":
        """``async with election.observe() as obs:`` (or ``obs = await
        election.observe()``), then ``async for kv in obs`` / ``await obs.get(timeout)``;
        ``await obs.close()``. Changes after the ``await`` are all seen."""
        return AsyncObserver(self._client, self.prefix, max_buffer)


class AsyncObserver(_ObserverBase):
    """:meth:`AsyncElection.observe`: etcd's observe loop as a task of the loop."""

    _QueueFull = asyncio.QueueFull

    def __init__(self, client, prefix: bytes, max_buffer: int = 1024):
        self._client = client
        self._prefix = prefix
        self._max_buffer = max(1, max_buffer)
        self._queue: asyncio.Queue | None = None
        self._closed = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._done = False

    async def _start(self) -> None:
        if self._task is None:
            self._queue = asyncio.Queue(self._max_buffer)
            first = await self._read()   # every change after this read is seen
            self._task = asyncio.get_running_loop().create_task(
                arun_steps(self._observe_steps(first)), name="fastkv-observe")

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
        return self._item(item)

    async def close(self) -> None:
        self._done = True
        self._closed.set()
        await cancel_task(self._task)

    async def _emit(self, item) -> bool:
        await self._queue.put(item)   # (close() cancels the task)
        return True

    def _open(self, key: bytes, **kw):
        return self._client.watch(key, **kw)   # started by the runner's await
