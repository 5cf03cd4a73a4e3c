"""etcd's gRPC API served by a real fastkv process, through our own generated stubs.

The same port answers HTTP/1.1 (curl, the JSON gateway) and gRPC (etcdctl, clientv3);
errors carry etcd's status codes and messages; streams (watch, keepalive, snapshot)
behave like etcd's. Every test runs against both gRPC transports (--grpc-transport):
the in-loop HTTP/2 one and grpc.aio, the reference it must agree with. etcdctl and
the public Python clients are driven in tests/compat.
"""
from __future__ import annotations

import hashlib
import json
import signal
import time
import urllib.request

import grpc
import pytest

from fastkv.proto.etcdserverpb import rpc_pb2 as pb
from fastkv.proto.etcdserverpb import rpc_pb2_grpc as rpc
from servers import Cluster, FastkvProcess

FAST = ["--heartbeat-interval", "50", "--election-timeout", "500"]


TRANSPORTS = ["native", "grpcio"]


@pytest.fixture(scope="module", params=TRANSPORTS)
def member(request):
    srv = FastkvProcess(extra_args=["--grpc-transport", request.param]).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def channel(member):
    ch = grpc.insecure_channel(f"127.0.0.1:{member.client_port}")
    try:
        yield ch
    finally:
        ch.close()


def _err(call, *args, **kw) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kw)
    return info.value


def test_one_port_serves_http_and_grpc(member, channel):
    kv = rpc.KVStub(channel)
    kv.Put(pb.PutRequest(key=b"same-port", value=b"grpc"))
    with urllib.request.urlopen(f"{member.url}/v3/kv/range", data=json.dumps(
            {"key": "c2FtZS1wb3J0"}).encode(), timeout=5) as r:
        body = json.loads(r.read())
    assert body["kvs"][0]["value"] == "Z3JwYw=="   # "grpc", written over gRPC
    with urllib.request.urlopen(f"{member.url}/version", timeout=5) as r:
        assert json.loads(r.read())["etcdserver"].startswith("3.4")


def test_put_range_and_headers(channel):
    kv = rpc.KVStub(channel)
    put = kv.Put(pb.PutRequest(key=b"k1", value=b"v1"))
    h = put.header
    assert h.cluster_id and h.member_id and h.raft_term >= 1 and h.revision >= 2
    again = kv.Put(pb.PutRequest(key=b"k1", value=b"v2", prev_kv=True))
    assert again.prev_kv.value == b"v1" and again.header.revision == h.revision + 1
    r = kv.Range(pb.RangeRequest(key=b"k1"))
    assert r.count == 1 and r.kvs[0].value == b"v2" and r.kvs[0].version == 2
    assert r.kvs[0].create_revision == h.revision and r.header.revision == h.revision + 1
    old = kv.Range(pb.RangeRequest(key=b"k1", revision=h.revision))
    assert old.kvs[0].value == b"v1"
    kv.Put(pb.PutRequest(key=b"k2", value=b"x"))
    page = kv.Range(pb.RangeRequest(key=b"k", range_end=b"l", limit=1,
                                    sort_order=pb.RangeRequest.DESCEND))
    assert [x.key for x in page.kvs] == [b"k2"] and page.more and page.count == 2
    d = kv.DeleteRange(pb.DeleteRangeRequest(key=b"k", range_end=b"l", prev_kv=True))
    assert d.deleted == 2 and sorted(x.key for x in d.prev_kvs) == [b"k1", b"k2"]


