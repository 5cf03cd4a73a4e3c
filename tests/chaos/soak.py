"""A soak run: thousands of watchers and leases under a steady write load, for a bounded time.

    python tests/chaos/soak.py [--minutes N | --seconds S] [--members 1|3] [--watchers W]
                               [--leases L] [--rate R] [--slow-timeout S] [--seed S] [-v]

On a loopback cluster (members started with ``--experimental-watch-slow-consumer-timeout``
at ``--slow-timeout``, 10 s by default, and ``--snapshot-count`` ``SNAPSHOT_COUNT``):

* **watchers**: W watchers (2000) over a few dozen gRPC watch streams, on a few
  connections per member: single keys, 10-key and 100-key prefixes, and a few on every
  key, some with prev_kv. Writes start once every watcher is created;
* **writes**: a steady R puts/s (100) to 1000 keys, spread over the members, plus a
  few large puts a second to the slow consumers' range. Every 30 s the history older
  than 60 s is compacted (as --auto-compaction-retention would), so the store's own
  size is steady;
* **leases**: L leases (2000) granted at the start, each with a key attached: a tenth
  kept alive, the others left to expire (5-60 s) or revoked at random; revoked and
  expired ones are replaced as the run goes; all are revoked at the end. A watcher on
  the lease keys must see each one put and deleted once;
* **slow consumers**: raw HTTP/2 watch streams (tests/rawgrpc.py) and raw HTTP/1.1
  /v3/watch connections on the large writes' range that stop reading. "pause" ones read
  again once the member logs their cancel and must then get the canceled response with
  the slow-consumer reason; "dead" ones never read again and must see their stream
  reset (HTTP/2) or their connection closed (HTTP/1.1).

Every ~5 s each member's RSS (/proc/<pid>/status VmRSS) and open descriptors
(/proc/<pid>/fd) are sampled, with the writes acknowledged and events delivered so far.

It fails (exit 1) on: an fd leak (after every client has gone, a member holds more
than ``FD_TOLERANCE`` descriptors above what it held before any connected); a missed,
duplicated or reordered event for a normal watcher (counted against the writes
acknowledged); a lease key not put and deleted exactly once; a slow consumer not
canceled or closed as above; writes that stopped (no write acknowledged for
``WRITE_STALL_LIMIT`` s: a slow consumer blocking the applier would do that); an RSS
slope, over the second half of the run, above ``RSS_SLOPE_LIMIT`` MB/min (judged on runs
whose second half spans ``MIN_SLOPE_SPAN`` s at least; printed either way).

Every process started is stopped when the run ends, fails or is interrupted.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import signal
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
for _p in (HERE, TESTS):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from rawgrpc import RawGrpcCall  # noqa: E402
from servers import Cluster, FastkvProcess  # noqa: E402

from fastkv.proto.etcdserverpb import rpc_pb2 as pb  # noqa: E402
from fastkv.proto.etcdserverpb import rpc_pb2_grpc as rpc  # noqa: E402

FAST = ["--heartbeat-interval", "50", "--election-timeout", "500"]
# A member keeps its raft log in memory up to --snapshot-count entries past the last
# snapshot (etcd too): with etcd's 100000 the log alone would grow for ~10 minutes at
# this load, bounded but indistinguishable from a leak in a short run. With 5000 a
# snapshot comes every ~30 s, so the log (5000 catch-up entries + up to 5000 more) is at
# its steady size within the first minute, and snapshots are part of what is soaked.
SNAPSHOT_COUNT = 5000
SAMPLE_EVERY = 5.0
# An RSS slope above this over the second half of a run is a leak. With the history
# compacted the store's size is steady, so what grows is what is never freed. Measured:
# a 5-minute run (defaults) on this 2-core machine stays within about +-0.5 MB/min. A
# leak of 1 KiB per acknowledged write (100/s) would be +5.9 MB/min, of one small
# response (~250 B) per delivered event (~2500/s) +36 MB/min; half a KiB per lease
# churned (~20/s) +0.6 MB/min is below what this can tell from noise.
RSS_SLOPE_LIMIT = 2.0         # MB/min
MIN_SLOPE_SPAN = 60.0         # s: a shorter second half is printed, not judged
# Descriptors a member may hold above its baseline once every client left: a member may
# legitimately hold a new WAL segment or re-dialled peer connection by then. The clients
# alone held a dozen or more per member; a per-connection or per-stream leak shows as that.
FD_TOLERANCE = 3
WRITE_STALL_LIMIT = 5.0       # s without any write acknowledged: the applier was blocked
KEYS = 1000
COMPACT_EVERY = 30.0
COMPACT_RETAIN = 60.0
BIG_VALUE = b"b" * 16384
BIG_RATE = 5.0                # large puts a second, to the slow consumers' range
SLOW_PREFIX = b"soak/big/"
LEASE_PREFIX = b"soak/lease/"
KEEPALIVE_TTL, KEEPALIVE_EVERY = 10, 3.0


def key(i: int) -> bytes:
    return b"soak/k/%04d" % i


def prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


# ---------------------------------------------------------------------------- analysis

@dataclass
class Sample:
    t: float          # seconds since the load started
    member: int
    rss_kb: int
    fds: int
    writes: int       # writes acknowledged so far (all members)
    events: int       # events delivered to the normal watchers so far


def linear_slope(points) -> float:
    """Least-squares slope of (x, y) points; 0 for fewer than two distinct x."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in points) / sxx


