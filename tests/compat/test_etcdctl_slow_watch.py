"""`etcdctl watch` (etcd 3.4's clientv3) as a slow consumer of fastkv: the process is
stopped (SIGSTOP) while writes go on, the member cancels its watch as a slow consumer
(``--experimental-watch-slow-consumer-timeout``, fastkv's own: etcd 3.4 keeps slow
watchers for ever, so there is no etcd reference to compare with), and once continued
etcdctl prints what it had been sent, in order, then reports the watch canceled by the
server the way it does for any server-side cancel, and exits.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time

import grpc
import pytest

from fastkv.proto.etcdserverpb import rpc_pb2 as pb
from fastkv.proto.etcdserverpb import rpc_pb2_grpc as rpc
from servers import FastkvProcess

pytestmark = pytest.mark.etcd

ETCDCTL = shutil.which("etcdctl")
WRITES = 600            # 8 KiB each: well past the stream's window, 1 MiB and 128 responses
EXIT_INTERRUPTED = 5    # etcdctl's ExitInterrupted


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_etcdctl_watch_stopped_is_canceled_as_a_slow_consumer():
    srv = FastkvProcess(extra_args=["--experimental-watch-slow-consumer-timeout", "1s"]).start()
    out = tempfile.NamedTemporaryFile(prefix="etcdctl-watch-", suffix=".out", delete=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    p = subprocess.Popen([ETCDCTL, "--endpoints", f"127.0.0.1:{srv.client_port}", "watch",
                          "slow/", "--prefix"], stdout=out, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, env=env)
    ch = grpc.insecure_channel(f"127.0.0.1:{srv.client_port}")

    def output() -> str:
        with open(out.name, errors="replace") as f:
            return f.read()
    try:
        kv = rpc.KVStub(ch)

        def watching() -> bool:   # etcdctl watches from when it connects: put until it sees
            kv.Put(pb.PutRequest(key=b"slow/first", value=b"1"))
            time.sleep(0.2)
            return "slow/first" in output()
        _wait(watching, 15, "etcdctl never printed an event")
        p.send_signal(signal.SIGSTOP)
        value = b"v" * 8192
        by_revision: dict[int, str] = {}     # 32 puts at a time: applied in any order
        for i in range(0, WRITES, 32):
            futs = {j: kv.Put.future(pb.PutRequest(key=b"slow/%d" % j, value=value), timeout=20)
                    for j in range(i, min(i + 32, WRITES))}
            for j, f in futs.items():
                by_revision[f.result().header.revision] = f"slow/{j}"
        assert len(by_revision) == WRITES   # the stopped watcher held no write back
        _wait(lambda: "slow consumer: canceled watch" in srv.log(), 20, srv.log())
        p.send_signal(signal.SIGCONT)
        assert p.wait(timeout=30) == EXIT_INTERRUPTED
        text = output()
        assert text.rstrip().endswith("Error: watch is canceled by the server"), text[-500:]
        lines = text.splitlines()
        keys = [lines[i + 1] for i, line in enumerate(lines) if line == "PUT"]
        got = [k for k in keys if k != "slow/first"]
        in_revision_order = [by_revision[r] for r in sorted(by_revision)]
        assert keys[0] == "slow/first" and got == in_revision_order[:len(got)]  # no gap
        assert 0 < len(got) < WRITES    # what it had been sent, not every write
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.kill()
            p.wait()
        ch.close()
        srv.cleanup()
        out.close()
        os.unlink(out.name)
