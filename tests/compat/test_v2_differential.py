"""Randomised v2 request sequences replayed against fastkv and Debian's etcd 3.4.

Each seed draws a few hundred requests over a small tree (so they collide: creates on
existing keys, files under files, deletes of non-empty directories, stale prevIndex and
prevValue compares, in-order POSTs, TTLs set, refreshed and cleared) and sends the same
sequence to both servers. Every answer (status, X-Etcd-Index, body) must be the same
once the store indexes are shifted to count from our first change (etcd's v2 store also
holds its own membership) and TTL countdowns and expiration times are masked.
More seeds: V2_DIFF_SEEDS=4,5,6 pytest tests/compat/test_v2_differential.py
"""
from __future__ import annotations

import json
import os
import random

import pytest
import requests

from test_cluster_api_vs_etcd import pair  # noqa: F401 (fastkv and etcd, both --enable-v2)
from v2index import IndexShift

pytestmark = pytest.mark.etcd

FORM = {"Content-Type": "application/x-www-form-urlencoded"}

KEYS = ["/a", "/b", "/d1", "/d1/x", "/d1/y", "/d1/d2", "/d1/d2/z", "/d3/w", "/q", "/_h"]
VALUES = ["red", "green", "blue", ""]


class Side(IndexShift):
    def __init__(self, url: str):
        super().__init__()
        self.url = url

    def do(self, method: str, path: str, form: dict | None, query: dict) -> tuple:
        query = {k: (str(self.raw(v[1])) if isinstance(v, tuple) else v) for k, v in query.items()}
        data = None
        if form is not None:
            data = {k: (str(self.raw(v[1])) if isinstance(v, tuple) else v) for k, v in form.items()}
        r = requests.request(method, self.url + "/v2/keys" + path, params=query, data=data,
                             headers=FORM if data is not None else {}, timeout=10)
        if self.base is None and r.status_code == 201:
            self.base = json.loads(r.text)["node"]["modifiedIndex"]
        idx = r.headers.get("X-Etcd-Index")
        body = r.text
        if method == "GET" and query.get("sorted") != "true" and '"nodes"' in body:
            body = json.dumps(by_key(json.loads(body)), separators=(",", ":")) + "\n"
        return r.status_code, None if idx is None else self.shift(int(idx)), self.norm(body)


def by_key(obj):
    """A listing with its children in key order (etcd lists unsorted ones in Go map order)."""
    if isinstance(obj, dict):
        out = {k: by_key(v) for k, v in obj.items()}
        if isinstance(out.get("nodes"), list):
            out["nodes"] = sorted(out["nodes"], key=lambda n: n["key"])
        return out
    return obj


def draw(rng: random.Random, changes: int) -> tuple[str, str, dict | None, dict]:
    """One random request: (method, path, form or None, query). Index arguments are
    ("i", k): the k-th change, made raw per server."""
    key = rng.choice(KEYS)
    value = rng.choice(VALUES)
    some_index = ("i", rng.randint(1, max(1, changes + 1)))
    kind = rng.choices(
        ["set", "create", "update", "cas_value", "cas_index", "mkdir", "setdir", "post",
         "ttl", "clear_ttl", "refresh", "get", "get_dir", "delete", "cad_value",
         "cad_index", "rmdir", "rmrf", "no_value"],
        weights=[8, 5, 4, 4, 4, 3, 2, 3, 3, 2, 2, 6, 4, 3, 2, 2, 2, 1, 1])[0]
    if kind == "set":
        return "PUT", key, {"value": value}, {}
    if kind == "create":
        return "PUT", key, {"value": value, "prevExist": "false"}, {}
    if kind == "update":
        return "PUT", key, {"value": value, "prevExist": "true"}, {}
    if kind == "cas_value":
        return "PUT", key, {"value": value, "prevValue": rng.choice(VALUES[:3])}, {}
    if kind == "cas_index":
        return "PUT", key, {"value": value, "prevIndex": some_index}, {}
    if kind == "mkdir":
        return "PUT", key, {"dir": "true"}, {}
    if kind == "setdir":
        return "PUT", key, {"dir": "true", "prevExist": rng.choice(["true", "false"])}, {}
    if kind == "post":
        return "POST", rng.choice(["/q", "/d1", "/a"]), {"value": value}, {}
    if kind == "ttl":
        return "PUT", key, {"value": value, "ttl": str(rng.choice([300, 600]))}, {}
    if kind == "clear_ttl":
        return "PUT", key, {"value": value, "ttl": ""}, {}
    if kind == "refresh":
        return "PUT", key, {"refresh": "true", "ttl": "500",
                            "prevExist": rng.choice(["true", "false"])}, {}
    if kind == "get":
        return "GET", key, None, {}
    if kind == "get_dir":
        return "GET", rng.choice(["/", "/d1", "/q"]), None, {"recursive": "true", "sorted": "true"}
    if kind == "delete":
        return "DELETE", key, None, {}
    if kind == "cad_value":
        return "DELETE", key, None, {"prevValue": rng.choice(VALUES[:3])}
    if kind == "cad_index":
        return "DELETE", key, None, {"prevIndex": some_index}
    if kind == "rmdir":
        return "DELETE", key, None, {"dir": "true"}
    if kind == "rmrf":
        return "DELETE", rng.choice(["/d1", "/d1/d2", "/q"]), None, {"recursive": "true"}
    return "PUT", key, {"value": value, "noValueOnSuccess": "true"}, {}


@pytest.mark.parametrize("seed", [int(s) for s in os.environ.get("V2_DIFF_SEEDS", "1,2,3").split(",")])
def test_random_sequences_answer_as_etcd(pair, seed):
    fk, et = Side(pair[0].url), Side(pair[1].url)
    rng = random.Random(seed)
    # every sequence starts with a change, so both sides learn their first index
    first = ("PUT", f"/seed{seed}", {"value": "start"}, {})
    a, b = fk.do(*first), et.do(*first)
    assert a == b and a[0] == 201
    changes = 1
    for n in range(250):
        req = draw(rng, changes)
        a, b = fk.do(*req), et.do(*req)
        assert a == b, f"request {n}: {req}\n  fastkv {a}\n  etcd   {b}"
        if a[0] in (200, 201) and req[0] != "GET":
            changes += 1
    # the trees end the same
    final = ("GET", "/", None, {"recursive": "true", "sorted": "true"})
    assert fk.do(*final) == et.do(*final)
