"""The asyncio recipes, which share their logic with the blocking ones: AsyncBarrier,
AsyncDoubleBarrier, AsyncServiceRegistry (AsyncRegistration, AsyncServiceView),
AsyncConfigWatcher, AsyncLock (cancelled and timed-out waiters, lost leases, on_lost),
AsyncElection and AsyncObserver, AsyncQueue and AsyncPriorityQueue, async_stm; several
tasks and clients contending, and sync and async participants meeting on the same keys. Against fastkv and etcd 3.4 (the ``server``
fixture). Every wait has a deadline; nothing here measures speed."""
from __future__ import annotations

import asyncio
import random
import threading

import pytest
from clientfakes import TcpProxy

from fastkv.client import AsyncClient, Client, errors, get_op, put_op, value
from fastkv.client.recipes import (READ_COMMITTED, REPEATABLE_READS, SERIALIZABLE,
                                   AsyncBarrier, AsyncConfigWatcher, AsyncDoubleBarrier,
                                   AsyncElection, AsyncLock, AsyncPriorityQueue, AsyncQueue,
                                   AsyncRegistration, AsyncServiceRegistry, AsyncServiceView,
                                   Barrier, ConfigWatcher, DoubleBarrier, Election, Lock,
                                   LockLost, NoInstanceAvailable, NotLeader, PriorityQueue,
                                   Queue, ServiceRegistry, STMConflict, TooManyClients,
                                   async_stm, stm)
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


# ---- AsyncLock ----------------------------------------------------------------------------

async def lease_gone(ac, lease_id) -> bool:
    return (await ac.lease_time_to_live(lease_id)).ttl == -1


async def waiting_in_line(ac, name, n, contender=None) -> bool:
    """n keys under ``name``/, and ``contender`` (a lock or an election) knows its key:
    it is waiting (cancelled before its creating transaction answered, it could not
    know the key to remove, like etcd's Mutex)."""
    if contender is not None and contender.key is None:
        return False
    return len(await keys_under(ac, name + "/")) == n


def test_async_lock_waiter_cancelled_or_timed_out_leaves_the_line(server, prefix):
    """A task cancelled while it waits for the lock (directly, or by a wait_for
    timeout) removes its key: revokes its own lease, or deletes the key from a lease
    of the caller's (which lives on). The Lock object can be used again."""
    name = prefix + "lock"

    async def main():
        async with AsyncClient(server.url) as ac:
            holder = AsyncLock(ac, name, ttl=10)
            assert await holder.acquire()

            waiter = AsyncLock(ac, name, ttl=10)
            task = asyncio.ensure_future(waiter.acquire())
            await until(lambda: waiting_in_line(ac, name, 2, waiter), "the waiter in line")
            lease_id = waiter.lease_id
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await keys_under(ac, name + "/") == [holder.key]
            assert await lease_gone(ac, lease_id)
            assert not waiter.held and waiter.key is None and waiter.lease_id == 0

            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(waiter.acquire(), 0.5)
            assert await keys_under(ac, name + "/") == [holder.key]

            async with ac.lease(10) as lease:
                mine = AsyncLock(ac, name, lease=lease)
                task = asyncio.ensure_future(mine.acquire())
                await until(lambda: waiting_in_line(ac, name, 2, mine), "the waiter in line")
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert await keys_under(ac, name + "/") == [holder.key]
                assert lease.alive and not await lease_gone(ac, lease.id)

            # the cancelled ones are out of the way: the next in line gets the lock
            task = asyncio.ensure_future(waiter.acquire(timeout=10))
            await until(lambda: waiting_in_line(ac, name, 2), "the waiter in line")
            await holder.release()
            assert await task and waiter.held and await waiter.is_held()
            await waiter.release()
            assert await keys_under(ac, name + "/") == []
    run(main())




def test_async_lock_lease_lost_and_on_lost(server, prefix):
    name = prefix + "lock"

    async def main():
        async with AsyncClient(server.url) as ac:
            # the waiter's lease goes while it waits: LockLost, and no key left behind
            holder, waiter = AsyncLock(ac, name, ttl=10), AsyncLock(ac, name, ttl=2)
            assert await holder.acquire()
            task = asyncio.ensure_future(waiter.acquire())
            await until(lambda: waiting_in_line(ac, name, 2), "the waiter in line")
            await ac.lease_revoke(waiter.lease_id)
            with pytest.raises(LockLost):
                await asyncio.wait_for(task, 15)
            assert await keys_under(ac, name + "/") == [holder.key] and not waiter.held
            await holder.release()

            # on_lost: a coroutine function or a plain one, called with the lock; one
            # that raises is only logged
            calls: list = []

            async def coro_cb(lock):
                await asyncio.sleep(0)
                calls.append(("coro", lock))

            def failing_cb(lock):
                calls.append(("plain", lock))
                raise RuntimeError("a bad callback")
            for cb, kind in ((coro_cb, "coro"), (failing_cb, "plain")):
                lk = AsyncLock(ac, name, ttl=2, on_lost=cb)
                assert await lk.acquire(timeout=10)
                await ac.lease_revoke(lk.lease_id)
                await until(lambda: calls, "on_lost")
                assert calls == [(kind, lk)] and not lk.held
                with pytest.raises(LockLost):
                    await lk.guarded_put(prefix + "data", "stale")
                await lk.release()   # a lost lock releases quietly
                calls.clear()
            assert await keys_under(ac, name + "/") == []
    run(main())


