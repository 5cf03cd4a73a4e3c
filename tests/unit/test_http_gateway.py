"""The HTTP server and the v3 JSON gateway, driven against an in-memory fake Server.

Expected bytes and texts below were taken from Debian's etcd 3.4.23 (curl and raw
sockets against a live member); the compat suite re-checks them side by side.
"""
from __future__ import annotations

import asyncio
import base64
import types
import json
import socket
import threading
import time

import pytest
import uvloop

from fastkv.api import v3_gateway as gw
from fastkv.api.http import build_response, start_http_server
from fastkv.errors import ErrEmptyKey, ErrLeaseExist, ErrLeaseNotFound, ErrRequestTooLarge

HDR = {"cluster_id": 11, "member_id": 22, "revision": 5, "raft_term": 2}
HDR_JSON = '{"cluster_id":"11","member_id":"22","revision":"5","raft_term":"2"}'


def b64(s: bytes) -> str:
    return base64.b64encode(s).decode()


class FakeWatchStream:
    def __init__(self, server):
        self.server = server
        self.q: asyncio.Queue = asyncio.Queue()
        self.closed = False
        self.requests = []

    async def handle(self, req):
        self.requests.append(req)
        if "create_request" in req:
            await self.q.put({"header": dict(HDR), "created": True,
                              "watch_id": len(self.requests) - 1})
        elif "cancel_request" in req:
            await self.q.put({"header": dict(HDR), "canceled": True,
                              "watch_id": req["cancel_request"].get("watch_id", 0)})

    async def responses(self):
        while True:
            yield await self.q.get()

    def close(self):
        self.closed = True


class FakeCfg:
    max_request_bytes = 1572864


class FakeServer:
    """Records requests; answers like a single member would."""

    def __init__(self):
        self.cfg = FakeCfg()
        self.auth = types.SimpleNamespace(enabled=False)   # the auth store: disabled
        self.calls = []
        self.kv = {}
        self.streams = []
        self.healthy = True
        self.put_delay = 0.0

    def _h(self):
        return dict(HDR)

    async def put(self, req):
        self.calls.append(("put", req))
        if self.put_delay:
            await asyncio.sleep(self.put_delay)
        if not req.get("key"):
            raise ErrEmptyKey()
        if len(req.get("value", b"")) > self.cfg.max_request_bytes:
            raise ErrRequestTooLarge()
        prev = self.kv.get(req["key"])
        self.kv[req["key"]] = req.get("value", b"")
        resp = {"header": self._h()}
        if req.get("prev_kv") and prev is not None:
            resp["prev_kv"] = {"key": req["key"], "create_revision": 4, "mod_revision": 4,
                               "version": 1, "value": prev}
        return resp

    async def range(self, req):
        self.calls.append(("range", req))
        if not req.get("key"):
            raise ErrEmptyKey()
        v = self.kv.get(req["key"])
        if v is None:
            return {"header": self._h()}
        return {"header": self._h(), "kvs": [{"key": req["key"], "create_revision": 4,
                                              "mod_revision": 5, "version": 2, "value": v}],
                "count": 1}

    async def delete_range(self, req):
        self.calls.append(("delete_range", req))
        return {"header": self._h(), "deleted": 1 if self.kv.pop(req.get("key"), None) else 0}

    async def txn(self, req):
        self.calls.append(("txn", req))
        return {"header": self._h(), "succeeded": True,
                "responses": [{"response_range": {"header": {"revision": 10}, "count": 0}},
                              {"response_txn": {"header": {}, "succeeded": True}}]}

    async def compact(self, req):
        self.calls.append(("compact", req))
        return {"header": self._h()}

    async def lease_grant(self, req):
        self.calls.append(("lease_grant", req))
        if req.get("ID") == 1234:
            raise ErrLeaseExist()
        return {"header": self._h(), "ID": req.get("ID") or 777, "TTL": req.get("TTL", 0)}

    async def lease_revoke(self, req):
        self.calls.append(("lease_revoke", req))
        raise ErrLeaseNotFound()

    async def lease_keepalive(self, req):
        self.calls.append(("lease_keepalive", req))
        return {"header": self._h(), "ID": req["ID"], "TTL": 60 if req["ID"] == 1234 else 0}

    async def lease_timetolive(self, req):
        self.calls.append(("lease_timetolive", req))
        return {"header": self._h(), "ID": req["ID"], "TTL": 56, "grantedTTL": 60,
                "keys": [b"k1", b"k2"]}

    async def lease_leases(self, req):
        self.calls.append(("lease_leases", req))
        return {"header": self._h(), "leases": [{"ID": 1234}, {"ID": 5}]}

    async def status(self, req):
        self.calls.append(("status", req))
        return {"header": self._h(), "version": "3.4.23", "dbSize": 20480, "leader": 22,
                "raftIndex": 34, "raftTerm": 2, "raftAppliedIndex": 34, "dbSizeInUse": 16384}

    def watch_stream(self, creds=None):
        s = FakeWatchStream(self)
        self.streams.append(s)
        return s

    def version_info(self):
        return {"etcdserver": "3.4.23", "etcdcluster": "3.4.0"}

    def health(self):
        return (self.healthy, "" if self.healthy else "no leader")


