"""TLS listeners: accept, handshake in a task of its own, then hand over to the protocol.

``loop.create_server(ssl=...)`` drops a failed handshake silently (uvloop and
asyncio log it only in debug mode), so an operator never learns why a client or
member was refused. Here each accepted socket is handed to
``loop.connect_accepted_socket(ssl=...)``, whose failure we see: it is logged in
one line as etcd does (``rejected connection from "1.2.3.4:5678" (error "...",
ServerName "")``), without a traceback, and the socket closed. Plaintext sent to
a TLS port is refused the same way (OpenSSL: "http request" / "wrong version
number").

An optional synchronous ``check(transport)`` runs after the handshake and before
the protocol sees the connection (a wrapper protocol calls it from
``connection_made``, then steps aside with ``set_protocol``): a reason string
refuses the connection.

``plain_too``: the address is also an http:// URL (etcd's cmux serves both on one
port); a connection whose first byte is not a TLS handshake record (0x16) is
served in plaintext.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable

from fastkv.tlsconfig import HANDSHAKE_TIMEOUT

TLS_HANDSHAKE_RECORD = 0x16


# OpenSSL's reasons for the common refusals, in Go's words (etcd logs these).
_GO_REASONS = {
    "HTTP_REQUEST": "tls: first record does not look like a TLS handshake",
    "WRONG_VERSION_NUMBER": "tls: first record does not look like a TLS handshake",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "tls: client didn't provide a certificate",
    "unable to get local issuer certificate": "x509: certificate signed by unknown authority",
    "self-signed certificate": "x509: certificate signed by unknown authority",
    "self signed certificate": "x509: certificate signed by unknown authority",
    "certificate has expired": "x509: certificate has expired or is not yet valid",
    "certificate is not yet valid": "x509: certificate has expired or is not yet valid",
    "unsupported certificate purpose": "x509: certificate specifies an incompatible key usage",
}


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        text = exc.verify_message or exc.reason or str(exc)
        return _GO_REASONS.get(text, text)
    if isinstance(exc, ssl.SSLError):
        text = exc.reason or str(exc)
        return _GO_REASONS.get(text, text.lower().replace("_", " "))
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "TLS handshake timeout"
    return str(exc) or type(exc).__name__


class _Checked(asyncio.Protocol):
    """Runs the post-handshake check, then installs the real protocol."""

    def __init__(self, app, check, on_reject):
        self.app = app
        self.check = check
        self.on_reject = on_reject

    def connection_made(self, transport):
        err = self.check(transport)
        if err:
            self.on_reject(transport, err)
            transport.abort()
            return
        transport.set_protocol(self.app)
        self.app.connection_made(transport)

    def data_received(self, data):   # only after a refusal, before the abort lands
        pass

    def connection_lost(self, exc):
        pass


class TlsListener:
    """What asyncio.Server offers that we use: ``sockets``, ``close()``, ``wait_closed()``."""

    def __init__(self, sock: socket.socket, protocol_factory: Callable, ctx: ssl.SSLContext, *,
                 check=None, plain_too: bool = False, logger: logging.Logger | None = None,
                 handshake_timeout: float = HANDSHAKE_TIMEOUT):
        self.loop = asyncio.get_running_loop()
        self.sock = sock
        self.sockets = [sock]
        self.factory = protocol_factory
        self.ctx = ctx
        self.check = check
        self.plain_too = plain_too
        self.log = logger or logging.getLogger("fastkv.tls")
        self.handshake_timeout = handshake_timeout
        self._pending: set[asyncio.Task] = set()
        self._closed = False
        self._accepting = self.loop.create_task(self._accept_loop(), name="tls-accept")

    def _protocol(self):
        app = self.factory()
        if self.check is None:
            return app
        return _Checked(app, self.check, self._rejected_after)

    def _rejected_after(self, transport, reason: str) -> None:
        peer = transport.get_extra_info("peername")
        self._log_reject(peer, reason)

    def _log_reject(self, peer, reason: str) -> None:
        where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.log.info('rejected connection from "%s" (error "%s", ServerName "")', where, reason)

    async def _accept_loop(self) -> None:
        while not self._closed:
            try:
                conn, addr = await self.loop.sock_accept(self.sock)
            except asyncio.CancelledError:
                return
            except OSError as exc:
                if self._closed:
                    return
                self.log.warning("accept failed on %s: %s", self.sock.getsockname(), exc)
                await asyncio.sleep(0.1)   # EMFILE and friends: do not spin
                continue
            task = self.loop.create_task(self._serve(conn, addr))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _first_byte(self, conn: socket.socket) -> int | None:
        """The first byte the client sent (left in the socket), None if it closed."""
        fut = self.loop.create_future()
        fd = conn.fileno()
        self.loop.add_reader(fd, lambda: fut.done() or fut.set_result(None))
        try:
            await asyncio.wait_for(fut, self.handshake_timeout)
        finally:
            self.loop.remove_reader(fd)
        data = conn.recv(1, socket.MSG_PEEK)
        return data[0] if data else None

    async def _serve(self, conn: socket.socket, addr) -> None:
        conn.setblocking(False)
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        # Once the socket is handed to connect_accepted_socket its transport owns (and
        # closes) it, also on failure; closing it here too could close a reused fd.
        handed = False
        try:
            if self.plain_too:
                first = await self._first_byte(conn)
                if first is None:
                    conn.close()
                    return
                if first != TLS_HANDSHAKE_RECORD:
                    handed = True
                    await self.loop.connect_accepted_socket(self.factory, conn)
                    return
            handed = True
            await self.loop.connect_accepted_socket(
                self._protocol, conn, ssl=self.ctx, ssl_handshake_timeout=self.handshake_timeout)
        except asyncio.CancelledError:
            if not handed:
                conn.close()
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
            self._log_reject(addr, _reason(exc))
            if not handed:
                conn.close()
        except Exception:   # noqa: BLE001 - a bug must not end the accept loop
            self.log.exception("serving a TLS connection from %s failed", addr)
            if not handed:
                conn.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._accepting.cancel()
        for t in list(self._pending):
            t.cancel()
        try:
            self.sock.close()
        except OSError:
            pass

    async def wait_closed(self) -> None:
        tasks = [self._accepting, *self._pending]
        await asyncio.gather(*tasks, return_exceptions=True)


async def start_tls_server(protocol_factory: Callable, host: str, port: int,
                           ctx: ssl.SSLContext, *, check=None, plain_too: bool = False,
                           logger: logging.Logger | None = None,
                           backlog: int = 4096) -> TlsListener:
    """Listen on host:port (reuse_address, as the plaintext listeners) and serve TLS."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    if not infos:
        raise OSError(f"cannot resolve {host}")
    family, stype, proto, _cn, address = infos[0]
    sock = socket.socket(family, stype, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"error while attempting to bind on address "
                                 f"{address!r}: {exc.strerror}") from None
    return TlsListener(sock, protocol_factory, ctx, check=check, plain_too=plain_too,
                       logger=logger)
