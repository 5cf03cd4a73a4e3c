"""The peer transport: Raft messages between members, over TCP.

Connections (all start with a handshake, see below):

- **stream**: one persistent connection per peer, dialed lazily by the sender
  and re-dialed with exponential back-off (50 ms doubling to 1 s) after a
  failure. One writer task per peer drains everything :meth:`PeerTransport.send`
  queued since its last write into FRAME_MSGS frames (the Cython codec,
  csrc/peercodec.pyx) and writes them at once. The listener decodes each frame
  into a batch and calls ``on_message`` for each message.
- **snapshot**: a MSG_SNAP message travels with its snapshot file on a
  connection of its own: FRAME_SNAP_BEGIN (the message and the file size),
  FRAME_SNAP_CHUNK frames, FRAME_SNAP_END (size and CRC32C of the whole
  file). The receiver writes a temp file in ``snap_dir``, checks size and CRC,
  fsyncs, renames it to the Snapshotter's name for that term/index, and only
  then delivers the message and answers FRAME_SNAP_DONE. The sender reports
  the outcome to the local core as MSG_SNAP_STATUS.
- **call**: a request/response channel (:meth:`register`, :meth:`call`) for
  what the server must ask another member (lease forwarding, member lists).
  Payloads and results are marshal-able values.

Handshake: the dialer sends FRAME_HELLO (magic, protocol version, cluster ID,
its member ID, the member ID it wants). The listener answers FRAME_HELLO_OK
(its cluster ID and member ID), or FRAME_ERROR with the reason, logs it and
closes. A hello with cluster ID 0 comes from a member that does not know its
cluster yet (``--initial-cluster-state existing``, see :func:`fetch_cluster`):
such a connection may only make calls of kinds registered as public.

Bad input: an oversized, truncated or garbled frame closes its connection
(logged, FRAME_ERROR sent back with the reason); nothing of that frame is
delivered. Messages whose ``frm`` is not the handshaken peer or whose ``to``
is not this member are dropped.

Local reports to the core (MSG_UNREACHABLE, MSG_SNAP_STATUS) are delivered
through ``on_message`` from a fresh event-loop callback, never from inside
:meth:`send`, so the caller's Ready handling is not re-entered.
"""
from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import marshal
import os
import struct
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from fastkv._crc32c import crc32c
from fastkv.raft import _peercodec as codec
from fastkv.raft._peercodec import (
    DEFAULT_MAX_FRAME,
    FRAME_CALL,
    FRAME_ERROR,
    FRAME_HELLO,
    FRAME_HELLO_OK,
    FRAME_MSGS,
    FRAME_REPLY,
    FRAME_SNAP_BEGIN,
    FRAME_SNAP_CHUNK,
    FRAME_SNAP_DONE,
    FRAME_SNAP_END,
)
from fastkv.raft.messages import (
    LOCAL_MESSAGES,
    MSG_SNAP,
    MSG_SNAP_STATUS,
    MSG_UNREACHABLE,
    Message,
)
from fastkv.storage.snapshot import snapshot_name
from fastkv.storage.wal import fsync_dir

MAGIC = b"FKVP"
PROTOCOL_VERSION = 1
HELLO = struct.Struct("<4sHQQQ")     # magic, version, cluster ID, from, to
HELLO_OK = struct.Struct("<QQ")      # cluster ID, member ID of the listener
SNAP_BEGIN = struct.Struct("<Q")     # file size, then a FRAME_MSGS body of the MSG_SNAP
SNAP_END = struct.Struct("<QI")      # file size, crc32c of the whole file

QUEUE_CAP = 4096                 # messages queued per peer before send() drops (etcd: 4096)
SNAP_CHUNK = 512 * 1024
BACKOFF_MIN = 0.05
BACKOFF_MAX = 1.0
READ_LIMIT = 1 << 20             # StreamReader buffer before pausing the socket
SNAP_DONE_TIMEOUT = 60.0         # the receiver fsyncs a possibly large file

_log = logging.getLogger("fastkv.transport")
_new_call_id = itertools.count(1).__next__


class RemoteError(Exception):
    """A call's handler on the other member raised; the message is its error."""


# What a member tells a removed member that dials it (etcd's text).
REMOVED_REASON = "the member has been permanently removed from the cluster"


class HandshakeError(ConnectionError):
    """The other side refused the connection (the reason is the message)."""


def parse_peer_url(url: str) -> tuple[str, int, bool]:
    """(host, port, tls) of an http(s)://host:port peer URL."""
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname or u.port is None:
        raise ValueError(f"peer URL must be http(s)://host:port, not {url!r}")
    return u.hostname, u.port, u.scheme == "https"


async def read_frame(reader: asyncio.StreamReader, max_frame: int) -> tuple[int, bytes]:
    """(frame type, body). ValueError: oversized or unknown frame;
    asyncio.IncompleteReadError: the peer closed (``partial`` empty at a frame
    boundary, i.e. a clean close) or cut a frame."""
    head = await reader.readexactly(codec.FRAME_HEADER_SIZE)
    length, ftype = codec.parse_frame_header(head, max_frame)
    if not length:
        return ftype, b""
    try:
        body = await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise ValueError(f"truncated frame: got {len(exc.partial)} of {length} bytes") from None
    return ftype, body


