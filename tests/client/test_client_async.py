"""fastkv.client.AsyncClient: the main paths, against fastkv and etcd 3.4 (each test
runs its own event loop with asyncio.run). Resuming watches after a member stops:
test_client_cluster.py."""
from __future__ import annotations

import asyncio
import inspect
import io

import pytest
from clientfakes import DroppingServer
from servers import free_port

from fastkv.client import (AsyncClient, AsyncLease, AsyncWatch, Client, Lease, RangeResult,
                           TxnResult, Watch, create_revision, errors, get_op, put_op, txn_op,
                           value)


def test_same_api_as_the_sync_client():
    def public(cls):
        return {n: getattr(cls, n) for n in dir(cls) if not n.startswith("_")}
    for sync_cls, async_cls in ((Client, AsyncClient), (Lease, AsyncLease),
                                (Watch, AsyncWatch)):
        s, a = public(sync_cls), public(async_cls)
        assert set(s) - {"get_response", "wait_lost"} <= set(a) | {"get_response"}, \
            set(s) ^ set(a)
        for name, fn in s.items():
            if callable(fn) and name in a and sync_cls is Client:
                assert inspect.signature(fn).parameters.keys() == \
                    inspect.signature(a[name]).parameters.keys(), name
    assert inspect.signature(Client.__init__) == inspect.signature(AsyncClient.__init__)


def test_kv_and_txn(server, prefix):
    async def main():
        async with AsyncClient(server.url) as c:
            r = await c.put(prefix + "a", "1")
            assert r.revision > 0
            assert (await c.get(prefix + "a")).text == "1"
            assert await c.get(prefix + "none") is None
            await c.put(prefix + "b", b"2")
            rr = await c.range(prefix, prefix=True, sort_order="descend")
            assert isinstance(rr, RangeResult) and [kv.text for kv in rr] == ["2", "1"]
            assert (await c.get(prefix + "a", revision=r.revision)).text == "1"

            res = await (c.txn().if_(value(prefix + "a") == "1")
                         .then(put_op(prefix + "a", "2"),
                               txn_op().if_(create_revision(prefix + "c") == 0)
                               .then(put_op(prefix + "c", "new"), get_op(prefix + "c")))
                         .else_(get_op(prefix + "a")).commit())
            assert isinstance(res, TxnResult) and res.succeeded
            assert res[1].succeeded and res[1][1][0].text == "new"

            with pytest.raises(errors.FutureRevision):
                await c.get(prefix + "a", revision=res.revision + 1000)
            last = (await c.put(prefix + "a", "3")).revision
            await c.compact(last)
            with pytest.raises(errors.Compacted):
                await c.get(prefix + "a", revision=r.revision)
            d = await c.delete(prefix, prefix=True, prev_kv=True)
            assert d.deleted == 3 and len(d.prev_kvs) == 3
        with pytest.raises(errors.ClientClosed):
            await c.get(prefix + "a")
    asyncio.run(main())


def test_leases(server, prefix):
    async def main():
        async with AsyncClient(server.url) as c:
            g = await c.lease_grant(30)
            assert g.id in await c.leases()
            await c.put(prefix + "g", "v", lease=g.id)
            info = await c.lease_time_to_live(g.id, keys=True)
            assert info.keys == ((prefix + "g").encode(),) and info.granted_ttl == 30
            assert await c.lease_keepalive_once(g.id) > 0
            await c.lease_revoke(g.id)
            with pytest.raises(errors.LeaseNotFound):
                await c.lease_keepalive_once(g.id)

            async with c.lease(30) as scoped:
                assert scoped.alive
                await c.put(prefix + "s", "v", lease=scoped.id)
            assert not scoped.alive and await c.get(prefix + "s") is None

            lost = []

            async def on_lost(lease):   # a coroutine callback is awaited
                lost.append(lease.id)
            lease = await c.lease(2, on_lost=on_lost)
            await c.put(prefix + "k", "v", lease=lease.id)
            loop = asyncio.get_running_loop()
            granted = loop.time()
            while not (lease.last_keepalive and lease.last_keepalive > granted + 0.1):
                assert loop.time() < granted + 15, "no keep-alive"
                await asyncio.sleep(0.05)
            assert lease.alive
            await c.lease_revoke(lease.id)   # revoked behind its back
            assert await lease.wait_lost(10)
            assert lost == [lease.id] and not lease.alive and "revoked" in lease.lost_reason
            with pytest.raises(errors.LeaseLost):
                lease.check()
            await lease.revoke()   # already gone: fine

            kept = await c.lease(30)
        # closing the client stops the keep-alive without revoking
        assert not kept.alive and not kept.lost
        with Client(server.url) as sync:
            assert sync.lease_time_to_live(kept.id).ttl > 0
            sync.lease_revoke(kept.id)
    asyncio.run(main())


