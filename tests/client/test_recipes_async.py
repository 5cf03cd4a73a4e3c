"""The asyncio recipes that share their logic with the blocking ones: AsyncBarrier,
AsyncDoubleBarrier, AsyncServiceRegistry (AsyncRegistration, AsyncServiceView) and
AsyncConfigWatcher; several tasks and clients contending, and sync and async
participants meeting on the same keys. Against fastkv and etcd 3.4 (the ``server``
fixture). Every wait has a deadline; nothing here measures speed."""
from __future__ import annotations

import asyncio
import random
import threading

import pytest
from clientfakes import TcpProxy

from fastkv.client import AsyncClient, Client
from fastkv.client.recipes import (AsyncBarrier, AsyncConfigWatcher, AsyncDoubleBarrier,
                                   AsyncRegistration, AsyncServiceRegistry, AsyncServiceView,
                                   Barrier, ConfigWatcher, DoubleBarrier, NoInstanceAvailable,
                                   ServiceRegistry, TooManyClients)
from fastkv.client.recipes.registry import encode_instance


def run(coro, timeout: float = 30):
    """Run a test's coroutine, bounded by a deadline."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def until(fn, what: str, timeout: float = 10.0, interval: float = 0.05):
    """Poll ``fn()`` (a function or a coroutine function) until it is true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        res = fn()
        if asyncio.iscoroutine(res):
            res = await res
        if res:
            return res
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)


async def waiting(ac, name, n) -> bool:
    """n participants have their key in the DoubleBarrier ``name``."""
    return (await ac.range(name + "/waiters/", prefix=True, count_only=True)).count == n


async def keys_under(ac, prefix) -> list[bytes]:
    return (await ac.range(prefix, prefix=True, sort_target="create")).keys()


def ids(instances) -> list[str]:
    return [i.id for i in instances]


# ---- Barrier ------------------------------------------------------------------------------

def test_async_barrier(server, prefix):
    name = prefix + "gate"

    async def main():
        async with AsyncClient(server.url) as ac:
            b = AsyncBarrier(ac, name)
            assert repr(b) == f"<AsyncBarrier {name.encode()!r}>"
            assert await b.wait(0) is True                 # not held: passes at once
            assert await b.hold() and not await b.hold() and await b.is_held()
            assert (await ac.get(name)).value == b""       # etcd's layout: the key <name>
            assert await b.wait(timeout=0.2) is False
            others = [AsyncClient(server.url) for _ in range(3)]
            try:
                # waiters on other clients and on the holder's own client
                waiters = [asyncio.ensure_future(AsyncBarrier(c, name).wait(20))
                           for c in others + [ac, ac]]
                await asyncio.sleep(0.3)
                assert not any(w.done() for w in waiters)   # closed: nobody through
                await b.release()
                assert await asyncio.gather(*waiters) == [True] * 5
                assert not await b.is_held() and await ac.get(name) is None
            finally:
                for c in others:
                    await c.close()
    run(main())


def test_barrier_sync_and_async_interop(client, server, prefix):
    """A sync holder opens the gate for async waiters, an async holder for sync ones."""
    name = prefix + "gate"

    async def main():
        async with AsyncClient(server.url) as ac:
            sync_gate, async_gate = Barrier(client, name), AsyncBarrier(ac, name)
            assert sync_gate.hold()
            assert await async_gate.is_held() and not await async_gate.hold()
            waiters = [asyncio.ensure_future(AsyncBarrier(ac, name).wait(20)) for _ in range(2)]
            await asyncio.sleep(0.2)
            assert not any(w.done() for w in waiters)
            await asyncio.to_thread(sync_gate.release)
            assert await asyncio.gather(*waiters) == [True, True]

            assert await async_gate.hold() and not sync_gate.hold()
            sync_waiters = [asyncio.ensure_future(
                asyncio.to_thread(Barrier(client, name).wait, 20)) for _ in range(2)]
            await asyncio.sleep(0.2)
            assert not any(w.done() for w in sync_waiters)
            await async_gate.release()
            assert await asyncio.gather(*sync_waiters) == [True, True]
    run(main())


