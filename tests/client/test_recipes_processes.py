"""fastkv.client.recipes across processes, against fastkv and etcd 3.4: separate
Python processes contending for a Lock, an Election whose leader is SIGKILLed, a
Queue with producer and consumer processes, a lock holder paused (SIGSTOP) past its
lease whose fenced write must then fail, a service instance killed, and interop with
``etcdctl lock`` / ``etcdctl elect`` (same key layout as etcd's concurrency package).

Every child process is stopped by the ``children`` fixture, also when a test fails.
Nothing is timed: the tests wait for states with deadlines. Leases are short (2 s)
where a death must be noticed.
"""
from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading

import pytest
from clientsupport import wait_for

from servers import REPO

from fastkv.client.recipes import Barrier, Election, Lock, Queue, ServiceRegistry

ETCDCTL = "/usr/bin/etcdctl"

# One script for every child: python -c WORKER <mode> <url> <args...>. It prints one
# line per step (flushed), which the test waits for.
WORKER = r'''
import json, sys, time
from fastkv.client import Client, get_op, put_op, version
from fastkv.client.recipes import Barrier, Election, Lock, LockLost, Queue, ServiceRegistry

mode, url, args = sys.argv[1], sys.argv[2], sys.argv[3:]


def say(*a):
    print(*a, flush=True)


c = Client(url)
if mode == "counter":
    # increment a shared counter n times under the lock; a marker key proves that
    # nobody else is inside at the same time
    name, n, me = args[0], int(args[1]), args[2]
    tokens = []
    say("READY")
    Barrier(c, name + "/start").wait()   # all start together: real contention
    for _ in range(n):
        with Lock(c, name + "/lock", ttl=5) as lock:
            r = (c.txn().if_(version(name + "/holder") == 0)
                 .then(put_op(name + "/holder", me))
                 .else_(get_op(name + "/holder")).commit())
            if not r.succeeded:
                say("OVERLAP", me, r[0][0].value.decode())
            kv = c.get(name + "/counter")
            lock.guarded_put(name + "/counter", str(int(kv.value) + 1 if kv else 1))
            lock.guarded_delete(name + "/holder")
            tokens.append(lock.token)
    say("DONE", json.dumps(tokens))
elif mode == "elect":
    name, value = args
    e = Election(c, name, ttl=2)
    e.campaign(value)
    say("LEADER", value)
    while True:
        time.sleep(1)
elif mode == "fenced":
    # take the lock, then wait for the test: it pauses us past the lease, then says go
    name = args[0]
    lock = Lock(c, name + "/lock", ttl=2)
    lock.acquire()
    say("HOLDING", lock.token)
    sys.stdin.readline()
    try:
        lock.guarded_put(name + "/data", "written by the paused holder")
        say("WROTE")
    except LockLost:
        say("LOCKLOST")
    lock.release()
    say("RELEASED")
elif mode == "produce":
    name, me, n = args[0], args[1], int(args[2])
    q = Queue(c, name)
    for i in range(n):
        q.enqueue(f"{me}-{i}")
    say("PRODUCED")
elif mode == "consume":
    q = Queue(c, args[0])
    while True:
        v = q.dequeue(timeout=60).decode()
        say("GOT", v)
        if v == "STOP":
            break
elif mode == "register":
    service, iid, address = args
    ServiceRegistry(c, "svc/").register(service, iid, address, {"pid": 1}, ttl=2)
    say("REGISTERED")
    while True:
        time.sleep(1)
'''


class Child:
    """A child process whose output lines are collected by a thread."""

    def __init__(self, argv, *, stdin: bool = False, env=None):
        self.argv = argv
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            env=dict(os.environ, **(env or {})))
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def expect(self, start: str, timeout: float = 30.0) -> str:
        """The first line starting with ``start`` (waiting for it)."""
        def found():
            return next((ln for ln in self.lines if ln.startswith(start)), None)
        with self._cond:
            ok = self._cond.wait_for(lambda: found() is not None or
                                     (self.proc.poll() is not None and not
                                      self._reader.is_alive()), timeout)
            line = found()
        if line is None:
            raise AssertionError(f"{self.argv[:4]}: no line {start!r} (ok={ok}, "
                                 f"rc={self.proc.poll()}); output:\n{self.output()}")
        return line

    def has(self, start: str) -> bool:
        with self._cond:
            return any(ln.startswith(start) for ln in self.lines)

    def send(self, text: str) -> None:
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def signal(self, sig) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(5)
        return rc

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGCONT)   # a stopped child dies as well
                self.proc.kill()
            except OSError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass


