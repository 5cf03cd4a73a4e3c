"""OpenStack's etcd3gw client (PyPI ``etcd3gw``) against fastkv and etcd 3.4.

etcd3gw speaks the v3 JSON gateway through ``requests``: POST {api_path}kv/put,
kv/range, kv/deleterange, kv/txn, lease/grant, lease/keepalive,
kv/lease/revoke, kv/lease/timetolive (the 3.4 alias paths), watch (a stream,
one JSON message per HTTP chunk) and GET /version to discover the api path.
It sends enums by name ("EQUAL", "CREATE", "NOPUT") and int64s as JSON
numbers. Every test runs on both servers (``any_server``); passing on etcd
proves the test, passing on fastkv proves fastkv.
"""
from __future__ import annotations

import threading
import time
import urllib.parse

import pytest

import etcd3gw
from etcd3gw.lock import Lock
from etcd3gw.utils import _encode

API_PATH = "/v3/"


@pytest.fixture
def client(any_server):
    u = urllib.parse.urlsplit(any_server.url)
    c = etcd3gw.client(host=u.hostname, port=u.port, api_path=API_PATH, timeout=10)
    try:
        yield c
    finally:
        c.session.close()


def test_api_path_discovery(any_server):
    """GET /version must say 3.4+, so etcd3gw picks /v3/ by itself."""
    u = urllib.parse.urlsplit(any_server.url)
    c = etcd3gw.client(host=u.hostname, port=u.port, api_path=None, timeout=10)
    try:
        assert c.api_path == "/v3/"
        assert c.put("disc", "x") is True
        assert c.get("disc") == [b"x"]
    finally:
        c.session.close()


def test_put_get_delete(client):
    assert client.put("foo", "bar") is True
    assert client.get("foo") == [b"bar"]
    [(value, meta)] = client.get("foo", metadata=True)
    assert value == b"bar"
    assert meta["key"] == b"foo"
    assert int(meta["version"]) == 1
    assert int(meta["create_revision"]) == int(meta["mod_revision"])
    assert client.put("foo", "baz") is True
    [(value, meta2)] = client.get("foo", metadata=True)
    assert value == b"baz" and int(meta2["version"]) == 2
    assert int(meta2["mod_revision"]) == int(meta["mod_revision"]) + 1
    assert client.get("nosuch") == []
    assert client.delete("foo") is True
    assert client.delete("foo") is False
    assert client.get("foo") == []
    # binary-safe keys and values
    assert client.put(b"bin\x00key", b"\xff\x00\x01") is True
    assert client.get(b"bin\x00key") == [b"\xff\x00\x01"]


def test_prefix_operations(client):
    for i in range(5):
        client.put(f"/pfx/{i}", f"v{i}")
    client.put("/pfy", "outside")
    got = client.get_prefix("/pfx/")
    assert [v for v, _ in got] == [b"v0", b"v1", b"v2", b"v3", b"v4"]
    assert [m["key"] for _, m in got] == [f"/pfx/{i}".encode() for i in range(5)]
    desc = client.get_prefix("/pfx/", sort_order="descend", sort_target="key")
    assert [v for v, _ in desc] == [b"v4", b"v3", b"v2", b"v1", b"v0"]
    assert len(client.get("/pfx/", range_end=_encode_end("/pfx/"), limit=2)) == 2
    assert client.get("/pfx/", range_end=_encode_end("/pfx/"), keys_only=True) == [b""] * 5
    assert sorted(v for v, _ in client.get_all()) == sorted([b"v0", b"v1", b"v2", b"v3", b"v4", b"outside"])
    assert client.delete_prefix("/pfx/") is True
    assert client.get_prefix("/pfx/") == []
    assert client.delete_prefix("/pfx/") is False
    assert client.get("/pfy") == [b"outside"]


def _encode_end(prefix: str) -> str:
    # etcd3gw's get(range_end=...) takes the raw end key
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def test_create_and_replace(client):
    assert client.create("c", "1") is True
    assert client.create("c", "2") is False
    assert client.get("c") == [b"1"]
    assert client.replace("c", "1", "3") is True
    assert client.replace("c", "1", "4") is False
    assert client.get("c") == [b"3"]


