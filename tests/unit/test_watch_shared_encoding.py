"""The gRPC watch fan-out's shared encoding (fastkv/api/grpc_convert.watch_response,
grpc_api._take_framed): a revision's events are encoded once for all the watchers
that get them, and every WatchResponse is put together from those parts.

The bytes must be exactly what the generic conversion (``from_dict`` then
``SerializeToString``) makes of the same response dict: the generic path is what
the grpc.aio transport still sends, and the two must not drift apart.
"""
import asyncio

import pytest

from fastkv.api import grpc_convert as cv
from fastkv.api.grpc_api import _take_framed
from fastkv.mvcc.lease import Lessor
from fastkv.mvcc.store import KVStore
from fastkv.mvcc.watch import SharedEvents, WatchHub, WatchStream
from fastkv.proto.etcdserverpb import rpc_pb2 as pb


def header(rev):
    return {"cluster_id": 0xDEADBEEF12345678, "member_id": 42, "revision": rev,
            "raft_term": 3}


def generic(resp: dict) -> bytes:
    return cv.from_dict(pb.WatchResponse, resp).SerializeToString()


def unframe(data: bytes) -> list:
    """The messages of a gRPC length-prefixed byte stream."""
    out, pos = [], 0
    while pos < len(data):
        assert data[pos] == 0   # not compressed
        n = int.from_bytes(data[pos + 1:pos + 5], "big")
        out.append(data[pos + 5:pos + 5 + n])
        pos += 5 + n
    assert pos == len(data)
    return out


KV = {"key": b"k", "create_revision": 2, "mod_revision": 9, "version": 3, "value": b"v" * 200,
      "lease": 7}
PREV = {"key": b"k", "create_revision": 2, "mod_revision": 8, "version": 2, "value": b"old"}
EVENTS = [{"type": 0, "kv": KV, "prev_kv": PREV},
          {"type": 0, "kv": {"key": b"new", "create_revision": 9, "mod_revision": 9,
                             "version": 1}},
          {"type": 1, "kv": {"key": b"gone", "mod_revision": 9}, "prev_kv": PREV}]


class _OneResponse:
    """A stream with one response queued (no groups)."""

    def __init__(self, resp):
        self.take = iter([resp, None]).__next__

    def next_group(self):
        return None

    take_group = None


@pytest.mark.parametrize("resp", [
    {"header": header(9), "watch_id": 0, "events": EVENTS},
    {"header": header(9), "watch_id": 5, "events": SharedEvents(EVENTS[:1])},
    {"header": header(9), "watch_id": 2**40, "events": [EVENTS[2]]},
    {"header": header(0), "watch_id": -1, "events": EVENTS[1:]},       # zero revision
    {"header": {}, "watch_id": 3, "events": EVENTS},                   # header not set
    {"header": {"revision": 0}, "watch_id": 3, "events": EVENTS},      # set, all zero
    {"header": header(9), "watch_id": 1, "events": EVENTS, "fragment": True},
    {"header": header(9), "watch_id": 1, "created": True},
    {"header": header(9), "watch_id": -1, "created": True, "canceled": True,
     "cancel_reason": "mvcc: watcher range is empty"},
    {"header": header(0), "watch_id": 4, "compact_revision": 5, "canceled": True},
    {"header": header(9), "watch_id": -1},                             # progress
])
def test_watch_response_bytes_equal_the_generic_encoding(resp):
    assert cv.watch_response(resp) == generic(resp)
    assert _take_framed(_OneResponse(resp), 1 << 20) == (
        len(generic(resp)).to_bytes(5, "big") + generic(resp))


def test_a_shared_events_list_keeps_its_encoding():
    evs = SharedEvents(EVENTS)
    first = cv.events_field(evs)
    assert evs.wire == first and cv.events_field(evs) is first
    plain = list(EVENTS)
    assert cv.events_field(plain) == first and not hasattr(plain, "wire")


# --------------------------------------------------------- a hub, two ways of sending

class World:
    """A store and hub with streams of watchers of every kind, driven by a script."""

    def __init__(self):
        self.store = KVStore(Lessor())
        self.hub = WatchHub(self.store, header)
        self.streams = [WatchStream(self.hub, header, max_request_bytes=700)
                        for _ in range(3)]

    def apply(self, method, req):
        resp, events = getattr(self.store, method)(req)
        if events:
            self.hub.notify(self.store.rev, events)
        return resp

    async def run(self):
        a, b, c = self.streams
        self.apply("put", {"key": b"k", "value": b"before"})
        for s in (a, b):
            for _ in range(3):   # several alike: they share one encoding
                await s.handle({"create_request": {"key": b"k"}})
            await s.handle({"create_request": {"key": b"k", "prev_kv": True}})
            await s.handle({"create_request": {"key": b"k", "filters": [0]}})      # NOPUT
            await s.handle({"create_request": {"key": b"k", "filters": [1],        # NODELETE
                                               "prev_kv": True}})
            await s.handle({"create_request": {"key": b"a", "range_end": b"z"}})
        await c.handle({"create_request": {"key": b"a", "range_end": b"\0",
                                           "fragment": True, "prev_kv": True}})
        await c.handle({"create_request": {"key": b"k", "start_revision": 1}})   # catch-up
        await c.handle({"create_request": {"key": b"x", "range_end": b"a"}})     # refused
        for i in range(3):
            self.apply("put", {"key": b"k", "value": b"v%d" % i})
        self.apply("txn", {"success": [
            {"request_put": {"key": b"k%d" % i, "value": b"x" * 300}} for i in range(4)]
            + [{"request_put": {"key": b"k", "value": b"in a txn"}}]})
        self.apply("delete_range", {"key": b"k"})
        self.apply("delete_range", {"key": b"k0", "range_end": b"k9"})
        await a.handle({"cancel_request": {"watch_id": 1}})
        await b.handle({"progress_request": {}})
        self.apply("put", {"key": b"k", "value": b"after"})


