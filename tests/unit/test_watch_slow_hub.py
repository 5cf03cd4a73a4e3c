"""Slow watch consumers (fastkv/mvcc/watch.py): bounded buffering, then a clear cancel.

A consumer that takes no response for ``slow_timeout`` while one of its watchers is
blocked (``max_pending`` responses waiting) loses that watch: its responses are
dropped and a canceled response with ``ERR_SLOW_CONSUMER`` goes first. A consumer
that is slow but still takes responses keeps every event. A stream that does not
take even the cancel is abandoned (its adapter closes it at the transport). The
hub's clock is faked; ``check_slow(now)`` is what the hub's timer runs.
"""
import asyncio

from fastkv.mvcc.lease import Lessor
from fastkv.mvcc.store import KVStore
from fastkv.mvcc.watch import ERR_SLOW_CONSUMER, WatchHub, WatchStream


def header(rev):
    return {"revision": rev}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Member:
    """A store and a hub whose applier notifies after every put (as test_watch.py)."""

    def __init__(self, max_pending=4, slow_timeout=30.0):
        self.clock = Clock()
        self.store = KVStore(Lessor())
        self.hub = WatchHub(self.store, header, max_pending=max_pending,
                            slow_timeout=slow_timeout, clock=self.clock)
        self.acked = 0

    def put(self, key, value=b"v"):
        _resp, events = self.store.put({"key": key, "value": value})
        self.hub.notify(self.store.rev, events)
        self.acked += 1   # notify returned: the applier went on, it never waits for a watcher

    def stream(self):
        return WatchStream(self.hub, header)

    def later(self, seconds):
        self.clock.now += seconds
        self.hub.check_slow()


def drain(stream):
    out = []
    while (r := stream.get_nowait()) is not None:
        out.append(r)
    return out


def events_of(resps, wid):
    return [e["kv"]["mod_revision"] for r in resps if r.get("watch_id") == wid
            for e in r.get("events", ())]


async def settle():
    for _ in range(5):
        await asyncio.sleep(0)


def slow_reason(m):
    return ERR_SLOW_CONSUMER.format(pending=m.hub.max_pending, seconds=m.hub.slow_timeout)


def test_a_stream_that_takes_nothing_loses_its_blocked_watch_with_a_clear_reason():
    async def main():
        m = Member(max_pending=4, slow_timeout=30.0)
        s = m.stream()
        await s.handle({"create_request": {"key": b"busy"}})
        await s.handle({"create_request": {"key": b"quiet"}})
        drain(s)
        for _ in range(50):
            m.put(b"busy")
        m.put(b"quiet")
        assert m.acked == 51 and s.pending() == 5   # 4 for busy (then a victim), 1 for quiet
        m.later(29.0)
        assert len(m.hub) == 2                      # not yet
        m.later(1.0)
        assert len(m.hub) == 1 and s.watch_ids() == [1]
        resps = drain(s)
        assert resps[0] == {"header": {"revision": 52}, "watch_id": 0, "canceled": True,
                            "cancel_reason": slow_reason(m)}
        assert slow_reason(m) == ("watch: slow consumer: 4 responses undelivered and none "
                                  "taken for 30s; watch canceled")
        # busy's queued events were dropped; quiet's (not blocked) are kept
        assert events_of(resps, 0) == [] and events_of(resps, 1) == [52]
        m.put(b"busy")
        m.put(b"quiet")
        assert events_of(drain(s), 1) == [54] and len(m.hub) == 1
        await settle()
        m.later(60.0)
        assert not s.closed        # the cancel was taken: the stream lives on
    asyncio.run(main())


def test_a_slow_but_draining_consumer_is_never_canceled_and_gets_every_event():
    async def main():
        m = Member(max_pending=4, slow_timeout=30.0)
        s = m.stream()
        await s.handle({"create_request": {"key": b"k"}})
        drain(s)
        got = []
        for i in range(200):
            m.put(b"k")
            if i % 10 == 0:          # one response taken per 20 s: slow, never stopped
                r = s.get_nowait()
                if r is not None:
                    got.append(r)
                m.later(20.0)
                await settle()
        assert len(m.hub) == 1
        while len(events_of(got, 0)) < 200:
            r = s.get_nowait()
            if r is None:
                await settle()
                continue
            got.append(r)
        assert events_of(got, 0) == list(range(2, 202))
        assert not any(r.get("canceled") for r in got)
    asyncio.run(main())