def test_transaction(client):
    client.put("t/a", "1")
    client.put("t/b", "2")
    ka, kb, kc = _encode("t/a"), _encode("t/b"), _encode("t/c")
    ok = client.transaction({
        "compare": [
            {"key": ka, "result": "EQUAL", "target": "VALUE", "value": _encode("1")},
            {"key": kb, "result": "GREATER", "target": "VERSION", "version": 0},
            {"key": kc, "result": "EQUAL", "target": "CREATE", "create_revision": 0},
        ],
        "success": [
            {"request_put": {"key": kc, "value": _encode("3"), "prev_kv": True}},
            {"request_range": {"key": ka}},
            {"request_delete_range": {"key": kb, "prev_kv": True}},
        ],
        "failure": [{"request_range": {"key": kb}}],
    })
    assert ok["succeeded"] is True
    r = ok["responses"]
    assert set(r[0]) == {"response_put"}
    assert r[1]["response_range"]["kvs"][0]["value"] == _encode("1")
    assert int(r[1]["response_range"]["count"]) == 1
    assert int(r[2]["response_delete_range"]["deleted"]) == 1
    assert r[2]["response_delete_range"]["prev_kvs"][0]["value"] == _encode("2")
    assert client.get("t/c") == [b"3"]
    rev = int(ok["header"]["revision"])

    failed = client.transaction({
        "compare": [{"key": ka, "result": "NOT_EQUAL", "target": "VALUE", "value": _encode("1")}],
        "success": [{"request_put": {"key": ka, "value": _encode("never")}}],
        "failure": [{"request_range": {"key": ka}}, {"request_put": {"key": ka, "value": _encode("f")}}],
    })
    assert failed.get("succeeded", False) is False
    assert failed["responses"][0]["response_range"]["kvs"][0]["value"] == _encode("1")
    assert int(failed["header"]["revision"]) == rev + 1
    assert client.get("t/a") == [b"f"]

    # compare on mod revision and lease, LESS; a read-only txn keeps the revision
    ro = client.transaction({
        "compare": [{"key": ka, "result": "LESS", "target": "MOD", "mod_revision": rev + 100},
                    {"key": ka, "result": "EQUAL", "target": "LEASE", "lease": 0}],
        "success": [{"request_range": {"key": _encode("t/"), "range_end": _encode("t0")}}],
        "failure": [],
    })
    assert ro["succeeded"] is True
    assert int(ro["header"]["revision"]) == rev + 1
    assert [kv["key"] for kv in ro["responses"][0]["response_range"]["kvs"]] == [ka, kc]


def test_lease(client):
    lease = client.lease(ttl=60)
    assert lease.id > 0
    assert 55 <= lease.ttl() <= 60
    client.put("l/a", "1", lease=lease)
    client.put("l/b", "2", lease=lease)
    assert sorted(lease.keys()) == [b"l/a", b"l/b"]
    assert lease.refresh() == 60
    assert lease.revoke() is True
    assert client.get("l/a") == [] and client.get("l/b") == []
    assert lease.ttl() == -1
    assert lease.refresh() == -1  # keep-alive on a revoked lease: no TTL in the answer


def test_lease_expiry(client):
    lease = client.lease(ttl=2)
    client.put("exp", "1", lease=lease)
    deadline = time.monotonic() + 15
    while client.get("exp") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.get("exp") == []
    assert lease.ttl() == -1


def _collect(events_iter, n, out):
    for ev in events_iter:
        out.append(ev)
        if len(out) >= n:
            return


