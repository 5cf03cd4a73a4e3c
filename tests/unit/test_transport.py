"""Peer transport over real loopback sockets: batches, reconnects, the
handshake's checks, bad frames, snapshot streaming, calls and fetch_cluster.

Every test runs its own event loop (asyncio.run); every transport listens on
127.0.0.1 port 0 (a free port the kernel picks) and is stopped in a finally,
which also checks that no task of it is left behind.
"""
import asyncio
import contextlib
import logging
import os
import struct

import pytest

from fastkv.raft import _peercodec as codec
from fastkv.raft.messages import (
    MSG_APP,
    MSG_HEARTBEAT,
    MSG_SNAP,
    MSG_SNAP_STATUS,
    MSG_UNREACHABLE,
    ConfState,
    Message,
    SnapshotMeta,
)
from fastkv.raft.transport import (
    HELLO,
    MAGIC,
    PROTOCOL_VERSION,
    SNAP_BEGIN,
    SNAP_END,
    PeerTransport,
    RemoteError,
    fetch_cluster,
)
from fastkv.storage.snapshot import Snapshotter, snapshot_name
from fastkv.storage.wal import Entry

CID = 0xCDF818194E3A8C32
OTHER_CID = 0x1C45A069F3A1D796
A, B, C = 0x8E9E05C52164694D, 0x91BC3C398FB3C146, 0xFD422379FDA50E48
LOG = "fastkv.transport"


LOOP = {"kind": "asyncio"}


@pytest.fixture(autouse=True, params=["asyncio", "uvloop"])
def event_loop_kind(request):
    """Every test on the default loop and on uvloop (what the server runs)."""
    LOOP["kind"] = request.param
    yield request.param
    LOOP["kind"] = "asyncio"


def run(coro, timeout=30):
    async def main():
        await asyncio.wait_for(coro, timeout)
        await asyncio.sleep(0)
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not left, f"tasks left behind: {left}"
    if LOOP["kind"] == "uvloop":
        import uvloop
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    else:
        asyncio.run(main())


class Node:
    def __init__(self, mid, tmp_path, cid=CID, **kw):
        self.id = mid
        self.got: list[Message] = []
        self.snap_files: dict[int, str] = {}
        self.snap_dir = str(tmp_path / f"snap-{mid:x}")
        os.makedirs(self.snap_dir, exist_ok=True)
        self.on_snap = None
        self.t = PeerTransport(mid, cid, self.on_message, snap_dir=self.snap_dir,
                               snapshot_path=self.snap_files.get, **kw)

    def on_message(self, m):
        if m.type == MSG_SNAP and self.on_snap:
            self.on_snap(m)
        self.got.append(m)

    @property
    def url(self):
        host, port = self.t.listen_addresses[0]
        return f"http://{host}:{port}"

    def of_type(self, mtype):
        return [m for m in self.got if m.type == mtype]

    async def start(self, url="http://127.0.0.1:0"):
        await self.t.start([url])
        return self


async def until(pred, timeout=5.0, what="condition"):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def nodes(tmp_path, ids, cids=None, mesh=True, **kw):
    cids = cids or [CID] * len(ids)
    made = []
    try:
        for mid, cid in zip(ids, cids):
            made.append(await Node(mid, tmp_path, cid, **kw).start())
        if mesh:
            for n in made:
                for o in made:
                    if o is not n:
                        n.t.add_peer(o.id, [o.url])
        yield made
    finally:
        for n in made:
            await n.t.stop()


def hb(frm, to, i=0, **kw):
    return Message(MSG_HEARTBEAT, to=to, frm=frm, term=1, commit=i, **kw)


# ---- a raw peer, to send what a well-behaved transport never would ------------------------

class Raw:
    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, node, cid=CID, frm=A, to=None, expect_ok=True):
        host, port = node.t.listen_addresses[0]
        reader, writer = await asyncio.open_connection(host, port)
        raw = cls(reader, writer)
        raw.send(codec.FRAME_HELLO, HELLO.pack(MAGIC, PROTOCOL_VERSION, cid, frm,
                                               node.id if to is None else to))
        if expect_ok:
            ftype, _ = await raw.read()
            assert ftype == codec.FRAME_HELLO_OK
        return raw

    def send(self, ftype, body):
        self.writer.write(codec.encode_frame(ftype, body))

    async def read(self):
        head = await asyncio.wait_for(self.reader.readexactly(5), 5)
        length, ftype = struct.unpack("<IB", head)
        return ftype, await self.reader.readexactly(length)

    async def closed_by_peer(self):
        """Read until EOF; returns the error reason the peer sent, if any."""
        reason = None
        try:
            while True:
                ftype, body = await self.read()
                if ftype == codec.FRAME_ERROR:
                    reason = body.decode()
        except asyncio.IncompleteReadError:
            return reason

    def close(self):
        self.writer.close()