def test_the_cancel_comes_after_the_watchers_own_created_response():
    async def main():
        m = Member(max_pending=2, slow_timeout=5.0)
        s = m.stream()
        await s.handle({"create_request": {"key": b"k"}})  # created: never taken
        for _ in range(5):
            m.put(b"k")
        m.later(5.0)
        resps = drain(s)
        assert [(r.get("created", False), r.get("canceled", False)) for r in resps] == [
            (True, False), (False, True)]
        assert resps[1]["cancel_reason"] == slow_reason(m)
    asyncio.run(main())


def test_a_stream_that_does_not_take_the_cancel_is_abandoned():
    async def main():
        m = Member(max_pending=2, slow_timeout=20.0)
        s = m.stream()
        abandoned = []
        s.on_abandon = lambda: abandoned.append(True)
        await s.handle({"create_request": {"key": b"k"}})
        drain(s)
        for _ in range(5):
            m.put(b"k")
        m.later(20.0)
        assert len(m.hub) == 0 and s.pending() == 1   # only the cancel is left
        m.later(19.0)
        assert not abandoned and not s.closed
        m.later(1.0)                                    # grace: max(20 s, 10 s)
        assert abandoned == [True] and s.closed and s.pending() == 0
    asyncio.run(main())


def test_the_grace_for_the_cancel_is_ten_seconds_at_least():
    async def main():
        m = Member(max_pending=1, slow_timeout=1.0)
        assert m.hub.cancel_grace == 10.0
        s = m.stream()
        await s.handle({"create_request": {"key": b"k"}})
        drain(s)
        m.put(b"k")
        m.put(b"k")
        m.later(1.0)
        assert s.pending() == 1
        m.later(9.0)
        assert not s.closed
        m.later(1.0)
        assert s.closed
    asyncio.run(main())


def test_a_zero_timeout_keeps_slow_watchers_as_etcd_does():
    async def main():
        m = Member(max_pending=2, slow_timeout=0)
        s = m.stream()
        await s.handle({"create_request": {"key": b"k"}})
        drain(s)
        for _ in range(10):
            m.put(b"k")
        m.later(10_000.0)
        assert len(m.hub) == 1 and m.hub.unsynced_count == 1 and not s.closed
        got = []
        while len(events_of(got, 0)) < 10:
            r = s.get_nowait()
            if r is None:
                await settle()
                continue
            got.append(r)
        assert events_of(got, 0) == list(range(2, 12))
    asyncio.run(main())


def test_closing_a_stream_forgets_its_blocked_watchers():
    async def main():
        m = Member(max_pending=1, slow_timeout=5.0)
        s = m.stream()
        await s.handle({"create_request": {"key": b"k"}})
        m.put(b"k")
        m.put(b"k")
        assert len(m.hub._blocked) == 1
        s.close()
        assert not m.hub._blocked
        m.later(100.0)   # nothing to cancel, nothing abandoned
    asyncio.run(main())


def test_the_hubs_timer_cancels_a_stalled_consumer_while_a_reader_gets_everything():
    """The real timer (no fake clock): bounded waits only."""
    async def main():
        store = KVStore(Lessor())
        hub = WatchHub(store, header, max_pending=8, slow_timeout=0.2)
        stalled, reader = WatchStream(hub, header), WatchStream(hub, header)
        await stalled.handle({"create_request": {"key": b"k"}})
        await reader.handle({"create_request": {"key": b"k"}})
        got = []

        async def read():
            async for r in reader.responses():
                got.append(r)
        task = asyncio.ensure_future(read())
        for i in range(300):
            _resp, events = store.put({"key": b"k", "value": b"%d" % i})
            hub.notify(store.rev, events)
            if i % 20 == 0:
                await asyncio.sleep(0.01)
        deadline = asyncio.get_running_loop().time() + 10
        while len(hub) != 1 or len(events_of(got, 0)) < 300:
            assert asyncio.get_running_loop().time() < deadline, (len(hub), len(got))
            await asyncio.sleep(0.05)
        resps = drain(stalled)   # its created response, then at once the cancel
        assert resps[0]["created"] and len(resps) == 2
        assert resps[1]["canceled"] and "slow consumer" in resps[1]["cancel_reason"]
        assert events_of(got, 0) == list(range(2, 302))
        reader.close()
        await task
    asyncio.run(main())
