"""Distributed queues: etcd's contrib/recipes ``Queue`` and ``PriorityQueue``.

**Queue** (etcd contrib/recipes/queue.go): ``enqueue(v)`` creates a new key
``<name>/<unix time in ns>`` (a create-if-absent transaction; on the rare clash, a
new time), so items are ordered by their key's create revision. ``dequeue()`` reads
the oldest keys (sorted by create revision) and claims one with::

    if mod_revision(<item key>) == <its mod revision> then delete(<item key>)

Only one consumer's transaction can delete a given key: each item is delivered to
exactly one consumer. Losing the race just means trying the next key. An empty
queue is waited on with a watch on the prefix (from the revision of the empty read),
not by polling.

**PriorityQueue** (etcd contrib/recipes/priority_queue.go): ``enqueue(v, priority)``
creates ``<name>/<priority %05d>/<sequence %016d>`` (etcd's sequential key: the next
number after the last key of that priority, allocated in a transaction guarded by
the bookkeeping key ``__<name>/<priority %05d>``); ``dequeue()`` takes the smallest
key: the lowest priority number first (0 is the most urgent), FIFO within a
priority.

:class:`AsyncQueue` and :class:`AsyncPriorityQueue` are the same for an AsyncClient
(same keys). Each operation is written once, as steps (generators of client calls, see
``_common.run_steps``) in the shared bases, run by the sync or the async shell.
"""
from __future__ import annotations

from fastkv.client._requests import KeyLike, to_bytes
from fastkv.client.txn import delete_op, mod_revision, put_op, version

from ._common import AsyncSteps, Deadline, RECHECK, SyncSteps, is_put, name_prefix, \
    unique_suffix

__all__ = ["Queue", "PriorityQueue", "AsyncQueue", "AsyncPriorityQueue"]

#: how many of the oldest items a dequeue reads at once (contending consumers that
#: lose the race for the first one try the next without another read)
BATCH = 16


def _claim_txn(txn, kv):
    return txn.if_(mod_revision(kv.key) == kv.mod_revision).then(delete_op(kv.key))


def _seq_number(key: bytes) -> int:
    return int(key.rsplit(b"/", 1)[1])


class _QueueBase:
    """What every queue shares: the prefix, and dequeuing, counting and clearing as
    steps (run by the shell's ``_run``, with its ``_wait_event``)."""

    _sort_target = "create"

    def __init__(self, client, name: KeyLike):
        self._client = client
        self.name = to_bytes(name, "name")
        self.prefix = name_prefix(name)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    def _oldest(self):
        return dict(prefix=True, sort_target=self._sort_target, sort_order="ascend",
                    limit=BATCH)

    def _dequeue_steps(self, timeout: float | None):
        deadline = Deadline(timeout)
        c = self._client
        while True:
            r = yield lambda: c.range(self.prefix, **self._oldest())
            for kv in r.kvs:
                if (yield _claim_txn(c.txn(), kv).commit).succeeded:
                    return kv.value
            if r.kvs:
                continue   # others took those; read again
            ev = yield lambda: self._wait_event(c, self.prefix, r.revision, deadline, is_put,
                                                prefix=True)
            if ev is None:
                raise TimeoutError(f"{self!r} stayed empty for {timeout} s")
            if ev is not RECHECK and (yield _claim_txn(c.txn(), ev.kv).commit).succeeded:
                return ev.kv.value

    def _size_steps(self):
        return (yield lambda: self._client.range(self.prefix, prefix=True,
                                                 count_only=True)).count

    def _clear_steps(self):
        return (yield lambda: self._client.delete(self.prefix, prefix=True)).deleted


class _FifoSteps(_QueueBase):
    """Queue and AsyncQueue: etcd's Queue.Enqueue."""

    def _enqueue_steps(self, value: KeyLike):
        value = to_bytes(value, "value")
        while True:
            key = self.prefix + unique_suffix()
            r = yield self._client.txn().if_(version(key) == 0).then(put_op(key, value)).commit
            if r.succeeded:
                return key


class _PrioritySteps(_QueueBase):
    """PriorityQueue and AsyncPriorityQueue: etcd's PriorityQueue.Enqueue."""

    _sort_target = "key"

    def _priority_prefix(self, priority: int) -> bytes:
        if not isinstance(priority, int) or not 0 <= priority <= 0xFFFF:
            raise ValueError("priority is an int from 0 (dequeued first) to 65535")
        return self.prefix + b"%05d" % priority

    def _enqueue_steps(self, value: KeyLike, priority: int):
        value = to_bytes(value, "value")
        base = self._priority_prefix(priority)
        c = self._client
        while True:   # etcd's newSequentialKV
            last = yield lambda: c.range(base + b"/", prefix=True, sort_target="key",
                                         sort_order="descend", limit=1)
            n = _seq_number(last.kvs[0].key) + 1 if last.kvs else 0
            key = base + b"/%016d" % n
            book = b"__" + base
            r = yield (c.txn().if_(mod_revision(book) < last.revision + 1)
                       .then(put_op(book, b""), put_op(key, value)).commit)
            if r.succeeded:
                return key


# ---- blocking ---------------------------------------------------------------------------------

class _SyncQueue(SyncSteps, _QueueBase):

    def dequeue(self, timeout: float | None = None) -> bytes:
        """Take the first item (its value); block until there is one. Raises
        ``TimeoutError`` after ``timeout`` seconds without one."""
        return self._run(self._dequeue_steps(timeout))

    def __len__(self) -> int:
        """Items in the queue now."""
        return self._run(self._size_steps())

    def clear(self) -> int:
        """Drop every item; how many there were."""
        return self._run(self._clear_steps())


class Queue(_SyncQueue, _FifoSteps):
    """A FIFO queue shared by processes (etcd contrib/recipes ``Queue``):
    ``enqueue(value)``, ``dequeue(timeout=None)``, ``len()``."""

    def enqueue(self, value: KeyLike) -> bytes:
        """Append an item; its key."""
        return self._run(self._enqueue_steps(value))


class PriorityQueue(_SyncQueue, _PrioritySteps):
    """A priority queue (etcd contrib/recipes ``PriorityQueue``):
    ``enqueue(value, priority)`` (0..65535, lower first), ``dequeue(timeout=None)``."""

    def enqueue(self, value: KeyLike, priority: int = 0) -> bytes:
        """Add an item with ``priority`` (lower numbers are dequeued first); its key."""
        return self._run(self._enqueue_steps(value, priority))


# ---- asyncio ----------------------------------------------------------------------------------

class _AsyncQueue(AsyncSteps, _QueueBase):

    async def dequeue(self, timeout: float | None = None) -> bytes:
        """See :meth:`Queue.dequeue`."""
        return await self._run(self._dequeue_steps(timeout))

    async def size(self) -> int:
        return await self._run(self._size_steps())

    async def clear(self) -> int:
        return await self._run(self._clear_steps())


class AsyncQueue(_AsyncQueue, _FifoSteps):
    """:class:`Queue` for an AsyncClient (``await q.enqueue(v)``, ``await
    q.dequeue()``, ``await q.size()``)."""

    async def enqueue(self, value: KeyLike) -> bytes:
        return await self._run(self._enqueue_steps(value))


class AsyncPriorityQueue(_AsyncQueue, _PrioritySteps):
    """:class:`PriorityQueue` for an AsyncClient."""

    async def enqueue(self, value: KeyLike, priority: int = 0) -> bytes:
        return await self._run(self._enqueue_steps(value, priority))
