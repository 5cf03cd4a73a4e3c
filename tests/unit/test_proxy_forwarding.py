"""fastkv.proxy in one process: the reverse proxy in front of scripted fake members.

The members here are asyncio servers that read one HTTP request at a time and answer
what each test scripts, so the proxy's framing, header handling, failover and streaming
are checked byte by byte without a cluster (tests/integration/test_v2_proxy.py runs the
real thing)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile

import pytest

from fastkv import config
from fastkv.proxy import (CORS, Director, V2Proxy, canonical_header, clean_path,
                          read_cluster_file, write_cluster_file)
from servers import free_port

pytestmark = pytest.mark.timeout(60)


class FakeMember:
    """A client URL that answers with ``answer(request_head, body, writer)``; every request
    is recorded as (head text, body)."""

    def __init__(self, answer):
        self.answer = answer
        self.requests: list[tuple[str, bytes]] = []
        self.connections = 0
        self.server = None
        self.url = ""

    async def start(self):
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def _conn(self, reader, writer):
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                text = head.decode("latin-1")
                length = 0
                for line in text.split("\r\n")[1:]:
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                body = await reader.readexactly(length) if length else b""
                self.requests.append((text, body))
                keep = await self.answer(text, body, writer)
                await writer.drain()
                if keep is False:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self):
        self.server.close()


def ok_answer(body=b'{"action":"get"}', extra=""):
    async def answer(head, req_body, writer):
        writer.write(("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                      f"X-Etcd-Index: 7\r\n{extra}Content-Length: {len(body)}\r\n\r\n").encode()
                     + body)
    return answer


def raw_answer(data: bytes, *, keep: bool = True, stall: float = 0):
    """An answer that writes `data` as it is, then holds the connection without a word for
    `stall` seconds, or (keep=False) closes it."""
    async def answer(head, req_body, writer):
        writer.write(data)
        await writer.drain()
        if stall:
            await asyncio.sleep(stall)
        return keep
    return answer


def proxy_cfg(tmp, *args):
    port = free_port()
    cfg = config.parse(["--proxy", "on", "--data-dir", tmp, "--listen-client-urls",
                        f"http://127.0.0.1:{port}", "--log-level", "error", *args], {})
    return cfg, port


async def start_proxy(tmp, urls, *args):
    cfg, port = proxy_cfg(tmp, *args)

    async def fetch():
        return list(urls)
    proxy = V2Proxy(cfg, [], fetch=fetch)
    await proxy.start()
    return proxy, port


@contextlib.asynccontextmanager
async def proxied(tmp, *upstreams, args=()):
    """Start the FakeMembers among `upstreams` and a proxy in front of all of them (plain
    URL strings are passed on as they are, in the same order); yields (port, proxy,
    started members) and closes the proxy, then stops the members, after."""
    members = []
    try:
        for up in upstreams:
            if isinstance(up, FakeMember):
                members.append(await up.start())
        proxy, port = await start_proxy(
            tmp, [up.url if isinstance(up, FakeMember) else up for up in upstreams], *args)
        try:
            yield port, proxy, members
        finally:
            await proxy.close()
    finally:
        for m in members:
            await m.stop()


async def exchange(port, raw: bytes, *, until_close=False, timeout=10.0) -> bytes:
    """Send raw bytes to the proxy; read one whole response (or until it closes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        async with asyncio.timeout(timeout):
            if until_close:
                return await reader.read(-1)
            return await read_response(reader)
    finally:
        writer.close()


async def read_response(reader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    low = head.lower()
    if b"content-length:" in low:
        n = int(low.split(b"content-length:")[1].split(b"\r\n")[0])
        return head + await reader.readexactly(n)
    if b"transfer-encoding: chunked" in low:
        out = head
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line, 16)
            out += line
            out += await reader.readexactly(size + 2)
            if size == 0:
                return out
    return head


def split(resp: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    head, _, body = resp.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:]]
    return status, headers, body


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def tmp():
    d = tempfile.mkdtemp(prefix="fastkv-proxy-unit-")
    yield d
    import shutil
    shutil.rmtree(d, ignore_errors=True)


