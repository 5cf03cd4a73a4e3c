"""What /metrics costs a member under load (issue 9: "cheap enough to leave on").

Two costs:
- **always paid**: the counting done as requests happen (an integer increment per
  gRPC call started and handled, a histogram observation per WAL batch and per applied
  batch). Measured here with timeit against the time a put takes at the measured rate.
- **per scrape**: rendering /metrics. Measured as load runs (gRPC puts with h2load, JSON
  puts with wrk) with a scraper fetching /metrics every --interval seconds, alternating
  with runs without one, medians over --runs; and the render time itself.

    python bench/metrics_overhead.py --duration 10s --runs 3 --interval 1
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import timeit
import urllib.request

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
import client_api  # noqa: E402
from client_api import FastkvProcess, parse_duration, run_h2load, run_wrk  # noqa: E402


class Scraper(threading.Thread):
    def __init__(self, url: str, interval: float):
        super().__init__(daemon=True)
        self.url, self.interval = url + "/metrics", interval
        self.stop = threading.Event()
        self.times: list[float] = []
        self.size = 0

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            t = time.perf_counter()
            with urllib.request.urlopen(self.url, timeout=10) as r:
                self.size = len(r.read())
            self.times.append(time.perf_counter() - t)


def one(workload: str, scrape: bool, args) -> dict:
    data = tempfile.mkdtemp(prefix="metrics-overhead-")
    srv = FastkvProcess(data_dir=data).start(timeout=60)
    scraper = Scraper(srv.url, args.interval) if scrape else None
    try:
        if scraper:
            scraper.start()
        if workload == "grpc-put":
            res = run_h2load(workload, srv, args, tempfile.mkdtemp(prefix="h2load-"))
        else:
            res = run_wrk(workload, srv, args)
        out = {"rps": res["requests_per_sec"], "p99_ms": res["p99_ms"]}
        if scraper:
            scraper.stop.set()
            scraper.join()
            out["scrapes"] = len(scraper.times)
            out["scrape_ms_median"] = statistics.median(scraper.times) * 1000
            out["scrape_bytes"] = scraper.size
        return out
    finally:
        srv.cleanup()


def counting_cost_ns() -> dict:
    """The counting the server does as requests happen, in nanoseconds."""
    setup = "class M: pass\nm = M(); m.started = 0; m.handled = [0] * 17"
    calls = min(timeit.repeat("m.started += 1; m.handled[0] += 1", setup, number=200_000,
                              repeat=5)) / 200_000 * 1e9
    hist = min(timeit.repeat("h.observe(0.0012)", "from fastkv.metrics import ServerMetrics\n"
                             "h = ServerMetrics().wal_fsync", number=200_000, repeat=5)
               ) / 200_000 * 1e9
    return {"grpc_call_counting_ns": calls, "histogram_observe_ns": hist}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", default="10s")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--interval", type=float, default=1.0, help="seconds between scrapes")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--streams", type=int, default=8)
    p.add_argument("--workloads", default="grpc-put,put")
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    args.duration_s = parse_duration(args.duration)
    args.range_keys = 1000
    results: dict = {"counting": counting_cost_ns(), "workloads": {}}
    for workload in args.workloads.split(","):
        runs: dict[str, list[dict]] = {"off": [], "scraped": []}
        for _ in range(args.runs):   # alternate, so drift hits both alike
            runs["off"].append(one(workload, False, args))
            runs["scraped"].append(one(workload, True, args))
        med = {k: statistics.median(r["rps"] for r in v) for k, v in runs.items()}
        results["workloads"][workload] = {
            "runs": runs, "rps_median": med, "scraped_vs_off": med["scraped"] / med["off"],
            "scrape_ms_median": statistics.median(r["scrape_ms_median"] for r in runs["scraped"]),
        }
        per_req_ns = 1e9 / med["off"]
        results["workloads"][workload]["counting_share_of_a_request"] = \
            results["counting"]["grpc_call_counting_ns"] / per_req_ns
        print(f"{workload}: {med['off']:.0f} req/s without scrapes, {med['scraped']:.0f} with "
              f"one every {args.interval:g}s ({med['scraped'] / med['off']:.3f}x); a scrape "
              f"takes {results['workloads'][workload]['scrape_ms_median']:.1f} ms; counting "
              f"is {results['counting']['grpc_call_counting_ns']:.0f} ns of a "
              f"{per_req_ns / 1000:.1f} us request", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    client_api.BENCH = BENCH
    sys.exit(main())
