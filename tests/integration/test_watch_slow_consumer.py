"""Slow watch consumers on a real member: buffered, then canceled, never blocking writes.

Three raw HTTP/2 watch streams (tests/rawgrpc.py: the test decides when the client
grants flow-control window) on one member started with
``--experimental-watch-slow-consumer-timeout 2s``:

* ``reader`` reads everything: it must get every acknowledged write of its range;
* ``paused`` stops reading during a burst of large writes to its range, then reads
  again: it gets what was buffered, then a canceled response with the slow-consumer
  reason (what etcdctl and clientv3 see as a watch canceled by the server);
* ``stalled`` stops reading for good: it cannot even take its cancel, so after the
  grace (10 s at least) the member resets its HTTP/2 stream (RST_STREAM CANCEL).

Meanwhile every write is acknowledged (counted, not timed), and the member's memory
grows by the store's own history plus a bounded buffer per stream, not by what the
stalled streams did not read.
"""
from __future__ import annotations

import threading
import time

import grpc

from fastkv.proto.etcdserverpb import rpc_pb2 as pb
from fastkv.proto.etcdserverpb import rpc_pb2_grpc as rpc
from rawgrpc import RawGrpcCall
from servers import FastkvProcess

WATCH = "/etcdserverpb.Watch/Watch"
RST_CANCEL = 8
VALUE = b"v" * 8192
MAIN_WRITES = 1200     # to s/: reader and stalled watch it (stalled with prev_kv: 16 KiB a write)
BURST_WRITES = 400     # to a/: paused watches it; ~3 MB, past the stream's 1 MiB + 128 responses


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _watch(port: int, prefix: bytes, prev_kv: bool = False,
           window: int = 65535) -> RawGrpcCall:
    call = RawGrpcCall("127.0.0.1", port, WATCH, window=window)
    end = prefix[:-1] + bytes([prefix[-1] + 1])
    call.send_message(pb.WatchRequest(create_request=pb.WatchCreateRequest(
        key=prefix, range_end=end, prev_kv=prev_kv)).SerializeToString())
    assert call.pump_until(lambda: call.messages, 10), "no created response"
    assert pb.WatchResponse.FromString(call.messages[0]).created
    return call


_parsed: dict = {}


def _responses(call: RawGrpcCall) -> list:
    """The call's WatchResponses so far (parsed once each)."""
    done = _parsed.setdefault(id(call), [])
    for m in call.messages[len(done):]:
        done.append(pb.WatchResponse.FromString(m))
    return done


def _put_all(kv, keys) -> list[int]:
    """Put VALUE at every key, 32 in flight; the revisions acknowledged."""
    revs = []
    for i in range(0, len(keys), 32):
        futs = [kv.Put.future(pb.PutRequest(key=k, value=VALUE), timeout=20)
                for k in keys[i:i + 32]]
        revs += [f.result().header.revision for f in futs]
    return revs


class Pumper(threading.Thread):
    """Reads the frames of one call until stopped (the call's own flow control applies)."""

    def __init__(self, call):
        super().__init__(daemon=True)
        self.call = call
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set() and self.call.pump(0.2):
            pass


def test_slow_consumers_are_canceled_and_never_block_writes():
    srv = FastkvProcess(extra_args=["--experimental-watch-slow-consumer-timeout", "2s"]).start()
    calls, pumpers, ch = [], [], None
    try:
        port = srv.client_port
        reader = _watch(port, b"s/", window=8 << 20)   # reads as fast as it can
        stalled = _watch(port, b"s/", prev_kv=True)
        paused = _watch(port, b"a/")
        calls = [reader, stalled, paused]
        stalled.reading = paused.reading = False    # they grant no more window
        pumpers = [Pumper(c) for c in calls]
        for p in pumpers:
            p.start()
        ch = grpc.insecure_channel(f"127.0.0.1:{port}")
        kv = rpc.KVStub(ch)
        rss_before = _rss_mb(srv.proc.pid)
        rss_peak = rss_before

        main_revs = _put_all(kv, [b"s/%d" % (i % 100) for i in range(MAIN_WRITES)])
        rss_peak = max(rss_peak, _rss_mb(srv.proc.pid))
        burst_revs = _put_all(kv, [b"a/%d" % (i % 50) for i in range(BURST_WRITES)])
        burst_end = time.monotonic()
        rss_peak = max(rss_peak, _rss_mb(srv.proc.pid))
        # every write was acknowledged while two streams read nothing
        assert len(main_revs) == MAIN_WRITES and len(burst_revs) == BURST_WRITES

        # paused reads again after its watch was canceled (2 s + the hub's check) and
        # well before the stream would be closed (10 s after the cancel)
        time.sleep(max(0.0, burst_end + 4.0 - time.monotonic()))
        paused.resume()

        def paused_canceled():
            return any(r.canceled for r in _responses(paused))
        deadline = time.monotonic() + 20
        while not (paused_canceled() and stalled.reset_code is not None
                   and len(_events(reader)) >= MAIN_WRITES):
            assert time.monotonic() < deadline, (
                f"paused canceled: {paused_canceled()}, stalled reset: {stalled.reset_code}, "
                f"reader events: {len(_events(reader))}; member log:\n{srv.log()}")
            time.sleep(0.1)
        rss_peak = max(rss_peak, _rss_mb(srv.proc.pid))

        print(f"rss {rss_before:.1f} -> peak {rss_peak:.1f} MB; paused got "
              f"{len(_responses(paused))} responses; stalled got {stalled.data_bytes} bytes")
        # the reader got every acknowledged write of its range, in order, once
        assert [e.kv.mod_revision for e in _events(reader)] == sorted(main_revs)
        # paused: a prefix of its events in order, then the cancel with the reason
        resps = _responses(paused)
        last = resps[-1]
        assert last.canceled and last.watch_id == 0 and last.compact_revision == 0
        assert last.cancel_reason == ("watch: slow consumer: 128 responses undelivered and "
                                      "none taken for 2s; watch canceled")
        got = [e.kv.mod_revision for r in resps[:-1] for e in r.events]
        assert got == sorted(burst_revs)[:len(got)] and 0 < len(got) < BURST_WRITES
        # stalled: its stream reset; the connection itself is still served
        assert stalled.reset_code == RST_CANCEL and not stalled.closed
        assert stalled.data_bytes <= 65535 + 100    # the window it granted after created
        # the member keeps serving, and its memory did not take what stalled missed:
        # stalled alone would have buffered MAIN_WRITES * 16 KiB (about 19 MB)
        assert kv.Range(pb.RangeRequest(key=b"s/", range_end=b"s0", count_only=True)).count == 100
        history_mb = (MAIN_WRITES + BURST_WRITES) * len(VALUE) / 2**20
        assert rss_peak - rss_before < history_mb + 24, (rss_before, rss_peak, history_mb)
        assert "watch: slow consumer: canceled watch" in srv.log()
    finally:
        for p in pumpers:
            p.halt.set()
            p.join(timeout=5)
        for c in calls:
            c.close()
        if ch is not None:
            ch.close()
        srv.cleanup()


def _events(call: RawGrpcCall) -> list:
    return [e for r in _responses(call) for e in r.events]
