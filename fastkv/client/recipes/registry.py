"""Service registration and discovery: etcd's gRPC naming pattern
(clientv3/naming in 3.4, ``endpoints.Manager`` in 3.5).

- An instance registers as ``<prefix><service>/<instance id>`` whose value is the
  JSON etcd's resolver reads, ``{"Op": 0, "Addr": <address>, "Metadata": <any
  JSON>}``, attached to a lease the instance keeps alive. When the instance dies,
  the lease expires and its key goes: nobody has to clean up after it. If the lease
  is lost while the instance lives (a partition longer than the TTL), the
  registration grants a new lease and registers again.
- A client reads every key under ``<prefix><service>/`` and watches the prefix from
  the revision after that read: its list of instances follows every registration,
  update and expiry, and survives a broken stream (the client's watch resumes) or
  a compaction (the list is read again).

With ``prefix=""`` and the address as instance id, the keys and values are exactly
those of etcd's ``GRPCResolver`` / ``endpoints.Manager`` (``my-service/1.2.3.4:80``
-> ``{"Op":0,"Addr":"1.2.3.4:80","Metadata":...}``), so Go gRPC clients resolving
through etcd see the instances registered here, and the other way round.

:class:`AsyncServiceRegistry` (with :class:`AsyncRegistration` and
:class:`AsyncServiceView`) is the same for an AsyncClient: same keys and values, the
registering steps and the view written once in shared bases (thin sync/async shells).
"""
from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
import threading
from typing import Any, Callable, Iterator

from fastkv.client import errors
from fastkv.client._requests import KeyLike, to_bytes
from fastkv.client._types import KeyValue

from ._common import AsyncSteps, AwaitableStart, NoInstanceAvailable, SyncSteps
from ._mirror import AsyncMirror, AsyncMirrorView, Mirror, SyncMirrorView

__all__ = ["ServiceRegistry", "Registration", "ServiceView", "Instance", "RoundRobin",
           "AsyncServiceRegistry", "AsyncRegistration", "AsyncServiceView"]

log = logging.getLogger("fastkv.client.recipes")

DEFAULT_TTL = 10
#: pause between attempts to register again after the lease was lost
REREGISTER_PAUSE = 0.5


@dataclasses.dataclass(frozen=True, slots=True)
class Instance:
    """One live instance of a service, as registered."""
    service: str
    id: str
    address: str
    metadata: Any = None
    lease: int = 0
    #: the mod revision of its registration (changes when it is updated)
    revision: int = 0


def encode_instance(address: str, metadata: Any) -> bytes:
    return json.dumps({"Op": 0, "Addr": address, "Metadata": metadata},
                      separators=(",", ":")).encode()


def decode_instance(service: str, kv: KeyValue, prefix_len: int) -> Instance | None:
    """An Instance from a registration key; None for a key that is not one (a nested
    service, an ``Op: 1`` delete record)."""
    iid = kv.key[prefix_len:]
    if not iid or b"/" in iid:
        return None
    address, metadata = None, None
    try:
        doc = json.loads(kv.value)
        if isinstance(doc, dict):
            if doc.get("Op", 0) != 0:
                return None
            address, metadata = doc.get("Addr"), doc.get("Metadata")
        elif isinstance(doc, str):
            address = doc
    except ValueError:
        pass
    if address is None:   # a plain value: the address itself
        address = kv.value.decode(errors="replace")
    return Instance(service, iid.decode(errors="replace"), str(address), metadata, kv.lease,
                    kv.mod_revision)


class _RegistryBase:
    """What ServiceRegistry and AsyncServiceRegistry share: the key layout."""

    def __init__(self, client, prefix: KeyLike = "services/"):
        self._client = client
        self.prefix = to_bytes(prefix, "prefix")

    def service_prefix(self, service: str) -> bytes:
        if not service:
            raise ValueError("a service needs a name")
        return self.prefix + to_bytes(service) + b"/"

    def key(self, service: str, instance_id: str) -> bytes:
        iid = to_bytes(instance_id)
        if not iid or b"/" in iid:
            raise ValueError("an instance id is non-empty and has no '/'")
        return self.service_prefix(service) + iid

    def _instances_steps(self, service: str):
        p = self.service_prefix(service)
        r = yield lambda: self._client.range(p, prefix=True)
        return _sorted_instances(decode_instance(service, kv, len(p)) for kv in r.kvs)


def _sorted_instances(instances) -> list[Instance]:
    return sorted((i for i in instances if i is not None), key=lambda i: i.id)


class ServiceRegistry(SyncSteps, _RegistryBase):
    """Register instances of services and discover them, under ``prefix``
    (default ``"services/"``; ``""`` for etcd's gRPC resolver layout)."""

    def register(self, service: str, instance_id: str, address: str, metadata: Any = None,
                 *, ttl: int = DEFAULT_TTL, reregister: bool = True) -> "Registration":
        """Register an instance (kept alive until :meth:`Registration.close`, or until
        this process dies plus ``ttl`` seconds). ``metadata``: anything JSON can hold.
        ``reregister``: register again on a new lease if the lease is lost."""
        return Registration(self._client, service, self.key(service, instance_id), address,
                            metadata, ttl, reregister)

    def instances(self, service: str) -> list[Instance]:
        """The live instances now (one read), sorted by id."""
        return self._run(self._instances_steps(service))

    def discover(self, service: str,
                 on_change: Callable[[str, Instance], Any] | None = None) -> "ServiceView":
        """A live view of the service's instances (read now, then kept current by a
        watch). ``on_change(kind, instance)`` runs in the view's thread for every
        change: kind is ``"added"``, ``"updated"`` or ``"removed"``."""
        return ServiceView(self._client, service, self.service_prefix(service), on_change)


