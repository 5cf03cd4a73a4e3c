"""WatchHub / WatchStream: live fan-out, catch-up seam, slow consumers, compaction.

Shapes quoted in comments were printed by a real etcd 3.4's /v3/watch.
"""
import asyncio
import random

from fastkv.mvcc.lease import Lessor
from fastkv.mvcc.store import KVStore
from fastkv.mvcc.watch import WatchHub, WatchStream


def header(rev):
    return {"revision": rev}


class Member:
    """A store + hub with an applier that notifies after every write."""

    def __init__(self, max_pending=128, batch_max_revs=1000):
        self.store = KVStore(Lessor())
        self.hub = WatchHub(self.store, header, max_pending=max_pending,
                            batch_max_revs=batch_max_revs)

    def apply(self, method, req):
        resp, events = getattr(self.store, method)(req)
        if events:
            self.hub.notify(self.store.rev, events)
        return resp

    def put(self, key, value=b"v", **kw):
        return self.apply("put", {"key": key, "value": value, **kw})

    def delete(self, key, **kw):
        return self.apply("delete_range", {"key": key, **kw})

    def stream(self, **kw):
        return WatchStream(self.hub, header, **kw)


def drain(stream):
    out = []
    while True:
        r = stream.get_nowait()
        if r is None:
            return out
        out.append(r)


async def settle():
    for _ in range(5):
        await asyncio.sleep(0)


def events_of(resps, wid=None):
    return [(e["type"], e["kv"]["key"], e["kv"]["mod_revision"])
            for r in resps if wid is None or r.get("watch_id") == wid for e in r.get("events", ())]


def run(coro):
    return asyncio.run(coro)


# --------------------------------------------------------------- basics

def test_create_live_events_and_cancel():
    async def main():
        m = Member()
        s = m.stream()
        await s.handle({"create_request": {"key": b"foo"}})
        # etcd: {"result":{"header":{...,"revision":"8",...},"created":true}}
        assert drain(s) == [{"header": {"revision": 1}, "watch_id": 0, "created": True}]
        m.put(b"foo", b"1")
        m.put(b"other")
        m.delete(b"foo")
        resps = drain(s)
        assert resps == [
            {"header": {"revision": 2}, "watch_id": 0, "events": [
                {"type": 0, "kv": {"key": b"foo", "create_revision": 2, "mod_revision": 2,
                                   "version": 1, "value": b"1"}}]},
            {"header": {"revision": 4}, "watch_id": 0, "events": [
                {"type": 1, "kv": {"key": b"foo", "mod_revision": 4}}]},
        ]
        await s.handle({"cancel_request": {"watch_id": 0}})
        assert drain(s) == [{"header": {"revision": 4}, "watch_id": 0, "canceled": True}]
        m.put(b"foo")
        assert drain(s) == []
        await s.handle({"cancel_request": {"watch_id": 0}})  # unknown: ignored, as etcd
        assert drain(s) == [] and len(m.hub) == 0
    run(main())


def test_one_response_per_revision_for_txn_and_ranges():
    async def main():
        m = Member()
        s = m.stream()
        await s.handle({"create_request": {"key": b"a", "range_end": b"c"}})
        await s.handle({"create_request": {"key": b"b", "range_end": b"\0"}})
        drain(s)
        m.apply("txn", {"success": [{"request_put": {"key": b"a"}},
                                    {"request_put": {"key": b"b"}},
                                    {"request_put": {"key": b"z"}}]})
        resps = drain(s)
        assert [(r["watch_id"], [e["kv"]["key"] for e in r["events"]]) for r in resps] == \
            [(0, [b"a", b"b"]), (1, [b"b", b"z"])]
        assert all(r["header"] == {"revision": 2} for r in resps)
    run(main())


def test_ids_auto_client_and_duplicate():
    async def main():
        m = Member()
        s = m.stream()
        await s.handle({"create_request": {"key": b"a", "watch_id": 1}})
        await s.handle({"create_request": {"key": b"a"}})  # auto: 0
        await s.handle({"create_request": {"key": b"a"}})  # auto: 2 (1 is taken)
        await s.handle({"create_request": {"key": b"a", "watch_id": 2}})
        resps = drain(s)
        assert [r["watch_id"] for r in resps] == [1, 0, 2, -1]
        assert resps[3] == {"header": {"revision": 1}, "watch_id": -1, "created": True,
                            "canceled": True,
                            "cancel_reason": "mvcc: duplicate watch ID provided on the WatchStream"}
    run(main())


