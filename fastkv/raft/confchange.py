"""Single-step membership changes (etcd raft's confchange.Changer.Simple).

One change at a time moves at most one voter, so the old and the new majority
always overlap and no joint consensus is needed. Applied by every member when
it applies the committed ENTRY_CONF_CHANGE entry (not when it appends it).
"""
from __future__ import annotations

from fastkv.raft.messages import (CONF_ADD_LEARNER_NODE, CONF_ADD_NODE, CONF_REMOVE_NODE,
                                  CONF_UPDATE_NODE, ConfChange, ConfState)
from fastkv.raft.progress import Progress


def apply_change(voters: set[int], learners: set[int], progress: dict[int, Progress],
                 cc: ConfChange, next_index: int, max_inflight: int) -> bool:
    """Apply cc to the voter and learner sets and the progress map, in place.
    ``next_index`` is where a new member's progress starts probing (the leader's
    last index + 1). Returns False for a change that is malformed (ignored)."""
    node, t = cc.node_id, cc.type
    if not isinstance(node, int) or node <= 0:
        return False
    if t == CONF_ADD_NODE:
        learners.discard(node)
        voters.add(node)
        pr = progress.get(node)
        if pr is None:
            progress[node] = Progress(next_index, max_inflight, recent_active=True)
        else:
            pr.is_learner = False          # promotion keeps what the leader knows
    elif t == CONF_ADD_LEARNER_NODE:
        voters.discard(node)               # a voter becomes a learner (a demotion)
        learners.add(node)
        pr = progress.get(node)
        if pr is None:
            progress[node] = Progress(next_index, max_inflight, is_learner=True,
                                      recent_active=True)
        else:
            pr.is_learner = True
    elif t == CONF_REMOVE_NODE:
        voters.discard(node)
        learners.discard(node)
        progress.pop(node, None)
    elif t == CONF_UPDATE_NODE:
        pass                               # peer URLs only: the voter set is unchanged
    else:
        return False
    return True


def conf_state(voters: set[int], learners: set[int]) -> ConfState:
    return ConfState(sorted(voters), sorted(learners))