@dataclass
class RssTrend:
    first_mb: float
    last_mb: float
    peak_mb: float
    slope_mb_per_min: float   # over the second half of the samples' time span
    span_s: float             # the time the slope was fitted over

    @property
    def growth_mb(self) -> float:
        return self.last_mb - self.first_mb


def rss_trend(samples: list[Sample]) -> RssTrend:
    """One member's RSS trend (samples of that member, in time order)."""
    if not samples:
        return RssTrend(0.0, 0.0, 0.0, 0.0, 0.0)
    mb = [(s.t, s.rss_kb / 1024) for s in samples]
    t0, t1 = mb[0][0], mb[-1][0]
    half = [(t, m) for t, m in mb if t >= (t0 + t1) / 2]
    span = half[-1][0] - half[0][0] if half else 0.0
    return RssTrend(mb[0][1], mb[-1][1], max(m for _, m in mb),
                    linear_slope([(t / 60, m) for t, m in half]), span)


def judge_rss(trend: RssTrend, limit: float = RSS_SLOPE_LIMIT,
              min_span: float = MIN_SLOPE_SPAN) -> str | None:
    """A failure message if the RSS keeps growing faster than ``limit`` MB/min, None if
    not (or if the run is too short to tell)."""
    if trend.span_s < min_span:
        return None
    if trend.slope_mb_per_min > limit:
        return (f"RSS grows {trend.slope_mb_per_min:+.2f} MB/min over the second half "
                f"(limit {limit:g}): {trend.first_mb:.1f} -> {trend.last_mb:.1f} MB")
    return None


def judge_fds(before: int, after: int, tolerance: int = FD_TOLERANCE) -> str | None:
    """A failure message if a member holds more descriptors after every client left than
    before any connected (beyond ``tolerance``)."""
    if after - before > tolerance:
        return f"fd leak: {before} descriptors before the clients, {after} after they left"
    return None


def worst_gap(times: list[float], start: float, end: float) -> float:
    """The longest time in [start, end] with no acknowledgement (times: when each came)."""
    marks = [start] + sorted(t for t in times if start <= t <= end) + [end]
    return max(b - a for a, b in zip(marks, marks[1:]))


@dataclass
class WatchTally:
    """What one normal watcher got: counted, and checked for order as it comes."""
    key: bytes
    end: bytes | None         # None: the single key
    prev_kv: bool = False
    count: int = 0
    last_rev: int = 0
    disorder: int = 0         # events at or below a revision already seen
    canceled: str = ""

    def matches(self, k: bytes) -> bool:
        return k == self.key if self.end is None else self.key <= k < self.end

    def take(self, rev: int) -> None:
        if rev <= self.last_rev:
            self.disorder += 1
        else:
            self.last_rev = rev
        self.count += 1


def expected_range(w: WatchTally, acked: dict, indeterminate: dict) -> tuple[int, int]:
    """The events w must have got: every acknowledged put of its range, and at most the
    indeterminate ones too (a put with no answer may or may not have happened)."""
    if w.end is None:
        return acked.get(w.key, 0), acked.get(w.key, 0) + indeterminate.get(w.key, 0)
    lo = sum(n for k, n in acked.items() if w.matches(k))
    hi = lo + sum(n for k, n in indeterminate.items() if w.matches(k))
    return lo, hi


def watch_anomalies(watchers: list[WatchTally], acked: dict, indeterminate: dict) -> list[str]:
    """Missed, extra, duplicated or reordered events (one line per watcher, at most 20)."""
    out = []
    for i, w in enumerate(watchers):
        lo, hi = expected_range(w, acked, indeterminate)
        what = []
        if w.canceled:
            what.append(f"canceled ({w.canceled})")
        if w.count < lo:
            what.append(f"missed {lo - w.count} of {lo} events")
        elif w.count > hi:
            what.append(f"{w.count - hi} events more than the {hi} writes")
        if w.disorder:
            what.append(f"{w.disorder} events duplicated or out of order")
        if what:
            rng = w.key if w.end is None else f"[{w.key!r}, {w.end!r})"
            out.append(f"watcher {i} on {rng}: " + ", ".join(what))
    return out[:20] + ([f"... and {len(out) - 20} more watchers"] if len(out) > 20 else [])


# ---------------------------------------------------------------------------- the run

