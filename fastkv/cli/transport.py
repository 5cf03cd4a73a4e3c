"""The v3 JSON gateway client fastkvctl talks through (standard library only).

One :class:`GatewayClient` holds the endpoint list and one keep-alive HTTP/1.1
connection. Unary calls (``/v3/kv/range``...) return the gateway's JSON object
with int64 fields already turned into ``int``; byte fields stay base64 text
(the printers decide how to show them). Streams (``/v3/watch``,
``/v3/lease/keepalive``) yield one ``result`` object per line.

Errors come back as :class:`RPCError` (the server answered with a gRPC status:
code and etcd's message) or :class:`DeadlineExceeded` (no endpoint answered in
time), so the command layer can word them exactly as etcdctl does. A later gRPC
transport only needs to offer the same three methods.
"""
from __future__ import annotations

import http.client
import json
import re
import socket
import time
from typing import Any, Iterator

from fastkv.cli.nosigpipe import no_sigpipe

# int64/uint64 fields the gateway prints as JSON strings (grpc-gateway's proto3 JSON).
INT_FIELDS = frozenset({
    "cluster_id", "member_id", "revision", "raft_term",
    "create_revision", "mod_revision", "version", "lease",
    "count", "deleted", "ID", "TTL", "grantedTTL",
    "compact_revision", "watch_id", "start_revision",
})


_INT = re.compile(r"-?[0-9]+")   # (a StatusResponse's "version" is "3.4.23": kept)


