"""Snapshot files read back: their status, and a new member's data dir made from one.

This is the storage side of ``fastkvctl snapshot status`` and ``snapshot restore``
(etcdctl 3.4's). Two kinds of file are read:

* a saved snapshot (``snapshot save``, or etcdctl's: the Maintenance.Snapshot
  stream): a snapshot image as :mod:`fastkv.storage.snapshot` writes it, zeros up
  to a multiple of 512 bytes, then the SHA-256 of all that (32 bytes);
* a member's own ``member/snap/*.snap`` file, copied from a data dir: the same
  image without padding or digest (as etcd restores a copied ``db`` file, this
  needs ``--skip-hash-check``).

As etcd decides, a file has a digest when its size is 32 more than a multiple of
512 -- unless its header says the image fills the file exactly, which only a
``.snap`` file does (so a ``.snap`` file that happens to have such a size is not
mistaken for a saved one).

Status (etcd's ``snapshot.Status``), defined for our format:

* hash: the CRC-32C (Castagnoli, the polynomial etcd's status uses over its db)
  of the image's body -- the frames after the 16-byte header, which is also the
  checksum the header carries. The padding and the SHA-256 are not part of it,
  so a saved file and a ``.snap`` file of the same image have the same hash.
* revision: the key-value store's revision in the snapshot.
* total keys: the entries of the snapshot's tables, counted as etcd counts the
  keys of all its db buckets: every stored key-value record (each kept revision
  of each key, deletion markers included), lease, auth user, auth role, member,
  removed member and alarm.
* total size: the bytes of the snapshot data, the file without its SHA-256
  (etcd's db size, which is what it streams before the digest).

Restore (etcd's ``snapshot.v3Manager.Restore``) writes a data dir from which
``fastkv --name N --initial-cluster C --initial-cluster-token T
--initial-advertise-peer-urls U --data-dir D`` starts a member of a new cluster:

* member and cluster IDs computed from the new initial cluster and token exactly
  as a fresh member computes them (:mod:`fastkv.identity`), so every restored
  member agrees;
* the WAL: the fresh member's metadata and its first log entries (one committed
  conf change per initial member, term 1, index 1..n), then a snapshot marker at
  index n;
* the snapshot, at index n, term 1: the file's key-value store (records,
  revision, compaction), leases, auth and alarms as they were; the membership the
  n conf changes make (the old members and removed IDs are gone); the v2 store
  empty, as etcd's restore leaves it (a v3 snapshot carries no v2 data).

The data dir is written under a temporary name next to it and renamed into place
at the end, so a failed restore leaves nothing behind. ``--wal-dir`` puts the WAL
elsewhere, as etcd's; the fastkv server does not take ``--wal-dir`` yet, so such a
WAL has to be moved to ``<data dir>/member/wal`` before the member starts.
"""
from __future__ import annotations

import hashlib
import marshal
import os
import shutil
from dataclasses import dataclass, field
from typing import Callable

from fastkv.errors import StorageCorruption
from fastkv.identity import cluster_id, member_id
from fastkv.membership import Membership, bootstrap_entries, initial_members
from fastkv.raft.messages import ConfChange
from fastkv.storage.snapshot import (HEADER, MAGIC, SHA256_SIZE, STREAM_ALIGN, Snapshotter,
                                     decode)
from fastkv.storage.wal import WAL, Entry, HardState, fsync_dir

# (bytes done, bytes in all) as a file is read
Progress = Callable[[int, int], None]

READ_PIECE = 1 << 20


class RestoreError(Exception):
    """Restore refused before writing anything; str() is etcdctl's wording."""


class HashMismatch(StorageCorruption):
    """A saved snapshot whose SHA-256 does not match its data."""

    def __init__(self, expected: bytes, got: bytes):
        # etcd's fmt.Errorf("expected sha256 %v, got %v", sha, dbsha): Go prints []byte as [1 2 3]
        super().__init__(f"expected sha256 {_go_bytes(expected)}, got {_go_bytes(got)}")
        self.expected = expected
        self.got = got


class MissingHash(StorageCorruption):
    def __init__(self):
        super().__init__("snapshot missing hash but --skip-hash-check=false")


def _go_bytes(b: bytes) -> str:
    return "[" + " ".join(str(c) for c in b) + "]"


def go_path_error(op: str, path: str, exc: OSError) -> str:
    """An OSError as Go's *PathError prints it: ``open f: no such file or directory``."""
    text = exc.strerror or str(exc)
    return f"{op} {path}: {text[:1].lower()}{text[1:]}"


# ---- reading a snapshot file ---------------------------------------------------------

@dataclass
class SnapshotImage:
    """A snapshot file, read and checked."""
    path: str
    state: dict
    blobs: list[bytes]
    crc: int            # CRC-32C of the image's body (the header's checksum)
    size: int           # bytes of the snapshot data: the file without its SHA-256
    has_hash: bool      # the file ends with a SHA-256 (a saved snapshot)