def test_watch(server, prefix):
    async def main():
        async with AsyncClient(server.url) as c:
            k = prefix + "k"
            async with c.watch(k, prev_kv=True) as w:
                r1 = (await c.put(k, "1")).revision
                await c.put(k, "2")
                await c.delete(k)
                e1, e2, e3 = [await w.get(10) for _ in range(3)]
                assert (e1.value, e1.revision) == (b"1", r1)
                assert e2.prev_kv.value == b"1" and e3.is_delete
                with pytest.raises(TimeoutError):
                    await w.get(0.2)

            w = await c.watch(prefix, prefix=True)
            revs = [(await c.put(prefix + f"p{i}", str(i))).revision for i in range(4)]
            seen = []
            async for ev in w:
                seen.append(ev.revision)
                if len(seen) == 4:
                    break
            assert seen == revs
            await c.put(prefix + "elsewhere", "x")
            await w.request_progress()
            resp = await w.get_response(10)
            while not resp.is_progress_notify:   # the put above, then the progress
                resp = await w.get_response(10)
            assert resp.revision >= revs[-1] + 1

            # close() ends an iteration that waits
            async def consume():
                return [e async for e in w]
            task = asyncio.create_task(consume())
            await asyncio.sleep(0.05)
            await w.close()
            assert await asyncio.wait_for(task, 10) == []

            first = (await c.put(k, "a")).revision
            last = (await c.put(k, "b")).revision
            await c.compact(last)
            async with c.watch(k, start_revision=first) as cw:
                with pytest.raises(errors.WatchCompacted) as ei:
                    await cw.get(10)
                assert ei.value.compact_revision == last
            async with c.watch(k, start_revision=last) as ok:
                assert (await ok.get(10)).value == b"b"
    asyncio.run(main())


def test_failover_and_ambiguous_write(server, prefix):
    async def main():
        dead = f"http://127.0.0.1:{free_port()}"
        async with AsyncClient([dead, server.url]) as c:
            assert (await c.put(prefix + "k", "v")).revision > 0   # never sent to `dead`
            assert (await c.get(prefix + "k")).text == "v"
            assert c.current_endpoint == server.url
        drop = DroppingServer()
        try:
            async with AsyncClient([drop.url, server.url]) as c:
                with pytest.raises(errors.ConnectionLost):
                    await c.put(prefix + "amb", "v")
                assert drop.count("KV/Put") == 1
                assert await c.get(prefix + "amb") is None   # resent to the live one
                assert drop.count("KV/Range") <= 1
        finally:
            drop.close()
        async with AsyncClient([dead], timeout=1) as c:
            with pytest.raises(errors.ConnectionFailed):
                await c.status()
    asyncio.run(main())


def test_maintenance(server, prefix):
    async def main():
        async with AsyncClient(server.url) as c:
            st = await c.status()
            assert st.is_leader and st.version.startswith("3.4.")
            (m,) = await c.members()
            assert m.id == st.member_id
            assert await c.alarms() == () and await c.alarm_disarm() == ()
            rev = (await c.put(prefix + "k", "v")).revision
            assert (await c.hash_kv(rev)).hash == (await c.hash_kv(rev, server.url)).hash
            await c.defragment()
            buf = io.BytesIO()
            assert await c.snapshot(buf) == len(buf.getvalue()) > 0
            peer = f"http://127.0.0.1:{free_port()}"
            added = await c.member_add(peer, learner=True)
            try:
                with pytest.raises(errors.LearnerNotReady):
                    await c.member_promote(added.member.id)
            finally:
                assert len(await c.member_remove(added.member.id)) == 1
            with pytest.raises(errors.RoleNotFound):
                await c.role_get("no-such-role")
            assert "no-such-user" not in await c.user_list()
    asyncio.run(main())
