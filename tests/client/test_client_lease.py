"""fastkv.client leases: the calls, and a Lease kept alive in the background until
it is revoked, lost to someone else's revoke, or lost because the cluster became
unreachable for longer than its TTL."""
from __future__ import annotations

import threading
import time

import pytest
from clientfakes import TcpProxy
from clientsupport import wait_for

from fastkv.client import Client, LeaseGrant, LeaseInfo, errors


def test_lease_calls(client, prefix):
    g = client.lease_grant(60)
    assert isinstance(g, LeaseGrant) and g.id > 0 and g.ttl == 60
    try:
        client.put(prefix + "a", "1", lease=g.id)
        client.put(prefix + "b", "2", lease=g.id)
        assert g.id in client.leases()
        info = client.lease_time_to_live(g.id, keys=True)
        assert isinstance(info, LeaseInfo) and info.alive
        assert info.granted_ttl == 60 and 0 < info.ttl <= 60
        assert sorted(info.keys) == [(prefix + "a").encode(), (prefix + "b").encode()]
        assert client.lease_time_to_live(g.id).keys == ()
        assert 0 < client.lease_keepalive_once(g.id) <= 60
    finally:
        client.lease_revoke(g.id)
    assert client.get(prefix + "a") is None and client.get(prefix + "b") is None
    assert g.id not in client.leases()
    assert client.lease_time_to_live(g.id).ttl == -1
    with pytest.raises(errors.LeaseNotFound):
        client.lease_revoke(g.id)
    with pytest.raises(errors.LeaseNotFound):
        client.lease_keepalive_once(g.id)

    chosen = client.lease_grant(30, id=0x5EED0000 + len(prefix))
    try:
        assert chosen.id == 0x5EED0000 + len(prefix)
        with pytest.raises(errors.LeaseExists):
            client.lease_grant(30, id=chosen.id)
    finally:
        client.lease_revoke(chosen.id)


def test_lease_context_manager_revokes(client, prefix):
    with client.lease(30) as lease:
        assert lease.alive and lease.ttl == 30
        client.put(prefix + "k", "v", lease=lease.id)
        assert lease.time_to_live(keys=True).keys == ((prefix + "k").encode(),)
    assert not lease.alive and not lease.lost
    assert client.get(prefix + "k") is None
    assert client.lease_time_to_live(lease.id).ttl == -1
    lease.revoke()   # again: a lease already gone is fine


def test_kept_alive_past_ttl_then_lost(server, client, prefix):
    """Two leases of 2 s: one kept alive past its TTL then revoked by someone else;
    one whose client loses the cluster (a proxy cut) and reports it lost once its TTL
    ran out. Both at once, to wait for one TTL only."""
    proxy = TcpProxy(server.url)
    try:
        cut_client = Client(proxy.url, timeout=2)
        lost, cut_lost = [], threading.Event()
        lease = client.lease(2, on_lost=lost.append)
        granted = time.monotonic()
        cut_lease = cut_client.lease(2, on_lost=lambda lease: cut_lost.set())
        client.put(prefix + "k", "v", lease=lease.id)
        wait_for(lambda: cut_lease.last_keepalive, "a first keep-alive through the proxy")
        proxy.cut()

        # kept alive past its TTL: a keep-alive answered after the first TTL ran out
        wait_for(lambda: lease.last_keepalive and lease.last_keepalive > granted + lease.ttl + 0.2,
                 "keep-alives past the lease's TTL")
        assert lease.alive and client.get(prefix + "k").text == "v"
        lease.check()

        # the cut one could not be kept alive: lost once its TTL ran out
        assert cut_lease.wait_lost(15), "the lease was not reported lost"
        assert cut_lost.is_set() and not cut_lease.alive and cut_lease.lost
        assert "expired" in cut_lease.lost_reason
        cut_client.close()

        with Client(server.url) as other:   # someone else revokes the first one
            other.lease_revoke(lease.id)
        assert lease.wait_lost(10), "the keep-alive thread did not notice the revoke"
        assert not lease.alive and lease.lost and lost == [lease]
        assert "revoked" in lease.lost_reason
        with pytest.raises(errors.LeaseLost):
            lease.check()
        assert client.get(prefix + "k") is None
        lease.revoke()   # no error: it is gone already
    finally:
        proxy.close()


def test_client_close_stops_keepalive(server):
    c = Client(server.url)
    lease = c.lease(30)
    c.close()
    assert not lease.alive and not lease.lost
    with pytest.raises(errors.ClientClosed):
        c.get("x")
    with Client(server.url) as other:
        assert other.lease_time_to_live(lease.id).ttl > 0   # not revoked: it expires
        other.lease_revoke(lease.id)
