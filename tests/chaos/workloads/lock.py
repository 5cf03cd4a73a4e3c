"""The lock workload: clients contend for one lock, and fence their writes with it.

Each client, in a loop, does what a careful user of etcd's lock service does:

1. grants a lease (TTL ``ttl``) and keeps it alive from a thread (``/v3/lease/keepalive``
   every TTL/3 s, moving to another member when one does not answer);
2. locks ``fence-lock`` with it (``/v3/lock/lock``; fastkv/concurrency.py serves it) and reads
   the create revision of the lock key it gets back: its lock revision;
3. writes the protected key ``fenced`` one to three times, each with a fenced write: a txn
   comparing the lock key's create revision with its lock revision (etcd's Mutex.IsOwner),
   putting ``<client>/<lock revision>/<seq>``. Sometimes (``pause``, a probability) the holder
   first "pauses": stops keeping its lease alive and sleeps for twice its TTL, as a process
   stalled by GC or SIGSTOP would; its lease expires, the next contender gets the lock, and
   the paused holder's fenced writes must be refused (unless faults kept the lease alive);
4. unlocks (``/v3/lock/unlock``) and revokes its lease. A lock attempt without an answer
   gives the lease up the same way (retrying with the same lease could race the server's
   clean-up of the first attempt, which deletes the lock key it made).

After the faults heal, the protected key's history (a watch from revision 1) is checked by
tests/checkers/fencing.py: lock revisions never go backwards, acknowledged writes are there,
refused ones are not; and every lease's fate is sorted out (one kept alive in time must not
be revoked early unless a clock-jump fault may explain it).
"""
from __future__ import annotations

import json
import random
import threading
import time

import requests

from checkers.fencing import (FencedWrite, LeaseLife, Version, check_fencing, check_leases)
from httpclient import REQUEST_TIMEOUT, NoAnswer, b64, unb64

from . import Workload

LOCK_NAME = "fence-lock"
PROTECTED = "fenced"
LEASE_NOT_FOUND = "requested lease not found"


