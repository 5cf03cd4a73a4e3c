"""etcd 3.4's v3 JSON gateway: HTTP+JSON requests -> request dicts -> Server -> JSON.

etcd serves its gRPC API as JSON through grpc-gateway v1 with golang/protobuf's
jsonpb, and clients match on what that stack prints, so this module copies it:

* requests: one JSON object per call (or a stream of them for /v3/watch and
  /v3/lease/keepalive); field names as proto names or lowerCamelCase json
  names (camel wins when both are given); int64 as numbers or strings; bytes
  as standard padded base64; enums as names or numbers; unknown fields
  ignored; an empty body is an empty request; bytes after the first JSON
  value are ignored (Go's json.Decoder stops there).
* decoding errors carry Go's texts (encoding/json, jsonpb, encoding/base64),
  as ``{"error","message","code":3}`` with HTTP 400, Content-Length framed.
* errors from the server (EtcdError) are framed as grpc-gateway frames a
  failed gRPC call: chunked, with the ``Grpc-Trailer-Content-Type`` trailer.
* responses are proto3 JSON as jsonpb prints it with OrigName: proto field
  names in declaration order, int64/uint64 as strings, bytes as base64, enums
  as names, fields at their default left out, strings HTML-escaped as Go does.
* streamed answers (/v3/watch, /v3/lease/keepalive, /v3/maintenance/snapshot,
  /v3/election/observe) are chunked ``{"result": ...}`` messages, each followed
  by "\n" and chunked as Go's 2048-byte response buffer chunks them; an error
  ends the stream with an ``{"error": ...}`` message.

The request path is a fast path (orjson + type checks) for well-formed input
and a faithful port of Go's decoder (below) that runs when anything is off,
so that the error text is Go's. Both produce the same request dict.
"""
from __future__ import annotations

import asyncio
import binascii
import contextlib
import re

import orjson

from fastkv.api.gojson import (
    GoEOF,
    GoJSONError,
    KIND_NAMES,
    decode_next,
    nesting_depth,
    room_for_depth,
    go_base64_decode,
    go_json_string,
    go_quote,
    unmarshal_check,
)
from fastkv.auth.identity import client_cert_auth, http_credentials
from fastkv.errors import (HTTP_STATUS_FOR_GRPC_CODE, EtcdError, ErrNotSupportedForLearner,
                           GrpcCode)



# ---------------------------------------------------------------------------
# Response framing: what the HTTP layer must put around a body. etcd's Go
# stack frames each kind of answer differently; fastkv.api.http owns the bytes.
# ---------------------------------------------------------------------------
K_OK = 0            # gateway success: JSON + Grpc-Metadata-Content-Type
K_DECODE_ERR = 1    # gateway decoding error: JSON, Content-Length
K_RPC_ERR = 2       # error returned by the call: JSON, chunked + Grpc-Trailer-Content-Type
K_TEXT = 3          # Go's http.Error: text/plain + nosniff
K_TEXT_ALLOW_GET = 4  # http.Error with "Allow: GET" (/health, /version)
K_HEALTH = 5        # /health: body written without a Content-Type (Go sniffs text/plain)
K_VERSION = 6       # /version: application/json
K_EMPTY = 7         # OPTIONS: CORS headers, empty body
K_TEXT_BARE = 8     # Go's http.Error before etcd's access controller adds its CORS headers
K_METRICS = 9       # /metrics: Prometheus' text format

# etcd's accessController: while auth is enabled under --client-cert-auth, a /v3/ request
# over a client certificate with a Common Name is refused (its gateway would not use it).
CN_REFUSED = (400, K_TEXT_BARE, b"CommonName of client sending a request against gateway "
                                b"will be ignored and not used as expected\n")


def refuses_common_name(server, path: str) -> bool:
    """Whether a request for `path` over a verified client certificate with a Common
    Name gets CN_REFUSED (the HTTP layer asks only when there is such a certificate)."""
    return (path.startswith(("/v3/", "/v3beta/")) and server.auth.enabled
            and client_cert_auth(server))

# grpc-gateway v1's runtime.HTTPStatusFromCode, checked against etcd 3.4.23
# (FailedPrecondition answers 412 there, e.g. "lease already exists").
HTTP_STATUS = HTTP_STATUS_FOR_GRPC_CODE
STATUS_TEXT = {   # Go's http.StatusText
    200: "OK", 201: "Created", 202: "Accepted", 204: "No Content",
    301: "Moved Permanently", 302: "Found", 304: "Not Modified", 307: "Temporary Redirect",
    410: "Gone", 413: "Request Entity Too Large", 415: "Unsupported Media Type", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict",
    412: "Precondition Failed", 429: "Too Many Requests", 500: "Internal Server Error",
    501: "Not Implemented", 503: "Service Unavailable", 504: "Gateway Timeout",
}
# gRPC's per-message overhead allowance on top of --max-request-bytes (etcd's grpcOverheadBytes).
GRPC_OVERHEAD_BYTES = 512 * 1024


def error_body(message: str, code: int) -> bytes:
    """grpc-gateway's errorBody: {"error","message","code"} in that order."""
    m = go_json_string(message)
    return ('{"error":%s,"message":%s,"code":%d}' % (m, m, code)).encode()


def decode_error(message: str, code: int = GrpcCode.INVALID_ARGUMENT):
    return HTTP_STATUS.get(code, 500), K_DECODE_ERR, error_body(message, code)


def rpc_error(err: EtcdError):
    return HTTP_STATUS.get(err.code, 500), K_RPC_ERR, error_body(err.message, err.code)


def stream_error_chunk(err: EtcdError) -> tuple[int, bytes]:
    """grpc-gateway's streamChunk for an error: {"error": StreamError} (no delimiter)."""
    status = HTTP_STATUS.get(err.code, 500)
    parts = []
    if err.code:
        parts.append('"grpc_code":%d' % err.code)
    parts.append('"http_code":%d' % status)
    if err.message:
        parts.append('"message":' + go_json_string(err.message))
    parts.append('"http_status":' + go_json_string(STATUS_TEXT.get(status, "")))
    return status, ('{"error":{' + ",".join(parts) + "}}").encode()


def message_too_large(size: int, limit: int) -> EtcdError:
    return EtcdError(f"grpc: received message larger than max ({size} vs. {limit})",
                     GrpcCode.RESOURCE_EXHAUSTED)


