"""The JSON gateway's maintenance, auth, lock and election routes against Debian's
etcd 3.4: the same raw HTTP requests to a fresh fastkv and a fresh etcd give the
same statuses, headers and bodies once what differs by design is normalised
(cluster and member IDs, raft term, Date, lengths that follow from those digits,
hashes, auth tokens).

etcd 3.4 quirks these tests pin down:

* rpc.proto gives HashKV the path of Hash (/v3/maintenance/hash) and grpc-gateway
  serves the first pattern registered, so that path answers Hash (a revision in
  the body is an unknown field) and /v3/maintenance/hashkv is not found;
* Defragment and Alarm answer without a response header;
* an AlarmRequest with an unknown action, and a role grant without a permission,
  crash etcd 3.4 (nil response / nil permission): not sent here.

Auth is not enforced by fastkv yet: while it is enabled only requests whose answer
does not depend on enforcement are compared (authenticate, and disable with root's
token), and auth is disabled again before anything else.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import time

import pytest

from test_gateway_vs_etcd import raw

pytestmark = pytest.mark.etcd


def b64(s: bytes) -> str:
    return base64.b64encode(s).decode()


def normalise(resp: bytes) -> bytes:
    resp = resp.replace(b"Connection: close\r\n", b"")
    resp = re.sub(rb"Date: [^\r]+", b"Date: X", resp)
    resp = re.sub(rb"Content-Length: \d+", b"Content-Length: L", resp)
    resp = re.sub(rb"(^|\r\n)[0-9a-f]+\r\n(?=[{])", rb"\1CHUNK\r\n", resp)
    resp = re.sub(rb'"(cluster_id|member_id|raft_term)":"\d+"', rb'"\1":"N"', resp)
    resp = re.sub(rb'"hash":\d+', b'"hash":H', resp)
    resp = re.sub(rb'"token":"[^"]+"', b'"token":"T"', resp)
    return resp


def request(path: str, body: str = "", method: str = "POST", headers: str = "") -> bytes:
    data = body.encode()
    return (f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


def post(srv, path: str, body: str = "", method: str = "POST", headers: str = "") -> bytes:
    return raw(srv.url, request(path, body, method, headers))


def exchange(srv, path: str, body: str = "", method: str = "POST", headers: str = "") -> bytes:
    return normalise(post(srv, path, body, method, headers))


def json_body(resp: bytes) -> dict:
    return json.loads(resp.split(b"\r\n\r\n", 1)[1])


def same_answers(fk, et, sequence) -> None:
    for item in sequence:
        path, body = item[0], item[1]
        method = item[2] if len(item) > 2 else "POST"
        a = exchange(fk, path, body, method)
        b = exchange(et, path, body, method)
        assert a == b, (path, body)


class Stream:
    """A request whose answer is a stream: sent now, read as it comes."""

    def __init__(self, srv, path: str, body: str):
        host, port = srv.url.rsplit("/", 1)[1].split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        self.sock.sendall(request(path, body))
        self.data = b""

    def read(self, seconds: float) -> bytes:
        """Everything that arrived within `seconds` (or until the server closed)."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                d = self.sock.recv(65536)
            except socket.timeout:
                break
            if not d:
                break
            self.data += d
        return self.data

    def close(self) -> None:
        self.sock.close()


def dechunk(resp: bytes) -> tuple[bytes, list[bytes], bool]:
    """(head, chunks, ended): the chunks of a chunked body as sent, and whether the
    terminating zero-length chunk came."""
    head, _, body = resp.partition(b"\r\n\r\n")
    chunks, pos = [], 0
    while True:
        m = re.match(rb"([0-9a-f]+)\r\n", body[pos:])
        if m is None:
            assert body[pos:] == b"", body[pos:pos + 80]
            return head, chunks, False
        n = int(m.group(1), 16)
        pos += m.end()
        if n == 0:
            return head, chunks, True
        assert body[pos + n:pos + n + 2] == b"\r\n"
        chunks.append(body[pos:pos + n])
        pos += n + 2


