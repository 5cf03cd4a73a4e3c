"""fastkv.client.recipes in one process (threads, tasks): the lock and its fencing
token, election, queues, barriers, STM, service registry, config watcher; against
fastkv and etcd 3.4. Several processes, SIGKILL/SIGSTOP and etcdctl interop:
test_recipes_processes.py."""
from __future__ import annotations

import asyncio
import signal
import threading

import pytest
from clientfakes import TcpProxy
from clientsupport import wait_for

from fastkv.client import AsyncClient, Client, errors, get_op, put_op, value
from fastkv.client.recipes import (READ_COMMITTED, REPEATABLE_READS, SERIALIZABLE,
                                   SERIALIZABLE_SNAPSHOT, AsyncElection, AsyncLock,
                                   AsyncPriorityQueue, AsyncQueue, Barrier, ConfigWatcher,
                                   DoubleBarrier, Election, Lock, LockLost,
                                   NoInstanceAvailable, NotLeader, PriorityQueue, Queue,
                                   ServiceRegistry, STMConflict, TooManyClients, async_stm,
                                   stm)


def keys_under(client, prefix) -> list[bytes]:
    return client.range(prefix, prefix=True, sort_target="create").keys()


class Runner:
    """Threads of a test, joined (with a deadline) at the end; their exceptions are
    raised in the test."""

    def __init__(self):
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []
        self.results: dict = {}

    def start(self, name, fn, *args):
        def run():
            try:
                self.results[name] = fn(*args)
            except BaseException as e:   # noqa: BLE001 - reported by join()
                self.errors.append(e)
        t = threading.Thread(target=run, name=str(name), daemon=True)
        t.start()
        self.threads.append(t)
        return t

    def join(self, timeout=30):
        for t in self.threads:
            t.join(timeout)
            assert not t.is_alive(), f"thread {t.name} did not finish"
        if self.errors:
            raise self.errors[0]
        return self.results


# ---- Lock ---------------------------------------------------------------------------------

def test_lock_acquire_release_and_key_layout(client, prefix):
    name = prefix + "lock"
    a, b = Lock(client, name, ttl=10), Lock(client, name, ttl=10)
    assert a.acquire()
    try:
        assert a.held and a.is_held()
        # etcd's concurrency.Mutex layout: <name>/<lease id in hex>, empty value, on the lease
        assert a.key == f"{name}/{a.lease_id:x}".encode()
        kv = client.get(a.key)
        assert kv.value == b"" and kv.lease == a.lease_id
        assert a.token == kv.create_revision                 # the fencing token
        assert a.owner().key == a.key
        assert not b.acquire(blocking=False)                 # TryLock
        assert keys_under(client, name + "/") == [a.key]     # the try left no key behind
        assert not b.acquire(timeout=0.3)
        assert keys_under(client, name + "/") == [a.key]     # nor did the timeout
        with pytest.raises(RuntimeError):
            a.acquire()                                      # not re-entrant
    finally:
        a.release()
    assert not a.held and client.get(f"{name}/{kv.lease:x}") is None
    assert client.lease_time_to_live(kv.lease).ttl == -1     # our own lease was revoked
    with pytest.raises(RuntimeError):
        a.release()
    with b:
        assert b.held and b.token > kv.create_revision       # tokens only grow
    assert a.owner() is None

    # a lease of our own (an etcd Session): not revoked on release
    with client.lease(10) as lease:
        with Lock(client, name, lease=lease) as c:
            assert c.key == f"{name}/{lease.id:x}".encode()
        assert lease.alive and client.get(c.key or f"{name}/{lease.id:x}") is None


def test_lock_waiters_served_in_arrival_order(client, prefix):
    name = prefix + "lock"
    first = Lock(client, name, ttl=10)
    first.acquire()
    order: list[int] = []
    locks = [Lock(Client(client.endpoints), name, ttl=10) for _ in range(3)]
    run = Runner()

    def take(i):
        with locks[i] as lk:
            order.append(i)
            lk.guarded_put(prefix + "last", str(i))
    try:
        for i in range(3):   # each in line before the next one starts
            run.start(i, take, i)
            wait_for(lambda: len(keys_under(client, name + "/")) == i + 2, f"waiter {i} in line")
        assert order == []
        first.release()
        run.join()
        assert order == [0, 1, 2]
        assert client.get(prefix + "last").text == "2"
    finally:
        for lk in locks:
            lk._client.close()


