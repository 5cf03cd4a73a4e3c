"""Test-only fault hooks: what ``--experimental-fault-file`` asks a member to suffer.

Absent the flag none of this runs: the server reads no file, its clock is the clock it was
given, and its WAL and snapshots sync at the disk's own speed. The chaos nemesis
(tests/chaos/nemesis.py) writes one file per member and replaces it atomically; the member
re-reads it every 100 ms. Its lines (blank lines are ignored):

* ``<member id in hex>``: drop peer traffic to and from that member (a partition);
* ``fsync-delay <seconds>``: every WAL fsync and snapshot fsync of this member takes that
  much longer (a slow disk: persistence is late, and so is everything waiting for it;
  the sync already runs in a worker thread, so the event loop keeps serving meanwhile);
* ``corrupt-values``: every put this member applies stores its value with one byte
  flipped (silent data corruption: the member's state drifts from its peers', which only
  a hash comparison notices: --experimental-corrupt-check-time, the CORRUPT alarm);
* ``clock-jump <seconds>``: this member's clock (``Server.clock``: lease expiry in the
  leader's lessor, request deadlines, peer liveness) reads that much ahead (or, negative,
  behind) of the real one. Raft's ticks count the event loop's own timer and do not move.

A directive missing from the file is off: removing a line undoes it (a clock jumps back).
A file that does not parse (one being written, a typo) changes nothing: the member keeps
what it had, so bad input never half-applies.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable


def corrupted(value: bytes) -> bytes:
    """The value with its first byte flipped (an empty value gains a byte)."""
    return bytes([value[0] ^ 0xFF]) + value[1:] if value else b"\xff"


@dataclass(frozen=True)
class Directives:
    """One reading of the fault file."""
    drop: frozenset = field(default_factory=frozenset)   # member IDs whose traffic is dropped
    fsync_delay: float = 0.0      # seconds added to every WAL and snapshot fsync
    clock_offset: float = 0.0     # seconds added to the member's clock
    corrupt_values: bool = False  # puts applied here store a damaged value


def _seconds(word: str, *, signed: bool) -> float:
    value = float(word)
    if not math.isfinite(value) or (value < 0 and not signed):
        raise ValueError(f"bad number of seconds: {word!r}")
    return value


def parse(text: str) -> Directives:
    """The directives of a fault file's text; ValueError if any line is not one."""
    drop: set[int] = set()
    fsync_delay = clock_offset = 0.0
    corrupt = False
    for n, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words:
            continue
        if words[0] == "fsync-delay" and len(words) == 2:
            fsync_delay = _seconds(words[1], signed=False)
        elif words[0] == "clock-jump" and len(words) == 2:
            clock_offset = _seconds(words[1], signed=True)
        elif words == ["corrupt-values"]:
            corrupt = True
        elif len(words) == 1:
            drop.add(int(words[0], 16))     # ValueError unless hex
        else:
            raise ValueError(f"line {n}: not a fault directive: {line!r}")
    return Directives(frozenset(drop), fsync_delay, clock_offset, corrupt)


def render(d: Directives) -> str:
    """The file text for these directives (the inverse of parse; what the nemesis writes)."""
    lines = [f"{i:x}" for i in sorted(d.drop)]
    if d.fsync_delay:
        lines.append(f"fsync-delay {d.fsync_delay!r}")
    if d.clock_offset:
        lines.append(f"clock-jump {d.clock_offset!r}")
    return "".join(line + "\n" for line in lines)


class JumpClock:
    """A clock that reads ``offset`` seconds off the one it wraps (``clock-jump``)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self.offset = 0.0

    def __call__(self) -> float:
        return self._clock() + self.offset


def slow_disk(delay: float) -> None:
    """Called right after a real fsync (in the thread that made it): a disk that takes
    ``delay`` seconds longer to confirm."""
    if delay > 0:
        time.sleep(delay)
