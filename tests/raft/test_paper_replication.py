"""Raft paper §5.3 (log replication) and §5.4.2 (committing entries from previous
terms), after etcd raft's paper_test.go, plus persist-before-promise for the leader."""
import pytest

from netutil import Network, drain, ents, msg, new_core, read_messages

from fastkv.raft.log import RaftLog
from fastkv.raft.messages import (FOLLOWER, LEADER, MSG_APP, MSG_APP_RESP, MSG_VOTE_RESP)
from fastkv.storage.wal import Entry, HardState

NOPV = dict(pre_vote=False, check_quorum=False)


def leader(n=3, log=None, term=0, ack_noop=True, **kw):
    """Member 1 as the leader of 1..n (with an optional log), its messages drained.
    With ack_noop, every follower acknowledged the leader's no-op (etcd's
    commitNoopEntry): they are in replicate state and the no-op is committed."""
    r = new_core(1, range(1, n + 1), log=log, hs=HardState(term, 0, 0), **{**NOPV, **kw})
    r.campaign()
    for v in range(2, n + 1):
        r.step(msg(MSG_VOTE_RESP, v, 1, r.term))
    assert r.is_leader
    read_messages(r)
    if ack_noop:
        for v in range(2, n + 1):
            r.step(msg(MSG_APP_RESP, v, 1, r.term, index=r.log.last_index))
        read_messages(r)
        assert r.commit == r.log.last_index
    return r


def apps(out):
    return [m for m in out if m.type == MSG_APP]


def test_leader_starts_replication():
    """§5.3: the leader appends the command to its log and sends AppendEntries in
    parallel to every follower, with the preceding index and term."""
    r = leader()
    li = r.log.last_index
    r.propose(b"some data")
    out = apps(read_messages(r))
    assert sorted(m.to for m in out) == [2, 3]
    for m in out:
        assert (m.index, m.log_term, m.commit) == (li, 1, li)
        assert [(e.index, e.term, e.data) for e in m.entries] == [(li + 1, 1, b"some data")]


def test_leader_commits_after_majority_and_tells_followers():
    """§5.3: an entry is committed once a majority stored it; the leader applies it and
    sends the new commit index in later AppendEntries."""
    r = leader()
    r.propose(b"x")
    read_messages(r)
    li = r.log.last_index
    r.step(msg(MSG_APP_RESP, 2, 1, 1, index=li))
    assert r.commit == li
    rds = drain(r)
    assert [e.data for rd in rds for e in rd.committed_entries] == [b"x"]
    out = apps([m for rd in rds for m in rd.messages])
    assert sorted(m.to for m in out) == [2, 3] and all(m.commit == li for m in out)


@pytest.mark.parametrize("size,acks,committed", [
    (1, set(), True), (3, set(), False), (3, {2}, True), (3, {2, 3}, True),
    (5, set(), False), (5, {2}, False), (5, {2, 3}, True), (5, {2, 3, 4, 5}, True),
])
def test_leader_acknowledges_commit(size, acks, committed):
    r = leader(size)
    li = r.propose(b"some data")
    read_messages(r)
    for a in acks:
        r.step(msg(MSG_APP_RESP, a, 1, r.term, index=li))
    assert (r.commit >= li) == committed


def test_leader_counts_itself_only_after_its_own_fsync():
    """Principle 2: the leader's MSG_APPs go out before its fsync, but it counts itself
    in the quorum only once advance() reports its entries durable."""
    r = leader(3)
    li = r.propose(b"x")
    rd = r.ready()                           # the WAL write is in flight
    assert [m.to for m in apps(rd.messages)] == [2, 3]
    r.step(msg(MSG_APP_RESP, 2, 1, r.term, index=li))
    assert r.commit < li                     # 1 durable copy of 3 is not a majority
    assert r.stable < li
    r.advance(rd)                            # our own fsync finished
    assert r.commit == li
    # A majority of followers commits without the leader's own copy.
    li2 = r.propose(b"y")
    rd = r.ready()
    r.step(msg(MSG_APP_RESP, 2, 1, r.term, index=li2))
    r.step(msg(MSG_APP_RESP, 3, 1, r.term, index=li2))
    assert r.commit == li2
    assert rd.committed_entries == [] or rd.committed_entries[-1].index < li2
    nxt = (r.advance(rd), r.ready())[1]
    assert nxt.committed_entries[-1].index == li2      # applied only once durable here