# ---------------------------------------------------------------------------
# Request schemas (rpc.proto): regular fields in Go struct order, then oneofs.
# A field is (proto name, json name or None, kind, sub, field number).
# ---------------------------------------------------------------------------
BYTES, INT64, BOOL, ENUM, MSG, RMSG, RENUM, UINT64, RSTRING, STRING = range(10)
_U64_MAX = (1 << 64) - 1


class Schema:
    __slots__ = ("name", "fields", "oneofs")

    def __init__(self, name, fields, oneofs=()):
        self.name = name
        self.fields = tuple(self._norm(f) for f in fields)
        self.oneofs = tuple(self._norm(f) for f in oneofs)

    @staticmethod
    def _norm(f):
        orig, camel, kind, sub, num = f
        return (orig, camel if camel != orig else None, kind, sub, num)


def _enum(go_name, *names):
    return (go_name, {n: i for i, n in enumerate(names)})


SORT_ORDER = _enum("etcdserverpb.RangeRequest_SortOrder", "NONE", "ASCEND", "DESCEND")
SORT_TARGET = _enum("etcdserverpb.RangeRequest_SortTarget", "KEY", "VERSION", "CREATE", "MOD", "VALUE")
COMPARE_RESULT = _enum("etcdserverpb.Compare_CompareResult", "EQUAL", "GREATER", "LESS", "NOT_EQUAL")
COMPARE_TARGET = _enum("etcdserverpb.Compare_CompareTarget", "VERSION", "CREATE", "MOD", "VALUE", "LEASE")
FILTER_TYPE = _enum("etcdserverpb.WatchCreateRequest_FilterType", "NOPUT", "NODELETE")

RANGE_REQ = Schema("RangeRequest", [
    ("key", None, BYTES, None, 1), ("range_end", "rangeEnd", BYTES, None, 2),
    ("limit", None, INT64, None, 3), ("revision", None, INT64, None, 4),
    ("sort_order", "sortOrder", ENUM, SORT_ORDER, 5), ("sort_target", "sortTarget", ENUM, SORT_TARGET, 6),
    ("serializable", None, BOOL, None, 7), ("keys_only", "keysOnly", BOOL, None, 8),
    ("count_only", "countOnly", BOOL, None, 9), ("min_mod_revision", "minModRevision", INT64, None, 10),
    ("max_mod_revision", "maxModRevision", INT64, None, 11),
    ("min_create_revision", "minCreateRevision", INT64, None, 12),
    ("max_create_revision", "maxCreateRevision", INT64, None, 13)])
PUT_REQ = Schema("PutRequest", [
    ("key", None, BYTES, None, 1), ("value", None, BYTES, None, 2), ("lease", None, INT64, None, 3),
    ("prev_kv", "prevKv", BOOL, None, 4), ("ignore_value", "ignoreValue", BOOL, None, 5),
    ("ignore_lease", "ignoreLease", BOOL, None, 6)])
DELETE_RANGE_REQ = Schema("DeleteRangeRequest", [
    ("key", None, BYTES, None, 1), ("range_end", "rangeEnd", BYTES, None, 2),
    ("prev_kv", "prevKv", BOOL, None, 3)])
COMPARE = Schema("Compare", [
    ("result", None, ENUM, COMPARE_RESULT, 1), ("target", None, ENUM, COMPARE_TARGET, 2),
    ("key", None, BYTES, None, 3), ("range_end", "rangeEnd", BYTES, None, 64)], [
    ("version", None, INT64, None, 4), ("create_revision", "createRevision", INT64, None, 5),
    ("mod_revision", "modRevision", INT64, None, 6), ("value", None, BYTES, None, 7),
    ("lease", None, INT64, None, 8)])
REQUEST_OP = Schema("RequestOp", [], [
    ("request_range", "requestRange", MSG, RANGE_REQ, 1), ("request_put", "requestPut", MSG, PUT_REQ, 2),
    ("request_delete_range", "requestDeleteRange", MSG, DELETE_RANGE_REQ, 3)])
TXN_REQ = Schema("TxnRequest", [
    ("compare", None, RMSG, COMPARE, 1), ("success", None, RMSG, REQUEST_OP, 2),
    ("failure", None, RMSG, REQUEST_OP, 3)])
REQUEST_OP.oneofs = REQUEST_OP.oneofs + (("request_txn", "requestTxn", MSG, TXN_REQ, 4),)
COMPACTION_REQ = Schema("CompactionRequest", [
    ("revision", None, INT64, None, 1), ("physical", None, BOOL, None, 2)])
LEASE_GRANT_REQ = Schema("LeaseGrantRequest", [("TTL", None, INT64, None, 1), ("ID", None, INT64, None, 2)])
LEASE_ID_REQ = Schema("LeaseRevokeRequest", [("ID", None, INT64, None, 1)])
LEASE_TTL_REQ = Schema("LeaseTimeToLiveRequest", [("ID", None, INT64, None, 1), ("keys", None, BOOL, None, 2)])
EMPTY_REQ = Schema("Empty", [])
MEMBER_ADD_REQ = Schema("MemberAddRequest", [
    ("peerURLs", None, RSTRING, None, 1), ("isLearner", None, BOOL, None, 2)])
MEMBER_ID_REQ = Schema("MemberRemoveRequest", [("ID", None, UINT64, None, 1)])
MEMBER_UPDATE_REQ = Schema("MemberUpdateRequest", [
    ("ID", None, UINT64, None, 1), ("peerURLs", None, RSTRING, None, 2)])
MOVE_LEADER_REQ = Schema("MoveLeaderRequest", [("targetID", None, UINT64, None, 1)])
WATCH_CREATE_REQ = Schema("WatchCreateRequest", [
    ("key", None, BYTES, None, 1), ("range_end", "rangeEnd", BYTES, None, 2),
    ("start_revision", "startRevision", INT64, None, 3), ("progress_notify", "progressNotify", BOOL, None, 4),
    ("filters", None, RENUM, FILTER_TYPE, 5), ("prev_kv", "prevKv", BOOL, None, 6),
    ("watch_id", "watchId", INT64, None, 7), ("fragment", None, BOOL, None, 8)])
WATCH_CANCEL_REQ = Schema("WatchCancelRequest", [("watch_id", "watchId", INT64, None, 1)])
WATCH_REQ = Schema("WatchRequest", [], [
    ("create_request", "createRequest", MSG, WATCH_CREATE_REQ, 1),
    ("cancel_request", "cancelRequest", MSG, WATCH_CANCEL_REQ, 2),
    ("progress_request", "progressRequest", MSG, EMPTY_REQ, 3)])
