"""The v2 key tree of etcd 3.4 (etcdserver/api/v2store) as a deterministic state machine.

Nothing here reads a clock: every call that reports or sets a TTL takes `now`,
integer nanoseconds since the Unix epoch chosen by the proposer and carried in
the log entry, so that every member applying the same log answers alike.

Results are `Event`s: dicts in the shape (and key order) of etcd's JSON body,
`{"action", "node", "prevNode", "refresh"}`, whose node dicts hold `key, value,
dir, expiration, ttl, nodes, modifiedIndex, createdIndex` and leave out what
etcd leaves out. `event.etcd_index` is what etcd sends as X-Etcd-Index.
Treat events as read-only: one event object reaches every watcher.
"""
from __future__ import annotations

import copy
import heapq
import marshal
import time
from collections import deque

from fastkv.v2store import errors
from fastkv.v2store.errors import V2Error

SECOND = 1_000_000_000
HISTORY_CAPACITY = 1000     # events kept for watches with a past index
WATCHER_BUFFER = 100        # undelivered events a queue watcher may hold before it is dropped
STATE_VERSION = 2           # etcd's store version

GET = "get"
CREATE = "create"
SET = "set"
UPDATE = "update"
DELETE = "delete"
COMPARE_AND_SWAP = "compareAndSwap"
COMPARE_AND_DELETE = "compareAndDelete"
EXPIRE = "expire"

STAT_NAMES = (
    "getsSuccess", "getsFail", "setsSuccess", "setsFail", "deleteSuccess", "deleteFail",
    "updateSuccess", "updateFail", "createSuccess", "createFail",
    "compareAndSwapSuccess", "compareAndSwapFail",
    "compareAndDeleteSuccess", "compareAndDeleteFail", "expireCount",
)


# --------------------------------------------------------------------------- paths and time

def clean_path(p: str) -> str:
    """Go's path.Clean(path.Join("/", p)): rooted, no empty, "." or ".." parts."""
    parts: list[str] = []
    for part in p.split("/"):
        if part == "" or part == ".":
            continue
        if part == "..":
            if parts:
                parts.pop()
        else:
            parts.append(part)
    return "/" + "/".join(parts)


def _split(p: str) -> tuple[str, str]:
    """(parent directory, last name) of a clean path."""
    i = p.rfind("/")
    return (p[:i] or "/"), p[i + 1:]


def _join(parent: str, name: str) -> str:
    return parent + name if parent.endswith("/") else parent + "/" + name


def format_expiration(expire_ns: int) -> str:
    """A time as Go's time.Time marshals to JSON in UTC (RFC 3339, trailing zeros cut)."""
    secs, frac = divmod(expire_ns, SECOND)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    if frac:
        text += "." + ("%09d" % frac).rstrip("0")
    return text + "Z"