def test_txn_branches_and_nested_responses(channel):
    kv = rpc.KVStub(channel)
    kv.Put(pb.PutRequest(key=b"t", value=b"1"))
    cmp = pb.Compare(key=b"t", result=pb.Compare.EQUAL, target=pb.Compare.VALUE, value=b"1")
    ok = kv.Txn(pb.TxnRequest(
        compare=[cmp],
        success=[pb.RequestOp(request_put=pb.PutRequest(key=b"t", value=b"2")),
                 pb.RequestOp(request_range=pb.RangeRequest(key=b"t"))],
        failure=[pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=b"t"))]))
    assert ok.succeeded
    assert ok.responses[0].WhichOneof("response") == "response_put"
    assert ok.responses[1].response_range.kvs[0].value == b"2"
    missing = pb.Compare(key=b"nope", result=pb.Compare.GREATER, target=pb.Compare.VERSION,
                         version=0)
    no = kv.Txn(pb.TxnRequest(compare=[missing], failure=[
        pb.RequestOp(request_range=pb.RangeRequest(key=b"t"))]))
    assert not no.succeeded and no.responses[0].response_range.count == 1


def test_errors_have_etcds_codes_and_messages(channel):
    kv, lease = rpc.KVStub(channel), rpc.LeaseStub(channel)
    e = _err(lease.LeaseRevoke, pb.LeaseRevokeRequest(ID=424242))
    assert (e.code(), e.details()) == (grpc.StatusCode.NOT_FOUND,
                                       "etcdserver: requested lease not found")
    e = _err(kv.Put, pb.PutRequest(key=b"", value=b"x"))
    assert (e.code(), e.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                       "etcdserver: key is not provided")
    e = _err(kv.Range, pb.RangeRequest(key=b"a", revision=10**9))
    assert (e.code(), e.details()) == (grpc.StatusCode.OUT_OF_RANGE,
                                       "etcdserver: mvcc: required revision is a future revision")
    dup = [pb.RequestOp(request_put=pb.PutRequest(key=b"d", value=b"1"))] * 2
    e = _err(kv.Txn, pb.TxnRequest(success=dup))
    assert (e.code(), e.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                       "etcdserver: duplicate key given in txn request")
    many = [pb.RequestOp(request_put=pb.PutRequest(key=b"m%d" % i)) for i in range(129)]
    e = _err(kv.Txn, pb.TxnRequest(success=many))
    assert (e.code(), e.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                       "etcdserver: too many operations in txn request")
    kv.Put(pb.PutRequest(key=b"c", value=b"1"))
    rev = kv.Put(pb.PutRequest(key=b"c", value=b"2")).header.revision
    kv.Compact(pb.CompactionRequest(revision=rev))
    e = _err(kv.Range, pb.RangeRequest(key=b"c", revision=rev - 1))
    assert (e.code(), e.details()) == (grpc.StatusCode.OUT_OF_RANGE,
                                       "etcdserver: mvcc: required revision has been compacted")
    e = _err(kv.Put, pb.PutRequest(key=b"big", value=bytes(1536 * 1024)))
    assert (e.code(), e.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                       "etcdserver: request is too large")
    assert kv.Range(pb.RangeRequest(key=b"big")).count == 0   # and nothing changed


def test_watch_stream_creates_delivers_and_cancels(channel):
    kv, watch = rpc.KVStub(channel), rpc.WatchStub(channel)
    start = kv.Put(pb.PutRequest(key=b"w/0", value=b"old")).header.revision
    reqs = [pb.WatchRequest(create_request=pb.WatchCreateRequest(
                key=b"w/", range_end=b"w0", start_revision=start, prev_kv=True)),
            pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"other", watch_id=7))]
    stream_reqs = _Feeder(reqs)
    stream = watch.Watch(iter(stream_reqs))
    try:
        # two created responses and the replay of the past revision (which may come
        # before the second watch is created)
        first = [next(stream) for _ in range(3)]
        assert sorted(r.watch_id for r in first if r.created) == [0, 7]
        history = [r for r in first if not r.created]
        assert history[0].watch_id == 0
        assert history[0].events[0].kv.key == b"w/0" and history[0].events[0].kv.value == b"old"
        kv.Put(pb.PutRequest(key=b"w/1", value=b"a"))
        kv.DeleteRange(pb.DeleteRangeRequest(key=b"w/0"))
        got = []
        while len(got) < 2:
            got.extend(next(stream).events)
        assert [(e.type, e.kv.key) for e in got] == [(0, b"w/1"), (1, b"w/0")]
        assert got[1].prev_kv.value == b"old"
        stream_reqs.push(pb.WatchRequest(cancel_request=pb.WatchCancelRequest(watch_id=7)))
        canceled = next(stream)
        assert canceled.canceled and canceled.watch_id == 7
    finally:
        stream.cancel()
        stream_reqs.close()


