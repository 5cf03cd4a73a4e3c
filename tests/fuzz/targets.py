"""Fuzz targets: every decoder that reads bytes from outside the process.

Each target takes arbitrary bytes and feeds them to one reader the way the server
does. The only exceptions allowed out are the reader's documented "bad input"
errors (ALLOWED); anything else (IndexError, KeyError, a crash in Cython, a hang)
is a bug. Where the input is a damaged copy of valid data (WAL segments,
snapshots), a reader that accepts it must hand back exactly the original data or
a prefix of it: damage is detected, never applied.

The same targets run briefly under hypothesis in ci/test
(tests/fuzz/test_fuzz_targets.py) and for as long as you like under atheris
(`ci/fuzz`, tests/fuzz/run_atheris.py). A crash found becomes a regression case
in test_fuzz_targets.py (REGRESSIONS).
"""
from __future__ import annotations

import asyncio
import atexit
import logging
import os
import shutil
import socket
import tempfile

import httptools
from google.protobuf.message import DecodeError

# Everything a target reaches is imported here, at the top: atheris instruments (for its
# coverage feedback) only the modules imported while this module is (run_atheris.py).
from fastkv import config
from fastkv import requests as rq
from fastkv.api import grpc_convert
from fastkv.api import v2_keys
from fastkv.api import v3_gateway as gw
from fastkv.api.gojson import GoJSONError
from fastkv.api.grpc_h2 import HpackDecoder
from fastkv.api.http import HttpProtocol
from fastkv.errors import EtcdError, StorageCorruption
from fastkv.mvcc import validation
from fastkv.proto.etcdserverpb import rpc_pb2
from fastkv.raft import _peercodec as peercodec
from fastkv.server import Server
from fastkv.storage import _walcodec as walcodec
from fastkv.storage import snapshot
from fastkv.storage.wal import WAL, Entry, HardState
from fastkv.v2store import V2Error


class Rejected(Exception):
    """What a target raises when the reader refused the input in its documented way."""


def _allowed(fn, *args, errors=(ValueError,)):
    try:
        return fn(*args)
    except errors as exc:
        raise Rejected(type(exc).__name__) from exc


# -- the v3 JSON gateway's request decoder ------------------------------------------

SCHEMAS = [gw.RANGE_REQ, gw.PUT_REQ, gw.DELETE_RANGE_REQ, gw.TXN_REQ, gw.COMPACTION_REQ,
           gw.LEASE_GRANT_REQ, gw.WATCH_REQ, gw.ALARM_REQ, gw.AUTH_USER_ADD_REQ,
           gw.AUTH_ROLE_GRANT_REQ, gw.MEMBER_ADD_REQ, gw.CAMPAIGN_REQ, gw.PROCLAIM_REQ]


def v3_json(data: bytes) -> None:
    """First byte picks the request type; the rest is the body."""
    if not data:
        return
    schema = SCHEMAS[data[0] % len(SCHEMAS)]
    out = _allowed(gw.decode_request, schema, data[1:], errors=(GoJSONError, EtcdError))
    assert isinstance(out, dict)


# -- the v2 form/query parser ----------------------------------------------------------

def v2_form(data: bytes) -> None:
    """method byte, then path, query and body separated by NUL bytes (latin-1, as the
    HTTP layer hands them over)."""
    if not data:
        return
    method = ("GET", "HEAD", "PUT", "POST", "DELETE")[data[0] % 5]
    parts = data[1:].decode("latin-1").split("\0")
    path, query, body = (parts + ["", "", ""])[:3]
    req, no_value = _allowed(v2_keys.parse, method, v2_keys.KEYS_PREFIX + path, query, body,
                             errors=(V2Error,))
    assert req["path"].startswith("/") and isinstance(no_value, bool)


# -- gRPC: HPACK header blocks and protobuf request bodies ------------------------------

def hpack(data: bytes) -> None:
    dec = HpackDecoder()
    headers = _allowed(dec.decode, data)
    for name, value in headers:
        assert isinstance(name, (bytes, str)) and isinstance(value, (bytes, str))


