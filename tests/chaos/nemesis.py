"""A real-process nemesis: a fastkv cluster on loopback, concurrent clients, faults from a seed.

    python tests/chaos/nemesis.py [--seconds S] [--members 3|5] [--seed N] [--clients C] [-v]

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

Workloads (all through the v3 JSON gateway, each client bound to one member and moving to the
next when its member does not answer):

* register: get (linearizable range), put and CAS (a txn comparing the value, or VERSION=0
  for a missing key) on a few keys, every value unique. Recorded as a history of
  tests/checkers/linearizability.py ops: an answered request is "ok"; a read without an
  answer is dropped (it changed nothing); a write without an answer, or with an error answer,
  is "info" (it may or may not have taken effect).
* durability: puts of fresh keys under ``d/``. After the last fault is healed and every
  member has applied the same index, every acknowledged key must be present on every member
  (serializable reads, so each member answers from its own state).

``run(...)`` returns a :class:`Report`; ``Report.failed`` is true on any anomaly or lost
write. Every process started is stopped when ``run`` returns or raises (also on Ctrl-C).
"""
from __future__ import annotations

import argparse
import base64
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
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

from checkers.linearizability import Op, check  # noqa: E402
from servers import Cluster, FastkvProcess  # noqa: E402

FAST = ["--heartbeat-interval", "50", "--election-timeout", "500"]
FAULT_KINDS = ("kill", "kill-leader", "pause", "pause-leader", "partition", "partition-leader")
REQUEST_TIMEOUT = 2.0


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def unb64(s: str) -> str:
    return base64.b64decode(s).decode()


class NoAnswer(Exception):
    """The request got no usable answer: it may or may not have taken effect."""


def post(session: requests.Session, url: str, path: str, body: dict,
         timeout: float = REQUEST_TIMEOUT) -> dict:
    try:
        r = session.post(url + path, json=body, timeout=timeout)
    except requests.RequestException as exc:
        raise NoAnswer(f"{type(exc).__name__}") from None
    if r.status_code != 200:
        raise NoAnswer(f"HTTP {r.status_code}: {r.text[:200]}")
    try:
        return r.json()
    except ValueError:
        raise NoAnswer(f"bad JSON: {r.text[:200]}") from None


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
    check_seconds: float = 0.0
    logs: list = field(default_factory=list)     # the members' log files (kept after the run)

    @property
    def failed(self) -> bool:
        return bool(self.anomalies or self.lost)

    def summary(self) -> str:
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())) or "none"
        lines = [
            f"nemesis: seed {self.seed}, {self.members} members, {self.seconds:.0f} s of faults",
            f"  operations: {self.attempted} attempted, {self.acknowledged} acknowledged, "
            f"{self.indeterminate} indeterminate, {self.failed_reads} reads unanswered (dropped)",
            f"  faults injected: {sum(self.faults.values())} ({faults})",
            f"  anomalies found: {len(self.anomalies)} (linearizability check "
            f"{self.check_seconds:.1f} s)",
            f"  acknowledged writes lost: {len(self.lost)} of {self.durable_acked} "
            f"durability puts acknowledged",
            f"  leader elections seen: {self.elections}",
            f"  worst unavailability window: {self.worst_unavailable:.2f} s",
        ]
        for a in self.anomalies:
            lines.append("  ANOMALY: " + a)
        if self.lost:
            lines.append(f"  LOST: {self.lost[:20]}{' ...' if len(self.lost) > 20 else ''}")
        if self.failed and self.logs:
            lines.append("  member logs: " + " ".join(self.logs))
        lines.append("nemesis: " + ("FAILED" if self.failed else "passed"))
        return "\n".join(lines)


