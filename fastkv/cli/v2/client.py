"""etcd's v2 HTTP client (go.etcd.io/etcd/client) for fastkvctl's v2 mode.

The same requests, in the same way, with the same errors as the Go client
etcdctl v2 is built on:

- an endpoint list, shuffled; a request goes to the pinned endpoint and on
  failure to the next, until one answers (a 5xx counts as a failure). Deletes
  and create-only sets are *one-shot*: they try one endpoint only, so a write
  is never repeated. Everything failing is a :class:`ClusterError`.
- ``Sync``: the members' client URLs (``GET /v2/members``) replace the list.
- each request has a header timeout (``--timeout``; none for ``wait=true``)
  and the command a total deadline (``--total-timeout``): "context deadline
  exceeded".
- redirects are followed (at most 10); ``--debug`` prints each request as a
  cURL command on stderr.

Only the standard library: http.client over plain or TLS sockets, one
connection per request.
"""
from __future__ import annotations

import abc

import base64
import http.client
import json
import random
import socket
import ssl
import time
from dataclasses import dataclass, field

from fastkv.cli.nosigpipe import no_sigpipe
from fastkv.cli.v2 import gostd
from fastkv.cli.v2.gostd import URL


# -- errors (str() is the Go error's Error()) -------------------------------------

class ClientError(Exception):
    """An error from the client. ``connection``: isConnectionError would say yes."""
    connection = False


class ConnectionFailure(ClientError):
    """*net.OpError from dialing or reading (``dial tcp ...: connect: connection refused``)."""
    connection = True


class DeadlineExceeded(ClientError):
    """context.DeadlineExceeded (a net.Error whose Timeout() is true)."""
    connection = True

    def __init__(self):
        super().__init__("context deadline exceeded")


class EtcdError(ClientError):
    """client.Error: the v2 store's error body."""

    def __init__(self, code: int, message: str, cause: str, index: int):
        super().__init__(f"{code}: {message} ({cause}) [{index}]")
        self.code, self.message, self.cause, self.index = code, message, cause, index


class ClusterError(ClientError):
    """Every endpoint failed: one error per endpoint tried."""

    def __init__(self, errors: list[Exception]):
        text = "client: etcd cluster is unavailable or misconfigured"
        for i, e in enumerate(errors):
            text += f"; error #{i}: {e}\n"
        super().__init__(text)
        self.errors = errors

    def detail(self) -> str:
        return "".join(f"error #{i}: {e}\n" for i, e in enumerate(self.errors))


ErrNoEndpoints = "client: no endpoints available"
ErrInvalidJSON = "client: response is invalid json. The endpoint is probably not valid etcd cluster endpoint"
ErrEmptyBody = "client: response body is empty"


class NoEndpoints(ClientError):
    def __init__(self):
        super().__init__(ErrNoEndpoints)


class EmptyBody(ClientError):
    def __init__(self):
        super().__init__(ErrEmptyBody)


def is_connection_error(err: Exception) -> bool:
    """etcdctl's isConnectionError."""
    if isinstance(err, ClusterError):
        return all(is_connection_error(e) for e in err.errors)
    return bool(getattr(err, "connection", False))


# -- deadlines -------------------------------------------------------------------

class Context:
    """A context.Context that may carry a deadline (monotonic seconds)."""

    def __init__(self, timeout_ns: int | None = None):
        self.deadline = None if timeout_ns is None else time.monotonic() + timeout_ns / 1e9


BACKGROUND = Context()


# -- one HTTP exchange -------------------------------------------------------------

@dataclass
class Request:
    method: str
    url: URL
    body: bytes | None = None
    headers: dict = field(default_factory=dict)


@dataclass
class HTTPResponse:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def nameserver() -> str:
    """The nameserver as Go's resolver names it in its errors ("127.0.0.1:53")."""
    from fastkv.dnssrv import nameserver_text
    return nameserver_text()


def errno_text(e: OSError) -> str:
    """An OS error as Go's syscall.Errno words it (lower case)."""
    text = e.strerror or str(e)
    return text[:1].lower() + text[1:]


