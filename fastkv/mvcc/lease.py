"""Leases: the table every member applies from the log, and the leader's clock.

Two halves, as in etcd 3.4's lease/lessor.go:

* **Applied** (deterministic, the same on every member): :meth:`Lessor.grant`,
  :meth:`Lessor.revoke`, :meth:`Lessor.attach`, :meth:`Lessor.detach`. They
  are called by the applier (revoke through ``KVStore.revoke_lease``, which
  deletes the attached keys in one revision). Lease IDs arrive already chosen:
  ID 0 ("server picks") is resolved by the server before proposing.
* **Clock** (leader only; the clock is an injected callable returning
  monotonic seconds): :meth:`promote` / :meth:`demote`, :meth:`renew`
  (keep-alive), :meth:`remaining`, :meth:`expired`. A member that is not the
  primary keeps every lease "forever" and never reports expiries, like etcd;
  on becoming leader the server calls ``promote(extend)`` which restarts every
  lease's full TTL from now.

Expiry does not change state by itself: the server asks :meth:`expired` for
the due leases and proposes a revoke for each through the log.
"""
from __future__ import annotations

import heapq
import time
from typing import Callable, Iterable

from fastkv.errors import ErrLeaseExist, ErrLeaseNotFound, ErrLeaseTTLTooLarge, ErrNotLeader

__all__ = ["Lessor", "Lease", "MAX_LEASE_TTL", "NO_LEASE"]

NO_LEASE = 0
MAX_LEASE_TTL = 9000000000  # etcd's lease.MaxLeaseTTL (seconds)
LEASE_REVOKE_RATE = 1000  # etcd's leaseRevokeRate: revocations per second
EXPIRED_RETRY_INTERVAL = 3.0  # etcd's expiredLeaseRetryInterval (seconds)

_FOREVER = None  # expiry of a lease on a non-primary lessor


class Lease:
    """One lease: its ID, granted TTL (seconds), attached keys and expiry."""

    __slots__ = ("id", "ttl", "keys", "expiry")

    def __init__(self, lease_id: int, ttl: int):
        self.id = lease_id
        self.ttl = ttl
        self.keys: set[bytes] = set()
        self.expiry: float | None = _FOREVER  # monotonic seconds, None = forever

    def __repr__(self):
        return f"Lease(id={self.id}, ttl={self.ttl}, keys={len(self.keys)}, expiry={self.expiry})"