def compare_durable(acked, indeterminate, have_by_member) -> tuple[list[str], list[str]]:
    """The durability check: (lost, anomalies). Lost: "m<i>:<key>" for each acknowledged key
    member i does not hold; anomalies: a member holds a key nobody tried to write."""
    acked, maybe = set(acked), set(indeterminate)
    lost, anomalies = [], []
    for i, have in enumerate(have_by_member):
        lost += [f"m{i}:{k}" for k in sorted(acked - have)]
        unexpected = have - acked - maybe
        if unexpected:
            anomalies.append(f"m{i} holds keys never written: {sorted(unexpected)[:5]}")
    return lost, anomalies


class Nemesis:
    def __init__(self, *, members: int = 3, seed: int = 1, seconds: float = 30.0,
                 clients: int = 4, durability_clients: int = 1, keys: int = 3,
                 fault_kinds=FAULT_KINDS, schedule=None, verbose: bool = False, log=print):
        self.n = members
        self.seed = seed
        self.seconds = seconds
        self.n_clients = clients
        self.n_durable = durability_clients
        self.keys = [f"r{i}" for i in range(keys)]
        self.fault_kinds = tuple(fault_kinds)
        self.schedule = list(schedule or [])   # given: these kinds in turn, not random ones
        self.verbose = verbose
        self._log = log
        self.rng = random.Random(seed)
        self.cluster: Cluster | None = None
        self.stop_clients = threading.Event()
        self.stop_monitor = threading.Event()
        self.lock = threading.Lock()
        self.history: list[Op] = []
        self.attempted = 0
        self.failed_reads = 0
        self.durable_acked: list[str] = []
        self.durable_info: list[str] = []
        self.faults: dict[str, int] = {}
        self.terms_with_leader: set[int] = set()
        self.paused: set[int] = set()
        self.ids: list[int] = []            # member IDs, by index (for the fault files)
        self.fault_dir = ""
        self.t0 = time.monotonic()

    def log(self, msg: str) -> None:
        if self.verbose:
            self._log(f"[{time.monotonic() - self.t0:7.2f}] {msg}")

    # ---- clients -----------------------------------------------------------------------

    def _record(self, op: Op) -> None:
        with self.lock:
            op.id = len(self.history)
            self.history.append(op)

    def _register_client(self, cid: int) -> None:
        rng = random.Random(self.seed * 1000 + cid)
        session = requests.Session()
        idx = cid % self.n
        seq = 0
        last_seen: dict[str, str | None] = {}
        while not self.stop_clients.is_set():
            url = self.cluster.members[idx].url
            key = rng.choice(self.keys)
            r = rng.random()
            seq += 1
            value = f"c{cid}-{seq}"
            with self.lock:
                self.attempted += 1
            t = time.monotonic() - self.t0
            try:
                if r < 0.5:
                    op = Op(0, cid, "get", (key,), t)
                    try:
                        resp = post(session, url, "/v3/kv/range", {"key": b64(key)})
                    except NoAnswer:
                        with self.lock:
                            self.failed_reads += 1
                        raise
                    kvs = resp.get("kvs") or []
                    op.result = unb64(kvs[0]["value"]) if kvs else None
                    last_seen[key] = op.result
                elif r < 0.75 or key not in last_seen:
                    op = Op(0, cid, "put", (key, value), t, status="info")
                    self._record(op)
                    post(session, url, "/v3/kv/put", {"key": b64(key), "value": b64(value)})
                else:
                    expected = last_seen[key]
                    op = Op(0, cid, "cas", (key, expected, value), t, status="info")
                    self._record(op)
                    if expected is None:
                        cmp = {"key": b64(key), "target": "VERSION", "result": "EQUAL",
                               "version": "0"}
                    else:
                        cmp = {"key": b64(key), "target": "VALUE", "result": "EQUAL",
                               "value": b64(expected)}
                    body = {"compare": [cmp],
                            "success": [{"request_put": {"key": b64(key), "value": b64(value)}}]}
                    resp = post(session, url, "/v3/kv/txn", body)
                    op.result = bool(resp.get("succeeded", False))
                    if op.result:
                        last_seen[key] = value
                op.complete = time.monotonic() - self.t0   # set before status: the
                op.status = "ok"                            # checker reads both
                if op.kind == "get":
                    self._record(op)
            except NoAnswer as exc:
                self.log(f"client {cid} on m{idx}: {exc}")
                idx = (idx + 1) % self.n      # try another member next
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.02))

    def _durability_client(self, cid: int) -> None:
        session = requests.Session()
        idx = cid % self.n
        seq = 0
        while not self.stop_clients.is_set():
            seq += 1
            key = f"d/{cid}/{seq}"
            url = self.cluster.members[idx].url
            with self.lock:
                self.attempted += 1
            try:
                post(session, url, "/v3/kv/put", {"key": b64(key), "value": b64("x")})
            except NoAnswer:
                with self.lock:
                    self.durable_info.append(key)
                idx = (idx + 1) % self.n
                time.sleep(0.05)
                continue
            with self.lock:
                self.durable_acked.append(key)
            time.sleep(0.01)

    # ---- cluster observation -----------------------------------------------------------

    def _alive(self) -> list[int]:
        return [i for i, m in enumerate(self.cluster.members)
                if m.proc is not None and m.proc.poll() is None and i not in self.paused]

    def _status(self, i: int, timeout: float = 1.0) -> dict | None:
        try:
            return requests.post(self.cluster.members[i].url + "/v3/maintenance/status",
                                 json={}, timeout=timeout).json()
        except (requests.RequestException, ValueError):
            return None

    def _monitor(self) -> None:
        while not self.stop_monitor.wait(0.1):
            for i in self._alive():
                st = self._status(i, timeout=0.5)
                if st and int(st.get("leader", 0)) != 0:
                    with self.lock:
                        self.terms_with_leader.add(int(st.get("raftTerm", 0)))

    def leader(self, timeout: float = 10.0) -> int | None:
        """The member every live member agrees leads, or None if they do not agree in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alive = self._alive()
            sts = {i: self._status(i) for i in alive}
            if all(sts.values()) and sts:
                leads = {int(s.get("leader", 0)) for s in sts.values()}
                ids = {int(s["header"]["member_id"]): i for i, s in sts.items()}
                if len(leads) == 1 and (lead := leads.pop()) in ids:
                    return ids[lead]
            time.sleep(0.1)
        return None

    # ---- faults ------------------------------------------------------------------------

    def _inject(self, kind: str) -> None:
        """One fault: on one member, or (5 members, half the time) on two at once, a minority."""
        members = self.cluster.members
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
        names = ", ".join(f"m{v}" for v in victims)
        self.faults[kind] = self.faults.get(kind, 0) + 1
        if kind.startswith("kill"):
            self.log(f"{kind}: SIGKILL {names} for {hold:.1f} s")
            for v in victims:
                members[v].kill(signal.SIGKILL)
                members[v]._log.close()
            self._sleep(hold)
            self.log(f"restart {names}")
            for v in victims:
                members[v].launch()
            for v in victims:
                members[v].wait_healthy(60)
        elif kind.startswith("partition"):
            others = [i for i in range(self.n) if i not in victims]
            self.log(f"{kind}: {names} cut off from {others} for {hold:.1f} s")
            for v in victims:
                self._write_fault(v, others)
            for i in others:
                self._write_fault(i, victims)
            self._sleep(hold)
            self.log(f"heal the partition of {names}")
            for i in range(self.n):
                self._write_fault(i, [])
        else:
            self.log(f"{kind}: SIGSTOP {names} for {hold:.1f} s")
            for v in victims:
                self.paused.add(v)
                members[v].proc.send_signal(signal.SIGSTOP)
            self._sleep(hold)
            self.log(f"SIGCONT {names}")
            for v in victims:
                members[v].proc.send_signal(signal.SIGCONT)
                self.paused.discard(v)

    def _fault_path(self, i: int) -> str:
        return os.path.join(self.fault_dir, f"m{i}.drop")

    def _write_fault(self, i: int, drop: list[int]) -> None:
        tmp = self._fault_path(i) + ".tmp"
        with open(tmp, "w") as f:
            f.write("".join(f"{self.ids[j]:x}\n" for j in drop))
        os.replace(tmp, self._fault_path(i))     # the member never reads half a file

    def _sleep(self, s: float) -> None:
        time.sleep(max(0.0, s))

    # ---- the run -----------------------------------------------------------------------

    def run(self) -> Report:
        rep = Report(seed=self.seed, members=self.n, seconds=self.seconds)
        threads: list[threading.Thread] = []
        try:
            self.start_cluster()
            rep.logs = [m.log_path for m in self.cluster.members]
            mon = threading.Thread(target=self._monitor, daemon=True, name="monitor")
            mon.start()
            for c in range(self.n_clients):
                threads.append(threading.Thread(target=self._register_client, args=(c,),
                                                daemon=True, name=f"register-{c}"))
            for c in range(self.n_durable):
                threads.append(threading.Thread(target=self._durability_client,
                                                args=(self.n_clients + c,), daemon=True,
                                                name=f"durable-{c}"))
            for t in threads:
                t.start()
            end = time.monotonic() + self.seconds
            self._sleep(self.rng.uniform(1.0, 2.0))
            k = 0
            while time.monotonic() < end:
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
            self._check_durability(rep)
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
        sts = [self._status(i, timeout=5) for i in range(self.n)]
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

    def _check_durability(self, rep: Report) -> None:
        """Once every member has applied the same index, each must hold every acknowledged key."""
        deadline = time.monotonic() + 30
        while True:
            sts = [self._status(i, timeout=2) for i in range(self.n)]
            applied = {int(s.get("raftAppliedIndex", 0)) for s in sts if s}
            if all(sts) and len(applied) == 1:
                break
            if time.monotonic() > deadline:
                rep.anomalies.append(f"members did not converge in 30 s after healing: "
                                     f"applied indexes {[s and s.get('raftAppliedIndex') for s in sts]}")
                break
            time.sleep(0.2)
        have = []
        for m in self.cluster.members:
            body = {"key": b64("d/"), "range_end": b64("d0"), "keys_only": True,
                    "serializable": True}
            resp = requests.post(m.url + "/v3/kv/range", json=body, timeout=30).json()
            have.append({unb64(kv["key"]) for kv in resp.get("kvs") or []})
        rep.durable_acked = len(set(self.durable_acked))
        rep.lost, anomalies = compare_durable(self.durable_acked, self.durable_info, have)
        rep.anomalies += anomalies

    def _analyse(self, rep: Report) -> None:
        hist = self.history
        rep.attempted = self.attempted
        rep.failed_reads = self.failed_reads
        rep.acknowledged = sum(1 for op in hist if op.status == "ok") + len(self.durable_acked)
        rep.indeterminate = sum(1 for op in hist if op.status == "info") + len(self.durable_info)
        rep.faults = dict(self.faults)
        rep.elections = len(self.terms_with_leader)
        done = sorted(op.complete for op in hist if op.status == "ok")
        if done:
            gaps = [b - a for a, b in zip(done, done[1:])] + [done[0]]
            rep.worst_unavailable = max(gaps)
        t = time.monotonic()
        res = check(hist)
        rep.check_seconds = time.monotonic() - t
        if not res.ok:
            rep.anomalies.append(res.report)


def run(**kw) -> Report:
    return Nemesis(**kw).run()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--minutes", type=float, default=None, help="overrides --seconds")
    ap.add_argument("--members", type=int, default=3, choices=(3, 5))
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    seconds = a.minutes * 60 if a.minutes is not None else a.seconds
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1, 1 << 31)

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    print(f"nemesis: seed {seed} (reproduce the fault schedule: python tests/chaos/nemesis.py "
          f"--seed {seed} --seconds {seconds:g} --members {a.members})", flush=True)
    try:
        rep = run(members=a.members, seed=seed, seconds=seconds, clients=a.clients,
                  verbose=a.verbose)
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
