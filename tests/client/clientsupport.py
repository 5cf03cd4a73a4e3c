"""Helpers of the fastkv.client tests (imported by conftest.py and the test modules;
a module name of its own, since every test directory has a conftest)."""
from __future__ import annotations

import time

from servers import Cluster, EtcdProcess, FastkvProcess

KINDS = {"fastkv": FastkvProcess, "etcd": EtcdProcess}


class ServerPool:
    """Servers started on first request (by key), all stopped by close()."""

    def __init__(self):
        self._items: dict = {}

    def get(self, key, start):
        if key not in self._items:
            self._items[key] = start()
        return self._items[key]

    def close(self) -> None:
        items, self._items = list(self._items.values()), {}
        for it in items:
            try:
                if isinstance(it, Cluster):
                    # throwaway data: no graceful leader hand-over, which makes
                    # etcd members stopped one by one wait for their peers
                    for m in it.members:
                        m.kill()
                    it.stop()
                else:
                    it.cleanup()
            except Exception:   # noqa: BLE001 - stop the others anyway
                pass


def wait_for(fn, what: str, timeout: float = 15.0, interval: float = 0.05):
    """Poll fn() until it returns something true (returned) or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        res = fn()
        if res:
            return res
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)
