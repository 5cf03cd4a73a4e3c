"""The in-loop HTTP/2 gRPC transport (fastkv/api/grpc_h2.py), frame by frame.

A fake protocol/transport pair stands in for the socket; the client side is
written with the hpack package's encoder, so HPACK is checked against an
independent implementation.
"""
from __future__ import annotations

import asyncio
import random

import hpack
import pytest

from fastkv.api import grpc_h2 as h2
from fastkv.proto.etcdserverpb import rpc_pb2 as pb


# ------------------------------------------------------------------------- HPACK

def test_hpack_decoder_agrees_with_the_hpack_package():
    rng = random.Random(7)
    enc, dec = hpack.Encoder(), h2.HpackDecoder()
    names = [b":path", b":method", b"content-type", b"x-custom", b"grpc-timeout", b"te"]
    for _ in range(300):
        headers = [(rng.choice(names), bytes(rng.randrange(32, 127) for _ in range(
            rng.randrange(0, 40)))) for _ in range(rng.randrange(1, 8))]
        block = enc.encode(headers, huffman=rng.random() < 0.5)
        assert dec.decode(block) == headers
    # a table size update shrinks the dynamic table as the encoder asks
    enc.header_table_size = 64
    block = enc.encode([(b"x-custom", b"v" * 10)])
    assert dec.decode(block) == [(b"x-custom", b"v" * 10)] and dec.size <= 64


def test_hpack_decoder_refuses_bad_blocks():
    dec = h2.HpackDecoder()
    with pytest.raises(ValueError):
        dec.decode(b"\xff\x80\x01")  # index 255: past both tables
    with pytest.raises(ValueError):
        dec.decode(b"\xff\x80")      # cut in the middle of an integer
    with pytest.raises(ValueError):
        dec.decode(b"\x3f\xe2\x1f")  # a table size update to 4097: above our 4096


def test_timeouts_and_trailers():
    assert h2.parse_timeout(b"100m") == pytest.approx(0.1)
    assert h2.parse_timeout(b"2S") == 2.0 and h2.parse_timeout(b"1H") == 3600.0
    assert h2.parse_timeout(b"x") is None and h2.parse_timeout(b"10q") is None
    got = hpack.Decoder().decode(h2.status_trailers(5, "not found: ü 100%"), raw=True)
    assert got == [(b"grpc-status", b"5"), (b"grpc-message", b"not found: %C3%BC 100%25")]


# ------------------------------------------------------------------------- connection

class FakeTransport:
    def __init__(self):
        self.out = bytearray()
        self.closed = False

    def write(self, data):
        self.out += data

    def close(self):
        self.closed = True

    def get_extra_info(self, name):
        return ("127.0.0.1", 1234) if name == "peername" else None


class FakeProtocol:
    def __init__(self, loop):
        self.loop = loop
        self.transport = FakeTransport()


class Client:
    """Just enough of an HTTP/2 client to drive one connection."""

    def __init__(self, methods, max_message=1 << 20, settings=b""):
        self.loop = asyncio.get_running_loop()
        self.proto = FakeProtocol(self.loop)
        self.conn = h2.GrpcConnection(self.proto, methods, max_message)
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()
        self.pos = 0
        self.send(h2._frame(h2.SETTINGS, 0, 0, settings))

    def send(self, data: bytes):
        self.conn.data_received(data)

    def call(self, sid, path, message=None, end=True, extra=(), split_headers=False):
        block = self.enc.encode([(":method", "POST"), (":scheme", "http"), (":path", path),
                                 (":authority", "x"), ("content-type", "application/grpc"),
                                 ("te", "trailers"), *extra])
        if split_headers:
            half = len(block) // 2
            self.send(h2._frame(h2.HEADERS, 0, sid, block[:half])
                      + h2._frame(h2.CONTINUATION, h2.END_HEADERS, sid, block[half:]))
        else:
            self.send(h2._frame(h2.HEADERS, h2.END_HEADERS, sid, block))
        if message is not None:
            raw = message.SerializeToString()
            self.send(h2._frame(h2.DATA, h2.END_STREAM if end else 0, sid,
                                b"\0" + len(raw).to_bytes(4, "big") + raw))

    async def frames(self):
        """Frames the server wrote since the last call (after letting the loop run)."""
        for _ in range(5):
            await asyncio.sleep(0)
        out = self.proto.transport.out
        got = []
        while len(out) - self.pos >= 9:
            n = int.from_bytes(out[self.pos:self.pos + 3], "big")
            ftype, flags = out[self.pos + 3], out[self.pos + 4]
            sid = int.from_bytes(out[self.pos + 5:self.pos + 9], "big")
            payload = bytes(out[self.pos + 9:self.pos + 9 + n])
            self.pos += 9 + n
            if ftype in (h2.HEADERS,):
                payload = dict(self.dec.decode(payload, raw=True))
            got.append((ftype, flags, sid, payload))
        return got