def test_async_lock_errors_and_queries(client, server, prefix):
    name = prefix + "lock"

    async def main():
        async with AsyncClient(server.url) as ac:
            lk = AsyncLock(ac, name, ttl=10)
            assert repr(lk) == f"<AsyncLock {name.encode()!r} free key=None token=None>"
            with pytest.raises(ValueError):
                await lk.acquire(blocking=False, timeout=1)
            with pytest.raises(RuntimeError):
                await lk.release()                           # not held
            with pytest.raises(RuntimeError):
                lk.txn()
            with pytest.raises(RuntimeError):
                await lk.guarded_put(prefix + "data", "x")
            assert not await lk.is_held() and await lk.owner() is None
            assert lk.lease_id == 0
            assert await lk.acquire(blocking=False)
            with pytest.raises(RuntimeError, match="already held by this AsyncLock object"):
                await lk.acquire()
            assert (await lk.owner()).key == lk.key
            kv = await ac.get(lk.key)
            assert kv.value == b"" and kv.lease == lk.lease_id and lk.token == kv.create_revision
            await lk.guarded_put(prefix + "data/a", "1")
            await lk.guarded_put(prefix + "data/b", "2")
            r = await lk.guarded_delete(prefix + "data/", prefix=True, prev_kv=True)
            assert r.deleted == 2 and sorted(kv.value for kv in r.prev_kvs) == [b"1", b"2"]
            res = await (lk.txn().if_(value(prefix + "nope") == "x")
                         .then(put_op(prefix + "data", "no")).else_(get_op(prefix + "nope"))
                         .commit())
            assert not res.succeeded and res[0].kvs == ()   # the inner else ran

            # a sync Lock and an AsyncLock of one name exclude each other
            sync_lock = Lock(client, name, ttl=10)
            assert not await asyncio.to_thread(sync_lock.acquire, False)
            await lk.release()
            assert not lk.held and await lk.owner() is None
            assert await asyncio.to_thread(sync_lock.acquire, True, 10)
            assert not await lk.acquire(timeout=0.3)
            assert (await lk.owner()).key == sync_lock.key
            await asyncio.to_thread(sync_lock.release)
            assert await lk.acquire(timeout=10)
            await lk.release()
    run(main())


# ---- AsyncElection ------------------------------------------------------------------------

def test_async_election_withdraws_on_timeout_cancel_and_lost_lease(server, prefix):
    name = prefix + "election"

    async def main():
        async with AsyncClient(server.url) as ac:
            leader = AsyncElection(ac, name, ttl=10)
            assert await leader.leader() is None
            assert await leader.campaign("one") and leader.is_leader
            assert leader.key == f"{name}/{leader._lease.id:x}".encode()
            assert repr(leader) == (f"<AsyncElection {name.encode()!r} key={leader.key!r} "
                                    "leader=True>")

            other = AsyncElection(ac, name, ttl=10)
            assert await other.campaign("two", timeout=0.3) is False   # withdrew
            assert await keys_under(ac, name + "/") == [leader.key]
            assert not other.is_leader and other.key is None

            task = asyncio.ensure_future(other.campaign("two"))
            await until(lambda: waiting_in_line(ac, name, 2, other), "the second candidate")
            lease_id = other._lease.id
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await keys_under(ac, name + "/") == [leader.key]
            assert await lease_gone(ac, lease_id)

            doomed = AsyncElection(ac, name, ttl=2)
            task = asyncio.ensure_future(doomed.campaign("three"))
            await until(lambda: waiting_in_line(ac, name, 2), "the third candidate")
            await ac.lease_revoke(doomed._lease.id)
            with pytest.raises(NotLeader):
                await asyncio.wait_for(task, 15)
            assert await keys_under(ac, name + "/") == [leader.key]

            # the leader's fencing, and its lease going behind its back
            r = await ac.txn().if_(leader.guard()).then(put_op(prefix + "w", "1")).commit()
            assert r.succeeded
            await ac.lease_revoke(leader._lease.id)
            with pytest.raises(NotLeader):
                await leader.proclaim("gone")
            assert not leader.is_leader
            with pytest.raises(NotLeader):
                leader.guard()
            await leader.resign()
            assert await leader.leader() is None
    run(main())