def test_lock_fencing(client, prefix):
    name = prefix + "lock"
    lock = Lock(client, name, ttl=10)
    lock.acquire()
    r = lock.guarded_put(prefix + "data", "v1", prev_kv=True)
    assert r.revision > lock.token
    res = (lock.txn().if_(value(prefix + "data") == "v1")
           .then(put_op(prefix + "data", "v2")).else_(get_op(prefix + "data")).commit())
    assert res.succeeded
    res = (lock.txn().if_(value(prefix + "data") == "nope")
           .then(put_op(prefix + "data", "v3")).else_(get_op(prefix + "data")).commit())
    assert not res.succeeded and res[0][0].value == b"v2"   # the inner else ran
    guarded = client.txn().if_(lock.guard()).then(put_op(prefix + "own", "x")).commit()
    assert guarded.succeeded

    # the lease goes behind our back (as if we had been paused past its TTL)
    client.lease_revoke(lock.lease_id)
    with pytest.raises(LockLost):
        lock.guarded_put(prefix + "data", "stale")
    with pytest.raises(LockLost):
        lock.guarded_delete(prefix + "data")
    with pytest.raises(LockLost):
        lock.txn().then(put_op(prefix + "data", "stale")).commit()
    assert client.get(prefix + "data").text == "v2"

    # a new holder: the old token does not come back to life
    with Lock(client, name, ttl=10) as new:
        assert new.token > lock.token
        new.guarded_put(prefix + "data", "new")
        with pytest.raises(LockLost):
            lock.guarded_put(prefix + "data", "stale")
    lock.release()   # a lost lock releases quietly
    assert client.get(prefix + "data").text == "new"


def test_lock_lease_lost_while_waiting(client, prefix):
    name = prefix + "lock"
    # (a short TTL: the keep-alive, every TTL/3, is what notices the lost lease)
    holder, waiter = Lock(client, name, ttl=10), Lock(client, name, ttl=2)
    holder.acquire()
    run = Runner()
    run.start("w", waiter.acquire)
    wait_for(lambda: len(keys_under(client, name + "/")) == 2, "the waiter in line")
    client.lease_revoke(waiter.lease_id)
    with pytest.raises(LockLost):
        run.join()
    assert keys_under(client, name + "/") == [holder.key]
    holder.release()


class Interrupted(BaseException):
    """Like KeyboardInterrupt (raised by a signal handler in the main thread)."""


def test_lock_acquire_interrupted_leaves_the_line(client, prefix):
    """A blocking acquire interrupted while it waits (a signal handler raising, as
    Ctrl-C does) removes its key, on its own lease or on one of the caller's."""
    name = prefix + "lock"
    holder = Lock(client, name, ttl=10)
    holder.acquire()

    def interrupt(signum, frame):
        raise Interrupted()
    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        with client.lease(10) as lease:
            for waiter in (Lock(client, name, ttl=10), Lock(client, name, lease=lease)):
                signal.setitimer(signal.ITIMER_REAL, 0.5)
                with pytest.raises(Interrupted):
                    waiter.acquire(timeout=10)
                assert keys_under(client, name + "/") == [holder.key]
                assert waiter.key is None and not waiter.held
            assert lease.alive
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    holder.release()


def test_lock_on_lost(client, prefix):
    """on_lost(lock) runs when the lease goes while the lock is held (one that raises is
    only logged); a lost lock is not held, refuses fenced writes, releases quietly."""
    name = prefix + "lock"
    calls: list = []

    def on_lost(lock):
        calls.append(lock)
        raise RuntimeError("a bad callback")
    lock = Lock(client, name, ttl=2, on_lost=on_lost)
    assert lock.acquire(timeout=10)
    client.lease_revoke(lock.lease_id)
    wait_for(lambda: calls, "on_lost")
    assert calls == [lock] and not lock.held and not lock.is_held()
    with pytest.raises(LockLost):
        lock.guarded_put(prefix + "data", "stale")
    lock.release()
    assert keys_under(client, name + "/") == []