async def echo(request, context):
    return pb.RangeResponse(count=len(request.key), more=dict(
        context.invocation_metadata()).get("x-more") == "yes")


async def stream_big(request, context):
    for _ in range(request.limit):
        await context.write(pb.RangeResponse(kvs=[{"key": b"k", "value": b"v" * 200}]))


class Forever:
    def __init__(self):
        self.cancelled = asyncio.Event()

    async def __call__(self, request, context):
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


def methods(**extra):
    table = {b"/etcdserverpb.KV/Range": h2.Method(echo, pb.RangeRequest, False, False),
             b"/etcdserverpb.KV/Stream": h2.Method(stream_big, pb.RangeRequest, False, True)}
    for path, m in extra.items():
        table[path.encode()] = m
    h2._KNOWN_SERVICES.add("etcdserverpb.KV")
    return table


def grpc_status(frames, sid):
    trailers = [p for t, f, s, p in frames if t == h2.HEADERS and s == sid and f & h2.END_STREAM]
    assert trailers, frames
    return int(trailers[-1][b"grpc-status"]), trailers[-1].get(b"grpc-message", b"").decode()


def test_unary_call_metadata_and_settings_ack():
    async def go():
        c = Client(methods())
        c.call(1, "/etcdserverpb.KV/Range", pb.RangeRequest(key=b"abc"),
               extra=[("x-more", "yes")], split_headers=True)
        frames = await c.frames()
        kinds = [f[0] for f in frames]
        assert h2.SETTINGS in kinds                       # ours, and the ACK of theirs
        assert any(t == h2.SETTINGS and f & h2.ACK for t, f, s, p in frames)
        data = [p for t, f, s, p in frames if t == h2.DATA and s == 1]
        resp = pb.RangeResponse.FromString(b"".join(data)[5:])
        assert resp.count == 3 and resp.more
        assert grpc_status(frames, 1) == (0, "")
    asyncio.run(go())


def test_unknown_methods_big_messages_and_compression_are_refused():
    async def go():
        c = Client(methods(), max_message=100)
        c.call(1, "/etcdserverpb.KV/Nope", pb.RangeRequest(key=b"a"))
        c.call(3, "/foo.Bar/Baz", pb.RangeRequest(key=b"a"))
        c.call(5, "/etcdserverpb.KV/Range", pb.RangeRequest(key=b"a" * 200))
        c.call(7, "/etcdserverpb.KV/Range", extra=[("grpc-encoding", "gzip")])
        frames = await c.frames()
        assert grpc_status(frames, 1) == (12, "unknown method Nope for service etcdserverpb.KV")
        assert grpc_status(frames, 3) == (12, "unknown service foo.Bar")
        assert grpc_status(frames, 5)[0] == 8 and "larger than max" in grpc_status(frames, 5)[1]
        assert grpc_status(frames, 7)[0] == 12
        # the connection goes on
        c.call(9, "/etcdserverpb.KV/Range", pb.RangeRequest(key=b"ok"))
        assert grpc_status(await c.frames(), 9) == (0, "")
    asyncio.run(go())


def test_server_streaming_respects_the_peers_flow_control_window():
    async def go():
        # the client allows 300 bytes per stream until it sends WINDOW_UPDATEs
        c = Client(methods(), settings=h2.S_INITIAL_WINDOW_SIZE.to_bytes(2, "big")
                   + (300).to_bytes(4, "big"))
        c.call(1, "/etcdserverpb.KV/Stream", pb.RangeRequest(limit=4))
        frames = await c.frames()
        sent = sum(len(p) for t, f, s, p in frames if t == h2.DATA and s == 1)
        assert sent == 300
        assert not any(t == h2.HEADERS and f & h2.END_STREAM for t, f, s, p in frames)
        c.send(h2._frame(h2.WINDOW_UPDATE, 0, 1, (10000).to_bytes(4, "big")))
        frames += await c.frames()
        body = b"".join(p for t, f, s, p in frames if t == h2.DATA and s == 1)
        msgs = []
        while body:
            n = int.from_bytes(body[1:5], "big")
            msgs.append(pb.RangeResponse.FromString(body[5:5 + n]))
            body = body[5 + n:]
        assert len(msgs) == 4 and all(m.kvs[0].value == b"v" * 200 for m in msgs)
        assert grpc_status(frames, 1) == (0, "")
    asyncio.run(go())