def test_election_candidates_on_one_lease_sync_and_async(client, server, prefix):
    """Two Elections on one lease are one candidate (etcd): the second campaign finds
    the key and proclaims its own value. A sync and an async candidate on one name
    take turns."""
    name = prefix + "election"

    async def main():
        async with AsyncClient(server.url) as ac:
            with client.lease(10) as lease:
                first = Election(client, name, lease=lease)
                assert await asyncio.to_thread(first.campaign, "one")
                second = AsyncElection(ac, name, lease=lease.id)
                assert await second.campaign("two", timeout=5)
                assert second.key == first.key and second.is_leader
                assert (await second.leader()).value == b"two"
                await second.resign()                       # deletes the key, not the lease
                assert lease.alive and await second.leader() is None

            sync_e, async_e = Election(client, name, ttl=10), AsyncElection(ac, name, ttl=10)
            assert await async_e.campaign("async")
            task = asyncio.ensure_future(asyncio.to_thread(sync_e.campaign, "sync", 10))
            await until(lambda: waiting_in_line(ac, name, 2), "the sync candidate")
            await async_e.proclaim("async-2")
            assert (await async_e.leader()).value == b"async-2"
            await async_e.resign()
            assert await task and sync_e.is_leader
            assert (await async_e.leader()).value == b"sync"
            assert not await async_e.campaign("again", timeout=0.3)
            await asyncio.to_thread(sync_e.resign)
            assert await keys_under(ac, name + "/") == []
    run(main())


def test_async_observer(client, server, prefix):
    """Started before there is a leader (``await election.observe()``): it sees the
    first leader, its proclaims, the next leader (a sync candidate) after a
    resignation; closed, it ends."""
    name = prefix + "election"

    async def main():
        async with AsyncClient(server.url) as ac:
            a = AsyncElection(ac, name, ttl=10)
            obs = await a.observe(max_buffer=4)
            with pytest.raises(TimeoutError):
                await obs.get(0.2)
            assert await a.campaign("a")
            assert (await obs.get(10)).value == b"a"
            await a.proclaim("a2")
            assert (await obs.get(10)).value == b"a2"
            b = Election(client, name, ttl=10)
            task = asyncio.ensure_future(asyncio.to_thread(b.campaign, "b", 10))
            await until(lambda: waiting_in_line(ac, name, 2), "the second candidate")
            await a.resign()
            assert await task
            kv = await obs.get(10)
            assert kv.value == b"b" and kv.key == b.key
            await asyncio.to_thread(b.resign)
            await obs.close()
            with pytest.raises(errors.ClientClosed):
                await obs.get(1)
            assert [kv async for kv in obs] == []

            # async with, async for: ends when closed from another task
            seen = []
            async with a.observe() as obs2:
                assert await a.campaign("c")

                async def follow():
                    async for kv in obs2:
                        seen.append(kv.value)
                reader = asyncio.ensure_future(follow())
                await until(lambda: seen == [b"c"], "the observer")
                await a.proclaim("d")
                await until(lambda: seen == [b"c", b"d"], "the observer")
                await obs2.close()
                await asyncio.wait_for(reader, 10)
            await a.resign()
    run(main())


# ---- AsyncQueue, AsyncPriorityQueue -------------------------------------------------------

