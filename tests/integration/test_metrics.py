"""GET /metrics (fastkv/metrics.py): Prometheus' text format with etcd's names, read with
the prometheus-client parser; --listen-metrics-urls; /health with an alarm active."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fastkv.proto.etcdserverpb import rpc_pb2 as pb
from fastkv.proto.etcdserverpb import rpc_pb2_grpc as rpc
from servers import Cluster, EtcdProcess, FastkvProcess, free_port

# what the issue names, and what dashboards built for etcd read most
REQUIRED = {
    "etcd_server_has_leader": "gauge", "etcd_server_is_leader": "gauge",
    "etcd_server_leader_changes_seen": "counter",
    "etcd_server_proposals_committed_total": "gauge",
    "etcd_server_proposals_applied_total": "gauge", "etcd_server_proposals_pending": "gauge",
    "etcd_server_proposals_failed": "counter",
    "etcd_disk_wal_fsync_duration_seconds": "histogram",
    "etcd_disk_backend_commit_duration_seconds": "histogram",
    "etcd_mvcc_db_total_size_in_bytes": "gauge", "etcd_mvcc_keys_total": "gauge",
    "etcd_debugging_mvcc_watcher_total": "gauge",
    "etcd_network_peer_round_trip_time_seconds": "histogram",
    "grpc_server_handled": "counter", "grpc_server_started": "counter",
    "process_resident_memory_bytes": "gauge", "process_cpu_seconds": "counter",
    "process_open_fds": "gauge", "process_start_time_seconds": "gauge",
}


def scrape(url: str) -> dict:
    """family name -> prometheus_client Metric (the parser drops counters' _total)."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = r.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(families: dict, name: str, **labels) -> float:
    """The sample `name` (a family's own name, or a histogram's _count/_sum) with labels."""
    for fam in families.values():
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise KeyError(f"{name}{labels}")


def member_id(url: str) -> int:
    req = urllib.request.Request(url + "/v3/maintenance/status", data=b"{}", method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return int(json.loads(r.read())["header"]["member_id"])


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_metrics_of_a_member_at_work():
    mport = free_port()
    murl = f"http://127.0.0.1:{mport}"
    srv = FastkvProcess(extra_args=["--listen-metrics-urls", murl]).start()
    try:
        fams = scrape(srv.url)
        for name, kind in REQUIRED.items():
            if name != "etcd_network_peer_round_trip_time_seconds":   # no peers here
                assert name in fams and fams[name].type == kind, name
        assert value(fams, "etcd_server_has_leader") == 1
        assert value(fams, "etcd_server_is_leader") == 1
        assert value(fams, "etcd_server_leader_changes_seen_total") == 1
        committed = value(fams, "etcd_server_proposals_committed_total")
        fsyncs = value(fams, "etcd_disk_wal_fsync_duration_seconds_count")
        assert value(fams, "etcd_server_id", server_id=f"{member_id(srv.url):x}") == 1
        with grpc.insecure_channel(f"127.0.0.1:{srv.client_port}") as ch:
            kv, watch = rpc.KVStub(ch), rpc.WatchStub(ch)
            for i in range(5):
                kv.Put(pb.PutRequest(key=b"k%d" % i, value=b"v"))
            kv.Range(pb.RangeRequest(key=b"k0"))
            with pytest.raises(grpc.RpcError):
                kv.Range(pb.RangeRequest(key=b"k0", revision=1000))   # OutOfRange: future
            reqs = iter([pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"w"))])
            stream = watch.Watch(reqs)
            assert next(stream).created
            fams = scrape(murl)                    # the metrics listener, too
            assert value(fams, "etcd_debugging_mvcc_watcher_total") == 1
            assert value(fams, "etcd_debugging_mvcc_watch_stream_total") == 1
            stream.cancel()
        assert value(fams, "etcd_server_proposals_committed_total") >= committed + 5
        assert value(fams, "etcd_server_proposals_applied_total") >= committed + 5
        assert value(fams, "etcd_disk_wal_fsync_duration_seconds_count") >= fsyncs + 5
        assert value(fams, "etcd_disk_backend_commit_duration_seconds_count") >= 5
        assert value(fams, "etcd_mvcc_keys_total") == 5
        assert value(fams, "etcd_debugging_mvcc_current_revision") == 6
        assert value(fams, "etcd_mvcc_db_total_size_in_bytes") > 0
        unary = {"grpc_service": "etcdserverpb.KV", "grpc_type": "unary"}
        assert value(fams, "grpc_server_started_total", grpc_method="Put", **unary) == 5
        assert value(fams, "grpc_server_handled_total", grpc_method="Put", grpc_code="OK",
                     **unary) == 5
        assert value(fams, "grpc_server_handled_total", grpc_method="Range",
                     grpc_code="OutOfRange", **unary) == 1
        assert value(fams, "grpc_server_started_total", grpc_method="Watch",
                     grpc_service="etcdserverpb.Watch", grpc_type="bidi_stream") == 1
        assert 0 < value(fams, "process_resident_memory_bytes") < 4 << 30
        assert abs(value(fams, "process_start_time_seconds") - time.time()) < 600
        # the metrics listener serves /metrics and /health only
        assert get(murl + "/health")[0] == 200
        assert get(murl + "/v2/keys")[0] == 404
        assert get(murl + "/version")[0] == 404
    finally:
        srv.stop()


