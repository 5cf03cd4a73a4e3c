"""fastkvctl's txn, lock, elect, make-mirror, check, help, completion and ETCDCTL_*
variables against real etcdctl 3.4 (``ETCDCTL_API=3 etcdctl``).

Each comparison runs the same steps with both tools, each against its own fresh
fastkv member (two fresh members go through the same revisions), and compares
exit codes, stdout and stderr after normalising only what differs by design:
cluster and member IDs, lease IDs (and the lock and election keys made of them),
times and the progress bar, etcdctl's client-side zap log lines, and the few help
lines that differ on purpose (listed in HELP_DIFFERENCES). A few runs use a real
etcd 3.4 to show fastkvctl drives etcd too, queueing for one lock or election
beside etcdctl.

``check perf`` takes 60 seconds whatever its load (etcdctl has no shorter run) and
make-mirror prints its count every 30 s: those two comparisons are marked ``long``
(``ci/chaos --short`` runs them; the default suite's budget leaves them out).

Every process a test starts is stopped by it (lock holders and waiters are
killed), also when the test fails.
"""
from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from ctlfork import FASTKVCTL, run_command

from servers import REPO, EtcdProcess, FastkvProcess, wait_until

pytestmark = pytest.mark.etcd

ETCDCTL = shutil.which("etcdctl")
TOOLS = ("etcdctl", "fastkvctl")


# ---------------------------------------------------------------- running the tools

def tool_command(tool: str) -> list[str]:
    if tool == "etcdctl":
        assert ETCDCTL, "etcdctl is not installed: ci/test installs Debian's etcd-client"
        return [ETCDCTL]
    return FASTKVCTL


def tool_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def run(tool: str, server, args: list[str], stdin: bytes = b"", env: dict | None = None,
        timeout: float = 60) -> tuple[int, bytes, str]:
    """One command; ``server`` None: no --endpoints flag."""
    eps = ["--endpoints", server.url] if server is not None else []
    p = run_command(tool_command(tool) + eps + args, input=stdin, timeout=timeout,
                    env=tool_env(env), cwd=REPO)
    return p.returncode, p.stdout, p.stderr.decode(errors="replace")


def ctl(server, *args: str) -> str:
    """Set-up and inspection through etcdctl (asserted to succeed)."""
    rc, out, err = run("etcdctl", server, list(args))
    assert rc == 0, err
    return out.decode(errors="replace")


def clean(text: str) -> str:
    """etcdctl's zap log lines out; a Go panic down to its first line; IDs of the member."""
    text = "\n".join(ln for ln in text.split("\n") if not ln.startswith('{"level":'))
    if text.startswith("panic: "):
        text = text.split("\n")[0] + "\n"
    text = re.sub(r'"(cluster_id|member_id)":\d+', r'"\1":ID', text)
    text = re.sub(r'^"(ClusterID|MemberID)" : [1-9]\d*$', r'"\1" : ID', text, flags=re.M)
    return re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} ", "<time> ", text, flags=re.M)


class LeaseNames:
    """Lease IDs (hex in lock and election keys, decimal in fields and JSON) -> <leaseN>,
    numbered in the order they show up."""

    def __init__(self):
        self.names: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        for hex_id in re.findall(r"/([0-9a-f]{6,16})\b", text):
            if hex_id not in self.names:
                self.names[hex_id] = f"<lease{len(self.names)}>"
        for hex_id, name in self.names.items():
            text = text.replace(hex_id, name)
            text = re.sub(rf"\b{int(hex_id, 16)}\b", name, text)
        return text


def clean_names(names: LeaseNames, text: str) -> str:
    return clean(names(text))


def _start(kind, n: int) -> list:
    """n fresh single members, started together; all stopped if one fails to start."""
    servers = [kind() for _ in range(n)]
    try:
        for s in servers:
            s.launch()
        for s in servers:
            s.wait_healthy(30)
    except BaseException:
        for s in servers:
            s.cleanup()
        raise
    return servers


@pytest.fixture
def two_fastkv():
    servers = _start(FastkvProcess, 2)
    try:
        yield servers
    finally:
        for s in servers:
            s.cleanup()


@pytest.fixture
def etcd():
    srv = EtcdProcess().start()
    try:
        yield srv
    finally:
        srv.cleanup()


class Proc:
    """A long-running tool (lock, elect, make-mirror) whose stdout lines a thread collects."""

    def __init__(self, tool: str, server, args: list[str]):
        self.args = args
        self.p = subprocess.Popen(tool_command(tool) + ["--endpoints", server.url] + args,
                                  env=tool_env(), cwd=REPO, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.q: queue.Queue = queue.Queue()
        self.err = b""
        self.pumps = [threading.Thread(target=self._pump, daemon=True),
                      threading.Thread(target=self._pump_err, daemon=True)]
        for t in self.pumps:
            t.start()

    def _pump(self) -> None:
        for line in self.p.stdout:
            self.q.put(line.decode(errors="replace").rstrip("\n"))

    def _pump_err(self) -> None:
        self.err = self.p.stderr.read()

    def lines(self, n: int, timeout: float = 30) -> list[str]:
        got, deadline = [], time.monotonic() + timeout
        while len(got) < n:
            try:
                got.append(self.q.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"{self.args}: waited for {n} lines, got {got}; "
                                     f"exit {self.p.poll()}") from None
        return got

    def quiet(self) -> bool:
        return self.q.empty() and self.p.poll() is None

    def interrupt(self, timeout: float = 30) -> tuple[int, list[str], str]:
        """Ctrl-C; then its exit code, the lines not read yet and its stderr."""
        self.p.send_signal(signal.SIGINT)
        rc = self.p.wait(timeout=timeout)
        for t in self.pumps:   # both pipes read to their end
            t.join(timeout=10)
        rest = []
        while not self.q.empty():
            rest.append(self.q.get())
        return rc, rest, clean(self.err.decode(errors="replace"))

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(timeout=10)


def kill_all(procs: list[Proc]) -> None:
    for p in procs:
        try:
            p.kill()
        except Exception:   # noqa: BLE001 - the others are still stopped
            pass


def both(fn, *args_per_tool):
    """fn(tool, *its args) for each tool at once; (etcdctl's result, fastkvctl's)."""
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(fn, tool, *a) for tool, a in zip(TOOLS, args_per_tool)]
        return tuple(f.result() for f in futures)


