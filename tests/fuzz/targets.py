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

import os
import tempfile

from fastkv.api import v2_keys
from fastkv.api import v3_gateway as gw
from fastkv.api.gojson import GoJSONError
from fastkv.api.grpc_h2 import HpackDecoder
from fastkv.errors import EtcdError, StorageCorruption
from fastkv.raft import _peercodec as peercodec
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
    from google.protobuf.message import DecodeError

    from fastkv.api import grpc_convert
    from fastkv.mvcc import validation
    from fastkv.proto.etcdserverpb import rpc_pb2
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


TARGETS = {
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