class _Feeder:
    """A request iterator the test can add to while the stream runs."""

    def __init__(self, first):
        import queue
        self.q = queue.Queue()
        for r in first:
            self.q.put(r)

    def push(self, r):
        self.q.put(r)

    def close(self):
        self.q.put(None)

    def __iter__(self):
        while True:
            r = self.q.get()
            if r is None:
                return
            yield r


def test_leases_keepalive_stream_and_ttl(channel):
    lease, kv = rpc.LeaseStub(channel), rpc.KVStub(channel)
    g = lease.LeaseGrant(pb.LeaseGrantRequest(TTL=30))
    assert g.ID and g.TTL == 30
    kv.Put(pb.PutRequest(key=b"leased", value=b"x", lease=g.ID))
    answers = list(lease.LeaseKeepAlive(iter([pb.LeaseKeepAliveRequest(ID=g.ID),
                                              pb.LeaseKeepAliveRequest(ID=999)])))
    assert [(a.ID, a.TTL) for a in answers] == [(g.ID, 30), (999, 0)]
    ttl = lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=g.ID, keys=True))
    assert ttl.grantedTTL == 30 and 0 < ttl.TTL <= 30 and list(ttl.keys) == [b"leased"]
    assert g.ID in [x.ID for x in lease.LeaseLeases(pb.LeaseLeasesRequest()).leases]
    lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=g.ID))
    assert kv.Range(pb.RangeRequest(key=b"leased")).count == 0


def test_maintenance_status_hash_alarms_defrag(channel):
    m, kv = rpc.MaintenanceStub(channel), rpc.KVStub(channel)
    st = m.Status(pb.StatusRequest())
    assert st.version.startswith("3.4") and st.leader == st.header.member_id
    assert st.raftIndex >= 1 and st.raftTerm >= 1 and st.dbSize > 0
    h1 = m.HashKV(pb.HashKVRequest())
    assert h1.hash == m.HashKV(pb.HashKVRequest()).hash
    kv.Put(pb.PutRequest(key=b"hash-changes", value=b"x"))
    assert m.HashKV(pb.HashKVRequest()).hash != h1.hash
    m.Defragment(pb.DefragmentRequest())
    # NOSPACE: puts refused with etcd's error, deletes allowed; disarm lifts it
    mid = st.header.member_id
    act = m.Alarm(pb.AlarmRequest(action=pb.AlarmRequest.ACTIVATE, memberID=mid,
                                  alarm=pb.NOSPACE))
    assert [(a.memberID, a.alarm) for a in act.alarms] == [(mid, pb.NOSPACE)]
    try:
        listed = m.Alarm(pb.AlarmRequest(action=pb.AlarmRequest.GET))
        assert [(a.memberID, a.alarm) for a in listed.alarms] == [(mid, pb.NOSPACE)]
        e = _err(kv.Put, pb.PutRequest(key=b"full", value=b"x"))
        assert (e.code(), e.details()) == (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                           "etcdserver: mvcc: database space exceeded")
        kv.DeleteRange(pb.DeleteRangeRequest(key=b"hash-changes"))
    finally:
        m.Alarm(pb.AlarmRequest(action=pb.AlarmRequest.DEACTIVATE, memberID=mid,
                                alarm=pb.NOSPACE))
    assert list(m.Alarm(pb.AlarmRequest(action=pb.AlarmRequest.GET)).alarms) == []
    kv.Put(pb.PutRequest(key=b"full", value=b"x"))


