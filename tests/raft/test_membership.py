"""Single-step membership changes (Raft thesis §4.1; etcd raft's ConfChange), learners."""
import pytest

from netutil import Network, new_core, read_messages

from fastkv.errors import ErrConfChangePending, ErrProposalDropped
from fastkv.raft.messages import (CONF_ADD_LEARNER_NODE, CONF_ADD_NODE, CONF_REMOVE_NODE,
                                  CONF_UPDATE_NODE, FOLLOWER, MSG_VOTE, MSG_PRE_VOTE,
                                  ConfChange, ConfState)

OPTS = dict(pre_vote=True, check_quorum=True)


def joiner(nw, mid):
    """A new member started with an empty log and no configuration (as etcd's
    --initial-cluster-state existing): it learns everything from the leader."""
    return nw.add_core(new_core(mid, [], seed=mid, **OPTS))


def test_add_a_voter():
    nw = Network(3, bootstrap=True, **OPTS)
    nw.elect(1)
    nw.propose(1, b"before")
    joiner(nw, 4)
    nw[1].propose_conf_change(ConfChange(CONF_ADD_NODE, 4))
    nw.send()
    for mid in (1, 2, 3, 4):
        assert nw[mid].voters == [1, 2, 3, 4]
    assert nw.applied_data(4) == [b"before"]
    # The new member counts: with 2 of 4 down, nothing commits.
    nw.isolate(3)
    nw.isolate(4)
    commit = nw[1].commit
    nw.propose(1, b"needs 3 of 4")
    assert nw[1].commit == commit
    nw.recover()
    nw.tick(1)
    assert nw.applied_data(4) == [b"before", b"needs 3 of 4"]


def test_one_pending_change_at_a_time():
    nw = Network(3, **OPTS)
    nw.elect(1)
    nw.isolate(2), nw.isolate(3)
    nw[1].propose_conf_change(ConfChange(CONF_ADD_NODE, 4))
    nw.send()
    with pytest.raises(ErrConfChangePending):
        nw[1].propose_conf_change(ConfChange(CONF_ADD_NODE, 5))
    nw.recover()
    nw.tick(1)
    assert nw[1].voters == [1, 2, 3, 4] and nw[1].pending_conf_index <= nw[1].applied
    assert nw[1].propose_conf_change(ConfChange(CONF_REMOVE_NODE, 4)) is not None


def test_a_new_leader_waits_for_unapplied_changes_in_its_log():
    """A new leader does not know whether the entries before its term hold a change:
    it refuses a change until it applied everything up to its election (etcd)."""
    from netutil import ents, msg
    from fastkv.raft.log import RaftLog
    from fastkv.raft.messages import MSG_VOTE_RESP
    from fastkv.storage.wal import HardState
    r = new_core(1, [1, 2, 3], log=RaftLog(entries=ents(1, 1)), hs=HardState(1, 0, 0),
                 pre_vote=False, check_quorum=False)
    r.campaign()
    r.step(msg(MSG_VOTE_RESP, 2, 1, 2))
    assert r.is_leader and r.pending_conf_index == 2
    with pytest.raises(ErrConfChangePending):
        r.propose_conf_change(ConfChange(CONF_ADD_NODE, 4))
    read_messages(r)
    from fastkv.raft.messages import MSG_APP_RESP
    r.step(msg(MSG_APP_RESP, 2, 1, 2, index=3))
    read_messages(r)                      # committed and applied up to the no-op
    assert r.applied == 3
    assert r.propose_conf_change(ConfChange(CONF_ADD_NODE, 4)) == 4


def test_forwarded_changes_are_also_one_at_a_time():
    nw = Network(3, **OPTS)
    nw.elect(1)
    assert nw[1].propose_conf_change(ConfChange(CONF_ADD_NODE, 4)) is not None  # pending
    assert nw[2].propose_conf_change(ConfChange(CONF_ADD_NODE, 5)) is None      # forwarded
    nw.send()
    # 5's change reached the leader while 4's was pending: etcd replaces it with an
    # empty entry (the proposer's waiter times out).
    assert nw[1].voters == [1, 2, 3, 4] and nw[2].voters == [1, 2, 3, 4]
    assert nw[1].log.last_index == 3                       # no-op, +4, the empty stand-in
    assert [(e.type, e.data) for e in nw[1].log.slice(3, 3)] == [(0, b"")]


