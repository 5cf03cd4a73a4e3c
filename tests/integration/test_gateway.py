"""`python -m fastkv gateway start` (fastkv/gateway.py), an L4 proxy as etcd 3.4's gateway,
against real processes: a 3-member fastkv cluster behind it, Debian's etcdctl (gRPC) and
requests (v3 JSON) in front; a TLS member (TLS passes through); a DNS server on a
loopback port for --discovery-srv; and a plain TCP echo server for the byte pipe itself
(half-close, back-pressure, an endpoint that comes back).

Which member answered is read from the member_id of the v3 JSON response header; every
request through the gateway is a new TCP connection (requests.post opens one per call),
so each one is a new pick by the gateway.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest
import requests

from dnsserver import dns_server
from servers import REPO, Cluster, FastkvProcess, free_port, running_cluster
from tlspki import Pki, tls_server

ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


# ---- helpers ---------------------------------------------------------------------------------

def wait_for(cond, timeout: float = 30.0, what: str = "condition", interval: float = 0.05):
    """Poll `cond()` until it returns a true value (returned); AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            got = cond()
        except Exception as exc:   # noqa: BLE001 - reported at the deadline
            last, got = exc, None
        if got:
            return got
        time.sleep(interval)
    raise AssertionError(f"no {what} within {timeout:.0f}s (last error: {last!r})")


