"""The HTTP/1.1 front: an asyncio.Protocol on httptools' C parser (uvicorn's style).

One ``HttpProtocol`` per connection. The parser's callbacks build requests;
requests are answered strictly in arrival order (pipelining), one at a time
per connection, by a single runner task that drains the connection's queue.
Unary routes get their whole body; streaming routes (/v3/watch,
/v3/lease/keepalive) start as soon as their headers are in and read the body
as it arrives, answering with a chunked stream.

Back-pressure: reading pauses while the transport's write buffer is above its
high-water mark, while too many pipelined requests wait, and while a stream's
unread body is large; it resumes when the cause is gone. A unary body larger
than the cap is counted and dropped, never buffered, and answered with
gRPC's "received message larger than max" as etcd does; the connection stays
usable. When the client goes away, a running stream is cancelled (its
WatchStream closed); a unary call in flight completes and its answer is
dropped, so a proposal is never abandoned half way.

Response bytes copy etcd's Go stack: header sets and order per kind of answer
(see v3_gateway.K_*), Content-Length up to 2048 body bytes and chunked above
(Go's response buffer), chunked + Grpc-Trailer-Content-Type for failed calls.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from email.utils import formatdate
from functools import partial

import httptools

from fastkv.api import v3_gateway as gw
from fastkv.errors import EtcdError, GrpcCode
from fastkv.tlsconfig import peer_common_name

# The first bytes of every HTTP/2 connection (RFC 9113, 3.4): gRPC's.
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

log = logging.getLogger(__name__)

__all__ = ["start_http_server", "HttpProtocol"]

_CORS = (b"Access-Control-Allow-Headers: accept, content-type, authorization\r\n"
         b"Access-Control-Allow-Methods: POST, GET, OPTIONS, PUT, DELETE\r\n"
         b"Access-Control-Allow-Origin: *\r\n")
_JSON = b"Content-Type: application/json\r\n"
_GRPC_MD = b"Grpc-Metadata-Content-Type: application/grpc\r\n"
_TEXT = b"Content-Type: text/plain; charset=utf-8\r\n"
_NOSNIFF = b"X-Content-Type-Options: nosniff\r\n"

# Header lines before Date (Go sorts them), and lines Go adds after Content-Length.
_KIND_HEADERS = {
    gw.K_OK: (_CORS + _JSON + _GRPC_MD, b""),
    gw.K_DECODE_ERR: (_CORS + _JSON, b""),
    gw.K_RPC_ERR: (_CORS + _JSON + b"Trailer: Grpc-Trailer-Content-Type\r\n", b""),
    gw.K_TEXT: (_CORS + _TEXT + _NOSNIFF, b""),
    gw.K_TEXT_ALLOW_GET: (_CORS + b"Allow: GET\r\n" + _TEXT + _NOSNIFF, b""),
    gw.K_HEALTH: (_CORS, _TEXT),
    gw.K_VERSION: (_CORS + _JSON, b""),
    gw.K_EMPTY: (_CORS, b""),
    gw.K_TEXT_BARE: (_TEXT + _NOSNIFF, b""),
    gw.K_METRICS: (_CORS + b"Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n", b""),
}
_STREAM_HEADERS = _CORS + _JSON + _GRPC_MD
_RPC_TRAILER = b"0\r\nGrpc-Trailer-Content-Type: application/grpc\r\n\r\n"
_CHUNKED_END = b"0\r\n\r\n"
_BAD_REQUEST = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                b"Connection: close\r\n\r\n400 Bad Request")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# Go's http.response buffers 2048 bytes: a body that fits gets a Content-Length.
GO_BUFFER_BEFORE_CHUNKING = 2048
MAX_PIPELINED = 64
# a plain route's answer when its handler failed (a bug below us)
_INTERNAL_ERROR = (500, [(b"Content-Type", b"text/plain; charset=utf-8")], b"internal error\n")
STREAM_READ_HIGH_WATER = 1 << 20

_prefix_cache: dict = {}


def _prefix(status: int, kind: int) -> tuple[bytes, bytes]:
    key = (status, kind)
    p = _prefix_cache.get(key)
    if p is None:
        before, after = _KIND_HEADERS[kind] if kind is not None else (_STREAM_HEADERS, b"")
        line = b"HTTP/1.1 %d %s\r\n" % (status, gw.STATUS_TEXT.get(status, "status code %d" % status).encode())
        p = _prefix_cache[key] = (line + before + b"Date: ", after)
    return p


_date = [0, b""]


def http_date() -> bytes:
    """The Date header value, formatted once per second."""
    now = int(time.time())
    if now != _date[0]:
        _date[0] = now
        _date[1] = formatdate(now, usegmt=True).encode()
    return _date[1]


def build_response(status: int, kind: int, body: bytes, close: bool = False,
                   head: bool = False) -> bytes:
    """One answer as the bytes etcd's Go server would send."""
    pre, after = _prefix(status, kind)
    conn = b"Connection: close\r\n" if close else b""
    if kind == gw.K_RPC_ERR:
        out = (pre + http_date() + b"\r\n" + conn + b"Transfer-Encoding: chunked\r\n\r\n")
        if head:
            return out
        return out + b"%x\r\n" % len(body) + body + b"\r\n" + _RPC_TRAILER
    n = len(body)
    if n <= GO_BUFFER_BEFORE_CHUNKING:
        out = pre + http_date() + b"\r\nContent-Length: %d\r\n" % n + after + conn + b"\r\n"
        return out if head else out + body
    out = pre + http_date() + b"\r\n" + after + conn + b"Transfer-Encoding: chunked\r\n\r\n"
    if head:
        return out
    return out + b"%x\r\n" % n + body + b"\r\n" + _CHUNKED_END


