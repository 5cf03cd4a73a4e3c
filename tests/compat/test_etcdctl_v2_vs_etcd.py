"""Debian's `ETCDCTL_API=2 etcdctl` against fastkv and against etcd 3.4 (--enable-v2=true).

Every v2 command etcdctl has for keys and clusters runs against both servers, in the
same order, and must print the same stdout and stderr and exit with the same code,
once the store indexes are shifted (etcd's v2 store also holds its own membership, so
its first key gets a later index than fastkv's), TTL countdowns and expiration times
are masked, and member IDs and ports are named by position.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
import time

import pytest

from servers import Cluster, EtcdProcess, FastkvProcess
from v2index import IndexShift

pytestmark = pytest.mark.etcd

ETCDCTL = shutil.which("etcdctl") or "etcdctl"


def etcdctl(endpoints: str, *args: str, timeout: float = 20, env=None) -> tuple[int, str, str]:
    e = dict(os.environ, ETCDCTL_API="2")
    e.update(env or {})
    p = subprocess.run([ETCDCTL, "--endpoints", endpoints, *args], capture_output=True,
                       text=True, timeout=timeout, env=e, stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout, p.stderr


class Side(IndexShift):
    """One server as etcdctl sees it."""

    def __init__(self, url: str):
        super().__init__()
        self.url = url

    def expand_args(self, args) -> list[str]:
        return [self.expand(a) for a in args]

    def run(self, *args: str, **kw) -> tuple[int, str, str]:
        code, out, err = etcdctl(self.url, *self.expand_args(args), **kw)
        return code, self.norm(out), self.norm(err)

    def norm(self, text: str) -> str:
        """The JSON forms (-o json) as IndexShift does; etcdctl's own lines too."""
        sh = self.shift
        text = re.sub(r"(Created-Index|Modified-Index|Index|ETCD_WATCH_MODIFIED_INDEX)(: |=)(\d+)",
                      lambda m: f"{m.group(1)}{m.group(2)}{sh(int(m.group(3)))}", text)
        text = re.sub(r"\[(\d+)\]$", lambda m: f"[{sh(int(m.group(1)))}]", text, flags=re.M)
        text = re.sub(r"TTL: [1-9]\d*", "TTL: T", text)
        return super().norm(text)


