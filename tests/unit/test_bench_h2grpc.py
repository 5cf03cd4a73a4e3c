"""The bench's own gRPC client (bench/h2grpc.py) and load generator (bench/watch_lease.py)
against a real fastkv member, so that a change that breaks them is caught here and not
in the middle of a benchmark. No timing is asserted: only that answers are right and
that the generator's checks fail a run that lost, repeated or reordered events."""
from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "bench"))

import h2grpc  # noqa: E402
import watch_lease  # noqa: E402
from servers import FastkvProcess  # noqa: E402

from fastkv.proto.etcdserverpb import rpc_pb2 as pb  # noqa: E402

PUT, RANGE = "/etcdserverpb.KV/Put", "/etcdserverpb.KV/Range"


@pytest.fixture(scope="module")
def fastkv_url():
    srv = FastkvProcess().start()
    try:
        yield srv.url
    finally:
        srv.cleanup()


def run(coro_fn, *args):
    """Run one client scenario on its own (uvloop) event loop, bounded in time."""
    h2grpc.install_uvloop()
    return asyncio.run(asyncio.wait_for(coro_fn(*args), 20))


def test_unary_put_range_and_error_status(fastkv_url):
    async def scenario(url):
        conn = await h2grpc.Connection.open(url)
        try:
            put = pb.PutResponse.FromString(await conn.unary(
                PUT, pb.PutRequest(key=b"h2/a", value=b"1").SerializeToString()))
            # a value larger than the initial flow-control window and than one frame:
            # sent in window-sized pieces, read back from several DATA frames
            big = bytes(range(256)) * 800
            await conn.unary(PUT, pb.PutRequest(key=b"h2/big", value=big).SerializeToString())
            got = pb.RangeResponse.FromString(await conn.unary(
                RANGE, pb.RangeRequest(key=b"h2/", range_end=b"h20").SerializeToString()))
            with pytest.raises(h2grpc.GrpcError) as err:
                await conn.unary(PUT, pb.PutRequest(key=b"", value=b"x").SerializeToString())
            return put, got, err.value
        finally:
            conn.close()

    put, got, err = run(scenario, fastkv_url)
    assert put.header.revision >= 2
    assert [(kv.key, len(kv.value)) for kv in got.kvs] == [(b"h2/a", 1), (b"h2/big", 204800)]
    assert got.kvs[1].value == bytes(range(256)) * 800
    assert err.status == 3 and "key is not provided" in err.message   # InvalidArgument


# the middle event is larger than a frame: a message split over DATA frames, then more
VALUES = (b"1", b"x" * 100_000, b"3")


def test_watch_stream_receives_events(fastkv_url):
    async def scenario(url):
        conn = await h2grpc.Connection.open(url)
        try:
            w = conn.stream("/etcdserverpb.Watch/Watch")
            w.send(pb.WatchRequest(create_request=pb.WatchCreateRequest(
                key=b"h2/w")).SerializeToString())
            created = pb.WatchResponse.FromString(await w.recv())
            revs = []
            for v in VALUES:
                r = pb.PutResponse.FromString(await conn.unary(
                    PUT, pb.PutRequest(key=b"h2/w", value=v).SerializeToString()))
                revs.append(r.header.revision)
            seen = []
            while len(seen) < 3:
                resp = pb.WatchResponse.FromString(await w.recv())
                seen += [(ev.kv.mod_revision, ev.kv.value) for ev in resp.events]
            w.close_send()
            return created, revs, seen
        finally:
            conn.close()

    created, revs, seen = run(scenario, fastkv_url)
    assert created.created
    assert seen == list(zip(revs, VALUES))


