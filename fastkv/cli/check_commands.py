"""fastkvctl's ``check perf`` and ``check datascale``, as etcdctl 3.4's (ctlv3/command/check.go).

``check perf`` writes 1 KiB values under random 256-byte keys below ``--prefix``
for 60 seconds, at the rate and with the number of clients of the ``--load``
model (s: 150 writes/s from 50 clients, m: 1000/200, l: 8000/500, xl: 15000/1000),
then deletes them (``--auto-compact``, ``--auto-defrag`` clean up after) and
judges the run as etcdctl does: throughput above 90% of the rate, slowest
request under 0.5 s, standard deviation under 0.1 s; each on a PASS/FAIL line,
then PASS (exit 0) or FAIL (exit 1).

``check datascale`` writes the model's number of 1 KiB key-values (s: 10000 from
50 clients ... xl: 3 million) and reports how much the first endpoint's resident
memory (process_resident_memory_bytes on its /metrics) grew.

Both show etcdctl's progress bar (cheggaaa/pb v1 in "Bom !" style) on stdout.
"""
from __future__ import annotations

import base64
import math
import os
import queue
import random
import threading
import time
import urllib.request

from fastkv.cli import flags as fl
from fastkv.cli.transport import ClientError, GatewayClient

__all__ = ["CHECK_COMMAND", "ProgressBar"]

# model: (writes per second, clients, seconds)
PERF_LOADS = {"s": (150, 50, 60), "m": (1000, 200, 60), "l": (8000, 500, 60), "xl": (15000, 1000, 60)}
# model: (key-values, bytes per key-value, clients)
DATASCALE_LOADS = {"s": (10000, 1024, 50), "m": (100000, 1024, 200), "l": (1000000, 1024, 500),
                   "xl": (3000000, 1024, 1000)}
LOAD_ALIASES = {"s": "s", "small": "s", "m": "m", "medium": "m", "l": "l", "large": "l",
                "xl": "xl", "xLarge": "xl"}
WORKER_TIMEOUT = 3600.0   # etcdctl's writers have no deadline


def _main():
    from fastkv.cli import main   # the command layer (avoids an import cycle)
    return main


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def go_duration(seconds: float) -> str:
    from fastkv.cli.v2.gostd import format_duration
    return format_duration(int(seconds) * 10 ** 9)


# -- the progress bar -----------------------------------------------------------------------

def _terminal_width() -> int:
    """pb v1 measures the controlling terminal (/dev/tty); none: width 0, no bar drawn."""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY)
    except OSError:
        return 0
    try:
        return os.get_terminal_size(fd).columns
    except OSError:
        return 0
    finally:
        os.close(fd)


class ProgressBar:
    """cheggaaa/pb v1 with etcdctl's settings: `` 12 / 60 Booooom      !  20.00% 00m47s``,
    redrawn after a carriage return every 200 ms on stdout; without a terminal only the
    counters, the percentage and the time left."""

    REFRESH = 0.2

    def __init__(self, out, total: int):
        self.out = out
        self.total = total
        self.current = 0
        self.width = _terminal_width()
        self.lock = threading.Lock()
        self._finished = threading.Event()
        self.start_time = self.change_time = time.monotonic()

    def start(self) -> None:
        self.start_time = self.change_time = time.monotonic()
        self._write()
        threading.Thread(target=self._refresh, name="progress", daemon=True).start()

    def _refresh(self) -> None:
        while not self._finished.wait(self.REFRESH):
            self._write()

    def add(self, n: int = 1) -> None:
        with self.lock:
            self.current += n
            self.change_time = time.monotonic()

    def finish(self) -> None:
        if self._finished.is_set():
            return
        self._finished.set()
        self._write(final=True)
        with self.lock:
            self.out.write(b"\n")
            self.out.flush()

    def _write(self, final: bool = False) -> None:
        with self.lock:
            current, total = self.current, self.total
            now = time.monotonic()
            percent = current / (total / 100) if total > 0 else current / 100
            percent_box = f" {percent:6.2f}%"
            counters = f" {current} / {total} "
            left_box = ""
            if final:
                left_box = " " + go_duration(now - self.start_time)
            elif current > 0:
                per_entry = (self.change_time - self.start_time) / current
                left = (total - current) * per_entry - (now - self.change_time)
                if int(left) > 0:
                    m, s = divmod(int(left), 60)
                    h, m = divmod(m, 60)
                    left_box = f" {h}h" if h else " "
                    left_box += f"{m:02d}m{s:02d}s"
            bar = ""
            size = self.width - len(counters + "B!" + percent_box + left_box)
            if self.width and size > 0:
                cur = min(size, int(math.ceil(current / total * size))) if total > 0 else 0
                empty = size - cur
                if empty <= 0:
                    bar = "B" + "o" * cur + "!"
                else:
                    bar = "B" + ("o" * (cur - 1) + "m" if cur > 0 else "") + " " * empty + "!"
            line = counters + bar + percent_box + left_box
            if self.width and len(line) < self.width:
                line += " " * (self.width - len(line))
            try:
                self.out.write(("\r" + line).encode())
                self.out.flush()
            except (OSError, ValueError):
                pass