def test_snapshot_stream_ends_with_its_sha256_and_holds_the_state(channel):
    from fastkv.apply import store_state_from_snapshot
    from fastkv.mvcc.store import KVStore
    from fastkv.storage.snapshot import decode_stream
    m, kv = rpc.MaintenanceStub(channel), rpc.KVStub(channel)
    kv.Put(pb.PutRequest(key=b"snap/a", value=b"1"))
    rev = kv.Put(pb.PutRequest(key=b"snap/b", value=b"2")).header.revision
    chunks = list(m.Snapshot(pb.SnapshotRequest()))
    assert len(chunks) >= 2
    data = b"".join(c.blob for c in chunks[:-1])
    assert chunks[-1].blob == hashlib.sha256(data).digest()
    assert len(data) % 512 == 0     # what etcdctl checks before it saves the file
    sent = 0
    for c in chunks[:-1]:
        sent += len(c.blob)
        assert c.remaining_bytes == len(data) - sent
    # the saved file is a state fastkv loads (restore builds a data dir from it)
    state, blobs = decode_stream(data + chunks[-1].blob)
    store = KVStore.from_snapshot_state(store_state_from_snapshot(state, blobs))
    assert store.rev >= rev
    got = store.range({"key": b"snap/", "range_end": b"snap0"})
    assert [(x["key"], x["value"]) for x in got["kvs"]] == [(b"snap/a", b"1"), (b"snap/b", b"2")]
    with pytest.raises(Exception, match="SHA-256"):
        decode_stream(data[:-1] + bytes([data[-1] ^ 1]) + chunks[-1].blob)


def test_cluster_member_list(member, channel):
    ms = rpc.ClusterStub(channel).MemberList(pb.MemberListRequest()).members
    assert len(ms) == 1 and ms[0].clientURLs == [member.url]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_require_leader_fails_without_a_leader_and_ends_watches(transport):
    c = Cluster(FastkvProcess, 3, extra_args=FAST + ["--grpc-transport", transport]).start()
    ch = None
    try:
        survivor = c.members[0]
        ch = grpc.insecure_channel(f"127.0.0.1:{survivor.client_port}")
        kv, watch = rpc.KVStub(ch), rpc.WatchStub(ch)
        md = [("hasleader", "true")]
        kv.Range(pb.RangeRequest(key=b"x"), metadata=md)   # fine while there is a leader
        stream = watch.Watch(iter(_Feeder([pb.WatchRequest(
            create_request=pb.WatchCreateRequest(key=b"x"))])), metadata=md)
        assert next(stream).created
        for other in c.members[1:]:
            other.kill(signal.SIGKILL)
        with pytest.raises(grpc.RpcError) as info:
            next(stream)       # ended by the member's leader monitor
        assert (info.value.code(), info.value.details()) == (grpc.StatusCode.UNAVAILABLE,
                                                             "etcdserver: no leader")
        deadline = time.monotonic() + 20
        while True:
            try:
                kv.Range(pb.RangeRequest(key=b"x", serializable=True), metadata=md)
            except grpc.RpcError as e:
                assert (e.code(), e.details()) == (grpc.StatusCode.UNAVAILABLE,
                                                   "etcdserver: no leader")
                break
            assert time.monotonic() < deadline
            time.sleep(0.2)
        # without the metadata a serializable read is still served from local state
        assert kv.Range(pb.RangeRequest(key=b"x", serializable=True)).count == 0
    finally:
        if ch is not None:
            ch.close()
        c.stop()


# ---------------------------------------------------------------- v3lock / v3election

from fastkv.proto.v3electionpb import v3election_pb2 as epb  # noqa: E402
from fastkv.proto.v3electionpb import v3election_pb2_grpc as erpc  # noqa: E402
from fastkv.proto.v3lockpb import v3lock_pb2 as lpb  # noqa: E402
from fastkv.proto.v3lockpb import v3lock_pb2_grpc as lrpc  # noqa: E402


