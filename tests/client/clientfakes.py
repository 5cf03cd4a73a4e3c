"""Network stand-ins for the client tests, on loopback.

- :class:`DroppingServer`: speaks just enough HTTP/2 for a gRPC client to send it a
  whole request, records the request's method, then drops the connection. To the
  client the request reached a server and its outcome is unknown (the ambiguous case
  a write must not be resent in).
- :class:`TcpProxy`: forwards a port to a real member until ``cut()``, after which
  the port refuses connections (a member that became unreachable, without stopping
  the member).
"""
from __future__ import annotations

import socket
import threading

import hpack

DATA, HEADERS, SETTINGS, PING = 0, 1, 4, 6
END_STREAM, ACK = 0x1, 0x1
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return (len(payload).to_bytes(3, "big") + bytes((ftype, flags)) + sid.to_bytes(4, "big")
            + payload)


class DroppingServer:
    """Accepts gRPC calls and drops each connection once a request is complete."""

    def __init__(self):
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[str] = []   # the :path of every complete request
        self._lock = threading.Lock()
        self._closed = False
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        dec = hpack.Decoder()
        paths: dict[int, str] = {}
        buf = b""
        try:
            conn.sendall(_frame(SETTINGS, 0, 0))
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
                if buf.startswith(PREFACE):
                    buf = buf[len(PREFACE):]
                while len(buf) >= 9:
                    n = int.from_bytes(buf[:3], "big")
                    if len(buf) < 9 + n:
                        break
                    ftype, flags = buf[3], buf[4]
                    sid = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
                    payload, buf = buf[9:9 + n], buf[9 + n:]
                    if ftype == SETTINGS and not flags & ACK:
                        conn.sendall(_frame(SETTINGS, ACK, 0))
                    elif ftype == PING and not flags & ACK:
                        conn.sendall(_frame(PING, ACK, 0, payload))
                    elif ftype == HEADERS:
                        headers = dict(dec.decode(payload))
                        paths[sid] = headers.get(":path", "?")
                    if ftype in (HEADERS, DATA) and flags & END_STREAM and sid in paths:
                        with self._lock:
                            self.requests.append(paths[sid])
                        return   # the request is in; drop the connection
        except OSError:
            return
        finally:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def count(self, method: str) -> int:
        """How many complete requests for `method` (e.g. "KV/Put") came in."""
        with self._lock:
            return sum(p.endswith("." + method) for p in self.requests)

    def close(self) -> None:
        self._closed = True
        self._sock.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.close()
            except OSError:
                pass


class TcpProxy:
    """127.0.0.1:port -> upstream. pause() drops every connection and closes new ones at
    once (the member looks unreachable) until resume(); cut() also stops listening."""

    def __init__(self, upstream_url: str):
        host, port = upstream_url.rsplit("//", 1)[-1].rsplit(":", 1)
        self._upstream = (host, int(port))
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._paused = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                paused = self._paused
            if paused:
                down.close()
                continue
            try:
                up = socket.create_connection(self._upstream, timeout=5)
                up.settimeout(None)
            except OSError:
                down.close()
                continue
            with self._lock:
                self._socks += [down, up]
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def pause(self) -> None:
        with self._lock:
            self._paused = True
            socks, self._socks = self._socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def resume(self) -> None:
        with self._lock:
            self._paused = False

    def cut(self) -> None:
        """Drop every connection and refuse new ones."""
        self.pause()
        self._sock.close()

    close = cut
