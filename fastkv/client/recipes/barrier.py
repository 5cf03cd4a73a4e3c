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
"""
from __future__ import annotations

from fastkv.client._requests import KeyLike, to_bytes
from fastkv.client.txn import create_revision, put_op

from ._common import (Deadline, RECHECK, TooManyClients, is_delete, is_put, lease_id_of,
                      name_prefix, unique_suffix, wait_event)

__all__ = ["Barrier", "DoubleBarrier"]

DEFAULT_TTL = 60


class Barrier:
    """A gate (etcd contrib/recipes ``Barrier``): ``hold()`` closes it, ``release()``
    opens it, ``wait(timeout=None)`` blocks while it is closed."""

    def __init__(self, client, name: KeyLike):
        self._client = client
        self.key = to_bytes(name, "name")
        if not self.key:
            raise ValueError("a barrier needs a non-empty name")

    def __repr__(self) -> str:
        return f"<Barrier {self.key!r}>"

    def hold(self) -> bool:
        """Close the gate: create the barrier key. False if it was already held."""
        return (self._client.txn().if_(create_revision(self.key) == 0)
                .then(put_op(self.key, b"")).commit().succeeded)

    def release(self) -> None:
        """Open the gate: delete the key; every waiter goes on."""
        self._client.delete(self.key)

    def is_held(self) -> bool:
        return self._client.get(self.key) is not None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the barrier is released (True; at once if it is not held), or
        ``timeout`` seconds passed (False)."""
        deadline = Deadline(timeout)
        while True:
            r = self._client.range(self.key)
            if not r.kvs:
                return True
            if wait_event(self._client, self.key, r.revision, deadline, is_delete) is None:
                return False


class DoubleBarrier:
    """``count`` participants enter together and leave together (etcd contrib/recipes
    ``DoubleBarrier``). Each participant makes its own DoubleBarrier object; its key
    lives on a lease of ``ttl`` seconds (granted by :meth:`enter`, revoked once
    :meth:`leave` is done), or on ``lease=`` (a Lease or lease ID) of yours."""

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
        return f"<DoubleBarrier {self.name!r} count={self.count} key={self.key!r}>"

    def _lease_id(self) -> int:
        if self._given_lease is not None:
            return lease_id_of(self._given_lease)
        self._lease = self._client.lease(self.ttl)
        return self._lease.id

    def _drop(self) -> None:
        key, lease = self.key, self._lease
        self.key = self.revision = None
        self._lease = None
        if lease is not None:
            lease.revoke()
        elif key is not None:
            self._client.delete(key)

    def enter(self, timeout: float | None = None) -> bool:
        """Join, and wait until ``count`` participants have joined (True). After
        ``timeout`` seconds: leave the barrier again and return False."""
        if self.key is not None:
            raise RuntimeError(f"{self!r} already entered")
        deadline = Deadline(timeout)
        c = self._client
        try:
            lease_id = self._lease_id()
            while True:
                key = self.waiters + unique_suffix()
                r = c.txn().if_(create_revision(key) == 0).then(
                    put_op(key, b"", lease=lease_id)).commit()
                if r.succeeded:
                    self.key, self.revision = key, r.revision
                    break
            n = c.range(self.waiters, prefix=True, count_only=True).count
            if n > self.count:
                raise TooManyClients(f"{self!r}: {n} participants for {self.count}")
            if n == self.count:
                c.put(self.ready_key, b"")
                return True
            while True:
                kv = c.get(self.ready_key)
                if kv is not None and kv.mod_revision > self.revision:
                    return True
                got = wait_event(c, self.ready_key, self.revision, deadline, is_put)
                if got is None:
                    self._drop()
                    return False
                if got is not RECHECK:
                    return True
        except BaseException:
            self._drop()
            raise

    def leave(self, timeout: float | None = None) -> bool:
        """Wait until every participant has left too (True), or ``timeout`` seconds
        passed (False; call it again to go on waiting)."""
        deadline = Deadline(timeout)
        c = self._client
        while True:
            r = c.range(self.waiters, prefix=True)
            if not r.kvs:
                self._drop()
                return True
            lowest = min(r.kvs, key=lambda kv: kv.mod_revision)
            highest = max(r.kvs, key=lambda kv: kv.mod_revision)
            mine = self.key is not None and any(kv.key == self.key for kv in r.kvs)
            if len(r.kvs) == 1 and mine:
                # the last one out closes the door
                c.delete(self.ready_key)
                self._drop()
                return True
            if mine and lowest.key == self.key:
                target = highest
            else:
                if mine:
                    c.delete(self.key)
                target = lowest
            if wait_event(c, target.key, r.revision, deadline, is_delete) is None:
                return False
