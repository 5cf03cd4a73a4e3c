"""`python -m fastkv` tunes the cyclic garbage collector before it serves (fastkv/__main__.py)."""
import asyncio
import gc

import uvloop

from fastkv import __main__ as fkmain


def test_main_raises_the_collector_thresholds(monkeypatch, tmp_path):
    old = gc.get_threshold()
    ran = []

    def fake_run(coro):
        ran.append(gc.get_threshold())
        coro.close()
        return 0
    monkeypatch.setattr(asyncio, "run", fake_run)
    monkeypatch.setattr(uvloop, "install", lambda: None)
    try:
        gc.set_threshold(700, 10, 10)
        assert fkmain.main(["--data-dir", str(tmp_path / "d")]) == 0
        assert ran == [fkmain.GC_THRESHOLDS]
        assert fkmain.GC_THRESHOLDS[0] >= 10_000
    finally:
        gc.set_threshold(*old)


def test_loaded_state_is_frozen_out_of_full_collections():
    try:
        gc.unfreeze()
        kept = [[i] for i in range(1000)]    # containers alive "after start-up"
        fkmain.freeze_loaded_state()
        assert gc.get_freeze_count() >= len(kept)
    finally:
        gc.unfreeze()
