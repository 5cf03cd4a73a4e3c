"""fastkv.client endpoints and retries: a down endpoint (connection refused) is
skipped by every call; a call that may have reached a server and broke is resent
only when it is safe to repeat (reads), never for a write."""
from __future__ import annotations

import pytest
from clientfakes import DroppingServer
from servers import free_port

from fastkv.client import Client, errors, get_op, put_op, value


def _dead() -> str:
    return f"http://127.0.0.1:{free_port()}"   # nobody listens: connection refused


def test_down_endpoint_is_skipped_by_reads_and_writes(server, prefix):
    with Client([_dead(), _dead(), server.url], timeout=10) as c:
        assert c.endpoints[-1] == server.url
        # a write goes on: it was never sent to the refused endpoints
        assert c.put(prefix + "k", "v").revision > 0
        assert c.current_endpoint == server.url
        assert c.get(prefix + "k").text == "v"
        assert c.delete(prefix + "k").deleted == 1
        assert c.txn().if_(value(prefix + "k") == "x").else_(put_op(prefix + "k", "t")) \
            .commit().succeeded is False
        g = c.lease_grant(30)
        c.lease_revoke(g.id)
        assert c.status().header.member_id
    # a fresh client whose first endpoint is down: its first call is a write
    with Client([_dead(), server.url]) as c:
        assert c.put(prefix + "k2", "v").revision > 0
        assert c.txn().then(get_op(prefix + "k2")).commit()[0][0].text == "v"


def test_no_endpoint_reachable(prefix):
    with Client([_dead(), _dead()], timeout=1) as c:
        with pytest.raises(errors.ConnectionFailed) as ei:
            c.get(prefix + "k")
        assert isinstance(ei.value, errors.Unavailable)
        with pytest.raises(errors.Unavailable):
            c.put(prefix + "k", "v")


@pytest.mark.parametrize("op", ["put", "delete", "txn", "lease_grant", "compact"])
def test_ambiguous_write_is_not_resent(server, prefix, op):
    """The first endpoint takes the whole request and drops the connection: the write
    may have been applied, so the client raises instead of sending it to the second
    (live) endpoint."""
    drop = DroppingServer()
    try:
        with Client([drop.url, server.url], timeout=10) as c:
            k = prefix + "k"
            calls = {
                "put": (lambda: c.put(k, "v"), "KV/Put"),
                "delete": (lambda: c.delete(k), "KV/DeleteRange"),
                "txn": (lambda: c.txn().then(put_op(k, "v")).commit(), "KV/Txn"),
                "lease_grant": (lambda: c.lease_grant(30), "Lease/LeaseGrant"),
                "compact": (lambda: c.compact(1), "KV/Compact"),
            }
            fn, method = calls[op]
            with Client(server.url) as direct:
                leases_before = set(direct.leases())
                rev_before = direct.status().header.revision
            with pytest.raises(errors.ConnectionLost) as ei:
                fn()
            assert isinstance(ei.value, errors.Unavailable)
            assert drop.count(method) == 1   # sent once, to the first endpoint only
            with Client(server.url) as direct:   # and nothing reached the live member
                assert direct.status().header.revision == rev_before
                assert set(direct.leases()) == leases_before
            # a read in the same situation is resent, to the live endpoint
            assert c.get(k) is None
            assert drop.count("KV/Range") <= 1
            assert c.current_endpoint == server.url
    finally:
        drop.close()


def test_fixed_endpoint_calls_do_not_fail_over(server):
    dead = _dead()
    with Client([dead, server.url], timeout=2) as c:
        assert c.status(endpoint=server.url).header.member_id
        with pytest.raises(errors.ConnectionFailed):
            c.status(endpoint=dead)
        with pytest.raises(ValueError):
            c.status(endpoint="http://127.0.0.1:1")


def test_endpoint_forms(server):
    hostport = server.url.split("//", 1)[1]
    with Client(hostport) as c:                     # host:port, plain (no TLS options)
        assert c.status().version
    with Client(f"{_dead()},{server.url}") as c:     # comma-separated list
        assert len(c.endpoints) == 2 and c.status().version
    with pytest.raises(ValueError):
        Client("ftp://127.0.0.1:1")
    with pytest.raises(ValueError):
        Client("no-port")
