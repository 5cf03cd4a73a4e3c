"""Watchers: live fan-out of applied changes and catch-up from the store's history.

Two classes, as etcd 3.4's mvcc/watchable_store.go and v3rpc/watch.go:

:class:`WatchHub`
    every watcher of the member. The applier calls ``notify(rev, events)``
    after each applied write (events as ``KVStore`` returns them, in order).
    A *synced* watcher gets the matching events of that revision in one
    response. A watcher that starts below the current revision is *unsynced*:
    it catches up from ``KVStore.events_since`` (up to 1000 revisions per
    response, as etcd's watchBatchMaxRevs) and then joins the synced set. Both
    happen in the event loop's thread, without awaiting in between, so the
    seam is exact: the catch-up reads up to the store's revision R and the
    watcher then takes live events from R+1 on (``notify`` also skips any
    revision below a watcher's next revision). A watcher whose consumer lets
    ``max_pending`` responses pile up is moved back to unsynced and catches up
    from history once the consumer drains (etcd's "victims"): the applier never
    waits and no event is dropped. A watcher whose next revision falls below
    the compact revision gets etcd's compacted response (``compact_revision``
    set, canceled) and is removed.

Slow consumers. A response counts as pending from the moment it is queued until
the stream's consumer (the gRPC or HTTP adapter) *takes* it to write it; the
adapter takes the next one only once its transport has room (HTTP/2 flow control
of the stream, the asyncio transport's high-water mark), so a client that stops
reading stops the taking: per watcher at most ``max_pending`` responses wait here,
plus the transport's own bounded buffer. etcd 3.4 keeps such victims for ever.
fastkv bounds it (``slow_timeout``, ``--experimental-watch-slow-consumer-timeout``,
5 minutes by default, 0 for etcd's behaviour): a blocked watcher (``max_pending``
responses waiting) whose stream has taken no response for that long is cancelled:
its queued responses are dropped and the stream gets, ahead of the rest, etcd's
canceled WatchResponse with ``cancel_reason`` ``ERR_SLOW_CONSUMER`` (etcdctl and
clientv3 see a watch canceled by the server). A stream that does not take even
that response within ``max(slow_timeout, MIN_CANCEL_GRACE)`` is abandoned: its
adapter resets the HTTP/2 stream (or closes the HTTP/1.1 connection), which frees
the transport's buffer too. A consumer that is slow but still takes responses is
never cancelled: it falls behind and catches up from history, as in etcd.

:class:`WatchStream`
    one client stream with many watches (the JSON gateway's /v3/watch, gRPC
    Watch): ``await handle(request)`` for create/cancel/progress requests,
    ``async for resp in responses()`` for WatchResponse dicts, ``close()``.

Responses are dicts in etcd's shape: ``{"header", "watch_id", "created",
"canceled", "compact_revision", "cancel_reason", "events", "fragment"}`` with
fields at their default left out, except ``watch_id`` which is always there
(the JSON adapter drops a 0 like grpc-gateway does).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Callable

__all__ = ["WatchHub", "WatchStream", "Watcher", "FILTER_NOPUT", "FILTER_NODELETE",
           "AUTO_WATCH_ID", "INVALID_WATCH_ID", "WATCH_BATCH_MAX_REVS",
           "DEFAULT_PROGRESS_INTERVAL", "DEFAULT_MAX_REQUEST_BYTES"]

FILTER_NOPUT = 0
FILTER_NODELETE = 1
AUTO_WATCH_ID = 0  # clientv3.AutoWatchID
INVALID_WATCH_ID = -1  # clientv3.InvalidWatchID
WATCH_BATCH_MAX_REVS = 1000  # etcd's watchBatchMaxRevs
DEFAULT_MAX_PENDING = 128  # responses queued for one watcher before it is moved to unsynced
DEFAULT_PROGRESS_INTERVAL = 600.0  # etcd's default progress report interval (10 minutes)
DEFAULT_MAX_REQUEST_BYTES = 1572864  # etcd's --max-request-bytes default, used for fragments
DEFAULT_SLOW_TIMEOUT = 300.0  # a blocked watcher whose stream takes nothing this long is canceled
MIN_CANCEL_GRACE = 10.0  # at least this long for the stream to take the cancel, then it is closed

# mvcc errors a watch can be canceled with (their strings are the cancel_reason)
ERR_EMPTY_WATCHER_RANGE = "mvcc: watcher range is empty"
ERR_WATCHER_DUPLICATE_ID = "mvcc: duplicate watch ID provided on the WatchStream"
# fastkv's own (etcd 3.4 keeps slow watchers): the reason a slow consumer's watch ends with
ERR_SLOW_CONSUMER = ("watch: slow consumer: {pending} responses undelivered and none taken "
                     "for {seconds:g}s; watch canceled")

log = logging.getLogger("fastkv.watch")

_PUT, _DELETE = 0, 1


class Watcher:
    """One watch: a key or range, the next revision it needs, its options."""

    __slots__ = ("id", "key", "end", "min_rev", "no_put", "no_delete", "prev_kv", "options",
                 "fragment", "progress_notify", "stream", "synced", "pending",
                 "canceled", "progress_due", "blocked_at", "blocked_mark")

    def __init__(self, watch_id: int, key: bytes, end, min_rev: int, filters, prev_kv: bool,
                 fragment: bool, progress_notify: bool, stream):
        self.id = watch_id
        self.key = key
        self.end = end  # None: the single key; b"": every key >= key; else [key, end)
        self.min_rev = min_rev  # the first revision this watcher has not been sent
        self.no_put = FILTER_NOPUT in filters
        self.no_delete = FILTER_NODELETE in filters
        self.prev_kv = prev_kv
        # what selects its events (filters, prev_kv) as one key: watchers with the same
        # options share the events a revision sends them (WatchHub.notify)
        self.options = self.no_put | self.no_delete << 1 | bool(prev_kv) << 2
        self.fragment = fragment
        self.progress_notify = progress_notify
        self.stream = stream
        self.synced = False
        self.pending = 0  # responses queued in the stream, not yet taken by the consumer
        self.canceled = False
        self.progress_due = True  # etcd's progress[id]: no event sent since the last tick
        # a slow consumer: when this watcher was last seen blocked (max_pending responses
        # waiting) with its stream taking nothing, and the stream's `taken` count then
        self.blocked_at: float | None = None
        self.blocked_mark = 0

    def matches(self, key: bytes) -> bool:
        end = self.end
        if end is None:
            return key == self.key
        return key >= self.key and (not end or key < end)

    def __repr__(self):
        return (f"Watcher(id={self.id}, key={self.key!r}, end={self.end!r}, "
                f"min_rev={self.min_rev}, synced={self.synced})")


class WatchHub:
    """All watchers of a member (see the module docstring)."""

    def __init__(self, store, header_fn: Callable[[int], dict],
                 max_pending: int = DEFAULT_MAX_PENDING,
                 batch_max_revs: int = WATCH_BATCH_MAX_REVS,
                 slow_timeout: float = DEFAULT_SLOW_TIMEOUT, clock=time.monotonic):
        self.store = store
        self.header_fn = header_fn
        self.max_pending = max_pending
        self.batch_max_revs = batch_max_revs
        self.slow_timeout = slow_timeout  # 0: slow watchers are kept (etcd 3.4)
        self.cancel_grace = max(slow_timeout, MIN_CANCEL_GRACE)
        self.clock = clock
        self._blocked: set = set()  # watchers seen blocked, checked by check_slow()
        self._cancelling: set = set()  # streams that have not taken a slow-consumer cancel yet
        self._slow_timer = None
        self._key_watchers: dict[bytes, set] = {}  # synced single-key watchers
        self._range_watchers: set = set()  # synced range watchers
        self._unsynced: set = set()
        self._sync_scheduled = False
        self.notified_rev = store.rev  # the last revision notify() has seen
        self.streams = 0  # WatchStreams open on this hub (etcd_debugging_mvcc_watch_stream_total)

    # ------------------------------------------------------------ membership

    def __len__(self) -> int:
        return (sum(len(s) for s in self._key_watchers.values()) + len(self._range_watchers)
                + len(self._unsynced))

    @property
    def unsynced_count(self) -> int:
        return len(self._unsynced)

    def add(self, w: Watcher, start_rev: int) -> None:
        """Register a watcher starting at ``start_rev`` (0: from the next revision)."""
        cur = self.store.rev
        if start_rev == 0 or start_rev > cur:
            w.min_rev = max(cur + 1, start_rev)
            self._add_synced(w)
        else:
            w.min_rev = start_rev
            w.synced = False
            self._unsynced.add(w)
            self._schedule_sync()

    def remove(self, w: Watcher) -> None:
        w.canceled = True
        self._blocked.discard(w)
        if w.synced:
            self._remove_synced(w)
        else:
            self._unsynced.discard(w)

    def _add_synced(self, w: Watcher) -> None:
        w.synced = True
        if w.end is None:
            s = self._key_watchers.get(w.key)
            if s is None:
                self._key_watchers[w.key] = {w}
            else:
                s.add(w)
        else:
            self._range_watchers.add(w)

    def _remove_synced(self, w: Watcher) -> None:
        w.synced = False
        if w.end is None:
            s = self._key_watchers.get(w.key)
            if s is not None:
                s.discard(w)
                if not s:
                    del self._key_watchers[w.key]
        else:
            self._range_watchers.discard(w)

    def restore(self, store) -> None:
        """The member installed a snapshot from the leader: the store was replaced.

        Every watcher keeps the next revision it needs and catches up from the new
        store's history (etcd's watchableStore.Restore moves all to unsynced); a
        watcher whose revision the snapshot compacted away is cancelled as compacted."""
        self.store = store
        synced = [w for s in self._key_watchers.values() for w in s] + list(self._range_watchers)
        self._key_watchers = {}
        self._range_watchers = set()
        for w in synced:
            w.synced = False
            w.min_rev = max(w.min_rev, self.notified_rev + 1)
            self._unsynced.add(w)
        self.notified_rev = store.rev
        self._schedule_sync()

    # ---------------------------------------------------------------- notify

    def notify(self, rev: int, events: list) -> None:
        """Fan the events of one applied revision out to the synced watchers.

        Watchers that get the same events with the same options get one shared
        :class:`SharedEvents` list and one header dict: an adapter encodes each once
        per revision, not once per watcher (1000 watchers of a key cost one encoding)."""
        if rev > self.notified_rev:
            self.notified_rev = rev
        key_watchers = self._key_watchers
        range_watchers = self._range_watchers
        if not key_watchers and not range_watchers:
            return
        shared: dict = {}  # event indices -> {Watcher.options -> SharedEvents}
        header = self.header_fn(rev)
        if len(events) == 1:  # the common case: every matching watcher gets event 0
            key = events[0]["kv"]["key"]
            ws = key_watchers.get(key) if key_watchers else None
            if ws:
                self._fan_out(list(ws), _FIRST, rev, events, shared, header)
            if range_watchers:
                ws = [w for w in range_watchers
                      if key >= w.key and (not w.end or key < w.end)]
                if ws:
                    self._fan_out(ws, _FIRST, rev, events, shared, header)
        else:
            batches: dict = {}  # watcher -> indices of its events
            for i, ev in enumerate(events):
                key = ev["kv"]["key"]
                if key_watchers:
                    for w in key_watchers.get(key, ()):
                        b = batches.get(w)
                        if b is None:
                            batches[w] = [i]
                        else:
                            b.append(i)
                if range_watchers:
                    for w in range_watchers:
                        if key >= w.key and (not w.end or key < w.end):
                            b = batches.get(w)
                            if b is None:
                                batches[w] = [i]
                            else:
                                b.append(i)
            groups: dict = {}  # event indices -> the watchers that get those events
            for w, idx in batches.items():
                idx = tuple(idx)
                g = groups.get(idx)
                if g is None:
                    groups[idx] = [w]
                else:
                    g.append(w)
            for idx, ws in groups.items():
                self._fan_out(ws, idx, rev, events, shared, header)
        if self._unsynced:
            self._schedule_sync()

    def _fan_out(self, ws: list, idx: tuple, rev: int, events: list, shared: dict,
                 header: dict) -> None:
        """Send events[i] for i in idx, filtered per watcher, to each watcher of ws."""
        max_pending = self.max_pending
        selected = shared.get(idx)
        if selected is None:
            selected = shared[idx] = {}
        by_stream: dict = {}  # stream -> [events, its watchers that get them...]
        for w in ws:
            if rev < w.min_rev:
                continue  # already sent by its catch-up (don't double notify)
            if w.pending >= max_pending:
                # slow consumer: catch this revision up from history later
                self._remove_synced(w)
                w.min_rev = rev
                self._unsynced.add(w)
                self._mark_blocked(w)
                continue
            w.min_rev = rev + 1
            evs = selected.get(w.options)
            if evs is None:
                evs = selected[w.options] = _select(w, [events[i] for i in idx])
            if evs:
                g = by_stream.get(w.stream)
                if g is None:
                    by_stream[w.stream] = [evs, w]
                elif g[0] is evs and not w.fragment:
                    g.append(w)
                else:  # other filters than the stream's first watcher, or fragments
                    w.stream._send_events(w, rev, evs, header)
        for stream, g in by_stream.items():
            if len(g) == 2:
                stream._send_events(g[1], rev, g[0], header)
            else:
                stream._send_group(g, rev, header)

    # ------------------------------------------------------------- catch-up

    def _schedule_sync(self) -> None:
        if self._sync_scheduled or not self._unsynced:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.sync()  # no event loop (plain synchronous use): catch up now
            return
        self._sync_scheduled = True
        loop.call_soon(self._run_sync)

    def _run_sync(self) -> None:
        self._sync_scheduled = False
        if self.sync():
            self._schedule_sync()

    def sync(self) -> bool:
        """One catch-up pass over the unsynced watchers that have room.

        Returns True if a watcher that has room still has history to catch up.
        """
        if not self._unsynced:
            return False
        store = self.store
        cur = store.rev
        compact_rev = store.compact_rev
        max_pending = self.max_pending
        more = False
        for w in list(self._unsynced):
            if w.pending >= max_pending:
                self._mark_blocked(w)
                continue  # resumed by the stream when its consumer drains
            if w.min_rev < compact_rev:
                self._unsynced.discard(w)
                w.stream._send_compacted(w, compact_rev)
                continue
            if w.min_rev > cur:
                self._unsynced.discard(w)
                self._add_synced(w)
                w.stream._on_synced()
                continue
            records, next_rev = store.events_since(w.min_rev, cur, self.batch_max_revs)
            evs = []
            match = w.matches
            event_of = store.event_of
            no_put, no_delete, prev_kv = w.no_put, w.no_delete, w.prev_kv
            for packed, rec in records:
                if not match(rec[0]):
                    continue
                if rec[1] is None:
                    if no_delete:
                        continue
                elif no_put:
                    continue
                evs.append(event_of(packed, rec, prev_kv))
            w.min_rev = next_rev
            if evs:
                w.stream._send_events(w, cur, evs)
            if next_rev > cur:
                self._unsynced.discard(w)
                self._add_synced(w)
                w.stream._on_synced()
            elif w.pending < max_pending:
                more = True
        return more

    def _resume(self, w: Watcher) -> None:
        """The consumer took responses of an unsynced watcher: catch it up again."""
        if w in self._unsynced:
            self._schedule_sync()

    def all_synced(self, watchers) -> bool:
        return not any(w in self._unsynced for w in watchers)

    # -------------------------------------------------------- slow consumers

    def _mark_blocked(self, w: Watcher) -> None:
        """w has max_pending responses waiting: from now on check_slow() watches it."""
        if w.blocked_at is not None or self.slow_timeout <= 0:
            return
        w.blocked_at = self.clock()
        w.blocked_mark = w.stream.taken
        self._blocked.add(w)
        self._arm_slow_check()

    def _arm_slow_check(self) -> None:
        if self._slow_timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # plain synchronous use: the caller runs check_slow() itself
        interval = min(1.0, max(0.05, self.slow_timeout / 4))
        self._slow_timer = loop.call_later(interval, self._slow_tick)

    def _slow_tick(self) -> None:
        self._slow_timer = None
        self.check_slow()
        if self._blocked or self._cancelling:
            self._arm_slow_check()

    def check_slow(self, now: float | None = None) -> None:
        """Cancel the blocked watchers whose stream took no response for slow_timeout,
        and abandon the streams that did not take such a cancel within cancel_grace.

        A watcher is blocked while max_pending of its responses wait; its clock starts
        again whenever its stream takes any response (the stream is draining, if slowly)."""
        now = self.clock() if now is None else now
        max_pending = self.max_pending
        expired: dict = {}
        for w in list(self._blocked):
            if w.canceled or w.pending < max_pending:
                w.blocked_at = None  # draining: marked again when it blocks again
                self._blocked.discard(w)
            elif w.stream.taken != w.blocked_mark:
                w.blocked_at, w.blocked_mark = now, w.stream.taken
            elif now - w.blocked_at >= self.slow_timeout:
                self._blocked.discard(w)
                expired.setdefault(w.stream, []).append(w)
        for stream, ws in expired.items():
            stream._cancel_slow(ws, now)
            self._cancelling.add(stream)
        for stream in list(self._cancelling):
            if stream.closed or stream.taken != stream._cancel_mark:
                self._cancelling.discard(stream)  # it took the cancel (or went away)
                stream._cancel_since = None
            elif now - stream._cancel_since >= self.cancel_grace:
                self._cancelling.discard(stream)
                stream._abandon()


class SharedEvents(list):
    """The events one revision sends to every watcher with the same filters and
    prev_kv choice: one list shared by all their responses (treat it as read-only).
    ``wire`` is where the gRPC adapter keeps the list's protobuf encoding, made by
    the first stream that sends it and reused by every other
    (fastkv/api/grpc_convert.watch_response)."""

    wire: bytes | None = None


_FIRST = (0,)  # the event indices of a revision's only event


class _Group:
    """The event responses of one revision for several watchers of one stream: the
    same header and events, one watch_id each. Queued as one item (WatchStream._queue
    holds it as ``(group, None)``) and taken watcher by watcher from ``ws[i:]``; an
    adapter that frames responses itself takes many at once (WatchStream.take_group)."""

    __slots__ = ("ws", "i", "header", "events")

    def __init__(self, ws: list, header: dict, events: list):
        self.ws = ws
        self.i = 0
        self.header = header
        self.events = events


def _select(w: Watcher, evs: list) -> SharedEvents:
    """Apply a watcher's filters and prev_kv choice to live events."""
    out = SharedEvents()
    for ev in evs:
        if ev["type"] == _PUT:
            if w.no_put:
                continue
        elif w.no_delete:
            continue
        if not w.prev_kv and "prev_kv" in ev:
            ev = {"type": ev["type"], "kv": ev["kv"]}
        out.append(ev)
    return out


