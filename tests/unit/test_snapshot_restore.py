"""snapshot status and restore without a server: the file reader, the status output in
etcdctl's formats, and the data dir restore builds (opened as a member opens it)."""
from __future__ import annotations

import hashlib
import os

import pytest

from fastkv import requests
from fastkv.apply import Applier
from fastkv.cli.snapshot_commands import format_status
from fastkv.errors import StorageCorruption
from fastkv.identity import cluster_id, member_id
from fastkv.membership import Member, Membership, encode_context
from fastkv.mvcc.lease import Lessor
from fastkv.mvcc.store import KVStore
from fastkv.mvcc.watch import WatchHub
from fastkv.raft.messages import CONF_ADD_NODE, ENTRY_CONF_CHANGE, ConfChange
from fastkv.storage import restore as rs
from fastkv.storage import snapshot
from fastkv.storage.snapshot import Snapshotter
from fastkv.storage.wal import WAL, Entry


# ---- a source snapshot: keys with history, a lease, a compaction, a user, old members ----

OLD_MEMBERS = [Member(0x1111, "old-a", ["http://10.0.0.1:2380"], ["http://10.0.0.1:2379"]),
               Member(0x2222, "old-b", ["http://10.0.0.2:2380"], ["http://10.0.0.2:2379"])]


def source() -> tuple[dict, list[bytes], Applier]:
    lessor = Lessor()
    store = KVStore(lessor)
    ms = Membership()
    for m in OLD_MEMBERS:
        ms.apply(ConfChange(CONF_ADD_NODE, m.id, encode_context(m)))
    ms.removed.add(0x3333)
    ap = Applier(store, lessor, WatchHub(store, lambda rev=None: {}), ms)
    reqs = [(requests.LEASE_GRANT, {"ID": 0x77, "TTL": 600}),
            (requests.PUT, {"key": b"foo", "value": b"v1"}),
            (requests.PUT, {"key": b"foo", "value": b"v2"}),
            (requests.PUT, {"key": b"gone", "value": b"x"}),
            (requests.DELETE_RANGE, {"key": b"gone"}),
            (requests.COMPACTION, {"revision": 3}),
            (requests.PUT, {"key": b"foo", "value": b"v3"}),
            (requests.PUT, {"key": b"leased", "value": b"l", "lease": 0x77})]
    for i, (kind, payload) in enumerate(reqs, start=1):
        _id, res = ap.apply(Entry(4, 100 + i, 0, requests.encode(i, kind, payload)))
        assert not isinstance(res, Exception), res
    ap.auth.user_add({"name": "alice", "hashedPassword": "h"})
    state, blobs = ap.snapshot_state()
    return state, blobs, ap


def saved_bytes(state: dict, blobs: list[bytes]) -> bytes:
    """What snapshot save writes: the stream and its SHA-256."""
    data = snapshot.encode_stream(state, blobs)
    return data + hashlib.sha256(data).digest()


@pytest.fixture
def saved(tmp_path):
    state, blobs, ap = source()
    path = tmp_path / "saved.db"
    path.write_bytes(saved_bytes(state, blobs))
    return str(path), state, blobs, ap


# ---- status output: etcdctl 3.4's, byte for byte ------------------------------------------

# printed by Debian's etcdctl 3.4.23 for a small etcd snapshot
ETCD_STATUS = rs.Status(hash=3715976431, revision=4, total_key=7, total_size=24576)


def test_status_simple():
    assert format_status(ETCD_STATUS, "simple") == b"dd7d4cef, 4, 7, 25 kB\n"


def test_status_table():
    assert format_status(ETCD_STATUS, "table").decode() == (
        "+----------+----------+------------+------------+\n"
        "|   HASH   | REVISION | TOTAL KEYS | TOTAL SIZE |\n"
        "+----------+----------+------------+------------+\n"
        "| dd7d4cef |        4 |          7 |      25 kB |\n"
        "+----------+----------+------------+------------+\n")


def test_status_json_and_fields():
    assert format_status(ETCD_STATUS, "json") == \
        b'{"hash":3715976431,"revision":4,"totalKey":7,"totalSize":24576}\n'
    assert format_status(ETCD_STATUS, "fields") == (
        b'"Hash" : 3715976431\n"Revision" : 4\n"Keys" : 7\n"Size" : 24576\n')