def test_async_lock(server, prefix):
    name = prefix + "alock"

    async def main():
        async with AsyncClient(server.url) as ac:
            inside = 0
            seen = []

            async def worker(i):
                nonlocal inside
                for _ in range(3):
                    async with AsyncLock(ac, name, ttl=10) as lk:
                        inside += 1
                        assert inside == 1
                        v = await ac.get(prefix + "n")
                        await asyncio.sleep(0.01)
                        await lk.guarded_put(prefix + "n", str(int(v.text if v else 0) + 1))
                        seen.append(lk.token)
                        inside -= 1
            await asyncio.wait_for(asyncio.gather(*(worker(i) for i in range(3))), 30)
            assert (await ac.get(prefix + "n")).text == "9"
            assert len(set(seen)) == 9

            a, b = AsyncLock(ac, name, ttl=10), AsyncLock(ac, name, ttl=10)
            assert await a.acquire()
            assert a.key == f"{name}/{a.lease_id:x}".encode()
            assert not await b.acquire(blocking=False)
            assert not await b.acquire(timeout=0.3)
            await ac.lease_revoke(a.lease_id)
            with pytest.raises(LockLost):
                await a.guarded_put(prefix + "n", "stale")
            with pytest.raises(LockLost):
                await a.txn().then(put_op(prefix + "n", "stale")).commit()
            assert await b.acquire(timeout=10)
            assert (await b.txn().then(put_op(prefix + "n", "b")).commit()).succeeded
            await b.release()
            await a.release()
    asyncio.run(main())


# ---- Election -----------------------------------------------------------------------------

def test_election(client, prefix):
    name = prefix + "election"
    e1 = Election(client, name, ttl=10)
    c2 = Client(client.endpoints)
    e2 = Election(c2, name, ttl=10)
    assert e1.leader() is None
    with pytest.raises(NotLeader):
        e1.proclaim("x")
    obs = e1.observe()
    run = Runner()
    try:
        assert e1.campaign("one")
        assert e1.is_leader
        assert e1.key == f"{name}/{e1._lease.id:x}".encode()
        leader = e1.leader()
        assert leader.key == e1.key and leader.value == b"one"
        assert obs.get(10).value == b"one"
        run.start("e2", e2.campaign, "two")
        wait_for(lambda: len(keys_under(client, name + "/")) == 2, "the second candidate")
        assert not e2.is_leader
        e1.proclaim("one-bis")
        assert obs.get(10).value == b"one-bis"
        assert e1.leader().value == b"one-bis"
        # leader's fencing: writes guarded by its key's create revision
        assert client.txn().if_(e1.guard()).then(put_op(prefix + "w", "1")).commit().succeeded
        e1.resign()
        assert not e1.is_leader
        run.join()
        assert e2.is_leader and e2.leader().value == b"two"
        assert obs.get(10).value == b"two"
        with pytest.raises(NotLeader):
            e1.proclaim("zombie")
        # a campaign that times out withdraws
        e3 = Election(client, name, ttl=10)
        assert not e3.campaign("three", timeout=0.3)
        assert len(keys_under(client, name + "/")) == 1
        # the leader's lease goes: the candidate sees it, proclaim fails
        client.lease_revoke(e2._lease.id)
        with pytest.raises(NotLeader):
            e2.proclaim("gone")
        e2.resign()
        assert e1.leader() is None
        assert e1.campaign("again")
        assert obs.get(10).value == b"again"
        e1.resign()
    finally:
        obs.close()
        c2.close()
    with pytest.raises(errors.ClientClosed):
        obs.get(1)


def test_async_election(server, prefix):
    name = prefix + "aelection"

    async def main():
        async with AsyncClient(server.url) as ac:
            e1, e2 = AsyncElection(ac, name, ttl=10), AsyncElection(ac, name, ttl=10)
            async with e1.observe() as obs:
                assert await e1.campaign("a")
                assert (await obs.get(10)).value == b"a"
                t = asyncio.ensure_future(e2.campaign("b"))
                await asyncio.sleep(0)
                for _ in range(200):
                    if len((await ac.range(name + "/", prefix=True)).kvs) == 2:
                        break
                    await asyncio.sleep(0.05)
                await e1.proclaim("a2")
                assert (await obs.get(10)).value == b"a2"
                assert not t.done()
                await e1.resign()
                assert await asyncio.wait_for(t, 10)
                assert (await e2.leader()).value == b"b"
                assert (await obs.get(10)).value == b"b"
                with pytest.raises(NotLeader):
                    await e1.proclaim("x")
                await e2.resign()
                assert await e2.leader() is None
    asyncio.run(main())


# ---- queues -------------------------------------------------------------------------------