def test_empty_range_is_canceled_at_creation():
    async def main():
        m = Member()
        s = m.stream()
        # etcd: {"result":{"header":{...},"watch_id":"-1","created":true,"canceled":true,
        #        "cancel_reason":"mvcc: watcher range is empty"}}
        await s.handle({"create_request": {"key": b"w", "range_end": b"a"}})
        assert drain(s) == [{"header": {"revision": 1}, "watch_id": -1, "created": True,
                             "canceled": True, "cancel_reason": "mvcc: watcher range is empty"}]
        assert len(m.hub) == 0
    run(main())


def test_empty_key_watches_from_the_smallest_key():
    async def main():
        m = Member()
        s = m.stream()
        await s.handle({"create_request": {"range_end": b"\0"}})
        drain(s)
        m.put(b"\x01")
        m.put(b"zzz")
        assert events_of(drain(s)) == [(0, b"\x01", 2), (0, b"zzz", 3)]
    run(main())


def test_filters_and_prev_kv():
    async def main():
        m = Member()
        s = m.stream()
        await s.handle({"create_request": {"key": b"k", "filters": [0]}})  # NOPUT
        await s.handle({"create_request": {"key": b"k", "filters": [1], "prev_kv": True}})
        await s.handle({"create_request": {"key": b"k", "filters": [0, 1]}})
        drain(s)
        m.put(b"k", b"1")
        m.put(b"k", b"2")
        m.delete(b"k")
        resps = drain(s)
        assert events_of(resps, 0) == [(1, b"k", 4)]
        assert "prev_kv" not in resps[-1]["events"][0] or resps[-1]["watch_id"] == 1
        w1 = [r for r in resps if r["watch_id"] == 1]
        assert events_of(w1) == [(0, b"k", 2), (0, b"k", 3)]
        assert "prev_kv" not in w1[0]["events"][0]  # a create has no previous value
        assert w1[1]["events"][0]["prev_kv"]["value"] == b"1"
        assert events_of(resps, 2) == []
        delete_resp = [r for r in resps if r["watch_id"] == 0][0]
        assert "prev_kv" not in delete_resp["events"][0]
    run(main())


def test_future_start_revision():
    async def main():
        m = Member()
        s = m.stream()
        await s.handle({"create_request": {"key": b"k", "start_revision": 4}})
        drain(s)
        for i in range(4):
            m.put(b"k")
        assert events_of(drain(s)) == [(0, b"k", 4), (0, b"k", 5)]
    run(main())


# ------------------------------------------------------------- catch-up

def test_catch_up_from_history_with_prev_kv():
    async def main():
        m = Member()
        for i in range(5):
            m.put(b"k", b"%d" % i)  # revs 2..6
        m.delete(b"k")  # 7
        s = m.stream()
        await s.handle({"create_request": {"key": b"k", "start_revision": 3, "prev_kv": True}})
        assert drain(s) == [{"header": {"revision": 7}, "watch_id": 0, "created": True}]
        await settle()
        resps = drain(s)
        assert len(resps) == 1 and resps[0]["header"] == {"revision": 7}
        evs = resps[0]["events"]
        assert events_of(resps) == [(0, b"k", r) for r in range(3, 7)] + [(1, b"k", 7)]
        assert [e["prev_kv"]["value"] for e in evs] == [b"0", b"1", b"2", b"3", b"4"]
        m.put(b"k", b"new")
        assert events_of(drain(s)) == [(0, b"k", 8)]
    run(main())


def test_catch_up_batches_revisions():
    async def main():
        m = Member(batch_max_revs=3)
        for i in range(8):
            m.put(b"k")
        s = m.stream()
        await s.handle({"create_request": {"key": b"k", "start_revision": 2}})
        await settle()
        resps = drain(s)[1:]
        assert [len(r["events"]) for r in resps] == [3, 3, 2]
        assert events_of(resps) == [(0, b"k", r) for r in range(2, 10)]
    run(main())


