"""A small gRPC client over HTTP/2 on plain TCP, cheap enough per message to load a server.

The bench's own load generators (bench/watch_lease.py) need to receive hundreds of
thousands of watch events a second and to pipeline keepalives on many streams from
one Python process. grpcio's clients cost tens of microseconds per message, which
would make the generator, not the server, the thing measured. This client does only
what a load generator needs, on an asyncio (uvloop) Protocol:

* the connection preface, SETTINGS (push off, a large initial stream window) and a
  connection WINDOW_UPDATE, so the server is never held up by flow control;
* one prebuilt HPACK header block per method path (encoded once, with no dynamic
  table entries, so the same bytes are valid on every call);
* DATA frames with gRPC's 5-byte length prefix, split from the byte stream with
  ``struct.unpack_from`` over whole chunks (no per-byte Python); WINDOW_UPDATE given
  back once half a window is used; PING and SETTINGS answered; RST_STREAM, GOAWAY and
  trailers (``grpc-status``) end the streams they concern;
* three ways to receive a stream's messages: a callback ``on_message(msg, recv_ns)``
  (every message as bytes, with the time its bytes were read), an asyncio queue
  (``await stream.recv()``), or ``raw``: the stream's DATA bytes appended to
  ``stream.buf`` with marks of when they arrived, to be split into messages later
  (:func:`iter_messages`) so that receiving costs almost nothing per message.

Protobuf is the caller's business (fastkv's generated modules, upb backend): this
module moves bytes. Sending respects the server's flow-control windows.
"""
from __future__ import annotations

import asyncio
import struct
import time
import urllib.parse
from collections import deque

import hpack

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT_STREAMS, S_INITIAL_WINDOW_SIZE, \
    S_MAX_FRAME_SIZE = range(1, 6)
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DEFAULT_WINDOW = 65535
DEFAULT_WINDOW_SIZE = 16 << 20          # what we let the server send before it hears from us
MAX_WINDOW = 2**31 - 1
# gRPC status codes this module produces itself (the server's come from its trailers)
CANCELLED, UNKNOWN, INTERNAL, UNAVAILABLE = 1, 2, 13, 14

# A frame header as one unpack: (length << 8 | type), flags, stream id
_FRAME = struct.Struct(">IBI")
_PREFIX = struct.Struct(">BI")          # gRPC message prefix: compressed flag, length
_U32 = struct.Struct(">I")
_monotonic_ns = time.monotonic_ns


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return _FRAME.pack(len(payload) << 8 | ftype, flags, sid) + payload


def grpc_message(msg: bytes) -> bytes:
    """A protobuf message with gRPC's length prefix (uncompressed)."""
    return _PREFIX.pack(0, len(msg)) + msg


def iter_messages(buf, start: int = 0):
    """(end offset, message bytes) for each whole gRPC message in ``buf[start:]``; what is
    left after the last whole one is not yielded (the caller resumes from the last end)."""
    n = len(buf)
    pos = start
    unpack = _PREFIX.unpack_from
    while n - pos >= 5:
        compressed, length = unpack(buf, pos)
        end = pos + 5 + length
        if end > n:
            return
        if compressed:
            raise GrpcError(INTERNAL, "compressed message (none was negotiated)")
        yield end, bytes(buf[pos + 5:end])
        pos = end


class GrpcError(Exception):
    """A call ended with a non-OK gRPC status (the server's, or ours for a reset or a lost
    connection)."""

    def __init__(self, status: int, message: str = ""):
        super().__init__(f"grpc-status {status}: {message}")
        self.status = status
        self.message = message


