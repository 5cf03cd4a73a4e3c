"""`etcdctl lock` and `etcdctl elect` (etcd's client-side recipes over gRPC: txn,
lease keepalive streams, watches) against fastkv, and against etcd 3.4 as the
reference: two lock holders never overlap; a second candidate waits until the
leader resigns; `elect -l` observes each leader in turn."""
from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import threading
import time

import pytest

from servers import EtcdProcess, FastkvProcess

pytestmark = pytest.mark.etcd

ETCDCTL = shutil.which("etcdctl")


@pytest.fixture(params=["fastkv", "etcd"])
def server(request):
    srv = (FastkvProcess if request.param == "fastkv" else EtcdProcess)().start()
    try:
        yield srv
    finally:
        srv.stop()


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    return env


class Ctl:
    """A running etcdctl whose stdout lines are collected by a thread."""

    def __init__(self, srv, *args, env=None):
        self.p = subprocess.Popen(
            [ETCDCTL, "--endpoints", f"127.0.0.1:{srv.client_port}", *args],
            env=env or _env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL, text=True)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.p.stdout:
            self.lines.put(line.rstrip("\n"))

    def read(self, n: int, timeout: float = 15.0) -> list[str]:
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < n:
            try:
                got.append(self.lines.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"waited for {n} lines, got {got}: "
                                     f"{self.p.stderr.read() if self.p.poll() is not None else ''}")
        return got

    def quiet(self) -> bool:
        return self.lines.empty()


def _stop_all(ctls) -> None:
    for c in ctls:
        if c.p.poll() is None:
            c.p.kill()
        c.p.wait(timeout=10)


def test_lock_holders_never_overlap(server, tmp_path):
    log = tmp_path / "log"
    script = f"echo start $N >> {log}; sleep 0.6; echo end $N >> {log}"
    procs = []
    try:
        for i in range(3):
            procs.append(Ctl(server, "lock", "mylock", "--", "sh", "-c", script,
                             env=dict(_env(), N=str(i))))
        for c in procs:
            assert c.p.wait(timeout=60) == 0, c.p.stderr.read()
    finally:
        _stop_all(procs)
    lines = log.read_text().split("\n")[:-1]
    assert len(lines) == 6
    for k in range(0, 6, 2):      # each start is followed by its own end
        assert lines[k].startswith("start") and lines[k + 1] == "end" + lines[k][5:], lines


def test_elect_second_candidate_waits_and_observers_see_each_leader(server):
    procs = []
    try:
        first = Ctl(server, "elect", "myelection", "p1")
        procs.append(first)
        key1, value1 = first.read(2)
        assert key1.startswith("myelection/") and value1 == "p1"
        observer = Ctl(server, "elect", "-l", "myelection")
        procs.append(observer)
        assert observer.read(2) == [key1, "p1"]
        second = Ctl(server, "elect", "myelection", "p2")
        procs.append(second)
        time.sleep(1.0)
        assert second.p.poll() is None
        assert second.quiet(), "the second candidate won while the first still leads"
        first.p.send_signal(signal.SIGINT)      # etcdctl resigns on interrupt
        first.p.wait(timeout=15)
        key2, value2 = second.read(2)
        assert value2 == "p2" and key2.startswith("myelection/") and key2 != key1
        assert observer.read(2) == [key2, "p2"]
    finally:
        _stop_all(procs)
