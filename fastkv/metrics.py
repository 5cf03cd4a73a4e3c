"""Prometheus metrics, served at ``GET /metrics`` as etcd 3.4 serves them.

The names, types and labels are etcd's (and go-grpc-prometheus's, and the Prometheus
Go client's ``process_*``), for what fastkv has, so dashboards and alerts written for
etcd work unchanged. What does not exist here keeps etcd's name where the meaning
carries over:

- ``etcd_disk_backend_commit_duration_seconds``: etcd commits applied entries to bbolt;
  fastkv applies them to its in-memory MVCC store. The histogram times each applied
  batch (what a client's write waits for after its commit).
- ``etcd_mvcc_db_total_size_in_bytes``: the newest snapshot plus the WAL written since
  (Server.db_size, what the quota counts).

Cheap enough to leave on under load: most values are read from the server's own state
when scraped; what must be counted as it happens costs an integer increment (a gRPC
call's status, a proposal that failed) or one histogram observation per batch (a WAL
fsync, an applied batch), never work per key.
"""
from __future__ import annotations

import bisect
import os
import resource
import time

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


def exponential_buckets(start: float, factor: float, count: int) -> list[float]:
    """Prometheus' ExponentialBuckets: count upper bounds from start, each factor times
    the one before."""
    return [start * factor ** i for i in range(count)]


class Histogram:
    """One Prometheus histogram series: counts per bucket, the sum and the count."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: list[float]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)   # the last: above every bound (+Inf)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        out = []
        sep = "," if labels else ""
        total = 0
        for bound, n in zip(self.bounds, self.counts):
            total += n
            out.append(f'{name}_bucket{{{labels}{sep}le="{_float(bound)}"}} {total}')
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        braces = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{braces} {_float(self.sum)}")
        out.append(f"{name}_count{braces} {self.count}")
        return out


# etcd's buckets (etcdserver/metrics.go, wal/metrics.go, mvcc/backend/metrics.go,
# rafthttp/metrics.go)
DISK_BUCKETS = exponential_buckets(0.001, 2, 14)       # 1 ms .. 8 s
SNAPSHOT_BUCKETS = exponential_buckets(0.01, 2, 17)    # 10 ms .. 655 s
PEER_RTT_BUCKETS = exponential_buckets(0.0001, 2, 16)  # 100 us .. 3.3 s

# grpc-go's codes.Code.String(), the grpc_code label
GRPC_CODE_NAMES = ["OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded",
                   "NotFound", "AlreadyExists", "PermissionDenied", "ResourceExhausted",
                   "FailedPrecondition", "Aborted", "OutOfRange", "Unimplemented", "Internal",
                   "Unavailable", "DataLoss", "Unauthenticated"]


class ServerMetrics:
    """What a member counts as it runs (the rest is read from its state when scraped)."""

    def __init__(self):
        self.leader_changes = 0
        self.proposals_failed = 0
        self.health_success = 0
        self.health_failures = 0
        self.wal_fsync = Histogram(DISK_BUCKETS)
        self.backend_commit = Histogram(DISK_BUCKETS)
        self.snapshot_save = Histogram(SNAPSHOT_BUCKETS)
        self.peer_rtt: dict[int, Histogram] = {}   # peer member ID -> round trips

    def observe_peer_rtt(self, peer: int, seconds: float) -> None:
        h = self.peer_rtt.get(peer)
        if h is None:
            h = self.peer_rtt[peer] = Histogram(PEER_RTT_BUCKETS)
        h.observe(seconds)


def _float(v: float) -> str:
    """Go's strconv.FormatFloat(v, 'g', -1, 64) for the values we print."""
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Text:
    """Prometheus' text exposition format, family by family."""

    def __init__(self):
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_: str, samples) -> None:
        if not samples:
            return   # as the Go client: a vector without series is left out
        self.lines.append(f"# HELP {name} {help_}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            braces = "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels) + "}" \
                if labels else ""
            self.lines.append(f"{name}{braces} {_float(value)}")

    def one(self, name: str, kind: str, help_: str, value, labels=()) -> None:
        self.family(name, kind, help_, [(labels, value)])

    def histogram(self, name: str, help_: str, series) -> None:
        if not series:
            return
        self.lines.append(f"# HELP {name} {help_}")
        self.lines.append(f"# TYPE {name} histogram")
        for labels, h in series:
            self.lines.extend(h.lines(name, ",".join(f'{k}="{_escape(str(v))}"'
                                                     for k, v in labels)))

    def render(self) -> bytes:
        return ("\n".join(self.lines) + "\n").encode()


def _grpc_type(m) -> str:
    if m.client_streaming:
        return "bidi_stream" if m.server_streaming else "client_stream"
    return "server_stream" if m.server_streaming else "unary"


