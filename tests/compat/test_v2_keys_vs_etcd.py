"""/v2/keys on fastkv and on Debian's etcd 3.4 (--enable-v2=true), request by request.

Statuses, bodies (field order included) and the X-Etcd-Index header must be the
same once the store indexes are shifted: etcd's v2 store also holds its own
membership (/0), so its first key gets a later index than fastkv's.
"""
from __future__ import annotations

import json
import threading
import time

import pytest
import requests

from test_cluster_api_vs_etcd import pair  # noqa: F401 (fastkv and etcd, both --enable-v2)
from v2index import IndexShift

pytestmark = pytest.mark.etcd

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


class Side(IndexShift):
    def __init__(self, srv):
        super().__init__(mask_ttl=False)   # the tests read TTLs from the bodies
        self.srv = srv

    def do(self, method: str, path: str, data: str | None = None):
        r = requests.request(method, self.srv.url + "/v2/keys" + path, data=data,
                             headers=FORM if data is not None else {}, timeout=10)
        body = r.text
        idx = r.headers.get("X-Etcd-Index")
        if self.base is None and r.status_code in (200, 201) and method != "GET":
            self.base = int(json.loads(body)["node"]["modifiedIndex"])
        return r.status_code, None if idx is None else str(self.shift(int(idx))), self.norm(body)


SEQUENCE = [
    ("PUT", "/foo", "value=bar"),
    ("GET", "/foo", None),
    ("PUT", "/foo?prevExist=false", "value=x"),
    ("PUT", "/foo", "value=baz&prevExist=true"),
    ("PUT", "/foo", "value=qux&prevValue=nope"),
    ("PUT", "/foo", "value=qux&prevValue=baz"),
    ("PUT", "/foo", "value=q2&prevIndex=1"),
    ("POST", "/queue", "value=job1"),
    ("POST", "/queue", "value=job2"),
    ("GET", "/queue?sorted=true", None),
    ("PUT", "/dir/sub", "value=1"),
    ("PUT", "/_hidden", "value=h"),
    ("GET", "/?recursive=true&sorted=true", None),
    ("PUT", "/dir", "value=x"),
    ("PUT", "/foo/bar", "value=x"),
    ("DELETE", "/dir", None),
    ("DELETE", "/dir?dir=true", None),
    ("DELETE", "/dir?recursive=true", None),
    ("DELETE", "/", None),
    ("PUT", "/t", "ttl=abc"),
    ("PUT", "/t", "value=1&refresh=true"),
    ("PUT", "/t", "refresh=true&ttl=5&value=v"),
    ("PUT", "/t", "value=v&prevValue="),
    ("GET", "/t?wait=maybe", None),
    ("DELETE", "/foo?prevValue=bad", None),
    ("DELETE", "/foo?prevValue=qux", None),
    ("GET", "/foo", None),
    ("PUT", "/nv", "value=1&noValueOnSuccess=true"),
    ("PUT", "/emptydir", "dir=true"),
    ("GET", "/emptydir", None),
    ("GET", "/queue?quorum=true&sorted=true", None),
]


def test_same_answers(pair):
    fk, et = Side(pair[0]), Side(pair[1])
    diffs = []
    for method, path, data in SEQUENCE:
        a, b = fk.do(method, path, data), et.do(method, path, data)
        if a != b:
            diffs.append(f"{method} {path} {data}\n  fastkv {a}\n  etcd   {b}")
    assert not diffs, "\n".join(diffs)


# etcd's own membership lives in its v2 store too: its bootstrap adds gets, sets and
# creates; the other counters see only our requests.
OWN_COUNTERS = ("setsFail", "deleteSuccess", "deleteFail", "updateSuccess", "updateFail",
                "createFail", "compareAndSwapSuccess", "compareAndSwapFail",
                "compareAndDeleteSuccess", "compareAndDeleteFail", "expireCount", "watchers")


def test_store_stats_count_like_etcds(pair):
    """/v2/stats/store after the same requests: etcd's fields in etcd's order, and the
    same counts for every counter etcd's own bookkeeping does not touch."""
    answers = []
    for srv in pair:
        side = Side(srv)
        for method, path, data in SEQUENCE:
            side.do(method, path, data)
        r = requests.get(srv.url + "/v2/stats/store", timeout=5)
        stats = r.json()
        answers.append((r.status_code, r.headers["Content-Type"], list(stats),
                        [stats[k] for k in OWN_COUNTERS]))
    assert answers[0] == answers[1]


def test_wait_answers_from_history_and_the_next_change(pair):
    for srv in pair:
        side = Side(srv)
        side.do("PUT", "/w", "value=1")
        side.do("PUT", "/w", "value=2")
        base = side.base
        # from the history: the first change at or after waitIndex
        status, _idx, body = side.do("GET", f"/w?wait=true&waitIndex={base}", None)
        assert status == 200 and json.loads(body)["node"]["value"] == "1", (srv, body)
        got = {}

        def waiter():
            r = requests.get(srv.url + "/v2/keys/dir?wait=true&recursive=true", timeout=15)
            got["r"] = (r.status_code, r.json())
        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.5)
        side.do("PUT", "/dir/child", "value=c")
        t.join(15)
        status, ev = got["r"]
        assert status == 200 and ev["action"] == "set" and ev["node"]["key"] == "/dir/child"


def test_ttl_keys_expire_through_the_log(pair):
    """A key with ttl=1 is gone (action expire for a waiter) a couple of seconds later."""
    for srv in pair:
        side = Side(srv)
        status, _i, body = side.do("PUT", "/ttl", "value=v&ttl=1")
        assert status in (200, 201) and json.loads(body)["node"]["ttl"] == 1
        r = requests.get(srv.url + "/v2/keys/ttl?wait=true", timeout=15)
        assert r.json()["action"] == "expire", (srv, r.text)
        assert requests.get(srv.url + "/v2/keys/ttl", timeout=5).status_code == 404


def test_stream_watch_sends_each_change(pair):
    """wait=true&stream=true: the head at once, then one JSON line per change."""
    for srv in pair:
        side = Side(srv)
        side.do("PUT", "/s/a", "value=0")
        lines = []

        def reader():
            with requests.get(srv.url + "/v2/keys/s?wait=true&recursive=true&stream=true",
                              stream=True, timeout=15) as r:
                lines.append(r.status_code)
                for line in r.iter_lines():
                    if line:
                        lines.append(json.loads(line))
                    if len(lines) == 4:
                        return
        t = threading.Thread(target=reader)
        t.start()
        time.sleep(0.5)
        for v in ("1", "2", "3"):
            side.do("PUT", "/s/a", f"value={v}")
        t.join(15)
        assert lines[0] == 200
        assert [(e["action"], e["node"]["value"]) for e in lines[1:]] == \
            [("set", "1"), ("set", "2"), ("set", "3")], srv
