"""Wires the member together: storage, Raft, peers, state machine, reads, leases, listeners.

Writes: validate → encode → ``node.propose`` (a follower's core forwards it to
the leader) → replicated, committed → applied here → the waiter for the
request id resolves → the client hears the result. Linearizable reads join
a ReadIndex batch (one quorum round serves every read queued meanwhile) and
are served once this member has applied up to the batch's read index.
Serializable reads read at once.

Membership changes are ENTRY_CONF_CHANGE entries; lease renewals, which do
not go through the log, are forwarded to the leader over the peer transport.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import os
import random
import time
from urllib.parse import urlsplit

from fastkv import ETCD_CLUSTER_VERSION, ETCD_SERVER_VERSION, requests
from fastkv.alarms import (ACTION_GET, ALARM_CORRUPT, ALARM_NAMES, ALARM_NOSPACE,
                           DEFAULT_QUOTA_BYTES, AlarmStore)
from fastkv.apply import Applier, store_state_from_snapshot
from fastkv.auth import AuthStore, hash_password, new_salt, normalize_cost
from fastkv.auth import enforce
from fastkv.auth.identity import identify
from fastkv.auth.jwt_tokens import token_provider
from fastkv.concurrency import Recipes
from fastkv.compactor import Compactor, parse_retention
from fastkv.v2store import V2Store
from fastkv.v2store.apply import NAMESPACES as V2_NAMESPACES
from fastkv.v2auth import V2AuthStore
from fastkv import faults, tlsconfig
from fastkv.config import Config
from fastkv.errors import (ErrBadLeaderTransferee, ErrConfChangePending, ErrLeaseNotFound, ErrLearnerNotReady,
                           ErrMemberBadURLs, ErrMemberNotEnoughStarted, ErrMemberNotFound,
                           ErrMemberNotLearner, ErrNotLeader, ErrRequestTooLarge, ErrStopped,
                           ErrTimeout, ErrTimeoutDueToLeaderFail, ErrUnhealthy, EtcdError,
                           StorageCorruption, error_named)
from fastkv.errors import ErrAuthFailed, ErrNoPasswordUser, ErrNoSpace
from fastkv.identity import IdGenerator, cluster_id, member_id
from fastkv.membership import (BOOTSTRAP_TERM, ErrIDRemoved, Member, Membership,
                               bootstrap_entries, encode_context, initial_members,
                               new_member_id)
from fastkv.metrics import ServerMetrics
from fastkv.mvcc import validation
from fastkv.mvcc.lease import Lessor
from fastkv.mvcc.store import KVStore
from fastkv.mvcc.watch import WatchHub, WatchStream
from fastkv.raft.core import RaftCore
from fastkv.raft.log import RaftLog
from fastkv.raft.messages import (CONF_ADD_LEARNER_NODE, CONF_ADD_NODE, CONF_REMOVE_NODE,
                                  CONF_UPDATE_NODE, ENTRY_CONF_CHANGE, LEADER, LOCAL_MESSAGES,
                                  MSG_SNAP, MSG_SNAP_STATUS, ConfChange,
                                  ConfState, Message, SnapshotMeta)
from fastkv.raft.node import RaftNode
from fastkv.storage.snapshot import Snapshotter
from fastkv.storage.wal import WAL, Entry, HardState

log = logging.getLogger("fastkv.server")

LEASE_CHECK_SECONDS = 0.5        # how often the leader looks for expired leases (etcd: 500ms)
PROGRESS_NOTIFY_SECONDS = 600.0  # etcd's default watch progress notify interval
MIN_PROGRESS_NOTIFY_SECONDS = 0.1  # etcd's minWatchProgressInterval
HEALTH_INTERVAL = 5.0            # etcd: a peer heard from within this is "active"
READ_INDEX_RETRY_SECONDS = 0.5   # etcd's readIndexRetryTime
LEARNER_READY_PERCENT = 0.9      # etcd: a learner within 90% of the leader's log may be promoted
MAX_INT63 = (1 << 63) - 1
AUTH_FAILURE_DELAY = 0.2         # a failed Authenticate answers after this (slows guessing)


def min_lease_ttl(cfg: Config) -> int:
    """etcd: a lease lives at least 1.5 election timeouts, rounded up to whole seconds."""
    ms = (3 * (cfg.election_timeout // cfg.heartbeat_interval) // 2) * cfg.heartbeat_interval
    return max(1, -(-ms // 1000))


def _etcd_result(handler):
    """A peer-call handler whose EtcdError travels back as (code, message), so the
    member that forwarded the request answers its client with etcd's error."""
    async def wrapped(payload):
        try:
            return ("ok", await handler(payload))
        except EtcdError as err:
            return ("err", err.code, err.message, type(err).__name__)
    return wrapped


PEER_PROBE_SECONDS = 4.0   # etcd's proberInterval (rafthttp: ConnReadTimeout - 1s)
# etcd's quota costs (etcdserver/quota.go): what a write is taken to add on disk
KV_OVERHEAD = 256
LEASE_COST = 64


def _put_cost(req: dict) -> int:
    return len(req.get("key", b"")) + len(req.get("value", b"")) + KV_OVERHEAD


def _txn_cost(txn: dict) -> int:
    cost = 0
    for branch in ("success", "failure"):
        n = 0
        for op in txn.get(branch, ()):
            if "request_put" in op:
                n += _put_cost(op["request_put"])
            elif "request_txn" in op:
                n += _txn_cost(op["request_txn"])
        cost = max(cost, n)   # only one branch runs
    return cost


def _proposal_dropped(exc: BaseException) -> bool:
    return type(exc).__name__ == "ErrProposalDropped"


def progress_notify_interval(cfg: Config) -> float:
    """etcd's NewWatchServer: a positive --experimental-watch-progress-notify-interval is
    used, raised to 100ms at least (with a warning); zero or negative keeps the default."""
    interval = cfg.experimental_watch_progress_notify_interval
    if interval <= 0:
        return PROGRESS_NOTIFY_SECONDS
    if interval < MIN_PROGRESS_NOTIFY_SECONDS:
        log.warning("adjusting watch progress notify interval to minimum period "
                    "(min-watch-progress-notify-interval %gs)", MIN_PROGRESS_NOTIFY_SECONDS)
        return MIN_PROGRESS_NOTIFY_SECONDS
    return interval