class Lessor:
    """The lease table of one member (see the module docstring)."""

    def __init__(self, min_ttl: int = 0, clock: Callable[[], float] = time.monotonic):
        self.min_ttl = int(min_ttl)
        self._clock = clock
        self._leases: dict[int, Lease] = {}
        self._primary = False
        # (due time, lease id, lease expiry when pushed) min-heap; an entry
        # whose expiry no longer matches the lease's is stale and skipped
        # (renew pushes a new entry instead of searching the heap).
        self._heap: list[tuple[float, int, float]] = []

    # ------------------------------------------------------------------ applied

    def grant(self, lease_id: int, ttl: int) -> dict:
        """Create a lease; returns ``{"ID", "TTL"}`` (TTL after clamping to min_ttl)."""
        if lease_id == NO_LEASE:
            raise ErrLeaseNotFound()  # as etcd's lessor.Grant
        if ttl > MAX_LEASE_TTL:
            raise ErrLeaseTTLTooLarge()
        if lease_id in self._leases:
            raise ErrLeaseExist()
        if ttl < self.min_ttl:
            ttl = self.min_ttl
        lease = Lease(lease_id, ttl)
        self._leases[lease_id] = lease
        if self._primary:
            self._refresh(lease, 0.0)
        return {"ID": lease_id, "TTL": ttl}

    def revoke(self, lease_id: int) -> list[bytes]:
        """Remove the lease; returns its keys, sorted (the order they are deleted in).

        Use ``KVStore.revoke_lease`` to apply a revocation: it deletes the keys.
        """
        lease = self._leases.pop(lease_id, None)
        if lease is None:
            raise ErrLeaseNotFound()
        return sorted(lease.keys)

    def attach(self, lease_id: int, key: bytes) -> None:
        lease = self._leases.get(lease_id)
        if lease is None:
            raise ErrLeaseNotFound()
        lease.keys.add(key)

    def detach(self, lease_id: int, key: bytes) -> None:
        """Forget that ``key`` belongs to the lease (no-op if either is gone)."""
        lease = self._leases.get(lease_id)
        if lease is not None:
            lease.keys.discard(key)

    def lookup(self, lease_id: int) -> Lease | None:
        return self._leases.get(lease_id)

    def __contains__(self, lease_id: int) -> bool:
        return lease_id in self._leases

    def __len__(self) -> int:
        return len(self._leases)

    def leases(self) -> list[int]:
        """All lease IDs, soonest expiry first (as etcd's Leases), then by ID."""
        inf = float("inf")
        return [l.id for l in sorted(self._leases.values(),
                                     key=lambda l: (inf if l.expiry is None else l.expiry, l.id))]

    def time_to_live(self, lease_id: int, keys: bool = False) -> dict:
        """A LeaseTimeToLiveResponse without header.

        ``{"ID", "TTL": remaining whole seconds, "grantedTTL", "keys": [...]}``;
        an unknown lease gives ``{"ID", "TTL": -1}`` as etcd's v3rpc does. On a
        non-primary lessor (no clock running) TTL is the granted TTL.
        """
        lease = self._leases.get(lease_id)
        if lease is None:
            return {"ID": lease_id, "TTL": -1}
        if lease.expiry is None:
            remaining = lease.ttl
        else:
            remaining = int(lease.expiry - self._clock())  # truncates like Go's int64(Seconds())
        resp = {"ID": lease_id, "TTL": remaining, "grantedTTL": lease.ttl}
        if keys:
            resp["keys"] = sorted(lease.keys)
        return resp

    # -------------------------------------------------------------------- clock

    @property
    def is_primary(self) -> bool:
        return self._primary

    def promote(self, extend: float = 0.0) -> None:
        """Become the primary: every lease expires ``extend + TTL`` seconds from now.

        As etcd, when there are many leases their expiries are spread so that
        at most 3/4 of the revoke rate fall due in any one second.
        """
        self._primary = True
        self._heap = []
        for lease in self._leases.values():
            self._refresh(lease, extend)
        if len(self._leases) < LEASE_REVOKE_RATE:
            return
        now = self._clock()
        ordered = sorted(self._leases.values(), key=lambda l: (l.expiry, l.id))
        base_window = ordered[0].expiry - now
        next_window = base_window + 1.0
        expires = 0
        target = (3 * LEASE_REVOKE_RATE) // 4
        for lease in ordered:
            remaining = lease.expiry - now
            if remaining > next_window:
                base_window = remaining
                next_window = base_window + 1.0
                expires = 1
                continue
            expires += 1
            if expires <= target:
                continue
            delay = expires / target - (remaining - base_window)
            next_window = base_window + delay
            self._refresh(lease, delay + extend)

    def demote(self) -> None:
        """Stop being the primary: every lease lives forever until promoted again."""
        self._primary = False
        self._heap = []
        for lease in self._leases.values():
            lease.expiry = _FOREVER

    def renew(self, lease_id: int) -> int:
        """Keep-alive: restart the lease's TTL; returns the TTL.

        ErrLeaseNotFound for an unknown lease or one already expired (its
        revocation is on its way); ErrNotLeader on a non-primary lessor.
        """
        if not self._primary:
            raise ErrNotLeader()
        lease = self._leases.get(lease_id)
        if lease is None or lease.expiry <= self._clock():
            raise ErrLeaseNotFound()
        self._refresh(lease, 0.0)
        return lease.ttl

    def remaining(self, lease_id: int) -> float:
        """Seconds until expiry (inf when not primary); ErrLeaseNotFound if unknown."""
        lease = self._leases.get(lease_id)
        if lease is None:
            raise ErrLeaseNotFound()
        if lease.expiry is None:
            return float("inf")
        return lease.expiry - self._clock()

    def expired(self, limit: int | None = None) -> list[int]:
        """IDs of the leases due for revocation, soonest first.

        A lease returned here is not returned again for EXPIRED_RETRY_INTERVAL
        seconds (as etcd), so a revoke in flight is not proposed twice; if the
        revoke is lost it comes back after that interval.
        """
        if not self._primary or not self._heap:
            return []
        now = self._clock()
        heap = self._heap
        leases = self._leases
        out: list[int] = []
        while heap and heap[0][0] <= now and (limit is None or len(out) < limit):
            _, lid, expiry = heapq.heappop(heap)
            lease = leases.get(lid)
            if lease is None or lease.expiry != expiry:
                continue  # revoked, or renewed since this entry was pushed
            out.append(lid)
            # the lease stays expired (renew keeps failing); ask again later
            # in case this revocation gets lost
            heapq.heappush(heap, (now + EXPIRED_RETRY_INTERVAL, lid, expiry))
        return out

    # ----------------------------------------------------------------- snapshot

    def snapshot_state(self) -> list:
        """[(id, ttl), ...] by id: marshal-able; attachments come from the KV store."""
        return [(l.id, l.ttl) for l in sorted(self._leases.values(), key=lambda l: l.id)]

    def restore_snapshot_state(self, state: Iterable) -> None:
        """Replace the table with a snapshot's (keys are re-attached by the store)."""
        self._leases = {}
        self._heap = []
        for lease_id, ttl in state:
            if ttl < self.min_ttl:
                ttl = self.min_ttl
            lease = Lease(lease_id, ttl)
            self._leases[lease_id] = lease
            if self._primary:
                self._refresh(lease, 0.0)

    @classmethod
    def from_snapshot_state(cls, state: Iterable, min_ttl: int = 0,
                            clock: Callable[[], float] = time.monotonic) -> "Lessor":
        lessor = cls(min_ttl=min_ttl, clock=clock)
        lessor.restore_snapshot_state(state)
        return lessor

    # ----------------------------------------------------------------- internal

    def _refresh(self, lease: Lease, extend: float) -> None:
        expiry = lease.expiry = self._clock() + extend + lease.ttl
        heapq.heappush(self._heap, (expiry, lease.id, expiry))