def split_host_port(host: str, default: int) -> tuple[str, str]:
    """(name, port) of a URL's host, the port defaulted by scheme (canonicalAddr)."""
    if host.startswith("["):
        end = host.find("]")
        name, rest = host[1:end], host[end + 1:]
        return name, rest[1:] if rest.startswith(":") and rest[1:] else str(default)
    name, sep, port = host.rpartition(":")
    if not sep:
        return host, str(default)
    return name, port or str(default)


_TLS_REASONS = {
    # what Go's crypto/tls says where OpenSSL gives these reasons
    "WRONG_VERSION_NUMBER": "tls: first record does not look like a TLS handshake",
    "UNEXPECTED_EOF_WHILE_READING": "EOF",
    "CERTIFICATE_VERIFY_FAILED": "x509: certificate signed by unknown authority",
    "KEY_VALUES_MISMATCH": "tls: private key does not match public key",
}
_TLS_ALERTS = {"UNKNOWN_CA": "unknown certificate authority", "PROTOCOL_VERSION": "protocol version not supported",
               "DECRYPT_ERROR": "error decrypting message", "UNSUPPORTED_CERTIFICATE": "unsupported certificate"}


def tls_error_text(e: ssl.SSLError) -> str:
    """An OpenSSL error as Go's crypto/tls words it (alerts from the server: "remote error")."""
    reason = e.reason or ""
    if reason in _TLS_REASONS:
        return _TLS_REASONS[reason]
    for prefix in ("SSLV3_ALERT_", "TLSV1_ALERT_", "TLSV13_ALERT_"):
        if reason.startswith(prefix):
            alert = reason[len(prefix):]
            return "remote error: tls: " + _TLS_ALERTS.get(alert, alert.lower().replace("_", " "))
    return f"tls: {reason.lower() or e}"