def ints(obj: Any) -> Any:
    """Turn the gateway's int64 strings back into ints, recursively."""
    if isinstance(obj, dict):
        return {k: (int(v) if k in INT_FIELDS and isinstance(v, str) and _INT.fullmatch(v)
                    else ints(v))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [ints(v) for v in obj]
    return obj


class ClientError(Exception):
    """Anything that stops a request; str() is etcdctl's wording."""


class RPCError(ClientError):
    """The server answered with a gRPC status (code, etcd's message)."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class DeadlineExceeded(ClientError):
    def __init__(self, detail: str = ""):
        super().__init__("context deadline exceeded")
        self.detail = detail


def normalise_endpoint(ep: str) -> tuple[str, str, int]:
    """'127.0.0.1:2379', 'http://h:p', 'https://h:p' -> (scheme, host, port)."""
    ep = ep.strip()
    scheme = "http"
    if "://" in ep:
        scheme, ep = ep.split("://", 1)
        if scheme in ("unix", "unixs"):
            raise ClientError(f"unsupported endpoint scheme {scheme!r}")
    ep = ep.rstrip("/")
    if ep.startswith("["):  # [v6]:port
        host, _, port = ep[1:].partition("]:")
    else:
        host, _, port = ep.rpartition(":")
        if not host:
            host, port = port, ""
    default = 443 if scheme == "https" else 2379
    # an absolute DNS name (an SRV target, "host.example."): resolved without the root
    # dot, as Go's resolver does (glibc's would skip /etc/hosts)
    return scheme, host.rstrip(".") or host, int(port) if port else default


class GatewayClient:
    """etcd's v3 JSON gateway over HTTP/1.1, with endpoint failover."""

    def __init__(self, endpoints: list[str], dial_timeout: float = 2.0,
                 command_timeout: float = 5.0, ssl_context=None):
        if not endpoints:
            raise ClientError("no endpoints given")
        self.endpoints = [normalise_endpoint(e) for e in endpoints]
        self.dial_timeout = dial_timeout
        self.command_timeout = command_timeout
        self.ssl_context = ssl_context
        self._conn: http.client.HTTPConnection | None = None
        self._current = 0
        self.token = ""  # set after /v3/auth/authenticate; sent as the Authorization header

    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = self.token
        return headers

    # -- connections ---------------------------------------------------------
    def _connect(self, index: int, timeout: float | None) -> http.client.HTTPConnection:
        scheme, host, port = self.endpoints[index]
        if scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=self.ssl_context)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.connect()
        return conn

    def _open(self, deadline: float, *, fresh: bool = False,
              read_timeout: float | None = None) -> http.client.HTTPConnection:
        """A connection to the first endpoint that accepts one before the dial deadline."""
        if self._conn is not None and not fresh:
            return self._conn
        last = ""
        dial_deadline = min(deadline, time.monotonic() + self.dial_timeout)
        while True:
            for i in list(range(self._current, len(self.endpoints))) + list(range(self._current)):
                remaining = dial_deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    conn = self._connect(i, remaining)
                except OSError as e:
                    last = f"{self.endpoints[i][1]}:{self.endpoints[i][2]}: {e}"
                    continue
                conn.sock.settimeout(read_timeout)
                self._current = i
                if not fresh:
                    self._conn = conn
                return conn
            if time.monotonic() >= dial_deadline:
                raise DeadlineExceeded(last)
            time.sleep(min(0.1, max(0.0, dial_deadline - time.monotonic())))

    def connect(self) -> None:
        """Dial now (as clientv3.New does), not on the first request."""
        self._open(time.monotonic() + self.dial_timeout)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- requests ------------------------------------------------------------
    @staticmethod
    def _check(status: int, body: bytes) -> dict:
        try:
            obj = json.loads(body) if body else {}
        except ValueError:
            raise RPCError(2, f"unexpected response from server (HTTP {status}): {body[:200]!r}") from None
        if status != 200 or (isinstance(obj, dict) and "code" in obj and "error" in obj):
            if isinstance(obj, dict) and "message" in obj:
                raise RPCError(int(obj.get("code", 2)), obj.get("message") or obj.get("error", ""))
            raise RPCError(2, f"unexpected response from server (HTTP {status})")
        return ints(obj)

    def call(self, path: str, body: dict) -> dict:
        """POST one unary request; retry once on a fresh connection if a kept one went stale."""
        payload = json.dumps(body).encode()
        deadline = time.monotonic() + self.dial_timeout + self.command_timeout
        for attempt in range(2):
            reused = self._conn is not None
            conn = self._open(deadline)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceeded()
            conn.sock.settimeout(remaining)
            try:
                with no_sigpipe():   # a TLS server that refused our certificate may be gone
                    conn.request("POST", path, body=payload,
                                 headers=self._headers())
                resp = conn.getresponse()
                data = resp.read()
            except socket.timeout:
                self.close()
                raise DeadlineExceeded() from None
            except (OSError, http.client.HTTPException):
                self.close()
                if reused and attempt == 0:
                    continue
                # the endpoint went away mid-request: try the next one until the deadline
                self._current = (self._current + 1) % len(self.endpoints)
                if time.monotonic() < deadline:
                    continue
                raise DeadlineExceeded() from None
            if resp.will_close:
                self.close()
            return self._check(resp.status, data)
        raise DeadlineExceeded()

    def stream(self, path: str, body: dict, timeout: float | None = None) -> Iterator[dict]:
        """POST a streaming request; yield each ``result`` (ints converted) as it arrives.

        The gateway answers a server-streaming call with one JSON object per line:
        ``{"result": {...}}`` or ``{"error": {...}}``.
        """
        deadline = time.monotonic() + self.dial_timeout + (timeout or self.command_timeout)
        conn = self._open(deadline, fresh=True, read_timeout=timeout)
        try:
            with no_sigpipe():
                conn.request("POST", path, body=json.dumps(body).encode(),
                             headers=self._headers())
            resp = conn.getresponse()
            if resp.status != 200:
                self._check(resp.status, resp.read())
            while True:
                line = resp.readline()
                if not line:
                    return
                line = line.strip()
                if not line:
                    continue
                obj = json.loads(line)
                if "error" in obj:
                    err = obj["error"]
                    if isinstance(err, dict):
                        raise RPCError(int(err.get("grpc_code", err.get("code", 2))),
                                       err.get("message", ""))
                    raise RPCError(int(obj.get("code", 2)), obj.get("message", str(err)))
                yield ints(obj.get("result", {}))
        except socket.timeout:
            raise DeadlineExceeded() from None
        finally:
            conn.close()
