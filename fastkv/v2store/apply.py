"""A v2 request from the log applied to the v2 store, as etcd's apply_v2.go does.

The payload is what the /v2/keys adapter proposes: ``{"method": PUT|POST|DELETE|
QGET|SYNC, "path", "val", "dir", "prevValue", "prevIndex", "prevExist" (True,
False or absent), "ttl" (seconds or absent), "refresh", "recursive", "sorted",
"now"}``; ``now`` (nanoseconds since the epoch) is the proposing member's clock,
so every member computes the same expirations.
"""
from __future__ import annotations

from fastkv.v2store.store import Event, V2Store

V2_PREFIX = "/1"          # etcd keeps v2 keys under /1 (/0 holds its membership)
NAMESPACES = ("/0", "/1")


def apply_v2(store: V2Store, p: dict) -> Event | list[Event] | None:
    """Run one request; returns the store's Event (V2Error propagates), SYNC's list of
    expire events."""
    method = p["method"]
    now = p["now"]
    path = p.get("path", "/")
    val = p.get("val", "")
    prev_value = p.get("prevValue", "")
    prev_index = p.get("prevIndex", 0)
    ttl = p.get("ttl")
    refresh = bool(p.get("refresh", False))
    if method == "PUT":
        exists = p.get("prevExist")
        if exists is True:
            if prev_index == 0 and prev_value == "":
                return store.update(path, val, ttl=ttl, refresh=refresh, now=now)
            return store.compare_and_swap(path, val, prev_value=prev_value,
                                          prev_index=prev_index, ttl=ttl, refresh=refresh,
                                          now=now)
        if exists is False:
            return store.create(path, val, dir=bool(p.get("dir")), ttl=ttl, now=now)
        if prev_index > 0 or prev_value != "":
            return store.compare_and_swap(path, val, prev_value=prev_value,
                                          prev_index=prev_index, ttl=ttl, refresh=refresh,
                                          now=now)
        return store.set(path, val, dir=bool(p.get("dir")), ttl=ttl, refresh=refresh, now=now)
    if method == "POST":
        return store.create(path, val, dir=bool(p.get("dir")), unique=True, ttl=ttl, now=now)
    if method == "DELETE":
        if prev_index > 0 or prev_value != "":
            return store.compare_and_delete(path, prev_value=prev_value, prev_index=prev_index,
                                            now=now)
        return store.delete(path, dir=bool(p.get("dir")), recursive=bool(p.get("recursive")),
                            now=now)
    if method == "QGET":
        return store.get(path, bool(p.get("recursive")), bool(p.get("sorted")), now=now)
    if method == "SYNC":
        return store.delete_expired_keys(now)
    raise ValueError(f"unknown v2 method {method!r}")
