"""TLS on the client and peer ports, side by side with Debian's etcd 3.4.

Certificates come from trustme (tests/tlspki.py). Every server is a real process
on 127.0.0.1; clients are Python's ssl, grpcio, requests, Debian's etcdctl and
fastkvctl. Where the answer is deterministic, fastkv's must be etcd's: the
handshake outcomes, etcdctl's output (the clusters are started on the same
ports with the same token, so member IDs agree), the start-up errors.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import time
import warnings

import grpc
import pytest
import requests

from servers import REPO, EtcdProcess, FastkvProcess, free_port
from tlspki import Pki, tls_server

from fastkv.proto.etcdserverpb import rpc_pb2 as pb
from fastkv.proto.etcdserverpb import rpc_pb2_grpc as rpc

KINDS = {"fastkv": FastkvProcess, "etcd": EtcdProcess}


@pytest.fixture(scope="module")
def pki():
    d = tempfile.mkdtemp(prefix="fastkv-pki-")
    try:
        yield Pki(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def run(argv, env=None, timeout=30, input=None):
    e = dict(os.environ)
    e.pop("ETCDCTL_API", None)
    e.update(env or {})
    return subprocess.run(argv, capture_output=True, text=True, env=e, cwd=REPO,
                          timeout=timeout, input=input, stdin=None if input else subprocess.DEVNULL)


def etcdctl(*args, env=None):
    return run(["etcdctl", *args], env=env)


def fastkvctl(*args, env=None):
    return run([sys.executable, "-m", "fastkv.cli", *args], env=env)


def out(p) -> str:
    assert p.returncode == 0, f"exit {p.returncode}: {p.stdout}{p.stderr}"
    return p.stdout


def out_err(p) -> str:
    """stdout and stderr (etcdctl 3.4 prints endpoint health on stderr)."""
    assert p.returncode == 0, f"exit {p.returncode}: {p.stdout}{p.stderr}"
    return p.stdout + p.stderr


def started(srv):
    try:
        return srv.start()
    except BaseException:
        srv.cleanup()
        raise


# ---- client handshakes ------------------------------------------------------------------

def try_https(port: int, ctx: ssl.SSLContext) -> str:
    """'ok' if GET /version is answered over TLS with `ctx`, else 'refused'."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
    except (ssl.SSLError, OSError):
        return "refused"
    if not data:
        # With TLS 1.3 the client's side of the handshake is over before the server has
        # judged the client's certificate: a refusal then shows as the connection closing
        # (etcd sends a TLS alert first; fastkv's TLS layer, uvloop's, closes without it).
        return "refused"
    return "ok" if data.startswith(b"HTTP/1.1 200") else f"answer {data[:40]!r}"


