"""Watch progress notifications, as etcd 3.4: --experimental-watch-progress-notify-interval
sets how often a progress_notify watch hears the revision when nothing happened, and a
progress_request is answered (watch_id -1) over the JSON gateway and gRPC alike.

The real-process tests run against fastkv and etcd 3.4 both, started with the flag."""
from __future__ import annotations

import json
import threading
import time

import grpc
import pytest
import requests

from fastkv import config
from fastkv.proto.etcdserverpb import rpc_pb2 as pb
from fastkv.proto.etcdserverpb import rpc_pb2_grpc as rpc
from fastkv.server import PROGRESS_NOTIFY_SECONDS, progress_notify_interval
from servers import EtcdProcess, FastkvProcess

FLAG = "experimental-watch-progress-notify-interval"


# ---- the flag --------------------------------------------------------------------------

def test_flag_default_and_go_durations():
    assert config.parse([], environ={}).experimental_watch_progress_notify_interval == 600.0
    for text, seconds in [("1s", 1.0), ("250ms", 0.25), ("10m", 600.0), ("1m30s", 90.0)]:
        cfg = config.parse([f"--{FLAG}", text], environ={})
        assert cfg.experimental_watch_progress_notify_interval == seconds
    env = {"ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL": "2s"}
    assert config.parse([], environ=env).experimental_watch_progress_notify_interval == 2.0


@pytest.mark.parametrize("argv", [[f"--{FLAG}", "abc"], [f"--{FLAG}=5"], [f"--{FLAG}", "1x"]])
def test_bad_duration_is_refused_as_etcd_does(argv):
    with pytest.raises(config.ConfigError) as exc:
        config.parse(argv, environ={})
    value = argv[-1].split("=")[-1]
    assert str(exc.value) == f'invalid value "{value}" for flag -{FLAG}: parse error'


def test_interval_rules_are_etcds():
    """NewWatchServer: a positive interval below 100ms is raised to it; zero or a negative
    one keeps the 10 minute default."""
    def interval(text):
        return progress_notify_interval(config.parse([f"--{FLAG}", text], environ={}))
    assert interval("1s") == 1.0
    assert interval("10ms") == 0.1
    assert interval("0") == PROGRESS_NOTIFY_SECONDS
    assert interval("-1s") == PROGRESS_NOTIFY_SECONDS


# ---- on a real member ------------------------------------------------------------------

@pytest.fixture(scope="module", params=["fastkv", "etcd"])
def member(request):
    cls = FastkvProcess if request.param == "fastkv" else EtcdProcess
    srv = cls(extra_args=[f"--{FLAG}", "200ms"]).start()
    try:
        yield srv
    finally:
        srv.cleanup()


def _put(srv, key: str, value: str) -> int:
    import base64
    b = lambda s: base64.b64encode(s.encode()).decode()
    r = requests.post(srv.url + "/v3/kv/put", json={"key": b(key), "value": b(value)}, timeout=5)
    return int(r.json()["header"]["revision"])


def _watch_lines(srv, body: str, until, deadline_s: float = 10.0) -> list[dict]:
    """POST /v3/watch with ``body``; the "result"s read until ``until(results)`` holds or
    the deadline passes (then the connection is closed)."""
    got: list[dict] = []
    deadline = time.monotonic() + deadline_s
    with requests.post(srv.url + "/v3/watch", data=body, stream=True, timeout=(5, 2)) as r:
        for line in r.iter_lines():
            if line:
                got.append(json.loads(line)["result"])
            if until(got) or time.monotonic() > deadline:
                break
    return got


def _is_progress(res: dict) -> bool:
    return not res.get("events") and not res.get("created") and not res.get("canceled")


def test_progress_notify_watch_hears_the_revision_at_the_interval(member):
    """Only the progress_notify watch gets notifications; each carries the member's revision
    at that time, never one below an event already sent."""
    rev = _put(member, "p/a", "1")
    body = (json.dumps({"create_request": {"key": "cC9h", "progress_notify": True,
                                           "watch_id": 5}})
            + json.dumps({"create_request": {"key": "cC9i", "watch_id": 6}}))
    later: list[int] = []

    def write_soon():
        time.sleep(0.3)
        later.append(_put(member, "p/a", "2"))
    t = threading.Thread(target=write_soon)
    t.start()
    try:
        got = _watch_lines(member, body, lambda g: later and sum(
            1 for r in g if _is_progress(r) and int(r["header"]["revision"]) >= later[0]) >= 2)
    finally:
        t.join()
    progress = [r for r in got if _is_progress(r)]
    events = [r for r in got if r.get("events")]
    assert {r.get("watch_id") for r in progress} == {"5"}
    assert [int(r["events"][0]["kv"]["mod_revision"]) for r in events] == later
    revs = [int(r["header"]["revision"]) for r in progress]
    assert revs == sorted(revs) and revs[0] >= rev
    assert sum(1 for v in revs if v >= later[0]) >= 2


def test_progress_request_over_the_json_gateway(member):
    rev = _put(member, "p/b", "1")
    body = (json.dumps({"create_request": {"key": "cC9i", "start_revision": 1}})
            + json.dumps({"progress_request": {}}))
    got = _watch_lines(member, body, lambda g: any(r.get("watch_id") == "-1" for r in g))
    answer = [r for r in got if r.get("watch_id") == "-1"]
    assert len(answer) == 1 and int(answer[0]["header"]["revision"]) >= rev
    if isinstance(member, FastkvProcess):
        # The catch-up of p/b comes before the notification that vouches for it. etcd 3.4
        # answers at once, ahead of the catch-up (a bookmark that is not one: fixed in 3.5
        # by waiting until every watcher of the stream is synced, as fastkv does).
        assert got.index(answer[0]) > next(i for i, r in enumerate(got) if r.get("events"))


def test_progress_request_over_grpc(member):
    rev = _put(member, "p/c", "1")
    reqs = [pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"p/c")),
            pb.WatchRequest(progress_request=pb.WatchProgressRequest())]
    with grpc.insecure_channel(f"127.0.0.1:{member.client_port}") as ch:
        stream = rpc.WatchStub(ch).Watch(iter(reqs), timeout=10)
        try:
            created = next(stream)
            answer = next(stream)
        finally:
            stream.cancel()
    assert created.created
    assert answer.watch_id == -1 and not answer.events and answer.header.revision >= rev