def test_queue(client, prefix):
    q = Queue(client, prefix + "q")
    keys = [q.enqueue(str(i)) for i in range(5)]
    assert all(k.startswith((prefix + "q/").encode()) for k in keys)
    assert len(q) == 5
    assert [q.dequeue(5) for _ in range(5)] == [str(i).encode() for i in range(5)]
    with pytest.raises(TimeoutError):
        q.dequeue(timeout=0.2)
    run = Runner()
    run.start("consumer", q.dequeue, 10)         # blocks on an empty queue, with a watch
    wait_for(lambda: run.threads[0].is_alive(), "the consumer")
    q.enqueue("late")
    assert run.join()["consumer"] == b"late"
    assert len(q) == 0

    # several consumers in threads: every item exactly once
    for i in range(30):
        q.enqueue(f"item-{i}")
    got: list[bytes] = []
    lk = threading.Lock()

    def consume():
        with Client(client.endpoints) as c:
            mine = Queue(c, prefix + "q")
            while True:
                try:
                    v = mine.dequeue(timeout=1)
                except TimeoutError:
                    return
                with lk:
                    got.append(v)
    run = Runner()
    for i in range(3):
        run.start(i, consume)
    run.join()
    assert sorted(got) == sorted(f"item-{i}".encode() for i in range(30))


def test_priority_queue(client, prefix):
    pq = PriorityQueue(client, prefix + "pq")
    pq.enqueue("low-1", 10)
    pq.enqueue("urgent", 0)
    pq.enqueue("low-2", 10)
    k = pq.enqueue("mid", 5)
    # etcd's layout: <name>/<priority %05d>/<sequence %016d>
    assert k == (prefix + "pq/00005/0000000000000000").encode()
    assert [pq.dequeue(5) for _ in range(4)] == [b"urgent", b"mid", b"low-1", b"low-2"]
    with pytest.raises(ValueError):
        pq.enqueue("x", 70000)
    with pytest.raises(TimeoutError):
        pq.dequeue(0.2)


def test_async_queues(server, prefix):
    async def main():
        async with AsyncClient(server.url) as ac:
            q = AsyncQueue(ac, prefix + "aq")
            waiter = asyncio.ensure_future(q.dequeue(10))
            await asyncio.sleep(0.2)
            await q.enqueue("a")
            await q.enqueue("b")
            assert await waiter == b"a"
            assert await q.dequeue(5) == b"b"
            assert await q.size() == 0
            with pytest.raises(TimeoutError):
                await q.dequeue(0.2)
            pq = AsyncPriorityQueue(ac, prefix + "apq")
            await pq.enqueue("later", 3)
            await pq.enqueue("first", 1)
            assert [await pq.dequeue(5), await pq.dequeue(5)] == [b"first", b"later"]
    asyncio.run(main())


# ---- barriers -----------------------------------------------------------------------------

def test_barrier(client, prefix):
    b = Barrier(client, prefix + "gate")
    assert b.wait(0) is True                      # not held: passes at once
    assert b.hold() and not b.hold() and b.is_held()
    assert b.wait(timeout=0.2) is False
    passed = []
    run = Runner()
    for i in range(3):
        run.start(i, lambda i=i: passed.append(Barrier(client, prefix + "gate").wait(20)))
    wait_for(lambda: all(t.is_alive() for t in run.threads), "the waiters")
    assert passed == []
    b.release()
    run.join()
    assert passed == [True, True, True] and not b.is_held()


def test_double_barrier(client, prefix):
    name = prefix + "db"
    n = 3
    log: list[str] = []
    lk = threading.Lock()

    def participant(i):
        with Client(client.endpoints) as c:
            db = DoubleBarrier(c, name, n, ttl=10)
            assert db.enter(timeout=20)
            with lk:
                log.append("entered")
            assert db.leave(timeout=20)
            with lk:
                log.append("left")

    run = Runner()
    for i in range(n - 1):
        run.start(i, participant, i)
    wait_for(lambda: client.range(name + "/waiters/", prefix=True, count_only=True).count
             == n - 1, "two participants waiting")
    assert log == []                                   # nobody enters before the third
    run.start(n - 1, participant, n - 1)
    run.join()
    assert log == ["entered"] * n + ["left"] * n       # all in before anyone out
    assert keys_under(client, name + "/") == []

    # one participant more than the count
    solo = DoubleBarrier(client, name, 1, ttl=10)
    assert solo.enter(timeout=5)
    with pytest.raises(TooManyClients):
        DoubleBarrier(client, name, 1, ttl=10).enter(timeout=5)
    assert solo.leave(timeout=5)
    assert keys_under(client, name + "/") == []


