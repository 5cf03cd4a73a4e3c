"""The `python-etcd` client (v2 API) against fastkv, and against etcd 3.4 as the
reference, both with --enable-v2: keys, directories, TTLs, compare-and-swap, in-order
keys, watches (recursive, from an index), cluster info and its Lock recipe."""
from __future__ import annotations

import threading
import time

import etcd
import pytest

from servers import EtcdProcess, FastkvProcess


@pytest.fixture(params=["fastkv", pytest.param("etcd", marks=pytest.mark.etcd)])
def client(request):
    if request.param == "fastkv":
        srv = FastkvProcess(extra_args=["--enable-v2"]).start()
    else:
        srv = EtcdProcess(extra_args=["--enable-v2=true"]).start()
    try:
        yield etcd.Client(host="127.0.0.1", port=srv.client_port), srv
    finally:
        srv.stop()


def test_keys_dirs_ttl_and_cas(client):
    c, _srv = client
    assert c.write("/k", "v").value == "v" and c.read("/k").value == "v"
    c.write("/dir/a", "1")
    c.write("/dir/b", "2")
    assert sorted(ch.key for ch in c.read("/dir", recursive=True).children) == \
        ["/dir/a", "/dir/b"]
    c.write("/t", "x", ttl=1)
    deadline = time.monotonic() + 10
    while True:     # expired by the leader's sync (within about a second)
        try:
            c.read("/t")
        except etcd.EtcdKeyNotFound:
            break
        assert time.monotonic() < deadline, "a ttl=1 key did not expire"
        time.sleep(0.2)
    assert c.test_and_set("/k", "v2", "v").value == "v2"
    with pytest.raises(etcd.EtcdCompareFailed):
        c.test_and_set("/k", "v3", "nope")
    with pytest.raises(etcd.EtcdAlreadyExist):
        c.write("/k", "x", prevExist=False)
    first = c.write("/q", "job1", append=True)
    second = c.write("/q", "job2", append=True)
    assert first.key < second.key and len(first.key.rsplit("/", 1)[1]) == 20
    with pytest.raises(etcd.EtcdDirNotEmpty):
        c.delete("/dir", dir=True)
    c.delete("/dir", recursive=True)
    with pytest.raises(etcd.EtcdKeyNotFound):
        c.read("/dir")


def test_watches_cluster_info_and_lock(client):
    c, srv = client
    idx = c.write("/k", "v1").modifiedIndex
    c.write("/k", "v2")
    assert c.watch("/k", index=idx).value == "v1"        # from the history

    def later():
        time.sleep(0.5)
        etcd.Client(host="127.0.0.1", port=srv.client_port).write("/dir/c", "3")
    t = threading.Thread(target=later)
    t.start()
    ev = c.watch("/dir", recursive=True, timeout=10)
    t.join()
    assert (ev.key, ev.value, ev.action) == ("/dir/c", "3", "set")
    assert c.machines == [srv.url]
    assert c.leader["clientURLs"] == [srv.url] and len(c.members) == 1
    lock = etcd.Lock(c, "mylock")
    lock.acquire(lock_ttl=10)
    assert lock.is_acquired
    other = etcd.Lock(etcd.Client(host="127.0.0.1", port=srv.client_port), "mylock")
    assert other.acquire(blocking=False) is False
    lock.release()
    assert other.acquire(lock_ttl=10, timeout=5) is True
    other.release()


@pytest.mark.parametrize("kind", ["fastkv", pytest.param("etcd", marks=pytest.mark.etcd)])
def test_reconnects_to_another_member_when_one_is_killed(kind):
    """allow_reconnect: the client learns the members' client URLs (/v2/machines), and
    when the member it talks to dies it goes on with another, reads and writes intact."""
    from servers import Cluster
    if kind == "fastkv":
        cluster = Cluster(FastkvProcess, 3, extra_args=["--enable-v2"])
    else:
        cluster = Cluster(EtcdProcess, 3, extra_args=["--enable-v2=true"])
    try:
        cluster.start()
        first = cluster.members[0]
        c = etcd.Client(host="127.0.0.1", port=first.client_port, allow_reconnect=True,
                        read_timeout=5)
        assert sorted(c.machines) == sorted(cluster.urls)
        assert sorted(c._machines_cache) == sorted(u for u in cluster.urls if u != first.url)
        for i in range(5):
            c.write(f"/svc/web/{i}", f"10.0.0.{i}:80", ttl=60)
        idx = c.write("/config/mode", "a").modifiedIndex
        first.kill()
        # the next requests go to the surviving members: a write and reads of everything
        c.write("/config/mode", "b", prevValue="a")
        assert c.base_uri != first.url
        assert c.read("/config/mode").value == "b"
        assert sorted(ch.value for ch in c.read("/svc/web", recursive=True).children) == \
            [f"10.0.0.{i}:80" for i in range(5)]
        assert c.read("/config/mode", wait=True, waitIndex=idx + 1).value == "b"
        assert sorted(c.machines) == sorted(cluster.urls)   # members, killed or not
    finally:
        cluster.stop()