def _error_frame(reason: str) -> bytes:
    return codec.encode_frame(FRAME_ERROR, reason.encode("utf-8", "replace")[:4096])


def _close(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        try:
            writer.close()
        except Exception:  # noqa: BLE001  (already closed or loop gone)
            pass


async def _dial(urls: list[str], hello: bytes, *, max_frame: int, timeout: float,
                client_ssl=None, tls_check=None
                ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int, int]:
    """Connect to the first URL that accepts a TCP connection and do the
    handshake. Returns (reader, writer, their cluster ID, their member ID).
    A refused handshake raises HandshakeError at once (the other URLs are
    the same member). For https URLs, ``await tls_check(transport, False)``
    may refuse the other member's certificate (a reason string: HandshakeError)."""
    last: BaseException = ConnectionError("no peer URLs")
    for url in urls:
        try:
            host, port, tls = parse_peer_url(url)
        except ValueError as exc:
            last = exc
            continue
        if tls and client_ssl is None:
            last = ConnectionError(f"{url}: https peer URL but no client TLS configured")
            continue
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=client_ssl if tls else None,
                                        limit=READ_LIMIT), timeout)
        except (TimeoutError, OSError) as exc:
            last = exc if isinstance(exc, OSError) else ConnectionError(
                f"{url}: dial timed out after {timeout}s")
            continue
        try:
            if tls and tls_check is not None:
                reason = await tls_check(writer.transport, False)
                if reason:
                    raise HandshakeError(f"{url}: {reason}")
            writer.write(codec.encode_frame(FRAME_HELLO, hello))
            ftype, body = await asyncio.wait_for(read_frame(reader, max_frame), timeout)
            if ftype == FRAME_ERROR:
                raise HandshakeError(body.decode("utf-8", "replace"))
            if ftype != FRAME_HELLO_OK or len(body) != HELLO_OK.size:
                raise HandshakeError(f"unexpected answer to hello (frame type {ftype})")
            cid, mid = HELLO_OK.unpack(body)
            return reader, writer, cid, mid
        except HandshakeError:
            _close(writer)
            raise
        except (TimeoutError, OSError, ValueError, asyncio.IncompleteReadError) as exc:
            _close(writer)
            last = ConnectionError(f"{url}: handshake failed: {exc or type(exc).__name__}")
        except BaseException:
            _close(writer)
            raise
    raise last


async def fetch_cluster(urls: list[str], kind: str = "members", payload: Any = None, *,
                        timeout: float = 5.0, member_id: int = 0, client_ssl=None,
                        tls_check=None, max_frame: int = DEFAULT_MAX_FRAME) -> tuple[int, Any]:
    """Ask a member of a cluster whose ID we do not know yet (hello with cluster
    ID 0, so only public kinds are answered). Returns (cluster ID, result)
    from the first URL that answers; raises the last error if none does."""
    last: BaseException = ConnectionError("no URLs to fetch the cluster from")
    hello = HELLO.pack(MAGIC, PROTOCOL_VERSION, 0, member_id, 0)
    for url in urls:
        writer = None
        try:
            async with asyncio.timeout(timeout):
                reader, writer, cid, _mid = await _dial(
                    [url], hello, max_frame=max_frame, timeout=timeout, client_ssl=client_ssl,
                    tls_check=tls_check)
                writer.write(codec.encode_frame(FRAME_CALL, marshal.dumps((1, kind, payload))))
                ftype, body = await read_frame(reader, max_frame)
                if ftype == FRAME_ERROR:
                    raise RemoteError(body.decode("utf-8", "replace"))
                if ftype != FRAME_REPLY:
                    raise ConnectionError(f"{url}: unexpected frame type {ftype}")
                call_id, ok, value = _loads_reply(body)
                if not ok:
                    raise RemoteError(value)
                return cid, value
        except (TimeoutError, OSError, ValueError, RemoteError, asyncio.IncompleteReadError) as exc:
            last = exc
            _log.debug("fetching %s from %s failed: %s", kind, url, exc)
        finally:
            _close(writer)
    raise last


def _loads_reply(body: bytes) -> tuple[int, bool, Any]:
    try:
        reply = marshal.loads(body)
    except (ValueError, EOFError, TypeError) as exc:
        raise ValueError(f"garbled reply: {exc}") from None
    if (not isinstance(reply, tuple) or len(reply) != 3 or not isinstance(reply[0], int)
            or not isinstance(reply[1], bool) or (not reply[1] and not isinstance(reply[2], str))):
        raise ValueError("garbled reply")
    return reply