def ttl_seconds(expire_ns: int, now: int) -> int:
    """Seconds left as etcd reports them: rounded up while positive, towards zero after."""
    left = expire_ns - now
    if left >= 0:
        return -(-left // SECOND)
    return -((-left) // SECOND)


def is_hidden(watch_path: str, key: str) -> bool:
    """Whether `key` lies under a hidden ("_") name below `watch_path` (etcd's isHidden)."""
    if len(watch_path) > len(key):
        return False
    return "/_" in clean_path("/" + key[len(watch_path):])


def node_extern(key: str, modified: int, created: int, *, value: str | None = None,
                is_dir: bool = False, expire: int | None = None, now: int = 0,
                nodes: list | None = None) -> dict:
    """etcd's NodeExtern as JSON: fields in its order, empty ones left out."""
    out: dict = {}
    if key:
        out["key"] = key
    if value is not None:
        out["value"] = value
    if is_dir:
        out["dir"] = True
    if expire is not None:
        out["expiration"] = format_expiration(expire)
        ttl = ttl_seconds(expire, now)
        if ttl:
            out["ttl"] = ttl
    if nodes:
        out["nodes"] = nodes
    if modified:
        out["modifiedIndex"] = modified
    if created:
        out["createdIndex"] = created
    return out


# --------------------------------------------------------------------------- events

class Event(dict):
    """One answer or change, as etcd's JSON; `etcd_index` is the X-Etcd-Index header."""

    __slots__ = ("etcd_index",)

    def __init__(self, action: str, node: dict, prev_node: dict | None = None,
                 etcd_index: int = 0, refresh: bool = False):
        super().__init__(action=action, node=node)
        if prev_node is not None:
            self["prevNode"] = prev_node
        if refresh:
            self["refresh"] = True
        self.etcd_index = etcd_index

    @property
    def action(self) -> str:
        return self["action"]

    @property
    def key(self) -> str:
        return self["node"].get("key", "")

    @property
    def index(self) -> int:
        """The index the event happened at (its node's modifiedIndex)."""
        return self["node"].get("modifiedIndex", 0)

    @property
    def refresh(self) -> bool:
        return self.get("refresh", False)

    @property
    def is_created(self) -> bool:
        """etcd answers 201 Created for these, 200 otherwise."""
        return self["action"] == CREATE or (self["action"] == SET and "prevNode" not in self)

    def with_etcd_index(self, etcd_index: int) -> "Event":
        e = Event.__new__(Event)
        dict.update(e, self)
        e.etcd_index = etcd_index
        return e

    def __repr__(self):
        return f"Event({dict.__repr__(self)}, etcd_index={self.etcd_index})"


# --------------------------------------------------------------------------- nodes

class Node:
    """A key (value is a str) or a directory (children is a dict, in creation order)."""

    __slots__ = ("path", "name", "created", "modified", "expire", "value", "children",
                 "parent", "heap_seq")

    def __init__(self, path: str, created: int, parent: "Node | None", *, value: str | None = None,
                 expire: int | None = None):
        self.path = path
        self.name = _split(path)[1]
        self.created = created
        self.modified = created
        self.expire = expire           # nanoseconds since the epoch, None = permanent
        self.parent = parent
        self.heap_seq = 0              # which TTL heap entry is current (0 = none)
        if value is None:
            self.value = ""
            self.children: dict[str, Node] | None = {}
        else:
            self.value = value
            self.children = None

    @property
    def is_dir(self) -> bool:
        return self.children is not None

    @property
    def hidden(self) -> bool:
        return self.name.startswith("_")

    def listing(self, recursive: bool, sort: bool, now: int) -> list:
        """The visible children as node dicts (sub-directories listed only if recursive)."""
        nodes = [child.extern(recursive, sort, now) for child in self.children.values()
                 if not child.hidden]
        if sort:
            nodes.sort(key=lambda n: n["key"])
        return nodes

    def extern(self, recursive: bool, sort: bool, now: int) -> dict:
        """etcd's node.Repr."""
        if self.is_dir:
            nodes = self.listing(recursive, sort, now) if recursive else None
            return node_extern(self.path, self.modified, self.created, is_dir=True,
                               expire=self.expire, now=now, nodes=nodes)
        return node_extern(self.path, self.modified, self.created, value=self.value,
                           expire=self.expire, now=now)

    def walk_post_order(self):
        """This node and everything below it, children before their directory."""
        if self.children:
            for child in list(self.children.values()):
                yield from child.walk_post_order()
        yield self


def _compare_fail_cause(n: Node, prev_value: str, prev_index: int) -> str | None:
    """None if the node matches; else etcd's cause text (non-empty arguments only compare)."""
    index_ok = prev_index == 0 or n.modified == prev_index
    value_ok = prev_value == "" or n.value == prev_value
    if index_ok and value_ok:
        return None
    if index_ok:
        return f"[{prev_value} != {n.value}]"
    if value_ok:
        return f"[{prev_index} != {n.modified}]"
    return f"[{prev_value} != {n.value}] [{prev_index} != {n.modified}]"


# --------------------------------------------------------------------------- watchers

class Watcher:
    """Receives the events of one watch, in order.

    With a `callback`, each event is passed to it as it happens (synchronously,
    inside the store call that made it). Without one, events queue in `events`
    (`next_event()` pops one); like etcd's buffered channel, a queue watcher
    that lets WATCHER_BUFFER events pile up is dropped and `overflowed` is set.
    A non-stream watcher is removed after its first event; `removed` tells.
    """

    def __init__(self, store: "V2Store", key: str, recursive: bool, stream: bool,
                 since_index: int, start_index: int, callback=None):
        self.key = key
        self.recursive = recursive
        self.stream = stream
        self.since_index = since_index
        self.start_index = start_index     # the store index when the watch began: X-Etcd-Index
        self.callback = callback
        self.events: deque = deque()
        self.removed = False
        self.overflowed = False
        self._store = store

    def next_event(self) -> Event | None:
        return self.events.popleft() if self.events else None

    def remove(self) -> None:
        """Stop watching (a no-op when already removed)."""
        self._store._unregister(self)

    def _deliver(self, event: Event) -> None:
        if self.callback is not None:
            self.callback(event)
        elif len(self.events) >= WATCHER_BUFFER:
            self.overflowed = True
            self.remove()
        else:
            self.events.append(event)

    def _offer(self, event: Event, original_path: bool, deleted: bool) -> bool:
        """etcd's watcher.notify: deliver if interested; True if it was."""
        if (self.recursive or original_path or deleted) and event.index >= self.since_index:
            self._deliver(event)
            return True
        return False


# --------------------------------------------------------------------------- the store

class V2Store:
    """etcd 3.4's v2 store. `namespaces` are read-only top directories (etcd's "/0", "/1")."""

    def __init__(self, namespaces=()):
        self.index = 0
        self.version = STATE_VERSION
        self.root = Node("/", 0, None)
        self.namespaces = tuple(namespaces)
        for ns in self.namespaces:
            child = Node(clean_path(ns), 0, self.root)
            self.root.children[child.name] = child
        self._readonly = {"/", *(clean_path(ns) for ns in self.namespaces)}
        self._history: deque[Event] = deque(maxlen=HISTORY_CAPACITY)
        self._watchers: dict[str, list[Watcher]] = {}
        self._watcher_count = 0
        self._ttl_heap: list = []
        self._heap_seq = 0
        self._stats = dict.fromkeys(STAT_NAMES, 0)

    # ---- reads

    def get(self, path: str, recursive: bool = False, sorted: bool = False, *, now: int) -> Event:
        p = clean_path(path)
        try:
            n = self._lookup(p)
        except V2Error:
            self._stats["getsFail"] += 1
            raise
        self._stats["getsSuccess"] += 1
        if n.is_dir:
            node = node_extern(p, n.modified, n.created, is_dir=True, expire=n.expire, now=now,
                               nodes=n.listing(recursive, sorted, now))
        else:
            node = node_extern(p, n.modified, n.created, value=n.value, expire=n.expire, now=now)
        return Event(GET, node, etcd_index=self.index)

    def peek(self, path: str, count: bool = True) -> Node | None:
        """The node at `path` as get() finds it, counted as a get (unless not `count`),
        without building an event (None when it is missing): etcd's v2 auth reads its
        switch this way on every request. Treat the node as read-only."""
        p = clean_path(path)
        n = self.root
        if p != "/":
            for name in p[1:].split("/"):       # as _lookup, without building its error
                children = n.children
                n = children.get(name) if children is not None else None
                if n is None:
                    if count:
                        self._stats["getsFail"] += 1
                    return None
        if count:
            self._stats["getsSuccess"] += 1
        return n

    def count_get(self, found: bool) -> None:
        """Count a get that peek(count=False) made, as peek would have."""
        self._stats["getsSuccess" if found else "getsFail"] += 1

    def has_ttl_keys(self) -> bool:
        """Whether any node has a TTL (etcd proposes SYNC only then)."""
        return self.next_expiration() is not None

    def next_expiration(self) -> int | None:
        """The earliest expiration time (ns) of any node, or None."""
        top = self._heap_top()
        return top.expire if top else None

    def stats(self) -> dict:
        """This member's counters for /v2/stats/store, named and ordered as etcd's."""
        out = dict(self._stats)
        out["watchers"] = self._watcher_count
        return out

    # ---- writes

    def create(self, path: str, value: str = "", *, dir: bool = False, unique: bool = False,
               ttl: int | None = None, now: int) -> Event:
        """Create a key or directory that must not exist; `unique` names it by the
        new index (20 digits) under the directory `path` (POST, in-order keys)."""
        try:
            expire = _expiration(ttl, now)
            e = self._create(path, dir, value, unique, False, expire, CREATE, now)
        except V2Error:
            self._stats["createFail"] += 1
            raise
        self._stats["createSuccess"] += 1
        self._notify(e)
        return e

    def set(self, path: str, value: str = "", *, dir: bool = False, ttl: int | None = None,
            refresh: bool = False, now: int) -> Event:
        """Create or replace a key (a directory is never replaced). With `refresh`
        the key must exist, keeps its value, gets the new TTL and no watcher hears."""
        p = clean_path(path)
        try:
            expire = _expiration(ttl, now)
            old = self._find(p)
            if old is None and refresh:
                self._lookup(p)     # raises KEY_NOT_FOUND naming the first missing part
            if refresh:
                value = old.value
            prev = old.extern(False, False, now) if old is not None else None
            e = self._create(p, dir, value, False, True, expire, SET, now)
        except V2Error:
            self._stats["setsFail"] += 1
            raise
        self._stats["setsSuccess"] += 1
        if prev is not None:
            e["prevNode"] = prev
        self._finish_write(e, refresh)
        return e

    def update(self, path: str, value: str = "", *, ttl: int | None = None,
               refresh: bool = False, now: int) -> Event:
        """Change an existing key's value (or a directory's TTL; its value must be "").
        Without `ttl` the node becomes permanent."""
        p = clean_path(path)
        expire = self._checked_expiration(ttl, now, "updateFail")
        n = self._writable(p, "update")
        if n.is_dir and value:
            self._stats["updateSuccess"] += 1      # sic, as etcd 3.4
            raise V2Error(errors.NOT_FILE, p, self.index)
        self._stats["updateSuccess"] += 1
        return self._rewrite(UPDATE, n, p, value, expire, refresh, now)

    def compare_and_swap(self, path: str, value: str = "", *, prev_value: str = "",
                         prev_index: int = 0, ttl: int | None = None, refresh: bool = False,
                         now: int) -> Event:
        """Set a key's value if its value is `prev_value` and its modifiedIndex is
        `prev_index` (an empty / 0 argument is not compared)."""
        p = clean_path(path)
        expire = self._checked_expiration(ttl, now, "compareAndSwapFail")
        n = self._writable(p, "compareAndSwap")
        if n.is_dir:
            self._stats["compareAndSwapFail"] += 1
            raise V2Error(errors.NOT_FILE, p, self.index)
        cause = _compare_fail_cause(n, prev_value, prev_index)
        if cause is not None:
            self._stats["compareAndSwapFail"] += 1
            raise V2Error(errors.TEST_FAILED, cause, self.index)
        self._stats["compareAndSwapSuccess"] += 1
        return self._rewrite(COMPARE_AND_SWAP, n, p, value, expire, refresh, now)

    def delete(self, path: str, *, dir: bool = False, recursive: bool = False, now: int) -> Event:
        """Delete a key, an empty directory (`dir`) or a whole directory (`recursive`)."""
        dir = dir or recursive
        p = clean_path(path)
        n = self._writable(p, "delete")
        if n.is_dir:
            if not dir:
                self._stats["deleteFail"] += 1
                raise V2Error(errors.NOT_FILE, n.path, self.index)
            if n.children and not recursive:
                self._stats["deleteFail"] += 1
                raise V2Error(errors.DIR_NOT_EMPTY, n.path, self.index)
        self._stats["deleteSuccess"] += 1
        return self._remove_with_event(DELETE, n, p, now)

    def compare_and_delete(self, path: str, *, prev_value: str = "", prev_index: int = 0,
                           now: int) -> Event:
        """Delete a key if it matches `prev_value` / `prev_index` (as compare_and_swap)."""
        p = clean_path(path)
        n = self._lookup_counted(p, "compareAndDeleteFail")
        # etcd 3.4 counts the two refusals below as successes.
        self._stats["compareAndDeleteSuccess"] += 1
        if n.is_dir:
            raise V2Error(errors.NOT_FILE, p, self.index)
        cause = _compare_fail_cause(n, prev_value, prev_index)
        if cause is not None:
            raise V2Error(errors.TEST_FAILED, cause, self.index)
        return self._remove_with_event(COMPARE_AND_DELETE, n, p, now)

    def delete_expired_keys(self, now: int) -> list[Event]:
        """etcd's SYNC: remove every node whose expiration is <= now, earliest first
        (ties by path, so a directory goes before its children), one "expire" event each."""
        events = []
        while True:
            n = self._heap_top()
            if n is None or n.expire > now:
                return events
            self._stats["expireCount"] += 1
            events.append(self._remove_with_event(EXPIRE, n, n.path, now))

    # ---- watches

    def watch(self, key: str, recursive: bool = False, stream: bool = False,
              since_index: int = 0, now: int | None = None, callback=None) -> Watcher:
        """Watch `key` (and below it if `recursive`) for events at index >= since_index
        (0: from the next one). If the history holds a matching event, the watcher gets
        it at once and is not registered (as etcd, also for `stream`); otherwise it is
        registered for live events. `now` is accepted for symmetry and not used: an
        event's TTL is the one it had when it happened."""
        key = clean_path(key)
        since = since_index or self.index + 1
        found = self._scan_history(key, recursive, since)
        w = Watcher(self, key, recursive, stream, since, self.index, callback)
        if found is not None:
            w.removed = True
            w._deliver(found.with_etcd_index(self.index))
            return w
        self._watchers.setdefault(key, []).append(w)
        self._watcher_count += 1
        return w

    # ---- snapshots

    def to_state(self) -> dict:
        """The replicated state as marshal-able builtins (no watchers, no stats).

        A node is [name, createdIndex, modifiedIndex, expiration or None, value]
        for a key and the same with a list of child nodes instead of the value for a
        directory; children keep their creation order."""
        return {
            "version": self.version,
            "index": self.index,
            "namespaces": list(self.namespaces),
            "root": _node_state(self.root),
            # events hold only builtins: marshal copies them in C, twice as fast as deepcopy
            "history": [[e.etcd_index, marshal.loads(marshal.dumps(dict(e)))]
                        for e in self._history],
        }

    @classmethod
    def from_state(cls, state: dict) -> "V2Store":
        store = cls(state.get("namespaces", ()))
        store.load_state(state)
        return store

    def load_state(self, state: dict) -> None:
        """Replace the replicated state (etcd's Recovery); watchers and stats stay."""
        self.version = state["version"]
        self.index = state["index"]
        self.namespaces = tuple(state.get("namespaces", ()))
        self._readonly = {"/", *(clean_path(ns) for ns in self.namespaces)}
        self._ttl_heap = []
        self.root = self._node_from_state(state["root"], None)
        self._history = deque(
            (_event_from_state(etcd_index, body) for etcd_index, body in state["history"]),
            maxlen=HISTORY_CAPACITY)

    # ---- internals: lookups

    def _lookup(self, p: str) -> Node:
        """The node at clean path p, or KEY_NOT_FOUND / NOT_DIR as etcd's internalGet."""
        n = self._find(p)
        if n is not None:
            return n
        n = self.root   # missing: etcd's error names the first name that is not there
        for name in p[1:].split("/"):
            child = n.children.get(name)
            if child is None:
                raise V2Error(errors.KEY_NOT_FOUND, _join(n.path, name), self.index)
            n = child
        raise AssertionError(f"_find and _lookup disagree on {p!r}")   # unreachable

    def _find(self, p: str) -> Node | None:
        """_lookup, with None for a missing key instead of an error (a new key is the
        common case of a set: no exception to build and catch)."""
        n = self.root
        if p == "/":
            return n
        for name in p[1:].split("/"):
            if not n.is_dir:
                raise V2Error(errors.NOT_DIR, n.path, self.index)
            n = n.children.get(name)
            if n is None:
                return None
        return n

    def _lookup_counted(self, p: str, fail_stat: str) -> Node:
        try:
            return self._lookup(p)
        except V2Error:
            self._stats[fail_stat] += 1
            raise

    def _writable(self, p: str, op: str) -> Node:
        """The existing node at p, refusing the read-only root and namespaces."""
        if p in self._readonly:
            self._stats[op + "Success"] += 1       # etcd 3.4 counts this refusal as a success
            raise V2Error(errors.ROOT_READ_ONLY, "/", self.index)
        return self._lookup_counted(p, op + "Fail")

    def _checked_expiration(self, ttl, now, fail_stat: str) -> int | None:
        try:
            return _expiration(ttl, now)
        except V2Error:
            self._stats[fail_stat] += 1
            raise

    # ---- internals: changes

    def _create(self, path: str, is_dir: bool, value: str, unique: bool, replace: bool,
                expire: int | None, action: str, now: int) -> Event:
        """etcd's internalCreate: everything is checked before anything changes."""
        cur, nxt = self.index, self.index + 1
        if unique:
            path += "/%020d" % nxt
        p = clean_path(path)
        if p in self._readonly:
            raise V2Error(errors.ROOT_READ_ONLY, "/", cur)
        parent_path, name = _split(p)
        # Walk down the existing directories; the rest of the parent path is missing.
        parent = self.root
        missing: list[str] = []
        for part in (parent_path[1:].split("/") if parent_path != "/" else ()):
            if missing:
                missing.append(part)
                continue
            child = parent.children.get(part)
            if child is None:
                missing.append(part)
            elif not child.is_dir:
                self._stats["setsFail"] += 1       # etcd 3.4 counts this one twice
                raise V2Error(errors.NOT_DIR, child.path, cur)
            else:
                parent = child
        existing = None if missing else parent.children.get(name)
        if existing is not None:
            if not replace:
                raise V2Error(errors.NODE_EXIST, p, cur)
            if existing.is_dir:
                raise V2Error(errors.NOT_FILE, p, cur)

        # Checked: now change.
        for part in missing:
            d = Node(_join(parent.path, part), nxt, parent)
            parent.children[part] = d
            parent = d
        prev = None
        if existing is not None:
            prev = existing.extern(False, False, now)
            self._detach(existing)
        n = Node(p, nxt, parent, value=None if is_dir else value)
        parent.children[name] = n
        self._set_expire(n, expire)
        self.index = nxt
        node = node_extern(p, nxt, nxt, value=None if is_dir else value, is_dir=is_dir,
                           expire=expire, now=now)
        return Event(action, node, prev, etcd_index=nxt)

    def _rewrite(self, action: str, n: Node, p: str, value: str, expire: int | None,
                 refresh: bool, now: int) -> Event:
        """Give an existing node a new value (a refresh keeps it) and expiration."""
        if refresh:
            value = n.value
        nxt = self.index + 1
        prev = n.extern(False, False, now)
        if not n.is_dir:                           # etcd leaves a directory's modifiedIndex as it was
            n.value = value
            n.modified = nxt
        self._set_expire(n, expire)
        node = node_extern(p, nxt, n.created, value=None if n.is_dir else value,
                           is_dir=n.is_dir, expire=n.expire, now=now)
        self.index = nxt
        e = Event(action, node, prev, etcd_index=nxt)
        self._finish_write(e, refresh)
        return e

    def _remove_with_event(self, action: str, n: Node, p: str, now: int) -> Event:
        """Remove n and all below it; watchers of each removed path hear the event."""
        nxt = self.index + 1
        prev = n.extern(False, False, now)
        node = node_extern(p, nxt, n.created, is_dir=n.is_dir)
        e = Event(action, node, prev, etcd_index=nxt)
        self.index = nxt
        removed = list(n.walk_post_order())
        self._detach(n)
        for gone in removed:
            self._notify_watchers(e, gone.path, True)
        self._notify(e)
        return e

    def _detach(self, n: Node) -> None:
        """Unlink n from its parent and take it and its subtree off the TTL heap."""
        if n.parent is not None and n.parent.children.get(n.name) is n:
            del n.parent.children[n.name]
        for gone in n.walk_post_order():
            gone.heap_seq = 0

    def _set_expire(self, n: Node, expire: int | None) -> None:
        n.expire = expire
        if expire is None:
            n.heap_seq = 0
            return
        self._heap_seq += 1
        n.heap_seq = self._heap_seq
        heapq.heappush(self._ttl_heap, (expire, n.path, n.heap_seq, n))

    def _heap_top(self) -> Node | None:
        heap = self._ttl_heap
        while heap:
            expire, _path, seq, n = heap[0]
            if n.heap_seq == seq:
                return n
            heapq.heappop(heap)                    # stale: removed, replaced or re-timed
        return None

    def _finish_write(self, e: Event, refresh: bool) -> None:
        if refresh:
            e["refresh"] = True
            self._history.append(e)                # in the history, but no watcher hears it
        else:
            self._notify(e)

    # ---- internals: watchers

    def _notify(self, e: Event) -> None:
        """Record e and tell the watchers of its key and of every directory above it."""
        self._history.append(e)
        if not self._watcher_count:   # the common case: no v2 watcher anywhere
            return
        key = e.key
        self._notify_watchers(e, "/", False)
        if key != "/":
            parts = key[1:].split("/")
            for i in range(1, len(parts) + 1):
                self._notify_watchers(e, "/" + "/".join(parts[:i]), False)

    def _notify_watchers(self, e: Event, watch_path: str, deleted: bool) -> None:
        watchers = self._watchers.get(watch_path)
        if not watchers:
            return
        key = e.key
        original = key == watch_path
        for w in list(watchers):
            if w.removed:
                continue
            if (original or not is_hidden(watch_path, key)) and w._offer(e, original, deleted):
                if not w.stream:
                    self._unregister(w)

    def _unregister(self, w: Watcher) -> None:
        if w.removed:
            return
        w.removed = True
        watchers = self._watchers.get(w.key)
        if watchers is not None and w in watchers:
            watchers.remove(w)
            self._watcher_count -= 1
            if not watchers:
                del self._watchers[w.key]

    def _scan_history(self, key: str, recursive: bool, since: int) -> Event | None:
        """The first event at index >= since that a watch of key would see (etcd's scan)."""
        history = self._history
        start = history[0].index if history else 0
        if since < start:
            raise V2Error(errors.EVENT_INDEX_CLEARED,
                          f"the requested history has been cleared [{start}/{since}]", self.index)
        if not history or since > history[-1].index:
            return None
        prefix = key if key.endswith("/") else key + "/"
        for e in history:
            if e.index < since or e.refresh:
                continue
            ek = e.key
            if ek == key or (recursive and ek.startswith(prefix)):
                return e
            prev = e.get("prevNode")
            if e.action in (DELETE, EXPIRE) and prev is not None and prev.get("dir") \
                    and key.startswith(prev["key"]):
                return e
        return None

    def _node_from_state(self, s: list, parent: Node | None) -> Node:
        name, created, modified, expire, body = s
        path = "/" if parent is None else _join(parent.path, name)
        if isinstance(body, list):
            n = Node(path, created, parent)
            for child_state in body:
                child = self._node_from_state(child_state, n)
                n.children[child.name] = child
        else:
            n = Node(path, created, parent, value=body)
        n.modified = modified
        self._set_expire(n, expire)
        return n


def _expiration(ttl, now: int) -> int | None:
    """The expiration time for a TTL in seconds (None: permanent)."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 0:
        raise V2Error(errors.TTL_NAN, 'invalid value for "ttl"', 0)
    return now + ttl * SECOND


def _node_state(n: Node) -> list:
    body = [_node_state(c) for c in n.children.values()] if n.is_dir else n.value
    return [n.name, n.created, n.modified, n.expire, body]


def _event_from_state(etcd_index: int, body: dict) -> Event:
    e = Event.__new__(Event)
    dict.update(e, copy.deepcopy(body))
    e.etcd_index = etcd_index
    return e