# -- shared pieces ----------------------------------------------------------------------------

def _model(name: str, table: dict) -> tuple:
    m = _main()
    model = LOAD_ALIASES.get(name)
    if model is None:
        raise m.Exit(m.EXIT_BAD_FEATURE, f"unknown load option {name}")
    return table[model]


def _clients(ctx, n: int) -> list[GatewayClient]:
    """n clients like the command's (endpoints, TLS, token), each with its own connection,
    dialled before the load starts, as etcdctl's gRPC clients connect once made: the
    load's latencies do not include connecting."""
    base = ctx.client()
    eps = [f"{s}://[{h}]:{p}" if ":" in h else f"{s}://{h}:{p}" for s, h, p in base.endpoints]
    out = []
    reachable = True
    for _ in range(n):
        c = GatewayClient(eps, base.dial_timeout, WORKER_TIMEOUT, base.ssl_context)
        c.token = base.token
        if reachable:
            try:
                c.connect()
            except ClientError:
                reachable = False   # the first requests dial again and report it
        out.append(c)
    return out


def _prefix_range(prefix: bytes) -> dict:
    """clientv3.WithPrefix: [prefix, its end); an empty prefix is every key."""
    from fastkv.keyrange import prefix_end
    if not prefix:
        return {"key": _b64(b"\x00"), "range_end": _b64(b"\x00")}
    return {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))}


def _check_empty(ctx, prefix: bytes) -> None:
    m = _main()
    resp = m.call(ctx, "/v3/kv/range", dict(_prefix_range(prefix), limit="1"))
    if resp.get("kvs"):
        p = prefix.decode("utf-8", "surrogateescape")
        raise m.Exit(m.EXIT_INVALID_INPUT, f'prefix "{p}" has keys. Delete with etcdctl del --prefix {p} first')


def _random_key(prefix: bytes, size: int) -> bytes:
    """binary.PutVarint(k, rand.Int63n(MaxInt64)) into a zeroed buffer of ``size``."""
    v = random.randrange((1 << 63) - 1)
    ux = v << 1   # zig-zag of a non-negative value
    buf = bytearray()
    while ux >= 0x80:
        buf.append((ux & 0x7F) | 0x80)
        ux >>= 7
    buf.append(ux)
    return prefix + bytes(buf) + bytes(size - len(buf))


class _Stats:
    """etcd's pkg/report: latencies of the successful requests, errors by text."""

    def __init__(self):
        self.lats: list[float] = []
        self.errors: dict[str, int] = {}
        self.lock = threading.Lock()
        self.start = time.monotonic()

    def record(self, took: float, err: str | None) -> None:
        with self.lock:
            if err is not None:
                self.errors[err] = self.errors.get(err, 0) + 1
            else:
                self.lats.append(took)

    def summary(self) -> tuple[float, float, float]:
        total = time.monotonic() - self.start
        n = len(self.lats)
        rps = n / total if total > 0 else 0.0
        avg = sum(self.lats) / n if n else 0.0
        stddev = math.sqrt(sum((x - avg) ** 2 for x in self.lats) / n) if n else 0.0
        slowest = max(self.lats) if n else 0.0
        return rps, slowest, stddev


def _writer(client: GatewayClient, requests: queue.Queue, stats: _Stats, on_done=None) -> None:
    from fastkv.cli.auth_commands import rpc_error_text
    while True:
        body = requests.get()
        if body is None:
            return
        start = time.monotonic()
        err = None
        try:
            client.call("/v3/kv/put", body)
        except ClientError as e:
            err = rpc_error_text(e)
        stats.record(time.monotonic() - start, err)
        if on_done:
            on_done()


