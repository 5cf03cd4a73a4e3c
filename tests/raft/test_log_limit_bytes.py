"""RaftLog.limit_bytes: the batch of a MsgApp, and its cost independent of the log's length."""
from fastkv.raft.log import RaftLog


def _log(sizes, snapshot_index=10):
    log = RaftLog(snapshot_index, 1)
    for n in sizes:
        log.append_new(1, 0, b"x" * n)
    return log


def test_limits():
    log = _log([10] * 2000)
    assert log.limit_bytes(11, 5) == 11          # always at least the entry at lo
    assert log.limit_bytes(11, 10) == 11
    assert log.limit_bytes(11, 35) == 13         # three entries of 10
    assert log.limit_bytes(1500, 10_000) == 2010  # the rest of the log fits
    assert log.limit_bytes(100, 1000 * 10) == 1099
    big = _log([1, 1, 500, 1])
    assert big.limit_bytes(11, 100) == 12
    assert big.limit_bytes(13, 100) == 13


class _NoWalk(list):
    """A list that refuses to be iterated from its start (islice would)."""
    def __iter__(self):
        raise AssertionError("limit_bytes walked the whole log")


def test_does_not_walk_the_log_before_lo():
    log = _log([10] * 5000)
    log._data = _NoWalk(log._data)
    assert log.limit_bytes(4000, 100) == 4009
    assert log.limit_bytes(11, 10**9) == 5010
