"""A local copy of every key under a prefix, kept current by a watch: what
:class:`~fastkv.client.recipes.ConfigWatcher` and the live view of
:meth:`~fastkv.client.recipes.ServiceRegistry.discover` are made of (etcd's
clientv3/mirror ``Syncer`` pattern: a range at revision R, then a watch from R + 1).

The client's watch already resumes after a broken stream (another endpoint, a
restarted member) from the revision after the last event it handed out, without
losing or repeating one. What it cannot resume from is a compacted revision
(``WatchCompacted``): then the mirror reads the whole prefix again and reports the
difference as changes. Any other error of the watch (permission denied, a cancel)
makes it read and watch again after a pause, until it is closed.

:class:`Mirror` runs in a thread with a blocking Client, :class:`AsyncMirror` in a task
of the loop with an AsyncClient; the loading, applying and resuming logic is written
once, as steps (see ``_common.run_steps``) in their shared base.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from typing import Any, Callable

from fastkv.client import errors
from fastkv.client._types import KeyValue

from ._common import AwaitableStart, Deadline, arun_steps, cancel_task, run_steps

log = logging.getLogger("fastkv.client.recipes")

#: pause before reading again after an unexpected watch error
RETRY_PAUSE = 1.0

Changed = Callable[[bytes, "KeyValue | None", "KeyValue | None"], Any]


class _MirrorBase:
    """Keys under ``prefix`` -> KeyValue, and the revision they are current at; the
    mirror's work as steps. A shell provides ``_closed`` (an Event), ``_guard()`` (the
    lock of the copy), ``_notify()`` (under it: wake the waiters), ``_wait_until(pred,
    timeout)`` and ``_pause(seconds)`` (True once closed)."""

    def _init(self, client, prefix: bytes, changed: Changed) -> None:
        self._client = client
        self.prefix = prefix
        self._changed = changed
        self._data: dict[bytes, KeyValue] = {}
        self._pending = 0   # changes applied whose callbacks have not all run yet
        self.revision = 0
        #: how many times the whole prefix was read (1 after the start)
        self.loads = 0
        self._watch = None

    def items(self) -> dict[bytes, KeyValue]:
        with self._guard():
            return dict(self._data)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def _load_steps(self, notify: bool):
        c = self._client
        r = yield lambda: c.range(self.prefix, prefix=True)
        new = {kv.key: kv for kv in r.kvs}
        w = yield lambda: c.watch(self.prefix, prefix=True, start_revision=r.revision + 1)
        with self._guard():
            old_w, self._watch = self._watch, w
        if old_w is not None:
            yield old_w.close
        if self._closed.is_set():
            yield w.close
        with self._guard():
            old = self._data
            self._data = new
            self._pending += 1
        changes = []
        if notify:
            for k in sorted(old.keys() | new.keys()):
                o, n = old.get(k), new.get(k)
                if n is None or o is None or o.mod_revision != n.mod_revision:
                    changes.append((k, o, n))
        yield from self._publish_steps(changes, r.revision, loaded=True)

    def _publish_steps(self, changes, revision: int, loaded: bool = False):
        """Run the callbacks of changes already applied to the copy, then let waiters
        see the new revision (so a wait() that returns has seen the callbacks run)."""
        try:
            for k, o, n in changes:
                try:
                    yield functools.partial(self._changed, k, o, n)
                except Exception:   # noqa: BLE001 - a bad callback must not stop the mirror
                    log.exception("change callback for %r failed", k)
        finally:
            with self._guard():
                self._pending -= 1
                self.revision = max(self.revision, revision)
                if loaded:
                    self.loads += 1
                self._notify()

    def _apply_steps(self, resp):
        changes = []
        with self._guard():
            for ev in resp.events:
                old = self._data.get(ev.key)
                if ev.is_put:
                    self._data[ev.key] = ev.kv
                    changes.append((ev.key, old, ev.kv))
                else:
                    self._data.pop(ev.key, None)
                    if old is not None:
                        changes.append((ev.key, old, None))
            self._pending += 1
        # events: current up to the last one; an empty batch (a progress
        # notification): current up to the response's revision
        yield from self._publish_steps(
            changes, resp.events[-1].revision if resp.events else resp.revision)

    def _run_steps(self):
        while not self._closed.is_set():
            w = self._watch
            try:
                while True:   # a closed watch raises ClientClosed
                    resp = yield lambda: w.get_response(None)
                    yield from self._apply_steps(resp)
            except errors.WatchCompacted as e:
                log.info("mirror of %r: revision compacted (%s); reading it all again",
                         self.prefix, e)
            except errors.ClientClosed:
                return
            except Exception as e:   # noqa: BLE001 - read again, after a pause
                if self._closed.is_set():
                    return
                log.warning("mirror of %r: watch failed (%s); reading again", self.prefix, e)
                if (yield lambda: self._pause(RETRY_PAUSE)):
                    return
            while not self._closed.is_set():
                try:
                    yield from self._load_steps(notify=True)
                    break
                except errors.ClientClosed:
                    return
                except Exception as e:   # noqa: BLE001
                    log.warning("mirror of %r: reading failed (%s)", self.prefix, e)
                    if (yield lambda: self._pause(RETRY_PAUSE)):
                        return

    def _sync_steps(self, timeout: float | None):
        """Wait until the copy has every change committed before this call: read the
        store's revision, then ask the watch for a progress notification up to it.
        False if that did not happen within ``timeout``."""
        deadline = Deadline(timeout)
        r = yield lambda: self._client.range(self.prefix, prefix=True, count_only=True)

        def current() -> bool:
            return self.revision >= r.revision
        while True:
            with self._guard():
                if self._pending == 0 and current():
                    return True
            w = self._watch
            if w is not None:
                try:
                    yield w.request_progress
                except Exception:   # noqa: BLE001 - only a hint; the wait decides
                    pass
            if (yield lambda: self._wait_until(current, deadline.step(0.5))):
                return True
            if deadline.expired():
                return False


class Mirror(_MirrorBase):
    """A mirror kept by a thread, for a blocking Client; loaded when constructed.

    ``changed(key, old_kv, new_kv)`` (old or new None for a creation / deletion) is
    called in the mirror's thread for every change after the first load, in
    revision order, once the copy has been updated.
    """

    def __init__(self, client, prefix: bytes, changed: Changed, *,
                 name: str = "fastkv-mirror"):
        self._init(client, prefix, changed)
        self._cond = threading.Condition()
        self._closed = threading.Event()
        run_steps(self._load_steps(notify=False))
        self._thread = threading.Thread(target=run_steps, args=(self._run_steps(),),
                                        name=name, daemon=True)
        self._thread.start()

    def _guard(self):
        return self._cond

    def _notify(self) -> None:
        self._cond.notify_all()

    def _pause(self, seconds: float) -> bool:
        return self._closed.wait(seconds)

    def _wait_until(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        with self._cond:
            return bool(self._cond.wait_for(lambda: self._pending == 0 and predicate(),
                                            timeout))

    def wait(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Block until ``predicate()`` (called under the mirror's lock, once the
        callbacks of every change applied so far have run) is true, or ``timeout``."""
        return self._wait_until(predicate, timeout)

    def sync(self, timeout: float | None = 10.0) -> bool:
        return run_steps(self._sync_steps(timeout))

    def close(self) -> None:
        self._closed.set()
        w = self._watch
        if w is not None:
            w.close()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        with self._cond:
            self._cond.notify_all()