def grpc_message(data: bytes) -> None:
    """A request body as the KV servicer receives it: protobuf, our dict form, then the
    checks the server runs before anything is proposed."""
    if not data:
        return
    kinds = [(rpc_pb2.PutRequest, validation.check_put),
             (rpc_pb2.RangeRequest, validation.check_range),
             (rpc_pb2.TxnRequest, validation.check_txn),
             (rpc_pb2.DeleteRangeRequest, validation.check_delete_range)]
    cls, check = kinds[data[0] % len(kinds)]
    msg = _allowed(cls.FromString, data[1:], errors=(DecodeError,))
    req = grpc_convert.to_dict(msg)
    assert isinstance(req, dict)
    _allowed(check, req, errors=(EtcdError,))


# -- the peer transport's frames and message batches -------------------------------------

def peer_frames(data: bytes) -> None:
    head, body = data[:peercodec.FRAME_HEADER_SIZE], data[peercodec.FRAME_HEADER_SIZE:]
    try:
        peercodec.parse_frame_header(head)
    except ValueError:
        pass
    msgs = _allowed(peercodec.decode_messages, body)
    for m in msgs:
        assert m.type >= 0


# -- the WAL and snapshot readers, on damaged copies of valid files ---------------------

_WAL: tuple[str, bytes, list[Entry]] | None = None


def _valid_wal() -> tuple[str, bytes, list[Entry]]:
    """(segment file name, its bytes, the entries in it), written once per process."""
    global _WAL
    if _WAL is None:
        with tempfile.TemporaryDirectory() as tmp:
            d = os.path.join(tmp, "wal")
            wal = WAL.create(d, {"member_id": 1, "cluster_id": 2})
            entries = [Entry(1, i, 0, b"entry-%d-" % i + bytes(range(i % 50))) for i in range(1, 40)]
            try:
                for k in range(0, len(entries), 7):
                    batch = entries[k:k + 7]
                    wal.save_sync(batch, HardState(1, 1, batch[-1].index))
            finally:
                wal.close()
            (name,) = os.listdir(d)
            with open(os.path.join(d, name), "rb") as f:
                data = f.read()
            # the segment is preallocated: keep what was written and a page of zeros
            _WAL = (name, data[:len(data.rstrip(b"\0")) + 4096], entries)
    return _WAL


def wal_records(data: bytes) -> None:
    """Raw record decoding of arbitrary bytes."""
    records, end, _clean = _allowed(walcodec.decode, data)
    assert 0 <= end <= len(data)
    for _off, _seq, rtype, _flags, payload in records:
        try:
            if rtype == walcodec.TYPE_ENTRY:
                walcodec.decode_entry(payload)
            elif rtype == walcodec.TYPE_HARDSTATE:
                walcodec.decode_hardstate(payload)
            elif rtype == walcodec.TYPE_SNAPSHOT:
                walcodec.decode_snapshot(payload)
        except ValueError:
            pass


def wal_damage(data: bytes) -> None:
    """A valid WAL, damaged as `data` says (pairs of offset/xor bytes, a truncation),
    replayed read-only: refused, or the original entries (a prefix: a torn tail)."""
    name, valid, entries = _valid_wal()
    buf = bytearray(valid)
    _damage(buf, len(buf.rstrip(b"\0")), data)
    with tempfile.TemporaryDirectory() as tmp:
        d = os.path.join(tmp, "wal")
        os.mkdir(d)
        with open(os.path.join(d, name), "wb") as f:
            f.write(buf)
        contents = _allowed(WAL.read_all, d, errors=(StorageCorruption,))
    got = contents.entries
    assert got == entries[:len(got)], "a damaged WAL replayed entries that were never written"


def snapshot_damage(data: bytes) -> None:
    state = {"applied_index": 7, "applied_term": 2, "store": {"rev": 3}, "v2": {"k": [1, 2, 3]}}
    blobs = [b"chunk-one" * 20, b"chunk-two" * 9]
    buf = bytearray(snapshot.encode(state, blobs))
    _damage(buf, len(buf), data)
    got = _allowed(snapshot.decode, bytes(buf), errors=(StorageCorruption,))
    assert got == (state, blobs), "a damaged snapshot decoded to something else"


