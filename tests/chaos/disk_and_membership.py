"""Member remove/add cycles, on-disk faults and the after-heal hash check of the nemesis.

A mixin of :class:`nemesis.Nemesis` (it uses its cluster, ``ids``, ``rng``, ``log``,
``status``, ``_alive`` and fault files), giving these fault kinds:

* ``member-replace`` (``-leader``): remove the victim through the cluster API (on another
  member, retried while strict reconfiguration refuses, as etcd would), let it stop, wipe
  its data, add a new member and start it in the victim's place: index i of
  ``cluster.members``, so ``nem.url(i)`` reaches the new member (on new ports);
* ``torn-tail``: SIGKILL the victim, leave an unfinished write at the end of its WAL
  (tests/chaos/diskfaults.py), restart it: it must start, repairing the tail, and catch up;
* ``wal-bitflip``: SIGKILL the victim, flip one bit in a record in the middle of its WAL,
  restart it: it must refuse to start, naming the file (acknowledged data is damaged: etcd
  stops with "wal: crc mismatch"). It is then replaced (remove, wipe, add), as an etcd
  operator would;
* ``snapshot-bitflip``: the same with one bit of the newest snapshot file (the nemesis runs
  with a small --snapshot-count, so there is one). It must never load the damaged file:
  refusing (fastkv; then replaced) or starting from an older snapshot (etcd 3.4 renames a
  broken one ``*.broken``) are both fine, and the hash check below judges the data.

With two victims (5 members) each step goes one member at a time, and every victim is
removed before any replacement is added: strict reconfiguration refuses an add while a
voter is down, as a member refusing to start is.

After healing, :meth:`_check_hashes` asks every member for HashKV at one revision (what
etcd's corruption check compares): a member that applied damaged data stands out.
"""
from __future__ import annotations

import os
import signal
import time
from urllib.parse import urlsplit

import requests

import diskfaults

HASH_TIMEOUT = 10.0
REMOVED_STOPS_WITHIN = 20.0


def compare_hashes(rev: int, revisions: dict, hashes: dict) -> list[str]:
    """The after-heal consistency check: anomalies (strings).

    ``revisions``: member index -> its current revision (None: no status answer), read once
    every member had applied the same index; ``hashes``: member index -> (hash,
    compact revision) of HashKV at ``rev``, or a string saying why there is none. Members at
    the same applied index must be at the same revision, and hold the same data there."""
    problems = []
    if len(set(revisions.values())) > 1:
        problems.append("members at the same applied index are at different revisions: "
                        + ", ".join(f"m{i} {r}" for i, r in sorted(revisions.items())))
    answered = {i: h for i, h in hashes.items() if not isinstance(h, str)}
    for i, h in sorted(hashes.items()):
        if isinstance(h, str):
            problems.append(f"m{i} gave no HashKV at revision {rev}: {h}")
    compacts = {c for _h, c in answered.values()}
    if len(compacts) > 1:
        problems.append("members differ in compact revision: " + ", ".join(
            f"m{i} {c}" for i, (_h, c) in sorted(answered.items())))
    groups: dict[int, list[int]] = {}
    for i, (h, _c) in sorted(answered.items()):
        groups.setdefault(h, []).append(i)
    if len(groups) > 1:
        # Name the members outside the majority (all of them when there is none).
        majority = [g for g in groups.values() if len(g) * 2 > len(answered)]
        odd = sorted(i for g in groups.values() if not majority or g is not majority[0]
                     for i in g)
        problems.append(
            f"HashKV at revision {rev} differs between members (different data): "
            + "; ".join(f"{','.join(f'm{i}' for i in g)} {h:#010x}" for h, g in groups.items())
            + f"; odd: {', '.join(f'm{i}' for i in odd)}")
    return problems


