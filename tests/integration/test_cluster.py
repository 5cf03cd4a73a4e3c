"""Real 3-member clusters on loopback: elections, failover, partitions, membership, catch-up.

Every process is started by the `cluster` fixture (or by the test through the
Cluster object) and stopped by it, also when the test fails.
"""
from __future__ import annotations

import base64
import os
import signal
import threading
import time

import pytest
import requests

from servers import Cluster, FastkvProcess

FAST = ["--heartbeat-interval", "50", "--election-timeout", "500"]


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def post(url: str, path: str, body: dict, timeout: float = 10) -> dict:
    r = requests.post(url + path, json=body, timeout=timeout)
    data = r.json()
    if r.status_code != 200:
        raise RuntimeError(f"{path} -> {r.status_code} {data}")
    return data


def add_member(url: str, peer_url: str, timeout: float = 20) -> dict:
    """member add, retried while the cluster is "unhealthy": as etcd, the leader adds a
    voter only once every voter has been connected to it for 5 s (just started,
    restarted or reconnected members do not count yet)."""
    deadline = time.monotonic() + timeout
    while True:
        r = requests.post(url + "/v3/cluster/member/add", json={"peerURLs": [peer_url]},
                          timeout=10)
        if r.status_code == 200:
            return r.json()
        assert r.status_code == 503 and time.monotonic() < deadline, r.text
        time.sleep(0.25)


def put(url: str, key: str, value: str) -> dict:
    return post(url, "/v3/kv/put", {"key": b64(key), "value": b64(value)})


def get(url: str, key: str, serializable: bool = False) -> str | None:
    r = post(url, "/v3/kv/range", {"key": b64(key), "serializable": serializable})
    kvs = r.get("kvs")
    return base64.b64decode(kvs[0]["value"]).decode() if kvs else None


def count(url: str, prefix: str, serializable: bool = False) -> int:
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    r = post(url, "/v3/kv/range", {"key": b64(prefix), "range_end": b64(end),
                                    "count_only": True, "serializable": serializable})
    return int(r.get("count", 0))


def status(url: str, timeout: float = 2) -> dict:
    return post(url, "/v3/maintenance/status", {}, timeout=timeout)


def leader_of(cluster: Cluster, among=None, timeout: float = 15.0):
    """The member all reachable members agree leads, once they agree."""
    members = among or [m for m in cluster.members if m.proc and m.proc.poll() is None]
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            leads = {int(status(m.url)["leader"]) for m in members}
            if len(leads) == 1 and 0 not in leads:
                lead = leads.pop()
                ids = {int(status(m.url)["header"]["member_id"]): m for m in members}
                if lead in ids:
                    return ids[lead]
            last = leads
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"no agreed leader within {timeout}s: {last}")


@pytest.fixture
def cluster():
    c = Cluster(FastkvProcess, 3, extra_args=FAST).start()
    try:
        yield c
    finally:
        c.stop()


def test_three_members_agree_and_any_member_serves(cluster):
    lead = leader_of(cluster)
    followers = [m for m in cluster.members if m is not lead]
    # A write through a follower is forwarded to the leader and visible everywhere.
    put(followers[0].url, "k", "from-follower")
    for m in cluster.members:
        assert get(m.url, "k") == "from-follower"   # linearizable: ReadIndex via the leader
    members = post(followers[1].url, "/v3/cluster/member/list", {})["members"]
    assert sorted(m["name"] for m in members) == ["m0", "m1", "m2"]
    assert sorted(m["clientURLs"][0] for m in members) == sorted(cluster.urls)
    st = [status(m.url) for m in cluster.members]
    assert len({s["header"]["cluster_id"] for s in st}) == 1
    assert len({s["raftTerm"] for s in st}) == 1
    # Leases work through a follower too (keepalive is forwarded to the leader).
    lease = post(followers[0].url, "/v3/lease/grant", {"TTL": 30})
    ka = requests.post(followers[1].url + "/v3/lease/keepalive", json={"ID": lease["ID"]},
                       timeout=10)
    assert '"TTL":"30"' in ka.text
    ttl = post(followers[1].url, "/v3/lease/timetolive", {"ID": lease["ID"]})
    assert int(ttl["TTL"]) > 25 and int(ttl["grantedTTL"]) == 30


