"""--experimental-fault-file on a real member (fastkv/faults.py): ``clock-jump`` moves the
leader's lease clock (a lease expires early), ``fsync-delay`` makes persistence slow without
stopping the member from serving, and taking a directive out restores normal behaviour.
(Bare member IDs, the partition directive, are exercised by tests/chaos/test_nemesis_short.py.)"""
from __future__ import annotations

import base64
import os
import threading
import time

import pytest
import requests

from servers import FastkvProcess


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


@pytest.fixture
def member(tmp_path):
    path = str(tmp_path / "faults")
    srv = FastkvProcess(extra_args=["--experimental-fault-file", path]).start()
    try:
        yield srv, path
    finally:
        srv.cleanup()


def write(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def call(srv, api: str, body: dict, timeout: float = 10) -> dict:
    r = requests.post(srv.url + api, json=body, timeout=timeout)
    r.raise_for_status()
    return r.json()


def ttl(srv, lease: str) -> int:
    return int(call(srv, "/v3/lease/timetolive", {"ID": lease}).get("TTL", 0))


def until(pred, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (value := pred()):
        assert time.monotonic() < deadline, f"not in {timeout:.0f} s: {what}"
        time.sleep(0.05)
    return value


def test_clock_jump_moves_lease_expiry_and_expires_leases_early(member):
    srv, path = member
    lease = call(srv, "/v3/lease/grant", {"TTL": 60})["ID"]
    call(srv, "/v3/kv/put", {"key": b64("held"), "value": b64("x"), "lease": lease})
    assert ttl(srv, lease) > 40
    write(path, "clock-jump 30\n")                      # the clock reads 30 s ahead
    until(lambda: ttl(srv, lease) <= 30, "the lease clock never jumped")
    write(path, "clock-jump thirty\n")                  # bad input changes nothing
    time.sleep(0.3)                                     # (read every 100 ms)
    assert 0 < ttl(srv, lease) <= 30
    write(path, "")                                     # removed: the clock is back
    until(lambda: ttl(srv, lease) > 40, "the lease clock never came back")
    assert call(srv, "/v3/kv/range", {"key": b64("held")}).get("kvs")
    # A jump beyond the TTL: the leader expires the lease at once, and its key goes with it.
    write(path, "clock-jump 90\n")
    until(lambda: ttl(srv, lease) == -1, "the lease never expired")
    until(lambda: not call(srv, "/v3/kv/range", {"key": b64("held")}).get("kvs"),
          "the lease's key outlived it")
    write(path, "")
    fresh = call(srv, "/v3/lease/grant", {"TTL": 60})["ID"]
    until(lambda: ttl(srv, fresh) > 40, "a new lease does not get its TTL")


def test_fsync_delay_slows_persistence_not_serving(member):
    srv, path = member
    call(srv, "/v3/kv/put", {"key": b64("k"), "value": b64("0")})
    delay = 2.0
    write(path, f"fsync-delay {delay}\n")
    until(lambda: "every fsync takes 2 s longer" in srv.log(), "the member never read the file")

    done = threading.Event()
    took = []

    def slow_put():
        t = time.monotonic()
        call(srv, "/v3/kv/put", {"key": b64("k"), "value": b64("1")}, timeout=30)
        took.append(time.monotonic() - t)
        done.set()

    th = threading.Thread(target=slow_put, daemon=True)
    th.start()
    try:
        time.sleep(0.2)
        # While the put waits for its fsync the member still answers (the loop is free)...
        kvs = call(srv, "/v3/kv/range", {"key": b64("k"), "serializable": True})["kvs"]
        assert not done.is_set()
        assert base64.b64decode(kvs[0]["value"]) == b"0"    # ...and nothing unpersisted shows
    finally:
        th.join(30)
    assert took and took[0] >= delay     # acknowledged only after the (slow) fsync
    write(path, "")
    until(lambda: "every fsync takes 0 s longer" in srv.log(), "the member never read the file")

    def quick_put():
        t = time.monotonic()
        call(srv, "/v3/kv/put", {"key": b64("k"), "value": b64("2")})
        return time.monotonic() - t < delay / 2
    until(quick_put, "puts still wait out the fsync delay")