def judge_restart(damage: str, outcome: str, returncode, text: str, path: str
                  ) -> tuple[str | None, str | None]:
    """How a member restarted over damaged data did: (a line to count, an anomaly), one of
    them None. ``outcome``: "started" (healthy), "exited" (with ``returncode``) or "hung";
    ``text``: what it logged; ``path``: the file damaged.

    * torn-tail: it must start, logging the repair of that file;
    * wal-bitflip: it must refuse: exit non-zero, saying it refuses to start, naming the file;
    * snapshot-bitflip: refuse the same way, or start (then without the damaged file, as
      etcd 3.4 does: the hash check after healing judges its data)."""
    name = os.path.basename(path)
    refused = (outcome == "exited" and returncode not in (0, None)
               and "refusing to start" in text and name in text)
    if damage == "torn-tail":
        if outcome == "started" and "torn tail" in text and name in text:
            return "torn-tail: repaired and started", None
        if outcome == "started":
            return None, f"started without noticing the torn tail of {name}"
        return None, f"did not start after a torn tail of {name} ({outcome}): {_last_lines(text)}"
    if refused:
        return f"{damage}: detected, refused to start", None
    if outcome == "started" and damage == "snapshot-bitflip":
        return "snapshot-bitflip: started without the damaged snapshot", None
    if outcome == "started":
        return None, f"started and served over damaged data ({damage}: {name})"
    return None, (f"did not refuse clearly over damaged data ({damage}: {name}; {outcome}, "
                  f"exit {returncode}): {_last_lines(text)}")


