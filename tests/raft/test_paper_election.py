"""Raft paper §5.1-§5.2 (and §5.4.1's voting restriction): terms and leader election.
Written after etcd raft's paper_test.go; pre-vote is off unless a test says otherwise."""
import pytest

from netutil import Network, ents, msg, new_core, read_messages

from fastkv.raft.log import RaftLog
from fastkv.raft.messages import (CANDIDATE, FOLLOWER, LEADER, MSG_APP, MSG_HEARTBEAT,
                                  MSG_HUP, MSG_PRE_VOTE, MSG_VOTE, MSG_VOTE_RESP,
                                  PRE_CANDIDATE, Message)
from fastkv.storage.wal import HardState

NOPV = dict(pre_vote=False, check_quorum=False)


def become(state, core):
    if state == CANDIDATE:
        core.campaign()
    elif state == LEADER:
        core.campaign()
        for v in core.voters:
            if v != core.id:
                core.step(msg(MSG_VOTE_RESP, v, core.id, core.term))
        assert core.is_leader
    read_messages(core)


@pytest.mark.parametrize("state", [FOLLOWER, CANDIDATE, LEADER])
def test_update_term_from_message(state):
    """§5.1: a member seeing a larger term takes it and becomes a follower."""
    r = new_core(1, [1, 2, 3], **NOPV)
    become(state, r)
    r.step(msg(MSG_APP, 2, 1, 5))
    assert r.term == 5 and r.state == FOLLOWER and r.lead == 2


def test_reject_stale_term_message():
    """§5.1: a request with a stale term is ignored."""
    r = new_core(1, [1, 2, 3], hs=HardState(2, 0, 0), **NOPV)
    r.step(msg(MSG_APP, 2, 1, 1, entries=ents(1)))
    assert r.log.last_index == 0 and r.lead == 0
    r.step(msg(MSG_VOTE, 2, 1, 1))
    assert r.vote == 0


def test_start_as_follower():
    r = new_core(1, [1, 2, 3])
    assert r.state == FOLLOWER and r.lead == 0


def test_leader_broadcasts_heartbeats():
    """§5.2: the leader sends heartbeats every heartbeat interval to keep its authority."""
    r = new_core(1, [1, 2, 3], heartbeat_tick=1, **NOPV)
    become(LEADER, r)
    r.tick()
    hb = [m for m in read_messages(r) if m.type == MSG_HEARTBEAT]
    assert sorted(m.to for m in hb) == [2, 3]
    assert all(m.term == r.term and m.commit == 0 for m in hb)   # commit <= the peer's match


@pytest.mark.parametrize("state", [FOLLOWER, CANDIDATE])
def test_nonleader_starts_election(state):
    """§5.2: after the election timeout a follower (or candidate) starts an election:
    term+1, votes for itself, asks every other voter."""
    r = new_core(1, [1, 2, 3], **NOPV)
    become(state, r)
    term0 = r.term
    for _ in range(2 * r.election_tick):
        r.tick()
    assert r.state == CANDIDATE and r.term == term0 + 1 and r.vote == 1
    votes = [m for m in read_messages(r) if m.type == MSG_VOTE]
    assert sorted(m.to for m in votes) == [2, 3] and all(m.term == r.term for m in votes)


@pytest.mark.parametrize("size,grants,rejects,want", [
    (1, set(), set(), LEADER),
    (3, {2}, set(), LEADER),
    (3, {2, 3}, set(), LEADER),
    (5, {2, 3}, set(), LEADER),
    (5, {2, 3, 4}, set(), LEADER),
    (3, set(), set(), CANDIDATE),
    (5, {2}, set(), CANDIDATE),
    (5, {2}, {3}, CANDIDATE),
    (3, set(), {2, 3}, FOLLOWER),          # lost: step down
    (5, {2}, {3, 4, 5}, FOLLOWER),
])
def test_leader_election_in_one_round(size, grants, rejects, want):
    """§5.2: a candidate wins with a majority of votes, loses (back to follower) when a
    majority rejects, and waits otherwise."""
    r = new_core(1, range(1, size + 1), **NOPV)
    r.campaign()
    for v in grants:
        r.step(msg(MSG_VOTE_RESP, v, 1, r.term))
    for v in rejects:
        r.step(msg(MSG_VOTE_RESP, v, 1, r.term, reject=True))
    assert r.state == want and r.term == 1


