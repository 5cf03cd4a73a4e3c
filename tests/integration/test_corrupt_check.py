"""Corruption checks: the leader's periodic HashKV comparison raises the CORRUPT alarm for
a member whose state drifted (--experimental-corrupt-check-time), and a member that
finds its state differs from its peers' refuses to start
(--experimental-initial-corrupt-check). The drift is the `corrupt-values` fault: that
member damages the values of the puts it applies (fastkv/faults.py)."""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request

import pytest

from servers import Cluster, FastkvProcess


def post(url: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        return json.loads(e.read())


def b64(text: str) -> str:
    import base64
    return base64.b64encode(text.encode()).decode()


def test_a_drifted_member_gets_the_corrupt_alarm_and_cannot_start_again(tmp_path):
    cluster = Cluster(size=3, extra_args=["--experimental-corrupt-check-time", "1s",
                                          "--snapshot-count", "5"])
    faults = {}
    for m in cluster.members:
        faults[m] = str(tmp_path / f"{m.member_name}.faults")
        open(faults[m], "w").close()
        m.extra_args = m.extra_args + ["--experimental-fault-file", faults[m]]
    cluster.start()
    try:
        status = {m: post(m.url, "/v3/maintenance/status", {}) for m in cluster.members}
        leader_id = int(next(iter(status.values()))["leader"])
        follower = next(m for m, s in status.items()
                        if int(s["header"]["member_id"]) != leader_id)
        follower_id = int(status[follower]["header"]["member_id"])
        leader = next(m for m, s in status.items() if int(s["header"]["member_id"]) == leader_id)
        with open(faults[follower], "w") as f:
            f.write("corrupt-values\n")
        time.sleep(0.5)   # the member re-reads its fault file every 100 ms
        for i in range(8):   # past --snapshot-count: the follower's snapshot holds the damage
            post(leader.url, "/v3/kv/put", {"key": b64(f"k{i}"), "value": b64("v")})
        deadline = time.monotonic() + 20
        while True:
            alarms = post(leader.url, "/v3/maintenance/alarm", {"action": "GET"}).get("alarms")
            if alarms:
                break
            assert time.monotonic() < deadline, "no CORRUPT alarm"
            time.sleep(0.2)
        assert alarms == [{"memberID": str(follower_id), "alarm": "CORRUPT"}]
        # every write is refused while the cluster is marked corrupt
        err = post(leader.url, "/v3/kv/put", {"key": b64("x"), "value": b64("y")})
        assert err["message"] == "etcdserver: corrupt cluster"
        # the drifted member, restarted with the initial check, refuses to serve
        follower.stop()
        open(faults[follower], "w").close()
        follower.extra_args = follower.extra_args + ["--experimental-initial-corrupt-check"]
        with pytest.raises(RuntimeError):
            follower.start(timeout=30)
        assert "found data inconsistency with peers" in follower.log()
    finally:
        cluster.stop()


def test_the_initial_check_passes_for_members_that_agree(tmp_path):
    cluster = Cluster(size=3, extra_args=["--experimental-initial-corrupt-check"]).start()
    try:
        for i in range(3):
            post(cluster.urls[0], "/v3/kv/put", {"key": b64(f"k{i}"), "value": b64("v")})
        m = cluster.members[1]
        m.stop()
        m.start()   # checks against its peers before serving: same state, it serves
        assert "succeeded on initial corruption checking" in m.log()
    finally:
        cluster.stop()
