"""Apply committed log entries, in order, to the state machine.

Deterministic: the same entries in the same order give the same state and the
same results on every member. A request that fails at apply time (say, a put
with a lease revoked meanwhile) yields its EtcdError as the result and changes
nothing; the log goes on.
"""
from __future__ import annotations

from fastkv import requests
from fastkv.alarms import ALARM_CORRUPT, ALARM_NOSPACE, AlarmStore
from fastkv.auth import AuthStore
from fastkv.auth.enforce import check_entry
from fastkv.errors import ErrCorrupt, ErrLeaseNotFound, ErrNoSpace, EtcdError
from fastkv.faults import corrupted
from fastkv.membership import Membership
from fastkv.mvcc.lease import Lessor
from fastkv.mvcc.store import SNAPSHOT_CHUNK, KVStore
from fastkv.mvcc.watch import WatchHub
from fastkv.storage.wal import Entry
from fastkv.v2store import V2Error, V2Store
from fastkv.v2store.apply import NAMESPACES, apply_v2


class Applier:
    def __init__(self, store: KVStore, lessor: Lessor, hub: WatchHub, membership: Membership,
                 alarms: AlarmStore | None = None, auth: AuthStore | None = None,
                 v2: V2Store | None = None):
        self.store = store
        self.lessor = lessor
        self.hub = hub
        self.membership = membership
        self.alarms = alarms if alarms is not None else AlarmStore()
        self.auth = auth if auth is not None else AuthStore()
        self.v2 = v2 if v2 is not None else V2Store(NAMESPACES)
        self.applied_index = 0
        self.applied_term = 0
        self.corrupt_values = False   # the corrupt-values fault (fastkv/faults.py)

    def apply(self, entry: Entry):
        """Apply one entry; returns (request id, result) where result is a response dict
        or an EtcdError. An empty entry (a new leader's no-op) returns (0, None)."""
        self.applied_index = entry.index
        self.applied_term = entry.term
        if not entry.data:
            return 0, None
        req_id, kind, payload, who = requests.decode_with_auth(entry.data)
        store = self.store
        try:
            if self.alarms.active:
                self._check_alarms(kind, payload)
            if self.auth.enabled:
                # etcd's authApplierV3: the proposer's identity, checked against the
                # auth store as of this entry (refused if it changed since: old revision)
                check_entry(self.auth, self.lessor, kind, payload, who)
            if kind == requests.PUT:
                if self.corrupt_values:   # testing only (fastkv/faults.py)
                    payload = {**payload, "value": corrupted(payload.get("value", b""))}
                resp, events = store.put(payload)
            elif kind == requests.DELETE_RANGE:
                resp, events = store.delete_range(payload)
            elif kind == requests.TXN:
                resp, events = store.txn(payload)
            elif kind == requests.COMPACTION:
                return req_id, _at(store.compact(payload.get("revision", 0)), store.rev)
            elif kind == requests.LEASE_GRANT:
                return req_id, _at(self.lessor.grant(payload["ID"], payload.get("TTL", 0)),
                                   store.rev)
            elif kind == requests.LEASE_REVOKE:
                term = payload.get("expiry_term")
                if term is not None and term != entry.term:
                    # An expiry decided by a leader of another term (forwarded after it
                    # lost its role): the current leader decides expiries. No change.
                    return req_id, ErrLeaseNotFound()
                resp, events = store.revoke_lease(payload["ID"])
            elif kind == requests.ALARM:
                return req_id, self.alarms.apply(payload["action"], payload.get("memberID", 0),
                                                 payload.get("alarm", 0))
            elif kind == requests.AUTH:
                op = payload["op"]
                if op not in requests.AUTH_OPS:
                    raise ValueError(f"unknown auth change {op!r} at index {entry.index}")
                if op == "authenticate":
                    return req_id, self.auth.authenticate(payload["req"], entry.index)
                return req_id, getattr(self.auth, op)(payload["req"])
            elif kind == requests.V2:
                # the v2 and v3 data do not mix: nothing here touches the MVCC store
                try:
                    return req_id, apply_v2(self.v2, payload)
                except V2Error as err:
                    return req_id, err
            elif kind == requests.MEMBER_ATTR:
                return req_id, self.membership.set_attributes(
                    payload["ID"], payload["name"], payload["clientURLs"])
            else:
                raise ValueError(f"unknown log entry kind {kind!r} at index {entry.index}")
        except EtcdError as err:
            return req_id, err
        if events:
            self.hub.notify(store.rev, events)
        return req_id, _at(resp, store.rev)

    def _check_alarms(self, kind: str, payload: dict) -> None:
        """etcd's capped applier (NOSPACE: nothing that adds data) and corrupt applier
        (CORRUPT: no change at all). Raises before anything changes."""
        if self.alarms.has(ALARM_CORRUPT) and kind in _CORRUPT_REFUSES:
            raise ErrCorrupt()
        if self.alarms.has(ALARM_NOSPACE):
            if kind in (requests.PUT, requests.LEASE_GRANT) or (
                    kind == requests.TXN and _txn_has_put(payload)):
                raise ErrNoSpace()

    def snapshot_parts(self):
        """Freeze the state now (cheap copies); returns (state, blobs): the state dict
        without the store's records, and an iterator of the record chunks, which
        can be drained later, a chunk at a time, while applying goes on."""
        view = self.store.snapshot_view()
        store = view.meta()
        store["record_chunk_count"] = (len(view.history) + SNAPSHOT_CHUNK - 1) // SNAPSHOT_CHUNK
        state = {"version": 1, "applied_index": self.applied_index,
                 "applied_term": self.applied_term, "store": store,
                 "lessor": self.lessor.snapshot_state(),
                 "membership": self.membership.snapshot_state(),
                 "alarms": self.alarms.snapshot_state(),
                 "auth": self.auth.to_state(),
                 "v2": self.v2.to_state()}
        return state, view.iter_chunks()

    def snapshot_state(self) -> tuple[dict, list[bytes]]:
        state, blobs = self.snapshot_parts()
        return state, list(blobs)


def _at(resp: dict, rev: int) -> dict:
    """A response stamped with the revision its change produced: the client's header
    must say this revision, not the store's revision when the answer is sent (by
    then later entries of the same batch may have been applied)."""
    if "header" not in resp:
        resp["header"] = {"revision": rev}
    return resp


_CORRUPT_REFUSES = frozenset({requests.PUT, requests.DELETE_RANGE, requests.TXN,
                              requests.COMPACTION, requests.LEASE_GRANT, requests.LEASE_REVOKE})


def _txn_has_put(txn: dict) -> bool:
    for branch in ("success", "failure"):
        for op in txn.get(branch, ()):
            if "request_put" in op:
                return True
            inner = op.get("request_txn")
            if inner is not None and _txn_has_put(inner):
                return True
    return False


def store_state_from_snapshot(state: dict, blobs: list[bytes]) -> dict:
    """The store's part of a snapshot, with its record chunks put back."""
    store = dict(state["store"])
    count = store.pop("record_chunk_count")
    if count != len(blobs):
        from fastkv.errors import StorageCorruption
        raise StorageCorruption(f"snapshot: {len(blobs)} record chunks, expected {count}")
    store["record_chunks"] = blobs
    return store

