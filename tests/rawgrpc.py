"""One gRPC call over a raw HTTP/2 connection whose flow control the test drives.

grpc's own clients read (and grant flow-control window) on their own schedule, so a
test cannot make one "stop reading" precisely. This client can: it opens one TCP
connection with one stream, and the server may send on that stream only as much as
the client has granted with WINDOW_UPDATE. ``reading=False`` grants nothing more (a
watch consumer that stopped reading: the server's data piles up on its side), and
``socket_rcvbuf`` keeps the kernel's share of the backlog small. Frames are parsed by
:meth:`RawGrpcCall.pump` (call it from one thread); the messages, the trailers and a
RST_STREAM are recorded as they come.
"""
from __future__ import annotations

import socket
import threading
import time

import hpack

DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
S_ENABLE_PUSH, S_INITIAL_WINDOW_SIZE = 2, 4
SID = 1


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return (len(payload).to_bytes(3, "big") + bytes((ftype, flags)) + sid.to_bytes(4, "big")
            + payload)


class RawGrpcCall:
    """A streaming gRPC call (``path``) on its own connection to ``host:port``."""

    def __init__(self, host: str, port: int, path: str, *, window: int = 65535,
                 socket_rcvbuf: int | None = None, timeout: float = 10.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if socket_rcvbuf is not None:   # before connect: it bounds the TCP window offered
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, socket_rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.window = window
        self.reading = True          # False: no more WINDOW_UPDATE for the stream
        self.messages: list[bytes] = []
        self.data_bytes = 0          # DATA payload bytes received on the stream
        self.trailers: dict | None = None
        self.reset_code: int | None = None   # the server's RST_STREAM error code
        self.goaway = False
        self.closed = False          # the server closed the connection
        self._buf = b""
        self._msg_buf = bytearray()
        self._ungranted = 0
        self._dec = hpack.Decoder()
        self._lock = threading.Lock()
        settings = (S_ENABLE_PUSH.to_bytes(2, "big") + (0).to_bytes(4, "big")
                    + S_INITIAL_WINDOW_SIZE.to_bytes(2, "big") + window.to_bytes(4, "big"))
        block = hpack.Encoder().encode([
            (":method", "POST"), (":scheme", "http"), (":path", path),
            (":authority", f"{host}:{port}"), ("content-type", "application/grpc"),
            ("te", "trailers")])
        # the connection's window is opened wide: only the stream's window throttles
        self._send(PREFACE + frame(SETTINGS, 0, 0, settings)
                   + frame(WINDOW_UPDATE, 0, 0, (1 << 30).to_bytes(4, "big"))
                   + frame(HEADERS, END_HEADERS, SID, block))

    def _send(self, data: bytes) -> None:
        with self._lock:
            self.sock.sendall(data)

    def send_message(self, raw: bytes, end: bool = False) -> None:
        """One request message (serialized protobuf) on the stream."""
        self._send(frame(DATA, END_STREAM if end else 0, SID,
                         b"\0" + len(raw).to_bytes(4, "big") + raw))

    def resume(self) -> None:
        """Read again: give back every byte held so far, and keep doing so."""
        self.reading = True
        self._grant()

    def _grant(self) -> None:
        n, self._ungranted = self._ungranted, 0
        if n:
            self._send(frame(WINDOW_UPDATE, 0, SID, n.to_bytes(4, "big")))

    @property
    def ended(self) -> bool:
        return self.trailers is not None or self.reset_code is not None or self.closed

    def pump(self, seconds: float = 0.1) -> bool:
        """Read and handle whatever frames arrive within ``seconds``. False once the call
        or the connection has ended."""
        if self.ended:
            return False
        self.sock.settimeout(seconds)
        try:
            data = self.sock.recv(1 << 16)
        except socket.timeout:
            return True
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return False
        buf = self._buf + data
        pos = 0
        while len(buf) - pos >= 9:
            n = int.from_bytes(buf[pos:pos + 3], "big")
            if len(buf) - pos < 9 + n:
                break
            ftype, flags = buf[pos + 3], buf[pos + 4]
            sid = int.from_bytes(buf[pos + 5:pos + 9], "big") & 0x7FFFFFFF
            payload = buf[pos + 9:pos + 9 + n]
            pos += 9 + n
            self._on_frame(ftype, flags, sid, payload)
        self._buf = buf[pos:]
        return not self.ended

    def _on_frame(self, ftype: int, flags: int, sid: int, payload: bytes) -> None:
        if ftype == SETTINGS and not flags & ACK:
            self._send(frame(SETTINGS, ACK, 0))
        elif ftype == PING and not flags & ACK:
            self._send(frame(PING, ACK, 0, payload))
        elif ftype == GOAWAY:
            self.goaway = True
        elif sid != SID:
            return
        elif ftype == DATA:
            if not payload:
                return
            self.data_bytes += len(payload)
            # the connection's window is always given back: only the stream's throttles
            self._send(frame(WINDOW_UPDATE, 0, 0, len(payload).to_bytes(4, "big")))
            self._ungranted += len(payload)
            if self.reading:
                self._grant()
            self._take_messages(payload)
        elif ftype == HEADERS:
            headers = dict(self._dec.decode(payload, raw=True))
            if flags & END_STREAM:
                self.trailers = headers
        elif ftype == RST_STREAM:
            self.reset_code = int.from_bytes(payload[:4], "big")

    def _take_messages(self, payload: bytes) -> None:
        buf = self._msg_buf
        buf += payload
        while len(buf) >= 5:
            size = int.from_bytes(buf[1:5], "big")
            if len(buf) < 5 + size:
                return
            self.messages.append(bytes(buf[5:5 + size]))
            del buf[:5 + size]

    def pump_until(self, predicate, timeout: float) -> bool:
        """Pump until ``predicate()`` holds (True) or the deadline or the end (False)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline or not self.pump(0.05):
                return predicate()
        return True

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
