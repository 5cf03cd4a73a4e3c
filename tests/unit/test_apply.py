"""The applier: committed entries -> state, deterministically on every member."""
from fastkv import requests
from fastkv.apply import Applier
from fastkv.errors import ErrLeaseNotFound
from fastkv.membership import Membership
from fastkv.mvcc.lease import Lessor
from fastkv.mvcc.store import KVStore
from fastkv.mvcc.watch import WatchHub
from fastkv.storage.wal import Entry


def make():
    lessor = Lessor()
    store = KVStore(lessor)
    hub = WatchHub(store, lambda rev=None: {})
    return Applier(store, lessor, hub, Membership()), store, lessor


def entry(term, index, req_id, kind, payload):
    return Entry(term, index, 0, requests.encode(req_id, kind, payload))


def test_expiry_applies_only_in_the_term_of_the_leader_that_decided_it():
    ap, store, lessor = make()
    ap.apply(entry(2, 1, 1, requests.LEASE_GRANT, {"ID": 7, "TTL": 10}))
    ap.apply(entry(2, 2, 2, requests.PUT, {"key": b"k", "value": b"v", "lease": 7}))
    rev = store.rev
    # Decided by the leader of term 2, appended by the leader of term 3: ignored.
    _id, res = ap.apply(entry(3, 3, 3, requests.LEASE_REVOKE, {"ID": 7, "expiry_term": 2}))
    assert isinstance(res, ErrLeaseNotFound)
    assert lessor.lookup(7) is not None and store.rev == rev
    assert store.range({"key": b"k"})["kvs"]
    # Decided and appended in the same term: the lease and its key go.
    _id, res = ap.apply(entry(3, 4, 4, requests.LEASE_REVOKE, {"ID": 7, "expiry_term": 3}))
    assert not isinstance(res, Exception)
    assert lessor.lookup(7) is None and not store.range({"key": b"k"}).get("kvs")


def test_client_revoke_has_no_term_condition():
    ap, store, lessor = make()
    ap.apply(entry(2, 1, 1, requests.LEASE_GRANT, {"ID": 9, "TTL": 10}))
    _id, res = ap.apply(entry(5, 2, 2, requests.LEASE_REVOKE, {"ID": 9}))
    assert not isinstance(res, Exception) and lessor.lookup(9) is None


def test_member_attributes_are_applied_to_the_membership():
    ap, _store, _lessor = make()
    from fastkv.membership import Member
    ap.membership.members[5] = Member(5, "", ["http://p"])
    ap.apply(entry(1, 1, 1, requests.MEMBER_ATTR, {"ID": 5, "name": "n",
                                                    "clientURLs": ["http://c"]}))
    m = ap.membership.get(5)
    assert m.name == "n" and m.client_urls == ["http://c"] and m.started


def test_alarms_cap_writes_and_travel_in_snapshots():
    from fastkv.alarms import ACTION_ACTIVATE, ACTION_DEACTIVATE, ALARM_CORRUPT, ALARM_NOSPACE
    from fastkv.errors import ErrCorrupt, ErrNoSpace
    ap, store, _lessor = make()
    ap.apply(entry(2, 1, 1, requests.PUT, {"key": b"a", "value": b"1"}))
    _id, res = ap.apply(entry(2, 2, 2, requests.ALARM, {"action": ACTION_ACTIVATE,
                                                        "memberID": 9, "alarm": ALARM_NOSPACE}))
    assert res == {"alarms": [{"memberID": 9, "alarm": ALARM_NOSPACE}]}
    rev = store.rev
    for i, (kind, payload) in enumerate([
            (requests.PUT, {"key": b"b", "value": b"2"}),
            (requests.LEASE_GRANT, {"ID": 5, "TTL": 10}),
            (requests.TXN, {"success": [{"request_txn": {"failure": [
                {"request_put": {"key": b"c"}}]}}]})]):
        _id, res = ap.apply(entry(2, 3 + i, 3 + i, kind, payload))
        assert isinstance(res, ErrNoSpace), kind
    assert store.rev == rev
    # deletes and read-only txns still go through while the space is short
    _id, res = ap.apply(entry(2, 6, 6, requests.DELETE_RANGE, {"key": b"a"}))
    assert res["deleted"] == 1
    state, blobs = ap.snapshot_state()
    assert state["alarms"] == [(ALARM_NOSPACE, 9)]
    _id, res = ap.apply(entry(2, 7, 7, requests.ALARM, {"action": ACTION_DEACTIVATE,
                                                        "memberID": 9, "alarm": ALARM_NOSPACE}))
    assert res == {"alarms": [{"memberID": 9, "alarm": ALARM_NOSPACE}]}
    _id, res = ap.apply(entry(2, 8, 8, requests.PUT, {"key": b"b", "value": b"2"}))
    assert not isinstance(res, Exception)
    ap.apply(entry(2, 9, 9, requests.ALARM, {"action": ACTION_ACTIVATE, "memberID": 9,
                                             "alarm": ALARM_CORRUPT}))
    _id, res = ap.apply(entry(2, 10, 10, requests.DELETE_RANGE, {"key": b"b"}))
    assert isinstance(res, ErrCorrupt)


