"""KVStore: range/put/delete_range/compact/snapshot/hash, and the request checks.

Where a behaviour was checked against a real etcd 3.4 (JSON gateway), the
comment quotes what it printed.
"""
import marshal

import pytest

from fastkv.errors import (
    ErrCompacted, ErrEmptyKey, ErrFutureRev, ErrKeyNotFound, ErrLeaseNotFound,
    ErrLeaseProvided, ErrValueProvided,
)
from fastkv.mvcc.lease import Lessor
from fastkv.mvcc.store import KVStore
from fastkv.mvcc.validation import check_delete_range, check_put, check_range


def kv(key, value, create, mod, version, lease=0):
    d = {"key": key, "create_revision": create, "mod_revision": mod, "version": version}
    if value:
        d["value"] = value
    if lease:
        d["lease"] = lease
    return d


@pytest.fixture
def store():
    return KVStore(Lessor())


def fill(s, *pairs):
    for k, v in pairs:
        s.put({"key": k, "value": v})


def state(s):
    snap = s.snapshot_state()
    # marshal's bytes depend on object sharing, not only on values: compare decoded records
    records = [r for chunk in snap["record_chunks"] for r in marshal.loads(chunk)]
    return (s.rev, s.compact_rev, snap["format"], records, s.hash_kv())


# ----------------------------------------------------------------------- put

def test_empty_store_starts_at_revision_1(store):
    # etcd: a fresh member answers {"header":{...,"revision":"1",...}} with no kvs
    assert store.rev == 1 and store.compact_rev == -1
    assert store.range({"key": b"foo"}) == {}
    assert len(store) == 0


def test_put_creates_and_updates(store):
    resp, evs = store.put({"key": b"a", "value": b"1"})
    assert resp == {} and store.rev == 2
    assert evs == [{"type": 0, "kv": kv(b"a", b"1", 2, 2, 1)}]
    resp, evs = store.put({"key": b"a", "value": b"2", "prev_kv": True})
    assert resp == {"prev_kv": kv(b"a", b"1", 2, 2, 1)}
    assert evs == [{"type": 0, "kv": kv(b"a", b"2", 2, 3, 2), "prev_kv": kv(b"a", b"1", 2, 2, 1)}]
    assert store.range({"key": b"a"}) == {"kvs": [kv(b"a", b"2", 2, 3, 2)], "count": 1}


def test_put_prev_kv_of_new_key_is_absent(store):
    resp, _ = store.put({"key": b"a", "value": b"1", "prev_kv": True})
    assert resp == {}


def test_put_empty_value_leaves_value_out(store):
    store.put({"key": b"a"})
    assert store.range({"key": b"a"})["kvs"] == [{"key": b"a", "create_revision": 2,
                                                 "mod_revision": 2, "version": 1}]


def test_recreate_after_delete_restarts_version_and_create(store):
    fill(store, (b"a", b"1"), (b"a", b"2"))
    store.delete_range({"key": b"a"})
    store.put({"key": b"a", "value": b"3"})
    assert store.range({"key": b"a"})["kvs"] == [kv(b"a", b"3", 5, 5, 1)]


def test_ignore_value_and_ignore_lease(store):
    lessor = store._lessor
    lessor.grant(7, 100)
    store.put({"key": b"a", "value": b"v", "lease": 7})
    store.put({"key": b"a", "ignore_value": True, "ignore_lease": True})
    assert store.range({"key": b"a"})["kvs"] == [kv(b"a", b"v", 2, 3, 2, lease=7)]
    store.put({"key": b"a", "value": b"w", "ignore_lease": True})
    assert store.range({"key": b"a"})["kvs"] == [kv(b"a", b"w", 2, 4, 3, lease=7)]
    store.put({"key": b"a", "ignore_value": True})  # drops the lease
    assert store.range({"key": b"a"})["kvs"] == [kv(b"a", b"w", 2, 5, 4)]
    assert lessor.lookup(7).keys == set()


@pytest.mark.parametrize("flag", ["ignore_value", "ignore_lease"])
def test_ignore_on_missing_key_is_key_not_found(store, flag):
    before = state(store)
    with pytest.raises(ErrKeyNotFound):
        store.put({"key": b"nokey", flag: True})
    assert state(store) == before