# ---- streams ---------------------------------------------------------------------------

def test_three_members_exchange_batches(tmp_path):
    async def main():
        async with nodes(tmp_path, [A, B, C]) as ns:
            for n in ns:
                for k in range(5):
                    batch = []
                    for o in ns:
                        if o is not n:
                            batch += [hb(n.id, o.id, k * 200 + i) for i in range(200)]
                    n.t.send(batch)
            await until(lambda: all(len(n.got) == 2000 for n in ns), what="all messages")
            for n in ns:
                for o in ns:
                    if o is not n:
                        assert [m.commit for m in n.got if m.frm == o.id] == list(range(1000))
                assert all(m.to == n.id for m in n.got)
            # Entries survive the trip; messages to unknown members and to self are dropped.
            ents = [Entry(1, i, 0, os.urandom(50)) for i in range(1000)]
            ns[0].t.send([Message(MSG_APP, to=B, frm=A, term=1, entries=ents),
                          hb(A, 0x1234), hb(A, A)])
            await until(lambda: ns[1].of_type(MSG_APP), what="MsgApp")
            assert ns[1].of_type(MSG_APP)[0].entries == ents
            assert not any(m.type == MSG_UNREACHABLE for n in ns for m in n.got)
    run(main())


def test_writer_batches_a_burst_into_few_frames(tmp_path, monkeypatch):
    calls = []
    real = codec.frame_messages

    def spy(msgs, max_frame):
        calls.append(len(msgs))
        return real(msgs, max_frame)

    async def main():
        async with nodes(tmp_path, [A, B]) as (a, b):
            a.t.send([hb(A, B, 0)])
            await until(lambda: len(b.got) == 1)
            await asyncio.sleep(0.05)   # the writer waits again, its stream drained
            monkeypatch.setattr(codec, "frame_messages", spy)
            a.t.send([hb(A, B, 1)])
            # an idle peer's message is written within send(), not a loop turn later
            assert calls == [1]
            for i in range(2, 501):  # the rest of 500 sends in one loop turn
                a.t.send([hb(A, B, i)])
            await until(lambda: len(b.got) == 501)
            assert calls == [1, 499]    # the writer frames what queued up behind it at once
            assert [m.commit for m in b.got] == list(range(501))
    run(main())


def test_reconnect_after_listener_restart(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger=LOG)

    async def main():
        async with nodes(tmp_path, [A, B]) as (a, b):
            a.t.send([hb(A, B, 1)])
            await until(lambda: b.got, what="first message")
            url = b.url
            await b.t.stop()
            # B is down: sending reports the peer unreachable (once per failure), no exception.
            for _ in range(20):
                a.t.send([hb(A, B, 2)])
                await asyncio.sleep(0.02)
            await until(lambda: a.of_type(MSG_UNREACHABLE), what="unreachable report")
            rep = a.of_type(MSG_UNREACHABLE)[0]
            assert (rep.frm, rep.to) == (B, A)
            assert len(a.of_type(MSG_UNREACHABLE)) < 20
            b2 = Node(B, tmp_path)
            await b2.start(url)
            try:
                b2.t.add_peer(A, [a.url])
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 5
                while not b2.got and loop.time() < deadline:
                    a.t.send([hb(A, B, 3)])
                    await asyncio.sleep(0.02)
                assert b2.got and all(m.commit == 3 for m in b2.got)
            finally:
                await b2.t.stop()
    run(main())
    assert "connected to member" in caplog.text


def test_cluster_id_mismatch_rejected_and_logged_on_both_sides(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=LOG)

    async def main():
        async with nodes(tmp_path, [A, B], cids=[OTHER_CID, CID]) as (a, b):
            a.t.send([hb(A, B)])
            await until(lambda: a.of_type(MSG_UNREACHABLE), what="unreachable report")
            await asyncio.sleep(0.05)
            assert b.got == []
    run(main())
    want = (f"rejected connection from member {A:x}",
            f"cluster ID mismatch (theirs {OTHER_CID:x}, ours {CID:x})")
    assert any(all(w in r.getMessage() for w in want) for r in caplog.records)
    assert any(f"member {B:x} rejected the connection: cluster ID mismatch "
               f"(ours {OTHER_CID:x}, theirs {CID:x})" in r.getMessage()
               for r in caplog.records)