@dataclass
class Report:
    members: int
    seconds: float
    watchers: int = 0
    streams: int = 0
    leases: int = 0
    writes: int = 0
    write_fails: int = 0
    big_writes: int = 0
    worst_write_gap: float = 0.0
    events: int = 0
    events_expected: int = 0
    lease_stats: dict = field(default_factory=dict)
    slow: list = field(default_factory=list)          # (name, outcome, ok)
    member_lines: list = field(default_factory=list)
    samples: list = field(default_factory=list)
    failures: list = field(default_factory=list)
    logs: list = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.failures)

    def summary(self) -> str:
        rate = self.writes / self.seconds if self.seconds else 0.0
        ls = self.lease_stats
        lines = [
            f"soak: {self.members} member(s), {self.seconds:.0f} s of load, {self.watchers} "
            f"watchers on {self.streams} streams, {self.leases} leases",
            f"  writes: {self.writes} acknowledged ({rate:.1f}/s), {self.write_fails} failed or "
            f"unanswered; {self.big_writes} large writes to the slow consumers' range; "
            f"worst time without an acknowledgement {self.worst_write_gap:.2f} s",
            f"  events delivered to normal watchers: {self.events} "
            f"(expected {self.events_expected})",
            f"  leases: {ls.get('granted', 0)} granted ({ls.get('kept', 0)} kept alive, "
            f"{ls.get('expiring', 0)} left to expire, {ls.get('revoked', 0)} revoked during the "
            f"run, the rest at the end); lease keys {ls.get('keys', 0)} put, the lease watcher "
            f"saw {ls.get('puts_seen', 0)} puts and {ls.get('deletes_seen', 0)} deletes; "
            f"{ls.get('left', '?')} left at the end",
        ]
        for name, outcome, ok in self.slow:
            lines.append(f"  slow consumer {name}: {outcome}{'' if ok else '  <- FAILED'}")
        lines += ["  " + m for m in self.member_lines]
        for f in self.failures:
            lines.append("  FAILURE: " + f)
        if self.failed and self.logs:
            lines.append("  member logs: " + " ".join(self.logs))
        lines.append("soak: " + ("FAILED" if self.failed else "passed"))
        return "\n".join(lines)


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _fd_targets(pid: int) -> dict[str, str]:
    """fd number -> what it is (for a leak's report)."""
    out = {}
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                out[fd] = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                pass
    except OSError:
        pass
    return out


class SlowGrpc(threading.Thread):
    """A raw HTTP/2 watch stream on the large writes that stops reading after created."""

    def __init__(self, soak: "Soak", name: str, member: int, dead: bool):
        super().__init__(daemon=True, name=name)
        self.soak, self.member, self.dead = soak, member, dead
        port = soak.cluster.members[member].client_port
        self.call = RawGrpcCall("127.0.0.1", port, "/etcdserverpb.Watch/Watch")
        self.call.send_message(pb.WatchRequest(create_request=pb.WatchCreateRequest(
            key=SLOW_PREFIX, range_end=prefix_end(SLOW_PREFIX), prev_kv=True))
            .SerializeToString())
        if not self.call.pump_until(lambda: self.call.messages, 10):
            raise RuntimeError(f"{name}: no created response")
        self.call.reading = False
        self.addr = f"ipv4:127.0.0.1:{self.call.sock.getsockname()[1]}"
        self.outcome, self.ok = "still watching", False
        self.halt = threading.Event()
        self.parsed = 1       # messages looked at (the first was created)
        self.events = 0
        self.last_rev = 0

    def run(self):
        call = self.call
        while not self.halt.is_set() and not call.ended:
            call.pump(0.2)
            if not call.reading and not self.dead and self.soak.member_logged(
                    self.member, "canceled watch", f"from {self.addr}:"):
                call.resume()   # read again: what was buffered, then the cancel
            self._judge()
        self._judge()

    def _judge(self) -> None:
        call = self.call
        if call.reset_code is not None:
            self.outcome = f"stream reset (RST_STREAM {call.reset_code}) after {self.events} events"
            self.ok = self.dead and call.reset_code == 8
            return
        while self.parsed < len(call.messages):
            r = pb.WatchResponse.FromString(call.messages[self.parsed])
            self.parsed += 1
            for ev in r.events:   # what it got before the cancel: in order
                if ev.kv.mod_revision <= self.last_rev:
                    self.outcome, self.ok = "events out of order", False
                    return
                self.last_rev = ev.kv.mod_revision
                self.events += 1
            if r.canceled:
                self.outcome = f"canceled after {self.events} events: {r.cancel_reason!r}"
                self.ok = not self.dead and r.cancel_reason.startswith("watch: slow consumer:")
                return

    def close(self) -> None:
        self.halt.set()
        self.join(timeout=5)
        self.call.close()


