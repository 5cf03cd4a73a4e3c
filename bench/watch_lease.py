#!/usr/bin/env python3
"""Watch fan-out and lease keepalive load on an etcd v3 gRPC endpoint (fastkv or etcd).

Our own uvloop load generator (gRPC over bench/h2grpc.py), run as its own process
by bench/client_api.py so that the runner's process is never the bottleneck:

  watch-fanout URL     W watchers (default 1000) on one key, over S Watch streams on C
                       connections (default 10 streams x 100 watchers on 1 connection,
                       the shape of etcd's own `benchmark watch`: --streams 10
                       --watch-per-stream 100, one client connection), all created and
                       confirmed before a writer process starts; the writer does
                       sequential Puts for D seconds, each value the put's send time
                       (monotonic ns). Then it waits (bounded) for every watcher to have
                       every event. Reports events/s delivered (events / (last receipt -
                       first put)), delivery delay p50/p99 (receipt - send time) over all
                       events, the writer's puts/s. Fails unless every watcher got every
                       revision the writer made, in order, exactly once.
  lease-keepalive URL  grants L leases (default 10000, TTL 60 s) concurrently, then keeps
                       them alive round-robin over K LeaseKeepAlive streams (default 16
                       on 4 connections), each with a bounded window of outstanding
                       requests (default 32), for D seconds. Reports keepalives/s answered
                       and latency p50/p99. Fails on any answer with TTL <= 0, an ID we
                       did not send on that stream, or a keepalive left unanswered.

Both print a summary (``--json``: one JSON object, what client_api.py reads; its
``requests_per_sec``/``p50_ms``/``p99_ms`` are events/s and delay for watch-fanout,
keepalives/s and latency for lease-keepalive) and exit 1 when the run failed.

The watch side keeps the received bytes per stream (raw mode) and decodes them once
the writer is done: during the run the generator only splits HTTP/2 frames, so it
costs the machine far less per event than any server does to send one.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import struct
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
sys.path.insert(0, os.path.dirname(BENCH))

import h2grpc  # noqa: E402
from fastkv.proto.etcdserverpb import rpc_pb2 as pb  # noqa: E402

PUT = "/etcdserverpb.KV/Put"
WATCH = "/etcdserverpb.Watch/Watch"
GRANT = "/etcdserverpb.Lease/LeaseGrant"
KEEPALIVE = "/etcdserverpb.Lease/LeaseKeepAlive"
_SENT = struct.Struct(">Q")
MAX_PROBLEMS = 20           # problems kept verbatim; the rest are only counted


class Problems:
    """What went wrong in a run: the first few messages and a total."""

    def __init__(self):
        self.first: list[str] = []
        self.count = 0

    def add(self, text: str) -> None:
        self.count += 1
        if len(self.first) < MAX_PROBLEMS:
            self.first.append(text)


class Histogram:
    """Latencies counted per whole microsecond: exact percentiles, memory bounded by the
    spread of the values, not their number."""

    def __init__(self):
        self.counts: dict[int, int] = {}

    def add(self, ns: int) -> None:
        us = ns // 1000
        self.counts[us] = self.counts.get(us, 0) + 1

    def percentile_ms(self, q: float) -> float:
        total = sum(self.counts.values())
        if not total:
            return 0.0
        need = max(1, -(-int(total * q * 1000) // 1000))
        seen = 0
        for us in sorted(self.counts):
            seen += self.counts[us]
            if seen >= need:
                return us / 1000.0
        return max(self.counts) / 1000.0


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# --------------------------------------------------------------------------- watch fan-out

class WatchDecoder:
    """WatchResponse bytes -> (watch_id, (created, canceled, reason, events)), events as
    ((mod_revision, sent_ns), ...).

    The responses of one put to all watchers differ only in watch_id (field 2, right
    after the header, field 1, in serialization order), so the decoded rest is cached by
    the bytes without that field: one protobuf parse per put, not per watcher. Anything
    not shaped like that is parsed in full every time."""

    def __init__(self):
        self.cache: dict[bytes, tuple] = {}

    def decode(self, msg: bytes):
        key = None
        wid = 0
        if len(msg) > 2 and msg[0] == 0x0A and msg[1] < 0x80:
            p = 2 + msg[1]
            if p < len(msg) and msg[p] == 0x10:
                q = p + 1
                shift = 0
                while q < len(msg):
                    c = msg[q]
                    wid |= (c & 0x7F) << shift
                    q += 1
                    if c < 0x80:
                        break
                    shift += 7
                key = msg[:p] + msg[q:]
            else:
                key = msg
            hit = self.cache.get(key)
            if hit is not None:
                return wid, hit
        m = pb.WatchResponse.FromString(msg)
        events = []
        for ev in m.events:
            kv = ev.kv
            sent = _SENT.unpack(kv.value)[0] if len(kv.value) == 8 else -1
            events.append((kv.mod_revision, sent if ev.type == 0 else -2))
        info = (m.created, m.canceled, m.cancel_reason, tuple(events))
        if key is not None and not m.created and not m.canceled:
            if len(self.cache) > 200_000:
                self.cache.clear()
            self.cache[key] = info
        return m.watch_id, info


class WatchStreamTally:
    """One raw Watch stream's bytes, decoded from where the last call stopped: the watchers
    it created, and per watcher how far through the writer's revisions it has come."""

    def __init__(self, stream: h2grpc.Stream, watchers: int, problems: Problems):
        self.st = stream
        self.expected = watchers
        self.problems = problems
        self.offset = 0
        self.mark = 0
        self.pos: dict[int, int] = {}   # watch_id -> index of the next revision it must get
        self.events = 0
        self.last_recv = 0

    def advance(self, decoder: WatchDecoder, revs: dict | None, rev_list: list | None,
                hist: Histogram) -> None:
        """Decode what arrived since the last call. ``revs`` (revision -> index in
        ``rev_list``, the writer's revisions in order) is None before the writer is done:
        then only created/canceled answers may come."""
        st = self.st
        buf, ends, times = st.buf, st.mark_ends, st.mark_ns
        mark = self.mark
        pos = self.pos
        counts = hist.counts
        problems = self.problems
        n_revs = len(rev_list) if rev_list is not None else 0
        events = 0
        last_recv = self.last_recv
        end = self.offset
        for end, msg in h2grpc.iter_messages(buf, self.offset):
            while ends[mark] < end:
                mark += 1
            recv = times[mark]
            wid, (created, canceled, reason, evs) = decoder.decode(msg)
            if created:
                if wid in pos:
                    problems.add(f"stream {st.sid}: watch id {wid} created twice")
                pos[wid] = 0
                continue
            if canceled:
                problems.add(f"stream {st.sid}: watch {wid} canceled: {reason!r}")
                continue
            i = pos.get(wid)
            if i is None:
                if evs:
                    problems.add(f"stream {st.sid}: events for unknown watch id {wid}")
                continue
            for rev, sent in evs:
                if revs is None:
                    problems.add(f"watch {wid}: event at revision {rev} before the writer ran")
                    continue
                if sent < 0:
                    problems.add(f"watch {wid}: revision {rev} is not a put of the writer's")
                elif i < n_revs and rev_list[i] == rev:
                    i += 1
                    events += 1
                    us = (recv - sent) // 1000
                    counts[us] = counts.get(us, 0) + 1
                    continue
                else:
                    j = revs.get(rev)
                    if j is None:
                        problems.add(f"watch {wid}: revision {rev} was not written")
                    elif j < i:
                        problems.add(f"watch {wid}: revision {rev} again or out of order "
                                     f"(after {rev_list[i - 1]})")
                    else:
                        problems.add(f"watch {wid}: revisions {rev_list[i]}..{rev_list[j - 1]} "
                                     f"missing before {rev}")
                        i = j + 1
                        events += 1
            pos[wid] = i
            if evs and recv > last_recv:
                last_recv = recv
        self.offset = end
        self.mark = mark
        self.events += events
        self.last_recv = last_recv
        # what is decoded is no longer needed: keep the memory to the undecoded tail
        if self.offset > (1 << 20):
            del buf[:self.offset]
            del ends[:mark]
            del times[:mark]
            for k in range(len(ends)):
                ends[k] -= self.offset
            self.offset = 0
            self.mark = 0

    def all_created(self) -> bool:
        return len(self.pos) >= self.expected

    def complete(self, n_revs: int) -> bool:
        return all(i >= n_revs for i in self.pos.values())


