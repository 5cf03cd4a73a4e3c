"""bench/memory.py end to end on a few thousand keys against a real fastkv, so that a
change that breaks the runner (or the restart it measures) is caught here and not an
hour into ci/bench. No number is asserted: only that the run completes, checks what it
loaded, took a snapshot during the load and wrote its record."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_memory_bench_small_run(tmp_path):
    out = tmp_path / "results"
    p = subprocess.run(
        [sys.executable, os.path.join(REPO, "bench", "memory.py"), "--servers", "fastkv",
         "--keys", "2000", "--snapshot-count", "4", "--settle", "0", "--clients", "4",
         "--out", str(out), "--data-root", str(tmp_path / "data")],
        cwd=REPO, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stdout + p.stderr
    [path] = glob.glob(str(out / "memory-*.json"))
    with open(path) as f:
        record = json.load(f)
    r = record["results"]["fastkv"]
    assert "error" not in r, r
    for step in ("empty", "after_load", "after_compact", "after_overwrite", "after_compact2",
                 "after_restart"):
        assert r[step]["VmRSS"] > 0 and r[step]["VmHWM"] >= r[step]["VmRSS"], step
    assert r["stop_returncode"] == 0          # SIGTERM is a clean stop
    assert r["startup_seconds"] > 0
    # 2000 keys are 16 Txns, 8 more for the overwrites: with --snapshot-count 4 the
    # restart read a snapshot and a WAL
    assert any(name.endswith(".snap") for name in r["files_at_stop"]), r["files_at_stop"]
    assert any(name.endswith(".wal") for name in r["files_at_stop"]), r["files_at_stop"]
    metrics = {row["metric"]: row for row in record["summary"]}
    assert metrics["start-up s"]["fastkv"] == r["startup_seconds"]
    assert "start-up from snapshot + WAL: fastkv" in p.stdout
    assert os.listdir(tmp_path / "data") == []   # every data dir removed
