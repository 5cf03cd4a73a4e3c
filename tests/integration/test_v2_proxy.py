"""The v2 proxy (`fastkv --proxy on|readonly`, fastkv/proxy.py) against real processes.

A 3-member fastkv cluster with the v2 API on, and proxy processes started as an operator
would (`python -m fastkv --proxy ... --initial-cluster ...`). The proxy must forward v2
traffic (watches streamed), stay out of the member list, refuse writes when readonly, fail
over when its member stops, keep <data-dir>/proxy/cluster and restart from it. The last
test runs etcd 3.4's own proxy in front of an etcd member beside ours in front of a
fastkv member and compares the answers the proxies make themselves.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time

import pytest
import requests

from servers import Cluster, EtcdProcess, FastkvProcess, ServerProcess, free_port

pytestmark = pytest.mark.timeout(240)

V2 = ["--enable-v2=true"]


class ProxyProcess(ServerProcess):
    """`fastkv --proxy MODE` (or etcd's, kind="etcd") on a free loopback port (`url`, `port`);
    launch(), log() and cleanup() are ServerProcess's."""

    def __init__(self, initial_cluster: str, mode: str = "on", extra_args=(),
                 data_dir: str | None = None, kind: str = "fastkv"):
        self.name = f"{kind}-proxy"   # names the log file and the temporary data dir
        super().__init__(data_dir, extra_args, initial_cluster=initial_cluster)
        self.port = self.client_port
        self.mode = mode
        self.kind = kind

    def command(self) -> list[str]:
        exe = [sys.executable, "-m", "fastkv"] if self.kind == "fastkv" else [
            shutil.which("etcd") or "/usr/bin/etcd"]
        return exe + self.flags()

    def flags(self) -> list[str]:
        return ["--proxy", self.mode, "--data-dir", self.data_dir,
                "--listen-client-urls", self.url,
                "--initial-cluster", self.initial_cluster] + self.extra_args

    def start(self, endpoints: int = 1, timeout: float = 30.0) -> "ProxyProcess":
        """Launch, then wait until the proxy knows at least `endpoints` member URLs."""
        self.launch()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"proxy exited with {self.proc.returncode}: {self.log()}")
            try:
                r = requests.get(self.url + "/v2/config/local/proxy", timeout=2)
                if r.status_code == 200 and len(r.json()["endpoints"]) >= endpoints:
                    return self
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"proxy did not find {endpoints} endpoint(s): {self.log()}")

    def endpoints(self) -> list[str]:
        return requests.get(self.url + "/v2/config/local/proxy", timeout=5).json()["endpoints"]

    def stop(self) -> int | None:
        """SIGTERM (SIGKILL if that is not enough); the exit code (negative: the signal)."""
        super().stop()
        return None if self.proc is None else self.proc.returncode


def initial_cluster(cluster: Cluster) -> str:
    return ",".join(f"{m.member_name}={m.peer_url}" for m in cluster.members)


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(FastkvProcess, 3, extra_args=V2)
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def proxy(cluster):
    p = ProxyProcess(initial_cluster(cluster))
    try:
        p.start(endpoints=3)
        yield p
    finally:
        p.cleanup()


@pytest.fixture
def readonly_proxy(cluster):
    p = ProxyProcess(initial_cluster(cluster), mode="readonly")
    try:
        p.start(endpoints=3)
        yield p
    finally:
        p.cleanup()


def key(name: str) -> str:
    return f"/v2/keys/proxytest/{name}-{free_port()}"


def read_direct(cluster: Cluster, path: str) -> requests.Response:
    return requests.get(cluster.members[0].url + path, timeout=5)


# ---- forwarding ----------------------------------------------------------------------------