# ---- DoubleBarrier ------------------------------------------------------------------------

def assert_phases(log: list[tuple[str, int]], n: int) -> None:
    """Nobody entered before all had arrived, nobody left before all had begun to leave."""
    kinds = [k for k, _ in log]
    assert kinds.count("entered") == kinds.count("leaving") == kinds.count("left") == n
    last_arrival = max(i for i, (k, _) in enumerate(log) if k == "arrived")
    first_entered = min(i for i, (k, _) in enumerate(log) if k == "entered")
    assert first_entered > last_arrival, log
    last_leaving = max(i for i, (k, _) in enumerate(log) if k == "leaving")
    first_left = min(i for i, (k, _) in enumerate(log) if k == "left")
    assert first_left > last_leaving, log


def test_async_double_barrier_contention(server, prefix):
    """N participants, each on its own client, for two rounds of the same barrier;
    they leave at different times and none gets out before the last one leaves."""
    name, n = prefix + "db", 4

    async def main():
        async with AsyncClient(server.url) as ac:
            clients = [AsyncClient(server.url) for _ in range(n)]
            try:
                for rnd in range(2):
                    log: list[tuple[str, int]] = []

                    async def participant(i):
                        db = AsyncDoubleBarrier(clients[i], name, n, ttl=10)
                        log.append(("arrived", i))
                        assert await db.enter(timeout=20)
                        log.append(("entered", i))
                        assert db.key.startswith(f"{name}/waiters/".encode())
                        await asyncio.sleep(random.uniform(0, 0.15))   # uneven work
                        log.append(("leaving", i))
                        assert await db.leave(timeout=20)
                        log.append(("left", i))
                        assert db.key is None

                    tasks = [asyncio.ensure_future(participant(i)) for i in range(n - 1)]
                    await until(lambda: waiting(ac, name, n - 1), "the first ones waiting")
                    await asyncio.sleep(0.2)
                    assert [k for k, _ in log] == ["arrived"] * (n - 1)   # nobody in yet
                    assert (await ac.get(name + "/ready")) is None
                    tasks.append(asyncio.ensure_future(participant(n - 1)))
                    await asyncio.gather(*tasks)
                    assert_phases(log, n)
                    assert await keys_under(ac, name + "/") == [], rnd   # door closed
            finally:
                for c in clients:
                    await c.close()
    run(main())


def test_double_barrier_sync_and_async_participants(server, prefix):
    """Two async participants and two sync ones (threads) in one DoubleBarrier."""
    name, n = prefix + "db", 4
    log: list[tuple[str, int]] = []
    mu = threading.Lock()

    def note(kind, i):
        with mu:
            log.append((kind, i))

    def sync_participant(i):
        with Client(server.url) as c:
            db = DoubleBarrier(c, name, n, ttl=10)
            note("arrived", i)
            assert db.enter(timeout=20)
            note("entered", i)
            note("leaving", i)
            assert db.leave(timeout=20)
            note("left", i)

    async def async_participant(ac, i):
        db = AsyncDoubleBarrier(ac, name, n, ttl=10)
        note("arrived", i)
        assert await db.enter(timeout=20)
        note("entered", i)
        await asyncio.sleep(0.05)
        note("leaving", i)
        assert await db.leave(timeout=20)
        note("left", i)

    async def main():
        async with AsyncClient(server.url) as ac, AsyncClient(server.url) as ac2:
            tasks = [asyncio.ensure_future(async_participant(ac, 0)),
                     asyncio.ensure_future(asyncio.to_thread(sync_participant, 1)),
                     asyncio.ensure_future(async_participant(ac2, 2))]
            await until(lambda: waiting(ac, name, 3), "three participants waiting")
            assert [k for k, _ in log] == ["arrived"] * 3
            tasks.append(asyncio.ensure_future(asyncio.to_thread(sync_participant, 3)))
            await asyncio.gather(*tasks)
            assert_phases(log, n)
            assert await keys_under(ac, name + "/") == []
    run(main())


