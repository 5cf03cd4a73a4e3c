"""KVStore.txn and check_txn, as etcd 3.4's applyTxn / checkTxnRequest.

Outputs quoted in comments were printed by a real etcd 3.4 JSON gateway.
"""
import pytest

from fastkv.errors import (
    ErrCompacted, ErrDuplicateKey, ErrEmptyKey, ErrFutureRev, ErrKeyNotFound, ErrLeaseNotFound,
    ErrTooManyOps,
)
from fastkv.mvcc.lease import Lessor
from fastkv.mvcc.store import KVStore
from fastkv.mvcc.validation import check_txn

EQUAL, GREATER, LESS, NOT_EQUAL = 0, 1, 2, 3
VERSION, CREATE, MOD, VALUE, LEASE = 0, 1, 2, 3, 4


def put(k, v=b"", **kw):
    return {"request_put": {"key": k, "value": v, **kw}}


def rng(k, **kw):
    return {"request_range": {"key": k, **kw}}


def dele(k, **kw):
    return {"request_delete_range": {"key": k, **kw}}


def txn(**kw):
    return {"request_txn": kw}


def cmp(key, target, result, **kw):
    return {"key": key, "target": target, "result": result, **kw}


@pytest.fixture
def store():
    s = KVStore(Lessor())
    s.put({"key": b"a", "value": b"1"})  # rev 2
    s.put({"key": b"b", "value": b"2"})  # rev 3
    return s


def state(s):
    return (s.rev, s.snapshot_state(), s.hash_kv())


# ------------------------------------------------------------------ compares

@pytest.mark.parametrize("c,expected", [
    (cmp(b"a", VALUE, EQUAL, value=b"1"), True),
    (cmp(b"a", VALUE, NOT_EQUAL, value=b"1"), False),
    (cmp(b"a", VALUE, GREATER, value=b"0"), True),
    (cmp(b"a", VALUE, LESS, value=b"0"), False),
    (cmp(b"a", VERSION, EQUAL, version=1), True),
    (cmp(b"a", CREATE, EQUAL, create_revision=2), True),
    (cmp(b"a", MOD, GREATER, mod_revision=1), True),
    (cmp(b"a", MOD, LESS, mod_revision=2), False),
    (cmp(b"a", LEASE, EQUAL, lease=0), True),
    (cmp(b"a", LEASE, EQUAL), True),  # missing field = proto default 0
    # a missing key compares as an all-zero KeyValue...
    (cmp(b"zz", VERSION, EQUAL, version=0), True),
    (cmp(b"zz", CREATE, EQUAL), True),
    (cmp(b"zz", MOD, LESS, mod_revision=1), True),
    # ...except on VALUE, which always fails (etcd: nested txn comparing
    # "nope" VALUE == "" took the failure branch)
    (cmp(b"zz", VALUE, EQUAL, value=b""), False),
    (cmp(b"zz", VALUE, NOT_EQUAL, value=b"x"), False),
    # ranges: every key must match
    (cmp(b"a", VERSION, EQUAL, range_end=b"c", version=1), True),
    (cmp(b"a", MOD, GREATER, range_end=b"c", mod_revision=2), False),
    (cmp(b"a", VALUE, GREATER, range_end=b"\0", value=b""), True),
    (cmp(b"x", VERSION, EQUAL, range_end=b"z", version=0), True),
])
def test_compare(store, c, expected):
    resp, _ = store.txn({"compare": [c]})
    assert resp.get("succeeded", False) is expected


def test_all_compares_must_hold(store):
    resp, _ = store.txn({"compare": [cmp(b"a", VALUE, EQUAL, value=b"1"),
                                     cmp(b"b", VALUE, EQUAL, value=b"x")],
                         "success": [put(b"s", b"1")], "failure": [put(b"f", b"1")]})
    assert "succeeded" not in resp
    assert store.range({"key": b"f"})["count"] == 1 and store.range({"key": b"s"}) == {}


# -------------------------------------------------------------------- ops

