"""Wires the member together: storage, Raft, state machine, reads, leases, listeners.

Writes: validate → encode → ``node.propose`` → (WAL fsync) → apply → the waiter
for the request id resolves → the client hears the result. Linearizable reads
take the commit index as their read index and wait until it is applied;
serializable reads read at once.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from urllib.parse import urlsplit

from fastkv import ETCD_CLUSTER_VERSION, ETCD_SERVER_VERSION, requests
from fastkv.apply import Applier, store_state_from_snapshot
from fastkv.config import Config
from fastkv.errors import (ErrLeaseNotFound, ErrRequestTooLarge, ErrStopped, EtcdError,
                           StorageCorruption)
from fastkv.identity import IdGenerator, cluster_id, member_id
from fastkv.mvcc import validation
from fastkv.mvcc.lease import Lessor
from fastkv.mvcc.store import KVStore
from fastkv.mvcc.watch import WatchHub, WatchStream
from fastkv.raft.core import RaftCore
from fastkv.raft.log import RaftLog
from fastkv.raft.node import RaftNode
from fastkv.storage.snapshot import Snapshotter
from fastkv.storage.wal import WAL, HardState

log = logging.getLogger("fastkv.server")

LEASE_CHECK_SECONDS = 0.5        # how often the leader looks for expired leases (etcd: 500ms)
PROGRESS_NOTIFY_SECONDS = 600.0  # etcd's default watch progress notify interval
MAX_INT63 = (1 << 63) - 1


def min_lease_ttl(cfg: Config) -> int:
    """etcd: a lease lives at least 1.5 election timeouts, rounded up to whole seconds."""
    ms = (3 * (cfg.election_timeout // cfg.heartbeat_interval) // 2) * cfg.heartbeat_interval
    return max(1, -(-ms // 1000))


class Server:
    def __init__(self, cfg: Config, clock=time.monotonic):
        self.cfg = cfg
        self.clock = clock
        self.member_dir = os.path.join(cfg.data_dir, "member")
        self.wal_dir = os.path.join(self.member_dir, "wal")
        self.snap_dir = os.path.join(self.member_dir, "snap")
        self.member_id = 0
        self.cluster_id = 0
        self.wal: WAL | None = None        # set by _open_storage
        self.node: RaftNode | None = None  # set by _open_storage
        self._waiters: dict[int, asyncio.Future] = {}
        self._apply_waiters: list[tuple[int, asyncio.Future]] = []
        self._pending_revokes: set[int] = set()
        self._snapshotting = False
        self._tasks: list[asyncio.Task] = []
        self._listeners: list[asyncio.AbstractServer] = []
        self._stopped = False
        self.ready = asyncio.Event()
        self.fatal: BaseException | None = None
        self.stopped = asyncio.Event()

    # ---- start-up -----------------------------------------------------------------

    def _open_storage(self) -> None:
        cfg = self.cfg
        os.makedirs(self.member_dir, exist_ok=True)
        self.snapshotter = Snapshotter(self.snap_dir)
        self.lessor = Lessor(clock=self.clock, min_ttl=min_lease_ttl(cfg))
        if WAL.exists(self.wal_dir):
            snap = self.snapshotter.load_newest()
            wal, contents = WAL.open(self.wal_dir)
            meta = contents.metadata
            self.member_id, self.cluster_id = meta["member_id"], meta["cluster_id"]
            snap_index = snap_term = 0
            if snap is not None:
                snap_term, snap_index, state, blobs = snap
                if state.get("applied_index") != snap_index:
                    raise StorageCorruption(
                        f"snapshot: the file for index {snap_index} holds the state of index "
                        f"{state.get('applied_index')}")
                # Leases first: restoring the store re-attaches keys to them.
                self.lessor.restore_snapshot_state(state["lessor"])
                self.store = KVStore.from_snapshot_state(
                    store_state_from_snapshot(state, blobs), self.lessor)
            else:
                self.store = KVStore(self.lessor)
            entries = [e for e in contents.entries if e.index > snap_index]
            if entries and entries[0].index != snap_index + 1:
                raise StorageCorruption(
                    f"wal: entries start at {entries[0].index} but the newest snapshot is at "
                    f"{snap_index}: entries {snap_index + 1}..{entries[0].index - 1} are missing")
            hardstate = contents.hardstate
            raft_log = RaftLog(snap_index, snap_term, entries)
            applied = snap_index
            log.info("restored member %x: snapshot at index %d, %d WAL entries after it, "
                     "term %d", self.member_id, snap_index, len(entries), hardstate.term)
        else:
            if self.snapshotter.files():
                raise StorageCorruption(
                    f"{self.snap_dir} holds snapshots but {self.wal_dir} has no WAL: "
                    f"refusing to start a new member over old data")
            peers = cfg.initial_advertise_peer_urls
            self.member_id = member_id(peers, cfg.initial_cluster_token)
            self.cluster_id = cluster_id([member_id(urls, cfg.initial_cluster_token)
                                          for urls in cfg.initial_cluster.values()])
            wal = WAL.create(self.wal_dir, {"member_id": self.member_id,
                                            "cluster_id": self.cluster_id,
                                            "name": cfg.name})
            self.store = KVStore(self.lessor)
            hardstate, raft_log, applied = HardState(), RaftLog(), 0
            log.info("started new member %x of cluster %x", self.member_id, self.cluster_id)
        self.wal = wal
        self.snapshot_index = raft_log.snapshot_index
        self.hub = WatchHub(self.store, self.header)
        self.applier = Applier(self.store, self.lessor, self.hub)
        self.applier.applied_index = applied
        self.applier.applied_term = raft_log.snapshot_term
        self.core = RaftCore(self.member_id, [self.member_id], raft_log, hardstate, applied)
        self.node = RaftNode(self.core, self.wal, self._apply_entries,
                             tick_seconds=self.cfg.heartbeat_interval / 1000.0,
                             on_fatal=self._on_fatal)
        self.ids = IdGenerator(self.member_id, int(time.time() * 1000))

    async def start(self) -> None:
        """Open storage, replay, become leader, then listen."""
        self._open_storage()
        self.node.start()
        # Serve once this member leads and has applied everything committed before.
        while not (self.core.is_leader and self.core.applied >= self.core.commit
                   and self.core.commit >= self.core._term_start):
            if self.fatal:
                raise self.fatal
            await asyncio.sleep(0.005)
        self.lessor.promote()
        self._tasks.append(asyncio.create_task(self._expire_leases(), name="lease-expiry"))
        from fastkv.api.http import start_http_server
        for url in self.cfg.listen_client_urls:
            parts = urlsplit(url)
            if parts.scheme != "http":
                raise ValueError(f"listen URL {url}: only http:// is served yet "
                                 "(TLS comes with the security work)")
            self._listeners.append(await start_http_server(self, parts.hostname, parts.port))
        self.ready.set()
        log.info("serving client requests on %s", ", ".join(self.cfg.listen_client_urls))

    async def stop(self) -> None:
        """Stop serving and close storage; safe to call at any point of start-up."""
        if self._stopped:
            return
        self._stopped = True
        for lst in self._listeners:
            lst.close()
        for t in self._tasks:
            t.cancel()
        if self.node is not None:
            await self.node.stop()
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(ErrStopped())
        if self.wal is not None:
            self.wal.close()
        self.stopped.set()

    def _on_fatal(self, exc: BaseException) -> None:
        """Fail-stop: no more proposals, no more writes; __main__ exits non-zero."""
        self.fatal = exc
        if self.node is not None:
            self.node.halt()
        self.stopped.set()

    # ---- applying -------------------------------------------------------------------

    def _apply_entries(self, entries) -> None:
        apply = self.applier.apply
        waiters = self._waiters
        for entry in entries:
            req_id, result = apply(entry)
            if req_id:
                fut = waiters.pop(req_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(result)
        applied = entries[-1].index
        if self._apply_waiters:
            keep = []
            for index, fut in self._apply_waiters:
                if index <= applied:
                    if not fut.done():
                        fut.set_result(None)
                else:
                    keep.append((index, fut))
            self._apply_waiters = keep
        if (applied - self.snapshot_index >= self.cfg.snapshot_count
                and not self._snapshotting):
            self._snapshotting = True
            # Freeze the state right here, exactly at `applied` (cheap copies).
            parts = self.applier.snapshot_parts()
            term = self.applier.applied_term
            self._tasks.append(asyncio.create_task(self._snapshot(applied, term, parts),
                                                   name="snapshot"))

    async def _snapshot(self, index: int, term: int, parts) -> None:
        """Write the state frozen at `index` to a snapshot file, then release older WAL
        segments. The records are serialised one chunk per loop turn (no GIL contention
        with a busy thread); the file is written in a worker thread (I/O)."""
        try:
            state, chunks = parts
            blobs = []
            for chunk in chunks:
                blobs.append(chunk)
                await asyncio.sleep(0)
            size = await asyncio.to_thread(self.snapshotter.save, term, index, state, blobs)
            await asyncio.to_thread(self.wal.save_snapshot_marker, index, term)
            released = await asyncio.to_thread(self.wal.release_to, index)
            self.core.compact(index)
            self.snapshot_index = index
            log.info("snapshot at index %d (%d bytes); released %d WAL segments",
                     index, size, released)
        except Exception as exc:
            self._on_fatal(exc)
            log.critical("snapshot failed: %r", exc, exc_info=True)
        finally:
            self._snapshotting = False

    # ---- proposing and reading ------------------------------------------------------

    async def _propose(self, kind: str, payload: dict):
        if self._stopped or self.fatal:
            raise ErrStopped()
        req_id = self.ids.next()
        data = requests.encode(req_id, kind, payload)
        if len(data) > self.cfg.max_request_bytes:
            raise ErrRequestTooLarge()
        fut = asyncio.get_running_loop().create_future()
        self._waiters[req_id] = fut
        try:
            self.node.propose(data)
        except EtcdError:
            del self._waiters[req_id]
            raise
        result = await fut
        if isinstance(result, EtcdError):
            raise result
        return result

    async def _linearizable(self) -> None:
        """ReadIndex: the commit index now; return once it is applied."""
        index = self.core.commit
        # The applier's index, not core.applied: the core hears of an apply only at
        # the next advance, while waiters are woken as entries are applied.
        if self.applier.applied_index >= index:
            return
        fut = asyncio.get_running_loop().create_future()
        self._apply_waiters.append((index, fut))
        await fut

    def header(self, revision: int | None = None) -> dict:
        return {"cluster_id": self.cluster_id, "member_id": self.member_id,
                "revision": self.store.rev if revision is None else revision,
                "raft_term": self.core.term}

    def _with_header(self, resp: dict) -> dict:
        hdr = resp.get("header")
        rev = hdr.get("revision") if hdr else None
        resp["header"] = self.header(rev)
        return resp

    # ---- KV -------------------------------------------------------------------------

    async def range(self, req: dict) -> dict:
        validation.check_range(req)
        if not req.get("serializable"):
            await self._linearizable()
        resp = self.store.range(req)
        resp["header"] = self.header()
        return resp

    async def put(self, req: dict) -> dict:
        validation.check_put(req)
        return self._with_header(await self._propose(requests.PUT, req))

    async def delete_range(self, req: dict) -> dict:
        validation.check_delete_range(req)
        return self._with_header(await self._propose(requests.DELETE_RANGE, req))

    async def txn(self, req: dict) -> dict:
        validation.check_txn(req, self.cfg.max_txn_ops)
        if validation.txn_is_read_only(req):
            # As etcd: a txn that cannot write is served like a (linearizable) read.
            await self._linearizable()
            resp, _events = self.store.txn(req)
            return self._with_header(resp)
        return self._with_header(await self._propose(requests.TXN, req))

    async def compact(self, req: dict) -> dict:
        return self._with_header(await self._propose(
            requests.COMPACTION, {"revision": int(req.get("revision", 0)),
                                  "physical": bool(req.get("physical", False))}))

    # ---- leases ----------------------------------------------------------------------

    async def lease_grant(self, req: dict) -> dict:
        lease_id = int(req.get("ID", 0))
        ttl = int(req.get("TTL", 0))
        if lease_id == 0:
            while lease_id == 0 or self.lessor.lookup(lease_id) is not None:
                lease_id = self.ids.next() & MAX_INT63
        resp = await self._propose(requests.LEASE_GRANT, {"ID": lease_id, "TTL": ttl})
        return self._with_header(resp)

    async def lease_revoke(self, req: dict) -> dict:
        lease_id = int(req.get("ID", 0))
        if self.lessor.lookup(lease_id) is None:
            raise ErrLeaseNotFound()
        return self._with_header(await self._propose(requests.LEASE_REVOKE, {"ID": lease_id}))

    async def lease_keepalive(self, req: dict) -> dict:
        lease_id = int(req.get("ID", 0))
        await self._linearizable()
        try:
            ttl = self.lessor.renew(lease_id)
        except ErrLeaseNotFound:  # etcd answers a keepalive for an unknown lease with TTL 0
            ttl = 0
        return {"header": self.header(), "ID": lease_id, "TTL": ttl}

    async def lease_timetolive(self, req: dict) -> dict:
        lease_id = int(req.get("ID", 0))
        await self._linearizable()
        resp = self.lessor.time_to_live(lease_id, bool(req.get("keys", False)))
        resp["header"] = self.header()
        return resp

    async def lease_leases(self, req: dict) -> dict:
        await self._linearizable()
        return {"header": self.header(), "leases": [{"ID": i} for i in self.lessor.leases()]}

    async def _expire_leases(self) -> None:
        """The leader revokes expired leases through the log, like every other change."""
        while True:
            await asyncio.sleep(LEASE_CHECK_SECONDS)
            if not self.core.is_leader:
                continue
            for lease_id in self.lessor.expired():
                if lease_id in self._pending_revokes:
                    continue
                self._pending_revokes.add(lease_id)
                asyncio.create_task(self._revoke_expired(lease_id))

    async def _revoke_expired(self, lease_id: int) -> None:
        try:
            await self._propose(requests.LEASE_REVOKE, {"ID": lease_id})
        except EtcdError as err:  # already revoked by a client: nothing to do
            log.debug("expiring lease %x: %s", lease_id, err.message)
        finally:
            self._pending_revokes.discard(lease_id)

    # ---- watch, maintenance -----------------------------------------------------------

    def watch_stream(self) -> WatchStream:
        return WatchStream(self.hub, self.header, progress_interval=PROGRESS_NOTIFY_SECONDS)

    async def status(self, req: dict | None = None) -> dict:
        size = self.db_size()
        return {"header": self.header(), "version": ETCD_SERVER_VERSION, "dbSize": size,
                "leader": self.member_id if self.core.is_leader else 0,
                "raftIndex": self.core.commit, "raftTerm": self.core.term,
                "raftAppliedIndex": self.applier.applied_index, "dbSizeInUse": size}

    def db_size(self) -> int:
        """Bytes of state on disk: the newest snapshot plus the WAL written since."""
        files = self.snapshotter.files()
        snap = os.path.getsize(files[-1][2]) if files else 0
        return snap + self.wal.bytes_since_snapshot

    def version_info(self) -> dict:
        return {"etcdserver": ETCD_SERVER_VERSION, "etcdcluster": ETCD_CLUSTER_VERSION}

    def health(self) -> tuple[bool, str]:
        if self.fatal:
            return False, f"member failed: {self.fatal!r}"
        if not self.core.is_leader:
            return False, "RAFT NO LEADER"
        return True, ""
