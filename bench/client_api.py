#!/usr/bin/env python3
"""fastkv vs etcd 3.4 on the client API: the v3 JSON gateway and v2 keys (wrk), and gRPC (h2load).

Both servers are started the same way (tests/servers.py: same flags, loopback,
free ports) on fresh data dirs under one data root, so both pay the same
filesystem's fsync: a single member, and a 3-member cluster (tests/servers.py
Cluster) whose load goes to the leader or to a follower (--members, --targets;
labels like put/3m-follower). Runs alternate etcd, fastkv, etcd, fastkv...
(a fresh server per run), each driving one workload with
``wrk -t2 -c64 -d<duration> --latency``:

  put    bench/wrk/put.lua    POST /v3/kv/put, a new key per request, 64-byte value
  range  bench/wrk/range.lua  POST /v3/kv/range, linearizable, on pre-loaded keys
  v2-put bench/wrk/v2_put.lua PUT /v2/keys/bench/put/..., a new key per request (201)
  v2-get bench/wrk/v2_get.lua GET /v2/keys/bench/range/<i> on pre-loaded keys

(v2 runs start both servers with the v2 API on: fastkv --enable-v2, etcd
--enable-v2=true; the others leave it off, both servers' default)

and two gRPC workloads, driven by ``h2load -c<connections/4> -m<streams> -D<duration>``
posting one prebuilt gRPC frame (5-byte prefix + protobuf) to etcd's method path:

  grpc-put    /etcdserverpb.KV/Put    PutRequest{key bench/grpc-put, 64-byte value}
  grpc-range  /etcdserverpb.KV/Range  RangeRequest{key bench/range/1}, linearizable
  grpc-range-serializable  the same with serializable=true (served from the member's own state)

h2load cannot see gRPC's status (it is in the trailers), so a gRPC run checks the
answers otherwise: every response carried a message (DATA bytes per request at
least the smallest right answer), and for puts the server's revision grew by at
least the number of requests h2load counted as done.

and two workloads of our own uvloop load generator (bench/watch_lease.py, run in
its own process; bench/README.md says what they measure):

  watch-fanout     1 writer (sequential Puts), 1000 watchers of its key on 10 Watch
                   streams: "req/s" is events/s delivered, p50/p99 the delivery delay
  lease-keepalive  10000 leases kept alive over 16 LeaseKeepAlive streams (32 in flight
                   each): "req/s" is keepalives/s answered, p50/p99 their latency

(each fails unless every watcher got every revision in order exactly once, or every
keepalive was answered with a positive TTL for a lease it was sent for).

A run fails if wrk saw any non-200 answer, any 200 whose body lacks what a
right answer contains (both counted by the Lua scripts' response()), or any
socket error: a benchmark of errors is worthless. Reported
per server and workload: median requests/s, median p50/p99 latency (wrk's
--latency distribution), peak RSS (VmHWM of the server process, the largest
member's for a cluster, read just before it is stopped), and fastkv/etcd ratios. The table goes to stdout, the
whole record to bench/results/client_api-<timestamp>.json.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, os.path.join(REPO, "tests"))

from servers import Cluster, EtcdProcess, FastkvProcess  # noqa: E402

SERVERS = {"etcd": EtcdProcess, "fastkv": FastkvProcess}
WORKLOADS = {"put": "put.lua", "range": "range.lua", "v2-put": "v2_put.lua", "v2-get": "v2_get.lua",
             "grpc-put": "/etcdserverpb.KV/Put", "grpc-range": "/etcdserverpb.KV/Range",
             "grpc-range-serializable": "/etcdserverpb.KV/Range"}
# Our own load generator's workloads (bench/watch_lease.py): what "req/s" and p50/p99 mean.
WATCH_LEASE = {"watch-fanout": "events/s delivered; p50/p99 = delivery delay",
               "lease-keepalive": "keepalives/s answered; p50/p99 = keepalive latency"}
WORKLOADS.update({w: "watch_lease.py" for w in WATCH_LEASE})
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


class RunFailed(Exception):
    pass


def to_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"unparsable wrk latency {text!r}")
    return float(m.group(1)) * UNITS[m.group(2)]


def parse_wrk(out: str) -> dict:
    """requests/s, p50/p99 (ms), request count, non-200 and socket errors from wrk's output."""
    def grab(pattern: str, default=None):
        m = re.search(pattern, out, re.M)
        if m is None:
            if default is not None:
                return default
            raise RunFailed(f"wrk output lacks {pattern!r}:\n{out}")
        return m
    result = {
        "requests_per_sec": float(grab(r"^Requests/sec:\s+([\d.]+)").group(1)),
        "p50_ms": to_ms(grab(r"^\s+50%\s+(\S+)").group(1)),
        "p99_ms": to_ms(grab(r"^\s+99%\s+(\S+)").group(1)),
        "requests": int(grab(r"^\s+(\d+) requests in").group(1)),
    }
    lua = grab(r"^fastkv-bench non200=(\d+) badbody=(\d+) requests=(\d+)")
    result["non200"] = int(lua.group(1))
    result["bad_body"] = int(lua.group(2))
    wrk_non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    result["non2xx_wrk"] = int(wrk_non2xx.group(1)) if wrk_non2xx else 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"),
                                       map(int, sock.groups()))) if sock else {}
    first = re.search(r"^fastkv-bench first_error=(.*)$", out, re.M)
    result["first_error"] = first.group(1) if first else ""
    return result


