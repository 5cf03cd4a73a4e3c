"""The ``aetcd`` client (PyPI aetcd 1.0: gRPC on asyncio) against fastkv and etcd 3.4.

Each test starts a fresh member, fastkv or Debian's etcd 3.4 (to show the expectations
are etcd's), and runs one scenario below with aetcd in a child interpreter:
``python tests/compat/test_aetcd_client.py SCENARIO SERVER_JSON`` (tests/servers.py,
``run_scenario_child``). The test passes when the child exits 0; otherwise it shows the
child's traceback and the failing frame's locals.

aetcd's generated modules are recent enough for the installed protobuf (upb backend, no
environment variable needed), so importing aetcd here would work on its own. It runs in a
child all the same because aetcd, etcd3 and fastkv.proto register the same etcdserverpb.*
and mvccpb.* names in protobuf's default descriptor pool, and the second one imported into
a process fails ("duplicate symbol 'mvccpb.KeyValue'"): in one pytest session with
tests/unit (which import fastkv.proto), aetcd would either fail to import or break them.

aetcd has no client for etcd's v3lock service: its ``Lock`` is client-side like etcd3's
(a txn creating the key with a lease), but waits for the holder's DELETE event, watching
from the holder's mod revision + 1. aetcd maps FailedPrecondition ("lease already exists":
``DuplicateLeaseError``), InvalidArgument, Unauthenticated, Internal, Unavailable and
DeadlineExceeded to its exceptions; any other etcd error becomes a plain ``ClientError``
with etcd's message, caused by the ``grpc.aio.AioRpcError`` (checked for its code too).
aetcd has no call for a range at a revision or for the lease list: those go through its
own stubs (``c.kvstub``, ``c.leasestub``).
"""
from __future__ import annotations

import asyncio
import hashlib
import io
import os
import sys
import tempfile
import time

import pytest

# tests/ on the path for servers.py: conftest does it under pytest, this line in the child
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from servers import Scenarios, run_scenario_child, scenario_child_main, serve  # noqa: E402

scenario = Scenarios()


# ---- helpers (child) -------------------------------------------------------------------