def test_seam_exactly_once_under_concurrent_writes():
    """Writers and a catch-up race: every watcher sees every revision once, in order."""
    async def main():
        rnd = random.Random(7)
        m = Member(batch_max_revs=5)
        keys = [b"k%d" % i for i in range(6)]
        for i in range(50):
            m.put(rnd.choice(keys), b"%d" % i)
        streams = []

        async def writer():
            for i in range(300):
                k = rnd.choice(keys)
                if rnd.random() < 0.2:
                    m.delete(k)
                else:
                    m.put(k, b"w%d" % i)
                if rnd.random() < 0.5:
                    await asyncio.sleep(0)
            m.put(b"k_end")  # the last write: watchers stop when they see it

        async def watcher(start):
            s = m.stream()
            streams.append(s)
            await s.handle({"create_request": {"key": b"k", "range_end": b"l",
                                               "start_revision": start}})
            got = []
            async for r in s.responses():
                got.extend(events_of([r]))
                if got and got[-1][1] == b"k_end":
                    break
            return start, got

        tasks = [asyncio.create_task(writer())]
        for start in (1, 2, 20, 51, 0):
            tasks.append(asyncio.create_task(watcher(start)))
            await asyncio.sleep(0)
        results = await asyncio.wait_for(asyncio.gather(*tasks[1:]), 10)
        await tasks[0]
        history = [(1 if rec[1] is None else 0, rec[0], p >> 24)
                   for p, rec in m.store.events_since(1)[0]]
        for start, got in results:
            lo = start if start else None
            want = [h for h in history if lo is None or h[2] >= lo]
            if lo is None:
                want = [h for h in history if h[2] >= got[0][2]]
            assert got == want, start
        for s in streams:
            s.close()
        assert len(m.hub) == 0
    run(main())


def test_slow_consumer_moves_to_unsynced_and_catches_up():
    async def main():
        m = Member(max_pending=4)
        s = m.stream()
        await s.handle({"create_request": {"key": b"k"}})
        drain(s)
        for i in range(20):
            m.put(b"k", b"%d" % i)  # the consumer reads nothing meanwhile
        assert s.pending() == 4 and m.hub.unsynced_count == 1  # the applier never waited
        got = []
        while len(got) < 20:
            r = s.get_nowait()
            if r is None:
                await settle()
                continue
            got.extend(events_of([r]))
        assert got == [(0, b"k", r) for r in range(2, 22)]
        await settle()
        assert m.hub.unsynced_count == 0
        m.put(b"k")
        assert events_of(drain(s)) == [(0, b"k", 22)]
    run(main())


def test_slow_consumer_does_not_hold_back_others():
    async def main():
        m = Member(max_pending=2)
        slow, fast = m.stream(), m.stream()
        await slow.handle({"create_request": {"key": b"k"}})
        await fast.handle({"create_request": {"key": b"k"}})
        drain(slow)
        drain(fast)
        seen = []
        for i in range(10):
            m.put(b"k")
            seen.extend(events_of(drain(fast)))
        assert seen == [(0, b"k", r) for r in range(2, 12)]
        assert slow.pending() == 2
    run(main())


# ----------------------------------------------------------- compaction

def test_compacted_watch():
    async def main():
        m = Member()
        for i in range(7):
            m.put(b"w")  # revs 2..8
        m.store.compact(8)
        s = m.stream()
        # etcd (start_revision 2 after compacting at 8): created, then
        # {"result":{"header":{...no revision...},"canceled":true,"compact_revision":"8"}}
        await s.handle({"create_request": {"key": b"w", "start_revision": 2}})
        await settle()
        assert drain(s) == [{"header": {"revision": 8}, "watch_id": 0, "created": True},
                            {"header": {"revision": 0}, "watch_id": 0,
                             "compact_revision": 8, "canceled": True}]
        assert len(m.hub) == 0 and s.watch_ids() == []
        # etcd (start_revision 8 = the compact revision, prev_kv): the event at 8 without
        # prev_kv (7 is compacted)
        await s.handle({"create_request": {"key": b"w", "start_revision": 8, "prev_kv": True}})
        await settle()
        resps = drain(s)
        assert events_of(resps) == [(0, b"w", 8)] and "prev_kv" not in resps[1]["events"][0]
    run(main())


def test_slow_watcher_compacted_while_behind():
    async def main():
        m = Member(max_pending=1)
        s = m.stream()
        await s.handle({"create_request": {"key": b"k"}})
        drain(s)
        for i in range(5):
            m.put(b"k")  # 2 delivered (queued); 3.. left for catch-up
        m.store.compact(5)
        resps = []
        for _ in range(3):
            resps += drain(s)
            await settle()
        assert events_of(resps) == [(0, b"k", 2)]
        assert resps[-1]["compact_revision"] == 5 and resps[-1]["canceled"]
    run(main())


# ------------------------------------------------------------- progress