class Transport:
    """http.Transport's RoundTrip as etcdctl configures it: TLS from the files given,
    a dial timeout, and unix:// / unixs:// endpoints (a socket named host:port)."""

    def __init__(self, ssl_context: ssl.SSLContext | None, dial_timeout_ns: int, server_name: str = ""):
        self.ssl_context = ssl_context
        self.dial_timeout = dial_timeout_ns / 1e9
        self.server_name = server_name  # the TLS name to verify (the SRV domain), else the host

    def round_trip(self, req: Request, ctx: Context, header_deadline: float | None,
                   endpoint: str) -> HTTPResponse:
        # a TLS server that refused our certificate (or its absence) after the handshake
        # may be gone by the time we write: EPIPE, not SIGPIPE (see fastkv.cli.nosigpipe)
        with no_sigpipe():
            return self._round_trip(req, ctx, header_deadline, endpoint)

    def _round_trip(self, req: Request, ctx: Context, header_deadline: float | None,
                    endpoint: str) -> HTTPResponse:
        """One request and its response. ``header_deadline``: the answer's headers must
        come by then; ``ctx``: everything must be done by its deadline."""
        u = req.url
        if u.scheme not in ("http", "https", "unix", "unixs"):
            raise ClientError(f"unsupported protocol scheme {gostd.quote(u.scheme)}")
        if not u.host:
            raise ClientError("http: no Host in request URL")
        tls = u.scheme in ("https", "unixs")
        host, port = split_host_port(u.host, 443 if tls else 80)

        def deadline_of(*deadlines) -> float | None:
            ds = [d for d in deadlines if d is not None]
            return min(ds) if ds else None

        def set_timeout(sock: socket.socket, deadline: float | None) -> None:
            sock.settimeout(None if deadline is None else max(deadline - time.monotonic(), 0.001))

        def timer_fired() -> ClientError | None:
            """An expired timer, as Go's select on them sees it: the command's
            deadline (ctx.Err()) first, then the header timeout."""
            now = time.monotonic() + 0.001
            if ctx.deadline is not None and now >= ctx.deadline:
                return DeadlineExceeded()
            if header_deadline is not None and now >= header_deadline:
                return ClientError(f"client: endpoint {endpoint} exceeded header timeout")
            return None

        def check_timers() -> None:
            # an expired timer wins over any answer the network could still give
            fired = timer_fired()
            if fired is not None:
                raise fired

        check_timers()
        sock, addr = self._dial(u.scheme, host, port, ctx, header_deadline, timer_fired)
        network = "unix" if u.scheme.startswith("unix") else "tcp"
        try:
            check_timers()
            if tls:
                context = self.ssl_context or _default_tls()
                set_timeout(sock, deadline_of(header_deadline, ctx.deadline))
                try:
                    sock = context.wrap_socket(sock, server_hostname=self.server_name or host)
                except socket.timeout:
                    raise timer_fired() or DeadlineExceeded() from None
                except ssl.SSLError as e:
                    raise ClientError(tls_error_text(e)) from None
                except OSError as e:
                    raise ClientError(errno_text(e)) from None
            conn = http.client.HTTPConnection(host)
            conn.sock = sock
            try:
                set_timeout(sock, deadline_of(header_deadline, ctx.deadline))
                conn.putrequest(req.method, u.request_uri(), skip_host=True, skip_accept_encoding=True)
                conn.putheader("Host", u.host)
                conn.putheader("User-Agent", "Go-http-client/1.1")
                for k, v in req.headers.items():
                    conn.putheader(k, v)
                if req.body is not None:
                    conn.putheader("Content-Length", str(len(req.body)))
                conn.endheaders(req.body)
                resp = conn.getresponse()
            except socket.timeout:
                raise timer_fired() or DeadlineExceeded() from None
            except ssl.SSLError as e:
                raise ClientError(tls_error_text(e)) from None
            except (http.client.RemoteDisconnected, http.client.IncompleteRead, BrokenPipeError):
                raise ClientError("EOF") from None  # closed without an answer
            except ConnectionResetError as e:
                local = _sockaddr_text(sock)
                raise ConnectionFailure(f"read {network} {local}->{addr}: read: {errno_text(e)}") from None
            except (OSError, http.client.HTTPException) as e:
                raise ClientError(str(e)) from None
            try:
                set_timeout(sock, ctx.deadline)
                body = resp.read()
            except socket.timeout:
                raise DeadlineExceeded() from None
            except ssl.SSLError as e:
                raise ClientError(tls_error_text(e)) from None
            except http.client.IncompleteRead:
                raise ClientError("unexpected EOF") from None
            except (OSError, http.client.HTTPException) as e:
                raise ClientError(str(e)) from None
            return HTTPResponse(resp.status, resp.headers, body)
        finally:
            sock.close()

    def _dial(self, scheme: str, host: str, port: str, ctx: Context, header_deadline: float | None,
              timer_fired) -> tuple[socket.socket, str]:
        """net.Dialer.Dial, bounded by the dial timeout and the request's timers."""
        dial_deadline = time.monotonic() + self.dial_timeout if self.dial_timeout > 0 else None
        ds = [d for d in (dial_deadline, header_deadline, ctx.deadline) if d is not None]
        deadline = min(ds) if ds else None
        if scheme in ("unix", "unixs"):
            network, addr = "unix", f"{host}:{port}"
            family, sockaddr = socket.AF_UNIX, addr
        else:
            network = "tcp"
            if not port.isdigit() or int(port) > 65535:
                raise ConnectionFailure(f"dial tcp: address {port}: invalid port")
            try:
                infos = socket.getaddrinfo(host.rstrip(".") or host, int(port), type=socket.SOCK_STREAM)
            except socket.gaierror:
                raise ConnectionFailure(f"dial tcp: lookup {host} on {nameserver()}: no such host") \
                    from None
            family, _, _, _, sockaddr = infos[0]
            addr = f"[{sockaddr[0]}]:{sockaddr[1]}" if family == socket.AF_INET6 else f"{sockaddr[0]}:{sockaddr[1]}"
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(None if deadline is None else max(deadline - time.monotonic(), 0.001))
            sock.connect(sockaddr)
        except socket.timeout:
            sock.close()
            raise timer_fired() or ConnectionFailure(f"dial {network} {addr}: i/o timeout") from None
        except OSError as e:
            sock.close()
            raise ConnectionFailure(f"dial {network} {addr}: connect: {errno_text(e)}") from None
        return sock, addr


