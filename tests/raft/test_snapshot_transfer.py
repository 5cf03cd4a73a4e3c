"""Log compaction and snapshot transfer (Raft §7; etcd's MsgSnap / MsgSnapStatus)."""
from netutil import Network, ents, msg, new_core, read_messages

from fastkv.raft.log import RaftLog
from fastkv.raft.messages import (CONF_ADD_NODE, MSG_APP, MSG_APP_RESP, MSG_SNAP,
                                  MSG_SNAP_STATUS, ConfChange, ConfState, Message,
                                  SnapshotMeta)
from fastkv.raft.progress import PROBE, REPLICATE, SNAPSHOT
from fastkv.storage.wal import HardState

OPTS = dict(pre_vote=True, check_quorum=True)


def snapshot_and_compact(core, index=None):
    index = index or core.applied
    meta = SnapshotMeta(index, core.log.term_at(index), core.conf_state)
    core.set_snapshot(meta)
    core.compact(index)
    return meta


def test_lagging_follower_catches_up_by_snapshot():
    nw = Network(3, **OPTS)
    nw.elect(1)
    nw.isolate(3)
    for i in range(10):
        nw.propose(1, b"%d" % i)
    meta = snapshot_and_compact(nw[1], 8)
    assert nw[1].log.first_index == 9
    nw.recover()
    nw.tick(1, n=2)
    snaps = [m for m in nw.delivered if m.type == MSG_SNAP]
    assert [(m.to, m.snapshot.index) for m in snaps] == [(3, 8)]
    # The follower put the snapshot into its Ready, reset its log and configuration ...
    rds = [rd for rd in nw.readys[3] if rd.snapshot is not None]
    assert len(rds) == 1 and rds[0].snapshot == meta and rds[0].committed_entries == []
    assert nw[3].log.first_index == 9 and nw[3].voters == [1, 2, 3]
    # ... and caught up with appends after it.
    assert nw[3].commit == nw[1].commit == 11 and nw[3].applied == 11
    assert nw.applied_data(3) == nw.applied_data(1)
    assert nw[1].progress[3].state == REPLICATE


def test_progress_waits_in_snapshot_state_until_the_status():
    nw = Network(3, **OPTS)
    nw.snap_status = False
    nw.elect(1)
    nw.isolate(3)
    for i in range(5):
        nw.propose(1, b"%d" % i)
    snapshot_and_compact(nw[1], 6)
    nw.recover()
    nw.drop(MSG_SNAP)                        # the transfer fails ...
    nw.tick(1, n=2)
    pr = nw[1].progress[3]
    assert pr.state == SNAPSHOT and pr.pending_snapshot == 6
    nw.tick(1, n=3)                          # ... nothing else is sent meanwhile
    assert sum(m.type == MSG_SNAP for m in nw.delivered) == 0
    nw[1].step(Message(MSG_SNAP_STATUS, frm=3, reject=True))      # the transport says so
    assert pr.state == PROBE
    nw.recover()
    nw.snap_status = True
    nw.tick(1, n=2)                          # a heartbeat response unpauses: retried
    assert nw[3].commit == nw[1].commit


def test_follower_with_the_snapshot_entry_only_fast_forwards():
    r = new_core(2, [1, 2, 3], log=RaftLog(entries=ents(1, 1, 1)), hs=HardState(1, 0, 1))
    r.step(msg(MSG_SNAP, 1, 2, 1, snapshot=SnapshotMeta(2, 1, ConfState([1, 2, 3]))))
    assert r.commit == 2 and r.log.last_index == 3 and r.log.first_index == 1
    rd = r.ready()
    assert rd.snapshot is None
    assert [(m.type, m.index) for m in rd.messages] == [(MSG_APP_RESP, 2)]


def test_stale_snapshot_is_ignored():
    r = new_core(2, [1, 2, 3], log=RaftLog(entries=ents(1, 1, 1)), hs=HardState(1, 0, 3))
    r.step(msg(MSG_SNAP, 1, 2, 1, snapshot=SnapshotMeta(2, 1, ConfState([1, 2, 3]))))
    rd = r.ready()
    assert rd.snapshot is None and r.log.last_index == 3
    assert [(m.type, m.index) for m in rd.messages] == [(MSG_APP_RESP, 3)]


def test_snapshot_with_a_conflicting_log_replaces_it():
    r = new_core(2, [1, 2, 3], log=RaftLog(entries=ents(1, 1, 1)), hs=HardState(2, 0, 1),
                 applied=1)
    meta = SnapshotMeta(5, 2, ConfState([1, 2, 3, 4], [5]))
    r.step(msg(MSG_SNAP, 1, 2, 2, snapshot=meta))
    rd = r.ready()
    assert rd.snapshot == meta and rd.committed_entries == []
    assert rd.hardstate.commit == 5
    assert r.voters == [1, 2, 3, 4] and r.learners == [5]
    assert (r.log.first_index, r.log.last_index) == (6, 5)
    r.advance(rd)
    assert r.applied == 5 and r.stable == 5
    # The following append after the snapshot works.
    r.step(msg(MSG_APP, 1, 2, 2, index=5, log_term=2, entries=ents(2, start=6), commit=6))
    rds = []
    while r.has_ready():
        rd = r.ready()
        rds.append(rd)
        r.advance(rd)
    assert [e.index for rd in rds for e in rd.committed_entries] == [6]


def test_snapshot_not_naming_us_is_ignored():
    r = new_core(2, [1, 2, 3])
    r.step(msg(MSG_SNAP, 1, 2, 1, snapshot=SnapshotMeta(5, 1, ConfState([1, 3]))))
    assert r.ready().snapshot is None and r.commit == 0


def test_new_member_joins_through_a_snapshot():
    nw = Network(3, **OPTS)
    nw.elect(1)
    for i in range(5):
        nw.propose(1, b"%d" % i)
    nw.add_core(new_core(4, [], seed=4, **OPTS))
    nw[1].propose_conf_change(ConfChange(CONF_ADD_NODE, 4))
    nw.isolate(4)
    nw.send()
    snapshot_and_compact(nw[1])             # the snapshot includes member 4
    assert 4 in nw[1].conf_state.voters
    nw.recover()
    nw.tick(1, n=2)
    assert nw[4].voters == [1, 2, 3, 4] and nw[4].commit == nw[1].commit
    assert nw.applied_data(4) == nw.applied_data(1)


def test_no_snapshot_known_means_no_send():
    r = new_core(1, [1, 2], pre_vote=False, check_quorum=False)
    r.campaign()
    from fastkv.raft.messages import MSG_VOTE_RESP
    r.step(msg(MSG_VOTE_RESP, 2, 1, 1))
    read_messages(r)
    r.propose(b"x")
    read_messages(r)
    r.step(msg(MSG_APP_RESP, 2, 1, 1, index=2))
    read_messages(r)
    r.log.compact(2)               # compacted without a snapshot file (a driver bug)
    r.progress[2].become_probe()
    r.progress[2].next = 1
    r.progress[2].match = 0
    out = read_messages(r)
    r.step(msg(MSG_APP_RESP, 2, 1, 1, index=0, reject=True, reject_hint=0))
    out = read_messages(r)
    assert not any(m.type == MSG_SNAP for m in out)