class Gateway:
    """`python -m fastkv gateway start` as a child process on a free loopback port."""

    def __init__(self, *flags: str, env: dict | None = None):
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.addr}"
        self.argv = [sys.executable, "-m", "fastkv", "gateway", "start",
                     f"--listen-addr={self.addr}", *flags]
        self.env = dict(os.environ)
        self.env.update(env or {})
        fd, self.log_path = tempfile.mkstemp(prefix="fastkv-gateway-", suffix=".log")
        os.close(fd)
        self.proc: subprocess.Popen | None = None

    def launch(self) -> "Gateway":
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=self.env, cwd=REPO)
        return self

    def start(self) -> "Gateway":
        self.launch()
        wait_for(self._ready, 30, f"ready gateway {self.argv}")
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
        return "ready to proxy client requests" in self.log()

    def log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def signal_stop(self, sig=signal.SIGTERM, timeout: float = 30.0) -> int:
        """Stop it with `sig`; its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                raise AssertionError(f"gateway ignored {sig!r}:\n{self.log()}") from None
        return self.proc.returncode

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        with contextlib.suppress(OSError):
            os.unlink(self.log_path)


@pytest.fixture
def gateways():
    """Start gateways with `gateways(*flags, env=...)`; every one is stopped after the test."""
    started: list[Gateway] = []

    def start(*flags: str, env: dict | None = None) -> Gateway:
        gw = Gateway(*flags, env=env)
        started.append(gw)
        return gw.start()

    try:
        yield start
    finally:
        for gw in started:
            gw.cleanup()


def b64(s: bytes) -> str:
    return base64.b64encode(s).decode()


def post(url: str, path: str, body: dict, **kw) -> dict:
    r = requests.post(url + path, data=json.dumps(body), timeout=10, **kw)
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


def member_ids(cluster: Cluster) -> dict[str, object]:
    """member_id (as the JSON header has it) -> member process."""
    return {post(m.url, "/v3/maintenance/status", {})["header"]["member_id"]: m
            for m in cluster.members}


def leader_id(cluster: Cluster) -> str:
    return post(cluster.members[0].url, "/v3/maintenance/status", {})["leader"]


def answered_by(gw_url: str) -> str:
    """One range over a new connection through the gateway: the member_id that answered."""
    return post(gw_url, "/v3/kv/range", {"key": b64(b"gw-probe")})["header"]["member_id"]


def etcdctl(endpoint: str, *args: str, extra: tuple = ()) -> str:
    env = dict(os.environ, ETCDCTL_API="3")
    p = subprocess.run([ETCDCTL, f"--endpoints={endpoint}", "--dial-timeout=5s",
                        "--command-timeout=10s", *extra, *args],
                       capture_output=True, text=True, env=env, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, f"etcdctl {args}: exit {p.returncode}: {p.stdout}{p.stderr}"
    return p.stdout


def closed_by_peer(addr: tuple[str, int], timeout: float = 20.0) -> bool:
    """Connect to `addr`, send a request, and read: True when the connection is closed
    (EOF or reset) before `timeout` (a deadline, not a timing assertion)."""
    with socket.create_connection(addr, timeout=timeout) as s:
        s.settimeout(timeout)
        try:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            return s.recv(65536) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True


@pytest.fixture(scope="module")
def cluster():
    """A 3-member cluster shared by the tests that leave it as they found it."""
    with running_cluster() as c:
        yield c


@pytest.fixture
def own_cluster():
    """A 3-member cluster of its own, for a test that stops members."""
    with running_cluster() as c:
        yield c


# ---- a DNS server on loopback for --discovery-srv --------------------------------------------

@pytest.fixture
def dns():
    """(zone, env for the gateway): a UDP DNS server on 127.0.0.1, stopped after."""
    with dns_server() as zone:
        yield zone, {"FASTKV_NAMESERVER": zone.address}


# ---- a TCP echo server: the pipe itself ------------------------------------------------------

class EchoServer:
    """Echoes what it reads; when the client half-closes it sends b"<bye>" and closes.
    `greeting` is sent first (a server that speaks first); `close_after_greeting` closes
    right after it (the server ends the connection)."""

    def __init__(self, port: int, greeting: bytes = b"", close_after_greeting: bool = False):
        self.greeting = greeting
        self.close_after_greeting = close_after_greeting
        self.sock = socket.create_server(("127.0.0.1", port))
        self.conns: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self.accepted = 0
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, conn: socket.socket):
        try:
            if self.greeting:
                conn.sendall(self.greeting)
            if self.close_after_greeting:
                return
            while True:
                data = conn.recv(1 << 16)
                if not data:
                    break
                conn.sendall(data)
            conn.sendall(b"<bye>")
        except OSError:
            pass
        finally:
            conn.close()

    def stop(self):
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.close()
        for t in self.threads:
            t.join(timeout=10)


@contextlib.contextmanager
def echo_server(port: int, **kw):
    srv = EchoServer(port, **kw)
    try:
        yield srv
    finally:
        srv.stop()


def exchange(addr: tuple[str, int], payload: bytes, timeout: float = 30.0) -> bytes:
    """Send `payload` (from a thread, while reading), half-close, read to EOF."""
    with socket.create_connection(addr, timeout=timeout) as s:
        s.settimeout(timeout)
        errors = []

        def send():
            try:
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
            except OSError as exc:
                errors.append(exc)

        sender = threading.Thread(target=send)
        sender.start()
        chunks = []
        try:
            while True:
                data = s.recv(1 << 16)
                if not data:
                    break
                chunks.append(data)
        finally:
            sender.join(timeout=timeout)
        assert not errors, errors
        return b"".join(chunks)


# ---- the tests -------------------------------------------------------------------------------

def test_v3_json_and_etcdctl_grpc_through_the_gateway_in_turn(cluster, gateways):
    gw = gateways("--endpoints=" + ",".join(cluster.urls))   # URLs: the scheme is stripped
    ids = member_ids(cluster)

    # v3 JSON (HTTP/1.1) through the gateway
    r = post(gw.url, "/v3/kv/put", {"key": b64(b"gw/json"), "value": b64(b"through")})
    assert r["header"]["member_id"] in ids
    r = post(gw.url, "/v3/kv/range", {"key": b64(b"gw/json")})
    assert r["kvs"][0]["value"] == b64(b"through")

    # gRPC (HTTP/2) with the real etcdctl: a host:port endpoint, no scheme
    assert etcdctl(gw.addr, "put", "gw/grpc", "v1").strip() == "OK"
    assert etcdctl(gw.addr, "get", "gw/grpc").splitlines() == ["gw/grpc", "v1"]
    assert etcdctl(gw.addr, "get", "gw/json", "--print-value-only").strip() == "through"
    # ... and what etcdctl wrote is there for a direct client of any member
    for m in cluster.members:
        direct = post(m.url, "/v3/kv/range", {"key": b64(b"gw/grpc")})
        assert direct["kvs"][0]["value"] == b64(b"v1")

    # one new connection each: the three members in turn
    answers = [answered_by(gw.url) for _ in range(6)]
    assert set(answers[:3]) == set(ids) and answers[3:] == answers[:3], answers
    assert gw.signal_stop(signal.SIGTERM) == 0, gw.log()
    assert "stopping the gateway" in gw.log()


def test_failover_and_all_endpoints_down(own_cluster, gateways):
    c = own_cluster
    gw = gateways("--endpoints=" + ",".join(f"127.0.0.1:{m.client_port}" for m in c.members))
    ids = member_ids(c)
    assert {answered_by(gw.url) for _ in range(3)} == set(ids)   # all three in use

    # stop a member the gateway was using (a follower: the cluster keeps its leader)
    lead = leader_id(c)
    victim_id = next(i for i in ids if i != lead)
    victim = ids[victim_id]
    victim.stop()
    # every new connection still gets an answer, from the two members left
    answers = [answered_by(gw.url) for _ in range(6)]
    assert victim_id not in answers and set(answers) == set(ids) - {victim_id}, answers
    assert etcdctl(gw.addr, "put", "gw/after-failover", "ok").strip() == "OK"
    assert f"deactivated endpoint 127.0.0.1:{victim.client_port}" in gw.log()

    # every endpoint down: the client's connection is closed (not left hanging)
    for m in c.members:
        m.stop()
    assert closed_by_peer(("127.0.0.1", gw.port)), gw.log()
    assert closed_by_peer(("127.0.0.1", gw.port)), gw.log()   # all inactive now: at once
    assert "no active endpoint for the client" in gw.log()
    assert gw.signal_stop(signal.SIGINT) == 0, gw.log()


def test_discovery_srv_priority_name_and_insecure_records(cluster, dns, gateways):
    resolver, env = dns
    ids = member_ids(cluster)
    by_port = {m.client_port: i for i, m in ids.items()}
    m0, m1, m2 = cluster.members
    dead_port = free_port()   # nobody listens here
    name = "_etcd-client._tcp.example.test"
    resolver.srv(name, "localhost.", dead_port, priority=0)   # the best, but unreachable
    resolver.srv(name, "localhost.", m1.client_port, priority=10)   # next: takes every connection
    resolver.srv(name, "localhost.", m0.client_port, priority=20)
    resolver.srv(name, "localhost.", m2.client_port, priority=20)
    resolver.srv("_etcd-client-other._tcp.example.test", "localhost.", m2.client_port)

    gw = gateways("--discovery-srv=example.test", "--insecure-discovery", env=env)
    answers = [answered_by(gw.url) for _ in range(5)]
    assert answers == [by_port[m1.client_port]] * 5, answers
    assert f"deactivated endpoint localhost:{dead_port}" in gw.log()
    assert etcdctl(gw.addr, "put", "gw/srv", "found").strip() == "OK"

    # --discovery-srv-name: _etcd-client-<name>._tcp.<domain>
    named = gateways("--discovery-srv=example.test", "--discovery-srv-name=other",
                     "--insecure-discovery", env=env)
    assert {answered_by(named.url) for _ in range(3)} == {by_port[m2.client_port]}

    # without --insecure-discovery http records are dropped, as etcd's gateway drops them,
    # and with nothing left the --endpoints are used
    strict = gateways("--discovery-srv=example.test", f"--endpoints={m0.url}", env=env)
    assert {answered_by(strict.url) for _ in range(3)} == {by_port[m0.client_port]}
    assert f'\\"http://localhost.:{m1.client_port}\\" is insecure' in strict.log()

    # both lookups failing is a start-up error (exit 1), as etcd's
    bad = Gateway("--discovery-srv=nowhere.test", env=env)
    try:
        bad.launch()
        assert bad.proc.wait(timeout=60) == 1
        assert "dns lookup errors: lookup _etcd-client-ssl._tcp.nowhere.test" in bad.log()
    finally:
        bad.cleanup()


@pytest.fixture(scope="module")
def pki():
    d = tempfile.mkdtemp(prefix="fastkv-gw-pki-")
    try:
        yield Pki(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_tls_passes_through_and_ssl_srv_records_validate(pki, dns, gateways):
    resolver, env = dns
    cls = tls_server(FastkvProcess, client=True, context=pki.client_context())
    srv = cls(extra_args=pki.server_flags(client_cert_auth=True))
    try:
        srv.start()
        gw = gateways(f"--endpoints={srv.url}")
        tls = pki.etcdctl_flags()
        # the gateway neither terminates nor inspects TLS: client certificates reach the member
        assert etcdctl(f"https://{gw.addr}", "put", "gw/tls", "secret", extra=tuple(tls)) \
            .strip() == "OK"
        assert etcdctl(f"https://{gw.addr}", "get", "gw/tls", "--print-value-only",
                       extra=tuple(tls)).strip() == "secret"
        r = post(f"https://{gw.addr}", "/v3/kv/range", {"key": b64(b"gw/tls")},
                 verify=pki.path("ca.pem"), cert=pki.cert("client"))
        assert r["kvs"][0]["value"] == b64(b"secret")

        # https SRV records are used without --insecure-discovery once they answer a dial
        resolver.srv("_etcd-client-ssl._tcp.secure.test", "localhost.", srv.client_port)
        gw2 = gateways("--discovery-srv=secure.test", f"--trusted-ca-file={pki.path('ca.pem')}",
                       "--endpoints=127.0.0.1:1", env=env)
        assert "using validated discovered SRV endpoints" in gw2.log()
        assert etcdctl(f"https://{gw2.addr}", "get", "gw/tls", "--print-value-only",
                       extra=tuple(tls)).strip() == "secret"
    finally:
        srv.cleanup()


def test_byte_pipe_half_close_backpressure_and_reactivation(gateways):
    port = free_port()   # the only endpoint; nothing listens there yet
    gw = gateways(f"--endpoints=127.0.0.1:{port}", "--retry-delay=100ms")
    addr = ("127.0.0.1", gw.port)

    # no endpoint reachable: the client's connection is closed
    assert closed_by_peer(addr)
    assert f"deactivated endpoint 127.0.0.1:{port} for 100ms" in gw.log()

    with echo_server(port):
        # the endpoint comes back: a probe after --retry-delay reactivates it
        wait_for(lambda: exchange(addr, b"ping", timeout=10) == b"ping<bye>", 30,
                 "reactivated endpoint")
        assert f"activated endpoint 127.0.0.1:{port}" in gw.log()
        # byte for byte both ways, also more than any buffer holds (back-pressure); the
        # client's half-close reaches the server, whose answer after it comes back
        payload = os.urandom(8 << 20) + bytes(range(256))
        assert exchange(addr, payload) == payload + b"<bye>"
        assert exchange(addr, b"") == b"<bye>"

    # a server that speaks first and then closes: the client gets it all, then EOF
    port2 = free_port()
    gw2 = gateways(f"--endpoints=127.0.0.1:{port2}")
    with echo_server(port2, greeting=b"hello", close_after_greeting=True):
        with socket.create_connection(("127.0.0.1", gw2.port), timeout=30) as s:
            s.settimeout(30)
            got = b""
            while True:
                data = s.recv(1024)
                if not data:
                    break
                got += data
        assert got == b"hello"

    # SIGINT with a client connected: the gateway stops cleanly and closes the connection
    with echo_server(port2) as srv:
        with socket.create_connection(("127.0.0.1", gw2.port), timeout=30) as s:
            s.settimeout(30)
            s.sendall(b"x")
            assert s.recv(1) == b"x"
            assert srv.accepted == 1
            assert gw2.signal_stop(signal.SIGINT) == 0, gw2.log()
            with contextlib.suppress(ConnectionResetError):
                assert s.recv(1) == b""
