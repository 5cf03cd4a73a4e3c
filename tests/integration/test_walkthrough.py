"""docs/operations.md's walkthrough, run as the newcomer runs it: docs/walkthrough.sh
(bootstrap 3 members by discovery, scrape /metrics, snapshot save/status, restore into a
new 3-member cluster, fill the quota and recover), then its metrics parsed with
prometheus-client's parser."""
from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from servers import REPO

pytestmark = pytest.mark.timeout(400)

SCRIPT = os.path.join(REPO, "docs", "walkthrough.sh")
SPAN = 80   # the script uses BASE_PORT .. BASE_PORT+72


def _free_span() -> int:
    for _ in range(200):
        base = random.randrange(20000, 32000 - SPAN)
        socks = []
        try:
            for port in range(base, base + SPAN):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no span of free ports")


def test_operations_walkthrough(tmp_path):
    env = dict(os.environ, WORK=str(tmp_path), BASE_PORT=str(_free_span()),
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.Popen(["bash", SCRIPT], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                            start_new_session=True, cwd=str(tmp_path))
    try:
        out, _ = proc.communicate(timeout=360)
    finally:
        # the script stops what it started; this is for a script killed half-way
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
        proc.wait()
    logs = "".join(f"\n--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(tmp_path.glob("*.log")))
    assert proc.returncode == 0, out + logs
    assert out.rstrip().endswith("walkthrough done"), out
    # the member list of the discovered cluster and of the restored one
    assert all(re.search(rf"\|\s*started\s*\|\s*{n}\s*\|", out) for n in ("m1", "m2", "m3")), out
    assert all(re.search(rf"\|\s*started\s*\|\s*{n}\s*\|", out) for n in ("r1", "r2", "r3")), out
    assert "database space exceeded" in out and "alarm:NOSPACE" in out
    assert '{"health":"false"}' in out
    # the scraped metrics parse as Prometheus' text format, with etcd's names
    families = {f.name: f for f in text_string_to_metric_families(
        (tmp_path / "metrics.txt").read_text())}
    assert families["etcd_server_has_leader"].samples[0].value == 1
    assert families["etcd_server_proposals_committed_total"].type == "gauge"   # as etcd's
    assert families["etcd_disk_wal_fsync_duration_seconds"].type == "histogram"