@pytest.mark.parametrize("size,text", [(0, "0 B"), (9, "9 B"), (10, "10 B"), (999, "999 B"),
                                       (1000, "1.0 kB"), (1024, "1.0 kB"), (24576, "25 kB"),
                                       (2_100_000, "2.1 MB"), (82_854_982, "83 MB")])
def test_status_sizes_are_humanized_as_go_humanize(size, text):
    st = rs.Status(0xab, 1, 1, size)
    assert format_status(st, "simple") == f"ab, 1, 1, {text}\n".encode()


def test_hash_is_lowercase_hex_without_padding():
    assert format_status(rs.Status(0x0badf00d, 1, 2, 3), "simple") == b"badf00d, 1, 2, 3 B\n"


# ---- reading snapshot files -----------------------------------------------------------------

def test_status_of_a_saved_snapshot(saved):
    path, state, blobs, ap = saved
    st = rs.status(path)
    img = rs.read_image(path)
    assert img.has_hash
    assert st.revision == ap.store.rev == 7
    # records kept after compacting at 3: foo@3 (the newest at 3), gone@4 and its deletion@5,
    # foo@6, leased@7; plus one lease, one user, two members and one removed member
    assert st.total_key == 5 + 1 + 1 + 2 + 1
    assert st.total_size == os.path.getsize(path) - 32 and st.total_size % 512 == 0
    # the hash: CRC-32C of the image's body, the same as the header's checksum
    raw = snapshot.encode(state, blobs)
    from fastkv._crc32c import crc32c
    assert st.hash == crc32c(raw[snapshot.HEADER.size:])


def test_a_member_snap_file_has_the_same_hash_and_no_digest(saved, tmp_path):
    path, state, blobs, _ap = saved
    snap_dir = tmp_path / "snap"
    Snapshotter(str(snap_dir)).save(4, 108, state, blobs)
    (_t, _i, snap_path), = Snapshotter(str(snap_dir)).files()
    img = rs.read_image(snap_path, check_hash=False)
    assert not img.has_hash
    assert rs.status(snap_path).hash == rs.status(path).hash
    assert rs.status(snap_path).total_size == os.path.getsize(snap_path)
    with pytest.raises(rs.MissingHash, match=r"^snapshot missing hash but --skip-hash-check=false$"):
        rs.read_image(snap_path, require_hash=True)


def test_a_snap_file_of_a_digest_like_size_is_not_taken_for_a_saved_one():
    state = {"store": {"format": 2, "rev": 1, "compact_rev": 0, "record_chunk_count": 0},
             "pad": b""}
    base = len(snapshot.encode(state))
    grow = (32 - base) % 512
    # marshal's bytes header grows with the value; aim until the size is 32 mod 512
    for extra in range(grow, grow + 600):
        state["pad"] = b"p" * extra
        data = snapshot.encode(state)
        if len(data) % 512 == 32:
            break
    assert len(data) % 512 == 32
    img = rs.parse_image(data, require_hash=False)
    assert not img.has_hash and img.size == len(data)


def test_a_flipped_byte_is_refused(saved):
    path, *_ = saved
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0x01
    go_bytes = r"\[(\d+ ){31}\d+\]"    # Go's %v of a []byte
    with pytest.raises(rs.HashMismatch, match=f"^expected sha256 {go_bytes}, got {go_bytes}$"):
        rs.parse_image(bytes(data), path)
    # without the digest check the image's own CRC still catches it
    with pytest.raises(StorageCorruption, match="CRC"):
        rs.parse_image(bytes(data), path, check_hash=False)


@pytest.mark.parametrize("cut", [10, 100, 512, -32, -1])
def test_a_truncated_file_is_refused(saved, cut):
    path, *_ = saved
    data = open(path, "rb").read()
    data = data[:cut]
    with pytest.raises(StorageCorruption):
        rs.parse_image(data, path, check_hash=True)
    with pytest.raises(StorageCorruption):
        rs.parse_image(data, path, check_hash=False)


def test_not_a_snapshot():
    with pytest.raises(StorageCorruption, match="not a fastkv snapshot"):
        rs.parse_image(b"root:x:0:0:root:/root:/bin/bash\n" * 10, "passwd")
    with pytest.raises(StorageCorruption, match="not a fastkv snapshot"):
        rs.parse_image(b"", "empty")


# ---- restore ---------------------------------------------------------------------------------

