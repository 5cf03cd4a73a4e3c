"""A plain v2 GET is answered without a task (v2_keys.handle_fast), exactly as the full
path (v2_keys.handle) answers it: same status, headers, body and store statistics."""
import asyncio
import re

import pytest
from servers import inprocess_member

from fastkv import requests as rq
from fastkv.api import http as fkhttp
from fastkv.api import v2_keys


@pytest.fixture
def member():
    with inprocess_member("--enable-v2") as m:
        yield m


async def _v2_put(server, key: str, value: str | None = None, ttl: int | None = None):
    payload = {"method": "PUT", "path": "/1" + key, "now": 0}
    if value is None:
        payload["dir"] = True
    else:
        payload["val"] = value
    if ttl is not None:
        payload["ttl"] = ttl
    await server._propose(rq.V2, payload)


def _undated(answer: bytes) -> bytes:
    """The answer without its Date line (the two may be built a second apart)."""
    return re.sub(rb"\r\nDate: [^\r]*\r\n", b"\r\n", answer)


URLS = [b"/v2/keys/a", b"/v2/keys/dir", b"/v2/keys/dir/", b"/v2/keys/dir/b", b"/v2/keys",
        b"/v2/keys/", b"/v2/keys/missing", b"/v2/keys/dir/missing/deeper", b"/v2/keys/a/under",
        b"/v2/keys/ttl", b"/v2/keys//a/./x/../", b"/v2/keys/\xc3\xa9", b"/v2/keys/big",
        b"/v2/keys/html", b"/v2/keys/quote"]


def test_fast_answers_equal_the_full_paths(member):
    loop, server, _url = member

    async def run():
        await _v2_put(server, "/a", "va")
        await _v2_put(server, "/dir")
        await _v2_put(server, "/dir/b", "vb")
        await _v2_put(server, "/ttl", "vt", ttl=300)
        await _v2_put(server, "/\u00e9", "accent")
        await _v2_put(server, "/big", "b" * 3000)                 # chunked, as Go sends it
        await _v2_put(server, "/html", "<a href='x'>&</a>\u2028")  # Go's HTML-safe escapes
        await _v2_put(server, "/quote", 'say "hi"\n\t\\')
        for url in URLS:
            before = dict(server.v2._stats)
            fast = v2_keys.handle_fast(server, b"GET", url)
            assert fast is not None, url
            counted = {k: server.v2._stats[k] - before[k] for k in before}
            before = dict(server.v2._stats)
            full = await v2_keys.handle(server, b"GET", url, b"")
            assert {k: server.v2._stats[k] - before[k] for k in before} == counted, url
            assert _undated(fast) == _undated(fkhttp.build_plain_response(*full)), url
    loop.run_until_complete(run())


def test_requests_the_fast_path_leaves_to_the_full_one(member):
    loop, server, _url = member
    loop.run_until_complete(_v2_put(server, "/a", "va"))
    for method, url in [(b"HEAD", b"/v2/keys/a"), (b"PUT", b"/v2/keys/a"),
                        (b"GET", b"/v2/keys/a?quorum=true"), (b"GET", b"/v2/keys/a?wait=true"),
                        (b"GET", b"/v2/keys/%61")]:
        before = dict(server.v2._stats)
        assert v2_keys.handle_fast(server, method, url) is None, (method, url)
        assert server.v2._stats == before


def test_with_v2_auth_on_the_full_path_checks_access_and_counts_once(member):
    loop, server, _url = member

    async def run():
        await _v2_put(server, "/a", "va")
        await server._propose(rq.V2, {"method": "PUT", "path": "/2/enabled", "val": "true",
                                      "now": 0})
        before = dict(server.v2._stats)
        assert v2_keys.handle_fast(server, b"GET", b"/v2/keys/a") is None
        assert server.v2._stats == before     # nothing counted by the attempt
        status, _hdrs, _body = await v2_keys.handle(server, b"GET", b"/v2/keys/a", b"")
        assert status == 401                  # no credentials: refused by the full path
    loop.run_until_complete(run())


@pytest.fixture
def task_runs(monkeypatch):
    """The URLs of the requests the HTTP front started a task (HttpProtocol._run) for."""
    runs = []
    real_run = fkhttp.HttpProtocol._run

    def counting_run(self, req):
        runs.append(req.url)
        return real_run(self, req)
    monkeypatch.setattr(fkhttp.HttpProtocol, "_run", counting_run)
    return runs


