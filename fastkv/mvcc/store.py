"""The MVCC key-value state machine: revisions, range/put/delete/txn/compact.

Deterministic: no clock, no I/O. The applier calls the mutating methods in
log order; each either succeeds completely or raises an
:class:`fastkv.errors.EtcdError` having changed nothing (every request is
validated against the current state before the first change). Semantics are
etcd 3.4's (mvcc/kvstore*.go and etcdserver/apply.go).

State
    ``rev``          the current main revision (1 on an empty store, as etcd)
    ``compact_rev``  the main revision of the last compaction (-1: none yet)
    index            a :class:`KeyIndex`: key -> revision history
    records          record key (``_rkey`` of its packed revision) -> stored record
    history          the packed revisions of ``records`` in ascending order,
                     for scans over time (watch catch-up, compaction, hash)
    live             key -> packed revision of its current record (keys that
                     exist now); the hot path (single-key reads at the current
                     revision, puts) needs only this dict

A record is a tuple ``(key, value, create_revision, version, lease)``;
``value`` is None for a tombstone (a delete). The mod revision is the main
part of the packed revision the record is stored under.

Requests and responses are dicts named like etcd's protobuf fields
(docs/internals.md). Top-level responses leave out the header (the server
adds it; its revision is ``store.rev``); the responses inside a txn carry
``{"header": {"revision": ...}}`` exactly as etcd fills them. Write methods
return ``(response, events)``; events are watch events in change order::

    {"type": 0, "kv": {...}, "prev_kv": {...}}              # put
    {"type": 1, "kv": {"key", "mod_revision"}, "prev_kv": {...}}   # delete

(``prev_kv`` is left out when the key did not exist.)
"""
from __future__ import annotations

import marshal

import struct
import zlib
from bisect import bisect_left, bisect_right
from operator import itemgetter

from fastkv.errors import (
    ErrCompacted, ErrFutureRev, ErrKeyNotFound, ErrLeaseNotFound,
)
from fastkv.mvcc.keyindex import KeyIndex
from fastkv.mvcc.revision import SUB_BITS

__all__ = ["KVStore", "EVENT_PUT", "EVENT_DELETE"]

EVENT_PUT = 0
EVENT_DELETE = 1

# RangeRequest.SortOrder / SortTarget, Compare.CompareResult / CompareTarget
_SORT_NONE, _SORT_ASCEND, _SORT_DESCEND = 0, 1, 2
_TARGET_KEY, _TARGET_VERSION, _TARGET_CREATE, _TARGET_MOD, _TARGET_VALUE = 0, 1, 2, 3, 4
_CMP_EQUAL, _CMP_GREATER, _CMP_LESS, _CMP_NOT_EQUAL = 0, 1, 2, 3
_CT_VERSION, _CT_CREATE, _CT_MOD, _CT_VALUE, _CT_LEASE = 0, 1, 2, 3, 4

_SNAPSHOT_FORMAT = 2  # records in marshal-ed chunks of SNAPSHOT_CHUNK
_SUB_MASK = (1 << SUB_BITS) - 1
_MIX = 0x9E3779B1  # odd: main -> main * _MIX is one-to-one modulo 2**24


def _rkey(packed: int) -> int:
    """The key of a record in ``KVStore._records``: its packed revision with the sub
    revision bits XOR-ed with a multiplicative hash of the main revision.

    One-to-one (the main revision stays in the high bits, and the low bits can be
    undone knowing it). Why not the packed revision itself: a CPython dict starts
    probing at an int's low bits, and a plain put's revision is ``main << 24 | 0``,
    so a million records would all start at slot 0 and walk the same long probe
    chain: inserts and lookups measured 5-10x slower at a million records.
    """
    return packed ^ ((packed >> SUB_BITS) * _MIX & _SUB_MASK)


# A snapshot row is ``(packed,) + record`` (StoreSnapshotView.iter_chunks).
_ROW_PACKED, _ROW_KEY, _ROW_VALUE = itemgetter(0), itemgetter(1), itemgetter(2)
_ROW_RECORD = itemgetter(1, 2, 3, 4, 5)
_HASH_REC = struct.Struct(">QqqqI")