def test_leader_commits_preceding_entries():
    """§5.3: committing an entry commits all preceding ones, also earlier leaders'."""
    for prev in ([], ents(2), ents(1, 2), ents(1)):
        r = leader(3, log=RaftLog(entries=prev), term=2, ack_noop=False)
        for v in (2, 3):      # they agree with the leader's log: replicate from here
            r.step(msg(MSG_APP_RESP, v, 1, r.term, index=len(prev)))
        read_messages(r)
        assert r.commit == 0
        li = r.propose(b"some data")
        read_messages(r)
        r.step(msg(MSG_APP_RESP, 2, 1, r.term, index=li))
        got = [e for rd in drain(r) for e in rd.committed_entries]
        assert [e.index for e in got] == list(range(1, li + 1))


def test_follower_commits_entries_up_to_the_leaders_commit():
    """§5.3: a follower applies entries the leader's commit index covers."""
    for entries, commit in [(ents(1, data=b"a"), 1), (ents(1, 1, data=b"a"), 1),
                            (ents(1, 1, data=b"a"), 2)]:
        r = new_core(1, [1, 2, 3], **NOPV)
        r.step(msg(MSG_APP, 2, 1, 1, entries=entries, commit=commit))
        assert r.commit == commit
        got = [e.index for rd in drain(r) for e in rd.committed_entries]
        assert got == list(range(1, commit + 1))


@pytest.mark.parametrize("term,index,reject,hint", [
    (0, 0, False, 0),      # match with committed entries
    (1, 1, False, 0),
    (2, 2, False, 0),      # match with uncommitted entries
    (1, 2, True, 1),       # unmatched: the hint is where terms are <= 1
    (3, 3, True, 2),       # index beyond our log: hint = our last index
])
def test_follower_checks_consistency(term, index, reject, hint):
    """§5.3: a follower refuses AppendEntries whose preceding entry it does not have."""
    r = new_core(1, [1, 2, 3], log=RaftLog(entries=ents(1, 2)), hs=HardState(0, 0, 1), **NOPV)
    r.step(msg(MSG_APP, 2, 1, 2, log_term=term, index=index, commit=1))
    out = read_messages(r)
    assert len(out) == 1 and out[0].type == MSG_APP_RESP
    assert out[0].reject == reject
    if reject:
        assert out[0].reject_hint == hint and out[0].index == index
    else:
        assert out[0].index == max(index, 1)     # never below our commit


@pytest.mark.parametrize("index,term,new,want,unstable", [
    (2, 2, [(3, 3)], [1, 2, 3], [3]),
    (1, 1, [(2, 3), (3, 4)], [1, 3, 4], [2, 3]),      # conflict: truncate and append
    (0, 0, [(1, 1)], [1, 2], []),                     # already there
    (0, 0, [(1, 3)], [3], [1]),
])
def test_follower_appends_and_resolves_conflicts(index, term, new, want, unstable):
    """§5.3: on a conflicting entry the follower deletes it and everything after."""
    r = new_core(1, [1, 2, 3], log=RaftLog(entries=ents(1, 2)), **NOPV)
    r.step(msg(MSG_APP, 2, 1, 4, log_term=term, index=index,
               entries=[Entry(t, i) for i, t in new]))
    assert [r.log.term_at(i) for i in range(1, r.log.last_index + 1)] == want
    rd = r.ready()
    assert [e.index for e in rd.entries] == unstable   # only what changed is persisted
    assert r.stable == (min(unstable) - 1 if unstable else 2)