def test_txn_ops_share_one_revision_and_see_each_other(store):
    # etcd, at revision 2, txn [put c, range c, delete zz, put d] ->
    # "revision":"3", responses: put {"header":{"revision":"3"}},
    # range {"header":{"revision":"3"},"kvs":[c@3],"count":"1"},
    # delete {"header":{"revision":"3"}}, put {"header":{"revision":"3"}}
    resp, evs = store.txn({"success": [put(b"c", b"1"), rng(b"c"), dele(b"zz"), put(b"d", b"1")]})
    assert store.rev == 4
    c = {"key": b"c", "create_revision": 4, "mod_revision": 4, "version": 1, "value": b"1"}
    assert resp == {"succeeded": True, "responses": [
        {"response_put": {"header": {"revision": 4}}},
        {"response_range": {"header": {"revision": 4}, "kvs": [c], "count": 1}},
        {"response_delete_range": {"header": {"revision": 4}}},
        {"response_put": {"header": {"revision": 4}}},
    ]}
    assert [e["kv"]["key"] for e in evs] == [b"c", b"d"]
    assert [store._history[-2] & 0xFFFFFF, store._history[-1] & 0xFFFFFF] == [0, 1]


def test_headers_before_the_first_change_carry_the_old_revision(store):
    # etcd: txn [delete a range_end "\0"... ] at rev 1 answered
    # response_delete_range {"header":{"revision":"1"}} when nothing was deleted yet
    resp, evs = store.txn({"success": [rng(b"a"), dele(b"zz"), put(b"c"), rng(b"a")]})
    hdrs = [list(r.values())[0]["header"]["revision"] for r in resp["responses"]]
    assert hdrs == [3, 3, 4, 4]


def test_read_only_txn_does_not_bump_revision(store):
    before = state(store)
    resp, evs = store.txn({"success": [rng(b"a"), dele(b"nothing")]})
    assert evs == [] and state(store) == before
    assert resp["responses"][0]["response_range"]["kvs"][0]["value"] == b"1"
    # empty txn (etcd: {} -> {"header":{...},"succeeded":true})
    assert store.txn({}) == ({"succeeded": True}, [])


def test_txn_delete_then_put_and_prev_kv(store):
    resp, evs = store.txn({"success": [dele(b"a", prev_kv=True), put(b"c", b"3", prev_kv=True),
                                       put(b"b", b"9", prev_kv=True)]})
    r = resp["responses"]
    assert r[0]["response_delete_range"]["deleted"] == 1
    assert r[0]["response_delete_range"]["prev_kvs"][0]["value"] == b"1"
    assert "prev_kv" not in r[1]["response_put"]
    assert r[2]["response_put"]["prev_kv"]["value"] == b"2"
    assert [(e["type"], e["kv"]["key"], e["kv"]["mod_revision"]) for e in evs] == \
        [(1, b"a", 4), (0, b"c", 4), (0, b"b", 4)]


def test_failure_branch(store):
    resp, _ = store.txn({"compare": [cmp(b"a", VALUE, EQUAL, value=b"nope")],
                         "success": [put(b"s")], "failure": [rng(b"b")]})
    assert "succeeded" not in resp
    assert resp["responses"][0]["response_range"]["kvs"][0]["key"] == b"b"
    assert store.rev == 3


def test_nested_txn(store):
    # etcd: {"response_txn":{"header":{},"succeeded":true,"responses":[{"response_put":
    # {"header":{"revision":"4"}}}]}}, and the failed nested one has no "succeeded"
    resp, evs = store.txn({"success": [
        txn(success=[put(b"n1", b"1")]),
        txn(compare=[cmp(b"n1", VERSION, EQUAL, version=0)],  # evaluated BEFORE the txn runs
            success=[rng(b"n1")], failure=[put(b"never")]),
        txn(compare=[cmp(b"nope", VALUE, EQUAL, value=b"")], failure=[rng(b"n1")]),
    ]})
    assert store.rev == 4
    r = resp["responses"]
    assert r[0] == {"response_txn": {"header": {}, "succeeded": True,
                                     "responses": [{"response_put": {"header": {"revision": 4}}}]}}
    assert r[1]["response_txn"]["succeeded"] is True
    assert r[1]["response_txn"]["responses"][0]["response_range"]["kvs"][0]["key"] == b"n1"
    assert "succeeded" not in r[2]["response_txn"]
    assert r[2]["response_txn"]["responses"][0]["response_range"]["count"] == 1
    assert [e["kv"]["key"] for e in evs] == [b"n1"]
    # an empty nested txn: etcd {"response_txn":{"header":{},"succeeded":true}}
    assert store.txn({"success": [txn()]})[0]["responses"] == [
        {"response_txn": {"header": {}, "succeeded": True}}]