async def take(watch, n: int, timeout: float = 5.0) -> list:
    """The next n events of an aetcd Watch, or AssertionError after `timeout` seconds."""
    out = []

    async def pull():
        async for event in watch:
            out.append(event)
            if len(out) == n:
                return

    try:
        await asyncio.wait_for(pull(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"{len(out)} of {n} events in {timeout}s: {out}") from None
    return out


def grpc_error(excinfo) -> tuple:
    """(gRPC code, message) behind an aetcd ClientError."""
    cause = excinfo.value.__cause__
    return cause.code(), cause.details()


def keys_of(result) -> list[bytes]:
    return [kv.key for kv in result]


def event_tuples(events) -> list[tuple]:
    return [(e.kind, e.kv.key, e.kv.value, e.kv.mod_revision) for e in events]


# ---- scenarios (child) -----------------------------------------------------------------

@scenario
async def kv_put_get_delete(c, srv):
    r1 = (await c.put(b"/kv/a", b"1")).header.revision
    got = await c.get(b"/kv/a")
    assert (got.key, got.value, got.version, got.create_revision, got.mod_revision, got.lease) == \
        (b"/kv/a", b"1", 1, r1, r1, 0)
    assert got.header.revision == r1 and got.header.member_id != 0
    put = await c.put(b"/kv/a", b"2", prev_kv=True)
    r2 = put.header.revision
    assert r2 == r1 + 1
    assert (put.prev_kv.key, put.prev_kv.value, put.prev_kv.version, put.prev_kv.mod_revision) == \
        (b"/kv/a", b"1", 1, r1)
    got = await c.get(b"/kv/a")
    assert (got.value, got.version, got.create_revision, got.mod_revision) == (b"2", 2, r1, r2)
    # nothing before: an empty prev_kv (aetcd wraps the unset message all the same)
    assert (await c.put(b"/kv/b", b"x", prev_kv=True)).prev_kv.key == b""
    assert await c.get(b"/kv/missing") is None
    await c.put(b"/kv/\x00\xff", b"\x00\x01\xfe")   # binary-safe keys and values
    assert (await c.get(b"/kv/\x00\xff")).value == b"\x00\x01\xfe"
    assert await c.replace(b"/kv/a", b"2", b"4") is True
    assert await c.replace(b"/kv/a", b"2", b"5") is False
    assert (await c.get(b"/kv/a")).value == b"4"
    deleted = await c.delete(b"/kv/a", prev_kv=True)
    assert deleted.deleted == 1 and (deleted.prev_kv.key, deleted.prev_kv.value) == (b"/kv/a", b"4")
    assert await c.delete(b"/kv/a") is None
    # deleting nothing makes no revision; a new incarnation starts at version 1
    rev = (await c.get(b"/kv/b")).header.revision
    assert rev == deleted.header.revision
    r3 = (await c.put(b"/kv/a", b"again")).header.revision
    assert r3 == rev + 1
    got = await c.get(b"/kv/a")
    assert (got.version, got.create_revision, got.mod_revision) == (1, r3, r3)


@scenario
async def prefix_range_and_sort(c, srv):
    # key order a<b<c; value order c<b<a; create order b<a<c; mod order b<c<a
    for key, value in ((b"/p/b", b"3"), (b"/p/a", b"2"), (b"/p/c", b"1"), (b"/p/a", b"9"),
                       (b"/p0", b"just past the prefix"), (b"/o", b"before it")):
        await c.put(key, value)
    a, b, cc = b"/p/a", b"/p/b", b"/p/c"
    got = await c.get_prefix(b"/p/")
    assert keys_of(got) == [a, b, cc] and got.count == 3 and got.more is False
    assert [kv.value for kv in got] == [b"9", b"3", b"1"]
    assert got[0].version == 2
    assert keys_of(await c.get_prefix(b"/p/", sort_order="descend")) == [cc, b, a]
    assert keys_of(await c.get_prefix(b"/p/", sort_order="ascend", sort_target="value")) == [cc, b, a]
    assert keys_of(await c.get_prefix(b"/p/", sort_order="ascend", sort_target="create")) == [b, a, cc]
    assert keys_of(await c.get_prefix(b"/p/", sort_order="descend", sort_target="mod")) == [a, cc, b]
    assert keys_of(await c.get_prefix(b"/p/", sort_order="descend", sort_target="version"))[0] == a
    # etcd: a sort target other than KEY without an order sorts ascending
    assert keys_of(await c.get_prefix(b"/p/", sort_target="value")) == [cc, b, a]
    assert [kv.value for kv in await c.get_prefix(b"/p/", keys_only=True)] == [b"", b"", b""]
    assert keys_of(await c.get_range(b"/p/a", b"/p/c")) == [a, b]   # [start, end)
    assert keys_of(await c.get_range(b"/p/", b"/p0", sort_order="descend")) == [cc, b, a]
    assert keys_of(await c.get_all()) == [b"/o", a, b, cc, b"/p0"]
    deleted = await c.delete_prefix(b"/p/", prev_kv=True)
    assert deleted.deleted == 3 and sorted(keys_of(deleted)) == [a, b, cc]
    assert not await c.get_prefix(b"/p/")
    assert (await c.delete_prefix(b"/p/")).deleted == 0
    deleted = await c.delete_range(b"/o", b"/p")
    assert deleted.deleted == 1
    assert keys_of(await c.get_all()) == [b"/p0"]


@scenario
async def transactions(c, srv):
    t = c.transactions
    r = (await c.put(b"/t/a", b"1")).header.revision
    await c.put(b"/t/b", b"2")
    ok, responses = await c.transaction(
        compare=[t.value(b"/t/a") == b"1", t.version(b"/t/a") == 1, t.create(b"/t/a") == r,
                 t.mod(b"/t/a") == r, t.version(b"/t/b") > 0, t.mod(b"/t/b") < r + 5,
                 t.value(b"/t/b") != b"x", t.create(b"/t/none") == 0, t.version(b"/t/none") == 0],
        success=[t.put(b"/t/c", b"3"), t.get(b"/t/c"), t.delete(b"/t/b", prev_kv=True)],
        failure=[t.put(b"/t/failed", b"1")])
    assert ok is True
    put, got, deleted = responses
    txn_rev = r + 2   # one revision for the whole txn; aetcd's lock reads the put's own header
    assert (put.response_put.header.revision,
            [(v, kv.key, kv.mod_revision) for v, kv in got],   # the txn sees its own put
            deleted.response_delete_range.deleted,
            [kv.value for kv in deleted.response_delete_range.prev_kvs]) == \
        (txn_rev, [(b"3", b"/t/c", txn_rev)], 1, [b"2"])
    assert await c.get(b"/t/b") is None and await c.get(b"/t/failed") is None
    assert (await c.get(b"/t/c")).mod_revision == txn_rev

    ok, responses = await c.transaction(compare=[t.value(b"/t/a") == b"nope"],
                                        success=[t.put(b"/t/ok", b"1")],
                                        failure=[t.put(b"/t/failed", b"1"), t.get(b"/t/a")])
    assert ok is False
    assert [v for v, _ in responses[1]] == [b"1"]
    assert (await c.get(b"/t/failed")).value == b"1" and await c.get(b"/t/ok") is None
    # etcd: a value compare on a missing key is false whatever the operator
    for cmp in (t.value(b"/t/none") == b"", t.value(b"/t/none") != b"x"):
        assert (await c.transaction(compare=[cmp], success=[], failure=[]))[0] is False
    ok, [inner] = await c.transaction(
        compare=[t.version(b"/t/a") > 0], failure=[],
        success=[t.txn(compare=[t.value(b"/t/c") == b"3"],
                       success=[t.put(b"/t/nested", b"yes")], failure=[])])
    assert ok is True and inner.response_txn.succeeded is True
    assert (await c.get(b"/t/nested")).value == b"yes"
    with pytest.raises(aetcd.InvalidArgumentError, match="duplicate key given in txn request"):
        await c.transaction(compare=[], success=[t.put(b"/t/d", b"1"), t.put(b"/t/d", b"2")],
                            failure=[])


@scenario
async def watch_key_and_prefix(c, srv):
    key_watch = await c.watch(b"/w/k")
    prefix_watch = await c.watch_prefix(b"/w/", prev_kv=True)
    r1 = (await c.put(b"/w/k", b"1")).header.revision
    await c.put(b"/w/other", b"x")
    await c.put(b"/w/k", b"2")
    await c.delete(b"/w/k")
    await c.put(b"/wz", b"outside the prefix")
    await c.put(b"/w/last", b"end")
    assert event_tuples(await take(key_watch, 3)) == [
        ("PUT", b"/w/k", b"1", r1), ("PUT", b"/w/k", b"2", r1 + 2), ("DELETE", b"/w/k", b"", r1 + 3)]
    got = await take(prefix_watch, 5)
    assert event_tuples(got) == [
        ("PUT", b"/w/k", b"1", r1), ("PUT", b"/w/other", b"x", r1 + 1),
        ("PUT", b"/w/k", b"2", r1 + 2), ("DELETE", b"/w/k", b"", r1 + 3),
        ("PUT", b"/w/last", b"end", r1 + 5)]
    assert [e.prev_kv.value for e in got] == [b"", b"", b"1", b"2", b""]
    assert (got[2].kv.version, got[2].kv.create_revision) == (2, r1)
    await key_watch.cancel()
    await prefix_watch.cancel()
    await c.put(b"/w/k", b"after cancel")
    assert [e async for e in key_watch] == [] and [e async for e in prefix_watch] == []
    # the stream keeps serving new watches after cancels; filters by kind
    deletes = await c.watch(b"/w/k", kind=aetcd.EventKind.DELETE)
    await c.put(b"/w/k", b"ignored")
    r = (await c.delete(b"/w/k")).header.revision
    assert event_tuples(await take(deletes, 1)) == [("DELETE", b"/w/k", b"", r)]
    await deletes.cancel()
    with pytest.raises(aetcd.WatchTimeoutError):
        await c.watch_once(b"/w/quiet", timeout=0.5)
    task = asyncio.ensure_future(c.watch_prefix_once(b"/w/", timeout=5))
    await asyncio.sleep(0.2)
    await c.put(b"/w/once", b"1")
    event = await task
    assert (event.kind, event.kv.key) == ("PUT", b"/w/once")


@scenario
async def watch_from_past_revision(c, srv):
    r1 = (await c.put(b"/h/k", b"1")).header.revision
    await c.put(b"/h/k", b"2")
    await c.delete(b"/h/k")
    await c.put(b"/h/other", b"x")
    watch = await c.watch(b"/h/k", start_revision=r1)
    assert event_tuples(await take(watch, 3)) == [
        ("PUT", b"/h/k", b"1", r1), ("PUT", b"/h/k", b"2", r1 + 1), ("DELETE", b"/h/k", b"", r1 + 2)]
    r5 = (await c.put(b"/h/k", b"3")).header.revision   # live events follow the history
    assert event_tuples(await take(watch, 1)) == [("PUT", b"/h/k", b"3", r5)]
    await watch.cancel()
    watch = await c.watch_prefix(b"/h/", start_revision=r1 + 1)
    assert [(e.kv.key, e.kv.value) for e in await take(watch, 4)] == [
        (b"/h/k", b"2"), (b"/h/k", b""), (b"/h/other", b"x"), (b"/h/k", b"3")]
    await watch.cancel()


@scenario
async def leases(c, srv):
    lease = await c.lease(30)
    assert lease.id > 0 and lease.ttl == 30
    await c.put(b"/l/a", b"1", lease=lease)
    await c.put(b"/l/b", b"2", lease=lease.id)
    await c.put(b"/l/free", b"3")
    assert (await c.get(b"/l/a")).lease == lease.id
    info = await c.get_lease_info(lease.id)
    assert (info.ID, info.grantedTTL) == (lease.id, 30) and 0 < info.TTL <= 30
    assert sorted(info.keys) == [b"/l/a", b"/l/b"]
    assert list((await c.get_lease_info(lease.id, keys=False)).keys) == []
    assert await lease.granted_ttl() == 30 and 0 < await lease.remaining_ttl() <= 30
    assert sorted(await lease.keys()) == [b"/l/a", b"/l/b"]
    alive = await lease.refresh()
    assert (alive.ID, alive.TTL) == (lease.id, 30)
    listed = (await c.leasestub.LeaseLeases(aetcd.rpc.LeaseLeasesRequest(), timeout=5)).leases
    assert lease.id in [s.ID for s in listed]
    mine = await c.lease(60, lease_id=0x7E57)
    assert (mine.id, mine.ttl) == (0x7E57, 60)
    with pytest.raises(aetcd.DuplicateLeaseError):
        await c.lease(60, lease_id=0x7E57)
    assert (await c.lease(1)).ttl == 2   # etcd's minimum TTL: 1.5 election timeouts, rounded up
    await lease.revoke()
    assert await c.get(b"/l/a") is None and await c.get(b"/l/b") is None
    assert (await c.get(b"/l/free")).value == b"3"
    gone = await c.get_lease_info(lease.id)
    assert (gone.ID, gone.TTL, list(gone.keys)) == (lease.id, -1, [])
    listed = (await c.leasestub.LeaseLeases(aetcd.rpc.LeaseLeasesRequest(), timeout=5)).leases
    assert lease.id not in [s.ID for s in listed] and 0x7E57 in [s.ID for s in listed]
    dead = await c.refresh_lease(lease.id)   # etcd answers a keepalive of an unknown lease with TTL 0
    assert (dead.ID, dead.TTL) == (lease.id, 0)
    await mine.revoke()


@scenario
async def lock(c, srv):
    first = c.lock(b"/locks/res", ttl=10)
    assert await first.acquire(timeout=2) is True
    assert await first.is_acquired()
    held = await c.get(b"/locks/res")
    assert held.value == first.uuid and held.lease == first.lease.id
    second = c.lock(b"/locks/res", ttl=10)
    started = time.monotonic()
    assert await second.acquire(timeout=1) is False
    assert time.monotonic() - started >= 0.9
    assert second.revision == held.mod_revision   # it watches for the DELETE after this
    contender = asyncio.ensure_future(second.acquire(timeout=10))
    await asyncio.sleep(0.5)
    assert not contender.done()   # still waiting
    assert await first.release() is True
    assert await asyncio.wait_for(contender, 10) is True
    assert await second.is_acquired() and not await first.is_acquired()
    assert await first.release() is False   # no longer the holder
    assert (await second.refresh()).TTL == 10
    assert await second.release() is True
    async with c.lock(b"/locks/other", ttl=5) as other:
        assert await other.is_acquired()
    assert await c.get(b"/locks/other") is None


@scenario
async def members_and_status(c, srv):
    [m] = [m async for m in c.members()]
    assert m.id != 0 and m.name == srv.name
    assert list(m.peer_urls) == [srv.peer_url] and list(m.client_urls) == [srv.url]
    st = await c.status()
    assert st.version.startswith("3.4."), st.version
    assert st.leader is not None and st.leader.id == m.id
    assert st.raft_term >= 1 and st.raft_index >= 1 and st.db_size > 0
    header = (await c.put(b"/st/k", b"v")).header
    assert header.member_id == m.id and header.cluster_id != 0 and header.raft_term == st.raft_term
    assert (await c.status()).raft_index > st.raft_index
    await c.defragment()


@scenario
async def alarms(c, srv):
    assert [a async for a in c.list_alarms()] == []
    [m] = [m async for m in c.members()]
    raised = await c.create_alarm(member_id=m.id)
    nospace = [(aetcd.rpc.NOSPACE, m.id)]
    assert [(a.alarm_type, a.member_id) for a in raised] == nospace
    assert [(a.alarm_type, a.member_id) async for a in c.list_alarms()] == nospace
    try:
        with pytest.raises(aetcd.ClientError) as e:
            await c.put(b"/alarm/k", b"v")
        assert grpc_error(e) == (aetcd.rpc.StatusCode.RESOURCE_EXHAUSTED,
                                 "etcdserver: mvcc: database space exceeded")
        assert await c.get(b"/alarm/k") is None   # reads go on
    finally:
        disarmed = await c.disarm_alarm(member_id=m.id)
    assert [(a.alarm_type, a.member_id) for a in disarmed] == nospace
    assert [a async for a in c.list_alarms()] == []
    await c.put(b"/alarm/k", b"v")
    assert await c.disarm_alarm(member_id=m.id) == []


@scenario
async def hash_of_state(c, srv):
    await c.put(b"/hash/a", b"1")
    first = await c.hash()
    assert isinstance(first, int) and await c.hash() == first
    await c.put(b"/hash/b", b"2")
    assert await c.hash() != first


@scenario
async def snapshot(c, srv):
    await c.put(b"/snap/k", b"v" * 1000)
    buf = io.BytesIO()
    await c.snapshot(buf)
    data = buf.getvalue()
    assert len(data) > 32
    assert hashlib.sha256(data[:-32]).digest() == data[-32:]   # etcd appends the SHA-256
    assert (len(data) - 32) % 512 == 0   # what etcdctl snapshot save checks to find it
    with tempfile.TemporaryFile() as f:
        await c.snapshot(f)
        f.seek(0)
        data = f.read()
    assert hashlib.sha256(data[:-32]).digest() == data[-32:]


@scenario
async def compaction(c, srv):
    r1 = (await c.put(b"/c/k", b"1")).header.revision
    r2 = (await c.put(b"/c/k", b"2")).header.revision
    r3 = (await c.put(b"/c/k", b"3")).header.revision

    async def range_at(rev):
        resp = await c.kvstub.Range(aetcd.rpc.RangeRequest(key=b"/c/k", revision=rev), timeout=5)
        return [kv.value for kv in resp.kvs]

    assert await range_at(r1) == [b"1"]
    await c.compact(r2)
    assert await range_at(r2) == [b"2"] and await range_at(r3) == [b"3"]
    out_of_range = aetcd.rpc.StatusCode.OUT_OF_RANGE
    compacted = "etcdserver: mvcc: required revision has been compacted"
    future = "etcdserver: mvcc: required revision is a future revision"
    with pytest.raises(aetcd.rpc.AioRpcError) as e:
        await range_at(r1)
    assert (e.value.code(), e.value.details()) == (out_of_range, compacted)
    for rev in (r1, r2):
        with pytest.raises(aetcd.ClientError) as e:
            await c.compact(rev)
        assert grpc_error(e) == (out_of_range, compacted)
    with pytest.raises(aetcd.ClientError) as e:
        await c.compact(r3 + 100)
    assert grpc_error(e) == (out_of_range, future)
    watch = await c.watch(b"/c/k", start_revision=r1)
    with pytest.raises(aetcd.RevisionCompactedError) as e:
        await take(watch, 1)
    assert e.value.compacted_revision == r2
    watch = await c.watch(b"/c/k", start_revision=r2)   # the compaction revision itself is kept
    assert [ev.kv.value for ev in await take(watch, 2)] == [b"2", b"3"]
    await watch.cancel()


@scenario
async def error_mapping(c, srv):
    not_found = (aetcd.rpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found")
    with pytest.raises(aetcd.ClientError, match="^etcdserver: requested lease not found$") as e:
        await c.revoke_lease(0x5EED)
    assert grpc_error(e) == not_found
    with pytest.raises(aetcd.ClientError) as e:
        await c.put(b"/e/k", b"v", lease=0x5EED)
    assert grpc_error(e) == not_found
    assert await c.get(b"/e/k") is None
    with pytest.raises(aetcd.InvalidArgumentError, match="^etcdserver: key is not provided$"):
        await c.put(b"", b"v")


# ---- the pytest side -------------------------------------------------------------------

@pytest.fixture(params=["fastkv", pytest.param("etcd", marks=pytest.mark.etcd)])
def server(request):
    yield from serve(request.param)


@pytest.mark.parametrize("name", list(scenario))
def test_aetcd_client(server, name):
    run_scenario_child(os.path.abspath(__file__), name, server)


# ---- the child -------------------------------------------------------------------------

async def _session(fn, info) -> None:
    async with aetcd.Client(host=info.host, port=info.port, timeout=10) as client:
        await fn(client, info)


if __name__ == "__main__":
    import aetcd
    import aetcd.rpc
    scenario_child_main(scenario, lambda fn, info: asyncio.run(_session(fn, info)))