def grpc_frame(workload: str) -> bytes:
    """The request h2load posts: a gRPC length-prefixed protobuf message, encoded by hand
    (field 1 key, field 2 value: both length-delimited) so the runner needs no protobuf."""
    def field(num: int, data: bytes) -> bytes:
        assert len(data) < 128
        return bytes([num << 3 | 2, len(data)]) + data
    if workload == "grpc-put":
        msg = field(1, b"bench/grpc-put") + field(2, b"p" * 64)
    else:
        msg = field(1, b"bench/range/1")
        if workload == "grpc-range-serializable":
            msg += bytes([7 << 3 | 0, 1])  # RangeRequest.serializable = true (varint)
    return b"\0" + len(msg).to_bytes(4, "big") + msg


# Smallest DATA per right answer: a frame prefix and a ResponseHeader (four varints);
# a range answer also holds the 64-byte value.
GRPC_MIN_DATA = {"grpc-put": 5 + 12, "grpc-range": 5 + 12 + 64, "grpc-range-serializable": 5 + 12 + 64}


def parse_h2load(out: str, log_path: str) -> dict:
    def grab(pattern: str):
        m = re.search(pattern, out, re.M)
        if m is None:
            raise RunFailed(f"h2load output lacks {pattern!r}:\n{out}")
        return m
    done = grab(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                r"(\d+) failed, (\d+) errored, (\d+) timeout")
    lat = []
    with open(log_path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[1] == "200":
                lat.append(int(parts[2]) / 1000.0)
    lat.sort()
    if not lat:
        raise RunFailed("h2load logged no successful request")
    return {
        "requests_per_sec": float(grab(r"^finished in [\d.]+s, ([\d.]+) req/s").group(1)),
        "requests": int(done.group(4)),
        "failed": int(done.group(5)) + int(done.group(6)) + int(done.group(7)),
        "data_bytes": int(grab(r"^traffic: .* \((\d+)\) data").group(1)),
        "p50_ms": lat[len(lat) // 2],
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
    }


def run_h2load(workload: str, srv, args, tmp: str) -> dict:
    try:
        return _run_h2load(workload, srv, args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run_h2load(workload: str, srv, args, tmp: str) -> dict:
    body = os.path.join(tmp, "request.bin")
    with open(body, "wb") as f:
        f.write(grpc_frame(workload))
    log_path = os.path.join(tmp, "h2load.log")
    rev0 = int(post(srv.url, "/v3/kv/range", {"key": "eA=="})["header"]["revision"])
    cmd = ["h2load", f"-t{args.threads}", f"-c{max(args.threads, args.connections // 4)}",
           f"-m{args.streams}", f"-D{int(args.duration_s)}", "--log-file", log_path,
           "-H", "content-type: application/grpc", "-H", "te: trailers", "-d", body,
           srv.url + WORKLOADS[workload]]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration_s * 3 + 60)
    if p.returncode != 0:
        raise RunFailed(f"h2load exited {p.returncode}: {p.stderr}")
    result = parse_h2load(p.stdout, log_path)
    result["wrk_output"] = p.stdout
    problems = []
    if result["failed"]:
        problems.append(f"{result['failed']} requests failed, errored or timed out")
    if result["data_bytes"] < result["requests"] * GRPC_MIN_DATA[workload]:
        problems.append(f"only {result['data_bytes']} bytes of answers for "
                        f"{result['requests']} requests: some were gRPC errors")
    if workload == "grpc-put":
        rev1 = int(post(srv.url, "/v3/kv/range", {"key": "eA=="})["header"]["revision"])
        if rev1 - rev0 < result["requests"]:
            problems.append(f"{result['requests']} puts answered but the revision grew by "
                            f"{rev1 - rev0}")
    if result["requests"] == 0:
        problems.append("no requests completed")
    if problems:
        raise RunFailed("; ".join(problems))
    return result


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RunFailed(f"no VmHWM for pid {pid}")


def post(url: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        if r.status != 200:
            raise RunFailed(f"{path} answered {r.status}")
        return json.loads(r.read())


def preload(url: str, n: int) -> None:
    """The keys range.lua reads: bench/range/<i> with 64-byte values."""
    value = base64.b64encode(b"r" * 64).decode()

    def put(i: int) -> None:
        post(url, "/v3/kv/put", {"key": base64.b64encode(f"bench/range/{i}".encode()).decode(),
                                 "value": value})
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(n)))
    got = post(url, "/v3/kv/range", {"key": base64.b64encode(b"bench/range/").decode(),
                                     "range_end": base64.b64encode(b"bench/range0").decode(),
                                     "count_only": True})
    if int(got.get("count", 0)) != n:
        raise RunFailed(f"preload: expected {n} keys, the server has {got.get('count')}")


def preload_v2(url: str, n: int) -> None:
    """The keys v2_get.lua reads: /v2/keys/bench/range/<i> with 64-byte values."""
    def put(i: int) -> None:
        req = urllib.request.Request(f"{url}/v2/keys/bench/range/{i}", method="PUT",
                                     data=b"value=" + b"r" * 64,
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        with urllib.request.urlopen(req, timeout=30) as r:
            if r.status not in (200, 201):
                raise RunFailed(f"v2 preload answered {r.status}")
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(n)))
    with urllib.request.urlopen(f"{url}/v2/keys/bench/range", timeout=30) as r:
        got = len(json.loads(r.read())["node"].get("nodes", []))
    if got != n:
        raise RunFailed(f"v2 preload: expected {n} keys, the server has {got}")