def by_watch(msgs: list) -> dict:
    """A stream's messages per watch id, in order (the order between the watchers of
    one revision follows set iteration, which differs from one world to the other)."""
    out: dict = {}
    for m in msgs:
        out.setdefault(pb.WatchResponse.FromString(m).watch_id, []).append(m)
    return out


def sent_generically(world) -> list:
    out = []
    for s in world.streams:
        msgs = []
        while (r := s.take()) is not None:
            msgs.append(generic(r))
        out.append(by_watch(msgs))
    return out


def sent_framed(world, limit) -> list:
    out = []
    for s in world.streams:
        msgs = []
        while data := _take_framed(s, limit):
            msgs += unframe(data)
        out.append(by_watch(msgs))
    return out


@pytest.mark.parametrize("limit", [1, 300, 1 << 20])
def test_framed_watch_streams_equal_the_generic_path(limit):
    async def go():
        worlds = [World(), World()]
        for w in worlds:
            await w.run()
        want = sent_generically(worlds[0])
        got = sent_framed(worlds[1], limit)
        assert got == want
        # the script did reach every kind of response
        decoded = [pb.WatchResponse.FromString(m) for stream in want
                   for msgs in stream.values() for m in msgs]
        assert any(r.fragment for r in decoded) and any(r.canceled for r in decoded)
        assert any(e.HasField("prev_kv") for r in decoded for e in r.events)
        assert any(e.type == 1 for r in decoded for e in r.events)
        assert sum(len(r.events) > 1 for r in decoded) >= 2
    asyncio.run(go())


def test_watchers_of_a_revision_share_one_encoding(monkeypatch):
    """1000 watchers of a key cost one encoding of the revision's event (per filter and
    prev_kv choice), not one per watcher: the fan-out's whole point."""
    async def go():
        store = KVStore(Lessor())
        hub = WatchHub(store, header)
        streams = [WatchStream(hub, header) for _ in range(4)]
        for s in streams:
            for i in range(50):
                await s.handle({"create_request": {"key": b"k", "prev_kv": i % 2 == 0}})
            while s.take() is not None:   # the created responses
                pass
        resp, events = store.put({"key": b"k", "value": b"v"})
        hub.notify(store.rev, events)
        resp, events = store.put({"key": b"k", "value": b"w"})
        hub.notify(store.rev, events)
        encoded = []
        fill = cv.fill

        def counting_fill(msg, d):
            if type(msg).__name__ != "KeyValue":   # fill's own recursion into kv, prev_kv
                encoded.append(type(msg).__name__)
            return fill(msg, d)
        monkeypatch.setattr(cv, "fill", counting_fill)
        for s in streams:
            msgs = unframe(_take_framed(s, 1 << 20))
            assert len(msgs) == 100
            assert {pb.WatchResponse.FromString(m).header.revision for m in msgs} == {2, 3}
        # 2 revisions x (with, without prev_kv) events, 2 headers
        assert sorted(encoded) == ["Event"] * 4 + ["ResponseHeader"] * 2
    asyncio.run(go())


def test_the_watchers_of_a_stream_get_one_group_taken_in_parts():
    """A revision's responses to the watchers of one stream that get the same events are
    one queue item (watch._Group): taken one by one (take) or many at once (take_group,
    for _take_framed), with each watcher's pending count, and without the watchers
    canceled since."""
    async def go():
        store = KVStore(Lessor())
        hub = WatchHub(store, header)
        s = WatchStream(hub, header)
        for _ in range(6):
            await s.handle({"create_request": {"key": b"k"}})
        while s.take() is not None:   # the created responses
            pass
        for value in (b"1", b"2"):
            hub.notify(store.rev + 1, store.put({"key": b"k", "value": value})[1])
        assert len(s._queue) == 2 and s.pending() == 12
        ws = list(s._queue[0][0].ws)    # the group's order (the hub's set's)
        assert sorted(w.id for w in ws) == list(range(6)) and ws == s._queue[1][0].ws
        assert [w.pending for w in ws] == [2] * 6
        s.cancel(ws[1].id)
        s.cancel(ws[2].id)            # queued behind the groups: cancels come last
        assert s.next_group() is not None
        first = s.take()              # one response of the first group
        taken, h, evs = s.take_group(2)   # the next two: both canceled since
        assert (taken, h["revision"]) == ([], 2) and len(evs) == 1
        taken, h, _ = s.take_group(100)   # the rest of the first group
        assert taken == ws[3:] and h["revision"] == 2
        rest = []
        while (r := s.take()) is not None:
            rest.append(r)
        got = [first] + rest
        assert [(r["watch_id"], r["header"]["revision"]) for r in got if "events" in r] == \
            [(ws[0].id, 2)] + [(w.id, 3) for w in ws if w not in ws[1:3]]
        assert [r["watch_id"] for r in got if r.get("canceled")] == [ws[1].id, ws[2].id]
        assert s.pending() == 0 and s.taken == 6 + 6 + 6 + 2 and \
            all(w.pending == 0 for w in ws)
        # the framed bytes are the generic encoding of each watcher's response
        hub.notify(store.rev + 1, store.put({"key": b"k", "value": b"3"})[1])
        msgs = [pb.WatchResponse.FromString(m) for m in unframe(_take_framed(s, 1 << 20))]
        assert [m.watch_id for m in msgs] == [w.id for w in ws if w not in ws[1:3]]
        assert {m.events[0].kv.value for m in msgs} == {b"3"}
    asyncio.run(go())