@pytest.fixture
def children():
    """Start children with children.worker(mode, url, ...) / children.etcdctl(url, ...);
    every one is killed at the end of the test."""
    started: list[Child] = []

    class Starter:
        def worker(self, mode, url, *args, stdin=False):
            ch = Child([sys.executable, "-c", WORKER, mode, url, *map(str, args)], stdin=stdin)
            started.append(ch)
            return ch

        def etcdctl(self, url, *args):
            ch = Child([ETCDCTL, "--endpoints", url, *args], env={"ETCDCTL_API": "3"})
            started.append(ch)
            return ch
    try:
        yield Starter()
    finally:
        for ch in started:
            ch.stop()


def count_under(client, prefix) -> int:
    return client.range(prefix, prefix=True, count_only=True).count


# ---- Lock ---------------------------------------------------------------------------------

def test_lock_contention_between_processes(server, client, children, prefix):
    name, workers, rounds = prefix + "shared", 4, 8
    start = Barrier(client, name + "/start")
    assert start.hold()
    procs = [children.worker("counter", server.url, name, rounds, f"w{i}")
             for i in range(workers)]
    for p in procs:
        p.expect("READY")
    start.release()
    tokens = []
    for p in procs:
        tokens += json.loads(p.expect("DONE", 60).split(" ", 1)[1])
        assert p.wait() == 0, p.output()
        assert not p.has("OVERLAP"), p.output()
    assert client.get(name + "/counter").text == str(workers * rounds)   # no lost update
    assert len(set(tokens)) == workers * rounds           # one fencing token per holding
    assert count_under(client, name + "/lock/") == 0


def test_paused_holder_is_fenced_off(server, client, children, prefix):
    """A holder stopped (SIGSTOP) past its 2 s lease: the lock moves on, and when the
    old holder wakes up, its fenced write is refused."""
    name = prefix + "fenced"
    old = children.worker("fenced", server.url, name, stdin=True)
    old_token = int(old.expect("HOLDING").split()[1])
    old.signal(signal.SIGSTOP)
    try:
        new = Lock(client, name + "/lock", ttl=10)
        assert new.acquire(timeout=30)          # once the paused holder's lease expired
        assert new.token > old_token
        new.guarded_put(name + "/data", "written by the new holder")
    finally:
        old.signal(signal.SIGCONT)
    old.send("go\n")
    old.expect("LOCKLOST")
    old.expect("RELEASED")
    assert old.wait() == 0
    assert not old.has("WROTE")
    kv = client.get(name + "/data")
    assert kv.text == "written by the new holder" and kv.version == 1
    assert new.is_held()
    new.release()


# ---- Election -----------------------------------------------------------------------------

def test_election_leader_killed(server, client, children, prefix):
    name = prefix + "election"
    election = Election(client, name)
    with election.observe() as obs:
        first = children.worker("elect", server.url, name, "first")
        first.expect("LEADER first")
        assert election.leader().value == b"first"
        second = children.worker("elect", server.url, name, "second")
        wait_for(lambda: count_under(client, name + "/") == 2, "the second candidate",
                 timeout=30)
        assert not second.has("LEADER")
        assert obs.get(10).value == b"first"
        first.signal(signal.SIGKILL)
        first.wait()
        # its lease (2 s) expires, its key goes, the second candidate takes over
        assert obs.get(30).value == b"second"
        second.expect("LEADER second")
        assert election.leader().value == b"second"


# ---- Queue --------------------------------------------------------------------------------

def test_queue_producers_and_consumers(server, client, children, prefix):
    name, per_producer = prefix + "jobs", 15
    consumers = [children.worker("consume", server.url, name) for _ in range(2)]
    producers = [children.worker("produce", server.url, name, f"p{i}", per_producer)
                 for i in range(2)]
    for p in producers:
        p.expect("PRODUCED", 60)
        assert p.wait() == 0
    q = Queue(client, name)
    for _ in consumers:
        q.enqueue("STOP")          # FIFO: after every item produced
    got = []
    for cons in consumers:
        assert cons.wait(60) == 0, cons.output()
        got += [ln.split(" ", 1)[1] for ln in cons.lines if ln.startswith("GOT ")]
    items = [v for v in got if v != "STOP"]
    want = [f"p{i}-{j}" for i in range(2) for j in range(per_producer)]
    assert sorted(items) == sorted(want), collections.Counter(items).most_common(3)
    assert got.count("STOP") == 2 and len(q) == 0


