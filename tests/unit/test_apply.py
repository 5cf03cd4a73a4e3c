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
