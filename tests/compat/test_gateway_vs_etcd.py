"""The same HTTP request sequences against fastkv and Debian's etcd 3.4: same answers.

Bodies are compared byte for byte after normalising what differs by design
(cluster_id, member_id, raft_term, lease IDs, Date).
"""
from __future__ import annotations

import base64
import json
import re
import socket

import pytest

pytestmark = pytest.mark.etcd


def b64(s: bytes) -> str:
    return base64.b64encode(s).decode()


def raw(url, req: bytes) -> bytes:
    host, port = url.rsplit("/", 1)[1].split(":")
    c = socket.create_connection((host, int(port)), timeout=5)
    c.settimeout(1.0)
    c.sendall(req)
    out = b""
    try:
        while True:
            d = c.recv(65536)
            if not d:
                break
            out += d
    except socket.timeout:
        pass
    c.close()
    return out


def normalise(resp: bytes) -> bytes:
    resp = re.sub(rb"Date: [^\r]+", b"Date: X", resp)
    # ids differ by design; revisions and raft indexes depend on each server's bootstrap
    # entries; lengths follow from those digits
    for f in (rb"cluster_id", rb"member_id", rb"raft_term", rb"leader", rb"revision",
              rb"create_revision", rb"mod_revision", rb"raftIndex", rb"raftAppliedIndex",
              rb"dbSize", rb"dbSizeInUse", rb"raftTerm"):
        resp = re.sub(rb'"%s":"\d+"' % f, b'"%s":"N"' % f, resp)
    resp = re.sub(rb"Content-Length: \d+", b"Content-Length: L", resp)
    resp = re.sub(rb"\r\n[0-9a-f]+\r\n(?=[{])", b"\r\nCHUNK\r\n", resp)
    return resp


def exchange(url, method, path, body=b"") -> bytes:
    if isinstance(body, str):
        body = body.encode()
    return normalise(raw(url, b"%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
                         % (method.encode(), path.encode(), len(body), body)))


SEQUENCE = [
    ("POST", "/v3/kv/put", '{"key":"Zm9v","value":"YmFy"}'),
    ("POST", "/v3/kv/range", '{"key":"Zm9v"}'),
    ("POST", "/v3beta/kv/range", '{"key":"Zm9v","keys_only":true}'),
    ("POST", "/v3/kv/range", '{"key":"Zm9v","count_only":true}'),
    ("POST", "/v3/kv/put", '{"key":"Zm9v","value":"YmF6","prevKv":true}'),
    ("POST", "/v3/kv/range", '{"key":"AA==","range_end":"AA==","sort_order":"DESCEND","limit":"1"}'),
    ("POST", "/v3/kv/txn", '{"compare":[{"key":"Zm9v","result":"EQUAL","target":"VALUE","value":"YmF6"}],'
                           '"success":[{"request_range":{"key":"Zm9v"}},{"request_delete_range":{"key":"bm8="}}]}'),
    ("POST", "/v3/kv/range", ""),
    ("POST", "/v3/kv/range", "{b}"),
    ("POST", "/v3/kv/range", "{<}"),
    ("POST", "/v3/kv/range", '{"key":"Zm9v="}'),
    ("POST", "/v3/kv/range", '{"key":"_-8"}'),
    ("POST", "/v3/kv/range", '{"key":1}'),
    # bytes as a JSON array of uint8 (Go's encoding/json fills a []byte so)
    ("POST", "/v3/kv/put", '{"key":[102,111,111,50],"value":[98,null,0]}'),
    ("POST", "/v3/kv/range", '{"key":[102,111,111,50]}'),
    ("POST", "/v3/kv/range", '{"key":[]}'),
    ("POST", "/v3/kv/range", '{"key":[300]}'),
    ("POST", "/v3/kv/range", '{"key":[-0]}'),
    ("POST", "/v3/kv/range", '{"key":[1.0]}'),
    ("POST", "/v3/kv/range", '{"key":[1,"a",300]}'),
    ("POST", "/v3/kv/range", '{"key":[[1]]}'),
    ("POST", "/v3/kv/range", '{"key":[true]}'),
    ("POST", "/v3/kv/range", '{"key":"YQ==","junk":' + '[' * 3000 + ']' * 3000 + '}'),
    ("POST", "/v3/kv/range", '{"limit":"0x5"}'),
    ("POST", "/v3/kv/range", '{"limit":1.5}'),
    ("POST", "/v3/kv/range", '{"sortOrder":"BAD"}'),
    ("POST", "/v3/kv/range", "[1]"),
    ("POST", "/v3/kv/range", '{"key":"Zm9v"'),
    ("POST", "/v3/kv/txn", '{"compare":{}}'),
    ("POST", "/v3/kv/deleterange", '{"key":"Zm9v","prev_kv":true}'),
    ("POST", "/v3/kv/compaction", '{"revision":"300"}'),
    ("POST", "/v3/lease/revoke", '{"ID":"42"}'),
    ("POST", "/v3/lease/grant", '{"TTL":"9999999999999"}'),
    ("POST", "/v3/watch", "{bad"),
    ("GET", "/v3/kv/put", ""),
    ("GET", "/nope", ""),
    ("POST", "/v3/nope", ""),
    ("POST", "/v3alpha/kv/range", ""),
    ("POST", "/health", ""),
    ("GET", "/version", ""),
    ("GET", "/health", ""),
    ("OPTIONS", "/v3/kv/range", ""),
]


def test_same_answers(fastkv_server, etcd_server):
    for method, path, body in SEQUENCE:
        a = exchange(fastkv_server.url, method, path, body)
        b = exchange(etcd_server.url, method, path, body)
        # "Connection: close" placement is Go's; compare with it removed from both
        a, b = a.replace(b"Connection: close\r\n", b""), b.replace(b"Connection: close\r\n", b"")
        assert a == b, (method, path, body)


def test_watch_session_matches(fastkv_server, etcd_server):
    outs = []
    for srv in (fastkv_server, etcd_server):
        body = (b'{"create_request":{"key":"eA==","prev_kv":true}}{"progress_request":{}}'
                b'{"create_request":{"key":"eQ==","watch_id":"9"}}')
        out = raw(srv.url, b"POST /v3/watch HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        outs.append(normalise(out))
    assert outs[0] == outs[1]


def test_lease_keepalive_matches(fastkv_server, etcd_server):
    outs = []
    for srv in (fastkv_server, etcd_server):
        g = json.loads(exchange(srv.url, "POST", "/v3/lease/grant", '{"TTL":60,"ID":"4242"}').split(b"\r\n\r\n", 1)[1])
        assert g["ID"] == "4242"
        body = b'{"ID":"4242"}{"ID":"77"}'
        outs.append(normalise(raw(srv.url, b"POST /v3/lease/keepalive HTTP/1.1\r\nHost: x\r\nContent-Length: %d"
                                  b"\r\n\r\n%s" % (len(body), body))))
    assert outs[0] == outs[1]


def test_oversized_put_matches(fastkv_server, etcd_server):
    for size, status in ((1572864, b"400"), (2097152, b"429")):
        body = json.dumps({"key": "Zm9v", "value": b64(b"x" * size)})
        a = exchange(fastkv_server.url, "POST", "/v3/kv/put", body)
        b = exchange(etcd_server.url, "POST", "/v3/kv/put", body)
        assert a.split(b"\r\n")[0].split()[1] == status
        assert a.replace(b"Connection: close\r\n", b"") == b.replace(b"Connection: close\r\n", b"")