def test_lock_serialises_contenders_and_unlock_hands_over(channel):
    lock, lease = lrpc.LockStub(channel), rpc.LeaseStub(channel)
    l1 = lease.LeaseGrant(pb.LeaseGrantRequest(TTL=30)).ID
    l2 = lease.LeaseGrant(pb.LeaseGrantRequest(TTL=30)).ID
    first = lock.Lock(lpb.LockRequest(name=b"mylock", lease=l1))
    assert first.key == b"mylock/%x" % l1
    waiting = lock.Lock.future(lpb.LockRequest(name=b"mylock", lease=l2))
    time.sleep(0.5)
    assert not waiting.done()          # the second contender waits
    lock.Unlock(lpb.UnlockRequest(key=first.key))
    second = waiting.result(timeout=10)
    assert second.key == b"mylock/%x" % l2
    assert second.header.revision > first.header.revision
    # a lease that does not exist: the put fails; etcd passes the error on as Unknown
    e = _err(lock.Lock, lpb.LockRequest(name=b"mylock", lease=12345))
    assert (e.code(), e.details()) == (grpc.StatusCode.UNKNOWN,
                                       "etcdserver: requested lease not found")
    lock.Unlock(lpb.UnlockRequest(key=second.key))


def test_a_lock_waiter_that_gives_up_leaves_the_queue(channel):
    lock, lease, kv = lrpc.LockStub(channel), rpc.LeaseStub(channel), rpc.KVStub(channel)
    l1 = lease.LeaseGrant(pb.LeaseGrantRequest(TTL=30)).ID
    l2 = lease.LeaseGrant(pb.LeaseGrantRequest(TTL=30)).ID
    held = lock.Lock(lpb.LockRequest(name=b"gone", lease=l1))
    e = _err(lock.Lock, lpb.LockRequest(name=b"gone", lease=l2), timeout=0.5)
    assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    deadline = time.monotonic() + 5
    while kv.Range(pb.RangeRequest(key=b"gone/%x" % l2)).count:
        assert time.monotonic() < deadline, "the abandoned waiter's key stayed"
        time.sleep(0.05)
    lock.Unlock(lpb.UnlockRequest(key=held.key))


def test_election_campaign_leader_proclaim_observe_resign(channel):
    el, lease = erpc.ElectionStub(channel), rpc.LeaseStub(channel)
    e = _err(el.Leader, epb.LeaderRequest(name=b"pres"))
    assert (e.code(), e.details()) == (grpc.StatusCode.UNKNOWN, "election: no leader")
    observed = el.Observe(epb.LeaderRequest(name=b"pres"))
    l1 = lease.LeaseGrant(pb.LeaseGrantRequest(TTL=30)).ID
    l2 = lease.LeaseGrant(pb.LeaseGrantRequest(TTL=30)).ID
    try:
        won = el.Campaign(epb.CampaignRequest(name=b"pres", lease=l1, value=b"alice"))
        assert won.leader.name == b"pres" and won.leader.lease == l1
        assert won.leader.key == b"pres/%x" % l1
        assert next(observed).kv.value == b"alice"
        second = el.Campaign.future(epb.CampaignRequest(name=b"pres", lease=l2, value=b"bob"))
        time.sleep(0.5)
        assert not second.done()       # a second candidate waits
        assert el.Leader(epb.LeaderRequest(name=b"pres")).kv.value == b"alice"
        el.Proclaim(epb.ProclaimRequest(leader=won.leader, value=b"alice2"))
        assert next(observed).kv.value == b"alice2"
        stale = epb.LeaderKey(name=b"pres", key=won.leader.key, rev=1, lease=l1)
        e = _err(el.Proclaim, epb.ProclaimRequest(leader=stale, value=b"x"))
        assert (e.code(), e.details()) == (grpc.StatusCode.UNKNOWN, "election: not leader")
        e = _err(el.Proclaim, epb.ProclaimRequest(value=b"x"))
        assert e.details() == '"leader" field must be provided'
        el.Resign(epb.ResignRequest(leader=won.leader))
        bob = second.result(timeout=10)
        assert bob.leader.key == b"pres/%x" % l2
        assert next(observed).kv.value == b"bob"
    finally:
        observed.cancel()


