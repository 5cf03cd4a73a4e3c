"""Watching a tree of configuration: a local copy of every key under a prefix.

The pattern is etcd's mirror (clientv3/mirror ``Syncer``) and the "get then watch
from revision + 1" idiom: one range read of ``<prefix>`` at revision R gives the
starting snapshot, then a watch of ``<prefix>`` from R + 1 applies every later
change in revision order, so no change between the read and the watch is missed.
The client's watch resumes by itself after a disconnect (another endpoint, a member
restarted) from the revision after the last event it delivered; if that revision
has been compacted away meanwhile, the watcher reads the whole prefix again and
reports what differs as changes.

:class:`AsyncConfigWatcher` is the same for an AsyncClient, followed by a task of the
loop; both share everything but their shell (see ``_mirror``).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Iterator

from fastkv.client._requests import KeyLike, to_bytes
from fastkv.client._types import KeyValue

from ._common import run_steps
from ._mirror import AsyncMirror, AsyncMirrorView, Mirror, SyncMirrorView

__all__ = ["ConfigWatcher", "AsyncConfigWatcher"]


class _ConfigBase:
    """What ConfigWatcher and AsyncConfigWatcher share: everything read from the copy."""

    def _init(self, prefix: KeyLike, on_change, decode: bool, initial: bool) -> None:
        self.prefix = to_bytes(prefix, "prefix")
        self.decode = decode
        self.on_change = on_change
        self._initial = initial
        self._plen = len(self.prefix)

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.prefix!r} keys={len(self)} "
                f"revision={self.revision}>")

    def _key(self, key: bytes):
        k = key[self._plen:]
        return k.decode(errors="replace") if self.decode else k

    def _value(self, kv: KeyValue | None):
        if kv is None:
            return None
        return kv.value.decode(errors="replace") if self.decode else kv.value

    def _changed(self, key: bytes, old: KeyValue | None, new: KeyValue | None):
        if self.on_change is not None:
            return self.on_change(self._key(key), self._value(new))
        return None

    def _view(self, data: dict[bytes, KeyValue]) -> dict:
        return {self._key(k): self._value(kv) for k, kv in sorted(data.items())}

    def _started_steps(self):
        """``initial=True``: on_change once per key of the first snapshot."""
        if self._initial and self.on_change is not None:
            for k, v in self.snapshot().items():
                yield functools.partial(self.on_change, k, v)

    def snapshot(self) -> dict:
        """The configuration now: ``{relative key: value}``."""
        return self._view(self._mirror.items())

    @property
    def reloads(self) -> int:
        """How many times the whole prefix was read again (after a compaction)."""
        return max(self._mirror.loads - 1, 0)

    def get(self, key: Any, default: Any = None) -> Any:
        return self.snapshot().get(key, default)

    def __getitem__(self, key: Any) -> Any:
        return self.snapshot()[key]

    def __contains__(self, key: Any) -> bool:
        return key in self.snapshot()

    def __len__(self) -> int:
        return len(self._mirror.items())

    def __iter__(self) -> Iterator:
        return iter(self.snapshot())


class ConfigWatcher(_ConfigBase, SyncMirrorView):
    """A live copy of the keys under ``prefix``.

    ``ConfigWatcher(client, "app/config/", on_change=None, decode=True,
    initial=False)``: reads the prefix now (the constructor returns with the snapshot
    loaded), then follows every change in a background thread.

    - Keys are relative to the prefix; with ``decode`` (default) keys and values are
      ``str``, else ``bytes``.
    - ``on_change(key, value)`` runs in the watcher's thread after each change is
      applied (``value`` None: deleted), in revision order; with ``initial=True`` also
      once per key of the first snapshot (before the constructor returns).
    - ``snapshot()`` a dict copy; ``get(key, default)``, ``w[key]``, ``key in w``,
      ``len(w)``, iteration over keys; ``revision``: the store revision the copy is
      current at; ``sync(timeout)`` waits until the copy has every change committed
      before the call; ``wait(predicate, timeout)`` until ``predicate(snapshot)``.
    - ``close()`` (or leaving its ``with`` block).
    """

    def __init__(self, client, prefix: KeyLike,
                 on_change: Callable[[Any, Any], Any] | None = None, *, decode: bool = True,
                 initial: bool = False):
        self._init(prefix, on_change, decode, initial)
        self._mirror = Mirror(client, self.prefix, self._changed, name="fastkv-config")
        run_steps(self._started_steps())


class AsyncConfigWatcher(_ConfigBase, AsyncMirrorView):
    """:class:`ConfigWatcher` for an AsyncClient: ``async with AsyncConfigWatcher(ac,
    prefix, on_change) as cfg:`` (or ``cfg = await AsyncConfigWatcher(...)``, then
    ``await cfg.close()``) reads the prefix, then a task of the loop follows every
    change. ``on_change`` may be a coroutine function (awaited before the next
    change's callback). ``snapshot()``, ``cfg[key]``, ``get``, ``len``, ``in``, ``revision``
    as the sync one; ``await cfg.sync(timeout)``, ``await cfg.wait(predicate,
    timeout)``."""

    def __init__(self, client, prefix: KeyLike,
                 on_change: Callable[[Any, Any], Any] | None = None, *, decode: bool = True,
                 initial: bool = False):
        self._init(prefix, on_change, decode, initial)
        self._mirror = AsyncMirror(client, self.prefix, self._changed, name="fastkv-config")