# Each step is etcdctl's arguments; "{i:K}" is the raw index of the K-th change on that side.
KEY_STEPS = [
    ["-o", "json", "set", "/base", "b"],                    # change 1: sets Side.base
    ["set", "/a", "a1"],                                      # 2
    ["get", "/a"],
    ["-o", "extended", "get", "/a"],
    ["-o", "json", "get", "/a"],
    ["get", "--quorum", "/a"],
    ["get", "/nope"],
    ["-o", "json", "get", "/nope"],
    ["mk", "/a", "a2"],
    ["mk", "/new", "n"],                                      # 3
    ["-o", "extended", "mk", "--ttl", "100", "/newt", "x"],   # 4
    ["-o", "json", "get", "/newt"],
    ["mk", "--in-order", "/q", "j1"],                         # 5
    ["-o", "extended", "mk", "--in-order", "/q", "j2"],       # 6
    ["ls", "--sort", "/q"],
    ["update", "/nope", "a3"],
    ["update", "/a", "a3"],                                   # 7
    ["-o", "extended", "update", "--ttl", "100", "/a", "a4"],  # 8
    ["set", "--swap-with-value", "x", "/a", "a5"],
    ["set", "--swap-with-value", "a4", "/a", "a5"],           # 9
    ["set", "--swap-with-index", "{i:99999}", "/a", "a6"],
    ["-o", "json", "set", "--swap-with-index", "{i:9}", "/a", "a6"],  # 10
    ["set", "--swap-with-value", "a6", "--swap-with-index", "{i:9}", "/a", "a7"],
    ["set", "--ttl", "100", "/t", "v"],                       # 11
    ["-o", "extended", "get", "/t"],
    ["set", "--ttl", "abc", "/t", "v"],
    ["mkdir", "/d"],                                          # 12
    ["mkdir", "/d"],
    ["-o", "json", "mkdir", "--ttl", "100", "/dt"],           # 13
    ["set", "/d/x", "1"],                                     # 14
    ["set", "/d/y/z", "2"],                                   # 15
    ["set", "/d", "x"],
    ["set", "/d/x/deeper", "x"],
    ["get", "/d"],
    ["ls", "/d"],
    ["ls", "--sort", "--recursive", "/d"],
    ["ls", "--sort", "--recursive", "-p", "/"],
    ["-o", "extended", "ls", "--sort", "-p", "/d"],
    ["-o", "json", "ls", "--sort", "--recursive", "/d"],
    ["ls", "--quorum", "/d"],
    ["ls", "/nope"],
    ["ls", "/a"],
    ["rmdir", "/d"],
    ["rm", "/d"],
    ["rm", "--dir", "/d"],
    ["rm", "--recursive", "/d"],                              # 16
    ["rm", "/d"],
    ["rm", "--with-value", "bad", "/new"],
    ["-o", "extended", "rm", "--with-value", "n", "/new"],    # 17
    ["rm", "--with-index", "1", "/t"],
    ["rm", "--with-index", "{i:11}", "/t"],                   # 18
    ["setdir", "/sd"],                                        # 19
    ["setdir", "/sd"],
    ["setdir", "/a"],                                         # 20: a key becomes a dir
    ["updatedir", "--ttl", "100", "/sd"],                     # 21
    ["-o", "json", "get", "/sd"],
    ["get", "/sd"],
    ["updatedir", "/nodir"],
    ["updatedir", "/a"],                                       # 22
    ["rmdir", "/sd"],                                         # 23
    ["rmdir", "/a"],                                          # 24
    ["rm", "/"],
    ["mkdir", "/_hidden"],                                    # 25
    ["ls", "/"],
    ["-o", "extended", "get", "/a"],
    # watches that answer from the event history at once
    ["watch", "--after-index", "{i:1}", "/a"],
    ["-o", "extended", "watch", "--after-index", "{i:2}", "/a"],
    ["watch", "--recursive", "--after-index", "{i:13}", "/d"],
    ["-o", "json", "watch", "--recursive", "--after-index", "{i:14}", "/d"],
    ["watch", "--after-index", "1", "/a"],
    ["watch"],
    ["exec-watch", "/a"],
]


def start_pair():
    fk = FastkvProcess(extra_args=["--enable-v2"]).start()
    try:
        et = EtcdProcess(extra_args=["--enable-v2=true"]).start()
    except BaseException:
        fk.cleanup()
        raise
    return fk, et


@pytest.fixture
def sides():
    fk, et = start_pair()
    try:
        yield Side(fk.url), Side(et.url)
    finally:
        et.cleanup()
        fk.cleanup()


def first_index(out: str) -> int:
    return int(re.search(r'"modifiedIndex":(\d+)', out).group(1))


def test_key_commands_print_as_against_etcd(sides):
    fk, et = sides
    diffs = []
    for step in KEY_STEPS:
        a, b = fk.run(*step), et.run(*step)
        if step[0] == "ls" and "--sort" not in step:   # etcd lists a directory in map order
            a, b = [(c, sorted(o.splitlines()), e) for c, o, e in (a, b)]
        if fk.base is None:
            fk.base, et.base = first_index(a[1]), first_index(b[1])
            a, b = (a[0], fk.norm(a[1]), a[2]), (b[0], et.norm(b[1]), b[2])
        if a != b:
            diffs.append(f"etcdctl {' '.join(step)}\n  fastkv {a!r}\n  etcd   {b!r}")
    assert not diffs, "\n".join(diffs)
    # the change counts in the comments above are the servers': 25 changes
    assert fk.run("-o", "extended", "get", "/base")[1].endswith("Index: 25\n\nb\n")