def _read_file(path: str, progress: Progress | None) -> bytes:
    with open(path, "rb") as f:
        total = os.fstat(f.fileno()).st_size
        if progress is None:
            return f.read()
        buf = bytearray()
        progress(0, total)
        while True:
            piece = f.read(READ_PIECE)
            if not piece:
                break
            buf += piece
            progress(len(buf), max(total, len(buf)))
        return bytes(buf)


def image_length(buf: bytes) -> int | None:
    """The length of the snapshot image at the start of buf (header + body), as its
    header says; None if buf does not start with a snapshot header."""
    if len(buf) < HEADER.size:
        return None
    magic, _crc, length = HEADER.unpack_from(buf, 0)
    return HEADER.size + length if magic == MAGIC else None


def has_digest(buf: bytes) -> bool:
    """etcd's rule (size % 512 == 32), except for a .snap file the image fills exactly."""
    return len(buf) % STREAM_ALIGN == SHA256_SIZE and image_length(buf) != len(buf)


def parse_image(buf: bytes, path: str = "<snapshot>", *, check_hash: bool = True,
                require_hash: bool = False) -> SnapshotImage:
    """Check and decode a snapshot file's bytes.

    check_hash: verify a SHA-256 the file ends with (HashMismatch); require_hash:
    refuse a file without one (MissingHash). The image's own CRC-32C is always
    checked: a file that is not a snapshot, truncated or corrupt raises
    StorageCorruption with a message that says which."""
    digest = has_digest(buf)
    data = memoryview(buf)
    if digest:
        data, trailer = data[:-SHA256_SIZE], bytes(data[-SHA256_SIZE:])
        if check_hash:
            got = hashlib.sha256(data).digest()
            if got != trailer:
                raise HashMismatch(trailer, got)
    elif require_hash:
        raise MissingHash()
    if len(data) < HEADER.size:
        raise StorageCorruption(f"{path} is not a fastkv snapshot: {len(buf)} bytes is too "
                                f"short (truncated?)")
    end = image_length(data)
    if end is None:
        raise StorageCorruption(f"{path} is not a fastkv snapshot (bad magic number)")
    if end > len(data):
        raise StorageCorruption(f"{path} is truncated: the snapshot is {end} bytes, the file "
                                f"holds {len(data)}")
    if end < len(data):
        if not digest:
            raise StorageCorruption(f"{path} is not a snapshot file: {len(data) - end} bytes "
                                    f"after the end of the snapshot (truncated saved snapshot?)")
        if len(data) != end + (-end % STREAM_ALIGN) or any(bytes(data[end:])):
            raise StorageCorruption(f"{path} is corrupt: bad padding after the snapshot")
    _magic, crc, _length = HEADER.unpack_from(data, 0)
    state, blobs = decode(data[:end], path)
    store = state.get("store")
    if not isinstance(store, dict) or "rev" not in store:
        raise StorageCorruption(f"{path} is not a fastkv snapshot (no key-value store in it)")
    if store.get("record_chunk_count") != len(blobs):
        raise StorageCorruption(f"{path} is corrupt: {len(blobs)} record chunks, expected "
                                f"{store.get('record_chunk_count')}")
    return SnapshotImage(path, state, blobs, crc, len(data), digest)


def read_image(path: str, *, check_hash: bool = True, require_hash: bool = False,
               progress: Progress | None = None) -> SnapshotImage:
    """parse_image of a file (OSError if it cannot be read)."""
    return parse_image(_read_file(path, progress), path, check_hash=check_hash,
                       require_hash=require_hash)


# ---- status ---------------------------------------------------------------------------

@dataclass
class Status:
    """etcd's snapshot.Status (its JSON names: hash, revision, totalKey, totalSize)."""
    hash: int
    revision: int
    total_key: int
    total_size: int


def count_records(blobs: list[bytes], path: str = "<snapshot>") -> int:
    n = 0
    for chunk in blobs:
        try:
            rows = marshal.loads(chunk)
        except (ValueError, EOFError, TypeError) as exc:
            raise StorageCorruption(f"{path}: a record chunk cannot be decoded: {exc}") from None
        n += len(rows)
    return n


def image_status(img: SnapshotImage) -> Status:
    st = img.state
    auth = st.get("auth") or {}
    membership = st.get("membership") or {}
    total = (count_records(img.blobs, img.path)
             + len(st.get("lessor") or ())
             + len(auth.get("users") or ()) + len(auth.get("roles") or ())
             + len(membership.get("members") or ()) + len(membership.get("removed") or ())
             + len(st.get("alarms") or ()))
    return Status(img.crc, int(st["store"]["rev"]), total, img.size)


