"""--force-new-cluster and backups: a member's data becomes a new one-member cluster.

From a member's own data dir (the others are gone for good), and from a backup of a
running member's data dir (etcdctl v2 `backup`: new IDs, membership taken out, v3
data only with --with-v3), as an operator recovers a cluster that lost its quorum.
"""
from __future__ import annotations

import os
import subprocess
import sys

import requests

from servers import Cluster, FastkvProcess
from test_cluster import FAST, count, get, post, put

V2 = ["--enable-v2"]


def v2_put(url: str, key: str, value: str) -> None:
    r = requests.put(f"{url}/v2/keys/{key}", data={"value": value}, timeout=10)
    assert r.status_code in (200, 201), r.text


def v2_get(url: str, key: str):
    r = requests.get(f"{url}/v2/keys/{key}", timeout=10)
    return r.json().get("node", {}).get("value") if r.status_code == 200 else None


def members(url: str) -> list[dict]:
    return post(url, "/v3/cluster/member/list", {})["members"]


def load(cluster: Cluster) -> None:
    url = cluster.urls[0]
    for i in range(60):   # past --snapshot-count: the data dirs hold a snapshot and WAL after it
        put(url, f"k/{i:03d}", f"v{i}")
        v2_put(url, f"dir/{i:03d}", f"w{i}")


def backup(data_dir: str, dest: str, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ETCDCTL_API="2")
    return subprocess.run([sys.executable, "-m", "fastkv.cli", "backup", "--data-dir", data_dir,
                           "--backup-dir", dest, *extra], capture_output=True, text=True,
                          env=env, timeout=60)


def test_a_members_data_restarts_as_a_one_member_cluster():
    c = Cluster(FastkvProcess, 3, extra_args=FAST + V2 + ["--snapshot-count", "50"]).start()
    try:
        load(c)
        old_cluster = post(c.urls[0], "/v3/maintenance/status", {})["header"]["cluster_id"]
        survivor = c.members[1]
        for m in c.members:
            m.stop()
        survivor.extra_args = survivor.extra_args + ["--force-new-cluster"]
        survivor.start(timeout=30)
        url = survivor.url
        ms = members(url)
        assert [m["name"] for m in ms] == ["m1"] and ms[0]["peerURLs"] == [survivor.peer_url]
        st = post(url, "/v3/maintenance/status", {})
        assert st["header"]["cluster_id"] == old_cluster          # the same cluster, re-formed
        assert count(url, "k/") == 60 and v2_get(url, "dir/059") == "w59"
        put(url, "after", "x")                                    # a quorum of one
        assert get(url, "after") == "x"
        # started again without the flag it stays a one-member cluster
        survivor.stop()
        survivor.extra_args = [a for a in survivor.extra_args if a != "--force-new-cluster"]
        survivor.start(timeout=30)
        assert [m["name"] for m in members(survivor.url)] == ["m1"]
        assert get(survivor.url, "after") == "x"
    finally:
        c.stop()


def test_backup_of_a_running_member_starts_a_new_cluster(tmp_path):
    c = Cluster(FastkvProcess, 3, extra_args=FAST + V2 + ["--snapshot-count", "50"]).start()
    restored = []
    try:
        load(c)
        # servers.py runs a member with --data-dir <its data_dir>/member
        src = os.path.join(c.members[0].data_dir, "member")
        for name, extra in (("v2only", []), ("withv3", ["--with-v3"])):
            dest = str(tmp_path / name / "member")
            p = backup(src, dest, *extra)
            assert p.returncode == 0, p.stderr
            assert os.path.isdir(os.path.join(dest, "member", "wal"))
            # a second backup into the same place is refused, nothing overwritten
            assert backup(src, dest, *extra).returncode != 0
        old = post(c.urls[0], "/v3/maintenance/status", {})["header"]
        for name in ("v2only", "withv3"):
            srv = FastkvProcess(data_dir=str(tmp_path / name),
                                extra_args=FAST + V2 + ["--force-new-cluster"])
            restored.append(srv)
            srv.start(timeout=30)
            url = srv.url
            ms = members(url)
            assert len(ms) == 1 and ms[0]["ID"] != old["member_id"]
            assert ms[0]["peerURLs"] == [srv.peer_url]
            st = post(url, "/v3/maintenance/status", {})["header"]
            assert st["cluster_id"] != old["cluster_id"]
            assert v2_get(url, "dir/000") == "w0" and v2_get(url, "dir/059") == "w59"
            assert count(url, "k/") == (60 if name == "withv3" else 0)
            v2_put(url, "dir/new", "n")
            put(url, "new", "n")
            assert v2_get(url, "dir/new") == "n" and get(url, "new") == "n"
    finally:
        for srv in restored:
            srv.cleanup()
        c.stop()