def test_unknown_member_rejected_and_logged_on_both_sides(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=LOG)

    async def main():
        async with nodes(tmp_path, [A, B], mesh=False) as (a, b):
            a.t.add_peer(B, [b.url])  # B does not know A
            a.t.send([hb(A, B)])
            await until(lambda: a.of_type(MSG_UNREACHABLE), what="unreachable report")
            assert b.got == []
            # A hello for another member ID is refused too.
            b.t.add_peer(A, [a.url])
            raw = await Raw.connect(b, to=C, expect_ok=False)
            assert "member ID mismatch" in await raw.closed_by_peer()
            raw.close()
    run(main())
    text = caplog.text
    assert f"rejected connection from member {A:x}" in text
    assert f"member {A:x} is not a known member" in text
    assert f"member {B:x} rejected the connection: member {A:x} is not a known member" in text


@pytest.mark.parametrize("bad", ["oversized", "garbled", "truncated", "unknown_type",
                                 "bad_hello"])
def test_bad_frames_close_the_connection_and_deliver_nothing(tmp_path, caplog, bad):
    caplog.set_level(logging.INFO, logger=LOG)

    async def main():
        async with nodes(tmp_path, [A, B], max_frame=4096) as (a, b):
            if bad == "bad_hello":
                host, port = b.t.listen_addresses[0]
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                raw = Raw(reader, writer)
                await raw.closed_by_peer()
                raw.close()
                return
            raw = await Raw.connect(b)
            good = codec.encode_messages([hb(A, B, 1)])
            raw.send(codec.FRAME_MSGS, good)
            await until(lambda: len(b.got) == 1)
            late = codec.encode_frame(codec.FRAME_MSGS, codec.encode_messages([hb(A, B, 9)]))
            if bad == "oversized":
                raw.writer.write(struct.pack("<IB", 4097, codec.FRAME_MSGS) + bytes(4097) + late)
            elif bad == "garbled":
                body = bytearray(codec.encode_messages([hb(A, B, 2), hb(A, B, 3)]))
                body[-30] = 0xFF  # inside the second message's header... or its fields
                body[4 + 1] = 0x80  # unknown flag bits in the first message
                raw.send(codec.FRAME_MSGS, bytes(body))
                raw.writer.write(late)
            elif bad == "truncated":
                raw.writer.write(struct.pack("<IB", 500, codec.FRAME_MSGS) + good)
                raw.writer.write_eof()
            elif bad == "unknown_type":
                raw.writer.write(struct.pack("<IB", 0, 200) + late)
            reason = await raw.closed_by_peer()
            raw.close()
            if bad != "truncated":
                assert reason
            await asyncio.sleep(0.05)
            assert [m.commit for m in b.got] == [1]
    run(main())
    text = caplog.text
    if bad == "bad_hello":
        assert "rejected connection from 127.0.0.1" in text
    else:
        assert f"closing connection from member {A:x}" in text
        assert {"oversized": "over the limit of 4096", "garbled": "unknown flags",
                "truncated": "truncated frame", "unknown_type": "unknown frame type"}[bad] in text


def test_messages_not_from_the_handshaken_peer_are_dropped(tmp_path):
    async def main():
        async with nodes(tmp_path, [A, B, C]) as (a, b, c):
            raw = await Raw.connect(b, frm=A)
            raw.send(codec.FRAME_MSGS, codec.encode_messages(
                [hb(C, B, 1), hb(A, C, 2), Message(MSG_UNREACHABLE, to=B, frm=A),
                 hb(A, B, 3)]))
            await until(lambda: b.got)
            await asyncio.sleep(0.05)
            assert [(m.frm, m.commit) for m in b.got] == [(A, 3)]
            raw.close()
    run(main())


def test_drop_to_and_drop_from(tmp_path):
    async def main():
        async with nodes(tmp_path, [A, B]) as (a, b):
            a.t.drop_to.add(B)
            a.t.send([hb(A, B, 1)])
            b.t.drop_from.add(A)
            a.t.drop_to.clear()
            a.t.send([hb(A, B, 2)])
            await asyncio.sleep(0.1)
            assert b.got == []
            b.t.drop_from.clear()
            a.t.send([hb(A, B, 3)])
            await until(lambda: b.got)
            assert [m.commit for m in b.got] == [3]
    run(main())