def test_set_get_cas_delete_through_proxy(cluster, proxy):
    k = key("cas")
    r = requests.put(proxy.url + k, data={"value": "one"}, timeout=10)
    assert r.status_code == 201, r.text
    assert r.json()["node"]["value"] == "one"
    assert r.headers["X-Etcd-Cluster-Id"]
    assert read_direct(cluster, k).json()["node"]["value"] == "one"
    r = requests.get(proxy.url + k, timeout=10)
    assert r.status_code == 200 and r.json()["node"]["value"] == "one"
    r = requests.put(proxy.url + k, params={"prevValue": "one"}, data={"value": "two"},
                     timeout=10)
    assert r.status_code == 200 and r.json()["action"] == "compareAndSwap", r.text
    r = requests.put(proxy.url + k, params={"prevValue": "one"}, data={"value": "three"},
                     timeout=10)
    assert r.status_code == 412 and r.json()["errorCode"] == 101, r.text
    r = requests.post(proxy.url + k.rsplit("/", 1)[0] + "/queue", data={"value": "job"},
                      timeout=10)
    assert r.status_code == 201 and r.json()["action"] == "create"
    r = requests.delete(proxy.url + k, params={"prevValue": "two"}, timeout=10)
    assert r.status_code == 200 and r.json()["action"] == "compareAndDelete", r.text
    assert read_direct(cluster, k).status_code == 404


def test_wait_watch_streams_through_proxy(cluster, proxy):
    k = key("watch")
    # the head arrives before any event: requests returns once it has the headers
    resp = requests.get(proxy.url + k, params={"wait": "true"}, stream=True, timeout=30)
    try:
        assert resp.status_code == 200
        assert "X-Etcd-Index" in resp.headers
        r = requests.put(cluster.members[1].url + k, data={"value": "seen"}, timeout=10)
        assert r.status_code == 201
        ev = json.loads(resp.content)
        assert ev["action"] == "set" and ev["node"]["value"] == "seen"
    finally:
        resp.close()


def test_stream_watch_delivers_each_event(cluster, proxy):
    k = key("stream")
    resp = requests.get(proxy.url + k, params={"wait": "true", "stream": "true"}, stream=True,
                        timeout=30)
    try:
        assert resp.status_code == 200
        chunks = resp.iter_content(chunk_size=None)
        for value in ("a", "b"):
            # the next event must come through while the response stays open
            assert requests.put(cluster.members[2].url + k, data={"value": value},
                                timeout=10).status_code in (200, 201)
            ev = json.loads(next(chunks))
            assert ev["node"]["value"] == value
    finally:
        resp.close()


def test_proxy_is_not_a_member(cluster, proxy):
    members = read_direct(cluster, "/v2/members").json()["members"]
    assert len(members) == 3
    urls = {u for m in members for u in m["clientURLs"] + m["peerURLs"]}
    assert proxy.url not in urls
    via = requests.get(proxy.url + "/v2/members", timeout=10).json()["members"]
    assert sorted(m["id"] for m in via) == sorted(m["id"] for m in members)
    # what the proxy forwards to: every member's client URL, learned from the peers
    assert sorted(proxy.endpoints()) == sorted(cluster.urls)


def test_readonly_refuses_writes_and_changes_nothing(cluster, readonly_proxy):
    k = key("ro")
    assert requests.put(cluster.members[0].url + k, data={"value": "keep"},
                        timeout=10).status_code == 201
    for method in ("PUT", "POST", "DELETE"):
        r = requests.request(method, readonly_proxy.url + k, data={"value": "changed"},
                             timeout=10)
        assert r.status_code == 501, (method, r.status_code, r.text)
        assert r.content == b""
    r = requests.get(readonly_proxy.url + k, timeout=10)
    assert r.status_code == 200 and r.json()["node"]["value"] == "keep"
    assert read_direct(cluster, k).json()["node"]["value"] == "keep"
    assert read_direct(cluster, k).json()["node"]["modifiedIndex"] == \
        r.json()["node"]["modifiedIndex"]


def test_python_etcd_client_through_proxy(cluster, proxy):
    import etcd
    client = etcd.Client(host="127.0.0.1", port=proxy.port, read_timeout=20)
    base = f"/proxytest/pyetcd-{free_port()}"
    client.write(base + "/a", "1")
    assert client.read(base + "/a").value == "1"
    client.test_and_set(base + "/a", "2", "1")
    assert client.read(base + "/a").value == "2"
    with pytest.raises(etcd.EtcdCompareFailed):
        client.test_and_set(base + "/a", "3", "1")
    client.write(base + "/b", "x", ttl=60)
    assert sorted(c.key for c in client.read(base, recursive=True).children) == \
        [base + "/a", base + "/b"]
    got: dict = {}

    def watch():
        try:
            got["result"] = client.watch(base + "/a", timeout=30)
        except Exception as exc:   # noqa: BLE001 - reported below
            got["error"] = exc
    t = threading.Thread(target=watch, daemon=True)
    t.start()
    # the watch is parked at the member once the proxy has forwarded it; a write made before
    # that would be missed, so write until the watch returns (poll with a deadline)
    deadline = time.monotonic() + 30
    n = 0
    while t.is_alive() and time.monotonic() < deadline:
        n += 1
        client.write(base + "/a", f"w{n}")
        t.join(0.5)
    assert not t.is_alive(), "the watch did not return"
    assert "error" not in got, got
    assert got["result"].value.startswith("w")
    client.delete(base + "/a")
    with pytest.raises(etcd.EtcdKeyNotFound):
        client.read(base + "/a")


