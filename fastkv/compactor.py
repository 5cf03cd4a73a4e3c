"""Automatic compaction: etcd 3.4's v3compactor, --auto-compaction-mode and
--auto-compaction-retention.

- **periodic** (retention a duration; a bare number is hours): the compactor samples
  the store's revision every tenth of the retention (at most every 6 minutes), and
  compacts to the revision it saw one retention ago: first once a whole retention has
  passed, then every retention (at most every hour).
- **revision** (retention a number of revisions): every 5 minutes, compacts to the
  current revision minus the retention, when that moved since the last compaction.

Only the leader compacts (the others' compactors are paused), as etcd; the compaction
itself is an ordinary CompactionRequest through the log. A failed compaction is
retried at the next sample; "required revision has been compacted" (someone compacted
further already) counts as done.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from fastkv.auth.jwt_tokens import parse_go_duration

log = logging.getLogger("fastkv.compactor")

HOUR = 3600.0
RETRY_DIVISOR = 10
REVISION_CHECK_SECONDS = 300.0   # etcd's revision compactor: checkCompactInterval

def parse_retention(mode: str, text: str) -> float:
    """--auto-compaction-retention for a mode: seconds (periodic) or revisions (revision).
    A bare number is hours in periodic mode, as etcd's flag ("1" keeps one hour)."""
    text = text.strip()
    if mode == "revision":
        n = int(text)
        if n < 0:
            raise ValueError(text)
        return float(n)
    try:
        return float(int(text)) * HOUR
    except ValueError:
        return parse_go_duration(text)


class Compactor:
    """One member's automatic compactor (see the module docstring). ``rev()`` reads the
    store's revision; ``compact(rev)`` proposes a compaction and returns when applied."""

    def __init__(self, mode: str, retention: float, rev: Callable[[], int],
                 compact: Callable[[int], Awaitable[None]],
                 clock: Callable[[], float] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        if mode not in ("periodic", "revision"):
            raise ValueError(f"unknown auto-compaction-mode {mode!r}")
        self.mode = mode
        self.retention = retention
        self.rev = rev
        self.compact = compact
        self.clock = clock or (lambda: asyncio.get_running_loop().time())
        self.sleep = sleep
        self.paused = True   # until this member leads
        self.compacted = 0   # the last revision this compactor compacted to

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    async def run(self) -> None:
        if self.retention <= 0:
            return   # 0 turns automatic compaction off
        if self.mode == "periodic":
            await self._periodic()
        else:
            await self._revision()

    # etcd's Periodic.getCompactInterval / getRetryInterval / getRetentions
    def compact_interval(self) -> float:
        return min(self.retention, HOUR)

    def retry_interval(self) -> float:
        return min(self.retention, HOUR) / RETRY_DIVISOR

    async def _periodic(self) -> None:
        retry = self.retry_interval()
        keep = int(self.retention / retry) + 1
        revs: list[int] = []
        last_success = self.clock()
        base = self.retention
        while True:
            revs.append(self.rev())
            if len(revs) > keep:
                del revs[0]   # revs[0] is the revision one retention ago
            await self.sleep(retry)
            if self.paused:
                continue
            if self.clock() - last_success < base:
                continue
            base = self.compact_interval()
            if await self._compact(revs[0]):
                last_success = self.clock()

    async def _revision(self) -> None:
        while True:
            await self.sleep(REVISION_CHECK_SECONDS)
            if self.paused:
                continue
            target = self.rev() - int(self.retention)
            if target <= 0 or target == self.compacted:
                continue
            await self._compact(target)

    async def _compact(self, rev: int) -> bool:
        if rev <= 0 or rev <= self.compacted:
            return True
        log.info("starting auto-compaction at revision %d (retention: %s)", rev,
                 f"{self.retention:g}s" if self.mode == "periodic" else
                 f"{int(self.retention)} revisions")
        try:
            await self.compact(rev)
        except Exception as exc:   # no leader, a timeout, already compacted further
            if "required revision has been compacted" in str(exc):
                self.compacted = rev
                return True
            log.warning("auto-compaction at revision %d failed: %s (retrying)", rev, exc)
            return False
        self.compacted = rev
        log.info("finished auto-compaction at revision %d", rev)
        return True