def test_async_double_barrier_limits_timeouts_and_leases(server, prefix):
    name = prefix + "db"

    async def main():
        async with AsyncClient(server.url) as ac:
            # one participant more than the count: TooManyClients, and it leaves no key
            solo = AsyncDoubleBarrier(ac, name, 1, ttl=10)
            assert await solo.enter(timeout=5)
            extra = AsyncDoubleBarrier(ac, name, 1, ttl=10)
            with pytest.raises(TooManyClients):
                await extra.enter(timeout=5)
            assert extra.key is None and await keys_under(ac, name + "/waiters/") == [solo.key]
            with pytest.raises(RuntimeError):
                await solo.enter()                          # entered already
            assert await solo.leave(timeout=5)
            assert await keys_under(ac, name + "/") == []

            # an enter that times out goes away again (its lease is revoked)
            alone = AsyncDoubleBarrier(ac, name, 2, ttl=10)
            assert await alone.enter(timeout=0.3) is False
            assert await keys_under(ac, name + "/") == []

            # on a lease of ours: the key is on it, and the lease outlives the barrier
            async with ac.lease(10) as lease:
                a = AsyncDoubleBarrier(ac, name, 2, lease=lease)
                b = AsyncDoubleBarrier(ac, name, 2, lease=lease.id)
                assert all(await asyncio.gather(a.enter(10), b.enter(10)))
                assert (await ac.get(a.key)).lease == lease.id
                assert all(await asyncio.gather(a.leave(10), b.leave(10)))
                assert lease.alive and await keys_under(ac, name + "/") == []

            # a participant that dies (its lease goes) does not keep the others waiting
            async with AsyncClient(server.url) as doomed_client:
                live = AsyncDoubleBarrier(ac, name, 2, ttl=10)
                doomed = AsyncDoubleBarrier(doomed_client, name, 2, ttl=10)
                assert all(await asyncio.gather(live.enter(10), doomed.enter(10)))
                await ac.lease_revoke(doomed._lease.id)
                assert await live.leave(timeout=10)
                assert await keys_under(ac, name + "/") == []
    run(main())


# ---- ServiceRegistry ----------------------------------------------------------------------

def test_async_service_registry(client, server, prefix):
    async def main():
        async with AsyncClient(server.url) as ac:
            reg = AsyncServiceRegistry(ac, prefix + "svc/")
            changes: list[tuple[str, str]] = []

            async def on_change(kind, inst):   # a coroutine function is awaited
                await asyncio.sleep(0)
                changes.append((kind, inst.id))

            view = reg.discover("api", on_change=on_change)
            assert isinstance(view, AsyncServiceView)
            async with view:
                assert view.instances == [] and len(view) == 0
                with pytest.raises(NoInstanceAvailable):
                    view.picker().pick()
                r1 = await reg.register("api", "i-1", "10.0.0.1:8080", {"zone": "a"}, ttl=5)
                assert isinstance(r1, AsyncRegistration) and r1.alive
                async with reg.register("api", "i-2", "10.0.0.2:8080", ttl=3) as r2:
                    # the same key and value as the sync registry (etcd's gRPC naming)
                    kv = await ac.get(prefix + "svc/api/i-1")
                    assert kv.value == encode_instance("10.0.0.1:8080", {"zone": "a"})
                    assert kv.value == b'{"Op":0,"Addr":"10.0.0.1:8080","Metadata":{"zone":"a"}}'
                    assert kv.lease == r1.lease.id
                    assert await view.wait(lambda live: ids(live) == ["i-1", "i-2"], 10)
                    assert view.get("i-1").metadata == {"zone": "a"} and "i-2" in view
                    assert ids(await reg.instances("api")) == ["i-1", "i-2"]
                    assert ids(ServiceRegistry(client, prefix + "svc/").instances("api")) \
                        == ["i-1", "i-2"]
                    rr = view.picker()
                    assert [rr.pick().id for _ in range(4)] == ["i-1", "i-2", "i-1", "i-2"]

                    await r2.update(address="10.0.0.22:8080")
                    assert await view.wait(
                        lambda live: any(i.address == "10.0.0.22:8080" for i in live), 10)

                    # its lease is lost: it registers again on a new lease
                    old = r2.lease.id
                    await ac.lease_revoke(old)
                    await until(lambda: r2.registrations == 2 and r2.alive, "registering again")
                    assert r2.lease.id != old
                    assert (await ac.get(r2.key)).lease == r2.lease.id
                    assert await view.wait(lambda live: "i-2" in ids(live), 10)

                    await r1.close()
                    assert await view.wait(lambda live: ids(live) == ["i-2"], 10)
                    assert [rr.pick().id for _ in range(2)] == ["i-2", "i-2"]
                # leaving the block deregistered i-2
                assert await view.wait(lambda live: live == [], 10)
                rev = (await ac.put(prefix + "other", "x")).revision
                assert await view.sync(10) and view.revision >= rev
                assert await reg.instances("api") == []
            assert ("added", "i-1") in changes and ("removed", "i-1") in changes
            assert ("updated", "i-2") in changes and ("removed", "i-2") in changes
            assert changes[0] == ("added", "i-1")
    run(main())