def _cleanup(ctx, prefix: bytes, v: dict) -> None:
    """Delete the keys; then --auto-compact and --auto-defrag as etcdctl's compact/defrag."""
    from fastkv.cli.cluster_commands import _endpoint_client
    m = _main()
    resp = m.call(ctx, "/v3/kv/deleterange", _prefix_range(prefix))
    out = ctx.stdout
    if v["auto-compact"]:
        rev = resp.get("header", {}).get("revision", 0)
        out.write(f"Compacting with revision {rev}\n".encode())
        out.flush()
        m.call(ctx, "/v3/kv/compaction", {"revision": str(rev), "physical": True})
        out.write(f"Compacted with revision {rev}\n".encode())
        out.flush()
    if v["auto-defrag"]:
        from fastkv.cli.v2.gostd import quote
        for ep in [e for e in v["endpoints"] if e.strip()]:
            out.write(f"Defragmenting {quote(ep)}\n".encode())
            out.flush()
            client = _endpoint_client(ctx, ep)
            try:
                client.call("/v3/maintenance/defragment", {})
            except ClientError as e:
                raise m.Exit(m.EXIT_ERROR, str(e)) from None
            finally:
                client.close()
            out.write(f"Defragmented {quote(ep)}\n".encode())
            out.flush()


def _print_errors(out, errors: dict[str, int]) -> None:
    out.write(b"FAIL: too many errors\n")
    for text, n in errors.items():
        out.write(f"FAIL: ERROR({text}) -> {n}\n".encode())


# -- check perf --------------------------------------------------------------------------------

def cmd_check_perf(ctx, args: list[str], v: dict) -> int:
    m = _main()
    limit, nclients, duration = _model(v["load"], PERF_LOADS)
    clients = _clients(ctx, nclients)
    prefix = v["prefix"].encode("utf-8", "surrogateescape")
    _check_empty(ctx, prefix)
    value = _b64(bytes(1024))
    out = ctx.stdout
    bar = ProgressBar(out, duration)
    bar.start()
    stats = _Stats()
    requests: queue.Queue = queue.Queue(maxsize=nclients)
    workers = [threading.Thread(target=_writer, args=(c, requests, stats), daemon=True) for c in clients]
    for w in workers:
        w.start()

    def produce() -> None:   # rate.NewLimiter(limit, 1): one write every 1/limit seconds
        interval, end = 1.0 / limit, time.monotonic() + duration
        next_at = time.monotonic()
        while True:
            now = time.monotonic()
            if next_at > now:
                time.sleep(next_at - now)
            if time.monotonic() >= end:
                break
            requests.put({"key": _b64(_random_key(prefix, 256)), "value": value})
            next_at = max(next_at + interval, time.monotonic() - interval)
        for _ in workers:
            requests.put(None)

    def tick() -> None:
        for _ in range(duration):
            time.sleep(1)
            bar.add(1)
        bar.finish()

    threading.Thread(target=produce, name="producer", daemon=True).start()
    ticker = threading.Thread(target=tick, name="ticker", daemon=True)
    ticker.start()
    for w in workers:
        w.join()
    rps, slowest, stddev = stats.summary()
    ticker.join()
    for c in clients:
        c.close()
    _cleanup(ctx, prefix, v)

    ok = True
    if stats.errors:
        _print_errors(out, stats.errors)
        ok = False
    if rps / limit <= 0.9:
        out.write(f"FAIL: Throughput too low: {int(rps) + 1} writes/s\n".encode())
        ok = False
    else:
        out.write(f"PASS: Throughput is {int(rps) + 1} writes/s\n".encode())
    if slowest > 0.5:
        out.write(f"Slowest request took too long: {slowest:f}s\n".encode())
        ok = False
    else:
        out.write(f"PASS: Slowest request took {slowest:f}s\n".encode())
    if stddev > 0.1:
        out.write(f"Stddev too high: {stddev:f}s\n".encode())
        ok = False
    else:
        out.write(f"PASS: Stddev is {stddev:f}s\n".encode())
    out.write(b"PASS\n" if ok else b"FAIL\n")
    out.flush()
    return m.EXIT_SUCCESS if ok else m.EXIT_ERROR