def _sockaddr_text(sock: socket.socket) -> str:
    try:
        a = sock.getsockname()
    except OSError:
        return ""
    if isinstance(a, tuple):
        return f"[{a[0]}]:{a[1]}" if ":" in a[0] else f"{a[0]}:{a[1]}"
    return a or ""


_default_context: ssl.SSLContext | None = None


def _default_tls() -> ssl.SSLContext:
    global _default_context
    if _default_context is None:
        _default_context = ssl.create_default_context()
    return _default_context


# -- the cluster client ---------------------------------------------------------------

class Action(abc.ABC):
    """An httpAction: builds the request for one endpoint (each kind of call is one)."""

    one_shot = False

    @abc.abstractmethod
    def request(self, ep: URL) -> Request:
        """The request for endpoint `ep`."""


class Client:
    """httpClusterClient: endpoint selection, failover, sync."""

    def __init__(self, endpoints: list[str], transport: Transport, header_timeout_ns: int,
                 username: str | None = None, password: str = "", debug_out=None):
        self.transport = transport
        self.header_timeout = header_timeout_ns / 1e9
        self.credentials = None if not username else (username, password)
        self.debug_out = debug_out
        self.endpoints: list[URL] = []
        self.pinned = 0
        self.set_endpoints(endpoints)

    @staticmethod
    def _parse_endpoints(eps: list[str]) -> list[URL]:
        if not eps:
            raise NoEndpoints()
        try:
            return [gostd.parse_url(ep) for ep in eps]
        except gostd.URLError as e:
            raise ClientError(str(e)) from None

    def set_endpoints(self, eps: list[str]) -> None:
        neps = self._parse_endpoints(eps)
        random.shuffle(neps)
        self.endpoints = neps
        self.pinned = 0

    def endpoint_strings(self) -> list[str]:
        return [str(u) for u in self.endpoints]

    # one endpoint: simpleHTTPClient under redirectFollowingHTTPClient
    def _simple_do(self, ctx: Context, ep: URL, req: Request) -> HTTPResponse:
        if self.credentials:
            user, pw = self.credentials
            token = base64.b64encode(gostd.to_bytes(f"{user}:{pw}")).decode()
            req.headers["Authorization"] = "Basic " + token
        if self.debug_out is not None:
            command = f"curl -X {req.method} {req.url}"
            if req.body is not None:
                command += f" -d {gostd.quote(req.body.decode('utf-8', 'surrogateescape'))}"
            self.debug_out(f"cURL Command: {command}\n")
        wait = gostd.parse_query(req.url.raw_query).get("wait", [""])[0]
        is_wait = False
        if wait:
            try:
                is_wait = gostd.parse_bool(wait)
            except ValueError:
                raise ClientError(f"wrong wait value {wait}") from None
        header_deadline = None
        if not is_wait and self.header_timeout > 0:
            header_deadline = time.monotonic() + self.header_timeout
        return self.transport.round_trip(req, ctx, header_deadline, str(ep))

    def _do_following_redirects(self, ctx: Context, ep: URL, action: Action) -> HTTPResponse:
        req = action.request(ep.copy())
        for i in range(100):
            if i > 10:
                raise ClientError("client: too many redirects")
            resp = self._simple_do(ctx, ep, req)
            if resp.status // 100 == 3:
                loc = resp.headers.get("Location", "")
                if not loc:
                    raise ClientError("location header not set")
                try:
                    target = gostd.parse_url(loc)
                except gostd.URLError:
                    raise ClientError(f"location header not valid URL: {loc}") from None
                req = action.request(ep.copy())
                req.url = target
                continue
            return resp
        raise ClientError("client: too many redirect checks")

    def do(self, ctx: Context, action: Action) -> HTTPResponse:
        """httpClusterClient.Do."""
        eps = list(self.endpoints)
        n = len(eps)
        pinned = self.pinned
        if n == 0:
            raise NoEndpoints()
        errors: list[Exception] = []
        for i in range(pinned, n + pinned):
            k = i % n
            err: Exception | None = None
            try:
                resp = self._do_following_redirects(ctx, eps[k], action)
            except DeadlineExceeded:
                raise
            except ClientError as e:
                errors.append(e)
                err = e
            else:
                if resp.status // 100 == 5:
                    if resp.status in (500, 503):
                        errors.append(ClientError(f"client: etcd member {eps[k]} has no leader"))
                    else:
                        text = http.client.responses.get(resp.status, "")
                        errors.append(ClientError(f"client: etcd member {eps[k]} returns server error [{text}]"))
                    err = errors[0]
            if err is not None:
                if not action.one_shot:
                    continue
                self.pinned = (k + 1) % n
                raise err
            if k != pinned:
                self.pinned = k
            return resp
        raise ClusterError(errors)

    def sync(self, ctx: Context) -> None:
        """Replace the endpoints by the client URLs the members publish."""
        members = MembersAPI(self).list(ctx)
        eps = [u for m in members for u in m.client_urls]
        neps = self._parse_endpoints(eps)
        if sorted(str(u) for u in self.endpoints) == sorted(str(u) for u in neps):
            return
        random.shuffle(neps)
        self.endpoints = neps
        self.pinned = 0