# Maintenance (rpc.proto)
ALARM_ACTION = _enum("etcdserverpb.AlarmRequest_AlarmAction", "GET", "ACTIVATE", "DEACTIVATE")
ALARM_TYPE = _enum("etcdserverpb.AlarmType", "NONE", "NOSPACE", "CORRUPT")
ALARM_REQ = Schema("AlarmRequest", [
    ("action", None, ENUM, ALARM_ACTION, 1), ("memberID", None, UINT64, None, 2),
    ("alarm", None, ENUM, ALARM_TYPE, 3)])
# Auth (rpc.proto, auth.proto). Requests of the same shape share a schema.
PERM_TYPE = _enum("authpb.Permission_Type", "READ", "WRITE", "READWRITE")
AUTH_NAME_REQ = Schema("AuthUserGetRequest", [("name", None, STRING, None, 1)])
AUTH_ROLE_REQ = Schema("AuthRoleGetRequest", [("role", None, STRING, None, 1)])
AUTH_PASSWORD_REQ = Schema("AuthenticateRequest", [
    ("name", None, STRING, None, 1), ("password", None, STRING, None, 2)])
AUTH_USER_ADD_REQ = Schema("AuthUserAddRequest", [
    ("name", None, STRING, None, 1), ("password", None, STRING, None, 2),
    ("options", None, MSG, Schema("UserAddOptions", [
        ("no_password", "noPassword", BOOL, None, 1)]), 3)])
AUTH_USER_GRANT_REQ = Schema("AuthUserGrantRoleRequest", [
    ("user", None, STRING, None, 1), ("role", None, STRING, None, 2)])
AUTH_USER_REVOKE_REQ = Schema("AuthUserRevokeRoleRequest", [
    ("name", None, STRING, None, 1), ("role", None, STRING, None, 2)])
AUTH_ROLE_GRANT_REQ = Schema("AuthRoleGrantPermissionRequest", [
    ("name", None, STRING, None, 1),
    ("perm", None, MSG, Schema("Permission", [
        ("permType", None, ENUM, PERM_TYPE, 1), ("key", None, BYTES, None, 2),
        ("range_end", "rangeEnd", BYTES, None, 3)]), 2)])
AUTH_ROLE_REVOKE_REQ = Schema("AuthRoleRevokePermissionRequest", [
    ("role", None, STRING, None, 1), ("key", None, BYTES, None, 2),
    ("range_end", "rangeEnd", BYTES, None, 3)])
# v3lock.proto, v3election.proto
LOCK_REQ = Schema("LockRequest", [("name", None, BYTES, None, 1), ("lease", None, INT64, None, 2)])
UNLOCK_REQ = Schema("UnlockRequest", [("key", None, BYTES, None, 1)])
CAMPAIGN_REQ = Schema("CampaignRequest", [
    ("name", None, BYTES, None, 1), ("lease", None, INT64, None, 2),
    ("value", None, BYTES, None, 3)])
LEADER_KEY = Schema("LeaderKey", [
    ("name", None, BYTES, None, 1), ("key", None, BYTES, None, 2), ("rev", None, INT64, None, 3),
    ("lease", None, INT64, None, 4)])
PROCLAIM_REQ = Schema("ProclaimRequest", [
    ("leader", None, MSG, LEADER_KEY, 1), ("value", None, BYTES, None, 2)])
RESIGN_REQ = Schema("ResignRequest", [("leader", None, MSG, LEADER_KEY, 1)])
LEADER_REQ = Schema("LeaderRequest", [("name", None, BYTES, None, 1)])

_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1
_INT_RE = re.compile(r"-?[0-9]+\Z")
_PLAIN_INT_STR = re.compile(r"-?(?:0|[1-9][0-9]*)\Z")
_a2b = binascii.a2b_base64


class _Slow(Exception):
    """The fast path met something it does not decide; the Go port decides."""


def _fast_value(f, v):
    kind = f[2]
    if kind == BYTES:
        if type(v) is not str or len(v) & 3:
            raise _Slow
        try:
            return _a2b(v, strict_mode=True)
        except (binascii.Error, ValueError):
            raise _Slow from None
    if kind == INT64:
        t = type(v)
        if t is int:
            if _I64_MIN <= v <= _I64_MAX:
                return v
        elif t is str and _PLAIN_INT_STR.match(v):
            n = int(v)
            if _I64_MIN <= n <= _I64_MAX:
                return n
        raise _Slow
    if kind == BOOL:
        if type(v) is bool:
            return v
        raise _Slow
    if kind == UINT64:
        t = type(v)
        if t is int:
            if 0 <= v <= _U64_MAX:
                return v
        elif t is str and _PLAIN_INT_STR.match(v):
            n = int(v)
            if 0 <= n <= _U64_MAX:
                return n
        raise _Slow
    if kind == RSTRING:
        if type(v) is not list or any(type(e) is not str for e in v):
            raise _Slow
        return list(v)
    if kind == STRING:
        if type(v) is not str:
            raise _Slow
        return v
    if kind == ENUM:
        t = type(v)
        if t is str:
            n = f[3][1].get(v)
            if n is not None:
                return n
        elif t is int and -(1 << 31) <= v < (1 << 31):
            return v
        raise _Slow
    if kind == MSG:
        if type(v) is not dict:
            raise _Slow
        return _fast_msg(f[3], v)
    if kind == RMSG:
        if type(v) is not list:
            raise _Slow
        sub = f[3]
        out = []
        for e in v:
            if type(e) is not dict:
                raise _Slow
            out.append(_fast_msg(sub, e))
        return out
    if kind == RENUM:
        if type(v) is not list:
            raise _Slow
        return [_fast_value((None, None, ENUM, f[3], 0), e) for e in v]
    raise AssertionError(kind)


def _fast_msg(schema: Schema, obj: dict) -> dict:
    out = {}
    if not obj:
        return out
    for f in schema.fields:
        camel = f[1]
        if camel is not None and camel in obj:
            v = obj[camel]
        else:
            v = obj.get(f[0])
        if v is not None:
            out[f[0]] = _fast_value(f, v)
    for f in schema.oneofs:
        camel = f[1]
        if camel is not None and camel in obj:
            v = obj[camel]
        else:
            v = obj.get(f[0])
        if v is not None:
            out[f[0]] = _fast_value(f, v)
            break
    return out


def _type_error(node, gotype: str) -> GoJSONError:
    return GoJSONError(f"json: cannot unmarshal {KIND_NAMES[node[0]]} into Go value of type {gotype}")


