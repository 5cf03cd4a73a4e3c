"""A real-process nemesis: a fastkv cluster on loopback, concurrent clients, faults from a seed.

    python tests/chaos/nemesis.py [--seconds S] [--members 3|5] [--seed N] [--workloads a,b] [-v]

Faults (one at a time, chosen and timed by ``random.Random(seed)``; the clients' timing is
not deterministic, so a seed reproduces the fault schedule, not the exact interleaving):

* ``kill``         SIGKILL a random member, restart it on the same data dir after a while;
* ``kill-leader``  the same for the member all others agree leads;
* ``pause``        SIGSTOP a random member, SIGCONT it after a while;
* ``pause-leader`` the same for the leader;
* ``partition``    cut a random member off from the others (both ways), heal after a while;
* ``partition-leader`` the same for the leader. Partitions go through each member's
  ``--experimental-fault-file`` (a test-only flag: the peer transport drops traffic to and
  from the member IDs the file lists); clients still reach every member.
* ``slow-disk``    every WAL and snapshot fsync of a random member takes 50-500 ms longer
  (``fsync-delay`` in its fault file, fastkv/faults.py), back to speed after a while;
* ``slow-disk-leader`` the same for the leader;
* ``clock-jump``   a random member's clock (lease expiry, deadlines) jumps 1-6 s forward, or
  now and then 1-4 s back (``clock-jump`` in its fault file), and back after a while;
* ``clock-jump-leader`` the same for the leader: leases may expire early, as in etcd.
* ``member-replace``, ``member-replace-leader``, ``torn-tail``, ``wal-bitflip``,
  ``snapshot-bitflip``: member remove/add cycles and on-disk damage, detected and never
  applied (tests/chaos/disk_and_membership.py). After healing, every member's HashKV at
  one revision must be equal.

Workloads (tests/chaos/workloads/, each with its own checks; ``--workloads a,b`` picks some):

* register: get/put/CAS on a few keys, checked for linearizability;
* durability: every acknowledged put present on every member after the faults heal;
* append: multi-key txns guarded on revisions, checked for strict serializability
  (tests/checkers/append.py: no lost, duplicated or reordered appends);
* lock: clients contend for a lock (etcd's lock service, on kept-alive leases) and fence
  their writes with its revision, some pausing past their lease TTL; checked by
  tests/checkers/fencing.py (writes in lock order, leases not revoked early);
* watch: watchers on key ranges, resumed on another member when theirs fails and restarted
  at random earlier revisions, checked against the true history (tests/checkers/watch.py:
  ordered, unique, atomic, reliable, resumable, bookmarkable; members start with a 1 s
  --experimental-watch-progress-notify-interval).

``run(...)`` returns a :class:`Report`; ``Report.failed`` is true on any anomaly or lost
write. Every process started is stopped when ``run`` returns or raises (also on Ctrl-C).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
for _p in (HERE, TESTS):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from httpclient import REQUEST_TIMEOUT, NoAnswer, b64, post, unb64  # noqa: E402,F401
from servers import Cluster, FastkvProcess  # noqa: E402
from workloads import DEFAULT_WORKLOADS, WORKLOADS  # noqa: E402
from workloads.durability import compare_durable  # noqa: E402,F401
from disk_and_membership import DiskAndMembershipFaults  # noqa: E402

from fastkv.faults import Directives, render as render_faults  # noqa: E402

# A small --snapshot-count: snapshots are taken (and can be damaged) in short runs.
FAST = ["--heartbeat-interval", "50", "--election-timeout", "500", "--snapshot-count", "300",
        "--experimental-watch-progress-notify-interval", "1s"]
FAULT_KINDS = ("kill", "kill-leader", "pause", "pause-leader", "partition", "partition-leader",
               "slow-disk", "slow-disk-leader", "clock-jump", "clock-jump-leader",
               "member-replace", "member-replace-leader", "torn-tail", "wal-bitflip",
               "snapshot-bitflip")


@dataclass
class Report:
    seed: int
    members: int
    seconds: float
    attempted: int = 0
    acknowledged: int = 0
    indeterminate: int = 0
    failed_reads: int = 0
    faults: dict = field(default_factory=dict)
    anomalies: list = field(default_factory=list)
    lost: list = field(default_factory=list)
    durable_acked: int = 0
    elections: int = 0
    worst_unavailable: float = 0.0
    notes: list = field(default_factory=list)     # one line per workload check, and more
    logs: list = field(default_factory=list)      # the members' log files (kept after the run)

    @property
    def failed(self) -> bool:
        return bool(self.anomalies or self.lost)

    def note(self, line: str) -> None:
        self.notes.append(line)

    def summary(self) -> str:
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())) or "none"
        lines = [
            f"nemesis: seed {self.seed}, {self.members} members, {self.seconds:.0f} s of faults",
            f"  operations: {self.attempted} attempted, {self.acknowledged} acknowledged, "
            f"{self.indeterminate} indeterminate, {self.failed_reads} reads unanswered (dropped)",
            f"  faults injected: {sum(self.faults.values())} ({faults})",
            f"  anomalies found: {len(self.anomalies)}",
            f"  acknowledged writes lost: {len(self.lost)} of {self.durable_acked} "
            f"durability puts acknowledged",
            f"  leader elections seen: {self.elections}",
            f"  worst unavailability window: {self.worst_unavailable:.2f} s",
        ]
        lines += ["  " + n for n in self.notes]
        for a in self.anomalies:
            lines.append("  ANOMALY: " + a)
        if self.lost:
            lines.append(f"  LOST: {self.lost[:20]}{' ...' if len(self.lost) > 20 else ''}")
        if self.failed and self.logs:
            lines.append("  member logs: " + " ".join(self.logs))
        lines.append("nemesis: " + ("FAILED" if self.failed else "passed"))
        return "\n".join(lines)


class Nemesis(DiskAndMembershipFaults):
    def __init__(self, *, members: int = 3, seed: int = 1, seconds: float = 30.0,
                 workloads=DEFAULT_WORKLOADS, fault_kinds=FAULT_KINDS, schedule=None,
                 verbose: bool = False, log=print, **workload_args):
        """``workloads``: names in WORKLOADS; ``workload_args``: ``<name>_<arg>=value`` goes
        to that workload's constructor (e.g. ``register_clients=2``)."""
        self.n = members
        self.seed = seed
        self.seconds = seconds
        self.fault_kinds = tuple(fault_kinds)
        self.schedule = list(schedule or [])   # given: these kinds in turn, each at least once
        self.verbose = verbose
        self._log = log
        self.rng = random.Random(seed)
        self.cluster: Cluster | None = None
        self.stop_clients = threading.Event()
        self.stop_monitor = threading.Event()
        self.lock = threading.Lock()
        self.ok_times: list[float] = []
        self.faults: dict[str, int] = {}
        self.terms_with_leader: set[int] = set()
        self.paused: set[int] = set()
        self.ids: list[int] = []            # member IDs, by index (for the fault files)
        self.fault_dir = ""
        self.fault_files: dict[int, Directives] = {}   # what each member's fault file says
        self.fault_log: list[tuple] = []    # (kind, victims, start, end), now() seconds
        self.anomalies: list[str] = []      # found while injecting faults
        self.outcomes: dict[str, int] = {}  # what faults led to (e.g. damage detected)
        self.logs: list[str] = []           # every member's log file, replaced ones too
        self.members_added = 0
        self.t0 = time.monotonic()
        self.workloads = []
        first = 0
        for name in workloads:
            cls = WORKLOADS[name]
            kw = {k[len(name) + 1:]: v for k, v in workload_args.items()
                  if k.startswith(name + "_")}
            self.workloads.append(cls(self, first, **kw))
            first += 100
        unknown = [k for k in workload_args
                   if not any(k.startswith(w + "_") for w in workloads)]
        if unknown:
            raise TypeError(f"arguments for no workload run: {unknown}")

    def workload(self, name: str):
        return next(w for w in self.workloads if w.name == name)

    # ---- what workloads use ------------------------------------------------------------

    def log(self, msg: str) -> None:
        if self.verbose:
            self._log(f"[{self.now():7.2f}] {msg}")

    def now(self) -> float:
        return time.monotonic() - self.t0

    def url(self, i: int) -> str:
        return self.cluster.members[i].url

    def note_ok(self, when: float) -> None:
        with self.lock:
            self.ok_times.append(when)

    def status(self, i: int, timeout: float = 1.0) -> dict | None:
        try:
            return requests.post(self.url(i) + "/v3/maintenance/status",
                                 json={}, timeout=timeout).json()
        except (requests.RequestException, ValueError):
            return None

    _status = status

    # ---- cluster observation -----------------------------------------------------------

    def _alive(self) -> list[int]:
        return [i for i, m in enumerate(self.cluster.members)
                if m.proc is not None and m.proc.poll() is None and i not in self.paused]

    def _monitor(self) -> None:
        while not self.stop_monitor.wait(0.1):
            for i in self._alive():
                st = self.status(i, timeout=0.5)
                if st and int(st.get("leader", 0)) != 0:
                    with self.lock:
                        self.terms_with_leader.add(int(st.get("raftTerm", 0)))

    def leader(self, timeout: float = 10.0) -> int | None:
        """The member every live member agrees leads, or None if they do not agree in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alive = self._alive()
            sts = {i: self.status(i) for i in alive}
            if all(sts.values()) and sts:
                leads = {int(s.get("leader", 0)) for s in sts.values()}
                ids = {int(s["header"]["member_id"]): i for i, s in sts.items()}
                if len(leads) == 1 and (lead := leads.pop()) in ids:
                    return ids[lead]
            time.sleep(0.1)
        return None

    # ---- faults ------------------------------------------------------------------------
    #
    # Each kind K is injected by the method _fault_<K with - as _>(victims, hold): victims
    # are member indexes (one; with 5 members, half the time two, a minority), hold how long
    # the fault lasts. The method heals the fault before it returns.

    def _inject(self, kind: str) -> None:
        if kind.endswith("-leader"):
            victim = self.leader(timeout=5.0)
            if victim is None:
                self.log(f"{kind}: no agreed leader, skipped")
                return
        else:
            victim = self.rng.randrange(self.n)
        victims = [victim]
        if self.n >= 5 and self.rng.random() < 0.5:
            victims.append(self.rng.choice([i for i in range(self.n) if i != victim]))
        hold = self.rng.uniform(0.5, 2.5)
        self.faults[kind] = self.faults.get(kind, 0) + 1
        base = kind[:-len("-leader")] if kind.endswith("-leader") else kind
        start = self.now()
        getattr(self, "_fault_" + base.replace("-", "_"))(kind, victims, hold)
        self.fault_log.append((kind, list(victims), start, self.now()))

    @staticmethod
    def _names(victims) -> str:
        return ", ".join(f"m{v}" for v in victims)

    def _fault_kill(self, kind: str, victims: list[int], hold: float) -> None:
        members = self.cluster.members
        self.log(f"{kind}: SIGKILL {self._names(victims)} for {hold:.1f} s")
        for v in victims:
            members[v].kill(signal.SIGKILL)
            members[v]._log.close()
        self._sleep(hold)
        self.log(f"restart {self._names(victims)}")
        for v in victims:
            members[v].launch()
        for v in victims:
            members[v].wait_healthy(60)

    def _fault_partition(self, kind: str, victims: list[int], hold: float) -> None:
        others = [i for i in range(self.n) if i not in victims]
        self.log(f"{kind}: {self._names(victims)} cut off from {others} for {hold:.1f} s")
        for v in victims:
            self._write_fault(v, others)
        for i in others:
            self._write_fault(i, victims)
        self._sleep(hold)
        self.log(f"heal the partition of {self._names(victims)}")
        for i in range(self.n):
            self._write_fault(i, [])

    def _fault_pause(self, kind: str, victims: list[int], hold: float) -> None:
        members = self.cluster.members
        self.log(f"{kind}: SIGSTOP {self._names(victims)} for {hold:.1f} s")
        for v in victims:
            self.paused.add(v)
            members[v].proc.send_signal(signal.SIGSTOP)
        self._sleep(hold)
        self.log(f"SIGCONT {self._names(victims)}")
        for v in victims:
            members[v].proc.send_signal(signal.SIGCONT)
            self.paused.discard(v)

    def _fault_slow_disk(self, kind: str, victims: list[int], hold: float) -> None:
        delay = self.rng.uniform(0.05, 0.5)
        self.log(f"{kind}: every fsync of {self._names(victims)} takes {delay * 1000:.0f} ms "
                 f"longer for {hold:.1f} s")
        self._hold_directive(victims, hold, fsync_delay=delay)
        self.log(f"the disk of {self._names(victims)} is back to speed")

    def _fault_clock_jump(self, kind: str, victims: list[int], hold: float) -> None:
        if self.rng.random() < 0.75:
            jump = self.rng.uniform(1.0, 6.0)     # often more than a lock workload lease TTL
        else:
            jump = -self.rng.uniform(1.0, 4.0)
        self.log(f"{kind}: the clock of {self._names(victims)} jumps {jump:+.1f} s "
                 f"for {hold:.1f} s")
        self._hold_directive(victims, hold, clock_offset=jump)
        self.log(f"the clock of {self._names(victims)} jumps back")

    def _hold_directive(self, victims: list[int], hold: float, **directive) -> None:
        """One fault-file directive on the victims for ``hold`` seconds, then off (0) again."""
        for v in victims:
            self._write_fault(v, **directive)
        self._sleep(hold)
        for v in victims:
            self._write_fault(v, **{k: 0.0 for k in directive})

    def _fault_path(self, i: int) -> str:
        return os.path.join(self.fault_dir, f"m{i}.drop")

    def _write_fault(self, i: int, drop: list[int] | None = None, **directives) -> None:
        """Rewrite member i's fault file: ``drop`` (indexes of the members whose traffic it
        drops) and/or fastkv/faults.py directives (``fsync_delay=``, ``clock_offset=``); what
        is not given stays as it was, so one fault's healing leaves another's in place."""
        d = self.fault_files.get(i, Directives())
        if drop is not None:
            d = dataclasses.replace(d, drop=frozenset(self.ids[j] for j in drop))
        d = dataclasses.replace(d, **directives)
        self.fault_files[i] = d
        tmp = self._fault_path(i) + ".tmp"
        with open(tmp, "w") as f:
            f.write(render_faults(d))
        os.replace(tmp, self._fault_path(i))     # the member never reads half a file

    def _sleep(self, s: float) -> None:
        time.sleep(max(0.0, s))

    # ---- the run -----------------------------------------------------------------------

    def run(self) -> Report:
        rep = Report(seed=self.seed, members=self.n, seconds=self.seconds)
        threads: list[threading.Thread] = []
        try:
            self.start_cluster()
            rep.logs = self.logs = [m.log_path for m in self.cluster.members]
            mon = threading.Thread(target=self._monitor, daemon=True, name="monitor")
            mon.start()
            for w in self.workloads:
                threads += w.threads()
            for t in threads:
                t.start()
            end = time.monotonic() + self.seconds
            self._sleep(self.rng.uniform(1.0, 2.0))
            k = 0
            while time.monotonic() < end or k < len(self.schedule):   # a schedule: all of it
                if self.schedule:
                    kind = self.schedule[k % len(self.schedule)]
                else:
                    kind = self.rng.choice(self.fault_kinds)
                k += 1
                self._inject(kind)
                self._sleep(min(self.rng.uniform(1.0, 3.0), end - time.monotonic()))
            # Healed: let the clients run a little on the whole cluster, then stop them.
            self._sleep(1.0)
            self.stop_clients.set()
            for t in threads:
                t.join(timeout=REQUEST_TIMEOUT * 3)
            self.stop_monitor.set()
            mon.join(timeout=5)
            if self._converge(rep):
                for w in self.workloads:
                    w.after_heal(rep)
                self._check_hashes(rep)
        finally:
            self.stop_clients.set()
            self.stop_monitor.set()
            self.teardown()
        self._analyse(rep)
        return rep

    def start_cluster(self) -> None:
        """Start the members (each with its own fault file) and wait for a leader. The caller
        must call teardown() afterwards, also when this raises."""
        self.fault_dir = tempfile.mkdtemp(prefix="fastkv-nemesis-")
        self.cluster = Cluster(FastkvProcess, size=self.n, extra_args=FAST)
        for i, m in enumerate(self.cluster.members):
            m.extra_args = m.extra_args + ["--experimental-fault-file", self._fault_path(i)]
        self.cluster.start(timeout=60)
        self.t0 = time.monotonic()
        sts = [self.status(i, timeout=5) for i in range(self.n)]
        self.ids = [int(st["header"]["member_id"]) for st in sts]
        if self.leader(timeout=20) is None:
            raise RuntimeError("no leader after start")

    def teardown(self) -> None:
        """Stop every member (continuing paused ones first) and remove the fault files."""
        if self.cluster is not None:
            for m in self.cluster.members:      # a stopped process would not see SIGTERM
                if m.proc is not None and m.proc.poll() is None:
                    try:
                        m.proc.send_signal(signal.SIGCONT)
                    except OSError:
                        pass
            self.cluster.stop()
        if self.fault_dir:
            shutil.rmtree(self.fault_dir, ignore_errors=True)

    def _converge(self, rep: Report) -> bool:
        """Wait until every member has applied the same index (30 s at most)."""
        deadline = time.monotonic() + 30
        while True:
            sts = [self.status(i, timeout=2) for i in range(self.n)]
            applied = {int(s.get("raftAppliedIndex", 0)) for s in sts if s}
            if all(sts) and len(applied) == 1:
                return True
            if time.monotonic() > deadline:
                rep.anomalies.append(f"members did not converge in 30 s after healing: "
                                     f"applied indexes {[s and s.get('raftAppliedIndex') for s in sts]}")
                return False
            time.sleep(0.2)

    def _analyse(self, rep: Report) -> None:
        for w in self.workloads:
            w.analyse(rep)
        for w in self.workloads:
            rep.attempted += w.n_attempted
            rep.acknowledged += w.n_acked
            rep.indeterminate += w.n_indeterminate
            rep.failed_reads += w.failed_reads
        rep.faults = dict(self.faults)
        rep.anomalies += self.anomalies
        for what, count in sorted(self.outcomes.items()):
            rep.note(f"{what}: {count}")
        rep.elections = len(self.terms_with_leader)
        done = sorted(self.ok_times)
        if done:
            gaps = [b - a for a, b in zip(done, done[1:])] + [done[0]]
            rep.worst_unavailable = max(gaps)


def run(**kw) -> Report:
    return Nemesis(**kw).run()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--minutes", type=float, default=None, help="overrides --seconds")
    ap.add_argument("--members", type=int, default=3, choices=(3, 5))
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--workloads", default=",".join(DEFAULT_WORKLOADS),
                    help=f"comma-separated, of: {', '.join(sorted(WORKLOADS))}")
    ap.add_argument("--faults", default=",".join(FAULT_KINDS),
                    help=f"comma-separated, of: {', '.join(FAULT_KINDS)}")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    seconds = a.minutes * 60 if a.minutes is not None else a.seconds
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1, 1 << 31)
    workloads = [w for w in a.workloads.split(",") if w]
    faults = [f for f in a.faults.split(",") if f]
    for w in workloads:
        if w not in WORKLOADS:
            ap.error(f"unknown workload {w!r}")
    for f in faults:
        if f not in FAULT_KINDS:
            ap.error(f"unknown fault {f!r}")

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    print(f"nemesis: seed {seed} (reproduce the fault schedule: python tests/chaos/nemesis.py "
          f"--seed {seed} --seconds {seconds:g} --members {a.members})", flush=True)
    try:
        rep = run(members=a.members, seed=seed, seconds=seconds, workloads=workloads,
                  fault_kinds=faults, verbose=a.verbose)
    except KeyboardInterrupt:
        print("nemesis: interrupted; every process stopped", file=sys.stderr)
        return 130
    except Exception as exc:   # noqa: BLE001 - e.g. a member that does not come back
        print(f"nemesis: ERROR {type(exc).__name__}: {exc}\nnemesis: FAILED (every process "
              f"stopped)", file=sys.stderr)
        return 1
    print(rep.summary(), flush=True)
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