def test_auth_entries_change_the_auth_store_and_unknown_ops_are_refused():
    import pytest
    from fastkv.auth import hash_password
    ap, _store, _lessor = make()
    ap.apply(entry(2, 1, 1, requests.AUTH, {"op": "user_add", "req": {
        "name": "root", "hashedPassword": hash_password("pw", b"salt", 4)}}))
    ap.apply(entry(2, 2, 2, requests.AUTH, {"op": "role_add", "req": {"name": "root"}}))
    ap.apply(entry(2, 3, 3, requests.AUTH, {"op": "user_grant_role",
                                            "req": {"user": "root", "role": "root"}}))
    ap.apply(entry(2, 4, 4, requests.AUTH, {"op": "auth_enable", "req": {}}))
    _id, res = ap.apply(entry(2, 5, 5, requests.AUTH, {
        "op": "authenticate", "req": {"name": "root", "simple_token": "abcdefghijklmnop"}}))
    assert res == {"token": "abcdefghijklmnop.5"}
    assert ap.auth.enabled and ap.snapshot_state()[0]["auth"] == ap.auth.to_state()
    with pytest.raises(ValueError):
        ap.apply(entry(2, 6, 6, requests.AUTH, {"op": "to_state", "req": {}}))


def test_each_result_carries_the_revision_its_own_change_made():
    """Results are delivered after the whole batch is applied: each must say its own
    revision, not the store's revision at delivery (etcd's Mutex relies on it)."""
    ap, store, _lessor = make()
    results = [ap.apply(entry(2, i + 1, i + 1, requests.PUT, {"key": b"k%d" % i}))[1]
               for i in range(3)]
    _id, txn = ap.apply(entry(2, 4, 4, requests.TXN, {"success": [
        {"request_put": {"key": b"t"}}]}))
    _id, grant = ap.apply(entry(2, 5, 5, requests.LEASE_GRANT, {"ID": 9, "TTL": 10}))
    assert [r["header"]["revision"] for r in results] == [2, 3, 4]
    assert txn["header"]["revision"] == 5 and grant["header"]["revision"] == 5
    assert store.rev == 5


def test_v2_requests_follow_etcds_apply_v2_and_travel_in_snapshots():
    from fastkv.v2store import V2Error, V2Store
    ap, store, _lessor = make()
    sec = 10**9
    t0 = 1_800_000_000 * sec
    n = iter(range(1, 100))

    def v2(**p):
        i = next(n)
        return ap.apply(entry(2, i, i, requests.V2, {"now": t0, **p}))[1]

    assert v2(method="PUT", path="/1/a", val="x").action == "set"
    assert v2(method="PUT", path="/1/a", val="y", prevExist=True).action == "update"
    err = v2(method="PUT", path="/1/a", val="z", prevExist=False)
    assert isinstance(err, V2Error) and err.error_code == 105
    assert v2(method="PUT", path="/1/a", val="z", prevValue="y").action == "compareAndSwap"
    q = v2(method="POST", path="/1/q", val="job")
    assert q.action == "create" and q.key == "/1/q/%020d" % q.index
    assert v2(method="PUT", path="/1/t", val="v", ttl=5).action == "set"
    assert v2(method="SYNC", now=t0 + 4 * sec) == []
    expired = v2(method="SYNC", now=t0 + 6 * sec)
    assert [e.action for e in expired] == ["expire"] and expired[0].key == "/1/t"
    err = v2(method="DELETE", path="/1/a", prevValue="nope")
    assert isinstance(err, V2Error) and err.error_code == 101
    assert v2(method="DELETE", path="/1/a", prevValue="z").action == "compareAndDelete"
    assert v2(method="QGET", path="/1", recursive=True).action == "get"
    assert store.rev == 1      # v2 and v3 data do not mix
    state = ap.snapshot_state()[0]["v2"]
    again = V2Store.from_state(state)
    assert again.to_state() == state and again.index == ap.v2.index
