#!/usr/bin/env python3
"""fastkv vs etcd 3.4 with many keys: RSS after load and after compaction, start-up time.

Issue 8's memory item: 1,000,000 keys of 256-byte values. For each server in turn
(a single member started as the tests do, tests/servers.py, with the same
``--snapshot-count`` for both and a fresh data dir under one data root):

  1. load N distinct keys (``bench/mem/<i>``, V random bytes each) with Txn
     requests of 128 puts (etcd's default --max-txn-ops) over gRPC from several
     client threads, then check the count with a count_only range;
  2. RSS after a settle (VmRSS, VmHWM, RssAnon and RssFile from /proc/<pid>/status);
  3. compact at the current revision (physical: the answer waits for the
     backend) and measure again: with one revision per key nothing is garbage,
     so this shows the cost of compaction itself;
  4. overwrite the first N*overwrite keys (default half), measure, compact, measure:
     the overwritten revisions are history that compaction must free;
  5. stop the server with SIGTERM (as an operator would), note the data dir's
     size, start it again on the same data dir and ports, and time from process
     start until a linearizable range of one key answers; check the count is
     still N, and measure RSS once more.

Why ``--snapshot-count 5000`` (the default here): a load of N keys is N/128 Raft
entries (7,813 for a million). With 5,000 a snapshot is taken during the load
(and another during the overwrites), and a WAL tail of a few thousand entries
remains after it, so the restart reads a snapshot *and* replays a WAL tail, the
case the issue asks about. etcd's default (100,000) would take no snapshot at all
with this load, and fastkv's restart would be a replay of the whole WAL.

The table (metric, etcd, fastkv, fastkv/etcd) goes to stdout, everything to
bench/results/memory-<timestamp>.json.

    python3 bench/memory.py [--keys 1000000] [--value-size 256] [--servers etcd,fastkv]
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, REPO)

import grpc  # noqa: E402

from fastkv.proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc  # noqa: E402
from servers import EtcdProcess, FastkvProcess  # noqa: E402

SERVERS = {"etcd": EtcdProcess, "fastkv": FastkvProcess}
PREFIX = b"bench/mem/"
PREFIX_END = b"bench/mem0"   # the range end of every key under PREFIX
TXN_OPS = 128                # etcd's default --max-txn-ops
STATUS_FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile")


class RunFailed(Exception):
    pass


def key_of(i: int) -> bytes:
    return PREFIX + b"%08d" % i


def proc_memory(pid: int) -> dict:
    """VmRSS, VmHWM, RssAnon, RssFile of a process, in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in STATUS_FIELDS:
                out[name] = int(rest.split()[0])
    return out


def dir_files(path: str) -> dict:
    """{path relative to `path`: bytes} of the files under it (apparent sizes)."""
    out = {}
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            try:
                out[os.path.relpath(full, path)] = os.path.getsize(full)
            except OSError:
                pass
    return out


def dir_bytes(path: str) -> int:
    return sum(dir_files(path).values())


def load(stub, first: int, n: int, value_size: int, clients: int, samples: dict) -> float:
    """Put keys first..first+n-1 with fresh random values, TXN_OPS puts per Txn from
    `clients` threads; returns the seconds it took. The values written to the keys
    in `samples` are noted there (checked again after the restart)."""
    def txn(lo: int) -> None:
        hi = min(lo + TXN_OPS, first + n)
        values = os.urandom((hi - lo) * value_size)
        ops = [rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(
            key=key_of(i), value=values[(i - lo) * value_size:(i - lo + 1) * value_size]))
            for i in range(lo, hi)]
        resp = stub.Txn(rpc_pb2.TxnRequest(success=ops), timeout=60)
        if not resp.succeeded or len(resp.responses) != hi - lo:
            raise RunFailed(f"txn of keys {lo}..{hi - 1} answered {resp}")
        for op in ops:
            if op.request_put.key in samples:
                samples[op.request_put.key] = op.request_put.value
    t0 = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        for _ in pool.map(txn, range(first, first + n, TXN_OPS)):
            pass
    return time.monotonic() - t0


def count(stub) -> tuple[int, int]:
    """(keys under PREFIX, revision), linearizable."""
    r = stub.Range(rpc_pb2.RangeRequest(key=PREFIX, range_end=PREFIX_END, count_only=True),
                   timeout=60)
    return r.count, r.header.revision