def _slow_int(text: str, gotype: str, lo: int, hi: int) -> int:
    if _INT_RE.match(text):
        n = int(text)
        if lo <= n <= hi:
            return n
    raise GoJSONError(f"json: cannot unmarshal number {text} into Go value of type {gotype}")


_UINT_RE = re.compile(r"[0-9]+\Z")


def _byte_array(node) -> bytes:
    """A JSON array for a bytes field, as Go's encoding/json fills a []byte: one uint8
    per element (null leaves a 0); the first element that is not an integer in
    0..255 is the error (Go reports its first error and goes on)."""
    out = bytearray()
    for e in node[3]:
        k = e[0]
        if k == "n":
            if not _UINT_RE.match(e[3]) or int(e[3]) > 255:
                raise GoJSONError(f"json: cannot unmarshal number {e[3]} into Go value of type uint8")
            out.append(int(e[3]))
        elif k == "z":
            out.append(0)
        else:
            raise _type_error(e, "uint8")
    return bytes(out)


def _slow_value(f, data: bytes, node):
    """jsonpb's unmarshalValue for one field; None means "leave unset"."""
    kind, k = f[2], node[0]
    if kind == ENUM and k == "s":
        inner = data[node[1] + 1:node[2] - 1]
        gotype, names = f[3]
        n = names.get(inner.decode("latin-1"))
        if n is None:
            raise GoJSONError(f"unknown value {go_quote(inner)} for enum {gotype}")
        return n
    if k == "z":
        return None
    if kind == BYTES:
        if k == "a":
            return _byte_array(node)
        if k != "s":
            raise _type_error(node, "[]uint8")
        return go_base64_decode(node[3].encode("utf-8", "surrogatepass"))
    if kind == INT64:
        if k == "s":  # jsonpb drops the quotes and unmarshals what is between them
            node = unmarshal_check(data[node[1] + 1:node[2] - 1])
            k = node[0]
            if k == "z":
                return None
        if k == "n":
            return _slow_int(node[3], "int64", _I64_MIN, _I64_MAX)
        raise _type_error(node, "int64")
    if kind == BOOL:
        if k in "tf":
            return node[3]
        raise _type_error(node, "bool")
    if kind == UINT64:
        if k == "s":
            node = unmarshal_check(data[node[1] + 1:node[2] - 1])
            k = node[0]
            if k == "z":
                return None
        if k == "n":
            return _slow_int(node[3], "uint64", 0, _U64_MAX)
        raise _type_error(node, "uint64")
    if kind == STRING:
        if k != "s":
            raise _type_error(node, "string")
        return node[3]
    if kind == RSTRING:
        if k != "a":
            raise _type_error(node, "[]json.RawMessage")
        out = []
        for e in node[3]:
            if e[0] == "z":
                out.append("")
            elif e[0] != "s":
                raise _type_error(e, "string")
            else:
                out.append(e[3])
        return out
    if kind == ENUM:
        gotype = f[3][0]
        if k == "n":
            return _slow_int(node[3], gotype, -(1 << 31), (1 << 31) - 1)
        raise _type_error(node, gotype)
    if kind == MSG:
        return _slow_msg(f[3], data, node)
    if kind == RMSG:
        if k != "a":
            raise _type_error(node, "[]json.RawMessage")
        return [{} if e[0] == "z" else _slow_msg(f[3], data, e) for e in node[3]]
    if kind == RENUM:
        if k != "a":
            raise _type_error(node, "[]json.RawMessage")
        ef = (None, None, ENUM, f[3], 0)
        return [_slow_value(ef, data, e) or 0 for e in node[3]]
    raise AssertionError(kind)


def _slow_msg(schema: Schema, data: bytes, node) -> dict:
    if node[0] == "z":
        return {}
    if node[0] != "o":
        raise _type_error(node, "map[string]json.RawMessage")
    fields = node[3]
    out = {}
    for f in schema.fields:
        camel = f[1]
        sub = fields.get(camel) if camel is not None and camel in fields else fields.get(f[0])
        if sub is not None:
            v = _slow_value(f, data, sub)
            if v is not None:
                out[f[0]] = v
    for f in schema.oneofs:
        camel = f[1]
        sub = fields.get(camel) if camel is not None and camel in fields else fields.get(f[0])
        if sub is not None and sub[0] != "z":
            out[f[0]] = _slow_value(f, data, sub)
            break
    return out


def decode_request(schema: Schema, body: bytes) -> dict:
    """A request body as etcd's gateway reads it; GoJSONError carries Go's text."""
    if b"\\" not in body:  # escapes change what jsonpb sees (it works on raw text): slow path
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            obj = _Slow
        if type(obj) is dict:
            try:
                return _fast_msg(schema, obj)
            except _Slow:
                pass
    node, _ = decode_next(body)
    if node is None:
        return {}
    try:
        return _slow_msg(schema, body, node)
    except RecursionError:   # deeply nested (e.g. txns in txns): walk it with room
        with room_for_depth(nesting_depth(body)):
            return _slow_msg(schema, body, node)


# ---------------------------------------------------------------------------
# Protobuf encoded size of a request (gRPC's receive limit applies to it).
# ---------------------------------------------------------------------------
def _varint_size(v: int) -> int:
    if v < 0:
        return 10
    n = 1
    while v >= 0x80:
        v >>= 7
        n += 1
    return n


def proto_size(schema: Schema, req: dict) -> int:
    total = 0
    for group, always in ((schema.fields, False), (schema.oneofs, True)):
        for orig, _camel, kind, sub, num in group:
            v = req.get(orig)
            if v is None:
                continue
            tag = _varint_size(num << 3)
            if kind == BYTES:
                if v or always:
                    total += tag + _varint_size(len(v)) + len(v)
            elif kind == STRING:
                if v or always:
                    n = len(v.encode("utf-8", "surrogatepass"))
                    total += tag + _varint_size(n) + n
            elif kind == RSTRING:
                for e in v:
                    n = len(e.encode("utf-8", "surrogatepass"))
                    total += tag + _varint_size(n) + n
            elif kind in (INT64, UINT64, ENUM, BOOL):
                if v or always:
                    total += tag + _varint_size(int(v))
            elif kind == MSG:
                n = proto_size(sub, v)
                total += tag + _varint_size(n) + n
            elif kind == RMSG:
                for e in v:
                    n = proto_size(sub, e)
                    total += tag + _varint_size(n) + n
            elif kind == RENUM:
                if v:
                    n = sum(_varint_size(e) for e in v)
                    total += tag + _varint_size(n) + n
    return total