V2_FLAGS = {"fastkv": ["--enable-v2"], "etcd": ["--enable-v2=true"]}


def pick_target(cluster: Cluster, target: str):
    """The cluster's leader, or one of its followers, once they agree on a leader."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            st = {m: post(m.url, "/v3/maintenance/status", {}) for m in cluster.members}
            leads = {int(s.get("leader", 0)) for s in st.values()}
            if len(leads) == 1 and 0 not in leads:
                lead = leads.pop()
                for m, s in st.items():
                    is_lead = int(s["header"]["member_id"]) == lead
                    if is_lead == (target == "leader"):
                        return m
        except (OSError, RunFailed, KeyError, ValueError):
            pass
        time.sleep(0.2)
    raise RunFailed("the cluster did not agree on a leader")


def run_wrk(workload: str, srv, args) -> dict:
    env = dict(os.environ, FASTKV_WRK_DIR=os.path.join(BENCH, "wrk"),
               FASTKV_RANGE_KEYS=str(args.range_keys))
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}",
           "--latency", "-s", os.path.join(BENCH, "wrk", WORKLOADS[workload]), srv.url]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env,
                       timeout=args.duration_s * 3 + 60)
    if p.returncode != 0:
        raise RunFailed(f"wrk exited {p.returncode}: {p.stderr}")
    result = parse_wrk(p.stdout)
    result["wrk_output"] = p.stdout
    problems = []
    if result["non200"] or result["non2xx_wrk"]:
        problems.append(f"{max(result['non200'], result['non2xx_wrk'])} non-200 answers "
                        f"(first: {result['first_error']})")
    if result["bad_body"]:
        problems.append(f"{result['bad_body']} 200 answers without the expected content "
                        f"(first: {result['first_error']})")
    if any(result["socket_errors"].values()):
        problems.append(f"socket errors {result['socket_errors']}")
    if result["requests"] == 0:
        problems.append("no requests completed")
    if problems:
        raise RunFailed("; ".join(problems))
    return result


def run_watch_lease(workload: str, srv, args) -> dict:
    """watch-fanout / lease-keepalive: bench/watch_lease.py in its own process (so this
    runner is never the bottleneck); its JSON carries events/s or keepalives/s as
    requests_per_sec and the delay or latency as p50_ms/p99_ms."""
    extra = shlex.split(getattr(args, workload.replace("-", "_") + "_args") or "")
    cmd = [sys.executable, os.path.join(BENCH, WORKLOADS[workload]), workload, srv.url,
           "--duration", str(args.duration_s), "--json"] + extra
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration_s * 3 + 240)
    try:
        result = json.loads(p.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise RunFailed(f"watch_lease.py exited {p.returncode} without a result: "
                        f"{p.stderr[-2000:]}") from None
    if "error" in result:
        raise RunFailed(result["error"])
    if p.returncode != 0 or not result.get("ok"):
        raise RunFailed(f"{result.get('problem_count')} problems: "
                        + "; ".join(result.get("problems", [])))
    return result


def one_run(kind: str, workload: str, args, data_root: str, members: int = 1,
            target: str = "leader") -> dict:
    data_dir = tempfile.mkdtemp(prefix=f"{kind}-", dir=data_root)
    extra = V2_FLAGS[kind] if workload.startswith("v2-") else []
    cluster = None
    if members == 1:
        srv = SERVERS[kind](data_dir=data_dir, extra_args=extra)
    else:
        cluster = Cluster(SERVERS[kind], members, extra_args=extra, data_root=data_dir)
    try:
        if cluster is None:
            srv.start(timeout=60)
        else:
            cluster.start(timeout=60)
            srv = pick_target(cluster, target)
        if workload in ("range", "grpc-range", "grpc-range-serializable"):
            preload(srv.url, args.range_keys)
        elif workload == "v2-get":
            preload_v2(srv.url, args.range_keys)
        if workload in WATCH_LEASE:
            result = run_watch_lease(workload, srv, args)
        elif workload.startswith("grpc-"):
            result = run_h2load(workload, srv, args, tempfile.mkdtemp(prefix="h2load-", dir=data_root))
        else:
            result = run_wrk(workload, srv, args)
        procs = [srv] if cluster is None else cluster.members
        for m in procs:
            if m.proc.poll() is not None:
                raise RunFailed(f"{kind} died during the run: {m.log()}")
        result["peak_rss_kib"] = max(peak_rss_kib(m.proc.pid) for m in procs)
        return result
    finally:
        if cluster is None:
            srv.stop()
        else:
            cluster.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"(\d+)(s|m)?", text)
    if not m:
        raise argparse.ArgumentTypeError(f"duration like 10s or 1m, not {text!r}")
    return int(m.group(1)) * (60 if m.group(2) == "m" else 1)


def version_of(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def summarise(runs: list[dict]) -> dict:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"runs_ok": 0}
    return {
        "runs_ok": len(ok),
        "requests_per_sec": statistics.median(r["requests_per_sec"] for r in ok),
        "p50_ms": statistics.median(r["p50_ms"] for r in ok),
        "p99_ms": statistics.median(r["p99_ms"] for r in ok),
        "peak_rss_mib": max(r["peak_rss_kib"] for r in ok) / 1024,
    }


def table(summary: dict, servers: list[str]) -> str:
    rows = [("workload", "server", "runs", "req/s (median)", "p50 ms", "p99 ms", "peak RSS MiB",
             "req/s fastkv/etcd")]
    for workload, per in summary.items():
        for kind in servers:
            s = per[kind]
            ratio = per.get("ratio_fastkv_etcd", {}).get("requests_per_sec")
            if not s.get("runs_ok"):
                rows.append((workload, kind, "0", "FAILED", "", "", "", ""))
                continue
            rows.append((workload, kind, str(s["runs_ok"]), f"{s['requests_per_sec']:.0f}",
                         f"{s['p50_ms']:.2f}", f"{s['p99_ms']:.2f}", f"{s['peak_rss_mib']:.1f}",
                         f"{ratio:.3f}" if (ratio is not None and kind == "fastkv") else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for workload, meaning in WATCH_LEASE.items():
        if any(label.split("/")[0] == workload for label in summary):
            lines.append(f"{workload}: req/s = {meaning}")
    return "\n".join(lines)


def main(argv=None) -> int:
    # ci/bench bounds the wall time with `timeout`, which sends SIGTERM: unwind so
    # every server this runner started is stopped (one_run's finally)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", default=os.environ.get("BENCH_DURATION", "10s"),
                    help="wrk -d per run (default 10s)")
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", "3")),
                    help="runs per server and workload (default 3)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--workloads", default="put,range,v2-put,v2-get,grpc-put,grpc-range,grpc-range-serializable,"
                                          "watch-fanout,lease-keepalive")
    ap.add_argument("--streams", type=int, default=8,
                    help="h2load -m: concurrent streams per gRPC connection (default 8)")
    ap.add_argument("--watch-fanout-args", default="",
                    help="extra flags for bench/watch_lease.py watch-fanout, e.g. '--watchers 2000'")
    ap.add_argument("--lease-keepalive-args", default="",
                    help="extra flags for bench/watch_lease.py lease-keepalive, e.g. '--window 8'")
    ap.add_argument("--servers", default="etcd,fastkv",
                    help="which servers to run, in alternation order (default etcd,fastkv)")
    ap.add_argument("--range-keys", type=int, default=1000)
    ap.add_argument("--members", default=os.environ.get("BENCH_MEMBERS", "1,3"),
                    help="cluster sizes to run (default 1,3)")
    ap.add_argument("--targets", default="leader,follower",
                    help="with more than one member: send the load to these (default both)")
    ap.add_argument("--data-root", default=None,
                    help="where both servers' data dirs go (default: a new bench/results/data-*.tmp, "
                         "removed afterwards)")
    ap.add_argument("--out", default=os.path.join(BENCH, "results"))
    args = ap.parse_args(argv)
    args.duration_s = parse_duration(args.duration)
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    servers = [s for s in args.servers.split(",") if s]
    workloads = [w for w in args.workloads.split(",") if w]
    sizes = [int(x) for x in args.members.split(",") if x]
    targets = [t for t in args.targets.split(",") if t]
    for t in targets:
        if t not in ("leader", "follower"):
            ap.error(f"unknown target {t!r}")
    # A case is (label, workload, members, target); labels key the summary.
    cases = []
    for n in sizes:
        for workload in workloads:
            for t in (["leader"] if n == 1 else targets):
                label = workload if n == 1 else f"{workload}/{n}m-{t}"
                cases.append((label, workload, n, t))
    for s in servers:
        if s not in SERVERS:
            ap.error(f"unknown server {s!r}")
    for w in workloads:
        if w not in WORKLOADS:
            ap.error(f"unknown workload {w!r}")
    for tool in ("wrk", "h2load"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (ci/bench installs it)", file=sys.stderr)
            return 2
    os.makedirs(args.out, exist_ok=True)
    # A root of this run's own by default: removing it at the end must not pull the
    # data dirs from under another runner using the same results directory.
    data_root = args.data_root or tempfile.mkdtemp(prefix="data-", suffix=".tmp", dir=args.out)
    os.makedirs(data_root, exist_ok=True)

    record = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": {k: getattr(args, k) for k in ("duration", "runs", "threads", "connections",
                                                  "range_keys", "members", "targets", "streams",
                                                  "watch_fanout_args", "lease_keepalive_args")} | {"servers": servers,
                                                                     "workloads": workloads,
                                                                     "data_root": data_root},
        "env": {"python": platform.python_version(), "machine": platform.machine(),
                "cpus": os.cpu_count(), "kernel": platform.release(),
                "etcd": version_of(["etcd", "--version"]), "wrk": version_of(["wrk", "--version"]),
                "h2load": version_of(["h2load", "--version"])},
        "runs": [],
    }
    failed = False
    try:
        for label, workload, n, target in cases:
            for i in range(args.runs):
                for kind in servers:
                    t0 = time.monotonic()
                    try:
                        r = one_run(kind, workload, args, data_root, n, target)
                        print(f"{label:5} {kind:6} run {i + 1}/{args.runs}: "
                              f"{r['requests_per_sec']:.0f} req/s  p50 {r['p50_ms']:.2f} ms  "
                              f"p99 {r['p99_ms']:.2f} ms  peak RSS {r['peak_rss_kib'] / 1024:.1f} MiB",
                              flush=True)
                    except (RunFailed, RuntimeError, OSError, subprocess.TimeoutExpired) as e:
                        failed = True
                        r = {"error": str(e)}
                        print(f"{label:5} {kind:6} run {i + 1}/{args.runs}: FAILED: {e}", flush=True)
                    r.update({"workload": label, "server": kind, "run": i + 1,
                              "members": n, "target": target,
                              "seconds": round(time.monotonic() - t0, 2)})
                    record["runs"].append(r)
    finally:
        if args.data_root is None:
            shutil.rmtree(data_root, ignore_errors=True)

    summary: dict = {}
    for workload in [c[0] for c in cases]:
        per = {kind: summarise([r for r in record["runs"]
                                if r["workload"] == workload and r["server"] == kind])
               for kind in servers}
        if per.get("etcd", {}).get("runs_ok") and per.get("fastkv", {}).get("runs_ok"):
            e, f = per["etcd"], per["fastkv"]
            per["ratio_fastkv_etcd"] = {k: f[k] / e[k] for k in
                                        ("requests_per_sec", "p50_ms", "p99_ms", "peak_rss_mib")}
        summary[workload] = per
    record["summary"] = summary
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = os.path.join(args.out, f"client_api-{stamp}.json")
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
    print()
    print(table(summary, servers))
    print(f"\nresults: {os.path.relpath(path, REPO)}")
    if failed:
        print("some runs FAILED (see above); their numbers are left out", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