def try_plaintext(port: int) -> bytes:
    """What a plaintext HTTP request to the port gets back (b"" when the server closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
    return data


def grpc_range(port: int, pki: Pki, cert: str | None) -> str:
    """A gRPC KV.Range over TLS with grpcio (C core: ALPN h2), 'ok' or 'refused'."""
    key = chain = None
    if cert:
        c, k = pki.cert(cert)
        with open(c, "rb") as f:
            chain = f.read()
        with open(k, "rb") as f:
            key = f.read()
    with open(pki.path("ca.pem"), "rb") as f:
        creds = grpc.ssl_channel_credentials(f.read(), key, chain)
    with grpc.secure_channel(f"127.0.0.1:{port}", creds) as ch:
        try:
            rpc.KVStub(ch).Range(pb.RangeRequest(key=b"k"), timeout=3)
        except grpc.RpcError as e:
            return "refused" if e.code() == grpc.StatusCode.UNAVAILABLE else e.code().name
    return "ok"


@pytest.mark.parametrize("client_cert_auth", [True, False], ids=["client-cert-auth", "ca-only"])
def test_client_handshake_matrix_as_etcd(pki, client_cert_auth):
    """Right CA, wrong CA, no certificate, expired certificate, a client that cannot
    verify the server, plaintext to the TLS port: the same outcome as etcd's. (etcd asks
    for client certificates when --trusted-ca-file is given even without
    --client-cert-auth, and so does fastkv.)"""
    results = {}
    for kind in ("etcd", "fastkv"):
        ctx = pki.client_context()
        srv = started(tls_server(KINDS[kind], context=ctx)(
            extra_args=pki.server_flags(client_cert_auth)))
        try:
            port = srv.client_port
            results[kind] = {
                "right CA": try_https(port, pki.client_context("client")),
                "wrong CA": try_https(port, pki.client_context("wrongca")),
                "no certificate": try_https(port, pki.client_context(None)),
                "expired": try_https(port, pki.client_context("expired")),
                "server not trusted": try_https(port, pki.client_context(
                    "client", ca="other-ca.pem")),
                "plaintext": try_plaintext(port),
                "grpc": grpc_range(port, pki, "client"),
                "grpc without certificate": grpc_range(port, pki, None),
            }
            if kind == "fastkv":
                time.sleep(0.2)
                log = srv.log()
                assert 'rejected connection from "127.0.0.1:' in log
                assert "tls: first record does not look like a TLS handshake" in log
                assert "Traceback" not in log
        finally:
            srv.cleanup()
    expected = {"right CA": "ok", "wrong CA": "refused", "no certificate": "refused",
                "expired": "refused", "server not trusted": "refused", "plaintext": b"",
                "grpc": "ok", "grpc without certificate": "refused"}
    assert results["etcd"] == expected
    assert results["fastkv"] == expected


# ---- a TLS cluster, etcdctl against fastkv and etcd ----------------------------------------

def _tls_cluster(kind, pki, ports, token, data_root, extra=()):
    """Three members on the given (client, peer) ports, peer TLS with client certs,
    client TLS with client-cert-auth."""
    cls = tls_server(KINDS[kind], client=True, peer=True, context=pki.client_context())
    members = []
    for i, (cport, pport) in enumerate(ports):
        m = cls(data_dir=os.path.join(data_root, f"m{i}"), name=f"m{i}", token=token,
                extra_args=pki.server_flags() + pki.peer_flags() + list(extra))
        m.client_port, m.peer_port = cport, pport
        m.url, m.peer_url = f"https://127.0.0.1:{cport}", f"https://127.0.0.1:{pport}"
        members.append(m)
    initial = ",".join(f"{m.member_name}={m.peer_url}" for m in members)
    for m in members:
        m.initial_cluster = initial
    return members


def _session(kind, pki, members) -> dict:
    eps = ",".join(m.url for m in members)
    tls = pki.etcdctl_flags()
    r = {}
    r["put"] = out(etcdctl(*tls, "--endpoints", eps, "put", "foo", "bar"))
    r["get"] = out(etcdctl(*tls, "--endpoints", members[1].url, "get", "foo"))
    r["get -w json kvs"] = json.loads(
        out(etcdctl(*tls, "--endpoints", members[2].url, "get", "foo", "-w", "json")))["kvs"]
    r["member list"] = out(etcdctl(*tls, "--endpoints", members[0].url, "member", "list"))
    health = out_err(etcdctl(*tls, "--endpoints", eps, "endpoint", "health"))
    assert health.count("is healthy") == 3, health
    r["endpoint health"] = sorted(re.sub(r"took = [0-9.]+[µmn]?s", "took = T", health)
                                  .splitlines())
    # the JSON gateway over https with requests (HTTP/1.1)
    cert = pki.cert("client")
    resp = requests.post(members[1].url + "/v3/kv/range", json={"key": "Zm9v"},
                         cert=cert, verify=pki.path("ca.pem"), timeout=10)
    assert resp.status_code == 200, resp.text
    r["gateway range kvs"] = resp.json()["kvs"]
    resp = requests.get(members[2].url + "/health", cert=cert, verify=pki.path("ca.pem"),
                        timeout=10)
    r["gateway health"] = (resp.status_code, resp.json())
    # curl (offers h2 and http/1.1 by ALPN)
    curl = run(["curl", "-s", "--cacert", pki.path("ca.pem"), "--cert", cert[0], "--key", cert[1],
                members[0].url + "/v3/kv/range", "-d", '{"key":"Zm9v"}'])
    r["curl range kvs"] = json.loads(out(curl))["kvs"]
    # etcdctl v2 over TLS
    v2 = {"ETCDCTL_API": "2"}
    v2tls = ["--ca-file", pki.path("ca.pem"), "--cert-file", cert[0], "--key-file", cert[1]]
    r["v2 set"] = out(etcdctl(*v2tls, "--endpoints", eps, "set", "/dir/k", "v", env=v2))
    r["v2 get"] = out(etcdctl(*v2tls, "--endpoints", members[1].url, "get", "/dir/k", env=v2))
    members_v2 = out(etcdctl(*v2tls, "--endpoints", eps, "member", "list", env=v2))
    assert members_v2.count("isLeader=true") == 1, members_v2
    r["v2 member list"] = re.sub(r" isLeader=(true|false)", "", members_v2)   # who won
    r["v2 cluster-health"] = out(etcdctl(*v2tls, "--endpoints", eps, "cluster-health", env=v2))
    return r


def test_tls_cluster_serves_etcdctl_as_etcd(pki):
    """Three members with peer TLS (client certificates required) and client-cert-auth:
    etcdctl (v3 and v2), the JSON gateway (requests, curl) give what etcd's cluster with
    the same certificates, ports and token gives; fastkvctl agrees with etcdctl."""
    ports = [(free_port(), free_port()) for _ in range(3)]
    token = f"tls-{os.getpid()}-{ports[0][0]}"
    results = {}
    for kind in ("etcd", "fastkv"):
        root = tempfile.mkdtemp(prefix=f"{kind}-tls-cluster-")
        members = _tls_cluster(kind, pki, ports, token, root, extra=["--enable-v2"])
        try:
            for m in members:
                m.launch()
            for m in members:
                m.wait_healthy(60)
            results[kind] = _session(kind, pki, members)
            if kind == "fastkv":
                eps = ",".join(m.url for m in members)
                tls = pki.etcdctl_flags()
                # fastkvctl (the JSON gateway through http.client), v3 and v2
                assert out(fastkvctl(*tls, "--endpoints", eps, "put", "k2", "v2")) == "OK\n"
                assert out(fastkvctl(*tls, "--endpoints", members[2].url, "get", "k2")) == \
                    out(etcdctl(*tls, "--endpoints", members[2].url, "get", "k2"))
                # without a scheme the endpoint is dialed with TLS, as etcdctl does
                no_scheme = members[0].url.replace("https://", "")
                assert out(fastkvctl(*tls, "--endpoints", no_scheme, "get", "foo")) == \
                    out(etcdctl(*tls, "--endpoints", no_scheme, "get", "foo"))
                c, k = pki.cert("client")
                v2 = {"ETCDCTL_API": "2"}
                v2tls = ["--ca-file", pki.path("ca.pem"), "--cert-file", c, "--key-file", k]
                for args in (["get", "/dir/k"], ["ls", "/dir"], ["cluster-health"]):
                    assert out(fastkvctl(*v2tls, "--endpoints", eps, *args, env=v2)) == \
                        out(etcdctl(*v2tls, "--endpoints", eps, *args, env=v2)), args
                # without a client certificate both CLIs are refused (and fastkvctl says so)
                for cli in (etcdctl, fastkvctl):
                    p = cli("--ca-file", pki.path("ca.pem"), "--endpoints", members[0].url,
                            "get", "/dir/k", env=v2)
                    assert p.returncode != 0 and "Error" in p.stderr, (cli, p)
        finally:
            for m in members:
                m.cleanup()
            shutil.rmtree(root, ignore_errors=True)
    assert results["fastkv"] == results["etcd"]


# ---- auto TLS -----------------------------------------------------------------------------

def test_auto_tls_cluster_with_insecure_skip_tls_verify(pki):
    """--auto-tls and --peer-auto-tls: self-signed certificates in <data-dir>/fixtures;
    clients must skip verification (etcdctl and fastkvctl --insecure-skip-tls-verify)."""
    no_verify = ssl.create_default_context()
    no_verify.check_hostname = False
    no_verify.verify_mode = ssl.CERT_NONE
    cls = tls_server(FastkvProcess, client=True, peer=True, context=no_verify)
    members = [cls(name=f"m{i}", extra_args=["--auto-tls", "--peer-auto-tls"]) for i in range(3)]
    initial = ",".join(f"{m.member_name}={m.peer_url}" for m in members)
    for m in members:
        m.initial_cluster = initial
    try:
        for m in members:
            m.launch()
        for m in members:
            m.wait_healthy(60)
        eps = ",".join(m.url for m in members)
        # etcdctl 3.4 skips verification only with TLS switched on for it too (as against
        # etcd's auto TLS); fastkvctl takes the same flags, and also the skip flag alone
        skip = ["--insecure-transport=false", "--insecure-skip-tls-verify", "--endpoints", eps]
        assert out(etcdctl(*skip, "put", "foo", "bar")) == "OK\n"
        assert out(etcdctl(*skip, "get", "foo")) == "foo\nbar\n"
        assert out(fastkvctl(*skip, "get", "foo")) == "foo\nbar\n"
        assert out(fastkvctl("--insecure-skip-tls-verify", "--endpoints", eps, "get", "foo")) \
            == "foo\nbar\n"
        health = out_err(etcdctl(*skip, "endpoint", "health"))
        assert health.count("is healthy") == 3
        # without skipping verification the self-signed certificate is refused
        assert etcdctl("--endpoints", members[0].url, "--dial-timeout", "1s",
                       "--command-timeout", "2s", "get", "foo").returncode != 0
        for m in members:
            fixtures = os.path.join(m.data_dir, "member", "fixtures")
            for side in ("client", "peer"):
                key = os.path.join(fixtures, side, "key.pem")
                assert os.path.exists(os.path.join(fixtures, side, "cert.pem"))
                assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    finally:
        for m in members:
            m.cleanup()


# ---- peers without a valid certificate ---------------------------------------------------------

def _peer_hello_refusal(port: int, pki: Pki, cert: str | None) -> str:
    """Open a TLS connection to a peer port as a member would; what happens."""
    ctx = ssl.create_default_context(cafile=pki.path("ca.pem"))
    if cert:
        ctx.load_cert_chain(*pki.cert(cert))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(b"\x00" * 8)
                data = s.recv(4096)
    except (ssl.SSLError, OSError):
        return "refused at the handshake"
    if not data:   # TLS 1.3: closed once the server judged our certificate (see try_https)
        return "refused at the handshake"
    return data.decode(errors="replace")


def test_peers_without_a_valid_certificate_cannot_join(pki):
    """A member joining a peer-TLS cluster (--peer-client-cert-auth, --peer-cert-allowed-cn)
    with a certificate of another CA, an expired one, or one whose CN is not allowed is
    refused by the cluster (and logged there); with a good one it joins."""
    cls = tls_server(FastkvProcess, client=True, peer=True, context=pki.client_context())
    allowed = ["--peer-cert-allowed-cn", "fastkv-server"]
    m0 = started(cls(name="m0", extra_args=pki.server_flags() + pki.peer_flags() + allowed))
    joiners = []
    try:
        tls = pki.etcdctl_flags()
        # what the peer port says to a bare TLS client
        assert _peer_hello_refusal(m0.peer_port, pki, None) == "refused at the handshake"
        assert _peer_hello_refusal(m0.peer_port, pki, "wrongca") == "refused at the handshake"
        assert "client certificate authentication failed" in \
            _peer_hello_refusal(m0.peer_port, pki, "intruder")
        peer_port = free_port()
        peer_url = f"https://127.0.0.1:{peer_port}"
        added = out(etcdctl(*tls, "--endpoints", m0.url, "member", "add", "m1",
                            f"--peer-urls={peer_url}"))
        assert "Member" in added and "added to cluster" in added

        def joiner(cert: str):
            j = cls(name="m1", cluster_state="existing",
                    extra_args=pki.server_flags() + pki.peer_flags(cert) + allowed)
            j.peer_port, j.peer_url = peer_port, peer_url
            j.initial_cluster = f"m0={m0.peer_url},m1={peer_url}"
            joiners.append(j)
            return j.launch()

        for cert, reason in (("wrongca", "x509: certificate signed by unknown authority"),
                             ("expired", "x509: certificate has expired or is not yet valid"),
                             ("intruder", "client certificate authentication failed")):
            before = m0.log().count("rejected connection")
            j = joiner(cert)
            deadline = time.monotonic() + 20
            while m0.log().count("rejected connection") == before:
                assert time.monotonic() < deadline, f"{cert}: no refusal logged\n{m0.log()}"
                time.sleep(0.1)
            assert reason in m0.log(), (cert, m0.log())
            assert j.proc.poll() is None or j.proc.returncode != 0
            assert not j.healthy()
            members = out(etcdctl(*tls, "--endpoints", m0.url, "member", "list"))
            assert "unstarted" in members, members
            j.cleanup()
        good = joiner("server")
        good.wait_healthy(60)
        members = out(etcdctl(*tls, "--endpoints", m0.url, "member", "list"))
        assert "unstarted" not in members and ", m1, " in members, members
        assert out(etcdctl(*tls, "--endpoints", good.url, "put", "x", "y")) == "OK\n"
        assert out(etcdctl(*tls, "--endpoints", m0.url, "get", "x")) == "x\ny\n"
        assert "Traceback" not in m0.log()
    finally:
        for j in joiners:
            j.cleanup()
        m0.cleanup()


# ---- start-up errors, cipher suites, mixed URLs ----------------------------------------------

def _refusal(kind: str, args: list[str]) -> str:
    d = tempfile.mkdtemp(prefix=f"{kind}-tls-refusal-")
    try:
        argv = ([sys.executable, "-m", "fastkv"] if kind == "fastkv" else ["etcd"])
        p = run(argv + ["--data-dir", os.path.join(d, "member")] + args, timeout=30)
        assert p.returncode != 0, (kind, args, p.stdout, p.stderr)
        return p.stdout + p.stderr
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_tls_start_up_errors_as_etcd(pki):
    cport, pport = free_port(), free_port()
    https_client = f"https://127.0.0.1:{cport}"
    https_peer = f"https://127.0.0.1:{pport}"
    cases = [
        (["--listen-client-urls", https_client, "--advertise-client-urls", https_client],
         f"TLS key/cert (--cert-file, --key-file) must be provided for client url "
         f"{https_client} with HTTPS scheme"),
        (["--listen-peer-urls", https_peer, "--initial-advertise-peer-urls", https_peer,
          "--initial-cluster", f"default={https_peer}"],
         f"cannot listen on TLS for 127.0.0.1:{pport}: KeyFile and CertFile are not presented"),
        (["--cipher-suites", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,FOO"],
         'unexpected TLS cipher suite "FOO"'),
    ]
    for args, message in cases:
        for kind in ("etcd", "fastkv"):
            text = _refusal(kind, args + ["--listen-client-urls", f"http://127.0.0.1:{cport}",
                                          "--advertise-client-urls", f"http://127.0.0.1:{cport}"]
                            if "--listen-client-urls" not in args else args)
            assert message in text, (kind, text)
    # the grpcio transport does not serve TLS: a clear refusal
    text = _refusal("fastkv", ["--grpc-transport", "grpcio", "--listen-client-urls", https_client,
                               "--advertise-client-urls", https_client] + pki.server_flags())
    assert "--grpc-transport grpcio does not serve TLS" in text


@pytest.mark.parametrize("kind", ["etcd", "fastkv"])
def test_cipher_suites_and_minimum_version(pki, kind):
    """--cipher-suites limits TLS 1.2 to those suites (TLS 1.3 is not configurable, in Go
    as in OpenSSL); TLS 1.1 is refused."""
    srv = started(tls_server(KINDS[kind], context=pki.client_context())(
        extra_args=pki.server_flags() + ["--cipher-suites",
                                          "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"]))
    try:
        def tls12(cipher):
            ctx = pki.client_context()
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            ctx.set_ciphers(cipher)
            return try_https(srv.client_port, ctx)

        assert tls12("ECDHE-ECDSA-AES128-GCM-SHA256") == "ok"
        assert tls12("ECDHE-ECDSA-AES256-GCM-SHA384") == "refused"
        assert try_https(srv.client_port, pki.client_context()) == "ok"   # TLS 1.3
        old = pki.client_context()
        with warnings.catch_warnings():   # TLS 1.0/1.1 are deprecated: that is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = ssl.TLSVersion.TLSv1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("ALL:@SECLEVEL=0")
        assert try_https(srv.client_port, old) == "refused"
    finally:
        srv.cleanup()


@pytest.mark.parametrize("kind", ["etcd", "fastkv"])
def test_http_and_https_client_urls_mixed(pki, kind):
    """http:// and https:// client URLs on different ports, and both on one port (etcd's
    cmux: a TLS handshake or plaintext HTTP/1.1 and gRPC on the same port)."""
    plain, secure, both = free_port(), free_port(), free_port()
    urls = [f"http://127.0.0.1:{plain}", f"https://127.0.0.1:{secure}",
            f"http://127.0.0.1:{both}", f"https://127.0.0.1:{both}"]
    cls = tls_server(KINDS[kind], client=False)
    srv = cls(extra_args=pki.server_flags(client_cert_auth=False))
    srv.client_port, srv.url = plain, f"http://127.0.0.1:{plain}"
    srv.extra_args += ["--listen-client-urls", ",".join(urls),
                       "--advertise-client-urls", ",".join(urls)]
    srv.flags = _drop_client_urls(srv.flags)
    started(srv)
    try:
        assert try_plaintext(plain).startswith(b"HTTP/1.1 200")
        assert try_https(secure, pki.client_context()) == "ok"
        assert try_plaintext(secure) == b""
        assert try_plaintext(both).startswith(b"HTTP/1.1 200")
        assert try_https(both, pki.client_context()) == "ok"
        tls = pki.etcdctl_flags()
        assert out(etcdctl(*tls, "--endpoints", f"https://127.0.0.1:{both}", "put", "a", "1")) \
            == "OK\n"
        if kind == "fastkv":   # etcd 3.4 serves no plaintext gRPC on a port that is both
            assert out(etcdctl("--endpoints", f"http://127.0.0.1:{both}", "get", "a")) == \
                "a\n1\n"
        assert out(etcdctl("--endpoints", f"http://127.0.0.1:{plain}", "get", "a")) == "a\n1\n"
        assert out(etcdctl(*tls, "--endpoints", f"https://127.0.0.1:{secure}", "get", "a")) \
            == "a\n1\n"
    finally:
        srv.cleanup()


def _drop_client_urls(flags_method):
    """The process's flags without the fixture's own client URLs (the test gives its own)."""
    def flags():
        argv = flags_method()
        outv, skip = [], False
        for i, a in enumerate(argv):
            if skip:
                skip = False
                continue
            if a in ("--listen-client-urls", "--advertise-client-urls") and \
                    "," not in argv[i + 1]:
                skip = True
                continue
            outv.append(a)
        return outv
    return flags
