"""The v3 JSON API of a real fastkv process: round trips and bad input."""
from __future__ import annotations

import base64
import json
import socket

import requests


def b64(s: bytes) -> str:
    return base64.b64encode(s).decode()


def post(srv, path, body):
    return requests.post(srv.url + path, data=body if isinstance(body, (str, bytes)) else json.dumps(body),
                         timeout=10)


def test_put_range_delete_round_trip(fastkv_server):
    s = fastkv_server
    r = post(s, "/v3/kv/put", {"key": b64(b"foo"), "value": b64(b"bar")})
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    rev = int(r.json()["header"]["revision"])
    r = post(s, "/v3/kv/range", {"key": b64(b"foo")}).json()
    assert r["count"] == "1" and r["kvs"][0]["value"] == b64(b"bar")
    assert r["kvs"][0]["mod_revision"] == str(rev)
    r = post(s, "/v3/kv/put", {"key": b64(b"foo"), "value": b64(b"baz"), "prevKv": True}).json()
    assert r["prev_kv"]["value"] == b64(b"bar")
    r = post(s, "/v3/kv/deleterange", {"key": b64(b"foo"), "prev_kv": True}).json()
    assert r["deleted"] == "1" and r["prev_kvs"][0]["value"] == b64(b"baz")
    assert "kvs" not in post(s, "/v3/kv/range", {"key": b64(b"foo")}).json()


def test_txn_compaction_status_health_version(fastkv_server):
    s = fastkv_server
    post(s, "/v3/kv/put", {"key": b64(b"k"), "value": b64(b"v")})
    r = post(s, "/v3/kv/txn", {"compare": [{"key": b64(b"k"), "result": "EQUAL", "target": "VALUE",
                                            "value": b64(b"v")}],
                               "success": [{"request_put": {"key": b64(b"k"), "value": b64(b"w")}}],
                               "failure": [{"request_range": {"key": b64(b"k")}}]}).json()
    assert r["succeeded"] is True and "response_put" in r["responses"][0]
    rev = int(r["header"]["revision"])
    assert post(s, "/v3/kv/compaction", {"revision": str(rev)}).status_code == 200
    r = post(s, "/v3/kv/range", {"key": b64(b"k"), "revision": str(rev - 1)})
    assert r.status_code == 400 and r.json()["message"] == "etcdserver: mvcc: required revision has been compacted"
    st = post(s, "/v3/maintenance/status", {}).json()
    assert st["version"] == "3.4.23" and int(st["raftIndex"]) > 0
    h = requests.get(s.url + "/health", timeout=10)
    assert h.status_code == 200 and h.text == '{"health":"true"}'
    assert requests.get(s.url + "/version", timeout=10).json() == {"etcdserver": "3.4.23",
                                                                    "etcdcluster": "3.4.0"}


def test_lease_round_trip(fastkv_server):
    s = fastkv_server
    g = post(s, "/v3/lease/grant", {"TTL": 60}).json()
    lid = g["ID"]
    assert g["TTL"] == "60"
    post(s, "/v3/kv/put", {"key": b64(b"l"), "value": b64(b"v"), "lease": lid})
    t = post(s, "/v3/lease/timetolive", {"ID": lid, "keys": True}).json()
    assert t["grantedTTL"] == "60" and t["keys"] == [b64(b"l")]
    assert {"ID": lid} in post(s, "/v3/lease/leases", {}).json()["leases"]
    ka = post(s, "/v3/lease/keepalive", {"ID": lid})
    assert json.loads(ka.text.splitlines()[0])["result"]["TTL"] == "60"
    assert post(s, "/v3/kv/lease/revoke", {"ID": lid}).status_code == 200
    r = post(s, "/v3/lease/revoke", {"ID": lid})
    assert r.status_code == 404 and r.json()["code"] == 5
    assert "kvs" not in post(s, "/v3/kv/range", {"key": b64(b"l")}).json()


def test_watch_stream(fastkv_server):
    s = fastkv_server
    host, port = s.url.rsplit("/", 1)[1].split(":")
    c = socket.create_connection((host, int(port)), timeout=10)
    body = json.dumps({"create_request": {"key": b64(b"w")}}).encode()
    c.sendall(b"POST /v3/watch HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    buf = b""
    while b'"created":true' not in buf:
        buf += c.recv(65536)
    post(s, "/v3/kv/put", {"key": b64(b"w"), "value": b64(b"1")})
    while b'"events"' not in buf:
        buf += c.recv(65536)
    assert b'"value":"MQ=="' in buf
    c.close()


def test_bad_input_changes_nothing_and_connection_stays_usable(fastkv_server):
    s = fastkv_server
    with requests.Session() as sess:
        rev = sess.post(s.url + "/v3/kv/range", data=json.dumps({"key": b64(b"x")})).json()["header"]["revision"]
        cases = [("{b}", "invalid character 'b' looking for beginning of object key string"),
                 ('{"key":"Zm9v","value":"!!"}', "illegal base64 data at input byte 0"),
                 ('{"key":"Zm9v","lease":true}', "json: cannot unmarshal bool into Go value of type int64"),
                 ("{}", "etcdserver: key is not provided")]
        for body, msg in cases:
            r = sess.post(s.url + "/v3/kv/put", data=body)
            assert r.status_code == 400 and r.json()["message"] == msg
        r = sess.post(s.url + "/v3/kv/range", data=json.dumps({"key": b64(b"x")})).json()
        assert r["header"]["revision"] == rev
        assert sess.get(s.url + "/nope").text == "404 page not found\n"
        assert sess.get(s.url + "/v3/kv/put").status_code == 405


def test_a_lock_waiter_whose_client_leaves_gives_up_its_place(fastkv_server):
    """As a cancelled context in etcd: the waiting /v3/lock/lock stops and its key goes."""
    import time
    s = fastkv_server
    l1 = post(s, "/v3/lease/grant", {"TTL": 60}).json()["ID"]
    l2 = post(s, "/v3/lease/grant", {"TTL": 60}).json()["ID"]
    held = post(s, "/v3/lock/lock", {"name": b64(b"jl"), "lease": l1}).json()
    host, port = s.url.rsplit("/", 1)[1].split(":")
    body = json.dumps({"name": b64(b"jl"), "lease": l2}).encode()
    waiter = socket.create_connection((host, int(port)), timeout=5)
    waiter.sendall(b"POST /v3/lock/lock HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                   % (len(body), body))
    key2 = b"jl/%x" % int(l2)
    deadline = time.monotonic() + 5
    while "kvs" not in post(s, "/v3/kv/range", {"key": b64(key2)}).json():
        assert time.monotonic() < deadline, "the waiter never queued"
        time.sleep(0.05)
    waiter.close()
    deadline = time.monotonic() + 5
    while "kvs" in post(s, "/v3/kv/range", {"key": b64(key2)}).json():
        assert time.monotonic() < deadline, "the abandoned waiter's key stayed"
        time.sleep(0.05)
    post(s, "/v3/lock/unlock", {"key": held["key"]})
