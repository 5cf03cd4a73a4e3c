"""bench/profile_summary.py: self and inclusive shares from py-spy's raw format."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "bench"))

import profile_summary  # noqa: E402

RAW = """\
process 1:"python";main (a.py:1);handle (b.py:5);write (libc.so.6) 6
process 1:"python";main (a.py:1);handle (b.py:7) 3
process 1:"python";main (a.py:1) 1
process 1:"python";Thread._bootstrap (threading.py:1);_worker (concurrent/futures/thread.py:81) 90
"""


def test_shares_leave_idle_workers_out():
    total, self_t, incl = profile_summary.summarise(RAW.splitlines())
    assert total == 10
    assert self_t["write libc.so.6"] == 6 and self_t["handle b.py"] == 3
    assert incl["handle b.py"] == 9 and incl["main a.py"] == 10


def test_all_threads():
    total, self_t, _incl = profile_summary.summarise(RAW.splitlines(), all_threads=True)
    assert total == 100 and self_t["_worker thread.py"] == 90