class DiskAndMembershipFaults:
    # ---- fault kinds -------------------------------------------------------------------

    def _fault_member_replace(self, kind: str, victims: list[int], hold: float) -> None:
        self.log(f"{kind}: replace {self._names(victims)}")
        self._replace(victims)

    def _fault_torn_tail(self, kind: str, victims: list[int], hold: float) -> None:
        damaged = {}
        for v in victims:
            self._sigkill(v)
            damaged[v], what = diskfaults.tear_wal_tail(self._data_dir(v), self.rng)
            self.log(f"{kind}: m{v} killed, torn tail: {what}")
        self._sleep(hold)
        self._restart_damaged("torn-tail", damaged)

    def _fault_wal_bitflip(self, kind: str, victims: list[int], hold: float) -> None:
        damaged = {}
        for v in victims:
            self._sigkill(v)
            damaged[v], what = diskfaults.flip_wal_bit(self._data_dir(v), self.rng)
            self.log(f"{kind}: m{v} killed, WAL bit flipped: {what}")
        self._restart_damaged("wal-bitflip", damaged)

    def _fault_snapshot_bitflip(self, kind: str, victims: list[int], hold: float) -> None:
        damaged = {}
        for v in victims:
            if not self._wait_for_snapshot(v):
                self.log(f"{kind}: m{v} has no snapshot yet; skipped")
                self._outcome("snapshot-bitflip: skipped (no snapshot yet)")
                continue
            self._sigkill(v)
            damaged[v], what = diskfaults.flip_snapshot_bit(self._data_dir(v), self.rng)
            self.log(f"{kind}: m{v} killed, snapshot bit flipped: {what}")
        self._restart_damaged("snapshot-bitflip", damaged)

    # ---- restarts over damaged files ---------------------------------------------------

    def _restart_damaged(self, damage: str, damaged: dict) -> None:
        """Restart each member of ``damaged`` (index -> the file damaged) and judge how it
        did (:func:`judge_restart`). One that started catches up; one that did not (or must
        not have) is replaced, as an etcd operator would: remove, wipe, add."""
        down = []
        for v, path in damaged.items():
            outcome, text = self._restart_and_watch(v)
            counted, anomaly = judge_restart(damage, outcome,
                                             self.cluster.members[v].proc.returncode, text, path)
            if counted:
                self._outcome(counted)
            if anomaly:
                self.anomalies.append(f"m{v}: {anomaly}")
            if outcome == "started" and (damage != "wal-bitflip"):
                self._wait_caught_up(v)
            else:
                self._sigkill(v)         # a no-op unless it runs on a damaged WAL
                down.append(v)
        if down:
            self._replace(down)

    def _data_dir(self, v: int) -> str:
        """Member v's --data-dir (tests/servers.py passes <its dir>/member)."""
        return os.path.join(self.cluster.members[v].data_dir, "member")

    def _sigkill(self, v: int) -> None:
        m = self.cluster.members[v]
        m.kill(signal.SIGKILL)
        m._log.close()

    def _restart_and_watch(self, v: int, timeout: float = 30.0) -> tuple[str, str]:
        """Start member v on its data: ("started", log) once healthy, ("exited", log) if it
        stops first, ("hung", log) if neither happens in time (then it is killed). The log
        is what this start wrote."""
        m = self.cluster.members[v]
        offset = os.path.getsize(m.log_path) if os.path.exists(m.log_path) else 0
        m.launch()
        deadline = time.monotonic() + timeout
        outcome = "hung"
        while time.monotonic() < deadline:
            if m.proc.poll() is not None:
                outcome = "exited"
                break
            if m.healthy():
                outcome = "started"
                break
            time.sleep(0.1)
        if outcome == "hung":
            self._sigkill(v)
        with open(m.log_path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        self.log(f"m{v} restarted over damaged data: {outcome}"
                 + (f" (exit {m.proc.returncode}): {_last_lines(text, 1)}"
                    if outcome == "exited" else ""))
        return outcome, text

    def _wait_for_snapshot(self, v: int, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while not diskfaults.snapshots(self._data_dir(v)):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    def _outcome(self, what: str) -> None:
        self.outcomes[what] = self.outcomes.get(what, 0) + 1

    # ---- member replacement ------------------------------------------------------------

    def _replace(self, victims: list[int]) -> None:
        """Remove every victim through the API (a running one then stops by itself), wipe
        its data, then add and start a new member in each one's place, one at a time."""
        gone = set()
        for v in victims:
            self._remove(v, avoid=victims)
            m = self.cluster.members[v]
            if m.proc.poll() is None:
                self._wait_stopped(v)
            m.kill(signal.SIGKILL)       # a no-op if it stopped (or never came back)
            m.cleanup()                  # wipes its data dir; its log file stays
            gone.add(v)
            self._outcome("members replaced (remove, wipe, add)")
        for v in victims:
            self._add_new(v, gone)
            gone.discard(v)

    def _cluster_request(self, path: str, body: dict, avoid) -> tuple[int, dict, bool]:
        """POST a membership change to a live member not in ``avoid``, retried (60 s at most)
        while strict reconfiguration refuses it, as etcd's does ("unhealthy cluster" until
        every voter has been connected for 5 s, "not enough started members"), or there is
        no answer or a 503/504 (a leader change, a timeout). Returns (status, body, whether
        an earlier attempt went unanswered: it may have taken effect)."""
        deadline = time.monotonic() + 60
        unanswered = False
        k = 0
        while True:
            targets = [i for i in self._alive() if i not in avoid] or self._alive()
            i = targets[k % len(targets)]
            k += 1
            try:
                r = requests.post(self.url(i) + path, json=body, timeout=10)
                status, data = r.status_code, r.json()
            except (requests.RequestException, ValueError) as exc:
                status, data = 0, {"error": repr(exc)}
            error = str(data.get("error", ""))
            refused = "unhealthy cluster" in error or "not enough started" in error
            if status not in (0, 503, 504) and not refused:
                return status, data, unanswered
            # Refused by the check: nothing happened. Anything else (a timeout) may have.
            unanswered = unanswered or not refused
            if time.monotonic() > deadline:
                raise RuntimeError(f"{path} {body}: no success in 60 s: {status} {data}")
            time.sleep(0.25)

    def _remove(self, v: int, avoid) -> None:
        mid = self.ids[v]
        status, data, unanswered = self._cluster_request(
            "/v3/cluster/member/remove", {"ID": str(mid)}, avoid)
        if status == 404 and unanswered:
            self.log(f"m{v} ({mid:x}) was removed by an attempt whose answer was lost")
        elif status != 200:
            raise RuntimeError(f"member remove of m{v} ({mid:x}): {status} {data}")
        self.log(f"m{v} ({mid:x}) removed from the cluster")

    def _wait_stopped(self, v: int) -> None:
        """A removed member stops by itself (etcd: "the member has been permanently removed
        from the cluster")."""
        m = self.cluster.members[v]
        deadline = time.monotonic() + REMOVED_STOPS_WITHIN
        while m.proc.poll() is None:
            if time.monotonic() > deadline:
                self.anomalies.append(f"m{v} was removed but still runs after "
                                      f"{REMOVED_STOPS_WITHIN:.0f} s")
                return
            time.sleep(0.1)

    def _add_new(self, v: int, gone: set) -> None:
        """Add a new member for index v through the API and start it (state existing, its
        own fault file), then wait until it has caught up."""
        self.members_added += 1
        new = self.cluster.new_member(f"m{v}-{self.members_added}")
        stay = [m for j, m in enumerate(self.cluster.members) if j not in gone]
        new.initial_cluster = ",".join(f"{m.member_name}={m.peer_url}" for m in stay + [new])
        new.extra_args = new.extra_args + ["--experimental-fault-file", self._fault_path(v)]
        status, data, unanswered = self._cluster_request(
            "/v3/cluster/member/add", {"peerURLs": [new.peer_url]}, avoid=gone)
        if status == 200:
            new_id = int(data["member"]["ID"])
        elif status == 409 and unanswered:      # an attempt whose answer was lost added it
            new_id = self._member_id_of(new.peer_url, avoid=gone)
        else:
            raise RuntimeError(f"member add for m{v}: {status} {data}")
        self._write_fault(v, [])
        new.launch()
        self.cluster.members[v] = new
        self.ids[v] = new_id
        self.logs.append(new.log_path)
        self.log(f"m{v} is now {new.member_name} ({new_id:x}) at {new.url}")
        new.wait_healthy(60)
        self._wait_caught_up(v)

    def _member_id_of(self, peer_url: str, avoid) -> int:
        i = next(i for i in self._alive() if i not in avoid)
        members = requests.post(self.url(i) + "/v3/cluster/member/list", json={},
                                timeout=10).json()["members"]
        return int(next(m["ID"] for m in members if peer_url in m.get("peerURLs", [])))

    def _wait_caught_up(self, v: int, timeout: float = 60.0) -> None:
        """Until member v has applied what the others had applied when it came back."""
        others = [self.status(i) for i in self._alive() if i != v]
        target = max((int(s.get("raftAppliedIndex", 0)) for s in others if s), default=0)
        deadline = time.monotonic() + timeout
        while True:
            st = self.status(v)
            if st and int(st.get("raftAppliedIndex", 0)) >= target:
                return
            if time.monotonic() > deadline:
                self.anomalies.append(f"m{v} did not catch up to applied index {target} in "
                                      f"{timeout:.0f} s (at {st and st.get('raftAppliedIndex')})")
                return
            time.sleep(0.1)

    # ---- after healing -----------------------------------------------------------------

    def _check_hashes(self, rep) -> None:
        """Every member, at the same applied index, must hold the same data: HashKV at one
        revision (the lowest any member reports, in case something still moves)."""
        deadline = time.monotonic() + 10
        while True:
            sts = {i: self.status(i, timeout=2) for i in range(self.n)}
            revisions = {i: int(s["header"]["revision"]) if s else None for i, s in sts.items()}
            if len(set(revisions.values())) == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        known = [r for r in revisions.values() if r is not None]
        rev = min(known) if known else 0
        hashes = {i: self._hash_kv(i, rev) for i in range(self.n)}
        problems = compare_hashes(rev, revisions, hashes)
        rep.anomalies += problems
        if not problems:
            rep.note(f"hash check: HashKV at revision {rev} equal on all {self.n} members")

    def _hash_kv(self, i: int, rev: int):
        """(hash, compact revision) of member i's HashKV at rev, through gRPC (etcd 3.4's
        JSON gateway has no HashKV route), or a string saying what went wrong."""
        import grpc
        from fastkv.proto.etcdserverpb import rpc_pb2 as pb
        from fastkv.proto.etcdserverpb import rpc_pb2_grpc as rpc
        u = urlsplit(self.url(i))
        with grpc.insecure_channel(f"{u.hostname}:{u.port}") as ch:
            try:
                r = rpc.MaintenanceStub(ch).HashKV(pb.HashKVRequest(revision=rev),
                                                    timeout=HASH_TIMEOUT)
            except grpc.RpcError as exc:
                return f"{exc.code().name}: {exc.details()}"
        return r.hash, r.compact_revision


def _last_lines(text: str, n: int = 3) -> str:
    return " | ".join(text.strip().splitlines()[-n:])