class _Peer:
    __slots__ = (
        "call",
        "call_lock",
        "failures",
        "idle",
        "id",
        "inbound",
        "last_error",
        "queue",
        "reported",
        "retry_at",
        "snap_tasks",
        "stream",
        "stream_task",
        "task",
        "urls",
        "wake",
    )

    def __init__(self, pid: int, urls: list[str]):
        self.id = pid
        self.urls = list(urls)
        self.queue: collections.deque[Message] = collections.deque()
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None          # the writer
        self.idle = False             # the writer waits for messages, its stream drained
        self.stream: asyncio.StreamWriter | None = None
        self.stream_task: asyncio.Task | None = None   # watches the stream for EOF/errors
        self.failures = 0
        self.retry_at = 0.0           # no dial before this loop time (back-off)
        self.reported = False         # MSG_UNREACHABLE reported since the last failure
        self.last_error = ""
        self.inbound: set[asyncio.Task] = set()
        self.snap_tasks: set[asyncio.Task] = set()
        self.call: _CallConn | None = None
        self.call_lock = asyncio.Lock()


class _CallConn:
    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer
        self.pending: dict[int, asyncio.Future] = {}
        self.task: asyncio.Task | None = None
        self.closed = False

    def fail(self, exc: BaseException) -> None:
        self.closed = True
        _close(self.writer)
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(exc)
        self.pending.clear()