def run_while(side: Side, args: list[str], then, timeout: float = 20) -> tuple[int, str, str]:
    """Run a blocking etcdctl command (a watch) while ``then()`` makes the change it waits for."""
    e = dict(os.environ, ETCDCTL_API="2")
    p = subprocess.Popen([ETCDCTL, "--endpoints", side.url, *side.expand_args(args)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e,
                         stdin=subprocess.DEVNULL)
    try:
        then()
        out, err = p.communicate(timeout=timeout)
        # "Index:" of an extended answer is the store index when the watch reached the
        # server: before or after then()'s change, a race on both servers
        out = re.sub(r"^Index: \d+$", "Index: W", side.norm(out), flags=re.M)
        return p.returncode, out, side.norm(err)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()


def run_for(side: Side, args: list[str], changes, settle: float = 1.0) -> tuple[int, str, str]:
    """Run a command that never ends by itself (watch --forever, exec-watch): make the
    changes, give it time to print them, then interrupt it as a user would (Ctrl-C)."""
    e = dict(os.environ, ETCDCTL_API="2")
    p = subprocess.Popen([ETCDCTL, "--endpoints", side.url, *side.expand_args(args)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e,
                         stdin=subprocess.DEVNULL)
    try:
        for step in changes:
            code, _, err = side.run(*step)
            assert code == 0, err
        deadline = time.monotonic() + 10
        time.sleep(settle)
        while time.monotonic() < deadline and p.poll() is None:
            p.send_signal(2)
            try:
                p.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        out, err = p.communicate(timeout=10)
        return p.returncode, side.norm(out), side.norm(err)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()


def test_watch_and_exec_watch_print_as_against_etcd(sides):
    tmp = tempfile.mkdtemp(prefix="execwatch-")
    try:
        results = []
        for n, side in enumerate(sides):
            code, out, _ = side.run("-o", "json", "set", "/w/a", "0")
            side.base = first_index(out)
            got = [
                # a watch from now on returns the next change (waits on index base+1)
                run_while(side, ["watch", "--after-index", "{i:1}", "/w/a"],
                          lambda: side.run("set", "/w/a", "1")),
                run_while(side, ["-o", "extended", "watch", "--recursive", "--after-index", "{i:2}",
                                 "/w"], lambda: side.run("set", "/w/b/c", "2")),
                run_for(side, ["watch", "--forever", "--recursive", "--after-index", "{i:3}", "/w"],
                        [["set", "/w/a", "3"], ["rm", "/w/a"], ["mkdir", "/w/dir"],
                         ["set", "--ttl", "100", "/w/t", "t"]]),
            ]
            out_file = os.path.join(tmp, f"env-{n}")
            script = (f'echo "$ETCD_WATCH_ACTION $ETCD_WATCH_KEY $ETCD_WATCH_VALUE '
                      f'ETCD_WATCH_MODIFIED_INDEX=$ETCD_WATCH_MODIFIED_INDEX" >> {out_file}')
            # (etcdctl's flag parsing loses --after-index when it follows --recursive here)
            got.append(run_for(side, ["exec-watch", "--after-index", "{i:7}", "--recursive", "/w",
                                      "--", "sh", "-c", script],
                               [["set", "/w/e", "v1"], ["update", "/w/e", "v2"], ["rm", "/w/e"]]))
            with open(out_file) as f:
                got.append(sorted(side.norm(f.read()).splitlines()))   # commands run concurrently
            results.append(got)
        assert results[0] == results[1]
        assert results[0][0] == (0, "1\n", "")
        assert results[0][4] == ["delete /w/e  ETCD_WATCH_MODIFIED_INDEX=10",
                                 "set /w/e v1 ETCD_WATCH_MODIFIED_INDEX=8",
                                 "update /w/e v2 ETCD_WATCH_MODIFIED_INDEX=9"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- cluster-health and member against 3-member clusters --------------------------------------

def members(url: str) -> list[tuple[str, str]]:
    """(ID, name) in the order `member list` prints them ("" for an unstarted member)."""
    code, out, err = etcdctl(url, "member", "list")
    assert code == 0, err
    return re.findall(r"^([0-9a-f]+)(?:\[unstarted\])?: (?:name=(\S*))?", out, re.M)


def cluster_norm(text: str, cluster: Cluster, names: dict[str, str]) -> str:
    """Ports and member IDs named by position; lines sorted (etcdctl prints members in
    ID order and the IDs differ between the two clusters)."""
    for i, m in enumerate(cluster._all):
        text = text.replace(str(m.client_port), f"C{i}").replace(str(m.peer_port), f"P{i}")
    for mid, name in names.items():
        text = re.sub(rf"\b{mid}\b", f"<{name or 'new'}>", text)
    text = re.sub(r"isLeader=(true|false)", "isLeader=L", text)   # whoever won the election
    # the client tries the endpoints in a random order; the initial cluster is a Go map
    text = re.sub(r"error #\d+", "error #N", text).replace("misconfigured; ", "misconfigured;\n; ")
    text = re.sub(r'ETCD_INITIAL_CLUSTER="([^"]*)"',
                  lambda m: 'ETCD_INITIAL_CLUSTER="' + ",".join(sorted(m.group(1).split(","))) + '"',
                  text)
    return "\n".join(sorted(text.splitlines()))


def cluster_session(cluster: Cluster) -> list:
    """The same member and health commands against any 3-member cluster."""
    ep = ",".join(cluster.urls)
    seen = []
    names: dict[str, str] = {}

    def run(*args, endpoints=ep):
        code, out, err = etcdctl(endpoints, *args)
        names.update(members(cluster.members[0].url))
        seen.append(tuple(cluster_norm(x, cluster, names) for x in (" ".join(args), out, err))
                    + (code,))
        return code, out, err

    listed = members(cluster.members[0].url)
    ids = [int(i, 16) for i, _ in listed]
    assert ids == sorted(ids)                                  # etcd lists members by ID
    run("cluster-health")
    run("member", "list")
    newcomer = cluster.new_member("m3")
    # Right after start the strict reconfiguration check refuses a new voter: every voter
    # must have been connected to the leader for 5 s (the client reports "no leader").
    run("member", "add", "m3", newcomer.peer_url)
    time.sleep(max(0.0, cluster.started + 6 - time.monotonic()))
    run("member", "add", "m3", newcomer.peer_url)
    run("member", "list")
    run("member", "add", "m4", newcomer.peer_url)            # the peer URL is taken
    run("member", "add")
    run("member", "update")
    run("cluster-health")                                     # unstarted: not reachable
    run("member", "remove", "abc")
    added = [i for i, name in members(cluster.members[0].url) if name == ""]
    code, out, err = run("member", "remove", added[0])
    assert code == 0, err
    run("member", "remove", added[0])                         # already gone
    run("member", "list")
    # a stopped member: the health check names it unreachable and the cluster degraded
    cluster.members[2].stop()
    run("cluster-health")
    run("cluster-health", endpoints=cluster.members[0].url)
    return seen


def test_cluster_health_and_member_commands_as_against_etcd():
    results = []
    for kind, extra in ((FastkvProcess, ["--enable-v2"]), (EtcdProcess, ["--enable-v2=true"])):
        cluster = Cluster(kind=kind, size=3, extra_args=extra)
        try:
            cluster.start()
            cluster.started = time.monotonic()
            results.append(cluster_session(cluster))
        finally:
            cluster.stop()
    assert len(results[0]) == len(results[1])
    diffs = [f"{a[0]}\n  fastkv {a[1:]!r}\n  etcd   {b[1:]!r}"
             for a, b in zip(*results) if a != b]
    assert not diffs, "\n".join(diffs)
