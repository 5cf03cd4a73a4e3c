"""etcd 3.4's v2 proxy: ``fastkv --proxy on|readonly`` (etcdmain startProxy, proxy/httpproxy).

Usage::

    fastkv --proxy on --data-dir /var/lib/fastkv-proxy \\
        --listen-client-urls http://127.0.0.1:2379 \\
        --initial-cluster m0=http://10.0.1.10:2380,m1=http://10.0.1.11:2380

The proxy joins no cluster and stores no keys. It asks the members' peer URLs for the
member list (at start, then every --proxy-refresh-interval ms; every second while it knows
no endpoint) and forwards each HTTP/1.1 request it gets on --listen-client-urls to one of
the members' client URLs, streaming the answer back (v2 watches included). A member that
cannot be reached is skipped for --proxy-failure-wait ms and the request goes to the next
one; with none left the client gets 502, with none known 503 (etcd's JSON messages).
--proxy readonly forwards only GET and answers anything else 501 Not Implemented.
--proxy-dial-timeout / -read-timeout / -write-timeout (ms, 0: none) bound each connect,
read and write towards a member: keep the read timeout 0 when clients watch.
The cluster's peer URLs are kept in <data-dir>/proxy/cluster ({"PeerURLs": [...]}); when
that file exists a restarted proxy uses it and ignores --initial-cluster / discovery.
The proxy also answers GET /v2/config/local/proxy ({"endpoints": [...]}) and /metrics
(etcd_proxy_*) itself. Client TLS: --cert-file/--key-file for https:// listen URLs;
towards https members it presents the client (else the peer) certificate.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import http
import json
import logging
import os
import random
import signal
import ssl
import sys
import time
from email.utils import formatdate
from urllib.parse import quote, unquote, urlsplit

import httptools

from fastkv.config import Config

log = logging.getLogger("fastkv.proxy")

__all__ = ["run_proxy", "V2Proxy", "Director", "read_cluster_file", "write_cluster_file",
           "cluster_file_path"]

# etcd's defaultRefreshInterval: at this interval or above, a proxy that knows no endpoint
# asks again every second.
DEFAULT_REFRESH_INTERVAL = 30.0
NO_ENDPOINT_REFRESH = 1.0
FETCH_TIMEOUT = 10.0            # etcd's GetClusterFromRemotePeers: 10 s per peer URL
MAX_IDLE_PER_HOST = 128         # httpproxy.DefaultMaxIdleConnsPerHost
MAX_PIPELINED = 16              # requests parsed ahead of the one being answered
MAX_PIPELINED_BYTES = 4 << 20   # ... and their bodies' bytes
MAX_BODY = 32 << 20             # ours: etcd reads any body into memory
HEAD_LIMIT = 1 << 20            # longest response head (and chunk-size line) from a member
PIECE = 64 << 10

# httpproxy's singleHopHeaders plus what Go's httputil.ReverseProxy also removes
# (Proxy-Connection, Trailer); the headers a Connection header names go too. Expect is
# ours: the proxy answers "100 Continue" itself and sends the whole body at once.
HOP_BY_HOP = frozenset(("connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "te", "trailers", "trailer", "transfer-encoding", "upgrade",
                        "proxy-connection"))

# embed.WrapCORS with etcd's default --cors "*", as Header.Add puts them (sorted later)
CORS = (("Access-Control-Allow-Methods", "POST, GET, OPTIONS, PUT, DELETE"),
        ("Access-Control-Allow-Origin", "*"),
        ("Access-Control-Allow-Headers", "accept, content-type, authorization"))

CONFIG_PATH = "/v2/config/local/proxy"
METRICS_PATH = "/metrics"
BAD_REQUEST = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
               b"Connection: close\r\n\r\n400 Bad Request")
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
GO_USER_AGENT = "Go-http-client/1.1"


class ProxyStartError(Exception):
    """The proxy cannot start (the message says why)."""


class UpstreamError(Exception):
    """A member could not be reached or did not answer (the endpoint is marked failed)."""


class _ClientGone(Exception):
    """The client closed its connection while its request was in flight."""


# --------------------------------------------------------------------------- cluster file

def cluster_file_path(data_dir: str) -> str:
    return os.path.join(data_dir, "proxy", "cluster")


def read_cluster_file(data_dir: str) -> list[str] | None:
    """The peer URLs a proxy kept in <data-dir>/proxy/cluster; None if there is no such
    file. Raises ValueError if it does not decode (etcd refuses to start then)."""
    path = cluster_file_path(data_dir)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"cannot decode the cluster file {path}: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"cannot decode the cluster file {path}: not a JSON object")
    # Go's json.Unmarshal into struct{ PeerURLs []string }: the key matches case-insensitively
    urls: object = None
    for key, value in doc.items():
        if key.lower() == "peerurls":
            urls = value
    if urls is None:
        return []
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise ValueError(f"cannot decode the cluster file {path}: PeerURLs is not a list of "
                         f"strings")
    return urls


def write_cluster_file(data_dir: str, peer_urls: list[str]) -> None:
    """etcd's way: write and fsync cluster.bak (mode 0600), then rename it over cluster."""
    path = cluster_file_path(data_dir)
    tmp = path + ".bak"
    data = json.dumps({"PeerURLs": list(peer_urls)}, separators=(",", ":")).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- endpoints