# -- JSON decoding (Go's rules) ---------------------------------------------------------

class _JSONError(ValueError):
    pass


def _go_json_error(body: bytes) -> str:
    """An approximation of encoding/json's syntax error text."""
    text = body.decode("utf-8", "replace").lstrip(" \t\r\n")
    if not text:
        return "unexpected end of JSON input"
    return f"invalid character '{text[0]}' looking for beginning of value"


def _field(obj: dict, name: str, case_insensitive: bool):
    if name in obj:
        return obj[name]
    if case_insensitive:
        for k, v in obj.items():
            if k.lower() == name.lower():
                return v
    return None


# -- keys API ---------------------------------------------------------------------------

@dataclass
class Node:
    key: str = ""
    dir: bool = False
    value: str = ""
    nodes: list["Node"] | None = None
    created_index: int = 0
    modified_index: int = 0
    expiration: str | None = None
    ttl: int = 0

    @classmethod
    def decode(cls, obj) -> "Node | None":
        if obj is None:
            return None
        if not isinstance(obj, dict):
            raise _JSONError()
        n = cls()

        def typed(name, types, default):
            v = obj.get(name)
            if v is None:
                return default
            if not isinstance(v, types) or isinstance(v, bool) and bool not in types:
                raise _JSONError()
            return v
        n.key = typed("key", (str,), "")
        n.dir = typed("dir", (bool,), False)
        n.value = typed("value", (str,), "")
        nodes = obj.get("nodes")
        if nodes is not None:
            if not isinstance(nodes, list):
                raise _JSONError()
            n.nodes = [cls.decode(x) for x in nodes]
        for attr, name in (("created_index", "createdIndex"), ("modified_index", "modifiedIndex")):
            v = typed(name, (int,), 0)
            if v < 0 or v > gostd.UINT64_MASK:
                raise _JSONError()
            setattr(n, attr, v)
        exp = obj.get("expiration")
        if exp is not None:
            if not isinstance(exp, str):
                raise _JSONError()
            n.expiration = gostd.rfc3339nano(exp)
            if n.expiration is None:
                raise _JSONError()
        n.ttl = typed("ttl", (int,), 0)
        return n

    def marshal(self) -> dict:
        """The field order and omissions of client.Node's JSON tags."""
        out: dict = {"key": self.key}
        if self.dir:
            out["dir"] = True
        out["value"] = self.value
        out["nodes"] = None if self.nodes is None else [
            None if x is None else x.marshal() for x in self.nodes]
        out["createdIndex"] = self.created_index
        out["modifiedIndex"] = self.modified_index
        if self.expiration is not None:
            out["expiration"] = self.expiration
        if self.ttl:
            out["ttl"] = self.ttl
        return out


@dataclass
class Response:
    action: str
    node: Node | None
    prev_node: Node | None
    index: int = 0
    cluster_id: str = ""

    def marshal(self) -> str:
        return gostd.json_marshal({
            "action": self.action,
            "node": None if self.node is None else self.node.marshal(),
            "prevNode": None if self.prev_node is None else self.prev_node.marshal(),
        })


