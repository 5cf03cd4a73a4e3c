"""The asyncio driver of the Raft core: persist → apply → advance, with group commit.

One loop turn's proposals become one Ready: one WAL write + one fdatasync (in a
worker thread), while the entries committed by the previous Ready are applied
on the event loop at the same time, as etcd does.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

from fastkv.errors import ErrStopped
from fastkv.raft.core import RaftCore
from fastkv.storage.wal import WAL, Entry

log = logging.getLogger("fastkv.raft")


class RaftNode:
    def __init__(self, core: RaftCore, wal: WAL, apply: Callable[[list[Entry]], None],
                 tick_seconds: float = 0.1, on_fatal: Callable[[BaseException], None] | None = None):
        self.core = core
        self.wal = wal
        self.apply = apply
        self.tick_seconds = tick_seconds
        self.on_fatal = on_fatal
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._stopped = False
        self.batches = 0
        self.fatal: BaseException | None = None

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(), name="raft-ready"),
                       asyncio.create_task(self._ticker(), name="raft-tick")]

    async def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass

    def halt(self) -> None:
        """Stop persisting and applying at once (after a fatal error elsewhere)."""
        self._stopped = True
        self._wake.set()
        for t in self._tasks:
            t.cancel()

    def propose(self, data: bytes) -> int:
        if self._stopped:
            raise ErrStopped()
        index = self.core.propose(data)
        self._wake.set()
        return index

    def kick(self) -> None:
        self._wake.set()

    async def _ticker(self) -> None:
        while not self._stopped:
            self.core.tick()
            if self.core.has_ready():
                self._wake.set()
            await asyncio.sleep(self.tick_seconds)

    async def _run(self) -> None:
        core, wal = self.core, self.wal
        try:
            while not self._stopped:
                if not core.has_ready():
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                # Let every proposal already scheduled in this loop turn join the batch.
                await asyncio.sleep(0)
                rd = core.ready()
                save = None
                if rd.entries or rd.hardstate is not None:
                    save = asyncio.ensure_future(wal.save(rd.entries, rd.hardstate))
                if rd.committed_entries:
                    self.apply(rd.committed_entries)
                if save is not None:
                    await save
                core.advance(rd)
                self.batches += 1
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a failed fsync or apply: stop, never guess
            self.fatal = exc
            log.critical("raft: fatal error in the ready loop: %r", exc, exc_info=True)
            if self.on_fatal:
                self.on_fatal(exc)
