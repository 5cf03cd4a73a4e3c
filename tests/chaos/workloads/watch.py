"""The watch workload: watchers on key ranges under ``w/``, resumed and restarted while writers
write, checked for etcd's watch guarantees (tests/checkers/watch.py).

Writers put, delete, delete ranges and run multi-key txns on ten keys ``w/k0``..``w/k9``
(and now and then put ``w/rare``), every value unique, and record what each write was
acknowledged with (its revision) or that it went unanswered.

Each watcher watches one key range through the JSON gateway's streaming POST /v3/watch (the
whole prefix, a sub-range, a single key; some with progress_notify, prev_kv, a filter, or a
progress_request right after the create). Every watch stream is one *session*, recorded whole.
A session ends when

* its member stops answering (no line within the read timeout: killed, paused) or the stream
  breaks: the watcher *resumes* on another member from the last revision the session vouched
  for + 1 (its highest event or progress notification revision);
* its time is up (a few seconds, at random): the watcher *restarts*, on a random member, from
  a random earlier revision;
* the run stops.

After the faults heal, the true history is read on every member by a watch from revision 1
(up to a sentinel written then): the members must agree, the history must hold exactly the
writes (every acknowledged one at its revision, no value twice, each txn whole, the final
values), and every session is checked against it.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field

import requests

from checkers.watch import DELETE, PUT, Event, Response, Session, check, effective_start
from httpclient import NoAnswer, b64, post, unb64

from . import Workload

PREFIX, PREFIX_END = "w/", "w0"
SENTINEL = "w/end"             # written after the run: the end of the true history
RARE = "w/rare"                # put by one write in 200
READ_TIMEOUT = 2.0             # a watch stream silent this long: its member is taken as gone

# What each watcher watches (cycled when there are more watchers than specs).
WATCH_SPECS = [
    {"key": PREFIX, "range_end": PREFIX_END, "progress_notify": True},
    {"key": "w/k2", "range_end": "w/k6", "prev_kv": True},
    {"key": "w/k3", "progress_notify": True, "progress_request": True},
    {"key": PREFIX, "range_end": PREFIX_END, "prev_kv": True, "filters": ("NODELETE",)},
    # a key seldom written: mostly progress notifications, each vouching for its revision
    {"key": RARE, "progress_notify": True},
]
RESTART_WINDOW = 2000          # a restart goes back at most this many revisions


@dataclass
class Write:
    """One write a writer attempted: the puts it made, the keys or ranges it deleted."""
    client: int
    puts: list = field(default_factory=list)        # [(key, value)]
    deletes: list = field(default_factory=list)     # [(key, range_end or None)]
    status: str = "info"                            # "ok" once acknowledged
    rev: int = 0                                    # the acknowledged revision
    deleted: int = 0                                # keys the acknowledged deletes removed


def event_from_json(ev: dict) -> Event:
    kv = ev["kv"]
    prev = ev.get("prev_kv")
    return Event(rev=int(kv.get("mod_revision", 0)), key=unb64(kv["key"]),
                 type=ev.get("type", PUT), value=unb64(kv.get("value", "")),
                 create_rev=int(kv.get("create_revision", 0)), version=int(kv.get("version", 0)),
                 lease=int(kv.get("lease", 0)),
                 prev=None if prev is None else event_from_json({"kv": prev}))


def response_from_json(res: dict) -> Response:
    return Response(rev=int(res.get("header", {}).get("revision", 0)),
                    events=[event_from_json(e) for e in res.get("events") or []],
                    created=bool(res.get("created")), canceled=bool(res.get("canceled")),
                    compact_revision=int(res.get("compact_revision", 0)),
                    fragment=bool(res.get("fragment")))


def check_history_against_writes(history, writes, final: dict) -> list[str]:
    """The true history holds exactly the writes: each put value once (and only values a
    writer tried), every acknowledged write at its revision, each txn whole at one revision,
    and the last event of each key equal to the key's final value (``final``: key ->
    (value, mod_revision) read after the run). Returns anomalies."""
    out: list[str] = []
    put_at: dict[str, tuple] = {}           # value -> (revision, key)
    deletes_at: dict[int, list] = {}
    last: dict[str, Event] = {}
    for rev, events in history:
        for ev in events:
            last[ev.key] = ev
            if ev.type == DELETE:
                deletes_at.setdefault(rev, []).append(ev.key)
            elif ev.value in put_at:
                out.append(f"watch history: value {ev.value!r} put twice (revisions "
                           f"{put_at[ev.value][0]} and {rev})")
            else:
                put_at[ev.value] = (rev, ev.key)
    tried = {v: k for w in writes for k, v in w.puts}
    for value, (rev, key) in put_at.items():
        if tried.get(value) != key:
            out.append(f"watch history: {key}={value!r} at revision {rev} was never written")
    for rev, keys in deletes_at.items():
        for key in keys:
            if not any(_covers(d, key) for w in writes for d in w.deletes):
                out.append(f"watch history: {key} deleted at revision {rev}, which no write "
                           f"tried")
    changed = [w.rev for w in writes if w.status == "ok" and (w.puts or w.deleted)]
    if len(changed) != len(set(changed)):
        dup = sorted({r for r in changed if changed.count(r) > 1})
        out.append(f"watch history: two acknowledged writes at one revision: {dup[:5]}")
    for w in writes:
        found = [(v, put_at.get(v)) for _, v in w.puts]
        revs = {at[0] for _, at in found if at is not None}
        if w.status == "ok" and w.puts and revs != {w.rev}:
            out.append(f"watch history: acknowledged write {w.puts} at revision {w.rev} is "
                       f"not there whole (found at {sorted(revs) or 'no revision'})")
        elif len(revs) > 1 or revs and any(at is None for _, at in found):
            out.append(f"watch history: write {w.puts} applied in part: {found}")
        if w.status == "ok" and w.deleted and len(deletes_at.get(w.rev, ())) != w.deleted:
            out.append(f"watch history: acknowledged delete of {w.deleted} key(s) at revision "
                       f"{w.rev}, the history has {deletes_at.get(w.rev, [])}")
    for key in sorted(set(last) | set(final)):
        ev = last.get(key)
        want = None if ev is None or ev.type == DELETE else (ev.value, ev.rev)
        if final.get(key) != want:
            out.append(f"watch history: {key} is {final.get(key)} after the run, its last "
                       f"event says {want}")
    return out


class WatchWorkload(Workload):
    name = "watch"

    def __init__(self, nem, first_client: int = 0, writers: int = 2, watchers: int = 5,
                 keys: int = 10, session_seconds: tuple = (2.0, 6.0)):
        super().__init__(nem, first_client)
        self.n_writers = writers
        self.n_watchers = watchers
        self.keys = [f"w/k{i}" for i in range(keys)]
        self.session_seconds = session_seconds
        self.writes: list[Write] = []
        self.sessions: list[Session] = []
        self.result = None              # the WatchCheck, once after_heal ran

    def threads(self):
        return ([self.thread(self._writer, self.first_client + c, name=f"writer{c}")
                 for c in range(self.n_writers)]
                + [self.thread(self._watcher, w, name=f"watcher{w}")
                   for w in range(self.n_watchers)])

    # ---- writers -------------------------------------------------------------------------

    def _writer(self, cid: int) -> None:
        nem = self.nem
        rng = random.Random(nem.seed * 1000 + cid)
        session = requests.Session()
        idx = cid % nem.n
        seq = 0
        while not nem.stop_clients.is_set():
            seq += 1
            w, path, body = self._next_write(rng, cid, seq)
            with self.lock:
                self.writes.append(w)
            self.attempt()
            try:
                resp = post(session, nem.url(idx), path, body)
            except NoAnswer as exc:
                nem.log(f"watch writer {cid} on m{idx}: {exc}")
                self.indeterminate()
                idx = (idx + 1) % nem.n
                time.sleep(0.05)
                continue
            w.rev = int(resp["header"]["revision"])
            w.deleted = _deleted(resp)
            w.status = "ok"
            self.acked()
            time.sleep(rng.uniform(0.0, 0.03))

    def _next_write(self, rng: random.Random, cid: int, seq: int):
        """A put, a delete, a range delete or a multi-key txn, with unique values."""
        r = rng.random()
        w = Write(cid)
        if r < 0.005:
            w.puts.append((RARE, f"c{cid}-{seq}"))
            return w, "/v3/kv/put", {"key": b64(RARE), "value": b64(w.puts[0][1])}
        if r < 0.45:
            key = rng.choice(self.keys)
            w.puts.append((key, f"c{cid}-{seq}"))
            return w, "/v3/kv/put", {"key": b64(key), "value": b64(w.puts[0][1])}
        if r < 0.6:
            key = rng.choice(self.keys)
            w.deletes.append((key, None))
            return w, "/v3/kv/deleterange", {"key": b64(key)}
        if r < 0.7:   # several keys at one revision (w/k7, w/k8)
            w.deletes.append(("w/k7", "w/k9"))
            return w, "/v3/kv/deleterange", {"key": b64("w/k7"), "range_end": b64("w/k9")}
        keys = rng.sample(self.keys, rng.randint(2, 4))
        ops = []
        for j, key in enumerate(keys[:-1]):
            w.puts.append((key, f"c{cid}-{seq}.{j}"))
            ops.append({"request_put": {"key": b64(key), "value": b64(w.puts[-1][1])}})
        if rng.random() < 0.5:
            w.deletes.append((keys[-1], None))
            ops.append({"request_delete_range": {"key": b64(keys[-1])}})
        return w, "/v3/kv/txn", {"compare": [], "success": ops}

    # ---- watchers ------------------------------------------------------------------------

    def _watcher(self, wid: int) -> None:
        nem = self.nem
        rng = random.Random(nem.seed * 1000 + 500 + wid)
        spec = WATCH_SPECS[wid % len(WATCH_SPECS)]
        idx = wid % nem.n
        start, resumes, k = 0, None, 0
        while not nem.stop_clients.is_set():
            k += 1
            s = Session(f"w{wid}.{k}@m{idx}", spec["key"], spec.get("range_end"), start,
                        tuple(spec.get("filters", ())), bool(spec.get("prev_kv")),
                        bool(spec.get("progress_notify")), resumes=resumes)
            with self.lock:
                self.sessions.append(s)
            until = time.monotonic() + rng.uniform(*self.session_seconds)
            why = self._run_session(s, nem.url(idx), spec, until)
            h = s.horizon()
            if why == "restart":
                # cancel and start again at a random earlier revision, on any member
                back = RESTART_WINDOW if rng.random() < 0.3 else 20
                lo = max(1, h - back)
                start, resumes = rng.randint(lo, max(lo, h)), None
                idx = rng.randrange(nem.n)
            else:
                # the member failed us: resume on the next one where this session stopped
                # (or, if it vouched for nothing yet, where it started)
                start = h + 1 if h else (effective_start(s) or 0)
                resumes = s.name if start else None
                nem.log(f"watch {s.name}: {why}; resume from {start}")
                idx = (idx + 1) % nem.n
                time.sleep(0.05)

    def _run_session(self, s: Session, url: str, spec: dict, until: float) -> str:
        """Read one watch stream into ``s`` until it ends; why it ended: "restart" (its time
        is up, or the run stops), else what went wrong."""
        create = {"key": b64(s.key), "start_revision": s.start_revision,
                  "prev_kv": s.prev_kv, "progress_notify": s.progress_notify,
                  "filters": list(s.filters)}
        if s.range_end is not None:
            create["range_end"] = b64(s.range_end)
        body = json.dumps({"create_request": create})
        if spec.get("progress_request"):
            body += json.dumps({"progress_request": {}})
        try:
            with requests.post(url + "/v3/watch", data=body, stream=True,
                               timeout=(READ_TIMEOUT, READ_TIMEOUT)) as r:
                if r.status_code != 200:
                    return f"HTTP {r.status_code}"
                for line in r.iter_lines():
                    if line:
                        msg = json.loads(line)
                        if "result" not in msg:
                            return f"stream error {msg.get('error')}"
                        s.responses.append(response_from_json(msg["result"]))
                        if s.responses[-1].canceled:
                            return "canceled"
                    if self.nem.stop_clients.is_set() or time.monotonic() > until:
                        return "restart"
                return "stream ended"
        except (requests.RequestException, ValueError) as exc:
            return type(exc).__name__

    # ---- after the run -------------------------------------------------------------------

    def after_heal(self, rep) -> None:
        nem = self.nem
        try:
            post(requests.Session(), nem.url(0), "/v3/kv/put",
                 {"key": b64(SENTINEL), "value": b64("end")}, timeout=30)
        except NoAnswer as exc:
            rep.anomalies.append(f"watch: the healed cluster did not take the sentinel: {exc}")
            return
        histories = []
        for i in range(nem.n):
            h = self._true_history(nem.url(i))
            if h is None:
                rep.anomalies.append(f"watch: m{i} did not deliver its history up to the "
                                     f"sentinel in 30 s")
                return
            histories.append(h)
        for i, h in enumerate(histories[1:], 1):
            if h != histories[0]:
                rep.anomalies.append(f"watch: m0 and m{i} give different histories: "
                                     f"{_first_difference(histories[0], h)}")
        history = histories[0]
        rep.anomalies += check_history_against_writes(history, self.writes, self._final(0))
        with self.lock:
            sessions = list(self.sessions)
        t = time.monotonic()
        res = self.result = check(history, sessions)
        took = time.monotonic() - t
        acked = sum(1 for w in self.writes if w.status == "ok")
        rep.note(f"watch: {len(self.writes)} writes ({acked} acknowledged), history of "
                 f"{sum(len(e) for _, e in history)} events in {len(history)} revisions; "
                 f"{res.summary()} ({took:.1f} s)")
        rep.anomalies += [str(a) for a in res.anomalies]

    def _true_history(self, url: str) -> list | None:
        """Every event under w/ from revision 1, with prev_kv, up to the sentinel (excluded)."""
        create = {"key": b64(PREFIX), "range_end": b64(PREFIX_END), "start_revision": 1,
                  "prev_kv": True}
        by_rev: dict[int, list] = {}
        deadline = time.monotonic() + 30
        try:
            with requests.post(url + "/v3/watch", data=json.dumps({"create_request": create}),
                               stream=True, timeout=(5, 5)) as r:
                for line in r.iter_lines():
                    if not line:
                        continue
                    for ev in response_from_json(json.loads(line)["result"]).events:
                        if ev.key == SENTINEL and ev.type == PUT:
                            return sorted(by_rev.items())
                        by_rev.setdefault(ev.rev, []).append(ev)
                    if time.monotonic() > deadline:
                        return None
        except (requests.RequestException, ValueError, KeyError):
            return None
        return None

    def _final(self, i: int) -> dict:
        body = {"key": b64(PREFIX), "range_end": b64(PREFIX_END), "serializable": True}
        resp = requests.post(self.nem.url(i) + "/v3/kv/range", json=body, timeout=30).json()
        return {unb64(kv["key"]): (unb64(kv.get("value", "")), int(kv["mod_revision"]))
                for kv in resp.get("kvs") or [] if unb64(kv["key"]) != SENTINEL}


def _covers(delete: tuple, key: str) -> bool:
    start, end = delete
    return key == start if end is None else start <= key < end


def _deleted(resp: dict) -> int:
    """Keys a put/delete/txn answer says it deleted."""
    n = int(resp.get("deleted", 0))
    for r in resp.get("responses") or []:
        n += int((r.get("response_delete_range") or {}).get("deleted", 0))
    return n


def _first_difference(a: list, b: list) -> str:
    for (ra, ea), (rb, eb) in zip(a, b):
        if (ra, ea) != (rb, eb):
            return f"revision {min(ra, rb)}: {[str(e) for e in ea]} vs {[str(e) for e in eb]}"
    return f"{len(a)} revisions vs {len(b)}"