class SlowHttp(threading.Thread):
    """A raw HTTP/1.1 /v3/watch on the large writes that stops reading after its head."""

    def __init__(self, soak: "Soak", name: str, member: int, dead: bool):
        super().__init__(daemon=True, name=name)
        self.soak, self.member, self.dead = soak, member, dead
        port = soak.cluster.members[member].client_port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        self.sock.connect(("127.0.0.1", port))
        body = json.dumps({"create_request": {
            "key": base64.b64encode(SLOW_PREFIX).decode(),
            "range_end": base64.b64encode(prefix_end(SLOW_PREFIX)).decode(),
            "prev_kv": True}}).encode()
        self.sock.sendall(b"POST /v3/watch HTTP/1.1\r\nHost: soak\r\nContent-Type: "
                          b"application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                          + b"%x\r\n" % len(body) + body + b"\r\n")
        self.addr = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.outcome, self.ok = "still watching", False
        self.halt = threading.Event()
        self.buf = bytearray()
        self.scanned = 0      # bytes of buf already searched for the cancel
        self.closed = False

    def run(self):
        reading = False
        self.sock.settimeout(0.2)
        while not self.halt.is_set() and not self.closed:
            if not reading:
                if self.dead:   # the member says it closed the stream: see that it did
                    reading = self.soak.member_logged(self.member, "closing it",
                                                      f"from {self.addr} ")
                else:
                    reading = self.soak.member_logged(self.member, "canceled watch",
                                                      f"from {self.addr}:")
                if not reading:
                    time.sleep(0.2)
                    continue
            try:
                data = self.sock.recv(1 << 16)
            except socket.timeout:
                continue
            except OSError:
                data = b""
            if not data:
                self.closed = True
            self.buf += data
            self._judge()
            if self.ok and not self.dead:
                return
        self._judge()

    def _judge(self) -> None:
        """The chunks are JSON lines ({"result": WatchResponse}): look for the cancel."""
        at = -1 if self.dead else self.buf.find(b'"cancel_reason"', self.scanned)
        self.scanned = at if at >= 0 else max(0, len(self.buf) - 32)
        if at >= 0:
            start = self.buf.rfind(b"\n", 0, at) + 1
            end = self.buf.find(b"\n", at)
            if end > 0:
                resp = json.loads(self.buf[start:end])["result"]
                reason = resp.get("cancel_reason", "")
                self.outcome = f"canceled: {reason!r}"
                self.ok = bool(resp.get("canceled")) and reason.startswith(
                    "watch: slow consumer:")
                return
        if self.closed:
            self.outcome = "connection closed by the member"
            self.ok = self.dead

    def close(self) -> None:
        self.halt.set()
        self.join(timeout=5)
        self.sock.close()


class Soak:
    def __init__(self, *, members: int = 1, seconds: float = 60.0, watchers: int = 2000,
                 leases: int = 2000, rate: float = 100.0, streams: int | None = None,
                 slow_timeout: float = 10.0, slow_grpc: int = 2, slow_http: int = 2,
                 big_rate: float = BIG_RATE, seed: int = 1, verbose: bool = False, log=print):
        self.n = members
        self.seconds = seconds
        self.n_watchers = watchers
        self.n_streams = streams or max(1, min(40, watchers // 50))
        self.n_leases = leases
        self.rate = rate
        self.slow_timeout = slow_timeout
        self.slow_grpc, self.slow_http = slow_grpc, slow_http
        self.big_rate = big_rate
        self.rng = random.Random(seed)
        self.verbose = verbose
        self._log = log
        self.cluster: Cluster | None = None
        self.t0 = time.monotonic()
        self.load_start = self.load_end = 0.0
        self.stop = False
        self.samples: list[Sample] = []
        self.acked: dict[bytes, int] = {}
        self.indeterminate: dict[bytes, int] = {}
        self.ack_times: list[float] = []
        self.n_acked = self.n_failed = self.n_big = 0
        self.revs: deque = deque()           # (monotonic time, revision) for compaction
        self.tallies: list[WatchTally] = []
        self.events = 0
        self.lease_puts_seen = self.lease_deletes_seen = 0
        self.lease_keys = 0
        self.leases: dict[int, str] = {}     # id -> "kept" | "revoke" | "expire"
        self.lease_stats = {"granted": 0, "kept": 0, "revoked": 0, "expiring": 0}
        self.lease_anomalies: list[str] = []
        self.slow_clients: list = []
        self._log_cache: dict[int, tuple[float, str]] = {}

    def log(self, msg: str) -> None:
        if self.verbose:
            self._log(f"[{time.monotonic() - self.t0:7.2f}] {msg}")
            sys.stdout.flush()

    def member_logged(self, i: int, *needles: str) -> bool:
        """Has member i's log a line with every needle (re-read at most every 0.5 s)?"""
        now = time.monotonic()
        at, text = self._log_cache.get(i, (0.0, ""))
        if now - at > 0.5:
            try:
                with open(self.cluster.members[i].log_path, errors="replace") as f:
                    text = f.read()
            except OSError:
                text = ""
            self._log_cache[i] = (now, text)
        return any(all(n in line for n in needles) for line in text.splitlines())

    # ---- clients ------------------------------------------------------------------------

    def _channel(self, i: int) -> grpc.aio.Channel:
        # a connection of its own (grpc shares one between equal channels otherwise)
        return grpc.aio.insecure_channel(f"127.0.0.1:{self.cluster.members[i].client_port}",
                                         options=[("grpc.use_local_subchannel_pool", 1)])

    def _plan_watchers(self) -> list[WatchTally]:
        """Every 200th on every key, 5% on 100-key prefixes, 15% on 10-key prefixes, the
        rest on single keys; every third with prev_kv."""
        w = self.n_watchers
        n_all, n_100, n_10 = max(1, w // 200), w * 5 // 100, w * 15 // 100
        out = []
        for i in range(w):
            if i < n_all:
                t = WatchTally(b"soak/k/", prefix_end(b"soak/k/"))
            elif i < n_all + n_100:
                p = b"soak/k/%02d" % self.rng.randrange(KEYS // 100)
                t = WatchTally(p, prefix_end(p))
            elif i < n_all + n_100 + n_10:
                p = b"soak/k/%03d" % self.rng.randrange(KEYS // 10)
                t = WatchTally(p, prefix_end(p))
            else:
                t = WatchTally(key(self.rng.randrange(KEYS)), None)
            t.prev_kv = i % 3 == 0
            out.append(t)
        self.rng.shuffle(out)
        return out

    async def _watch_stream(self, ch, tallies: list[WatchTally], created: asyncio.Event,
                            on_event=None):
        """One gRPC watch stream with these watchers (watch ids 1..n)."""
        reqs = [pb.WatchRequest(create_request=pb.WatchCreateRequest(
            key=t.key, range_end=t.end or b"", prev_kv=t.prev_kv, watch_id=i + 1))
            for i, t in enumerate(tallies)]
        more: asyncio.Queue = asyncio.Queue()

        async def requests():
            for r in reqs:
                yield r
            while True:
                r = await more.get()
                if r is None:
                    return
                yield r
        call = rpc.WatchStub(ch).Watch(requests())
        waiting = len(tallies)
        try:
            async for resp in call:
                t = tallies[resp.watch_id - 1] if 0 < resp.watch_id <= len(tallies) else None
                if resp.created:
                    waiting -= 1
                    if waiting == 0:
                        created.set()
                    continue
                if t is None:
                    continue
                if resp.canceled:
                    t.canceled = resp.cancel_reason or f"compacted at {resp.compact_revision}"
                    continue
                for ev in resp.events:
                    if on_event is not None:
                        on_event(ev)
                    else:
                        t.take(ev.kv.mod_revision)
                        self.events += 1
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            pass
        finally:
            call.cancel()

    async def _put(self, kv, k: bytes, value: bytes, lease: int = 0, big: bool = False) -> bool:
        try:
            resp = await kv.Put(pb.PutRequest(key=k, value=value, lease=lease), timeout=5)
        except grpc.aio.AioRpcError:
            if not big and not lease:
                self.indeterminate[k] = self.indeterminate.get(k, 0) + 1
                self.n_failed += 1
            return False
        now = time.monotonic()
        if big:
            self.n_big += 1
        elif not lease:
            self.acked[k] = self.acked.get(k, 0) + 1
            self.n_acked += 1
            self.ack_times.append(now)
            if self.n_acked % 50 == 0:
                self.revs.append((now, resp.header.revision))
        return True

    async def _writer(self, kvs, rate: float, big: bool):
        sem = asyncio.Semaphore(64)
        started, launched, i = time.monotonic(), 0, 0
        tasks: set = set()

        async def one(kv, k, value):
            try:
                await self._put(kv, k, value, big=big)
            finally:
                sem.release()
        while not self.stop:
            due = int((time.monotonic() - started) * rate)
            while launched < due and not self.stop:
                if sem.locked():
                    break   # 64 in flight: a slow member costs throughput, not memory
                await sem.acquire()
                launched += 1
                i += 1
                if big:
                    k, value = SLOW_PREFIX + b"%d" % (i % 20), BIG_VALUE
                else:
                    k, value = key(self.rng.randrange(KEYS)), b"v%d-" % i + b"x" * 200
                t = asyncio.ensure_future(one(kvs[i % len(kvs)], k, value))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
            await asyncio.sleep(0.01)
        if tasks:
            await asyncio.wait(tasks)

    async def _compactor(self, kv):
        while not self.stop:
            await self._nap(COMPACT_EVERY)
            if self.stop:
                return
            cutoff = time.monotonic() - COMPACT_RETAIN
            rev = 0
            while self.revs and self.revs[0][0] <= cutoff:
                rev = self.revs.popleft()[1]
            if rev:
                try:
                    await kv.Compact(pb.CompactionRequest(revision=rev), timeout=10)
                    self.log(f"compacted at {rev}")
                except grpc.aio.AioRpcError as e:
                    self.log(f"compact {rev}: {e.details()}")

    # ---- leases -------------------------------------------------------------------------

    def _lease_kind(self) -> str:
        r = self.rng.random()
        return "kept" if r < 0.1 else "expire" if r < 0.55 else "revoke"

    async def _grant(self, lessor, kv, kind: str) -> None:
        ttl = KEEPALIVE_TTL if kind == "kept" else self.rng.randint(5, 60) if kind == "expire" \
            else 3600
        try:
            resp = await lessor.LeaseGrant(pb.LeaseGrantRequest(TTL=ttl), timeout=5)
        except grpc.aio.AioRpcError as e:
            self.lease_anomalies.append(f"lease grant failed: {e.details()}")
            return
        self.leases[resp.ID] = kind
        self.lease_stats["granted"] += 1
        if kind != "revoke":
            self.lease_stats["kept" if kind == "kept" else "expiring"] += 1
        if await self._put(kv, LEASE_PREFIX + b"%x" % resp.ID, b"l", lease=resp.ID):
            self.lease_keys += 1

    async def _grant_many(self, lessor, kv, n: int) -> None:
        sem = asyncio.Semaphore(32)

        async def one():
            async with sem:
                await self._grant(lessor, kv, self._lease_kind())
        await asyncio.gather(*(one() for _ in range(n)))

    async def _revoke(self, lessor, lease_id: int) -> None:
        self.leases.pop(lease_id, None)
        try:
            await lessor.LeaseRevoke(pb.LeaseRevokeRequest(ID=lease_id), timeout=5)
        except grpc.aio.AioRpcError as e:
            if "lease not found" not in (e.details() or ""):
                self.lease_anomalies.append(f"revoke {lease_id:x}: {e.details()}")

    async def _lease_churn(self, lessor, kv):
        """Revoke some leases now and then and grant as many new ones; forget the expired."""
        per_tick = max(1, self.n_leases // 200)
        expires: dict[int, float] = {}
        while not self.stop:
            await self._nap(1.0)
            if self.stop:
                return
            revocable = [i for i, k in self.leases.items() if k == "revoke"]
            for lid in self.rng.sample(revocable, min(per_tick, len(revocable))):
                await self._revoke(lessor, lid)
                self.lease_stats["revoked"] += 1
            now = time.monotonic()
            for lid, k in list(self.leases.items()):
                if k == "expire":   # TTL 60 s at most, and the leader checks twice a second
                    expires.setdefault(lid, now + 75)
                    if expires[lid] < now:
                        self.leases.pop(lid, None)
            missing = self.n_leases - len(self.leases)
            if missing > 0:
                await self._grant_many(lessor, kv, min(missing, 4 * per_tick))

    async def _keepalive(self, lessor):
        """Keep the "kept" leases alive over one LeaseKeepAlive stream; a TTL of 0 back
        means one was lost."""
        q: asyncio.Queue = asyncio.Queue()

        async def requests():
            while True:
                r = await q.get()
                if r is None:
                    return
                yield r
        call = lessor.LeaseKeepAlive(requests())

        async def read():
            try:
                async for resp in call:
                    if resp.TTL <= 0 and self.leases.get(resp.ID) == "kept":
                        self.lease_anomalies.append(f"kept-alive lease {resp.ID:x} expired")
            except grpc.aio.AioRpcError as e:
                if not self.stop:
                    self.lease_anomalies.append(f"keepalive stream ended: {e.details()}")
        reader = asyncio.ensure_future(read())
        while not self.stop:
            for lid, k in list(self.leases.items()):
                if k == "kept":
                    q.put_nowait(pb.LeaseKeepAliveRequest(ID=lid))
            await self._nap(KEEPALIVE_EVERY)
        q.put_nowait(None)
        call.cancel()
        reader.cancel()

    def _on_lease_event(self, ev) -> None:
        if ev.type == 0:
            self.lease_puts_seen += 1
        else:
            self.lease_deletes_seen += 1

    # ---- sampling -----------------------------------------------------------------------

    def sample(self) -> None:
        t = time.monotonic() - self.load_start
        for i, m in enumerate(self.cluster.members):
            self.samples.append(Sample(t, i, _rss_kb(m.proc.pid), _fds(m.proc.pid),
                                       self.n_acked, self.events))

    async def _sampler(self):
        while not self.stop:
            self.sample()
            if self.verbose:
                last = self.samples[-self.n:]
                self.log("  ".join(f"m{s.member}: {s.rss_kb / 1024:.1f} MB {s.fds} fds"
                                   for s in last) + f"  writes {self.n_acked} events {self.events}")
            await self._nap(SAMPLE_EVERY)

    def fd_counts(self) -> list[int]:
        return [_fds(m.proc.pid) for m in self.cluster.members]

    # ---- the run ------------------------------------------------------------------------

    def run(self) -> Report:
        rep = Report(members=self.n, seconds=self.seconds)
        try:
            self.start_cluster()
            rep.logs = [m.log_path for m in self.cluster.members]
            fds_before = self._baseline_fds()
            asyncio.run(self._load(rep))
            self.stop = True
            self._close_slow_clients()
            fds_after = self._settled_fds(fds_before)
            self._analyse(rep, fds_before, fds_after)
        finally:
            self.stop = True
            self._close_slow_clients()
            if self.cluster is not None:
                self.cluster.stop()
        return rep

    def _close_slow_clients(self) -> None:
        for c in self.slow_clients:
            try:
                c.close()
            except Exception:   # noqa: BLE001 - going down anyway
                pass

    def start_cluster(self) -> None:
        args = FAST + ["--snapshot-count", str(SNAPSHOT_COUNT),
                       "--experimental-watch-slow-consumer-timeout", f"{self.slow_timeout:g}s"]
        self.cluster = Cluster(FastkvProcess, size=self.n, extra_args=args)
        self.cluster.start(timeout=60)

    def _baseline_fds(self) -> list[int]:
        """Descriptors before any client: once the members' peer connections are up
        (unchanged for 2 s; 10 s at most)."""
        deadline = time.monotonic() + 10
        last, since = self.fd_counts(), time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - since < 2.0:
            time.sleep(0.25)
            now = self.fd_counts()
            if now != last:
                last, since = now, time.monotonic()
        return last

    def _settled_fds(self, before: list[int]) -> list[int]:
        """Descriptors once the members have noticed every client left: back to the
        baseline, or what they hold after 15 s."""
        deadline = time.monotonic() + 15
        while True:
            now = self.fd_counts()
            if all(a <= b for a, b in zip(now, before)) or time.monotonic() > deadline:
                return now
            time.sleep(0.2)

    async def _nap(self, seconds: float) -> None:
        """Sleep, or less if the load stops meanwhile."""
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def _load(self, rep: Report) -> None:
        n = self.n
        self.stopping = asyncio.Event()
        kv_chs = [self._channel(i) for i in range(n)]
        kvs = [rpc.KVStub(ch) for ch in kv_chs]
        lessors = [rpc.LeaseStub(ch) for ch in kv_chs]
        watch_chs = [self._channel(i % n) for i in range(max(n, min(8, self.n_streams)))]
        tasks: list[asyncio.Task] = []
        try:
            # watchers first, all created before any write
            self.tallies = self._plan_watchers()
            per = -(-len(self.tallies) // self.n_streams)
            groups = [self.tallies[i:i + per] for i in range(0, len(self.tallies), per)]
            created = [asyncio.Event() for _ in groups]
            for j, g in enumerate(groups):
                tasks.append(asyncio.ensure_future(
                    self._watch_stream(watch_chs[j % len(watch_chs)], g, created[j])))
            lease_watch = WatchTally(LEASE_PREFIX, prefix_end(LEASE_PREFIX))
            lw_created = asyncio.Event()
            tasks.append(asyncio.ensure_future(self._watch_stream(
                kv_chs[0], [lease_watch], lw_created, on_event=self._on_lease_event)))
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in created + [lw_created])),
                                   120)
            rep.watchers, rep.streams = len(self.tallies), len(groups)
            self.log(f"{rep.watchers} watchers created on {rep.streams} streams")
            await self._grant_many(lessors[0], kvs[0], self.n_leases)
            rep.leases = self.lease_stats["granted"]
            self.log(f"{rep.leases} leases granted")
            for i in range(self.slow_grpc):
                self.slow_clients.append(SlowGrpc(self, f"grpc-{'dead' if i % 2 else 'pause'}-{i}",
                                                  i % n, dead=bool(i % 2)))
            for i in range(self.slow_http):
                self.slow_clients.append(SlowHttp(self, f"http-{'dead' if i % 2 else 'pause'}-{i}",
                                                  i % n, dead=bool(i % 2)))
            for c in self.slow_clients:
                c.start()
            # the load
            self.load_start = time.monotonic()
            tasks.append(asyncio.ensure_future(self._sampler()))
            load = [asyncio.ensure_future(self._writer(kvs, self.rate, big=False)),
                    asyncio.ensure_future(self._writer(kvs, self.big_rate, big=True)),
                    asyncio.ensure_future(self._compactor(kvs[0])),
                    asyncio.ensure_future(self._lease_churn(lessors[0], kvs[0])),
                    asyncio.ensure_future(self._keepalive(lessors[0]))]
            await asyncio.sleep(self.seconds)
            self.stop = True
            self.stopping.set()
            self.load_end = time.monotonic()
            rep.seconds = self.load_end - self.load_start
            await asyncio.wait_for(asyncio.gather(*load, return_exceptions=True), 60)
            self.log(f"load stopped: {self.n_acked} writes acknowledged")
            # every lease goes; every watcher catches up; slow consumers settle
            await asyncio.gather(*(self._revoke(lessors[0], lid) for lid in list(self.leases)))
            await self._catch_up(lease_watch)
            left = await kvs[0].Range(pb.RangeRequest(
                key=LEASE_PREFIX, range_end=prefix_end(LEASE_PREFIX), count_only=True), timeout=10)
            self.lease_stats["left"] = left.count
            await self._slow_settle()
        finally:
            self.stop = True
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for ch in kv_chs + watch_chs:
                await ch.close()

    async def _catch_up(self, lease_watch: WatchTally) -> None:
        """Wait until every watcher has what it should (60 s at most, 15 s with no progress)."""
        deadline = time.monotonic() + 60
        last, last_change = -1, time.monotonic()
        want = [expected_range(t, self.acked, self.indeterminate)[0] for t in self.tallies]
        while time.monotonic() < deadline:
            short = sum(1 for t, n in zip(self.tallies, want) if t.count < n)
            lease_short = self.lease_deletes_seen < self.lease_keys
            if not short and not lease_short:
                return
            progress = self.events + self.lease_deletes_seen
            if progress != last:
                last, last_change = progress, time.monotonic()
            elif time.monotonic() - last_change > 15:
                return
            await asyncio.sleep(0.5)

    async def _slow_settle(self) -> None:
        """Give the slow consumers their cancel and their grace (bounded)."""
        grace = max(self.slow_timeout, 10.0)
        deadline = time.monotonic() + self.slow_timeout + grace + 30
        while time.monotonic() < deadline and not all(c.ok for c in self.slow_clients):
            await asyncio.sleep(0.5)

    def _analyse(self, rep: Report, fds_before: list[int], fds_after: list[int]) -> None:
        rep.writes, rep.write_fails, rep.big_writes = self.n_acked, self.n_failed, self.n_big
        rep.events = self.events
        rep.events_expected = sum(expected_range(t, self.acked, self.indeterminate)[0]
                                  for t in self.tallies)
        rep.samples = list(self.samples)
        rep.failures += watch_anomalies(self.tallies, self.acked, self.indeterminate)
        rep.worst_write_gap = worst_gap(self.ack_times, self.load_start, self.load_end) \
            if self.load_end else 0.0
        if rep.worst_write_gap > WRITE_STALL_LIMIT:
            rep.failures.append(f"no write acknowledged for {rep.worst_write_gap:.1f} s "
                                f"(limit {WRITE_STALL_LIMIT:g}): writes were blocked")
        if not self.n_acked:
            rep.failures.append("no write acknowledged at all")
        ls = dict(self.lease_stats, keys=self.lease_keys, puts_seen=self.lease_puts_seen,
                  deletes_seen=self.lease_deletes_seen)
        rep.lease_stats = ls
        rep.failures += self.lease_anomalies[:10]
        if ls.get("left", 0):
            rep.failures.append(f"{ls['left']} lease keys left after every lease was revoked")
        if self.lease_puts_seen != self.lease_keys or self.lease_deletes_seen != self.lease_keys:
            rep.failures.append(f"lease keys: {self.lease_keys} put, but the watcher saw "
                                f"{self.lease_puts_seen} puts and {self.lease_deletes_seen} "
                                f"deletes")
        for c in self.slow_clients:
            rep.slow.append((c.name, c.outcome, c.ok))
            if not c.ok:
                rep.failures.append(f"slow consumer {c.name}: {c.outcome}")
        for i in range(self.n):
            mine = [s for s in self.samples if s.member == i]
            trend = rss_trend(mine)
            verdict = judge_rss(trend)
            judged = "" if trend.span_s >= MIN_SLOPE_SPAN else " (too short to judge)"
            rep.member_lines.append(
                f"member m{i}: RSS {trend.first_mb:.1f} -> {trend.last_mb:.1f} MB "
                f"({trend.growth_mb:+.1f}, peak {trend.peak_mb:.1f}); slope over the second "
                f"half {trend.slope_mb_per_min:+.2f} MB/min (limit {RSS_SLOPE_LIMIT:g}){judged}; "
                f"fds {fds_before[i]} before the clients, {max(s.fds for s in mine)} at most, "
                f"{fds_after[i]} after")
            if verdict:
                rep.failures.append(f"m{i}: {verdict}")
            fd = judge_fds(fds_before[i], fds_after[i])
            if fd:
                rep.failures.append(f"m{i}: {fd}")


def run(**kw) -> Report:
    return Soak(**kw).run()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--minutes", type=float, default=None, help="overrides --seconds")
    ap.add_argument("--members", type=int, default=1, choices=(1, 3))
    ap.add_argument("--watchers", type=int, default=2000)
    ap.add_argument("--leases", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=100.0, help="puts a second")
    ap.add_argument("--slow-timeout", type=float, default=10.0,
                    help="the members' --experimental-watch-slow-consumer-timeout, seconds")
    ap.add_argument("--big-rate", type=float, default=BIG_RATE,
                    help="large puts a second to the slow consumers' range")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    seconds = a.minutes * 60 if a.minutes is not None else a.seconds
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1, 1 << 31)

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    print(f"soak: seed {seed}, {seconds:g} s, {a.members} member(s), {a.watchers} watchers, "
          f"{a.leases} leases, {a.rate:g} puts/s", flush=True)
    try:
        rep = run(members=a.members, seconds=seconds, watchers=a.watchers, leases=a.leases,
                  rate=a.rate, slow_timeout=a.slow_timeout, big_rate=a.big_rate, seed=seed,
                  verbose=a.verbose)
    except KeyboardInterrupt:
        print("soak: interrupted; every process stopped", file=sys.stderr)
        return 130
    except Exception as exc:   # noqa: BLE001 - e.g. a member that does not start
        print(f"soak: ERROR {type(exc).__name__}: {exc}\nsoak: FAILED (every process stopped)",
              file=sys.stderr)
        return 1
    print(rep.summary(), flush=True)
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