def test_put_unknown_lease_changes_nothing(store):
    # etcd: put with "lease":"123" never granted ->
    # {"error":"etcdserver: requested lease not found",...,"code":5}
    fill(store, (b"a", b"1"))
    before = state(store)
    with pytest.raises(ErrLeaseNotFound) as e:
        store.put({"key": b"a", "value": b"2", "lease": 123})
    assert e.value.code == 5
    # etcd checks the lease before ignore_value finds the key missing (same answer as above)
    with pytest.raises(ErrLeaseNotFound):
        store.put({"key": b"nokey", "ignore_value": True, "lease": 123})
    assert state(store) == before


def test_put_moves_key_between_leases(store):
    lessor = store._lessor
    lessor.grant(1, 100)
    lessor.grant(2, 100)
    store.put({"key": b"k", "value": b"v", "lease": 1})
    assert lessor.lookup(1).keys == {b"k"}
    store.put({"key": b"k", "value": b"v", "lease": 2})
    assert lessor.lookup(1).keys == set() and lessor.lookup(2).keys == {b"k"}
    store.delete_range({"key": b"k"})
    assert lessor.lookup(2).keys == set()


# ---------------------------------------------------------------- validation

def test_request_checks():
    with pytest.raises(ErrEmptyKey):
        check_range({"key": b""})
    with pytest.raises(ErrEmptyKey):
        check_put({})
    with pytest.raises(ErrEmptyKey):
        check_delete_range({"range_end": b"z"})
    with pytest.raises(ErrValueProvided):
        check_put({"key": b"a", "value": b"x", "ignore_value": True})
    with pytest.raises(ErrLeaseProvided):
        check_put({"key": b"a", "lease": 5, "ignore_lease": True})
    check_put({"key": b"a", "ignore_value": True, "ignore_lease": True})
    check_range({"key": b"a", "range_end": b"\0"})


# --------------------------------------------------------------------- range

ABC = [(b"a", b"3"), (b"b", b"1"), (b"c", b"2"), (b"d", b"")]


def keys_of(resp):
    return [x["key"] for x in resp.get("kvs", [])]


def test_range_prefix_and_open_end(store):
    fill(store, *ABC)
    assert keys_of(store.range({"key": b"a", "range_end": b"c"})) == [b"a", b"b"]
    r = store.range({"key": b"b", "range_end": b"\0"})
    assert keys_of(r) == [b"b", b"c", b"d"] and r["count"] == 3
    assert keys_of(store.range({"key": b"\0", "range_end": b"\0"})) == [b"a", b"b", b"c", b"d"]
    assert store.range({"key": b"x", "range_end": b"z"}) == {}


def test_range_limit_more_count(store):
    fill(store, *ABC)
    r = store.range({"key": b"a", "range_end": b"\0", "limit": 2})
    assert keys_of(r) == [b"a", b"b"] and r["more"] is True and r["count"] == 4
    r = store.range({"key": b"a", "range_end": b"\0", "limit": 4})
    assert keys_of(r) == [b"a", b"b", b"c", b"d"] and "more" not in r and r["count"] == 4
    r = store.range({"key": b"a", "range_end": b"\0", "limit": 3})
    assert r["more"] is True and r["count"] == 4 and len(r["kvs"]) == 3


def test_range_count_only_and_keys_only(store):
    fill(store, *ABC)
    assert store.range({"key": b"a", "range_end": b"\0", "count_only": True}) == {"count": 4}
    assert store.range({"key": b"a", "count_only": True}) == {"count": 1}
    assert store.range({"key": b"zz", "count_only": True}) == {}
    r = store.range({"key": b"a", "range_end": b"c", "keys_only": True})
    assert r["kvs"] == [kv(b"a", b"", 2, 2, 1), kv(b"b", b"", 3, 3, 1)]
    assert store.range({"key": b"a", "keys_only": True})["kvs"] == [kv(b"a", b"", 2, 2, 1)]
    # keys_only does not strip the stored value
    assert store.range({"key": b"a"})["kvs"][0]["value"] == b"3"