def test_lease_keepalive_stream(fastkv_url):
    async def scenario(url):
        conn = await h2grpc.Connection.open(url)
        try:
            grant = pb.LeaseGrantResponse.FromString(await conn.unary(
                "/etcdserverpb.Lease/LeaseGrant", pb.LeaseGrantRequest(TTL=30).SerializeToString()))
            answers = []
            ka = conn.stream("/etcdserverpb.Lease/LeaseKeepAlive",
                             on_message=lambda msg, recv_ns: answers.append(
                                 pb.LeaseKeepAliveResponse.FromString(msg)))
            for _ in range(3):
                ka.send(pb.LeaseKeepAliveRequest(ID=grant.ID).SerializeToString())
            while len(answers) < 3:
                await asyncio.sleep(0.01)
            ka.close_send()
            await ka.wait()         # the server ends the call with status 0
            return grant, answers, ka.trailers
        finally:
            conn.close()

    grant, answers, trailers = run(scenario, fastkv_url)
    assert grant.ID and grant.TTL == 30
    assert [(a.ID, a.TTL) for a in answers] == [(grant.ID, 30)] * 3
    assert trailers["grpc-status"] == "0"


def test_generator_workloads_end_to_end(fastkv_url, capsys):
    """Both workloads, small and short, through the generator's own command line."""
    assert watch_lease.main(["watch-fanout", fastkv_url, "--duration", "0.5", "--watchers",
                             "20", "--streams", "3", "--connections", "2", "--json"]) == 0
    watch = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert watch["ok"] and watch["puts"] > 0
    assert watch["events"] == watch["expected_events"] == 20 * watch["puts"]
    assert watch["requests_per_sec"] > 0 and watch["p99_ms"] >= watch["p50_ms"]

    assert watch_lease.main(["lease-keepalive", fastkv_url, "--duration", "0.5", "--leases",
                             "200", "--streams", "4", "--window", "8", "--connections", "2",
                             "--json"]) == 0
    lease = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert lease["ok"] and lease["leases"] == 200 and lease["keepalives"] > 0


def _tally(events_per_watcher: dict[int, list[int]], rev_list: list[int]):
    """Feed synthetic watch answers (watch id -> revisions, interleaved) through a raw
    stream and the fan-out's tally, as the generator does after a run."""
    async def scenario():
        conn = h2grpc.Connection("test:1")
        conn.connection_made(watch_lease._NullTransport())
        st = conn.stream(watch_lease.WATCH, raw=True)
        msgs = [pb.WatchResponse(watch_id=w, created=True).SerializeToString()
                for w in events_per_watcher]
        longest = max(len(v) for v in events_per_watcher.values())
        for i in range(longest):
            for w, revs in events_per_watcher.items():
                if i < len(revs):
                    r = pb.WatchResponse(watch_id=w)
                    r.header.revision = revs[i]
                    ev = r.events.add()
                    ev.kv.key, ev.kv.mod_revision = b"k", revs[i]
                    ev.kv.value = watch_lease._SENT.pack(1)
                    msgs.append(r.SerializeToString())
        for chunk in watch_lease._server_frames(st.sid, msgs, chunk=100):
            conn.data_received(chunk)
        problems = watch_lease.Problems()
        tally = watch_lease.WatchStreamTally(st, len(events_per_watcher), problems)
        tally.advance(watch_lease.WatchDecoder(), {r: i for i, r in enumerate(rev_list)},
                      rev_list, watch_lease.Histogram())
        return tally, problems
    return asyncio.run(scenario())


def test_fanout_check_fails_on_missing_duplicate_or_reordered_events():
    revs = [5, 6, 7, 8]
    tally, problems = _tally({0: revs, 1: revs}, revs)
    assert problems.count == 0 and tally.complete(len(revs)) and tally.events == 8

    for bad in ([5, 7, 8], [5, 6, 6, 7, 8], [5, 7, 6, 8], [5, 6, 7, 8, 9]):
        tally, problems = _tally({0: revs, 1: bad}, revs)
        assert problems.count > 0, bad
        assert problems.count == 1 or bad == [5, 7, 6, 8], problems.first
    # a watcher that stopped short is no problem of its answers, but not complete
    tally, problems = _tally({0: revs, 1: revs[:3]}, revs)
    assert problems.count == 0 and not tally.complete(len(revs))


def test_generator_capacity_self_check():
    """The no-server measurement also cross-checks the frame splitter, the cached
    decoder and the keepalive bookkeeping on many messages."""
    out = run(watch_lease.capacity, type("Args", (), {"messages": 3000})())
    assert out["ok"] and out["watch_decode_msgs_per_sec"] > 0