async def watch_fanout(args) -> dict:
    problems = Problems()
    conns = [await h2grpc.Connection.open(args.url) for _ in range(args.connections)]
    tallies: list[WatchStreamTally] = []
    try:
        per, extra = divmod(args.watchers, args.streams)
        create = pb.WatchRequest(create_request=pb.WatchCreateRequest(
            key=args.key.encode())).SerializeToString()
        t0 = time.monotonic()
        for s in range(args.streams):
            n = per + (1 if s < extra else 0)
            st = conns[s % len(conns)].stream(WATCH, raw=True)
            st.send_prefixed(h2grpc.grpc_message(create) * n)
            tallies.append(WatchStreamTally(st, n, problems))
        decoder = WatchDecoder()
        hist = Histogram()
        deadline = time.monotonic() + args.setup_timeout
        while not all(t.all_created() for t in tallies):
            for t in tallies:
                if t.st.done.done():
                    raise RunFailed(f"watch stream {t.st.sid} ended: {t.st.done.result()}")
                t.advance(decoder, None, None, hist)
            if time.monotonic() > deadline:
                made = sum(len(t.pos) for t in tallies)
                raise RunFailed(f"only {made} of {args.watchers} watchers created in "
                                f"{args.setup_timeout}s")
            await asyncio.sleep(0.01)
        setup_s = time.monotonic() - t0

        cpu0, wall0 = cpu_seconds(), time.monotonic()
        writer = await asyncio.create_subprocess_exec(
            sys.executable, os.path.abspath(__file__), "_writer", args.url,
            "--key", args.key, "--duration", str(args.duration),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(writer.communicate(), args.duration + 60)
        except asyncio.TimeoutError:
            writer.kill()
            await writer.wait()
            raise RunFailed("the writer did not finish") from None
        if writer.returncode != 0:
            raise RunFailed(f"the writer exited {writer.returncode}: {err.decode()[-2000:]}")
        w = json.loads(out.decode().strip().splitlines()[-1])
        gen_cpu = cpu_seconds() - cpu0
        gen_wall = time.monotonic() - wall0

        rev_list = w["revisions"]
        revs = {r: i for i, r in enumerate(rev_list)}
        if len(revs) != len(rev_list):
            problems.add("the writer saw a revision twice")
        t_drain = time.monotonic()
        deadline = t_drain + args.drain_timeout
        while True:
            for t in tallies:
                t.advance(decoder, revs, rev_list, hist)
            if all(t.complete(len(rev_list)) for t in tallies) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        drain_s = time.monotonic() - t_drain
        for t in tallies:
            if t.st.done.done():
                problems.add(f"watch stream {t.st.sid} ended: {t.st.done.result()}")
            behind = [i for i in t.pos.values() if i < len(rev_list)]
            if behind:
                problems.add(f"stream {t.st.sid}: {len(behind)} watchers lack events after "
                             f"{args.drain_timeout}s (one got {min(behind)} of {len(rev_list)})")
        delivered = sum(t.events for t in tallies)
        last_recv = max(t.last_recv for t in tallies)
        span_s = (last_recv - w["first_send_ns"]) / 1e9 if delivered else 0.0
        return {
            "workload": "watch-fanout",
            "requests_per_sec": delivered / span_s if span_s > 0 else 0.0,
            "p50_ms": hist.percentile_ms(0.50),
            "p99_ms": hist.percentile_ms(0.99),
            "max_ms": max(hist.counts, default=0) / 1000.0,
            "events": delivered,
            "expected_events": len(rev_list) * args.watchers,
            "puts": len(rev_list),
            "puts_per_sec": w["puts_per_sec"],
            "put_p50_ms": w["p50_ms"], "put_p99_ms": w["p99_ms"],
            "delivery_span_s": round(span_s, 3),
            "watchers": args.watchers, "streams": args.streams,
            "connections": args.connections,
            "setup_s": round(setup_s, 3), "drain_s": round(drain_s, 3),
            "generator_cpu_pct": round(100 * gen_cpu / gen_wall, 1),
            "writer_cpu_pct": w["cpu_pct"],
            "problems": problems.first, "problem_count": problems.count,
            "ok": problems.count == 0 and delivered > 0,
        }
    finally:
        for c in conns:
            c.close()


async def writer_main(args) -> dict:
    """Sequential Puts to one key for ``duration`` seconds, each awaiting its answer; the
    value is the monotonic time the put was sent. Returns the revisions in order."""
    conn = await h2grpc.Connection.open(args.url)
    key = args.key.encode()
    revisions: list[int] = []
    hist = Histogram()
    try:
        cpu0 = cpu_seconds()
        first = time.monotonic_ns()
        stop = first + int(args.duration * 1e9)
        now = first
        while now < stop:
            sent = time.monotonic_ns()
            req = pb.PutRequest(key=key, value=_SENT.pack(sent)).SerializeToString()
            resp = pb.PutResponse.FromString(await conn.unary(PUT, req))
            now = time.monotonic_ns()
            hist.add(now - sent)
            rev = resp.header.revision
            if revisions and rev <= revisions[-1]:
                raise RunFailed(f"put answered revision {rev} after {revisions[-1]}")
            revisions.append(rev)
        elapsed = (now - first) / 1e9
        return {"revisions": revisions, "first_send_ns": first, "last_done_ns": now,
                "puts_per_sec": len(revisions) / elapsed, "p50_ms": hist.percentile_ms(0.5),
                "p99_ms": hist.percentile_ms(0.99),
                "cpu_pct": round(100 * (cpu_seconds() - cpu0) / elapsed, 1)}
    finally:
        conn.close()


# --------------------------------------------------------------------------- lease keepalive

class KeepAliveStream:
    """One LeaseKeepAlive stream with up to ``window`` requests in flight: each answer
    is checked, timed, and answered by the next lease's request while the run lasts."""

    def __init__(self, run: "KeepAliveRun", conn: h2grpc.Connection):
        self.run = run
        self.inflight: dict[int, int] = {}      # lease ID -> send time (ns)
        self.st = conn.stream(KEEPALIVE, on_message=self.on_message)

    def send_next(self, now: int) -> None:
        run = self.run
        i = run.next
        run.next = i + 1 if i + 1 < len(run.ids) else 0
        lid = run.ids[i]
        self.inflight[lid] = now
        self.st.send_prefixed(run.requests[i])

    def on_message(self, msg: bytes, recv_ns: int) -> None:
        run = self.run
        hit = run.cache.get(msg)
        if hit is None:
            m = pb.LeaseKeepAliveResponse.FromString(msg)
            hit = (m.ID, m.TTL)
            if len(run.cache) > 200_000:
                run.cache.clear()
            run.cache[msg] = hit
        lid, ttl = hit
        sent = self.inflight.pop(lid, None)
        if sent is None:
            run.problems.add(f"stream {self.st.sid}: answer for lease {lid:x}, not in flight here")
        else:
            us = (recv_ns - sent) // 1000
            counts = run.hist.counts
            counts[us] = counts.get(us, 0) + 1
        if ttl <= 0:
            run.problems.add(f"lease {lid:x}: keepalive answered TTL {ttl}")
        run.answered += 1
        run.last_recv = recv_ns
        if run.sending:
            self.send_next(recv_ns)


class KeepAliveRun:
    def __init__(self, ids: list[int], problems: Problems):
        self.ids = ids
        self.requests = [h2grpc.grpc_message(pb.LeaseKeepAliveRequest(ID=i).SerializeToString())
                         for i in ids]
        self.next = 0
        self.cache: dict[bytes, tuple] = {}
        self.hist = Histogram()
        self.problems = problems
        self.answered = 0
        self.last_recv = 0
        self.sending = True


async def grant_leases(conns: list, count: int, ttl: int, concurrency: int,
                       problems: Problems) -> list[int]:
    """``count`` leases granted through unary LeaseGrant, ``concurrency`` at a time."""
    req = pb.LeaseGrantRequest(TTL=ttl).SerializeToString()
    ids: list[int] = []
    todo = iter(range(count))

    async def worker(conn):
        for _ in todo:
            r = pb.LeaseGrantResponse.FromString(await conn.unary(GRANT, req))
            if r.error or r.ID == 0 or r.TTL <= 0:
                problems.add(f"LeaseGrant answered ID {r.ID} TTL {r.TTL} error {r.error!r}")
            else:
                ids.append(r.ID)
    await asyncio.gather(*(worker(conns[i % len(conns)]) for i in range(concurrency)))
    if len(set(ids)) != len(ids):
        problems.add("LeaseGrant handed out an ID twice")
    return ids


async def lease_keepalive(args) -> dict:
    problems = Problems()
    if args.leases < args.streams * args.window:
        raise RunFailed(f"--leases must be at least --streams x --window "
                        f"({args.streams * args.window}): a lease is in flight once at most")
    conns = [await h2grpc.Connection.open(args.url) for _ in range(args.connections)]
    try:
        t0 = time.monotonic()
        ids = await grant_leases(conns, args.leases, args.ttl, args.grant_concurrency, problems)
        grant_s = time.monotonic() - t0
        if len(ids) != args.leases:
            raise RunFailed(f"only {len(ids)} of {args.leases} leases granted: {problems.first}")
        run = KeepAliveRun(ids, problems)
        streams = [KeepAliveStream(run, conns[s % len(conns)]) for s in range(args.streams)]
        cpu0 = cpu_seconds()
        start = time.monotonic_ns()
        for ks in streams:
            for _ in range(args.window):
                ks.send_next(start)
        await asyncio.sleep(args.duration)
        run.sending = False
        stop = time.monotonic_ns()
        deadline = time.monotonic() + args.drain_timeout
        while any(ks.inflight for ks in streams) and time.monotonic() < deadline:
            if any(ks.st.done.done() for ks in streams):
                break
            await asyncio.sleep(0.01)
        gen_cpu = cpu_seconds() - cpu0
        for ks in streams:
            if ks.st.done.done():
                problems.add(f"keepalive stream {ks.st.sid} ended: {ks.st.done.result()}")
            if ks.inflight:
                problems.add(f"keepalive stream {ks.st.sid}: {len(ks.inflight)} keepalives "
                             f"unanswered after {args.drain_timeout}s")
            ks.st.close_send()
        span_s = (run.last_recv - start) / 1e9
        return {
            "workload": "lease-keepalive",
            "requests_per_sec": run.answered / span_s if span_s > 0 else 0.0,
            "p50_ms": run.hist.percentile_ms(0.50),
            "p99_ms": run.hist.percentile_ms(0.99),
            "max_ms": max(run.hist.counts, default=0) / 1000.0,
            "keepalives": run.answered,
            "leases": len(ids), "ttl": args.ttl, "grant_s": round(grant_s, 3),
            "grants_per_sec": round(len(ids) / grant_s, 1),
            "streams": args.streams, "connections": args.connections, "window": args.window,
            "generator_cpu_pct": round(100 * gen_cpu / ((stop - start) / 1e9), 1),
            "problems": problems.first, "problem_count": problems.count,
            "ok": problems.count == 0 and run.answered > 0,
        }
    finally:
        for c in conns:
            c.close()


class RunFailed(Exception):
    pass


# --------------------------------------------------------------------------- generator capacity

class _NullTransport:
    """Stands in for the socket when bytes are fed to a Connection by hand."""

    def write(self, data) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


def _server_frames(sid: int, messages: list[bytes], chunk: int = 65536) -> list[bytes]:
    """``messages`` as the server would send them on stream ``sid`` (one DATA frame each),
    cut into reads of ``chunk`` bytes."""
    data = b"".join(h2grpc.frame(h2grpc.DATA, 0, sid, h2grpc.grpc_message(m)) for m in messages)
    return [data[i:i + chunk] for i in range(0, len(data), chunk)]


async def capacity(args) -> dict:
    """How many messages a second this generator takes in, on one core, with no server:
    synthetic server bytes fed to a Connection as reads of 64 KiB. A run whose server
    rate comes near these numbers measures the generator, not the server."""
    n = args.messages
    conn = h2grpc.Connection("capacity:1")
    conn.connection_made(_NullTransport())
    conn.send_window = conn.peer_initial_window = h2grpc.MAX_WINDOW   # no server to grant more
    header = pb.ResponseHeader(cluster_id=2**63 + 12345, member_id=2**62 + 6789,
                               revision=123456, raft_term=3)
    out = {"workload": "capacity", "messages": n, "ok": True}

    # watch events, 1 per put per watcher: receive (frame split, raw) then decode + tally
    watchers, puts = 100, max(1, n // 100)
    rev_list = list(range(1000, 1000 + puts))
    st = conn.stream(WATCH, raw=True)
    created = [pb.WatchResponse(header=header, watch_id=w, created=True).SerializeToString()
               for w in range(watchers)]
    events = []
    for rev in rev_list:
        sent = _SENT.pack(time.monotonic_ns())      # one put: the same value for every watcher
        for w in range(watchers):
            r = pb.WatchResponse(header=header, watch_id=w)
            r.header.revision = rev
            ev = r.events.add()
            ev.kv.key, ev.kv.value = b"bench/watch-fanout", sent
            ev.kv.mod_revision, ev.kv.create_revision, ev.kv.version = rev, 1000, rev - 999
            events.append(r.SerializeToString())
    chunks = _server_frames(st.sid, created + events)
    t = time.perf_counter()
    for c in chunks:
        conn.data_received(c)
    recv_s = time.perf_counter() - t
    tally = WatchStreamTally(st, watchers, Problems())
    t = time.perf_counter()
    tally.advance(WatchDecoder(), {r: i for i, r in enumerate(rev_list)}, rev_list, Histogram())
    decode_s = time.perf_counter() - t
    if tally.events != len(events) or tally.problems.count:
        raise RunFailed(f"capacity: {tally.events} of {len(events)} events tallied, "
                        f"{tally.problems.first}")
    out["watch_receive_msgs_per_sec"] = round(len(events) / recv_s)
    out["watch_decode_msgs_per_sec"] = round(len(events) / decode_s)

    # keepalive answers: receive, check, time and send the next request
    ids = list(range(1, 10001))
    run = KeepAliveRun(ids, Problems())
    ks = KeepAliveStream(run, conn)
    answers = [pb.LeaseKeepAliveResponse(header=header, ID=ids[i % len(ids)], TTL=60)
               .SerializeToString() for i in range(n)]
    chunks = _server_frames(ks.st.sid, answers)
    now = time.monotonic_ns()
    for _ in range(len(ids)):
        ks.send_next(now)       # everything in flight, so every answer matches one
    conn._wbuf.clear()
    t = time.perf_counter()
    for c in chunks:
        conn.data_received(c)
    ka_s = time.perf_counter() - t
    if run.answered != n or run.problems.count:
        raise RunFailed(f"capacity: {run.answered} of {n} keepalives, {run.problems.first}")
    out["keepalive_msgs_per_sec"] = round(n / ka_s)
    return out


# --------------------------------------------------------------------------- command line

def summary_line(r: dict) -> str:
    unit = "events/s" if r["workload"] == "watch-fanout" else "keepalives/s"
    what = "delay" if r["workload"] == "watch-fanout" else "latency"
    text = (f"{r['workload']}: {r['requests_per_sec']:.0f} {unit}, {what} p50 {r['p50_ms']:.2f} ms "
            f"p99 {r['p99_ms']:.2f} ms, generator CPU {r['generator_cpu_pct']}%")
    if r["workload"] == "watch-fanout":
        text += (f"; {r['events']}/{r['expected_events']} events, {r['puts']} puts "
                 f"({r['puts_per_sec']:.0f}/s)")
    else:
        text += f"; {r['keepalives']} keepalives on {r['leases']} leases"
    if not r["ok"]:
        text += f"\nFAILED ({r['problem_count']} problems): " + "; ".join(r["problems"])
    return text


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="workload", required=True)
    w = sub.add_parser("watch-fanout", help="1 writer, many watchers on its key")
    w.add_argument("--watchers", type=int, default=1000)
    w.add_argument("--streams", type=int, default=10, help="Watch streams (default 10)")
    w.add_argument("--connections", type=int, default=1, help="the streams' connections")
    w.add_argument("--key", default="bench/watch-fanout")
    w.add_argument("--setup-timeout", type=float, default=60.0)
    w.add_argument("--drain-timeout", type=float, default=60.0,
                   help="after the writer: how long watchers may take to get every event")
    k = sub.add_parser("lease-keepalive", help="many leases kept alive over a few streams")
    k.add_argument("--leases", type=int, default=10000)
    k.add_argument("--ttl", type=int, default=60)
    k.add_argument("--streams", type=int, default=16, help="LeaseKeepAlive streams")
    k.add_argument("--connections", type=int, default=4, help="the streams' connections")
    k.add_argument("--window", type=int, default=32,
                   help="keepalives in flight per stream (default 32)")
    k.add_argument("--grant-concurrency", type=int, default=256)
    k.add_argument("--drain-timeout", type=float, default=30.0)
    c = sub.add_parser("capacity", help="messages/s this generator parses (no server)")
    c.add_argument("--messages", type=int, default=200_000)
    c.add_argument("--json", action="store_true", help="print one JSON object")
    wr = sub.add_parser("_writer", help=argparse.SUPPRESS)
    wr.add_argument("--key", required=True)
    for p in (w, k, wr):
        p.add_argument("url", help="client URL, http://host:port")
        p.add_argument("--duration", type=float, default=10.0, help="seconds of load")
        p.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    for name in ("watchers", "streams", "connections", "leases", "window"):
        if getattr(args, name, 1) < 1:
            ap.error(f"--{name} must be at least 1")
    if args.workload == "watch-fanout" and args.streams > args.watchers:
        ap.error("--streams must not exceed --watchers")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    h2grpc.install_uvloop()
    run = {"watch-fanout": watch_fanout, "lease-keepalive": lease_keepalive,
           "capacity": capacity, "_writer": writer_main}[args.workload]
    try:
        result = asyncio.run(run(args))
    except (RunFailed, h2grpc.GrpcError, OSError, asyncio.TimeoutError) as e:
        result = {"workload": args.workload, "ok": False, "error": f"{type(e).__name__}: {e}"}
        if args.json or args.workload == "_writer":
            print(json.dumps(result))
        else:
            print(f"{args.workload}: FAILED: {result['error']}", file=sys.stderr)
        return 1
    if args.workload in ("_writer", "capacity") or args.json:
        print(json.dumps(result))
    else:
        print(summary_line(result))
    return 0 if result.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