def test_queue_full_reports_unreachable_once(tmp_path):
    async def main():
        async with nodes(tmp_path, [A, B], queue_cap=10) as (a, b):
            a.t.send([hb(A, B, i) for i in range(100)])  # one loop turn: only 10 fit
            await until(lambda: len(b.got) == 10)
            await asyncio.sleep(0.05)
            assert [m.commit for m in b.got] == list(range(10))
            assert len(a.of_type(MSG_UNREACHABLE)) == 1
    run(main())


def test_remove_and_update_peer(tmp_path):
    async def main():
        async with nodes(tmp_path, [A, B, C]) as (a, b, c):
            a.t.send([hb(A, B, 1)])
            await until(lambda: b.got)
            b.t.remove_peer(A)
            assert A not in b.t.peers
            await asyncio.sleep(0.05)
            a.t.send([hb(A, B, 2)])
            await until(lambda: a.of_type(MSG_UNREACHABLE), what="unreachable after removal")
            assert [m.commit for m in b.got] == [1]
            # update_peer: A now reaches "B" at C's URL; C refuses (wrong member ID).
            a.t.update_peer(C, [b.url])
            assert a.t.peers[C] == [b.url]
    run(main())


# ---- snapshots --------------------------------------------------------------------------

def make_snapshot(node, term, index, mib):
    blobs = [os.urandom(256 * 1024) for _ in range(mib * 4)]
    Snapshotter(node.snap_dir).save(term, index, {"index": index, "term": term}, blobs)
    path = os.path.join(node.snap_dir, snapshot_name(term, index))
    node.snap_files[index] = path
    return path


def snap_msg(frm, to, term, index):
    return Message(MSG_SNAP, to=to, frm=frm, term=term,
                   snapshot=SnapshotMeta(index, term, ConfState([A, B, C], [])))


def test_snapshot_streams_byte_identical_and_is_delivered_after_completion(tmp_path):
    async def main():
        async with nodes(tmp_path, [A, B]) as (a, b):
            path = make_snapshot(a, 4, 1000, 5)
            dest = os.path.join(b.snap_dir, snapshot_name(4, 1000))
            seen = []
            b.on_snap = lambda m: seen.append(os.path.exists(dest) and os.path.getsize(dest))
            a.t.send([hb(A, B, 1), snap_msg(A, B, 4, 1000), hb(A, B, 2)])
            await until(lambda: a.of_type(MSG_SNAP_STATUS), timeout=15, what="snap status")
            st = a.of_type(MSG_SNAP_STATUS)[0]
            assert (st.frm, st.to, st.reject) == (B, A, False)
            (got,) = b.of_type(MSG_SNAP)
            assert got == snap_msg(A, B, 4, 1000)
            assert seen == [os.path.getsize(path)]  # the file was complete when delivered
            with open(path, "rb") as f1, open(dest, "rb") as f2:
                assert f1.read() == f2.read()
            assert sorted(os.listdir(b.snap_dir)) == [snapshot_name(4, 1000)]
            term, index, state, blobs = Snapshotter(b.snap_dir).load_newest()
            assert (term, index, state) == (4, 1000, {"index": 1000, "term": 4})
            assert [m.commit for m in b.of_type(MSG_HEARTBEAT)] == [1, 2]
    run(main())


def test_snapshot_without_a_file_reports_failure(tmp_path, caplog):
    async def main():
        async with nodes(tmp_path, [A, B]) as (a, b):
            a.t.send([snap_msg(A, B, 4, 77)])
            await until(lambda: a.of_type(MSG_SNAP_STATUS))
            assert a.of_type(MSG_SNAP_STATUS)[0].reject is True
            assert b.got == []
    run(main())
    assert "no snapshot file for index 77" in caplog.text


def test_sender_killed_mid_snapshot_leaves_no_file(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=LOG)

    async def main():
        async with nodes(tmp_path, [A, B]) as (a, b):
            raw = await Raw.connect(b)
            raw.send(codec.FRAME_SNAP_BEGIN, SNAP_BEGIN.pack(3 << 20)
                     + codec.encode_messages([snap_msg(A, B, 4, 1000)]))
            raw.send(codec.FRAME_SNAP_CHUNK, os.urandom(512 * 1024))
            raw.send(codec.FRAME_SNAP_CHUNK, os.urandom(512 * 1024))
            await raw.writer.drain()
            await until(lambda: any(n.endswith(".tmp") for n in os.listdir(b.snap_dir)),
                        what="temp file")
            raw.writer.transport.abort()  # killed
            await until(lambda: "aborted" in caplog.text, what="abort logged")
            assert os.listdir(b.snap_dir) == []
            assert b.got == []
    run(main())
    assert "connection closed after 1048576 of 3145728 bytes" in caplog.text


