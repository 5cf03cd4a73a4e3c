"""Pre-vote (Raft thesis §9.6) and check-quorum / leader lease, as etcd raft does them."""
from netutil import Network, msg, new_core, read_messages

from fastkv.raft.core import CAMPAIGN_TRANSFER
from fastkv.raft.messages import (FOLLOWER, MSG_APP, MSG_APP_RESP, MSG_PRE_VOTE, MSG_PRE_VOTE_RESP,
                                  MSG_VOTE, MSG_VOTE_RESP, PRE_CANDIDATE)
from fastkv.storage.wal import HardState

PV_CQ = dict(pre_vote=True, check_quorum=True)


def test_partitioned_leader_steps_down():
    nw = Network(3, **PV_CQ)
    nw.elect(1)
    nw.isolate(1)
    # The first check finds the peers active (they answered the election's appends) and
    # clears the marks; the next one, an election timeout later, finds nobody.
    nw.tick(1, n=nw[1].election_tick)
    assert nw[1].is_leader
    nw.tick(1, n=nw[1].election_tick)
    assert nw[1].state == FOLLOWER and nw[1].lead == 0
    # ... while the majority elects a new leader and keeps working.
    nw.tick(n=25)
    lead = nw.leader()
    assert lead is not None and lead.id in (2, 3) and lead.term > 1
    nw.recover()
    nw.tick(n=2)
    assert nw[1].lead == lead.id and nw.leader() is lead


def test_without_check_quorum_a_partitioned_leader_stays():
    nw = Network(3, pre_vote=True, check_quorum=False)
    nw.elect(1)
    nw.isolate(1)
    nw.tick(1, n=50)
    assert nw[1].is_leader


def test_leader_with_a_quorum_stays():
    nw = Network(3, **PV_CQ)
    nw.elect(1)
    nw.isolate(3)
    nw.tick(n=50)
    assert nw[1].is_leader and nw[1].term == 1


def test_rejoining_member_does_not_disrupt_a_healthy_leader():
    """With pre-vote, an isolated member never wins a pre-vote, so its term stays; when
    it rejoins, the leader and its term are unchanged."""
    nw = Network(3, **PV_CQ)
    nw.elect(1)
    nw.isolate(3)
    nw.tick(n=100)
    assert nw[3].term == 1 and nw[3].state in (PRE_CANDIDATE, FOLLOWER)
    nw.recover()
    nw.tick(n=5)
    assert nw[1].is_leader and nw[1].term == 1 and nw[3].lead == 1
    nw.propose(1, b"x")
    assert nw.applied_data(3) == [b"x"]


def test_without_pre_vote_an_isolated_member_inflates_its_term():
    """The contrast: what pre-vote prevents."""
    nw = Network(3, pre_vote=False, check_quorum=False)
    nw.elect(1)
    nw.isolate(3)
    nw.tick(n=100)
    assert nw[3].term > 3
    nw.recover()
    nw.tick(n=30)
    assert nw.leader().term > 1          # the healthy leader was deposed


def test_followers_in_lease_ignore_votes_from_a_higher_term():
    """Check-quorum's leader lease: a follower that heard from its leader within the
    election timeout ignores (pre-)votes, even at a higher term, without changing term."""
    nw = Network(3, pre_vote=False, check_quorum=True)
    nw.elect(1)
    for t in (MSG_VOTE, MSG_PRE_VOTE):
        nw[2].step(msg(t, 3, 2, 5, index=10, log_term=5))
        assert nw[2].term == 1 and nw[2].vote == 1 and nw[2].lead == 1
        assert read_messages(nw[2]) == []


def test_lease_does_not_block_a_leader_transfer_vote():
    nw = Network(3, pre_vote=False, check_quorum=True)
    nw.elect(1)
    nw[2].step(msg(MSG_VOTE, 3, 2, 5, index=10, log_term=5, context=CAMPAIGN_TRANSFER))
    assert nw[2].term == 5 and nw[2].vote == 3
    out = read_messages(nw[2])
    assert [(m.type, m.reject) for m in out] == [(MSG_VOTE_RESP, False)]


def test_lease_expires_after_an_election_timeout():
    nw = Network(3, pre_vote=False, check_quorum=True)
    nw.elect(1)
    nw.isolate(1)
    for _ in range(nw[2].election_tick):
        nw[2].election_elapsed += 1          # time passes without the leader
    nw[2].step(msg(MSG_VOTE, 3, 2, 5, index=10, log_term=5))
    assert nw[2].term == 5 and nw[2].vote == 3


def test_pre_vote_is_granted_without_changing_the_voters_term():
    r = new_core(2, [1, 2, 3], **PV_CQ)
    r.step(msg(MSG_PRE_VOTE, 3, 2, 1, index=0, log_term=0))
    out = read_messages(r)
    assert [(m.type, m.term, m.reject) for m in out] == [(MSG_PRE_VOTE_RESP, 1, False)]
    assert r.term == 0 and r.vote == 0


def test_pre_vote_for_a_stale_log_is_rejected():
    from netutil import ents
    from fastkv.raft.log import RaftLog
    r = new_core(2, [1, 2, 3], log=RaftLog(entries=ents(1, 2)), hs=HardState(2, 0, 0),
                 **PV_CQ)
    r.step(msg(MSG_PRE_VOTE, 3, 2, 3, index=1, log_term=1))
    out = read_messages(r)
    assert [(m.type, m.term, m.reject) for m in out] == [(MSG_PRE_VOTE_RESP, 2, True)]
    assert r.term == 2


def test_pre_vote_win_starts_the_real_election():
    r = new_core(1, [1, 2, 3], **PV_CQ)
    r.campaign()
    assert r.state == PRE_CANDIDATE and r.term == 0
    r.step(msg(MSG_PRE_VOTE_RESP, 2, 1, 1))
    assert r.state == "StateCandidate" and r.term == 1 and r.vote == 1
    r.step(msg(MSG_VOTE_RESP, 2, 1, 1))
    assert r.is_leader


def test_pre_candidate_rejected_at_a_higher_term_becomes_follower():
    r = new_core(1, [1, 2, 3], **PV_CQ)
    r.campaign()
    r.step(msg(MSG_PRE_VOTE_RESP, 2, 1, 4, reject=True))
    assert r.state == FOLLOWER and r.term == 4


def test_stale_term_append_gets_an_answer_with_our_term():
    """With check-quorum or pre-vote, a member with a stale term that sends appends
    learns the newer term from the answer (etcd's special case)."""
    r = new_core(2, [1, 2, 3], hs=HardState(5, 0, 0), **PV_CQ)
    r.step(msg(MSG_APP, 1, 2, 3))
    out = read_messages(r)
    assert [(m.type, m.to, m.term) for m in out] == [(MSG_APP_RESP, 1, 5)]
    assert r.term == 5