def _kv(rec: tuple, packed: int) -> dict:
    """A KeyValue dict for a put record (value and lease left out when empty)."""
    key, value, create, version, lease = rec
    kv = {"key": key, "create_revision": create, "mod_revision": packed >> SUB_BITS,
          "version": version}
    if value:
        kv["value"] = value
    if lease:
        kv["lease"] = lease
    return kv


def _sort_key(target: int):
    if target == _TARGET_VERSION:
        return lambda kv: kv["version"]
    if target == _TARGET_CREATE:
        return lambda kv: kv["create_revision"]
    if target == _TARGET_MOD:
        return lambda kv: kv["mod_revision"]
    if target == _TARGET_VALUE:
        return lambda kv: kv.get("value", b"")
    return lambda kv: kv["key"]


def _covers(begin: bytes, end: bytes, key: bytes) -> bool:
    """Whether a delete of [begin, end) (request semantics) removes ``key``."""
    if not end:
        return key == begin
    if end == b"\0":
        return key >= begin
    return begin <= key < end


class KVStore:
    """etcd's MVCC store as a deterministic state machine (module docstring)."""

    __slots__ = ("rev", "compact_rev", "_index", "_records", "_history", "_live", "_lessor")

    def __init__(self, lessor=None):
        self.rev = 1
        self.compact_rev = -1
        self._index = KeyIndex()
        self._records: dict[int, tuple] = {}
        self._history: list[int] = []
        self._live: dict[bytes, int] = {}
        self._lessor = lessor

    # ------------------------------------------------------------------ reads

    def range(self, req: dict) -> dict:
        """RangeResponse without header: ``{"kvs", "more", "count"}`` (defaults left out)."""
        return self._range(req, self.rev)

    def _range(self, req: dict, cur: int) -> dict:
        rev = req.get("revision", 0)
        if rev > cur:
            raise ErrFutureRev()
        if rev <= 0:
            rev = cur
        if rev < self.compact_rev:
            raise ErrCompacted()

        key = req["key"]
        end = req.get("range_end")
        resp: dict = {}

        if not end:
            # single key: no index scan at the current revision
            if rev == cur:
                packed = self._live.get(key)
            else:
                got = self._index.get(key, rev)
                packed = got[0] if got is not None else None
            if packed is None:
                return resp
            resp["count"] = 1
            if req.get("count_only"):
                return resp
            kv = _kv(self._records[_rkey(packed)], packed)
            if (req.get("min_mod_revision") or req.get("max_mod_revision")
                    or req.get("min_create_revision") or req.get("max_create_revision")):
                if not self._filters_pass(req, kv):
                    return resp
            if req.get("keys_only"):
                kv.pop("value", None)
            resp["kvs"] = [kv]
            return resp

        index = self._index
        limit = req.get("limit", 0)
        sort_order = req.get("sort_order", _SORT_NONE)
        sort_target = req.get("sort_target", _TARGET_KEY)
        filtered = bool(req.get("min_mod_revision") or req.get("max_mod_revision")
                        or req.get("min_create_revision") or req.get("max_create_revision"))
        if req.get("count_only"):
            n = index.count(key, end, rev)
            if n:
                resp["count"] = n
            return resp

        fetch = limit
        if sort_order != _SORT_NONE or filtered:
            fetch = 0  # fetch everything, sort and truncate afterwards
        if fetch > 0:
            fetch += 1  # one extra for "more"
        keys, revs = index.range(key, end, rev, fetch)
        if not keys:
            return resp
        if fetch > 0 and len(keys) >= fetch:
            count = index.count(key, end, rev)
        else:
            count = len(keys)
        records = self._records
        kvs = [_kv(records[_rkey(p)], p) for p in revs]

        if filtered:
            kvs = [kv for kv in kvs if self._filters_pass(req, kv)]
        if sort_target != _TARGET_KEY and sort_order == _SORT_NONE:
            sort_order = _SORT_ASCEND
        if sort_order == _SORT_ASCEND:
            if sort_target != _TARGET_KEY:  # already ascending by key
                kvs.sort(key=_sort_key(sort_target))
        elif sort_order == _SORT_DESCEND:
            kvs.sort(key=_sort_key(sort_target), reverse=True)

        if 0 < limit < len(kvs):
            del kvs[limit:]
            resp["more"] = True
        if req.get("keys_only"):
            for kv in kvs:
                kv.pop("value", None)
        if kvs:
            resp["kvs"] = kvs
        resp["count"] = count
        return resp

    @staticmethod
    def _filters_pass(req: dict, kv: dict) -> bool:
        v = req.get("max_mod_revision")
        if v and kv["mod_revision"] > v:
            return False
        v = req.get("min_mod_revision")
        if v and kv["mod_revision"] < v:
            return False
        v = req.get("max_create_revision")
        if v and kv["create_revision"] > v:
            return False
        v = req.get("min_create_revision")
        if v and kv["create_revision"] < v:
            return False
        return True

    def get(self, key: bytes, at_rev: int = 0) -> dict | None:
        """The KeyValue of ``key`` at ``at_rev`` (0: now), or None. No revision checks."""
        if at_rev <= 0 or at_rev >= self.rev:
            packed = self._live.get(key)
        else:
            got = self._index.get(key, at_rev)
            packed = got[0] if got is not None else None
        if packed is None:
            return None
        return _kv(self._records[_rkey(packed)], packed)

    def __len__(self) -> int:
        """Number of keys that exist now."""
        return len(self._live)

    # ----------------------------------------------------------------- writes

    def put(self, req: dict):
        """Apply a PutRequest; returns ``(PutResponse without header, events)``."""
        key = req["key"]
        value = req.get("value", b"")
        lease = req.get("lease", 0)
        lessor = self._lessor
        if lease and (lessor is None or lessor.lookup(lease) is None):
            raise ErrLeaseNotFound()
        prev = self._live.get(key)
        if req.get("ignore_value") or req.get("ignore_lease"):
            if prev is None:
                raise ErrKeyNotFound()
            prec = self._records[_rkey(prev)]
            if req.get("ignore_value"):
                value = prec[1]
            if req.get("ignore_lease"):
                lease = prec[4]
        main = self.rev + 1
        events: list = []
        prev_kv = self._put(key, value, lease, prev, main << SUB_BITS, events)
        self.rev = main
        if req.get("prev_kv") and prev_kv is not None:
            return {"prev_kv": prev_kv}, events
        return {}, events

    def delete_range(self, req: dict):
        """Apply a DeleteRangeRequest; returns ``(resp without header, events)``.

        Deleting nothing changes nothing, not even the revision (as etcd).
        """
        keys = self._live_keys(req["key"], req.get("range_end"), self.rev)
        if not keys:
            return {}, []
        main = self.rev + 1
        events: list = []
        prev_kvs = self._delete(keys, main << SUB_BITS, events)
        self.rev = main
        resp = {"deleted": len(keys)}
        if req.get("prev_kv"):
            resp["prev_kvs"] = prev_kvs
        return resp, events

    def revoke_lease(self, lease_id: int):
        """Apply a LeaseRevokeRequest: drop the lease and delete its keys in one revision.

        Returns ``({}, events)``; ErrLeaseNotFound (nothing changed) if unknown.
        """
        lessor = self._lessor
        if lessor is None or lessor.lookup(lease_id) is None:
            raise ErrLeaseNotFound()
        live = self._live
        keys = [k for k in lessor.revoke(lease_id) if k in live]
        if not keys:
            return {}, []
        main = self.rev + 1
        events: list = []
        self._delete(keys, main << SUB_BITS, events)
        self.rev = main
        return {}, events

    def txn(self, req: dict):
        """Apply a TxnRequest; returns ``(TxnResponse without header, events)``.

        All compares (of nested txns too) are evaluated first, on the state
        before the txn, as etcd's compareToPath. The chosen ops are checked
        (ignore_value/ignore_lease on a missing key, unknown lease, historical
        range revisions) before the first change; then they run in order, each
        seeing the changes of the ones before, all in one revision. A txn that
        changes nothing does not bump the revision.
        """
        path: list = []
        self._compare_path(req, path)
        begin = self.rev
        if self._txn_writes(req, path, 0)[0]:
            self._check_txn_puts(req, path, 0, [])
        self._check_txn_ranges(req, path, 0, begin)
        events: list = []
        resp = self._apply_txn(req, path, 0, begin, events)[0]
        if events:
            self.rev = begin + 1
        return resp, events

    def compact(self, revision: int) -> dict:
        """Apply a CompactionRequest: forget history before ``revision``.

        ErrCompacted if ``revision <= compact_rev``, ErrFutureRev if above the
        current revision. Returns ``{}`` (the server adds the header).
        """
        if revision <= self.compact_rev:
            raise ErrCompacted()
        if revision > self.rev:
            raise ErrFutureRev()
        keep = self._index.compact(revision)
        bound = (revision + 1) << SUB_BITS  # every packed rev with main <= revision is below
        history = self._history
        cut = bisect_left(history, bound)
        records = self._records
        kept = []
        for packed in history[:cut]:
            if packed in keep:
                kept.append(packed)
            else:
                del records[_rkey(packed)]
        if len(kept) != cut:
            self._history = kept + history[cut:]
        self.compact_rev = revision
        return {}

    # ------------------------------------------------------------ history scan

    def events_since(self, start_rev: int, end_rev: int | None = None,
                     max_revs: int | None = None):
        """Watch catch-up: the stored changes with ``start_rev <= main <= end_rev``.

        Returns ``(records, next_rev)`` where records is a list of ``(packed,
        record)`` in revision order and ``next_rev`` the first main revision
        not included (``end_rev + 1`` when complete). With ``max_revs`` at most
        that many distinct main revisions are returned (as etcd's
        watchBatchMaxRevs). The caller must check ``start_rev`` against
        ``compact_rev`` first.
        """
        if end_rev is None:
            end_rev = self.rev
        history = self._history
        i = bisect_left(history, start_rev << SUB_BITS)
        j = bisect_right(history, ((end_rev + 1) << SUB_BITS) - 1)
        records = self._records
        if max_revs is None:
            return [(p, records[_rkey(p)]) for p in history[i:j]], end_rev + 1
        out = []
        revs = 0
        last = -1
        for n in range(i, j):
            p = history[n]
            m = p >> SUB_BITS
            if m != last:
                revs += 1
                if revs > max_revs:
                    return out, m
                last = m
            out.append((p, records[_rkey(p)]))
        return out, end_rev + 1

    def event_of(self, packed: int, rec: tuple, prev_kv: bool = False) -> dict:
        """A watch event for a stored record (prev_kv looked up at mod_revision - 1,
        as etcd's watch server does; left out when compacted away or absent)."""
        key = rec[0]
        if rec[1] is None:
            ev = {"type": EVENT_DELETE, "kv": {"key": key, "mod_revision": packed >> SUB_BITS}}
        else:
            ev = {"type": EVENT_PUT, "kv": _kv(rec, packed)}
        if prev_kv:
            main = packed >> SUB_BITS
            if main - 1 >= self.compact_rev:
                got = self._index.get(key, main - 1)
                if got is not None:
                    p = got[0]
                    prec = self._records.get(_rkey(p))
                    if prec is not None and prec[1] is not None:
                        ev["prev_kv"] = _kv(prec, p)
        return ev

    # ------------------------------------------------------------------- hash

    def hash_kv(self, rev: int = 0):
        """``(hash, compact_rev)``: CRC-32 over the records a member keeps at ``rev``.

        As etcd's HashByRev: revisions above ``rev`` are left out, and those at
        or below the compact revision count only if compaction keeps them.
        ErrCompacted if ``0 < rev <= compact_rev``, ErrFutureRev above the
        current revision; 0 means the current revision.
        """
        compact_rev = self.compact_rev
        if rev > 0 and rev <= compact_rev:
            raise ErrCompacted()
        if rev > 0 and rev > self.rev:
            raise ErrFutureRev()
        if rev == 0:
            rev = self.rev
        keep = self._index.keep(rev)
        upper = (rev + 1) << SUB_BITS
        lower = (compact_rev + 1) << SUB_BITS
        h = zlib.crc32(b"key")
        records = self._records
        pack = _HASH_REC.pack
        for packed in self._history:
            if packed >= upper:
                break
            if packed < lower and keep and packed not in keep:
                continue
            key, value, create, version, lease = records[_rkey(packed)]
            tomb = value is None
            h = zlib.crc32(pack(packed, create, version, lease, len(key)), h)
            h = zlib.crc32(key, h)
            h = zlib.crc32(b"\x01" if tomb else b"\x00" + value, h)
        return h, compact_rev

    # --------------------------------------------------------------- snapshot

    def snapshot_view(self) -> "StoreSnapshotView":
        """A frozen view of the state, cheap enough to take on the event loop.

        Records are immutable tuples, so copying the revision map and the
        history list (C-speed copies of references) freezes the state; the
        expensive part, serialising it, runs later on the view, in a worker
        thread, while the store moves on."""
        return StoreSnapshotView(self.rev, self.compact_rev, dict(self._records),
                                 list(self._history))

    def snapshot_state(self):
        """The whole state as dict/list/tuple/bytes/int/None (marshal-able)."""
        return self.snapshot_view().to_state()

    @classmethod
    def from_snapshot_state(cls, state, lessor=None) -> "KVStore":
        """Rebuild a store from :meth:`snapshot_state`'s output.

        Restore the lessor first: the keys' leases are re-attached to it here.
        """
        if state.get("format") != _SNAPSHOT_FORMAT:
            raise ValueError(f"unknown KV snapshot format {state.get('format')!r}")
        store = cls(lessor)
        store.rev = state["rev"]
        store.compact_rev = state["compact_rev"]
        records = store._records
        history = store._history  # the records' revisions, ascending (their snapshot order)
        keys = []                 # the records' keys, in the same order
        deletes = []              # positions of the tombstones in both
        # A million records: whole chunks at a time through C-level map/zip (and
        # one put_many into the index) rather than a Python loop per record.
        for chunk in state["record_chunks"]:
            rows = marshal.loads(chunk)
            base = len(history)
            packeds = list(map(_ROW_PACKED, rows))
            history += packeds
            keys += map(_ROW_KEY, rows)
            records.update(zip(map(_rkey, packeds), map(_ROW_RECORD, rows)))
            if None in map(_ROW_VALUE, rows):
                deletes += [base + i for i, row in enumerate(rows) if row[2] is None]
        store._index.put_many(keys, history, deletes)
        # The newest record of each key is the last one in revision order; a key
        # whose newest record is a tombstone does not exist now.
        live = store._live
        live.update(zip(keys, history))
        for i in deletes:
            if live.get(keys[i]) == history[i]:
                del live[keys[i]]
        if lessor is not None and len(lessor):
            for key, packed in live.items():
                lease = records[_rkey(packed)][4]
                if lease and lessor.lookup(lease) is not None:
                    lessor.attach(lease, key)
        return store

    # --------------------------------------------------------------- internal

    def _live_keys(self, key: bytes, end, at: int) -> list:
        """Keys existing now in [key, end) (end as in a request)."""
        if not end:
            return [key] if key in self._live else []
        return self._index.range(key, end, at, 0)[0]

    def _put(self, key: bytes, value: bytes, lease: int, prev, packed: int, events: list):
        """Store one put at ``packed``; returns the previous KeyValue or None."""
        records = self._records
        main = packed >> SUB_BITS
        if prev is None:
            rec = (key, value, main, 1, lease)
            prev_kv = None
        else:
            prec = records[_rkey(prev)]
            rec = (key, value, prec[2], prec[3] + 1, lease)
            prev_kv = _kv(prec, prev)
            old_lease = prec[4]
            if old_lease:
                self._lessor.detach(old_lease, key)
        records[_rkey(packed)] = rec
        self._history.append(packed)
        self._index.put(key, packed)
        self._live[key] = packed
        if lease:
            self._lessor.attach(lease, key)
        kv = {"key": key, "create_revision": rec[2], "mod_revision": main, "version": rec[3]}
        if value:
            kv["value"] = value
        if lease:
            kv["lease"] = lease
        if prev_kv is None:
            events.append({"type": EVENT_PUT, "kv": kv})
        else:
            events.append({"type": EVENT_PUT, "kv": kv, "prev_kv": prev_kv})
        return prev_kv

    def _delete(self, keys: list, packed: int, events: list) -> list:
        """Tombstone ``keys`` (all live) from ``packed`` on; returns their prev KeyValues."""
        records = self._records
        history = self._history
        live = self._live
        index = self._index
        lessor = self._lessor
        main = packed >> SUB_BITS
        prev_kvs = []
        for key in keys:
            prev = live.pop(key)
            prec = records[_rkey(prev)]
            prev_kv = _kv(prec, prev)
            prev_kvs.append(prev_kv)
            records[_rkey(packed)] = (key, None, 0, 0, 0)
            history.append(packed)
            index.tombstone(key, packed)
            if prec[4]:
                lessor.detach(prec[4], key)
            events.append({"type": EVENT_DELETE, "kv": {"key": key, "mod_revision": main},
                           "prev_kv": prev_kv})
            packed += 1
        return prev_kvs

    # txn ----------------------------------------------------------------------

    def _compare_path(self, req: dict, path: list) -> None:
        ok = self._compares(req.get("compare") or ())
        path.append(ok)
        for op in (req.get("success") if ok else req.get("failure")) or ():
            t = op.get("request_txn")
            if t is not None:
                self._compare_path(t, path)

    def _compares(self, cmps) -> bool:
        for c in cmps:
            if not self._compare(c):
                return False
        return True

    def _compare(self, c: dict) -> bool:
        target = c.get("target", _CT_VERSION)
        end = c.get("range_end")
        records = self._records
        if not end:
            packed = self._live.get(c["key"])
            packeds = () if packed is None else (packed,)
        else:
            packeds = self._index.range(c["key"], end, self.rev, 0)[1]
        result = c.get("result", _CMP_EQUAL)
        if not packeds:
            if target == _CT_VALUE:
                return False  # a missing key has no value to compare (as etcd)
            return self._compare_one(target, result, c, b"", 0, 0, 0, 0)
        for p in packeds:
            _, value, create, version, lease = records[_rkey(p)]
            if not self._compare_one(target, result, c, value, create, p >> SUB_BITS,
                                     version, lease):
                return False
        return True

    @staticmethod
    def _compare_one(target, result, c, value, create, mod, version, lease) -> bool:
        if target == _CT_VALUE:
            a, b = value, c.get("value", b"")
        elif target == _CT_CREATE:
            a, b = create, c.get("create_revision", 0)
        elif target == _CT_MOD:
            a, b = mod, c.get("mod_revision", 0)
        elif target == _CT_VERSION:
            a, b = version, c.get("version", 0)
        elif target == _CT_LEASE:
            a, b = lease, c.get("lease", 0)
        else:
            return True
        if result == _CMP_EQUAL:
            return a == b
        if result == _CMP_NOT_EQUAL:
            return a != b
        if result == _CMP_GREATER:
            return a > b
        if result == _CMP_LESS:
            return a < b
        return True

    @staticmethod
    def _branch(req: dict, path: list, pi: int):
        return (req.get("success") if path[pi] else req.get("failure")) or ()

    def _txn_writes(self, req: dict, path: list, pi: int):
        """(whether the chosen branch has a put or delete, path index after this txn)"""
        writes = False
        nxt = pi + 1
        for op in self._branch(req, path, pi):
            if "request_put" in op or "request_delete_range" in op:
                writes = True
            else:
                t = op.get("request_txn")
                if t is not None:
                    w, nxt = self._txn_writes(t, path, nxt)
                    writes = writes or w
        return writes, nxt

    def _check_txn_puts(self, req: dict, path: list, pi: int, dels: list) -> int:
        """etcd's checkRequestPut over the chosen ops, in execution order.

        ``dels`` collects the deletes met so far: a put with ignore_value or
        ignore_lease of a key an earlier op of this txn deleted would find no
        key when it runs (etcd panics there); it fails the txn with
        ErrKeyNotFound before anything changes instead.
        """
        nxt = pi + 1
        lessor = self._lessor
        for op in self._branch(req, path, pi):
            t = op.get("request_txn")
            if t is not None:
                nxt = self._check_txn_puts(t, path, nxt, dels)
                continue
            d = op.get("request_delete_range")
            if d is not None:
                dels.append((d["key"], d.get("range_end") or b""))
                continue
            p = op.get("request_put")
            if p is None:
                continue
            if p.get("ignore_value") or p.get("ignore_lease"):
                k = p["key"]
                if k not in self._live or any(_covers(b, e, k) for b, e in dels):
                    raise ErrKeyNotFound()
            lease = p.get("lease", 0)
            if lease and (lessor is None or lessor.lookup(lease) is None):
                raise ErrLeaseNotFound()
        return nxt

    def _check_txn_ranges(self, req: dict, path: list, pi: int, begin: int) -> int:
        nxt = pi + 1
        for op in self._branch(req, path, pi):
            t = op.get("request_txn")
            if t is not None:
                nxt = self._check_txn_ranges(t, path, nxt, begin)
                continue
            r = op.get("request_range")
            if r is None:
                continue
            rev = r.get("revision", 0)
            if rev > begin:
                raise ErrFutureRev()
            if 0 < rev < self.compact_rev:
                raise ErrCompacted()
        return nxt

    def _apply_txn(self, req: dict, path: list, pi: int, begin: int, events: list):
        succeeded = path[pi]
        nxt = pi + 1
        responses = []
        main = begin + 1
        for op in (req.get("success") if succeeded else req.get("failure")) or ():
            r = op.get("request_range")
            if r is not None:
                cur = main if events else begin
                responses.append({"response_range": {"header": {"revision": cur},
                                                     **self._range(r, cur)}})
                continue
            r = op.get("request_put")
            if r is not None:
                key = r["key"]
                prev = self._live.get(key)
                value = r.get("value", b"")
                lease = r.get("lease", 0)
                if r.get("ignore_value") or r.get("ignore_lease"):
                    prec = self._records[_rkey(prev)]
                    if r.get("ignore_value"):
                        value = prec[1]
                    if r.get("ignore_lease"):
                        lease = prec[4]
                prev_kv = self._put(key, value, lease, prev,
                                    (main << SUB_BITS) | len(events), events)
                pr = {"header": {"revision": main}}
                if r.get("prev_kv") and prev_kv is not None:
                    pr["prev_kv"] = prev_kv
                responses.append({"response_put": pr})
                continue
            r = op.get("request_delete_range")
            if r is not None:
                keys = self._live_keys(r["key"], r.get("range_end"), main if events else begin)
                dr: dict = {}
                if keys:
                    prev_kvs = self._delete(keys, (main << SUB_BITS) | len(events), events)
                    dr["deleted"] = len(keys)
                    if r.get("prev_kv"):
                        dr["prev_kvs"] = prev_kvs
                dr = {"header": {"revision": main if events else begin}, **dr}
                responses.append({"response_delete_range": dr})
                continue
            r = op.get("request_txn")
            if r is not None:
                sub, nxt = self._apply_txn(r, path, nxt, begin, events)
                # etcd leaves a nested txn's header empty
                responses.append({"response_txn": {"header": {}, **sub}})
                continue
            responses.append({})
        resp: dict = {}
        if succeeded:
            resp["succeeded"] = True
        if responses:
            resp["responses"] = responses
        return resp, nxt


SNAPSHOT_CHUNK = 4096


class StoreSnapshotView:
    """The store's state at one revision, detached from the live store."""

    __slots__ = ("rev", "compact_rev", "records", "history")

    def __init__(self, rev: int, compact_rev: int, records: dict, history: list):
        self.rev = rev
        self.compact_rev = compact_rev
        self.records = records
        self.history = history

    def meta(self) -> dict:
        """Everything but the records."""
        return {"format": _SNAPSHOT_FORMAT, "rev": self.rev, "compact_rev": self.compact_rev}

    def iter_chunks(self):
        """The records, marshal-ed SNAPSHOT_CHUNK at a time (~2 ms each), in revision
        order: the server serialises one chunk per event-loop turn."""
        records, history = self.records, self.history
        for lo in range(0, len(history), SNAPSHOT_CHUNK):
            yield marshal.dumps([(p,) + records[_rkey(p)]
                                 for p in history[lo:lo + SNAPSHOT_CHUNK]])

    def to_state(self) -> dict:
        state = self.meta()
        state["record_chunks"] = list(self.iter_chunks())
        return state