def unmarshal_keys_response(resp: HTTPResponse) -> Response:
    if resp.status in (200, 201):
        if not resp.body:
            raise EmptyBody()
        try:
            obj = json.loads(resp.body)
            if not isinstance(obj, dict):
                raise _JSONError()
            action = obj.get("action")
            if action is not None and not isinstance(action, str):
                raise _JSONError()
            res = Response(action or "", Node.decode(obj.get("node")), Node.decode(obj.get("prevNode")))
        except ValueError:
            raise ClientError(ErrInvalidJSON) from None
        idx = resp.headers.get("X-Etcd-Index", "")
        if idx:
            if not idx.isdigit() or int(idx) > gostd.UINT64_MASK:
                raise ClientError(f"strconv.ParseUint: parsing {gostd.quote(idx)}: "
                                  f"{'value out of range' if idx.isdigit() else 'invalid syntax'}")
            res.index = int(idx)
        res.cluster_id = resp.headers.get("X-Etcd-Cluster-ID", "")
        return res
    try:
        obj = json.loads(resp.body)
        if not isinstance(obj, dict):
            raise _JSONError()

        def get(name, types, default):
            v = _field(obj, name, True)
            if v is None:
                return default
            if not isinstance(v, types) or isinstance(v, bool):
                raise _JSONError()
            return v
        err = EtcdError(get("errorCode", (int,), 0), get("message", (str,), ""),
                        get("cause", (str,), ""), get("index", (int,), 0))
    except ValueError:
        raise ClientError(ErrInvalidJSON) from None
    raise err


def _keys_url(ep: URL, key: str) -> URL:
    """v2KeysURL."""
    prefix = "/v2/keys"
    if key and key[0] != "/":
        key = "/" + key
    ep.path = gostd.canonical_url_path(ep.path + prefix + key)
    return ep


def _bool(b: bool) -> str:
    return "true" if b else "false"


FORM = "application/x-www-form-urlencoded"


class GetAction(Action):
    def __init__(self, key: str, recursive=False, sort=False, quorum=False):
        self.key, self.recursive, self.sort, self.quorum = key, recursive, sort, quorum

    def request(self, ep: URL) -> Request:
        u = _keys_url(ep, self.key)
        params = gostd.parse_query(u.raw_query)
        params.update(recursive=_bool(self.recursive), sorted=_bool(self.sort), quorum=_bool(self.quorum))
        u.raw_query = gostd.encode_values(params)
        return Request("GET", u)


class WaitAction(Action):
    def __init__(self, key: str, wait_index: int, recursive: bool):
        self.key, self.wait_index, self.recursive = key, wait_index, recursive

    def request(self, ep: URL) -> Request:
        u = _keys_url(ep, self.key)
        params = gostd.parse_query(u.raw_query)
        params.update(wait="true", waitIndex=str(self.wait_index), recursive=_bool(self.recursive))
        u.raw_query = gostd.encode_values(params)
        return Request("GET", u)


PREV_IGNORE, PREV_EXIST, PREV_NO_EXIST = "", "true", "false"


def _ttl_seconds(ttl_seconds: int) -> int | None:
    """The form's ttl: time.Duration(ttl) * time.Second (int64, wrapping); sent only
    when positive, as its whole seconds. None: not sent."""
    d = (ttl_seconds * 1000000000) & gostd.UINT64_MASK
    if d >= 1 << 63:
        d -= 1 << 64
    return d // 1000000000 if d > 0 else None


class SetAction(Action):
    def __init__(self, key: str, value: str, prev_value: str = "", prev_index: int = 0,
                 prev_exist: str = PREV_IGNORE, ttl: int = 0, dir: bool = False):
        self.key, self.value = key, value
        self.prev_value, self.prev_index, self.prev_exist = prev_value, prev_index, prev_exist
        self.ttl, self.dir = ttl, dir
        self.one_shot = prev_exist == PREV_NO_EXIST

    def request(self, ep: URL) -> Request:
        u = _keys_url(ep, self.key)
        params: dict = gostd.parse_query(u.raw_query)
        form: dict[str, str] = {}
        if self.dir:
            params["dir"] = "true"
        else:
            if self.prev_value:
                params["prevValue"] = self.prev_value
            form["value"] = self.value
        if self.prev_index:
            params["prevIndex"] = str(self.prev_index & gostd.UINT64_MASK)
        if self.prev_exist:
            params["prevExist"] = self.prev_exist
        seconds = _ttl_seconds(self.ttl)
        if seconds is not None:
            form["ttl"] = str(seconds)
        u.raw_query = gostd.encode_values(params)
        return Request("PUT", u, gostd.to_bytes(gostd.encode_values(form)), {"Content-Type": FORM})


