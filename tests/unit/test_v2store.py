"""The v2 store (fastkv/v2store): etcd 3.4's v2 key tree, TTLs, history and watchers."""
import json
import marshal
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

import pytest
from hypothesis import given, settings, strategies as st

from fastkv.v2store import V2Error, V2Store
from fastkv.v2store.store import clean_path, format_expiration, ttl_seconds, SECOND
from fastkv.v2store.wire import dumps

T0 = 1_700_000_000 * SECOND          # 2023-11-14T22:13:20Z


def err(fn, *args, **kw) -> V2Error:
    with pytest.raises(V2Error) as info:
        fn(*args, **kw)
    return info.value


def body(e):
    return json.loads(dumps(e))


@pytest.fixture
def s():
    return V2Store()


# ---------------------------------------------------------------- errors


def test_error_json_and_status():
    e = V2Error(100, "/foo", 7)
    assert e.to_json() == '{"errorCode":100,"message":"Key not found","cause":"/foo","index":7}'
    assert e.status == 404
    assert V2Error(401, "", 0).to_json() == \
        '{"errorCode":401,"message":"The event in requested index is outdated and cleared","index":0}'
    statuses = {100: 404, 101: 412, 102: 403, 104: 400, 105: 412, 107: 400, 108: 403,
                110: 401, 200: 400, 212: 400, 300: 500, 301: 500, 401: 400}
    assert {c: V2Error(c).status for c in statuses} == statuses
    assert V2Error(212).message == "A TTL must be provided on refresh"
    # Go's encoder escapes HTML characters and keeps other non-ASCII as is.
    assert V2Error(100, "/a<b>&é").to_json() == \
        '{"errorCode":100,"message":"Key not found","cause":"/a\\u003cb\\u003e\\u0026é","index":0}'


def test_clean_path_is_gos():
    assert clean_path("") == "/"
    assert clean_path("//a//b/") == "/a/b"
    assert clean_path("a/./b/../c") == "/a/c"
    assert clean_path("/../..") == "/"