class AsyncMirror(_MirrorBase):
    """A mirror kept by a task of the loop, for an AsyncClient: ``await
    m.start()`` loads it and starts the task. ``changed`` may return an awaitable
    (a coroutine function's): it is awaited before the next callback."""

    def __init__(self, client, prefix: bytes, changed: Changed, *,
                 name: str = "fastkv-mirror"):
        self._init(client, prefix, changed)
        self._name = name
        self._closed = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        if self._task is None and not self._closed.is_set():
            await arun_steps(self._load_steps(notify=False))
            self._task = asyncio.get_running_loop().create_task(
                arun_steps(self._run_steps()), name=self._name)

    def _guard(self):
        return contextlib.nullcontext()   # one thread: nothing runs between two awaits

    def _notify(self) -> None:
        self._wake.set()
        self._wake = asyncio.Event()

    async def _pause(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._closed.wait(), seconds)
        except TimeoutError:
            pass
        return self._closed.is_set()

    async def _wait_until(self, predicate: Callable[[], bool],
                          timeout: float | None) -> bool:
        deadline = Deadline(timeout)
        while not (self._pending == 0 and predicate()):
            if deadline.expired():
                return False
            try:
                await asyncio.wait_for(self._wake.wait(), deadline.remaining())
            except TimeoutError:
                pass
        return True

    async def wait(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Wait until ``predicate()`` (checked once the callbacks of every change applied
        so far have run) is true, or ``timeout``."""
        return await self._wait_until(predicate, timeout)

    async def sync(self, timeout: float | None = 10.0) -> bool:
        return await arun_steps(self._sync_steps(timeout))

    async def close(self) -> None:
        self._closed.set()
        w = self._watch
        if w is not None:
            await w.close()
        await cancel_task(self._task)
        self._notify()


# ---- what ConfigWatcher and ServiceView (sync and async) show of their mirror ----------------

class MirrorView:
    """Base of a view over ``self._mirror``; ``_view(data)`` makes what ``wait``'s
    predicate is given from the copy; ``_started_steps()`` runs once it is loaded."""

    _mirror: _MirrorBase

    @property
    def revision(self) -> int:
        """The store revision the copy is current at."""
        return self._mirror.revision

    def _view(self, data: dict[bytes, KeyValue]) -> Any:
        raise NotImplementedError

    def _matches(self, predicate: Callable[[Any], bool]) -> Callable[[], bool]:
        m = self._mirror
        return lambda: predicate(self._view(m._data))

    def _started_steps(self):
        yield from ()


class SyncMirrorView(MirrorView):
    """The blocking shell: a context manager; ``sync()``, ``wait()``, ``close()``."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def sync(self, timeout: float | None = 10.0) -> bool:
        """Wait until the copy has every change committed before this call (True)."""
        return self._mirror.sync(timeout)

    def wait(self, predicate: Callable[[Any], bool], timeout: float | None = None) -> bool:
        """Block until ``predicate(<the current value>)`` is true (True) or ``timeout``
        (False)."""
        return self._mirror.wait(self._matches(predicate), timeout)

    def close(self) -> None:
        self._mirror.close()


class AsyncMirrorView(AwaitableStart, MirrorView):
    """The asyncio shell: ``await view`` or ``async with view`` loads it and starts
    following; ``await sync()``, ``await wait()``, ``await close()``."""

    _started = False

    async def start(self):
        if not self._started:
            await self._mirror.start()
            self._started = True   # (not before: a start that failed may be tried again)
            await arun_steps(self._started_steps())
        return self

    async def sync(self, timeout: float | None = 10.0) -> bool:
        return await self._mirror.sync(timeout)

    async def wait(self, predicate: Callable[[Any], bool],
                   timeout: float | None = None) -> bool:
        return await self._mirror.wait(self._matches(predicate), timeout)

    async def close(self) -> None:
        await self._mirror.close()