class DeleteAction(Action):
    one_shot = True

    def __init__(self, key: str, prev_value: str = "", prev_index: int = 0,
                 dir: bool = False, recursive: bool = False):
        self.key, self.prev_value, self.prev_index = key, prev_value, prev_index
        self.dir, self.recursive = dir, recursive

    def request(self, ep: URL) -> Request:
        u = _keys_url(ep, self.key)
        params: dict = gostd.parse_query(u.raw_query)
        if self.prev_value:
            params["prevValue"] = self.prev_value
        if self.prev_index:
            params["prevIndex"] = str(self.prev_index & gostd.UINT64_MASK)
        if self.dir:
            params["dir"] = "true"
        if self.recursive:
            params["recursive"] = "true"
        u.raw_query = gostd.encode_values(params)
        return Request("DELETE", u, None, {"Content-Type": FORM})


class CreateInOrderAction(Action):
    def __init__(self, dir: str, value: str, ttl: int = 0):
        self.dir, self.value, self.ttl = dir, value, ttl

    def request(self, ep: URL) -> Request:
        u = _keys_url(ep, self.dir)
        form = {"value": self.value}
        seconds = _ttl_seconds(self.ttl)
        if seconds is not None:
            form["ttl"] = str(seconds)
        return Request("POST", u, gostd.to_bytes(gostd.encode_values(form)), {"Content-Type": FORM})


class KeysAPI:
    def __init__(self, client: Client):
        self.client = client

    def _call(self, ctx: Context, action: Action) -> Response:
        return unmarshal_keys_response(self.client.do(ctx, action))

    def get(self, ctx: Context, key: str, recursive=False, sort=False, quorum=False) -> Response:
        return self._call(ctx, GetAction(key, recursive, sort, quorum))

    def set(self, ctx: Context, key: str, value: str, **opts) -> Response:
        return self._call(ctx, SetAction(key, value, **opts))

    def delete(self, ctx: Context, key: str, **opts) -> Response:
        return self._call(ctx, DeleteAction(key, **opts))

    def create_in_order(self, ctx: Context, dir: str, value: str, ttl: int = 0) -> Response:
        return self._call(ctx, CreateInOrderAction(dir, value, ttl))

    def watcher(self, key: str, after_index: int = 0, recursive: bool = False) -> "Watcher":
        after = after_index & gostd.UINT64_MASK
        wait_index = (after + 1) & gostd.UINT64_MASK if after > 0 else 0
        return Watcher(self.client, WaitAction(key, wait_index, recursive))


class Watcher:
    def __init__(self, client: Client, action: WaitAction):
        self.client = client
        self.action = action

    def next(self, ctx: Context = BACKGROUND) -> Response:
        while True:
            resp = self.client.do(ctx, self.action)
            try:
                res = unmarshal_keys_response(resp)
            except EmptyBody:
                continue
            self.action.wait_index = (res.node.modified_index + 1) & gostd.UINT64_MASK
            return res


# -- members API ---------------------------------------------------------------------------

@dataclass
class Member:
    id: str
    name: str
    peer_urls: list[str]
    client_urls: list[str]


def _members_url(ep: URL, *more: str) -> URL:
    ep.path = gostd.path_join(ep.path, "/v2/members", *more)
    return ep


class _MembersAction(Action):
    def __init__(self, method: str, suffix: str = "", body: bytes | None = None):
        self.method, self.suffix, self.body = method, suffix, body

    def request(self, ep: URL) -> Request:
        headers = {"Content-Type": "application/json"} if self.body is not None else {}
        u = _members_url(ep, self.suffix) if self.suffix else _members_url(ep)
        return Request(self.method, u, self.body, headers)


def _assert_status(got: int, *want: int) -> None:
    if got not in want:
        raise ClientError(f"unexpected status code {got}")