def assert_same(want: list, got: list, what: str) -> None:
    for w, g in zip(want, got):
        assert g == w, f"{what}: differs at {w[0]!r}\n etcdctl:   {w!r}\n fastkvctl: {g!r}"
    assert len(got) == len(want)


# ---------------------------------------------------------------- check perf, in the background

PERF_ARGS = ["check", "perf", "--load", "s", "--auto-compact", "--auto-defrag"]


@pytest.fixture(scope="module")
def perf_runs():
    """`check perf --load s` with each tool on its own member, started with the module
    (60 s each, at once); test_check_perf collects them. Stopped at the module's end."""
    servers = _start(FastkvProcess, 2)
    procs = []
    try:
        for tool, srv in zip(TOOLS, servers):
            procs.append(subprocess.Popen(tool_command(tool) + ["--endpoints", f"127.0.0.1:{srv.client_port}"]
                                          + PERF_ARGS, env=tool_env(), cwd=REPO, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        yield procs, servers
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate(timeout=10)
        for s in servers:
            s.cleanup()


# ---------------------------------------------------------------- txn

TXN_STEPS = [
    (["put", "key1", "v1"], b""),
    (["txn"], b'mod("key1") > "0"\n\nput key1 "overwrote-key1"\n\nput key1 "created-key1"\n'
              b'put key2 "some extra key"\n\n'),
    (["txn", "-w", "json"], b'mod("key1") > "0"\n\nput key1 "overwrote-key1"\n\n'
                            b'put key1 "created-key1"\nput key2 "some extra key"\n\n'),
    (["txn", "-i"], b'value("key1") = "overwrote-key1"\n\nget key1\nget key --prefix\n'
                    b'del key2 --prev-kv\nput k3 v3 --prev-kv\n\n\n'),
    (["txn", "-w", "fields"], b'value("key1") = "nope"\n\n\nget key1\nput k3 v33 --prev-kv\n'
                              b'del k3 --prev-kv\ndel nosuch\n\n'),
    (["txn", "-w", "json"], b'value("key1") = "nope"\n\n\nget key1 --keys-only\nput k4 v4 --prev-kv\n'
                            b'get k --prefix --limit 1 --sort-by=VERSION --order=DESCEND\n\n'),
    (["txn", "-w", "protobuf"], b'value("key1") = "nope"\n\n\nget key1\n\n'),
    (["txn", "-w", "table"], b'value("key1") = "nope"\n\n\nget key1\n\n'),
    (["txn", "--hex"], b'\nput "\\xff\\x00" bin\nget "\\xff" --prefix\n\n\n'),
    (["txn"], b'value("key1") != "x"\nvalue("key1") < "z"\nc("key1") > "0"\nm("key1") < "1000"\n'
              b'version("key1") = "1"\ncreate("key1") > "1"\nval("key1") > "a"\n\n\n\n'),
    (["txn"], b'   value("key1")   =   `overwrote-key1`  \n  \n  get    key1 \t \n\n\n'),
    (["txn"], b"\nput 'abc' 'def'\nput \"a b\" \"c\\td\"\nget a --print-value-only\n\n\n"),
    (["txn"], b"\nput k5 v5\ndel k5\n\n\n"),                        # the server refuses
    # what stdin may get wrong
    (["txn"], b'value("key1") = "nope"\n\n\nget key1\n'),
    (["txn"], b""),
    (["txn"], b"foo\n\n\n"),
    (["txn"], b'value(key1) = "x"\n\n\n'),
    (["txn"], b'value("key1")="x"\n\n\n'),
    (["txn"], b'value("key1" ) = "x"\n\n\n'),
    (["txn"], b'value("k\\q") = "x"\n\n\n'),
    (["txn"], b'value ("key1") = "x"\n\n\n'),
    (["txn"], b'bogus("key1") = "1"\n\n\n'),
    (["txn"], b'ver("key1") = "x"\n\n\n'),
    (["txn"], b'c("key1") > "99999999999999999999"\n\n\n'),
    (["txn"], b'value("key1") == "x"\n\n\n'),                   # etcdctl panics (exit 2)
    (["txn"], b"\nput\n\n\n"),
    (["txn"], b"\nput a\n\n\n"),
    (["txn"], b"\nfoo a b\n\n\n"),
    (["txn"], b"\nget a --bogus\n\n\n"),
    (["txn"], b"\nget key1 -w json\n\n\n"),
    (["txn"], b"\nput --lease zz a b\n\n\n"),
    (["txn"], b"\ndel a --bogus\n\n\n"),
    (["txn"], b"\ndel a b c\n\n\n"),
    (["txn"], b"\nget a --prefix --from-key\n\n\n"),
    (["txn"], b"\nget a --order=foo\n\n\n"),
    (["txn"], b'\nput "a b" "c\\qd"\n\n\n'),
    (["txn"], b"\n\n\n"),
    (["txn", "extra"], b""),
]


def _pb_normalise(out: bytes) -> bytes:
    """-w protobuf: the TxnResponse with the member's IDs zeroed."""
    from fastkv.proto.etcdserverpb import rpc_pb2
    msg = rpc_pb2.TxnResponse.FromString(out)
    msg.header.cluster_id = 0
    msg.header.member_id = 0
    return msg.SerializeToString()


def _txn_transcript(tool: str, server, steps) -> list:
    rows = []
    for args, stdin in steps:
        rc, out, err = run(tool, server, args, stdin)
        if "protobuf" in args and rc == 0:
            out = _pb_normalise(out)
        rows.append((" ".join(args) + " < " + stdin.decode(errors="replace"), rc,
                     clean(out.decode("latin-1")), clean(err)))
    return rows


def test_txn_matches_etcdctl(two_fastkv):
    want, got = both(_txn_transcript, (two_fastkv[0], TXN_STEPS), (two_fastkv[1], TXN_STEPS))
    assert_same(want, got, "txn")
    # the steps do what they say (not just the same nothing)
    assert want[1][1:3] == (0, "SUCCESS\n\nOK\n")
    assert want[14][1:] == (3, "", "Error: EOF\n")
    assert want[24][1:] == (2, "", "panic: Unknown result op\n")
    assert "Usage:\n   get [options] <key> [range_end] [flags]" in want[28][3]


def test_txn_lease_compare(two_fastkv):
    """A deliberate difference: etcdctl 3.4 panics on every lease("key") compare; fastkvctl
    compares with the hex lease ID, as etcdctl 3.5 does."""
    srv = two_fastkv[1]
    out = ctl(srv, "lease", "grant", "600")
    lease = re.search(r"lease ([0-9a-f]+) granted", out).group(1)
    ctl(srv, "put", "lk", "v", "--lease", lease)
    script = f'lease("lk") = "{lease}"\n\nget lk --keys-only\n\n\n'.encode()
    assert run("fastkvctl", srv, ["txn"], script)[:2] == (0, b"SUCCESS\n\nlk\n\n")
    assert run("fastkvctl", srv, ["txn"], b'lease("lk") = "1"\n\n\n\n')[:2] == (0, b"FAILURE\n")
    rc, _, err = run("etcdctl", srv, ["txn"], script)
    assert rc == 2 and err.startswith("panic: bad value")


def test_txn_drives_etcd(etcd):
    steps = [TXN_STEPS[0], TXN_STEPS[1], TXN_STEPS[3], TXN_STEPS[5], TXN_STEPS[12], TXN_STEPS[28]]
    second = EtcdProcess().start()
    try:
        want, got = both(_txn_transcript, (etcd, steps), (second, steps))
    finally:
        second.cleanup()
    assert_same(want, got, "txn on etcd")


# ---------------------------------------------------------------- lock

def _prefix_keys(server, prefix: str) -> list[str]:
    return [k for k in ctl(server, "get", prefix, "--prefix", "--keys-only").split("\n") if k]


def _lock_transcript(tool: str, server) -> list:
    names = LeaseNames()
    rows, procs = [], []
    try:
        holder = Proc(tool, server, ["lock", "L"])
        procs.append(holder)
        rows.append(("holder", clean_names(names, "\n".join(holder.lines(2)))))
        second = Proc(tool, server, ["lock", "L", "-w", "fields"])
        procs.append(second)
        wait_until(lambda: len(_prefix_keys(server, "L/")) == 2, "the second waiter's key")
        third = Proc(tool, server, ["lock", "L"])
        procs.append(third)
        wait_until(lambda: len(_prefix_keys(server, "L/")) == 3, "the third waiter's key")
        time.sleep(1.0)
        rows.append(("waiters quiet", second.quiet(), third.quiet()))
        rc, rest, err = third.interrupt()          # a waiter gives up: its key goes
        rows.append(("third interrupted", rc, rest, err))
        wait_until(lambda: len(_prefix_keys(server, "L/")) == 2, "the third waiter's key gone")
        rc, rest, err = holder.interrupt()         # the holder unlocks: the second gets it
        rows.append(("holder interrupted", rc, clean_names(names, "\n".join(rest)), err))
        rows.append(("second", clean_names(names, "\n".join(second.lines(12)))))
        rc, rest, err = second.interrupt()
        rows.append(("second interrupted", rc, rest, err))
        rows.append(("keys left", _prefix_keys(server, "L/")))
        for args in (["lock", "L", "--", "sh", "-c", 'echo "$ETCD_LOCK_KEY $ETCD_LOCK_REV"'],
                     ["lock", "L", "--ttl", "5", "--", "sh", "-c", "echo in; exit 3"],
                     ["lock", "L", "no-such-program-here"],
                     ["lock"]):
            rc, out, err = run(tool, server, args)
            rows.append((" ".join(args), rc, names(out.decode()), clean(err)))
    finally:
        kill_all(procs)
    return rows


def test_lock_matches_etcdctl(two_fastkv):
    want, got = both(_lock_transcript, (two_fastkv[0],), (two_fastkv[1],))
    assert_same(want, got, "lock")
    assert want[0] == ("holder", "L/<lease0>\n")
    assert want[2] == ("third interrupted", 1, [], "Error: context canceled\n")
    assert want[6] == ("keys left", [])
    assert re.fullmatch(r"L/<lease2> \d+\n", want[7][2]) and want[7][1] == 0
    assert want[8][1:] == (1, "in\n", "Error: exit status 3\n")


# ---------------------------------------------------------------- elect

def _elect_transcript(tool: str, server) -> list:
    names = LeaseNames()
    rows, procs = [], []
    try:
        observer = Proc(tool, server, ["elect", "-l", "E"])
        procs.append(observer)
        first = Proc(tool, server, ["elect", "E", "p1"])
        procs.append(first)
        rows.append(("first", clean_names(names, "\n".join(first.lines(2)))))
        rows.append(("observer", clean_names(names, "\n".join(observer.lines(2)))))
        second = Proc(tool, server, ["elect", "E", "p2", "-w", "fields"])
        procs.append(second)
        wait_until(lambda: len(_prefix_keys(server, "E/")) == 2, "the second candidate's key")
        time.sleep(1.0)
        rows.append(("second quiet", second.quiet()))
        rc, rest, err = first.interrupt()          # the leader resigns
        rows.append(("first interrupted", rc, rest, err))
        rows.append(("second", clean_names(names, "\n".join(second.lines(12)))))
        rows.append(("observer", clean_names(names, "\n".join(observer.lines(2)))))
        for p in (second, observer):
            rc, rest, err = p.interrupt()
            rows.append((" ".join(p.args), rc, rest, err))
        rows.append(("keys left", _prefix_keys(server, "E/")))
        for args in (["elect"], ["elect", "E"], ["elect", "a", "b", "c"]):
            rc, out, err = run(tool, server, args)
            rows.append((" ".join(args), rc, out.decode(), clean(err)))
    finally:
        kill_all(procs)
    return rows


def test_elect_matches_etcdctl(two_fastkv):
    want, got = both(_elect_transcript, (two_fastkv[0],), (two_fastkv[1],))
    assert_same(want, got, "elect")
    assert want[0] == ("first", "E/<lease0>\np1")
    assert want[1] == ("observer", "E/<lease0>\np1")
    assert '"Value" : "p2"' in want[4][1] and want[5] == ("observer", "E/<lease1>\np2")


def test_lock_and_elect_queue_with_etcdctl_on_etcd(etcd):
    """fastkvctl drives etcd's v3lock/v3election, in one queue with etcdctl's clientv3 recipes."""
    procs = []
    try:
        holder = Proc("fastkvctl", etcd, ["lock", "L"])
        procs.append(holder)
        key = holder.lines(1)[0]
        assert re.fullmatch(r"L/[0-9a-f]+", key)
        waiter = Proc("etcdctl", etcd, ["lock", "L"])
        procs.append(waiter)
        wait_until(lambda: len(_prefix_keys(etcd, "L/")) == 2, "etcdctl's waiter key")
        time.sleep(1.0)
        assert waiter.quiet()
        assert holder.interrupt()[0] == 0
        assert waiter.lines(1)[0] not in ("", key)
        assert waiter.interrupt()[0] == 0

        leader = Proc("etcdctl", etcd, ["elect", "E", "p1"])
        procs.append(leader)
        assert leader.lines(2)[1] == "p1"
        candidate = Proc("fastkvctl", etcd, ["elect", "E", "p2"])
        observer = Proc("fastkvctl", etcd, ["elect", "-l", "E"])
        procs += [candidate, observer]
        assert observer.lines(2)[1] == "p1"
        wait_until(lambda: len(_prefix_keys(etcd, "E/")) == 2, "fastkvctl's candidate key")
        assert candidate.quiet()
        assert leader.interrupt()[0] == 0
        new_key, value = candidate.lines(2)
        assert value == "p2" and new_key.startswith("E/")
        assert observer.lines(2) == [new_key, "p2"]
        for p in (candidate, observer):
            assert p.interrupt()[0] == 0
        assert _prefix_keys(etcd, "E/") == [] and _prefix_keys(etcd, "L/") == []
    finally:
        kill_all(procs)


# ---------------------------------------------------------------- make-mirror

def _dest_content(server) -> str:
    return ctl(server, "get", "", "--from-key")


def _dest_keys(server) -> set[str]:
    return set(ctl(server, "get", "", "--from-key", "--keys-only").split("\n")) - {""}


def _mirror_transcript(tool: str, src, dst) -> list:
    rows, procs = [], []
    started = time.monotonic()
    try:
        for k, v in (("mm/a", "1"), ("mm/b", "2"), ("other", "o")):
            ctl(src, "put", k, v)
        main = Proc(tool, src, ["make-mirror", "--prefix", "mm/", "--dest-prefix", "copy/", dst.url])
        procs.append(main)
        wait_until(lambda: _dest_content(dst) == "copy/a\n1\ncopy/b\n2\n", "the keys copied")
        ctl(src, "put", "mm/c", "3")
        ctl(src, "del", "mm/a")
        rc, _, err = run("etcdctl", src, ["txn"], b"\nput mm/x 1\nput mm/y 2\ndel mm/b\n\n\n")
        assert rc == 0, err
        want = "copy/c\n3\ncopy/x\n1\ncopy/y\n2\n"
        wait_until(lambda: _dest_content(dst) == want, "the changes mirrored")
        # the other prefix options, mirrored to the same destination (other keys)
        for opts, expect in ((["--no-dest-prefix"], {"c", "x", "y"}), ([], {"mm/c", "mm/x", "mm/y"})):
            p = Proc(tool, src, ["make-mirror", "--prefix", "mm/", *opts, dst.url])
            procs.append(p)
            wait_until(lambda: expect <= _dest_keys(dst), f"make-mirror {opts}")
            rows.append((f"make-mirror {opts} interrupted", p.interrupt()))
        rows.append(("destination", _dest_content(dst)))
        # the count of keys mirrored, every 30 s: 2 copied + 1 put + 1 delete + 3 in the txn
        count = main.lines(1, timeout=max(5.0, 40 - (time.monotonic() - started)))
        rows.append(("count", count))
        rows.append(("interrupted", main.interrupt()))
        for args in (["make-mirror"], ["make-mirror", "a", "b"],
                     ["make-mirror", "--dest-prefix", "x", "--no-dest-prefix", dst.url]):
            rc, out, err = run(tool, src, args)
            rows.append((" ".join(args[:3]), rc, out.decode(), clean(err)))
    finally:
        kill_all(procs)
    return rows


@pytest.mark.long   # waits for the count printed every 30 s: ci/chaos --short
def test_make_mirror_matches_etcdctl():
    servers = _start(FastkvProcess, 4)
    try:
        want, got = both(_mirror_transcript, (servers[0], servers[1]), (servers[2], servers[3]))
    finally:
        for s in servers:
            s.cleanup()
    assert_same(want, got, "make-mirror")
    assert ("count", ["7"]) in want
    assert ("destination", "c\n3\ncopy/c\n3\ncopy/x\n1\ncopy/y\n2\nmm/c\n3\nmm/x\n1\nmm/y\n2\nx\n1\ny\n2\n") in want


# ---------------------------------------------------------------- check datascale

def _strip_progress(out: str) -> tuple[str, str]:
    """(the progress bar's last state, the other lines)"""
    lines = out.split("\n")
    bar = [ln for ln in lines if "\r" in ln]
    rest = [ln for ln in lines if "\r" not in ln]
    return (bar[-1].split("\r")[-1] if bar else ""), "\n".join(rest)


def test_check_datascale_matches_etcdctl(two_fastkv):
    rows = []
    for tool in TOOLS:
        rc, out, err = run(tool, two_fastkv[0], ["check", "datascale", "--auto-compact"], timeout=120)
        final, text = _strip_progress(out.decode())
        text = re.sub(r"used : [\d.]+ MB", "used : N MB", text)
        text = re.sub(r"revision \d+", "revision N", text)
        rows.append((rc, re.sub(r"\d+s$", "Ns", final), text, clean(err)))
        rows.append(run(tool, two_fastkv[0], ["check", "datascale", "--load", "huge"]))
        rows.append(run(tool, two_fastkv[0], ["check", "perf", "--load", "x"]))
    assert rows[3:] == rows[:3]
    assert rows[0][:3] == (0, " 10000 / 10000  100.00% Ns",
                           "Start data scale check for work load [10000 key-value pairs, 1024 bytes "
                           "per key-value, 50 concurrent clients].\nCompacting with revision N\n"
                           "Compacted with revision N\nPASS: Approximate system memory used : N MB.\n")
    assert rows[1] == (4, b"", "Error: unknown load option huge\n")


# ---------------------------------------------------------------- -w fields, table, protobuf

FORMAT_STEPS = [
    ["put", "k1", "v1"], ["put", "k2", "v2", "-w", "fields"], ["put", "k2", "v3", "--prev-kv", "-w", "fields"],
    ["put", "k3", "v3", "-w", "table"], ["put", "k4", "v4", "-w", "protobuf"],
    ["get", "k1", "-w", "fields"], ["get", "k", "--prefix", "--limit", "1", "-w", "fields"],
    ["get", "nosuch", "-w", "fields"], ["get", "k1", "-w", "table"], ["get", "k1", "-w", "protobuf"],
    ["get", "k", "--prefix", "-w", "fields", "--hex"],
    ["del", "k3", "--prev-kv", "-w", "fields"], ["del", "nosuch", "-w", "fields"], ["del", "k4", "-w", "table"],
    ["del", "k4", "-w", "protobuf"],
    ["lease", "grant", "100", "-w", "fields"], ["lease", "grant", "100", "-w", "table"],
    ["lease", "grant", "100", "-w", "protobuf"], ["lease", "list", "-w", "fields"],
    ["lease", "list", "-w", "table"], ["lease", "list", "-w", "protobuf"],
    ["user", "add", "u1:p", "-w", "fields"], ["user", "add", "u2:p", "-w", "table"],
    ["user", "add", "u3:p", "-w", "protobuf"], ["user", "list", "-w", "fields"], ["user", "list", "-w", "protobuf"],
    ["role", "add", "r1", "-w", "fields"], ["role", "list", "-w", "fields"],
    ["role", "grant-permission", "r1", "read", "a", "-w", "fields"],
    ["role", "grant-permission", "r1", "readwrite", "b", "--prefix", "-w", "protobuf"],
    ["role", "get", "r1", "-w", "fields"], ["role", "get", "r1", "-w", "protobuf"],
    ["user", "grant-role", "u1", "r1", "-w", "fields"], ["user", "get", "u1", "-w", "fields"],
    ["user", "get", "u1", "-w", "protobuf"], ["user", "revoke-role", "u1", "r1", "-w", "protobuf"],
    ["role", "revoke-permission", "r1", "a", "-w", "fields"], ["role", "delete", "r1", "-w", "fields"],
    ["user", "delete", "u1", "-w", "fields"], ["alarm", "list", "-w", "table"], ["version", "-w", "fields"],
]


def _pb_header_zeroed(out: bytes) -> bytes:
    """A protobuf answer with its header's cluster and member IDs zeroed: the header is the
    first field (tag 0x0a), or the whole message (the lease answers print only a header)."""
    from fastkv.proto.etcdserverpb import rpc_pb2
    if out[:1] == b"\x08":
        h = rpc_pb2.ResponseHeader.FromString(out)
        h.cluster_id = h.member_id = 0
        return h.SerializeToString()
    if out[:1] != b"\x0a":
        return out
    n, shift, i = 0, 0, 1
    while True:
        n |= (out[i] & 0x7F) << shift
        shift += 7
        i += 1
        if out[i - 1] < 0x80:
            break
    h = rpc_pb2.ResponseHeader.FromString(out[i:i + n])
    h.cluster_id = h.member_id = 0
    body = h.SerializeToString()
    return b"\x0a" + bytes([len(body)]) + body + out[i + n:]


def _format_transcript(tool: str, server) -> list:
    rows = []
    for args in FORMAT_STEPS:
        rc, out, err = run(tool, server, args)
        if "protobuf" in args and rc == 0:
            out = _pb_header_zeroed(out)
        text = re.sub(r'^"ID" : \d+$', '"ID" : <lease>', clean(out.decode("latin-1")), flags=re.M)
        rows.append((" ".join(args), rc, text, clean(err)))
    return rows


def test_output_formats_match_etcdctl(two_fastkv):
    want, got = both(_format_transcript, (two_fastkv[0],), (two_fastkv[1],))
    assert_same(want, got, "output formats")
    assert want[5][1:3] == (0, '"ClusterID" : ID\n"MemberID" : ID\n"Revision" : 6\n"RaftTerm" : 2\n'
                               '"Key" : "k1"\n"CreateRevision" : 2\n"ModRevision" : 2\n"Version" : 1\n'
                               '"Value" : "v1"\n"Lease" : 0\n"More" : false\n"Count" : 1\n')
    assert want[8][1:] == (4, "", "Error: table not supported as output format\n")
    # watch -w fields: both tools watching one member see the same events
    srv = two_fastkv[0]
    watchers = [Proc(tool, srv, ["watch", "w", "--prefix", "--prev-kv", "-w", "fields"]) for tool in TOOLS]
    try:
        wait_until(lambda: all(w.p.poll() is None for w in watchers), "the watchers")
        time.sleep(1.5)   # both watches created
        ctl(srv, "put", "w1", "a")
        ctl(srv, "put", "w1", "b")
        ctl(srv, "del", "w1")
        seen = [w.lines(4 + 7 + 4 + 7 + 6 + 4 + 7 + 6) for w in watchers]
        assert seen[1] == seen[0]
        assert seen[0][4:6] == ['"Type" : PUT', '"Key" : "w1"']
    finally:
        kill_all(watchers)


# ---------------------------------------------------------------- --help, help, completion

# help lines that differ on purpose: 3.5 flags fastkvctl has (get --count-only, watch
# --progress-notify, make-mirror --max-txn-ops), what it has not (completion for fish and
# powershell)
HELP_DIFFERENCES = re.compile(r"--count-only|--progress-notify|--max-txn-ops|"
                              r"^\t(completion )?(fish|powershell)\t")


def _command_paths() -> list[str]:
    from fastkv.cli.main import ROOT
    return [""] + [c.path() for c in ROOT.walk()]


def _help_pair(args: list[str]) -> tuple:
    """Both tools' help for args; where a line was left out (HELP_DIFFERENCES), the
    columns may be aligned differently, so runs of tabs count as one there."""
    out, dropped = [], False
    for tool in TOOLS:
        rc, o, e = run(tool, None, args)
        lines = o.decode().split("\n")
        kept = [ln for ln in lines if not HELP_DIFFERENCES.search(ln)]
        dropped = dropped or len(kept) != len(lines)
        out.append([" ".join(args), rc, "\n".join(kept), e])
    if dropped:
        for row in out:
            row[2] = re.sub("\t+", "\t", row[2])
    return tuple(tuple(row) for row in out)


def test_help_matches_etcdctl():
    paths = _command_paths()
    assert {"txn", "lock", "elect", "make-mirror", "check perf", "check datascale", "completion bash",
            "help", "migrate"} <= set(paths)
    steps = [p.split() + ["--help"] for p in paths] + [
        ["help"], ["help", "lease", "grant"], ["help", "check"], ["help", "nosuch"], ["lease", "foo"],
        ["check"], ["completion"], ["txn", "-h"]]
    with ThreadPoolExecutor(4) as pool:
        pairs = list(pool.map(_help_pair, steps))
    for want, got in pairs:
        assert got == want, f"`{want[0]}` differs:\n--- etcdctl\n{want[2]}{want[3]}\n--- fastkvctl\n{got[2]}{got[3]}"
    assert pairs[-1][0][2].startswith("NAME:\n\ttxn - Txn processes all the requests in one transaction\n")


def _bash_complete(script: str, *words: str) -> list[str]:
    line = " ".join(f"'{w}'" for w in words)
    probe = (f"{script}\nCOMP_WORDS=({line}); COMP_CWORD=$((${{#COMP_WORDS[@]}}-1)); COMPREPLY=()\n"
             "_fastkvctl_complete; printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    p = subprocess.run(["bash", "--norc", "--noprofile", "-c", probe], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, p.stderr
    return [w for w in p.stdout.split("\n") if w]


def test_completion_scripts():
    rc, out, err = run("fastkvctl", None, ["completion", "bash"])
    assert rc == 0 and err == ""
    script = out.decode()
    p = subprocess.run(["bash", "--norc", "--noprofile", "-c", f"{script}\ncomplete -p fastkvctl"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert p.stdout == "complete -o default -F _fastkvctl_complete fastkvctl\n"
    top = _bash_complete(script, "fastkvctl", "")
    assert {"txn", "lock", "elect", "make-mirror", "check", "completion", "get", "member"} <= set(top)
    assert _bash_complete(script, "fastkvctl", "ch") == ["check"]
    assert _bash_complete(script, "fastkvctl", "--endpoints", "x:1", "check", "") == ["datascale", "perf"]
    assert _bash_complete(script, "fastkvctl", "check", "perf", "--load", "") == ["s", "m", "l", "xl"]
    assert _bash_complete(script, "fastkvctl", "-w", "") == ["fields", "json", "protobuf", "simple", "table"]
    assert _bash_complete(script, "fastkvctl", "lock", "--t") == ["--ttl"]
    assert _bash_complete(script, "fastkvctl", "elect", "-") [:3] == ["--cacert", "--cert", "--command-timeout"]
    assert _bash_complete(script, "fastkvctl", "help", "lease", "k") == ["keep-alive"]
    assert "--prefix" in _bash_complete(script, "fastkvctl", "make-mirror", "--")

    rc, out, err = run("fastkvctl", None, ["completion", "zsh"])
    zsh = out.decode()
    assert rc == 0 and zsh.startswith("#compdef fastkvctl\n") and "compdef _fastkvctl fastkvctl" in zsh
    assert "txn:Txn processes all the requests in one transaction" in zsh
    rc, out, _ = run("fastkvctl", None, ["completion", "zsh", "--no-descriptions"])
    assert rc == 0 and "txn:Txn" not in out.decode() and "\ntxn\n" in out.decode()
    assert shutil.which("zsh"), "zsh is not installed: ci/test installs it"
    p = subprocess.run(["zsh", "-n"], input=zsh, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    # the zsh function offers what the bash one does
    for words in [("fastkvctl", ""), ("fastkvctl", "ch"), ("fastkvctl", "--endpoints", "x:1", "check", ""),
                  ("fastkvctl", "check", "perf", "--load", ""), ("fastkvctl", "-w", ""),
                  ("fastkvctl", "lock", "--t"), ("fastkvctl", "help", "lease", "k"),
                  ("fastkvctl", "member", "")]:
        got = _zsh_complete(zsh, *words)
        assert sorted(got) == sorted(_bash_complete(script, *words)), (words, got)
    assert _zsh_complete(zsh, "fastkvctl", "elect", "-")[:3] == ["--cacert", "--cert", "--command-timeout"]
    assert _zsh_complete(zsh, "fastkvctl", "get", "") == ["<files>"]   # a key: no subcommand left


def _zsh_complete(script: str, *words: str) -> list[str]:
    """Run the zsh completion function with zsh's completion builtins replaced by
    functions that print the candidates they were given which match the current word
    (as zsh's prefix matching would)."""
    line = " ".join(f"'{w}'" for w in words)
    probe = ("compdef() { : }\n"
             "_offer() { local c n=1; for c; do [[ $c == ${words[CURRENT]}* ]] && print -- $c && n=0; done;"
             " return n }\n"   # as zsh's: status 0 when something matched
             "compadd() { [[ $1 == -a ]] && _offer \"${(@P)2}\" }\n"
             "_describe() { _offer \"${(@)${(@P)4}%%:*}\" }\n"
             "_files() { print -- '<files>' }\n"
             f"{script}\nwords=({line}); CURRENT=${{#words}}\n_fastkvctl\n")
    p = subprocess.run(["zsh", "-f", "-c", probe], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    return [w for w in p.stdout.split("\n") if w]


# ---------------------------------------------------------------- ETCDCTL_* variables

def test_env_vars_match_etcdctl(two_fastkv):
    srv = two_fastkv[0]
    ctl(srv, "put", "k", "v")
    url = srv.url
    steps = [
        (["get", "k"], {"ETCDCTL_ENDPOINTS": url}),
        (["get", "k"], {"ETCDCTL_ENDPOINTS": f"127.0.0.1:1,{url}"}),
        (["get", "k"], {"ETCDCTL_ENDPOINTS": url, "ETCDCTL_WRITE_OUT": "json"}),
        (["get", "k"], {"ETCDCTL_ENDPOINTS": url, "ETCDCTL_WRITE_OUT": "fields"}),
        (["get", "k", "-w", "simple"], {"ETCDCTL_ENDPOINTS": url, "ETCDCTL_HEX": "true"}),
        (["get", "k"], {"ETCDCTL_ENDPOINTS": url, "ETCDCTL_DIAL_TIMEOUT": "bad", "ETCDCTL_HEX": "maybe"}),
        (["put", "k", "v2"], {"ETCDCTL_ENDPOINTS": url, "ETCDCTL_COMMAND_TIMEOUT": "10s",
                              "ETCDCTL_DIAL_TIMEOUT": "3s", "ETCDCTL_KEEPALIVE_TIME": "1s",
                              "ETCDCTL_KEEPALIVE_TIMEOUT": "3s", "ETCDCTL_INSECURE_DISCOVERY": "false"}),
        (["get", "k"], {"ETCDCTL_ENDPOINTS": url, "ETCDCTL_USER": "root:pw"}),
        (["get", "k"], {"ETCDCTL_ENDPOINTS": url, "ETCDCTL_USER": "root", "ETCDCTL_PASSWORD": "pw"}),
        (["get", "k"], {"ETCDCTL_ENDPOINTS": url, "ETCDCTL_CACERT": "/nonexistent/ca.pem"}),
        (["get", "k"], {"ETCDCTL_ENDPOINTS": url, "ETCDCTL_CERT": "/nonexistent/c.pem",
                        "ETCDCTL_KEY": "/nonexistent/k.pem"}),
        (["get", "k"], {"ETCDCTL_ENDPOINTS": url, "ETCDCTL_LOCK_TTL": "5"}),        # not a global flag
        (["--endpoints", url, "get", "k"], {"ETCDCTL_ENDPOINTS": url}),         # flag and variable
        (["--endpoints", url, "get", "k"], {"ETCDCTL_ENDPOINTS": ""}),
        (["-w", "json", "get", "k"], {"ETCDCTL_ENDPOINTS": url, "ETCDCTL_WRITE_OUT": "fields"}),
        (["--endpoints", url, "version"], {"ETCDCTL_ENDPOINTS": url, "ETCDCTL_FOO": "1"}),  # no client
        (["--endpoints", url, "txn"], {"ETCDCTL_WRITE_OUT": "json"}),
        (["get", "k"], {"ETCDCTL_ENDPOINTS": url, "ETCDCTL_DEBUG": "true"}),
        # the variables are read when a client is configured, after the arguments are checked:
        # an argument error comes alone (no warning, no conflict)
        (["put"], {"ETCDCTL_ENDPOINTS": url, "ETCDCTL_FOO": "1"}),
        (["watch"], {"ETCDCTL_ENDPOINTS": url, "ETCDCTL_FOO": "1"}),
        (["--endpoints", url, "put"], {"ETCDCTL_ENDPOINTS": url}),
        (["--endpoints", url, "lease", "revoke", "zz"], {"ETCDCTL_FOO": "1"}),
        (["--endpoints", url, "get", "k"], {"ETCDCTL_FOO": "1"}),
    ]
    rows = []
    for args, env in steps:
        pair = []
        for tool in TOOLS:
            rc, out, err = run(tool, None, args, stdin=b"\n\n\n", env=env)
            if env.get("ETCDCTL_DEBUG"):   # etcdctl's gRPC logging has no counterpart
                err = "".join(ln + "\n" for ln in err.split("\n") if ln.startswith("ETCDCTL_"))
            pair.append((" ".join(args), env, rc, clean(out.decode()), clean(err)))
        rows.append(tuple(pair))
    for want, got in rows:
        assert got == want, f"differs:\n etcdctl:   {want!r}\n fastkvctl: {got!r}"
    assert rows[2][0][3].startswith('{"header":') and rows[4][0][3] == "\\x6b\n\\x76\n"
    assert rows[12][0][2:] == (1, "", '<time> C | pkg/flags: conflicting environment variable "ETCDCTL_ENDPOINTS" '
                                      "is shadowed by corresponding command-line flag (either unset environment "
                                      "variable or disable flag)\n")
    assert rows[11][0][4] == "<time> W | pkg/flags: unrecognized environment variable ETCDCTL_LOCK_TTL=5\n"
    assert f"ETCDCTL_ENDPOINTS=[{url}]\n" in rows[17][0][4]
    assert [r[0][2] for r in rows[18:]] == [128, 128, 128, 128, 0]
    assert "unrecognized environment variable ETCDCTL_FOO=1" in rows[-1][0][4]


# ---------------------------------------------------------------- check perf (collected last)

PERF_LINES = [
    (r"PASS: Throughput is \d+ writes/s|FAIL: Throughput too low: \d+ writes/s", "throughput"),
    (r"PASS: Slowest request took \d+\.\d{6}s|Slowest request took too long: \d+\.\d{6}s", "slowest"),
    (r"PASS: Stddev is \d+\.\d{6}s|Stddev too high: \d+\.\d{6}s", "stddev"),
    (r"FAIL: too many errors|FAIL: ERROR\(.*\) -> \d+", "errors"),
    (r"Compacting with revision \d+|Compacted with revision \d+", "compact"),
    (r'Defragmenting "127\.0\.0\.1:\d+"|Defragmented "127\.0\.0\.1:\d+"', "defrag"),
    (r"PASS|FAIL", "verdict"),
]


def _perf_shape(rc: int, out: str) -> tuple:
    """The kinds of lines check perf printed, and the final progress bar (numbers are the
    run's: throughput and latencies are measured, not compared)."""
    final, text = _strip_progress(out)
    kinds = []
    for line in text.split("\n")[:-1]:
        kind = next((k for pattern, k in PERF_LINES if re.fullmatch(pattern, line)), None)
        assert kind, f"unexpected check perf line {line!r}"
        if kind != "errors":
            kinds.append(kind)
    verdict = text.split("\n")[-2]
    assert (rc == 0) == (verdict == "PASS"), (rc, text)
    return final, kinds


@pytest.mark.long   # 60 s of load per tool: ci/chaos --short
def test_check_perf(perf_runs):
    procs, servers = perf_runs
    results = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        results.append((p.returncode, out.decode(), clean(err.decode())))
    for tool, (rc, out, _) in zip(TOOLS, results):   # shown with -rP: the measured run
        print(tool, rc, _strip_progress(out)[1])
    shapes = [_perf_shape(rc, out) for rc, out, _ in results]
    assert shapes[1] == shapes[0], results
    assert shapes[0] == (" 60 / 60  100.00% 1m0s", ["compact", "compact", "defrag", "defrag", "throughput",
                                                     "slowest", "stddev", "verdict"]), results
    assert [r[2] for r in results] == ["", ""]
    for srv in servers:   # the keys are gone
        assert ctl(srv, "get", "/etcdctl-check-perf/", "--prefix", "--keys-only") == ""
