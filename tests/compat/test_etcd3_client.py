"""The ``etcd3`` client (PyPI etcd3 0.12: gRPC, synchronous) against fastkv and etcd 3.4.

Each test starts a fresh member, fastkv or Debian's etcd 3.4 (to show the expectations
are etcd's), and runs one scenario below with etcd3 in a child interpreter:
``python tests/compat/test_etcd3_client.py SCENARIO SERVER_JSON`` (tests/servers.py,
``run_scenario_child``). The test passes when the child exits 0; otherwise it shows the
child's traceback and the failing frame's locals. Why a child and not this process:

- etcd3 0.12's generated ``*_pb2`` modules predate protobuf 3.20. With the installed
  protobuf (>= 4, the upb backend) ``import etcd3`` fails with "Descriptors cannot be
  created directly" unless ``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python`` is set
  before protobuf is first imported. In a pytest session protobuf may already be loaded
  (any test module importing fastkv.proto), so setting it here would be too late and
  would change the backend for the whole session; the child gets it in its environment.
- etcd3, aetcd and fastkv.proto all register etcdserverpb.* and mvccpb.* in protobuf's
  default descriptor pool: the second one imported fails ("duplicate file name kv.proto",
  "duplicate symbol 'mvccpb.KeyValue'"). In the child etcd3 is alone, and the pytest
  process never imports it, so this module runs in one session with tests/unit and
  test_aetcd_client.py.

etcd3's lock is client-side (a txn on /locks/NAME with a lease, retried on any watch
event of that key), not etcd's v3lock service. Its retry loop hands tenacity an old-style
wait function that the installed tenacity 9 cannot call; the child adapts it
(``_old_style_tenacity_waits``), or every contended acquire would fail on both servers.

etcd3 maps only INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED and FAILED_PRECONDITION to its
own exceptions; other etcd errors (NotFound, OutOfRange, InvalidArgument,
ResourceExhausted) reach the caller as ``grpc.RpcError``, so the tests check their code
and etcd's message. Neither etcd3 nor aetcd sends a range at a revision or lists leases,
so those go through the client's own stubs (``c.kvstub``, ``c.leasestub``).
"""
from __future__ import annotations

import hashlib
import io
import os
import queue
import sys
import tempfile
import threading
import time

import pytest

# tests/ on the path for servers.py: conftest does it under pytest, this line in the child
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from servers import Scenarios, run_scenario_child, scenario_child_main, serve  # noqa: E402

