"""/v2/keys: etcd 3.4's v2 keys API over the v2 store (served with --enable-v2).

Translation only, as etcd's v2http keysHandler: parse the form (query and
url-encoded body; the body wins, as Go's r.Form) into a v2 request, refuse bad
parameters with etcd's form errors, check access once v2 auth is on
(fastkv/api/v2_auth.py: 401 "Insufficient credentials"), then

* GET/HEAD read the local store (``quorum=true``: through the log, as QGET);
  ``wait=true`` waits for the next matching event (or one from the history
  after ``waitIndex``) and answers it;
* PUT/POST/DELETE go through the log (fastkv/v2store/apply.py) carrying this
  member's clock, so every member computes the same expirations.

Answers carry X-Etcd-Index, X-Raft-Index, X-Raft-Term and X-Etcd-Cluster-Id; the
store keeps keys under /1 and the prefix is trimmed from answers and errors.
TTL keys expire when the leader proposes a SYNC entry with its clock (the
server's expiry loop). Waits (and ``stream=true`` watches) answer as etcd's
handleKeyWatch: the head at once, each event as a chunk.
"""
from __future__ import annotations

import asyncio
import time
from functools import partial
from urllib.parse import parse_qsl, unquote

from fastkv import requests
from fastkv.errors import EtcdError
from fastkv.v2store import V2Error
from fastkv.v2store import errors as ec
from fastkv.v2store.apply import V2_PREFIX
from fastkv.api.gojson import go_json_string
from fastkv.api.http import build_plain_response, http_date, ok_json_response
from fastkv.api.v2_cluster import _NOT_FOUND, _not_allowed
from fastkv.api.v2_auth import has_key_access_enabled
from fastkv.v2store.wire import dumps

KEYS_PREFIX = "/v2/keys"
WATCHER_BUFFER = 100   # etcd's watcher channel size
_JSON = (b"Content-Type", b"application/json")
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


class _Form:
    """Go's r.Form: every key's values, body values first."""

    def __init__(self, query: str, body: str):
        self.values: dict[str, list[str]] = {}
        for source in (body, query):
            for k, v in parse_qsl(source, keep_blank_values=True):
                self.values.setdefault(k, []).append(v)

    def has(self, key: str) -> bool:
        return key in self.values

    def value(self, key: str) -> str:
        vs = self.values.get(key)
        return vs[0] if vs else ""

    def uint(self, key: str, code: int, cause: str) -> int:
        if key not in self.values:
            return 0
        v = self.value(key)
        if not v.isdigit() or int(v) >= 1 << 64:
            raise V2Error(code, cause)
        return int(v)

    def bool(self, key: str, cause: str) -> bool:
        if key not in self.values:
            return False
        v = self.value(key)
        if v in _TRUE:
            return True
        if v in _FALSE:
            return False
        raise V2Error(ec.INVALID_FIELD, cause)


def parse(method: str, path: str, query: str, body: str) -> tuple[dict, bool]:
    """etcd's parseKeyRequest: (request, noValueOnSuccess) or a V2Error."""
    value = body[6:]
    if not query and body[:6] == "value=" and _NOT_PLAIN.isdisjoint(value):
        # The common write: a form of one plain value (what _parse_form makes of it,
        # without building the form; tests/unit/test_v2_parse_fast.py compares).
        return {"method": method, "path": _join(V2_PREFIX, path[len(KEYS_PREFIX):]),
                "val": value, "dir": False, "prevValue": "", "prevIndex": 0,
                "recursive": False, "sorted": False, "wait": False, "waitIndex": 0,
                "quorum": False, "stream": False}, False
    return _parse_form(method, path, query, body)


_NOT_PLAIN = frozenset("&;%+=")   # anything that makes a form more than value=<text>