# -- check datascale ------------------------------------------------------------------------

def endpoint_memory(ctx, endpoint: str) -> float:
    """process_resident_memory_bytes from http://<endpoint>/metrics; 0 (after saying why on
    stdout, as etcdctl) if it cannot be had."""
    out = ctx.stdout
    host = endpoint if endpoint.startswith("http://") else "http://" + endpoint
    url = host + "/metrics"
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            text = resp.read().decode("utf-8", "replace")
    except OSError as e:
        out.write(f"fetch error: {e}\n".encode())
        return 0.0
    key = "process_resident_memory_bytes"
    value = ""
    for line in text.split("\n"):
        if line.startswith(key):
            value = line[len(key):].strip()
            break
    if not value:
        out.write(f"could not find: {key}\n".encode())
        return 0.0
    try:
        return float(value)
    except ValueError:
        out.write(f'parse error: strconv.ParseFloat: parsing "{value}": invalid syntax\n'.encode())
        return 0.0


def cmd_check_datascale(ctx, args: list[str], v: dict) -> int:
    m = _main()
    limit, kv_size, nclients = _model(v["load"], DATASCALE_LOADS)
    clients = _clients(ctx, nclients)
    endpoints = [e for e in v["endpoints"] if e.strip()]
    prefix = v["prefix"].encode("utf-8", "surrogateescape")
    _check_empty(ctx, prefix)
    out = ctx.stdout
    before = endpoint_memory(ctx, endpoints[0])
    if before == 0:
        out.write(b"FAIL: Could not read process_resident_memory_bytes before the put operations.\n")
        return m.EXIT_ERROR
    out.write(f"Start data scale check for work load [{limit} key-value pairs, {kv_size} bytes per "
              f"key-value, {nclients} concurrent clients].\n".encode())
    out.flush()
    bar = ProgressBar(out, limit)
    bar.start()
    stats = _Stats()
    requests: queue.Queue = queue.Queue(maxsize=nclients)
    workers = [threading.Thread(target=_writer, args=(c, requests, stats, bar.add), daemon=True)
               for c in clients]
    for w in workers:
        w.start()
    value = _b64(bytes(kv_size // 2))
    for _ in range(limit):
        requests.put({"key": _b64(_random_key(prefix, kv_size // 2)), "value": value})
    for _ in workers:
        requests.put(None)
    for w in workers:
        w.join()
    bar.finish()
    for c in clients:
        c.close()
    after = endpoint_memory(ctx, endpoints[0])
    if after == 0:
        out.write(b"FAIL: Could not read process_resident_memory_bytes after the put operations.\n")
        return m.EXIT_ERROR
    _cleanup(ctx, prefix, v)
    mb_used = (after - before) / (1024 * 1024)
    if stats.errors:
        _print_errors(out, stats.errors)
        out.flush()
        return m.EXIT_ERROR
    out.write(f"PASS: Approximate system memory used : {mb_used:.2f} MB.\n".encode())
    out.flush()
    return m.EXIT_SUCCESS


def _check_flags(kind: str, prefix: str) -> list[fl.Flag]:
    return [
        fl.Flag("load", "string", "s", f"The {kind} check's workload model. Accepted workloads: "
                                       "s(small), m(medium), l(large), xl(xLarge)"),
        fl.Flag("prefix", "string", prefix, f"The prefix for writing the {kind} check's keys."),
        fl.Flag("auto-compact", "bool", False, "Compact storage with last revision after test is finished."),
        fl.Flag("auto-defrag", "bool", False, "Defragment storage after test is finished."),
    ]


CHECK_COMMAND = fl.Command("check", "commands for checking properties of the etcd cluster",
                           "check <subcommand> [flags]", subcommands=[
    fl.Command("perf", "Check the performance of the etcd cluster", "check perf [options] [flags]",
               cmd_check_perf, _check_flags("performance", "/etcdctl-check-perf/")),
    fl.Command("datascale", "Check the memory usage of holding data for different workloads on a given "
                            "server endpoint.", "check datascale [options] [flags]", cmd_check_datascale,
               _check_flags("datascale", "/etcdctl-check-datascale/"),
               description="If no endpoint is provided, localhost will be used. If multiple endpoints "
                           "are provided, first endpoint will be used."),
])
