"""The append workload: multi-key txns guarded on revisions, checked for strict serializability.

Keys (``a0``..``a7``) hold lists of integers, space-separated in the etcd value. A client
makes a random txn of 1–4 micro-ops (read a key's list, or append a fresh element to it) and
runs it optimistically: it reads the keys involved (one read-only txn of ranges), then sends
one /v3/kv/txn whose compares require every key's mod_revision to be what it read (VERSION 0
for a missing key) and whose success branch holds the micro-ops: a range for each read, and
for each appended key one put of the extended list (etcd allows one put per key in a txn, so
a txn's appends to a key are made contiguous, and the put goes where the last one was).
The reads recorded are the ranges' answers inside that txn, so they are atomic with its
writes. A txn that fails its compares certainly did not happen ("fail"; a retry would be a new
txn); one without an answer is "info". Read-only txns skip the guard: one txn of ranges.

Lists are kept short so the checker stays fast on long runs: once a client sees a key's list
reach ``max_per_key`` elements, that key is retired and its slot moves to a fresh key
(``a3`` -> ``a3.1`` -> ``a3.2``...). After every fault healed, one linearizable read of every
key ever used joins the history as a final read-only txn: any acknowledged append it lacks is
lost. tests/checkers/append.py checks the history.
"""
from __future__ import annotations

import random
import time

import requests

from checkers.append import Txn, check
from httpclient import NoAnswer, b64, post, unb64

from . import Workload

FINAL_CHUNK = 64        # keys per final read txn (etcd's --max-txn-ops defaults to 128)


def encode(values: list) -> str:
    return " ".join(map(str, values))


def decode(text: str) -> list:
    return [int(x) for x in text.split()]


def random_micro_ops(rng: random.Random, slots: int, max_ops: int) -> list:
    """1..max_ops of ("r", slot) / ("append", slot), with each slot's appends contiguous
    (no read of a slot between two appends to it), so one put per key can carry them."""
    ops = []
    appended_then_read: set = set()
    for _ in range(rng.randint(1, max_ops)):
        slot = rng.randrange(slots)
        kind = "append" if rng.random() < 0.5 else "r"
        if kind == "append" and slot in appended_then_read:
            kind = "r"
        if kind == "r" and any(f == "append" and s == slot for f, s in ops):
            appended_then_read.add(slot)
        ops.append((kind, slot))
    return ops


def guarded_txn(ops: list, before: dict) -> tuple[dict, list]:
    """The /v3/kv/txn body for micro-ops ``ops`` [(f, key, element or None)] given what the
    keys held (``before``: key -> (mod_revision or None if missing, list)), and for each read
    micro-op the index of its range in the answer's responses."""
    compare = []
    for key, (mod, _) in sorted(before.items()):
        if mod is None:
            compare.append({"key": b64(key), "target": "VERSION", "result": "EQUAL",
                            "version": "0"})
        else:
            compare.append({"key": b64(key), "target": "MOD", "result": "EQUAL",
                            "mod_revision": str(mod)})
    last_append = {k: i for i, (f, k, _) in enumerate(ops) if f == "append"}
    lists = {k: list(v) for k, (_, v) in before.items()}
    success, where = [], []
    for i, (f, key, element) in enumerate(ops):
        if f == "r":
            where.append(len(success))
            success.append({"request_range": {"key": b64(key)}})
            continue
        lists[key].append(element)
        if last_append[key] == i:
            success.append({"request_put": {"key": b64(key), "value": b64(encode(lists[key]))}})
    return {"compare": compare, "success": success}, where


def range_answer(resp: dict) -> tuple[int | None, list]:
    """(mod_revision or None, list) from a response_range."""
    kvs = resp.get("kvs") or []
    if not kvs:
        return None, []
    return int(kvs[0]["mod_revision"]), decode(unb64(kvs[0].get("value", "")))


def ranges(resp: dict, n: int, where=None) -> list:
    """[(mod_revision or None, list)] of a txn answer's range responses at ``where`` (default:
    all ``n`` responses); NoAnswer if the answer does not have that shape."""
    answers = resp.get("responses") or []
    try:
        if len(answers) != n:
            raise ValueError(f"{len(answers)} responses, not {n}")
        return [range_answer(answers[i]["response_range"])
                for i in (range(n) if where is None else where)]
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise NoAnswer(f"malformed txn answer ({exc}): {str(resp)[:200]}") from None


