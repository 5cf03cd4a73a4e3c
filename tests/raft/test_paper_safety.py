"""Raft paper §5.4 (safety) and figure 3's properties, checked on small scenarios and
on randomised runs of the test network (drops, partitions, restarts of the leader)."""
import random

import pytest

from netutil import Network, ents, msg, new_core, read_messages

from fastkv.errors import ErrProposalDropped
from fastkv.raft.log import RaftLog
from fastkv.raft.messages import MSG_APP, MSG_APP_RESP, MSG_VOTE, MSG_VOTE_RESP
from fastkv.storage.wal import HardState

NOPV = dict(pre_vote=False, check_quorum=False)


def terms_of(core):
    return [core.log.term_at(i) for i in range(core.log.first_index, core.log.last_index + 1)]


def test_candidate_with_stale_log_cannot_win():
    """§5.4.1 (leader completeness): members with a newer log refuse to vote."""
    nw = Network(3, **NOPV)
    nw.elect(1)
    nw.isolate(3)
    nw.propose(1, b"committed")          # committed on 1 and 2 only
    assert nw[1].commit == nw[2].commit == 2 and nw[3].log.last_index == 1
    nw.recover()
    nw.isolate(1)
    nw.elect(3)                          # 2 refuses: 3 lacks a committed entry
    assert not nw[3].is_leader
    nw.elect(2)
    assert nw[2].is_leader
    assert nw.applied_data(2) == [b"committed"]


def test_figure8_old_term_entry_is_not_committed_by_counting():
    """Figure 8: S1 (term 2) replicated index 2 to S2 only, then S5 (term 3) wrote index 2
    in its own term. S1 back in term 4 spreads its term-2 entry to S3: on a majority
    but not committed, because S5 could still win and overwrite it."""
    peers = {1: [1, 2], 2: [1, 2], 3: [1], 4: [1], 5: [1, 3]}
    r = new_core(1, [1, 2, 3, 4, 5], log=RaftLog(entries=ents(*peers[1])),
                 hs=HardState(3, 0, 1), **NOPV)
    r.campaign()                                             # term 4
    for v in (2, 3):
        r.step(msg(MSG_VOTE_RESP, v, 1, r.term))
    assert r.is_leader and r.term == 4
    read_messages(r)
    r.step(msg(MSG_APP_RESP, 2, 1, 4, index=2))
    r.step(msg(MSG_APP_RESP, 3, 1, 4, index=2))              # index 2 on S1, S2, S3
    assert r.commit == 1                                     # term 2 entry: not committed
    r.step(msg(MSG_APP_RESP, 2, 1, 4, index=3))
    r.step(msg(MSG_APP_RESP, 3, 1, 4, index=3))              # the term-4 no-op on a majority
    read_messages(r)
    assert r.commit == 3


def test_leader_never_overwrites_its_own_log():
    """Figure 3, leader append-only: an AppendEntries at the leader's own term from
    elsewhere changes nothing (there is no second leader of a term)."""
    r = new_core(1, [1, 2, 3], **NOPV)
    r.campaign()
    r.step(msg(MSG_VOTE_RESP, 2, 1, 1))
    read_messages(r)
    before = terms_of(r)
    r.step(msg(MSG_APP, 2, 1, 1, index=0, log_term=0, entries=ents(1, 1)))
    assert terms_of(r) == before and r.is_leader


def test_vote_is_persisted_before_the_response_leaves():
    """A granted vote is in the same Ready as the response (the driver persists the
    hard state before a follower's messages go out)."""
    r = new_core(1, [1, 2, 3], **NOPV)
    r.step(msg(MSG_VOTE, 2, 1, 5))
    rd = r.ready()
    assert rd.hardstate == HardState(5, 2, 0)
    assert [(m.type, m.reject) for m in rd.messages] == [(MSG_VOTE_RESP, False)]
    assert rd.state != "StateLeader"


def _check(nw, leaders_by_term, committed):
    for c in nw.peers.values():
        if c.is_leader:
            prev = leaders_by_term.setdefault(c.term, c.id)
            assert prev == c.id, f"two leaders in term {c.term}: {prev}, {c.id}"
        # Committed entries never change (state machine safety via log matching).
        for i in range(max(c.log.first_index, 1), c.commit + 1):
            t = c.log.term_at(i)
            assert committed.setdefault(i, t) == t, f"index {i} committed with two terms"
    # Applied prefixes agree.
    applied = [[(e.index, e.term, e.data) for e in nw.applied[m]] for m in nw.peers]
    for a in applied:
        for b in applied:
            n = min(len(a), len(b))
            assert a[:n] == b[:n]


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("opts", [NOPV, dict(pre_vote=True, check_quorum=True)])
def test_randomised_runs_keep_the_safety_properties(seed, opts):
    rng = random.Random(seed)
    nw = Network(5, seed=seed, **opts)
    leaders_by_term, committed = {}, {}
    proposed = 0
    for step in range(300):
        r = rng.random()
        if r < 0.05:
            nw.recover()
            a = rng.randrange(1, 6)
            nw.isolate(a)
        elif r < 0.08:
            nw.recover()
        elif r < 0.12:
            nw.recover()
            nw.drop(rate=0.3)
        if rng.random() < 0.4:
            c = nw[rng.randrange(1, 6)]
            try:
                c.propose(b"p%d" % proposed)
                proposed += 1
            except ErrProposalDropped:
                pass
        nw.tick(rng.randrange(1, 6))
        _check(nw, leaders_by_term, committed)
    nw.recover()
    for _ in range(40):
        nw.tick()
    _check(nw, leaders_by_term, committed)
    lead = nw.leader()
    assert lead is not None
    nw.propose(lead.id, b"final")
    commits = {c.commit for c in nw.peers.values()}
    assert len(commits) == 1 and len(committed) > 1