# ---------------------------------------------------------------------------
# Response encoders: jsonpb with OrigName, EmitDefaults off.
# ---------------------------------------------------------------------------
_b2a = binascii.b2a_base64


def _b64(b: bytes) -> str:
    return _b2a(b, newline=False).decode("ascii")


def enc_header(h: dict) -> str:
    c = h.get("cluster_id")
    m = h.get("member_id")
    r = h.get("revision")
    t = h.get("raft_term")
    if c and m and r and t:
        return f'{{"cluster_id":"{c}","member_id":"{m}","revision":"{r}","raft_term":"{t}"}}'
    parts = []
    if c:
        parts.append(f'"cluster_id":"{c}"')
    if m:
        parts.append(f'"member_id":"{m}"')
    if r:
        parts.append(f'"revision":"{r}"')
    if t:
        parts.append(f'"raft_term":"{t}"')
    return "{" + ",".join(parts) + "}"


def enc_kv(kv: dict) -> str:
    parts = []
    k = kv.get("key")
    if k:
        parts.append('"key":"' + _b2a(k, newline=False).decode("ascii") + '"')
    v = kv.get("create_revision")
    if v:
        parts.append(f'"create_revision":"{v}"')
    v = kv.get("mod_revision")
    if v:
        parts.append(f'"mod_revision":"{v}"')
    v = kv.get("version")
    if v:
        parts.append(f'"version":"{v}"')
    v = kv.get("value")
    if v:
        parts.append('"value":"' + _b2a(v, newline=False).decode("ascii") + '"')
    v = kv.get("lease")
    if v:
        parts.append(f'"lease":"{v}"')
    return "{" + ",".join(parts) + "}"


I64, BYT, BOO, STR, ENM, SUB, RSUB, RBYT, RSTR, U32 = range(10)


def _encoder(spec):
    """A jsonpb encoder for a message given as [(name, kind, sub)] in field order."""
    def enc(msg: dict) -> str:
        parts = []
        for name, kind, sub in spec:
            v = msg.get(name)
            if v is None:
                continue
            if kind == I64:
                if v:
                    parts.append(f'"{name}":"{v}"')
            elif kind == SUB:
                parts.append(f'"{name}":' + sub(v))
            elif kind == RSUB:
                if v:
                    parts.append(f'"{name}":[' + ",".join(sub(e) for e in v) + "]")
            elif kind == BOO:
                if v:
                    parts.append(f'"{name}":true')
            elif kind == BYT:
                if v:
                    parts.append(f'"{name}":"{_b64(v)}"')
            elif kind == STR:
                if v:
                    parts.append(f'"{name}":' + go_json_string(v))
            elif kind == ENM:
                if v:
                    parts.append(f'"{name}":"{sub.get(v, v)}"' if v in sub else f'"{name}":{v}')
            elif kind == RBYT:
                if v:
                    parts.append(f'"{name}":[' + ",".join(f'"{_b64(e)}"' for e in v) + "]")
            elif kind == RSTR:
                if v:
                    parts.append(f'"{name}":[' + ",".join(go_json_string(e) for e in v) + "]")
            elif kind == U32:   # 32-bit integers are JSON numbers
                if v:
                    parts.append(f'"{name}":{v}')
        return "{" + ",".join(parts) + "}"
    return enc


def enc_range(r: dict) -> str:
    h = r.get("header")
    parts = [] if h is None else ['"header":' + enc_header(h)]
    kvs = r.get("kvs")
    if kvs:
        parts.append('"kvs":[' + ",".join([enc_kv(kv) for kv in kvs]) + "]")
    if r.get("more"):
        parts.append('"more":true')
    c = r.get("count")
    if c:
        parts.append(f'"count":"{c}"')
    return "{" + ",".join(parts) + "}"


def enc_put(r: dict) -> str:
    h = r.get("header")
    if len(r) == 1 and h is not None:
        return '{"header":' + enc_header(h) + "}"
    parts = [] if h is None else ['"header":' + enc_header(h)]
    p = r.get("prev_kv")
    if p is not None:
        parts.append('"prev_kv":' + enc_kv(p))
    return "{" + ",".join(parts) + "}"


enc_delete_range = _encoder([("header", SUB, enc_header), ("deleted", I64, None),
                             ("prev_kvs", RSUB, enc_kv)])
_response_op_spec = [("response_range", SUB, enc_range), ("response_put", SUB, enc_put),
                     ("response_delete_range", SUB, enc_delete_range)]
enc_response_op = _encoder(_response_op_spec)
enc_txn = _encoder([("header", SUB, enc_header), ("succeeded", BOO, None),
                    ("responses", RSUB, enc_response_op)])
_response_op_spec.append(("response_txn", SUB, enc_txn))
enc_header_only = _encoder([("header", SUB, enc_header)])
enc_lease_grant = _encoder([("header", SUB, enc_header), ("ID", I64, None), ("TTL", I64, None),
                            ("error", STR, None)])
enc_lease_keepalive = _encoder([("header", SUB, enc_header), ("ID", I64, None), ("TTL", I64, None)])
enc_lease_ttl = _encoder([("header", SUB, enc_header), ("ID", I64, None), ("TTL", I64, None),
                          ("grantedTTL", I64, None), ("keys", RBYT, None)])
enc_lease_leases = _encoder([("header", SUB, enc_header),
                             ("leases", RSUB, _encoder([("ID", I64, None)]))])
enc_status = _encoder([("header", SUB, enc_header), ("version", STR, None), ("dbSize", I64, None),
                       ("leader", I64, None), ("raftIndex", I64, None), ("raftTerm", I64, None),
                       ("raftAppliedIndex", I64, None), ("errors", RSTR, None),
                       ("dbSizeInUse", I64, None), ("isLearner", BOO, None)])
enc_member = _encoder([("ID", I64, None), ("name", STR, None), ("peerURLs", RSTR, None),
                       ("clientURLs", RSTR, None), ("isLearner", BOO, None)])
enc_member_list = _encoder([("header", SUB, enc_header), ("members", RSUB, enc_member)])
enc_member_add = _encoder([("header", SUB, enc_header), ("member", SUB, enc_member),
                           ("members", RSUB, enc_member)])