def stream_messages(chunks: list[bytes]) -> list[dict]:
    """The {"result"} messages of a grpc-gateway stream, checking how Go frames each
    one: the message then "\\n", through a 2048-byte buffer (a message that fills it
    is a chunk of its own, its "\\n" the next chunk; a smaller one shares a chunk)."""
    out, i = [], 0
    while i < len(chunks):
        c = chunks[i]
        if len(c) > 2048:
            assert chunks[i + 1] == b"\n", (len(c), chunks[i + 1][:40])
            msg, i = c, i + 2
        else:
            assert c.endswith(b"\n") and len(c) < 2049, c[:80]
            msg, i = c[:-1], i + 1
        assert msg.startswith(b'{"result":{') and b"\n" not in msg, msg[:80]
        out.append(json.loads(msg)["result"])
    return out


# ---------------------------------------------------------------- maintenance

def test_maintenance_same_answers(fastkv_server, etcd_server):
    alarm = "/v3/maintenance/alarm"
    nospace = '{"action":"%s","memberID":"1","alarm":"NOSPACE"}'
    same_answers(fastkv_server, etcd_server, [
        (alarm, ""),                                   # no alarm: {}
        (alarm, nospace % "ACTIVATE"),
        (alarm, "{}"),
        (alarm, '{"action":"GET","alarm":"NOSPACE"}'),
        (alarm, '{"action":0,"alarm":"CORRUPT"}'),       # filtered: nothing
        ("/v3/kv/put", '{"key":"YQ==","value":"Yg=="}'),   # database space exceeded
        (alarm, nospace % "DEACTIVATE"),              # answers the alarm it cleared
        (alarm, nospace % "DEACTIVATE"),              # nothing left to clear: {}
        (alarm, ""),
        ("/v3/kv/put", '{"key":"YQ==","value":"Yg=="}'),
        (alarm, '{"action":"BAD"}'),
        (alarm, '{"alarm":"SOMETIMES"}'),
        (alarm, '{"memberID":x}'),
        (alarm, '{"memberID":"-1"}'),
        ("/v3beta/maintenance/alarm", ""),
        (alarm, "", "GET"),
        ("/v3/maintenance/defragment", ""),            # {}: no header in etcd 3.4
        ("/v3/maintenance/defragment", "{x"),
        ("/v3/maintenance/hash", ""),
        ("/v3/maintenance/hash", '{"revision":"2"}'),  # the route is Hash's
        ("/v3/maintenance/hash", "[]"),
        ("/v3/maintenance/hashkv", '{"revision":"2"}'),  # etcd 3.5's path: not found
    ])


def test_hash_follows_the_state(fastkv_server, etcd_server):
    for srv in (fastkv_server, etcd_server):
        hashes = [json_body(post(srv, "/v3/maintenance/hash"))["hash"] for _ in range(2)]
        exchange(srv, "/v3/kv/put", '{"key":"YQ==","value":"Yg=="}')
        hashes.append(json_body(post(srv, "/v3/maintenance/hash"))["hash"])
        assert hashes[0] == hashes[1] != hashes[2], (srv.name, hashes)


def test_snapshot_stream_shape(fastkv_server, etcd_server):
    """Chunk count and sizes differ (different state files); the framing does not:
    {"result"} messages with remaining_bytes counting down, and last the 32-byte
    SHA-256 of everything before it."""
    heads = []
    for srv in (fastkv_server, etcd_server):
        for i in range(4):   # enough data for several 32 KiB pieces on both
            exchange(srv, "/v3/kv/put", '{"key":"%s","value":"%s"}' % (
                b64(b"k%d" % i), b64(bytes(range(256)) * 80)))
        out = raw(srv.url, request("/v3/maintenance/snapshot", ""))
        head, chunks, ended = dechunk(out)
        assert ended, srv.name
        heads.append(normalise(head))
        msgs = stream_messages(chunks)
        assert len(msgs) >= 3, (srv.name, len(msgs))
        blobs = [base64.b64decode(m["blob"]) for m in msgs]
        assert all(set(m) <= {"remaining_bytes", "blob"} for m in msgs), srv.name
        total = sum(len(b) for b in blobs[:-1])
        sent = 0
        for m, blob in zip(msgs[:-1], blobs):
            sent += len(blob)
            assert int(m.get("remaining_bytes", "0")) == total - sent, srv.name
        assert set(msgs[-1]) == {"blob"} and len(blobs[-1]) == 32, srv.name
        assert blobs[-1] == hashlib.sha256(b"".join(blobs[:-1])).digest(), srv.name
    assert heads[0] == heads[1]
    same_answers(fastkv_server, etcd_server, [
        ("/v3/maintenance/snapshot", "{x"),
        ("/v3/maintenance/snapshot", '{"a":'),
    ])