def test_health_is_false_while_an_alarm_is_active():
    srv = FastkvProcess().start()
    try:
        assert get(srv.url + "/health") == (200, b'{"health":"true"}')
        with grpc.insecure_channel(f"127.0.0.1:{srv.client_port}") as ch:
            m = rpc.MaintenanceStub(ch)
            m.Alarm(pb.AlarmRequest(action=pb.AlarmRequest.ACTIVATE, memberID=member_id(srv.url),
                                    alarm=pb.NOSPACE))
            assert get(srv.url + "/health")[0] == 503
            fams = scrape(srv.url)
            assert value(fams, "etcd_server_health_failures_total") >= 1   # (the parser adds _total)
            m.Alarm(pb.AlarmRequest(action=pb.AlarmRequest.DEACTIVATE, memberID=member_id(srv.url),
                                    alarm=pb.NOSPACE))
            assert get(srv.url + "/health")[0] == 200
    finally:
        srv.stop()


def test_cluster_members_measure_their_peers_and_see_leader_changes():
    cluster = Cluster(size=3).start()
    try:
        deadline = time.monotonic() + 30
        while True:   # a probe round trip to each peer (every few seconds)
            fams = [scrape(u) for u in cluster.urls]
            rtts = [{s.labels["To"] for s in f["etcd_network_peer_round_trip_time_seconds"].samples
                     if s.name.endswith("_count") and s.value > 0}
                    if "etcd_network_peer_round_trip_time_seconds" in f else set()   # none yet
                    for f in fams]
            if all(len(r) == 2 for r in rtts):
                break
            assert time.monotonic() < deadline, rtts
            time.sleep(0.5)
        assert sum(value(f, "etcd_server_is_leader") for f in fams) == 1
        assert all(value(f, "etcd_server_has_leader") == 1 for f in fams)
        assert all(value(f, "etcd_server_leader_changes_seen_total") >= 1 for f in fams)
    finally:
        cluster.stop()


def test_families_etcd_also_has_are_of_etcds_types():
    """Differential: every family both serve has the same type (a dashboard built on etcd
    reads ours the same way), and the ones the issue names exist in both or only in
    fastkv where etcd 3.4 names them otherwise."""
    srv = FastkvProcess().start()
    etcd = EtcdProcess().start()
    try:
        ours, theirs = scrape(srv.url), scrape(etcd.url)
        assert json.loads(get(etcd.url + "/health")[1]) == json.loads(get(srv.url + "/health")[1])
    finally:
        srv.stop()
        etcd.stop()
    both = set(ours) & set(theirs)
    assert len(both) >= 25, sorted(both)
    assert {n: ours[n].type for n in both} == {n: theirs[n].type for n in both}
    only_ours = {n for n in REQUIRED if n not in theirs}
    assert only_ours <= {"etcd_mvcc_keys_total",   # 3.4: etcd_debugging_mvcc_keys_total
                         "etcd_network_peer_round_trip_time_seconds"}   # no peers: no series