def _parse_form(method: str, path: str, query: str, body: str) -> tuple[dict, bool]:
    f = _Form(query, body)
    key = _join(V2_PREFIX, path[len(KEYS_PREFIX):])
    prev_index = f.uint("prevIndex", ec.INDEX_NAN, 'invalid value for "prevIndex"')
    wait_index = f.uint("waitIndex", ec.INDEX_NAN, 'invalid value for "waitIndex"')
    flags = {}
    for name in ("recursive", "sorted", "wait", "dir", "quorum", "stream"):
        flags[name] = f.bool(name, f'invalid value for "{name}"')
    if flags["wait"] and method != "GET":
        raise V2Error(ec.INVALID_FIELD, '"wait" can only be used with GET requests')
    if f.has("prevValue") and f.value("prevValue") == "":
        raise V2Error(ec.PREV_VALUE_REQUIRED, '"prevValue" cannot be empty')
    no_value = f.bool("noValueOnSuccess", 'invalid value for "noValueOnSuccess"')
    ttl = None
    if f.value("ttl"):
        ttl = f.uint("ttl", ec.TTL_NAN, 'invalid value for "ttl"')
    req = {"method": method, "path": key, "val": f.value("value"), "dir": flags["dir"],
           "prevValue": f.value("prevValue"), "prevIndex": prev_index,
           "recursive": flags["recursive"], "sorted": flags["sorted"], "wait": flags["wait"],
           "waitIndex": wait_index, "quorum": flags["quorum"], "stream": flags["stream"]}
    if f.has("prevExist"):
        req["prevExist"] = f.bool("prevExist", "invalid value for prevExist")
    if f.has("refresh"):
        refresh = f.bool("refresh", "invalid value for refresh")
        if refresh:
            if f.has("value") and f.value("value") != "":
                raise V2Error(ec.REFRESH_VALUE, "A value was provided on a refresh")
            if ttl is None:
                raise V2Error(ec.REFRESH_TTL_REQUIRED, "No TTL value set")
        req["refresh"] = refresh
    if ttl is not None:
        req["ttl"] = ttl
    return req, no_value


def _join(prefix: str, rest: str) -> str:
    """Go's path.Join(prefix, rest): cleaned, no trailing slash."""
    parts = []
    for p in (prefix + "/" + rest).split("/"):
        if p in ("", "."):
            continue
        if p == "..":
            if parts:
                parts.pop()
            continue
        parts.append(p)
    return "/" + "/".join(parts)


def _trim(key: str) -> str:
    """strings.TrimPrefix(key, "/1"): the root becomes "" (then left out, omitempty)."""
    return key[len(V2_PREFIX):] if key.startswith(V2_PREFIX) else key


_PLAIN_NODE = ("key", "value", "modifiedIndex", "createdIndex")   # a key without TTL


def _node_json(node: dict) -> str:
    """A node as etcd writes it, its keys without the /1 prefix (the root's key, then
    "", is left out: omitempty). Written directly: answers are the hot path of reads."""
    if tuple(node) == _PLAIN_NODE:   # the common node, in one format
        key = node["key"]
        key = key[len(V2_PREFIX):] if key.startswith(V2_PREFIX) else key
        if key:
            return '{"key":%s,"value":%s,"modifiedIndex":%d,"createdIndex":%d}' % (
                go_json_string(key), go_json_string(node["value"]), node["modifiedIndex"],
                node["createdIndex"])
    parts = []
    for k, v in node.items():
        if k == "key":
            v = v[len(V2_PREFIX):] if v.startswith(V2_PREFIX) else v
            if not v:
                continue
            parts.append('"key":' + go_json_string(v))
        elif k == "nodes":
            parts.append('"nodes":' + ("[" + ",".join(_node_json(c) for c in v) + "]"
                                       if v is not None else "null"))
        else:
            parts.append(go_json_string(k) + ":" + dumps(v))
    return "{" + ",".join(parts) + "}"


def _event_body(ev, no_value: bool) -> bytes:
    """The event as etcd's writeKeyEvent sends it. etcd copies the event to trim its
    keys, and its copy drops "refresh"; noValueOnSuccess leaves out the nodes of a
    successful write."""
    drop = no_value and ev.get("action") in ("set", "compareAndSwap", "create", "update")
    parts = []
    for k, v in ev.items():
        if k == "node" or k == "prevNode":
            if not drop:
                parts.append(f'"{k}":' + ("null" if v is None else _node_json(v)))
        elif k != "refresh":
            parts.append(go_json_string(k) + ":" + dumps(v))
    return ("{" + ",".join(parts) + "}\n").encode()


def _headers(server, etcd_index: int) -> list:
    return [_JSON, (b"X-Etcd-Cluster-Id", f"{server.cluster_id:x}".encode()),
            (b"X-Etcd-Index", str(etcd_index).encode()),
            (b"X-Raft-Index", str(server.core.commit).encode()),
            (b"X-Raft-Term", str(server.core.term).encode())]


def _sorted_headers(server, etcd_index: int) -> bytes:
    """_headers after Content-Type, as header lines in Go's (sorted) order."""
    core = server.core
    return (b"X-Etcd-Cluster-Id: %x\r\nX-Etcd-Index: %d\r\nX-Raft-Index: %d\r\n"
            b"X-Raft-Term: %d\r\n" % (server.cluster_id, etcd_index, core.commit, core.term))