def snapshot_bytes(data: bytes) -> None:
    _allowed(snapshot.decode, data, errors=(StorageCorruption,))


def _damage(buf: bytearray, used: int, data: bytes) -> None:
    """Apply `data` as damage: the first byte picks a truncation point (or none), then
    (offset, xor) byte pairs flip bits inside the used part."""
    if not data or used == 0:
        return
    cut = data[0]
    for i in range(1, len(data) - 2, 3):
        off = ((data[i] << 8) | data[i + 1]) % used
        buf[off] ^= data[i + 2] or 1
    if cut < 64:   # a quarter of the inputs also lose their tail
        keep = used * cut // 64
        buf[keep:used] = bytes(used - keep)


# -- the HTTP/1.1 (and HTTP/2 preface) parser and router, on a live member ---------------

class _Transport:
    """What HttpProtocol writes to: collects the bytes, remembers a close."""

    def __init__(self, proto):
        self.proto, self.out, self.closed = proto, bytearray(), False

    def write(self, data) -> None:
        if not self.closed:
            self.out += data

    def writelines(self, chunks) -> None:
        for c in chunks:
            self.write(c)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.proto.connection_lost(None)

    abort = close

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass    # nothing more is fed after the input anyway

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name, default=None):
        return default

    def get_write_buffer_size(self) -> int:
        return 0


class _ErrorLog:
    """Counts log records at ERROR and above (a handler that failed: a bug)."""

    def __init__(self):
        self.records: list = []
        handler = logging.Handler(logging.ERROR)
        handler.emit = self.records.append
        logging.getLogger("fastkv").addHandler(handler)


_MEMBER = None
_PATHS = ["/v3/kv/put", "/v3/kv/range", "/v3/kv/txn", "/v3/kv/deleterange", "/v3/kv/compaction",
          "/v3/lease/grant", "/v3/lease/revoke", "/v3/lease/timetolive", "/v3/lease/leases",
          "/v3/watch", "/v3/maintenance/status", "/v3/auth/authenticate", "/v3/auth/user/add",
          "/v3/cluster/member/list", "/v3/lock/lock", "/v3/election/campaign",
          "/v3beta/kv/range", "/v2/keys/a", "/v2/keys/d/?recursive=true", "/v2/keys/q",
          "/v2/members", "/v2/stats/self", "/v2/auth/users/u", "/health", "/version",
          "/metrics", "/nope"]