# ---- pure helpers ------------------------------------------------------------------------

def test_clean_path_is_gos():
    assert clean_path("/v2/keys/a") == "/v2/keys/a"
    assert clean_path("/v2/keys/a/") == "/v2/keys/a/"
    assert clean_path("//v2/keys") == "/v2/keys"
    assert clean_path("/v2/./keys/../x") == "/v2/x"
    assert clean_path("/..") == "/"
    assert clean_path("") == "/"
    assert clean_path("v2") == "/v2"


def test_canonical_header_is_gos():
    assert canonical_header("x-etcd-index") == "X-Etcd-Index"
    assert canonical_header("CONTENT-TYPE") == "Content-Type"
    assert canonical_header("bad header") == "bad header"


def test_cluster_file_round_trip(tmp):
    os.makedirs(os.path.join(tmp, "proxy"))
    assert read_cluster_file(tmp) is None
    write_cluster_file(tmp, ["http://127.0.0.1:2380", "http://127.0.0.1:2381"])
    path = os.path.join(tmp, "proxy", "cluster")
    with open(path) as f:
        assert f.read() == '{"PeerURLs":["http://127.0.0.1:2380","http://127.0.0.1:2381"]}'
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert not os.path.exists(path + ".bak")
    assert read_cluster_file(tmp) == ["http://127.0.0.1:2380", "http://127.0.0.1:2381"]
    with open(path, "w") as f:   # Go's json matches the field name case-insensitively
        f.write('{"peerurls": ["http://x:1"]}')
    assert read_cluster_file(tmp) == ["http://x:1"]
    with open(path, "w") as f:
        f.write("{not json")
    with pytest.raises(ValueError):
        read_cluster_file(tmp)


def test_director_fails_and_revives_endpoints():
    async def main():
        d = Director(0.05)
        d.refresh(["http://127.0.0.1:1", "http://127.0.0.1:2", "not a url"])
        assert len(d.endpoints()) == 2
        ep = d.endpoints()[0]
        d.failed(ep)
        assert ep not in d.endpoints() and len(d.endpoints()) == 1
        deadline = asyncio.get_running_loop().time() + 5
        while ep not in d.endpoints():
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        d.failed(ep)
        d.refresh(["http://127.0.0.1:1", "http://127.0.0.1:2"])   # a refresh: all available
        assert len(d.endpoints()) == 2
    run(main())


# ---- forwarding --------------------------------------------------------------------------

def test_forwards_request_and_answer(tmp):
    async def main():
        async with proxied(tmp, FakeMember(ok_answer())) as (port, _, (m,)):
            resp = await exchange(port, (
                b"PUT /v2/keys/foo?prevExist=false HTTP/1.1\r\nHost: proxy.example:1\r\n"
                b"Connection: keep-alive, X-Drop-Me\r\nX-Drop-Me: 1\r\nKeep-Alive: 300\r\n"
                b"Proxy-Authorization: secret\r\nX-Forwarded-For: 10.1.2.3\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: 9\r\n\r\nvalue=bar"))
        status, headers, body = split(resp)
        assert status == 200 and body == b'{"action":"get"}'
        names = [k for k, _ in headers]
        # CORS from the proxy's wrapper, then the member's headers, sorted as Go writes them
        assert names[:3] == ["Access-Control-Allow-Headers", "Access-Control-Allow-Methods",
                             "Access-Control-Allow-Origin"]
        assert ("X-Etcd-Index", "7") in headers and "Date" in names
        head, req_body = m.requests[0]
        lines = head.split("\r\n")
        assert lines[0] == "PUT /v2/keys/foo?prevExist=false HTTP/1.1"
        assert lines[1] == "Host: proxy.example:1"
        assert req_body == b"value=bar"
        low = head.lower()
        for gone in ("keep-alive:", "x-drop-me:", "proxy-authorization:", "connection:"):
            assert gone not in low
        assert "X-Forwarded-For: 10.1.2.3, 127.0.0.1\r\n" in head
        assert "Content-Length: 9\r\n" in head
    run(main())