_STATUS_LINES: dict[int, bytes] = {}
_JSON_HEADS = {status: b"HTTP/1.1 %d %s\r\n" % (status, text) + _CORS +
               b"Content-Type: application/json\r\n"
               for status, text in ((200, b"OK"), (201, b"Created"))}


def ok_json_response(sorted_headers: bytes, body: bytes, status: int = 200) -> bytes | None:
    """build_plain_response(status, [Content-Type: application/json] + headers, body)
    for header lines already written and sorted (all after Content-Type), in one
    concatenation; None for a body Go would send chunked (the caller builds that).
    For a keep-alive request that is not HEAD (no Connection: close, a body)."""
    n = len(body)
    if n > GO_BUFFER_BEFORE_CHUNKING or status not in _JSON_HEADS:
        return None
    return b"%s%sDate: %s\r\nContent-Length: %d\r\n\r\n%s" % (
        _JSON_HEADS[status], sorted_headers, http_date(), n, body)


def build_plain_response(status: int, headers: list[tuple[bytes, bytes]], body: bytes | None,
                         close: bool = False, head: bool = False) -> bytes:
    """An answer from Go's net/http for a handler that set `headers`: etcd's CORS
    headers and the handler's, sorted by name, then Date, then Content-Length (or
    chunked above Go's 2048-byte buffer)."""
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = b"HTTP/1.1 %d %s\r\n" % (status, gw.STATUS_TEXT.get(
            status, "status code %d" % status).encode())
    # A name starting with "~" is a header Go adds after Content-Length (a sniffed
    # Content-Type, for a handler that set none).
    lines = []
    late = b""
    for k, v in sorted(headers):
        if k[:1] == b"~":
            late += k[1:] + b": " + v + b"\r\n"
        else:
            lines.append(k + b": " + v + b"\r\n")
    hdrs = b"".join(lines)
    conn = b"Connection: close\r\n" if close else b""
    out = line + _CORS + hdrs + b"Date: " + http_date() + b"\r\n"
    if body is None:   # the head of a chunked answer that follows
        return out + late + conn + b"Transfer-Encoding: chunked\r\n\r\n"
    n = len(body)
    if status == 204 or status == 304:
        return out + conn + b"\r\n"
    if n <= GO_BUFFER_BEFORE_CHUNKING:
        out += b"Content-Length: %d\r\n" % n + late + conn + b"\r\n"
        return out if head else out + body
    out += late + conn + b"Transfer-Encoding: chunked\r\n\r\n"
    if head:
        return out
    return out + b"%x\r\n" % n + body + b"\r\n" + _CHUNKED_END