def test_progress_request():
    async def main():
        m = Member()
        s = m.stream()
        m.put(b"a")
        await s.handle({"progress_request": {}})
        assert drain(s) == [{"header": {"revision": 2}, "watch_id": -1}]
        for i in range(3):
            m.put(b"k")
        await s.handle({"create_request": {"key": b"k", "start_revision": 2}})
        await s.handle({"progress_request": {}})
        resps = drain(s)
        assert [r.get("created") for r in resps] == [True]  # progress waits for the catch-up
        await settle()
        resps = drain(s)
        assert events_of(resps) == [(0, b"k", 3), (0, b"k", 4), (0, b"k", 5)]
        assert resps[-1] == {"header": {"revision": 5}, "watch_id": -1}
    run(main())


def test_progress_notify_ticks():
    async def main():
        m = Member()
        s = m.stream(progress_interval=3600)
        await s.handle({"create_request": {"key": b"k", "progress_notify": True}})
        await s.handle({"create_request": {"key": b"j"}})
        drain(s)
        m.put(b"x")
        s.progress_tick()
        assert drain(s) == [{"header": {"revision": 2}, "watch_id": 0}]
        m.put(b"k")
        drain(s)
        s.progress_tick()  # an event went out since the last tick: elided
        assert drain(s) == []
        s.progress_tick()
        assert drain(s) == [{"header": {"revision": 3}, "watch_id": 0}]
        s.close()
    run(main())


def test_progress_notify_with_real_interval():
    async def main():
        m = Member()
        s = m.stream(progress_interval=0.01)
        await s.handle({"create_request": {"key": b"k", "progress_notify": True}})
        got = []

        async def consume():
            async for r in s.responses():
                got.append(r)
                if len(got) == 3:
                    return
        await asyncio.wait_for(consume(), 5)
        assert got[0]["created"] and got[1] == got[2] == {"header": {"revision": 1},
                                                           "watch_id": 0}
        s.close()
    run(main())


# --------------------------------------------------------- fragments, close

def test_fragment_splits_large_responses():
    async def main():
        m = Member()
        s = m.stream(max_request_bytes=1000)
        await s.handle({"create_request": {"key": b"a", "range_end": b"z", "fragment": True}})
        await s.handle({"create_request": {"key": b"a", "range_end": b"z"}})
        m.apply("txn", {"success": [{"request_put": {"key": b"k%d" % i, "value": b"x" * 300}}
                                    for i in range(7)]})
        got = []

        async def consume():
            async for r in s.responses():
                got.append(r)
                if sum(len(x.get("events", ())) for x in got) == 14:
                    return
        await asyncio.wait_for(consume(), 5)
        frags = [r for r in got if r["watch_id"] == 0 and "events" in r]
        assert len(frags) > 1
        assert all(r.get("fragment") for r in frags[:-1]) and "fragment" not in frags[-1]
        assert sum(len(r["events"]) for r in frags) == 7
        whole = [r for r in got if r["watch_id"] == 1 and "events" in r]
        assert len(whole) == 1 and len(whole[0]["events"]) == 7
        s.close()
    run(main())


def test_close_ends_responses_and_releases_watchers():
    async def main():
        m = Member()
        s = m.stream()
        await s.handle({"create_request": {"key": b"k"}})
        await s.handle({"create_request": {"key": b"a", "range_end": b"z",
                                           "start_revision": 1}})
        got = []

        async def consume():
            async for r in s.responses():
                got.append(r)
        t = asyncio.create_task(consume())
        await settle()
        s.close()
        await asyncio.wait_for(t, 1)
        assert len(m.hub) == 0
        m.put(b"k")  # nothing listens any more
        await s.handle({"create_request": {"key": b"k"}})
        assert s.get_nowait() is None
    run(main())


def test_notify_without_watchers_is_cheap():
    m = Member()
    m.hub.notify(5, [{"type": 0, "kv": {"key": b"k"}}])
    assert m.hub.notified_rev == 5 and len(m.hub) == 0


def test_revoke_events_reach_watchers():
    async def main():
        m = Member()
        m.store._lessor.grant(1, 60)
        s = m.stream()
        await s.handle({"create_request": {"key": b"a", "range_end": b"\0", "prev_kv": True}})
        m.put(b"a", lease=1)
        m.put(b"b", lease=1)
        drain(s)
        _, evs = m.store.revoke_lease(1)
        m.hub.notify(m.store.rev, evs)
        resps = drain(s)
        assert len(resps) == 1
        assert [(e["type"], e["kv"]["key"], e["prev_kv"]["lease"]) for e in resps[0]["events"]] == \
            [(1, b"a", 1), (1, b"b", 1)]
    run(main())
