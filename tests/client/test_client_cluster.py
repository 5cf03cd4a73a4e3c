"""fastkv.client against a 3-member cluster (fastkv and etcd 3.4): leader moves,
per-member calls, and watches and leases that survive the member they use being
stopped (no event lost, none repeated)."""
from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest
from clientsupport import wait_for

from fastkv.client import AsyncClient, Client


def _leader(c: Client, urls) -> int:
    def find():
        for u in urls:
            try:
                st = c.status(endpoint=u)
            except Exception:   # noqa: BLE001 - a member may be down or electing
                continue
            if st.leader:
                return st.leader
        return 0
    return wait_for(find, "a leader")


def test_members_move_leader_and_hashes(cluster):
    urls = cluster.urls
    with Client(urls) as c:
        ms = c.members()
        assert sorted(m.name for m in ms) == ["m0", "m1", "m2"]
        by_url = {m.client_urls[0]: m for m in ms}
        assert set(by_url) == set(urls) and not any(m.is_learner for m in ms)

        leader = _leader(c, urls)
        target = next(m.id for m in ms if m.id != leader)
        c.move_leader(target)
        wait_for(lambda: all(c.status(endpoint=u).leader == target for u in urls),
                 "every member to follow the new leader")
        assert c.status(endpoint=by_url_of(ms, target)).is_leader

        rev = c.put("/cluster/hash", "x").revision
        wait_for(lambda: all(c.status(endpoint=u).header.revision >= rev for u in urls),
                 "every member to apply the put")
        hashes = {c.hash_kv(rev, endpoint=u).hash for u in urls}
        assert len(hashes) == 1, hashes


def test_calls_and_streams_spread_over_the_endpoints(cluster, prefix):
    """Round-robin (the default, as etcd clientv3 3.4): each call and each new watch
    goes to the next member; pinned: all go to the first one."""
    urls = cluster.urls
    with Client(urls) as c:
        ids = {m.client_urls[0]: m.id for m in c.members()}
        served = [c.status().header.member_id for _ in range(6)]
        assert sorted(served) == sorted(list(ids.values()) * 2)
        served = [c.put(prefix + f"rr{i}", "v").header.member_id for i in range(3)]
        assert sorted(served) == sorted(ids.values())   # writes too (forwarded by followers)
        watches = [c.watch(prefix, prefix=True) for _ in range(3)]
        try:
            wait_for(lambda: all(w.endpoint for w in watches), "the watches to start")
            assert sorted(w.endpoint for w in watches) == sorted(urls)
            rev = c.put(prefix + "seen", "x").revision
            assert all(w.get(15).revision == rev for w in watches)
        finally:
            for w in watches:
                w.close()
    with Client(urls, balance="pinned") as c:
        assert {c.status().header.member_id for _ in range(4)} == {ids[urls[0]]}
        with c.watch(prefix) as w:
            wait_for(lambda: w.endpoint, "the watch to start")
            assert w.endpoint == urls[0]


def by_url_of(members, member_id: int) -> str:
    return next(m.client_urls[0] for m in members if m.id == member_id)


def _async_watcher(urls, prefix, n, ready: threading.Event, out: list, failures: list):
    async def main():
        async with AsyncClient(urls, balance="pinned") as ac:
            async with ac.watch(prefix, prefix=True) as w:
                out.append(w.endpoint)
                ready.set()
                for _ in range(n):
                    out.append((await w.get(15)).revision)
                try:
                    await w.get(0.5)
                    out.append("unexpected event")
                except TimeoutError:
                    pass
    try:
        asyncio.run(main())
    except BaseException as e:   # noqa: BLE001 - reported by the test
        failures.append(e)
        ready.set()


def test_watch_and_lease_survive_member_stop(cluster, prefix, caplog):
    caplog.set_level(logging.DEBUG, logger="fastkv.client")
    m0 = cluster.members[0]
    others = cluster.urls[1:]
    with Client(cluster.urls, balance="pinned") as c, Client(others) as writer:
        ms = c.members()
        m0_id = next(m.id for m in ms if m.client_urls[0] == m0.url)
        if _leader(c, cluster.urls) == m0_id:   # a follower is stopped: no election wait
            c.move_leader(next(m.id for m in ms if m.id != m0_id))
            wait_for(lambda: _leader(c, cluster.urls) != m0_id, "the leader to move")

        w = c.watch(prefix, prefix=True)
        assert w.endpoint == m0.url   # pinned: the watch's stream is on the first endpoint
        lease = c.lease(3)
        c.put(prefix[:-1] + "-leased", "v", lease=lease.id)   # not watched

        ready, async_out, failures = threading.Event(), [], []
        t = threading.Thread(target=_async_watcher,
                             args=(cluster.urls, prefix, 10, ready, async_out, failures))
        t.start()
        try:
            assert ready.wait(30) and not failures, failures
            assert async_out[0] == m0.url

            expected = [writer.put(prefix + f"k{i}", str(i)).revision for i in range(5)]
            assert [w.get(30).revision for _ in range(3)] == expected[:3]
            m0.stop()
            stopped_at = time.monotonic()
            expected += [writer.put(prefix + f"k{i}", str(i)).revision for i in range(5, 10)]

            # sync watch: the 7 events not yet read, in order, once each
            assert [w.get(30).revision for _ in range(7)] == expected[3:]
            with pytest.raises(TimeoutError):
                w.get(0.5)   # nothing repeated after the resume
            assert w.next_revision == expected[-1] + 1
            resumed = [r.getMessage() for r in caplog.records if "resuming at" in r.getMessage()]
            assert any(m0.url in m for m in resumed), resumed   # it did break and resume

            t.join(60)
            assert not failures, failures
            assert async_out[1:] == expected

            # the lease's keep-alives moved to a live member and go on
            wait_for(lambda: lease.last_keepalive and lease.last_keepalive > stopped_at + 0.1,
                     "a keep-alive after the member stopped")
            assert lease.alive
            # reads and writes go to live members (m0 refuses connections)
            assert c.get(prefix[:-1] + "-leased").text == "v"
            assert c.put(prefix + "after", "x").revision > expected[-1]
            assert c.current_endpoint != m0.url and w.endpoint != m0.url
            assert w.get(30).key == (prefix + "after").encode()
            w.close()
            lease.revoke()
        finally:
            w.close()
            t.join(60)
            if m0.proc is not None and m0.proc.poll() is not None:
                m0.start()   # back for the module's other tests