enc_event = _encoder([("type", ENM, {1: "DELETE"}), ("kv", SUB, enc_kv), ("prev_kv", SUB, enc_kv)])
enc_watch = _encoder([("header", SUB, enc_header), ("watch_id", I64, None), ("created", BOO, None),
                      ("canceled", BOO, None), ("compact_revision", I64, None),
                      ("cancel_reason", STR, None), ("fragment", BOO, None),
                      ("events", RSUB, enc_event)])
enc_alarm = _encoder([("header", SUB, enc_header), ("alarms", RSUB, _encoder([
    ("memberID", I64, None), ("alarm", ENM, {1: "NOSPACE", 2: "CORRUPT"})]))])
enc_hash = _encoder([("header", SUB, enc_header), ("hash", U32, None)])
enc_snapshot = _encoder([("header", SUB, enc_header), ("remaining_bytes", I64, None),
                         ("blob", BYT, None)])
enc_authenticate = _encoder([("header", SUB, enc_header), ("token", STR, None)])
enc_auth_roles = _encoder([("header", SUB, enc_header), ("roles", RSTR, None)])
enc_auth_users = _encoder([("header", SUB, enc_header), ("users", RSTR, None)])
enc_permission = _encoder([("permType", ENM, {1: "WRITE", 2: "READWRITE"}), ("key", BYT, None),
                           ("range_end", BYT, None)])
enc_role_get = _encoder([("header", SUB, enc_header), ("perm", RSUB, enc_permission)])
enc_lock = _encoder([("header", SUB, enc_header), ("key", BYT, None)])
enc_leader_key = _encoder([("name", BYT, None), ("key", BYT, None), ("rev", I64, None),
                           ("lease", I64, None)])
enc_campaign = _encoder([("header", SUB, enc_header), ("leader", SUB, enc_leader_key)])
enc_leader = _encoder([("header", SUB, enc_header), ("kv", SUB, enc_kv)])


# ---------------------------------------------------------------------------
# Handlers. A unary handler is ``async (server, body) -> (status, kind, body)``;
# a streaming handler is ``async (server, ctx) -> None`` where ctx is the HTTP
# layer's stream context (read(), send(), respond(), wait_closed()).
# ---------------------------------------------------------------------------
def learner_may(method, req: dict) -> bool:
    """etcd's isRPCSupportedForLearner (the gateway goes through the same interceptor)."""
    return method == "status" or (method == "range" and bool(req.get("serializable")))


async def _refused_for_learner(server, ctx) -> bool:
    """etcd's stream interceptor: a learner serves no stream."""
    if not getattr(server, "is_learner", False):
        return False
    status, chunk = stream_error_chunk(ErrNotSupportedForLearner())
    await ctx.send(chunk, status)
    return True


def _unary(schema: Schema, method, encode, auth: bool = False):
    """A unary route: `method` names a Server method, or is ``call(server, req)``. With
    `auth`, while auth is enabled, the request's credentials (its token headers, see
    fastkv.auth.identity) go along as a last argument."""
    call = method if callable(method) else None

    async def handler(server, body: bytes, hreq=None):
        try:
            req = decode_request(schema, body)
        except GoJSONError as e:
            return decode_error(str(e))
        if getattr(server, "is_learner", False) and not learner_may(method, req):
            return rpc_error(ErrNotSupportedForLearner())
        try:
            if len(body) > 4096:
                limit = server.cfg.max_request_bytes + GRPC_OVERHEAD_BYTES
                if 2 * len(body) > limit:
                    size = proto_size(schema, req)
                    if size > limit:
                        raise message_too_large(size, limit)
            if auth and server.auth.enabled:
                creds = http_credentials(hreq)
                if call is None:
                    resp = await getattr(server, method)(req, creds)
                else:
                    resp = await call(server, req, creds)
            elif call is None:
                resp = await getattr(server, method)(req)
            else:
                resp = await call(server, req)
        except EtcdError as e:
            return rpc_error(e)
        return 200, K_OK, encode(resp).encode()
    handler.__name__ = method if call is None else call.__name__
    return handler


# The lock and election services run on the server's recipes (fastkv/concurrency.py),
# with the caller's credentials while auth is enabled.
async def lock(server, req, creds=None):
    return await server.recipes.as_caller(creds).lock(req.get("name", b""), req.get("lease", 0))


async def unlock(server, req, creds=None):
    return await server.recipes.as_caller(creds).unlock(req.get("key", b""))


async def campaign(server, req, creds=None):
    return await server.recipes.as_caller(creds).campaign(
        req.get("name", b""), req.get("lease", 0), req.get("value", b""))


async def proclaim(server, req, creds=None):
    return await server.recipes.as_caller(creds).proclaim(req.get("leader"),
                                                          req.get("value", b""))


async def resign(server, req, creds=None):
    return await server.recipes.as_caller(creds).resign(req.get("leader"))


async def leader(server, req, creds=None):
    return await server.recipes.as_caller(creds).leader(req.get("name", b""))


class _StreamDecoder:
    """Go's json.Decoder over a request body that arrives in chunks."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.buf = b""
        self.pos = 0
        self.eof = False

    async def next(self):
        """The next JSON value's (data, node), or None at the end of the body."""
        while True:
            try:
                node, end = decode_next(self.buf, self.pos, final=self.eof)
            except GoEOF:
                node, end = _MORE, 0
            if node is None and not self.eof:
                node = _MORE
            if node is not _MORE:
                if node is None:
                    return None
                data = self.buf
                self.pos = end
                return data, node
            chunk = await self.ctx.read()
            if not chunk:
                self.eof = True
            else:
                self.buf = self.buf[self.pos:] + chunk
                self.pos = 0


_MORE = object()
# Go's http.response buffers 2048 bytes before its chunked writer.
GO_RESPONSE_BUFFER = 2048


async def send_result(ctx, msg: str) -> None:
    """One stream message as grpc-gateway writes it: ``{"result": msg}`` then the
    delimiter "\n", then a flush. Through Go's 2048-byte response buffer, a message
    that fills the buffer leaves as a chunk of its own and the "\n" as another one;
    a smaller one leaves with its "\n" in one chunk."""
    data = b'{"result":' + msg.encode() + b"}"
    if len(data) >= GO_RESPONSE_BUFFER:
        await ctx.send(data)
        await ctx.send(b"\n")
    else:
        await ctx.send(data + b"\n")


async def _stream_request(dec: _StreamDecoder, schema: Schema):
    item = await dec.next()
    if item is None:
        return None
    data, node = item
    return _slow_msg(schema, data, node)