@pytest.mark.parametrize("vote,nvote,reject", [
    (0, 2, False), (0, 3, False),
    (2, 2, False),          # a repeat of the vote it cast
    (3, 3, False),
    (2, 3, True),           # it voted for someone else in this term
    (3, 2, True),
])
def test_follower_votes_once_per_term(vote, nvote, reject):
    r = new_core(1, [1, 2, 3], hs=HardState(1, vote, 0), **NOPV)
    r.step(msg(MSG_VOTE, nvote, 1, 1))
    out = read_messages(r)
    assert [(m.type, m.to, m.reject) for m in out] == [(MSG_VOTE_RESP, nvote, reject)]
    assert r.vote == (vote or nvote)


def test_candidate_falls_back_on_append_from_new_leader():
    """§5.2: a candidate receiving AppendEntries from a leader at least as new steps down."""
    for term in (1, 2):
        r = new_core(1, [1, 2, 3], **NOPV)
        r.campaign()
        assert r.state == CANDIDATE and r.term == 1
        r.step(msg(MSG_APP, 2, 1, term))
        assert r.state == FOLLOWER and r.term == term and r.lead == 2


def test_candidate_steps_down_on_higher_term_vote_response():
    r = new_core(1, [1, 2, 3], **NOPV)
    r.campaign()
    r.step(msg(MSG_VOTE_RESP, 2, 1, 7, reject=True))
    assert r.state == FOLLOWER and r.term == 7 and r.vote == 0


def test_election_timeout_is_randomized_from_the_injected_rng():
    """§5.2: timeouts are random in [election, 2*election) and come from the rng only."""
    seen = set()
    for seed in range(40):
        r = new_core(1, [1, 2, 3], seed=seed, **NOPV)
        t = 0
        while r.state == FOLLOWER:
            r.tick()
            t += 1
        assert 10 <= t < 20
        seen.add(t)
    assert len(seen) > 3          # they differ
    # Same seed, same timeouts: the rng is the only source of randomness.
    a, b = new_core(1, [1, 2, 3], seed=9), new_core(1, [1, 2, 3], seed=9)
    assert a.randomized_election_timeout == b.randomized_election_timeout


def test_randomized_timeouts_rarely_conflict():
    """§5.2: with randomized timeouts, usually one member times out first and wins."""
    conflicts = 0
    for seed in range(50):
        nw = Network(3, seed=seed, **NOPV)
        ticks = 0
        while nw.leader() is None:
            nw.tick()
            ticks += 1
        if ticks >= 20:
            conflicts += 1
        assert sum(c.is_leader for c in nw.peers.values()) == 1
    assert conflicts <= 15


@pytest.mark.parametrize("log_terms,index,term,reject", [
    ((1, 1), 2, 1, False),       # same log
    ((1, 1), 2, 2, False),       # candidate has a newer last term
    ((1, 1), 1, 1, True),        # same last term, shorter log
    ((1, 2), 3, 1, True),        # older last term even though longer
    ((1, 2), 2, 2, False),
    ((1, 2), 1, 2, True),
])
def test_voter_grants_only_up_to_date_candidates(log_terms, index, term, reject):
    """§5.4.1: vote only for a candidate whose log is at least as up to date."""
    r = new_core(1, [1, 2], log=RaftLog(entries=ents(*log_terms)), **NOPV)
    r.step(msg(MSG_VOTE, 2, 1, 3, index=index, log_term=term))
    out = read_messages(r)
    assert len(out) == 1 and out[0].type == MSG_VOTE_RESP and out[0].reject == reject


def test_leader_election_with_a_network():
    nw = Network(5, **NOPV)
    nw.elect(1)
    assert nw[1].is_leader and all(nw[i].lead == 1 for i in range(1, 6))
    # An isolated minority cannot elect anyone.
    nw.isolate(1)
    nw.cut(2, 3), nw.cut(2, 4), nw.cut(2, 5)
    nw.elect(2)
    assert nw[2].state == CANDIDATE


def test_no_campaign_without_being_a_voter():
    r = new_core(4, [1, 2, 3], **NOPV)
    for _ in range(100):
        r.tick()
    assert r.state == FOLLOWER and r.term == 0


def test_pre_vote_does_not_bump_the_term():
    r = new_core(1, [1, 2, 3], pre_vote=True)
    r.campaign()
    assert r.state == PRE_CANDIDATE and r.term == 0 and r.vote == 0
    out = read_messages(r)
    assert sorted((m.type, m.to, m.term) for m in out) == [(MSG_PRE_VOTE, 2, 1),
                                                           (MSG_PRE_VOTE, 3, 1)]


def test_hup_on_leader_is_ignored():
    nw = Network(3, **NOPV)
    nw.elect(1)
    term = nw[1].term
    nw.send(Message(MSG_HUP, to=1, frm=1))
    assert nw[1].is_leader and nw[1].term == term