def _error(server, err: V2Error) -> tuple:
    if err.cause.startswith(V2_PREFIX):
        err = V2Error(err.error_code, _trim(err.cause), err.index)
    hdrs = [_JSON, (b"X-Etcd-Cluster-Id", f"{server.cluster_id:x}".encode()),
            (b"X-Etcd-Index", str(err.index).encode())]
    return err.status, hdrs, (err.to_json() + "\n").encode()


async def handle(server, method: bytes, url: bytes, body: bytes, ctype: bytes = b"",
                 hreq=None):
    # (handle_fast answers the plain GETs first; see below)
    if not server.cfg.enable_v2:
        return _NOT_FOUND
    m = method.decode("latin-1")
    if m not in ("HEAD", "GET", "PUT", "POST", "DELETE"):
        return _not_allowed("GET", "HEAD", "POST", "PUT", "DELETE")
    raw_path, _, query = url.decode("latin-1").partition("?")
    path = unquote(raw_path)
    form_body = body.decode("latin-1") if m in ("PUT", "POST") and ctype.startswith(
        b"application/x-www-form-urlencoded") else ""
    try:
        req, no_value = parse(m, path, query, form_body)
        # etcd's hasKeyPrefixAccess (one counted read of /2/enabled while auth is off)
        if server.v2auth.enabled() and not await has_key_access_enabled(
                server, hreq, m, path[len(KEYS_PREFIX):], req["recursive"]):
            return _error(server, V2Error(ec.UNAUTHORIZED, "Insufficient credentials", 0))
        if m in ("GET", "HEAD") and req["wait"]:
            # etcd: 200 and the watch's start index at once, then the event(s), chunked
            start_index, events = _watch(server, req, no_value)
            return 200, _headers(server, start_index), events
        if m in ("GET", "HEAD") and not req["quorum"]:
            ev = server.v2.get(req["path"], req["recursive"], req["sorted"], now=time.time_ns())
        else:
            if m in ("GET", "HEAD"):
                req["method"] = "QGET"
            ev = await _propose(server, req)
    except V2Error as err:
        return _error(server, err)
    return _answer(server, m, ev, no_value, hreq is not None and hreq.keep_alive)


def _answer(server, m: str, ev, no_value: bool, keep_alive: bool):
    """The answer to a request that made event `ev`: (status, headers, body), or the
    whole answer's bytes for a keep-alive request that is not HEAD."""
    status = 201 if ev.is_created else 200
    out = _event_body(ev, no_value)
    if m != "HEAD" and keep_alive:
        answer = ok_json_response(_sorted_headers(server, ev.etcd_index), out, status)
        if answer is not None:
            return answer   # the whole answer, as build_plain_response would write it
    return status, _headers(server, ev.etcd_index), (b"" if m == "HEAD" else out)


def handle_fast_write(server, hreq):
    """A write (PUT, POST, DELETE with v2 auth off and no escapes in the path) proposed
    at once, from the HTTP front's callback: (future, finish), finish(future) being the
    answer :func:`handle` would give once the future is done; None when the request
    needs the full path (which also answers every error of parsing or proposing). A
    task and a chain of coroutines per write cost more than the rest of its handling."""
    method = hreq.method
    if method != b"PUT" and method != b"POST" and method != b"DELETE":
        return None
    if not server.cfg.enable_v2:
        return None
    raw_path, _, query = hreq.url.decode("latin-1").partition("?")
    if "%" in raw_path:
        return None
    on, found = server.v2auth.peek_enabled()
    if on:
        return None   # handle() checks access
    m = method.decode("latin-1")
    form_body = ""
    if m != "DELETE" and hreq.ctype.startswith(b"application/x-www-form-urlencoded"):
        body = hreq.body
        form_body = (body[0] if len(body) == 1 else b"".join(body)).decode("latin-1")
    try:
        req, no_value = parse(m, raw_path, query, form_body)
    except V2Error:
        return None
    fut = server.propose_nowait(requests.V2, _payload(req))
    if fut is None:
        return None
    server.v2.count_get(found)   # handle()'s read of the auth switch
    return fut, partial(_finish_write, server, m, no_value)


def _finish_write(server, m: str, no_value: bool, fut):
    try:
        ev = fut.result()
    except EtcdError as err:   # a timeout: etcd's 300 with the server's text
        return _error(server, V2Error(ec.RAFT_INTERNAL, err.message))
    if isinstance(ev, V2Error):
        return _error(server, ev)
    return _answer(server, m, ev, no_value, True)