def test_large_watch_events_are_framed_like_go(fastkv_server, etcd_server):
    """A stream message of 2048 bytes or more and its "\\n" are separate chunks."""
    outs = []
    for srv in (fastkv_server, etcd_server):
        exchange(srv, "/v3/kv/put", '{"key":"Ymln","value":"%s"}' % b64(b"x" * 3000))
        exchange(srv, "/v3/kv/put", '{"key":"Ymln","value":"eA=="}')
        s = Stream(srv, "/v3/watch", '{"create_request":{"key":"Ymln","start_revision":"1"}}')
        try:
            head, chunks, _ended = dechunk(s.read(1.5))
        finally:
            s.close()
        stream_messages(chunks)
        outs.append((normalise(head), [normalise(c) for c in chunks]))
    assert outs[0] == outs[1]


# ---------------------------------------------------------------- auth

def test_auth_same_answers(fastkv_server, etcd_server):
    same_answers(fastkv_server, etcd_server, [
        ("/v3/auth/enable", ""),                      # no root user
        ("/v3/auth/disable", ""),                     # disabled already: fine
        ("/v3/auth/authenticate", '{"name":"root","password":"pw"}'),   # not enabled
        ("/v3/auth/user/add", '{"name":"root","password":"pw"}'),
        ("/v3/auth/user/add", '{"name":"root","password":"pw"}'),       # exists
        ("/v3/auth/user/add", '{"name":""}'),
        ("/v3/auth/user/add", '{"name":"np","options":{"no_password":true}}'),
        ("/v3/auth/user/add", '{"name":"u2","password":"a","options":{"noPassword":false}}'),
        ("/v3/auth/user/add", '{"name":1}'),
        ("/v3/auth/user/add", '{"name":"x","options":[]}'),
        ("/v3/auth/user/get", '{"name":"root"}'),
        ("/v3/auth/user/get", '{"name":"nobody"}'),
        ("/v3/auth/user/list", ""),
        ("/v3/auth/role/add", '{"name":"r1"}'),
        ("/v3/auth/role/add", '{"name":"r1"}'),
        ("/v3/auth/role/add", "{}"),
        ("/v3/auth/role/get", '{"role":"r1"}'),       # no permissions
        ("/v3/auth/role/grant", '{"name":"r1","perm":{"permType":"READWRITE",'
                                '"key":"YQ==","range_end":"Yg=="}}'),
        ("/v3/auth/role/grant", '{"name":"r1","perm":{"key":"Yw=="}}'),
        ("/v3/auth/role/grant", '{"name":"r1","perm":{"key":"ZA==","rangeEnd":"AA==",'
                                '"permType":1}}'),
        ("/v3/auth/role/grant", '{"name":"nope","perm":{"key":"Yw=="}}'),
        ("/v3/auth/role/grant", '{"name":"r1","perm":{"permType":"ALL"}}'),
        ("/v3/auth/role/get", '{"role":"r1"}'),
        ("/v3/auth/role/get", '{"role":"zz"}'),
        ("/v3/auth/role/revoke", '{"role":"r1","key":"Yw=="}'),
        ("/v3/auth/role/revoke", '{"role":"r1","key":"Yw=="}'),   # not granted
        ("/v3/auth/role/revoke", '{"role":"zz","key":"Yw=="}'),
        ("/v3/auth/role/list", ""),
        ("/v3/auth/user/grant", '{"user":"root","role":"root"}'),   # role root need not exist
        ("/v3/auth/user/grant", '{"user":"root","role":"nope"}'),
        ("/v3/auth/user/grant", '{"user":"nobody","role":"r1"}'),
        ("/v3/auth/user/grant", '{"user":"root","role":"r1"}'),
        ("/v3/auth/user/get", '{"name":"root"}'),
        ("/v3/auth/user/revoke", '{"name":"root","role":"r1"}'),
        ("/v3/auth/user/revoke", '{"name":"root","role":"r1"}'),   # not granted
        ("/v3/auth/user/changepw", '{"name":"nobody","password":"x"}'),
        ("/v3/auth/user/changepw", '{"name":"u2","password":"b"}'),
        ("/v3/auth/user/delete", '{"name":"nobody"}'),
        ("/v3/auth/user/delete", '{"name":"u2"}'),
        ("/v3/auth/role/delete", '{"role":"nobody"}'),
        ("/v3/auth/user/list", ""),
        ("/v3/auth/enable", ""),
        # Auth is on: only what etcd answers without a token.
        ("/v3/auth/authenticate", '{"name":"root","password":"bad"}'),
        ("/v3/auth/authenticate", '{"name":"nobody","password":"x"}'),
        ("/v3/auth/authenticate", '{"name":"np","password":"x"}'),   # no-password user
        ("/v3/auth/authenticate", '{"name":"root","password":["pw"]}'),
        ("/v3/auth/authenticate", '{"name":"root","password":"pw"}'),
    ])
    for srv in (fastkv_server, etcd_server):   # disable, as root (fastkv ignores the token)
        token = json_body(post(srv, "/v3/auth/authenticate",
                                   '{"name":"root","password":"pw"}'))["token"]
        assert exchange(srv, "/v3/auth/disable", "",
                        headers=f"Authorization: {token}\r\n").startswith(b"HTTP/1.1 200 OK")
    same_answers(fastkv_server, etcd_server, [
        ("/v3/auth/authenticate", '{"name":"root","password":"pw"}'),   # not enabled
        ("/v3/auth/role/delete", '{"role":"r1"}'),
        ("/v3/auth/user/get", '{"name":"root"}'),     # role r1 went with it
        ("/v3/auth/role/list", ""),
        ("/v3/auth/user/delete", '{"name":"root"}'),
        ("/v3/auth/user/list", ""),
        ("/v3/auth/user/add", "{x"),
        ("/v3/auth/role", "{}"),
    ])


