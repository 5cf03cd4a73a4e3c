"""Debian's etcdctl 3.4 over gRPC: fastkv and etcd 3.4 must print the same.

Each test starts a fresh fastkv and a fresh etcd (single members, or 3-member
clusters), runs one etcdctl command sequence against both, and compares exit
codes, stdout and stderr step by step, after normalising what differs by
design: cluster and member IDs, ports, lease IDs, remaining TTLs, timings, db
sizes, hashes, raft indexes (etcd writes more bootstrap entries than fastkv)
and, in clusters, raft terms. Every step runs even after a mismatch, and the
failure lists every differing step with both outputs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import string
import subprocess
import time

import pytest
from google.protobuf import text_format

from fastkv.proto.etcdserverpb import rpc_pb2

from servers import Cluster, EtcdProcess, FastkvProcess, wait_until
from test_fastkvctl_vs_etcdctl import LEASE_STEPS as FASTKVCTL_LEASE_STEPS

pytestmark = pytest.mark.etcd

ETCDCTL = shutil.which("etcdctl")
RUN_TIMEOUT = 30        # seconds for one etcdctl call
WATCH_SETTLE = 1.0      # seconds for a background watch to be created / to print
HEALTH_INTERVAL = 5.0   # etcd's strict reconfiguration check: peers connected this long


def ctl_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    return env


@dataclasses.dataclass
class Result:
    rc: int
    out: str
    err: str
    raw: bytes = dataclasses.field(default=b"", compare=False, repr=False)   # stdout as printed

    def show(self) -> str:
        return f"rc={self.rc} out={self.out!r} err={self.err!r}"


# ---------------------------------------------------------------- normalising

# Table columns whose values differ by design (the widths follow the values).
VOLATILE_COLUMNS = {"DB SIZE", "RAFT INDEX", "RAFT APPLIED INDEX", "TOOK", "HASH"}
VOLATILE_FIELDS = ("dbSize", "dbSizeInUse", "raftIndex", "raftAppliedIndex", "hash", "took", "ttl")
VOLATILE_FIELD_LINES = ("DBSize", "RaftIndex", "RaftAppliedIndex", "Took", "Hash", "DBSizeInUse")
ZAP_DROPPED = ("ts", "took", "size", "attempt")


def _zap_line(line: str) -> str:
    """etcdctl's client-side zap log lines, without what is per run."""
    try:
        rec = json.loads(line)
    except ValueError:
        return line
    if not isinstance(rec, dict) or "level" not in rec:
        return line
    for k in ZAP_DROPPED:
        rec.pop(k, None)
    if "target" in rec:
        rec["target"] = re.sub(r"client-[0-9a-f-]+", "client-X", rec["target"])
    return "zap " + json.dumps(rec, sort_keys=True)


def _zap_lines(text: str) -> str:
    """Zap lines normalised; a run of retries (their number follows the clock) as one line."""
    out: list[str] = []
    for line in (_zap_line(ln) for ln in text.split("\n")):
        if line.startswith("zap ") and out and out[-1].startswith(line):
            out[-1] = line + " (retried)"
        else:
            out.append(line)
    return "\n".join(out)


def _tables(text: str, volatile: set[str]) -> str:
    """Tables as cells (column widths follow the values), volatile columns blanked."""
    out, header = [], None
    for line in text.split("\n"):
        if re.fullmatch(r"\+(-+\+)+", line):
            out.append("+---+")
            continue
        if not line.startswith("|"):
            header = None
            out.append(line)
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if header is None:
            header = cells
        else:
            cells = ["*" if i < len(header) and header[i] in volatile else c
                     for i, c in enumerate(cells)]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def _status_line(m: re.Match, cluster: bool) -> str:
    """`endpoint status` in simple format: ep, id, version, db size, leader, learner,
    term, index, applied index, errors."""
    g = list(m.groups())
    g[3] = "*"
    g[7] = g[8] = "*"
    if cluster:
        g[4] = g[6] = "*"
    return ", ".join(g)


class _Vars(dict):
    def __missing__(self, key):
        return "{%s}" % key     # unknown: etcdctl gets the placeholder and says what it thinks


