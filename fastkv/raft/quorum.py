"""Majority arithmetic over the voters (etcd raft's quorum.MajorityConfig)."""
from __future__ import annotations

VOTE_PENDING, VOTE_LOST, VOTE_WON = 1, 2, 3


def committed_index(voters, match_of) -> int:
    """The largest index acknowledged by a majority of ``voters``; ``match_of(id)``
    gives a voter's acknowledged index. 0 for an empty voter set (nothing commits)."""
    n = len(voters)
    if n == 0:
        return 0
    if n == 1:
        for v in voters:
            return match_of(v)
    srt = sorted([match_of(v) for v in voters], reverse=True)
    return srt[n // 2]   # n//2 + 1 voters have at least this


def vote_result(voters, votes: dict[int, bool]) -> int:
    """VOTE_WON if a majority granted, VOTE_LOST if a majority can no longer grant,
    else VOTE_PENDING. An empty voter set wins (etcd's convention for joint configs)."""
    n = len(voters)
    if n == 0:
        return VOTE_WON
    granted = rejected = 0
    for v in voters:
        g = votes.get(v)
        if g is None:
            continue
        if g:
            granted += 1
        else:
            rejected += 1
    q = n // 2 + 1
    if granted >= q:
        return VOTE_WON
    if n - rejected < q:
        return VOTE_LOST
    return VOTE_PENDING
