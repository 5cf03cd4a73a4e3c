"""A short run of every fuzz target (tests/fuzz/targets.py) under hypothesis, plus the
inputs that once broke a target. The long runs are `ci/fuzz` (atheris)."""
from __future__ import annotations

import os
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import targets  # noqa: E402

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "1000"))

# Inputs that once broke a target (target name, bytes): they must stay fixed.
REGRESSIONS: list[tuple[str, bytes]] = [
    # valid-looking WAL damage: a bit flipped inside an entry's payload
    ("wal_damage", bytes([255, 0, 200, 0x01])),
    # an incomplete Huffman string: the hpack package's own error escaped the decoder
    ("hpack", b"\x00\x81\x00"),
]


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_target_survives_random_input(name):
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.binary(max_size=2048))
    def run(data):
        targets.run(name, data)
    run()


@pytest.mark.parametrize("name,data", REGRESSIONS)
def test_regressions(name, data):
    targets.run(name, data)


def test_damage_is_detected_not_applied():
    """The damage targets really damage: a flipped bit in a WAL record or a snapshot
    is refused (not silently accepted with other data)."""
    with pytest.raises(targets.Rejected):
        targets.snapshot_damage(bytes([255, 0, 40, 0x10]))
    with pytest.raises(targets.Rejected):
        targets.wal_damage(bytes([255, 0, 40, 0x10]))