def test_remove_a_follower():
    nw = Network(3, **OPTS)
    nw.elect(1)
    nw.isolate(3)
    nw[1].propose_conf_change(ConfChange(CONF_REMOVE_NODE, 3))
    nw.send()
    assert nw[1].voters == [1, 2] and 3 not in nw[1].progress
    nw.propose(1, b"two voters")
    assert nw.applied_data(2) == [b"two voters"]
    # The removed member no longer campaigns once it knows.
    nw.recover()
    nw.tick(n=3)
    r3 = nw[3]
    r3.apply_conf_change(ConfChange(CONF_REMOVE_NODE, 3))
    read_messages(r3)
    term = r3.term
    for _ in range(100):
        r3.tick()
    assert r3.term == term and not read_messages(r3)


def test_remove_the_leader_steps_down_once_applied():
    nw = Network(3, **OPTS)
    nw.elect(1)
    nw[1].propose_conf_change(ConfChange(CONF_REMOVE_NODE, 1))
    nw.send()
    seen = len(nw.delivered)
    assert nw[1].state == FOLLOWER and nw[1].voters == [2, 3]
    nw.tick(n=40)
    lead = nw.leader()
    assert lead is not None and lead.id in (2, 3)
    nw.propose(lead.id, b"after")
    assert b"after" in nw.applied_data(2) and b"after" in nw.applied_data(3)
    assert not any(m.type in (MSG_VOTE, MSG_PRE_VOTE) and m.frm == 1
                   for m in nw.delivered[seen:])


def test_learner_gets_the_log_but_does_not_count():
    nw = Network(3, bootstrap=True, **OPTS)
    nw.elect(1)
    joiner(nw, 4)
    nw[1].propose_conf_change(ConfChange(CONF_ADD_LEARNER_NODE, 4))
    nw.send()
    assert nw[1].voters == [1, 2, 3] and nw[1].learners == [4]
    nw.propose(1, b"x")
    assert nw.applied_data(4) == [b"x"]
    # Two voters down: the learner's copy does not make a quorum.
    nw.isolate(2), nw.isolate(3)
    nw.cut(1, 2), nw.cut(1, 3)
    nw.cut_pairs -= {(1, 4), (4, 1)}
    commit = nw[1].commit
    nw.propose(1, b"y")
    assert nw[4].log.last_index == nw[1].log.last_index and nw[1].commit == commit


def test_learner_never_campaigns_nor_counts_as_voter():
    nw = Network(3, learners=[3], **OPTS)
    nw.elect(3)
    assert not nw[3].is_leader and nw[3].term == 0
    nw.elect(1)
    nw.isolate(1)
    for _ in range(100):
        nw[3].tick()
    assert nw[3].state == FOLLOWER
    assert not any(m.frm == 3 and m.type in (MSG_VOTE, MSG_PRE_VOTE) for m in nw.delivered)


def test_promote_a_learner():
    nw = Network(3, learners=[3], **OPTS)
    nw.elect(1)
    nw.propose(1, b"x")
    match = nw[1].progress[3].match
    nw[1].propose_conf_change(ConfChange(CONF_ADD_NODE, 3))
    nw.send()
    assert nw[1].voters == [1, 2, 3] and nw[1].learners == [] and nw[3].voters == [1, 2, 3]
    assert nw[1].progress[3].match >= match and not nw[1].progress[3].is_learner
    nw.isolate(1)
    nw.tick(n=40)
    assert nw.leader().id in (2, 3)


def test_update_node_changes_no_voter():
    r = new_core(1, [1, 2, 3])
    cs = r.apply_conf_change(ConfChange(CONF_UPDATE_NODE, 2, b"new urls"))
    assert cs == ConfState([1, 2, 3], []) and r.voters == [1, 2, 3]


def test_malformed_change_is_ignored():
    r = new_core(1, [1, 2, 3])
    assert r.apply_conf_change(ConfChange(99, 2)) == ConfState([1, 2, 3], [])
    assert r.apply_conf_change(ConfChange(CONF_ADD_NODE, 0)) == ConfState([1, 2, 3], [])


def test_removed_leader_rejects_proposals():
    nw = Network(3, **OPTS)
    nw.elect(1)
    r = nw[1]
    r.progress.pop(1)               # as if its removal was applied but it still leads
    with pytest.raises(ErrProposalDropped):
        r.propose(b"x")
