"""Bootstrapping 3-member clusters by discovery, against real processes.

- ``--discovery``: etcd's v2 discovery protocol, the discovery service being a
  one-member fastkv (and, once, etcd 3.4 serving fastkv members, and fastkv serving
  etcd members: both sides of the protocol are checked against etcd's);
- ``--discovery-srv``: DNS SRV records from a real DNS server on a loopback port
  (tests/dnsserver.py), which fastkv queries via FASTKV_NAMESERVER.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse

import pytest
import requests

from dnsserver import dns_server
from servers import REPO, EtcdProcess, FastkvProcess, free_port

pytestmark = pytest.mark.timeout(180)


def _without_initial_cluster(flags: list[str]) -> list[str]:
    i = flags.index("--initial-cluster")
    return flags[:i] + flags[i + 2:]


class BootFastkv(FastkvProcess):
    """A member that finds its cluster by discovery (no --initial-cluster); `advertise`
    replaces its advertised peer URL (it listens on the address)."""

    def __init__(self, boot: list[str], **kw):
        super().__init__(**kw)
        self.boot = boot
        self.advertise = ""

    def flags(self) -> list[str]:
        flags = _without_initial_cluster(super().flags())
        if self.advertise:
            flags[flags.index("--initial-advertise-peer-urls") + 1] = self.advertise
        return flags + self.boot


class BootEtcd(EtcdProcess):
    def __init__(self, boot: list[str], **kw):
        super().__init__(**kw)
        self.boot = boot

    def flags(self) -> list[str]:
        return _without_initial_cluster(super().flags()) + self.boot


@pytest.fixture
def procs():
    started = []
    yield started
    for p in started:
        p.cleanup()


def _v2_service(procs, kind=FastkvProcess):
    svc = kind(extra_args=["--enable-v2=true"], name="disco")
    procs.append(svc)
    return svc.start()


def _new_token(svc, size: int, name: str = "tok") -> str:
    r = requests.put(f"{svc.url}/v2/keys/discovery/{name}/_config/size", data={"value": str(size)},
                     timeout=10)
    assert r.status_code == 201, r.text
    return f"{svc.url}/v2/keys/discovery/{name}"


def _members(url: str) -> list[dict]:
    r = requests.post(f"{url}/v3/cluster/member/list", json={}, timeout=10)
    r.raise_for_status()
    return r.json()["members"]


def _wait_members_named(url: str, names: set[str], deadline_s: float = 30) -> list[dict]:
    deadline = time.monotonic() + deadline_s
    while True:
        ms = _members(url)
        if {m.get("name", "") for m in ms} == names or time.monotonic() > deadline:
            return ms
        time.sleep(0.1)


def _put_get_across(members) -> None:
    import base64
    b64 = lambda s: base64.b64encode(s.encode()).decode()
    r = requests.post(f"{members[0].url}/v3/kv/put", json={"key": b64("k"), "value": b64("v")},
                      timeout=10)
    r.raise_for_status()
    rev = int(r.json()["header"]["revision"])
    for m in members[1:]:
        r = requests.post(f"{m.url}/v3/kv/range", json={"key": b64("k")}, timeout=10)
        kv = r.json()["kvs"][0]
        assert base64.b64decode(kv["value"]) == b"v" and int(kv["mod_revision"]) == rev


def _start_all(members, timeout=60):
    for m in members:
        m.launch()
    for m in members:
        m.wait_healthy(timeout)


# ---- --discovery ----------------------------------------------------------------------------

def _discovery_cluster(procs, service_kind, member_kind, prefix: str):
    """A discovery service of one kind, 3 members of another bootstrapped by it."""
    svc = _v2_service(procs, service_kind)
    durl = _new_token(svc, 3)
    members = [member_kind(["--discovery", durl], name=f"{prefix}{i}") for i in range(3)]
    procs.extend(members)
    _start_all(members)
    names = {m.member_name for m in members}
    ms = _wait_members_named(members[0].url, names)
    assert {m["name"] for m in ms} == names and len(ms) == 3
    # each registered itself under the token: name=peer-url, keyed by member ID (hex)
    from fastkv.identity import member_id
    nodes = requests.get(durl, timeout=10).json()["node"]["nodes"]
    regs = {n["key"].rsplit("/", 1)[1]: n["value"] for n in nodes if not n.get("dir")}
    assert regs == {f"{member_id([p.peer_url], durl):x}": f"{p.member_name}={p.peer_url}"
                    for p in members}
    return svc, durl, members, ms


def test_three_members_bootstrap_by_discovery_and_a_fourth_finds_it_full(procs):
    svc, durl, members, ms = _discovery_cluster(procs, FastkvProcess, BootFastkv, "d")
    assert sorted(u for m in ms for u in m["peerURLs"]) == sorted(m.peer_url for m in members)
    # the same cluster everywhere, and the discovery URL was its token: the member IDs
    # are the ones etcd computes from peer URLs + discovery URL
    from fastkv.identity import member_id
    assert {int(m["ID"]) for m in ms} == {member_id([p.peer_url], durl) for p in members}
    cids = {requests.post(f"{m.url}/v3/cluster/member/list", json={}, timeout=10)
            .json()["header"]["cluster_id"] for m in members}
    assert len(cids) == 1
    _put_get_across(members)

    # a fourth member: the cluster is full; with --discovery-fallback exit it stops
    late = BootFastkv(["--discovery", durl, "--discovery-fallback", "exit"], name="d3")
    procs.append(late)
    late.launch()
    assert late.proc.wait(timeout=30) == 1
    assert "discovery: cluster is full" in late.log()
    assert len(_members(members[0].url)) == 3
    # by default (--discovery-fallback proxy) it becomes a proxy for the cluster instead:
    # it forwards client requests and keeps the cluster in its data dir
    proxy = BootFastkv(["--discovery", durl], name="d4")
    procs.append(proxy)
    proxy.start()
    _put_get_across([proxy, members[0]])
    assert len(_members(proxy.url)) == 3
    assert os.path.exists(os.path.join(proxy.data_dir, "member", "proxy", "cluster"))

    # restarting a member ignores discovery (its WAL knows the cluster) even with the
    # discovery service gone
    svc.stop()
    members[1].stop()
    members[1].launch()
    members[1].wait_healthy(30)
    _put_get_across([members[1], members[0], members[2]])
    # and a proxy restarts as a proxy from the cluster it kept
    proxy.stop()
    proxy.start()
    _put_get_across([proxy, members[2]])


def test_discovery_errors_are_etcds_and_register_nothing(procs, tmp_path):
    svc = _v2_service(procs)

    def run(*boot: str, name="e0") -> subprocess.CompletedProcess:
        m = BootFastkv(list(boot), name=name, data_dir=str(tmp_path / name))
        try:
            return subprocess.run(m.command(), capture_output=True, text=True, timeout=60,
                                  cwd=REPO, stdin=subprocess.DEVNULL)
        finally:
            m.cleanup()

    # no _config/size under the token
    out = run("--discovery", f"{svc.url}/v2/keys/discovery/nosize")
    assert out.returncode == 1 and "discovery: size key not found" in out.stderr
    # a size that is not a number
    requests.put(f"{svc.url}/v2/keys/discovery/bad/_config/size", data={"value": "three"},
                 timeout=10)
    out = run("--discovery", f"{svc.url}/v2/keys/discovery/bad")
    assert out.returncode == 1 and "discovery: size key is bad" in out.stderr
    # nobody registered (_config is hidden: the listing is empty)
    assert "nodes" not in requests.get(f"{svc.url}/v2/keys/discovery/bad", timeout=10
                                       ).json()["node"]
    # not a v2 keys API: the answers are not its JSON
    out = run("--discovery", f"{svc.url}/not/keys")
    assert out.returncode == 1 and "discovery: bad discovery endpoint" in out.stderr
    # a URL that is not one
    out = run("--discovery", "ftp://x/y")
    assert out.returncode == 1 and "discovery: invalid URL" in out.stderr
    # more than one way to bootstrap
    out = run("--discovery", f"{svc.url}/v2/keys/discovery/x", "--initial-cluster",
              "e0=http://127.0.0.1:1")
    assert out.returncode == 2 and "multiple discovery or bootstrap flags are set" in out.stderr

    # the same member registering twice (its data dir lost): duplicate id
    durl = _new_token(svc, 2, "dup")
    peer = f"http://127.0.0.1:{free_port()}"
    me = urllib.parse.quote(f"e0={peer}")
    from fastkv.identity import member_id
    requests.put(f"{durl}/{member_id([peer], durl):x}", data={"value": f"e0={peer}"}, timeout=10)
    m = BootFastkv(["--discovery", durl], name="e0", data_dir=str(tmp_path / "dup"))
    m.peer_url = peer
    try:
        out = subprocess.run(m.command(), capture_output=True, text=True, timeout=60, cwd=REPO,
                             stdin=subprocess.DEVNULL)
    finally:
        m.cleanup()
    assert out.returncode == 1 and "discovery: found duplicate id" in out.stderr, (me, out.stderr)


def test_discovery_waits_for_the_service_and_for_the_others(procs):
    """Members started before the discovery service answers retry; the first waits
    until all have registered."""
    svc = _v2_service(procs)
    durl = _new_token(svc, 3, "late")
    svc.stop()   # down while the first member starts: it retries
    members = [BootFastkv(["--discovery", durl], name=f"w{i}") for i in range(3)]
    procs.extend(members)
    members[0].launch()
    deadline = time.monotonic() + 30
    while "discovery service unreachable" not in members[0].log():
        assert time.monotonic() < deadline and members[0].proc.poll() is None
        time.sleep(0.05)
    svc.start()   # same data dir and port
    while len(requests.get(durl, timeout=10).json()["node"].get("nodes", [])) < 1:
        assert time.monotonic() < deadline and members[0].proc.poll() is None
        time.sleep(0.1)
    assert not members[0].healthy()   # registered, waiting for two more
    for m in members[1:]:
        m.launch()
    for m in members:
        m.wait_healthy(60)
    assert len(_members(members[2].url)) == 3


def test_fastkv_members_bootstrap_from_etcd_discovery_service(procs):
    _svc, _durl, members, _ms = _discovery_cluster(procs, EtcdProcess, BootFastkv, "f")
    _put_get_across(members)


def test_etcd_members_bootstrap_from_fastkv_discovery_service(procs):
    """etcd 3.4's own discovery client against fastkv's v2 keys API: it registers
    itself exactly as fastkv does (same keys, same values)."""
    _discovery_cluster(procs, FastkvProcess, BootEtcd, "e")


class _ForwardProxy:
    """A plain HTTP forward proxy (absolute-URI requests) on loopback that records what
    it forwarded: for --discovery-proxy."""

    def __init__(self):
        import http.server
        import threading
        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self):
                import http.client
                u = urllib.parse.urlsplit(self.path)
                seen.append(f"{self.command} {self.path}")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
                target = u.path + (f"?{u.query}" if u.query else "")
                conn.request(self.command, target, body=body or None, headers={
                    k: v for k, v in self.headers.items() if k.lower() != "proxy-connection"})
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = _forward

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_discovery_through_an_http_proxy(procs):
    svc = _v2_service(procs)
    durl = _new_token(svc, 1, "viaproxy")
    proxy = _ForwardProxy()
    try:
        m = BootFastkv(["--discovery", durl, "--discovery-proxy", proxy.url], name="p0")
        procs.append(m)
        m.start()
        assert any(s.startswith(f"PUT {durl}/") for s in proxy.seen), proxy.seen
        assert [x["name"] for x in _members(m.url)] == ["p0"]
    finally:
        proxy.close()


# ---- --discovery-srv ---------------------------------------------------------------------

def _srv_members(zone, prefix: str, service: str, extra: list[str]) -> list[BootFastkv]:
    members = [BootFastkv(["--discovery-srv", "example.test", *extra], name=f"{prefix}{i}",
                          env={"FASTKV_NAMESERVER": zone.address}) for i in range(3)]
    for i, m in enumerate(members):
        # advertise by name as the SRV targets do, or by address: both match
        if i == 0:
            m.advertise = f"http://localhost:{m.peer_port}"
        zone.srv(f"_{service}._tcp.example.test.", "localhost.", m.peer_port)
    return members


@pytest.mark.parametrize("srv_name", ["", "blue"])
def test_three_members_bootstrap_by_dns_srv(procs, srv_name):
    with dns_server() as zone:
        service = "etcd-server" + (f"-{srv_name}" if srv_name else "")
        extra = ["--discovery-srv-name", srv_name] if srv_name else []
        members = _srv_members(zone, "s", service, extra)
        procs.extend(members)
        _start_all(members)
        assert any("_etcd-server-ssl" in q for q in zone.queries)   # https asked too
        ms = _wait_members_named(members[1].url, {"s0", "s1", "s2"})
        assert sorted(m["name"] for m in ms) == ["s0", "s1", "s2"]
        # the peer URLs are the SRV targets
        assert sorted(u for m in ms for u in m["peerURLs"]) == sorted(
            f"http://localhost:{m.peer_port}" for m in members)
        _put_get_across(members)
        # clients find the members by their _etcd-client records (fastkvctl --discovery-srv)
        for m in members:
            zone.srv("_etcd-client._tcp.example.test.", "localhost.", m.client_port)
        env = dict(os.environ, FASTKV_NAMESERVER=zone.address)
        ctl = [sys.executable, "-m", "fastkv.cli", "--discovery-srv", "example.test"]
        out = subprocess.run(ctl + ["put", "srv-client", "found"], capture_output=True,
                             text=True, timeout=60, env=env, cwd=REPO)
        assert (out.returncode, out.stdout) == (0, "OK\n"), out.stderr
        out = subprocess.run(ctl + ["--insecure-discovery=false", "get", "srv-client"],
                             capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
        assert "ignoring discovered insecure endpoint" in out.stderr and out.returncode != 0


def test_dns_srv_errors(procs, tmp_path):
    with dns_server() as zone:
        env = dict(os.environ, FASTKV_NAMESERVER=zone.address)

        def run(name: str, *boot: str) -> subprocess.CompletedProcess:
            m = BootFastkv(list(boot), name=name, data_dir=str(tmp_path / name))
            try:
                return subprocess.run(m.command(), capture_output=True, text=True, timeout=60,
                                      cwd=REPO, stdin=subprocess.DEVNULL, env=env)
            finally:
                m.cleanup()

        out = run("x0", "--discovery-srv", "nothing.test")
        assert out.returncode == 1
        assert "error querying DNS SRV records for _etcd-server" in out.stderr
        assert "_etcd-server-ssl._tcp.nothing.test" in out.stderr
        zone.srv("_etcd-server._tcp.other.test.", "localhost.", free_port())
        out = run("x1", "--discovery-srv", "other.test")
        assert out.returncode == 1
        assert 'cannot find local etcd member "x1" in SRV records' in out.stderr
