"""Differential test: one seeded sequence of v3 JSON requests, etcd 3.4 and fastkv side by side.

A seeded RNG builds ~300 operations over a small key space: puts (prev_kv,
ignore_value, ignore_lease, leases), ranges with every option (range_end
forms, limit, sort order × target, revision incl. compacted and future ones,
serializable, keys_only, count_only, min/max mod/create revision filters),
delete ranges, txns (every compare target × result, compares over ranges,
nested txns, duplicate-key puts), compactions (valid, already compacted,
future) and lease grant / attach / time-to-live / revoke. Each request goes to
etcd first and then to fastkv; the two answers (HTTP status and JSON body)
must be equal after normalising what is member-specific: header cluster_id,
member_id, raft_term, auto-assigned lease IDs, and a lease's remaining TTL.

The generator only looks at etcd's answers (to pick revisions near the
current one), so a seed always yields the same sequence against a fresh etcd.
Set FASTKV_DIFF_SEED / FASTKV_DIFF_OPS to explore other sequences.
"""
from __future__ import annotations

import base64
import json
import os
import random
import urllib.error
import urllib.request

SEED = int(os.environ.get("FASTKV_DIFF_SEED", "20241122"))
N_OPS = int(os.environ.get("FASTKV_DIFF_OPS", "300"))

KEYS = [b"a", b"b", b"c", b"k/1", b"k/2", b"k/3", b"k\xff", b"z"]
VALUES = [b"", b"v", b"val", b"value-2", b"\x00\xff", b"zz"]
COMPARE_TARGETS = ["VERSION", "CREATE", "MOD", "VALUE", "LEASE"]
COMPARE_RESULTS = ["EQUAL", "GREATER", "LESS", "NOT_EQUAL"]
TARGET_FIELD = {"VERSION": "version", "CREATE": "create_revision", "MOD": "mod_revision",
                "VALUE": "value", "LEASE": "lease"}
SORT_ORDERS = ["NONE", "ASCEND", "DESCEND"]
SORT_TARGETS = ["KEY", "VERSION", "CREATE", "MOD", "VALUE"]
FIXED_LEASE_IDS = [0x1001, 0x1002, 0x2abc, 0x7fff0000]


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def post(url: str, path: str, body: dict) -> tuple[int, object]:
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


class LeaseRef:
    """A lease in the generated sequence; `index` names auto-assigned IDs across servers."""

    def __init__(self, index: int, fixed_id: int = 0):
        self.index = index
        self.fixed_id = fixed_id