FIG7_LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
FIG7_FOLLOWERS = [
    [1, 1, 1, 4, 4, 5, 5, 6, 6],
    [1, 1, 1, 4],
    [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    [1, 1, 1, 4, 4, 4, 4],
    [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
]


@pytest.mark.parametrize("follower", FIG7_FOLLOWERS)
def test_leader_syncs_follower_logs_figure7(follower):
    """§5.3, figure 7: whatever the follower's log (missing, extra or conflicting
    entries), the leader brings it to its own. Member 3 (empty log) gives the vote."""
    nw = Network(3, **NOPV)
    for mid, terms in ((1, FIG7_LEADER), (2, follower), (3, [])):
        nw.peers[mid] = new_core(mid, [1, 2, 3], log=RaftLog(entries=ents(*terms)),
                                 hs=HardState(8 if mid == 1 else 0, 0, 0), **NOPV)
    nw.elect(1)
    assert nw[1].is_leader and nw[1].term == 9
    nw.propose(1, b"x")
    terms = [nw[1].log.term_at(i) for i in range(1, nw[1].log.last_index + 1)]
    assert terms == FIG7_LEADER + [9, 9]
    for mid in (2, 3):
        assert [nw[mid].log.term_at(i) for i in range(1, nw[mid].log.last_index + 1)] == terms
        assert nw[mid].commit == len(terms)


def test_fast_backoff_needs_few_round_trips():
    """The rejection hint skips a whole term per round trip instead of one index."""
    leader_terms = [1] * 3 + [5] * 200
    follower_terms = [1] * 3 + [2] * 100 + [3] * 100 + [4] * 100
    nw = Network(3, **NOPV)
    nw.peers[1] = new_core(1, [1, 2, 3], log=RaftLog(entries=ents(*leader_terms)),
                           hs=HardState(5, 0, 0), **NOPV)
    nw.peers[2] = new_core(2, [1, 2, 3], log=RaftLog(entries=ents(*follower_terms)),
                           hs=HardState(5, 0, 3), **NOPV)
    nw.peers[3] = new_core(3, [1, 2, 3], log=RaftLog(entries=ents(*leader_terms)),
                           hs=HardState(5, 0, 0), **NOPV)
    nw.elect(1)
    assert nw[1].is_leader
    rejects = [m for m in nw.delivered if m.type == MSG_APP_RESP and m.frm == 2 and m.reject]
    assert 1 <= len(rejects) <= 2
    assert [nw[2].log.term_at(i) for i in range(1, 205)] == leader_terms + [6]


def test_leader_only_commits_entries_from_its_current_term():
    """§5.4.2: an entry of an earlier term is not committed by counting replicas; it
    commits when an entry of the current term does."""
    r = leader(3, log=RaftLog(entries=ents(1, 2)), term=2, ack_noop=False)
    assert r.term == 3
    # Replicated on a majority but from term 2: not committed.
    r.step(msg(MSG_APP_RESP, 2, 1, r.term, index=2))
    assert r.commit == 0
    # The leader's own no-op (term 3) at 3 commits, and 1, 2 with it.
    r.step(msg(MSG_APP_RESP, 2, 1, r.term, index=3))
    assert r.commit == 3


def test_leader_appends_noop_on_election():
    r = leader(3, ack_noop=False)
    assert r.log.last_index == 1 and r.log.term_at(1) == 1 and r.state == LEADER


def test_follower_ignores_append_conflicting_with_committed_entries():
    r = new_core(1, [1, 2, 3], log=RaftLog(entries=ents(1, 1)), hs=HardState(1, 0, 2), **NOPV)
    r.step(msg(MSG_APP, 2, 1, 3, index=0, log_term=0, entries=[Entry(3, 1)], commit=0))
    assert [r.log.term_at(i) for i in (1, 2)] == [1, 1]     # committed entries stay
    out = read_messages(r)
    assert out[0].type == MSG_APP_RESP and out[0].index == 2  # "I have up to commit"
    assert r.state == FOLLOWER


def test_replication_through_a_network():
    nw = Network(5, **NOPV)
    nw.elect(1)
    for i in range(20):
        nw.propose(1 + i % 5, b"v%d" % i)
    want = [b"v%d" % i for i in range(20)]
    for mid in range(1, 6):
        assert nw.applied_data(mid) == want
        assert nw[mid].commit == 21