class Stream:
    """One call. ``send`` messages; how they come back depends on how it was opened (see
    :meth:`Connection.stream`). ``done`` resolves when the server ends the call: to None
    for grpc-status 0, else to a GrpcError (also raised by :meth:`wait`)."""

    __slots__ = ("conn", "sid", "on_message", "raw", "queue", "buf", "mark_ends", "mark_ns",
                 "partial", "headers", "trailers", "done", "unacked", "send_window",
                 "pending", "local_closed", "remote_closed", "messages")

    def __init__(self, conn: "Connection", sid: int, on_message, raw: bool, collect: bool):
        self.conn = conn
        self.sid = sid
        self.on_message = on_message
        self.raw = raw
        self.queue: asyncio.Queue | None = None
        self.messages: list | None = [] if collect else None
        if on_message is None and not raw and not collect:
            self.queue = asyncio.Queue()
        self.buf = bytearray()      # raw: the stream's DATA bytes
        self.mark_ends: list[int] = []   # raw: len(buf) after each read that added to it
        self.mark_ns: list[int] = []     # ... and the monotonic time of that read
        self.partial = bytearray()  # a message split over DATA frames
        self.headers: dict | None = None
        self.trailers: dict | None = None
        self.done: asyncio.Future = conn.loop.create_future()
        self.unacked = 0            # DATA bytes received and not yet given back
        self.send_window = conn.peer_initial_window
        self.pending: deque = deque()   # (bytes, end_stream) waiting for send window
        self.local_closed = False
        self.remote_closed = False

    # ---- sending
    def send(self, msg: bytes, end: bool = False) -> None:
        """Send one protobuf message (serialized); ``end`` half-closes the call after it."""
        self.send_prefixed(_PREFIX.pack(0, len(msg)) + msg, end)

    def send_prefixed(self, data: bytes, end: bool = False) -> None:
        """Send bytes already carrying gRPC prefixes (one or more whole messages)."""
        if self.local_closed:
            raise GrpcError(INTERNAL, f"stream {self.sid}: send after close")
        if self.done.done():
            return      # the server ended the call: nothing more goes anywhere
        if end:
            self.local_closed = True
        conn = self.conn
        n = len(data)
        if (not self.pending and n <= self.send_window and n <= conn.send_window
                and n <= conn.peer_max_frame):
            self.send_window -= n
            conn.send_window -= n
            conn._wbuf.append(_FRAME.pack(n << 8 | DATA, END_STREAM if end else 0, self.sid))
            conn._wbuf.append(data)
            conn._want_flush()
        else:
            self.pending.append((data, end))
            conn._blocked[self.sid] = self
            conn._drain(self)

    def close_send(self) -> None:
        """Half-close: no more messages from us."""
        if not self.local_closed:
            self.send_prefixed(b"", end=True)

    # ---- receiving
    async def recv(self):
        """The next message (queue mode), or None once the call has ended."""
        if self.queue is None:
            raise RuntimeError("recv() is for streams opened without on_message/raw/collect")
        msg = await self.queue.get()
        if msg is None:
            self.queue.put_nowait(None)     # every later recv() sees the end too
        return msg

    async def wait(self) -> None:
        """Until the server ends the call; raises GrpcError unless it ended with status 0."""
        err = await self.done
        if err is not None:
            raise err

    def cancel(self) -> None:
        """RST_STREAM(CANCEL): the server stops the call; our side treats it as ended."""
        if not self.done.done():
            self.conn._wbuf.append(frame(RST_STREAM, 0, self.sid, _U32.pack(8)))
            self.conn._want_flush()
            self.conn._finish(self, GrpcError(CANCELLED, "cancelled by the client"))

    # called by the connection for each DATA payload data[start:end]
    def _deliver(self, data: bytes, start: int, end: int, now: int) -> None:
        if self.raw:
            self.buf += memoryview(data)[start:end]
            ends = self.mark_ends
            if self.mark_ns and self.mark_ns[-1] == now:
                ends[-1] = len(self.buf)
            else:
                ends.append(len(self.buf))
                self.mark_ns.append(now)
            return
        if not self.partial and end - start >= 5:
            compressed, length = _PREFIX.unpack_from(data, start)
            if start + 5 + length == end and not compressed:   # one whole message: no copy
                self._message(data[start + 5:end], now)
                return
        self.partial += memoryview(data)[start:end]
        last = 0
        for last, msg in iter_messages(self.partial):
            self._message(msg, now)
        if last:
            del self.partial[:last]

    def _message(self, msg: bytes, now: int) -> None:
        if self.on_message is not None:
            self.on_message(msg, now)
        elif self.messages is not None:
            self.messages.append(msg)
        else:
            self.queue.put_nowait(msg)