def render(server) -> bytes:
    """The member's metrics, as its /metrics answers them."""
    from fastkv import ETCD_CLUSTER_VERSION, ETCD_SERVER_VERSION
    m: ServerMetrics = server.metrics
    core = server.core
    t = _Text()
    t.one("etcd_cluster_version", "gauge", "Which version is running. 1 for 'cluster_version' "
          "label with current cluster version", 1, (("cluster_version", ETCD_CLUSTER_VERSION),))
    t.one("etcd_server_version", "gauge", "Which version is running. 1 for 'server_version' "
          "label with current version.", 1, (("server_version", ETCD_SERVER_VERSION),))
    t.one("etcd_server_id", "gauge", "Server or member ID in hexadecimal format. 1 for "
          "'server_id' label with current ID.", 1, (("server_id", f"{server.member_id:x}"),))
    t.one("etcd_server_has_leader", "gauge", "Whether or not a leader exists. 1 is existence, "
          "0 is not.", 1 if core.lead else 0)
    t.one("etcd_server_is_leader", "gauge", "Whether or not this member is a leader. 1 if is, "
          "0 otherwise.", 1 if core.lead == server.member_id else 0)
    t.one("etcd_server_is_learner", "gauge", "Whether or not this member is a learner. 1 if "
          "is, 0 otherwise.", 1 if server.member_id in core.learners else 0)
    t.one("etcd_server_leader_changes_seen_total", "counter", "The number of leader changes "
          "seen.", m.leader_changes)
    t.one("etcd_server_proposals_committed_total", "gauge", "The total number of consensus "
          "proposals committed.", core.commit)
    t.one("etcd_server_proposals_applied_total", "gauge", "The total number of consensus "
          "proposals applied.", server.applier.applied_index)
    t.one("etcd_server_proposals_pending", "gauge", "The current number of pending proposals "
          "to commit.", len(server._waiters))
    t.one("etcd_server_proposals_failed_total", "counter", "The total number of failed "
          "proposals seen.", m.proposals_failed)
    t.one("etcd_server_health_success", "counter", "The total number of successful health "
          "checks", m.health_success)
    t.one("etcd_server_health_failures", "counter", "The total number of failed health "
          "checks", m.health_failures)
    t.one("etcd_server_quota_backend_bytes", "gauge", "Current backend storage quota size in "
          "bytes.", server.quota_bytes())
    t.histogram("etcd_disk_wal_fsync_duration_seconds", "The latency distributions of fsync "
                "called by WAL.", [((), m.wal_fsync)])
    t.histogram("etcd_disk_backend_commit_duration_seconds", "The latency distributions of "
                "commit called by backend.", [((), m.backend_commit)])
    t.histogram("etcd_disk_backend_snapshot_duration_seconds", "The latency distribution of "
                "backend snapshots.", [((), m.snapshot_save)])
    size = server.db_size()
    t.one("etcd_mvcc_db_total_size_in_bytes", "gauge", "Total size of the underlying database "
          "physically allocated in bytes.", size)
    t.one("etcd_mvcc_db_total_size_in_use_in_bytes", "gauge", "Total size of the underlying "
          "database logically in use in bytes.", size)
    keys = len(server.store)
    t.one("etcd_mvcc_keys_total", "gauge", "Total number of keys.", keys)
    t.one("etcd_debugging_mvcc_keys_total", "gauge", "Total number of keys.", keys)
    t.one("etcd_debugging_mvcc_watcher_total", "gauge", "Total number of watchers.",
          len(server.hub))
    t.one("etcd_debugging_mvcc_watch_stream_total", "gauge", "Total number of watch streams.",
          server.watch_stream_count())
    t.one("etcd_debugging_mvcc_current_revision", "gauge", "The current revision of store.",
          server.store.rev)
    t.one("etcd_debugging_mvcc_compact_revision", "gauge", "The revision of the last "
          "compaction in store.", server.store.compact_rev)
    t.histogram("etcd_network_peer_round_trip_time_seconds", "Round-Trip-Time histogram "
                "between peers", [((("To", f"{peer:x}"),), h)
                                  for peer, h in sorted(m.peer_rtt.items())])
    _grpc(t, server)
    _process(t, server)
    return t.render()


def _grpc(t: _Text, server) -> None:
    """go-grpc-prometheus' server counters, from the in-loop gRPC transport's methods
    (every method and code from the start, as etcd's InitializeMetrics makes them)."""
    methods = sorted((server.grpc_methods or {}).items())   # None: the grpc.aio transport
    started, handled = [], []
    for path, m in methods:
        service, _, name = path.decode("latin-1").lstrip("/").partition("/")
        base = (("grpc_method", name), ("grpc_service", service), ("grpc_type", _grpc_type(m)))
        started.append((base, m.started))
        for code, n in enumerate(m.handled):   # every code, zeros too, as etcd's
            handled.append(((("grpc_code", GRPC_CODE_NAMES[code]),) + base, n))
    t.family("grpc_server_started_total", "counter", "Total number of RPCs started on the "
             "server.", started)
    t.family("grpc_server_handled_total", "counter", "Total number of RPCs completed on the "
             "server, regardless of success or failure.", handled)


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = resource.getpagesize()


def _boot_time() -> float:
    with open("/proc/stat", "rb") as f:
        for line in f:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    return time.time() - time.monotonic()


def _process(t: _Text, server) -> None:
    """The Prometheus Go client's process collector, from /proc/self."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        utime, stime = int(fields[11]), int(fields[12])
        vsize, rss = int(fields[20]), int(fields[21]) * _PAGE
        fds = len(os.listdir("/proc/self/fd"))
    except (OSError, IndexError, ValueError):
        return   # not Linux: no process metrics, as the Go client on such systems
    t.one("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in "
          "seconds.", (utime + stime) / _CLK_TCK)
    t.one("process_max_fds", "gauge", "Maximum number of open file descriptors.",
          resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    t.one("process_open_fds", "gauge", "Number of open file descriptors.", fds)
    t.one("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", rss)
    t.one("process_start_time_seconds", "gauge", "Start time of the process since unix epoch "
          "in seconds.", _boot_time() + int(fields[19]) / _CLK_TCK)
    t.one("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", vsize)
    vmax = resource.getrlimit(resource.RLIMIT_AS)[0]
    t.one("process_virtual_memory_max_bytes", "gauge", "Maximum amount of virtual memory "
          "available in bytes.", -1 if vmax == resource.RLIM_INFINITY else vmax)