class Endpoint:
    """One member client URL the proxy forwards to (httpproxy's endpoint)."""

    __slots__ = ("url", "scheme", "host", "port", "available")

    def __init__(self, url: str):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"unsupported client URL {url!r}")
        self.url = url
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.available = True

    @property
    def key(self) -> tuple:
        return (self.scheme, self.host, self.port)

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __repr__(self) -> str:
        return f"Endpoint({self.url!r}, available={self.available})"


class Director:
    """httpproxy's director: the endpoints in a shuffled order, each available unless it
    failed less than ``failure_wait`` seconds ago. A refresh replaces the list (every
    endpoint available again), as etcd's does."""

    def __init__(self, failure_wait: float, rng: random.Random | None = None):
        self.failure_wait = failure_wait
        self.rng = rng or random.Random()
        self.eps: list[Endpoint] = []

    def refresh(self, urls: list[str]) -> None:
        eps = []
        for u in urls:
            try:
                eps.append(Endpoint(u))
            except ValueError as exc:
                log.info("proxy: upstream URL invalid: %s", exc)
        self.rng.shuffle(eps)   # so that proxies do not all stick to one member
        self.eps = eps

    def endpoints(self) -> list[Endpoint]:
        return [ep for ep in self.eps if ep.available]

    def failed(self, ep: Endpoint) -> None:
        if not ep.available:
            return
        ep.available = False
        log.info("proxy: marked endpoint %s unavailable", ep.url)
        asyncio.get_running_loop().call_later(self.failure_wait, self._revive, ep)

    @staticmethod
    def _revive(ep: Endpoint) -> None:
        ep.available = True
        log.info("proxy: marked endpoint %s available, to retest connectivity", ep.url)


# --------------------------------------------------------------------------- HTTP helpers

_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                   b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def canonical_header(name: str) -> str:
    """Go's textproto.CanonicalMIMEHeaderKey ("x-etcd-index" -> "X-Etcd-Index"); a name
    with bytes outside a token is left as it is."""
    raw = name.encode("latin-1", "replace")
    if not raw or any(c not in _TOKEN for c in raw):
        return name
    return "-".join(p[:1].upper() + p[1:].lower() for p in name.split("-"))


def clean_path(p: str) -> str:
    """Go's net/http cleanPath: path.Clean of a rooted path, keeping a trailing slash."""
    if not p:
        return "/"
    if p[0] != "/":
        p = "/" + p
    out: list[str] = []
    for seg in p.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg)
    np = "/" + "/".join(out)
    if p.endswith("/") and np != "/":
        np += "/"
    return np


def hop_by_hop(headers: list[tuple[str, str]]) -> set[str]:
    """Lower-case names to drop: the fixed list and those a Connection header names."""
    drop = set(HOP_BY_HOP)
    for name, value in headers:
        if name.lower() == "connection":
            drop.update(t.strip().lower() for t in value.split(",") if t.strip())
    return drop


def _status_line(status: int, reason: str = "") -> bytes:
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = reason or f"status code {status}"
    return f"HTTP/1.1 {status} {reason}\r\n".encode("latin-1")


def _go_date() -> str:
    return formatdate(usegmt=True)