def test_watch_key(client):
    events, cancel = client.watch("wk")
    got: list = []
    t = threading.Thread(target=_collect, args=(events, 3, got), daemon=True)
    t.start()
    try:
        time.sleep(0.5)
        client.put("wk", "1")
        client.put("other", "x")
        client.put("wk", "2")
        client.delete("wk")
        t.join(10)
    finally:
        cancel()
    assert [(e.get("type", "PUT"), e["kv"]["key"], e["kv"].get("value")) for e in got] == [
        ("PUT", b"wk", b"1"), ("PUT", b"wk", b"2"), ("DELETE", b"wk", None)]
    assert int(got[1]["kv"]["version"]) == 2


def test_watch_prefix_prev_kv_and_cancel(client):
    events, cancel = client.watch_prefix("wp/", prev_kv=True)
    got: list = []
    t = threading.Thread(target=_collect, args=(events, 4, got), daemon=True)
    t.start()
    try:
        time.sleep(0.5)
        client.put("wp/a", "1")
        client.put("wq", "outside")
        client.put("wp/b", "2")
        client.put("wp/a", "3")
        client.delete_prefix("wp/")
        t.join(10)
    finally:
        cancel()
    assert [(e.get("type", "PUT"), e["kv"]["key"]) for e in got] == [
        ("PUT", b"wp/a"), ("PUT", b"wp/b"), ("PUT", b"wp/a"), ("DELETE", b"wp/a")]
    assert got[2]["prev_kv"]["value"] == _encode("1")
    # after cancel, the iterator ends and the server keeps serving
    assert list(events) == []
    assert client.put("wp/after", "x") is True


def test_watch_from_revision(client):
    client.put("wr", "1")
    [(_, meta)] = client.get("wr", metadata=True)
    client.put("wr", "2")
    events, cancel = client.watch("wr", start_revision=int(meta["mod_revision"]))
    got: list = []
    t = threading.Thread(target=_collect, args=(events, 2, got), daemon=True)
    t.start()
    t.join(10)
    cancel()
    assert [e["kv"]["value"] for e in got] == [b"1", b"2"]


def test_watch_once(client):
    def later():
        time.sleep(0.5)
        client.put("wo", "v")
    t = threading.Thread(target=later, daemon=True)
    t.start()
    ev = client.watch_once("wo", timeout=10)
    t.join()
    assert ev["kv"]["key"] == b"wo" and ev["kv"]["value"] == b"v"


def test_lock(client):
    lock = client.lock("L1", ttl=30)
    assert lock.acquire() is True
    assert lock.is_acquired() is True
    other = client.lock("L1", ttl=30)
    assert other.acquire() is False
    assert other.is_acquired() is False
    assert other.release() is False  # not the holder: the compare on its uuid fails
    assert lock.refresh() == 30
    assert lock.release() is True
    assert lock.is_acquired() is False
    assert other.acquire() is True
    assert other.release() is True


def test_lock_context_manager(client):
    with Lock("ctx", ttl=30, client=client) as lock:
        assert lock.is_acquired()
        assert client.get("/locks/ctx") == [lock.uuid.encode()]
    assert not lock.is_acquired()
    assert client.get("/locks/ctx") == []


def test_second_lock_waits_for_first(client):
    first = client.lock("contended", ttl=30)
    assert first.acquire()
    acquired_at: list[float] = []
    stop = threading.Event()

    def contender():
        second = client.lock("contended", ttl=30)
        while not stop.is_set():
            if second.acquire():
                acquired_at.append(time.monotonic())
                second.release()
                return
            time.sleep(0.05)

    t = threading.Thread(target=contender, daemon=True)
    t.start()
    try:
        time.sleep(1.0)
        assert acquired_at == [], "the second lock got in while the first was held"
        released_at = time.monotonic()
        assert first.release()
        t.join(10)
    finally:
        stop.set()
    assert len(acquired_at) == 1 and acquired_at[0] >= released_at


def test_lock_expires_with_lease(client):
    lock = client.lock("short", ttl=2)
    assert lock.acquire()
    other = client.lock("short", ttl=30)
    deadline = time.monotonic() + 15
    while not other.acquire():
        assert time.monotonic() < deadline, "the lock was not freed when its lease expired"
        time.sleep(0.2)
    assert other.is_acquired() and not lock.is_acquired()
    other.release()
