"""The Raft core in its one-voter configuration: Ready/Advance, commit after persist."""
import pytest

from fastkv.errors import ErrNotLeader
from fastkv.raft.core import RaftCore
from fastkv.raft.log import RaftLog
from fastkv.storage.wal import Entry, HardState


def new_core(entries=(), hs=HardState(), snap=(0, 0), applied=0):
    log = RaftLog(snap[0], snap[1], list(entries))
    return RaftCore(7, [7], log, hs, applied)


def persist_and_apply(core):
    """Play the driver: persist what Ready says, apply what it says, advance."""
    applied = []
    while core.has_ready():
        rd = core.ready()
        applied.extend(rd.committed_entries)
        core.advance(rd)
    return applied


def test_proposals_need_a_leader():
    core = new_core()
    with pytest.raises(ErrNotLeader):
        core.propose(b"x")


def test_first_tick_elects_itself_at_the_next_term():
    core = new_core(hs=HardState(term=4, vote=0, commit=0))
    core.tick()
    assert core.is_leader and core.term == 5 and core.vote == 7
    rd = core.ready()
    assert rd.hardstate == HardState(5, 7, 0)       # term and vote are persisted ...
    assert [(e.term, e.index, e.data) for e in rd.entries] == [(5, 1, b"")]  # ... with the no-op
    assert rd.committed_entries == []               # nothing commits before the fsync


def test_commit_only_after_persist():
    core = new_core()
    core.tick()
    persist_and_apply(core)
    i = core.propose(b"a")
    rd = core.ready()
    assert [e.index for e in rd.entries] == [i]
    assert core.commit < i                          # not durable yet: not committed
    core.advance(rd)                                # the driver fsynced it
    assert core.commit == i
    rd = core.ready()
    assert [e.data for e in rd.committed_entries] == [b"a"]
    core.advance(rd)
    assert core.applied == i and not core.has_ready()


def test_batch_of_proposals_is_one_ready():
    core = new_core()
    core.tick()
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
    core.tick()
    rest = persist_and_apply(core)
    assert [(e.index, e.term) for e in rest] == [(3, 1), (4, 2)]


def test_compact_keeps_unapplied_entries():
    core = new_core()
    core.tick()
    persist_and_apply(core)
    for n in range(10):
        core.propose(bytes([n]))
    persist_and_apply(core)
    core.compact(6)
    assert core.log.first_index == 7 and core.log.last_index == 11
    assert core.log.term_at(6) == core.term


def test_commit_beyond_the_log_is_refused():
    from fastkv.errors import StorageCorruption
    with pytest.raises(StorageCorruption, match="beyond the last log index"):
        new_core(entries=[Entry(1, 1, 0, b"")], hs=HardState(1, 7, 5))


def test_committed_entries_are_never_ahead_of_durable_ones():
    core = new_core()
    core.tick()
    persist_and_apply(core)
    core.propose(b"a")
    core.commit = core.log.last_index  # even if commit ran ahead of the fsync ...
    rd = core.ready()
    assert rd.committed_entries == []  # ... nothing un-durable is handed out to apply