@pytest.fixture
def served():
    """(fake server, port, loop) with the HTTP server running in a thread."""
    fake = FakeServer()
    loop = uvloop.new_event_loop()
    ready = threading.Event()
    holder = {}

    def run():
        asyncio.set_event_loop(loop)

        async def start():
            holder["srv"] = await start_http_server(fake, "127.0.0.1", 0)
            ready.set()
        loop.run_until_complete(start())
        loop.run_forever()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert ready.wait(10)
    port = holder["srv"].sockets[0].getsockname()[1]
    try:
        yield fake, port, loop
    finally:
        async def stop():
            holder["srv"].close()
        asyncio.run_coroutine_threadsafe(stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)


class Conn:
    """A raw HTTP/1.1 client socket that parses responses exactly."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.s.settimeout(5)
        self.buf = b""

    def send(self, data: bytes):
        self.s.sendall(data)

    def request(self, path, body=b"", method="POST", headers=b""):
        if isinstance(body, str):
            body = body.encode()
        self.send(b"%s %s HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n%s"
                  % (method.encode(), path.encode(), headers, len(body), body))

    def _fill(self):
        d = self.s.recv(65536)
        if not d:
            raise EOFError
        self.buf += d

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def head(self):
        status = self._line()
        headers = []
        while True:
            line = self._line()
            if not line:
                break
            k, v = line.split(b": ", 1)
            headers.append((k.decode(), v.decode()))
        return int(status.split()[1]), headers

    def chunk(self):
        size = int(self._line(), 16)
        if size == 0:
            trailers = []
            while True:
                line = self._line()
                if not line:
                    return None, trailers
                trailers.append(line)
        data = self._exact(size)
        assert self._exact(2) == b"\r\n"
        return data, None

    def response(self):
        status, headers = self.head()
        h = dict(headers)
        if "Content-Length" in h:
            return status, headers, self._exact(int(h["Content-Length"]))
        assert h.get("Transfer-Encoding") == "chunked"
        body = b""
        while True:
            data, trailers = self.chunk()
            if data is None:
                return status, headers + [("trailer", t.decode()) for t in trailers], body
            body += data

    def close(self):
        self.s.close()


def call(port, path, body=b"", method="POST"):
    c = Conn(port)
    try:
        c.request(path, body, method)
        return c.response()
    finally:
        c.close()


# -- request decoding: the fast path and Go's texts ---------------------------

def dec(schema, body):
    return gw.decode_request(schema, body if isinstance(body, bytes) else body.encode())


def err(schema, body):
    with pytest.raises(gw.GoJSONError) as e:
        dec(schema, body)
    return str(e.value)


def test_decode_field_types_snake_and_camel():
    body = ('{"key":"Zm9v","range_end":"Zm9w","limit":"5","revision":7,"sort_order":"DESCEND",'
            '"sortTarget":"MOD","serializable":true,"keysOnly":true,"count_only":false,'
            '"minModRevision":"1","max_mod_revision":2,"minCreateRevision":-3,"maxCreateRevision":"-4"}')
    assert dec(gw.RANGE_REQ, body) == {
        "key": b"foo", "range_end": b"fop", "limit": 5, "revision": 7, "sort_order": 2,
        "sort_target": 3, "serializable": True, "keys_only": True, "count_only": False,
        "min_mod_revision": 1, "max_mod_revision": 2, "min_create_revision": -3,
        "max_create_revision": -4}


def test_camel_wins_over_proto_name_and_unknown_fields_ignored():
    assert dec(gw.PUT_REQ, '{"prev_kv":false,"prevKv":true,"foo":[1,{"x":2}],"key":"YQ=="}') == {
        "key": b"a", "prev_kv": True}
    assert dec(gw.LEASE_GRANT_REQ, '{"ttl":60,"id":"5"}') == {}  # etcd: only "TTL" and "ID"


def test_empty_null_and_trailing_bytes():
    assert dec(gw.RANGE_REQ, "") == {}
    assert dec(gw.RANGE_REQ, "  \n") == {}
    assert dec(gw.RANGE_REQ, "null") == {}
    assert dec(gw.RANGE_REQ, '{"key":null,"limit":null}') == {}
    # Go's json.Decoder stops after the first value.
    assert dec(gw.RANGE_REQ, '{"key":"Zm9v"} junk') == {"key": b"foo"}
    assert dec(gw.RANGE_REQ, '{"key":"Zm9v"}{"x":1}') == {"key": b"foo"}


def test_enums_by_name_and_number():
    assert dec(gw.RANGE_REQ, '{"sort_order":7}') == {"sort_order": 7}
    assert err(gw.RANGE_REQ, '{"sortOrder":"BAD"}') == \
        'unknown value "BAD" for enum etcdserverpb.RangeRequest_SortOrder'
    assert err(gw.RANGE_REQ, '{"sort_order":"2"}') == \
        'unknown value "2" for enum etcdserverpb.RangeRequest_SortOrder'
    assert err(gw.RANGE_REQ, '{"sort_order":1.5}') == \
        "json: cannot unmarshal number 1.5 into Go value of type etcdserverpb.RangeRequest_SortOrder"
    assert dec(gw.WATCH_REQ, '{"create_request":{"filters":["NODELETE",0]}}') == {
        "create_request": {"filters": [1, 0]}}


def test_go_error_texts_from_etcd():
    R = gw.RANGE_REQ
    assert err(R, "{b}") == "invalid character 'b' looking for beginning of object key string"
    assert err(R, "{<}") == "invalid character '<' looking for beginning of object key string"
    assert err(R, '{"key":"Zm9v",}') == "invalid character '}' looking for beginning of object key string"
    assert err(R, '{"key":"Zm9v"') == "unexpected EOF"
    assert err(R, '{"key":"!!"}') == "illegal base64 data at input byte 0"
    assert err(R, '{"key":"Zm9"}') == "illegal base64 data at input byte 0"
    assert err(R, '{"key":"Zm9v="}') == "illegal base64 data at input byte 4"
    assert err(R, '{"key":"_-8"}') == "illegal base64 data at input byte 0"  # no URL-safe alphabet
    assert err(R, '{"key":1}') == "json: cannot unmarshal number into Go value of type []uint8"
    assert err(R, '{"limit":"abc"}') == "invalid character 'a' looking for beginning of value"
    assert err(R, '{"limit":"0x5"}') == "invalid character 'x' after top-level value"
    assert err(R, '{"limit":1.5}') == "json: cannot unmarshal number 1.5 into Go value of type int64"
    assert err(R, '{"limit":1e2}') == "json: cannot unmarshal number 1e2 into Go value of type int64"
    assert err(R, '{"limit":true}') == "json: cannot unmarshal bool into Go value of type int64"
    assert err(R, '{"limit":"9223372036854775808"}') == \
        "json: cannot unmarshal number 9223372036854775808 into Go value of type int64"
    assert err(R, '{"keys_only":"true"}') == "json: cannot unmarshal string into Go value of type bool"
    assert err(R, "[1]") == "json: cannot unmarshal array into Go value of type map[string]json.RawMessage"
    assert err(R, '"x"') == "json: cannot unmarshal string into Go value of type map[string]json.RawMessage"
    assert err(gw.TXN_REQ, '{"compare":{}}') == \
        "json: cannot unmarshal object into Go value of type []json.RawMessage"
    assert err(gw.TXN_REQ, '{"compare":[{"key":"Zm9v","result":"BAD"}]}') == \
        'unknown value "BAD" for enum etcdserverpb.Compare_CompareResult'


def test_int64_strings_are_reparsed_like_jsonpb():
    assert dec(gw.RANGE_REQ, '{"limit":" 5"}') == {"limit": 5}
    assert dec(gw.RANGE_REQ, '{"limit":"-5"}') == {"limit": -5}
    assert dec(gw.RANGE_REQ, '{"limit":"null"}') == {}
    # the quotes are dropped without unescaping, so an escape is a syntax error
    assert err(gw.RANGE_REQ, '{"limit":"\\u0035"}') == \
        "invalid character '\\\\' looking for beginning of value"


def test_first_field_in_proto_order_reports_its_error():
    # Go walks the struct in field order: key (1) before limit (3)
    assert err(gw.RANGE_REQ, '{"limit":true,"key":1}') == \
        "json: cannot unmarshal number into Go value of type []uint8"


def test_escapes_and_newlines_go_through_the_go_decoder():
    assert dec(gw.PUT_REQ, '{"key":"Zm\\n9v","value":"\\u0059mFy"}') == {"key": b"foo", "value": b"bar"}
    assert dec(gw.PUT_REQ, b'{"key":"Zm9v","x":"\xff"}') == {"key": b"foo"}  # bad UTF-8 is not an error


@pytest.mark.parametrize("s", ["", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zg=", "Zg", "Z", "Zg==Zg==",
                               "=Zg=", "Zm9v=", "Zm 9v", "+/+/", "-_-_", "Zm9w", "Zh==", "YQ===",
                               "Zg=\n=", "Zm9v\r\n"])
def test_fast_base64_agrees_with_go_port(s):
    try:
        go = gw.go_base64_decode(s.encode())
    except gw.GoJSONError as e:
        go = str(e)
    body = json.dumps({"key": s}).encode()
    try:
        got = dec(gw.PUT_REQ, body).get("key", b"")
    except gw.GoJSONError as e:
        got = str(e)
    assert got == go


def test_txn_decoding_with_oneofs():
    body = ('{"compare":[{"key":"Zm9v","result":"EQUAL","target":"VALUE","value":"YmFy"},'
            '{"key":"YQ==","target":"MOD","modRevision":"3","range_end":"Yg=="}],'
            '"success":[{"request_range":{"key":"Zm9v"}},{"requestPut":{"key":"YQ=="}},'
            '{"request_delete_range":{"key":"YQ==","prevKv":true}},{"request_txn":{}}],'
            '"failure":[{"request_put":{"key":"Zm9v"}}]}')
    assert dec(gw.TXN_REQ, body) == {
        "compare": [{"result": 0, "target": 3, "key": b"foo", "value": b"bar"},
                    {"target": 2, "key": b"a", "range_end": b"b", "mod_revision": 3}],
        "success": [{"request_range": {"key": b"foo"}}, {"request_put": {"key": b"a"}},
                    {"request_delete_range": {"key": b"a", "prev_kv": True}},
                    {"request_txn": {}}],
        "failure": [{"request_put": {"key": b"foo"}}]}


def test_proto_size_matches_grpc():
    # etcd: a put of a 2097152-byte value under key "foo" is 2097162 bytes on the wire
    assert gw.proto_size(gw.PUT_REQ, {"key": b"foo", "value": b"x" * 2097152}) == 2097162
    assert gw.proto_size(gw.RANGE_REQ, {"key": b"a", "limit": -1}) == 3 + 11


# -- response encoding ---------------------------------------------------------

def test_encoders_omit_defaults_and_print_int64_as_strings():
    assert gw.enc_put({"header": HDR}) == '{"header":' + HDR_JSON + "}"
    assert gw.enc_range({"header": HDR, "count": 0}) == '{"header":' + HDR_JSON + "}"
    kv = {"key": b"foo", "create_revision": 4, "mod_revision": 5, "version": 2, "value": b"", "lease": 0}
    assert gw.enc_range({"header": HDR, "kvs": [kv], "more": True, "count": 3}) == (
        '{"header":' + HDR_JSON + ',"kvs":[{"key":"Zm9v","create_revision":"4","mod_revision":"5",'
        '"version":"2"}],"more":true,"count":"3"}')
    assert gw.enc_txn({"header": HDR, "succeeded": True, "responses": [
        {"response_put": {"header": {"revision": 11}}}, {"response_txn": {"header": {}, "succeeded": True}}]}) == (
        '{"header":' + HDR_JSON + ',"succeeded":true,"responses":[{"response_put":{"header":'
        '{"revision":"11"}}},{"response_txn":{"header":{},"succeeded":true}}]}')
    assert gw.enc_watch({"header": HDR, "events": [
        {"type": 1, "kv": {"key": b"a", "mod_revision": 8}},
        {"type": 0, "kv": {"key": b"a", "mod_revision": 9, "version": 1, "create_revision": 9}}]}) == (
        '{"header":' + HDR_JSON + ',"events":[{"type":"DELETE","kv":{"key":"YQ==","mod_revision":"8"}},'
        '{"kv":{"key":"YQ==","create_revision":"9","mod_revision":"9","version":"1"}}]}')
    assert gw.enc_watch({"header": HDR, "watch_id": -1}) == '{"header":' + HDR_JSON + ',"watch_id":"-1"}'


def test_error_body_escapes_like_go():
    assert gw.error_body("invalid character '<' x & \"y\"", 3) == (
        b'{"error":"invalid character \'\\u003c\' x \\u0026 \\"y\\"","message":'
        b'"invalid character \'\\u003c\' x \\u0026 \\"y\\"","code":3}')


def test_response_framing():
    small = build_response(200, gw.K_OK, b"{}")
    assert small.startswith(b"HTTP/1.1 200 OK\r\nAccess-Control-Allow-Headers: accept, content-type, "
                            b"authorization\r\nAccess-Control-Allow-Methods: POST, GET, OPTIONS, PUT, "
                            b"DELETE\r\nAccess-Control-Allow-Origin: *\r\nContent-Type: application/json"
                            b"\r\nGrpc-Metadata-Content-Type: application/grpc\r\nDate: ")
    assert small.endswith(b"GMT\r\nContent-Length: 2\r\n\r\n{}")
    big = build_response(200, gw.K_OK, b"x" * 2049)
    assert b"Transfer-Encoding: chunked\r\n\r\n801\r\n" + b"x" * 2049 + b"\r\n0\r\n\r\n" in big
    assert b"Content-Length: 2048\r\n" in build_response(200, gw.K_OK, b"x" * 2048)


# -- over HTTP --------------------------------------------------------------------

def test_put_and_range_round_trip(served):
    fake, port, _ = served
    st, hdrs, body = call(port, "/v3/kv/put", '{"key":"Zm9v","value":"YmFy"}')
    assert st == 200 and body == ('{"header":' + HDR_JSON + "}").encode()
    assert [k for k, _ in hdrs] == ["Access-Control-Allow-Headers", "Access-Control-Allow-Methods",
                                    "Access-Control-Allow-Origin", "Content-Type",
                                    "Grpc-Metadata-Content-Type", "Date", "Content-Length"]
    st, _, body = call(port, "/v3beta/kv/range", '{"key":"Zm9v"}')
    assert json.loads(body)["kvs"][0]["value"] == "YmFy"
    assert fake.calls[-1] == ("range", {"key": b"foo"})


def test_every_unary_route(served):
    fake, port, _ = served
    cases = {
        "/v3/kv/deleterange": ('{"key":"Zm9v"}', '{"header":' + HDR_JSON + "}"),
        "/v3/kv/txn": ("{}", '{"header":' + HDR_JSON + ',"succeeded":true,"responses":[{"response_range":'
                       '{"header":{"revision":"10"}}},{"response_txn":{"header":{},"succeeded":true}}]}'),
        "/v3/kv/compaction": ('{"revision":"3","physical":true}', '{"header":' + HDR_JSON + "}"),
        "/v3/lease/grant": ('{"TTL":"60","ID":"99"}', '{"header":' + HDR_JSON + ',"ID":"99","TTL":"60"}'),
        "/v3/lease/timetolive": ('{"ID":"5","keys":true}', '{"header":' + HDR_JSON +
                                 ',"ID":"5","TTL":"56","grantedTTL":"60","keys":["azE=","azI="]}'),
        "/v3/kv/lease/timetolive": ('{"ID":5}', None),
        "/v3/lease/leases": ("", '{"header":' + HDR_JSON + ',"leases":[{"ID":"1234"},{"ID":"5"}]}'),
        "/v3/kv/lease/leases": ("{}", None),
        "/v3/maintenance/status": ("{}", '{"header":' + HDR_JSON + ',"version":"3.4.23","dbSize":"20480",'
                                   '"leader":"22","raftIndex":"34","raftTerm":"2","raftAppliedIndex":"34",'
                                   '"dbSizeInUse":"16384"}'),
    }
    for path, (req, want) in cases.items():
        st, _, body = call(port, path, req)
        assert st == 200, (path, body)
        if want is not None:
            assert body.decode() == want, path
    assert ("compact", {"revision": 3, "physical": True}) in fake.calls


def test_server_errors_are_chunked_with_grpc_trailer(served):
    fake, port, _ = served
    st, hdrs, body = call(port, "/v3/kv/put", "{}")
    assert st == 400
    assert body == b'{"error":"etcdserver: key is not provided","message":"etcdserver: key is not provided","code":3}'
    assert ("Trailer", "Grpc-Trailer-Content-Type") in hdrs
    assert ("trailer", "Grpc-Trailer-Content-Type: application/grpc") in hdrs
    st, _, body = call(port, "/v3/lease/grant", '{"ID":1234}')
    assert st == 412 and json.loads(body)["code"] == 9  # FailedPrecondition is 412 in grpc-gateway
    st, _, body = call(port, "/v3/kv/lease/revoke", '{"ID":"1"}')
    assert st == 404 and json.loads(body)["message"] == "etcdserver: requested lease not found"


def test_decode_errors_change_nothing(served):
    fake, port, _ = served
    st, hdrs, body = call(port, "/v3/kv/put", '{"key":"Zm9v","value":"!!"}')
    assert st == 400 and ("Content-Length", str(len(body))) in hdrs
    assert json.loads(body) == {"error": "illegal base64 data at input byte 0",
                                "message": "illegal base64 data at input byte 0", "code": 3}
    assert fake.calls == [] and fake.kv == {}


def test_unknown_path_and_wrong_method(served):
    _, port, _ = served
    st, hdrs, body = call(port, "/nope", "")
    assert (st, body) == (404, b"404 page not found\n")
    assert ("X-Content-Type-Options", "nosniff") in hdrs
    assert call(port, "/v3/kv/nope", "")[::2] == (404, b"Not Found\n")
    assert call(port, "/v3alpha/kv/range", "")[::2] == (404, b"404 page not found\n")
    st, hdrs, body = call(port, "/v3/kv/put", "", method="GET")
    assert (st, body) == (405, b"Method Not Allowed\n") and "Allow" not in dict(hdrs)
    st, hdrs, body = call(port, "/health", "", method="POST")
    assert (st, body, dict(hdrs)["Allow"]) == (405, b"Method Not Allowed\n", "GET")
    st, hdrs, body = call(port, "/v3/kv/put", "", method="OPTIONS")
    assert (st, body, dict(hdrs)["Content-Length"]) == (200, b"", "0")


def test_health_and_version(served):
    fake, port, _ = served
    st, hdrs, body = call(port, "/health", method="GET")
    assert (st, body) == (200, b'{"health":"true"}')
    assert [k for k, _ in hdrs][-3:] == ["Date", "Content-Length", "Content-Type"]
    fake.healthy = False
    assert call(port, "/health", method="GET")[::2] == (503, b'{"health":"false"}\n')
    st, hdrs, body = call(port, "/version", method="GET")
    assert (st, body) == (200, b'{"etcdserver":"3.4.23","etcdcluster":"3.4.0"}')
    assert dict(hdrs)["Content-Type"] == "application/json"


def test_pipelined_requests_answer_in_order(served):
    fake, port, _ = served
    fake.put_delay = 0.05  # the first answer is slower than the second is ready
    c = Conn(port)
    reqs = b""
    for i in range(5):
        body = json.dumps({"key": b64(b"k%d" % i), "value": b64(b"v%d" % i)}).encode()
        reqs += b"POST /v3/kv/put HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        body = json.dumps({"key": b64(b"k%d" % i)}).encode()
        reqs += b"POST /v3/kv/range HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    c.send(reqs)
    for i in range(5):
        assert c.response()[0] == 200
        st, _, body = c.response()
        assert base64.b64decode(json.loads(body)["kvs"][0]["value"]) == b"v%d" % i
    c.close()


def test_chunked_request_body(served):
    fake, port, _ = served
    c = Conn(port)
    parts = [b'{"key":', b'"Zm9v","value":', b'"YmFy"}']
    c.send(b"POST /v3/kv/put HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n")
    assert c.response()[0] == 200
    assert fake.kv == {b"foo": b"bar"}
    c.request("/v3/kv/range", '{"key":"Zm9v"}')  # the connection is still usable
    assert c.response()[0] == 200
    c.close()


def test_expect_continue(served):
    _, port, _ = served
    c = Conn(port)
    body = b'{"key":"Zm9v","value":"YmFy"}'
    c.send(b"POST /v3/kv/put HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
    assert c._line() == b"HTTP/1.1 100 Continue" and c._line() == b""
    c.send(body)
    assert c.response()[0] == 200
    c.close()


def test_message_larger_than_grpc_max(served):
    fake, port, _ = served
    # decoded request above max-request-bytes + 512 KiB: gRPC's ResourceExhausted, exact size
    body = json.dumps({"key": "Zm9v", "value": b64(b"x" * 2097152)})
    st, hdrs, out = call(port, "/v3/kv/put", body)
    assert st == 429
    assert json.loads(out)["message"] == "grpc: received message larger than max (2097162 vs. 2097152)"
    assert fake.calls == []
    # just above max-request-bytes: the server's own answer
    st, _, out = call(port, "/v3/kv/put", json.dumps({"key": "Zm9v", "value": b64(b"x" * 1572865)}))
    assert st == 400 and json.loads(out)["message"] == "etcdserver: request is too large"


def test_oversized_body_is_not_buffered_and_connection_survives(served):
    fake, port, _ = served
    c = Conn(port)
    n = 10 * 1024 * 1024
    c.send(b"POST /v3/kv/put HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % n)
    piece = b" " * 65536
    for _ in range(n // len(piece)):
        c.send(piece)
    st, _, out = c.response()
    assert st == 429
    assert json.loads(out)["message"] == "grpc: received message larger than max (%d vs. 2097152)" % n
    assert fake.calls == []
    c.request("/v3/kv/put", '{"key":"Zm9v","value":"YmFy"}')
    assert c.response()[0] == 200
    c.close()


def test_watch_stream_session(served):
    fake, port, loop = served
    c = Conn(port)
    c.send(b"POST /v3/watch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    req = b'{"create_request":{"key":"YQ==","range_end":"Yg==","prev_kv":true,"filters":["NOPUT"]}}'
    c.send(b"%x\r\n%s\r\n" % (len(req), req))
    st, hdrs = c.head()
    assert st == 200 and ("Transfer-Encoding", "chunked") in hdrs
    assert ("Grpc-Metadata-Content-Type", "application/grpc") in hdrs
    data, _ = c.chunk()
    assert data == ('{"result":{"header":' + HDR_JSON + ',"created":true}}\n').encode()
    assert fake.streams[0].requests[0] == {"create_request": {
        "key": b"a", "range_end": b"b", "prev_kv": True, "filters": [0]}}
    ev = {"header": dict(HDR), "events": [{"type": 1, "kv": {"key": b"a", "mod_revision": 8}}]}
    asyncio.run_coroutine_threadsafe(fake.streams[0].q.put(ev), loop).result(5)
    data, _ = c.chunk()
    assert data == ('{"result":{"header":' + HDR_JSON +
                    ',"events":[{"type":"DELETE","kv":{"key":"YQ==","mod_revision":"8"}}]}}\n').encode()
    req = b'{"cancel_request":{"watch_id":"0"}}'
    c.send(b"%x\r\n%s\r\n0\r\n\r\n" % (len(req), req))  # and the body ends: the stream stays
    data, _ = c.chunk()
    assert json.loads(data)["result"]["canceled"] is True
    assert not fake.streams[0].closed
    c.close()  # the client goes away mid-stream: the WatchStream is closed
    deadline = time.monotonic() + 5
    while not fake.streams[0].closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake.streams[0].closed


def test_watch_bad_first_request_is_code_2(served):
    fake, port, _ = served
    st, _, body = call(port, "/v3/watch", "{bad")
    assert st == 500 and json.loads(body) == {
        "error": "invalid character 'b' looking for beginning of object key string",
        "message": "invalid character 'b' looking for beginning of object key string", "code": 2}
    assert fake.streams == []


def test_watch_later_bad_request_stops_reading_only(served):
    fake, port, _ = served
    c = Conn(port)
    c.request("/v3/watch", '{"create_request":{"key":"YQ=="}} {bad} {"create_request":{"key":"Yg=="}}')
    assert c.head()[0] == 200
    data, _ = c.chunk()
    assert json.loads(data)["result"]["created"] is True
    time.sleep(0.1)
    assert len(fake.streams[0].requests) == 1
    c.close()


def test_lease_keepalive_stream(served):
    fake, port, _ = served
    st, hdrs, body = call(port, "/v3/lease/keepalive", '{"ID":"1234"}{"ID":4}')
    assert st == 200 and ("Transfer-Encoding", "chunked") in hdrs
    assert body == ('{"result":{"header":' + HDR_JSON + ',"ID":"1234","TTL":"60"}}\n'
                    '{"result":{"header":' + HDR_JSON + ',"ID":"4"}}\n').encode()


def test_client_disconnect_mid_request_releases_connection(served):
    fake, port, _ = served
    c = Conn(port)
    c.send(b"POST /v3/kv/put HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"key\"")
    c.close()
    time.sleep(0.05)
    assert fake.calls == []
    assert call(port, "/v3/kv/put", '{"key":"Zm9v"}')[0] == 200


def test_malformed_http_is_400_and_closed(served):
    _, port, _ = served
    c = Conn(port)
    c.send(b"NOT HTTP AT ALL\r\n\r\n")
    st, hdrs = c.head()
    assert st == 400
    c.close()


def test_connection_close_is_honoured(served):
    _, port, _ = served
    c = Conn(port)
    c.request("/v3/kv/put", '{"key":"Zm9v"}', headers=b"Connection: close\r\n")
    st, hdrs, _ = c.response()
    assert st == 200 and ("Connection", "close") in hdrs
    assert c.s.recv(10) == b""
    c.close()
