"""Coordination recipes on top of :mod:`fastkv.client`, each the pattern etcd ships
(clientv3/concurrency, contrib/recipes, the gRPC naming resolver), with the same key
layout where etcd has one, so they interoperate with etcdctl and Go programs:

- :class:`Lock`: ``concurrency.Mutex``, plus a fencing token; ``<name>/<lease hex>``
- :class:`Election`: ``concurrency.Election``; ``<name>/<lease hex>``
- :class:`Queue`: contrib/recipes ``Queue``; ``<name>/<unix ns>``
- :class:`PriorityQueue`: contrib/recipes ``PriorityQueue``; ``<name>/<prio>/<seq>``
- :class:`Barrier`: contrib/recipes ``Barrier``; ``<name>``
- :class:`DoubleBarrier`: contrib/recipes ``DoubleBarrier``; ``<name>/waiters/<ns>``,
  ``<name>/ready``
- :func:`stm`: ``concurrency.STM`` (``NewSTM`` and its isolation levels); any keys
- :class:`ServiceRegistry`: the gRPC naming resolver (``GRPCResolver``,
  ``endpoints.Manager``); ``<prefix><service>/<id>``
- :class:`ConfigWatcher`: clientv3/mirror (range at R, watch from R + 1); ``<prefix>...``

asyncio: :class:`AsyncLock`, :class:`AsyncElection`, :class:`AsyncQueue`,
:class:`AsyncPriorityQueue`, :class:`AsyncBarrier`, :class:`AsyncDoubleBarrier`,
:func:`async_stm`, :class:`AsyncServiceRegistry`, :class:`AsyncConfigWatcher`: the same
keys, so sync and async participants meet.

    from fastkv.client import Client
    from fastkv.client.recipes import Lock

    with Client("http://127.0.0.1:2379") as c, Lock(c, "jobs/cleanup", ttl=10) as lock:
        lock.guarded_put("jobs/cleanup/last-run", "now")   # only while we hold it

See docs/recipes.md.
"""
from ._common import (LockLost, NoInstanceAvailable, NotLeader, RecipeError, STMConflict,
                      TooManyClients)
from .barrier import AsyncBarrier, AsyncDoubleBarrier, Barrier, DoubleBarrier
from .config import AsyncConfigWatcher, ConfigWatcher
from .election import AsyncElection, AsyncObserver, Election, Observer
from .lock import AsyncFencedTxn, AsyncLock, FencedTxn, Lock
from .queue import AsyncPriorityQueue, AsyncQueue, PriorityQueue, Queue
from .registry import (AsyncRegistration, AsyncServiceRegistry, AsyncServiceView, Instance,
                       Registration, RoundRobin, ServiceRegistry, ServiceView)
from .stm import (READ_COMMITTED, REPEATABLE_READS, SERIALIZABLE, SERIALIZABLE_SNAPSHOT, STM,
                  AsyncSTM, Isolation, async_stm, stm)

__all__ = [
    "Lock", "AsyncLock", "FencedTxn", "AsyncFencedTxn",
    "Election", "AsyncElection", "Observer", "AsyncObserver",
    "Queue", "PriorityQueue", "AsyncQueue", "AsyncPriorityQueue",
    "Barrier", "DoubleBarrier", "AsyncBarrier", "AsyncDoubleBarrier",
    "stm", "async_stm", "STM", "AsyncSTM", "Isolation", "SERIALIZABLE_SNAPSHOT", "SERIALIZABLE",
    "REPEATABLE_READS", "READ_COMMITTED",
    "ServiceRegistry", "Registration", "ServiceView", "Instance", "RoundRobin",
    "AsyncServiceRegistry", "AsyncRegistration", "AsyncServiceView",
    "ConfigWatcher", "AsyncConfigWatcher",
    "RecipeError", "LockLost", "NotLeader", "TooManyClients", "STMConflict",
    "NoInstanceAvailable",
]