def test_async_registry_instances_come_and_go(client, server, prefix):
    """Instances on several clients register at once, then go: a revoked lease, a
    process that dies (its lease expires), a deregistration; others come. An async and
    a sync view follow; sync registrations are seen by the async view."""
    svc = prefix + "svc/"

    async def main():
        async with AsyncClient(server.url) as ac:
            reg = AsyncServiceRegistry(ac, svc)
            events: list[tuple[str, str]] = []
            clients = [AsyncClient(server.url) for _ in range(4)]
            sync_view = ServiceRegistry(client, svc).discover("api")
            try:
                async with reg.discover("api", lambda k, i: events.append((k, i.id))) as view:
                    regs = await asyncio.gather(*(
                        AsyncServiceRegistry(c, svc).register(
                            "api", f"i-{n}", f"10.0.0.{n}:80", ttl=2, reregister=False)
                        for n, c in enumerate(clients)))
                    assert await view.wait(lambda live: len(live) == 4, 10)
                    assert await asyncio.to_thread(sync_view.wait,
                                                   lambda live: len(live) == 4, 10)

                    await ac.lease_revoke(regs[0].lease.id)      # revoked: gone at once
                    await clients[1].close()                    # dies: its lease expires
                    await regs[2].close()                       # deregisters
                    sync_reg = await asyncio.to_thread(
                        ServiceRegistry(client, svc).register, "api", "s-1", "10.0.1.1:80",
                        ttl=5)
                    late = await reg.register("api", "i-9", "10.0.0.9:80", ttl=5)
                    want = ["i-3", "i-9", "s-1"]
                    assert await view.wait(lambda live: ids(live) == want, 15)
                    assert await asyncio.to_thread(
                        sync_view.wait, lambda live: ids(live) == want, 10)
                    await until(lambda: not regs[0].alive, "the revoked lease noticed")
                    assert regs[0].registrations == 1 and regs[0].lease.lost   # not again
                    for gone in ("i-0", "i-1", "i-2"):
                        assert events.count(("removed", gone)) == 1, events
                    for came in ("i-0", "i-1", "i-2", "i-3", "i-9", "s-1"):
                        assert events.count(("added", came)) == 1, events
                    await asyncio.to_thread(sync_reg.close)
                    await late.close()
                    await regs[3].close()
                    assert await view.wait(lambda live: live == [], 10)
            finally:
                await asyncio.to_thread(sync_view.close)
                for c in clients:
                    await c.close()
    run(main())


# ---- ConfigWatcher ------------------------------------------------------------------------