def test_nested_paths_follow_their_own_branches(store):
    resp, evs = store.txn({
        "compare": [cmp(b"a", VALUE, EQUAL, value=b"x")],  # false
        "success": [txn(success=[put(b"wrong")])],
        "failure": [txn(compare=[cmp(b"b", VERSION, EQUAL, version=1)],
                        success=[txn(compare=[cmp(b"a", VERSION, GREATER, version=5)],
                                     success=[put(b"no")], failure=[put(b"deep", b"1")])])],
    })
    assert [e["kv"]["key"] for e in evs] == [b"deep"]
    inner = resp["responses"][0]["response_txn"]["responses"][0]["response_txn"]
    assert "succeeded" not in inner and inner["responses"][0]["response_put"]["header"] == {"revision": 4}


def test_txn_historical_range_and_errors(store):
    store.put({"key": b"a", "value": b"2"})  # rev 4
    resp, _ = store.txn({"success": [rng(b"a", revision=2)]})
    assert resp["responses"][0]["response_range"]["kvs"][0]["value"] == b"1"
    assert resp["responses"][0]["response_range"]["header"] == {"revision": 4}
    before = state(store)
    with pytest.raises(ErrFutureRev):
        store.txn({"success": [put(b"x"), rng(b"a", revision=5)]})
    assert state(store) == before
    store.compact(3)
    before = state(store)
    with pytest.raises(ErrCompacted):
        store.txn({"success": [put(b"x"), txn(success=[rng(b"a", revision=2)])]})
    assert state(store) == before
    # a range in the branch not taken is not checked
    store.txn({"compare": [cmp(b"a", VERSION, EQUAL, version=99)],
               "success": [rng(b"a", revision=1)], "failure": [put(b"y")]})
    assert store.rev == 5


def test_txn_put_errors_change_nothing(store):
    before = state(store)
    with pytest.raises(ErrKeyNotFound):
        store.txn({"success": [put(b"c", b"1"), put(b"missing", ignore_value=True)]})
    with pytest.raises(ErrLeaseNotFound):
        store.txn({"success": [put(b"c", b"1"), txn(success=[put(b"d", lease=42)])]})
    # the failing put may sit in a nested txn of the chosen path only
    store_rev = store.rev
    store.txn({"compare": [cmp(b"a", VERSION, EQUAL, version=1)],
               "success": [rng(b"a")], "failure": [put(b"missing", ignore_value=True)]})
    assert store.rev == store_rev
    assert state(store) == before


def test_ignore_value_after_delete_in_same_txn_fails_whole_txn(store):
    # a delete with range_end "\0" escapes etcd's duplicate check (etcd accepted
    # txn [delete a.."\0", put b]); a later ignore_value put of a key it removed
    # would find no key. etcd panics there; we refuse the txn before any change.
    req = {"success": [dele(b"a", range_end=b"\0"), put(b"b", ignore_value=True)]}
    check_txn(req)
    before = state(store)
    with pytest.raises(ErrKeyNotFound):
        store.txn(req)
    assert state(store) == before


def test_txn_with_leases(store):
    store._lessor.grant(5, 60)
    resp, evs = store.txn({"success": [put(b"l", b"v", lease=5)]})
    assert evs[0]["kv"]["lease"] == 5
    assert store._lessor.lookup(5).keys == {b"l"}
    resp, _ = store.txn({"compare": [cmp(b"l", LEASE, EQUAL, lease=5)], "success": [rng(b"l")]})
    assert resp["succeeded"]