def response_head(status: int, headers: list[tuple[str, str]], *, content_length: int | None,
                  chunked: bool = False, connection: str = "", reason: str = "",
                  sniffed_type: str = "") -> bytes:
    """A response head as Go's server writes it: the handler's headers sorted by name,
    then Date (unless given), Content-Length, Content-Type (when Go sniffed it),
    Connection, Transfer-Encoding."""
    hs = sorted(headers, key=lambda kv: kv[0])   # stable: values keep their order
    lines = [_status_line(status, reason)]
    lines.extend(f"{k}: {v}\r\n".encode("latin-1", "replace") for k, v in hs)
    if not any(k == "Date" for k, _ in hs):
        lines.append(f"Date: {_go_date()}\r\n".encode())
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}\r\n".encode())
    if sniffed_type:
        lines.append(f"Content-Type: {sniffed_type}\r\n".encode())
    if connection:
        lines.append(f"Connection: {connection}\r\n".encode())
    if chunked:
        lines.append(b"Transfer-Encoding: chunked\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


@dataclasses.dataclass
class Request:
    method: str
    target: str               # as sent: origin-form (or absolute-form)
    version: str              # "1.0" / "1.1"
    headers: list             # [(canonical name, value)]
    body: bytes
    keep_alive: bool
    too_large: bool = False

    def connection_header(self, close: bool) -> str:
        """What Go's server says in Connection: "close" to an HTTP/1.1 client it leaves,
        "keep-alive" to an HTTP/1.0 client it keeps."""
        if self.version == "1.1":
            return "close" if close else ""
        return "" if close else "keep-alive"

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


class _RequestParser:
    """httptools callbacks: complete requests land in ``done``."""

    def __init__(self, conn: "_ClientConnection"):
        self.conn = conn
        self.parser = httptools.HttpRequestParser(self)
        self.done: collections.deque[Request] = collections.deque()
        self._url = bytearray()
        self._headers: list = []
        self._body = bytearray()
        self._too_large = False

    def feed(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_begin(self) -> None:
        self._url = bytearray()
        self._headers = []
        self._body = bytearray()
        self._too_large = False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((canonical_header(name.decode("latin-1")),
                              value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        expect = any(k == "Expect" and v.lower() == "100-continue" for k, v in self._headers)
        if (expect and self.parser.get_http_version() == "1.1" and not self.done
                and self.conn.idle):
            # Go's server says "100 Continue" when the handler reads the body; we read it
            # at once, but never into the middle of another request's answer
            self.conn.writer.write(CONTINUE)

    def on_body(self, body: bytes) -> None:
        if self._too_large:
            return
        if len(self._body) + len(body) > MAX_BODY:
            self._too_large = True
            self._body = bytearray()
            return
        self._body += body

    def on_message_complete(self) -> None:
        p = self.parser
        self.done.append(Request(
            method=p.get_method().decode("latin-1"), target=self._url.decode("latin-1"),
            version=p.get_http_version(), headers=self._headers, body=bytes(self._body),
            keep_alive=p.should_keep_alive() and not self._too_large,
            too_large=self._too_large))
        self.conn.wake.set()


class _ClientConnection:
    """One client connection: a task parses requests ahead (pipelining, bounded), the
    connection's handler answers them in order. ``gone`` is set when the client closed."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.parser = _RequestParser(self)
        self.wake = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()
        self.gone = asyncio.Event()
        self.ended = False          # no more requests will come (EOF, bad input, upgrade)
        self.bad = False
        self.idle = True            # no request is being answered
        peer = writer.get_extra_info("peername")
        self.client_ip = peer[0] if isinstance(peer, tuple) and peer else None

    async def feed(self) -> None:
        try:
            while True:
                while (len(self.parser.done) >= MAX_PIPELINED or sum(
                        len(r.body) for r in self.parser.done) >= MAX_PIPELINED_BYTES):
                    self.room.clear()
                    await self.room.wait()
                data = await self.reader.read(PIECE)
                if not data:
                    self.gone.set()
                    return
                try:
                    self.parser.feed(data)
                except httptools.HttpParserUpgrade:
                    return      # serve what was parsed, then close
                except httptools.HttpParserError:
                    self.bad = True
                    return
        except (OSError, asyncio.IncompleteReadError):
            self.gone.set()
        finally:
            self.ended = True
            self.wake.set()

    async def next_request(self) -> Request | None:
        while True:
            if self.parser.done:
                req = self.parser.done.popleft()
                self.room.set()
                return req
            if self.ended:
                if self.bad and not self.gone.is_set():
                    self.writer.write(BAD_REQUEST)
                return None
            self.wake.clear()
            await self.wake.wait()


# --------------------------------------------------------------------------- upstream

class _Upstream:
    """One connection to a member's client URL."""

    __slots__ = ("reader", "writer", "reused", "got_bytes")

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer
        self.reused = False
        self.got_bytes = False

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception:   # noqa: BLE001 - already broken
            pass


@dataclasses.dataclass
class _Response:
    status: int
    reason: str
    headers: list            # [(canonical name, value)], hop-by-hop removed
    framing: str             # "none" | "length" | "chunked" | "eof"
    length: int
    reusable: bool
    conn: _Upstream


async def _timed(aw, timeout: float):
    if timeout <= 0:
        return await aw
    async with asyncio.timeout(timeout):
        return await aw


def _parse_head(raw: bytes) -> tuple[int, str, str, list[tuple[str, str]]]:
    lines = raw.decode("latin-1").split("\r\n")
    status_line = lines[0]
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise ValueError(f"malformed HTTP response {status_line!r}")
    version = parts[0][5:]
    status = int(parts[1])
    if not 100 <= status <= 999:
        raise ValueError(f"malformed HTTP status code {parts[1]!r}")
    reason = parts[2] if len(parts) > 2 else ""
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ValueError(f"malformed MIME header line: {line}")
        headers.append((canonical_header(name), value.strip()))
    return status, reason, version, headers


# --------------------------------------------------------------------------- the proxy

class V2Proxy:
    """The proxy's state: endpoints, idle member connections, metrics, listeners."""

    def __init__(self, cfg: Config, peer_urls: list[str], *, fetch=None):
        self.cfg = cfg
        self.readonly = cfg.proxy == "readonly"
        self.peer_urls = list(peer_urls)
        self.dir = os.path.join(cfg.data_dir, "proxy")
        self.director = Director(cfg.proxy_failure_wait / 1000.0)
        self.refresh_interval = cfg.proxy_refresh_interval / 1000.0
        self.dial_timeout = cfg.proxy_dial_timeout / 1000.0
        self.read_timeout = cfg.proxy_read_timeout / 1000.0
        self.write_timeout = cfg.proxy_write_timeout / 1000.0
        self._fetch = fetch or self._fetch_client_urls
        self._idle: dict[tuple, list[_Upstream]] = collections.defaultdict(list)
        self._listeners: list = []
        self._tasks: set[asyncio.Task] = set()
        self._refresher: asyncio.Task | None = None
        self._found_logged = False
        self.upstream_ssl: ssl.SSLContext | None = None
        self.peer_ssl: ssl.SSLContext | None = None
        self.peer_check = None
        self.listen_ssl: ssl.SSLContext | None = None
        self.listen_check = None
        # etcd_proxy_* (proxy/httpproxy/metrics.go)
        from fastkv.metrics import Histogram, exponential_buckets
        self._hist = lambda: Histogram(exponential_buckets(0.0005, 2, 13))
        self.m_requests: collections.Counter = collections.Counter()
        self.m_handled: collections.Counter = collections.Counter()
        self.m_dropped: collections.Counter = collections.Counter()
        self.m_duration: dict = {}

    # ---- start and stop -------------------------------------------------------------------

    def _setup_tls(self) -> None:
        from fastkv import tlsconfig
        cfg = self.cfg
        ciphers = tuple(cfg.cipher_suites or ())
        if ciphers:
            tlsconfig.cipher_list(ciphers)
        client = tlsconfig.TLSInfo(
            cert_file=cfg.cert_file, key_file=cfg.key_file, trusted_ca_file=cfg.trusted_ca_file,
            client_cert_auth=cfg.client_cert_auth, crl_file=cfg.client_crl_file,
            allowed_hostname=cfg.client_cert_allowed_hostname, cipher_suites=ciphers)
        peer = tlsconfig.TLSInfo(
            cert_file=cfg.peer_cert_file, key_file=cfg.peer_key_file,
            trusted_ca_file=cfg.peer_trusted_ca_file, client_cert_auth=cfg.peer_client_cert_auth,
            crl_file=cfg.peer_crl_file, allowed_cn=cfg.peer_cert_allowed_cn,
            allowed_hostname=cfg.peer_cert_allowed_hostname, cipher_suites=ciphers)
        # etcd: towards the members' client URLs the client TLS settings, or (the old proxy
        # behaviour) the peer ones; server certificates unchecked only with --auto-tls
        upstream = client if not client.empty() else peer
        self.upstream_ssl = dataclasses.replace(upstream, self_cert=cfg.auto_tls).client_context()
        if cfg.peer_auto_tls:
            if not peer.empty():
                log.warning("ignoring peer auto TLS since certs given")
            else:
                auto = tlsconfig.self_cert(os.path.join(cfg.data_dir, "fixtures", "peer"),
                                           [tlsconfig._host(u) for u in cfg.listen_peer_urls])
                peer = dataclasses.replace(auto, cipher_suites=ciphers)
        self.peer_ssl = peer.client_context()
        tls = tlsconfig.ServerTLS(client=client, peer=peer)
        self.peer_check = tls.peer_check
        https = [u for u in cfg.listen_client_urls + cfg.advertise_client_urls
                 if u.startswith("https://")]
        listener = client
        if cfg.auto_tls and https:
            hosts = [tlsconfig._host(u) for u in cfg.listen_client_urls + cfg.advertise_client_urls]
            listener = dataclasses.replace(
                tlsconfig.self_cert(os.path.join(self.dir, "clientCerts"), hosts),
                cipher_suites=ciphers)
        if any(u.startswith("https://") for u in cfg.listen_client_urls):
            if listener.empty():
                raise ProxyStartError(
                    "TLS key/cert (--cert-file, --key-file) must be provided for https "
                    "client URLs")
            self.listen_ssl = listener.server_context(["http/1.1"])
            self.listen_check = tlsconfig.ServerTLS(client=listener, peer=peer).client_check

    def _initial_peer_urls(self) -> None:
        """etcd: a cluster file from an earlier run wins over --initial-cluster/discovery."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        path = cluster_file_path(self.cfg.data_dir)
        kept = read_cluster_file(self.cfg.data_dir)
        if kept is not None:
            if self.cfg.discovery:
                log.warning("discovery token ignored since the proxy has already been "
                            "initialized. Valid cluster file found at %r", path)
            if self.cfg.discovery_srv:
                log.warning("DNS SRV discovery ignored since the proxy has already been "
                            "initialized. Valid cluster file found at %r", path)
            self.peer_urls = kept
            log.info("proxy: using peer urls %s from cluster file %r", kept, path)
        else:
            self.peer_urls = sorted(self.peer_urls)
            log.info("proxy: using peer urls %s", self.peer_urls)

    async def start(self) -> None:
        log.info("proxy: this proxy supports v2 API only!")
        from fastkv.tlsconfig import TLSConfigError
        try:
            self._setup_tls()
        except TLSConfigError as exc:
            raise ProxyStartError(str(exc)) from None
        try:
            self._initial_peer_urls()
        except OSError as exc:
            raise ProxyStartError(f"cannot use the data directory {self.dir}: "
                                  f"{exc.strerror or exc}") from None
        except ValueError as exc:
            raise ProxyStartError(str(exc)) from None
        # etcd's newDirector refreshes once before the listeners open
        self.director.refresh(await self._fetch())
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_loop(),
                                                                 name="proxy-refresh")
        for url in self.cfg.listen_client_urls:
            await self._listen(url)
            log.info("v2 proxy started listening on client requests on %r", url)

    async def _listen(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ProxyStartError(f"cannot listen on {url}: the proxy serves http:// and "
                                  f"https:// client URLs only")
        host, port = parts.hostname or "", parts.port
        try:
            if parts.scheme == "https":
                from fastkv.tlsserver import start_tls_server
                srv = await start_tls_server(self._stream_protocol, host, port, self.listen_ssl,
                                             check=self.listen_check)
            else:
                srv = await asyncio.start_server(self._serve, host, port, reuse_address=True,
                                                 limit=PIECE, backlog=1024)
        except OSError as exc:
            raise ProxyStartError(f"cannot listen on {url}: {exc.strerror or exc}") from None
        self._listeners.append(srv)

    def _stream_protocol(self):
        loop = asyncio.get_running_loop()
        return asyncio.StreamReaderProtocol(asyncio.StreamReader(limit=PIECE), self._serve,
                                            loop=loop)

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        for srv in self._listeners:
            srv.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for srv in self._listeners:
            try:
                await asyncio.wait_for(srv.wait_closed(), 5)
            except (TimeoutError, Exception):   # noqa: BLE001 - closing anyway
                pass
        self._listeners.clear()
        for conns in self._idle.values():
            for c in conns:
                c.close()
        self._idle.clear()
        if self._refresher is not None:
            await asyncio.gather(self._refresher, return_exceptions=True)

    # ---- the members -----------------------------------------------------------------------

    async def _fetch_client_urls(self) -> list[str]:
        """etcd's uf: the members' client URLs from the first peer URL that answers; the
        peer URLs into the cluster file. [] if no peer answers."""
        from fastkv.raft.transport import fetch_cluster
        try:
            _cid, members = await fetch_cluster(self.peer_urls, "members", timeout=FETCH_TIMEOUT,
                                                client_ssl=self.peer_ssl,
                                                tls_check=self.peer_check)
        except Exception as exc:   # noqa: BLE001 - any failure: no endpoints this round
            log.warning("proxy: could not retrieve cluster information from %s: %s",
                        self.peer_urls, exc)
            return []
        if not members:
            log.warning("proxy: failed to get raft cluster member(s) from the given URLs")
            return []
        client_urls = sorted(u for m in members for u in m[3])
        peer_urls = sorted(u for m in members for u in m[2])
        try:
            await asyncio.to_thread(write_cluster_file, self.cfg.data_dir, peer_urls)
        except OSError as exc:
            log.warning("proxy: error on writing urls %s", exc)
            return client_urls
        if peer_urls != self.peer_urls:
            log.info("proxy: updated peer urls in cluster file from %s to %s",
                     self.peer_urls, peer_urls)
        self.peer_urls = peer_urls
        return client_urls

    async def _refresh_loop(self) -> None:
        while True:
            eps = self.director.endpoints()
            interval = self.refresh_interval
            if interval >= DEFAULT_REFRESH_INTERVAL and not eps:
                interval = NO_ENDPOINT_REFRESH
            if eps and not self._found_logged:
                self._found_logged = True
                log.info("proxy: endpoints found %s", [e.url for e in eps])
            await asyncio.sleep(max(interval, 0.01))
            try:
                urls = await self._fetch()
            except Exception:   # noqa: BLE001 - a bug must not stop refreshing
                log.exception("proxy: refreshing the endpoints failed")
                urls = []
            self.director.refresh(urls)
            self._drop_idle_except({e.key for e in self.director.eps})

    def _drop_idle_except(self, keep: set) -> None:
        for key in [k for k in self._idle if k not in keep]:
            for c in self._idle.pop(key):
                c.close()

    # ---- serving a client ------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        conn = _ClientConnection(reader, writer)
        feeder = asyncio.get_running_loop().create_task(conn.feed())
        try:
            while True:
                req = await conn.next_request()
                if req is None:
                    break
                conn.idle = False
                keep = await self._handle(conn, req)
                conn.idle = True
                if not keep:
                    break
            if not writer.is_closing():
                await writer.drain()
        except (OSError, _ClientGone):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:   # noqa: BLE001 - one connection's bug must not kill the proxy
            log.exception("proxy: serving a client connection failed")
        finally:
            feeder.cancel()
            writer.close()
            self._tasks.discard(task)

    async def _send(self, conn: _ClientConnection, data: bytes) -> None:
        conn.writer.write(data)
        await conn.writer.drain()

    async def _simple(self, conn: _ClientConnection, req: Request, status: int,
                      headers: list, body: bytes = b"", sniffed_type: str = "") -> bool:
        """A whole answer of the proxy's own. Go sets Content-Length for it, except for a
        HEAD request the handler wrote nothing to (and never sends a HEAD's body)."""
        close = not req.keep_alive
        length: int | None = len(body)
        if req.method == "HEAD":
            length = len(body) or None
            body = b""
        head = response_head(status, headers, content_length=length,
                             connection=req.connection_header(close), sniffed_type=sniffed_type)
        await self._send(conn, head + body)
        return not close

    async def _handle(self, conn: _ClientConnection, req: Request) -> bool:
        """One request through etcd's handler chain: the outer ServeMux (clean paths,
        /metrics), readonly, CORS, /v2/config/local/proxy, the reverse proxy."""
        if req.too_large:
            body = json.dumps({"message": f"httpproxy: request body larger than {MAX_BODY} "
                                          f"bytes"}).encode()
            req.keep_alive = False
            return await self._simple(conn, req, 413,
                                      [("Content-Type", "application/json")], body)
        target = req.target
        if target == "*":   # Go's ServeMux: "OPTIONS *" and the like
            req.keep_alive = req.keep_alive and req.version != "1.1"
            return await self._simple(conn, req, 400, [])
        if not target.startswith("/") and "://" in target:   # absolute-form
            parts = urlsplit(target)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        raw_path, _, query = target.partition("?")
        path = unquote(raw_path)
        if req.method != "CONNECT":
            cleaned = clean_path(path)
            if cleaned != path:
                return await self._redirect(conn, req, cleaned, query)
        if path == METRICS_PATH:
            return await self._simple(conn, req, 200, [
                ("Content-Type", "text/plain; version=0.0.4; charset=utf-8")],
                self.render_metrics())
        if self.readonly and req.method != "GET":
            return await self._simple(conn, req, 501, [])
        if req.method == "OPTIONS":
            return await self._simple(conn, req, 200, list(CORS))
        if path == CONFIG_PATH:
            if req.method != "GET":
                return await self._simple(conn, req, 405, list(CORS) + [
                    ("Allow", "GET"), ("Content-Type", "text/plain; charset=utf-8"),
                    ("X-Content-Type-Options", "nosniff")], b"Method Not Allowed\n")
            body = json.dumps({"endpoints": [e.url for e in self.director.endpoints()]},
                              separators=(",", ":")).encode() + b"\n"
            return await self._simple(conn, req, 200, list(CORS), body,
                                      sniffed_type="text/plain; charset=utf-8")
        work = asyncio.get_running_loop().create_task(self._forward(conn, req, target))
        gone = asyncio.get_running_loop().create_task(conn.gone.wait())
        try:
            await asyncio.wait((work, gone), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:   # the proxy is closing: the forwarding goes too
            work.cancel()
            raise
        finally:
            gone.cancel()
        if not work.done():
            log.info("proxy: client %s closed request prematurely", conn.client_ip)
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            return False
        return work.result()

    async def _redirect(self, conn, req: Request, path: str, query: str) -> bool:
        """Go's ServeMux answer to a path that is not clean: 301 to the cleaned one."""
        location = quote(path, safe="/$&+,:;=@") + (f"?{query}" if query else "")
        headers = [("Location", location)]
        body = b""
        if req.method in ("GET", "HEAD"):
            headers.append(("Content-Type", "text/html; charset=utf-8"))
        if req.method == "GET":
            esc = (location.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
                   .replace('"', "&#34;").replace("'", "&#39;"))
            body = f'<a href="{esc}">Moved Permanently</a>.\n\n'.encode()
        return await self._simple(conn, req, 301, headers, body)

    def _error(self, status: int, message: str) -> tuple[int, list, bytes]:
        """httptypes.HTTPError.WriteTo, behind the CORS wrapper."""
        body = json.dumps({"message": message}, separators=(",", ":")).encode()
        return status, list(CORS) + [("Content-Type", "application/json")], body

    def _request_bytes(self, conn: _ClientConnection, req: Request, target: str,
                       ep_netloc: str) -> bytes:
        """The request as Go's Transport writes it to a member: request line, Host,
        User-Agent, Content-Length, the other headers sorted; hop-by-hop ones removed,
        X-Forwarded-For extended with the client's address."""
        drop = hop_by_hop(req.headers) | {"host", "user-agent", "content-length", "expect"}
        host = req.header("Host") or ep_netloc
        agent = req.header("User-Agent")
        rest = [(k, v) for k, v in req.headers if k.lower() not in drop]
        if conn.client_ip is not None:
            prior = [v for k, v in rest if k == "X-Forwarded-For"]
            rest = [(k, v) for k, v in rest if k != "X-Forwarded-For"]
            rest.append(("X-Forwarded-For", ", ".join(prior + [conn.client_ip])))
        lines = [f"{req.method} {target} HTTP/1.1", f"Host: {host}"]
        if agent is None:
            lines.append(f"User-Agent: {GO_USER_AGENT}")
        elif agent:
            lines.append(f"User-Agent: {agent}")
        if req.body or req.method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(req.body)}")
        lines.extend(f"{k}: {v}" for k, v in sorted(rest, key=lambda kv: kv[0]))
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + req.body

    async def _forward(self, conn: _ClientConnection, req: Request, target: str) -> bool:
        """httpproxy's reverseProxy.ServeHTTP: try the available endpoints in order."""
        method = req.method
        self.m_requests[method] += 1
        start = time.monotonic()
        eps = self.director.endpoints()
        if not eps:
            self.m_dropped[(method, "zero_endpoints")] += 1
            log.info("proxy: zero endpoints currently available")
            return await self._simple(conn, req, *self._error(
                503, "httpproxy: zero endpoints currently available"))
        resp = None
        for ep in eps:
            data = self._request_bytes(conn, req, target, ep.netloc)
            try:
                resp = await self._round_trip(ep, data, method)
            except UpstreamError as exc:
                self.m_dropped[(method, "failed_sending")] += 1
                log.info("proxy: failed to direct request to %s: %s", ep.url, exc)
                self.director.failed(ep)
                continue
            break
        if resp is None:
            self.m_dropped[(method, "failed_getting_response")] += 1
            msg = f"unable to get response from {len(eps)} endpoint(s)"
            log.info("proxy: %s", msg)
            return await self._simple(conn, req, *self._error(502, "httpproxy: " + msg))
        self.m_handled[(method, str(resp.status))] += 1
        hist = self.m_duration.get(method)
        if hist is None:
            hist = self.m_duration[method] = self._hist()
        hist.observe(time.monotonic() - start)
        return await self._relay(conn, req, resp, ep)

    async def _relay(self, conn: _ClientConnection, req: Request, resp: _Response,
                     ep: Endpoint) -> bool:
        """The member's answer to the client, as it arrives (each piece flushed)."""
        up = resp.conn
        clean = False
        try:
            headers = list(CORS) + resp.headers
            close = not req.keep_alive
            if resp.framing in ("none", "length"):
                head = response_head(resp.status, headers, content_length=None,
                                     connection=req.connection_header(close), reason=resp.reason)
                chunked = False
            else:
                headers = [(k, v) for k, v in headers if k != "Content-Length"]
                chunked = req.version == "1.1"
                close = close or not chunked
                head = response_head(resp.status, headers, content_length=None, chunked=chunked,
                                     connection=req.connection_header(close),
                                     reason=resp.reason)
            conn.writer.write(head)
            await conn.writer.drain()
            try:
                async for piece in self._body(resp):
                    if chunked:
                        conn.writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
                    else:
                        conn.writer.write(piece)
                    await conn.writer.drain()
            except (UpstreamError, OSError, asyncio.IncompleteReadError, TimeoutError,
                    asyncio.LimitOverrunError, ValueError) as exc:
                if isinstance(exc, ConnectionError) and conn.gone.is_set():
                    raise _ClientGone() from None
                # the member went away mid-answer: the client must not take a cut body for
                # a whole one, so its connection closes without the end of the body
                log.info("proxy: copying the response from %s failed: %s", ep.url, exc)
                conn.writer.transport.abort()
                return False
            if chunked:
                conn.writer.write(b"0\r\n\r\n")
                await conn.writer.drain()
            clean = resp.reusable
            return not close
        finally:
            if clean:
                self._put_idle(ep, up)
            else:
                up.close()

    async def _body(self, resp: _Response):
        r = resp.conn.reader
        rt = self.read_timeout
        if resp.framing == "length":
            async for data in _pieces(r, resp.length, rt, "the response body"):
                yield data
        elif resp.framing == "chunked":
            while True:
                line = await _timed(r.readuntil(b"\r\n"), rt)
                size_text = line.split(b";", 1)[0].strip()
                size = int(size_text, 16)
                if size < 0:
                    raise ValueError("negative chunk size")
                if size == 0:
                    while (await _timed(r.readuntil(b"\r\n"), rt)) != b"\r\n":
                        pass   # trailers: not forwarded
                    return
                async for data in _pieces(r, size, rt, "a chunk"):
                    yield data
                if await _timed(r.readexactly(2), rt) != b"\r\n":
                    raise ValueError("malformed chunked encoding")
        elif resp.framing == "eof":
            while True:
                data = await _timed(r.read(PIECE), rt)
                if not data:
                    return
                yield data

    # ---- member connections ----------------------------------------------------------------

    def _put_idle(self, ep: Endpoint, up: _Upstream) -> None:
        idle = self._idle[ep.key]
        if len(idle) >= MAX_IDLE_PER_HOST or not up.usable():
            up.close()
            return
        idle.append(up)

    async def _connect(self, ep: Endpoint) -> _Upstream:
        idle = self._idle.get(ep.key)
        while idle:
            up = idle.pop()
            if up.usable():
                up.reused = True
                up.got_bytes = False
                return up
            up.close()
        try:
            reader, writer = await _timed(asyncio.open_connection(
                ep.host, ep.port, ssl=self.upstream_ssl if ep.scheme == "https" else None,
                limit=HEAD_LIMIT), self.dial_timeout)
        except TimeoutError:
            raise UpstreamError(f"dial tcp {ep.netloc}: i/o timeout") from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamError(f"dial tcp {ep.netloc}: {exc.strerror or exc}"
                                if isinstance(exc, OSError) and exc.strerror
                                else f"dial tcp {ep.netloc}: {exc}") from None
        return _Upstream(reader, writer)

    async def _round_trip(self, ep: Endpoint, data: bytes, method: str) -> _Response:
        """Send one request to ``ep`` and read the answer's head. An idle connection the
        member had closed is retried once on a new one (as Go's Transport does)."""
        while True:
            up = await self._connect(ep)
            try:
                up.writer.write(data)
                await _timed(up.writer.drain(), self.write_timeout)
                return await self._read_head(up, method)
            except TimeoutError:
                up.close()
                raise UpstreamError(f"read/write on {ep.netloc}: i/o timeout") from None
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    ValueError) as exc:
                up.close()
                if up.reused and not up.got_bytes:
                    continue
                raise UpstreamError(str(exc) or type(exc).__name__) from None
            except BaseException:
                up.close()
                raise

    async def _read_head(self, up: _Upstream, method: str) -> _Response:
        while True:
            try:
                raw = await _timed(up.reader.readuntil(b"\r\n\r\n"), self.read_timeout)
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    up.got_bytes = True
                raise
            up.got_bytes = True
            status, reason, version, headers = _parse_head(raw)
            if 100 <= status < 200 and status != 101:
                continue   # an interim answer ("100 Continue"): the real one follows
            break
        drop = hop_by_hop(headers)
        te = ",".join(v for k, v in headers if k == "Transfer-Encoding").lower()
        lengths = {v for k, v in headers if k == "Content-Length"}
        conn_tokens = {t.strip().lower() for k, v in headers if k == "Connection"
                       for t in v.split(",")}
        reusable = version == "1.1" and "close" not in conn_tokens
        length = 0
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            framing = "none"
        elif "chunked" in te:
            framing = "chunked"
            headers = [(k, v) for k, v in headers if k != "Content-Length"]
        elif lengths:
            if len(lengths) != 1 or not next(iter(lengths)).isdigit():
                raise ValueError(f"bad Content-Length {sorted(lengths)}")
            framing, length = "length", int(next(iter(lengths)))
        else:
            framing, reusable = "eof", False
        if status == 101:
            reusable = False
        kept = [(k, v) for k, v in headers if k.lower() not in drop]
        return _Response(status, reason, kept, framing, length, reusable, up)

    # ---- metrics ---------------------------------------------------------------------------

    def render_metrics(self) -> bytes:
        from fastkv.metrics import _process, _Text
        t = _Text()
        t.family("etcd_proxy_dropped_total", "counter", "Counter of requests dropped on the "
                 "proxy.", [((("method", m), ("proxying_error", e)), n)
                            for (m, e), n in sorted(self.m_dropped.items())])
        t.family("etcd_proxy_handled_total", "counter", "Counter of requests fully handled (by "
                 "authoratitave servers)", [((("code", c), ("method", m)), n)
                                            for (m, c), n in sorted(self.m_handled.items())])
        t.histogram("etcd_proxy_handling_duration_seconds", "Bucketed histogram of handling "
                    "time of successful events (non-watches), by method (GET/PUT etc.).",
                    [((("method", m),), h) for m, h in sorted(self.m_duration.items())])
        t.family("etcd_proxy_requests_total", "counter", "Counter requests incoming by method.",
                 [((("method", m),), n) for m, n in sorted(self.m_requests.items())])
        _process(t, None)
        return t.render()


# --------------------------------------------------------------------------- entry point

async def _pieces(reader: asyncio.StreamReader, left: int, timeout, what: str):
    """The next `left` bytes of a member's answer, as they arrive."""
    while left:
        data = await _timed(reader.read(min(left, PIECE)), timeout)
        if not data:
            raise UpstreamError(f"unexpected EOF in {what}")
        left -= len(data)
        yield data


async def run_proxy(cfg: Config, peer_urls: list[str]) -> int:
    """Serve as etcd's v2 proxy until SIGINT or SIGTERM: 0 after a clean stop, 1 when the
    proxy cannot start (the reason on stderr and in the log)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):   # not the main thread
            pass
    proxy = V2Proxy(cfg, peer_urls)
    try:
        starting = loop.create_task(proxy.start())
        stopping = loop.create_task(stop.wait())
        await asyncio.wait((starting, stopping), return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():     # stopped while still starting
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            return 0
        try:
            starting.result()
        except ProxyStartError as exc:
            print(f"fastkv: proxy: {exc}", file=sys.stderr)
            return 1
        await stopping
        log.info("proxy: stopping")
        return 0
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await proxy.close()
