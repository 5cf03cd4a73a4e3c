"""Automatic compaction (fastkv/compactor.py): etcd 3.4's periodic and revision
compactors, run against a simulated clock."""
from __future__ import annotations

import asyncio

import pytest

from fastkv import config
from fastkv.compactor import HOUR, REVISION_CHECK_SECONDS, Compactor, parse_retention


class World:
    """A store whose revision grows by `rate` a second, and a clock that sleeps jump."""

    def __init__(self, rate: int = 10):
        self.now = 0.0
        self.rate = rate
        self.compactions: list[tuple[float, int]] = []
        self.fail_next = 0

    def rev(self) -> int:
        return 1 + int(self.now * self.rate)

    async def compact(self, rev: int) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("etcdserver: request timed out")
        self.compactions.append((self.now, rev))

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)

    def run(self, c: Compactor, until: float) -> None:
        async def go():
            task = asyncio.ensure_future(c.run())
            while self.now < until and not task.done():
                await asyncio.sleep(0)
            task.cancel()
        asyncio.run(go())


def compactor(world: World, mode: str, retention: str) -> Compactor:
    c = Compactor(mode, parse_retention(mode, retention), world.rev, world.compact,
                  clock=lambda: world.now, sleep=world.sleep)
    c.resume()
    return c


def test_periodic_compacts_to_the_revision_one_retention_ago():
    w = World()
    w.run(compactor(w, "periodic", "30m"), until=2 * HOUR + 1)
    # first after one retention, then every retention (under an hour), to what the
    # store was one retention before
    assert [round(t) for t, _ in w.compactions] == [1800, 3600, 5400, 7200]
    for t, rev in w.compactions:   # sampled every 3 minutes: within one sample of 30 min ago
        assert 1 + (t - 1800 - 180) * w.rate <= rev <= 1 + (t - 1800) * w.rate


def test_periodic_above_an_hour_compacts_hourly_keeping_the_retention():
    w = World()
    w.run(compactor(w, "periodic", "5"), until=8 * HOUR + 1)   # a bare number: hours
    assert [round(t / HOUR, 1) for t, _ in w.compactions] == [5.0, 6.0, 7.0, 8.0]
    for t, rev in w.compactions:   # sampled every 6 minutes: within one sample of 5 h ago
        assert 1 + (t - 5 * HOUR) * w.rate - 360 * w.rate <= rev <= 1 + (t - 5 * HOUR) * w.rate


def test_periodic_retries_a_failed_compaction_at_the_next_sample():
    w = World()
    w.fail_next = 2
    w.run(compactor(w, "periodic", "10m"), until=601 + 2 * 60)
    # samples every tenth of the retention (60 s): 600 and 660 fail, 720 goes through
    assert [round(t) for t, _ in w.compactions] == [720]


def test_revision_mode_keeps_the_last_n_revisions_every_five_minutes():
    w = World(rate=1)                # fewer revisions than the retention: nothing
    w.run(compactor(w, "revision", "1000"), until=3 * REVISION_CHECK_SECONDS + 1)
    assert w.compactions == []
    w = World(rate=10)
    w.run(compactor(w, "revision", "1000"), until=3 * REVISION_CHECK_SECONDS + 1)
    assert w.compactions == [(300.0, 2001), (600.0, 5001), (900.0, 8001)]


def test_a_paused_compactor_does_nothing_and_zero_is_off():
    w = World()
    c = compactor(w, "periodic", "1m")
    c.pause()                       # a follower
    w.run(c, until=10 * 60)
    assert w.compactions == []
    w = World()
    w.run(compactor(w, "periodic", "0"), until=10 * HOUR)
    assert w.compactions == []


@pytest.mark.parametrize("mode,text,seconds", [
    ("periodic", "1", HOUR), ("periodic", "72", 72 * HOUR), ("periodic", "30m", 1800),
    ("periodic", "1h30m", 5400), ("periodic", "1.5s", 1.5), ("revision", "1000", 1000),
])
def test_retention_as_etcd_reads_it(mode, text, seconds):
    assert parse_retention(mode, text) == seconds


@pytest.mark.parametrize("args", [
    ["--auto-compaction-retention", "ten"],
    ["--auto-compaction-mode", "revision", "--auto-compaction-retention", "1h"],
    ["--auto-compaction-mode", "hourly"],
])
def test_bad_compaction_flags_are_refused(args):
    with pytest.raises(config.ConfigError):
        config.parse(args, {})