def handle_fast(server, method: bytes, url: bytes) -> bytes | None:
    """A plain GET of a key (no query, no escapes, v2 auth off) answered at once, as
    :func:`handle` would answer it: the whole HTTP answer, or None when the request
    needs the full path. The HTTP front calls it before it starts a task for the
    request: a local v2 read is the hot path of v2 clients (etcd serves it without
    going through Raft), and a task per request cost more than the read itself."""
    if method != b"GET" or b"?" in url or b"%" in url or not server.cfg.enable_v2:
        return None
    on, found = server.v2auth.peek_enabled()
    if on:
        return None   # handle() checks access, and counts the read of the switch
    store = server.v2
    store.count_get(found)
    answers = _PlainAnswers.of(server)
    out = answers.get(url)
    if out is not None:
        store.count_get(True)   # as store.get counts it
        return out
    path = url.decode("latin-1")
    try:
        ev = store.get(_join(V2_PREFIX, path[len(KEYS_PREFIX):]), now=time.time_ns())
    except V2Error as err:
        return build_plain_response(*_error(server, err))
    node = ev["node"]
    if len(ev) == 2 and tuple(node) == _PLAIN_NODE:
        # A key without TTL: {key, value, modifiedIndex, createdIndex}, written in one
        # format (what _event_body and _headers make of it; tests compare the bytes).
        body = ('{"action":"get","node":%s}\n' % _node_json(node)).encode()
        out = ok_json_response(_sorted_headers(server, ev.etcd_index), body)
        if out is not None:
            answers.put(url, out)
            return out
    return build_plain_response(200, _headers(server, ev.etcd_index), _event_body(ev, False))


class _PlainAnswers:
    """handle_fast's answers to plain GETs of keys without TTL, kept while they stay
    byte for byte what it would build again: while the v2 store (its index), the Raft
    commit index and term (X-Raft-Index, X-Raft-Term) and the Date header's second are
    those they were built with. Any write, any Raft entry, the next second: all go.
    A read-mostly v2 load (etcd's v2 clients polling their configuration) then costs
    a lookup per GET instead of a tree walk and a JSON encoding."""

    MAX = 4096   # answers kept at most (all dropped when full)

    __slots__ = ("stamp", "answers")

    def __init__(self):
        self.stamp = None
        self.answers: dict[bytes, bytes] = {}

    @staticmethod
    def of(server) -> "_PlainAnswers":
        cache = server.__dict__.get("_v2_plain_answers")
        if cache is None:
            cache = server._v2_plain_answers = _PlainAnswers()
        core = server.core
        store = server.v2
        stamp = (store, store.index, core.commit, core.term, http_date())
        if stamp != cache.stamp:
            cache.stamp = stamp
            cache.answers.clear()
        return cache

    def get(self, url: bytes) -> bytes | None:
        return self.answers.get(url)

    def put(self, url: bytes, answer: bytes) -> None:
        if len(self.answers) >= self.MAX:
            self.answers.clear()
        self.answers[url] = answer


def _payload(req: dict) -> dict:
    """The proposal of a parsed request: only what apply_v2 reads, and only where it
    differs from the default (smaller log entries); prevExist and ttl mean something
    whenever present."""
    payload = {k: v for k, v in req.items() if v or k in ("prevExist", "ttl")
               if k not in ("wait", "waitIndex", "quorum", "stream")}
    payload["now"] = time.time_ns()
    return payload


async def _propose(server, req: dict):
    try:
        result = await server._propose(requests.V2, _payload(req))
    except EtcdError as err:   # no leader, timeouts: etcd's 300 with the server's text
        raise V2Error(ec.RAFT_INTERNAL, err.message) from None
    if isinstance(result, V2Error):
        raise result
    return result


def _watch(server, req: dict, no_value: bool):
    """etcd's handleKeyWatch: (the store index when the watch began, an async iterator
    of event bodies: one, or every event while the client stays with stream=true).
    The watcher exists before this returns, so no event can slip in between."""
    queue: asyncio.Queue = asyncio.Queue()

    def offer(ev) -> None:
        # etcd drops a watcher whose 100-event buffer is full: the stream ends
        if queue.qsize() >= WATCHER_BUFFER:
            watcher.remove()
            queue.put_nowait(None)
        else:
            queue.put_nowait(ev)

    watcher = server.v2.watch(req["path"], req["recursive"], req["stream"], req["waitIndex"],
                              callback=offer)

    async def bodies():
        try:
            while True:
                ev = await queue.get()
                if ev is None:
                    return
                yield _event_body(ev, no_value)
                if not req["stream"] or watcher.removed and queue.empty():
                    return
        finally:
            if not watcher.removed:
                watcher.remove()
    return watcher.start_index, bodies()


handle.fast = handle_fast   # the HTTP front looks for them (fastkv/api/http.py _enqueue)
handle.fast_write = handle_fast_write