def test_reset_and_deadline_cancel_the_handler():
    async def go():
        hang1, hang2 = Forever(), Forever()
        c = Client(methods(**{"/etcdserverpb.KV/Hang1": h2.Method(hang1, pb.RangeRequest,
                                                                   False, False),
                              "/etcdserverpb.KV/Hang2": h2.Method(hang2, pb.RangeRequest,
                                                                   False, False)}))
        c.call(1, "/etcdserverpb.KV/Hang1", pb.RangeRequest(key=b"a"))
        await c.frames()
        c.send(h2._frame(h2.RST_STREAM, 0, 1, h2.CANCEL.to_bytes(4, "big")))
        await asyncio.wait_for(hang1.cancelled.wait(), 2)
        c.call(3, "/etcdserverpb.KV/Hang2", pb.RangeRequest(key=b"a"),
               extra=[("grpc-timeout", "50m")])
        await asyncio.wait_for(hang2.cancelled.wait(), 2)
        frames = await c.frames()
        assert grpc_status(frames, 3) == (4, "Deadline Exceeded")
        assert not [f for f in frames if f[2] == 1]    # nothing more on the reset stream
    asyncio.run(go())


def test_ping_is_acked_and_protocol_errors_end_the_connection():
    async def go():
        c = Client(methods())
        c.send(h2._frame(h2.PING, 0, 0, b"12345678"))
        frames = await c.frames()
        assert (h2.PING, h2.ACK, 0, b"12345678") in frames
        c.send(h2._frame(h2.PUSH_PROMISE, 0, 1, b"\0\0\0\2"))
        frames = await c.frames()
        goaway = [p for t, f, s, p in frames if t == h2.GOAWAY]
        assert goaway and int.from_bytes(goaway[0][4:8], "big") == h2.PROTOCOL_ERROR
        assert c.proto.transport.closed
    asyncio.run(go())


def test_frames_split_anywhere_are_reassembled():
    async def go():
        c = Client(methods())
        block = c.enc.encode([(":method", "POST"), (":path", "/etcdserverpb.KV/Range"),
                              ("content-type", "application/grpc")])
        raw = pb.RangeRequest(key=b"split").SerializeToString()
        wire = (h2._frame(h2.HEADERS, h2.END_HEADERS, 1, block)
                + h2._frame(h2.DATA, h2.END_STREAM, 1,
                            b"\0" + len(raw).to_bytes(4, "big") + raw))
        for i in range(len(wire)):
            c.send(wire[i:i + 1])
        frames = await c.frames()
        data = b"".join(p for t, f, s, p in frames if t == h2.DATA and s == 1)
        assert pb.RangeResponse.FromString(data[5:]).count == 5
        assert grpc_status(frames, 1) == (0, "")
    asyncio.run(go())


def test_a_stream_the_server_ends_first_is_reset_with_no_error():
    """The server's trailers end a bidi call the client still sends on: RST_STREAM(NO_ERROR)
    tells it to stop; later DATA on that stream is dropped."""
    async def bidi(requests, context):
        async for req in requests:
            if req.key == b"stop":
                await context.abort(5, "stopped")
            await context.write(pb.RangeResponse(count=1))

    async def go():
        c = Client(methods(**{"/etcdserverpb.KV/Bidi": h2.Method(bidi, pb.RangeRequest,
                                                                  True, True)}))
        c.call(1, "/etcdserverpb.KV/Bidi", pb.RangeRequest(key=b"a"), end=False)
        raw = pb.RangeRequest(key=b"stop").SerializeToString()
        c.send(h2._frame(h2.DATA, 0, 1, b"\0" + len(raw).to_bytes(4, "big") + raw))
        frames = await c.frames()
        assert grpc_status(frames, 1) == (5, "stopped")
        rst = [p for t, f, s, p in frames if t == h2.RST_STREAM and s == 1]
        assert rst == [h2.NO_ERROR.to_bytes(4, "big")]
        c.send(h2._frame(h2.DATA, h2.END_STREAM, 1, b"\0\0\0\0\0"))   # dropped, no error
        assert not [f for f in await c.frames() if f[0] == h2.GOAWAY]
    asyncio.run(go())


def test_repeated_blocks_decode_alike_and_follow_table_changes():
    """The block cache never answers for a dynamic table that changed since."""
    enc, dec = hpack.Encoder(), h2.HpackDecoder()
    first = enc.encode([(b"x-a", b"1")])             # literal with indexing: enters the table
    assert dec.decode(first) == [(b"x-a", b"1")]
    again = enc.encode([(b"x-a", b"1")])             # now just "index 62"
    assert again != first
    assert dec.decode(again) == [(b"x-a", b"1")] == dec.decode(again)
    # another entry arrives (from a block of another encoder): index 62 is now it
    assert dec.decode(hpack.Encoder().encode([(b"x-new", b"n")])) == [(b"x-new", b"n")]
    assert dec.decode(again) == [(b"x-new", b"n")]


