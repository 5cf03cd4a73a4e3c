"""TLS building blocks in one process: fastkv/tlsconfig.py (flags -> SSLContexts, etcd's
start-up checks, auto TLS, cipher names, hostname/CN checks), fastkv/tlsserver.py (the
TLS listener), ``peer_cn`` as the API adapters expose it, and the peer transport over
TLS with good and bad certificates (on asyncio's loop and on uvloop)."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import stat
import tempfile
import types

import pytest
from cryptography import x509

from fastkv import config, tlsconfig
from fastkv.api.grpc_h2 import CallContext
from fastkv.api.http import HttpProtocol
from fastkv.raft.messages import MSG_HEARTBEAT, MSG_UNREACHABLE, Message
from fastkv.raft.transport import HandshakeError, PeerTransport, fetch_cluster
from fastkv.tlsconfig import ServerTLS, TLSConfigError, TLSInfo
from fastkv.tlsserver import start_tls_server
from tlspki import Pki

CID = 0xCDF818194E3A8C32
A, B = 0x8E9E05C52164694D, 0x91BC3C398FB3C146
LOOP = {"kind": "asyncio"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_kind(request):
    LOOP["kind"] = request.param
    yield request.param
    LOOP["kind"] = "asyncio"


def run(coro, timeout=30):
    async def main():
        await asyncio.wait_for(coro, timeout)
        await asyncio.sleep(0)
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not left, f"tasks left behind: {left}"
    if LOOP["kind"] == "uvloop":
        import uvloop
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    else:
        asyncio.run(main())


def cfg_of(*argv, data_dir=None):
    args = list(argv)
    if data_dir:
        args += ["--data-dir", str(data_dir)]
    return config.parse(args, environ={})


# ---- flags and etcd's start-up checks -----------------------------------------------------

def test_tls_flags_parse_with_etcds_defaults(pki):
    cfg = cfg_of()
    assert (cfg.cert_file, cfg.key_file, cfg.trusted_ca_file, cfg.client_cert_auth,
            cfg.auto_tls, cfg.peer_auto_tls, cfg.cipher_suites) == ("", "", "", False, False,
                                                                    False, [])
    cfg = cfg_of("--client-cert-auth", "--peer-cert-allowed-cn=m", "--cipher-suites",
                 "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_AES_128_GCM_SHA256")
    assert cfg.client_cert_auth and cfg.peer_cert_allowed_cn == "m"
    assert cfg.cipher_suites == ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                                 "TLS_AES_128_GCM_SHA256"]
    env = config.parse([], environ={"ETCD_PEER_CLIENT_CERT_AUTH": "true",
                                    "ETCD_TRUSTED_CA_FILE": pki.path("ca.pem")})
    assert env.peer_client_cert_auth and env.trusted_ca_file == pki.path("ca.pem")
    with pytest.raises(config.ConfigError, match="-auto-tls"):
        cfg_of("--auto-tls=maybe")
    for name in ("cert-file", "client-cert-auth", "peer-auto-tls", "cipher-suites"):
        assert f"--{name}" in config.usage()


def test_cipher_suite_names_map_to_openssl_and_unknown_is_etcds_error():
    assert tlsconfig.cipher_list(["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                                  "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305"]) == \
        ("ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305", False)
    assert tlsconfig.cipher_list(["TLS_AES_256_GCM_SHA384"]) == ("", True)
    with pytest.raises(TLSConfigError, match='^unexpected TLS cipher suite "TLS_FOO"$'):
        tlsconfig.cipher_list(["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_FOO"])
    # every TLS 1.2 name we map is a cipher OpenSSL knows (RC4/3DES may be compiled out)
    for name, openssl in tlsconfig.GO_CIPHER_SUITES.items():
        if openssl and "RC4" not in openssl and "DES" not in openssl:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(openssl)


def test_build_refuses_what_etcd_refuses(pki, tmp_path):
    cert, key = pki.cert("server")
    https = "https://127.0.0.1:2379"
    cases = [
        (["--listen-client-urls", https, "--advertise-client-urls", https],
         f"TLS key/cert (--cert-file, --key-file) must be provided for client url {https} "
         f"with HTTPS scheme"),
        (["--listen-peer-urls", "https://127.0.0.1:2380", "--initial-advertise-peer-urls",
          "https://127.0.0.1:2380", "--initial-cluster", "default=https://127.0.0.1:2380"],
         "cannot listen on TLS for 127.0.0.1:2380: KeyFile and CertFile are not presented"),
        (["--cipher-suites", "NOPE"], 'unexpected TLS cipher suite "NOPE"'),
        (["--peer-cert-allowed-cn", "a", "--peer-cert-allowed-hostname", "b"],
         'AllowedCN and AllowedHostname are mutually exclusive (cn="a", hostname="b")'),
        (["--listen-client-urls", https, "--advertise-client-urls", https, "--cert-file", cert],
         f"KeyFile and CertFile must both be present[key: , cert: {cert}]"),
        (["--listen-client-urls", https, "--advertise-client-urls", https, "--cert-file", cert,
          "--key-file", key, "--grpc-transport", "grpcio"],
         "--grpc-transport grpcio does not serve TLS"),
        (["--listen-client-urls", https, "--advertise-client-urls", https, "--cert-file", cert,
          "--key-file", key, "--trusted-ca-file", str(tmp_path / "missing.pem")],
         f"open {tmp_path / 'missing.pem'}: no such file or directory"),
    ]
    for argv, message in cases:
        with pytest.raises(TLSConfigError) as exc:
            tlsconfig.build(cfg_of(*argv, data_dir=tmp_path / "d"))
        assert message in str(exc.value), argv


def test_server_contexts_follow_etcds_server_config(pki, tmp_path):
    https = "https://127.0.0.1:2379"
    base = ["--listen-client-urls", https, "--advertise-client-urls", https,
            "--cert-file", pki.path("server.pem"), "--key-file", pki.path("server-key.pem")]
    tls = tlsconfig.build(cfg_of(*base, data_dir=tmp_path))
    assert tls.client_server.verify_mode == ssl.CERT_NONE
    assert tls.client_server.minimum_version == ssl.TLSVersion.TLSv1_2
    assert tls.peer_server is None and tls.client_check is None
    # a trusted CA alone already asks for (and verifies) client certificates, as etcd
    tls = tlsconfig.build(cfg_of(*base, "--trusted-ca-file", pki.path("ca.pem"),
                                 data_dir=tmp_path))
    assert tls.client_server.verify_mode == ssl.CERT_REQUIRED
    assert not tls.client.client_cert_auth
    tls = tlsconfig.build(cfg_of(*base, "--client-cert-auth", "--client-cert-allowed-hostname",
                                 "localhost", data_dir=tmp_path))
    assert tls.client_server.verify_mode == ssl.CERT_REQUIRED and tls.client.client_cert_auth
    assert tls.client_check is not None


def test_auto_tls_writes_a_self_signed_certificate_once(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="fastkv.tls")
    urls = "https://127.0.0.1:2379,https://localhost:12379"
    argv = ["--listen-client-urls", urls, "--advertise-client-urls", urls, "--auto-tls",
            "--listen-peer-urls", "https://127.0.0.1:2380", "--initial-advertise-peer-urls",
            "https://127.0.0.1:2380", "--initial-cluster", "default=https://127.0.0.1:2380",
            "--peer-auto-tls", "--peer-client-cert-auth"]
    tls = tlsconfig.build(cfg_of(*argv, data_dir=tmp_path))
    client_dir = tmp_path / "fixtures" / "client"
    assert tls.client.cert_file == str(client_dir / "cert.pem") and tls.client.self_cert
    assert stat.S_IMODE(os.stat(client_dir / "key.pem").st_mode) == 0o600
    cert = x509.load_pem_x509_certificate((client_dir / "cert.pem").read_bytes())
    assert cert.subject.rfc4514_string() == "O=etcd"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(i) for i in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert cert.public_key().curve.name == "secp521r1"
    # peers: etcd replaces the peer settings (no client cert auth), dialers skip verification
    assert tls.peer.self_cert and not tls.peer.client_cert_auth
    assert tls.peer_server.verify_mode == ssl.CERT_NONE
    assert tls.peer_client.verify_mode == ssl.CERT_NONE
    before = (client_dir / "cert.pem").read_bytes()
    tlsconfig.build(cfg_of(*argv, data_dir=tmp_path))
    assert (client_dir / "cert.pem").read_bytes() == before     # reused, as etcd
    assert caplog.text.count("created cert file") == 2            # client and peer, once


def test_verify_hostname_as_go(pki):
    cert = x509.load_pem_x509_certificate(open(pki.path("server.pem"), "rb").read())
    assert tlsconfig.verify_hostname(cert, "127.0.0.1") is None
    assert tlsconfig.verify_hostname(cert, "LOCALHOST") is None
    assert tlsconfig.verify_hostname(cert, "10.0.0.1") == \
        "x509: certificate is valid for 127.0.0.1, not 10.0.0.1"
    assert tlsconfig.verify_hostname(cert, "example.com") == \
        "x509: certificate is valid for localhost, not example.com"
    assert tlsconfig._match_hostname("*.example.com", "a.example.com")
    assert not tlsconfig._match_hostname("*.example.com", "a.b.example.com")


# ---- peer_cn: the verified client certificate's CN, as the adapters expose it -------------------

class _StubServer:
    cfg = types.SimpleNamespace(max_request_bytes=1 << 20)
    grpc_methods = None
    auth = types.SimpleNamespace(enabled=False)   # the HTTP layer asks it (CN refusal)


def test_peer_cn_reaches_requests_and_grpc_calls(pki, loop_kind):
    """HttpProtocol.peer_cn, the _Request's and a gRPC CallContext's peer_cn: the CN of a
    verified client certificate; None without TLS or without a verified certificate."""
    async def main():
        loop = asyncio.get_running_loop()
        protos: list[HttpProtocol] = []

        def factory():
            p = HttpProtocol(_StubServer(), loop)
            protos.append(p)
            return p

        info = TLSInfo(cert_file=pki.path("server.pem"), key_file=pki.path("server-key.pem"),
                       trusted_ca_file=pki.path("ca.pem"), client_cert_auth=True)
        lst = await start_tls_server(factory, "127.0.0.1", 0, info.server_context(
            tlsconfig.CLIENT_ALPN))
        no_auth = await start_tls_server(factory, "127.0.0.1", 0, TLSInfo(
            cert_file=pki.path("server.pem"), key_file=pki.path("server-key.pem")).server_context())
        plain = await loop.create_server(factory, "127.0.0.1", 0)
        try:
            async def open_and_wait(port, ctx):
                n = len(protos)
                r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
                # headers complete, body not yet: the request object exists
                w.write(b"POST /v3/kv/range HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n")
                await w.drain()
                for _ in range(200):
                    if len(protos) > n and protos[n].req is not None:
                        return protos[n], w
                    await asyncio.sleep(0.01)
                raise AssertionError("no request")

            port = lst.sockets[0].getsockname()[1]
            proto, w = await open_and_wait(port, pki.client_context("client"))
            assert proto.peer_cn == "root" and proto.req.peer_cn == "root"
            stream = types.SimpleNamespace(conn=types.SimpleNamespace(protocol=proto))
            assert CallContext(stream, ()).peer_cn == "root"
            w.close()
            proto, w = await open_and_wait(port, pki.client_context("intruder"))
            assert proto.req.peer_cn == "intruder"
            w.close()
            # TLS without client certificates asked for, and plaintext: None
            proto, w = await open_and_wait(no_auth.sockets[0].getsockname()[1],
                                           pki.client_context("client"))
            assert proto.peer_cn is None and proto.req.peer_cn is None
            w.close()
            proto, w = await open_and_wait(plain.sockets[0].getsockname()[1], None)
            assert proto.peer_cn is None and proto.req.peer_cn is None
            stream = types.SimpleNamespace(conn=types.SimpleNamespace(protocol=proto))
            assert CallContext(stream, ()).peer_cn is None
            w.close()
            await asyncio.sleep(0.05)
        finally:
            for s in (lst, no_auth, plain):
                s.close()
                await s.wait_closed()
            for p in protos:
                if p.transport is not None:
                    p.transport.close()
            await asyncio.sleep(0.05)
    run(main())


def test_tls_listener_logs_refusals_in_one_line(pki, loop_kind, caplog):
    caplog.set_level(logging.INFO, logger="fastkv.tls")

    async def main():
        info = TLSInfo(cert_file=pki.path("server.pem"), key_file=pki.path("server-key.pem"),
                       trusted_ca_file=pki.path("ca.pem"), client_cert_auth=True)
        lst = await start_tls_server(asyncio.Protocol, "127.0.0.1", 0, info.server_context())
        port = lst.sockets[0].getsockname()[1]
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await r.read() == b""
            w.close()
            for cert in (None, "wrongca", "expired"):
                with contextlib.suppress(ssl.SSLError, OSError):
                    r, w = await asyncio.open_connection("127.0.0.1", port,
                                                         ssl=pki.client_context(cert))
                    w.write(b"x")
                    assert await r.read() == b""
                    w.close()
            for _ in range(100):
                if caplog.text.count("rejected connection") >= 4:
                    break
                await asyncio.sleep(0.02)
        finally:
            lst.close()
            await lst.wait_closed()
    run(main())
    lines = [r.getMessage() for r in caplog.records if "rejected connection" in r.getMessage()]
    assert len(lines) == 4, lines
    text = "\n".join(lines)
    for reason in ("tls: first record does not look like a TLS handshake",
                   "tls: client didn't provide a certificate",
                   "x509: certificate signed by unknown authority",
                   "x509: certificate has expired or is not yet valid"):
        assert reason in text
    assert all(r.exc_info is None for r in caplog.records)


# ---- the peer transport over TLS ---------------------------------------------------------------

def peer_tls(pki, cert, allowed_cn="") -> ServerTLS:
    c, k = pki.cert(cert)
    info = TLSInfo(cert_file=c, key_file=k, trusted_ca_file=pki.path("ca.pem"),
                   client_cert_auth=True, allowed_cn=allowed_cn)
    return ServerTLS(client=TLSInfo(), peer=info, peer_server=info.server_context(),
                     peer_client=info.client_context())


class Member:
    def __init__(self, mid, tmp_path, tls: ServerTLS):
        self.id, self.got = mid, []
        # a directory of its own (not named by id(self): a freed Member's id comes back)
        snap = tempfile.mkdtemp(prefix=f"snap-{mid:x}-", dir=tmp_path)
        self.t = PeerTransport(mid, CID, self.got.append, snap_dir=str(snap),
                               snapshot_path=lambda _i: None, ssl=tls.peer_server,
                               client_ssl=tls.peer_client, tls_check=tls.peer_check)

    @property
    def url(self):
        host, port = self.t.listen_addresses[0]
        return f"https://{host}:{port}"


@contextlib.asynccontextmanager
async def pair(tmp_path, a_tls, b_tls):
    a, b = Member(A, tmp_path, a_tls), Member(B, tmp_path, b_tls)
    try:
        await a.t.start(["https://127.0.0.1:0"])
        await b.t.start(["https://127.0.0.1:0"])
        a.t.add_peer(B, [b.url])
        b.t.add_peer(A, [a.url])
        yield a, b
    finally:
        await a.t.stop()
        await b.t.stop()


def hb(frm, to):
    return Message(MSG_HEARTBEAT, to=to, frm=frm, term=1)


async def until(pred, what, timeout=5.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def test_peers_with_good_certificates_talk(pki, tmp_path, loop_kind):
    async def main():
        async with pair(tmp_path, peer_tls(pki, "server", "fastkv-server"),
                        peer_tls(pki, "server", "fastkv-server")) as (a, b):
            a.t.send([hb(A, B)])
            b.t.send([hb(B, A)])
            await until(lambda: any(m.type == MSG_HEARTBEAT for m in a.got)
                        and any(m.type == MSG_HEARTBEAT for m in b.got), "heartbeats")

            async def members(_payload):
                return "the members"

            b.t.register("members", members, public=True)
            cid, value = await fetch_cluster([b.url], client_ssl=a.t.client_ssl,
                                             tls_check=peer_tls(pki, "server").peer_check)
            assert (cid, value) == (CID, "the members")
    run(main())


@pytest.mark.parametrize("cert,reason", [
    ("wrongca", "x509: certificate signed by unknown authority"),
    ("expired", "x509: certificate has expired or is not yet valid"),
    ("intruder", "client certificate authentication failed"),
])
def test_peers_without_a_valid_certificate_cannot_send_raft_messages(
        pki, tmp_path, loop_kind, caplog, cert, reason):
    """B's certificate is bad (another CA, expired, a CN A does not allow): nothing B sends
    reaches A, A logs the refusal, B reports A unreachable; B cannot fetch the cluster."""
    caplog.set_level(logging.INFO)

    async def main():
        async with pair(tmp_path, peer_tls(pki, "server", "fastkv-server"),
                        peer_tls(pki, cert, "fastkv-server")) as (a, b):
            for _ in range(30):
                b.t.send([hb(B, A)])
                await asyncio.sleep(0.02)
            await until(lambda: any(m.type == MSG_UNREACHABLE for m in b.got), "unreachable")
            await until(lambda: reason in caplog.text, "the refusal logged")
            assert not any(m.type == MSG_HEARTBEAT for m in a.got)
            with pytest.raises(OSError):
                await fetch_cluster([a.url], client_ssl=b.t.client_ssl, timeout=2,
                                    tls_check=peer_tls(pki, cert).peer_check)
    run(main())
    assert f'rejected connection from "127.0.0.1:' in caplog.text


def test_peer_listener_refuses_a_member_without_a_certificate(pki, tmp_path, loop_kind):
    """A raw member speaking the peer protocol over TLS: with the right certificate its
    heartbeat arrives; without one (or in plaintext) nothing does."""
    from fastkv.raft import _peercodec as codec
    from fastkv.raft.transport import HELLO, MAGIC, PROTOCOL_VERSION

    frames = (codec.encode_frame(codec.FRAME_HELLO, HELLO.pack(MAGIC, PROTOCOL_VERSION, CID, B, A))
              + codec.encode_frame(codec.FRAME_MSGS, codec.encode_messages([hb(B, A)])))

    async def main():
        async with pair(tmp_path, peer_tls(pki, "server"), peer_tls(pki, "server")) as (a, _b):
            host, port = a.t.listen_addresses[0]
            for ctx in (None, pki.client_context(None)):   # plaintext, no certificate
                with contextlib.suppress(ssl.SSLError, OSError):
                    r, w = await asyncio.open_connection(host, port, ssl=ctx)
                    w.write(frames)
                    await asyncio.wait_for(r.read(), 5)
                    w.close()
            await asyncio.sleep(0.1)
            assert a.got == []
            r, w = await asyncio.open_connection(host, port, ssl=pki.client_context("server"))
            w.write(frames)
            await until(lambda: any(m.type == MSG_HEARTBEAT for m in a.got), "the heartbeat")
            w.close()
    run(main())


def test_dialer_checks_the_listeners_cn_too(pki, tmp_path, loop_kind):
    """etcd's VerifyPeerCertificate runs on both ends: a member whose server certificate's
    CN is not allowed is refused by the dialer (HandshakeError)."""
    async def main():
        async with pair(tmp_path, peer_tls(pki, "intruder"),
                        peer_tls(pki, "server", "fastkv-server")) as (a, b):
            from fastkv.raft.transport import HELLO, MAGIC, PROTOCOL_VERSION, _dial
            hello = HELLO.pack(MAGIC, PROTOCOL_VERSION, CID, B, A)
            with pytest.raises(HandshakeError, match="client certificate authentication failed"):
                await _dial([a.url], hello, max_frame=1 << 20, timeout=2,
                            client_ssl=b.t.client_ssl, tls_check=b.t.tls_check)
    run(main())


@pytest.mark.parametrize("flag", ["allowed-hostname", "crl"])
def test_client_certificate_checks_run_before_the_protocol_sees_data(
        pki, tmp_path, loop_kind, caplog, flag):
    """--client-cert-allowed-hostname (the "client" certificate is not valid for localhost)
    and --client-crl-file (revoking the "client" certificate): refused after the
    handshake, before the connection's protocol is made; the "server" certificate (also
    good for client authentication) is served."""
    caplog.set_level(logging.INFO, logger="fastkv.tls")
    https = "https://127.0.0.1:2379"
    check = (["--client-cert-allowed-hostname", "localhost"] if flag == "allowed-hostname"
             else ["--client-crl-file", pki.write_crl(["client", "expired"])])
    tls = tlsconfig.build(cfg_of(
        "--listen-client-urls", https, "--advertise-client-urls", https,
        "--cert-file", pki.path("server.pem"), "--key-file", pki.path("server-key.pem"),
        "--trusted-ca-file", pki.path("ca.pem"), *check, data_dir=tmp_path))

    class Echo(asyncio.Protocol):
        made = 0

        def connection_made(self, transport):
            Echo.made += 1
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

    async def main():
        lst = await start_tls_server(Echo, "127.0.0.1", 0, tls.client_server,
                                     check=tls.client_check)
        port = lst.sockets[0].getsockname()[1]
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port,
                                                 ssl=pki.client_context("client"))
            w.write(b"ping")
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                assert await r.read() == b""
            w.close()
            assert Echo.made == 0
            r, w = await asyncio.open_connection("127.0.0.1", port,
                                                 ssl=pki.client_context("server"))
            w.write(b"ping")
            assert await r.readexactly(4) == b"ping"
            w.close()
            assert Echo.made == 1
            await asyncio.sleep(0.05)
        finally:
            lst.close()
            await lst.wait_closed()
    Echo.made = 0
    run(main())
    assert ("client certificate authentication failed" if flag == "allowed-hostname"
            else "revoked") in caplog.text


def test_peer_certificate_sans_must_name_the_members_address(pki, tmp_path, loop_kind, caplog):
    """etcd's checkSAN on peer listeners: B's certificate names only 10.9.9.9 but B
    connects from 127.0.0.1: refused (unless
    --experimental-peer-skip-client-san-verification)."""
    caplog.set_level(logging.INFO)
    leaf = pki.ca.issue_cert("10.9.9.9", common_name="fastkv-server")
    c, k = str(tmp_path / "far.pem"), str(tmp_path / "far-key.pem")
    leaf.cert_chain_pems[0].write_to_path(c)
    leaf.private_key_pem.write_to_path(k)
    far = TLSInfo(cert_file=c, key_file=k, trusted_ca_file=pki.path("ca.pem"),
                  client_cert_auth=True)
    b_tls = ServerTLS(client=TLSInfo(), peer=far, peer_server=peer_tls(pki, "server").peer_server,
                      peer_client=far.client_context())

    async def main(skip):
        a_tls = peer_tls(pki, "server")
        a_tls.peer.skip_client_san_verify = skip
        async with pair(tmp_path, a_tls, b_tls) as (a, b):
            for _ in range(100):
                b.t.send([hb(B, A)])
                await asyncio.sleep(0.02)
                if a.got:
                    break
            return [m for m in a.got if m.type == MSG_HEARTBEAT]

    got = []

    async def both():
        got.append(await main(False))
        got.append(await main(True))
    run(both())
    assert got[0] == [] and got[1], got
    assert 'x509: certificate is valid for 10.9.9.9, not 127.0.0.1' in caplog.text