class Writer(threading.Thread):
    """Writes unique keys to any member until stopped; remembers what was acknowledged."""

    def __init__(self, urls, tag):
        super().__init__(daemon=True)
        self.urls, self.tag = list(urls), tag
        self.acked: list[str] = []
        self.stop_flag = threading.Event()

    def run(self):
        i = 0
        while not self.stop_flag.is_set():
            url = self.urls[i % len(self.urls)]
            key = f"w/{self.tag}/{i:06d}"
            i += 1
            try:
                put(url, key, "v")
                self.acked.append(key)
            except (OSError, RuntimeError, ValueError):
                time.sleep(0.02)


def test_leader_killed_new_leader_nothing_lost_and_it_catches_up(cluster):
    old = leader_of(cluster)
    others = [m for m in cluster.members if m is not old]
    writers = [Writer([m.url for m in others], t) for t in range(4)]
    for w in writers:
        w.start()
    time.sleep(1.0)
    old.kill(signal.SIGKILL)
    t0 = time.monotonic()
    new = leader_of(cluster, among=others)
    elected_after = time.monotonic() - t0
    assert new is not old
    assert elected_after < 5.0          # a few election timeouts (500 ms here)
    time.sleep(1.0)
    for w in writers:
        w.stop_flag.set()
    for w in writers:
        w.join(15)
    acked = [k for w in writers for k in w.acked]
    assert len(acked) > 50
    old.start(timeout=30)
    for m in cluster.members:
        deadline = time.monotonic() + 20
        while count(m.url, "w/", serializable=True) < len(acked) and time.monotonic() < deadline:
            time.sleep(0.1)
    for m in cluster.members:
        for k in acked[:: max(1, len(acked) // 200)]:
            assert get(m.url, k, serializable=True) == "v", (m.member_name, k)
        assert count(m.url, "w/", serializable=True) >= len(acked)


def test_paused_leader_is_replaced_and_rejoins_without_split_brain(cluster):
    old = leader_of(cluster)
    others = [m for m in cluster.members if m is not old]
    old.proc.send_signal(signal.SIGSTOP)
    try:
        new = leader_of(cluster, among=others)
        assert new is not old
        put(others[0].url, "during-pause", "1")
    finally:
        old.proc.send_signal(signal.SIGCONT)
    # The old leader hears of the new term, steps down and follows.
    agreed = leader_of(cluster)
    assert agreed is not old
    st = status(old.url)
    assert int(st["leader"]) == int(status(agreed.url)["header"]["member_id"])
    assert get(old.url, "during-pause") == "1"
    put(old.url, "after-resume", "2")        # forwarded to the new leader
    for m in cluster.members:
        assert get(m.url, "after-resume") == "2"


def test_add_a_fourth_member_then_remove_another(cluster):
    put(cluster.urls[0], "before-add", "x")
    newm = cluster.new_member("m3")
    added = add_member(cluster.urls[1], newm.peer_url)
    assert added["member"]["peerURLs"] == [newm.peer_url]
    assert len(added["members"]) == 4
    newm.start(timeout=30)
    cluster.members.append(newm)
    assert get(newm.url, "before-add") == "x"
    members = post(newm.url, "/v3/cluster/member/list", {})["members"]
    assert sorted(m["name"] for m in members) == ["m0", "m1", "m2", "m3"]
    # Remove a member that is not the one we ask.
    victim = cluster.members[0]
    vid = status(victim.url)["header"]["member_id"]
    resp = post(newm.url, "/v3/cluster/member/remove", {"ID": vid})
    assert len(resp["members"]) == 3
    deadline = time.monotonic() + 10
    while victim.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert victim.proc.poll() is not None, "a removed member stops:\n" + victim.log()
    cluster.members.remove(victim)
    # If the victim led, the others elect a new leader once its heartbeats stop; a
    # write forwarded to it in between is lost with it (etcd answers such a write
    # with a timeout too, and clients retry): wait for a leader that is still here.
    deadline = time.monotonic() + 20
    while int(status(newm.url).get("leader", 0)) in (0, int(vid)):
        assert time.monotonic() < deadline, "no new leader after removing the old one"
        time.sleep(0.1)
    put(newm.url, "after-remove", "y")
    for m in cluster.members:
        assert get(m.url, "after-remove") == "y"
    # Re-adding the same ID is refused; removing an unknown one too.
    r = requests.post(newm.url + "/v3/cluster/member/remove", json={"ID": vid}, timeout=10)
    assert r.status_code == 404 and r.json()["error"] == "etcdserver: member not found"


def test_strict_reconfig_refuses_add_while_a_member_is_down(cluster):
    down = cluster.members[2]
    down.kill(signal.SIGKILL)
    time.sleep(6)   # longer than etcd's 5 s "recently active" window
    url = cluster.urls[0]
    r = requests.post(url + "/v3/cluster/member/add",
                      json={"peerURLs": ["http://127.0.0.1:1"]}, timeout=10)
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "etcdserver: unhealthy cluster"
    assert len(post(url, "/v3/cluster/member/list", {})["members"]) == 3


def test_member_behind_compacted_logs_catches_up_by_snapshot():
    c = Cluster(FastkvProcess, 3, extra_args=FAST + [
        "--snapshot-count", "200", "--experimental-snapshot-catchup-entries", "20"]).start()
    try:
        lead = leader_of(c)
        lagger = next(m for m in c.members if m is not lead)
        lagger.stop()
        live = [m for m in c.members if m is not lagger]
        for i in range(600):
            put(live[i % 2].url, f"s/{i:04d}", str(i))
        lagger.start(timeout=30)
        deadline = time.monotonic() + 20
        while count(lagger.url, "s/", serializable=True) < 600 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert count(lagger.url, "s/", serializable=True) == 600
        assert get(lagger.url, "s/0599", serializable=True) == "599"
        assert "installed the leader's snapshot" in lagger.log()
        # A member added now, after every snapshot so far: the leader's newest
        # snapshot predates it, so a new one is taken for it.
        newm = c.new_member("m3")
        add_member(lead.url, newm.peer_url)
        newm.start(timeout=30)
        c.members.append(newm)
        assert count(newm.url, "s/") == 600
        assert "installed the leader's snapshot" in newm.log()
    finally:
        c.stop()


def test_data_dir_of_another_cluster_refuses_to_start(tmp_path):
    a = FastkvProcess(data_dir=str(tmp_path), token="cluster-a").start()
    a.stop()
    b = FastkvProcess(data_dir=str(tmp_path), token="cluster-b")
    b.client_port, b.peer_port = a.client_port, a.peer_port
    b.url, b.peer_url = a.url, a.peer_url
    try:
        with pytest.raises(RuntimeError) as exc:
            b.start(timeout=15)
        assert "another cluster" in str(exc.value)
    finally:
        b.cleanup()
        a.cleanup()


def test_v2_members_and_stats(tmp_path):
    c = Cluster(FastkvProcess, 3, extra_args=FAST + ["--enable-v2"]).start()
    try:
        lead = leader_of(c)
        follower = next(m for m in c.members if m is not lead)
        r = requests.get(follower.url + "/v2/members", timeout=10)
        assert r.status_code == 200
        assert r.headers["X-Etcd-Cluster-Id"]
        assert sorted(m["name"] for m in r.json()["members"]) == ["m0", "m1", "m2"]
        me = requests.get(lead.url + "/v2/stats/self", timeout=10).json()
        assert me["state"] == "StateLeader" and me["name"] == lead.member_name
        fs = requests.get(follower.url + "/v2/stats/self", timeout=10).json()
        assert fs["state"] == "StateFollower" and fs["leaderInfo"]["leader"] == me["id"]
        ls = requests.get(lead.url + "/v2/stats/leader", timeout=10)
        assert ls.status_code == 200 and len(ls.json()["followers"]) == 2
        nl = requests.get(follower.url + "/v2/stats/leader", timeout=10)
        assert nl.status_code == 403 and nl.json() == {"message": "not current leader"}
        ml = requests.get(follower.url + "/v2/members/leader", timeout=10).json()
        assert ml["id"] == me["id"]
        # A peer URL that a member has: refused when the change is applied (once every
        # voter has been connected for 5 s: until then the cluster counts as unhealthy).
        deadline = time.monotonic() + 20
        while True:
            r = requests.post(follower.url + "/v2/members", json={"peerURLs": [lead.peer_url]},
                              timeout=10)
            if r.status_code != 503 or time.monotonic() > deadline:
                break
            assert r.json() == {"message": "etcdserver: unhealthy cluster"}
            time.sleep(0.25)
        assert r.status_code == 409 and r.json() == {"message": "membership: peerURL exists"}
        # Add then delete through v2.
        newm = c.new_member("m3")
        r = requests.post(follower.url + "/v2/members", json={"peerURLs": [newm.peer_url]},
                          timeout=10)
        assert r.status_code == 201, r.text
        new_id = r.json()["id"]
        assert r.json()["peerURLs"] == [newm.peer_url] and r.json()["name"] == ""
        # With a voter that never started, another add would leave the cluster
        # short of connected voters: strict reconfiguration refuses it.
        r = requests.post(follower.url + "/v2/members",
                          json={"peerURLs": ["http://127.0.0.1:9"]}, timeout=10)
        assert r.status_code == 503 and r.json() == {"message": "etcdserver: unhealthy cluster"}
        r = requests.delete(follower.url + f"/v2/members/{new_id}", timeout=10)
        assert r.status_code == 204
        r = requests.delete(follower.url + f"/v2/members/{new_id}", timeout=10)
        assert r.status_code == 410
    finally:
        c.stop()


def test_health_is_false_without_a_leader(cluster):
    for m in cluster.members[1:]:
        m.kill(signal.SIGKILL)
    lone = cluster.members[0]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        r = requests.get(lone.url + "/health", timeout=15)
        if r.status_code == 503:
            break
        time.sleep(0.2)
    assert r.status_code == 503 and r.json() == {"health": "false"}


def test_leases_survive_a_leader_change_and_expire_through_the_new_leader(cluster):
    """A new leader gives every lease its TTL again (etcd's Promote), so keys do not
    expire because of an election; expiry still happens, proposed by the new leader."""
    old = leader_of(cluster)
    others = [m for m in cluster.members if m is not old]
    lease = post(others[0].url, "/v3/lease/grant", {"TTL": 4})
    post(others[0].url, "/v3/kv/put", {"key": b64("leased"), "value": b64("v"),
                                        "lease": lease["ID"]})
    time.sleep(2.0)
    killed_at = time.monotonic()
    old.kill(signal.SIGKILL)
    leader_of(cluster, among=others)
    # Without the extension the lease would expire ~2 s after the kill.
    while time.monotonic() - killed_at < 3.0:
        assert get(others[1].url, "leased") == "v"
        time.sleep(0.2)
    deadline = killed_at + 15
    while get(others[1].url, "leased") is not None:
        assert time.monotonic() < deadline, "the new leader never expired the lease"
        time.sleep(0.2)
    ttl = post(others[0].url, "/v3/lease/timetolive", {"ID": lease["ID"]})
    assert int(ttl["TTL"]) == -1


def test_sigterm_while_waiting_for_a_quorum_exits_cleanly():
    """A member whose peers never come waits for a leader; SIGTERM still stops it."""
    c = Cluster(FastkvProcess, 3, extra_args=FAST)
    try:
        lone = c.members[0]
        lone.launch()
        time.sleep(2.0)
        assert lone.proc.poll() is None and not lone.healthy()
        lone.proc.send_signal(signal.SIGTERM)
        assert lone.proc.wait(timeout=15) == 0, lone.log()
    finally:
        c.stop()