class AsyncServiceRegistry(AsyncSteps, _RegistryBase):
    """:class:`ServiceRegistry` for an AsyncClient. ``register()`` and ``discover()``
    return objects to ``await`` (or to use with ``async with``, which closes them on
    exit): ``reg = await registry.register("api", "i-1", "10.0.0.1:80")``,
    ``async with registry.discover("api") as view:``; ``await
    registry.instances(service)``."""

    def register(self, service: str, instance_id: str, address: str, metadata: Any = None,
                 *, ttl: int = DEFAULT_TTL, reregister: bool = True) -> "AsyncRegistration":
        return AsyncRegistration(self._client, service, self.key(service, instance_id),
                                 address, metadata, ttl, reregister)

    async def instances(self, service: str) -> list[Instance]:
        return await self._run(self._instances_steps(service))

    def discover(self, service: str,
                 on_change: Callable[[str, Instance], Any] | None = None) -> "AsyncServiceView":
        """``on_change(kind, instance)`` may be a coroutine function."""
        return AsyncServiceView(self._client, service, self.service_prefix(service),
                                on_change)


class _RegistrationBase:
    """What Registration and AsyncRegistration share: the state, and registering (again)
    as steps. A shell provides ``_closed`` (an Event), ``_lost(lease)`` (the lease's
    on_lost: start registering again) and ``_pause(seconds)``."""

    def __init__(self, client, service: str, key: bytes, address: str, metadata: Any,
                 ttl: int, reregister: bool):
        self._client = client
        self.service = service
        self.key = key
        self.address = address
        self.metadata = metadata
        self.ttl = ttl
        self._reregister = reregister
        self._mu = threading.Lock()
        #: how many times the instance registered (1, then +1 per lost lease)
        self.registrations = 0
        self.lease = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key!r} address={self.address!r}>"

    def _value(self) -> bytes:
        return encode_instance(self.address, self.metadata)

    @property
    def alive(self) -> bool:
        lease = self.lease
        return not self._closed.is_set() and lease is not None and lease.alive

    def _register_steps(self):
        lease = yield lambda: self._client.lease(self.ttl, on_lost=self._lost)
        try:
            yield lambda: self._client.put(self.key, self._value(), lease=lease.id)
        except BaseException:
            yield lease.revoke
            raise
        with self._mu:
            self.lease = lease
            self.registrations += 1
        if self._closed.is_set():   # closed meanwhile
            yield lease.revoke

    def _should_register_again(self, lease) -> bool:
        log.warning("registration %r: lease %x lost (%s)", self.key, lease.id,
                    lease.lost_reason)
        return self._reregister and not self._closed.is_set()

    def _register_again_steps(self):
        while not self._closed.is_set():
            try:
                yield from self._register_steps()
                return
            except errors.ClientClosed:
                return
            except errors.EtcdError as e:
                log.warning("registration %r: registering again failed (%s)", self.key, e)
                yield lambda: self._pause(REREGISTER_PAUSE)

    def _update_steps(self, address: str | None, metadata: Any):
        if address is not None:
            self.address = address
        if metadata is not ...:
            self.metadata = metadata
        yield lambda: self._client.put(self.key, self._value(), lease=self.lease.id)

    def _revoke_steps(self):
        with self._mu:
            lease = self.lease
        if lease is not None:
            yield lease.revoke


class Registration(SyncSteps, _RegistrationBase):
    """One registered instance (:meth:`ServiceRegistry.register`): ``key``, ``lease``
    (the current Lease), ``update(address=, metadata=)``, ``close()`` (deregister: the
    lease is revoked and the key deleted); also a context manager."""

    def __init__(self, client, service: str, key: bytes, address: str, metadata: Any,
                 ttl: int, reregister: bool):
        super().__init__(client, service, key, address, metadata, ttl, reregister)
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._run(self._register_steps())

    def __enter__(self) -> "Registration":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _pause(self, seconds: float) -> None:
        self._closed.wait(seconds)

    def _lost(self, lease) -> None:
        if self._should_register_again(lease):
            t = threading.Thread(target=self._run, args=(self._register_again_steps(),),
                                 name="fastkv-reregister", daemon=True)
            self._thread = t
            t.start()

    def update(self, address: str | None = None, metadata: Any = ...) -> None:
        """Change the address and/or metadata (same key, same lease)."""
        self._run(self._update_steps(address, metadata))

    def close(self) -> None:
        """Deregister: revoke the lease (its key goes with it)."""
        if self._closed.is_set():
            return
        self._closed.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=5)
        self._run(self._revoke_steps())

    deregister = close