class Ctl:
    """etcdctl against one server or one cluster; knows the IDs and ports to normalise."""

    def __init__(self, label: str, members: list, cluster: bool = False):
        assert ETCDCTL, "etcdctl is not installed: ci/test installs Debian's etcd-client"
        self.label = label
        self.members = list(members)       # the default --endpoints
        self.known = list(members)         # every process whose ports may be printed
        # in a cluster, raft terms, the leader and the member that answers (etcdctl's
        # balancer picks one) differ by design; tests check the leader themselves
        self.cluster = cluster
        self.ids: dict[str, str] = {}      # hex ID -> placeholder
        self.vars = _Vars()                # {name} in arguments -> hex ID, {name_peer} -> URL
        self.leases: list[str] = []        # {0}, {1}... in arguments: hex IDs, in grant order
        self.learn_ids()

    def endpoints(self, members=None) -> str:
        return ",".join(f"127.0.0.1:{m.client_port}" for m in (members or self.members))

    def command(self, args, endpoints: str | None = None) -> list[str]:
        args = [string.Formatter().vformat(a, self.leases, self.vars) if "{" in a else a for a in args]
        return [ETCDCTL, "--endpoints", endpoints or self.endpoints()] + args

    def run(self, args, stdin: bytes | None = None, endpoints: str | None = None,
            timeout: float = RUN_TIMEOUT) -> Result:
        kw = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
        p = subprocess.run(self.command(args, endpoints), capture_output=True, timeout=timeout,
                           env=ctl_env(), **kw)
        res = Result(p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"),
                     p.stdout)
        self._learn(list(args), res.out)
        return res

    def popen(self, args, interactive: bool = False) -> subprocess.Popen:
        return subprocess.Popen(self.command(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.PIPE if interactive else subprocess.DEVNULL,
                                env=ctl_env())

    # -- IDs

    def add_process(self, proc) -> None:
        self.known.append(proc)
        self.vars[f"{proc.member_name}_peer"] = proc.peer_url

    def name_id(self, hex_id: str, name: str) -> None:
        hex_id = hex_id.lstrip("0") or "0"
        self.ids[hex_id] = f"<id:{name}>"
        self.vars[name] = hex_id

    def learn_ids(self) -> None:
        res = self.run(["member", "list", "-w", "json"])
        assert res.rc == 0, f"{self.label}: member list failed: {res.show()}"
        resp = json.loads(res.out)
        self.ids[f"{resp['header']['cluster_id']:x}"] = "<cluster>"
        for m in resp["members"]:
            if m.get("name"):
                self.name_id(f"{m['ID']:x}", m["name"])
        for p in self.known:
            self.vars[f"{p.member_name}_peer"] = p.peer_url

    def _learn(self, args: list[str], out: str) -> None:
        if args[:2] == ["lease", "grant"]:
            for m in re.finditer(r'^lease ([0-9a-f]{16}) granted with TTL|"ID":(\d+),"TTL"|^"ID" : (\d+)$',
                                 out, flags=re.M):
                self.leases.append(m.group(1) or f"{int(m.group(2) or m.group(3)):016x}")
        m = re.search(r"Member +([0-9a-f]+) added to cluster", out)
        if m and args[:2] == ["member", "add"]:
            self.name_id(m.group(1), args[2])

    def leader_and_ids(self) -> tuple[str, dict[str, str]]:
        """(leader's name, name -> hex ID) from `endpoint status --cluster -w json`."""
        res = self.run(["endpoint", "status", "--cluster", "-w", "json"])
        assert res.rc == 0, f"{self.label}: {res.show()}"
        names = {v: k for k, v in self.vars.items() if not k.endswith("_peer")}
        leaders = {names[f"{s['Status']['leader']:x}"] for s in json.loads(res.out)}
        assert len(leaders) == 1, f"{self.label}: members disagree on the leader: {res.out}"
        return leaders.pop(), {k: v for k, v in self.vars.items() if v in names}

    # -- normalising

    def normalise(self, text: str) -> str:
        text = _zap_lines(text)
        volatile = VOLATILE_COLUMNS | ({"RAFT TERM", "IS LEADER"} if self.cluster else set())
        text = _tables(text, volatile)
        text = re.sub(r"^(\S+), ([0-9a-f]+), ([^,]+), ([^,]+), (true|false), (true|false), "
                      r"(\d+), (\d+), (\d+), (.*)$", lambda m: _status_line(m, self.cluster), text, flags=re.M)
        text = re.sub(r"^(\S*127\.0\.0\.1:\d+), \d+$", r"\1, *", text, flags=re.M)   # hashkv
        text = re.sub(r"took = \S+", "took = *", text)
        fields = VOLATILE_FIELDS + (("raft_term", "raftTerm", "member_id", "leader") if self.cluster else ())
        text = re.sub(r'"(%s)":("[^"]*"|-?\d+)' % "|".join(fields), r'"\1":*', text)
        lines = VOLATILE_FIELD_LINES + (("RaftTerm", "MemberID", "Leader") if self.cluster else ())
        text = re.sub(r'^"(%s)" : .*$' % "|".join(lines), r'"\1" : *', text, flags=re.M)
        text = re.sub(r"remaining\(\d+s\)", "remaining(*s)", text)
        text = re.sub(r'^"TTL" : -?\d+\n"GrantedTTL"', '"TTL" : *\n"GrantedTTL"', text, flags=re.M)
        for i, hex_id in enumerate(self.leases):
            text = text.replace(hex_id, f"<lease{i}>")
            text = re.sub(rf"\b{int(hex_id, 16)}\b", f"<lease{i}>", text)
        for hex_id, name in self.ids.items():
            text = re.sub(rf"\b0*{hex_id}\b", name, text)
            text = re.sub(rf"\b{int(hex_id, 16)}\b", name, text)
        text = re.sub(r"(Member|cluster|from|to) +<", r"\1 <", text)     # %16x pads with spaces
        for p in self.known:
            text = re.sub(rf"127\.0\.0\.1:{p.client_port}\b", f"127.0.0.1:<{p.member_name}:client>", text)
            text = re.sub(rf"127\.0\.0\.1:{p.peer_port}\b", f"127.0.0.1:<{p.member_name}:peer>", text)
        text = re.sub(r'ETCD_INITIAL_CLUSTER="([^"]*)"',   # in member-ID order
                      lambda m: 'ETCD_INITIAL_CLUSTER="%s"' % ",".join(sorted(m.group(1).split(","))), text)
        # etcd lists a lease's keys in Go map order (random): compare them as sets
        text = re.sub(r'"keys":\[([^\]]*)\]',
                      lambda m: '"keys":[' + ",".join(sorted(m.group(1).split(","))) + "]", text)
        text = re.sub(r"attached keys\(\[([^\]]*)\]\)",
                      lambda m: "attached keys([" + " ".join(sorted(m.group(1).split(" "))) + "])", text)
        return text


def unordered(text: str, norm) -> str:
    """Members and endpoints are listed in member-ID order, and IDs differ by design:
    sort the lines of plain output, the rows of a table, the lists of JSON output,
    each by its normalised text (`norm`)."""
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        try:
            doc = json.loads(stripped)
        except ValueError:
            return text
        key = lambda d: norm(json.dumps(d, separators=(",", ":")))   # noqa: E731
        for d in doc if isinstance(doc, list) else [doc]:
            for v in d.values():
                if isinstance(v, list) and v and isinstance(v[0], dict):
                    v.sort(key=key)
        if isinstance(doc, list):
            doc.sort(key=key)
        return json.dumps(doc, separators=(",", ":")) + "\n"
    lines = text.split("\n")
    if stripped.startswith("+"):
        rows = [ln for ln in lines[3:] if ln.startswith("|")]
        rest = [ln for ln in lines[3:] if not ln.startswith("|")]
        return "\n".join(lines[:3] + sorted(rows, key=norm) + rest)
    return "\n".join(sorted(lines, key=norm))


class Both:
    """The same etcdctl steps against etcd (the reference) and fastkv; records differences."""

    def __init__(self, etcd: Ctl, fastkv: Ctl):
        self.etcd, self.fastkv = etcd, fastkv
        self.n = 0
        self.mismatches: list[str] = []

    def compare(self, what: str, want: Result, got: Result, sort: bool = False) -> None:
        def norm(ctl: Ctl, text: str) -> str:
            return ctl.normalise(unordered(text, ctl.normalise) if sort else text)

        self.n += 1
        w = Result(want.rc, norm(self.etcd, want.out), norm(self.etcd, want.err))
        g = Result(got.rc, norm(self.fastkv, got.out), norm(self.fastkv, got.err))
        if w != g:
            self.mismatches.append(f"step {self.n} `{what}` differs\n  etcd:   {w.show()}\n"
                                   f"  fastkv: {g.show()}")

    def step(self, args, stdin: bytes | None = None, sort: bool = False,
             endpoints: tuple[str, str] | None = None) -> tuple[Result, Result]:
        eps = endpoints or (None, None)
        want = self.etcd.run(args, stdin, endpoints=eps[0])
        got = self.fastkv.run(args, stdin, endpoints=eps[1])
        self.compare(" ".join(args) + (f" <<< {stdin[:60]!r}" if stdin else ""), want, got, sort)
        return want, got

    def step_protobuf(self, args, message_class) -> None:
        """`-w protobuf` prints the response message: compared decoded, without the IDs."""
        results = []
        for ctl in (self.etcd, self.fastkv):
            res = ctl.run(args)
            msg = message_class.FromString(res.raw)
            msg.header.cluster_id = msg.header.member_id = 0
            results.append(Result(res.rc, text_format.MessageToString(msg, as_one_line=True), res.err))
        self.compare(" ".join(args), *results)

    def steps(self, steps) -> None:
        for s in steps:
            if isinstance(s, tuple):
                self.step(s[0], stdin=s[1])
            else:
                self.step(s)

    def verify(self) -> None:
        assert not self.mismatches, (f"{len(self.mismatches)} of {self.n} steps differ "
                                     f"(etcd is the reference):\n" + "\n".join(self.mismatches))


@pytest.fixture
def both():
    """A fresh single-member etcd and a fresh single-member fastkv, stopped after the test."""
    servers = []
    try:
        for cls in (EtcdProcess, FastkvProcess):
            servers.append(cls().start())
        yield Both(Ctl("etcd", [servers[0]]), Ctl("fastkv", [servers[1]]))
    finally:
        for s in servers:
            s.cleanup()


# ---------------------------------------------------------------- kv

KV_STEPS = [
    ["put", "foo", "bar"],
    ["put", "foo", "bar2", "--prev-kv"],
    ["put", "foo", "bar3", "--prev-kv", "-w", "json"],
    ["put", "foo", "bar4", "-w", "fields"],
    ["put", "k/a", "1"], ["put", "k/b", "22"], ["put", "k/c", "3"], ["put", "k/d", "40"],
    ["put", "k/a", "11"], ["put", "k/c", "0"], ["put", "k/c", "33"], ["put", "z", "last"],
    ["get", "foo"],
    ["get", "foo", "-w", "json"],
    ["get", "foo", "-w", "fields"],
    ["get", "foo", "-w", "simple"],
    ["get", "foo", "-w", "table"],
    ["get", "nosuch"],
    ["get", "nosuch", "-w", "json"],
    ["get", "k/", "--prefix"],
    ["get", "k/", "--prefix", "-w", "json"],
    ["get", "k/", "--prefix", "-w", "fields"],
    ["get", "k/b", "--from-key"],
    ["get", "k/b", "--from-key", "--keys-only"],
    ["get", "", "--from-key", "-w", "json"],
    ["get", "k/a", "k/c"],
    ["get", "k/", "--prefix", "--limit", "2"],
    ["get", "k/", "--prefix", "--limit", "2", "-w", "json"],
    ["get", "k/", "--prefix", "--limit=2", "-w", "fields"],
    ["get", "k/", "--prefix", "--order", "DESCEND"],
    ["get", "k/", "--prefix", "--order", "ASCEND", "--limit", "3"],
    ["get", "k/", "--prefix", "--sort-by", "KEY", "--order", "DESCEND"],
    ["get", "k/", "--prefix", "--sort-by", "VERSION", "-w", "json"],
    ["get", "k/", "--prefix", "--sort-by", "VERSION", "--order", "DESCEND", "--limit", "1"],
    ["get", "k/", "--prefix", "--sort-by", "CREATE", "--order", "DESCEND"],
    ["get", "k/", "--prefix", "--sort-by", "MODIFY"],
    ["get", "k/", "--prefix", "--sort-by", "MODIFY", "--order", "DESCEND", "-w", "json"],
    ["get", "k/", "--prefix", "--sort-by", "VALUE"],
    ["get", "k/", "--prefix", "--sort-by", "VALUE", "--order", "DESCEND", "--keys-only"],
    ["get", "", "--from-key", "--sort-by", "VALUE", "--limit", "3", "-w", "json"],
    ["get", "k/", "--prefix", "--keys-only"],
    ["get", "k/", "--prefix", "--keys-only", "-w", "json"],
    ["get", "k/", "--prefix", "--print-value-only"],
    ["get", "k/", "--prefix", "--count-only"],          # not a flag of etcdctl 3.4
    ["get", "k/", "--prefix", "--count-only", "-w", "json"],
    ["get", "k/c", "--rev", "4"],
    ["get", "k/c", "--rev", "8"],
    ["get", "k/c", "--rev", "11", "-w", "json"],
    ["get", "k/", "--prefix", "--rev", "7", "-w", "json"],
    ["get", "k/", "--prefix", "--rev", "1"],
    ["get", "k/", "--prefix", "--consistency", "s", "--keys-only"],
    ["get", "foo", "--hex", "-w", "json"],
    ["get", "k/", "--prefix", "--hex"],
    ["get", "k/a", "k/c", "--prefix"],
    ["get", "k/", "--prefix", "--from-key"],
    ["get", "foo", "--sort-by", "SIZE"],
    ["get", "foo", "--order", "UP"],
    ["get", "foo", "-w", "yaml"],
    ["get"],
    ["del", "nosuch"],
    ["del", "foo", "--prev-kv"],
    ["del", "foo", "--prev-kv", "-w", "json"],
    ["del", "k/a", "k/c", "-w", "json"],
    ["put", "k/a", "again"],
    ["del", "k/", "--prefix", "--prev-kv"],
    ["put", "k/a", "1"], ["put", "k/b", "2"],
    ["del", "k/", "--prefix", "-w", "json"],
    ["put", "m", "1"], ["put", "n", "2"],
    ["del", "m", "--from-key", "--prev-kv", "-w", "json"],
    ["del", "a", "--prefix", "--from-key"],
    ["del"],
    ["get", "", "--from-key"],
    ["get", "", "--from-key", "-w", "json"],
]


def test_put_get_del(both):
    both.steps(KV_STEPS)
    both.step_protobuf(["put", "p", "1", "-w", "protobuf"], rpc_pb2.PutResponse)
    both.step_protobuf(["put", "p", "2", "--prev-kv", "-w", "protobuf"], rpc_pb2.PutResponse)
    both.step_protobuf(["get", "p", "-w", "protobuf"], rpc_pb2.RangeResponse)
    both.step_protobuf(["get", "", "--from-key", "--limit", "1", "-w", "protobuf"], rpc_pb2.RangeResponse)
    both.step_protobuf(["del", "p", "--prev-kv", "-w", "protobuf"], rpc_pb2.DeleteRangeResponse)
    both.verify()


# ---------------------------------------------------------------- txn

TXN_SETUP = [["put", "t/a", "1"], ["put", "t/b", "2"], ["put", "t/b", "3"], ["put", "t/c", "x"]]


def _txn(compares, success, failure) -> bytes:
    return ("\n".join(compares) + "\n\n" + "\n".join(success) + "\n\n" + "\n".join(failure) + "\n\n").encode()


TXN_STEPS = [
    # success branch: value, version, create and mod compares all hold
    (["txn", "-i"], _txn(['value("t/a") = "1"', 'version("t/b") = "2"', 'create("t/c") = "5"',
                          'mod("t/b") > "2"'],
                         ["put t/d yes", "get t/ --prefix", "del t/a --prev-kv"], ["put t/d no"])),
    (["txn", "-i", "-w", "json"], _txn(['val("t/d") = "yes"', 'ver("t/d") < "2"'],
                                       ["put t/e 1", "get t/d"], ["put t/e 0"])),
    # failure branch
    (["txn", "-i"], _txn(['value("t/b") = "nope"'], ["put t/f yes"], ["put t/f no", "get t/f", "del t/e"])),
    (["txn", "-i", "-w", "json"], _txn(['create("t/zz") > "0"'], ["put t/g yes"], ["get t/ --prefix --keys-only"])),
    (["txn", "-w", "fields"], _txn(['mod("t/c") != "5"'], ["put t/h 1"], ["put t/h 2 --prev-kv"])),
    (["txn"], _txn(['version("t/b") > "1"', 'value("t/c") < "y"'], ["get t/b --rev 3"], [])),
    (["txn"], _txn([], ["put t/i 1", "del t/i"], [])),
    (["txn"], _txn([], [], [])),
    (["txn", "-i"], _txn(['value("t/a" = "1"'], [], [])),
    (["txn", "-i"], _txn(['size("t/a") = "1"'], [], [])),
    (["txn", "-i"], _txn(['version("t/a") = "one"'], [], [])),
    (["txn", "-i"], _txn([], ["watch t/a"], [])),
    ["get", "t/", "--prefix", "-w", "json"],
]


def test_txn(both):
    both.steps(TXN_SETUP + TXN_STEPS)
    both.verify()
    first = both.etcd.run(["get", "t/d"])
    assert first.out == "t/d\nyes\n"


# ---------------------------------------------------------------- compaction

def test_compaction(both):
    both.steps([["put", "c", str(i)] for i in range(1, 6)])   # revisions 2..6
    both.steps([
        ["compaction", "4"],
        ["get", "c", "--rev", "3"],
        ["get", "c", "--rev", "3", "-w", "json"],
        ["get", "c", "--rev", "4"],
        ["get", "c", "--rev", "5", "-w", "json"],
        ["compaction", "3"],
        ["compaction", "4"],
        ["compaction", "100"],
        ["compaction", "--physical", "5"],
        ["get", "c", "--rev", "4"],
        ["watch", "c", "--rev", "2"],
        ["watch", "c", "--rev", "2", "-w", "json"],
        ["endpoint", "hashkv", "-w", "json"],
        ["compaction"],
        ["compaction", "abc"],
    ])
    both.verify()
    res = both.etcd.run(["get", "c", "--rev", "3"])
    assert res.rc == 1 and res.err.endswith("Error: etcdserver: mvcc: required revision has been compacted\n")


# ---------------------------------------------------------------- watch

def watch_both(both: Both, watch_args: list[str], writes: list[list[str]],
               interactive_lines: list[str] | None = None) -> None:
    """A watch in the background on each server, the same writes, then the collected output."""
    interactive = interactive_lines is not None
    procs = []
    try:
        for ctl in (both.etcd, both.fastkv):
            p = ctl.popen(["watch"] + watch_args, interactive)
            if interactive:
                p.stdin.write("".join(line + "\n" for line in interactive_lines).encode())
                p.stdin.flush()
            procs.append(p)
        time.sleep(WATCH_SETTLE)
        both.steps(writes)
        time.sleep(WATCH_SETTLE)
        results = []
        for p in procs:
            if not interactive:        # EOF on stdin (communicate) ends an interactive one
                p.send_signal(signal.SIGINT)
            out, err = p.communicate(timeout=RUN_TIMEOUT)
            results.append(Result(p.returncode, out.decode(errors="replace"), err.decode(errors="replace")))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    both.compare("watch " + " ".join(watch_args) + (f" <<< {interactive_lines}" if interactive else ""),
                 *results)
    assert results[0].out, f"etcd's watch printed nothing: {results[0].show()}"


WATCH_WRITES = [["put", "w/a", "1"], ["put", "w/a", "2"], ["put", "w/b", "x"], ["put", "other", "o"],
                ["del", "w/a"], ["put", "w/c", "3"], ["del", "w/", "--prefix"]]


@pytest.mark.parametrize("watch_args", [
    ["w/a"],
    ["w/", "--prefix"],
    ["w/", "--prefix", "--prev-kv"],
    ["w/", "--prefix", "--prev-kv", "-w", "json"],
    ["w/a", "w/c", "-w", "fields"],
], ids=["key", "prefix", "prefix-prevkv", "prevkv-json", "range-fields"])
def test_watch(both, watch_args):
    watch_both(both, watch_args, WATCH_WRITES)
    both.verify()


def test_watch_history(both):
    """--rev replays history, then goes on with new events."""
    both.steps(WATCH_WRITES)
    watch_both(both, ["w/", "--prefix", "--rev", "1", "--prev-kv"], [["put", "w/new", "n"]])
    watch_both(both, ["w/", "--prefix", "--rev", "3", "-w", "json"], [["put", "w/new", "m"]])
    watch_both(both, ["other", "--rev", "2"], [["put", "other", "p"]])
    both.verify()


def test_watch_interactive(both):
    lines = ["watch i/a", "watch i/b --prev-kv", "watch --prefix i/c", "bogus", "watch",
             "watch i/d i/f --prefix", "progress"]
    writes = [["put", "i/a", "1"], ["put", "i/b", "1"], ["put", "i/b", "2"], ["put", "i/c/x", "3"],
              ["put", "i/e", "4"], ["del", "i/a"]]
    watch_both(both, ["-i"], writes, lines)
    both.steps(WATCH_WRITES[:2])
    watch_both(both, ["-i", "-w", "json"], [["put", "i/a", "5"]], ["watch w/a --rev 2", "watch i/a"])
    both.verify()


# ---------------------------------------------------------------- leases

# fastkvctl's lease sequence ({0}, {1}: the leases granted so far), then more formats and errors
LEASE_STEPS = FASTKVCTL_LEASE_STEPS + [
    ["lease", "grant", "200", "-w", "fields"],
    ["put", "l3", "v3", "--lease={2}"],
    ["lease", "timetolive", "{2}", "--keys", "-w", "fields"],
    ["lease", "keep-alive", "--once", "{2}", "-w", "fields"],
    ["lease", "list", "-w", "fields"],
    ["lease", "revoke", "{2}", "-w", "fields"],
    ["get", "l", "--prefix", "-w", "json"],
    ["lease", "grant", "0"],
    ["lease", "grant", "-5"],
    ["put", "l4", "v", "--lease", "1234"],
]


def test_lease(both):
    both.steps(LEASE_STEPS)
    both.verify()


# ---------------------------------------------------------------- errors

def test_errors(both):
    both.steps([["put", "a", "1"], ["put", "a", "2"]])
    many = "\n" + "".join(f"put many{i} v\n" for i in range(129)) + "\n\n"
    both.steps([
        ["lease", "revoke", "1234"],
        ["lease", "revoke", "7fffffffffffffff", "-w", "json"],
        ["lease", "timetolive", "1234"],
        ["lease", "keep-alive", "--once", "1234"],
        ["get", "a", "--rev", "100"],
        ["get", "a", "--rev", "4", "-w", "json"],
        (["txn"], b"\nput d 1\nput d 2\n\n\n"),
        (["txn"], b"\nput d 1\ndel d\n\n\n"),
        (["txn"], b"\nput d 1\nget d\n\n\n"),
        (["txn"], b"\nput d1 1\n\nput d1 2\nput d1 3\n\n"),
        (["txn"], b"\ndel e --prefix\nput e/x 1\n\n\n"),
        (["txn"], many.encode()),
        (["put", "big"], b"x" * (1536 * 1024 + 10)),
        ["get", "", "--from-key", "--keys-only"],
    ])
    both.verify()
    res = both.etcd.run(["txn"], stdin=many.encode())
    assert res.rc == 1 and "too many operations in txn request" in res.err


# ---------------------------------------------------------------- maintenance

MAINTENANCE_STEPS = [
    ["put", "m", "1"],
    ["member", "list"],
    ["member", "list", "-w", "table"],
    ["member", "list", "-w", "json"],
    ["member", "list", "-w", "fields"],
    ["endpoint", "health"],
    ["endpoint", "health", "-w", "json"],
    ["endpoint", "health", "-w", "table"],
    ["endpoint", "health", "--cluster", "-w", "table"],
    ["endpoint", "status"],
    ["endpoint", "status", "-w", "json"],
    ["endpoint", "status", "-w", "table"],
    ["endpoint", "status", "-w", "fields"],
    ["endpoint", "status", "--cluster", "-w", "table"],
    ["endpoint", "status", "--cluster", "-w", "json"],
    ["alarm", "list"],
    ["alarm", "list", "-w", "json"],
    ["alarm", "disarm"],
    ["alarm", "disarm", "-w", "json"],
    ["defrag"],
    ["defrag", "--cluster"],
    ["move-leader", "{default}"],
    ["move-leader", "1234"],
    ["move-leader", "zz"],
    ["move-leader"],
    ["member", "promote", "{default}"],
    ["member", "promote", "1234"],
    ["member", "remove", "1234"],
    ["member", "update", "{default}", "--peer-urls={default_peer}"],
    ["member", "update", "1234", "--peer-urls=http://127.0.0.1:1"],
    ["member", "add", "x", "--peer-urls={default_peer}"],
    ["member", "add", "x"],
    ["member", "list", "-w", "json"],
    ["get", "m"],
    ["member", "remove", "{default}"],     # the only member: refused
    ["get", "m"],
]


def test_maintenance(both):
    both.steps(MAINTENANCE_STEPS)
    both.verify()


def test_endpoint_hashkv(both):
    both.steps([["put", "h", "1"], ["put", "h", "2"], ["put", "g", "3"]])
    for args in (["endpoint", "hashkv"], ["endpoint", "hashkv", "-w", "json"],
                 ["endpoint", "hashkv", "-w", "table"], ["endpoint", "hashkv", "--cluster"],
                 ["endpoint", "hashkv", "--rev", "3", "-w", "json"]):
        _, got = both.step(args)
        assert got.rc == 0, got.show()
        again = both.fastkv.run(args)
        assert again == got, f"two hashkv calls without writes between disagree:\n{got.show()}\n{again.show()}"
    both.verify()


def test_snapshot_save(both, tmp_path):
    results, files = [], []
    for ctl in (both.etcd, both.fastkv):
        d = tmp_path / ctl.label
        d.mkdir()
        ctl.run(["put", "s", "1"])
        res = ctl.run(["snapshot", "save", str(d / "snap.db")])
        res.out, res.err = (t.replace(str(d), "<dir>") for t in (res.out, res.err))
        results.append(res)
        files.append(d / "snap.db")
    both.compare("snapshot save", *results)
    assert results[1].rc == 0, results[1].show()
    for f in files:
        data = f.read_bytes()
        assert len(data) > 32 and hashlib.sha256(data[:-32]).digest() == data[-32:], \
            f"{f} does not end with the SHA-256 of what precedes it"
    assert not os.path.exists(str(files[1]) + ".part")
    both.verify()


# ---------------------------------------------------------------- clusters

@pytest.fixture
def clusters():
    """A fresh 3-member etcd cluster and a fresh 3-member fastkv cluster."""
    made = []
    try:
        for kind in (EtcdProcess, FastkvProcess):
            made.append(Cluster(kind, 3).start())
        yield made
    finally:
        for c in made:
            c.stop()


def _wait(fn, what: str, timeout: float = 30.0):
    return wait_until(fn, what, timeout, interval=0.3)


def _succeeded(res: Result) -> Result | None:
    return res if res.rc == 0 else None


def _move_leader(ctl: Ctl, cluster: Cluster) -> tuple[Result, Result, Result]:
    """Leadership to the first follower by name: refused with only that follower as
    endpoint (etcdctl looks for the leader among the endpoints), done with all; then
    every member names the target as leader. Returns both attempts and the target's
    status table, the leader's and the target's IDs and endpoint shown as their roles."""
    leader, ids = ctl.leader_and_ids()
    target = sorted(n for n in ids if n != leader)[0]
    at_target = ctl.endpoints([m for m in cluster.members if m.member_name == target])
    refused = ctl.run(["move-leader", ids[target]], endpoints=at_target)
    moved = ctl.run(["move-leader", ids[target]])
    _wait(lambda: ctl.leader_and_ids()[0] == target, f"{ctl.label}: {target} to lead")
    table = ctl.run(["endpoint", "status", "-w", "table"], endpoints=at_target)
    assert re.search(r"\|\s+true\s+\|\s+false\s+\|", table.out), f"{ctl.label}: {target} does not lead:\n{table.out}"
    roles = {ids[leader]: "<leader>", ids[target]: "<target>", at_target: "<target>"}
    for res in (refused, moved, table):
        for text, role in roles.items():
            res.out, res.err = res.out.replace(text, role), res.err.replace(text, role)
    return refused, moved, table


def test_cluster(clusters):
    etcd_cluster, fastkv_cluster = clusters
    started = time.monotonic()
    ctls = [Ctl("etcd", etcd_cluster.members, cluster=True), Ctl("fastkv", fastkv_cluster.members, cluster=True)]
    both = Both(*ctls)
    for args in (["member", "list"], ["member", "list", "-w", "table"], ["member", "list", "-w", "json"],
                 ["endpoint", "status", "--cluster"], ["endpoint", "status", "--cluster", "-w", "json"],
                 ["endpoint", "status", "--cluster", "-w", "table"], ["endpoint", "health", "--cluster"],
                 ["endpoint", "hashkv", "--cluster"]):
        both.step(args, sort=True)

    moves = [_move_leader(ctl, cluster) for ctl, cluster in zip(ctls, clusters)]
    for what, want, got in zip(("move-leader through the target alone", "move-leader through all",
                                "endpoint status -w table at the new leader"), *moves):
        both.compare(what, want, got)

    # learners: add (unstarted), refused promotions and additions, start, promote, remove.
    # etcd refuses member changes ("unhealthy cluster") until every peer has been
    # connected for 5 s (its HealthInterval): wait that long after the start.
    time.sleep(max(0.0, started + HEALTH_INTERVAL + 1 - time.monotonic()))
    joiners = [c.new_member("m3") for c in clusters]
    for ctl, p in zip(ctls, joiners):
        ctl.add_process(p)
    both.step(["member", "add", "m3", "--learner", "--peer-urls={m3_peer}"])
    both.step(["member", "list"], sort=True)
    both.step(["member", "list", "-w", "json"], sort=True)
    both.step(["member", "promote", "{m3}"])
    both.step(["member", "add", "m4", "--learner", "--peer-urls=http://127.0.0.1:1"])
    # A member's ID hashes its peer URLs with the time in seconds (etcd's NewMember): in
    # the same second as m3's add this would be "member ID already exist" on both.
    time.sleep(1.1)
    both.step(["member", "add", "m5", "--peer-urls={m3_peer}"])
    both.step(["member", "promote", "{m0}"])
    both.step(["member", "remove", "1234"])
    for p in joiners:
        p.launch()
    # a started learner: answers status and serializable reads, refuses linearizable ones
    at_learner = tuple(ctl.endpoints([p]) for ctl, p in zip(ctls, joiners))
    for ctl, ep in zip(ctls, at_learner):
        _wait(lambda: ctl.run(["endpoint", "status"], endpoints=ep).rc == 0, f"{ctl.label}: the learner to answer")
    both.step(["put", "before", "promotion"])
    for ctl, ep in zip(ctls, at_learner):
        _wait(lambda: ctl.run(["get", "before", "--consistency", "s"], endpoints=ep).out,
              f"{ctl.label}: the learner to apply the put")
    for args in (["endpoint", "status", "-w", "table"], ["endpoint", "health", "-w", "json"],
                 ["get", "before"], ["get", "before", "--consistency", "s"], ["put", "at", "learner"]):
        both.step(args, endpoints=at_learner)
    promoted = [_wait(lambda: _succeeded(ctl.run(["member", "promote", "{m3}"])),
                      f"{ctl.label}: the learner to catch up and be promoted", timeout=60) for ctl in ctls]
    both.compare("member promote (learner started)", *promoted)
    for ctl in ctls:
        _wait(lambda: ", started, m3, " in ctl.run(["member", "list"]).out, f"{ctl.label}: m3 to publish its name")
    both.step(["member", "list", "-w", "table"], sort=True)
    both.step(["member", "promote", "{m3}"])
    both.step(["member", "remove", "{m3}"])
    both.step(["member", "list"], sort=True)
    both.step(["member", "remove", "{m3}"])
    both.step(["put", "after", "remove"])
    both.step(["get", "after"])
    both.verify()
