"""ReadIndex (Raft thesis §6.4; etcd's ReadOnlySafe): linearizable read points."""
import pytest

from netutil import Network, msg, new_core, read_messages

from fastkv.errors import ErrProposalDropped
from fastkv.raft.messages import (MSG_APP_RESP, MSG_HEARTBEAT, MSG_HEARTBEAT_RESP,
                                  MSG_PRE_VOTE_RESP, MSG_READ_INDEX, MSG_READ_INDEX_RESP,
                                  MSG_VOTE_RESP,
                                  ReadState)

OPTS = dict(pre_vote=True, check_quorum=True)


def test_many_contexts_one_heartbeat_round():
    nw = Network(3, **OPTS)
    nw.elect(1)
    nw.propose(1, b"x")
    before = len(nw.delivered)
    for i in range(50):
        nw[1].read_index(b"ctx%d" % i)
    nw.send()
    hbs = [m for m in nw.delivered[before:] if m.type == MSG_HEARTBEAT]
    assert len(hbs) == 2 and {m.context for m in hbs} == {b"ctx49"}   # one round
    assert nw.read_states[1] == [ReadState(nw[1].commit, b"ctx%d" % i) for i in range(50)]


def test_read_needs_a_quorum_of_heartbeat_acks():
    nw = Network(3, **OPTS)
    nw.elect(1)
    nw.isolate(1)
    nw[1].read_index(b"r")
    nw.send()
    assert nw.read_states[1] == []            # no quorum confirmed the leadership
    nw.recover()
    nw.tick(1)                                # a later round doesn't carry it; re-ask
    nw[1].read_index(b"r2")
    nw.send()
    assert [rs.context for rs in nw.read_states[1]] == [b"r", b"r2"]


def test_later_round_releases_earlier_reads():
    r = new_core(1, [1, 2, 3], **OPTS)
    r.campaign()
    r.step(msg(MSG_PRE_VOTE_RESP, 2, 1, 1))
    r.step(msg(MSG_VOTE_RESP, 2, 1, 1))
    assert r.is_leader
    read_messages(r)
    for v in (2, 3):
        r.step(msg(MSG_APP_RESP, v, 1, 1, index=1))
    read_messages(r)
    r.read_index(b"a")
    out_a = [m for m in read_messages(r) if m.type == MSG_HEARTBEAT]
    r.read_index(b"b")
    out_b = [m for m in read_messages(r) if m.type == MSG_HEARTBEAT]
    assert {m.context for m in out_a} == {b"a"} and {m.context for m in out_b} == {b"b"}
    r.step(msg(MSG_HEARTBEAT_RESP, 2, 1, 1, context=b"b"))    # only b's round answers
    rds = [rd for rd in [r.ready()]]
    assert rds[0].read_states == [ReadState(1, b"a"), ReadState(1, b"b")]


def test_leader_without_a_commit_in_its_term_waits():
    r = new_core(1, [1, 2, 3], pre_vote=False, check_quorum=False)
    r.campaign()
    r.step(msg(MSG_VOTE_RESP, 2, 1, 1))
    read_messages(r)
    assert r.is_leader and r.commit == 0
    r.read_index(b"early")
    out = read_messages(r)
    assert not any(m.type == MSG_HEARTBEAT and m.context for m in out)
    r.step(msg(MSG_APP_RESP, 2, 1, 1, index=1))       # the no-op commits
    out = read_messages(r)
    hbs = [m for m in out if m.type == MSG_HEARTBEAT]
    assert hbs and all(m.context == b"early" for m in hbs)
    r.step(msg(MSG_HEARTBEAT_RESP, 2, 1, 1, context=b"early"))
    assert r.ready().read_states == [ReadState(1, b"early")]


def test_follower_forwards_and_gets_the_leaders_index():
    nw = Network(3, **OPTS)
    nw.elect(1)
    nw.propose(1, b"x")
    nw[2].read_index(b"f1")
    nw[3].read_index(b"f2")
    nw.send()
    fwd = [m for m in nw.delivered if m.type == MSG_READ_INDEX]
    assert {(m.frm, m.to) for m in fwd} == {(2, 1), (3, 1)}
    resp = [m for m in nw.delivered if m.type == MSG_READ_INDEX_RESP]
    assert {m.to for m in resp} == {2, 3}
    assert nw.read_states[2] == [ReadState(2, b"f1")]
    assert nw.read_states[3] == [ReadState(2, b"f2")]
    assert nw.read_states[1] == []


def test_read_index_without_a_leader_raises():
    r = new_core(1, [1, 2, 3])
    with pytest.raises(ErrProposalDropped):
        r.read_index(b"x")


def test_read_index_is_the_commit_index_at_arrival():
    nw = Network(3, **OPTS)
    nw.elect(1)
    for i in range(3):
        nw.propose(1, b"%d" % i)
    nw[1].read_index(b"r")
    nw.send()
    assert nw.read_states[1] == [ReadState(4, b"r")]


def test_a_new_leader_drops_the_old_reads():
    nw = Network(3, **OPTS)
    nw.elect(1)
    nw.isolate(1)
    nw[1].read_index(b"lost")
    nw.send()
    nw.tick(n=40)                      # 1 steps down (check-quorum); 2 or 3 leads
    assert not nw[1].is_leader and len(nw[1].read_only) == 0
    assert nw.read_states[1] == []