def test_ttl_rounding_and_expiration_format():
    assert ttl_seconds(T0 + 5 * SECOND, T0) == 5
    assert ttl_seconds(T0 + 5 * SECOND, T0 + 1) == 5          # 4.999999999 s rounds up
    assert ttl_seconds(T0 + 5 * SECOND, T0 + SECOND) == 4
    assert ttl_seconds(T0, T0) == 0
    assert ttl_seconds(T0, T0 + SECOND // 2) == 0             # -0.5 s: towards zero
    assert ttl_seconds(T0, T0 + 3 * SECOND // 2) == -1        # -1.5 s
    assert format_expiration(T0) == "2023-11-14T22:13:20Z"
    assert format_expiration(T0 + 544844945) == "2023-11-14T22:13:20.544844945Z"
    assert format_expiration(T0 + 500_000_000) == "2023-11-14T22:13:20.5Z"


# ---------------------------------------------------------------- set / get / create / update


def test_set_get_and_prev_node(s):
    e = s.set("/foo", "bar", now=T0)
    assert body(e) == {"action": "set", "node": {"key": "/foo", "value": "bar",
                                                 "modifiedIndex": 1, "createdIndex": 1}}
    assert e.etcd_index == 1 and e.is_created
    assert dumps(e) == '{"action":"set","node":{"key":"/foo","value":"bar","modifiedIndex":1,"createdIndex":1}}'
    e = s.set("foo", "baz", now=T0)
    assert e["prevNode"] == {"key": "/foo", "value": "bar", "modifiedIndex": 1, "createdIndex": 1}
    assert e["node"]["createdIndex"] == 2 and not e.is_created
    g = s.get("/foo/", now=T0)
    assert dumps(g) == '{"action":"get","node":{"key":"/foo","value":"baz","modifiedIndex":2,"createdIndex":2}}'
    assert g.etcd_index == 2
    assert s.set("/empty", "", now=T0)["node"]["value"] == ""   # an empty value is still shown


def test_get_errors(s):
    s.set("/a/b", "1", now=T0)
    assert err(s.get, "/a/x", now=T0).to_dict() == \
        {"errorCode": 100, "message": "Key not found", "cause": "/a/x", "index": 1}
    assert err(s.get, "/a/b/c", now=T0).to_dict() == \
        {"errorCode": 104, "message": "Not a directory", "cause": "/a/b", "index": 1}
    assert s.stats()["getsFail"] == 2


def test_recursive_sorted_get_and_hidden(s):
    for k in ["/d/z", "/d/a", "/d/sub/k", "/d/_hidden", "/d/sub/_h"]:
        s.set(k, k, now=T0)
    e = s.get("/d", now=T0, sorted=True)
    assert [n["key"] for n in e["node"]["nodes"]] == ["/d/a", "/d/sub", "/d/z"]
    sub = e["node"]["nodes"][1]
    assert sub == {"key": "/d/sub", "dir": True, "modifiedIndex": 3, "createdIndex": 3}
    e = s.get("/d", recursive=True, sorted=True, now=T0)
    assert e["node"]["nodes"][1]["nodes"] == [
        {"key": "/d/sub/k", "value": "/d/sub/k", "modifiedIndex": 3, "createdIndex": 3}]
    # unsorted listings are in creation order (deterministic)
    assert [n["key"] for n in s.get("/d", now=T0)["node"]["nodes"]] == ["/d/z", "/d/a", "/d/sub"]
    # hidden nodes can be read directly
    assert s.get("/d/_hidden", now=T0)["node"]["value"] == "/d/_hidden"
    # an empty directory has no "nodes"; the root has no indexes
    s.set("/e", dir=True, now=T0)
    assert body(s.get("/e", now=T0))["node"] == {"key": "/e", "dir": True,
                                                 "modifiedIndex": 6, "createdIndex": 6}
    assert set(s.get("/", now=T0)["node"]) == {"key", "dir", "nodes"}


def test_create_and_in_order_keys(s):
    e = s.create("/c", "v", now=T0)
    assert e.action == "create" and e.is_created and e["node"]["value"] == "v"
    x = err(s.create, "/c", "w", now=T0)
    assert (x.error_code, x.message, x.cause, x.index) == (105, "Key already exists", "/c", 1)
    e1 = s.create("/queue", "job1", unique=True, now=T0)
    e2 = s.create("/queue/", "job2", unique=True, now=T0)
    assert e1["node"]["key"] == "/queue/00000000000000000002"
    assert e2["node"]["key"] == "/queue/00000000000000000003"
    d = s.create("/queue", unique=True, dir=True, now=T0)
    assert d["node"] == {"key": "/queue/00000000000000000004", "dir": True,
                         "modifiedIndex": 4, "createdIndex": 4}
    x = err(s.create, "/c", "v", unique=True, now=T0)
    assert (x.error_code, x.cause, x.index) == (104, "/c", 4)
    # the failed create through a file counts as a create and a set failure (as etcd)
    assert s.stats()["createFail"] == 2 and s.stats()["setsFail"] == 1
    # intermediate directories get the new index
    s.create("/p/q/r", "1", now=T0)
    assert s.get("/p", now=T0)["node"]["createdIndex"] == 5


def test_directory_rules(s):
    s.set("/dir/k", "v", now=T0)
    x = err(s.set, "/dir", "v", now=T0)
    assert (x.error_code, x.message, x.cause, x.index) == (102, "Not a file", "/dir", 1)
    x = err(s.set, "/dir/k/deeper", "v", now=T0)
    assert (x.error_code, x.cause) == (104, "/dir/k")
    x = err(s.delete, "/dir", now=T0)
    assert (x.error_code, x.cause) == (102, "/dir")
    x = err(s.delete, "/dir", dir=True, now=T0)
    assert (x.error_code, x.message, x.cause, x.status) == (108, "Directory not empty", "/dir", 403)
    for call in (lambda: s.set("/", "v", now=T0), lambda: s.create("/", dir=True, now=T0),
                 lambda: s.update("/", now=T0), lambda: s.delete("/", recursive=True, now=T0),
                 lambda: s.compare_and_swap("//", "v", prev_value="x", now=T0)):
        x = err(call)
        assert (x.error_code, x.message, x.cause, x.index) == (107, "Root is read only", "/", 1)
    assert err(s.compare_and_delete, "/", prev_value="x", now=T0).error_code == 102
    # set may turn a key into a directory
    e = s.set("/dir/k", dir=True, now=T0)
    assert e["node"] == {"key": "/dir/k", "dir": True, "modifiedIndex": 2, "createdIndex": 2}
    assert e["prevNode"]["value"] == "v"


def test_namespaces_are_read_only():
    s = V2Store(namespaces=("/0", "/1"))
    s.set("/1/foo", "v", now=T0)
    x = err(s.delete, "/1", recursive=True, now=T0)
    assert (x.error_code, x.cause) == (107, "/")
    assert err(s.set, "/0", "v", now=T0).error_code == 107


def test_update(s):
    x = err(s.update, "/nope", "v", now=T0)
    assert (x.error_code, x.cause, x.index) == (100, "/nope", 0)
    s.set("/k", "a", ttl=10, now=T0)
    e = s.update("/k", "b", now=T0)
    assert body(e) == {"action": "update",
                       "node": {"key": "/k", "value": "b", "modifiedIndex": 2, "createdIndex": 1},
                       "prevNode": {"key": "/k", "value": "a", "expiration": "2023-11-14T22:13:30Z",
                                    "ttl": 10, "modifiedIndex": 1, "createdIndex": 1}}
    assert not s.has_ttl_keys()        # an update without a TTL makes the key permanent
    s.set("/d", dir=True, now=T0)
    x = err(s.update, "/d", "value", now=T0)
    assert (x.error_code, x.cause, x.index) == (102, "/d", 3)
    e = s.update("/d", ttl=5, now=T0)
    assert e["node"] == {"key": "/d", "dir": True, "expiration": "2023-11-14T22:13:25Z", "ttl": 5,
                         "modifiedIndex": 4, "createdIndex": 3}
    # etcd leaves the directory's own modifiedIndex as it was
    assert s.get("/d", now=T0)["node"]["modifiedIndex"] == 3


# ---------------------------------------------------------------- CAS / CAD


def test_compare_and_swap(s):
    s.set("/k", "one", now=T0)
    s.set("/d", dir=True, now=T0)
    x = err(s.compare_and_swap, "/k", "two", prev_value="nope", now=T0)
    assert (x.error_code, x.message, x.cause, x.index) == (101, "Compare failed", "[nope != one]", 2)
    x = err(s.compare_and_swap, "/k", "two", prev_index=7, now=T0)
    assert x.cause == "[7 != 1]"
    x = err(s.compare_and_swap, "/k", "two", prev_value="nope", prev_index=7, now=T0)
    assert x.cause == "[nope != one] [7 != 1]"
    x = err(s.compare_and_swap, "/k", "two", prev_value="one", prev_index=7, now=T0)
    assert x.cause == "[7 != 1]"
    assert err(s.compare_and_swap, "/d", "v", prev_value="x", now=T0).to_dict() == \
        {"errorCode": 102, "message": "Not a file", "cause": "/d", "index": 2}
    assert err(s.compare_and_swap, "/none", "v", prev_value="x", now=T0).error_code == 100
    e = s.compare_and_swap("/k", "two", prev_value="one", prev_index=1, ttl=3, now=T0)
    assert body(e) == {"action": "compareAndSwap",
                       "node": {"key": "/k", "value": "two", "expiration": "2023-11-14T22:13:23Z",
                                "ttl": 3, "modifiedIndex": 3, "createdIndex": 1},
                       "prevNode": {"key": "/k", "value": "one", "modifiedIndex": 1, "createdIndex": 1}}
    assert s.stats()["compareAndSwapFail"] == 6 and s.stats()["compareAndSwapSuccess"] == 1


def test_compare_and_delete(s):
    s.set("/k", "one", now=T0)
    x = err(s.compare_and_delete, "/k", prev_value="two", now=T0)
    assert (x.error_code, x.cause, x.index) == (101, "[two != one]", 1)
    x = err(s.compare_and_delete, "/k", prev_index=5, now=T0)
    assert x.cause == "[5 != 1]"
    e = s.compare_and_delete("/k", prev_value="one", prev_index=1, now=T0)
    assert body(e) == {"action": "compareAndDelete",
                       "node": {"key": "/k", "modifiedIndex": 2, "createdIndex": 1},
                       "prevNode": {"key": "/k", "value": "one", "modifiedIndex": 1, "createdIndex": 1}}
    assert err(s.compare_and_delete, "/k", prev_value="one", now=T0).error_code == 100


def test_delete(s):
    s.set("/a/b/c", "1", now=T0)
    s.set("/e", dir=True, now=T0)
    e = s.delete("/e", dir=True, now=T0)
    assert body(e) == {"action": "delete",
                       "node": {"key": "/e", "dir": True, "modifiedIndex": 3, "createdIndex": 2},
                       "prevNode": {"key": "/e", "dir": True, "modifiedIndex": 2, "createdIndex": 2}}
    e = s.delete("/a", recursive=True, now=T0)
    assert e["node"]["dir"] and e.etcd_index == 4
    assert err(s.get, "/a/b/c", now=T0).cause == "/a"
    x = err(s.delete, "/a", now=T0)
    assert (x.error_code, x.cause, x.index) == (100, "/a", 4)


# ---------------------------------------------------------------- TTL and refresh


def test_ttl_and_expiry(s):
    e = s.set("/t", "v", ttl=5, now=T0)
    assert e["node"]["expiration"] == "2023-11-14T22:13:25Z" and e["node"]["ttl"] == 5
    assert s.get("/t", now=T0 + 1)["node"]["ttl"] == 5
    assert s.get("/t", now=T0 + 4 * SECOND)["node"]["ttl"] == 1
    assert "ttl" not in s.get("/t", now=T0 + 5 * SECOND)["node"]
    assert s.next_expiration() == T0 + 5 * SECOND
    assert s.delete_expired_keys(T0 + 5 * SECOND - 1) == []
    s.set("/d/k", "v", ttl=100, now=T0)
    s.update("/d", ttl=2, now=T0)
    s.set("/zero", "v", ttl=0, now=T0)
    assert "ttl" not in s._lookup("/zero").extern(False, False, T0)   # ttl 0 is left out
    events = s.delete_expired_keys(T0 + 6 * SECOND)
    assert [(e.action, e.key, e.index) for e in events] == \
        [("expire", "/zero", 5), ("expire", "/d", 6), ("expire", "/t", 7)]
    assert body(events[2]) == {"action": "expire",
                               "node": {"key": "/t", "modifiedIndex": 7, "createdIndex": 1},
                               "prevNode": {"key": "/t", "value": "v",
                                            "expiration": "2023-11-14T22:13:25Z", "ttl": -1,
                                            "modifiedIndex": 1, "createdIndex": 1}}
    assert events[1]["node"]["dir"] is True
    assert err(s.get, "/d/k", now=T0).error_code == 100
    assert not s.has_ttl_keys() and s.stats()["expireCount"] == 3
    assert s.delete_expired_keys(T0 + 100 * SECOND) == []     # /d/k left with its directory


def test_ttl_removed_replaced_and_bad(s):
    s.set("/a", "v", ttl=1, now=T0)
    s.set("/a", "w", now=T0)                 # replaced by a permanent key
    s.set("/b", "v", ttl=1, now=T0)
    s.delete("/b", now=T0)
    s.set("/c", "v", ttl=1, now=T0)
    s.compare_and_swap("/c", "w", prev_value="v", ttl=50, now=T0)
    assert s.delete_expired_keys(T0 + 10 * SECOND) == []
    assert s.next_expiration() == T0 + 50 * SECOND
    for bad in (-1, 1.5, "5", True):
        x = err(s.set, "/x", "v", ttl=bad, now=T0)
        assert (x.error_code, x.cause) == (202, 'invalid value for "ttl"')


def test_refresh(s):
    s.set("/k", "v", ttl=5, now=T0)
    w = s.watch("/k")
    e = s.set("/k", ttl=10, refresh=True, now=T0 + SECOND)
    assert body(e) == {"action": "set",
                       "node": {"key": "/k", "value": "v", "expiration": "2023-11-14T22:13:31Z",
                                "ttl": 10, "modifiedIndex": 2, "createdIndex": 2},
                       "prevNode": {"key": "/k", "value": "v", "expiration": "2023-11-14T22:13:25Z",
                                    "ttl": 4, "modifiedIndex": 1, "createdIndex": 1},
                       "refresh": True}
    e = s.update("/k", ttl=20, refresh=True, now=T0)
    assert e["node"]["value"] == "v" and e["refresh"] is True
    e = s.compare_and_swap("/k", prev_value="v", ttl=30, refresh=True, now=T0)
    assert e["node"]["ttl"] == 30 and e.refresh
    assert list(w.events) == [] and not w.removed            # watchers do not hear refreshes
    assert s.watch("/k", since_index=1).next_event().index == 1   # history skips refreshes
    assert s.watch("/k", since_index=2).next_event() is None
    assert err(s.set, "/none", ttl=5, refresh=True, now=T0).error_code == 100
    assert s.delete_expired_keys(T0 + 29 * SECOND) == []
    assert len(s.delete_expired_keys(T0 + 30 * SECOND)) == 1


# ---------------------------------------------------------------- watchers


def test_watch_live_and_from_history(s):
    w = s.watch("/foo")
    assert w.start_index == 0 and s.stats()["watchers"] == 1
    s.set("/bar", "x", now=T0)
    assert not w.events
    e = s.set("/foo", "1", now=T0)
    assert w.next_event() is e and w.removed and s.stats()["watchers"] == 0
    s.set("/foo", "2", now=T0)
    assert w.next_event() is None                         # one-shot
    h = s.watch("/foo", since_index=1)
    got = h.next_event()
    assert got.index == 2 and got.etcd_index == 3 and h.removed
    assert s.watch("/foo", since_index=3).next_event().index == 3
    live = s.watch("/foo", since_index=4)
    assert not live.events and not live.removed
    r = s.watch("/", recursive=True, since_index=1)
    assert r.next_event().key == "/bar"
    calls = []
    s.watch("/foo", since_index=3, callback=calls.append)
    assert [c.index for c in calls] == [3]


def test_recursive_hidden_and_stream(s):
    seen = []
    w = s.watch("/dir", recursive=True, stream=True, callback=seen.append)
    plain = s.watch("/dir")
    s.set("/dir/a", "1", now=T0)
    s.set("/dir/_h/x", "1", now=T0)
    s.set("/dir/b/c", "1", now=T0)
    assert [e.key for e in seen] == ["/dir/a", "/dir/b/c"]
    assert not plain.events and not plain.removed          # not recursive: children do not count
    hidden = s.watch("/dir/_h", recursive=True)
    s.set("/dir/_h/y", "2", now=T0)
    assert hidden.next_event().key == "/dir/_h/y"          # below the watched hidden node itself
    w.remove()
    assert w.removed and s.stats()["watchers"] == 1


def test_delete_and_expire_notify_watchers_below(s):
    s.set("/d/x/y", "1", now=T0)
    s.set("/d/z", "1", ttl=1, now=T0)
    below = s.watch("/d/x/y")
    stream = s.watch("/d/x/y", stream=True)
    e = s.delete("/d/x", recursive=True, now=T0)
    assert below.next_event() is e
    assert stream.next_event() is e and not stream.events
    other = s.watch("/d/z")
    s.update("/d", ttl=0, now=T0)
    ex = s.delete_expired_keys(T0)
    assert other.next_event() is ex[0] and ex[0].key == "/d"
    # from history: a watch below a deleted directory finds the delete
    assert s.watch("/d/x/y/deeper", since_index=3).next_event() is not None
    assert s.watch("/d/x/y/deeper", since_index=3).next_event().index == 3


def test_stream_watcher_on_deleted_key_hears_it_twice(s):
    """etcd 3.4 tells a stream watcher of a deleted key twice (checked against etcd)."""
    s.set("/foo", "bar", now=T0)
    w = s.watch("/foo", stream=True)
    s.delete("/foo", now=T0)
    assert [e.action for e in w.events] == ["delete", "delete"]
    s.set("/foo", "again", now=T0)
    assert [e.action for e in w.events] == ["delete", "delete", "set"]


def test_outdated_index_and_queue_overflow(s):
    for i in range(1005):
        s.set("/k", str(i), now=T0)
    x = err(s.watch, "/k", since_index=5)
    assert x.to_dict() == {"errorCode": 401,
                           "message": "The event in requested index is outdated and cleared",
                           "cause": "the requested history has been cleared [6/5]", "index": 1005}
    assert s.watch("/k", since_index=6).next_event().index == 6
    w = s.watch("/k", stream=True)
    for i in range(101):
        s.set("/k", "x", now=T0)
    assert w.overflowed and w.removed and len(w.events) == 100
    assert s.stats()["watchers"] == 0


# ---------------------------------------------------------------- errors change nothing, snapshots


def _random_ops(draw_ops, s, now):
    out = []
    for op, path, val, num in draw_ops:
        try:
            if op == "set":
                e = s.set(path, val, ttl=num or None, now=now)
            elif op == "mkdir":
                e = s.set(path, dir=True, now=now)
            elif op == "create":
                e = s.create(path, val, unique=num % 2 == 1, now=now)
            elif op == "update":
                e = s.update(path, val, now=now)
            elif op == "cas":
                e = s.compare_and_swap(path, val, prev_value=val[:1], prev_index=num, now=now)
            elif op == "cad":
                e = s.compare_and_delete(path, prev_index=num, now=now)
            elif op == "delete":
                e = s.delete(path, dir=num % 2 == 1, recursive=num % 3 == 0, now=now)
            else:
                e = s.delete_expired_keys(now + num * SECOND)
            out.append(dumps(e) if isinstance(e, dict) else [dumps(x) for x in e])
        except V2Error as exc:
            out.append(exc.to_json())
    return out


OPS = st.lists(st.tuples(
    st.sampled_from(["set", "mkdir", "create", "update", "cas", "cad", "delete", "expire"]),
    st.sampled_from(["/", "/a", "/a/b", "/a/b/c", "/b", "/_h", "/a/_h/x"]),
    st.sampled_from(["", "v", "w"]),
    st.integers(0, 6)), max_size=40)


@settings(max_examples=150, deadline=None)
@given(OPS)
def test_snapshots_round_trip(ops):
    s = V2Store()
    _random_ops(ops, s, T0)
    state = s.to_state()
    assert marshal.loads(marshal.dumps(state)) == state
    t = V2Store.from_state(marshal.loads(marshal.dumps(state)))
    assert t.to_state() == state
    # both answer every further request alike
    assert _random_ops(ops, t, T0 + SECOND) == _random_ops(ops, s, T0 + SECOND)
    assert t.to_state() == s.to_state()


@settings(max_examples=150, deadline=None)
@given(OPS)
def test_a_refused_request_changes_nothing(ops):
    s = V2Store()
    for op in ops:
        before = s.to_state()
        result = _random_ops([op], s, T0)[0]
        if isinstance(result, str) and result.startswith('{"errorCode"'):
            assert s.to_state() == before, result
        elif isinstance(result, str):
            assert s.index == before["index"] + 1


def test_history_survives_snapshot(s):
    s.set("/a", "1", now=T0)
    s.set("/b", "1", ttl=5, now=T0)
    t = V2Store.from_state(s.to_state())
    assert t.watch("/a", since_index=1).next_event() == s.watch("/a", since_index=1).next_event()
    assert [e.key for e in t.delete_expired_keys(T0 + 5 * SECOND)] == ["/b"]
    assert t.stats()["setsSuccess"] == 0                  # counters are member-local


# ---------------------------------------------------------------- against etcd 3.4


def _etcd_v2(url, method, key, **form):
    data = urllib.parse.urlencode(form).encode() if method in ("PUT", "POST") else None
    q = "" if data is not None or not form else "?" + urllib.parse.urlencode(form)
    req = urllib.request.Request(url + "/v2/keys" + key + q, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, int(r.headers["X-Etcd-Index"]), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, int(e.headers["X-Etcd-Index"]), json.loads(e.read())


@pytest.mark.etcd
def test_answers_match_etcd():
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from servers import EtcdProcess

    srv = EtcdProcess(extra_args=["--enable-v2=true"]).start()
    try:
        requests = [
            ("PUT", "/foo", {"value": "bar"}, lambda s: s.set("/foo", "bar", now=T0)),
            ("PUT", "/foo", {"value": "baz"}, lambda s: s.set("/foo", "baz", now=T0)),
            ("GET", "/foo", {}, lambda s: s.get("/foo", now=T0)),
            ("PUT", "/foo/x", {"value": "1"}, lambda s: s.set("/foo/x", "1", now=T0)),
            ("PUT", "/dir/a", {"value": "1"}, lambda s: s.set("/dir/a", "1", now=T0)),
            ("PUT", "/dir/_h", {"value": "1"}, lambda s: s.set("/dir/_h", "1", now=T0)),
            ("PUT", "/dir", {"value": "1"}, lambda s: s.set("/dir", "1", now=T0)),
            ("POST", "/q", {"value": "j"}, lambda s: s.create("/q", "j", unique=True, now=T0)),
            ("GET", "/dir", {"recursive": "true", "sorted": "true"},
             lambda s: s.get("/dir", True, True, now=T0)),
            ("PUT", "/dir/a", {"value": "2", "prevExist": "false"},
             lambda s: s.create("/dir/a", "2", now=T0)),
            ("PUT", "/dir/a", {"value": "2", "prevExist": "true"},
             lambda s: s.update("/dir/a", "2", now=T0)),
            ("PUT", "/dir/a", {"value": "3", "prevValue": "nope"},
             lambda s: s.compare_and_swap("/dir/a", "3", prev_value="nope", now=T0)),
            ("PUT", "/dir/a", {"value": "3", "prevValue": "2"},
             lambda s: s.compare_and_swap("/dir/a", "3", prev_value="2", now=T0)),
            ("DELETE", "/dir/a", {"prevValue": "x"},
             lambda s: s.compare_and_delete("/dir/a", prev_value="x", now=T0)),
            ("DELETE", "/dir", {"dir": "true"}, lambda s: s.delete("/dir", dir=True, now=T0)),
            ("DELETE", "/dir", {}, lambda s: s.delete("/dir", now=T0)),
            ("DELETE", "/", {"recursive": "true"}, lambda s: s.delete("/", recursive=True, now=T0)),
            ("DELETE", "/dir", {"recursive": "true"},
             lambda s: s.delete("/dir", recursive=True, now=T0)),
            ("GET", "/dir", {}, lambda s: s.get("/dir", now=T0)),
        ]
        base = None
        store = V2Store()
        for method, key, form, call in requests:
            status, etcd_index, answer = _etcd_v2(srv.url, method, key, **form)
            if base is None:
                base = answer["node"]["modifiedIndex"] - 1   # etcd's own writes come first
            try:
                e = call(store)
                mine = (200 if not e.is_created else 201, e.etcd_index, body(e))
            except V2Error as x:
                mine = (x.status, x.index, x.to_dict())
            theirs = (status, etcd_index - base, json.dumps(_shift(answer, -base)))
            assert theirs == mine[:2] + (json.dumps(mine[2]),), (method, key, form)
    finally:
        srv.cleanup()


def _shift(obj, by):
    """Indexes in an etcd answer, moved by `by` (etcd's membership writes use the first few)."""
    if isinstance(obj, dict):
        return {k: (v + by if k in ("modifiedIndex", "createdIndex", "index") else _shift(v, by))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [_shift(v, by) for v in obj]
    if isinstance(obj, str) and obj.startswith("/q/"):
        return "/q/%020d" % (int(obj[3:]) + by)
    return obj