def check_samples(stub, samples: dict, when: str) -> None:
    for key, value in samples.items():
        r = stub.Range(rpc_pb2.RangeRequest(key=key), timeout=30)
        if len(r.kvs) != 1 or r.kvs[0].value != value:
            raise RunFailed(f"{when}: {key!r} does not hold the value last written to it")


def compact(stub, revision: int) -> float:
    t0 = time.monotonic()
    stub.Compact(rpc_pb2.CompactionRequest(revision=revision, physical=True), timeout=600)
    return time.monotonic() - t0


def probe_until_serving(url: str, deadline: float) -> float:
    """Poll a linearizable range of one key over the JSON gateway (a fresh connection
    each time: no client back-off) until it answers with the key; returns the time."""
    body = json.dumps({"key": base64.b64encode(key_of(0)).decode()}).encode()
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(url + "/v3/kv/range", data=body,
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status == 200 and json.loads(r.read()).get("kvs"):
                    return time.monotonic()
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    raise RunFailed("no linearizable range answered before the deadline")


def settle_memory(srv, seconds: float) -> dict:
    time.sleep(seconds)
    if srv.proc.poll() is not None:
        raise RunFailed(f"{srv.name} died: {srv.log()}")
    return proc_memory(srv.proc.pid)


def one_server(kind: str, args, data_root: str) -> dict:
    data_dir = tempfile.mkdtemp(prefix=f"{kind}-", dir=data_root)
    srv = SERVERS[kind](data_dir=data_dir,
                        extra_args=["--snapshot-count", str(args.snapshot_count)])
    r: dict = {"server": kind, "data_dir": data_dir}
    channel = None
    say = lambda msg: print(f"{kind:6} {msg}", flush=True)  # noqa: E731
    try:
        srv.start(timeout=60)
        r["empty"] = settle_memory(srv, args.settle)
        channel = grpc.insecure_channel(f"127.0.0.1:{srv.client_port}")
        stub = rpc_pb2_grpc.KVStub(channel)

        # a few keys whose values are checked after the overwrites and the restart
        samples = {key_of(i): None for i in {0, args.keys // 3, args.keys // 2, args.keys - 1}}
        secs = load(stub, 0, args.keys, args.value_size, args.clients, samples)
        n, rev = count(stub)
        if n != args.keys:
            raise RunFailed(f"after the load the server holds {n} keys, not {args.keys}")
        r["load_seconds"] = secs
        r["after_load"] = settle_memory(srv, args.settle)
        r["data_dir_after_load"] = dir_bytes(data_dir)
        say(f"loaded {n} keys in {secs:.1f} s ({n / secs:.0f} keys/s); "
            f"RSS {r['after_load']['VmRSS'] / 1024:.0f} MiB")

        r["compact_seconds"] = compact(stub, rev)
        r["after_compact"] = settle_memory(srv, args.settle)
        say(f"compacted at {rev} in {r['compact_seconds']:.1f} s; "
            f"RSS {r['after_compact']['VmRSS'] / 1024:.0f} MiB")

        over = int(args.keys * args.overwrite)
        if over:
            r["overwrite_seconds"] = load(stub, 0, over, args.value_size, args.clients, samples)
            r["after_overwrite"] = settle_memory(srv, args.settle)
            n, rev = count(stub)
            if n != args.keys:
                raise RunFailed(f"after the overwrites the server holds {n} keys, not {args.keys}")
            r["compact2_seconds"] = compact(stub, rev)
            r["after_compact2"] = settle_memory(srv, args.settle)
            say(f"overwrote {over} keys in {r['overwrite_seconds']:.1f} s; RSS "
                f"{r['after_overwrite']['VmRSS'] / 1024:.0f} MiB, after compaction "
                f"{r['after_compact2']['VmRSS'] / 1024:.0f} MiB")
        channel.close()
        channel = None
        r["peak_before_restart"] = proc_memory(srv.proc.pid)["VmHWM"]

        t0 = time.monotonic()
        srv.stop()   # SIGTERM, as an operator would (SIGKILL after 10 s)
        r["stop_seconds"] = time.monotonic() - t0
        r["stop_returncode"] = srv.proc.returncode
        r["files_at_stop"] = dir_files(data_dir)   # the snapshot(s) and WAL the restart reads
        r["data_dir_at_stop"] = sum(r["files_at_stop"].values())

        t0 = time.monotonic()
        srv.launch()
        t1 = probe_until_serving(srv.url, t0 + args.start_timeout)
        r["startup_seconds"] = t1 - t0
        channel = grpc.insecure_channel(f"127.0.0.1:{srv.client_port}")
        stub = rpc_pb2_grpc.KVStub(channel)
        n, _rev = count(stub)
        if n != args.keys:
            raise RunFailed(f"after the restart the server holds {n} keys, not {args.keys}")
        check_samples(stub, samples, "after the restart")
        r["after_restart"] = settle_memory(srv, args.settle)
        say(f"restarted in {r['startup_seconds']:.2f} s (stop took {r['stop_seconds']:.2f} s); "
            f"RSS {r['after_restart']['VmRSS'] / 1024:.0f} MiB; "
            f"data dir {r['data_dir_at_stop'] / 2**20:.0f} MiB")
        return r
    finally:
        if channel is not None:
            channel.close()
        srv.stop()
        if not args.keep_data:
            shutil.rmtree(data_dir, ignore_errors=True)


MIB = 1024  # the /proc numbers are KiB

# (label, how to get it from a server's result, unit divisor, format)
ROWS = [
    ("load s", lambda r: r["load_seconds"], 1, "{:.1f}"),
    ("load keys/s", lambda r: r["keys"] / r["load_seconds"], 1, "{:.0f}"),
    ("RSS empty MiB", lambda r: r["empty"]["VmRSS"], MIB, "{:.0f}"),
    ("RSS after load MiB", lambda r: r["after_load"]["VmRSS"], MIB, "{:.0f}"),
    ("  anon MiB", lambda r: r["after_load"]["RssAnon"], MIB, "{:.0f}"),
    ("  file-backed MiB", lambda r: r["after_load"]["RssFile"], MIB, "{:.0f}"),
    ("bytes/key (load - empty)",
     lambda r: (r["after_load"]["VmRSS"] - r["empty"]["VmRSS"]) * 1024 / r["keys"], 1, "{:.0f}"),
    ("compact s", lambda r: r["compact_seconds"], 1, "{:.2f}"),
    ("RSS after compact MiB", lambda r: r["after_compact"]["VmRSS"], MIB, "{:.0f}"),
    ("overwrite s", lambda r: r["overwrite_seconds"], 1, "{:.1f}"),
    ("RSS after overwrite MiB", lambda r: r["after_overwrite"]["VmRSS"], MIB, "{:.0f}"),
    ("compact 2 s", lambda r: r["compact2_seconds"], 1, "{:.2f}"),
    ("RSS after compact 2 MiB", lambda r: r["after_compact2"]["VmRSS"], MIB, "{:.0f}"),
    ("peak RSS (VmHWM) MiB", lambda r: r["peak_before_restart"], MIB, "{:.0f}"),
    ("data dir after load MiB", lambda r: r["data_dir_after_load"], 2**20, "{:.0f}"),
    ("data dir at stop MiB", lambda r: r["data_dir_at_stop"], 2**20, "{:.0f}"),
    ("stop (SIGTERM) s", lambda r: r["stop_seconds"], 1, "{:.2f}"),
    ("start-up s", lambda r: r["startup_seconds"], 1, "{:.2f}"),
    ("RSS after restart MiB", lambda r: r["after_restart"]["VmRSS"], MIB, "{:.0f}"),
]


def summarise(results: dict) -> list[dict]:
    rows = []
    for label, get, div, _fmt in ROWS:
        row = {"metric": label}
        for kind, r in results.items():
            try:
                row[kind] = get(r) / div
            except (KeyError, TypeError, ZeroDivisionError):
                row[kind] = None
        e, f = row.get("etcd"), row.get("fastkv")
        row["ratio_fastkv_etcd"] = f / e if e and f is not None else None
        rows.append(row)
    return rows


def targets(rows: list[dict]) -> list[str]:
    """Issue 8's targets for this run: fastkv's RSS at most 2x etcd's (after the load
    and after compaction), fastkv's start-up at most 10 s."""
    by = {row["metric"]: row for row in rows}
    out = []
    for metric in ("RSS after load MiB", "RSS after compact MiB"):
        ratio = by[metric].get("ratio_fastkv_etcd")
        if ratio is not None:
            out.append(f"{metric[:-4]}: fastkv/etcd {ratio:.2f} (target <= 2.00: "
                       f"{'met' if ratio <= 2.0 else 'MISSED'})")
    start = by["start-up s"].get("fastkv")
    if start is not None:
        out.append(f"start-up from snapshot + WAL: fastkv {start:.2f} s (target <= 10 s: "
                   f"{'met' if start <= 10.0 else 'MISSED'})")
    return out


def table(rows: list[dict], servers: list[str]) -> str:
    fmts = {label: fmt for label, _g, _d, fmt in ROWS}
    out = [["metric"] + servers + (["fastkv/etcd"] if {"etcd", "fastkv"} <= set(servers) else [])]
    for row in rows:
        cells = [row["metric"]]
        for kind in servers:
            v = row.get(kind)
            cells.append("" if v is None else fmts[row["metric"]].format(v))
        if len(out[0]) > len(servers) + 1:
            ratio = row["ratio_fastkv_etcd"]
            cells.append("" if ratio is None else f"{ratio:.2f}")
        out.append(cells)
    widths = [max(len(r[i]) for r in out) for i in range(len(out[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in out]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv=None) -> int:
    # ci/bench bounds the wall time with `timeout` (SIGTERM): unwind so every server
    # this runner started is stopped (one_server's finally)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--value-size", type=int, default=256)
    ap.add_argument("--servers", default="etcd,fastkv")
    ap.add_argument("--snapshot-count", type=int, default=5000,
                    help="both servers' --snapshot-count (default 5000: see the docstring)")
    ap.add_argument("--clients", type=int, default=8, help="concurrent Txn clients (default 8)")
    ap.add_argument("--overwrite", type=float, default=0.5,
                    help="fraction of the keys overwritten after the first compaction "
                         "(default 0.5; 0 skips that step)")
    ap.add_argument("--settle", type=float, default=2.0,
                    help="seconds to wait before each RSS reading (default 2)")
    ap.add_argument("--start-timeout", type=float, default=300.0,
                    help="give up on a restart after this many seconds (default 300)")
    ap.add_argument("--data-root", default=None,
                    help="where both servers' data dirs go (default: a new directory "
                         "under --out, removed afterwards)")
    ap.add_argument("--keep-data", action="store_true", help="leave the data dirs behind")
    ap.add_argument("--out", default=os.path.join(BENCH, "results"))
    args = ap.parse_args(argv)
    servers = [s for s in args.servers.split(",") if s]
    for s in servers:
        if s not in SERVERS:
            ap.error(f"unknown server {s!r}")
    if args.keys < 1 or not 0 <= args.overwrite <= 1:
        ap.error("--keys must be positive and --overwrite within [0, 1]")
    os.makedirs(args.out, exist_ok=True)
    # A directory of this run's own (as client_api.py's): removing it at the end
    # cannot touch another runner's data dirs.
    data_root = args.data_root or tempfile.mkdtemp(prefix="memory-data-", suffix=".tmp",
                                                   dir=args.out)
    os.makedirs(data_root, exist_ok=True)

    record = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": {k: getattr(args, k) for k in ("keys", "value_size", "snapshot_count",
                                                  "clients", "overwrite", "settle")}
        | {"servers": servers, "data_root": data_root, "txn_ops": TXN_OPS},
        "env": {"python": platform.python_version(), "machine": platform.machine(),
                "cpus": os.cpu_count(), "kernel": platform.release(),
                "etcd": _version(["etcd", "--version"])},
        "results": {},
    }
    failed = False
    try:
        for kind in servers:
            try:
                r = one_server(kind, args, data_root)
                r["keys"] = args.keys
            except (RunFailed, RuntimeError, OSError, grpc.RpcError,
                    subprocess.TimeoutExpired) as e:
                failed = True
                r = {"error": str(e)}
                print(f"{kind:6} FAILED: {e}", flush=True)
            record["results"][kind] = r
    finally:
        if args.data_root is None and not args.keep_data:
            shutil.rmtree(data_root, ignore_errors=True)
    ok = {k: r for k, r in record["results"].items() if "error" not in r}
    record["summary"] = summarise(ok)
    path = os.path.join(args.out, f"memory-{time.strftime('%Y%m%d-%H%M%S')}.json")
    print()
    print(f"{args.keys} keys of {args.value_size} bytes, --snapshot-count {args.snapshot_count}")
    print(table(record["summary"], [s for s in servers if s in ok]))
    record["targets"] = targets(record["summary"])
    for line in record["targets"]:
        print(line)
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
    print(f"\nresults: {os.path.relpath(path, REPO)}")
    return 1 if failed else 0


def _version(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
