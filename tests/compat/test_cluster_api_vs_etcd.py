"""Cluster endpoints against fastkv and Debian's etcd 3.4, single members started alike
with --enable-v2: the same statuses, headers and bodies once what differs by design
(IDs, ports, times, Content-Length) is normalised."""
from __future__ import annotations

import json
import re

import pytest

from servers import EtcdProcess, FastkvProcess
from test_gateway_vs_etcd import raw

pytestmark = pytest.mark.etcd


@pytest.fixture
def pair():
    a = FastkvProcess(extra_args=["--enable-v2"]).start()
    try:
        b = EtcdProcess(extra_args=["--enable-v2=true"]).start()
        try:
            yield a, b
        finally:
            b.cleanup()
    finally:
        a.cleanup()


def normalise(resp: bytes, srv) -> bytes:
    resp = resp.replace(b"Connection: close\r\n", b"")
    resp = re.sub(rb"Date: [^\r]+", b"Date: X", resp)
    resp = re.sub(rb"Content-Length: \d+", b"Content-Length: L", resp)
    resp = re.sub(rb"X-Etcd-Cluster-Id: [0-9a-f]+", b"X-Etcd-Cluster-Id: C", resp)
    resp = resp.replace(str(srv.client_port).encode(), b"CPORT")
    resp = resp.replace(str(srv.peer_port).encode(), b"PPORT")
    resp = re.sub(rb'"(id|leader|ID)":"[0-9a-f]+"', rb'"\1":"ID"', resp)
    resp = re.sub(rb'"(startTime|uptime)":"[^"]+"', rb'"\1":"T"', resp)
    resp = re.sub(rb'"(cluster_id|member_id|revision|raft_term)":"\d+"', rb'"\1":"N"', resp)
    return resp


def exchange(srv, method: str, path: str, body: str = "", ctype: str = "application/json"):
    req = (f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
           f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode()
    return normalise(raw(srv.url, req), srv)


SEQUENCE = [
    ("GET", "/v2/members", ""),
    ("GET", "/v2/members/leader", ""),
    ("GET", "/v2/members/nope", ""),
    ("GET", "/v2/machines", ""),
    ("GET", "/v2/stats/self", ""),
    ("GET", "/v2/stats/leader", ""),
    ("POST", "/v2/stats/self", ""),
    ("PATCH", "/v2/members", ""),
    ("DELETE", "/v2/members/", ""),
    ("DELETE", "/v2/members/zz", ""),
    ("DELETE", "/v2/members/abc", ""),
    ("PUT", "/v2/members/abc", '{"peerURLs":["http://127.0.0.1:1"]}'),
    ("POST", "/v3/cluster/member/list", "{}"),
    ("POST", "/v3/cluster/member/remove", '{"ID":"12345"}'),
    ("POST", "/v3/cluster/member/promote", '{"ID":"12345"}'),
    ("POST", "/v3/cluster/member/update", '{"ID":"12345","peerURLs":["http://127.0.0.1:1"]}'),
    ("POST", "/v3/cluster/member/add", '{"peerURLs":["not a url"]}'),
    ("POST", "/v3/cluster/member/add", '{"peerURLs":"x"}'),
]


def test_same_answers(pair):
    fk, et = pair
    for method, path, body in SEQUENCE:
        a = exchange(fk, method, path, body)
        b = exchange(et, method, path, body)
        assert a == b, (method, path, body)


@pytest.mark.parametrize("ctype", ["text/plain", "Application/JSON; charset=utf-8", ""])
def test_member_bodies_must_be_json(pair, ctype):
    """A v2 member add/update not declared as JSON: 415, and nothing changes."""
    fk, et = pair
    for method, path in (("PUT", "/v2/members/abc"), ("POST", "/v2/members")):
        body = '{"peerURLs":["http://127.0.0.1:1"]}'
        a = exchange(fk, method, path, body, ctype)
        assert a == exchange(et, method, path, body, ctype), (method, ctype)
    # Same members (listed by ID, which is random for an added member: compare as sets).
    lists = []
    for srv in pair:
        head, _, body = exchange(srv, "GET", "/v2/members").partition(b"\r\n\r\n")
        members = json.loads(body)["members"]
        lists.append((head, sorted(json.dumps(m, sort_keys=True) for m in members)))
    assert lists[0] == lists[1]


def test_adding_an_existing_peer_url(pair):
    """The peer URL of the existing member: refused when the change is applied (409)."""
    for srv in pair:
        body = f'{{"peerURLs":["{srv.peer_url}"]}}'
        out = exchange(srv, "POST", "/v2/members", body)
        assert out.startswith(b"HTTP/1.1 409 Conflict"), out
        assert out.endswith(b'{"message":"membership: peerURL exists"}'), out


def test_member_add_sorts_peer_urls(pair):
    """etcd keeps a member's peer URLs sorted (types.NewURLs), whatever order they came in."""
    outs = []
    for srv in pair:
        out = exchange(srv, "POST", "/v3/cluster/member/add",
                       '{"peerURLs":["http://127.0.0.1:7","http://127.0.0.1:6"],"isLearner":true}')
        assert out.startswith(b"HTTP/1.1 200"), out
        body = json.loads(out.partition(b"\r\n\r\n")[2])
        assert body["member"]["peerURLs"] == ["http://127.0.0.1:6", "http://127.0.0.1:7"]
        outs.append(body["member"])
    assert outs[0] == outs[1]


def test_status_lists_active_alarms_as_errors(pair):
    for srv in pair:
        status = json.loads(exchange(srv, "POST", "/v3/maintenance/status", "{}")
                            .partition(b"\r\n\r\n")[2])
        assert "errors" not in status
        mid = json.loads(raw_json(srv, "/v3/maintenance/status"))["header"]["member_id"]
        exchange(srv, "POST", "/v3/maintenance/alarm",
                 json.dumps({"action": "ACTIVATE", "memberID": mid, "alarm": "NOSPACE"}))
        status = json.loads(exchange(srv, "POST", "/v3/maintenance/status", "{}")
                            .partition(b"\r\n\r\n")[2])
        assert status["errors"] == [f"memberID:{mid} alarm:NOSPACE "], (srv.name, status)


def raw_json(srv, path: str, body: str = "{}") -> bytes:
    req = (f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
           f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode()
    return raw(srv.url, req).partition(b"\r\n\r\n")[2]


def test_learner_add_needs_every_voter_connected(pair):
    """etcd's mayAddMember: a learner is refused while a voting member (added, never
    started) is not connected, as a voter would be."""
    outs = []
    for srv in pair:
        first = exchange(srv, "POST", "/v3/cluster/member/add", '{"peerURLs":["http://127.0.0.1:61001"]}')
        assert first.startswith(b"HTTP/1.1 200"), first
        outs.append(exchange(srv, "POST", "/v3/cluster/member/add",
                             '{"peerURLs":["http://127.0.0.1:61002"],"isLearner":true}'))
    assert b'"error":"etcdserver: unhealthy cluster"' in outs[1], outs[1]
    assert outs[0] == outs[1]