# ---- failures, restart, start-up --------------------------------------------------------------

def test_fails_over_when_its_member_stops():
    c = Cluster(FastkvProcess, 3, extra_args=V2)
    p = None
    try:
        c.start()
        p = ProxyProcess(initial_cluster(c), extra_args=[
            "--proxy-failure-wait", "600000", "--proxy-refresh-interval", "600000"])
        p.start(endpoints=3)
        k = key("failover")
        assert requests.put(p.url + k, data={"value": "v"}, timeout=10).status_code == 201
        used = requests.get(p.url + "/v2/stats/self", timeout=10).json()["name"]
        victim = next(m for m in c.members if m.member_name == used)
        victim.stop()
        # the very next request is answered: the proxy skips the stopped member at once
        r = requests.get(p.url + k, timeout=10)
        assert r.status_code == 200 and r.json()["node"]["value"] == "v", r.text
        now = requests.get(p.url + "/v2/stats/self", timeout=10).json()["name"]
        assert now != used
        assert victim.url not in p.endpoints()
        assert len(p.endpoints()) == 2
        # writes go through too once the two left have a leader (the victim may have led)
        deadline = time.monotonic() + 30
        status, text = None, ""
        while status != 200 and time.monotonic() < deadline:
            try:
                r = requests.put(p.url + k, data={"value": "after"}, timeout=10)
                status, text = r.status_code, r.text
            except requests.RequestException as exc:   # the member timed out waiting
                status, text = None, repr(exc)
            if status != 200:
                time.sleep(0.2)
        assert status == 200, text
    finally:
        if p is not None:
            p.cleanup()
        c.stop()


def test_cluster_file_is_kept_and_wins_on_restart(cluster):
    data_dir = tempfile.mkdtemp(prefix="fastkv-proxy-restart-")
    p = q = None
    try:
        p = ProxyProcess(initial_cluster(cluster), data_dir=data_dir)
        p.start(endpoints=3)
        path = os.path.join(data_dir, "proxy", "cluster")
        with open(path) as f:
            assert json.load(f) == {"PeerURLs": sorted(m.peer_url for m in cluster.members)}
        assert os.stat(path).st_mode & 0o777 == 0o600
        assert p.stop() == 0, p.log()
        # etcd: on restart the cluster file wins over --initial-cluster (here: nobody)
        q = ProxyProcess(f"gone=http://127.0.0.1:{free_port()}", data_dir=data_dir)
        q.start(endpoints=3)
        k = key("restart")
        assert requests.put(q.url + k, data={"value": "r"}, timeout=10).status_code == 201
        assert read_direct(cluster, k).json()["node"]["value"] == "r"
        assert q.stop() == 0, q.log()
    finally:
        for x in (p, q):
            if x is not None:
                x.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)


def test_port_in_use_fails_start_up(cluster):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        busy = s.getsockname()[1]
        p = ProxyProcess(initial_cluster(cluster))
        p.url = f"http://127.0.0.1:{busy}"
        try:
            p.launch()
            code = p.proc.wait(timeout=60)
            assert code != 0
            assert "cannot listen on" in p.log() and f":{busy}" in p.log(), p.log()
        finally:
            p.cleanup()