class Connection(asyncio.Protocol):
    """One HTTP/2 connection; open it with :meth:`open`."""

    def __init__(self, authority: str, window: int = DEFAULT_WINDOW_SIZE):
        self.loop = asyncio.get_running_loop()
        self.authority = authority
        self.window = window
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, Stream] = {}
        self.next_sid = 1
        self.recv_ns = 0                    # when the chunk being parsed was read
        self.send_window = DEFAULT_WINDOW   # what the server lets us send on the connection
        self.peer_initial_window = DEFAULT_WINDOW
        self.peer_max_frame = 16384
        self.peer_max_streams = 2**31
        self.goaway: tuple[int, int] | None = None   # (last stream id, error code)
        self.closed: BaseException | None = None
        self.settings_seen = self.loop.create_future()  # the server's SETTINGS seen
        self._rest = b""
        self._unacked = 0
        self._header_block: list[bytes] = []
        self._header_sid = 0
        self._header_flags = 0
        self._decoder = hpack.Decoder()
        self._decoder.max_allowed_table_size = 1 << 16
        self._blocks: dict[str, bytes] = {}
        self._blocked: dict[int, Stream] = {}
        self._wbuf: list[bytes] = []
        self._flush_scheduled = False

    @classmethod
    async def open(cls, url: str, window: int = DEFAULT_WINDOW_SIZE) -> "Connection":
        """Connect to ``http://host:port`` and send the preface; waits for the server's
        SETTINGS, so a connection that is not HTTP/2 fails here."""
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "") or not u.hostname or not u.port:
            raise ValueError(f"need http://host:port, not {url!r}")
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(
            lambda: cls(f"{u.hostname}:{u.port}", window), u.hostname, u.port)
        await asyncio.wait_for(asyncio.shield(conn.settings_seen), 10)
        return conn

    # ---- asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport
        settings = struct.pack(">HIHIHI", S_ENABLE_PUSH, 0, S_INITIAL_WINDOW_SIZE, self.window,
                               S_MAX_CONCURRENT_STREAMS, 1000)
        out = [PREFACE, frame(SETTINGS, 0, 0, settings)]
        if self.window > DEFAULT_WINDOW:
            out.append(frame(WINDOW_UPDATE, 0, 0, _U32.pack(self.window - DEFAULT_WINDOW)))
        transport.write(b"".join(out))

    def connection_lost(self, exc) -> None:
        self.closed = exc or ConnectionError("connection closed")
        err = GrpcError(UNAVAILABLE, f"connection lost: {self.closed}")
        for st in list(self.streams.values()):
            self._finish(st, err)
        if not self.settings_seen.done():
            self.settings_seen.set_exception(ConnectionError(str(self.closed)))

    def data_received(self, data: bytes) -> None:
        now = self.recv_ns = _monotonic_ns()
        if self._rest:
            data = self._rest + data
        n = len(data)
        pos = 0
        unpack = _FRAME.unpack_from
        streams = self.streams
        unacked = 0
        while n - pos >= 9:
            lt, flags, sid = unpack(data, pos)
            start = pos + 9
            end = start + (lt >> 8)
            if end > n:
                break
            pos = end
            if lt & 0xff == DATA:
                unacked += end - start
                st = streams.get(sid)
                if st is None:
                    continue        # a stream we already ended: its window is the connection's
                st.unacked += end - start
                if flags & PADDED:
                    end -= data[start]
                    start += 1
                if end > start:
                    st._deliver(data, start, end, now)
                if flags & END_STREAM:
                    st.remote_closed = True
                    self._finish(st, GrpcError(INTERNAL, "stream ended without trailers"))
                elif st.unacked >= self.window >> 1:
                    self._wbuf.append(frame(WINDOW_UPDATE, 0, sid, _U32.pack(st.unacked)))
                    st.unacked = 0
            else:
                self._control(lt & 0xff, flags, sid, data[start:end])
        self._rest = data[pos:] if pos < n else b""
        if unacked:
            self._unacked += unacked
            if self._unacked >= self.window >> 1:
                self._wbuf.append(frame(WINDOW_UPDATE, 0, 0, _U32.pack(self._unacked)))
                self._unacked = 0
        self._flush()

    # ---- frames other than DATA
    def _control(self, ftype: int, flags: int, sid: int, payload: bytes) -> None:
        if ftype == HEADERS or ftype == CONTINUATION:
            if ftype == HEADERS:
                if flags & PADDED:
                    payload = payload[1:len(payload) - payload[0]]
                if flags & PRIORITY_FLAG:
                    payload = payload[5:]
                self._header_sid, self._header_flags = sid, flags
                self._header_block = []
            self._header_block.append(payload)
            if flags & END_HEADERS:
                self._on_headers(self._header_sid, self._header_flags,
                                 b"".join(self._header_block))
        elif ftype == SETTINGS:
            if flags & ACK:
                return
            for i in range(0, len(payload) - 5, 6):
                key, value = struct.unpack_from(">HI", payload, i)
                if key == S_INITIAL_WINDOW_SIZE:
                    delta = value - self.peer_initial_window
                    self.peer_initial_window = value
                    for st in self.streams.values():
                        st.send_window += delta
                elif key == S_MAX_FRAME_SIZE:
                    self.peer_max_frame = value
                elif key == S_MAX_CONCURRENT_STREAMS:
                    self.peer_max_streams = value
            self._wbuf.append(frame(SETTINGS, ACK, 0))
            if not self.settings_seen.done():
                self.settings_seen.set_result(None)
            self._retry_blocked()
        elif ftype == PING:
            if not flags & ACK:
                self._wbuf.append(frame(PING, ACK, 0, payload))
        elif ftype == WINDOW_UPDATE:
            inc = _U32.unpack(payload)[0] & 0x7FFFFFFF
            if sid == 0:
                self.send_window += inc
            elif sid in self.streams:
                self.streams[sid].send_window += inc
            self._retry_blocked()
        elif ftype == RST_STREAM:
            st = self.streams.get(sid)
            if st is not None:
                code = _U32.unpack(payload)[0]
                self._finish(st, GrpcError(CANCELLED if code == 8 else UNAVAILABLE
                                           if code == 7 else INTERNAL,
                                           f"RST_STREAM error code {code}"))
        elif ftype == GOAWAY:
            last, code = struct.unpack_from(">II", payload)
            self.goaway = (last & 0x7FFFFFFF, code)
            err = GrpcError(UNAVAILABLE, f"GOAWAY error code {code}: {payload[8:]!r}")
            for st_sid, st in list(self.streams.items()):
                if st_sid > self.goaway[0]:
                    self._finish(st, err)
        # PRIORITY, PUSH_PROMISE (push is off) and unknown types: ignored

    def _on_headers(self, sid: int, flags: int, block: bytes) -> None:
        headers = dict(self._decoder.decode(block))     # always decode: HPACK state
        st = self.streams.get(sid)
        if st is None:
            return
        if st.headers is None:
            st.headers = headers
            status = headers.get(":status")
            if status != "200":
                self._finish(st, GrpcError(UNKNOWN, f"HTTP status {status}"))
                return
            if not flags & END_STREAM:
                return
        # trailers (or a trailers-only answer): the call's end
        st.trailers = headers
        st.remote_closed = True
        code = headers.get("grpc-status")
        if code is None:
            self._finish(st, GrpcError(UNKNOWN, "trailers without grpc-status"))
        elif code == "0":
            self._finish(st, None)
        else:
            msg = urllib.parse.unquote(headers.get("grpc-message", ""))
            self._finish(st, GrpcError(int(code), msg))

    def _finish(self, st: Stream, err: GrpcError | None) -> None:
        self.streams.pop(st.sid, None)
        self._blocked.pop(st.sid, None)
        if not st.done.done():
            st.done.set_result(err)
            if st.queue is not None:
                st.queue.put_nowait(None)

    # ---- sending
    def stream(self, path: str, on_message=None, raw: bool = False,
               collect: bool = False) -> Stream:
        """Open a call to ``path`` (e.g. ``/etcdserverpb.Watch/Watch``). Its messages go to
        ``on_message(msg, recv_ns)``, or (``raw``) to ``stream.buf``, or (``collect``) to
        ``stream.messages``, or else to a queue read with ``await stream.recv()``."""
        if self.closed is not None:
            raise GrpcError(UNAVAILABLE, f"connection lost: {self.closed}")
        if self.goaway is not None:
            raise GrpcError(UNAVAILABLE, f"server sent GOAWAY {self.goaway}")
        if len(self.streams) >= self.peer_max_streams:
            raise GrpcError(UNAVAILABLE, f"the server allows {self.peer_max_streams} streams")
        block = self._blocks.get(path)
        if block is None:
            block = self._blocks[path] = header_block(path, self.authority)
        sid = self.next_sid
        self.next_sid += 2
        st = Stream(self, sid, on_message, raw, collect)
        self.streams[sid] = st
        self._wbuf.append(frame(HEADERS, END_HEADERS, sid, block))
        self._want_flush()
        return st

    async def unary(self, path: str, request: bytes) -> bytes:
        """One request, one answer (the serialized response message)."""
        st = self.stream(path, collect=True)
        st.send(request, end=True)
        await st.wait()
        if len(st.messages) != 1:
            raise GrpcError(INTERNAL, f"{path}: {len(st.messages)} messages in a unary answer")
        return st.messages[0]

    def _drain(self, st: Stream) -> None:
        """Send what the windows allow of a stream's pending data."""
        while st.pending:
            data, end = st.pending[0]
            allow = min(self.send_window, st.send_window, self.peer_max_frame)
            if len(data) > allow:
                if allow <= 0:
                    break
                chunk, st.pending[0] = data[:allow], (data[allow:], end)
                flags = 0
            else:
                chunk, flags = data, END_STREAM if end else 0
                st.pending.popleft()
            self.send_window -= len(chunk)
            st.send_window -= len(chunk)
            self._wbuf.append(_FRAME.pack(len(chunk) << 8 | DATA, flags, st.sid))
            self._wbuf.append(chunk)
        if not st.pending:
            self._blocked.pop(st.sid, None)
        self._want_flush()

    def _retry_blocked(self) -> None:
        for st in list(self._blocked.values()):
            self._drain(st)

    def _want_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._wbuf and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self._wbuf))
        self._wbuf.clear()

    def close(self) -> None:
        self._flush()
        if self.transport is not None:
            self.transport.close()


def header_block(path: str, authority: str) -> bytes:
    """The HPACK block for a gRPC call to ``path``. Every field is either fully indexed in
    the static table or a never-indexed literal, so the block adds nothing to the server's
    dynamic table and the same bytes stay valid for every call on the connection."""
    fields = [(":method", "POST"), (":scheme", "http"), (":path", path),
              (":authority", authority), ("content-type", "application/grpc"),
              ("te", "trailers")]
    enc = hpack.Encoder()
    return enc.encode([hpack.NeverIndexedHeaderTuple(k, v) for k, v in fields])


def install_uvloop() -> bool:
    """Use uvloop's event loop when it is installed (fastkv depends on it); True if so."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True
