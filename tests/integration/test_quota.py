"""--quota-backend-bytes: the NOSPACE alarm, refused writes, and the way back (compact,
defragment, disarm), as an etcd 3.4 operator does it."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import grpc
import pytest

from fastkv.proto.etcdserverpb import rpc_pb2 as pb
from fastkv.proto.etcdserverpb import rpc_pb2_grpc as rpc
from servers import FastkvProcess

QUOTA = 256 * 1024


def status(url: str) -> dict:
    req = urllib.request.Request(url + "/v3/maintenance/status", data=b"{}", method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def health(url: str) -> int:
    try:
        with urllib.request.urlopen(url + "/health", timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_quota_raises_nospace_and_compact_defrag_disarm_recover():
    srv = FastkvProcess(extra_args=["--quota-backend-bytes", str(QUOTA)]).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{srv.client_port}") as ch:
            kv, m, lease = rpc.KVStub(ch), rpc.MaintenanceStub(ch), rpc.LeaseStub(ch)
            value = b"v" * 4096
            written = 0
            with pytest.raises(grpc.RpcError) as err:
                for i in range(1000):
                    kv.Put(pb.PutRequest(key=b"k%04d" % (i % 20), value=value))
                    written += 1
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert err.value.details() == "etcdserver: mvcc: database space exceeded"
            assert 20 < written < 200
            alarms = m.Alarm(pb.AlarmRequest(action=pb.AlarmRequest.GET)).alarms
            member = int(status(srv.url)["header"]["member_id"])
            assert [(a.memberID, a.alarm) for a in alarms] == [(member, pb.NOSPACE)]
            assert health(srv.url) == 503
            # writes that add data are refused; reads and deletes go on
            for call in (lambda: kv.Put(pb.PutRequest(key=b"x", value=b"1")),
                         lambda: lease.LeaseGrant(pb.LeaseGrantRequest(TTL=60)),
                         lambda: kv.Txn(pb.TxnRequest(success=[pb.RequestOp(
                             request_put=pb.PutRequest(key=b"x", value=b"1"))]))):
                with pytest.raises(grpc.RpcError) as err:
                    call()
                assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert kv.Range(pb.RangeRequest(key=b"k0000")).kvs[0].value == value
            rev = kv.DeleteRange(pb.DeleteRangeRequest(key=b"k0010", range_end=b"k0020")
                                 ).header.revision
            # the way back: compact, defragment (the on-disk size shrinks), disarm
            before = status(srv.url)["dbSize"]
            kv.Compact(pb.CompactionRequest(revision=rev, physical=True))
            m.Defragment(pb.DefragmentRequest())
            after = int(status(srv.url)["dbSize"])
            assert after < int(before) and after < QUOTA // 2, (before, after)
            with pytest.raises(grpc.RpcError):   # still refused: the alarm is on
                kv.Put(pb.PutRequest(key=b"x", value=b"1"))
            m.Alarm(pb.AlarmRequest(action=pb.AlarmRequest.DEACTIVATE, memberID=member,
                                    alarm=pb.NOSPACE))
            assert kv.Put(pb.PutRequest(key=b"x", value=b"1")).header.revision > rev
            assert health(srv.url) == 200
            assert m.Alarm(pb.AlarmRequest(action=pb.AlarmRequest.GET)).alarms == []
        # the state after defragment is what a restart finds
        srv.stop()
        srv.start()
        with grpc.insecure_channel(f"127.0.0.1:{srv.client_port}") as ch:
            kv = rpc.KVStub(ch)
            got = kv.Range(pb.RangeRequest(key=b"k", range_end=b"l"))
            assert len(got.kvs) == 10 and got.kvs[0].value == value
            assert kv.Range(pb.RangeRequest(key=b"x")).kvs[0].value == b"1"
    finally:
        srv.cleanup()
