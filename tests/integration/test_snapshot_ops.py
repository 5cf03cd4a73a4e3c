"""fastkvctl snapshot save / status / restore against real members (etcd's disaster
recovery: save a snapshot from one member of a live cluster, restore it into the data
dirs of a new cluster, start that cluster).

One 3-member source cluster (--snapshot-count 5, so its members also write member/snap
files) is shared by the tests of this module and stopped after the last one; every
cluster a test starts from a restore is stopped by that test.
"""
from __future__ import annotations

import base64
import glob
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import pytest

from servers import REPO, Cluster, FastkvProcess, free_port

from fastkv.cli.printer import humanize_bytes
from fastkv.identity import cluster_id, member_id

CTL = [sys.executable, "-m", "fastkv.cli"]
NEW_TOKEN = "restored-cluster"


def env(extra: dict | None = None) -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    e["PYTHONPATH"] = REPO + os.pathsep + e.get("PYTHONPATH", "")
    e.update(extra or {})
    return e


def ctl(*args: str, endpoint: str | None = None) -> tuple[int, str, str]:
    cmd = CTL + (["--endpoints", endpoint] if endpoint else []) + list(args)
    p = subprocess.run(cmd, capture_output=True, timeout=120, env=env(), cwd=REPO,
                       stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def ok(*args: str, endpoint: str | None = None) -> str:
    rc, out, err = ctl(*args, endpoint=endpoint)
    assert rc == 0, f"fastkvctl {' '.join(args)} failed ({rc}): {err}"
    return out


def b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def gw(url: str, path: str, body: dict) -> dict:
    """One v3 JSON gateway call; the answer (an error answer too) as a dict."""
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        return json.loads(e.read())


def put(url: str, key: str, value: str, lease: int = 0) -> int:
    body = {"key": b64(key), "value": b64(value)}
    if lease:
        body["lease"] = str(lease)
    return int(gw(url, "/v3/kv/put", body)["header"]["revision"])


def all_keys(url: str, rev: int = 0) -> tuple[int, list[dict]]:
    """(header revision, every key-value) at rev (0: now)."""
    body = {"key": b64(b"\0"), "range_end": b64(b"\0")}
    if rev:
        body["revision"] = str(rev)
    resp = gw(url, "/v3/kv/range", body)
    assert "kvs" in resp, resp
    return int(resp["header"]["revision"]), resp["kvs"]


def members(url: str) -> dict:
    return gw(url, "/v3/cluster/member/list", {})


@dataclass
class Source:
    cluster: Cluster
    root: str
    saved: str           # `snapshot save` from member 0
    save_out: tuple      # (rc, stdout, stderr) of that save
    rev: int             # the cluster's revision when it was saved
    keys: list[dict]     # every key-value then
    lease: int
    compact_rev: int
    foo_revs: list[int]  # the revisions of foo's values v1..v4


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("snapshot-ops"))
    cluster = Cluster(size=3, extra_args=["--snapshot-count", "5"])
    try:
        cluster.start()
        url = cluster.urls[0]
        lease = int(gw(url, "/v3/lease/grant", {"TTL": "600"})["ID"])
        foo_revs = [put(url, "foo", "v1"), put(url, "foo", "v2"), put(url, "foo", "v3")]
        put(url, "gone", "x")
        gw(url, "/v3/kv/deleterange", {"key": b64("gone")})
        compact_rev = foo_revs[1]
        assert "header" in gw(url, "/v3/kv/compaction",
                              {"revision": str(compact_rev), "physical": True})
        foo_revs.append(put(url, "foo", "v4"))
        put(url, "leased", "l", lease=lease)
        for i in range(3):
            put(url, f"dir/{i}", f"value-{i}")
        ok("user", "add", "alice", "--new-user-password", "secret", endpoint=url)
        ok("role", "add", "reader", endpoint=url)
        rev, keys = all_keys(url)
        saved = os.path.join(root, "saved.db")
        save_out = ctl("snapshot", "save", saved, endpoint=url)
        assert save_out[0] == 0, save_out
        yield Source(cluster, root, saved, save_out, rev, keys, lease, compact_rev, foo_revs)
    finally:
        cluster.stop()


def status_json(path: str) -> dict:
    return json.loads(ok("snapshot", "status", path, "-w", "json"))


# ---- save -----------------------------------------------------------------------------------