class Server:
    def __init__(self, cfg: Config, clock=time.monotonic):
        self.cfg = cfg
        # Testing only: --experimental-fault-file may jump this member's clock (fastkv/faults.py).
        self._jump_clock = faults.JumpClock(clock) if cfg.experimental_fault_file else None
        self.clock = self._jump_clock or clock
        self.progress_notify_seconds = progress_notify_interval(cfg)
        # TLS contexts of the client and peer ports (fastkv/tlsconfig.py; raises
        # TLSConfigError at start-up as etcd refuses). self.tls.client.client_cert_auth
        # is etcd's ClientCertAuthEnabled (False under --auto-tls, as etcd).
        self.tls = tlsconfig.build(cfg)
        self.member_dir = os.path.join(cfg.data_dir, "member")
        self.wal_dir = cfg.wal_dir or os.path.join(self.member_dir, "wal")
        self.snap_dir = os.path.join(self.member_dir, "snap")
        self.member_id = 0
        self.cluster_id = 0
        self.wal: WAL | None = None        # set by _open_storage
        self.node: RaftNode | None = None  # set by _open_storage
        self.transport = None              # set by start
        self.membership = Membership()
        # etcd's ReqTimeout: 5s + 2 election timeouts.
        self.request_timeout = 5.0 + 2 * cfg.election_timeout / 1000.0
        self.election_seconds = cfg.election_timeout / 1000.0
        self._waiters: dict[int, asyncio.Future] = {}
        self._deadlines: collections.deque = collections.deque()  # (deadline, req_id), in order
        self._apply_waiters: list[tuple[int, asyncio.Future]] = []
        self._read_batch: asyncio.Future | None = None
        self._read_kick = asyncio.Event()
        self._read_states: dict[bytes, asyncio.Future] = {}
        self._leader_event = asyncio.Event()
        self._pending_revokes: set[int] = set()
        self._snapshotting = False
        self._tasks: list[asyncio.Task] = []
        self._listeners: list[asyncio.AbstractServer] = []
        self._stopped = False
        self._existing: tuple[int, list] | None = None  # (cluster id, members) when joining
        self._join_peers: list = []                       # from the WAL, for a joiner
        self.alarms = AlarmStore()
        self.metrics = ServerMetrics()   # what /metrics counts as it happens (fastkv/metrics.py)
        # --auto-compaction-*: runs while this member leads (fastkv/compactor.py)
        self.compactor = Compactor(cfg.auto_compaction_mode,
                                   parse_retention(cfg.auto_compaction_mode,
                                                   cfg.auto_compaction_retention),
                                   lambda: self.store.rev, self._auto_compact)
        self._snapshot_size: int | None = None   # the newest snapshot file's (None: look)
        self._last_lead = 0
        # --auth-token: simple (member-local table) or jwt (signed); config checked it
        self.tokens = token_provider(getattr(cfg, "auth_token", "simple"), cfg.auth_token_ttl)
        self.v2 = V2Store(V2_NAMESPACES)   # the v2 keys tree (served with --enable-v2)
        self.v2auth = V2AuthStore(self)   # v2 users/roles, kept in self.v2 under /2
        self._v2_sync_pending = False
        self.auth = AuthStore(self.tokens)
        self.grpc = None   # fastkv.api.grpc_api.GrpcFrontend once started (grpcio transport)
        self.grpc_methods = None   # the native transport's method table
        self.grpc_connections: set = set()   # open native gRPC connections (GOAWAY on stop)
        self.recipes = Recipes(self)   # v3lock / v3election
        self.peer_last_seen: dict[int, float] = {}
        self.peer_active_since: dict[int, float] = {}
        self.start_time = time.time()
        self.leader_since = 0.0
        self.removed = False
        self.ready = asyncio.Event()
        self.fatal: BaseException | None = None
        self.stopped = asyncio.Event()

    # ---- start-up -----------------------------------------------------------------

    def _open_storage(self) -> None:
        cfg = self.cfg
        os.makedirs(self.member_dir, exist_ok=True)
        self.snapshotter = Snapshotter(self.snap_dir)
        self.lessor = Lessor(clock=self.clock, min_ttl=min_lease_ttl(cfg))
        snapshot_meta = None
        if WAL.exists(self.wal_dir):
            snap = self.snapshotter.load_newest()
            wal, contents = WAL.open(self.wal_dir)
            meta = contents.metadata
            self.member_id, self.cluster_id = meta["member_id"], meta["cluster_id"]
            self._join_peers = meta.get("join_peers", [])
            token = meta.get("token")
            if (token is not None and cfg.initial_cluster_state == "new"
                    and token != cfg.initial_cluster_token and cfg.initial_cluster_token_given):
                raise StorageCorruption(
                    f"{cfg.data_dir} belongs to member {self.member_id:x} of cluster "
                    f"{self.cluster_id:x} (token {token!r}), but --initial-cluster-token is "
                    f"{cfg.initial_cluster_token!r}: refusing to start a member of another cluster")
            snap_index = snap_term = 0
            if snap is not None:
                snap_term, snap_index, state, blobs = snap
                if state.get("applied_index") != snap_index:
                    raise StorageCorruption(
                        f"snapshot: the file for index {snap_index} holds the state of index "
                        f"{state.get('applied_index')}")
                self._restore_state(state, blobs)
                snapshot_meta = SnapshotMeta(snap_index, snap_term, self.membership.conf_state())
            else:
                self.store = KVStore(self.lessor)
            entries = [e for e in contents.entries if e.index > snap_index]
            if entries and entries[0].index != snap_index + 1:
                raise StorageCorruption(
                    f"wal: entries start at {entries[0].index} but the newest snapshot is at "
                    f"{snap_index}: entries {snap_index + 1}..{entries[0].index - 1} are missing")
            hardstate = contents.hardstate
            if cfg.force_new_cluster:
                entries, hardstate = self._force_new_cluster(wal, snap_index, entries, hardstate)
            raft_log = RaftLog(snap_index, snap_term, entries)
            applied = snap_index
            log.info("restored member %x of cluster %x: snapshot at index %d, %d WAL entries "
                     "after it, term %d", self.member_id, self.cluster_id, snap_index,
                     len(entries), hardstate.term)
        else:
            if self.snapshotter.files():
                raise StorageCorruption(
                    f"{self.snap_dir} holds snapshots but {self.wal_dir} has no WAL: "
                    f"refusing to start a new member over old data")
            self.store = KVStore(self.lessor)
            if self._existing is not None:
                # Joining a running cluster: it told us its ID and our member ID; the
                # leader sends us the log (or a snapshot) from the start.
                self.cluster_id, members = self._existing
                mine = [m for m in members if sorted(m[2]) == sorted(cfg.initial_advertise_peer_urls)]
                self.member_id = mine[0][0]
                entries, hardstate = [], HardState()
                log.info("joining cluster %x as member %x", self.cluster_id, self.member_id)
            else:
                token = cfg.initial_cluster_token
                members = initial_members(cfg.initial_cluster, token)
                self.member_id = member_id(cfg.initial_cluster[cfg.name], token)
                self.cluster_id = cluster_id([m.id for m in members])
                # etcd's StartNode: the log begins with one committed conf change per
                # initial member, at term 1, identical on every member.
                entries = bootstrap_entries(members)
                hardstate = HardState(BOOTSTRAP_TERM, 0, len(entries))
                log.info("starting member %x of new cluster %x (%d members)", self.member_id,
                         self.cluster_id, len(entries))
            meta = {"member_id": self.member_id, "cluster_id": self.cluster_id,
                    "name": cfg.name, "token": cfg.initial_cluster_token}
            if self._existing is not None:
                # Who to talk to, should we restart before the log tells us.
                meta["join_peers"] = [(m[0], list(m[2])) for m in self._existing[1]]
            wal = WAL.create(self.wal_dir, meta)
            if entries or hardstate.term:
                wal.save_sync(entries, hardstate)
            raft_log, applied = RaftLog(0, 0, entries), 0
        self.wal = wal
        self.snapshot_index = raft_log.snapshot_index
        slow = max(0.0, self.cfg.experimental_watch_slow_consumer_timeout)
        self.hub = WatchHub(self.store, self.header, slow_timeout=slow)
        self.applier = Applier(self.store, self.lessor, self.hub, self.membership, self.alarms,
                               self.auth, self.v2)
        self.applier.applied_index = applied
        self.applier.applied_term = raft_log.snapshot_term
        import random
        self.core = RaftCore(self.member_id, raft_log, hardstate, applied,
                             self.membership.conf_state(),
                             rng=random.Random(), snapshot=snapshot_meta,
                             election_tick=max(1, cfg.election_timeout // cfg.heartbeat_interval),
                             heartbeat_tick=1)
        self.wal.observe_fsync = self.metrics.wal_fsync.observe
        self.node = RaftNode(self.core, self.wal, apply=self._apply_entries, send=self._send,
                             install_snapshot=self._install_snapshot,
                             on_read_states=self._on_read_states,
                             on_soft_state=self._on_soft_state,
                             tick_seconds=cfg.heartbeat_interval / 1000.0,
                             on_fatal=self._on_fatal)
        self.ids = IdGenerator(self.member_id, int(time.time() * 1000))

    def _force_new_cluster(self, wal: WAL, snap_index: int, entries: list[Entry],
                           hardstate: HardState) -> tuple[list[Entry], HardState]:
        """etcd's --force-new-cluster: keep the committed log, drop what was not
        committed, and commit membership changes that leave this member alone (added
        first if the data came from a backup made under another ID). The cluster ID
        stays; the data is kept; other members are forgotten."""
        committed = [e for e in entries if e.index <= hardstate.commit]
        ids = set(self.membership.members)          # as of the snapshot
        for e in committed:
            if e.type == ENTRY_CONF_CHANGE:
                cc = ConfChange.decode(e.data)
                if cc.type in (CONF_ADD_NODE, CONF_ADD_LEARNER_NODE):
                    ids.add(cc.node_id)
                elif cc.type == CONF_REMOVE_NODE:
                    ids.discard(cc.node_id)
        term = hardstate.term
        nxt = (committed[-1].index if committed else snap_index) + 1
        new = []
        if self.member_id not in ids:
            m = Member(self.member_id, "", list(self.cfg.initial_advertise_peer_urls))
            new.append(Entry(term, nxt, ENTRY_CONF_CHANGE,
                             ConfChange(CONF_ADD_NODE, self.member_id, encode_context(m)).encode()))
            nxt += 1
        for mid in sorted(ids - {self.member_id}):
            new.append(Entry(term, nxt, ENTRY_CONF_CHANGE,
                             ConfChange(CONF_REMOVE_NODE, mid, b"").encode()))
            nxt += 1
        hardstate = HardState(term, hardstate.vote, nxt - 1)
        wal.save_sync(new, hardstate)   # new entries replace an uncommitted tail
        log.warning("--force-new-cluster: member %x of cluster %x now stands alone "
                    "(%d other members removed at index %d)", self.member_id, self.cluster_id,
                    len(ids - {self.member_id}), nxt - 1)
        return committed + new, hardstate

    def _restore_state(self, state: dict, blobs: list[bytes]) -> None:
        """Load a snapshot's state: leases first (restoring the store re-attaches keys)."""
        self.lessor.restore_snapshot_state(state["lessor"])
        self.store = KVStore.from_snapshot_state(store_state_from_snapshot(state, blobs),
                                                 self.lessor)
        self.alarms.restore(state.get("alarms", ()))
        if "v2" in state:
            self.v2.load_state(state["v2"])   # in place: its watchers stay
        if "auth" in state:
            self.auth = AuthStore.from_state(state["auth"], self.tokens)
            if getattr(self, "applier", None) is not None:
                self.applier.auth = self.auth
        restored = Membership.from_snapshot_state(state.get("membership", {}))
        self.membership.members, self.membership.removed = restored.members, restored.removed

    async def _fetch_existing_cluster(self) -> None:
        """--initial-cluster-state existing: ask the other members who we are."""
        from fastkv.raft.transport import fetch_cluster
        urls = [u for name, us in self.cfg.initial_cluster.items() if name != self.cfg.name
                for u in us]
        if not urls:
            raise StorageCorruption("--initial-cluster-state existing needs the other members "
                                    "in --initial-cluster")
        deadline = time.monotonic() + self.request_timeout * 2
        last: object = None
        mine_urls = sorted(self.cfg.initial_advertise_peer_urls)
        while time.monotonic() < deadline:
            if self.stopping:
                raise ErrStopped()
            for url in urls:   # one member may not have applied the member add yet
                try:
                    cid, members = await fetch_cluster([url], "members", timeout=2.0,
                                                       client_ssl=self.tls.peer_client,
                                                       tls_check=self.tls.peer_check)
                except Exception as exc:  # not reachable (yet)
                    last = exc
                    continue
                if any(sorted(m[2]) == mine_urls for m in members):
                    self._existing = (cid, members)
                    return
                last = (f"the existing cluster {cid:x} has no member with peer URLs "
                        f"{self.cfg.initial_advertise_peer_urls}: add it first (member add)")
            await asyncio.sleep(0.2)
        raise StorageCorruption(f"could not join the existing cluster at {urls}: {last}")

    async def start(self) -> None:
        """Open storage, join the peers, wait for a leader, publish ourselves, then listen."""
        from fastkv.raft.transport import PeerTransport
        fresh = not WAL.exists(self.wal_dir)
        if fresh and self.cfg.initial_cluster_state == "existing":
            await self._fetch_existing_cluster()
        self._open_storage()
        self.transport = PeerTransport(self.member_id, self.cluster_id, self._on_peer_message,
                                       snap_dir=self.snap_dir,
                                       snapshot_path=self.snapshotter.path_for,
                                       ssl=self.tls.peer_server, client_ssl=self.tls.peer_client,
                                       tls_check=self.tls.peer_check)
        self.transport.register("members", self._rpc_members, public=True)
        self.transport.register("probe", self._rpc_probe)
        self.transport.register("hash_kv", self._rpc_hash_kv)
        self.transport.register("lease_renew", _etcd_result(self._rpc_lease_renew))
        self.transport.register("lease_renew_many", _etcd_result(self._rpc_lease_renew_many))
        self.transport.register("lease_ttl", _etcd_result(self._rpc_lease_ttl))
        self.transport.register("member_promote", _etcd_result(self._rpc_member_promote))
        self.transport.register("member_add", _etcd_result(self._leader_only(self._add_here)))
        self.transport.register("member_remove",
                                _etcd_result(self._leader_only(self._remove_here)))
        self.transport.is_removed = lambda mid: mid in self.membership.removed
        self.transport.on_removed = self._removed_by_peers
        await self.transport.start(self.cfg.listen_peer_urls)
        if self.cfg.experimental_fault_file:   # testing only: off (and absent) by default
            self._tasks.append(asyncio.create_task(self._read_fault_file(), name="fault-file"))
        # Peers we know before replay adds them: the initial cluster, or who told us.
        if fresh and self._existing is not None:
            for mid, _name, peers, *_rest in self._existing[1]:
                if mid != self.member_id:
                    self.transport.add_peer(mid, list(peers))
        elif fresh:
            token = self.cfg.initial_cluster_token
            for name, urls in self.cfg.initial_cluster.items():
                mid = member_id(urls, token)
                if mid != self.member_id:
                    self.transport.add_peer(mid, list(urls))
        for m in self.membership.sorted_members():
            if m.id != self.member_id:
                self.transport.add_peer(m.id, m.peer_urls)
        if not self.membership.members:
            for mid, peers in self._join_peers:
                if mid != self.member_id:
                    self.transport.add_peer(mid, list(peers))
        self.node.start()
        self._tasks.append(asyncio.create_task(self._read_loop(), name="read-index"))
        self._tasks.append(asyncio.create_task(self._sweep_timeouts(), name="timeouts"))
        await self._until(lambda: self.applier.applied_index >= self.core.commit)
        voters = self.core.voters
        if voters == [self.member_id]:
            self.node.campaign()          # a lone voter need not wait out a timeout
        elif self.member_id in voters and self.core.lead == 0:
            # etcd fast-forwards a (re)started member's election clock so the
            # cluster gets a leader sooner; pre-vote keeps this from disrupting one.
            for _ in range(self.core.election_tick - 1):
                self.core.tick()
            self.node.kick()
        await self._publish()
        if self.cfg.experimental_initial_corrupt_check:
            await self.initial_corrupt_check()
        self._tasks.append(asyncio.create_task(self._expire_leases(), name="lease-expiry"))
        self._tasks.append(asyncio.create_task(self._probe_peers(), name="peer-probe"))
        if self.cfg.experimental_corrupt_check_time > 0:
            self._tasks.append(asyncio.create_task(self._corrupt_check_loop(),
                                                   name="corrupt-check"))
        if self.compactor.retention > 0:
            if self.core.state == LEADER:
                self.compactor.resume()
            self._tasks.append(asyncio.create_task(self.compactor.run(), name="compactor"))
        self._tasks.append(asyncio.create_task(self._sweep_tokens(), name="auth-tokens"))
        from fastkv.api.grpc_api import GrpcFrontend, native_methods
        from fastkv.api.http import start_http_server
        if self.cfg.grpc_transport == "native":
            self.grpc_methods = native_methods(self)
        else:
            self.grpc = GrpcFrontend(self)
            await self.grpc.start()
        # One listener per address; https:// ones speak TLS, and an address listed both
        # as http:// and https:// serves both (etcd's cmux).
        addresses: dict[tuple, set] = {}
        for url in self.cfg.listen_client_urls:
            parts = urlsplit(url)
            addresses.setdefault((parts.hostname, parts.port), set()).add(parts.scheme)
        for (host, port), schemes in addresses.items():
            if "https" in schemes:
                self._listeners.append(await start_http_server(
                    self, host, port, ssl=self.tls.client_server, check=self.tls.client_check,
                    plain_too="http" in schemes))
            else:
                self._listeners.append(await start_http_server(self, host, port))
        await self._start_metrics_listeners()
        self.ready.set()
        log.info("ready to serve client requests on %s", ", ".join(self.cfg.listen_client_urls))

    async def _start_metrics_listeners(self) -> None:
        """--listen-metrics-urls: /metrics and /health on listeners of their own (an
        https:// one with the client TLS settings, as etcd)."""
        from fastkv.api.http import start_http_server
        from fastkv.api.v3_gateway import resolve_metrics
        for url in self.cfg.listen_metrics_urls:
            parts = urlsplit(url)
            tls = {}
            if parts.scheme == "https":
                tls = {"ssl": self.tls.client_server, "check": self.tls.client_check}
            self._listeners.append(await start_http_server(
                self, parts.hostname, parts.port, resolve=resolve_metrics, **tls))
        if self.cfg.listen_metrics_urls:
            log.info("serving /metrics on %s", ", ".join(self.cfg.listen_metrics_urls))

    @property
    def stopping(self) -> bool:
        return self._stopped or self.stopped.is_set() or self.fatal is not None

    async def _until(self, cond, poll: float = 0.005) -> None:
        while True:
            if self.fatal:
                raise self.fatal
            if self.stopping:
                raise ErrStopped()
            if cond():
                return
            await asyncio.sleep(poll)

    async def _publish(self) -> None:
        """etcd's publish: put our name and client URLs in the replicated membership;
        retried until it is applied (which also means we have caught up)."""
        payload = {"ID": self.member_id, "name": self.cfg.name,
                   "clientURLs": list(self.cfg.advertise_client_urls)}
        while True:
            await self._until(lambda: self.core.lead != 0)
            try:
                await self._propose(requests.MEMBER_ATTR, payload)
                log.info("published %s %s to cluster %x", self.cfg.name,
                         self.cfg.advertise_client_urls, self.cluster_id)
                return
            except ErrStopped:
                raise
            except EtcdError as err:
                if self.stopping:
                    raise ErrStopped() from err
                log.warning("publishing member attributes: %s (retrying)", err.message)

    async def stop(self) -> None:
        """Stop serving and close storage; safe to call at any point of start-up."""
        if self._stopped:
            return
        self._stopped = True
        for lst in self._listeners:
            lst.close()
        from fastkv.api.grpc_h2 import NO_ERROR
        for conn in list(self.grpc_connections):
            # clients fail over (UNAVAILABLE) instead of seeing their calls cancelled
            conn.goaway(NO_ERROR, "server shutting down")
        for t in list(self._tasks):
            t.cancel()
        if self.grpc is not None:
            await self._bounded(self.grpc.stop(), "the gRPC server")
        if self.node is not None:
            await self._bounded(self.node.stop(), "the raft node")
        if self.transport is not None:
            await self._bounded(self.transport.stop(), "the peer transport")
        pending = (list(self._waiters.values()) + [f for _i, f in self._apply_waiters]
                   + list(self._read_states.values())
                   + ([self._read_batch] if self._read_batch is not None else []))
        for fut in pending:
            if not fut.done():
                fut.set_exception(ErrStopped())
                fut.exception()   # retrieved: nobody may be left to await it
        if self.wal is not None:
            self.wal.close()
        self.stopped.set()

    async def _bounded(self, coro, what: str, seconds: float = 5.0) -> None:
        """Shutting down must not hang on one part: give each a few seconds."""
        try:
            await asyncio.wait_for(coro, seconds)
        except asyncio.TimeoutError:
            log.warning("stopping %s took more than %.0fs; going on", what, seconds)
            import traceback
            for t in asyncio.all_tasks():
                if not t.done():
                    log.warning("task still running: %r\n%s", t,
                                "".join(traceback.format_stack(t.get_stack()[-1]))
                                if t.get_stack() else "")

    def _on_fatal(self, exc: BaseException) -> None:
        """Fail-stop: no more proposals, no more writes; __main__ exits non-zero."""
        self.fatal = exc
        if self.node is not None:
            self.node.halt()
        self.stopped.set()

    # ---- peers -------------------------------------------------------------------------

    def _on_peer_message(self, msg: Message) -> None:
        if msg.frm and msg.type not in LOCAL_MESSAGES:   # not the transport's own reports
            now = self.clock()
            last = self.peer_last_seen.get(msg.frm)
            if last is None or now - last > self.election_seconds:
                self.peer_active_since[msg.frm] = now     # (re)connected after a silence
            self.peer_last_seen[msg.frm] = now
        self.node.step(msg)

    def request_stop(self) -> None:
        """SIGTERM, removal: ask the member to stop (start() gives up waiting)."""
        self.stopped.set()
        ev, self._leader_event = self._leader_event, asyncio.Event()
        ev.set()

    def _spawn(self, coro, name: str) -> asyncio.Task:
        """A background task of this server: kept (not garbage-collected mid-flight),
        dropped when done, cancelled by stop()."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.append(task)
        task.add_done_callback(self._forget_task)
        return task

    def _forget_task(self, task: asyncio.Task) -> None:
        try:
            self._tasks.remove(task)
        except ValueError:
            pass

    def _removed_by_peers(self) -> None:
        """A member refused us as removed: we missed the entry that removed us (the
        leader stops replicating to a member once it is removed). Stop, as etcd does."""
        if not self.removed:
            log.warning("the member has been permanently removed from the cluster; stopping")
            self.removed = True
            self.request_stop()

    def _send(self, msgs: list[Message]) -> None:
        if any(m.type == MSG_SNAP for m in msgs):
            msgs = [m for m in msgs if m.type != MSG_SNAP or self._snapshot_covers(m)]
        self.transport.send(msgs)

    def _snapshot_covers(self, m: Message) -> bool:
        """A snapshot taken before m.to joined is useless to it (its core ignores a
        snapshot whose configuration lacks it). etcd sends the current state then;
        we take a snapshot now and let the core retry with it."""
        cs = m.snapshot.conf_state
        if m.to in cs.voters or m.to in cs.learners:
            return True
        log.info("the newest snapshot (index %d) predates member %x: taking a new one for it",
                 m.snapshot.index, m.to)
        self._snapshot_now()
        report = Message(MSG_SNAP_STATUS, to=self.member_id, frm=m.to, reject=True)
        asyncio.get_running_loop().call_soon(self.node.step, report)
        return False

    def _snapshot_now(self) -> asyncio.Task | None:
        if self._snapshotting or self.applier.applied_index <= self.snapshot_index:
            return None
        self._snapshotting = True
        applied = self.applier.applied_index
        parts = self.applier.snapshot_parts()
        term = self.applier.applied_term
        conf = self.membership.conf_state()
        return self._spawn(self._snapshot(applied, term, conf, parts), "snapshot")

    def _on_soft_state(self, lead: int, state: str) -> None:
        if state == LEADER:
            self.compactor.resume()
        else:
            self.compactor.pause()
        if lead and lead != self._last_lead:
            self.metrics.leader_changes += 1   # as etcd counts them: a new leader known
        if lead:
            self._last_lead = lead
        if state == LEADER and not self.lessor.is_primary:
            # As etcd: a new leader gives every lease its full TTL again, plus an
            # election timeout, so no lease expires because of the election.
            self.lessor.promote(self.election_seconds)
            self.leader_since = time.time()
        elif state != LEADER and self.lessor.is_primary:
            self.lessor.demote()
        log.info("raft: member %x is %s; leader %x at term %d", self.member_id, state, lead,
                 self.core.term)
        ev, self._leader_event = self._leader_event, asyncio.Event()
        ev.set()

    async def _wait_leader(self, deadline: float) -> None:
        while self.core.lead == 0:
            left = deadline - self.clock()
            if self.stopping:
                raise ErrStopped()
            if left <= 0:
                raise ErrTimeout()
            try:
                await asyncio.wait_for(self._leader_event.wait(), left)
            except asyncio.TimeoutError:
                pass

    @property
    def is_learner(self) -> bool:
        me = self.membership.get(self.member_id)
        return me is not None and me.is_learner

    def _leader_member(self) -> int:
        lead = self.core.lead
        if lead == 0:
            raise ErrTimeout()
        return lead

    # ---- applying -------------------------------------------------------------------

    def _apply_entries(self, entries: list[Entry]) -> None:
        started = time.perf_counter()
        apply = self.applier.apply
        waiters = self._waiters
        for entry in entries:
            if entry.type == ENTRY_CONF_CHANGE:
                req_id, result = self._apply_conf_change(entry)
            else:
                req_id, result = apply(entry)
            if req_id:
                fut = waiters.pop(req_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(result)
        applied = entries[-1].index
        self.metrics.backend_commit.observe(time.perf_counter() - started)
        if self._apply_waiters:
            self._release_apply_waiters(applied)
        if applied - self.snapshot_index >= self.cfg.snapshot_count:
            # Freeze the state right here, exactly at `applied` (cheap copies).
            self._snapshot_now()

    def _release_apply_waiters(self, applied: int) -> None:
        keep = []
        for index, fut in self._apply_waiters:
            if index <= applied:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((index, fut))
        self._apply_waiters = keep

    def _apply_conf_change(self, entry: Entry):
        self.applier.applied_index = entry.index
        self.applier.applied_term = entry.term
        try:
            cc = ConfChange.decode(entry.data)
        except (ValueError, TypeError, EOFError) as exc:
            raise StorageCorruption(f"conf change at index {entry.index}: {exc}") from exc
        err = self.membership.validate(cc)
        if err is not None:
            # As etcd: a refused change still goes through Raft, as a change of nobody,
            # so the pending-change slot is freed on every member alike.
            self.core.apply_conf_change(ConfChange(cc.type, 0))
            log.warning("refused membership change %d for %x at index %d: %s", cc.type,
                        cc.node_id, entry.index, err.message)
            return cc.id, err
        self.membership.apply(cc)
        self.core.apply_conf_change(cc)
        member = self.membership.get(cc.node_id)
        if self.transport is not None and cc.node_id != self.member_id:
            if cc.type == CONF_REMOVE_NODE:
                # Not at once: the message that tells it the removal is committed is
                # still queued for it (a removed learner would never hear otherwise).
                asyncio.get_running_loop().call_later(
                    self.election_seconds, self.transport.remove_peer, cc.node_id)
            elif cc.type == CONF_UPDATE_NODE:
                self.transport.update_peer(cc.node_id, member.peer_urls)
            elif member is not None and cc.node_id not in self.transport.peers:
                self.transport.add_peer(cc.node_id, member.peer_urls)
        if cc.type == CONF_REMOVE_NODE and cc.node_id == self.member_id:
            log.warning("this member (%x) was removed from the cluster; stopping",
                        self.member_id)
            self.removed = True
            asyncio.get_running_loop().call_later(0.5, self.request_stop)
        log.info("applied membership change %d for member %x at index %d; voters %s, "
                 "learners %s", cc.type, cc.node_id, entry.index,
                 [f"{v:x}" for v in self.core.voters], [f"{v:x}" for v in self.core.learners])
        return cc.id, [m.v3() for m in self.membership.sorted_members()]

    async def _install_snapshot(self, meta: SnapshotMeta) -> None:
        """The leader sent a snapshot (the transport already stored its file): its state
        replaces ours, the WAL records it, watchers catch up from the new store."""
        path = self.snapshotter.path_for(meta.index)
        if path is None:
            raise StorageCorruption(f"snapshot for index {meta.index} is missing from "
                                    f"{self.snap_dir}")
        state, blobs = await asyncio.to_thread(self.snapshotter.load, path)
        if state.get("applied_index") != meta.index:
            raise StorageCorruption(f"snapshot {path} holds index {state.get('applied_index')}, "
                                    f"expected {meta.index}")
        self._restore_state(state, blobs)
        self.applier.store = self.store
        self.hub.restore(self.store)
        self.applier.applied_index = meta.index
        self.applier.applied_term = meta.term
        if self.lessor.is_primary:
            self.lessor.promote(self.election_seconds)
        for m in self.membership.sorted_members():
            if m.id != self.member_id:
                self.transport.add_peer(m.id, m.peer_urls)   # updates changed URLs too
        for pid in list(self.transport.peers):
            if pid not in self.membership.members:
                self.transport.remove_peer(pid)
        await asyncio.to_thread(self.wal.save_snapshot_marker, meta.index, meta.term)
        self.snapshot_index = max(self.snapshot_index, meta.index)
        self.core.set_snapshot(meta)
        self._release_apply_waiters(meta.index)
        self._snapshot_size = None
        log.info("installed the leader's snapshot at index %d (term %d)", meta.index, meta.term)

    async def _snapshot(self, index: int, term: int, conf: ConfState, parts) -> None:
        """Write the state frozen at `index` to a snapshot file, then release older WAL
        segments. The records are serialised one chunk per loop turn (no GIL contention
        with a busy thread); the file is written in a worker thread (I/O)."""
        try:
            state, chunks = parts
            blobs = []
            for chunk in chunks:
                blobs.append(chunk)
                await asyncio.sleep(0)
            started = time.perf_counter()
            size = await asyncio.to_thread(self.snapshotter.save, term, index, state, blobs)
            self.metrics.snapshot_save.observe(time.perf_counter() - started)
            self._snapshot_size = size
            await asyncio.to_thread(self.wal.save_snapshot_marker, index, term)
            released = await asyncio.to_thread(self.wal.release_to, index)
            self.core.set_snapshot(SnapshotMeta(index, term, conf))
            # Keep some entries before the snapshot so a follower a little behind
            # catches up from the log rather than by a whole snapshot (etcd: 5000).
            keep = self.cfg.snapshot_catchup_entries
            if index > keep:
                self.core.compact(index - keep)
            self.snapshot_index = max(self.snapshot_index, index)
            log.info("snapshot at index %d (%d bytes); released %d WAL segments",
                     index, size, released)
        except Exception as exc:
            self._on_fatal(exc)
            log.critical("snapshot failed: %r", exc, exc_info=True)
        finally:
            self._snapshotting = False

    # ---- proposing and reading ------------------------------------------------------

    async def _submit(self, fn, deadline: float):
        """Hand something to Raft; while there is no leader, wait for one."""
        while True:
            if self.stopping:
                raise ErrStopped()
            try:
                return fn()
            except ErrConfChangePending:
                # The previous change is committed but not yet applied by the core (it
                # hears of applies at the next advance): it will be, shortly.
                if self.clock() >= deadline:
                    raise
                await asyncio.sleep(0.01)
                continue
            except EtcdError as exc:
                if not _proposal_dropped(exc):
                    raise
            await self._wait_leader(deadline)
            if self.core.lead != 0:
                await asyncio.sleep(0.01)   # a transfer in progress: try again shortly

    async def _propose(self, kind: str, payload: dict, auth: tuple | None = None):
        """``auth``: the proposer's identity (user, auth revision), checked when applied."""
        if self.stopping:
            raise ErrStopped()
        req_id = self.ids.next()
        data = requests.encode(req_id, kind, payload, auth)
        if len(data) > self.cfg.max_request_bytes:
            raise ErrRequestTooLarge()
        return await self._wait_result(req_id, lambda: self.node.propose(data))

    def propose_nowait(self, kind: str, payload: dict) -> asyncio.Future | None:
        """_propose for a front end that answers from a callback, not a task: the
        future of the applied result (a result that is an EtcdError is the result,
        not raised; a timeout is set as its exception), or None, having proposed
        nothing, when the proposal cannot go at once (no leader, stopping, too large,
        dropped, a leader transfer): the caller takes the full path, which waits or
        answers the error."""
        if self.stopping or self.core.lead == 0:
            return None
        req_id = self.ids.next()
        data = requests.encode(req_id, kind, payload, None)
        if len(data) > self.cfg.max_request_bytes:
            return None
        try:
            self.node.propose(data)
        except EtcdError:
            return None
        fut = asyncio.get_running_loop().create_future()
        self._waiters[req_id] = fut   # applied in a later Ready, never within propose
        self._deadlines.append((self.clock() + self.request_timeout, req_id))
        return fut

    async def _propose_conf_change(self, cc: ConfChange):
        cc.id = self.ids.next()
        return await self._wait_result(cc.id, lambda: self.node.propose_conf_change(cc))

    async def _wait_result(self, req_id: int, submit):
        deadline = self.clock() + self.request_timeout
        fut = asyncio.get_running_loop().create_future()
        self._waiters[req_id] = fut
        self._deadlines.append((deadline, req_id))
        try:
            await self._submit(submit, deadline)
            result = await fut
        finally:
            self._waiters.pop(req_id, None)
        if isinstance(result, EtcdError):
            raise result
        return result

    async def _sweep_timeouts(self) -> None:
        """Fail proposals that were not applied within the request timeout (etcd answers
        "request timed out"). One sweeper instead of a timer per request."""
        dl = self._deadlines
        while True:
            await asyncio.sleep(0.25)
            now = self.clock()
            while dl and dl[0][0] <= now:
                _d, req_id = dl.popleft()
                fut = self._waiters.pop(req_id, None)
                if fut is not None and not fut.done():
                    self.metrics.proposals_failed += 1
                    fut.set_exception(ErrTimeoutDueToLeaderFail() if self.core.lead == 0
                                      else ErrTimeout())

    async def _linearizable(self) -> None:
        """Join the next ReadIndex batch; return once its read index is applied here."""
        fut = self._read_batch
        if fut is None:
            fut = self._read_batch = asyncio.get_running_loop().create_future()
            self._read_kick.set()
        # Shielded: every reader of the batch awaits this one future, and a reader
        # that gives up (client gone, timeout) must not cancel it for the others.
        await asyncio.shield(fut)

    async def _read_loop(self) -> None:
        """etcd's linearizableReadLoop: one ReadIndex round at a time serves every read
        that queued up while the previous round was in flight."""
        while True:
            await self._read_kick.wait()
            self._read_kick.clear()
            batch, self._read_batch = self._read_batch, None
            if batch is None:
                continue
            try:
                index = await self._read_index()
            except EtcdError as err:
                if not batch.done():
                    batch.set_exception(err)
                    batch.exception()  # retrieved: readers that gave up must not warn
                continue
            if self.applier.applied_index >= index:
                if not batch.done():
                    batch.set_result(None)
            else:
                self._apply_waiters.append((index, batch))

    async def _read_index(self) -> int:
        """One ReadIndex round; re-sent with the same context until it is answered
        (an answer to an earlier send still counts) or the request times out."""
        deadline = self.clock() + self.request_timeout
        ctx = self.ids.next().to_bytes(8, "big")
        fut = asyncio.get_running_loop().create_future()
        self._read_states[ctx] = fut
        try:
            while True:
                await self._submit(lambda: self.node.read_index(ctx), deadline)
                left = deadline - self.clock()
                if left <= 0:
                    raise ErrTimeout()
                try:
                    return await asyncio.wait_for(asyncio.shield(fut),
                                                  min(left, READ_INDEX_RETRY_SECONDS))
                except asyncio.TimeoutError:
                    if self.clock() >= deadline:
                        raise ErrTimeout() from None
                    log.debug("read index: no answer within %.1fs, re-sending",
                              READ_INDEX_RETRY_SECONDS)
        finally:
            self._read_states.pop(ctx, None)

    def _on_read_states(self, states) -> None:
        for rs in states:
            fut = self._read_states.pop(rs.context, None)
            if fut is not None and not fut.done():
                fut.set_result(rs.index)

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

    # Auth (fastkv/auth/enforce.py): `creds` are a request's credentials, given by the
    # adapters only while auth is enabled (fastkv.auth.identity). Writes carry the
    # identity in the log entry and are checked when applied; reads are checked here,
    # right before they are served.

    async def range(self, req: dict, creds=None) -> dict:
        validation.check_range(req)
        if not req.get("serializable"):
            await self._linearizable()
        if self.auth.enabled:
            who = None if creds is None else await identify(self, creds)
            enforce.check_range(self.auth, who, req.get("key", b""), req.get("range_end", b""))
        resp = self.store.range(req)
        resp["header"] = self.header()
        return resp

    async def put(self, req: dict, creds=None) -> dict:
        validation.check_put(req)
        who = None if creds is None else await identify(self, creds)
        if self.db_size() + _put_cost(req) > self.quota_bytes():
            await self._no_space()
        return self._with_header(await self._propose(requests.PUT, req, who))

    async def delete_range(self, req: dict, creds=None) -> dict:
        validation.check_delete_range(req)
        who = None if creds is None else await identify(self, creds)
        return self._with_header(await self._propose(requests.DELETE_RANGE, req, who))

    async def txn(self, req: dict, creds=None) -> dict:
        validation.check_txn(req, self.cfg.max_txn_ops)
        if validation.txn_is_read_only(req):
            # As etcd: a txn that cannot write is served like a (linearizable) read.
            await self._linearizable()
            if self.auth.enabled:
                who = None if creds is None else await identify(self, creds)
                enforce.check_txn(self.auth, who, req)
            resp, _events = self.store.txn(req)
            return self._with_header(resp)
        who = None if creds is None else await identify(self, creds)
        if self.db_size() + _txn_cost(req) > self.quota_bytes():
            await self._no_space()
        return self._with_header(await self._propose(requests.TXN, req, who))

    async def compact(self, req: dict, creds=None) -> dict:
        who = None if creds is None else await identify(self, creds)   # etcd: no check
        return self._with_header(await self._propose(
            requests.COMPACTION, {"revision": int(req.get("revision", 0)),
                                  "physical": bool(req.get("physical", False))}, who))

    # ---- leases ----------------------------------------------------------------------

    async def lease_grant(self, req: dict, creds=None) -> dict:
        who = None if creds is None else await identify(self, creds)   # etcd: no check
        lease_id = int(req.get("ID", 0))
        ttl = int(req.get("TTL", 0))
        if lease_id == 0:
            while lease_id == 0 or self.lessor.lookup(lease_id) is not None:
                lease_id = self.ids.next() & MAX_INT63
        if self.db_size() + LEASE_COST > self.quota_bytes():
            await self._no_space()
        resp = await self._propose(requests.LEASE_GRANT, {"ID": lease_id, "TTL": ttl}, who)
        return self._with_header(resp)

    async def lease_revoke(self, req: dict, creds=None) -> dict:
        # No local pre-check: a follower's lessor may lag; applying answers "not found"
        # (and, with auth, checks write permission on every key of the lease).
        who = None if creds is None else await identify(self, creds)
        lease_id = int(req.get("ID", 0))
        return self._with_header(await self._propose(requests.LEASE_REVOKE, {"ID": lease_id},
                                                     who))

    async def _on_leader(self, kind: str, payload, local, lost: list | None = None):
        """Run `local` on the leader: here if we lead, else over the peer transport
        (renewals and remaining TTLs live only in the leader's lessor). Each call
        whose answer was lost (the leader went away) is appended to `lost`."""
        deadline = self.clock() + self.request_timeout
        while True:
            if self.core.is_leader:
                try:
                    return await local(payload)
                except ErrNotLeader:   # lost the lead while waiting: ask the next one
                    if self.clock() >= deadline:
                        raise ErrTimeout() from None
                    await asyncio.sleep(0.05)
                    continue
            await self._wait_leader(deadline)
            lead = self.core.lead
            if lead == self.member_id:
                continue
            try:
                result = await self.transport.call(lead, kind, payload,
                                                   timeout=max(0.1, deadline - self.clock()))
            except Exception as exc:  # the leader went away meanwhile: find the next one
                if lost is not None:
                    lost.append(exc)
                if self.clock() >= deadline:
                    raise ErrTimeout() from exc
                await asyncio.sleep(0.05)
                continue
            if result[0] == "ok":
                return result[1]
            err = error_named(result[3], result[1], result[2])
            if err.message == ErrNotLeader.message and self.clock() < deadline:
                await asyncio.sleep(0.05)   # it lost the lead meanwhile: ask the next one
                continue
            raise err

    async def _local_renew(self, lease_id: int) -> int:
        await self._linearizable()
        try:
            return self.lessor.renew(lease_id)
        except ErrLeaseNotFound:  # etcd answers a keepalive for an unknown lease with TTL 0
            return 0

    async def _rpc_lease_renew(self, lease_id: int) -> int:
        if not self.core.is_leader:
            raise ErrNotLeader()
        return await self._local_renew(lease_id)

    async def lease_keepalive(self, req: dict) -> dict:
        lease_id = int(req.get("ID", 0))
        ttl = await self._on_leader("lease_renew", lease_id, self._local_renew)
        return {"header": self.header(), "ID": lease_id, "TTL": ttl}

    async def _local_renew_many(self, ids: list[int]) -> list[int]:
        """_local_renew for keepalives that arrived together: one ReadIndex round
        confirms the leadership for all of them (a deposed leader must not renew)."""
        await self._linearizable()
        ttls = []
        for lease_id in ids:   # no await in between: all renewed under one lead
            try:
                ttls.append(self.lessor.renew(lease_id))
            except ErrLeaseNotFound:   # etcd answers a keepalive for an unknown lease TTL 0
                ttls.append(0)
        return ttls

    async def _rpc_lease_renew_many(self, ids: list[int]) -> list[int]:
        if not self.core.is_leader:
            raise ErrNotLeader()
        return await self._local_renew_many(ids)

    async def lease_keepalive_many(self, ids: list[int]) -> list[dict]:
        """Keepalives that arrived together on one stream, answered in order: renewed
        on the leader in one call (forwarded in one peer request from a follower)."""
        ttls = await self._on_leader("lease_renew_many", list(ids), self._local_renew_many)
        hdr = self.header()
        return [{"header": hdr, "ID": i, "TTL": t} for i, t in zip(ids, ttls)]

    async def _local_ttl(self, args) -> dict:
        lease_id, keys = args
        await self._linearizable()
        resp = self.lessor.time_to_live(lease_id, keys)
        resp.pop("header", None)
        return resp

    async def _rpc_lease_ttl(self, args) -> dict:
        if not self.core.is_leader:
            raise ErrNotLeader()
        return await self._local_ttl(tuple(args))

    async def lease_timetolive(self, req: dict) -> dict:
        args = (int(req.get("ID", 0)), bool(req.get("keys", False)))
        resp = await self._on_leader("lease_ttl", args, self._local_ttl)
        resp["header"] = self.header()
        return resp

    async def lease_leases(self, req: dict) -> dict:
        await self._linearizable()
        return {"header": self.header(), "leases": [{"ID": i} for i in self.lessor.leases()]}

    async def _rpc_hash_kv(self, rev: int) -> tuple[int, int, int, int]:
        """A peer's HashKV at rev: (member ID, revision, hash, compact revision)."""
        h, compact = self.store.hash_kv(rev)
        return self.member_id, self.store.rev, h, compact

    async def _peer_hashes(self, rev: int) -> list[tuple[int, int, int, int]]:
        """Every reachable peer's _rpc_hash_kv at rev (a peer behind rev, or one that
        compacted past it, or that does not answer, is left out)."""
        out = []
        for peer in list(self.transport.peers):
            try:
                out.append(tuple(await self.transport.call(peer, "hash_kv", rev, timeout=5.0)))
            except Exception as exc:
                log.warning("corruption check: no hash from member %x: %s", peer, exc)
        return out

    async def initial_corrupt_check(self) -> None:
        """--experimental-initial-corrupt-check (etcd's CheckInitialHashKV): before
        serving, compare this member's hash at its revision with its peers' at the same
        revision; a mismatch at the same compact revision refuses to start."""
        h, compact = self.store.hash_kv(0)
        rev = self.store.rev
        log.info("%x starting initial corruption check with %d peers (revision %d)",
                 self.member_id, len(self.transport.peers), rev)
        for peer, _prev, ph, pcompact in await self._peer_hashes(rev):
            if pcompact == compact and ph != h:
                raise StorageCorruption(
                    f"found data inconsistency with peers: {self.member_id:x} has hash "
                    f"{h} at revision {rev}, member {peer:x} has {ph}")
        log.info("%x succeeded on initial corruption checking: no corruption", self.member_id)

    async def _corrupt_check_loop(self) -> None:
        while not self.stopping:
            await asyncio.sleep(self.cfg.experimental_corrupt_check_time)
            if self.core.state == LEADER:
                try:
                    await self.check_hashes()
                except Exception as exc:   # no quorum, stopping: the next pass tries again
                    log.warning("corruption check failed: %r", exc)

    async def check_hashes(self) -> list[int]:
        """etcd's leader-side checkHashKV: a follower ahead of the leader, compacted
        past it, or with another hash at the same revision and compact revision gets
        the CORRUPT alarm. Returns the members alarmed."""
        h, compact = self.store.hash_kv(0)
        rev = self.store.rev
        bad = []
        for peer, prev, ph, pcompact in await self._peer_hashes(rev):
            if prev > self.store.rev or pcompact > self.store.compact_rev or \
                    (pcompact == compact and ph != h):
                log.error("member %x has a different state than the leader %x at revision "
                          "%d (hash %d, compact revision %d; the leader's %d, %d): raising "
                          "the CORRUPT alarm", peer, self.member_id, rev, ph, pcompact, h,
                          compact)
                bad.append(peer)
        for peer in bad:
            await self._propose(requests.ALARM, {"action": 1, "memberID": peer,
                                                 "alarm": ALARM_CORRUPT})
        return bad

    async def _auto_compact(self, rev: int) -> None:
        await self.compact({"revision": rev})

    async def _rpc_probe(self, _payload=None) -> None:
        return None

    async def _probe_peers(self) -> None:
        """etcd's rafthttp prober: a round trip to every peer every few seconds, into
        etcd_network_peer_round_trip_time_seconds (a peer that does not answer: none)."""
        await asyncio.sleep(PEER_PROBE_SECONDS / 4)
        while not self.stopping:
            for peer in list(self.transport.peers):
                started = time.perf_counter()
                try:
                    await self.transport.call(peer, "probe", None, timeout=PEER_PROBE_SECONDS)
                except Exception as exc:   # unreachable, stopping, an older member: no sample
                    log.debug("probing member %x: %r", peer, exc)
                    continue
                self.metrics.observe_peer_rtt(peer, time.perf_counter() - started)
            await asyncio.sleep(PEER_PROBE_SECONDS)

    async def _expire_leases(self) -> None:
        """The leader revokes expired leases through the log, like every other change,
        and expires v2 TTL keys with a SYNC entry carrying its clock (etcd's sync)."""
        while True:
            await asyncio.sleep(LEASE_CHECK_SECONDS)
            if not self.core.is_leader:
                continue
            nxt = self.v2.next_expiration()
            if nxt is not None and nxt <= time.time_ns() and not self._v2_sync_pending:
                self._v2_sync_pending = True
                self._spawn(self._v2_sync(), "v2-sync")
            for lease_id in self.lessor.expired():
                if lease_id in self._pending_revokes:
                    continue
                self._pending_revokes.add(lease_id)
                self._spawn(self._revoke_expired(lease_id), "lease-revoke")

    async def _v2_sync(self) -> None:
        try:
            await self._propose(requests.V2, {"method": "SYNC", "now": time.time_ns()})
        except EtcdError as err:   # lost the lead, stopping: the next check decides again
            log.debug("v2 sync: %s", err.message)
        finally:
            self._v2_sync_pending = False

    async def _revoke_expired(self, lease_id: int) -> None:
        """Propose the expiry, stamped with our term: applying ignores it unless the
        entry was appended in that same term, i.e. by the leader that decided it (a
        leader that lost its role meanwhile must not expire the new leader's leases).
        Never forwarded, never retried: the next check decides again."""
        term = self.core.term
        try:
            if not self.core.is_leader:
                return
            req_id = self.ids.next()
            data = requests.encode(req_id, requests.LEASE_REVOKE,
                                   {"ID": lease_id, "expiry_term": term})
            await self._wait_result(req_id, lambda: self.node.propose(data))
        except EtcdError as err:  # already revoked by a client, or no longer leader
            log.debug("expiring lease %x: %s", lease_id, err.message)
        finally:
            self._pending_revokes.discard(lease_id)

    # ---- cluster membership ---------------------------------------------------------------

    async def _rpc_members(self, _payload=None):
        return [m.to_state() for m in self.membership.sorted_members()]

    def _active_peers(self) -> set[int]:
        """etcd's isConnectedSince(now - HealthInterval): peers heard from without a
        silence longer than an election timeout for at least the last 5 s, so a member
        just started, restarted or reconnected does not count yet."""
        now = self.clock()
        since = now - HEALTH_INTERVAL
        return {mid for mid, t in self.peer_last_seen.items()
                if now - t <= self.election_seconds and self.peer_active_since[mid] <= since}

    def _check_urls(self, urls) -> list[str]:
        if not isinstance(urls, list) or not urls:
            raise ErrMemberBadURLs()
        for u in urls:
            try:
                p = urlsplit(u)
                ok = p.scheme in ("http", "https") and p.hostname and p.port
            except (ValueError, TypeError):
                ok = False
            if not ok:
                raise ErrMemberBadURLs()
        return sorted(str(u) for u in urls)   # etcd's types.NewURLs sorts them

    def _connected_to_all_voters(self) -> bool:
        active = self._active_peers()
        return all(m.id == self.member_id or m.id in active for m in self.membership.voting())

    def _members_resp(self, members) -> dict:
        # etcd's cluster server fills no revision in its headers.
        return {"header": self.header(0), "members": members}

    async def member_list(self, req: dict | None = None) -> dict:
        return self._members_resp([m.v3() for m in self.membership.sorted_members()])

    async def _check_admin(self, creds, raw: bool = False) -> None:
        """etcd's IsAdminPermitted where a request arrives (membership changes; with
        `raw`, the maintenance calls, whose errors etcd sends untranslated)."""
        if not self.auth.enabled:
            return
        try:
            who = None if creds is None else await identify(self, creds)
            enforce.check_admin(self.auth, who)
        except EtcdError as err:
            if raw:
                raise enforce.raw_auth_error(err) from None
            raise

    async def member_add(self, req: dict, creds=None) -> dict:
        # The strict reconfiguration check needs the leader's view of who is
        # active (followers only hear from the leader): it runs there.
        urls = self._check_urls(req.get("peerURLs"))
        await self._check_admin(creds)
        resp = await self._on_leader("member_add", {"peerURLs": urls,
                                                    "isLearner": bool(req.get("isLearner"))},
                                     self._add_here)
        resp["header"] = self.header(0)
        return resp

    async def _add_here(self, req: dict) -> dict:
        urls = self._check_urls(req.get("peerURLs"))
        learner = bool(req.get("isLearner", False))
        if self.cfg.strict_reconfig_check:   # etcd's mayAddMember
            if not learner and not self.membership.ready_to_add_voter():
                raise ErrMemberNotEnoughStarted()
            if not self._connected_to_all_voters():
                raise ErrUnhealthy()
        mid = new_member_id(urls, "", time.time())
        m = Member(mid, "", urls, [], learner)
        cc = ConfChange(CONF_ADD_LEARNER_NODE if learner else CONF_ADD_NODE, mid,
                        encode_context(m))
        members = await self._propose_conf_change(cc)
        resp = self._members_resp(members)
        resp["member"] = m.v3()
        return resp

    async def member_remove(self, req: dict, creds=None) -> dict:
        await self._check_admin(creds)
        mid = int(req.get("ID", 0))
        lost: list = []
        try:
            resp = await self._on_leader("member_remove", {"ID": mid}, self._remove_here, lost)
        except ErrIDRemoved:
            if not lost:
                raise
            # An earlier attempt removed it but its answer was lost (typically: the
            # member removed was the leader that answered): the removal happened.
            resp = self._members_resp([m.v3() for m in self.membership.sorted_members()])
        resp["header"] = self.header(0)
        return resp

    async def _remove_here(self, req: dict) -> dict:
        mid = int(req.get("ID", 0))
        m = self.membership.get(mid)
        if self.cfg.strict_reconfig_check and m is not None and not m.is_learner:
            if not self.membership.ready_to_remove_voter(mid):
                raise ErrMemberNotEnoughStarted()
            # etcd's mayRemoveMember: a member not connected at all is safe to remove;
            # otherwise the voters connected for 5 s, less one, must keep a quorum.
            now = self.clock()
            silent = mid not in self.peer_last_seen or \
                now - self.peer_last_seen[mid] > self.election_seconds
            if mid == self.member_id or not silent:
                active = self._active_peers() | {self.member_id}
                voters = self.membership.voting()
                if sum(v.id in active for v in voters) - 1 < 1 + (len(voters) - 1) // 2:
                    raise ErrUnhealthy()
        cc = ConfChange(CONF_REMOVE_NODE, mid, b"")
        return self._members_resp(await self._propose_conf_change(cc))

    async def member_update(self, req: dict, creds=None) -> dict:
        await self._check_admin(creds)
        mid = int(req.get("ID", 0))
        urls = self._check_urls(req.get("peerURLs"))
        m = self.membership.get(mid)
        if m is None:
            raise ErrMemberNotFound()
        cc = ConfChange(CONF_UPDATE_NODE, mid, encode_context(Member(mid, m.name, urls)))
        return self._members_resp(await self._propose_conf_change(cc))

    def _leader_only(self, fn):
        async def run(payload):
            if not self.core.is_leader:
                raise ErrNotLeader()
            return await fn(payload)
        return run

    async def _rpc_member_promote(self, mid: int):
        if not self.core.is_leader:
            raise ErrNotLeader()
        return await self._promote_here(mid)

    async def _promote_here(self, mid: int):
        m = self.membership.get(mid)
        if m is None:
            raise ErrMemberNotFound()
        if not m.is_learner:
            raise ErrMemberNotLearner()
        if self.cfg.strict_reconfig_check and not self.membership.ready_to_promote(mid):
            raise ErrMemberNotEnoughStarted()
        # etcd's isLearnerReady: the learner's log within 90% of the leader's.
        pr = self.core.progress.get(mid)
        leader_match = self.core.progress[self.member_id].match if \
            self.member_id in self.core.progress else self.core.log.last_index
        if pr is None or pr.match < leader_match * LEARNER_READY_PERCENT:
            raise ErrLearnerNotReady()
        m2 = Member(mid, m.name, m.peer_urls, m.client_urls, False)
        cc = ConfChange(CONF_ADD_NODE, mid, encode_context(m2, promote=True))
        return await self._propose_conf_change(cc)

    async def member_promote(self, req: dict, creds=None) -> dict:
        await self._check_admin(creds)
        mid = int(req.get("ID", 0))
        members = await self._on_leader("member_promote", mid, self._promote_here)
        return self._members_resp(members)

    async def move_leader(self, req: dict) -> dict:
        """etcd's MoveLeader: served by the leader; waits until the transferee leads."""
        target = int(req.get("targetID", 0))
        if not self.core.is_leader:
            raise ErrNotLeader()
        m = self.membership.get(target)
        if m is None or m.is_learner:
            raise ErrBadLeaderTransferee()
        if target != self.member_id:
            self.node.transfer_leader(target)
            deadline = self.clock() + self.request_timeout
            while self.core.lead != target:
                if self.clock() >= deadline:
                    raise EtcdError("etcdserver: request timed out, leader transfer took too long",
                                    14)
                await asyncio.sleep(self.cfg.heartbeat_interval / 1000.0)
        return {}   # etcd 3.4's MoveLeaderResponse carries no header

    # ---- watch, maintenance -----------------------------------------------------------

    def watch_stream(self, creds=None) -> WatchStream:
        # etcd's GetProgressReportInterval: up to a tenth more, so that watchers created
        # together (a client restarting) do not all get their notifications at once
        interval = self.progress_notify_seconds * (1 + random.random() / 10)
        stream = WatchStream(self.hub, self.header, progress_interval=interval)

        async def authorize(create: dict) -> str | None:
            """etcd's isWatchPermitted, at every create request of the stream."""
            if not self.auth.enabled:
                return None
            try:
                who = None if creds is None else await identify(self, creds)
                enforce.check_watch_create(self.auth, who, create)
            except EtcdError as err:
                return enforce.watch_refusal(err)
            return None
        stream.authorize = authorize
        return stream

    async def status(self, req: dict | None = None) -> dict:
        size = self.db_size()
        me = self.membership.get(self.member_id)
        return {"header": self.header(), "version": ETCD_SERVER_VERSION, "dbSize": size,
                "leader": self.core.lead, "raftIndex": self.core.commit,
                "raftTerm": self.core.term, "raftAppliedIndex": self.applier.applied_index,
                "dbSizeInUse": size, "isLearner": bool(me and me.is_learner),
                **({"errors": errors} if (errors := self.alarms.texts()) else {})}

    async def alarm(self, req: dict, creds=None) -> dict:
        """etcd's Alarm: GET lists (a linearizable read), ACTIVATE/DEACTIVATE go
        through the log. (etcd checks no permission, but refuses a bad token.)"""
        who = None if creds is None else await identify(self, creds)
        action = int(req.get("action", ACTION_GET))
        alarm = int(req.get("alarm", 0))
        if action == ACTION_GET:
            await self._linearizable()
            resp = {"alarms": self.alarms.get(alarm)}
        elif action in (1, 2):
            resp = await self._propose(requests.ALARM, {
                "action": action, "memberID": int(req.get("memberID", 0)), "alarm": alarm}, who)
        else:
            raise EtcdError(f"etcdserver: unknown alarm action {action}", 3)
        return resp   # no header: etcd's applier leaves AlarmResponse.header unset

    async def defragment(self, req: dict | None = None, creds=None) -> dict:
        """etcd's Defragment, for fastkv's files: the state as it is now (compacted
        history gone) is written as a new snapshot, and the WAL segments and older
        snapshots it covers are released, so the on-disk size (db_size, what the quota
        counts) shrinks to the live state. etcd 3.4 answers an empty DefragmentResponse."""
        await self._check_admin(creds, raw=True)
        while self._snapshotting:
            await asyncio.sleep(0.01)
        task = self._snapshot_now()
        if task is not None:
            await asyncio.shield(task)
        await asyncio.to_thread(self.snapshotter.prune, 1)
        self._snapshot_size = None
        return {}

    async def hash(self, req: dict | None = None, creds=None) -> dict:
        """etcd hashes its whole backend file; ours: the hash of every record kept."""
        await self._check_admin(creds, raw=True)
        h, _compact = self.store.hash_kv(0)
        return {"header": self.header(), "hash": h}

    async def hash_kv(self, req: dict, creds=None) -> dict:
        await self._check_admin(creds, raw=True)
        h, compact = self.store.hash_kv(int(req.get("revision", 0)))
        return {"header": self.header(), "hash": h, "compact_revision": compact}

    async def snapshot_stream(self, chunk_bytes: int = 32 * 1024, creds=None):
        """etcd's Maintenance.Snapshot: the whole state as a snapshot file (zero-padded
        to 512 bytes), in 32 KiB chunks with the bytes remaining after each, then the
        SHA-256 of it all: what `etcdctl snapshot save` checks and writes."""
        await self._check_admin(creds, raw=True)
        import hashlib
        from fastkv.storage.snapshot import encode_stream
        state, blobs = self.applier.snapshot_parts()
        data = await asyncio.to_thread(encode_stream, state, list(blobs))
        total = len(data)
        for pos in range(0, total, chunk_bytes):
            piece = data[pos:pos + chunk_bytes]
            yield {"remaining_bytes": total - pos - len(piece), "blob": piece}
        yield {"blob": hashlib.sha256(data).digest()}

    # ---- auth (enforcement: the security work) ------------------------------------------

    async def _auth_change(self, op: str, req: dict, creds=None) -> dict:
        # the identity travels in the entry: applying checks role root (etcd's
        # needAdminPermission) against the auth store as of that entry
        who = None if creds is None else await identify(self, creds)
        resp = await self._propose(requests.AUTH, {"op": op, "req": req}, who)
        resp = dict(resp)
        resp["header"] = self.header()
        return resp

    async def _auth_read(self, op: str, req: dict, creds=None) -> dict:
        await self._linearizable()
        if self.auth.enabled:   # etcd's authApplierV3: admin; UserGet/RoleGet: or one's own
            who = None if creds is None else await identify(self, creds)
            if op == "user_get":
                enforce.check_user_get(self.auth, who, req.get("name", ""))
            elif op == "role_get":
                enforce.check_role_get(self.auth, who, req.get("role", ""))
            else:
                enforce.check_admin(self.auth, who)
        resp = dict(getattr(self.auth, op)(req))
        resp["header"] = self.header()
        return resp

    async def _hashed(self, req: dict, *keep: str) -> dict:
        """The request with its password replaced by a salted bcrypt hash (made here,
        before proposing, so applying stays deterministic and the log holds no password)."""
        out = {k: req[k] for k in keep if k in req}
        if not (req.get("options") or {}).get("no_password"):
            out["hashedPassword"] = await asyncio.to_thread(
                hash_password, req.get("password", ""), new_salt(),
                normalize_cost(self.cfg.bcrypt_cost))
        return out

    async def auth_enable(self, req: dict | None = None, creds=None) -> dict:
        return await self._auth_change("auth_enable", {}, creds)

    async def auth_disable(self, req: dict | None = None, creds=None) -> dict:
        return await self._auth_change("auth_disable", {}, creds)

    async def authenticate(self, req: dict, creds=None) -> dict:
        """Check the password here, then propose the token's prefix: every member
        registers `<prefix>.<entry index>` for the user when it applies the entry (a
        JWT member signs the token then). As etcd, if the auth store changed between
        the check and the entry, check again. A failed check answers after a short
        pause (without holding up the event loop), which slows password guessing."""
        name = req.get("name", "")
        password = req.get("password", "")
        await self._linearizable()
        while True:
            try:
                checked = await asyncio.to_thread(self.auth.check_password, name, password)
            except (ErrAuthFailed, ErrNoPasswordUser):
                log.info("authentication of user %r failed", name)
                await asyncio.sleep(AUTH_FAILURE_DELAY)
                raise
            # (etcd 3.4 refuses a bad token here too, after the password check)
            resp = await self._auth_change("authenticate", {
                "name": name, "simple_token": self.tokens.gen_prefix()}, creds)
            if checked == self.auth.revision:
                return resp
            log.info("the auth store changed while authenticating %r; checking again", name)

    async def user_add(self, req: dict, creds=None) -> dict:
        return await self._auth_change("user_add", await self._hashed(req, "name", "options"),
                                       creds)

    async def user_change_password(self, req: dict, creds=None) -> dict:
        return await self._auth_change("user_change_password", await self._hashed(req, "name"),
                                       creds)

    async def wait_applied(self, index: int, timeout: float | None = None) -> None:
        """Until this member has applied `index` (asyncio.TimeoutError after `timeout`,
        by default the request timeout). For simple tokens named by their log index."""
        if self.applier.applied_index >= index:
            return
        fut = asyncio.get_running_loop().create_future()
        waiter = (index, fut)
        self._apply_waiters.append(waiter)
        try:
            await asyncio.wait_for(fut, self.request_timeout if timeout is None else timeout)
        finally:
            if not fut.done() and waiter in self._apply_waiters:
                self._apply_waiters.remove(waiter)

    async def _read_fault_file(self) -> None:
        """--experimental-fault-file (tests/chaos), re-read every 100 ms: member IDs (hex, one
        per line) whose peer traffic is dropped both ways, ``fsync-delay <seconds>`` and
        ``clock-jump <seconds>`` (fastkv/faults.py). A missing or empty file asks for
        nothing; a file that does not parse changes nothing."""
        path = self.cfg.experimental_fault_file
        current = faults.Directives()
        while True:
            try:
                with open(path) as f:
                    want = faults.parse(f.read())
            except FileNotFoundError:
                want = faults.Directives()
            except (OSError, ValueError) as exc:
                log.debug("fault file %s: %s", path, exc)   # being written: next time
                want = current
            if want != current:
                self._apply_faults(current, want)
                current = want
            await asyncio.sleep(0.1)

    def _apply_faults(self, old: faults.Directives, new: faults.Directives) -> None:
        if new.drop != old.drop:
            log.warning("fault file: dropping peer traffic with %s",
                        ", ".join(f"{i:x}" for i in sorted(new.drop)) or "nobody")
            self.transport.drop_to = set(new.drop)
            self.transport.drop_from = set(new.drop)
        if new.fsync_delay != old.fsync_delay:
            log.warning("fault file: every fsync takes %g s longer", new.fsync_delay)
            self.wal.fsync_delay = self.snapshotter.fsync_delay = new.fsync_delay
        if new.corrupt_values != old.corrupt_values:
            log.warning("fault file: values of applied puts are %s", "damaged" if
                        new.corrupt_values else "kept intact again")
            self.applier.corrupt_values = new.corrupt_values
        if new.clock_offset != old.clock_offset:
            log.warning("fault file: the clock jumps %+g s (now %+g s off)",
                        new.clock_offset - old.clock_offset, new.clock_offset)
            self._jump_clock.offset = new.clock_offset

    async def _sweep_tokens(self) -> None:
        """Forget expired simple tokens now and then (etcd's TTL keeper ticks each second)."""
        while True:
            await asyncio.sleep(1.0)
            self.tokens.expire()

    def _auth_op(op: str, change: bool):   # noqa: N805 (a factory used in the class body)
        async def call(self, req: dict | None = None, creds=None) -> dict:
            req = req or {}
            if change:
                return await self._auth_change(op, req, creds)
            return await self._auth_read(op, req, creds)
        call.__name__ = op
        return call

    user_delete = _auth_op("user_delete", True)
    user_grant_role = _auth_op("user_grant_role", True)
    user_revoke_role = _auth_op("user_revoke_role", True)
    role_add = _auth_op("role_add", True)
    role_delete = _auth_op("role_delete", True)
    role_grant_permission = _auth_op("role_grant_permission", True)
    role_revoke_permission = _auth_op("role_revoke_permission", True)
    user_get = _auth_op("user_get", False)
    user_list = _auth_op("user_list", False)
    role_get = _auth_op("role_get", False)
    role_list = _auth_op("role_list", False)
    del _auth_op

    def db_size(self) -> int:
        """Bytes of state on disk: the newest snapshot plus the WAL written since."""
        snap = self._snapshot_size
        if snap is None:
            files = self.snapshotter.files()
            snap = self._snapshot_size = os.path.getsize(files[-1][2]) if files else 0
        return snap + self.wal.bytes_since_snapshot

    async def _no_space(self) -> None:
        """etcd's quotaKVServer, for a write that would take the on-disk state past
        --quota-backend-bytes (db_size() + the write's cost > quota_bytes(), checked
        by each write): raise the NOSPACE alarm for this member (through the log, so
        every member refuses writes that add data) and fail with "database space
        exceeded". Compact, defragment and disarm the alarm to write again."""
        if not self.alarms.has(ALARM_NOSPACE):
            log.warning("the state (%d bytes on disk) would exceed the quota of %d bytes: "
                        "raising the NOSPACE alarm", self.db_size(), self.quota_bytes())
            await self._propose(requests.ALARM, {"action": 1, "memberID": self.member_id,
                                                 "alarm": ALARM_NOSPACE})
        raise ErrNoSpace()

    def quota_bytes(self) -> int:
        """--quota-backend-bytes, etcd's default (2 GiB) for 0."""
        return self.cfg.quota_backend_bytes or DEFAULT_QUOTA_BYTES

    def watch_stream_count(self) -> int:
        return self.hub.streams

    def version_info(self) -> dict:
        return {"etcdserver": ETCD_SERVER_VERSION, "etcdcluster": ETCD_CLUSTER_VERSION}

    async def health(self) -> tuple[bool, str]:
        """etcd 3.4's /health: unhealthy with any alarm active (NOSPACE, CORRUPT),
        without a leader, or when a quorum read does not finish."""
        ok, reason = await self._health()
        if ok:
            self.metrics.health_success += 1
        else:
            self.metrics.health_failures += 1
        return ok, reason

    async def _health(self) -> tuple[bool, str]:
        if self.fatal:
            return False, f"member failed: {self.fatal!r}"
        alarms = self.alarms.get()
        if alarms:
            return False, "ALARM " + ",".join(sorted({ALARM_NAMES.get(a["alarm"], "?")
                                                      for a in alarms}))
        if self.core.lead == 0:
            return False, "RAFT NO LEADER"
        try:
            await asyncio.wait_for(self._linearizable(), self.request_timeout)
        except (EtcdError, asyncio.TimeoutError) as exc:
            return False, f"quorum read failed: {exc!r}"
        return True, ""

    # ---- v2 stats ------------------------------------------------------------------------

    def self_stats(self) -> dict:
        from datetime import datetime, timezone

        def ts(t):
            return datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")
        lead = self.core.lead
        uptime = time.time() - (self.leader_since or self.start_time)
        return {"name": self.cfg.name, "id": f"{self.member_id:x}", "state": self.core.state,
                "startTime": ts(self.start_time),
                "leaderInfo": {"leader": f"{lead:x}" if lead else "",
                               "uptime": f"{uptime:.9f}s",
                               "startTime": ts(self.leader_since or self.start_time)},
                "recvAppendRequestCnt": getattr(self.transport, "recv_append_count", 0),
                "sendAppendRequestCnt": getattr(self.transport, "send_append_count", 0)}

    def leader_stats(self) -> dict | None:
        if not self.core.is_leader:
            return None
        followers = {}
        stats = getattr(self.transport, "peer_stats", {})
        for m in self.membership.sorted_members():
            if m.id == self.member_id:
                continue
            st = stats.get(m.id, {})
            followers[f"{m.id:x}"] = {
                "latency": st.get("latency", {"current": 0, "average": 0, "standardDeviation": 0,
                                              "minimum": 0, "maximum": 0}),
                "counts": st.get("counts", {"fail": 0, "success": 0})}
        return {"leader": f"{self.member_id:x}", "followers": followers}