async def watch_handler(server, ctx) -> None:
    """/v3/watch: a body of WatchRequests, a chunked stream of {"result": WatchResponse}."""
    if await _refused_for_learner(server, ctx):
        return
    dec = _StreamDecoder(ctx)
    try:
        first = await _stream_request(dec, WATCH_REQ)
    except GoJSONError as e:  # grpc-gateway returns the raw decoder error: code Unknown
        await ctx.respond(*decode_error(str(e), GrpcCode.UNKNOWN))
        return
    if first is None:  # etcd waits for a response header that never comes
        await ctx.wait_closed()
        return
    stream = server.watch_stream(http_credentials(ctx.req))   # checked at each create
    failed: list = []
    # a slow consumer that did not take even its cancel (fastkv/mvcc/watch.py): the
    # connection is closed, which drops what its transport holds
    stream.on_abandon = ctx.proto.transport.abort
    peer = ctx.proto.transport.get_extra_info("peername")
    stream.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "")

    async def pump():
        try:
            async for resp in stream.responses():
                await send_result(ctx, enc_watch(resp))
        except EtcdError as e:
            failed.append(e)

    pump_task = asyncio.ensure_future(pump())
    try:
        await stream.handle(first)
        while True:  # later requests: a decoding error ends the reading, not the stream
            try:
                req = await _stream_request(dec, WATCH_REQ)
            except GoJSONError:
                break
            if req is None:
                break
            await stream.handle(req)
        await pump_task
        if failed:
            status, chunk = stream_error_chunk(failed[0])
            await ctx.send(chunk, status)
    except EtcdError as e:
        status, chunk = stream_error_chunk(e)
        await ctx.send(chunk, status)
    finally:
        pump_task.cancel()
        stream.close()


async def keepalive_handler(server, ctx) -> None:
    """/v3/lease/keepalive: a body of {"ID"}s, a chunked stream of {"result": ...}."""
    if await _refused_for_learner(server, ctx):
        return
    dec = _StreamDecoder(ctx)
    first = True
    while True:
        try:
            req = await _stream_request(dec, LEASE_ID_REQ)
        except GoJSONError as e:
            if first:
                await ctx.respond(*decode_error(str(e), GrpcCode.UNKNOWN))
            return
        if req is None:
            return
        first = False
        try:
            resp = await server.lease_keepalive(req)
        except EtcdError as e:
            status, chunk = stream_error_chunk(e)
            await ctx.send(chunk, status)
            return
        await send_result(ctx, enc_lease_keepalive(resp))


def _server_stream(schema: Schema, open_stream, encode):
    """A server-streaming route (one request, a stream of answers): the request is
    decoded as a unary one (a decoding error is code 3, Content-Length framed), then
    each answer is a {"result"} chunk and an error ends the stream with an {"error"}
    chunk. Nothing is written before the first answer (etcd sends no header either)."""
    async def handler(server, ctx) -> None:
        if await _refused_for_learner(server, ctx):
            return
        try:
            req = await _stream_request(_StreamDecoder(ctx), schema)
        except GoJSONError as e:
            await ctx.respond(*decode_error(str(e)))
            return
        creds = http_credentials(ctx.req) if server.auth.enabled else None
        try:
            async with contextlib.aclosing(open_stream(server, req or {}, creds)) as answers:
                async for resp in answers:
                    await send_result(ctx, encode(resp))
        except EtcdError as e:
            status, chunk = stream_error_chunk(e)
            await ctx.send(chunk, status)
    handler.__name__ = open_stream.__name__
    return handler


def snapshot(server, req, creds=None):
    return server.snapshot_stream(creds=creds)


def observe(server, req, creds=None):
    return server.recipes.as_caller(creds).observe(req.get("name", b""))


_GO_TEXT_404_GW = b"Not Found\n"
_GO_TEXT_404 = b"404 page not found\n"
_GO_TEXT_405 = b"Method Not Allowed\n"


async def health_handler(server, body: bytes, hreq=None):
    res = server.health()
    if asyncio.iscoroutine(res) or isinstance(res, asyncio.Future):
        res = await res
    ok = res[0] if isinstance(res, tuple) else bool(res)
    if ok:
        return 200, K_HEALTH, b'{"health":"true"}'
    return 503, K_TEXT, b'{"health":"false"}\n'


async def version_handler(server, body: bytes, hreq=None):
    v = server.version_info()
    return 200, K_VERSION, ('{"etcdserver":%s,"etcdcluster":%s}' % (
        go_json_string(v["etcdserver"]), go_json_string(v["etcdcluster"]))).encode()