class Generator:
    def __init__(self, rng: random.Random):
        self.rng = rng
        self.rev = 1  # etcd's current revision, from its answers
        self.compacted = 0
        self.leases: list[LeaseRef] = []
        self.unused_fixed = list(FIXED_LEASE_IDS)

    # helpers that pick from the small spaces ------------------------------------
    def key(self) -> bytes:
        return self.rng.choice(KEYS)

    def int64(self, n: int):
        """int64 fields go as JSON strings (grpc-gateway style) or as numbers: both are valid."""
        return str(n) if self.rng.random() < 0.5 else n

    def enum(self, names: list[str], name: str):
        return name if self.rng.random() < 0.5 else names.index(name)

    def lease_value(self):
        r = self.rng.random()
        if r < 0.5 or not self.leases:
            return 0
        if r < 0.9:
            return self.rng.choice(self.leases)
        return 0x5eed  # never granted

    def revision(self) -> int:
        r = self.rng.random()
        if r < 0.5:
            return 0
        if r < 0.8:
            return self.rng.randint(max(1, self.compacted), self.rev)
        if r < 0.9 and self.compacted > 1:
            return self.rng.randint(1, self.compacted - 1)
        return self.rev + self.rng.randint(1, 3)

    def range_keys(self, body: dict) -> None:
        k = self.key()
        form = self.rng.choice(["single", "single", "prefix", "from", "end", "all"])
        if form == "prefix":
            k = self.rng.choice([b"k/", b"k", b"a"])
            end = k[:-1] + bytes([k[-1] + 1])
        elif form == "from":
            end = b"\x00"
        elif form == "end":
            end = self.key()
        elif form == "all":
            k, end = b"\x00", b"\x00"
        else:
            end = b""
        body["key"] = b64(k)
        if end:
            body["range_end"] = b64(end)

    # request builders -------------------------------------------------------------
    def put_req(self) -> dict:
        body = {"key": b64(self.key())}
        v = self.rng.choice(VALUES)
        if v:
            body["value"] = b64(v)
        lease = self.lease_value()
        if lease:
            body["lease"] = lease
        for flag, p in (("prev_kv", 0.4), ("ignore_value", 0.07), ("ignore_lease", 0.07)):
            if self.rng.random() < p:
                body[flag] = True
        return body

    def range_req(self) -> dict:
        body: dict = {}
        self.range_keys(body)
        rng = self.rng
        if rng.random() < 0.4:
            body["limit"] = self.int64(rng.randint(0, 3))
        rev = self.revision()
        if rev:
            body["revision"] = self.int64(rev)
        if rng.random() < 0.5:
            body["sort_order"] = self.enum(SORT_ORDERS, rng.choice(SORT_ORDERS))
        if rng.random() < 0.5:
            body["sort_target"] = self.enum(SORT_TARGETS, rng.choice(SORT_TARGETS))
        for flag, p in (("serializable", 0.3), ("keys_only", 0.25), ("count_only", 0.2)):
            if rng.random() < p:
                body[flag] = True
        for f in ("min_mod_revision", "max_mod_revision", "min_create_revision", "max_create_revision"):
            if rng.random() < 0.12:
                body[f] = self.int64(rng.randint(1, self.rev + 1))
        return body

    def delete_req(self) -> dict:
        body: dict = {}
        self.range_keys(body)
        if self.rng.random() < 0.5:
            body["prev_kv"] = True
        return body

    def compare(self) -> dict:
        rng = self.rng
        target = rng.choice(COMPARE_TARGETS)
        c = {"key": b64(self.key()), "target": self.enum(COMPARE_TARGETS, target),
             "result": self.enum(COMPARE_RESULTS, rng.choice(COMPARE_RESULTS))}
        if rng.random() < 0.15:
            c["range_end"] = b64(rng.choice([b"k0", b"\x00", b"zz"]))
        if target == "VALUE":
            v = rng.choice(VALUES)
            if v:
                c["value"] = b64(v)
        elif target == "LEASE":
            lease = self.lease_value()
            if lease:
                c["lease"] = lease
        else:
            n = rng.choice([0, 1, 2, rng.randint(0, self.rev + 1)])
            if n:
                c[TARGET_FIELD[target]] = self.int64(n)
        return c

    def txn_op(self, depth: int) -> dict:
        kind = self.rng.choice(["put", "put", "range", "delete"] + (["txn"] if depth < 2 else []))
        if kind == "put":
            return {"request_put": self.put_req()}
        if kind == "range":
            return {"request_range": self.range_req()}
        if kind == "delete":
            return {"request_delete_range": self.delete_req()}
        return {"request_txn": self.txn_req(depth + 1)}

    def txn_req(self, depth: int = 0) -> dict:
        rng = self.rng
        body: dict = {}
        compares = [self.compare() for _ in range(rng.randint(0, 3))]
        if compares:
            body["compare"] = compares
        for branch in ("success", "failure"):
            ops = [self.txn_op(depth) for _ in range(rng.randint(0, 3))]
            if ops:
                body[branch] = ops
        return body

    def lease_grant_req(self) -> tuple[dict, LeaseRef | None]:
        rng = self.rng
        r = rng.random()
        if r < 0.05:
            return {"TTL": self.int64(9_000_000_001)}, None  # too large
        ttl = self.int64(rng.choice([600, 1000, 3600]))
        if r < 0.15 and self.leases:
            existing = rng.choice(self.leases)
            return {"TTL": ttl, "ID": existing}, None  # lease already exists
        if self.unused_fixed and r < 0.6:
            ref = LeaseRef(len(self.leases), self.unused_fixed.pop(0))
            return {"TTL": ttl, "ID": self.int64(ref.fixed_id)}, ref
        ref = LeaseRef(len(self.leases))
        return {"TTL": ttl}, ref

    def next_op(self) -> tuple[str, dict, LeaseRef | None]:
        rng = self.rng
        r = rng.random()
        if r < 0.28:
            return "/v3/kv/put", self.put_req(), None
        if r < 0.55:
            return "/v3/kv/range", self.range_req(), None
        if r < 0.63:
            return "/v3/kv/deleterange", self.delete_req(), None
        if r < 0.83:
            return "/v3/kv/txn", self.txn_req(), None
        if r < 0.87:
            kind = rng.random()
            if kind < 0.7:
                rev = rng.randint(max(1, self.compacted), self.rev)
            elif kind < 0.85:
                rev = max(1, self.compacted - 1) if self.compacted else self.rev + 5
            else:
                rev = self.rev + rng.randint(1, 5)
            return "/v3/kv/compaction", {"revision": self.int64(rev), "physical": True}, None
        if r < 0.93:
            body, ref = self.lease_grant_req()
            return "/v3/lease/grant", body, ref
        if r < 0.97:
            lease = self.lease_value() or 0x5eed
            return "/v3/lease/timetolive", {"ID": lease, "keys": True}, None
        lease = self.lease_value() or 0x5eed
        return "/v3/lease/revoke", {"ID": lease}, None

    def observe(self, path: str, body: dict, status: int, resp) -> None:
        if status == 200 and isinstance(resp, dict):
            rev = resp.get("header", {}).get("revision")
            if rev is not None:
                self.rev = int(rev)
            if path == "/v3/kv/compaction":
                self.compacted = max(self.compacted, int(body["revision"]))