def test_range_sort(store):
    fill(store, *ABC)
    store.put({"key": b"b", "value": b"9"})  # b: version 2, mod 6
    base = {"key": b"a", "range_end": b"\0"}
    assert keys_of(store.range({**base, "sort_order": 2})) == [b"d", b"c", b"b", b"a"]
    assert keys_of(store.range({**base, "sort_order": 1})) == [b"a", b"b", b"c", b"d"]
    # target VALUE with order NONE sorts ascending (etcd's default)
    assert keys_of(store.range({**base, "sort_target": 4})) == [b"d", b"c", b"a", b"b"]
    assert keys_of(store.range({**base, "sort_target": 4, "sort_order": 2})) == [b"b", b"a", b"c", b"d"]
    assert keys_of(store.range({**base, "sort_target": 3, "sort_order": 2})) == [b"b", b"d", b"c", b"a"]
    assert keys_of(store.range({**base, "sort_target": 2, "sort_order": 2})) == [b"d", b"c", b"b", b"a"]
    # VERSION: ties keep key order (stable, like etcd's insertion sort on small inputs)
    assert keys_of(store.range({**base, "sort_target": 1})) == [b"a", b"c", b"d", b"b"]
    assert keys_of(store.range({**base, "sort_target": 1, "sort_order": 2})) == [b"b", b"a", b"c", b"d"]
    # sort then limit: the first of the sorted result, more set, count of all
    r = store.range({**base, "sort_order": 2, "limit": 1})
    assert keys_of(r) == [b"d"] and r["more"] and r["count"] == 4


def test_range_revision_filters_do_not_change_count(store):
    fill(store, *ABC)  # a@2 b@3 c@4 d@5
    store.put({"key": b"a", "value": b"x"})  # a@6 created 2
    base = {"key": b"a", "range_end": b"\0"}
    r = store.range({**base, "min_mod_revision": 4})
    assert keys_of(r) == [b"a", b"c", b"d"] and r["count"] == 4  # etcd prunes after counting
    assert keys_of(store.range({**base, "max_mod_revision": 4})) == [b"b", b"c"]
    assert keys_of(store.range({**base, "min_create_revision": 3, "max_create_revision": 4})) == [b"b", b"c"]
    r = store.range({**base, "min_mod_revision": 3, "limit": 1})
    assert keys_of(r) == [b"a"] and r["more"] and r["count"] == 4
    r = store.range({"key": b"b", "min_mod_revision": 4})
    assert r == {"count": 1}


def test_range_historical(store):
    fill(store, (b"a", b"1"), (b"b", b"1"), (b"a", b"2"))
    store.delete_range({"key": b"b"})
    assert store.rev == 5
    assert store.range({"key": b"a", "revision": 2})["kvs"] == [kv(b"a", b"1", 2, 2, 1)]
    assert store.range({"key": b"a", "revision": 1}) == {}
    r = store.range({"key": b"a", "range_end": b"\0", "revision": 3})
    assert r["kvs"] == [kv(b"a", b"1", 2, 2, 1), kv(b"b", b"1", 3, 3, 1)]
    assert keys_of(store.range({"key": b"a", "range_end": b"\0", "revision": 5})) == [b"a"]
    assert store.range({"key": b"b", "revision": 4})["kvs"] == [kv(b"b", b"1", 3, 3, 1)]
    assert store.range({"key": b"a", "revision": 5}) == store.range({"key": b"a"})


def test_range_future_and_compacted_revisions(store):
    fill(store, (b"a", b"1"), (b"a", b"2"), (b"a", b"3"))
    with pytest.raises(ErrFutureRev) as e:
        store.range({"key": b"a", "revision": 5})
    assert e.value.message == "etcdserver: mvcc: required revision is a future revision"
    store.compact(3)
    with pytest.raises(ErrCompacted) as e:
        store.range({"key": b"a", "revision": 2})
    assert e.value.message == "etcdserver: mvcc: required revision has been compacted"
    # the compact revision itself stays readable (etcd: rev < compactMainRev fails)
    assert store.range({"key": b"a", "revision": 3})["kvs"] == [kv(b"a", b"2", 2, 3, 2)]


# -------------------------------------------------------------- delete_range

def test_delete_single_and_range(store):
    fill(store, *ABC)
    resp, evs = store.delete_range({"key": b"a", "prev_kv": True})
    assert resp == {"deleted": 1, "prev_kvs": [kv(b"a", b"3", 2, 2, 1)]}
    assert evs == [{"type": 1, "kv": {"key": b"a", "mod_revision": 6},
                    "prev_kv": kv(b"a", b"3", 2, 2, 1)}]
    resp, evs = store.delete_range({"key": b"b", "range_end": b"\0"})
    assert resp == {"deleted": 3} and store.rev == 7
    # one revision, sub-revisions in key order
    assert [e["kv"] for e in evs] == [{"key": k, "mod_revision": 7} for k in (b"b", b"c", b"d")]
    assert store.range({"key": b"\0", "range_end": b"\0"}) == {}