def test_async_queues_with_sync_ones_and_several_consumers(client, server, prefix):
    name = prefix + "q"

    async def main():
        async with AsyncClient(server.url) as ac:
            q, sq = AsyncQueue(ac, name), Queue(client, name)
            assert repr(q) == f"<AsyncQueue {name.encode()!r}>"
            key = await q.enqueue("from-async")
            assert key.startswith((name + "/").encode())
            await asyncio.to_thread(sq.enqueue, "from-sync")
            assert await q.size() == 2 == len(sq)
            assert await asyncio.to_thread(sq.dequeue, 5) == b"from-async"
            assert await q.dequeue(5) == b"from-sync"
            for i in range(5):
                await q.enqueue(str(i))
            assert await q.clear() == 5 and await q.size() == 0

            # consumers on their own clients: each item exactly once
            clients = [AsyncClient(server.url) for _ in range(3)]
            got: list[bytes] = []
            try:
                async def consume(c):
                    mine = AsyncQueue(c, name)
                    while True:
                        try:
                            got.append(await mine.dequeue(timeout=1))
                        except TimeoutError:
                            return
                consumers = [asyncio.ensure_future(consume(c)) for c in clients]
                for i in range(20):
                    await q.enqueue(f"item-{i}")
                await asyncio.gather(*consumers)
            finally:
                for c in clients:
                    await c.close()
            assert sorted(got) == sorted(f"item-{i}".encode() for i in range(20))

            pq, spq = AsyncPriorityQueue(ac, prefix + "pq"), PriorityQueue(client, prefix + "pq")
            assert await pq.enqueue("mid", 5) == (prefix + "pq/00005/0000000000000000").encode()
            assert await pq.enqueue("mid-2", 5) == (prefix + "pq/00005/0000000000000001").encode()
            await asyncio.to_thread(spq.enqueue, "urgent", 0)
            with pytest.raises(ValueError):
                await pq.enqueue("x", 70000)
            assert await pq.size() == 3
            assert [await pq.dequeue(5) for _ in range(3)] == [b"urgent", b"mid", b"mid-2"]
            with pytest.raises(TimeoutError):
                await pq.dequeue(0.2)
    run(main())


# ---- async_stm ----------------------------------------------------------------------------

def test_async_stm_semantics(server, prefix):
    """test_recipes.py's test_stm_semantics, with an AsyncClient."""
    a, b = prefix + "a", prefix + "b"

    async def main():
        async with AsyncClient(server.url) as ac:
            await ac.put(a, "100")

            async def transfer(tx):
                x = int(await tx.get_text(a))
                tx.put(a, str(x - 30))
                tx.put(b, str(int(await tx.get_text(b, "0")) + 30))
                assert await tx.get(a) == str(x - 30).encode()   # reads its own writes
                assert (await tx.get_kv(a)).value == b"100"        # get_kv: as read
                assert await tx.rev(b) == 0
                return x
            assert await async_stm(ac, transfer) == 100
            assert ((await ac.get(a)).text, (await ac.get(b)).text) == ("70", "30")

            attempts = []

            async def always_conflicts(tx):
                attempts.append(await tx.rev(a))
                await tx.get(a)
                await ac.put(a, str(len(attempts)))
                tx.put(b, "never")
            with pytest.raises(STMConflict):
                await async_stm(ac, always_conflicts, max_retries=2)
            assert len(attempts) == 3 and (await ac.get(b)).text == "30"

            tries = []

            async def blind(tx):
                await tx.get(a)
                if not tries:
                    await ac.put(b, "changed meanwhile")
                tries.append(1)
                tx.put(b, "blind")
            await async_stm(ac, blind)
            assert len(tries) == 2 and (await ac.get(b)).text == "blind"

            tries.clear()

            async def rc(tx):
                await tx.get(a)
                if not tries:
                    await ac.put(a, "changed meanwhile")
                tries.append(1)
                tx.put(b, "rc")
            await async_stm(ac, rc, isolation=READ_COMMITTED)
            assert len(tries) == 1

            async def boom(tx):
                tx.put(b, "no")
                raise ValueError("abort")
            with pytest.raises(ValueError):
                await async_stm(ac, boom, isolation="serializable", prefetch=[a, b])
            assert (await ac.get(b)).text == "rc"
            with pytest.raises(TypeError):                # fn must be a coroutine function
                await async_stm(ac, lambda tx: 1)

            async def deleter(tx):
                tx.delete(b)
                assert await tx.get(b) is None
            await async_stm(ac, deleter, isolation=REPEATABLE_READS)
            assert await ac.get(b) is None
    run(main())


def test_stm_snapshot_compacted_runs_fn_again(client, server, prefix):
    """A read at the snapshot revision after it was compacted: fn runs again (on a new
    snapshot), sync and async."""
    a, b = prefix + "a", prefix + "b"
    client.put(a, "1")
    client.put(b, "2")

    def compact_once(tries):
        if len(tries) == 1:
            client.put(prefix + "x", "y")
            client.compact(client.put(prefix + "x", "z").revision)

    tries: list = []

    def fn(tx):
        va = tx.get(a)
        tries.append(1)
        compact_once(tries)
        return va, tx.get(b)
    assert stm(client, fn, isolation=SERIALIZABLE) == (b"1", b"2")
    assert len(tries) == 2

    async def main():
        async with AsyncClient(server.url) as ac:
            atries: list = []

            async def afn(tx):
                va = await tx.get(a)
                atries.append(1)
                await asyncio.to_thread(compact_once, atries)
                return va, await tx.get(b)
            assert await async_stm(ac, afn) == (b"1", b"2")
            assert len(atries) == 2
    run(main())