class AppendWorkload(Workload):
    name = "append"

    def __init__(self, nem, first_client: int = 0, clients: int = 4, keys: int = 8,
                 max_ops: int = 4, max_per_key: int = 64):
        super().__init__(nem, first_client)
        self.n_clients = clients
        self.slots = keys
        self.max_ops = max_ops
        self.max_per_key = max_per_key
        self.generation = [0] * keys
        self.keys_used: set = set()
        self.next_element = 0
        self.history: list[Txn] = []
        self.n_final = 0

    def threads(self):
        return [self.thread(self._client, self.first_client + c, name=str(c))
                for c in range(self.n_clients)]

    # ---- shared state (under self.lock) ----------------------------------------------------

    def _current_key(self, slot: int) -> str:
        g = self.generation[slot]
        return f"a{slot}" if g == 0 else f"a{slot}.{g}"

    def key_of(self, slot: int) -> str:
        with self.lock:
            key = self._current_key(slot)
            self.keys_used.add(key)
            return key

    def retire_if_long(self, slot: int, key: str, length: int) -> None:
        if length < self.max_per_key:
            return
        with self.lock:
            if self._current_key(slot) == key:
                self.generation[slot] += 1

    def fresh_element(self) -> int:
        with self.lock:
            self.next_element += 1
            return self.next_element

    def record(self, txn: Txn) -> None:
        with self.lock:
            txn.id = len(self.history)
            self.history.append(txn)

    # ---- a client ----------------------------------------------------------------------------

    def _client(self, cid: int) -> None:
        nem = self.nem
        rng = random.Random(nem.seed * 1000 + cid)
        session = requests.Session()
        idx = cid % nem.n
        while not nem.stop_clients.is_set():
            micro = random_micro_ops(rng, self.slots, self.max_ops)
            key_of = {slot: self.key_of(slot) for slot in sorted({s for _, s in micro})}
            slot_of = {k: s for s, k in key_of.items()}
            ops = [(f, key_of[slot], self.fresh_element() if f == "append" else None)
                   for f, slot in micro]
            self.attempt()
            try:
                self._run_txn(session, nem.url(idx), cid, ops, slot_of)
            except NoAnswer as exc:
                nem.log(f"append client {cid} on m{idx}: {exc}")
                idx = (idx + 1) % nem.n
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.02))

    def _run_txn(self, session, url: str, cid: int, ops: list, slot_of: dict) -> None:
        nem = self.nem
        keys = sorted({k for _, k, _ in ops})
        if all(f == "r" for f, _, _ in ops):
            body = {"success": [{"request_range": {"key": b64(k)}} for _, k, _ in ops]}
            where = list(range(len(ops)))
        else:
            try:
                resp = post(session, url, "/v3/kv/txn",
                            {"success": [{"request_range": {"key": b64(k)}} for k in keys]})
            except NoAnswer:
                with self.lock:
                    self.failed_reads += 1     # nothing was written: nothing to record
                raise
            before = dict(zip(keys, ranges(resp, len(keys))))
            for k, (_, values) in before.items():
                self.retire_if_long(slot_of[k], k, len(values))
            body, where = guarded_txn(ops, before)
        txn = Txn(0, cid, [(f, k, v) for f, k, v in ops], nem.now(), status="info")
        self.record(txn)         # before sending: should the client vanish, it is "info"
        resp = post(session, url, "/v3/kv/txn", body)
        complete = nem.now()
        if "compare" in body and not resp.get("succeeded", False):
            txn.complete, txn.status = complete, "fail"
            return
        answers = ranges(resp, len(body["success"]), where)    # NoAnswer: stays "info"
        seen = iter(answers)
        recorded = []
        for f, k, v in ops:
            if f == "r":
                _, v = next(seen)
                self.retire_if_long(slot_of[k], k, len(v))
            recorded.append((f, k, v))
        txn.ops = recorded
        txn.complete = complete         # set before status: the checker reads both
        txn.status = "ok"

    # ---- after the faults, and the check -------------------------------------------------------

    def after_heal(self, rep) -> None:
        """A final linearizable read of every key used, recorded as read-only txns."""
        with self.lock:
            keys = sorted(self.keys_used)
        session = requests.Session()
        for i in range(0, len(keys), FINAL_CHUNK):
            chunk = keys[i:i + FINAL_CHUNK]
            body = {"success": [{"request_range": {"key": b64(k)}} for k in chunk]}
            deadline = time.monotonic() + 30
            while True:
                t = self.nem.now()
                try:
                    resp = post(session, self.nem.url(i // FINAL_CHUNK % self.nem.n),
                                "/v3/kv/txn", body, timeout=10)
                    break
                except NoAnswer as exc:
                    if time.monotonic() > deadline:
                        rep.anomalies.append(f"append: the final read got no answer: {exc}")
                        return
                    time.sleep(0.5)
            try:
                ops = [("r", k, v) for k, (_, v) in zip(chunk, ranges(resp, len(chunk)))]
            except NoAnswer as exc:
                rep.anomalies.append(f"append: the final read's answer is unusable: {exc}")
                return
            self.record(Txn(0, -1, ops, t, self.nem.now(), "ok"))
            self.n_final += 1

    def analyse(self, rep) -> None:
        clients = [t for t in self.history if t.client >= 0]
        ok = sum(t.status == "ok" for t in clients)
        fail = sum(t.status == "fail" for t in clients)
        info = sum(t.status == "info" for t in clients)
        self.n_acked = ok + fail        # both were answered
        self.n_indeterminate = info
        for t in clients:
            if t.status != "info":
                self.nem.note_ok(t.complete)
        res = check(self.history)
        s = res.stats
        rep.note(f"append: {len(clients)} txns ({ok} ok, {fail} failed their guard, "
                 f"{info} indeterminate, {s['committed'] - ok - self.n_final} of those "
                 f"committed) on {len(self.keys_used)} keys, {self.n_final} final reads; "
                 f"{s['edges']} dependencies, strict-serializability check "
                 f"{s['seconds']:.1f} s: {res.report().splitlines()[0]}")
        per_kind: dict = {}
        for a in res.anomalies:
            per_kind[a.kind] = per_kind.get(a.kind, 0) + 1
            if per_kind[a.kind] <= 5:
                rep.anomalies.append(f"append {a.kind}: {a.text}")
        for kind, n in per_kind.items():
            if n > 5:
                rep.anomalies.append(f"append {kind}: {n - 5} more")
