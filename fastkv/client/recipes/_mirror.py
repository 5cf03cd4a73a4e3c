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
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

from fastkv.client import errors
from fastkv.client._types import KeyValue

from ._common import Deadline

log = logging.getLogger("fastkv.client.recipes")

#: pause before reading again after an unexpected watch error
RETRY_PAUSE = 1.0


class Mirror:
    """Keys under ``prefix`` -> KeyValue, and the revision they are current at.

    ``changed(key, old_kv, new_kv)`` (old or new None for a creation / deletion) is
    called in the mirror's thread for every change after the first load, in
    revision order, once the copy has been updated.
    """

    def __init__(self, client, prefix: bytes, changed: Callable[[bytes, KeyValue | None,
                                                                 KeyValue | None], None],
                 *, name: str = "fastkv-mirror"):
        self._client = client
        self.prefix = prefix
        self._changed = changed
        self._data: dict[bytes, KeyValue] = {}
        self._pending = 0   # changes applied whose callbacks have not all run yet
        self._cond = threading.Condition()
        self.revision = 0
        #: how many times the whole prefix was read (1 after the start)
        self.loads = 0
        self._closed = threading.Event()
        self._watch = None
        self._mu = threading.Lock()
        self._load(notify=False)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # ---- reading ---------------------------------------------------------------------

    def items(self) -> dict[bytes, KeyValue]:
        with self._cond:
            return dict(self._data)

    def wait(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Block until ``predicate()`` (called under the mirror's lock, once the
        callbacks of every change applied so far have run) is true, or ``timeout``."""
        with self._cond:
            return bool(self._cond.wait_for(lambda: self._pending == 0 and predicate(),
                                            timeout))

    def sync(self, timeout: float | None = 10.0) -> bool:
        """Wait until the copy has every change committed before this call: read the
        store's revision, then ask the watch for a progress notification up to it.
        False if that did not happen within ``timeout``."""
        deadline = Deadline(timeout)
        target = self._client.range(self.prefix, prefix=True, count_only=True).revision
        while True:
            with self._cond:
                if self._pending == 0 and self.revision >= target:
                    return True
            with self._mu:
                w = self._watch
            if w is not None:
                try:
                    w.request_progress()
                except errors.EtcdError:
                    pass
            with self._cond:
                if self._cond.wait_for(lambda: self._pending == 0 and self.revision >= target,
                                       deadline.step(0.5)):
                    return True
            if deadline.expired():
                return False

    # ---- the thread ------------------------------------------------------------------

    def _load(self, notify: bool) -> None:
        r = self._client.range(self.prefix, prefix=True)
        new = {kv.key: kv for kv in r.kvs}
        w = self._client.watch(self.prefix, prefix=True, start_revision=r.revision + 1)
        with self._mu:
            old_w, self._watch = self._watch, w
        if old_w is not None:
            old_w.close()
        if self._closed.is_set():
            w.close()
        with self._cond:
            old = self._data
            self._data = new
            self._pending += 1
        changes = []
        if notify:
            for k in sorted(old.keys() | new.keys()):
                o, n = old.get(k), new.get(k)
                if n is None or o is None or o.mod_revision != n.mod_revision:
                    changes.append((k, o, n))
        self._publish(changes, r.revision, loaded=True)

    def _publish(self, changes, revision: int, loaded: bool = False) -> None:
        """Run the callbacks of changes already applied to the copy, then let waiters
        see the new revision (so a wait() that returns has seen the callbacks run)."""
        try:
            for k, o, n in changes:
                try:
                    self._changed(k, o, n)
                except Exception:   # noqa: BLE001 - a bad callback must not stop the mirror
                    log.exception("change callback for %r failed", k)
        finally:
            with self._cond:
                self._pending -= 1
                self.revision = max(self.revision, revision)
                if loaded:
                    self.loads += 1
                self._cond.notify_all()

    def _apply(self, resp) -> None:
        changes = []
        with self._cond:
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
        self._publish(changes, resp.events[-1].revision if resp.events else resp.revision)

    def _run(self) -> None:
        while not self._closed.is_set():
            with self._mu:
                w = self._watch
            try:
                for resp in w.responses():
                    self._apply(resp)
                if self._closed.is_set():
                    return
                raise errors.WatchCanceled("watch ended")
            except errors.WatchCompacted as e:
                log.info("mirror of %r: revision compacted (%s); reading it all again",
                         self.prefix, e)
            except errors.ClientClosed:
                return
            except Exception as e:   # noqa: BLE001 - read again, after a pause
                if self._closed.is_set():
                    return
                log.warning("mirror of %r: watch failed (%s); reading again", self.prefix, e)
                if self._closed.wait(RETRY_PAUSE):
                    return
            while not self._closed.is_set():
                try:
                    self._load(notify=True)
                    break
                except errors.ClientClosed:
                    return
                except Exception as e:   # noqa: BLE001
                    log.warning("mirror of %r: reading failed (%s)", self.prefix, e)
                    if self._closed.wait(RETRY_PAUSE):
                        return

    def close(self) -> None:
        self._closed.set()
        with self._mu:
            w = self._watch
        if w is not None:
            w.close()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        with self._cond:
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()