# ---------------------------------------------------------------- auth, completeness

def test_every_rpc_of_every_service_is_implemented():
    """No RPC falls back to the generated servicer (which answers UNIMPLEMENTED)."""
    from fastkv.api import grpc_api
    from fastkv.proto.v3electionpb import v3election_pb2
    from fastkv.proto.v3lockpb import v3lock_pb2
    ours = {cls.__mro__[2].__name__.removesuffix("Servicer"): cls
            for cls, _add, _desc in grpc_api.SERVICES}
    for module in (pb, v3lock_pb2, v3election_pb2):
        for name, service in module.DESCRIPTOR.services_by_name.items():
            cls = ours[name]
            generated = cls.__mro__[2]
            for method in service.methods:
                assert getattr(cls, method.name) is not getattr(generated, method.name), \
                    f"{name}.{method.name} is not implemented"


def test_auth_rpcs_change_the_replicated_auth_store(channel):
    auth = rpc.AuthStub(channel)
    auth.UserAdd(pb.AuthUserAddRequest(name="root", password="pw"))
    auth.RoleAdd(pb.AuthRoleAddRequest(name="root"))
    auth.UserGrantRole(pb.AuthUserGrantRoleRequest(user="root", role="root"))
    auth.RoleAdd(pb.AuthRoleAddRequest(name="reader"))
    from fastkv.proto.authpb import auth_pb2
    auth.RoleGrantPermission(pb.AuthRoleGrantPermissionRequest(
        name="reader", perm=auth_pb2.Permission(permType=auth_pb2.Permission.READ,
                                                key=b"/a", range_end=b"/b")))
    perms = auth.RoleGet(pb.AuthRoleGetRequest(role="reader")).perm
    assert [(p.permType, p.key, p.range_end) for p in perms] == [(0, b"/a", b"/b")]
    assert list(auth.UserList(pb.AuthUserListRequest()).users) == ["root"]
    e = _err(auth.UserAdd, pb.AuthUserAddRequest(name="root", password="x"))
    assert (e.code(), e.details()) == (grpc.StatusCode.FAILED_PRECONDITION,
                                       "etcdserver: user name already exists")
    e = _err(auth.Authenticate, pb.AuthenticateRequest(name="root", password="pw"))
    assert e.details() == "etcdserver: authentication is not enabled"
    auth.AuthEnable(pb.AuthEnableRequest())
    token = auth.Authenticate(pb.AuthenticateRequest(name="root", password="pw")).token
    try:
        assert len(token.split(".")) == 2 and token.split(".")[1].isdigit()
        e = _err(auth.Authenticate, pb.AuthenticateRequest(name="root", password="bad"))
        assert (e.code(), e.details()) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "etcdserver: authentication failed, invalid user ID or password")
    finally:   # enforced: only root may turn auth off (tests/integration/test_auth_rbac.py)
        auth.AuthDisable(pb.AuthDisableRequest(), metadata=(("token", token),))
    auth.RoleDelete(pb.AuthRoleDeleteRequest(role="reader"))
    assert list(auth.RoleList(pb.AuthRoleListRequest()).roles) == ["root"]


def test_concurrent_writes_each_answer_with_their_own_revision(channel):
    """Writes applied in one batch: every answer's header revision is the revision of
    that write (here: the key's mod revision), so the answers are all different."""
    kv = rpc.KVStub(channel)
    futures = [kv.Put.future(pb.PutRequest(key=b"conc/%d" % i, value=b"x")) for i in range(40)]
    revs = [f.result(timeout=10).header.revision for f in futures]
    assert len(set(revs)) == len(revs)
    got = kv.Range(pb.RangeRequest(key=b"conc/", range_end=b"conc0"))
    assert sorted(x.mod_revision for x in got.kvs) == sorted(revs)