def test_streams_chunked_answers_as_they_come(tmp):
    """A v2 watch: the head and each event reach the client while the member still holds
    the response open."""
    async def main():
        release = asyncio.Event()

        async def answer(head, body, writer):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
            await writer.drain()
            await release.wait()
            ev = b'{"action":"set"}'
            writer.write(b"%x\r\n%b\r\n" % (len(ev), ev))
            await writer.drain()
            await release2.wait()
            writer.write(b"0\r\n\r\n")

        release2 = asyncio.Event()
        async with proxied(tmp, FakeMember(answer)) as (port, _, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(b"GET /v2/keys/foo?wait=true HTTP/1.1\r\nHost: x\r\n\r\n")
                async with asyncio.timeout(10):
                    head = await reader.readuntil(b"\r\n\r\n")   # before any event
                assert head.startswith(b"HTTP/1.1 200 OK")
                assert b"Transfer-Encoding: chunked" in head
                release.set()
                async with asyncio.timeout(10):
                    size = int(await reader.readuntil(b"\r\n"), 16)
                    chunk = await reader.readexactly(size + 2)
                assert chunk == b'{"action":"set"}\r\n'
                release2.set()
                async with asyncio.timeout(10):
                    assert await reader.readuntil(b"\r\n\r\n") == b"0\r\n\r\n"
            finally:
                release.set()
                release2.set()
                writer.close()
    run(main())


def test_fails_over_and_skips_the_failed_member(tmp):
    async def main():
        dead = f"http://127.0.0.1:{free_port()}"   # nobody listens
        async with proxied(tmp, dead, FakeMember(ok_answer()),
                           args=["--proxy-failure-wait", "60000"]) as (port, proxy, (m,)):
            proxy.director.eps.sort(key=lambda e: e.url != dead)   # the dead one first
            for _ in range(3):
                status, _, body = split(await exchange(
                    port, b"POST /v2/keys/q HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\n"
                          b"value=1"))
                assert status == 200
            # every request reached the live member with its body (replayed after a failure)
            assert [b for _, b in m.requests] == [b"value=1"] * 3
            _, _, cfg_body = split(await exchange(
                port, b"GET /v2/config/local/proxy HTTP/1.1\r\nHost: x\r\n\r\n"))
            assert json.loads(cfg_body) == {"endpoints": [m.url]}
    run(main())


def test_no_endpoint_answers(tmp):
    async def main():
        async with proxied(tmp) as (port, _, _):
            status, headers, body = split(await exchange(
                port, b"GET /v2/keys/a HTTP/1.1\r\nHost: x\r\n\r\n"))
            assert status == 503
            assert body == b'{"message":"httpproxy: zero endpoints currently available"}'
            assert ("Content-Type", "application/json") in headers
            assert ("Access-Control-Allow-Origin", "*") in headers
        dead = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
        async with proxied(tmp, *dead) as (port, _, _):
            status, _, body = split(await exchange(
                port, b"GET /v2/keys/a HTTP/1.1\r\nHost: x\r\n\r\n"))
            assert status == 502
            assert body == b'{"message":"httpproxy: unable to get response from 2 endpoint(s)"}'
            status, _, body = split(await exchange(
                port, b"GET /v2/keys/a HTTP/1.1\r\nHost: x\r\n\r\n"))
            assert status == 503   # both are failed now, for --proxy-failure-wait
    run(main())


def test_readonly_refuses_all_but_get(tmp):
    async def main():
        async with proxied(tmp, FakeMember(ok_answer()),
                           args=["--proxy", "readonly"]) as (port, _, (m,)):
            for method in ("PUT", "POST", "DELETE", "PATCH", "OPTIONS"):
                resp = await exchange(port, f"{method} /v2/keys/a HTTP/1.1\r\nHost: x\r\n"
                                            f"Content-Length: 5\r\n\r\nvalue".encode())
                status, headers, body = split(resp)
                assert status == 501 and body == b""
                assert [k for k, _ in headers] == ["Date", "Content-Length"]
            resp = await exchange(port, b"HEAD /v2/keys/a HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, _ = split(resp)
            assert status == 501 and [k for k, _ in headers] == ["Date"]
            assert m.requests == []
            status, _, body = split(await exchange(
                port, b"GET /v2/keys/a HTTP/1.1\r\nHost: x\r\n\r\n"))
            assert status == 200 and body == b'{"action":"get"}'
            assert len(m.requests) == 1
    run(main())


def test_own_endpoints(tmp):
    async def main():
        async with proxied(tmp, FakeMember(ok_answer())) as (port, _, (m,)):
            status, headers, body = split(await exchange(
                port, b"OPTIONS /v2/keys/a HTTP/1.1\r\nHost: x\r\n\r\n"))
            assert status == 200 and body == b""
            assert sorted(headers[:3]) == sorted(CORS)
            status, headers, body = split(await exchange(
                port, b"POST /v2/config/local/proxy HTTP/1.1\r\nHost: x\r\n\r\n"))
            assert status == 405 and body == b"Method Not Allowed\n"
            assert ("Allow", "GET") in headers
            status, headers, body = split(await exchange(
                port, b"GET /v2/config/local/proxy HTTP/1.1\r\nHost: x\r\n\r\n"))
            assert status == 200 and body == b'{"endpoints":["%s"]}\n' % m.url.encode()
            assert [k for k, _ in headers][-3:] == ["Date", "Content-Length", "Content-Type"]
            status, headers, body = split(await exchange(
                port, b"GET //v2/keys/./a HTTP/1.1\r\nHost: x\r\n\r\n"))
            assert status == 301 and ("Location", "/v2/keys/a") in headers
            status, headers, body = split(await exchange(
                port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"))
            # nothing was forwarded yet: as Go's client, no etcd_proxy_* series at all
            assert status == 200 and b"etcd_proxy_" not in body
            assert m.requests == []
            await exchange(port, b"GET /v2/keys/a HTTP/1.1\r\nHost: x\r\n\r\n")
            _, _, body = split(await exchange(
                port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"))
            assert b'etcd_proxy_requests_total{method="GET"} 1\n' in body
            assert b'etcd_proxy_handled_total{code="200",method="GET"} 1\n' in body
            assert b'etcd_proxy_handling_duration_seconds_count{method="GET"} 1\n' in body
    run(main())


def test_head_and_keep_alive(tmp):
    async def main():
        async def answer(head, body, writer):
            if head.startswith("HEAD"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 123\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        async with proxied(tmp, FakeMember(answer)) as (port, _, (m,)):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                # pipelined: HEAD (no body despite Content-Length), 204, then a GET
                writer.write(b"HEAD /v2/keys/a HTTP/1.1\r\nHost: x\r\n\r\n"
                             b"DELETE /v2/keys/a HTTP/1.1\r\nHost: x\r\n\r\n")
                async with asyncio.timeout(10):
                    h1 = await reader.readuntil(b"\r\n\r\n")
                    h2 = await reader.readuntil(b"\r\n\r\n")
                assert h1.startswith(b"HTTP/1.1 200") and b"Content-Length: 123" in h1
                assert h2.startswith(b"HTTP/1.1 204")
                assert m.connections == 1   # the member connection was kept and reused
            finally:
                writer.close()
    run(main())


def test_stale_idle_member_connection_is_retried(tmp):
    async def main():
        # the member closes the connection after each answer
        answer = raw_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", keep=False)
        async with proxied(tmp, FakeMember(answer)) as (port, proxy, _):
            for _ in range(3):
                status, _, body = split(await exchange(
                    port, b"GET /v2/keys/a HTTP/1.1\r\nHost: x\r\n\r\n"))
                assert (status, body) == (200, b"ok")
            assert len(proxy.director.endpoints()) == 1   # never marked failed
    run(main())


def test_read_timeout_cuts_a_stalled_answer(tmp):
    async def main():
        answer = raw_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", stall=30)
        async with proxied(tmp, FakeMember(answer),
                           args=["--proxy-read-timeout", "200"]) as (port, _, _):
            resp = await exchange(port, b"GET /v2/keys/a HTTP/1.1\r\nHost: x\r\n\r\n",
                                  until_close=True)
            assert resp.startswith(b"HTTP/1.1 200") and resp.endswith(b"\r\n\r\nabc")
    run(main())


def test_head_read_timeout_fails_over(tmp):
    async def main():
        async def silent(head, body, writer):
            await asyncio.sleep(30)
        async with proxied(tmp, FakeMember(silent), FakeMember(ok_answer()),
                           args=["--proxy-read-timeout", "200"]) as (port, proxy, (slow, good)):
            proxy.director.eps.sort(key=lambda e: e.url != slow.url)   # the slow one first
            status, _, _ = split(await exchange(
                port, b"GET /v2/keys/a HTTP/1.1\r\nHost: x\r\n\r\n"))
            assert status == 200
            assert [e.url for e in proxy.director.endpoints()] == [good.url]
    run(main())


def test_bad_request_and_http10(tmp):
    async def main():
        answer = raw_answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"3\r\nabc\r\n0\r\n\r\n")
        async with proxied(tmp, FakeMember(answer)) as (port, _, _):
            resp = await exchange(port, b"NOT HTTP AT ALL\r\n\r\n", until_close=True)
            assert resp.startswith(b"HTTP/1.1 400 Bad Request")
            # an HTTP/1.0 client gets the chunked answer unchunked, ended by the close
            resp = await exchange(port, b"GET /v2/keys/a HTTP/1.0\r\n\r\n", until_close=True)
            status, headers, body = split(resp)
            assert status == 200 and body == b"abc"
            assert not any(k == "Connection" for k, _ in headers)   # Go: none for 1.0
            assert not any(k == "Transfer-Encoding" for k, _ in headers)
    run(main())


def test_tls_both_sides(tmp):
    """https:// listen URL with --cert-file/--key-file (clients need a certificate of the
    CA: --trusted-ca-file), https:// members reached with the same certificate."""
    import ssl

    from tlspki import Pki
    pki = Pki(tmp)

    async def main():
        member_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH,
                                                cafile=pki.path("ca.pem"))
        member_ctx.load_cert_chain(pki.path("server.pem"), pki.path("server-key.pem"))
        member_ctx.verify_mode = ssl.CERT_REQUIRED
        m = FakeMember(ok_answer())
        m.server = await asyncio.start_server(m._conn, "127.0.0.1", 0, ssl=member_ctx)
        m.url = f"https://127.0.0.1:{m.server.sockets[0].getsockname()[1]}"
        port = free_port()
        cfg = config.parse(["--proxy", "on", "--data-dir", tmp, "--listen-client-urls",
                            f"https://127.0.0.1:{port}", "--cert-file", pki.path("server.pem"),
                            "--key-file", pki.path("server-key.pem"), "--trusted-ca-file",
                            pki.path("ca.pem")], {})

        async def fetch():
            return [m.url]
        proxy = V2Proxy(cfg, [], fetch=fetch)
        await proxy.start()
        try:
            ctx = pki.client_context()
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
            try:
                writer.write(b"GET /v2/keys/a HTTP/1.1\r\nHost: x\r\n\r\n")
                async with asyncio.timeout(10):
                    status, _, body = split(await read_response(reader))
            finally:
                writer.close()
            assert status == 200 and body == b'{"action":"get"}'
            assert len(m.requests) == 1
        finally:
            await proxy.close()
            await m.stop()
    run(main())
