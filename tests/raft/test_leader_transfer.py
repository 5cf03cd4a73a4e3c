"""Leader transfer (etcd's MsgTransferLeader / move-leader, Raft thesis §3.10)."""
import pytest

from netutil import Network, read_messages

from fastkv.errors import ErrProposalDropped
from fastkv.raft.messages import (ConfChange, CONF_ADD_LEARNER_NODE, FOLLOWER, MSG_APP,
                                  MSG_TIMEOUT_NOW, MSG_VOTE)

OPTS = dict(pre_vote=True, check_quorum=True)


def test_transfer_to_an_up_to_date_follower():
    nw = Network(3, **OPTS)
    nw.elect(1)
    nw.propose(1, b"x")
    nw[1].transfer_leader(2)
    nw.send()
    assert nw[2].is_leader and nw[2].term == 2
    assert nw[1].state == FOLLOWER and nw[1].lead == 2
    # The transferee campaigned at once, without pre-vote, marked as a transfer.
    votes = [m for m in nw.delivered if m.type == MSG_VOTE and m.frm == 2]
    assert votes and all(m.context == b"CampaignTransfer" for m in votes)
    nw.propose(2, b"y")
    assert nw.applied_data(3) == [b"x", b"y"]


def test_transfer_catches_the_transferee_up_first():
    nw = Network(3, **OPTS)
    nw.elect(1)
    nw.isolate(3)
    for i in range(5):
        nw.propose(1, b"%d" % i)
    nw.recover()
    assert nw[3].log.last_index < nw[1].log.last_index
    nw.drop(MSG_APP, frm=1, to=3)            # hold back the catch-up ...
    nw[1].transfer_leader(3)
    nw.send()
    assert nw[1].is_leader and nw[1].lead_transferee == 3
    assert not any(m.type == MSG_TIMEOUT_NOW for m in nw.delivered)
    with pytest.raises(ErrProposalDropped):  # proposals are dropped meanwhile
        nw[1].propose(b"during")
    nw.recover()                             # ... then let it happen
    nw.tick(1)
    assert nw[3].is_leader
    assert nw.applied_data(3)[:5] == [b"%d" % i for i in range(5)]


def test_transfer_aborts_after_an_election_timeout():
    nw = Network(3, **OPTS)
    nw.elect(1)
    nw.isolate(3)
    nw[1].transfer_leader(3)
    nw.send()
    assert nw[1].lead_transferee == 3
    nw.tick(1, n=nw[1].election_tick)
    assert nw[1].is_leader and nw[1].lead_transferee == 0
    assert nw.propose(1, b"again") is not None


def test_transfer_to_self_or_a_stranger_is_ignored():
    nw = Network(3, **OPTS)
    nw.elect(1)
    for to in (1, 9):
        nw[1].transfer_leader(to)
        nw.send()
        assert nw[1].is_leader and nw[1].lead_transferee == 0


def test_transfer_requested_on_a_follower_is_forwarded():
    nw = Network(3, **OPTS)
    nw.elect(1)
    nw[3].transfer_leader(3)
    nw.send()
    assert nw[3].is_leader and nw[3].term == 2


def test_transfer_to_a_learner_is_ignored():
    nw = Network(3, learners=[3], **OPTS)
    nw.elect(1)
    nw[1].transfer_leader(3)
    nw.send()
    assert nw[1].is_leader and nw[1].lead_transferee == 0


def test_second_transfer_to_another_member_replaces_the_first():
    nw = Network(3, **OPTS)
    nw.elect(1)
    nw.isolate(3)
    nw[1].transfer_leader(3)
    nw.send()
    assert nw[1].lead_transferee == 3
    nw[1].transfer_leader(2)
    nw.send()
    assert nw[2].is_leader


def test_removing_the_transferee_aborts_the_transfer():
    nw = Network(3, **OPTS)
    nw.elect(1)
    nw.isolate(3)
    nw[1].transfer_leader(3)
    nw.send()
    assert nw[1].lead_transferee == 3
    nw[1].apply_conf_change(ConfChange(CONF_ADD_LEARNER_NODE, 3))
    assert nw[1].lead_transferee == 0
    read_messages(nw[1])