def test_tls_members_reached_with_the_peer_certificate():
    """Members with https:// client and peer URLs that want client certificates; the proxy
    has only --peer-* TLS flags: it asks the peers for the member list with them and, as
    etcd's proxy does without client TLS flags, uses them towards the client URLs too."""
    from tlspki import Pki, tls_server
    pki_dir = tempfile.mkdtemp(prefix="fastkv-proxy-pki-")
    member = p = None
    try:
        pki = Pki(pki_dir)
        cls = tls_server(FastkvProcess, client=True, peer=True, context=pki.client_context())
        member = cls(extra_args=V2 + pki.server_flags() + pki.peer_flags())
        member.start()
        p = ProxyProcess(f"{member.member_name}={member.peer_url}",
                         extra_args=pki.peer_flags(client_cert_auth=False))
        p.start(endpoints=1)
        assert p.endpoints() == [member.url]
        k = key("tls")
        assert requests.put(p.url + k, data={"value": "t"}, timeout=10).status_code == 201
        assert requests.get(p.url + k, timeout=10).json()["node"]["value"] == "t"
    finally:
        if p is not None:
            p.cleanup()
        if member is not None:
            member.cleanup()
        shutil.rmtree(pki_dir, ignore_errors=True)


# ---- beside etcd 3.4's own proxy ---------------------------------------------------------------

def _answer(method: str, url: str, **kw) -> tuple[int, list[str], bytes]:
    """Status, header names (Date left out, in order) and body of one request."""
    r = requests.request(method, url, timeout=10, allow_redirects=False, **kw)
    names = [k for k, _ in r.raw.headers.items() if k != "Date"]
    return r.status_code, names, r.content


@pytest.mark.etcd
def test_proxies_answer_like_etcds():
    """etcd's proxy in front of an etcd member and ours in front of a fastkv member: the
    answers the proxy makes itself are the same (status, header names and order, body)."""
    started: list = []
    try:
        sides = {}
        for kind, member_cls in (("etcd", EtcdProcess), ("fastkv", FastkvProcess)):
            member = member_cls(extra_args=["--enable-v2"])
            started.append(member)
            member.start()
            ic = f"{member.member_name}={member.peer_url}"
            rw = ProxyProcess(ic, "on", kind=kind)
            ro = ProxyProcess(ic, "readonly", kind=kind)
            dead = ProxyProcess(f"x=http://127.0.0.1:{free_port()}", "on", kind=kind)
            started += [rw, ro, dead]
            rw.start()
            ro.start()
            dead.launch()
            sides[kind] = (member, rw, ro, dead)
        for kind, (member, rw, ro, dead) in sides.items():
            deadline = time.monotonic() + 30
            while True:   # the proxy with no cluster behind it answers with no endpoints
                try:
                    if requests.get(dead.url + CONFIG, timeout=2).json() == {"endpoints": []}:
                        break
                except (requests.RequestException, ValueError):
                    pass
                assert time.monotonic() < deadline, dead.log()
                time.sleep(0.1)

        def own_answers(rw, ro, dead, member):
            k = "/v2/keys/difftest"
            out = {}
            for method in ("PUT", "POST", "DELETE", "HEAD", "OPTIONS", "PATCH"):
                out[f"readonly {method}"] = _answer(method, ro.url + k, data={"value": "x"})
            out["readonly config POST"] = _answer("POST", ro.url + CONFIG)
            out["options"] = _answer("OPTIONS", rw.url + k)
            out["config POST"] = _answer("POST", rw.url + CONFIG)
            status, names, body = _answer("GET", rw.url + CONFIG)
            out["config GET"] = (status, names, json.loads(body) == {
                "endpoints": [member.url]})
            out["no endpoint"] = _answer("GET", dead.url + k)
            out["unclean path"] = _answer("GET", rw.url + "/v2//keys/./difftest?x=1")
            # a forwarded answer carries the proxy's CORS headers before the member's own
            status, names, _ = _answer("GET", rw.url + "/version")
            direct = _answer("GET", member.url + "/version")[1]
            out["forwarded CORS"] = (status, names.count("Access-Control-Allow-Origin")
                                     - direct.count("Access-Control-Allow-Origin"))
            return out

        got = {kind: own_answers(rw, ro, dead, member)
               for kind, (member, rw, ro, dead) in sides.items()}
        for name in got["etcd"]:
            assert got["fastkv"][name] == got["etcd"][name], name
        # and the member behind the readonly proxies was never written to
        for kind, (member, rw, ro, dead) in sides.items():
            assert requests.get(member.url + "/v2/keys/difftest",
                                timeout=10).status_code == 404, kind
    finally:
        for x in reversed(started):
            try:
                x.cleanup()
            except Exception:   # noqa: BLE001 - stop the others anyway
                pass


CONFIG = "/v2/config/local/proxy"