def _decode_json(body: bytes):
    try:
        return json.loads(body)
    except ValueError:
        raise ClientError(_go_json_error(body)) from None


def _decode_member(obj) -> Member:
    if not isinstance(obj, dict):
        raise ClientError("json: cannot unmarshal into Go value of type client.Member")

    def strings(name):
        v = _field(obj, name, True)
        if v is None:
            return []
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ClientError(f"json: cannot unmarshal into Go struct field Member.{name} of type []string")
        return v

    def string(name):
        v = _field(obj, name, True)
        if v is None:
            return ""
        if not isinstance(v, str):
            raise ClientError(f"json: cannot unmarshal into Go struct field Member.{name} of type string")
        return v
    return Member(string("id"), string("name"), strings("peerURLs"), strings("clientURLs"))


def _member_urls_body(urls: list[URL]) -> bytes:
    return gostd.to_bytes(gostd.json_marshal({"peerURLs": [str(u) for u in urls]}))


def new_urls(strs: list[str]) -> list[URL]:
    """pkg/types.NewURLs: validated and sorted peer URLs."""
    if not strs:
        raise ClientError("no valid URLs given")
    out = []
    for raw in strs:
        s = raw.strip(" \t\n\r\v\f")
        try:
            u = gostd.parse_url(s)
        except gostd.URLError as e:
            raise ClientError(str(e)) from None
        if u.scheme not in ("http", "https", "unix", "unixs"):
            raise ClientError(f"URL scheme must be http, https, unix, or unixs: {s}")
        if not _has_host_port(u.host):
            raise ClientError(f'URL address does not have the form "host:port": {s}')
        if u.path:
            raise ClientError(f"URL must not contain a path: {s}")
        out.append(u)
    out.sort(key=str)
    return out


def _has_host_port(hostport: str) -> bool:
    """net.SplitHostPort succeeds."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or "[" in hostport[1:] or "]" in hostport[end + 1:]:
            return False
        return hostport[end + 1:end + 2] == ":"
    i = hostport.rfind(":")
    if i < 0:
        return False
    host = hostport[:i]
    return ":" not in host and "[" not in hostport and "]" not in hostport


class MembersAPI:
    def __init__(self, client: Client):
        self.client = client

    def list(self, ctx: Context) -> list[Member]:
        resp = self.client.do(ctx, _MembersAction("GET"))
        _assert_status(resp.status, 200)
        obj = _decode_json(resp.body)
        if not isinstance(obj, dict):
            raise ClientError("json: cannot unmarshal into Go value of type struct { Members []client.Member }")
        members = _field(obj, "members", True)
        if members is None:
            return []
        if not isinstance(members, list):
            raise ClientError("json: cannot unmarshal into Go struct field .Members of type []client.Member")
        return [_decode_member(m) for m in members]

    def leader(self, ctx: Context) -> Member:
        resp = self.client.do(ctx, _MembersAction("GET", "/leader"))
        _assert_status(resp.status, 200)
        return _decode_member(_decode_json(resp.body))

    def add(self, ctx: Context, peer_url: str) -> Member:
        urls = new_urls([peer_url])
        resp = self.client.do(ctx, _MembersAction("POST", "", _member_urls_body(urls)))
        _assert_status(resp.status, 201, 409)
        obj = _decode_json(resp.body)
        if resp.status != 201:
            raise ClientError(_message(obj))
        return _decode_member(obj)

    def update(self, ctx: Context, member_id: str, peer_urls: list[str]) -> None:
        urls = new_urls(peer_urls)
        resp = self.client.do(ctx, _MembersAction("PUT", member_id, _member_urls_body(urls)))
        _assert_status(resp.status, 204, 404, 409)
        if resp.status != 204:
            raise ClientError(_message(_decode_json(resp.body)))

    def remove(self, ctx: Context, member_id: str) -> None:
        resp = self.client.do(ctx, _MembersAction("DELETE", member_id))
        _assert_status(resp.status, 204, 410)


def _message(obj) -> str:
    if isinstance(obj, dict):
        v = _field(obj, "message", True)
        if isinstance(v, str):
            return v
    return ""