_METHODS = [b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH"]


def _member():
    """One single-member fastkv (v2 enabled) in this process, on loopback, started once."""
    global _MEMBER
    if _MEMBER is None:
        def port() -> int:
            with socket.socket() as sk:
                sk.bind(("127.0.0.1", 0))
                return sk.getsockname()[1]
        tmp = tempfile.mkdtemp(prefix="fastkv-fuzz-http-")
        cu, pu = f"http://127.0.0.1:{port()}", f"http://127.0.0.1:{port()}"
        cfg = config.parse(["--data-dir", tmp, "--enable-v2", "--listen-client-urls", cu,
                            "--advertise-client-urls", cu, "--listen-peer-urls", pu,
                            "--initial-advertise-peer-urls", pu, "--initial-cluster",
                            f"default={pu}", "--log-level", "error"], {})
        loop = asyncio.new_event_loop()
        server = Server(cfg)
        loop.run_until_complete(server.start())
        # v2 auth makes its directories on its first request, whatever the answer (etcd's
        # ensureAuthDirectories): make them now, not under some input's 404
        loop.run_until_complete(server.v2auth._ensure_auth_directories())
        _MEMBER = (loop, server, _ErrorLog())

        def stop() -> None:
            loop.run_until_complete(server.stop())
            loop.close()
            shutil.rmtree(tmp, ignore_errors=True)
        atexit.register(stop)
    return _MEMBER


async def _quiesce(server) -> None:
    """End every timer an earlier input started (leases, v2 TTLs), so that no expiry changes
    the state while the next input runs: a change is then the input's own doing."""
    for lease_id in list(server.lessor._leases):
        try:
            await server.lease_revoke({"ID": lease_id})
        except Exception:   # noqa: BLE001 - gone meanwhile
            pass
    while server.v2.has_ttl_keys():
        await server._propose(rq.V2, {"method": "SYNC", "now": server.v2.next_expiration() + 1})


def _state(server) -> tuple:
    return (server.store.rev, server.v2.index, len(server.lessor._leases),
            len(server.membership.members))


def _structured(data: bytes) -> bytes:
    """A request line from known methods and routes, then the input as headers and body."""
    method = _METHODS[data[0] % len(_METHODS)]
    path = _PATHS[data[1] % len(_PATHS)] if len(data) > 1 else "/"
    rest = data[2:]
    head, _, body = rest.partition(b"\n\n")
    hdrs = b"".join(h.rstrip(b"\r") + b"\r\n" for h in head.split(b"\n") if b":" in h)
    return (method + b" " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + hdrs +
            b"Content-Length: %d\r\n\r\n" % len(body) + body)


def http_request(data: bytes) -> None:
    """Raw bytes (or, first byte odd, a request built from known routes) on a connection
    to a live member: no handler fails (nothing logged at ERROR), nothing hangs, every
    answer parses as HTTP, and the member's state changes only under a 2xx answer."""
    if not data:
        return
    loop, server, errors = _member()
    wire = _structured(data[1:]) if data[0] & 1 and len(data) > 2 else data[1:]
    loop.run_until_complete(_quiesce(server))
    before = _state(server)
    errors.records.clear()
    proto = HttpProtocol(server, loop)
    tr = _Transport(proto)
    proto.connection_made(tr)

    async def drive():
        proto.data_received(wire)
        # `busy`: a request runs, as a task or (a write the front proposed from its
        # callback: HttpProtocol._fast_done) as a future's callback
        for _ in range(200):               # let the requests run (a write: a few ms)
            await asyncio.sleep(0.005 if proto.busy else 0.001)
            if not proto.busy and not proto.queue:
                break
        tr.close()                          # the client goes: streams end, waits give up
        for _ in range(400):
            if not proto.busy:
                return
            await asyncio.sleep(0.005)
        raise AssertionError("a request still runs 2 s after its client went away")
    loop.run_until_complete(drive())
    assert not errors.records, f"logged: {[r.getMessage() for r in errors.records]}"
    out = bytes(tr.out)
    statuses: list[int] = []
    if out and proto.h2 is None:
        class _Resp:
            def on_headers_complete(self_inner):
                statuses.append(parser.get_status_code())
        parser = httptools.HttpResponseParser(_Resp())
        try:
            parser.feed_data(out)
        except httptools.HttpParserUpgrade:
            pass
        except httptools.HttpParserError:
            # an answer to HEAD has a Content-Length but no body: the parser, which cannot
            # know, reads the next answer as that body
            if b"HEAD" not in wire:
                raise
    # A lock or campaign the client leaves while it waits still leaves its session's lease
    # (and its key's put and delete) behind: etcd's orphaned sessions, not bad input applied.
    orphans = b"/lock/lock" in wire or b"/election/campaign" in wire
    if _state(server) != before and proto.h2 is None and not orphans:
        assert any(200 <= st < 300 for st in statuses), \
            f"state changed without a 2xx answer: {statuses} for {wire[:200]!r}"


TARGETS = {
    "http_request": http_request,
    "v3_json": v3_json,
    "v2_form": v2_form,
    "hpack": hpack,
    "grpc_message": grpc_message,
    "peer_frames": peer_frames,
    "wal_records": wal_records,
    "wal_damage": wal_damage,
    "snapshot_damage": snapshot_damage,
    "snapshot_bytes": snapshot_bytes,
}


def run(name: str, data: bytes) -> None:
    """Run one target; a Rejected input is a correct outcome."""
    try:
        TARGETS[name](data)
    except Rejected:
        pass
