"""The register workload: get, put and CAS on a few keys, checked for linearizability.

Each client is bound to one member and moves to the next when its member does not answer.
Reads are linearizable ranges; puts write unique values; a CAS is a txn comparing the value
(or VERSION=0 for a missing key). Recorded as tests/checkers/linearizability.py ops: an
answered request is "ok"; a read without an answer is dropped (it changed nothing); a write
without an answer, or with an error answer, is "info" (it may or may not have taken effect).
"""
from __future__ import annotations

import random
import time

import requests

from checkers.linearizability import Op, check
from httpclient import NoAnswer, b64, post, unb64

from . import Workload


class RegisterWorkload(Workload):
    name = "register"

    def __init__(self, nem, first_client: int = 0, clients: int = 4, keys: int = 3):
        super().__init__(nem, first_client)
        self.n_clients = clients
        self.keys = [f"r{i}" for i in range(keys)]
        self.history: list[Op] = []

    def threads(self):
        return [self.thread(self._client, self.first_client + c, name=str(c))
                for c in range(self.n_clients)]

    def record(self, op: Op) -> None:
        with self.lock:
            op.id = len(self.history)
            self.history.append(op)

    def _client(self, cid: int) -> None:
        nem = self.nem
        rng = random.Random(nem.seed * 1000 + cid)
        session = requests.Session()
        idx = cid % nem.n
        seq = 0
        last_seen: dict[str, str | None] = {}
        while not nem.stop_clients.is_set():
            url = nem.url(idx)
            key = rng.choice(self.keys)
            r = rng.random()
            seq += 1
            value = f"c{cid}-{seq}"
            self.attempt()
            t = nem.now()
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
                    self.record(op)
                    post(session, url, "/v3/kv/put", {"key": b64(key), "value": b64(value)})
                else:
                    expected = last_seen[key]
                    op = Op(0, cid, "cas", (key, expected, value), t, status="info")
                    self.record(op)
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
                op.complete = nem.now()     # set before status: the checker reads both
                op.status = "ok"
                if op.kind == "get":
                    self.record(op)
            except NoAnswer as exc:
                nem.log(f"register client {cid} on m{idx}: {exc}")
                idx = (idx + 1) % nem.n      # try another member next
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.02))

    def analyse(self, rep) -> None:
        self.n_acked = sum(1 for op in self.history if op.status == "ok")
        self.n_indeterminate = sum(1 for op in self.history if op.status == "info")
        for op in self.history:
            if op.status == "ok":
                self.nem.note_ok(op.complete)
        t = time.monotonic()
        res = check(self.history)
        took = time.monotonic() - t
        rep.note(f"register: {len(self.history)} ops on {len(self.keys)} keys, "
                 f"linearizability check {took:.1f} s: "
                 f"{'linearizable' if res.ok else 'NOT LINEARIZABLE'}")
        if not res.ok:
            rep.anomalies.append(res.report)