def test_the_front_answers_plain_gets_without_a_task(member, task_runs):
    loop, server, url = member
    runs = task_runs
    host, port = url[len("http://"):].split(":")

    async def run():
        await _v2_put(server, "/a", "va")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for path in (b"/v2/keys/a", b"/v2/keys/a?recursive=false", b"/v2/keys/a"):
                writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                assert head.startswith(b"HTTP/1.1 200 OK\r\n")
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                body = await reader.readexactly(length)
                assert b'"value":"va"' in body
        finally:
            writer.close()
    loop.run_until_complete(run())
    assert runs == [b"/v2/keys/a?recursive=false"]


def test_prebuilt_answers_equal_the_general_builder(member):
    """v2 writes answer a keep-alive request with ok_json_response's bytes: the same as
    build_plain_response's for the same status, headers and body (or None: chunked)."""
    _loop, server, _url = member
    for status in (200, 201):
        for idx in (0, 7, 2**63):
            for body in (b"", b'{"action":"set"}\n', b"x" * 2048, b"x" * 2049):
                fast = fkhttp.ok_json_response(v2_keys._sorted_headers(server, idx), body, status)
                full = fkhttp.build_plain_response(status, v2_keys._headers(server, idx), body)
                if len(body) > 2048:
                    assert fast is None
                else:
                    assert _undated(fast) == _undated(full)
    assert fkhttp.ok_json_response(b"", b"{}", 404) is None


