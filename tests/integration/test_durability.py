"""Acknowledged writes survive SIGKILL; restarts keep state, revisions and leases."""
import base64
import random
import threading
import time

import requests

from servers import FastkvProcess


def b64(s: bytes) -> str:
    return base64.b64encode(s).decode()


def put(session, url, key: bytes, value: bytes, timeout=10):
    r = session.post(url + "/v3/kv/put", json={"key": b64(key), "value": b64(value)},
                     timeout=timeout)
    r.raise_for_status()
    return int(r.json()["header"]["revision"])


def get(url, key: bytes, **extra):
    r = requests.post(url + "/v3/kv/range", json={"key": b64(key), **extra}, timeout=10)
    r.raise_for_status()
    return r.json()


def get_all(url, prefix: bytes) -> dict[bytes, bytes]:
    end = prefix[:-1] + bytes([prefix[-1] + 1])
    body = get(url, prefix, range_end=b64(end))
    return {base64.b64decode(kv["key"]): base64.b64decode(kv.get("value", ""))
            for kv in body.get("kvs", [])}


def test_every_acknowledged_put_survives_sigkill():
    # A small snapshot count, so snapshots and WAL segment release happen under load too.
    srv = FastkvProcess(extra_args=["--snapshot-count", "300"]).start()
    acked: dict[bytes, bytes] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(n):
        s = requests.Session()
        i = 0
        while not stop.is_set() and i < 5000:
            key = b"/crash/%d/%06d" % (n, i)
            val = random.randbytes(random.randint(1, 300))
            try:
                put(s, srv.url, key, val, timeout=5)
            except (requests.RequestException, ValueError):
                return  # the server died under us: this put is not acknowledged
            with lock:
                acked[key] = val
            i += 1

    try:
        threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(acked) < 1500 and time.monotonic() < deadline:
            time.sleep(0.05)
        srv.kill()  # SIGKILL while the writers are mid-flight
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert len(acked) >= 300, "the load did not get going"
        srv.start()
        got = get_all(srv.url, b"/crash/")
        missing = [k for k in acked if k not in got]
        assert not missing, f"{len(missing)} acknowledged puts lost, e.g. {missing[:3]}"
        wrong = [k for k, v in acked.items() if got[k] != v]
        assert not wrong, f"values differ for {wrong[:3]}"
        # The member keeps working after recovery.
        put(requests.Session(), srv.url, b"/after", b"crash")
        assert get_all(srv.url, b"/after") == {b"/after": b"crash"}
    finally:
        stop.set()
        srv.cleanup()


def test_restart_keeps_revisions_history_and_leases():
    srv = FastkvProcess(extra_args=["--snapshot-count", "50"]).start()
    try:
        s = requests.Session()
        for i in range(120):  # crosses two snapshots
            put(s, srv.url, b"k", b"v%d" % i)
        rev = int(get(srv.url, b"k")["header"]["revision"])
        lease = s.post(srv.url + "/v3/lease/grant", json={"TTL": 600}, timeout=10).json()
        lease_id = lease["ID"]
        s.post(srv.url + "/v3/kv/put", json={"key": b64(b"leased"), "value": b64(b"x"),
                                             "lease": lease_id}, timeout=10).raise_for_status()
        srv.stop()
        srv.start()
        body = get(srv.url, b"k")
        assert base64.b64decode(body["kvs"][0]["value"]) == b"v119"
        assert int(body["kvs"][0]["version"]) == 120
        old = get(srv.url, b"k", revision=rev - 10)
        assert base64.b64decode(old["kvs"][0]["value"]) == b"v109"
        assert int(get(srv.url, b"leased")["header"]["revision"]) == rev + 1
        ttl = s.post(srv.url + "/v3/lease/timetolive", json={"ID": lease_id, "keys": True},
                     timeout=10).json()
        assert int(ttl["TTL"]) > 500
        assert [base64.b64decode(k) for k in ttl["keys"]] == [b"leased"]
        # The revision moves on from where it was.
        assert put(s, srv.url, b"k", b"after") == rev + 2
    finally:
        srv.cleanup()


def test_lease_expiry_deletes_keys_once():
    srv = FastkvProcess().start()
    try:
        s = requests.Session()
        lease = s.post(srv.url + "/v3/lease/grant", json={"TTL": 2}, timeout=10).json()
        for k in (b"e1", b"e2"):
            s.post(srv.url + "/v3/kv/put", json={"key": b64(k), "value": b64(b"x"),
                                                 "lease": lease["ID"]},
                   timeout=10).raise_for_status()
        rev = int(get(srv.url, b"e1")["header"]["revision"])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and get_all(srv.url, b"e"):
            time.sleep(0.2)
        assert get_all(srv.url, b"e") == {}
        # Both keys went in ONE revision (the revoke), and the lease is gone.
        assert int(get(srv.url, b"e1")["header"]["revision"]) == rev + 1
        r = s.post(srv.url + "/v3/lease/revoke", json={"ID": lease["ID"]}, timeout=10)
        assert r.status_code == 404
    finally:
        srv.cleanup()


def test_refuses_snapshots_without_a_wal():
    import os
    import shutil
    import pytest
    srv = FastkvProcess(extra_args=["--snapshot-count", "20"]).start()
    try:
        s = requests.Session()
        for i in range(30):
            put(s, srv.url, b"k%d" % i, b"v")
        srv.stop()
        member = os.path.join(srv.data_dir, "member", "member")
        assert os.listdir(os.path.join(member, "snap"))
        shutil.rmtree(os.path.join(member, "wal"))
        with pytest.raises(RuntimeError, match="no WAL"):
            srv.start(timeout=15)
    finally:
        srv.cleanup()