# path -> (handler, streaming). All gateway routes are POST-only.
GATEWAY_ROUTES = {
    "/v3/kv/range": (_unary(RANGE_REQ, "range", enc_range, auth=True), False),
    "/v3/kv/put": (_unary(PUT_REQ, "put", enc_put, auth=True), False),
    "/v3/kv/deleterange": (_unary(DELETE_RANGE_REQ, "delete_range", enc_delete_range, auth=True),
                           False),
    "/v3/kv/txn": (_unary(TXN_REQ, "txn", enc_txn, auth=True), False),
    "/v3/kv/compaction": (_unary(COMPACTION_REQ, "compact", enc_header_only, auth=True), False),
    "/v3/watch": (watch_handler, True),
    "/v3/lease/grant": (_unary(LEASE_GRANT_REQ, "lease_grant", enc_lease_grant, auth=True), False),
    "/v3/lease/revoke": (_unary(LEASE_ID_REQ, "lease_revoke", enc_header_only, auth=True), False),
    "/v3/kv/lease/revoke": (_unary(LEASE_ID_REQ, "lease_revoke", enc_header_only, auth=True),
                            False),
    "/v3/lease/keepalive": (keepalive_handler, True),
    "/v3/lease/timetolive": (_unary(LEASE_TTL_REQ, "lease_timetolive", enc_lease_ttl), False),
    "/v3/kv/lease/timetolive": (_unary(LEASE_TTL_REQ, "lease_timetolive", enc_lease_ttl), False),
    "/v3/lease/leases": (_unary(EMPTY_REQ, "lease_leases", enc_lease_leases), False),
    "/v3/kv/lease/leases": (_unary(EMPTY_REQ, "lease_leases", enc_lease_leases), False),
    "/v3/maintenance/status": (_unary(EMPTY_REQ, "status", enc_status), False),
    "/v3/maintenance/transfer-leadership": (_unary(MOVE_LEADER_REQ, "move_leader",
                                                   enc_header_only), False),
    "/v3/cluster/member/list": (_unary(EMPTY_REQ, "member_list", enc_member_list), False),
    "/v3/cluster/member/add": (_unary(MEMBER_ADD_REQ, "member_add", enc_member_add, auth=True),
                               False),
    "/v3/cluster/member/remove": (_unary(MEMBER_ID_REQ, "member_remove", enc_member_list, auth=True),
                                  False),
    "/v3/cluster/member/update": (_unary(MEMBER_UPDATE_REQ, "member_update", enc_member_list, auth=True),
                                  False),
    "/v3/cluster/member/promote": (_unary(MEMBER_ID_REQ, "member_promote", enc_member_list, auth=True),
                                   False),
    "/v3/maintenance/alarm": (_unary(ALARM_REQ, "alarm", enc_alarm, auth=True), False),
    "/v3/maintenance/defragment": (_unary(EMPTY_REQ, "defragment", enc_header_only, auth=True),
                                   False),
    # etcd 3.4's rpc.proto gives HashKV the path of Hash, "/v3/maintenance/hash", and
    # grpc-gateway serves the first pattern registered: Hash. HashKV has no JSON route
    # (/v3/maintenance/hashkv is etcd 3.5's); gRPC serves both.
    "/v3/maintenance/hash": (_unary(EMPTY_REQ, "hash", enc_hash, auth=True), False),
    "/v3/maintenance/snapshot": (_server_stream(EMPTY_REQ, snapshot, enc_snapshot), True),
    "/v3/auth/enable": (_unary(EMPTY_REQ, "auth_enable", enc_header_only, auth=True), False),
    "/v3/auth/disable": (_unary(EMPTY_REQ, "auth_disable", enc_header_only, auth=True), False),
    "/v3/auth/authenticate": (_unary(AUTH_PASSWORD_REQ, "authenticate", enc_authenticate, auth=True),
                              False),
    "/v3/auth/user/add": (_unary(AUTH_USER_ADD_REQ, "user_add", enc_header_only, auth=True),
                          False),
    "/v3/auth/user/get": (_unary(AUTH_NAME_REQ, "user_get", enc_auth_roles, auth=True), False),
    "/v3/auth/user/list": (_unary(EMPTY_REQ, "user_list", enc_auth_users, auth=True), False),
    "/v3/auth/user/delete": (_unary(AUTH_NAME_REQ, "user_delete", enc_header_only, auth=True),
                             False),
    "/v3/auth/user/changepw": (_unary(AUTH_PASSWORD_REQ, "user_change_password",
                                      enc_header_only, auth=True), False),
    "/v3/auth/user/grant": (_unary(AUTH_USER_GRANT_REQ, "user_grant_role", enc_header_only, auth=True),
                            False),
    "/v3/auth/user/revoke": (_unary(AUTH_USER_REVOKE_REQ, "user_revoke_role",
                                    enc_header_only, auth=True), False),
    "/v3/auth/role/add": (_unary(AUTH_NAME_REQ, "role_add", enc_header_only, auth=True), False),
    "/v3/auth/role/get": (_unary(AUTH_ROLE_REQ, "role_get", enc_role_get, auth=True), False),
    "/v3/auth/role/list": (_unary(EMPTY_REQ, "role_list", enc_auth_roles, auth=True), False),
    "/v3/auth/role/delete": (_unary(AUTH_ROLE_REQ, "role_delete", enc_header_only, auth=True),
                             False),
    "/v3/auth/role/grant": (_unary(AUTH_ROLE_GRANT_REQ, "role_grant_permission",
                                   enc_header_only, auth=True), False),
    "/v3/auth/role/revoke": (_unary(AUTH_ROLE_REVOKE_REQ, "role_revoke_permission",
                                    enc_header_only, auth=True), False),
    "/v3/lock/lock": (_unary(LOCK_REQ, lock, enc_lock, auth=True), False),
    "/v3/lock/unlock": (_unary(UNLOCK_REQ, unlock, enc_header_only, auth=True), False),
    "/v3/election/campaign": (_unary(CAMPAIGN_REQ, campaign, enc_campaign, auth=True), False),
    "/v3/election/proclaim": (_unary(PROCLAIM_REQ, proclaim, enc_header_only, auth=True), False),
    "/v3/election/leader": (_unary(LEADER_REQ, leader, enc_leader, auth=True), False),
    "/v3/election/observe": (_server_stream(LEADER_REQ, observe, enc_leader), True),
    "/v3/election/resign": (_unary(RESIGN_REQ, resign, enc_header_only, auth=True), False),
}
async def metrics_handler(server, body: bytes, hreq=None):
    from fastkv import metrics
    return 200, K_METRICS, metrics.render(server)


GET_ROUTES = {"/health": health_handler, "/version": version_handler,
              "/metrics": metrics_handler}
METRICS_ROUTES = {"/health": health_handler, "/metrics": metrics_handler}


def _get_route(routes: dict, method: bytes, path: str):
    """A GET-only route of `routes`, or Go's 404/405 answer."""
    h = routes.get(path)
    if h is None:
        return 404, K_TEXT, _GO_TEXT_404
    if method != b"GET":
        return 405, K_TEXT_ALLOW_GET, _GO_TEXT_405
    return h, False


def resolve_metrics(method: bytes, path: str):
    """The routes of a --listen-metrics-urls listener: /metrics and /health (etcd's)."""
    return _get_route(METRICS_ROUTES, method, path)


def _v2_resolve():
    """v2_cluster.resolve, imported on first use (v2_cluster imports this module)."""
    global _v2_resolver
    if _v2_resolver is None:
        from fastkv.api.v2_cluster import resolve as _v2_resolver
    return _v2_resolver


_v2_resolver = None


def resolve(method: bytes, path: str):
    """Route like etcd's muxes: (handler, streaming) or a fixed (status, kind, body) answer."""
    if method == b"OPTIONS":  # etcd's accessController answers every OPTIONS itself
        return 200, K_EMPTY, b""
    if path.startswith("/v3beta/"):
        path = "/v3/" + path[8:]
    if path.startswith("/v3/"):
        route = GATEWAY_ROUTES.get(path)
        if route is None:
            return 404, K_TEXT, _GO_TEXT_404_GW
        if method != b"POST":
            return 405, K_TEXT, _GO_TEXT_405
        return route
    if path.startswith("/v2/"):
        h = _v2_resolve()(path)
        if h is not None:
            return h, None
    return _get_route(GET_ROUTES, method, path)