def test_save_writes_the_stream_and_says_so(source):
    rc, out, err = source.save_out
    assert (rc, out, err) == (0, f"Snapshot saved at {source.saved}\n", "")   # no tty: no bar
    assert not os.path.exists(source.saved + ".part")
    assert os.stat(source.saved).st_mode & 0o777 == 0o600
    assert os.path.getsize(source.saved) % 512 == 32      # padded data + its SHA-256


def test_save_needs_exactly_one_endpoint_and_one_file(source):
    a, b = source.cluster.urls[:2]
    target = os.path.join(source.root, "never.db")
    rc, out, err = ctl("snapshot", "save", target, endpoint=f"{a},{b}")
    assert (rc, out) == (5, "")
    assert err == f"Error: snapshot must be requested to one selected node, not multiple [{a} {b}]\n"
    assert not os.path.exists(target) and not os.path.exists(target + ".part")
    rc, _out, err = ctl("snapshot", "save", endpoint=a)
    assert (rc, err) == (128, "Error: snapshot save expects one argument\n")


def test_save_from_an_unreachable_endpoint_leaves_nothing(source):
    target = os.path.join(source.root, "unreachable.db")
    rc, out, err = ctl("--dial-timeout", "1s", "snapshot", "save", target,
                       endpoint=f"127.0.0.1:{free_port()}")
    assert (rc, out, err) == (5, "", "Error: context deadline exceeded\n")
    assert not os.path.exists(target) and not os.path.exists(target + ".part")


def test_save_fails_cleanly_when_the_file_cannot_be_written(source):
    target = os.path.join(source.root, "no-such-dir", "x.db")
    rc, _out, err = ctl("snapshot", "save", target, endpoint=source.cluster.urls[0])
    assert rc == 5
    assert err == (f"Error: could not open {target}.part (open {target}.part: "
                   f"no such file or directory)\n")


# ---- status ---------------------------------------------------------------------------------

def test_status_in_every_format(source):
    st = status_json(source.saved)
    assert set(st) == {"hash", "revision", "totalKey", "totalSize"}
    assert st["revision"] == source.rev
    # every kept revision of every key is one, and there are more (lease, user, role, members)
    assert st["totalKey"] >= len(source.keys) + len(source.foo_revs) - 1 + 3
    assert st["totalSize"] == os.path.getsize(source.saved) - 32
    row = [f"{st['hash']:x}", str(st["revision"]), str(st["totalKey"]),
           humanize_bytes(st["totalSize"])]
    assert ok("snapshot", "status", source.saved) == ", ".join(row) + "\n"
    assert ok("snapshot", "status", source.saved, "-w", "simple") == ", ".join(row) + "\n"
    table = ok("snapshot", "status", source.saved, "-w", "table").splitlines()
    assert len(table) == 5 and table[0] == table[2] == table[4] and table[0].startswith("+-")
    assert [c.strip() for c in table[1].strip("|").split("|")] == \
        ["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"]
    assert [c.strip() for c in table[3].strip("|").split("|")] == row
    assert ok("snapshot", "status", source.saved, "-w", "fields") == (
        f'"Hash" : {st["hash"]}\n"Revision" : {st["revision"]}\n'
        f'"Keys" : {st["totalKey"]}\n"Size" : {st["totalSize"]}\n')


def test_status_argument_and_file_errors(source):
    assert ctl("snapshot", "status")[::2] == (
        128, "Error: snapshot status requires exactly one argument\n")
    missing = os.path.join(source.root, "missing.db")
    assert ctl("snapshot", "status", missing)[::2] == (
        1, f"Error: stat {missing}: no such file or directory\n")
    rc, _out, err = ctl("snapshot", "status", source.saved, "-w", "protobuf")
    assert (rc, err) == (4, "Error: protobuf not supported as output format\n")


