"""Deterministic simulation of a Raft cluster, one test per seed (see sim.py).

Each seed builds a random cluster (1, 3 or 5 members, random timeouts, network
and disk behaviour, membership changes, crashes, power losses, partitions) and
checks election safety, log matching, leader completeness, state-machine safety,
no acknowledged write lost, linearizability of the client history, and liveness
once the faults stop. A failure names the seed and the command reproducing it.

    FASTKV_SIM_SEEDS=2000 FASTKV_SIM_SEED_START=1000 python -m pytest tests/raft/test_simulation.py
    python tests/raft/sim.py --seed 1234 -v      # one seed, with a readable trace
"""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sim  # noqa: E402

SEEDS = int(os.environ.get("FASTKV_SIM_SEEDS", "150"))   # ci/chaos: 2000 more
START = int(os.environ.get("FASTKV_SIM_SEED_START", "1"))
SCALE = float(os.environ.get("FASTKV_SIM_SCALE", "1"))


@pytest.mark.parametrize("seed", range(START, START + SEEDS), ids=lambda s: f"seed_{s}")
def test_seed(seed):
    res = sim.run_seed(seed, scale=sim.seed_scale(seed) * SCALE)
    if not res.ok:
        pytest.fail(res.message, pytrace=False)
