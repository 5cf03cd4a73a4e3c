"""Flow control on the leader (etcd's Progress states and Inflights): probe sends one
at a time, replicate pipelines within a bounded window, messages have a size cap, and
one Ready makes one MSG_APP per follower from all new entries."""
from netutil import msg, new_core, read_messages

from fastkv.raft.messages import (MSG_APP, MSG_APP_RESP, MSG_HEARTBEAT_RESP, MSG_UNREACHABLE,
                                  MSG_VOTE_RESP, Message)
from fastkv.raft.progress import PROBE, REPLICATE

NOPV = dict(pre_vote=False, check_quorum=False)


def leader(replicate=True, **kw):
    r = new_core(1, [1, 2, 3], **{**NOPV, **kw})
    r.campaign()
    r.step(msg(MSG_VOTE_RESP, 2, 1, 1))
    read_messages(r)
    if replicate:
        for v in (2, 3):
            r.step(msg(MSG_APP_RESP, v, 1, 1, index=1))
        read_messages(r)
        assert r.progress[2].state == REPLICATE
    return r


def apps_to(out, to):
    return [m for m in out if m.type == MSG_APP and m.to == to]


def test_one_ready_one_append_per_follower():
    r = leader()
    for i in range(100):
        r.propose(b"%d" % i)
    out = read_messages(r)
    for to in (2, 3):
        a = apps_to(out, to)
        assert len(a) == 1 and len(a[0].entries) == 100


def test_probe_sends_one_at_a_time():
    r = leader(replicate=False)
    assert r.progress[2].state == PROBE and r.progress[2].is_paused()
    r.propose(b"a")
    r.propose(b"b")
    assert apps_to(read_messages(r), 2) == []       # the no-op's probe is unanswered
    r.step(msg(MSG_APP_RESP, 2, 1, 1, index=1))     # answered: replicate, send the rest
    out = apps_to(read_messages(r), 2)
    assert len(out) == 1 and [e.data for e in out[0].entries] == [b"a", b"b"]
    assert r.progress[2].state == REPLICATE


def test_probe_unpaused_by_heartbeat_response():
    r = leader(replicate=False)
    r.propose(b"a")
    read_messages(r)
    r.step(msg(MSG_HEARTBEAT_RESP, 2, 1, 1))
    out = apps_to(read_messages(r), 2)
    assert len(out) == 1 and out[0].index == 0          # re-probes from next


def test_inflight_window_is_bounded():
    r = leader(max_inflight=3)
    sent = []
    for i in range(10):
        r.propose(b"%d" % i)
        sent += apps_to(read_messages(r), 2)
    assert len(sent) == 3 and r.progress[2].is_paused()
    # Acknowledging the first frees one slot: everything left goes in one message.
    r.step(msg(MSG_APP_RESP, 2, 1, 1, index=sent[0].entries[-1].index))
    more = apps_to(read_messages(r), 2)
    assert len(more) == 1 and [e.data for e in more[0].entries] == [b"%d" % i for i in range(3, 10)]


def test_full_window_freed_by_heartbeat_response():
    r = leader(max_inflight=2)
    for i in range(3):
        r.propose(b"%d" % i)
        read_messages(r)
    assert r.progress[2].is_paused()
    r.step(msg(MSG_HEARTBEAT_RESP, 2, 1, 1))
    assert not r.progress[2].is_paused()
    assert len(apps_to(read_messages(r), 2)) == 1


def test_max_message_size():
    r = leader(max_msg_bytes=100)
    for i in range(10):
        r.propose(b"x" * 40)
    out = apps_to(read_messages(r), 2)
    assert [len(m.entries) for m in out] == [2, 2, 2, 2, 2]
    assert all(sum(len(e.data) for e in m.entries) <= 100 for m in out)
    assert [m.index for m in out] == [1, 3, 5, 7, 9]     # pipelined back to back


def test_an_oversized_entry_still_goes_alone():
    r = leader(max_msg_bytes=10)
    r.propose(b"y" * 50)
    r.propose(b"z")
    out = apps_to(read_messages(r), 2)
    assert [len(m.entries) for m in out] == [1, 1]


def test_rejection_in_replicate_falls_back_to_probe():
    r = leader()
    r.propose(b"a")
    read_messages(r)
    r.propose(b"b")
    assert [m.index for m in apps_to(read_messages(r), 2)] == [2]   # pipelined after "a"
    # The append after "a" is refused (the follower lost "a"): back to match + 1.
    r.step(msg(MSG_APP_RESP, 2, 1, 1, index=2, reject=True, reject_hint=1, log_term=1))
    pr = r.progress[2]
    assert pr.state == PROBE and pr.next == 2
    out = apps_to(read_messages(r), 2)
    assert len(out) == 1 and out[0].index == 1 and len(out[0].entries) == 2


def test_stale_rejection_is_ignored():
    r = leader()
    r.propose(b"a")
    read_messages(r)
    r.step(msg(MSG_APP_RESP, 2, 1, 1, index=2))
    r.step(msg(MSG_APP_RESP, 2, 1, 1, index=1, reject=True, reject_hint=0))
    assert r.progress[2].state == REPLICATE and r.progress[2].match == 2


def test_unreachable_moves_replicate_to_probe():
    r = leader()
    r.step(Message(MSG_UNREACHABLE, frm=2))
    assert r.progress[2].state == PROBE


def test_commit_is_carried_by_an_empty_append():
    r = leader()
    r.propose(b"a")
    read_messages(r)
    r.step(msg(MSG_APP_RESP, 2, 1, 1, index=2))
    out = apps_to(read_messages(r), 3)
    assert len(out) == 1 and out[0].entries == [] and out[0].commit == 2


def test_ack_beyond_the_log_is_ignored():
    r = leader()
    r.step(msg(MSG_APP_RESP, 2, 1, 1, index=99))
    assert r.progress[2].match == 1 and r.commit == 1


def test_malformed_messages_are_dropped():
    r = leader()
    before = (r.term, r.commit, r.log.last_index)
    for bad in (Message(99, frm=2, term=1), Message(MSG_APP, frm=2, term=-1),
                Message(MSG_APP, frm=2, term=1, index=0, entries=["junk"]),
                Message(MSG_APP_RESP, frm="2", term=1), "not a message",
                Message(MSG_APP, frm=2, term=1, context=None)):
        r.step(bad)
    assert (r.term, r.commit, r.log.last_index) == before