def test_etcdctl_saves_the_same_stream_and_status_reads_it(source):
    path = os.path.join(source.root, "by-etcdctl.db")
    p = subprocess.run(["/usr/bin/etcdctl", f"--endpoints={source.cluster.urls[1]}",
                        "snapshot", "save", path], capture_output=True, timeout=120,
                       env=env({"ETCDCTL_API": "3"}), stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout.decode() == f"Snapshot saved at {path}\n"
    st = status_json(path)
    assert st["revision"] == source.rev
    assert st["totalSize"] == os.path.getsize(path) - 32


# ---- corrupt files ----------------------------------------------------------------------------

def test_a_corrupt_file_is_refused_by_status_and_restore(source):
    data = bytearray(open(source.saved, "rb").read())
    data[len(data) // 2] ^= 0x40
    bad = os.path.join(source.root, "flipped.db")
    with open(bad, "wb") as f:
        f.write(bytes(data))
    rc, out, err = ctl("snapshot", "status", bad)
    assert (rc, out) == (1, "")
    assert err.startswith("Error: snapshot file integrity check failed: expected sha256 [")
    target = os.path.join(source.root, "from-flipped")
    rc, out, err = ctl("snapshot", "restore", bad, "--data-dir", target)
    assert (rc, out) == (1, "")
    assert err.startswith("Error: expected sha256 [") and "], got [" in err
    assert not os.path.exists(target)
    # with --skip-hash-check the image's own checksum still refuses it
    rc, _out, err = ctl("snapshot", "restore", bad, "--data-dir", target, "--skip-hash-check")
    assert rc == 1 and "CRC" in err and not os.path.exists(target)


def test_a_truncated_file_or_not_a_snapshot_is_refused(source):
    data = open(source.saved, "rb").read()
    cut = os.path.join(source.root, "cut.db")
    with open(cut, "wb") as f:
        f.write(data[:len(data) // 2])
    rc, _out, err = ctl("snapshot", "status", cut)
    assert rc == 1 and err.startswith("Error: snapshot file integrity check failed: ")
    assert "truncated" in err
    text = os.path.join(source.root, "text.db")
    with open(text, "w") as f:
        f.write("not a snapshot\n" * 10)
    rc, _out, err = ctl("snapshot", "status", text)
    assert rc == 1 and "not a fastkv snapshot" in err


# ---- restore ----------------------------------------------------------------------------------

def restore_args(p: FastkvProcess, initial: str, data_dir: str, token: str = NEW_TOKEN) -> list:
    return ["--name", p.member_name, "--initial-cluster", initial,
            "--initial-cluster-token", token, "--initial-advertise-peer-urls", p.peer_url,
            "--data-dir", data_dir]


def test_restore_refuses_an_existing_data_dir(source):
    taken = os.path.join(source.root, "taken")
    os.makedirs(taken)
    rc, out, err = ctl("snapshot", "restore", source.saved, "--data-dir", taken)
    assert (rc, out, err) == (1, "", f'Error: data-dir "{taken}" exists\n')
    assert os.listdir(taken) == []
    assert ctl("snapshot", "restore")[::2] == (
        128, "Error: snapshot restore requires exactly one argument\n")
    rc, _out, err = ctl("snapshot", "restore", source.saved, "--name", "nobody",
                        "--data-dir", os.path.join(source.root, "nobody"))
    assert (rc, err) == (1, 'Error: couldn\'t find local name "nobody" in the initial '
                            'cluster configuration\n')


def test_restore_into_a_new_three_member_cluster(source):
    root = os.path.join(source.root, "restored")
    procs = [FastkvProcess(data_dir=os.path.join(root, f"r{i}"), name=f"r{i}", token=NEW_TOKEN)
             for i in range(3)]
    initial = ",".join(f"{p.member_name}={p.peer_url}" for p in procs)
    for p in procs:
        p.initial_cluster = initial
        # FastkvProcess passes --data-dir <its dir>/member
        assert ok("snapshot", "restore", source.saved,
                  *restore_args(p, initial, os.path.join(p.data_dir, "member"))) == ""
    try:
        for p in procs:
            p.launch()
        for p in procs:
            p.wait_healthy(60)

        # every key, value and revision, at the revision of the save
        for p in procs:
            assert all_keys(p.url) == (source.rev, source.keys)
        url = procs[0].url
        foo = [gw(url, "/v3/kv/range", {"key": b64("foo"), "revision": str(r)})
               for r in source.foo_revs[1:]]
        assert [base64.b64decode(r["kvs"][0]["value"]) for r in foo] == [b"v2", b"v3", b"v4"]
        assert [int(r["kvs"][0]["mod_revision"]) for r in foo] == source.foo_revs[1:]
        # the compaction came along: below it the history is gone
        rc, _out, err = ctl("get", "foo", "--rev", str(source.compact_rev - 1), endpoint=url)
        assert rc != 0 and "required revision has been compacted" in err

        # the lease and its key
        ttl = gw(url, "/v3/lease/timetolive", {"ID": str(source.lease), "keys": True})
        assert int(ttl["grantedTTL"]) == 600 and int(ttl["TTL"]) > 0
        assert [base64.b64decode(k) for k in ttl["keys"]] == [b"leased"]
        # the auth state
        assert ok("user", "list", endpoint=url) == "alice\n"
        assert ok("role", "list", endpoint=url) == "reader\n"

        # the membership is the new one: IDs from the peer URLs and the new token
        ids = sorted(member_id([p.peer_url], NEW_TOKEN) for p in procs)
        old = members(source.cluster.urls[0])
        for p in procs:
            resp = members(p.url)
            assert sorted(int(m["ID"]) for m in resp["members"]) == ids
            assert sorted(u for m in resp["members"] for u in m["peerURLs"]) == \
                sorted(p.peer_url for p in procs)
            assert int(resp["header"]["cluster_id"]) == cluster_id(ids)
        assert int(old["header"]["cluster_id"]) != cluster_id(ids)
        assert not {int(m["ID"]) for m in old["members"]} & set(ids)

        # and the new cluster takes writes, on from the restored revision
        assert put(procs[1].url, "after-restore", "yes") == source.rev + 1
        _rev, kvs = all_keys(procs[2].url)
        assert {base64.b64decode(kv["key"]) for kv in kvs} == \
            {base64.b64decode(kv["key"]) for kv in source.keys} | {b"after-restore"}
    finally:
        for p in procs:
            p.cleanup()


def newest_member_snap(member: FastkvProcess) -> str:
    """The newest member/snap/*.snap of a source member (FastkvProcess puts the data dir
    at <its dir>/member), copied out of its data dir, as an operator would."""
    snap_dir = os.path.join(member.data_dir, "member", "member", "snap")
    deadline = time.monotonic() + 60
    while True:
        files = sorted(glob.glob(os.path.join(snap_dir, "*.snap")))
        if files or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert files, f"no snapshot file in {snap_dir}"
    copy = os.path.join(os.path.dirname(member.data_dir), f"copied-{os.path.basename(files[-1])}")
    shutil.copyfile(files[-1], copy)
    return copy


def test_restore_from_a_member_snap_file_with_skip_hash_check(source):
    snap = newest_member_snap(source.cluster.members[0])
    try:
        st = status_json(snap)
        assert st["totalSize"] == os.path.getsize(snap)        # no digest, no padding
        solo = FastkvProcess(data_dir=os.path.join(source.root, "solo"), name="solo")
        data_dir = os.path.join(solo.data_dir, "member")
        args = restore_args(solo, f"solo={solo.peer_url}", data_dir, token="etcd-cluster")
        rc, out, err = ctl("snapshot", "restore", snap, *args)
        assert (rc, out, err) == (1, "", "Error: snapshot missing hash but "
                                         "--skip-hash-check=false\n")
        assert not os.path.exists(data_dir)
        assert ok("snapshot", "restore", snap, *args, "--skip-hash-check") == ""
        try:
            solo.start(60)
            rev, kvs = all_keys(solo.url)
            assert rev == st["revision"]
            assert kvs == all_keys(source.cluster.urls[0], rev)[1]   # the source at that rev
            assert [int(m["ID"]) for m in members(solo.url)["members"]] == \
                [member_id([solo.peer_url], "etcd-cluster")]
            assert put(solo.url, "solo-write", "1") == rev + 1
        finally:
            solo.cleanup()
    finally:
        os.unlink(snap)


def test_restore_with_a_dedicated_wal_dir(source):
    """restore --wal-dir puts the WAL where the member's --wal-dir then finds it."""
    solo = FastkvProcess(data_dir=os.path.join(source.root, "walsolo"), name="walsolo")
    wal_dir = os.path.join(source.root, "walsolo-wal")
    solo.extra_args = ["--wal-dir", wal_dir]
    args = restore_args(solo, f"walsolo={solo.peer_url}", os.path.join(solo.data_dir, "member"),
                        token="etcd-cluster")
    assert ok("snapshot", "restore", source.saved, *args, "--wal-dir", wal_dir) == ""
    assert any(f.endswith(".wal") for f in os.listdir(wal_dir))
    assert not os.path.exists(os.path.join(solo.data_dir, "member", "member", "wal"))
    try:
        solo.start(60)
        assert all_keys(solo.url) == (source.rev, source.keys)
        assert put(solo.url, "wal-dir-write", "1") == source.rev + 1
        solo.stop()
        solo.start(60)   # the write is in the dedicated WAL
        assert all_keys(solo.url)[0] == source.rev + 1
    finally:
        solo.cleanup()