class AsyncRegistration(AsyncSteps, AwaitableStart, _RegistrationBase):
    """:class:`Registration` for an AsyncClient (:meth:`AsyncServiceRegistry.register`):
    registered once awaited (or entered with ``async with``, which deregisters on
    exit); ``await reg.update(...)``, ``await reg.close()``. A lost lease is
    registered again by a task of the loop."""

    def __init__(self, client, service: str, key: bytes, address: str, metadata: Any,
                 ttl: int, reregister: bool):
        super().__init__(client, service, key, address, metadata, ttl, reregister)
        self._closed = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._started = False

    async def start(self) -> "AsyncRegistration":
        if not self._started:
            await self._run(self._register_steps())
            self._started = True
        return self

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._closed.wait(), seconds)
        except TimeoutError:
            pass

    def _lost(self, lease) -> None:
        if self._should_register_again(lease):
            self._task = asyncio.get_running_loop().create_task(
                self._run(self._register_again_steps()), name="fastkv-reregister")

    async def update(self, address: str | None = None, metadata: Any = ...) -> None:
        await self._run(self._update_steps(address, metadata))

    async def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        t = self._task
        if t is not None and t is not asyncio.current_task():
            await asyncio.wait([t], timeout=5)
        await self._run(self._revoke_steps())

    deregister = close


class _ServiceViewBase:
    """What ServiceView and AsyncServiceView share: everything read from the copy."""

    def _init(self, service: str, prefix: bytes,
              on_change: Callable[[str, Instance], Any] | None) -> None:
        self.service = service
        self._plen = len(prefix)
        self.on_change = on_change

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.service!r} {[i.id for i in self.instances]}>"

    def _decode(self, kv: KeyValue | None) -> Instance | None:
        return None if kv is None else decode_instance(self.service, kv, self._plen)

    def _changed(self, key: bytes, old: KeyValue | None, new: KeyValue | None):
        if self.on_change is None:
            return None
        o, n = self._decode(old), self._decode(new)
        if n is None and o is not None:
            return self.on_change("removed", o)
        if o is None and n is not None:
            return self.on_change("added", n)
        if n is not None:
            return self.on_change("updated", n)
        return None

    def _view(self, data: dict[bytes, KeyValue]) -> list[Instance]:
        return _sorted_instances(self._decode(kv) for kv in data.values())

    @property
    def instances(self) -> list[Instance]:
        return self._view(self._mirror.items())

    def __len__(self) -> int:
        return len(self.instances)

    def __iter__(self) -> Iterator[Instance]:
        return iter(self.instances)

    def __contains__(self, instance_id: str) -> bool:
        return self.get(instance_id) is not None

    def get(self, instance_id: str) -> Instance | None:
        for i in self.instances:
            if i.id == instance_id:
                return i
        return None

    def picker(self) -> "RoundRobin":
        return RoundRobin(self)


class ServiceView(_ServiceViewBase, SyncMirrorView):
    """The live instances of one service (:meth:`ServiceRegistry.discover`).

    ``instances`` (sorted by id), ``len(view)``, ``for inst in view``, ``id in view``,
    ``view.get(id)``; ``wait(predicate, timeout)`` blocks until
    ``predicate(instances)`` holds; ``sync()`` waits until the view has every change
    made before the call; ``picker()`` a :class:`RoundRobin` over it; ``close()``.
    """

    def __init__(self, client, service: str, prefix: bytes,
                 on_change: Callable[[str, Instance], Any] | None):
        self._init(service, prefix, on_change)
        self._mirror = Mirror(client, prefix, self._changed, name=f"fastkv-discover-{service}")


class AsyncServiceView(_ServiceViewBase, AsyncMirrorView):
    """:class:`ServiceView` for an AsyncClient (:meth:`AsyncServiceRegistry.discover`):
    loaded once awaited (or entered with ``async with``), then kept current by a task
    of the loop. ``instances``, ``len``, iteration, ``in``, ``get``, ``picker()`` as
    the sync one; ``await view.wait(predicate, timeout)``, ``await view.sync()``,
    ``await view.close()``."""

    def __init__(self, client, service: str, prefix: bytes,
                 on_change: Callable[[str, Instance], Any] | None):
        self._init(service, prefix, on_change)
        self._mirror = AsyncMirror(client, prefix, self._changed,
                                   name=f"fastkv-discover-{service}")


class RoundRobin:
    """Picks the live instances of a view (sync or async) in turn (``pick()`` or
    ``next(rr)``); :class:`NoInstanceAvailable` when there are none. Instances that
    come and go are taken into account at the next pick."""

    def __init__(self, view: _ServiceViewBase):
        self._view = view
        self._counter = itertools.count()
        self._mu = threading.Lock()

    def pick(self) -> Instance:
        live = self._view.instances
        if not live:
            raise NoInstanceAvailable(f"no live instance of {self._view.service!r}")
        with self._mu:
            n = next(self._counter)
        return live[n % len(live)]

    def __iter__(self) -> "RoundRobin":
        return self

    def __next__(self) -> Instance:
        return self.pick()
