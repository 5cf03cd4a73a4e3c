"""Lessor: the applied lease table and the leader's expiry clock (fake clock)."""
import marshal

import pytest

from fastkv.errors import ErrLeaseExist, ErrLeaseNotFound, ErrLeaseTTLTooLarge, ErrNotLeader
from fastkv.mvcc.lease import MAX_LEASE_TTL, Lessor
from fastkv.mvcc.store import KVStore


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def lessor(clock):
    return Lessor(min_ttl=5, clock=clock)


def test_grant_and_errors(lessor):
    assert lessor.grant(1, 60) == {"ID": 1, "TTL": 60}
    assert lessor.grant(2, 1) == {"ID": 2, "TTL": 5}  # clamped to the minimum TTL
    assert lessor.grant(3, MAX_LEASE_TTL)["TTL"] == MAX_LEASE_TTL
    with pytest.raises(ErrLeaseExist) as e:
        lessor.grant(1, 10)
    assert e.value.message == "etcdserver: lease already exists"
    with pytest.raises(ErrLeaseTTLTooLarge) as e:
        lessor.grant(4, MAX_LEASE_TTL + 1)
    assert e.value.message == "etcdserver: too large lease TTL"
    with pytest.raises(ErrLeaseNotFound):  # ID 0 must be chosen by the server first
        lessor.grant(0, 10)
    assert lessor.lookup(1).ttl == 60 and lessor.lookup(4) is None
    assert len(lessor) == 3 and 2 in lessor


def test_attach_detach_revoke(lessor):
    lessor.grant(1, 60)
    lessor.attach(1, b"b")
    lessor.attach(1, b"a")
    with pytest.raises(ErrLeaseNotFound):
        lessor.attach(2, b"x")
    lessor.detach(2, b"x")  # unknown lease: nothing to do
    assert lessor.time_to_live(1, keys=True)["keys"] == [b"a", b"b"]
    lessor.detach(1, b"b")
    assert lessor.revoke(1) == [b"a"]
    with pytest.raises(ErrLeaseNotFound):
        lessor.revoke(1)


def test_time_to_live(lessor, clock):
    lessor.grant(1, 60)
    # not primary: no clock running, the granted TTL
    assert lessor.time_to_live(1) == {"ID": 1, "TTL": 60, "grantedTTL": 60}
    lessor.promote()
    clock.t += 10.5
    assert lessor.time_to_live(1) == {"ID": 1, "TTL": 49, "grantedTTL": 60}
    assert lessor.time_to_live(1, keys=True)["keys"] == []
    # etcd's v3rpc answers an unknown lease with TTL -1
    assert lessor.time_to_live(99) == {"ID": 99, "TTL": -1}


def test_clock_only_runs_on_primary(lessor, clock):
    lessor.grant(1, 10)
    clock.t += 100
    assert lessor.expired() == []
    assert lessor.remaining(1) == float("inf")
    with pytest.raises(ErrNotLeader):
        lessor.renew(1)
    lessor.promote()
    assert lessor.remaining(1) == 10
    clock.t += 9
    assert lessor.expired() == []
    clock.t += 1
    assert lessor.expired() == [1]
    lessor.demote()
    assert lessor.expired() == [] and lessor.remaining(1) == float("inf")


def test_promote_extend_and_grant_while_primary(lessor, clock):
    lessor.grant(1, 10)
    lessor.promote(extend=5)
    assert lessor.remaining(1) == 15
    lessor.grant(2, 20)
    assert lessor.remaining(2) == 20


def test_renew(lessor, clock):
    lessor.grant(1, 10)
    lessor.promote()
    clock.t += 8
    assert lessor.renew(1) == 10
    assert lessor.remaining(1) == 10
    clock.t += 9
    assert lessor.expired() == []  # the renewal moved the expiry
    clock.t += 1
    assert lessor.expired() == [1]
    with pytest.raises(ErrLeaseNotFound):  # expired: its revocation is on the way
        lessor.renew(1)
    with pytest.raises(ErrLeaseNotFound):
        lessor.renew(42)


def test_expired_order_limit_and_retry(lessor, clock):
    for i, ttl in ((1, 30), (2, 10), (3, 20)):
        lessor.grant(i, ttl)
    lessor.promote()
    clock.t += 25
    assert lessor.expired(limit=1) == [2]
    assert lessor.expired() == [3]
    assert lessor.expired() == []  # already reported; not again until the retry interval
    clock.t += 3
    assert lessor.expired() == [2, 3]  # revocations lost: asked again
    lessor.revoke(2)
    clock.t += 10
    assert lessor.expired() == [1, 3]  # by due time: 1 at +30, 3 retried at +31


def test_leases_sorted_by_expiry(lessor):
    lessor.grant(1, 30)
    lessor.grant(2, 10)
    lessor.grant(3, 20)
    assert lessor.leases() == [1, 2, 3]  # all "forever" off-primary: by ID
    lessor.promote()
    assert lessor.leases() == [2, 3, 1]


def test_promote_spreads_many_expiries(clock):
    lessor = Lessor(clock=clock)
    for i in range(1, 2001):
        lessor.grant(i, 10)
    lessor.promote()
    remaining = sorted(lessor.remaining(i) for i in range(1, 2001))
    assert remaining[0] == 10
    # at most 3/4 of the revoke rate (750) fall due within one second of each other
    assert sum(1 for r in remaining if r < 11) <= 750
    assert remaining[-1] > 11


def test_snapshot_round_trip(lessor, clock):
    lessor.grant(1, 60)
    lessor.grant(2, 7)
    state = marshal.loads(marshal.dumps(lessor.snapshot_state()))
    other = Lessor.from_snapshot_state(state, min_ttl=5, clock=clock)
    assert other.snapshot_state() == lessor.snapshot_state()
    assert other.leases() == [1, 2]
    other.promote()
    assert other.remaining(2) == 7


def test_store_revoke_through_lessor_and_restore_reattaches(lessor):
    store = KVStore(lessor)
    lessor.grant(1, 60)
    store.put({"key": b"a", "value": b"1", "lease": 1})
    store.put({"key": b"b", "value": b"1", "lease": 1})
    restored_lessor = Lessor.from_snapshot_state(lessor.snapshot_state())
    restored = KVStore.from_snapshot_state(store.snapshot_state(), restored_lessor)
    assert restored_lessor.lookup(1).keys == {b"a", b"b"}
    for s in (store, restored):
        _, evs = s.revoke_lease(1)
        assert [e["kv"]["key"] for e in evs] == [b"a", b"b"]
        assert s.range({"key": b"a", "range_end": b"\0"}) == {}
    assert store.hash_kv() == restored.hash_kv()