NEW_CLUSTER = {"n0": ["http://127.0.0.1:12380"], "n1": ["http://127.0.0.1:12381"],
               "n2": ["http://127.0.0.1:12382"]}
TOKEN = "restored-token"


def restore_cfg(name: str, data_dir: str, **kw) -> rs.RestoreConfig:
    return rs.RestoreConfig(name=name, initial_cluster=NEW_CLUSTER, initial_cluster_token=TOKEN,
                            initial_advertise_peer_urls=NEW_CLUSTER[name], data_dir=data_dir, **kw)


def test_restore_writes_a_new_cluster_members_data_dir(saved, tmp_path):
    path, state, blobs, _ap = saved
    out = rs.restore(path, restore_cfg("n1", str(tmp_path / "n1")))
    ids = {n: member_id(u, TOKEN) for n, u in NEW_CLUSTER.items()}
    assert out["member_id"] == ids["n1"]
    assert out["cluster_id"] == cluster_id(list(ids.values()))
    assert out["index"] == 3 and out["revision"] == 7

    contents = WAL.read_all(str(tmp_path / "n1" / "member" / "wal"))
    assert contents.metadata == {"member_id": ids["n1"], "cluster_id": out["cluster_id"],
                                 "name": "n1", "token": TOKEN}
    # the log a fresh member of this cluster starts with (one conf change per member, by
    # ID), covered by the snapshot at its last index: replay keeps none of it
    entries = rs.bootstrap_entries(rs.initial_members(NEW_CLUSTER, TOKEN))
    assert [(e.term, e.index, e.type) for e in entries] == \
        [(1, 1, ENTRY_CONF_CHANGE), (1, 2, ENTRY_CONF_CHANGE), (1, 3, ENTRY_CONF_CHANGE)]
    assert [ConfChange.decode(e.data).node_id for e in entries] == sorted(ids.values())
    assert contents.entries == []
    assert (contents.hardstate.term, contents.hardstate.vote, contents.hardstate.commit) == (1, 0, 3)
    assert (contents.snapshot_term, contents.snapshot_index) == (1, 3)

    term, index, new, new_blobs = Snapshotter(str(tmp_path / "n1" / "member" / "snap")).load_newest()
    assert (term, index) == (1, 3)
    assert new["applied_index"] == 3 and new["applied_term"] == 1
    assert new_blobs == blobs
    for part in ("store", "lessor", "auth", "alarms"):
        assert new[part] == state[part]
    ms = Membership.from_snapshot_state(new["membership"])
    assert sorted(ms.members) == sorted(ids.values()) and not ms.removed
    assert {tuple(m.peer_urls) for m in ms.members.values()} == \
        {tuple(u) for u in NEW_CLUSTER.values()}
    from fastkv.v2store import V2Store
    from fastkv.v2store.apply import NAMESPACES
    assert new["v2"] == V2Store(NAMESPACES).to_state()   # empty, as etcd's restore leaves it
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]   # no temp dir left


def test_every_restored_member_agrees(saved, tmp_path):
    path, *_ = saved
    outs = [rs.restore(path, restore_cfg(n, str(tmp_path / n))) for n in NEW_CLUSTER]
    assert len({o["cluster_id"] for o in outs}) == 1
    assert len({o["member_id"] for o in outs}) == 3
    snaps = [open(Snapshotter(str(tmp_path / n / "member" / "snap")).files()[-1][2], "rb").read()
             for n in NEW_CLUSTER]
    assert snaps[0] == snaps[1] == snaps[2]


def test_the_server_opens_the_restored_dir_as_a_member_of_the_new_cluster(saved, tmp_path):
    from fastkv import config
    from fastkv.server import Server
    path, _state, _blobs, ap = saved
    rs.restore(path, restore_cfg("n2", str(tmp_path / "n2")))
    cfg = config.parse(["--name", "n2", "--data-dir", str(tmp_path / "n2"),
                        "--initial-cluster", ",".join(f"{n}={u[0]}" for n, u in NEW_CLUSTER.items()),
                        "--initial-cluster-token", TOKEN,
                        "--initial-advertise-peer-urls", NEW_CLUSTER["n2"][0]], {})
    srv = Server(cfg)
    srv._open_storage()
    try:
        ids = {n: member_id(u, TOKEN) for n, u in NEW_CLUSTER.items()}
        assert srv.member_id == ids["n2"] and srv.cluster_id == cluster_id(list(ids.values()))
        assert sorted(srv.membership.members) == sorted(ids.values())
        assert srv.store.rev == ap.store.rev and srv.store.compact_rev == 3
        assert srv.store.range({"key": b"foo"})["kvs"][0]["value"] == b"v3"
        assert srv.store.range({"key": b"leased"})["kvs"][0]["lease"] == 0x77
        assert srv.lessor.lookup(0x77) is not None
        assert srv.auth.user_list()["users"] == ["alice"]
        assert srv.applier.applied_index == 3 and srv.core.voters == sorted(ids.values())
    finally:
        srv.wal.close()