def test_client_streams_get_window_back_only_as_the_handler_reads():
    """A handler that stops reading stops its client after one stream window: nothing
    piles up in the server; reading gives the window back."""
    gate = asyncio.Event()

    async def slow(requests, context):
        await gate.wait()
        async for _ in requests:
            pass
        await context.write(pb.RangeResponse(count=1))

    async def go():
        c = Client(methods(**{"/etcdserverpb.KV/Slow": h2.Method(slow, pb.RangeRequest,
                                                                  True, True)}))
        window = c.conn.stream_window
        c.call(1, "/etcdserverpb.KV/Slow", end=False)
        raw = pb.RangeRequest(key=b"k" * 1000).SerializeToString()
        msg = b"\0" + len(raw).to_bytes(4, "big") + raw
        sent = 0
        while sent < window // 2 + len(msg):
            c.send(h2._frame(h2.DATA, 0, 1, msg))
            sent += len(msg)
        frames = await c.frames()
        assert not [f for f in frames if f[0] == h2.WINDOW_UPDATE and f[2] == 1]
        gate.set()
        frames = await c.frames()
        updates = [int.from_bytes(p, "big") for t, f, s, p in frames
                   if t == h2.WINDOW_UPDATE and s == 1]
        assert updates and sum(updates) >= window // 2
    asyncio.run(go())


def test_blocked_streams_take_turns_and_long_messages_fit_a_frame():
    async def go():
        # a 64 KiB-per-stream window, connection window left at the default 65535
        c = Client(methods(), settings=h2.S_INITIAL_WINDOW_SIZE.to_bytes(2, "big")
                   + (1 << 20).to_bytes(4, "big"))
        c.call(1, "/etcdserverpb.KV/Stream", pb.RangeRequest(limit=2000))   # ~400 KB
        c.call(3, "/etcdserverpb.KV/Range", pb.RangeRequest(key=b"small"))
        frames = await c.frames()
        for _ in range(3):   # give the connection window back a little at a time
            c.send(h2._frame(h2.WINDOW_UPDATE, 0, 0, (65535).to_bytes(4, "big")))
            frames += await c.frames()
        assert grpc_status(frames, 3) == (0, "")   # the small answer is not stuck behind
        assert not any(t == h2.HEADERS and f & h2.END_STREAM and s == 1
                       for t, f, s, p in frames)
        c.call(5, "/etcdserverpb.KV/" + "x" * 20000, pb.RangeRequest(key=b"a"), split_headers=True)
        raw_frames = await c.frames()
        trailers = [p for t, f, s, p in raw_frames if t == h2.HEADERS and s == 5]
        assert trailers and grpc_status(raw_frames, 5)[0] == 12
        out = c.proto.transport.out
        assert max(int.from_bytes(out[i:i + 3], "big") for i in _frame_starts(out)) <= 16384
    asyncio.run(go())


def _frame_starts(out):
    i = 0
    while i + 9 <= len(out):
        yield i
        i += 9 + int.from_bytes(out[i:i + 3], "big")


def test_reset_stream_drops_what_waits_for_window_and_ends_the_call():
    """A watch stream whose client stopped reading is ended with RST_STREAM(CANCEL):
    the frame needs no window, the stream's queued DATA is dropped, its writer wakes."""
    async def go():
        parked = asyncio.Event()
        ended = []

        async def flood(request, context):
            try:
                while True:
                    await context.write(pb.RangeResponse(kvs=[{"key": b"k",
                                                               "value": b"v" * 4000}]))
            except asyncio.CancelledError:
                ended.append("writer woke")
                raise
            finally:
                parked.set()

        c = Client(methods(**{"/etcdserverpb.KV/Flood": h2.Method(flood, pb.RangeRequest,
                                                                   False, True)}),
                   settings=h2.S_INITIAL_WINDOW_SIZE.to_bytes(2, "big") + (1000).to_bytes(4, "big"))
        c.call(1, "/etcdserverpb.KV/Flood", pb.RangeRequest())
        await c.frames()
        st = c.conn.streams[1]
        assert st.pending_bytes > h2.STREAM_BUFFER_HIGH and st.drain_waiter is not None
        ctx = h2.CallContext(st, ())
        ctx.reset_stream()
        frames = await c.frames()
        assert (h2.RST_STREAM, 0, 1, h2.CANCEL.to_bytes(4, "big")) in frames
        assert not any(t == h2.DATA for t, f, s, p in frames)
        assert st.pending_bytes == 0 and not st.pending and 1 not in c.conn.streams
        await asyncio.wait_for(parked.wait(), 2)
        assert ended == ["writer woke"]
        c.send(h2._frame(h2.WINDOW_UPDATE, 0, 1, (1 << 20).to_bytes(4, "big")))
        assert not [f for f in await c.frames() if f[2] == 1]   # nothing more on it
    asyncio.run(go())