# ---------------------------------------------------------------- lock

def test_lock_same_answers(fastkv_server, etcd_server):
    same_answers(fastkv_server, etcd_server, [
        ("/v3/lease/grant", '{"TTL":60,"ID":"1000"}'),
        ("/v3/lock/lock", '{"name":"bA==","lease":"1000"}'),
        ("/v3/lock/lock", '{"name":"bA==","lease":1000}'),   # the same session: at once
        ("/v3/kv/range", '{"key":"bA==","range_end":"bQ=="}'),
        ("/v3/lock/unlock", '{"key":"bC8zZTg="}'),
        ("/v3/lock/unlock", '{"key":"bm9uZQ=="}'),           # no such key: fine
        ("/v3/kv/range", '{"key":"bA==","range_end":"bQ==","count_only":true}'),
        ("/v3/lock/lock", '{"name":"bA==","lease":"999"}'),  # unknown lease: code 2
        ("/v3/lock/unlock", ""),                             # no key: code 2
        ("/v3/lock/unlock", '{"key":"bA==/3e8"}'),
        ("/v3/lock/lock", "{x"),
        ("/v3/lock/lock", '{"lease":"ten"}'),
        ("/v3/lock", "{}"),
        ("/v3/lock/lock", "", "GET"),
    ])


def test_lock_waits_for_the_holder(fastkv_server, etcd_server):
    outs = []
    for srv in (fastkv_server, etcd_server):
        for lease in (1001, 1002):
            exchange(srv, "/v3/lease/grant", '{"TTL":60,"ID":"%d"}' % lease)
        first = exchange(srv, "/v3/lock/lock", '{"name":"dw==","lease":"1001"}')
        waiter = Stream(srv, "/v3/lock/lock", '{"name":"dw==","lease":"1002"}')
        try:
            early = waiter.read(0.5)             # nothing while the lock is held
            unlocked = exchange(srv, "/v3/lock/unlock", '{"key":"%s"}' % b64(b"w/3e9"))
            second = normalise(waiter.read(3.0))
        finally:
            waiter.close()
        outs.append((first, early, unlocked, second))
    assert outs[0][1] == b""
    assert outs[0][3].startswith(b"HTTP/1.1 200 OK") and b'"key":"dy8zZWE="' in outs[0][3]
    assert outs[0] == outs[1]


