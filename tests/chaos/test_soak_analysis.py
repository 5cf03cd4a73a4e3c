"""The soak's verdicts (tests/chaos/soak.py) on crafted samples: each failure it claims
to catch is caught, and healthy runs pass. Then a short real soak run.
"""
from __future__ import annotations

import os
import random
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from soak import (RSS_SLOPE_LIMIT, Report, Sample, Soak, WatchTally, expected_range,  # noqa: E402
                  judge_fds, judge_rss, linear_slope, rss_trend, watch_anomalies, worst_gap)


def series(minutes: float, mb_at, every: float = 5.0) -> list[Sample]:
    """One member's samples every `every` s for `minutes`, RSS given by mb_at(t seconds)."""
    out, t = [], 0.0
    while t <= minutes * 60:
        out.append(Sample(t, 0, int(mb_at(t) * 1024), 30, 0, 0))
        t += every
    return out


# ---------------------------------------------------------------------------- RSS

def test_linear_slope():
    assert linear_slope([(0, 1), (1, 3), (2, 5)]) == 2.0
    assert linear_slope([(0, 4), (1, 4), (2, 4)]) == 0.0
    assert linear_slope([(5, 1)]) == 0.0 and linear_slope([(1, 1), (1, 9)]) == 0.0


def test_a_steady_leak_is_flagged():
    leak = series(5, lambda t: 60 + 3.0 * t / 60)            # +3 MB/min throughout
    trend = rss_trend(leak)
    assert abs(trend.slope_mb_per_min - 3.0) < 1e-6
    assert abs(trend.growth_mb - 15.0) < 0.01
    msg = judge_rss(trend)
    assert msg and "+3.00 MB/min" in msg and f"limit {RSS_SLOPE_LIMIT:g}" in msg


def test_a_flat_noisy_series_passes():
    rng = random.Random(3)
    flat = series(5, lambda t: 70 + rng.uniform(-1.5, 1.5))
    trend = rss_trend(flat)
    assert abs(trend.slope_mb_per_min) < RSS_SLOPE_LIMIT
    assert judge_rss(trend) is None


def test_warm_up_growth_in_the_first_half_is_not_a_leak():
    # grows 20 MB in the first minute (caches, history up to the compaction window), then flat
    warm = series(5, lambda t: 60 + min(t, 60) / 3)
    trend = rss_trend(warm)
    assert trend.growth_mb > 19 and trend.slope_mb_per_min == 0.0
    assert judge_rss(trend) is None
    # ...but a leak that starts late is seen in the second half
    late = series(5, lambda t: 60 + max(0.0, t - 150) / 60 * 4)
    assert judge_rss(rss_trend(late)) is not None


def test_a_run_too_short_is_printed_not_judged():
    short = series(1, lambda t: 60 + 10 * t / 60)            # steep, but 30 s of second half
    trend = rss_trend(short)
    assert trend.slope_mb_per_min > RSS_SLOPE_LIMIT and trend.span_s < 60
    assert judge_rss(trend) is None
    assert rss_trend([]).slope_mb_per_min == 0.0


# ---------------------------------------------------------------------------- fds, writes

def test_fd_leak():
    assert judge_fds(16, 16) is None and judge_fds(16, 14) is None
    assert judge_fds(16, 19) is None                          # within the tolerance
    msg = judge_fds(16, 120)
    assert msg and "16 descriptors before" in msg and "120 after" in msg


def test_write_stall():
    steady = [i * 0.01 for i in range(1000)]                  # 100/s for 10 s
    assert worst_gap(steady, 0.0, 10.0) < 0.02
    stalled = [t for t in steady if not 3.0 < t < 9.5]        # nothing acknowledged for 6.5 s
    assert 6.4 < worst_gap(stalled, 0.0, 10.0) < 6.6
    assert worst_gap([], 0.0, 7.0) == 7.0                     # nothing at all: the whole run


# ---------------------------------------------------------------------------- events

def tally(k, end=None, revs=()):
    t = WatchTally(k, end)
    for r in revs:
        t.take(r)
    return t


ACKED = {b"k/1": 3, b"k/2": 2, b"x": 5}


def test_every_event_received_passes():
    ws = [tally(b"k/1", None, [2, 5, 9]), tally(b"k/", b"k0", [2, 3, 5, 7, 9]),
          tally(b"nothing", None, [])]
    assert watch_anomalies(ws, ACKED, {}) == []


def test_missed_extra_duplicated_and_reordered_events_are_flagged():
    missed = tally(b"k/", b"k0", [2, 3, 5, 7])                # 4 of 5
    extra = tally(b"k/2", None, [3, 7, 8])                    # 3 for 2 writes
    dup = tally(b"k/1", None, [2, 5, 5])                      # right count, one twice
    backwards = tally(b"x", None, [1, 2, 4, 3, 6])
    out = watch_anomalies([missed, extra, dup, backwards], ACKED, {})
    assert len(out) == 4, out
    assert "missed 1 of 5" in out[0]
    assert "1 events more than the 2 writes" in out[1]
    assert "duplicated or out of order" in out[2] and "duplicated or out of order" in out[3]


def test_indeterminate_writes_may_or_may_not_show_up():
    # k/1: 3 acknowledged, 2 with no answer: 3, 4 or 5 events are all right
    for n in (3, 4, 5):
        assert watch_anomalies([tally(b"k/1", None, range(1, n + 1))], ACKED,
                               {b"k/1": 2}) == []
    assert watch_anomalies([tally(b"k/1", None, range(1, 7))], ACKED, {b"k/1": 2})
    assert watch_anomalies([tally(b"k/1", None, [1, 2])], ACKED, {b"k/1": 2})
    assert expected_range(tally(b"k/", b"k0"), ACKED, {b"k/2": 1, b"x": 4}) == (5, 6)


def test_a_canceled_normal_watcher_is_flagged():
    t = tally(b"k/1", None, [2, 5, 9])
    t.canceled = "compacted at 7"
    out = watch_anomalies([t], ACKED, {})
    assert out and "canceled (compacted at 7)" in out[0]


def test_the_report_fails_on_any_failure():
    rep = Report(members=1, seconds=60)
    assert not rep.failed and rep.summary().endswith("soak: passed")
    rep.failures.append("m0: fd leak: 16 descriptors before the clients, 120 after they left")
    assert rep.failed and rep.summary().endswith("soak: FAILED")


# ---------------------------------------------------------------------------- a real run

@pytest.mark.long
def test_short_soak_run():
    """About 20 s: 200 watchers, 100 leases, 50 puts/s for 8 s, and the four slow
    consumers (1 s slow-consumer timeout, so their cancels come within the run)."""
    rep = Soak(members=1, seconds=8, watchers=200, leases=100, rate=50, slow_timeout=1,
               big_rate=40, seed=11).run()
    summary = rep.summary()
    print(summary)
    assert not rep.failed, summary
    assert rep.writes > 0 and rep.events == rep.events_expected > 0, summary
    assert len(rep.slow) == 4 and all(ok for _, _, ok in rep.slow), summary