@pytest.mark.parametrize("bad", ["crc", "size"])
def test_corrupt_snapshot_is_refused(tmp_path, caplog, bad):
    async def main():
        async with nodes(tmp_path, [A, B]) as (a, b):
            raw = await Raw.connect(b)
            data = os.urandom(100_000)
            raw.send(codec.FRAME_SNAP_BEGIN, SNAP_BEGIN.pack(len(data))
                     + codec.encode_messages([snap_msg(A, B, 4, 1000)]))
            raw.send(codec.FRAME_SNAP_CHUNK, data)
            from fastkv._crc32c import crc32c
            crc = crc32c(data) ^ (1 if bad == "crc" else 0)
            raw.send(codec.FRAME_SNAP_END, SNAP_END.pack(len(data) + (bad == "size"), crc))
            reason = await raw.closed_by_peer()
            raw.close()
            assert ("CRC mismatch" if bad == "crc" else "size mismatch") in reason
            assert os.listdir(b.snap_dir) == [] and b.got == []
    run(main())


# ---- calls ------------------------------------------------------------------------------

def test_call_round_trip_and_remote_error(tmp_path):
    async def main():
        async with nodes(tmp_path, [A, B]) as (a, b):
            async def echo(payload):
                return {"echo": payload, "from": "b"}

            async def fail(payload):
                raise ValueError(f"lease {payload} not found")

            async def slow(payload):
                await asyncio.sleep(10)

            b.t.register("echo", echo)
            b.t.register("fail", fail)
            b.t.register("slow", slow)
            payload = {"id": 7, "ttl": [1, 2.5, b"x", None, True]}
            assert await a.t.call(B, "echo", payload) == {"echo": payload, "from": "b"}
            results = await asyncio.gather(*(a.t.call(B, "echo", i) for i in range(50)))
            assert [r["echo"] for r in results] == list(range(50))
            with pytest.raises(RemoteError, match="lease 42 not found"):
                await a.t.call(B, "fail", 42)
            with pytest.raises(RemoteError, match="unknown request kind 'nope'"):
                await a.t.call(B, "nope")
            with pytest.raises(TimeoutError):
                await a.t.call(B, "slow", timeout=0.1)
            assert await a.t.call(B, "echo", 1) == {"echo": 1, "from": "b"}  # still usable
            with pytest.raises(ConnectionError):
                await a.t.call(0x999, "echo")
            with pytest.raises(ValueError):
                await a.t.call(B, "echo", object())
            a.t.drop_to.add(B)          # a partition (--experimental-fault-file) cuts calls too
            with pytest.raises(ConnectionError, match="dropped"):
                await a.t.call(B, "echo", 1)
            a.t.drop_to.clear()
            assert await a.t.call(B, "echo", 2) == {"echo": 2, "from": "b"}
    run(main())


def test_call_to_a_dead_member_fails(tmp_path):
    async def main():
        async with nodes(tmp_path, [A, B]) as (a, b):
            await b.t.stop()
            with pytest.raises(OSError):
                await a.t.call(B, "echo", 1, timeout=2)
    run(main())


def test_fetch_cluster_only_for_public_kinds(tmp_path, caplog):
    async def main():
        async with nodes(tmp_path, [A, B]) as (a, b):
            async def members(payload):
                return {"cluster": CID, "members": [[A, [a.url]], [B, [b.url]]]}

            async def secret(payload):
                return "secret"

            b.t.register("members", members, public=True)
            b.t.register("secret", secret)
            dead = "http://127.0.0.1:1"
            cid, result = await fetch_cluster([dead, b.url], "members", timeout=2)
            assert cid == CID and result["members"][1] == [B, [b.url]]
            with pytest.raises(RemoteError, match="needs a cluster ID"):
                await fetch_cluster([b.url], "secret", timeout=2)
            # Members with the cluster ID may call it.
            assert await a.t.call(B, "secret") == "secret"
            # A connection without a cluster ID cannot send Raft messages.
            raw = await Raw.connect(b, cid=0, frm=0x4444, to=0)
            raw.send(codec.FRAME_MSGS, codec.encode_messages([hb(0x4444, B)]))
            assert "needs a cluster ID" in await raw.closed_by_peer()
            raw.close()
            assert b.got == []
            with pytest.raises(OSError):
                await fetch_cluster([dead], timeout=1)
    run(main())