def _event_size(ev: dict) -> int:
    kv = ev["kv"]
    n = 48 + len(kv["key"]) + len(kv.get("value", b""))
    p = ev.get("prev_kv")
    if p is not None:
        n += 40 + len(p["key"]) + len(p.get("value", b""))
    return n


class WatchStream:
    """One client watch stream (see the module docstring)."""

    def __init__(self, hub: WatchHub, header_fn: Callable[[int], dict] | None = None,
                 progress_interval: float = DEFAULT_PROGRESS_INTERVAL,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES):
        self.hub = hub
        hub.streams += 1
        self.header_fn = header_fn or hub.header_fn
        self._hub_headers = header_fn is None or header_fn == hub.header_fn
        self.progress_interval = progress_interval
        self.max_request_bytes = max_request_bytes
        self._watchers: dict[int, Watcher] = {}
        self._next_id = 0
        self._queue: deque = deque()  # (watcher or None, response)
        self._parts: deque = deque()  # the fragments of a taken response not yet taken
        self._wakeup: asyncio.Event | None = None
        self._closed = False
        self._progress_task: asyncio.Task | None = None
        self._progress_pending = False  # a progress_request waits for all watchers to sync
        # async (create_request) -> None, or the cancel reason that refuses it (the
        # server sets it while auth is enabled: etcd's isWatchPermitted)
        self.authorize = None
        self.taken = 0  # responses the consumer has taken: the hub sees if it drains
        self._cancel_since: float | None = None  # a slow-consumer cancel waits since then
        self._cancel_mark = 0  # `taken` when it was queued
        # set by the adapter: end the stream at the transport (reset the HTTP/2 stream,
        # close the connection) when it cannot take even a slow-consumer cancel
        self.on_abandon: Callable[[], None] | None = None
        self.peer = ""  # the client's address, for the log (set by the adapter)

    # --------------------------------------------------------------- requests

    async def handle(self, req: dict) -> None:
        """Apply one WatchRequest: create_request, cancel_request or progress_request."""
        if self._closed:
            return
        c = req.get("create_request")
        if c is not None:
            if self.authorize is not None:
                reason = await self.authorize(c)
                if reason is not None:
                    if not self._closed:
                        self._push(None, {"header": self.header_fn(self.hub.store.rev),
                                          "watch_id": INVALID_WATCH_ID, "created": True,
                                          "canceled": True, "cancel_reason": reason})
                    return
            self._create(c)
            return
        c = req.get("cancel_request")
        if c is not None:
            self.cancel(c.get("watch_id", 0))
            return
        if req.get("progress_request") is not None:
            self._progress_request()
        # anything else is ignored, as etcd does

    def _create(self, c: dict) -> None:
        hub = self.hub
        key = c.get("key") or b"\0"  # \x00 is the smallest key
        end = c.get("range_end") or None
        if end == b"\0":
            end = b""  # every key >= key
        wsrev = hub.store.rev
        err = None
        if end and key >= end:
            err = ERR_EMPTY_WATCHER_RANGE
        wid = c.get("watch_id", AUTO_WATCH_ID)
        if err is None:
            if wid == AUTO_WATCH_ID:
                while self._next_id in self._watchers:
                    self._next_id += 1
                wid = self._next_id
                self._next_id += 1
            elif wid in self._watchers:
                err = ERR_WATCHER_DUPLICATE_ID
        if err is not None:
            self._push(None, {"header": self.header_fn(wsrev), "watch_id": INVALID_WATCH_ID,
                              "created": True, "canceled": True, "cancel_reason": err})
            return
        start_rev = c.get("start_revision", 0)
        if start_rev == 0:
            start_rev = wsrev + 1
        w = Watcher(wid, key, end, start_rev, c.get("filters") or (), bool(c.get("prev_kv")),
                    bool(c.get("fragment")), bool(c.get("progress_notify")), self)
        self._watchers[wid] = w
        # the created response goes first: the watcher's events can only be
        # queued after it (live ones by notify, history by the sync pass)
        self._push(None, {"header": self.header_fn(wsrev), "watch_id": wid, "created": True})
        hub.add(w, start_rev)
        if w.progress_notify and self._progress_task is None and self.progress_interval > 0:
            self._progress_task = asyncio.get_running_loop().create_task(self._progress_loop())

    def cancel(self, watch_id: int) -> bool:
        """Cancel one watch; queues etcd's canceled response. False if unknown."""
        w = self._watchers.pop(watch_id, None)
        if w is None:
            return False
        self.hub.remove(w)
        self._push(None, {"header": self.header_fn(self.hub.store.rev), "watch_id": watch_id,
                          "canceled": True})
        self._check_progress_pending()
        return True

    def _progress_request(self) -> None:
        if self.hub.all_synced(self._watchers.values()):
            self._push(None, {"header": self.header_fn(self.hub.notified_rev),
                              "watch_id": INVALID_WATCH_ID})
        else:
            self._progress_pending = True

    def _check_progress_pending(self) -> None:
        if self._progress_pending and self.hub.all_synced(self._watchers.values()):
            self._progress_pending = False
            self._push(None, {"header": self.header_fn(self.hub.notified_rev),
                              "watch_id": INVALID_WATCH_ID})

    async def _progress_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.progress_interval)
            self.progress_tick()

    def progress_tick(self) -> None:
        """One tick of etcd's progress ticker: an empty response to each
        progress_notify watcher that is synced and got no event since the last tick."""
        rev = self.hub.notified_rev
        for w in list(self._watchers.values()):
            if not w.progress_notify:
                continue
            if w.progress_due and w.synced:
                self._push(w, {"header": self.header_fn(rev), "watch_id": w.id})
            w.progress_due = True

    # ------------------------------------------------------------- from the hub

    def _send_events(self, w: Watcher, rev: int, evs: list, header: dict | None = None) -> None:
        """Queue w's events of (up to) rev; `header` is the hub's for rev, shared by
        the responses of one notify (used when this stream makes its headers alike)."""
        if not evs or self._closed:
            return
        w.progress_due = False
        if header is None or not self._hub_headers:
            header = self.header_fn(rev)
        # _push, inline: this runs once per watcher per revision. The consumer waits
        # only on an empty queue, so only the first response needs to wake it.
        w.pending += 1
        queue = self._queue
        if not queue and self._wakeup is not None:
            self._wakeup.set()
        queue.append((w, {"header": header, "watch_id": w.id, "events": evs}))

    def _send_group(self, g: list, rev: int, header: dict) -> None:
        """_send_events for the watchers g[1:] of this stream, which all get the
        events g[0] (none of them fragments): one queue item for them all."""
        if self._closed:
            return
        if not self._hub_headers:
            header = self.header_fn(rev)
        evs = g[0]
        ws = g[1:]
        for w in ws:
            w.progress_due = False
            w.pending += 1
        queue = self._queue
        if not queue and self._wakeup is not None:
            self._wakeup.set()
        queue.append((_Group(ws, header, evs), None))

    def _send_compacted(self, w: Watcher, compact_rev: int) -> None:
        # etcd's compacted WatchResponse has Revision 0, so the header revision is 0
        self._watchers.pop(w.id, None)
        w.canceled = True
        self._push(None, {"header": self.header_fn(0), "watch_id": w.id,
                          "compact_revision": compact_rev, "canceled": True})
        self._check_progress_pending()

    def _on_synced(self) -> None:
        self._check_progress_pending()

    def _cancel_slow(self, ws: list, now: float) -> None:
        """Cancel slow consumers' watches (see the module docstring): their queued
        responses are dropped, and their canceled responses go ahead of the rest (right
        after a watcher's own created response if that is still queued)."""
        hub = self.hub
        reason = ERR_SLOW_CONSUMER.format(pending=hub.max_pending, seconds=hub.slow_timeout)
        header = self.header_fn(hub.store.rev)
        cancels = {}
        for w in ws:
            self._watchers.pop(w.id, None)
            hub.remove(w)
            cancels[w.id] = (None, {"header": header, "watch_id": w.id, "canceled": True,
                                    "cancel_reason": reason})
        gone = set(ws)
        kept = []
        created_at: dict = {}  # watch id -> index of its created response still queued
        for item in self._queue:
            if item[0] in gone:
                continue
            resp = item[1]
            if item[0] is None and resp.get("created") and resp.get("watch_id") in cancels:
                created_at[resp["watch_id"]] = len(kept)
            kept.append(item)
        for wid, i in sorted(created_at.items(), key=lambda e: -e[1]):
            kept.insert(i + 1, cancels.pop(wid))
        self._queue.clear()  # in place: responses() holds this deque
        self._queue.extend(list(cancels.values()) + kept)
        if self._cancel_since is None or self.taken != self._cancel_mark:
            self._cancel_since, self._cancel_mark = now, self.taken
        log.warning("watch: slow consumer: canceled watch %s of the stream from %s: %d "
                    "responses undelivered and none taken for %gs",
                    ", ".join(str(w.id) for w in ws), self.peer or "?", hub.max_pending,
                    hub.slow_timeout)
        if self._wakeup is not None:
            self._wakeup.set()
        self._check_progress_pending()

    def _abandon(self) -> None:
        """The stream did not take a slow-consumer cancel in time: end it at the transport."""
        log.warning("watch: slow consumer: the stream from %s took no response for %gs "
                    "after a cancel; closing it", self.peer or "?", self.hub.cancel_grace)
        self._cancel_since = None
        abandon = self.on_abandon
        self.close()
        if abandon is not None:
            abandon()

    # ---------------------------------------------------------------- output

    def _push(self, w: Watcher | None, resp: dict) -> None:
        if self._closed:
            return
        if w is not None:
            w.pending += 1
        self._queue.append((w, resp))
        if self._wakeup is not None:
            self._wakeup.set()

    def pending(self) -> int:
        """Responses queued and not yet taken."""
        return sum(len(w.ws) - w.i if resp is None else 1 for w, resp in self._queue)

    def get_nowait(self) -> dict | None:
        """The next response if one is queued (fragments not applied), else None."""
        return self._next(False)

    async def responses(self):
        """Yield WatchResponse dicts until :meth:`close`."""
        while await self.ready():
            resp = self.take()
            while resp is not None:
                yield resp
                resp = self.take()

    async def ready(self) -> bool:
        """Wait until a response can be taken (True) or the stream is closed (False).

        With :meth:`take`, for an adapter that writes what is ready together (the
        gRPC one: one transport write for the responses of many watchers)."""
        while not (self._queue or self._parts):
            if self._closed:
                return False
            if self._wakeup is None:
                self._wakeup = asyncio.Event()
            self._wakeup.clear()
            await self._wakeup.wait()
        return True

    def take(self) -> dict | None:
        """The next response to write (fragments applied), None if none is ready.

        Taking is what tells the hub that the consumer drains (see the module
        docstring): call it only when the transport has room for what it returns."""
        parts = self._parts
        if parts:
            return parts.popleft()
        return self._next(True)

    def _next(self, fragments: bool) -> dict | None:
        queue = self._queue
        while queue:
            w, resp = queue[0]
            if resp is None:  # a _Group: its next watcher's response
                g = w
                w = g.ws[g.i]
                g.i += 1
                if g.i == len(g.ws):
                    queue.popleft()
                resp = {"header": g.header, "watch_id": w.id, "events": g.events}
            else:
                queue.popleft()
            self.taken += 1
            if w is not None:
                w.pending -= 1
                if w.canceled:
                    continue
                if not w.synced:
                    self.hub._resume(w)
                if fragments and w.fragment and len(resp.get("events", ())) > 1:
                    self._parts.extend(self._fragments(resp))
                    return self._parts.popleft()
            return resp
        return None

    def next_group(self):
        """(header, events) of the group whose responses take_group would take; None
        when the next response to take is not one of a group."""
        queue = self._queue
        if self._parts or not queue:
            return None
        g, resp = queue[0]
        return (g.header, g.events) if resp is None else None

    def take_group(self, most: int):
        """If the next response to take is one of a group (see _Group), take up to
        `most` of the group's responses at once: (watchers, header, events), the
        watchers' responses being {"header", "watch_id": w.id, "events"}; watchers
        canceled since are left out (the list may be empty). None otherwise: take()."""
        queue = self._queue
        if self._parts or not queue:
            return None
        g, resp = queue[0]
        if resp is not None:
            return None
        ws, i = g.ws, g.i
        j = min(len(ws), i + most)
        if j == len(ws):
            queue.popleft()
        else:
            g.i = j
        self.taken += j - i
        out = []
        resume = self.hub._resume
        for w in ws[i:j]:
            w.pending -= 1
            if w.canceled:
                continue
            if not w.synced:
                resume(w)
            out.append(w)
        return out, g.header, g.events

    def _fragments(self, resp: dict):
        """etcd's sendFragments: split a large response, ``fragment`` on all but the last."""
        evs = resp["events"]
        limit = self.max_request_bytes
        sizes = [_event_size(ev) for ev in evs]
        if sum(sizes) + 64 < limit:
            yield resp
            return
        base = {k: v for k, v in resp.items() if k != "events"}
        i = 0
        n = len(evs)
        while i < n:
            j = i + 1  # at least one event per fragment
            size = 64 + sizes[i]
            while j < n and size + sizes[j] < limit:
                size += sizes[j]
                j += 1
            part = dict(base)
            part["events"] = evs[i:j]
            if j < n:
                part["fragment"] = True
            yield part
            i = j

    def close(self) -> None:
        """Cancel every watch of the stream and end :meth:`responses`."""
        if self._closed:
            return
        self.hub.streams -= 1
        for w in self._watchers.values():
            self.hub.remove(w)
        self._watchers.clear()
        self._queue.clear()
        self._parts.clear()
        self._closed = True
        self.hub._cancelling.discard(self)
        if self._progress_task is not None:
            self._progress_task.cancel()
            self._progress_task = None
        if self._wakeup is not None:
            self._wakeup.set()

    @property
    def closed(self) -> bool:
        return self._closed

    def watch_ids(self) -> list:
        return list(self._watchers)