def test_delete_nothing_keeps_revision(store):
    fill(store, (b"a", b"1"))
    before = state(store)
    assert store.delete_range({"key": b"zz"}) == ({}, [])
    assert store.delete_range({"key": b"b", "range_end": b"z", "prev_kv": True}) == ({}, [])
    assert state(store) == before


# ------------------------------------------------------------------- compact

def test_compact_errors_change_nothing(store):
    fill(store, (b"a", b"1"), (b"a", b"2"))
    before = state(store)
    with pytest.raises(ErrFutureRev):
        store.compact(4)
    assert state(store) == before
    store.compact(2)
    before = state(store)
    for rev in (1, 2):
        with pytest.raises(ErrCompacted):
            store.compact(rev)
    assert state(store) == before


def test_compact_zero_on_fresh_store_is_allowed_once(store):
    # etcd 3.4 on a fresh member: compaction {"revision":"0"} -> {"header":{...}} (no error)
    assert store.compact(0) == {}
    assert store.compact_rev == 0
    with pytest.raises(ErrCompacted):
        store.compact(0)


def test_compact_drops_history_but_keeps_latest(store):
    fill(store, (b"a", b"1"), (b"a", b"2"), (b"b", b"1"), (b"a", b"3"))  # a@2,3,5 b@4
    store.delete_range({"key": b"b"})  # b tombstone @6
    store.put({"key": b"c", "value": b"1"})  # c@7
    store.compact(6)
    assert store.compact_rev == 6
    # a's newest <= 6 is rev 5; b is deleted at 6: nothing of it left
    assert [p >> 24 for p in store._history] == [5, 7]
    assert store.range({"key": b"a", "revision": 6})["kvs"] == [kv(b"a", b"3", 2, 5, 3)]
    assert store.range({"key": b"b", "revision": 6}) == {}
    assert store.range({"key": b"\0", "range_end": b"\0"})["count"] == 2
    # history above the compact revision is untouched
    store.put({"key": b"a", "value": b"4"})
    assert store.range({"key": b"a"})["kvs"] == [kv(b"a", b"4", 2, 8, 4)]


def test_compact_keeps_revisions_above(store):
    fill(store, (b"a", b"1"), (b"a", b"2"), (b"a", b"3"))
    store.compact(3)
    assert store.range({"key": b"a", "revision": 4})["kvs"] == [kv(b"a", b"3", 2, 4, 3)]
    assert store.range({"key": b"a", "revision": 3})["kvs"] == [kv(b"a", b"2", 2, 3, 2)]


# ---------------------------------------------------------- snapshot and hash

def test_snapshot_round_trip_through_marshal(store):
    lessor = store._lessor
    lessor.grant(9, 60)
    fill(store, *ABC)
    store.put({"key": b"e", "value": b"L", "lease": 9})
    store.delete_range({"key": b"b"})
    store.compact(4)
    store.put({"key": b"a", "value": b"z"})
    blob = marshal.dumps(store.snapshot_state())
    lessor2 = Lessor.from_snapshot_state(marshal.loads(marshal.dumps(lessor.snapshot_state())))
    s2 = KVStore.from_snapshot_state(marshal.loads(blob), lessor2)
    assert state(s2) == state(store)
    assert s2.range({"key": b"\0", "range_end": b"\0"}) == store.range({"key": b"\0", "range_end": b"\0"})
    assert s2.range({"key": b"a", "revision": 5}) == store.range({"key": b"a", "revision": 5})
    assert lessor2.lookup(9).keys == {b"e"}
    # both go on identically
    for s in (store, s2):
        s.put({"key": b"e", "value": b"2"})
        s.compact(8)
    assert state(s2) == state(store)


