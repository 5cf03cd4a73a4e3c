"""The Raft core as a one-voter cluster: Ready/Advance, commit after persist, bootstrap."""
import random

import pytest

from fastkv.errors import ErrProposalDropped, StorageCorruption
from fastkv.raft.core import RaftCore
from fastkv.raft.log import RaftLog
from fastkv.raft.messages import (CONF_ADD_NODE, ENTRY_CONF_CHANGE, LEADER, ConfChange,
                                  ConfState)
from fastkv.storage.wal import Entry, HardState


def new_core(entries=(), hs=HardState(), snap=(0, 0), applied=0, voters=(7,), **kw):
    log = RaftLog(snap[0], snap[1], list(entries))
    return RaftCore(7, log, hs, applied, ConfState(list(voters)), rng=random.Random(3), **kw)


def persist_and_apply(core):
    """Play the driver: persist what Ready says, apply what it says, advance."""
    applied = []
    while core.has_ready():
        rd = core.ready()
        for e in rd.committed_entries:
            if e.type == ENTRY_CONF_CHANGE:
                core.apply_conf_change(ConfChange.decode(e.data))
        applied.extend(rd.committed_entries)
        core.advance(rd)
    return applied


def test_proposals_need_a_leader():
    core = new_core()
    with pytest.raises(ErrProposalDropped) as ei:
        core.propose(b"x")
    assert ei.value.message == "raft proposal dropped"


def test_elects_itself_at_its_first_election_timeout():
    core = new_core(hs=HardState(term=4, vote=0, commit=0))
    timeout = core.randomized_election_timeout
    assert 10 <= timeout < 20
    for _ in range(timeout - 1):
        core.tick()
    assert not core.is_leader
    core.tick()
    assert core.is_leader and core.term == 5 and core.vote == 7 and core.state == LEADER
    rd = core.ready()
    assert rd.hardstate == HardState(5, 7, 0)       # term and vote are persisted ...
    assert [(e.term, e.index, e.data) for e in rd.entries] == [(5, 1, b"")]  # ... with the no-op
    assert rd.committed_entries == [] and rd.messages == []  # nothing commits before the fsync


def test_campaign_elects_at_once():
    core = new_core()
    core.campaign()
    assert core.is_leader and core.lead == 7


def test_commit_only_after_persist():
    core = new_core()
    core.campaign()
    persist_and_apply(core)
    i = core.propose(b"a")
    rd = core.ready()
    assert [e.index for e in rd.entries] == [i]
    assert core.commit < i                          # not durable yet: not committed
    core.advance(rd)                                # the driver fsynced it
    assert core.commit == i and core.stable == i
    rd = core.ready()
    assert [e.data for e in rd.committed_entries] == [b"a"]
    core.advance(rd)
    assert core.applied == i and not core.has_ready()


def test_batch_of_proposals_is_one_ready():
    core = new_core()
    core.campaign()
    persist_and_apply(core)
    idx = [core.propose(bytes([n])) for n in range(50)]
    rd = core.ready()
    assert [e.index for e in rd.entries] == idx
    assert rd.committed_entries == []
    core.advance(rd)
    assert [e.data for e in persist_and_apply(core)] == [bytes([n]) for n in range(50)]


def test_restart_commits_the_old_tail_through_the_new_term():
    old = [Entry(1, 1, 0, b""), Entry(1, 2, 0, b"p"), Entry(1, 3, 0, b"q")]
    core = new_core(entries=old, hs=HardState(1, 7, 2), applied=0)
    # Entries up to the persisted commit index are applied at once ...
    first = persist_and_apply(core)
    assert [e.index for e in first] == [1, 2]
    # ... the rest once the new leader's no-op (term 2) is durable.
    core.campaign()
    rest = persist_and_apply(core)
    assert [(e.index, e.term) for e in rest] == [(3, 1), (4, 2)]


def test_compact_keeps_unapplied_entries():
    core = new_core()
    core.campaign()
    persist_and_apply(core)
    for n in range(10):
        core.propose(bytes([n]))
    persist_and_apply(core)
    core.compact(6)
    assert core.log.first_index == 7 and core.log.last_index == 11
    assert core.log.term_at(6) == core.term
    core.compact(100)                               # never past applied
    assert core.log.first_index == 12


def test_compact_stops_at_the_latest_snapshot():
    from fastkv.raft.messages import SnapshotMeta
    core = new_core()
    core.campaign()
    persist_and_apply(core)
    for n in range(10):
        core.propose(bytes([n]))
    persist_and_apply(core)
    core.set_snapshot(SnapshotMeta(4, core.term, ConfState([7])))
    core.compact(9)
    assert core.log.first_index == 5


def test_commit_beyond_the_log_is_refused():
    with pytest.raises(StorageCorruption, match="beyond the last log index"):
        new_core(entries=[Entry(1, 1, 0, b"")], hs=HardState(1, 7, 5))


def test_committed_entries_are_never_ahead_of_durable_ones():
    core = new_core()
    core.campaign()
    persist_and_apply(core)
    core.propose(b"a")
    core.commit = core.log.last_index  # even if commit ran ahead of the fsync ...
    rd = core.ready()
    assert rd.committed_entries == []  # ... nothing un-durable is handed out to apply


def test_bootstrap_from_conf_change_entries():
    """As etcd's StartNode: the log holds one committed CONF_ADD_NODE per member and the
    configuration is empty until the driver applies them."""
    boot = [Entry(1, 1, ENTRY_CONF_CHANGE, ConfChange(CONF_ADD_NODE, 7).encode())]
    core = new_core(entries=boot, hs=HardState(1, 0, 1), voters=())
    assert core.voters == []
    core.campaign()                                  # not a voter yet: no campaign
    assert not core.is_leader and core.term == 1
    persist_and_apply(core)
    assert core.voters == [7] and core.applied == 1
    for _ in range(20):
        core.tick()
    assert core.is_leader and core.term == 2
    persist_and_apply(core)
    assert core.commit == 2


def test_unapplied_conf_change_blocks_campaign():
    boot = [Entry(1, 1, ENTRY_CONF_CHANGE, ConfChange(CONF_ADD_NODE, 7).encode())]
    core = new_core(entries=boot, hs=HardState(1, 0, 1), voters=(7,))
    core.campaign()                 # committed but not applied: etcd refuses to campaign
    assert not core.is_leader
    persist_and_apply(core)
    core.campaign()
    assert core.is_leader


def test_single_voter_read_index_after_first_commit():
    core = new_core()
    core.campaign()
    core.read_index(b"r1")          # no entry of this term committed yet: queued
    rd = core.ready()
    assert rd.read_states == []
    core.advance(rd)
    rd = core.ready()
    from fastkv.raft.messages import ReadState
    assert rd.read_states == [ReadState(1, b"r1")]
    core.advance(rd)
    core.read_index(b"r2")          # now answered at once, no round trip
    assert core.ready().read_states == [ReadState(1, b"r2")]