def status(path: str) -> Status:
    """The status of a snapshot file (a saved one's SHA-256 is checked if it has one)."""
    return image_status(read_image(path))


# ---- restore --------------------------------------------------------------------------

@dataclass
class RestoreConfig:
    """etcdctl snapshot restore's flags (already parsed)."""
    name: str = "default"
    initial_cluster: dict = field(                 # name -> [peer URL]
        default_factory=lambda: {"default": ["http://localhost:2380"]})
    initial_cluster_token: str = "etcd-cluster"
    initial_advertise_peer_urls: list = field(default_factory=lambda: ["http://localhost:2380"])
    data_dir: str = ""                           # "" -> <name>.fastkv
    wal_dir: str = ""                            # "" -> <data dir>/member/wal
    skip_hash_check: bool = False

    def resolved_data_dir(self) -> str:
        # fastkv's own default --data-dir (etcd's is <name>.etcd), so a member started
        # with the same --name and no --data-dir finds it
        return self.data_dir or f"{self.name}.fastkv"


def check_config(cfg: RestoreConfig) -> None:
    """etcd's ServerConfig.VerifyBootstrap for the restore flags: the same check (and
    words) as the member that will start from the data dir."""
    from fastkv import config
    server = config.Config()
    server.name = cfg.name
    server.initial_cluster = dict(cfg.initial_cluster or {})
    server.initial_advertise_peer_urls = list(cfg.initial_advertise_peer_urls or [])
    try:
        config.check_local_member(server)
    except config.ConfigError as exc:
        raise RestoreError(str(exc)) from None


def membership_after(entries: list[Entry]) -> Membership:
    """The membership applying the bootstrap entries gives (the applier's own rules)."""
    ms = Membership()
    for e in entries:
        cc = ConfChange.decode(e.data)
        err = ms.validate(cc)
        if err is not None:
            raise RestoreError(f"initial cluster: {err}")
        ms.apply(cc)
    return ms


def restored_state(state: dict, entries: list[Entry], membership: Membership) -> dict:
    """The snapshot's state as the new cluster's state at the last bootstrap entry."""
    from fastkv.v2store import V2Store
    from fastkv.v2store.apply import NAMESPACES
    new = dict(state)
    new["applied_index"] = entries[-1].index
    new["applied_term"] = entries[-1].term
    new["membership"] = membership.snapshot_state()
    new["v2"] = V2Store(NAMESPACES).to_state()
    return new


def restore(path: str, cfg: RestoreConfig, progress: Progress | None = None) -> dict:
    """Write the new data dir. Returns {"data_dir", "wal_dir", "member_id", "cluster_id",
    "index", "revision"}. RestoreError (bad flags, the dir exists), OSError (cannot read
    the file) or StorageCorruption (not a sound snapshot) before anything is written."""
    check_config(cfg)
    data_dir = cfg.resolved_data_dir()
    if os.path.exists(data_dir):
        raise RestoreError(f'data-dir "{data_dir}" exists')
    wal_dir = cfg.wal_dir
    if wal_dir and os.path.exists(wal_dir):
        raise RestoreError(f'wal-dir "{wal_dir}" exists')

    img = read_image(path, check_hash=not cfg.skip_hash_check,
                     require_hash=not cfg.skip_hash_check, progress=progress)
    token = cfg.initial_cluster_token
    members = initial_members(cfg.initial_cluster, token)
    entries = bootstrap_entries(members)
    state = restored_state(img.state, entries, membership_after(entries))
    meta = {"member_id": member_id(cfg.initial_cluster[cfg.name], token),
            "cluster_id": cluster_id([m.id for m in members]), "name": cfg.name, "token": token}
    index, term = entries[-1].index, entries[-1].term

    parent = os.path.dirname(os.path.abspath(data_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(os.path.abspath(data_dir))}.restoring")
    shutil.rmtree(tmp, ignore_errors=True)   # left by a restore that crashed
    wal_made = False
    try:
        os.makedirs(tmp, mode=0o700)     # etcd's data dir mode
        os.mkdir(os.path.join(tmp, "member"), mode=0o700)
        Snapshotter(os.path.join(tmp, "member", "snap")).save(term, index, state, img.blobs)
        wal = WAL.create(wal_dir or os.path.join(tmp, "member", "wal"), meta)
        wal_made = bool(wal_dir)
        try:
            wal.save_sync(entries, HardState(term, 0, index))
            wal.save_snapshot_marker(index, term)
        finally:
            wal.close()
        os.rename(tmp, data_dir)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if wal_made:
            shutil.rmtree(wal_dir, ignore_errors=True)
        raise
    return {"data_dir": data_dir, "wal_dir": wal_dir or os.path.join(data_dir, "member", "wal"),
            "member_id": meta["member_id"], "cluster_id": meta["cluster_id"],
            "index": index, "revision": int(state["store"]["rev"])}