class Refused(Exception):
    """An error answer (etcd's JSON error): the request was answered and did not happen."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.message = message


def call(session: requests.Session, url: str, path: str, body: dict,
         timeout: float = REQUEST_TIMEOUT) -> dict:
    """POST a v3 JSON request: the answer; Refused for an etcd error answer whose message
    says the request certainly did not happen (the lease is gone); NoAnswer otherwise."""
    try:
        r = session.post(url + path, json=body, timeout=timeout)
        data = r.json()
    except (requests.RequestException, ValueError) as exc:
        raise NoAnswer(type(exc).__name__) from None
    if r.status_code == 200 and isinstance(data, dict) and "error" not in data:
        return data
    message = str(data.get("message") or data.get("error")) if isinstance(data, dict) else ""
    if LEASE_NOT_FOUND in message:
        raise Refused(r.status_code, message)
    raise NoAnswer(f"HTTP {r.status_code}: {message[:200]}")


class KeepAlive:
    """Keeps one lease alive from its own thread until stopped or the lease is seen gone."""

    def __init__(self, wl: "LockWorkload", life: LeaseLife, idx: int):
        self.wl = wl
        self.life = life
        self.idx = idx
        self.stopped = threading.Event()
        self.thread = wl.thread(self._run, name=f"keepalive-{life.id:x}")

    def start(self) -> "KeepAlive":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()

    def _run(self) -> None:
        nem, life = self.wl.nem, self.life
        session = requests.Session()
        interval = life.ttl / 3
        wait = interval
        while not self.stopped.wait(wait) and not nem.stop_clients.is_set():
            sent = nem.now()
            try:
                resp = call(session, nem.url(self.idx), "/v3/lease/keepalive",
                            {"ID": str(life.id)}, timeout=interval)
                result = resp["result"]
                ttl = int(result.get("TTL", 0))
            except (NoAnswer, Refused, KeyError, TypeError, ValueError):
                self.idx = (self.idx + 1) % nem.n
                wait = 0.1
                continue
            nem.note_ok(nem.now())
            wait = interval
            if ttl <= 0:
                self.wl.lease_gone(life, nem.now(), "keep-alive answered TTL 0")
                return
            life.renewed.append(sent)     # (also if stopped meanwhile: it did renew)


class LockWorkload(Workload):
    name = "lock"

    def __init__(self, nem, first_client: int = 0, clients: int = 3, ttl: int = 3,
                 pause: float = 0.15):
        super().__init__(nem, first_client)
        self.n_clients = clients
        self.ttl = ttl
        self.pause = pause
        self.writes: list[FencedWrite] = []
        self.leases: list[LeaseLife] = []
        self.acquired = 0
        self.paused = 0
        self.lost_before_use = 0
        self.history: list[Version] | None = None   # read by after_heal

    def threads(self):
        return [self.thread(self._client, self.first_client + c, name=str(c))
                for c in range(self.n_clients)]

    def lease_gone(self, life: LeaseLife, when: float, how: str) -> None:
        with self.lock:
            if life.gone_at is None:
                life.gone_at, life.gone_how = when, how

    # ---- one client -----------------------------------------------------------------------

    def _client(self, cid: int) -> None:
        nem = self.nem
        client = _Client(self, cid, random.Random(nem.seed * 1000 + cid))
        while not nem.stop_clients.is_set():
            client.cycle()

    # ---- checks -----------------------------------------------------------------------------

    def after_heal(self, rep) -> None:
        try:
            self.history = read_history(self.nem, PROTECTED)
        except (NoAnswer, requests.RequestException, ValueError) as exc:
            rep.anomalies.append(f"lock: could not read the history of {PROTECTED!r}: {exc}")

    def analyse(self, rep) -> None:
        if self.history is None:
            rep.note("lock: fencing not checked (the protected key's history was not read)")
        else:
            res = check_fencing(self.writes, self.history)
            rep.note(f"lock: {self.acquired} acquisitions ({self.paused} with a pause, "
                     f"{self.lost_before_use} lost before use); fenced writes: "
                     f"{res.accepted} accepted, {res.refused} refused ({res.refused_paused} "
                     f"after a pause), {res.unknown} unanswered; {res.in_history} versions "
                     f"in the history: {'fenced' if res.ok else 'NOT FENCED'}")
            rep.anomalies += ["lock: " + a for a in res.anomalies]
        jumps = [(s, e) for kind, _victims, s, e in getattr(self.nem, "fault_log", ())
                 if kind.startswith("clock-jump")]
        leases = check_leases(self.leases, jumps)
        fates = ", ".join(f"{k} {v}" for k, v in sorted(leases.fates.items()))
        rep.note(f"lock: {len(self.leases)} leases: {fates or 'none'}")
        rep.anomalies += ["lock: " + a for a in leases.anomalies]


class _Client:
    """One contender: grant, lock, fenced writes, unlock, revoke; again."""

    def __init__(self, wl: LockWorkload, cid: int, rng: random.Random):
        self.wl = wl
        self.nem = wl.nem
        self.cid = cid
        self.rng = rng
        self.idx = cid % wl.nem.n
        self.session = requests.Session()
        self.seq = 0

    def _call(self, path: str, body: dict, timeout: float = REQUEST_TIMEOUT) -> dict:
        """One request to the current member; on no answer, the next member is current."""
        try:
            resp = call(self.session, self.nem.url(self.idx), path, body, timeout)
        except NoAnswer as exc:
            self.nem.log(f"lock client {self.cid} on m{self.idx} {path}: {exc}")
            self.idx = (self.idx + 1) % self.nem.n
            raise
        self.nem.note_ok(self.nem.now())
        return resp

    def cycle(self) -> None:
        life = self._grant()
        if life is None:
            return
        ka = KeepAlive(self.wl, life, self.idx).start()
        try:
            held = self._lock(life)
            if held is not None:
                self._hold(life, ka, *held)
                self._unlock(held[0])
        finally:
            ka.stop()
            self._revoke(life)

    def _grant(self) -> LeaseLife | None:
        while not self.nem.stop_clients.is_set():
            sent = self.nem.now()
            try:
                resp = self._call("/v3/lease/grant", {"TTL": self.wl.ttl})
            except (NoAnswer, Refused):
                time.sleep(0.05)
                continue
            life = LeaseLife(int(resp["ID"]), float(resp["TTL"]), self.cid, renewed=[sent])
            with self.wl.lock:
                self.wl.leases.append(life)
            return life
        return None

    def _lock(self, life: LeaseLife) -> tuple[str, int] | None:
        """(lock key, lock revision) once the lock is ours; None if not (given up)."""
        try:
            key = self._call("/v3/lock/lock", {"name": b64(LOCK_NAME), "lease": str(life.id)},
                             timeout=4 * self.wl.ttl)["key"]
        except Refused as exc:
            self.wl.lease_gone(life, self.nem.now(), f"lock: {exc.message}")
            return None
        except NoAnswer:
            return None
        for _ in range(3):
            try:
                kvs = self._call("/v3/kv/range", {"key": key}).get("kvs") or []
            except NoAnswer:
                continue
            if not kvs:   # the lease expired while we waited: the key went with it
                with self.wl.lock:
                    self.wl.lost_before_use += 1
                return None
            with self.wl.lock:
                self.wl.acquired += 1
            return key, int(kvs[0]["create_revision"])
        return None

    def _hold(self, life: LeaseLife, ka: KeepAlive, key: str, lock_rev: int) -> None:
        nem = self.nem
        paused = self.rng.random() < self.wl.pause
        if paused:
            ka.stop()
            life.paused_at = nem.now()
            with self.wl.lock:
                self.wl.paused += 1
            nem.log(f"lock client {self.cid} pauses holding lock rev {lock_rev}")
            # Long enough for the lease to run out even if a leader change meanwhile gave it
            # its whole TTL again (as etcd's new leader does, plus an election timeout).
            if nem.stop_clients.wait(2 * life.ttl + 1.0):
                return
        for _ in range(self.rng.randint(1, 3)):
            if not self._fenced_write(key, lock_rev, paused) and not paused:
                return      # the lock is lost: writing on would only be refused again
            time.sleep(self.rng.uniform(0.0, 0.05))

    def _fenced_write(self, key: str, lock_rev: int, paused: bool) -> bool:
        """One fenced write, recorded; True unless it was refused."""
        self.seq += 1
        w = FencedWrite(self.cid, lock_rev, self.seq, self.nem.now(), paused=paused)
        with self.wl.lock:
            self.wl.writes.append(w)
        self.wl.attempt()
        body = {"compare": [{"key": key, "target": "CREATE", "result": "EQUAL",
                             "create_revision": str(lock_rev)}],
                "success": [{"request_put": {"key": b64(PROTECTED), "value": b64(w.value)}}]}
        try:
            resp = self._call("/v3/kv/txn", body)
        except (NoAnswer, Refused):
            self.wl.indeterminate()
            return True
        w.complete = self.nem.now()
        w.status = "ok" if resp.get("succeeded") else "fail"
        self.wl.acked(w.complete)
        if w.status == "fail" and not paused:
            self.nem.log(f"lock client {self.cid}: fenced write refused, lock rev {lock_rev} lost")
        return w.status == "ok"

    def _unlock(self, key: str) -> None:
        try:
            self._call("/v3/lock/unlock", {"key": key})
        except (NoAnswer, Refused):
            pass    # the revoke that follows deletes the key too

    def _revoke(self, life: LeaseLife) -> None:
        sent = self.nem.now()
        try:
            self._call("/v3/lease/revoke", {"ID": str(life.id)})
        except Refused as exc:    # gone before our revoke: it expired
            self.wl.lease_gone(life, self.nem.now(), f"revoke: {exc.message}")
            return
        except NoAnswer:
            pass
        life.released_at = sent


def read_history(nem, key: str, timeout: float = 30.0) -> list[Version]:
    """Every version of ``key`` (a watch from revision 1 on a member, until the version a
    linearizable read shows as the newest). NoAnswer if the watch cannot deliver it all."""
    session = requests.Session()
    url = nem.url(0)
    kvs = call(session, url, "/v3/kv/range", {"key": b64(key)}, timeout=10).get("kvs") or []
    if not kvs:
        return []
    newest, count = int(kvs[0]["mod_revision"]), int(kvs[0]["version"])
    out: list[Version] = []
    deadline = time.monotonic() + timeout
    body = {"create_request": {"key": b64(key), "start_revision": "1"}}
    with session.post(url + "/v3/watch", json=body, stream=True, timeout=(5, timeout)) as r:
        for line in r.iter_lines():
            if time.monotonic() > deadline:
                break
            if not line:
                continue
            result = json.loads(line).get("result") or {}
            if result.get("canceled") or result.get("compact_revision"):
                raise NoAnswer(f"watch canceled: {result}")
            for ev in result.get("events") or ():
                kv = ev["kv"]
                out.append(Version(int(kv["mod_revision"]), unb64(kv.get("value", ""))))
            if out and out[-1].mod_revision >= newest:
                break
    if not out or out[-1].mod_revision < newest:
        raise NoAnswer(f"the watch of {key!r} delivered {len(out)} versions, not up to "
                       f"mod revision {newest}")
    if len(out) != count:
        raise NoAnswer(f"the watch of {key!r} delivered {len(out)} versions; the key has "
                       f"version {count}")
    return out
