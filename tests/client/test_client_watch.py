"""fastkv.client watches on one member: events, history, filters, progress,
compaction, closing. (Resuming after a member stops: test_client_cluster.py.)"""
from __future__ import annotations

import threading

import pytest

from fastkv.client import Event, EventType, WatchResponse, errors


def test_watch_key_events(client, prefix):
    k = prefix + "k"
    with client.watch(k, prev_kv=True) as w:
        r1 = client.put(k, "1").revision
        r2 = client.put(k, "2").revision
        client.put(prefix + "other", "x")   # not watched
        r3 = client.delete(k).revision
        e1, e2, e3 = w.get(10), w.get(10), w.get(10)
    assert isinstance(e1, Event)
    assert (e1.type, e1.key, e1.value, e1.revision) == (EventType.PUT, k.encode(), b"1", r1)
    assert e1.is_put and e1.prev_kv is None
    assert (e2.value, e2.revision, e2.prev_kv.value) == (b"2", r2, b"1")
    assert e3.is_delete and e3.revision == r3 and e3.prev_kv.value == b"2"
    assert e3.kv.value == b"" and e3.kv.version == 0
    assert w.next_revision == r3 + 1
    assert list(w) == []   # closed: iteration ends
    with pytest.raises(errors.ClientClosed):
        w.get(1)


def test_watch_prefix_and_iteration(client, prefix):
    w = client.watch(prefix, prefix=True)
    try:
        revs = [client.put(prefix + f"k{i}", str(i)).revision for i in range(5)]
        seen = []
        for ev in w:
            seen.append(ev.revision)
            if len(seen) == 5:
                break
        assert seen == revs
    finally:
        w.close()


def test_watch_from_history_and_filters(client, prefix):
    k = prefix + "k"
    r1 = client.put(k, "1").revision
    client.put(k, "2")
    rd = client.delete(k).revision
    with client.watch(k, start_revision=r1) as w:
        assert [(e.type, e.value) for e in (w.get(10), w.get(10), w.get(10))] == \
            [(EventType.PUT, b"1"), (EventType.PUT, b"2"), (EventType.DELETE, b"")]
    with client.watch(k, start_revision=r1, no_put=True) as w:
        e = w.get(10)
        assert e.is_delete and e.revision == rd
    with client.watch(k, start_revision=r1, no_delete=True) as w:
        assert [w.get(10).value, w.get(10).value] == [b"1", b"2"]
        with pytest.raises(TimeoutError):
            w.get(0.3)   # the delete is filtered out


def test_watch_responses_and_progress(client, prefix):
    k = prefix + "k"
    with client.watch(k) as w:
        rev = client.put(k, "1").revision
        resp = w.get_response(10)
        assert isinstance(resp, WatchResponse) and not resp.is_progress_notify
        assert [e.value for e in resp] == [b"1"] and resp.revision >= rev
        client.put(prefix + "elsewhere", "x")
        w.request_progress()
        progress = w.get_response(10)
        assert progress.is_progress_notify and len(progress) == 0
        assert progress.revision >= rev + 1
        assert w.next_revision == progress.revision + 1


def test_watch_compacted(client, prefix):
    k = prefix + "k"
    first = client.put(k, "1").revision
    client.put(k, "2")
    last = client.put(k, "3").revision
    client.compact(last)
    w = client.watch(k, start_revision=first)
    with pytest.raises(errors.WatchCompacted) as ei:
        w.get(10)
    assert ei.value.compact_revision == last
    assert isinstance(ei.value, errors.Compacted)
    with pytest.raises(errors.WatchCompacted):   # stays failed
        next(iter(w))
    w.close()
    # from the compact revision on, it works
    with client.watch(k, start_revision=last) as w2:
        assert w2.get(10).value == b"3"


def test_close_wakes_a_blocked_consumer(client, prefix):
    w = client.watch(prefix + "k")
    got = []
    t = threading.Thread(target=lambda: got.extend(w), daemon=True)
    t.start()
    w.close()
    t.join(10)
    assert not t.is_alive() and got == []


def test_many_events_in_order(client, prefix):
    """More events than one response carries, read while being written."""
    k = prefix + "k"
    with client.watch(k, max_buffer=8) as w:
        revs = []
        done = threading.Event()

        def write():
            for i in range(200):
                revs.append(client.put(k, str(i)).revision)
            done.set()
        t = threading.Thread(target=write)
        t.start()
        seen = [w.get(10).revision for _ in range(200)]
        t.join()
    assert seen == revs