# ---- STM ----------------------------------------------------------------------------------

@pytest.mark.parametrize("isolation", [SERIALIZABLE_SNAPSHOT, SERIALIZABLE, REPEATABLE_READS])
def test_stm_concurrent_increments(server, prefix, isolation):
    counter, total = prefix + "counter", prefix + "total"

    def incr(tx):
        tx.put(counter, str(int(tx.get_text(counter, "0")) + 1))
        tx.put(total, str(int(tx.get_text(total, "0")) + 1))

    def worker():
        with Client(server.url) as c:
            for _ in range(6):
                stm(c, incr, isolation=isolation)
    run = Runner()
    for i in range(4):
        run.start(i, worker)
    run.join(60)
    with Client(server.url) as c:
        assert c.get(counter).text == "24" and c.get(total).text == "24"


def test_stm_semantics(client, prefix):
    a, b = prefix + "a", prefix + "b"
    client.put(a, "100")

    def transfer(tx):
        x = int(tx.get_text(a))
        tx.put(a, str(x - 30))
        tx.put(b, str(int(tx.get_text(b, "0")) + 30))
        assert tx.get(a) == str(x - 30).encode()    # a transaction reads its own writes
        return x
    assert stm(client, transfer) == 100
    assert (client.get(a).text, client.get(b).text) == ("70", "30")

    # a conflict on every attempt: fn changes what it read behind the STM's back
    attempts = []

    def always_conflicts(tx):
        attempts.append(tx.rev(a))
        tx.get(a)
        client.put(a, str(len(attempts)))
        tx.put(b, "never")
    with pytest.raises(STMConflict):
        stm(client, always_conflicts, max_retries=2)
    assert len(attempts) == 3 and client.get(b).text == "30"

    # serializable snapshot: a blind write to a key changed after the snapshot conflicts
    tries = []

    def blind(tx):
        tx.get(a)
        if not tries:
            client.put(b, "changed meanwhile")
        tries.append(1)
        tx.put(b, "blind")
    stm(client, blind)
    assert len(tries) == 2 and client.get(b).text == "blind"

    # read committed: no conflict check at all
    tries.clear()

    def rc(tx):
        tx.get(a)
        if not tries:
            client.put(a, "changed meanwhile")
        tries.append(1)
        tx.put(b, "rc")
    stm(client, rc, isolation=READ_COMMITTED)
    assert len(tries) == 1

    # an exception in fn aborts: nothing written
    def boom(tx):
        tx.put(b, "no")
        raise ValueError("abort")
    with pytest.raises(ValueError):
        stm(client, boom, isolation="serializable", prefetch=[a, b])
    assert client.get(b).text == "rc"

    def deleter(tx):
        tx.delete(b)
        assert tx.get(b) is None
    stm(client, deleter)
    assert client.get(b) is None


def test_async_stm(server, prefix):
    k = prefix + "n"

    async def main():
        async with AsyncClient(server.url) as ac:
            async def incr(tx):
                v = int(await tx.get_text(k, "0"))
                tx.put(k, str(v + 1))
                return v
            await asyncio.gather(*(async_stm(ac, incr) for _ in range(10)))
            assert (await ac.get(k)).text == "10"
    asyncio.run(main())


# ---- service registry ---------------------------------------------------------------------