def test_writes_answer_over_a_keep_alive_connection(member):
    loop, _server, url = member
    host, port = url[len("http://"):].split(":")

    async def run():
        reader, writer = await asyncio.open_connection(host, int(port))
        answers = []
        try:
            for body in (b"value=one", b"value=two", b"value=" + b"z" * 3000):
                writer.write(b"PUT /v2/keys/w HTTP/1.1\r\nHost: x\r\nContent-Type: "
                             b"application/x-www-form-urlencoded\r\nContent-Length: %d\r\n"
                             b"\r\n%s" % (len(body), body))
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                if b"Content-Length: " in head:
                    n = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                    answers.append((head, await reader.readexactly(n)))
                else:   # chunked: one chunk and the end
                    size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
                    chunk = await reader.readexactly(size + 2)
                    assert await reader.readuntil(b"0\r\n\r\n") == b"0\r\n\r\n"
                    answers.append((head, chunk[:-2]))
        finally:
            writer.close()
        return answers
    answers = loop.run_until_complete(run())
    assert answers[0][0].startswith(b"HTTP/1.1 201 Created\r\n")
    assert b'"action":"set","node":{"key":"/w","value":"one"' in answers[0][1]
    assert answers[1][0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert b'"prevNode":{"key":"/w","value":"one"' in answers[1][1]
    assert b"Transfer-Encoding: chunked" in answers[2][0] and b"z" * 3000 in answers[2][1]


def test_plain_answers_are_kept_until_anything_changes(member, monkeypatch):
    """handle_fast keeps the answer to a plain GET while the store, the Raft index and
    term and the Date second stay as they were: the same bytes, counted as a get each
    time; any write (also to another key) makes it build the answer again."""
    loop, server, _url = member
    gets = []
    real_get = server.v2.get

    def counting_get(*a, **kw):
        gets.append(a[0])
        return real_get(*a, **kw)
    monkeypatch.setattr(server.v2, "get", counting_get)
    monkeypatch.setattr(fkhttp, "_date", [2_000_000_000, b"Wed, 18 May 2033 03:33:20 GMT"])
    monkeypatch.setattr(fkhttp.time, "time", lambda: 2_000_000_000.5)   # one second

    async def run():
        await _v2_put(server, "/a", "va")
        await _v2_put(server, "/b", "vb")
        first = v2_keys.handle_fast(server, b"GET", b"/v2/keys/a")
        before = server.v2._stats["getsSuccess"]
        for _ in range(3):
            assert v2_keys.handle_fast(server, b"GET", b"/v2/keys/a") == first
        assert len(gets) == 1 and server.v2._stats["getsSuccess"] == before + 3
        assert b'"value":"va"' in first
        await _v2_put(server, "/b", "vb2")               # another key: the index moved
        again = v2_keys.handle_fast(server, b"GET", b"/v2/keys/a")
        assert len(gets) == 2 and again != first and b'"value":"va"' in again
        await _v2_put(server, "/a", "va2")
        assert b'"value":"va2"' in v2_keys.handle_fast(server, b"GET", b"/v2/keys/a")
        # a v3 write leaves the v2 store as it was but moves X-Raft-Index
        n = len(gets)
        held = v2_keys.handle_fast(server, b"GET", b"/v2/keys/a")   # kept
        assert len(gets) == n
        await server.put({"key": b"v3", "value": b"x"})
        moved = v2_keys.handle_fast(server, b"GET", b"/v2/keys/a")
        assert len(gets) == n + 1 and moved != held
        # a missing key is never kept (its answer is an error, counted as a failed get)
        v2_keys.handle_fast(server, b"GET", b"/v2/keys/missing")
        v2_keys.handle_fast(server, b"GET", b"/v2/keys/missing")
        assert gets.count("/1/missing") == 2
    loop.run_until_complete(run())


WRITES = [   # (method, path, form body): creates, updates, errors, dirs, TTLs, in-order keys
    (b"PUT", b"/v2/keys/w", b"value=one"),
    (b"PUT", b"/v2/keys/w", b"value=two"),
    (b"PUT", b"/v2/keys/w?prevExist=false", b"value=three"),          # 412: it exists
    (b"PUT", b"/v2/keys/w?prevValue=two", b"value=four"),             # compare-and-swap
    (b"PUT", b"/v2/keys/w?prevIndex=1", b"value=five"),               # 412: index differs
    (b"PUT", b"/v2/keys/d?dir=true", b""),
    (b"PUT", b"/v2/keys/d", b"value=x"),                              # 102: a directory
    (b"POST", b"/v2/keys/q", b"value=job1"),                          # in-order keys
    (b"POST", b"/v2/keys/q", b"value=job2"),
    (b"PUT", b"/v2/keys/t?ttl=60", b"value=" + b"z" * 3000),          # chunked answer
    (b"PUT", b"/v2/keys/f", b"value=a&ttl=x"),                        # 400: a bad TTL
    (b"DELETE", b"/v2/keys/w?prevValue=nope", b""),                   # 412
    (b"DELETE", b"/v2/keys/w", b""),
    (b"DELETE", b"/v2/keys/d?dir=true", b""),
    (b"DELETE", b"/v2/keys/missing", b""),                            # 404
    (b"PUT", b"/v2/keys/%61%62", b"value=escaped"),                   # the full path
]


def _normalized(answer: bytes) -> bytes:
    """Without what differs between two members (IDs, Raft position, the time)."""
    answer = re.sub(rb'"expiration":"[^"]*"', b'"expiration":"T"', answer)
    # a chunked answer's size line counts the expiration's digits (Go trims trailing zeros)
    answer = re.sub(rb"\r\n\r\n[0-9a-f]+\r\n", b"\r\n\r\nN\r\n", answer, count=1)
    return re.sub(rb"(X-Etcd-Cluster-Id|X-Raft-Index|X-Raft-Term|Date): [^\r]*\r\n", b"",
                  answer)


def _send_writes(loop, url) -> list:
    host, port = url[len("http://"):].split(":")

    async def run():
        reader, writer = await asyncio.open_connection(host, int(port))
        answers = []
        try:
            for method, path, body in WRITES:
                writer.write(b"%s %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/"
                             b"x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s"
                             % (method, path, len(body), body))
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                if b"Content-Length: " in head:
                    n = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                    answers.append(head + await reader.readexactly(n))
                else:   # chunked: one chunk and the end
                    answers.append(head + await reader.readuntil(b"0\r\n\r\n"))
        finally:
            writer.close()
        return [_normalized(a) for a in answers]
    return loop.run_until_complete(run())


def test_fast_writes_answer_as_the_full_path_without_a_task(monkeypatch, task_runs):
    """v2 writes proposed from the HTTP front's callback (handle_fast_write) answer
    exactly as handle() does, errors included; what needs more (an escaped path, a
    request that does not parse) takes a task."""
    runs = task_runs
    with inprocess_member("--enable-v2") as (loop, server, url):
        fast = _send_writes(loop, url)
        stats = {k: v for k, v in server.v2._stats.items() if k != "watchers"}
    assert runs == [b"/v2/keys/f", b"/v2/keys/%61%62"]   # a parse error; an escape
    runs.clear()
    monkeypatch.setattr(v2_keys.handle, "fast_write", None)   # every write takes handle()
    with inprocess_member("--enable-v2") as (loop, server, url):
        full = _send_writes(loop, url)
        assert {k: v for k, v in server.v2._stats.items() if k != "watchers"} == stats
    assert len(runs) == len(WRITES)
    assert [a.split(b"\r\n")[0] for a in fast] == [a.split(b"\r\n")[0] for a in full]
    assert fast == full
    statuses = [int(a.split(b" ")[1]) for a in fast]
    assert statuses == [201, 200, 412, 200, 412, 201, 403, 201, 201, 201, 400, 412, 200, 200,
                        404, 201]