class PeerTransport:
    def __init__(self, member_id: int, cluster_id: int, on_message: Callable[[Message], None], *,
                 snap_dir: str, snapshot_path: Callable[[int], str | None], ssl=None,
                 client_ssl=None, tls_check=None, max_frame: int = DEFAULT_MAX_FRAME,
                 dial_timeout: float = 1.0, queue_cap: int = QUEUE_CAP,
                 logger: logging.Logger | None = None):
        self.member_id = member_id
        self.cluster_id = cluster_id
        self.on_message = on_message
        self.snap_dir = snap_dir
        self.snapshot_path = snapshot_path
        self.ssl = ssl                  # server-side SSLContext for https listen URLs
        self.client_ssl = client_ssl    # client-side SSLContext for https peer URLs
        # async (transport, server_side) -> refusal reason or None: etcd's checks of the
        # other member's certificate after a TLS handshake (fastkv.tlsconfig.ServerTLS)
        self.tls_check = tls_check
        self.max_frame = max_frame
        self.dial_timeout = dial_timeout
        self.queue_cap = queue_cap
        self.log = logger or _log
        # Membership hooks: is_removed(id) says a member was removed (its connections
        # are refused with REMOVED_REASON); on_removed() runs when a peer refuses us so.
        self.is_removed: Callable[[int], bool] = lambda _id: False
        self.on_removed: Callable[[], None] | None = None
        self.drop_to: set[int] = set()      # fault injection: messages to these are dropped
        self.drop_from: set[int] = set()    # ... and from these
        self.listen_addresses: list[tuple[str, int]] = []
        self._peers: dict[int, _Peer] = {}
        self._handlers: dict[str, Callable[[Any], Awaitable[Any]]] = {}
        self._public: set[str] = set()
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: set[asyncio.Task] = set()
        self._started = False
        self._closed = False

    # ---- membership ----------------------------------------------------------------

    @property
    def peers(self) -> dict[int, list[str]]:
        return {pid: list(p.urls) for pid, p in self._peers.items()}

    def set_cluster_id(self, cid: int) -> None:
        self.cluster_id = cid

    def add_peer(self, pid: int, urls: list[str]) -> None:
        if pid == self.member_id:
            return
        if pid in self._peers:
            self.update_peer(pid, urls)
            return
        self._peers[pid] = _Peer(pid, urls)

    def update_peer(self, pid: int, urls: list[str]) -> None:
        peer = self._peers.get(pid)
        if peer is None:
            self.add_peer(pid, urls)
            return
        if list(urls) == peer.urls:
            return
        peer.urls = list(urls)
        peer.failures, peer.retry_at = 0, 0.0
        self._close_stream(peer)
        if peer.call is not None:
            peer.call.fail(ConnectionError(f"member {pid:x} changed its peer URLs"))
            peer.call = None

    def remove_peer(self, pid: int) -> None:
        peer = self._peers.pop(pid, None)
        if peer is None:
            return
        peer.queue.clear()
        self._close_stream(peer)
        if peer.call is not None:
            peer.call.fail(ConnectionError(f"member {pid:x} was removed"))
            peer.call = None
        for t in [peer.task, *peer.inbound, *peer.snap_tasks]:
            if t is not None:
                t.cancel()

    # ---- lifecycle -----------------------------------------------------------------

    async def start(self, listen_urls: list[str]) -> None:
        try:
            for url in listen_urls:
                host, port, tls = parse_peer_url(url)
                if tls and self.ssl is None:
                    raise ValueError(f"{url}: https listen URL but no TLS configured")
                if tls:   # refused handshakes are logged (fastkv.tlsserver)
                    from fastkv.tlsserver import start_tls_server
                    loop = asyncio.get_running_loop()

                    def factory():
                        reader = asyncio.StreamReader(limit=READ_LIMIT, loop=loop)
                        return asyncio.StreamReaderProtocol(reader, self._handle_conn, loop=loop)

                    server = await start_tls_server(factory, host, port, self.ssl,
                                                    logger=self.log)
                else:
                    server = await asyncio.start_server(
                        self._handle_conn, host, port, limit=READ_LIMIT, reuse_address=True)
                self._servers.append(server)
                for sock in server.sockets:
                    self.listen_addresses.append(sock.getsockname()[:2])
        except BaseException:
            await self.stop()
            raise
        self._started = True
        self.log.info("member %x listening for peers on %s", self.member_id,
                      ", ".join(f"{h}:{p}" for h, p in self.listen_addresses))

    async def stop(self) -> None:
        self._closed = True
        for server in self._servers:
            server.close()
        for peer in self._peers.values():
            self._close_stream(peer)
            if peer.call is not None:
                peer.call.fail(ConnectionError("transport stopped"))
                peer.call = None
            if peer.task is not None:
                self._tasks.add(peer.task)
        tasks = [t for t in self._tasks if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for server in self._servers:
            try:
                await server.wait_closed()
            except Exception:  # noqa: BLE001
                pass
        self._servers.clear()
        await asyncio.sleep(0)  # let the closed transports release their sockets

    def _spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---- sending -------------------------------------------------------------------

    def send(self, msgs: list[Message]) -> None:
        """Queue msgs for their peers. Never blocks, never raises."""
        if self._closed:
            return
        try:
            woken = None
            peers = self._peers
            for m in msgs:
                peer = peers.get(m.to)
                if peer is None:
                    self.log.debug("dropped %r: member %x is not a peer", m, m.to)
                    continue
                if m.to in self.drop_to:
                    if m.type == MSG_SNAP:
                        self._report_snapshot(peer.id, True)
                    continue
                if m.type == MSG_SNAP:
                    self._start_snapshot(peer, m)
                    continue
                if peer.stream is None and peer.retry_at:
                    # Backing off after a failed dial: the message cannot be delivered.
                    if asyncio.get_running_loop().time() < peer.retry_at:
                        self._report_unreachable(peer)
                        continue
                if len(peer.queue) >= self.queue_cap:
                    self._report_unreachable(peer)
                    continue
                peer.queue.append(m)
                if woken is None:
                    woken = [peer]
                elif peer not in woken:
                    woken.append(peer)
            if woken:
                for peer in woken:
                    if peer.idle:
                        self._write_now(peer)
                    if peer.task is None:
                        peer.task = self._spawn(self._writer(peer), f"peer-writer-{peer.id:x}")
                    peer.wake.set()
        except Exception:
            self.log.exception("peer transport: send failed")

    def _write_now(self, peer: _Peer) -> None:
        """Write what this send() queued for an idle peer (its writer waiting, its stream
        drained) at once, in one frame: one loop turn less per message on the commit
        path. The writer is woken all the same: more sends in this loop turn queue up
        for it (not written one by one), and it handles a stream that went away."""
        stream = peer.stream
        if stream is None or stream.is_closing() or stream.transport.get_write_buffer_size():
            return
        msgs = list(peer.queue)
        frames, too_big = codec.frame_messages(msgs, self.max_frame)
        if too_big or len(frames) != 1:
            return                 # the writer logs and drops what cannot be framed
        try:
            stream.write(frames[0])
        except (OSError, RuntimeError):
            return
        peer.queue.clear()
        peer.idle = False          # until the writer waits again
        peer.reported = False

    def _local(self, msg: Message) -> None:
        if self._closed:
            return
        try:
            self.on_message(msg)
        except Exception:
            self.log.exception("on_message failed for %r", msg)

    def _report_unreachable(self, peer: _Peer) -> None:
        if peer.reported:
            return
        peer.reported = True
        asyncio.get_running_loop().call_soon(
            self._local, Message(MSG_UNREACHABLE, to=self.member_id, frm=peer.id))

    def _report_snapshot(self, pid: int, reject: bool) -> None:
        asyncio.get_running_loop().call_soon(
            self._local, Message(MSG_SNAP_STATUS, to=self.member_id, frm=pid, reject=reject))

    def _hello(self, to: int) -> bytes:
        return HELLO.pack(MAGIC, PROTOCOL_VERSION, self.cluster_id, self.member_id, to)

    async def _dial_peer(self, peer: _Peer):
        return await _dial(peer.urls, self._hello(peer.id), max_frame=self.max_frame,
                           timeout=self.dial_timeout, client_ssl=self.client_ssl,
                           tls_check=self.tls_check)

    def _close_stream(self, peer: _Peer) -> None:
        if peer.stream_task is not None:
            peer.stream_task.cancel()
            peer.stream_task = None
        _close(peer.stream)
        peer.stream = None

    def _failed(self, peer: _Peer, what: str, exc: BaseException) -> None:
        """A dial or a write failed: back off, drop what is queued, tell the core."""
        loop = asyncio.get_running_loop()
        self._close_stream(peer)
        peer.failures += 1
        delay = min(BACKOFF_MAX, BACKOFF_MIN * (1 << min(peer.failures - 1, 16)))
        peer.retry_at = loop.time() + delay
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, HandshakeError) and reason == REMOVED_REASON and self.on_removed:
            self.on_removed()
        if isinstance(exc, HandshakeError):
            reason = f"member {peer.id:x} rejected the connection: {reason}"
        level = logging.WARNING if reason != peer.last_error else logging.DEBUG
        self.log.log(level, "%s member %x failed (retry in %.2fs): %s", what, peer.id, delay,
                     reason)
        peer.last_error = reason
        peer.queue.clear()
        peer.reported = False
        self._report_unreachable(peer)

    async def _writer(self, peer: _Peer) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not peer.queue:
                    peer.wake.clear()
                    peer.idle = peer.stream is not None
                    try:
                        await peer.wake.wait()
                    finally:
                        peer.idle = False
                    continue
                if peer.stream is None or peer.stream.is_closing():
                    self._close_stream(peer)
                    delay = peer.retry_at - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    try:
                        reader, writer, _cid, _mid = await self._dial_peer(peer)
                    except (OSError, ValueError) as exc:
                        self._failed(peer, "dialing", exc)
                        continue
                    if peer.last_error:
                        self.log.info("connected to member %x again", peer.id)
                    peer.stream = writer
                    peer.stream_task = self._spawn(self._watch_stream(peer, reader, writer),
                                                   f"peer-stream-{peer.id:x}")
                    peer.failures, peer.retry_at, peer.last_error = 0, 0.0, ""
                msgs = list(peer.queue)
                peer.queue.clear()
                frames, too_big = codec.frame_messages(msgs, self.max_frame)
                for m in too_big:
                    self.log.error("dropped %r to member %x: larger than the frame limit of "
                                   "%d bytes", m, peer.id, self.max_frame)
                if not frames:
                    continue
                writer = peer.stream
                try:
                    if len(frames) == 1:
                        writer.write(frames[0])
                    else:
                        writer.writelines(frames)
                    await writer.drain()
                except (OSError, RuntimeError) as exc:
                    self._failed(peer, "writing to", exc)
                    continue
                peer.reported = False
        except asyncio.CancelledError:
            raise
        except Exception:
            self.log.exception("peer writer for member %x failed", peer.id)
        finally:
            self._close_stream(peer)
            peer.task = None

    async def _watch_stream(self, peer: _Peer, reader, writer) -> None:
        """The listener only ever answers a stream with an error before closing it."""
        try:
            ftype, body = await read_frame(reader, self.max_frame)
            if ftype == FRAME_ERROR:
                self.log.warning("member %x closed our stream: %s", peer.id,
                                 body.decode("utf-8", "replace"))
            else:
                self.log.warning("member %x sent frame type %d on our stream; closing it",
                                 peer.id, ftype)
        except asyncio.IncompleteReadError:
            self.log.debug("member %x closed our stream", peer.id)
        except (OSError, ValueError) as exc:
            self.log.debug("stream to member %x: %s", peer.id, exc)
        finally:
            _close(writer)
            if peer.stream is writer:
                peer.stream = None
                peer.stream_task = None

    # ---- snapshots: sending --------------------------------------------------------

    def _start_snapshot(self, peer: _Peer, msg: Message) -> None:
        task = self._spawn(self._send_snapshot(peer, msg), f"snap-send-{peer.id:x}")
        peer.snap_tasks.add(task)
        task.add_done_callback(peer.snap_tasks.discard)

    async def _send_snapshot(self, peer: _Peer, msg: Message) -> None:
        loop = asyncio.get_running_loop()
        index = msg.snapshot.index if msg.snapshot is not None else 0
        ok = False
        writer = None
        f = None
        try:
            if msg.snapshot is None:
                raise ValueError("MSG_SNAP without snapshot metadata")
            path = self.snapshot_path(index)
            if path is None:
                raise FileNotFoundError(f"no snapshot file for index {index}")
            f = await loop.run_in_executor(None, open, path, "rb")
            size = os.fstat(f.fileno()).st_size
            reader, writer, _cid, _mid = await self._dial_peer(peer)
            writer.write(codec.encode_frame(
                FRAME_SNAP_BEGIN, SNAP_BEGIN.pack(size) + codec.encode_messages([msg])))
            chunk_size = max(1, min(SNAP_CHUNK, self.max_frame))
            crc, sent = 0, 0
            while True:
                chunk = await loop.run_in_executor(None, f.read, chunk_size)
                if not chunk:
                    break
                crc = crc32c(chunk, crc)
                sent += len(chunk)
                writer.write(codec.encode_frame(FRAME_SNAP_CHUNK, chunk))
                await writer.drain()
            if sent != size:
                raise OSError(f"snapshot file {path} changed size while being sent "
                              f"({size} -> {sent} bytes)")
            writer.write(codec.encode_frame(FRAME_SNAP_END, SNAP_END.pack(size, crc)))
            await writer.drain()
            ftype, body = await asyncio.wait_for(read_frame(reader, self.max_frame),
                                                 SNAP_DONE_TIMEOUT)
            if ftype == FRAME_ERROR:
                raise RemoteError(body.decode("utf-8", "replace"))
            if ftype != FRAME_SNAP_DONE:
                raise ValueError(f"unexpected frame type {ftype} after the snapshot")
            ok = True
            self.log.info("sent snapshot %d (%d bytes) to member %x", index, size, peer.id)
        except asyncio.CancelledError:
            raise
        except HandshakeError as exc:
            self.log.warning("sending snapshot %d to member %x failed: member %x rejected the "
                             "connection: %s", index, peer.id, peer.id, exc)
        except (TimeoutError, OSError, ValueError, RemoteError, asyncio.IncompleteReadError) as exc:
            self.log.warning("sending snapshot %d to member %x failed: %s", index, peer.id,
                             str(exc) or type(exc).__name__)
        finally:
            if f is not None:
                f.close()
            _close(writer)
        self._report_snapshot(peer.id, not ok)

    # ---- listening -----------------------------------------------------------------

    async def _handle_conn(self, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if self._closed:
            _close(writer)
            return
        self._tasks.add(task)
        addr = writer.get_extra_info("peername")
        where = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)
        peer: _Peer | None = None
        frm = 0
        try:
            if self.tls_check is not None and writer.get_extra_info("ssl_object") is not None:
                # before anything of the connection is read (etcd refuses at the handshake)
                reason = await self.tls_check(writer.transport, True)
                if reason:
                    self.log.info('rejected connection from "%s" (error "%s", ServerName "")',
                                  where, reason)
                    writer.write(_error_frame(reason))
                    return
            try:
                ftype, body = await asyncio.wait_for(read_frame(reader, self.max_frame),
                                                     max(self.dial_timeout, 5.0))
            except (TimeoutError, asyncio.IncompleteReadError, OSError, ValueError) as exc:
                self.log.warning("rejected connection from %s: no valid hello (%s)", where,
                                 str(exc) or type(exc).__name__)
                return
            if ftype != FRAME_HELLO or len(body) != HELLO.size:
                self.log.warning("rejected connection from %s: expected a hello, got frame "
                                 "type %d of %d bytes", where, ftype, len(body))
                writer.write(_error_frame("expected a hello frame"))
                return
            magic, version, cid, frm, to = HELLO.unpack(body)
            reason = theirs = None
            if magic != MAGIC:
                reason = theirs = "not a fastkv peer connection (bad magic)"
            elif version != PROTOCOL_VERSION:
                reason = theirs = (f"protocol version mismatch (theirs {version}, "
                                   f"ours {PROTOCOL_VERSION})")
            elif cid == 0:
                pass  # public queries only
            elif cid != self.cluster_id:
                reason = f"cluster ID mismatch (theirs {cid:x}, ours {self.cluster_id:x})"
                theirs = f"cluster ID mismatch (ours {cid:x}, theirs {self.cluster_id:x})"
            elif to != self.member_id:
                reason = (f"member ID mismatch (the connection is for member {to:x}, "
                          f"this is member {self.member_id:x})")
                theirs = reason
            elif frm not in self._peers and self.is_removed(frm):
                reason = f"member {frm:x} was removed from this cluster"
                theirs = REMOVED_REASON
            elif frm not in self._peers:
                reason = f"member {frm:x} is not a known member of this cluster"
                theirs = f"member {frm:x} is not a known member of cluster {self.cluster_id:x}"
            if reason:
                self.log.warning("rejected connection from member %x (%s): %s", frm, where,
                                 reason)
                writer.write(_error_frame(theirs))
                return
            writer.write(codec.encode_frame(FRAME_HELLO_OK,
                                            HELLO_OK.pack(self.cluster_id, self.member_id)))
            if cid == 0:
                await self._serve_public(reader, writer, frm, where)
                return
            peer = self._peers.get(frm)
            if peer is None:
                return
            peer.inbound.add(task)
            await self._serve_peer(peer, reader, writer, where)
        except asyncio.CancelledError:
            # stop() or remove_peer(): end quietly. (asyncio's start_server logs a
            # cancelled connection task as an error, so it is not re-raised.)
            pass
        except Exception:
            self.log.exception("peer connection from %s failed", where)
        finally:
            if peer is not None:
                peer.inbound.discard(task)
            self._tasks.discard(task)
            _close(writer)

    def _protocol_error(self, writer, frm: int, where: str, reason: str) -> None:
        self.log.warning("closing connection from member %x (%s): %s", frm, where, reason)
        try:
            writer.write(_error_frame(reason))
        except Exception:  # noqa: BLE001
            pass

    async def _serve_peer(self, peer: _Peer, reader, writer, where: str) -> None:
        pid = peer.id
        me = self.member_id
        on_message = self.on_message
        max_frame = self.max_frame
        decode = codec.decode_messages
        while True:
            try:
                ftype, body = await read_frame(reader, max_frame)
                if ftype == FRAME_MSGS:
                    msgs = decode(body)
                elif ftype == FRAME_SNAP_BEGIN:
                    await self._receive_snapshot(peer, reader, writer, body, where)
                    return
                elif ftype == FRAME_CALL:
                    self._start_call(writer, body, False, pid)
                    continue
                else:
                    raise ValueError(f"unexpected frame type {ftype}")
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    self._protocol_error(writer, pid, where,
                                         f"truncated frame header ({len(exc.partial)} bytes)")
                else:
                    self.log.debug("member %x (%s) closed its connection", pid, where)
                return
            except ValueError as exc:
                self._protocol_error(writer, pid, where, str(exc))
                return
            except OSError as exc:
                self.log.debug("connection from member %x (%s): %s", pid, where, exc)
                return
            if pid in self.drop_from or self._closed:
                continue
            for m in msgs:
                if m.frm != pid or m.to != me or m.type in LOCAL_MESSAGES or m.type == MSG_SNAP:
                    self.log.debug("dropped %r from member %x: not a message for this stream",
                                   m, pid)
                    continue
                try:
                    on_message(m)
                except Exception:
                    self.log.exception("on_message failed for %r", m)

    async def _serve_public(self, reader, writer, frm: int, where: str) -> None:
        """A connection without a cluster ID: public calls only."""
        while True:
            try:
                ftype, body = await read_frame(reader, self.max_frame)
                if ftype != FRAME_CALL:
                    raise ValueError(f"frame type {ftype} needs a cluster ID in the hello")
                self._start_call(writer, body, True, frm)
            except asyncio.IncompleteReadError:
                return
            except ValueError as exc:
                self._protocol_error(writer, frm, where, str(exc))
                return
            except OSError:
                return

    # ---- snapshots: receiving ------------------------------------------------------

    async def _receive_snapshot(self, peer: _Peer, reader, writer, begin: bytes,
                                where: str) -> None:
        loop = asyncio.get_running_loop()
        pid = peer.id
        try:
            if len(begin) < SNAP_BEGIN.size:
                raise ValueError("truncated snapshot header")
            (size,) = SNAP_BEGIN.unpack_from(begin)
            msgs = codec.decode_messages(memoryview(begin)[SNAP_BEGIN.size:])
            if (len(msgs) != 1 or msgs[0].type != MSG_SNAP or msgs[0].snapshot is None
                    or msgs[0].frm != pid or msgs[0].to != self.member_id):
                raise ValueError("the snapshot header does not hold one MSG_SNAP from this "
                                 "member to us")
        except ValueError as exc:
            self._protocol_error(writer, pid, where, f"bad snapshot header: {exc}")
            return
        msg = msgs[0]
        meta = msg.snapshot
        final = os.path.join(self.snap_dir, snapshot_name(meta.term, meta.index))
        tmp = f"{final}.recv-{uuid.uuid4().hex[:12]}.tmp"
        done = False
        f = None
        try:
            f = await loop.run_in_executor(None, _open_new, tmp, self.snap_dir)
            crc, got = 0, 0
            while True:
                try:
                    ftype, body = await read_frame(reader, self.max_frame)
                except asyncio.IncompleteReadError:
                    raise ValueError(f"connection closed after {got} of {size} bytes") from None
                if ftype == FRAME_SNAP_CHUNK:
                    got += len(body)
                    if got > size:
                        raise ValueError(f"more data than the {size} bytes announced")
                    crc = await loop.run_in_executor(None, _write_chunk, f, body, crc)
                elif ftype == FRAME_SNAP_END:
                    if len(body) != SNAP_END.size:
                        raise ValueError("garbled snapshot end frame")
                    end_size, end_crc = SNAP_END.unpack(body)
                    if end_size != size or got != size:
                        raise ValueError(f"size mismatch: announced {size}, end frame "
                                         f"{end_size}, received {got} bytes")
                    if end_crc != crc:
                        raise ValueError(f"CRC mismatch (sender {end_crc:08x}, "
                                         f"received {crc:08x})")
                    break
                else:
                    raise ValueError(f"unexpected frame type {ftype} in a snapshot")
            await loop.run_in_executor(None, _finish_file, f, tmp, final, self.snap_dir)
            f = None
            done = True
        except asyncio.CancelledError:
            self.log.warning("receiving snapshot %d from member %x aborted: transport stopping",
                             meta.index, pid)
            raise
        except (ValueError, OSError) as exc:
            self._protocol_error(writer, pid, where,
                                 f"snapshot {meta.index} aborted: {exc}")
        finally:
            if f is not None:
                f.close()
            if not done:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
        if not done:
            return
        self.log.info("received snapshot %d (term %d, %d bytes) from member %x", meta.index,
                      meta.term, size, pid)
        if pid not in self.drop_from and not self._closed:
            try:
                self.on_message(msg)
            except Exception:
                self.log.exception("on_message failed for %r", msg)
        writer.write(codec.encode_frame(FRAME_SNAP_DONE, b""))
        try:
            await writer.drain()
        except OSError:
            pass

    # ---- calls ---------------------------------------------------------------------

    def register(self, kind: str, handler: Callable[[Any], Awaitable[Any]], *,
                 public: bool = False) -> None:
        """Serve calls of ``kind``. Public kinds are also served to members that
        do not know the cluster ID yet (fetch_cluster)."""
        self._handlers[kind] = handler
        if public:
            self._public.add(kind)
        else:
            self._public.discard(kind)

    def _start_call(self, writer, body: bytes, public: bool, frm: int) -> None:
        try:
            req = marshal.loads(body)
        except (ValueError, EOFError, TypeError) as exc:
            raise ValueError(f"garbled call: {exc}") from None
        if (not isinstance(req, tuple) or len(req) != 3 or not isinstance(req[0], int)
                or not isinstance(req[1], str)):
            raise ValueError("garbled call")
        call_id, kind, payload = req
        handler = self._handlers.get(kind)
        if handler is None:
            self._reply(writer, call_id, False, f"unknown request kind {kind!r}")
            return
        if public and kind not in self._public:
            raise ValueError(f"request kind {kind!r} needs a cluster ID in the hello")
        self._spawn(self._run_call(writer, call_id, handler, payload), f"call-{kind}")

    async def _run_call(self, writer, call_id: int, handler, payload) -> None:
        try:
            result = await handler(payload)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001  (sent back to the caller)
            self._reply(writer, call_id, False, str(exc) or type(exc).__name__)
            return
        self._reply(writer, call_id, True, result)

    def _reply(self, writer, call_id: int, ok: bool, value) -> None:
        try:
            data = marshal.dumps((call_id, ok, value))
        except ValueError as exc:
            data = marshal.dumps((call_id, False, f"result cannot be sent: {exc}"))
        if len(data) > self.max_frame:
            data = marshal.dumps((call_id, False, "result larger than the frame limit"))
        if not writer.is_closing():
            writer.write(codec.encode_frame(FRAME_REPLY, data))

    async def call(self, peer_id: int, kind: str, payload: Any = None,
                   timeout: float = 5.0) -> Any:
        """Run ``kind``'s handler on member peer_id with payload; its result.
        RemoteError: the handler raised (the message is its error);
        ConnectionError/OSError: the member cannot be reached; TimeoutError."""
        peer = self._peers.get(peer_id)
        if peer is None:
            raise ConnectionError(f"member {peer_id:x} is not a peer")
        if self._closed:
            raise ConnectionError("transport stopped")
        if peer_id in self.drop_to:
            raise ConnectionError(f"member {peer_id:x}: traffic dropped (fault injection)")
        data = marshal.dumps((0, kind, payload))  # ValueError early for unmarshalable payloads
        async with asyncio.timeout(timeout):
            conn = await self._call_conn(peer)
            call_id = _new_call_id()
            data = marshal.dumps((call_id, kind, payload))
            if len(data) > self.max_frame:
                raise ValueError(f"call payload of {len(data)} bytes is over the frame limit")
            fut = asyncio.get_running_loop().create_future()
            conn.pending[call_id] = fut
            try:
                conn.writer.write(codec.encode_frame(FRAME_CALL, data))
                ok, value = await fut
            finally:
                conn.pending.pop(call_id, None)
        if not ok:
            raise RemoteError(value)
        return value

    async def _call_conn(self, peer: _Peer) -> _CallConn:
        async with peer.call_lock:
            conn = peer.call
            if conn is not None and not conn.closed and not conn.writer.is_closing():
                return conn
            reader, writer, _cid, _mid = await self._dial_peer(peer)
            conn = _CallConn(reader, writer)
            if self._closed or self._peers.get(peer.id) is not peer:
                _close(writer)
                raise ConnectionError(f"member {peer.id:x} is gone")
            peer.call = conn
            conn.task = self._spawn(self._call_reader(peer, conn), f"call-reader-{peer.id:x}")
            return conn

    async def _call_reader(self, peer: _Peer, conn: _CallConn) -> None:
        exc: BaseException = ConnectionError(f"connection to member {peer.id:x} closed")
        try:
            while True:
                ftype, body = await read_frame(conn.reader, self.max_frame)
                if ftype == FRAME_ERROR:
                    exc = RemoteError(body.decode("utf-8", "replace"))
                    break
                if ftype != FRAME_REPLY:
                    raise ValueError(f"unexpected frame type {ftype} on a call connection")
                call_id, ok, value = _loads_reply(body)
                fut = conn.pending.get(call_id)
                if fut is not None and not fut.done():
                    fut.set_result((ok, value))
        except asyncio.CancelledError:
            exc = ConnectionError("transport stopped")
            raise
        except asyncio.IncompleteReadError:
            pass
        except (OSError, ValueError) as e:
            self.log.warning("call connection to member %x: %s", peer.id, e)
            exc = ConnectionError(f"call connection to member {peer.id:x}: {e}")
        finally:
            conn.fail(exc)
            if peer.call is conn:
                peer.call = None


def _open_new(path: str, directory: str):
    os.makedirs(directory, exist_ok=True)
    return open(path, "wb")  # noqa: SIM115  (closed by _finish_file or the caller)


def _write_chunk(f, body: bytes, crc: int) -> int:
    f.write(body)
    return crc32c(body, crc)


def _finish_file(f, tmp: str, final: str, snap_dir: str) -> None:
    f.flush()
    os.fsync(f.fileno())
    f.close()
    os.rename(tmp, final)
    fsync_dir(snap_dir)