# ---------------------------------------------------------------- election

def test_election_same_answers(fastkv_server, etcd_server):
    leader = '{"name":"ZQ==","key":"%s","rev":"%%s","lease":"2000"}' % b64(b"e/7d0")
    for srv in (fastkv_server, etcd_server):   # both start at revision 1
        assert b'"revision":"1"' in exchange(srv, "/v3/kv/range", '{"key":"eA=="}')
    same_answers(fastkv_server, etcd_server, [
        ("/v3/election/leader", '{"name":"ZQ=="}'),       # election: no leader (500)
        ("/v3/election/leader", ""),
        ("/v3/lease/grant", '{"TTL":60,"ID":"2000"}'),
        ("/v3/election/campaign", '{"name":"ZQ==","lease":"2000","value":"djE="}'),
        ("/v3/election/leader", '{"name":"ZQ=="}'),
        ("/v3/election/proclaim", '{"leader":%s,"value":"djI="}' % (leader % 2)),
        ("/v3/election/proclaim", '{"leader":%s,"value":"djI="}' % (leader % 3)),  # not leader
        ("/v3/election/proclaim", '{"value":"djI="}'),    # "leader" field must be provided
        ("/v3/election/proclaim", '{"leader":null,"value":"djI="}'),
        ("/v3/election/proclaim", '{"leader":{},"value":"djI="}'),
        ("/v3/election/leader", '{"name":"ZQ=="}'),
        ("/v3/election/campaign", '{"name":"ZQ==","lease":"2000","value":"djM="}'),  # again
        ("/v3/election/leader", '{"name":"ZQ=="}'),
        ("/v3/election/resign", '{"leader":%s}' % (leader % 99)),   # not ours: no error
        ("/v3/election/resign", "{}"),
        ("/v3/election/resign", '{"leader":%s}' % (leader % 2)),
        ("/v3/election/leader", '{"name":"ZQ=="}'),       # no leader again
        ("/v3/election/campaign", '{"name":"ZQ==","lease":"77"}'),
        ("/v3/election/campaign", '{"name":1}'),
        ("/v3/election/campaign", '{"name":"ZQ==","lease":"1e3"}'),
        ("/v3/election/proclaim", '{"leader":[]}'),
        ("/v3/election/resign", '{"leader":{"rev":"x"}}'),
        ("/v3/election/observe", "{x"),
        ("/v3/election/observe", '{"name":"ZQ"}'),
    ])


def test_observe_stream(fastkv_server, etcd_server):
    """Observe an empty election: nothing (not even the status line) until a leader
    comes; then the leader, each value it proclaims, and nothing once it resigned."""
    outs = []
    for srv in (fastkv_server, etcd_server):
        exchange(srv, "/v3/lease/grant", '{"TTL":60,"ID":"3000"}')
        obs = Stream(srv, "/v3/election/observe", '{"name":"bw=="}')
        try:
            early = obs.read(0.5)
            camp = exchange(srv, "/v3/election/campaign",
                            '{"name":"bw==","lease":"3000","value":"YQ=="}')
            rev = json_body(camp)["leader"]["rev"]
            lead = '{"name":"bw==","key":"%s","rev":"%s","lease":"3000"}' % (b64(b"o/bb8"), rev)
            exchange(srv, "/v3/election/proclaim", '{"leader":%s,"value":"Yg=="}' % lead)
            exchange(srv, "/v3/election/resign", '{"leader":%s}' % lead)
            exchange(srv, "/v3/kv/put", '{"key":"bw==","value":"eA=="}')   # not a candidate
            out = obs.read(1.5)
        finally:
            obs.close()
        head, chunks, ended = dechunk(out)
        assert not ended
        msgs = stream_messages(chunks)
        assert [base64.b64decode(m["kv"]["value"]) for m in msgs] == [b"a", b"b"], srv.name
        outs.append((early, normalise(camp), normalise(out)))
    assert outs[0][0] == b""
    assert outs[0] == outs[1]
