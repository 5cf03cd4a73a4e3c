"""A member run from etcd's YAML configuration file, logging JSON lines (--logger zap)
to a file; automatic compaction (--auto-compaction-*) in a real process."""
from __future__ import annotations

import json
import os
import time
import urllib.request

import grpc
import pytest

from fastkv.proto.etcdserverpb import rpc_pb2 as pb
from fastkv.proto.etcdserverpb import rpc_pb2_grpc as rpc
from servers import FastkvProcess


def test_a_member_from_a_configuration_file_logs_json_lines(tmp_path):
    log_file = tmp_path / "member.log"
    srv = FastkvProcess()
    flags = srv.flags()
    conf = {flags[i].lstrip("-"): flags[i + 1] for i in range(0, len(flags), 2)}
    conf.update({"enable-v2": True, "logger": "zap", "log-outputs": [str(log_file)],
                 "snapshot-count": 5})
    path = tmp_path / "fastkv.conf.yml"
    path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in conf.items()))
    # only the file counts: these flags would make the member fail to start
    srv.extra_args = ["--config-file", str(path), "--enable-v2=false", "--logger", "capnslog"]
    stderr_at = os.path.getsize(srv.log_path) if os.path.exists(srv.log_path) else 0
    srv.start()
    try:
        req = urllib.request.Request(srv.url + "/v2/keys/from-file", data=b"value=yes",
                                     method="PUT")
        with urllib.request.urlopen(req, timeout=10) as r:   # --enable-v2 came from the file
            assert r.status == 201
        for i in range(8):   # past the file's snapshot-count: a snapshot is logged
            urllib.request.urlopen(urllib.request.Request(
                srv.url + f"/v2/keys/k{i}", data=b"value=v", method="PUT"), timeout=10)
        deadline = time.monotonic() + 10
        while True:
            lines = [json.loads(line) for line in log_file.read_text().splitlines()]
            if any(r["msg"].startswith("snapshot at index") for r in lines):
                break
            assert time.monotonic() < deadline, lines[-5:]
            time.sleep(0.1)
        assert all({"level", "ts", "logger", "caller", "msg"} <= set(r) for r in lines)
        assert any(r["msg"].startswith("ready to serve client requests") and
                   r["level"] == "info" and r["caller"].startswith("fastkv/server.py:")
                   for r in lines)
        with open(srv.log_path, "rb") as f:   # the file is the only output: not stderr
            f.seek(stderr_at)
            assert b"ready to serve" not in f.read()
    finally:
        srv.cleanup()


def test_periodic_auto_compaction_compacts_what_is_older_than_the_retention():
    srv = FastkvProcess(extra_args=["--auto-compaction-mode", "periodic",
                                    "--auto-compaction-retention", "2s"]).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{srv.client_port}") as ch:
            kv = rpc.KVStub(ch)
            first = kv.Put(pb.PutRequest(key=b"a", value=b"1")).header.revision
            kv.Put(pb.PutRequest(key=b"a", value=b"2"))
            deadline = time.monotonic() + 20
            while True:
                kv.Put(pb.PutRequest(key=b"b", value=b"x"))   # the store moves on
                try:
                    kv.Range(pb.RangeRequest(key=b"a", revision=first))
                except grpc.RpcError as e:
                    assert e.code() == grpc.StatusCode.OUT_OF_RANGE
                    assert "required revision has been compacted" in e.details()
                    break
                assert time.monotonic() < deadline, "no automatic compaction"
                time.sleep(0.2)
            # what is newer than the retention is kept
            latest = kv.Put(pb.PutRequest(key=b"a", value=b"3")).header.revision
            assert kv.Range(pb.RangeRequest(key=b"a", revision=latest)).kvs[0].value == b"3"
    finally:
        srv.stop()


def test_auto_compaction_flags_are_checked_at_start(tmp_path):
    srv = FastkvProcess(extra_args=["--auto-compaction-mode", "revision",
                                    "--auto-compaction-retention", "1h"])
    with pytest.raises(Exception):
        srv.start(timeout=10)
    srv.cleanup()
    assert "auto-compaction-retention" in srv.log()