# ---- ServiceRegistry ----------------------------------------------------------------------

def test_service_instance_killed(server, client, children, prefix):
    service = prefix.strip("/") + "-api"
    reg = ServiceRegistry(client, "svc/")
    events = []
    with reg.discover(service, on_change=lambda kind, i: events.append((kind, i.id))) as view:
        inst = children.worker("register", server.url, service, "i-1", "10.0.0.1:80")
        inst.expect("REGISTERED")
        assert view.wait(lambda live: [i.id for i in live] == ["i-1"], 10)
        assert view.get("i-1").metadata == {"pid": 1}
        inst.signal(signal.SIGKILL)
        inst.wait()
        # gone once its 2 s lease expires
        assert view.wait(lambda live: live == [], 30)
        with reg.register(service, "i-2", "10.0.0.2:80", ttl=2):
            assert view.wait(lambda live: [i.id for i in live] == ["i-2"], 10)
            assert view.picker().pick().address == "10.0.0.2:80"
        assert view.wait(lambda live: live == [], 10)
    assert events == [("added", "i-1"), ("removed", "i-1"), ("added", "i-2"),
                      ("removed", "i-2")]


# ---- interop with etcdctl -----------------------------------------------------------------

def test_etcdctl_lock_interop(server, client, children, prefix):
    name = prefix + "interop-lock"
    ours = Lock(client, name, ttl=10)
    ours.acquire()
    theirs = children.etcdctl(server.url, "lock", name)
    # etcdctl queues behind us, under the same prefix (<name>/<lease hex>)
    wait_for(lambda: count_under(client, name + "/") == 2, "etcdctl in line", timeout=30)
    assert theirs.lines == [] and theirs.proc.poll() is None
    their_key = client.range(name + "/", prefix=True, sort_target="create").kvs[1].key
    ours.release()
    assert theirs.expect(name + "/") == their_key.decode()     # etcdctl prints its key
    # now etcdctl holds it: we are blocked
    second = Lock(client, name, ttl=10)
    assert not second.acquire(blocking=False)
    assert second.owner().key == their_key
    result = {}
    t = threading.Thread(target=lambda: result.update(ok=second.acquire(timeout=30)))
    t.start()
    try:
        wait_for(lambda: count_under(client, name + "/") == 2, "us in line", timeout=30)
        assert t.is_alive()
        theirs.signal(signal.SIGINT)             # etcdctl unlocks on SIGINT
        assert theirs.wait() == 0
    finally:
        t.join(40)
    assert result == {"ok": True}
    assert second.owner().key == second.key
    second.release()


def test_etcdctl_elect_interop(server, client, children, prefix):
    name = prefix + "interop-elect"
    ours = Election(client, name, ttl=10)
    assert ours.campaign("ours")
    listener = children.etcdctl(server.url, "elect", "-l", name)
    listener.expect("ours")                       # etcdctl elect -l sees our leader
    assert listener.lines[0] == ours.key.decode()
    theirs = children.etcdctl(server.url, "elect", name, "theirs")
    wait_for(lambda: count_under(client, name + "/") == 2, "etcdctl campaigning", timeout=30)
    assert not theirs.has("theirs")
    ours.proclaim("ours-2")
    listener.expect("ours-2")
    ours.resign()
    theirs.expect("theirs")                       # etcdctl elect is now the leader
    listener.expect("theirs")
    assert ours.leader().value == b"theirs"

    # and the other way round: etcdctl leads, we wait
    result = {}
    t = threading.Thread(target=lambda: result.update(ok=ours.campaign("ours-3", timeout=30)))
    t.start()
    try:
        wait_for(lambda: count_under(client, name + "/") == 2, "us campaigning", timeout=30)
        assert t.is_alive() and ours.leader().value == b"theirs"
        theirs.signal(signal.SIGINT)              # etcdctl resigns on SIGINT
        assert theirs.wait() == 0
    finally:
        t.join(40)
    assert result == {"ok": True} and ours.leader().value == b"ours-3"
    listener.expect("ours-3")
    ours.resign()
