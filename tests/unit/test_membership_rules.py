"""etcd's membership rules (fastkv/membership.py): validation and the strict checks."""
from fastkv.errors import (ErrMemberExist, ErrMemberNotFound, ErrMemberNotLearner,
                           ErrPeerURLExist, ErrTooManyLearners)
from fastkv.membership import (ErrIDRemoved, Member, Membership, encode_context,
                               new_member_id)
from fastkv.raft.messages import (CONF_ADD_LEARNER_NODE, CONF_ADD_NODE, CONF_REMOVE_NODE,
                                  CONF_UPDATE_NODE, ConfChange)


def add(ms, mid, url, learner=False, started=True):
    m = Member(mid, f"n{mid}" if started else "", [url], [], learner)
    cc = ConfChange(CONF_ADD_LEARNER_NODE if learner else CONF_ADD_NODE, mid, encode_context(m))
    assert ms.validate(cc) is None
    ms.apply(cc)
    if started:
        ms.set_attributes(mid, f"n{mid}", ["http://c"])
    return cc


def test_add_remove_update_promote_and_their_refusals():
    ms = Membership()
    add(ms, 1, "http://a")
    add(ms, 2, "http://b")
    dup = ConfChange(CONF_ADD_NODE, 2, encode_context(Member(2, "", ["http://z"])))
    assert isinstance(ms.validate(dup), ErrMemberExist)
    same_url = ConfChange(CONF_ADD_NODE, 3, encode_context(Member(3, "", ["http://a"])))
    assert isinstance(ms.validate(same_url), ErrPeerURLExist)
    add(ms, 3, "http://c", learner=True)
    second_learner = ConfChange(CONF_ADD_LEARNER_NODE, 4,
                                encode_context(Member(4, "", ["http://d"], [], True)))
    assert isinstance(ms.validate(second_learner), ErrTooManyLearners)
    promote_voter = ConfChange(CONF_ADD_NODE, 2, encode_context(Member(2), promote=True))
    assert isinstance(ms.validate(promote_voter), ErrMemberNotLearner)
    promote = ConfChange(CONF_ADD_NODE, 3, encode_context(Member(3), promote=True))
    assert ms.validate(promote) is None
    ms.apply(promote)
    assert ms.conf_state().voters == [1, 2, 3] and ms.conf_state().learners == []
    upd = ConfChange(CONF_UPDATE_NODE, 2, encode_context(Member(2, "", ["http://a"])))
    assert isinstance(ms.validate(upd), ErrPeerURLExist)
    upd = ConfChange(CONF_UPDATE_NODE, 2, encode_context(Member(2, "", ["http://b2"])))
    ms.apply(upd)
    assert ms.get(2).peer_urls == ["http://b2"] and ms.get(2).name == "n2"
    rm = ConfChange(CONF_REMOVE_NODE, 2)
    assert ms.validate(rm) is None
    ms.apply(rm)
    assert isinstance(ms.validate(rm), ErrIDRemoved)
    assert isinstance(ms.validate(rm), ErrMemberNotFound)   # v3 shows "member not found"
    readd = ConfChange(CONF_ADD_NODE, 2, encode_context(Member(2, "", ["http://q"])))
    assert isinstance(ms.validate(readd), ErrIDRemoved)
    back = Membership.from_snapshot_state(ms.snapshot_state())
    assert back.snapshot_state() == ms.snapshot_state() and back.removed == {2}


def test_strict_checks_count_started_voters():
    ms = Membership()
    add(ms, 1, "http://a")
    assert ms.ready_to_add_voter()              # 1 -> 2 members: etcd's restore case
    add(ms, 2, "http://b", started=False)
    assert not ms.ready_to_add_voter()          # 1 started of 3 would-be voters
    ms.set_attributes(2, "n2", [])
    assert ms.ready_to_add_voter()
    add(ms, 3, "http://c", started=False)
    assert ms.ready_to_remove_voter(3)          # 2 started of the 2 that remain
    assert not ms.ready_to_remove_voter(1)      # 1 started of the 2 that remain


def test_member_ids_depend_on_time_only_when_added_at_run_time():
    a = new_member_id(["http://b", "http://a"], "tok")
    assert a == new_member_id(["http://a", "http://b"], "tok")
    assert new_member_id(["http://a"], "", 1000.0) != new_member_id(["http://a"], "", 2000.0)