class _Request:
    __slots__ = ("method", "route", "keep_alive", "body", "size", "too_large", "ctx", "head",
                 "url", "ctype", "peer_cn", "authorization", "metadata_token")

    def __init__(self, method, route, keep_alive, url=b"", peer_cn=None):
        self.authorization = b""   # the first Authorization header's value (v2 auth reads it)
        # Grpc-Metadata-Token (None without one): the v3 gateway's token, before Authorization
        self.metadata_token = None
        # The verified TLS client certificate's Common Name (None without one): the
        # auth code reads it (etcd's user from the client cert). See HttpProtocol.peer_cn.
        self.peer_cn = peer_cn
        self.method = method
        self.url = url
        self.route = route
        self.keep_alive = keep_alive
        self.body = []
        self.size = 0
        self.too_large = False
        self.ctx = None
        self.head = method == b"HEAD"
        self.ctype = b""   # Content-Type, for plain routes that check it


class StreamContext:
    """What a streaming handler sees: the request body as it arrives, a chunked answer."""

    def __init__(self, proto: "HttpProtocol", req: _Request):
        self.proto = proto
        self.req = req
        self.peer_cn = req.peer_cn   # the verified client cert's CN; the auth code reads it
        self.chunks: deque = deque()
        self.buffered = 0
        self.eof = False
        self.done = False
        self.started = False
        self.responded = False
        self._waiter = None

    # fed by the parser
    def feed(self, data: bytes) -> None:
        if self.done:
            return
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > STREAM_READ_HIGH_WATER:
            self.proto.pause_reading("stream")
        self._wake()

    def feed_eof(self) -> None:
        self.eof = True
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def read(self) -> bytes:
        """The next piece of the request body; b"" when it has ended."""
        while not self.chunks:
            if self.eof:
                return b""
            self._waiter = self.proto.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = self.chunks.popleft()
        self.buffered -= len(data)
        if self.buffered <= STREAM_READ_HIGH_WATER // 2:
            self.proto.resume_reading("stream")
        return data

    async def send(self, data: bytes, status: int = 200) -> None:
        """Write one chunk (the response head goes first, with `status`), then honour back-pressure."""
        p = self.proto
        if p.closed:
            raise ConnectionResetError("client went away")
        if not self.started:
            self.started = True
            pre, _ = _prefix(status, None)
            p.transport.write(pre + http_date() + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
                              + b"%x\r\n" % len(data) + data + b"\r\n")
        else:
            p.transport.write(b"%x\r\n" % len(data) + data + b"\r\n")
        await p.drain()

    async def respond(self, status: int, kind: int, body: bytes) -> None:
        """Answer with a single response instead of a stream (before any chunk)."""
        self.responded = True
        self.proto.write_response(self.req, status, kind, body)

    async def wait_closed(self) -> None:
        await asyncio.shield(self.proto.closed_future)

    def finish(self) -> None:
        self.done = True
        self.chunks.clear()
        self.proto.resume_reading("stream")
        if self.responded or self.proto.closed:
            return
        if not self.started:
            pre, _ = _prefix(200, None)
            self.proto.transport.write(pre + http_date()
                                       + b"\r\nTransfer-Encoding: chunked\r\n\r\n" + _CHUNKED_END)
        else:
            self.proto.transport.write(_CHUNKED_END)


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, server, loop, resolve=None):
        self.server = server
        self.loop = loop
        self.resolve = resolve or gw.resolve   # (method, path) -> route
        self.parser = httptools.HttpRequestParser(self)
        self.transport = None
        self.url = b""
        self.expect_continue = False
        self.req: _Request | None = None
        self.queue: deque = deque()
        self.busy = False
        self.task = None
        self.current: _Request | None = None
        self.closed = False
        self.closed_future = loop.create_future()
        self.write_paused = False
        self.drain_waiters: list = []
        self.read_pauses: set = set()
        self.sniffing = True   # until the first bytes tell HTTP/1.1 from gRPC's HTTP/2
        self.sniffed = b""
        self.h2 = None         # a GrpcConnection once this connection turned out to be gRPC
        # The Common Name of the client certificate verified at the TLS handshake, None
        # without one (plaintext, or no --client-cert-auth/--trusted-ca-file). The auth
        # code reads it (as _Request.peer_cn, StreamContext.peer_cn, and for gRPC
        # CallContext.peer_cn): etcd's user name when a request carries no token.
        self.peer_cn: str | None = None
        limit = server.cfg.max_request_bytes + gw.GRPC_OVERHEAD_BYTES
        self.grpc_limit = limit
        # The largest unary body buffered: any message under the gRPC limit fits
        # in it as base64 JSON with room to spare.
        self.body_cap = 4 * limit + 65536

    # -- asyncio.Protocol -------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        self.peer_cn = peer_common_name(transport)

    def connection_lost(self, exc):
        if self.h2 is not None:
            self.h2.connection_lost()
        self.closed = True
        if not self.closed_future.done():
            self.closed_future.set_result(None)
        for w in self.drain_waiters:
            if not w.done():
                w.set_exception(ConnectionResetError("client went away"))
        self.drain_waiters.clear()
        if self.task is not None:
            # The request ends with its client, as a cancelled context does in etcd: a
            # stream stops, a waiting lock or campaign gives up its place. (A write
            # already proposed is still applied; only its answer is dropped.)
            self.task.cancel()
        self.queue.clear()

    def data_received(self, data):
        if self.h2 is not None:
            self.h2.data_received(data)
            return
        if self.sniffing:
            data = self._sniff(data)
            if not data:
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._bad_request()
        except httptools.HttpParserError:
            self._bad_request()

    def _sniff(self, data: bytes) -> bytes:
        """etcd's cmux: a connection opening with the HTTP/2 preface is gRPC's (handed
        to the gRPC server); anything else is HTTP/1.1. Returns the bytes to parse."""
        buf = self.sniffed + data if self.sniffed else data
        n = min(len(buf), len(HTTP2_PREFACE))
        if buf[:n] != HTTP2_PREFACE[:n]:
            self.sniffing = False
            self.sniffed = b""
            return buf
        if n < len(HTTP2_PREFACE):
            self.sniffed = buf
            return b""
        self.sniffing = False
        self.sniffed = b""
        methods = getattr(self.server, "grpc_methods", None)
        if methods is not None:
            from fastkv.api.grpc_h2 import GrpcConnection
            self.h2 = GrpcConnection(self, methods, self.grpc_limit)
            if len(buf) > len(HTTP2_PREFACE):
                self.h2.data_received(buf[len(HTTP2_PREFACE):])
            return b""
        frontend = getattr(self.server, "grpc", None)
        if frontend is not None and frontend.adopt(self.transport, buf):
            self.closed = True
            return b""
        return buf

    def pause_writing(self):
        if self.h2 is not None:
            self.h2.pause_writing()
        self.write_paused = True
        self.pause_reading("write")

    def resume_writing(self):
        self.write_paused = False
        self.resume_reading("write")
        if self.h2 is not None:
            self.h2.resume_writing()
        waiters, self.drain_waiters = self.drain_waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    # -- flow control -----------------------------------------------------
    def pause_reading(self, reason: str) -> None:
        if not self.read_pauses and not self.closed:
            self.transport.pause_reading()
        self.read_pauses.add(reason)

    def resume_reading(self, reason: str) -> None:
        if reason in self.read_pauses:
            self.read_pauses.discard(reason)
            if not self.read_pauses and not self.closed:
                self.transport.resume_reading()

    async def drain(self) -> None:
        if self.closed:
            raise ConnectionResetError("client went away")
        if self.write_paused:
            w = self.loop.create_future()
            self.drain_waiters.append(w)
            await w

    # -- parser callbacks -------------------------------------------------
    def on_message_begin(self):
        self.url = b""
        self.expect_continue = False
        self.ctype = b""
        self.authorization = b""
        self.metadata_token = None

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        if len(name) == 12 and name.lower() == b"content-type":
            self.ctype = value
        elif len(name) == 6 and name.lower() == b"expect" and value.lower() == b"100-continue":
            self.expect_continue = True
        elif len(name) == 13 and not self.authorization and name.lower() == b"authorization":
            self.authorization = value   # Go's Header.Get: the first one
        elif len(name) == 19 and self.metadata_token is None and \
                name.lower() == b"grpc-metadata-token":
            self.metadata_token = value  # grpc-gateway's metadata "token" (v3 auth reads it)

    def on_headers_complete(self):
        url = self.url
        if url[:1] != b"/":
            try:
                url = httptools.parse_url(url).path or b"/"
            except httptools.HttpParserInvalidURLError:
                url = b"/"
        q = url.find(b"?")
        path = (url if q < 0 else url[:q]).decode("latin-1")
        method = self.parser.get_method()
        req = _Request(method, self.resolve(method, path), self.parser.should_keep_alive(), url,
                       self.peer_cn)
        req.ctype = self.ctype
        req.authorization = self.authorization
        req.metadata_token = self.metadata_token
        if self.peer_cn and gw.refuses_common_name(self.server, path):
            req.route = gw.CN_REFUSED   # etcd's accessController (v3 auth)
        self.req = req
        route = req.route
        if len(route) == 2:
            if self.expect_continue:
                self.transport.write(_CONTINUE)
            if route[1]:
                req.ctx = StreamContext(self, req)
                self._enqueue(req)

    def on_body(self, body):
        req = self.req
        if req.ctx is not None:
            req.ctx.feed(body)
            return
        req.size += len(body)
        if req.too_large:
            return
        if req.size > self.body_cap:
            req.too_large = True
            req.body = None
        else:
            req.body.append(body)

    def on_message_complete(self):
        req = self.req
        self.req = None
        if req.ctx is not None:
            req.ctx.feed_eof()
        else:
            self._enqueue(req)

    # -- running requests in order ----------------------------------------
    def _enqueue(self, req: _Request) -> None:
        if self.closed:
            return
        if not self.busy:
            route = req.route
            if len(route) == 2 and route[1] is None and req.keep_alive and \
                    not self.write_paused:
                # A plain route with a synchronous answer (the whole HTTP answer) for
                # this request (a local v2 read): written now, without a task.
                fast = getattr(route[0], "fast", None)
                if fast is not None:
                    answer = fast(self.server, req.method, req.url)
                    if answer is not None:
                        self.transport.write(answer)
                        return
                # A write it can propose at once (a v2 PUT): answered from a callback
                # when its future is done, without a task either.
                fast = getattr(route[0], "fast_write", None)
                if fast is not None and not req.too_large:
                    started = fast(self.server, req)
                    if started is not None:
                        fut, finish = started
                        self.busy = True
                        self.current = req
                        fut.add_done_callback(partial(self._fast_done, req, finish))
                        return
            self.busy = True
            self.task = self.loop.create_task(self._run(req))
        else:
            self.queue.append(req)
            if len(self.queue) >= MAX_PIPELINED:
                self.pause_reading("pipeline")

    def _fast_done(self, req: _Request, finish, fut: asyncio.Future) -> None:
        """A fast_write's future is done: write its answer, go on with the next request."""
        self.current = None
        self.busy = False
        if self.closed:
            return
        if fut.cancelled():   # the member stops: as a cancelled handler's connection
            self.transport.close()
            return
        try:
            answer = finish(fut)
        except Exception:
            log.exception("handler failed")
            answer = _INTERNAL_ERROR
        if type(answer) is bytes:
            self.transport.write(answer)
        else:
            status, headers, out = answer
            self.transport.write(build_plain_response(status, headers, out, head=req.head))
        if self.queue:
            nxt = self.queue.popleft()
            if len(self.queue) < MAX_PIPELINED // 2:
                self.resume_reading("pipeline")
            self._enqueue(nxt)

    async def _run(self, req: _Request) -> None:
        try:
            while True:
                self.current = req
                route = req.route
                if len(route) == 3:
                    self.write_response(req, *route)
                elif req.ctx is not None:
                    ctx = req.ctx
                    try:
                        await route[0](self.server, ctx)
                    except ConnectionResetError:
                        return
                    finally:
                        ctx.finish()
                elif req.too_large:
                    err = gw.message_too_large(req.size, self.grpc_limit)
                    self.write_response(req, *gw.rpc_error(err))
                elif route[1] is None:  # a plain HTTP route: it sets its own headers
                    body = req.body
                    body = body[0] if len(body) == 1 else b"".join(body)
                    try:
                        # the request itself last: auth reads its Authorization and peer_cn
                        answer = await route[0](self.server, req.method, req.url, body,
                                                req.ctype, req)
                    except Exception:
                        log.exception("handler failed")
                        answer = _INTERNAL_ERROR
                    if type(answer) is bytes:
                        # the whole answer, built by the handler (only for a keep-alive
                        # request that is not HEAD: see ok_json_response)
                        if not self.closed:
                            self.transport.write(answer)
                        status = headers = out = None
                    else:
                        status, headers, out = answer
                    if out is None:
                        pass
                    elif isinstance(out, (bytes, bytearray)):
                        if not self.closed:
                            self.transport.write(build_plain_response(
                                status, headers, out, close=not req.keep_alive,
                                head=req.head))
                    else:   # an async iterator of chunks: Go's flushed, chunked answer
                        await self._stream_plain(status, headers, out, req)
                else:
                    body = req.body
                    body = body[0] if len(body) == 1 else b"".join(body)
                    try:
                        # the request last: v3 auth reads its token headers
                        status, kind, out = await route[0](self.server, body, req)
                    except Exception as e:  # a bug below us: answer like gRPC's Unknown
                        log.exception("handler failed")
                        status, kind, out = gw.rpc_error(EtcdError(str(e), GrpcCode.UNKNOWN))
                    self.write_response(req, status, kind, out)
                if self.closed:
                    return
                if not req.keep_alive:
                    self.transport.close()
                    return
                if self.write_paused:
                    await self.drain()
                if not self.queue:
                    return
                req = self.queue.popleft()
                if len(self.queue) < MAX_PIPELINED // 2:
                    self.resume_reading("pipeline")
        except (asyncio.CancelledError, ConnectionResetError):
            pass
        finally:
            self.current = None
            self.busy = False
            self.task = None
            if self.queue and not self.closed:  # only after a cancelled stream
                nxt = self.queue.popleft()
                self._enqueue(nxt)

    async def _stream_plain(self, status: int, headers, chunks, req: _Request) -> None:
        """Head first (a watcher's client sees it at once), then each chunk as it comes."""
        try:
            self.transport.write(build_plain_response(status, headers, None,
                                                      close=not req.keep_alive))
            async for chunk in chunks:
                if self.closed:
                    return
                self.transport.write(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                await self.drain()
            if not self.closed:
                self.transport.write(_CHUNKED_END)
        finally:
            await chunks.aclose()

    def write_response(self, req: _Request, status: int, kind: int, body: bytes) -> None:
        if self.closed:
            return
        self.transport.write(build_response(status, kind, body, close=not req.keep_alive,
                                            head=req.head))

    def _bad_request(self) -> None:
        if not self.closed:
            self.transport.write(_BAD_REQUEST)
            self.transport.close()
        self.closed = True


async def start_http_server(server, host: str, port: int, *, sock=None, ssl=None, check=None,
                            plain_too: bool = False, resolve=None) -> asyncio.AbstractServer:
    """Serve etcd's HTTP API for `server` (a fastkv.server.Server) on host:port or `sock`.

    With `ssl` (an SSLContext from fastkv.tlsconfig) the port speaks TLS (fastkv.tlsserver:
    refused handshakes logged, `check` run after the handshake; `plain_too` also serves
    plaintext on the same port, for an address listed as both http:// and https://).
    `resolve` routes the requests (default: every client route, v3_gateway.resolve)."""
    loop = asyncio.get_running_loop()

    def factory():
        return HttpProtocol(server, loop, resolve)

    if ssl is not None:
        from fastkv.tlsserver import start_tls_server
        return await start_tls_server(factory, host, port, ssl, check=check,
                                      plain_too=plain_too)
    if sock is not None:
        return await loop.create_server(factory, sock=sock, backlog=4096)
    return await loop.create_server(factory, host, port, reuse_address=True, backlog=4096)
