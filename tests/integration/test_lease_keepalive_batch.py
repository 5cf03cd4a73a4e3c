"""Keepalives that arrive together on one LeaseKeepAlive stream are renewed as one batch
(Server.lease_keepalive_many: one leadership check on the leader, one peer request from
a follower) and answered in order, each as it would be alone: the lease's TTL, or TTL 0
for a lease that does not exist. Sent in one write, so the server sees them together."""
from __future__ import annotations

import asyncio
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "bench"))

import h2grpc  # noqa: E402
from servers import Cluster, FastkvProcess, inprocess_member  # noqa: E402

from fastkv.proto.etcdserverpb import rpc_pb2 as pb  # noqa: E402

GRANT, KEEPALIVE = "/etcdserverpb.Lease/LeaseGrant", "/etcdserverpb.Lease/LeaseKeepAlive"
TTL_PATH = "/etcdserverpb.Lease/LeaseTimeToLive"


@pytest.fixture(scope="module")
def cluster():
    cl = Cluster(FastkvProcess, size=3).start()
    try:
        yield cl
    finally:
        cl.stop()


async def _batch(url: str, ids: list[int]):
    conn = await h2grpc.Connection.open(url)
    try:
        answers = []
        ka = conn.stream(KEEPALIVE, on_message=lambda msg, _ns: answers.append(
            pb.LeaseKeepAliveResponse.FromString(msg)))
        ka.send_prefixed(b"".join(h2grpc.grpc_message(
            pb.LeaseKeepAliveRequest(ID=i).SerializeToString()) for i in ids))
        while len(answers) < len(ids):
            await asyncio.sleep(0.01)
        ka.close_send()
        await ka.wait()
        return answers, ka.trailers
    finally:
        conn.close()


async def _grant(url: str, ttls: list[int]) -> list[int]:
    conn = await h2grpc.Connection.open(url)
    try:
        return [pb.LeaseGrantResponse.FromString(await conn.unary(
            GRANT, pb.LeaseGrantRequest(TTL=t).SerializeToString())).ID for t in ttls]
    finally:
        conn.close()


@pytest.mark.parametrize("member", [0, 1, 2])
def test_a_batch_is_answered_in_order_on_every_member(cluster, member):
    h2grpc.install_uvloop()
    url = cluster.members[member].url
    ttls = [30, 45, 60, 90] * 10
    ids = asyncio.run(asyncio.wait_for(_grant(url, ttls), 20))
    unknown = 0x7ABCDEF0 + member
    order = ids[::-1] + [unknown] + ids[:5]
    want = {i: t for i, t in zip(ids, ttls)}
    want[unknown] = 0
    answers, trailers = asyncio.run(asyncio.wait_for(_batch(url, order), 20))
    assert [a.ID for a in answers] == order
    assert [a.TTL for a in answers] == [want[i] for i in order]
    assert trailers["grpc-status"] == "0"
    assert {a.header.cluster_id for a in answers} != {0}


def test_one_leadership_check_for_a_whole_batch():
    with inprocess_member() as (loop, server, _url):
        calls = []
        real = server._linearizable

        async def counted():
            calls.append(1)
            await real()
        server._linearizable = counted

        async def run():
            ids = [(await server.lease_grant({"TTL": 30 + i}))["ID"] for i in range(20)]
            calls.clear()
            answers = await server.lease_keepalive_many(ids + [12345])
            return ids, answers
        ids, answers = loop.run_until_complete(run())
    assert len(calls) == 1
    assert [(a["ID"], a["TTL"]) for a in answers] == \
        [(i, 30 + n) for n, i in enumerate(ids)] + [(12345, 0)]
