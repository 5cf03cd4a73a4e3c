"""The asyncio driver of the Raft core: the only place Raft meets time, disk and network.

Each turn of the ready loop takes one Ready from the core and handles it in
the order the Raft contract demands (ARCHITECTURE principles 2 and 3):

1. install a snapshot the leader sent (its state replaces ours) and mark it in the WAL;
2. a leader sends its messages at once, so replication runs in parallel with its
   own WAL write; the core counts the leader in the quorum only after advance()
   reports that write durable;
3. persist hard state and entries: one WAL write + one fdatasync, in a worker
   thread, for everything proposed during the loop turn (group commit);
4. meanwhile, apply the committed entries (already durable here) on the loop;
5. a follower or candidate sends its messages only now, after the fsync (a vote
   or an append acknowledgement must never outrun the disk);
6. advance().

ReadIndex results are handed to the server as soon as the core produces them:
they depend on the leader's confirmation, not on this member's disk.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from fastkv.errors import ErrStopped
from fastkv.raft.core import RaftCore
from fastkv.raft.messages import (LEADER, ConfChange, Message, ReadState, SnapshotMeta)
from fastkv.storage.wal import WAL, Entry

log = logging.getLogger("fastkv.raft")


class RaftNode:
    def __init__(self, core: RaftCore, wal: WAL, *,
                 apply: Callable[[list[Entry]], None],
                 send: Callable[[list[Message]], None],
                 install_snapshot: Callable[[SnapshotMeta], Awaitable[None]] | None = None,
                 on_read_states: Callable[[list[ReadState]], None] | None = None,
                 on_soft_state: Callable[[int, str], None] | None = None,
                 tick_seconds: float = 0.1,
                 on_fatal: Callable[[BaseException], None] | None = None):
        self.core = core
        self.wal = wal
        self.apply = apply
        self.send = send
        self.install_snapshot = install_snapshot
        self.on_read_states = on_read_states
        self.on_soft_state = on_soft_state
        self.tick_seconds = tick_seconds
        self.on_fatal = on_fatal
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._stopped = False
        self._proposed = False   # a proposal came since the last Ready: gather more first
        self.batches = 0
        self.fatal: BaseException | None = None
        self.lead = 0
        self.state = ""

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
        """Stop persisting, sending and applying at once (after a fatal error elsewhere)."""
        self._stopped = True
        self._wake.set()
        for t in self._tasks:
            t.cancel()

    # ---- inputs (all on the event loop) ------------------------------------------------

    def propose(self, data: bytes) -> int | None:
        if self._stopped:
            raise ErrStopped()
        index = self.core.propose(data)
        self._proposed = True
        self._wake.set()
        return index

    def propose_conf_change(self, cc: ConfChange) -> int | None:
        if self._stopped:
            raise ErrStopped()
        index = self.core.propose_conf_change(cc)
        self._proposed = True
        self._wake.set()
        return index

    def read_index(self, context: bytes) -> None:
        if self._stopped:
            raise ErrStopped()
        self.core.read_index(context)
        self._wake.set()

    def transfer_leader(self, to: int) -> None:
        self.core.transfer_leader(to)
        self._wake.set()

    def campaign(self) -> None:
        self.core.campaign()
        self._wake.set()

    def step(self, msg: Message) -> None:
        """A message from a peer (or a local report from the transport)."""
        if self._stopped:
            return
        try:
            self.core.step(msg)
        except Exception:  # peer input must never take the member down
            log.exception("raft: dropped message %r", msg)
            return
        self._wake.set()

    def kick(self) -> None:
        self._wake.set()

    # ---- loops ---------------------------------------------------------------------------

    async def _ticker(self) -> None:
        core = self.core
        try:
            while not self._stopped:
                await asyncio.sleep(self.tick_seconds)
                core.tick()
                if core.has_ready():
                    self._wake.set()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a member that stopped ticking must not go on
            self.fatal = exc
            log.critical("raft: fatal error in the ticker: %r", exc, exc_info=True)
            if self.on_fatal:
                self.on_fatal(exc)

    async def _run(self) -> None:
        core, wal = self.core, self.wal
        try:
            while not self._stopped:
                if not core.has_ready():
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                # Let every proposal already scheduled in this loop turn join the batch.
                # Woken by peers' messages alone (acknowledgements, the leader's appends),
                # go on at once: they were stepped in one go, a frame at a time.
                if self._proposed:
                    self._proposed = False
                    await asyncio.sleep(0)
                rd = core.ready()
                if rd.lead != self.lead or rd.state != self.state:
                    self.lead, self.state = rd.lead, rd.state
                    if self.on_soft_state:
                        self.on_soft_state(rd.lead, rd.state)
                if rd.read_states and self.on_read_states:
                    self.on_read_states(rd.read_states)
                if rd.snapshot is not None:
                    await self.install_snapshot(rd.snapshot)
                leader = rd.state == LEADER
                if leader and rd.messages:
                    self.send(rd.messages)
                save = None
                if ((rd.entries or rd.hardstate is not None)
                        and not wal.try_save_unsynced(rd.entries, rd.hardstate)):
                    save = asyncio.ensure_future(wal.save(rd.entries, rd.hardstate))
                if rd.committed_entries:
                    self.apply(rd.committed_entries)
                if save is not None:
                    await save
                if not leader and rd.messages:
                    self.send(rd.messages)
                core.advance(rd)
                self.batches += 1
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a failed fsync or apply: stop, never guess
            self.fatal = exc
            log.critical("raft: fatal error in the ready loop: %r", exc, exc_info=True)
            if self.on_fatal:
                self.on_fatal(exc)