def test_service_registry(client, prefix):
    reg = ServiceRegistry(client, prefix + "svc/")
    changes: list[tuple[str, str]] = []
    view = reg.discover("api", on_change=lambda kind, inst: changes.append((kind, inst.id)))
    try:
        assert view.instances == [] and len(view) == 0
        with pytest.raises(NoInstanceAvailable):
            view.picker().pick()
        r1 = reg.register("api", "i-1", "10.0.0.1:8080", {"zone": "a"}, ttl=5)
        r2 = reg.register("api", "i-2", "10.0.0.2:8080", ttl=5)
        # etcd's gRPC naming layout and value
        kv = client.get(prefix + "svc/api/i-1")
        assert kv.value == b'{"Op":0,"Addr":"10.0.0.1:8080","Metadata":{"zone":"a"}}'
        assert kv.lease == r1.lease.id
        assert view.wait(lambda live: [i.id for i in live] == ["i-1", "i-2"], 10)
        assert view.get("i-1").metadata == {"zone": "a"} and "i-2" in view
        assert [i.id for i in reg.instances("api")] == ["i-1", "i-2"]
        rr = view.picker()
        assert [rr.pick().id for _ in range(4)] == ["i-1", "i-2", "i-1", "i-2"]

        r2.update(address="10.0.0.22:8080")
        assert view.wait(lambda live: any(i.address == "10.0.0.22:8080" for i in live), 10)

        # its lease is lost: it registers again on a new lease
        old = r2.lease.id
        client.lease_revoke(old)
        assert wait_for(lambda: r2.registrations == 2 and r2.alive, "registering again")
        assert r2.lease.id != old
        assert view.wait(lambda live: "i-2" in [i.id for i in live], 10)

        r1.close()
        assert view.wait(lambda live: [i.id for i in live] == ["i-2"], 10)
        assert [rr.pick().id for _ in range(2)] == ["i-2", "i-2"]
        # a key written by etcdctl the way etcd's docs show is an instance too
        client.put(prefix + "svc/api/1.2.3.4", '{"Addr":"1.2.3.4","Metadata":"..."}')
        assert view.wait(lambda live: len(live) == 2, 10)
        assert view.get("1.2.3.4").address == "1.2.3.4"
        r2.close()
        client.delete(prefix + "svc/api/1.2.3.4")
        assert view.wait(lambda live: live == [], 10)
        assert view.sync(10)
        assert ("added", "i-1") in changes and ("removed", "i-1") in changes
        assert ("updated", "i-2") in changes and ("removed", "i-2") in changes
    finally:
        view.close()


# ---- config watcher -----------------------------------------------------------------------

def test_config_watcher(client, server, prefix):
    cfg = prefix + "cfg/"
    client.put(cfg + "mode", "fast")
    client.put(cfg + "limit", "10")
    client.put(prefix + "elsewhere", "ignored")
    changes: list = []
    with ConfigWatcher(client, cfg, on_change=lambda k, v: changes.append((k, v))) as w:
        assert w.snapshot() == {"limit": "10", "mode": "fast"}      # loaded once, at start
        assert w["mode"] == "fast" and "limit" in w and len(w) == 2
        assert changes == []
        client.put(cfg + "mode", "safe")
        client.delete(cfg + "limit")
        rev = client.put(cfg + "new", "1").revision
        assert w.wait(lambda s: s == {"mode": "safe", "new": "1"}, 10)
        assert w.revision >= rev
        assert changes == [("mode", "safe"), ("limit", None), ("new", "1")]
        client.put(prefix + "elsewhere", "still ignored")
        assert w.sync(10) and w.revision >= client.get(prefix + "elsewhere").mod_revision
        assert w.get("missing", "default") == "default"
    with ConfigWatcher(client, cfg, decode=False, initial=True,
                       on_change=lambda k, v: changes.append((k, v))) as raw:
        assert raw.snapshot() == {b"mode": b"safe", b"new": b"1"}
        assert changes[-2:] == [(b"mode", b"safe"), (b"new", b"1")]


def test_config_watcher_resumes_after_disconnects(client, server, prefix):
    """Through a proxy: the connection drops and comes back; the client's watch resumes
    where it was. Then the history is compacted while the watcher is cut off: it reads
    the prefix again and reports the difference."""
    cfg = prefix + "cfg/"
    client.put(cfg + "a", "1")
    proxy = TcpProxy(server.url)
    changes: list = []
    try:
        with Client(proxy.url, timeout=5) as wc, \
                ConfigWatcher(wc, cfg, on_change=lambda k, v: changes.append((k, v))) as w:
            assert w.snapshot() == {"a": "1"}
            proxy.pause()
            client.put(cfg + "b", "2")
            proxy.resume()
            assert w.wait(lambda s: s == {"a": "1", "b": "2"}, 20)
            assert w.reloads == 0 and changes == [("b", "2")]

            proxy.pause()
            client.put(cfg + "a", "changed")
            client.delete(cfg + "b")
            client.put(cfg + "c", "3")
            client.compact(client.put(prefix + "other", "x").revision)
            proxy.resume()
            assert w.wait(lambda s: s == {"a": "changed", "c": "3"}, 20)
            assert w.reloads == 1
            assert sorted(changes[1:], key=str) == sorted(
                [("a", "changed"), ("b", None), ("c", "3")], key=str)
    finally:
        proxy.close()