def test_async_config_watcher_every_change_in_order(client, server, prefix):
    """Writers on several clients change the tree at once: the watcher's on_change
    sees every change, in revision order, the same as a sync ConfigWatcher's."""
    cfg = prefix + "cfg/"

    async def main():
        async with AsyncClient(server.url) as ac:
            await ac.put(cfg + "mode", "fast")
            await ac.put(prefix + "elsewhere", "ignored")
            seen: list = []
            sync_seen: list = []
            sync_w = ConfigWatcher(client, cfg, on_change=lambda k, v: sync_seen.append((k, v)))
            try:
                async with AsyncConfigWatcher(
                        ac, cfg, on_change=lambda k, v: seen.append((k, v))) as w:
                    assert w.snapshot() == {"mode": "fast"} and w["mode"] == "fast"
                    assert "mode" in w and len(w) == 1 and list(w) == ["mode"]
                    assert w.get("missing", "default") == "default" and w.reloads == 0
                    writes: list[tuple[int, str, str | None]] = []

                    async def writer(c, i):
                        for j in range(8):
                            k = f"w{i}-{j % 3}"
                            if j % 4 == 3:
                                r = await c.delete(cfg + k)
                                if r.deleted:
                                    writes.append((r.revision, k, None))
                            else:
                                r = await c.put(cfg + k, f"{i}.{j}")
                                writes.append((r.revision, k, f"{i}.{j}"))
                    clients = [AsyncClient(server.url) for _ in range(3)]
                    try:
                        await asyncio.gather(*(writer(c, i) for i, c in enumerate(clients)))
                    finally:
                        for c in clients:
                            await c.close()
                    writes.sort()
                    expected = [(k, v) for _, k, v in writes]
                    final = {"mode": "fast"}
                    for _, k, v in writes:
                        if v is None:
                            final.pop(k, None)
                        else:
                            final[k] = v
                    assert await w.wait(lambda s: s == dict(sorted(final.items())), 10)
                    assert w.revision >= writes[-1][0]
                    assert seen == expected
                    await ac.put(prefix + "elsewhere", "still ignored")
                    assert await w.sync(10)
                    assert w.revision >= (await ac.get(prefix + "elsewhere")).mod_revision
                    assert seen == expected
                assert await asyncio.to_thread(sync_w.wait, lambda s: s == final, 10)
                assert sync_seen == expected
            finally:
                await asyncio.to_thread(sync_w.close)

            # raw bytes, the first snapshot reported too, a coroutine callback
            raw_seen: list = []

            async def on_raw(k, v):
                raw_seen.append((k, v))
            raw = await AsyncConfigWatcher(ac, cfg, on_raw, decode=False, initial=True)
            try:
                assert raw.snapshot() == {k.encode(): v.encode() for k, v in final.items()}
                assert raw_seen == sorted(raw.snapshot().items())
                await ac.put(cfg + "mode", "safe")
                assert await raw.wait(lambda s: s[b"mode"] == b"safe", 10)
                assert raw_seen[-1] == (b"mode", b"safe")
            finally:
                await raw.close()
    run(main())


def test_async_config_watcher_resumes_after_disconnects(server, prefix):
    """Through a proxy: the connection drops and comes back; the watch resumes where it
    was. Then the history is compacted while the watcher is cut off: it reads the
    prefix again and reports the difference."""
    cfg = prefix + "cfg/"

    async def main():
        proxy = TcpProxy(server.url)
        changes: list = []
        try:
            async with AsyncClient(server.url) as ac, \
                    AsyncClient(proxy.url, timeout=5) as wc:
                await ac.put(cfg + "a", "1")
                async with AsyncConfigWatcher(
                        wc, cfg, on_change=lambda k, v: changes.append((k, v))) as w:
                    assert w.snapshot() == {"a": "1"}
                    proxy.pause()
                    await ac.put(cfg + "b", "2")
                    proxy.resume()
                    assert await w.wait(lambda s: s == {"a": "1", "b": "2"}, 20)
                    assert w.reloads == 0 and changes == [("b", "2")]

                    proxy.pause()
                    await ac.put(cfg + "a", "changed")
                    await ac.delete(cfg + "b")
                    await ac.put(cfg + "c", "3")
                    await ac.compact((await ac.put(prefix + "other", "x")).revision)
                    proxy.resume()
                    assert await w.wait(lambda s: s == {"a": "changed", "c": "3"}, 20)
                    assert w.reloads == 1
                    assert sorted(changes[1:], key=str) == sorted(
                        [("a", "changed"), ("b", None), ("c", "3")], key=str)
                    await ac.put(cfg + "d", "4")              # and it goes on following
                    assert await w.wait(lambda s: s.get("d") == "4", 20)
                    assert changes[-1] == ("d", "4")
        finally:
            proxy.close()
    run(main())