def test_revoke_lease_deletes_keys_in_one_revision(store):
    lessor = store._lessor
    lessor.grant(5, 60)
    for k in (b"z", b"x", b"y"):
        store.put({"key": k, "value": b"v", "lease": 5})
    rev = store.rev
    resp, evs = store.revoke_lease(5)
    assert resp == {} and store.rev == rev + 1
    assert [(e["type"], e["kv"]) for e in evs] == \
        [(1, {"key": k, "mod_revision": rev + 1}) for k in (b"x", b"y", b"z")]
    assert lessor.lookup(5) is None
    with pytest.raises(ErrLeaseNotFound):
        store.revoke_lease(5)
    lessor.grant(6, 60)
    rev = store.rev
    assert store.revoke_lease(6) == ({}, []) and store.rev == rev


# ------------------------------------------------------------------ check_txn

def test_check_txn_too_many_ops():
    check_txn({"success": [put(b"k%d" % i) for i in range(128)]})
    with pytest.raises(ErrTooManyOps):
        check_txn({"success": [put(b"k%d" % i) for i in range(129)]})
    with pytest.raises(ErrTooManyOps):
        check_txn({"compare": [cmp(b"a", VERSION, EQUAL)] * 3}, max_txn_ops=2)
    # a nested txn gets what the outer level leaves: 3 - 2 = 1
    with pytest.raises(ErrTooManyOps):
        check_txn({"success": [put(b"a"), txn(success=[put(b"b"), put(b"c")])]}, max_txn_ops=3)
    check_txn({"success": [put(b"a"), txn(success=[put(b"b")])]}, max_txn_ops=3)


def test_check_txn_empty_keys_and_empty_op():
    with pytest.raises(ErrEmptyKey):
        check_txn({"compare": [{"key": b"", "target": VERSION}]})
    with pytest.raises(ErrEmptyKey):
        check_txn({"failure": [rng(b"")]})
    with pytest.raises(ErrEmptyKey):
        check_txn({"success": [txn(success=[dele(b"")])]})
    # etcd: {"success":[{}]} -> {"error":"etcdserver: key not found",...,"code":3}
    with pytest.raises(ErrKeyNotFound):
        check_txn({"success": [{}]})


@pytest.mark.parametrize("ops", [
    [put(b"a"), put(b"a")],
    [put(b"a"), dele(b"a")],
    [dele(b"a", range_end=b"c"), put(b"b")],
    [put(b"b"), txn(success=[put(b"b")])],
    [dele(b"a", range_end=b"z"), txn(success=[put(b"q")])],
    [txn(success=[dele(b"k")]), put(b"k")],
    [txn(success=[put(b"k")]), txn(failure=[put(b"k")])],
    [txn(success=[dele(b"a", range_end=b"m")]), txn(failure=[put(b"c")])],
])
def test_check_txn_duplicate_keys(ops):
    with pytest.raises(ErrDuplicateKey) as e:
        check_txn({"success": ops})
    assert e.value.message == "etcdserver: duplicate key given in txn request"
    with pytest.raises(ErrDuplicateKey):
        check_txn({"failure": [txn(success=ops)]})


@pytest.mark.parametrize("ops", [
    [dele(b"a"), dele(b"a")],  # deletes never conflict with deletes
    [put(b"a"), put(b"b"), rng(b"a"), rng(b"a")],
    [txn(success=[put(b"k")], failure=[put(b"k")])],  # then/else exclude each other
    [put(b"a"), dele(b"b", range_end=b"c")],
    [dele(b"a", range_end=b"\0"), put(b"b")],  # etcd accepted this (see above)
    [put(b"c"), dele(b"a", range_end=b"c")],  # range_end is exclusive
])
def test_check_txn_allowed(ops):
    check_txn({"success": ops})


def test_txn_is_read_only():
    from fastkv.mvcc.validation import txn_is_read_only
    rng = {"request_range": {"key": b"a"}}
    put = {"request_put": {"key": b"a", "value": b"v"}}
    dele = {"request_delete_range": {"key": b"a"}}
    assert txn_is_read_only({})
    assert txn_is_read_only({"success": [rng], "failure": [rng]})
    assert not txn_is_read_only({"success": [rng], "failure": [put]})
    assert not txn_is_read_only({"success": [dele]})
    assert txn_is_read_only({"success": [{"request_txn": {"success": [rng]}}]})
    assert not txn_is_read_only({"success": [{"request_txn": {"failure": [put]}}]})