class Server:
    """One side of the comparison: its URL and the IDs it gave auto-assigned leases."""

    def __init__(self, name: str, url: str):
        self.name = name
        self.url = url
        self.lease_ids: dict[int, int] = {}  # LeaseRef.index -> this server's ID

    def render(self, obj):
        """Replace LeaseRefs by this server's lease ID (int64 as a string)."""
        if isinstance(obj, LeaseRef):
            return str(obj.fixed_id or self.lease_ids.get(obj.index, 0x5eed))
        if isinstance(obj, dict):
            return {k: self.render(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.render(v) for v in obj]
        return obj

    def normalise(self, obj, path: str):
        auto = {str(v): f"<lease{k}>" for k, v in self.lease_ids.items()}

        def walk(o, parent_key=""):
            if isinstance(o, dict):
                out = {}
                for k, v in o.items():
                    if k in ("cluster_id", "member_id", "raft_term"):
                        continue
                    if k in ("lease", "ID") and str(v) in auto:
                        v = auto[str(v)]
                    out[k] = walk(v, k)
                if path == "/v3/lease/timetolive":
                    if int(out.get("TTL", 0)) > 0:
                        out["TTL"] = "<remaining>"
                    if "keys" in out:
                        out["keys"] = sorted(out["keys"])  # etcd lists them in map order
                return out
            if isinstance(o, list):
                return [walk(v, parent_key) for v in o]
            return o
        return walk(obj)


def describe(i: int, path: str, req: dict, etcd, fastkv) -> str:
    return (f"op #{i} (seed {SEED}): POST {path} {json.dumps(req)}\n"
            f"  etcd   -> {etcd[0]} {json.dumps(etcd[1], sort_keys=True)}\n"
            f"  fastkv -> {fastkv[0]} {json.dumps(fastkv[1], sort_keys=True)}")


def test_mvcc_matches_etcd(etcd_server, fastkv_server):
    gen = Generator(random.Random(SEED))
    etcd, fastkv = Server("etcd", etcd_server.url), Server("fastkv", fastkv_server.url)
    history: list[str] = []
    errors = successes = 0
    for i in range(N_OPS):
        path, body, ref = gen.next_op()
        answers = []
        for srv in (etcd, fastkv):
            req = srv.render(body)
            status, resp = post(srv.url, path, req)
            if ref is not None and status == 200 and not ref.fixed_id:
                srv.lease_ids[ref.index] = int(resp["ID"])
            answers.append((status, srv.normalise(resp, path), req))
        if ref is not None and answers[0][0] == 200:
            gen.leases.append(ref)
        gen.observe(path, body, answers[0][0], answers[0][1])
        line = describe(i, path, answers[0][2], answers[0][:2], answers[1][:2])
        assert answers[1][:2] == answers[0][:2], \
            "fastkv and etcd disagree\n" + line + "\nprevious ops:\n" + "\n".join(history[-8:])
        history.append(f"#{i} POST {path} {json.dumps(answers[0][2])} -> {answers[0][0]}")
        if answers[0][0] == 200:
            successes += 1
        else:
            errors += 1
    # the sequence must exercise both paths, or it proves little
    assert successes > N_OPS // 2 and errors >= 10, (successes, errors)