def test_restore_from_a_member_snap_file_needs_skip_hash_check(saved, tmp_path):
    _path, state, blobs, _ap = saved
    Snapshotter(str(tmp_path / "snap")).save(4, 108, state, blobs)
    snap_path = Snapshotter(str(tmp_path / "snap")).files()[-1][2]
    with pytest.raises(rs.MissingHash):
        rs.restore(snap_path, restore_cfg("n0", str(tmp_path / "a")))
    assert not (tmp_path / "a").exists()
    out = rs.restore(snap_path, restore_cfg("n0", str(tmp_path / "b"), skip_hash_check=True))
    assert out["revision"] == 7


def test_skip_hash_check_ignores_a_bad_digest_but_not_a_bad_image(saved, tmp_path):
    path, *_ = saved
    data = bytearray(open(path, "rb").read())
    data[-1] ^= 0xFF            # the digest only
    open(path, "wb").write(bytes(data))
    with pytest.raises(rs.HashMismatch):
        rs.restore(path, restore_cfg("n0", str(tmp_path / "a")))
    rs.restore(path, restore_cfg("n0", str(tmp_path / "b"), skip_hash_check=True))
    data[100] ^= 0xFF           # now the image too
    open(path, "wb").write(bytes(data))
    with pytest.raises(StorageCorruption, match="CRC"):
        rs.restore(path, restore_cfg("n0", str(tmp_path / "c"), skip_hash_check=True))
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_restore_refuses_an_existing_data_dir_or_wal_dir(saved, tmp_path):
    path, *_ = saved
    (tmp_path / "taken").mkdir()
    with pytest.raises(rs.RestoreError, match=f'^data-dir "{tmp_path / "taken"}" exists$'):
        rs.restore(path, restore_cfg("n0", str(tmp_path / "taken")))
    (tmp_path / "wal").mkdir()
    with pytest.raises(rs.RestoreError, match=f'^wal-dir "{tmp_path / "wal"}" exists$'):
        rs.restore(path, restore_cfg("n0", str(tmp_path / "d"), wal_dir=str(tmp_path / "wal")))
    assert not (tmp_path / "d").exists()


def test_restore_with_a_separate_wal_dir(saved, tmp_path):
    path, *_ = saved
    rs.restore(path, restore_cfg("n0", str(tmp_path / "d"), wal_dir=str(tmp_path / "w")))
    assert WAL.exists(str(tmp_path / "w"))
    assert not os.path.exists(tmp_path / "d" / "member" / "wal")
    assert Snapshotter(str(tmp_path / "d" / "member" / "snap")).files()


def test_restore_checks_the_cluster_flags_as_the_server_does(saved, tmp_path):
    path, *_ = saved
    cfg = restore_cfg("n0", str(tmp_path / "d"))
    cfg.name = "x"
    with pytest.raises(rs.RestoreError,
                       match='^couldn\'t find local name "x" in the initial cluster configuration$'):
        rs.restore(path, cfg)
    cfg = restore_cfg("n0", str(tmp_path / "d"))
    cfg.initial_advertise_peer_urls = ["http://127.0.0.1:9"]
    with pytest.raises(rs.RestoreError, match="missing from --initial-advertise-peer-urls"):
        rs.restore(path, cfg)
    assert not (tmp_path / "d").exists()


def test_default_data_dir_is_the_servers_default(saved, tmp_path, monkeypatch):
    path, *_ = saved
    monkeypatch.chdir(tmp_path)
    out = rs.restore(path, rs.RestoreConfig(skip_hash_check=False))   # etcdctl's defaults
    assert out["data_dir"] == "default.fastkv" and (tmp_path / "default.fastkv" / "member").is_dir()
    assert out["member_id"] == member_id(["http://localhost:2380"], "etcd-cluster")