def test_snapshot_round_trip_many_chunks_with_deletes_and_recreations():
    """Restoring loads whole chunks at once (KeyIndex.put_many): several chunks of
    puts, txns, deletes of keys and whole ranges, keys created again after a delete and
    keys whose last record is a delete all come back as they were, at every revision."""
    import random
    from fastkv.mvcc.store import SNAPSHOT_CHUNK
    rng = random.Random(7)
    lessor = Lessor()
    lessor.grant(5, 60)
    s = KVStore(lessor)
    keys = [b"k%04d" % i for i in range(600)]
    while len(s._history) < 3 * SNAPSHOT_CHUNK:
        r = rng.random()
        if r < 0.6:
            s.put({"key": rng.choice(keys), "value": b"v%d" % s.rev,
                   "lease": 5 if rng.random() < 0.05 else 0})
        elif r < 0.8:
            s.delete_range({"key": rng.choice(keys)})
        elif r < 0.85:
            a, b = sorted(rng.sample(keys, 2))
            s.delete_range({"key": a, "range_end": b})
        else:
            s.txn({"success": [{"request_put": {"key": k, "value": b"t"}}
                               for k in rng.sample(keys, 5)]})
    s.compact(s.rev // 3)
    s2 = KVStore.from_snapshot_state(marshal.loads(marshal.dumps(s.snapshot_state())),
                                     Lessor.from_snapshot_state(lessor.snapshot_state()))
    assert state(s2) == state(s)
    assert s2._live == s._live and len(s2) == len(s)
    everything = {"key": b"\0", "range_end": b"\0"}
    for at in range(s.compact_rev, s.rev + 1, 97):
        assert s2.range({**everything, "revision": at}) == s.range({**everything, "revision": at})
    for k in keys:   # (a compacted generation's created/version counters are not kept:
        # the records carry the KeyValues' create_revision and version)
        assert [g[2] for g in s2._index.history(k) or ()] == \
               [g[2] for g in s._index.history(k) or ()], k
    assert s2._lessor.lookup(5).keys == s._lessor.lookup(5).keys
    for st in (s, s2):
        st.put({"key": b"k0001", "value": b"after"})
        st.compact(st.rev - 10)
    assert state(s2) == state(s)


def test_record_keys_are_one_to_one_and_keep_the_main_revision():
    """_rkey spreads the low bits (a dict's first probe) but loses nothing."""
    from fastkv.mvcc.revision import SUB_BITS
    from fastkv.mvcc.store import _rkey
    packeds = [(m << SUB_BITS) | sub for m in (0, 1, 2, 3, 1000, (1 << 24) + 5, (1 << 39) - 1)
               for sub in (0, 1, 2, 127, 128, 4095, (1 << SUB_BITS) - 1)]
    rkeys = [_rkey(p) for p in packeds]
    assert len(set(rkeys)) == len(packeds)
    assert all(r >> SUB_BITS == p >> SUB_BITS for r, p in zip(rkeys, packeds))
    # plain puts (sub revision 0) of consecutive revisions land in different low bits
    assert len({_rkey(m << SUB_BITS) & 0xFFFF for m in range(2, 2 + 4096)}) == 4096


def test_hash_kv(store):
    fill(store, (b"a", b"1"), (b"b", b"2"))
    h1, c = store.hash_kv()
    assert c == -1
    assert store.hash_kv(3) == (h1, -1)
    h2 = store.hash_kv(2)[0]
    assert h2 != h1
    other = KVStore(Lessor())
    fill(other, (b"a", b"1"), (b"b", b"3"))
    assert other.hash_kv()[0] != h1
    with pytest.raises(ErrFutureRev):
        store.hash_kv(4)
    store.put({"key": b"a", "value": b"x"})
    h_before = store.hash_kv(3)[0]
    store.compact(3)
    # compaction drops what a hash at the compact revision already skipped
    assert store.hash_kv(4)[0] == store.hash_kv()[0]
    with pytest.raises(ErrCompacted):
        store.hash_kv(3)
    assert isinstance(h_before, int)


def test_hash_same_for_same_history():
    a, b = KVStore(Lessor()), KVStore(Lessor())
    for s in (a, b):
        fill(s, (b"x", b"1"), (b"y", b"2"), (b"x", b"3"))
        s.delete_range({"key": b"y"})
        s.compact(3)
    assert a.hash_kv() == b.hash_kv()


def test_get_helper(store):
    fill(store, (b"a", b"1"), (b"a", b"2"))
    assert store.get(b"a") == kv(b"a", b"2", 2, 3, 2)
    assert store.get(b"a", 2) == kv(b"a", b"1", 2, 2, 1)
    assert store.get(b"nope") is None
