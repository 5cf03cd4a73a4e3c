"""Helpers of the fastkv.client tests (imported by conftest.py and the test modules;
a module name of its own, since every test directory has a conftest)."""
from __future__ import annotations

import os
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


DOC_ENDPOINT = "http://127.0.0.1:2379"


def run_doc_blocks(path: str, url: str, name: str, at_least: int = 10) -> str:
    """Run every ```python block of a docs page, in order, in one namespace, with the
    page's endpoint replaced by `url`; returns what they printed. (Blocks fenced ```py
    are shown only: several members, TLS files, other processes.)"""
    import contextlib
    import io
    import re
    with open(path) as f:
        blocks = re.findall(r"^```python\n(.*?)^```", f.read(), re.S | re.M)
    assert len(blocks) >= at_least
    namespace: dict = {"__name__": name}
    out = io.StringIO()
    rel = os.path.relpath(path, os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    for i, block in enumerate(blocks):
        code = compile(block.replace(DOC_ENDPOINT, url), f"{rel} block {i + 1}", "exec")
        with contextlib.redirect_stdout(out):
            exec(code, namespace)   # noqa: S102 - our own documentation
    return out.getvalue()