PURE_PYTHON_PROTOBUF = {"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}

scenario = Scenarios()


# ---- helpers (child) -------------------------------------------------------------------

def take(iterator, n: int, timeout: float = 5.0) -> list:
    """The next n items of a blocking iterator, or AssertionError after `timeout` seconds;
    an exception the iterator raises is raised here."""
    out, failure = [], []

    def pull():
        try:
            for item in iterator:
                out.append(item)
                if len(out) == n:
                    return
        except BaseException as exc:   # noqa: BLE001 - handed to the caller
            failure.append(exc)

    t = threading.Thread(target=pull, daemon=True)
    t.start()
    t.join(timeout)
    if failure:
        raise failure[0]
    assert len(out) == n, f"{len(out)} of {n} items in {timeout}s: {out}"
    return out


def rpc_error(excinfo) -> tuple:
    return excinfo.value.code(), excinfo.value.details()


def keys_of(items) -> list[bytes]:
    return [meta.key for _value, meta in items]


def event_tuples(events) -> list[tuple]:
    return [(type(e).__name__, e.key, e.value, e.mod_revision) for e in events]


# ---- scenarios (child) -----------------------------------------------------------------

@scenario
def kv_put_get_delete(c, srv):
    r1 = c.put("/kv/a", "1").header.revision
    value, meta = c.get("/kv/a")
    assert value == b"1"
    assert (meta.key, meta.version, meta.create_revision, meta.mod_revision, meta.lease_id) == \
        (b"/kv/a", 1, r1, r1, 0)
    assert meta.response_header.revision == r1
    put = c.put("/kv/a", "2", prev_kv=True)
    r2 = put.header.revision
    assert r2 == r1 + 1
    assert (put.prev_kv.key, put.prev_kv.value, put.prev_kv.version, put.prev_kv.mod_revision) == \
        (b"/kv/a", b"1", 1, r1)
    value, meta = c.get("/kv/a")
    assert (value, meta.version, meta.create_revision, meta.mod_revision) == (b"2", 2, r1, r2)
    assert not c.put("/kv/b", "x", prev_kv=True).HasField("prev_kv")   # nothing before
    assert c.get("/kv/missing") == (None, None)
    c.put(b"/kv/\x00\xff", b"\x00\x01\xfe")   # binary-safe keys and values
    assert c.get(b"/kv/\x00\xff")[0] == b"\x00\x01\xfe"
    assert c.put_if_not_exists("/kv/a", "3") is False
    assert c.put_if_not_exists("/kv/c", "3") is True
    assert c.replace("/kv/a", "2", "4") is True
    assert c.replace("/kv/a", "2", "5") is False
    assert c.get("/kv/a")[0] == b"4"
    deleted = c.delete("/kv/a", prev_kv=True, return_response=True)
    assert deleted.deleted == 1
    assert [(kv.key, kv.value) for kv in deleted.prev_kvs] == [(b"/kv/a", b"4")]
    assert c.delete("/kv/a") is False
    assert c.delete("/kv/c") is True
    # deleting nothing makes no revision; a new incarnation starts at version 1
    rev = c.get("/kv/b")[1].response_header.revision
    assert rev == deleted.header.revision + 1
    r3 = c.put("/kv/a", "again").header.revision
    assert r3 == rev + 1
    _, meta = c.get("/kv/a")
    assert (meta.version, meta.create_revision, meta.mod_revision) == (1, r3, r3)


@scenario
def prefix_range_and_sort(c, srv):
    # key order a<b<c; value order c<b<a; create order b<a<c; mod order b<c<a
    c.put("/p/b", "3")
    c.put("/p/a", "2")
    c.put("/p/c", "1")
    c.put("/p/a", "9")
    c.put("/p0", "just past the prefix")
    c.put("/o", "before it")
    a, b, cc = b"/p/a", b"/p/b", b"/p/c"
    got = list(c.get_prefix("/p/"))
    assert keys_of(got) == [a, b, cc]
    assert [v for v, _ in got] == [b"9", b"3", b"1"]
    assert got[0][1].version == 2
    assert keys_of(c.get_prefix("/p/", sort_order="descend")) == [cc, b, a]
    assert keys_of(c.get_prefix("/p/", sort_order="ascend", sort_target="value")) == [cc, b, a]
    assert keys_of(c.get_prefix("/p/", sort_order="ascend", sort_target="create")) == [b, a, cc]
    assert keys_of(c.get_prefix("/p/", sort_order="descend", sort_target="mod")) == [a, cc, b]
    assert keys_of(c.get_prefix("/p/", sort_order="descend", sort_target="version"))[0] == a
    # etcd: a sort target other than KEY without an order sorts ascending
    assert keys_of(c.get_prefix("/p/", sort_target="value")) == [cc, b, a]
    assert [v for v, _ in c.get_prefix("/p/", keys_only=True)] == [b"", b"", b""]
    assert c.get_prefix_response("/p/").count == 3
    assert keys_of(c.get_range("/p/a", "/p/c")) == [a, b]   # [start, end)
    assert keys_of(c.get_range("/p/", "/p0", sort_order="descend")) == [cc, b, a]
    assert keys_of(c.get_all()) == [b"/o", a, b, cc, b"/p0"]
    assert c.delete_prefix("/p/").deleted == 3
    assert list(c.get_prefix("/p/")) == []
    assert c.delete_prefix("/p/").deleted == 0
    assert keys_of(c.get_all()) == [b"/o", b"/p0"]


@scenario
def transactions(c, srv):
    t = c.transactions
    r = c.put("/t/a", "1").header.revision
    c.put("/t/b", "2")
    ok, responses = c.transaction(
        compare=[t.value("/t/a") == "1", t.version("/t/a") == 1, t.create("/t/a") == r,
                 t.mod("/t/a") == r, t.version("/t/b") > 0, t.mod("/t/b") < r + 5,
                 t.value("/t/b") != "x", t.create("/t/none") == 0, t.version("/t/none") == 0],
        success=[t.put("/t/c", "3"), t.get("/t/c"), t.delete("/t/b", prev_kv=True)],
        failure=[t.put("/t/failed", "1")])
    assert ok is True
    put, got, deleted = responses
    txn_rev = r + 2   # one revision for the whole txn
    assert put.response_put.header.revision == txn_rev
    assert [(v, m.key, m.mod_revision) for v, m in got] == [(b"3", b"/t/c", txn_rev)]  # its own put
    assert deleted.response_delete_range.deleted == 1
    assert [kv.value for kv in deleted.response_delete_range.prev_kvs] == [b"2"]
    assert c.get("/t/b") == (None, None)
    assert c.get("/t/failed") == (None, None)
    assert c.get("/t/c")[1].mod_revision == txn_rev

    ok, responses = c.transaction(compare=[t.value("/t/a") == "nope"],
                                  success=[t.put("/t/ok", "1")],
                                  failure=[t.put("/t/failed", "1"), t.get("/t/a")])
    assert ok is False
    assert [v for v, _ in responses[1]] == [b"1"]
    assert c.get("/t/failed")[0] == b"1" and c.get("/t/ok") == (None, None)
    # etcd: a value compare on a missing key is false whatever the operator
    for cmp in (t.value("/t/none") == "", t.value("/t/none") != "x"):
        assert c.transaction(compare=[cmp], success=[], failure=[])[0] is False
    # a nested txn
    ok, [inner] = c.transaction(
        compare=[t.version("/t/a") > 0], failure=[],
        success=[t.txn(compare=[t.value("/t/c") == "3"],
                       success=[t.put("/t/nested", "yes")], failure=[])])
    assert ok is True and inner.response_txn.succeeded is True
    assert c.get("/t/nested")[0] == b"yes"
    # etcd refuses two writes of one key in a txn
    with pytest.raises(grpc.RpcError) as e:
        c.transaction(compare=[], success=[t.put("/t/d", "1"), t.put("/t/d", "2")], failure=[])
    assert rpc_error(e) == (grpc.StatusCode.INVALID_ARGUMENT,
                            "etcdserver: duplicate key given in txn request")


@scenario
def watch_key_and_prefix(c, srv):
    key_events, cancel_key = c.watch("/w/k")
    prefix_events, cancel_prefix = c.watch_prefix("/w/", prev_kv=True)
    r1 = c.put("/w/k", "1").header.revision
    c.put("/w/other", "x")
    c.put("/w/k", "2")
    c.delete("/w/k")
    c.put("/wz", "outside the prefix")
    c.put("/w/last", "end")
    assert event_tuples(take(key_events, 3)) == [
        ("PutEvent", b"/w/k", b"1", r1), ("PutEvent", b"/w/k", b"2", r1 + 2),
        ("DeleteEvent", b"/w/k", b"", r1 + 3)]
    got = take(prefix_events, 5)
    assert event_tuples(got) == [
        ("PutEvent", b"/w/k", b"1", r1), ("PutEvent", b"/w/other", b"x", r1 + 1),
        ("PutEvent", b"/w/k", b"2", r1 + 2), ("DeleteEvent", b"/w/k", b"", r1 + 3),
        ("PutEvent", b"/w/last", b"end", r1 + 5)]
    assert [e.prev_value for e in got] == [b"", b"", b"1", b"2", b""]
    assert got[2].version == 2 and got[2].create_revision == r1
    cancel_key()
    cancel_prefix()
    c.put("/w/k", "after cancel")
    assert list(key_events) == [] and list(prefix_events) == []

    # the callback form, cancelled by id; the stream keeps serving other watches
    first, second = queue.Queue(), queue.Queue()
    wid = c.add_watch_callback("/w/cb", first.put)
    c.put("/w/cb", "1")
    assert [e.value for e in first.get(timeout=5).events] == [b"1"]
    c.cancel_watch(wid)
    c.put("/w/cb", "2")
    c.add_watch_callback("/w/cb", second.put)
    c.put("/w/cb", "3")
    assert [e.value for e in second.get(timeout=5).events] == [b"3"]
    assert first.empty()
    with pytest.raises(etcd3.exceptions.WatchTimedOut):
        c.watch_once("/w/quiet", timeout=0.5)


@scenario
def watch_from_past_revision(c, srv):
    r1 = c.put("/h/k", "1").header.revision
    c.put("/h/k", "2")
    c.delete("/h/k")
    c.put("/h/other", "x")
    events, cancel = c.watch("/h/k", start_revision=r1)
    assert event_tuples(take(events, 3)) == [
        ("PutEvent", b"/h/k", b"1", r1), ("PutEvent", b"/h/k", b"2", r1 + 1),
        ("DeleteEvent", b"/h/k", b"", r1 + 2)]
    r5 = c.put("/h/k", "3").header.revision   # live events follow the history
    assert event_tuples(take(events, 1)) == [("PutEvent", b"/h/k", b"3", r5)]
    cancel()
    events, cancel = c.watch_prefix("/h/", start_revision=r1 + 1)
    assert [(e.key, e.value) for e in take(events, 4)] == [
        (b"/h/k", b"2"), (b"/h/k", b""), (b"/h/other", b"x"), (b"/h/k", b"3")]
    cancel()


@scenario
def leases(c, srv):
    lease = c.lease(30)
    assert lease.id > 0 and lease.ttl == 30
    c.put("/l/a", "1", lease=lease)
    c.put("/l/b", "2", lease=lease.id)
    c.put("/l/free", "3")
    assert c.get("/l/a")[1].lease_id == lease.id
    info = c.get_lease_info(lease.id)
    assert (info.ID, info.grantedTTL) == (lease.id, 30) and 0 < info.TTL <= 30
    assert sorted(info.keys) == [b"/l/a", b"/l/b"]
    assert lease.granted_ttl == 30 and 0 < lease.remaining_ttl <= 30
    [alive] = lease.refresh()
    assert (alive.ID, alive.TTL) == (lease.id, 30)
    listed = c.leasestub.LeaseLeases(etcdrpc.LeaseLeasesRequest(), timeout=5).leases
    assert lease.id in [s.ID for s in listed]
    mine = c.lease(60, lease_id=0x7E57)
    assert (mine.id, mine.ttl) == (0x7E57, 60)
    with pytest.raises(etcd3.exceptions.PreconditionFailedError):   # "lease already exists"
        c.lease(60, lease_id=0x7E57)
    assert c.lease(1).ttl == 2   # etcd's minimum TTL: 1.5 election timeouts, rounded up
    lease.revoke()
    assert c.get("/l/a") == (None, None) and c.get("/l/b") == (None, None)
    assert c.get("/l/free")[0] == b"3"
    gone = c.get_lease_info(lease.id)
    assert (gone.ID, gone.TTL, list(gone.keys)) == (lease.id, -1, [])
    listed = c.leasestub.LeaseLeases(etcdrpc.LeaseLeasesRequest(), timeout=5).leases
    assert lease.id not in [s.ID for s in listed] and 0x7E57 in [s.ID for s in listed]
    [dead] = c.refresh_lease(lease.id)   # etcd answers a keepalive of an unknown lease with TTL 0
    assert (dead.ID, dead.TTL) == (lease.id, 0)
    mine.revoke()


@scenario
def lock(c, srv):
    first = c.lock("res", ttl=10)
    assert first.acquire(timeout=2) is True
    assert first.is_acquired()
    value, meta = c.get("/locks/res")
    assert value == first.uuid and meta.lease_id == first.lease.id
    second = c.lock("res", ttl=10)
    started = time.monotonic()
    assert second.acquire(timeout=1) is False
    assert time.monotonic() - started >= 0.9
    result = []
    contender = threading.Thread(target=lambda: result.append(second.acquire(timeout=10)))
    contender.start()
    time.sleep(0.5)
    assert contender.is_alive() and result == []   # still waiting
    assert first.release() is True
    contender.join(10)
    assert result == [True]
    assert second.is_acquired() and not first.is_acquired()
    assert first.release() is False   # no longer the holder
    [alive] = second.refresh()
    assert alive.TTL == 10
    assert second.release() is True
    with c.lock("other", ttl=5) as held:
        assert held.is_acquired()
    assert c.get("/locks/other") == (None, None)


@scenario
def members_and_status(c, srv):
    [m] = list(c.members)
    assert m.id != 0 and m.name == srv.name
    assert list(m.peer_urls) == [srv.peer_url] and list(m.client_urls) == [srv.url]
    st = c.status()
    assert st.version.startswith("3.4."), st.version
    assert st.leader is not None and st.leader.id == m.id
    assert st.raft_term >= 1 and st.raft_index >= 1 and st.db_size > 0
    header = c.put("/st/k", "v").header
    assert header.member_id == m.id and header.cluster_id != 0 and header.raft_term == st.raft_term
    assert c.status().raft_index > st.raft_index
    c.defragment()


@scenario
def alarms(c, srv):
    assert list(c.list_alarms()) == []
    [m] = list(c.members)
    raised = c.create_alarm(member_id=m.id)
    assert [(a.alarm_type, a.member_id) for a in raised] == [(etcdrpc.NOSPACE, m.id)]
    assert [(a.alarm_type, a.member_id) for a in c.list_alarms()] == [(etcdrpc.NOSPACE, m.id)]
    try:
        with pytest.raises(grpc.RpcError) as e:
            c.put("/alarm/k", "v")
        assert rpc_error(e) == (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                "etcdserver: mvcc: database space exceeded")
        assert c.get("/alarm/k") == (None, None)   # reads go on
    finally:
        disarmed = c.disarm_alarm(member_id=m.id)
    assert [(a.alarm_type, a.member_id) for a in disarmed] == [(etcdrpc.NOSPACE, m.id)]
    assert list(c.list_alarms()) == []
    c.put("/alarm/k", "v")
    assert c.disarm_alarm(member_id=m.id) == []


@scenario
def hash_of_state(c, srv):
    c.put("/hash/a", "1")
    first = c.hash()
    assert isinstance(first, int) and c.hash() == first
    c.put("/hash/b", "2")
    assert c.hash() != first


@scenario
def snapshot(c, srv):
    c.put("/snap/k", "v" * 1000)
    buf = io.BytesIO()
    c.snapshot(buf)
    data = buf.getvalue()
    assert len(data) > 32
    assert hashlib.sha256(data[:-32]).digest() == data[-32:]   # etcd appends the SHA-256
    assert (len(data) - 32) % 512 == 0   # what etcdctl snapshot save checks to find it
    with tempfile.TemporaryFile() as f:
        c.snapshot(f)
        f.seek(0)
        data = f.read()
    assert hashlib.sha256(data[:-32]).digest() == data[-32:]


@scenario
def compaction(c, srv):
    r1 = c.put("/c/k", "1").header.revision
    r2 = c.put("/c/k", "2").header.revision
    r3 = c.put("/c/k", "3").header.revision

    def range_at(rev):
        return [kv.value for kv in
                c.kvstub.Range(etcdrpc.RangeRequest(key=b"/c/k", revision=rev), timeout=5).kvs]

    assert range_at(r1) == [b"1"]
    c.compact(r2, physical=True)
    assert range_at(r2) == [b"2"] and range_at(r3) == [b"3"]
    compacted = (grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted")
    future = (grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision")
    with pytest.raises(grpc.RpcError) as e:
        range_at(r1)
    assert rpc_error(e) == compacted
    for rev in (r1, r2):
        with pytest.raises(grpc.RpcError) as e:
            c.compact(rev)
        assert rpc_error(e) == compacted
    with pytest.raises(grpc.RpcError) as e:
        c.compact(r3 + 100)
    assert rpc_error(e) == future
    with pytest.raises(grpc.RpcError) as e:
        range_at(r3 + 100)
    assert rpc_error(e) == future
    events, cancel = c.watch("/c/k", start_revision=r1)
    with pytest.raises(etcd3.exceptions.RevisionCompactedError) as e:
        take(events, 1)
    assert e.value.compacted_revision == r2
    events, cancel = c.watch("/c/k", start_revision=r2)   # the compaction revision itself is kept
    assert [ev.value for ev in take(events, 2)] == [b"2", b"3"]
    cancel()


@scenario
def error_mapping(c, srv):
    not_found = (grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found")
    with pytest.raises(grpc.RpcError) as e:
        c.revoke_lease(0x5EED)
    assert rpc_error(e) == not_found
    with pytest.raises(grpc.RpcError) as e:
        c.put("/e/k", "v", lease=0x5EED)
    assert rpc_error(e) == not_found
    assert c.get("/e/k") == (None, None)
    with pytest.raises(grpc.RpcError) as e:
        c.put("", "v")
    assert rpc_error(e) == (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: key is not provided")


# ---- the pytest side -------------------------------------------------------------------

@pytest.fixture(params=["fastkv", pytest.param("etcd", marks=pytest.mark.etcd)])
def server(request):
    yield from serve(request.param)


@pytest.mark.parametrize("name", list(scenario))
def test_etcd3_client(server, name):
    run_scenario_child(os.path.abspath(__file__), name, server, env=PURE_PYTHON_PROTOBUF)


# ---- the child -------------------------------------------------------------------------

def _old_style_tenacity_waits() -> None:
    """etcd3 0.12's Lock.acquire hands tenacity.retry a wait(attempt_number, seconds) function,
    the call style of the tenacity it was written against; the installed tenacity (9.x) calls
    wait(retry_state), so a contended acquire dies with a TypeError whatever the server.
    Adapt such waits as old tenacity did; etcd3's lock logic itself is unchanged."""
    import inspect

    import tenacity
    retry = tenacity.retry

    def compatible_retry(*args, wait=None, **kw):
        if wait is not None and len(inspect.signature(wait).parameters) == 2:
            old_wait = wait

            def wait(retry_state):
                return old_wait(retry_state.attempt_number, retry_state.seconds_since_start)
        return retry(*args, **kw) if wait is None else retry(*args, wait=wait, **kw)

    tenacity.retry = compatible_retry


def _run(fn, info) -> None:
    from google.protobuf.internal import api_implementation
    assert api_implementation.Type() == "python", "etcd3 0.12 needs the pure-Python protobuf"
    _old_style_tenacity_waits()
    client = etcd3.client(host=info.host, port=info.port, timeout=10)
    try:
        fn(client, info)
    finally:
        client.close()


if __name__ == "__main__":
    import grpc
    import etcd3
    import etcd3.exceptions
    from etcd3 import etcdrpc
    scenario_child_main(scenario, _run)
