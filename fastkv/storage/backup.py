"""A member's data directory copied into a backup that starts a new cluster.

etcdctl (v2) ``backup`` does this for etcd's data dir; this is the same for fastkv's:
the newest snapshot and the WAL after it are copied with the cluster's membership
taken out (membership changes and members' published attributes dropped from the
log, the member list emptied in the snapshot) and a new member and cluster ID, so
the backup can only be started as a new one-member cluster, with
``fastkv --force-new-cluster --data-dir <backup-dir>``. As etcd's, it keeps the v2
store; the v3 data (keys, leases, auth, alarms) only ``with_v3``.

Reading uses WAL.read_all, which repairs nothing: the source may belong to a running
member (an unfinished last write is left out).
"""
from __future__ import annotations

import os
import time

from fastkv import requests
from fastkv.apply import Applier
from fastkv.errors import StorageCorruption
from fastkv.identity import IdGenerator
from fastkv.membership import Membership
from fastkv.mvcc.lease import Lessor
from fastkv.mvcc.store import KVStore
from fastkv.raft.messages import ENTRY_CONF_CHANGE
from fastkv.storage.snapshot import Snapshotter
from fastkv.storage.wal import WAL, Entry, HardState

# The kinds of log entry that change only the v2 store (everything else is v3 data,
# or membership).
V2_KINDS = frozenset({requests.V2})


def backup(data_dir: str, backup_dir: str, wal_dir: str = "", backup_wal_dir: str = "",
           with_v3: bool = False, log=print) -> dict:
    """Write the backup; returns what it kept: {"snapshot_index", "entries", "dropped",
    "commit", "member_id", "cluster_id"}."""
    src_snap = os.path.join(data_dir, "member", "snap")
    src_wal = wal_dir or os.path.join(data_dir, "member", "wal")
    dest_snap = os.path.join(backup_dir, "member", "snap")
    dest_wal = backup_wal_dir or os.path.join(backup_dir, "member", "wal")
    if not WAL.exists(src_wal):
        raise StorageCorruption(f"backup: no WAL in {src_wal}")
    if os.path.exists(dest_wal):
        raise FileExistsError(f"backup: {dest_wal} already exists")
    os.makedirs(dest_snap, exist_ok=True)

    snap = Snapshotter(src_snap).load_newest() if os.path.isdir(src_snap) else None
    snap_index = snap_term = 0
    if snap is not None:
        snap_term, snap_index, state, blobs = snap
        state, blobs = _strip_snapshot(state, blobs, with_v3)
        Snapshotter(dest_snap).save(snap_term, snap_index, state, blobs)

    contents = WAL.read_all(src_wal)
    kept: list[Entry] = []
    dropped = 0
    commit = snap_index
    for e in contents.entries:
        if e.index <= snap_index:
            continue
        if e.index > contents.hardstate.commit:
            break   # never committed: a new cluster must not apply it
        if _keep(e, with_v3):
            kept.append(Entry(e.term, snap_index + len(kept) + 1, e.type, e.data))
        else:
            dropped += 1
    if kept:
        commit = kept[-1].index
    ids = IdGenerator(0, int(time.time() * 1000))
    meta = dict(contents.metadata or {})
    meta.update({"member_id": ids.next(), "cluster_id": ids.next(), "token": None})
    meta.pop("join_peers", None)
    term = max([contents.hardstate.term, snap_term] + [e.term for e in kept])
    wal = WAL.create(dest_wal, meta)
    try:
        wal.save_sync(kept, HardState(term, 0, commit))
        if snap is not None:
            wal.save_snapshot_marker(snap_index, snap_term)
    finally:
        wal.close()
    log(f"backup: snapshot at index {snap_index}, {len(kept)} log entries kept, "
        f"{dropped} dropped (membership{'' if with_v3 else ' and v3'} changes)")
    return {"snapshot_index": snap_index, "entries": len(kept), "dropped": dropped,
            "commit": commit, "member_id": meta["member_id"], "cluster_id": meta["cluster_id"]}


def _keep(e: Entry, with_v3: bool) -> bool:
    if e.type == ENTRY_CONF_CHANGE:
        return False
    if not e.data:
        return True   # a leader's empty entry
    _req_id, kind, _payload = requests.decode(e.data)
    if kind == requests.MEMBER_ATTR:
        return False
    return with_v3 or kind in V2_KINDS


def _strip_snapshot(state: dict, blobs: list[bytes], with_v3: bool) -> tuple[dict, list[bytes]]:
    """The snapshot's state with no members; without v3, also with an empty v3 side."""
    state = dict(state)
    state["membership"] = Membership().snapshot_state()
    if with_v3:
        return state, blobs
    lessor = Lessor()
    empty = Applier(KVStore(lessor), lessor, None, Membership())
    empty.applied_index, empty.applied_term = state["applied_index"], state.get("applied_term", 0)
    fresh, fresh_blobs = empty.snapshot_state()
    for part in ("store", "lessor", "alarms", "auth"):
        state[part] = fresh[part]
    return state, fresh_blobs
