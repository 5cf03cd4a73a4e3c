"""fastkvctl's operator commands against real etcdctl 3.4: the same output, byte for byte.

``member``, ``endpoint``, ``alarm``, ``compaction``, ``defrag`` and ``move-leader`` run
with ``ETCDCTL_API=3 etcdctl`` and with ``fastkvctl`` against the same server: one
3-member fastkv cluster shared by the module (started once, stopped at the end), and a
3-member etcd 3.4 cluster for the runs that show fastkvctl drives etcd too. stdout,
stderr and exit codes must be equal after normalising only what must differ: timings
(``took``), etcdctl's client-side zap log lines, the full flag tables in usage texts (the
global flags differ on purpose), and where each tool makes its own change (a member it
added, a revision it compacted), that change's ID or number.

Commands that change membership run as one sequence per tool, each leaving the cluster
as it found it; the two sequences use different peer URLs (a member ID hashes the peer
URLs with the time in seconds, and etcd refuses an ID it removed before).
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from ctlfork import FASTKVCTL, run_command

from servers import REPO, Cluster, EtcdProcess, FastkvProcess, free_port, running_cluster, wait_until

pytestmark = pytest.mark.etcd

ETCDCTL = shutil.which("etcdctl")
TOOLS = ("etcdctl", "fastkvctl")
HEALTH_INTERVAL = 5.0   # etcd (and fastkv) refuse member changes until peers are connected this long


# ---------------------------------------------------------------- running the tools

def tool_command(tool: str) -> list[str]:
    if tool == "etcdctl":
        assert ETCDCTL, "etcdctl is not installed: ci/test installs Debian's etcd-client"
        return [ETCDCTL]
    return FASTKVCTL


def tool_env(tool: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def endpoints_of(members) -> str:
    return ",".join(f"127.0.0.1:{m.client_port}" for m in members)


def run(tool: str, args: list[str], endpoints: str) -> tuple[int, str, str]:
    p = run_command(tool_command(tool) + ["--endpoints", endpoints] + args, timeout=60,
                    env=tool_env(tool), cwd=REPO)
    # latin-1 keeps every byte (-w protobuf prints the response message as it is)
    return p.returncode, p.stdout.decode("latin-1"), p.stderr.decode("latin-1")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip("|").split("|")]


def normalise(text: str) -> str:
    """What differs by design: etcdctl's zap lines, timings, the usage's flag tables."""
    text = "\n".join(ln for ln in text.split("\n") if not ln.startswith('{"level":'))
    if "\nNAME:\n" in "\n" + text:
        # usage (after a flag error, or -h): the flag tables differ on purpose
        # (etcdctl has more global flags); NAME and USAGE must match
        head, _, usage = ("\n" + text).partition("\nNAME:\n")
        text = (head[1:] + "\n" if head else "") + "NAME:\n" + "\n".join(usage.split("\n")[:5]) + "\n<options>"
    text = re.sub(r"took = \S+", "took = <t>", text)
    text = re.sub(r'"took":"[^"]*"', '"took":"<t>"', text)
    text = re.sub(r'^"Took" : .*$', '"Took" : <t>', text, flags=re.M)
    # a table with a TOOK column: as cells (the column is as wide as the longest time)
    lines, took_col = text.split("\n"), None
    for i, ln in enumerate(lines):
        if ln.startswith("+"):
            lines[i] = "+-+"
        elif ln.startswith("|"):
            cells = _cells(ln)
            if "TOOK" in cells:
                took_col = cells.index("TOOK")
            elif took_col is not None and took_col < len(cells):
                cells[took_col] = "<t>"
            if took_col is not None:
                lines[i] = "| " + " | ".join(cells) + " |"
    return "\n".join(lines) if took_col is not None else text


def unordered(text: str) -> str:
    """endpoint health answers in the order the endpoints answer: sorted lines, table
    rows, JSON entries and fields blocks."""
    s = text.strip()
    if s.startswith("["):
        return json.dumps(sorted(json.loads(s), key=lambda d: json.dumps(d, sort_keys=True)))
    if s.startswith("+"):
        lines = text.split("\n")
        rows = sorted(ln for ln in lines[3:] if ln.startswith("|"))
        return "\n".join(lines[:3] + rows + [ln for ln in lines[3:] if not ln.startswith("|")])
    if s.startswith('"'):
        return "\n\n".join(sorted(text.split("\n\n")))
    return "".join(sorted(ln + "\n" for ln in text.split("\n") if ln))


def pair(args: list[str], endpoints: str, sort: bool = False, tries: int = 1,
         subst: dict | None = None) -> tuple:
    """The same step with each tool, normalised: (etcdctl's, fastkvctl's). ``tries`` > 1
    for a step whose answer may move between the two runs (a raft index, a db size):
    equal at least once."""
    for _ in range(tries):
        got = []
        for tool in TOOLS:
            rc, out, err = run(tool, args, endpoints)
            out, err = normalise(out), normalise(err)
            if sort:
                out, err = unordered(out), unordered(err)
            for text, name in (subst or {}).items():
                out, err = out.replace(text, name), err.replace(text, name)
            got.append((rc, out, err))
        if got[0] == got[1]:
            break
    return tuple(got)


# a client's deadline, or a member's own request timeout (etcd 3.4 under the parallel
# steps once answered `member promote` so, CI at 6f41519)
_TIMEOUTS = ("context deadline exceeded", "etcdserver: request timed out")


class Transcript:
    """Steps run with both tools; every difference is recorded (every step runs)."""

    def __init__(self, endpoints: str):
        self.endpoints = endpoints
        self.mismatches: list[str] = []

    def both(self, args: list[str], endpoints: str | None = None, **kw) -> tuple:
        want, got = pair(args, endpoints or self.endpoints, **kw)
        self.check(" ".join(args), want, got)
        return want, got

    def many(self, steps: list, endpoints: str | None = None, **kw) -> list[tuple]:
        """Steps that change nothing, all at once (a step: args, or (args, endpoints))."""
        steps = [s if isinstance(s, tuple) else (s, endpoints or self.endpoints) for s in steps]
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda s: pair(s[0], s[1], **kw), steps))
        for i, ((args, eps), (want, got)) in enumerate(zip(steps, results)):
            if want != got and any(t in want[2] + got[2] for t in _TIMEOUTS):
                # a server slow under the 8 parallel calls (a timeout, not a behaviour):
                # asked again, alone
                results[i] = want, got = pair(args, eps, **kw)
            self.check(f"{' '.join(args)} (at {eps})", want, got)
        return results

    def check(self, what: str, want, got) -> None:
        if want != got:
            self.mismatches.append(f"`{what}` differs\n  etcdctl:   rc={want[0]} out={want[1]!r} "
                                   f"err={want[2]!r}\n  fastkvctl: rc={got[0]} out={got[1]!r} err={got[2]!r}")

    def verify(self) -> None:
        assert not self.mismatches, f"{len(self.mismatches)} differences:\n" + "\n".join(self.mismatches)


# ---------------------------------------------------------------- servers

class Members:
    """A started cluster and what the tests need to know about it."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.started = time.monotonic()
        self.ids: dict[str, str] = {}      # name -> hex ID
        for m in member_list(cluster.members[0].url)["members"]:
            self.ids[m["name"]] = f"{int(m['ID']):x}"

    @property
    def first(self) -> str:
        return endpoints_of(self.cluster.members[:1])

    @property
    def all(self) -> str:
        return endpoints_of(self.cluster.members)

    def wait_member_changes_allowed(self) -> None:
        time.sleep(max(0.0, self.started + HEALTH_INTERVAL + 1 - time.monotonic()))


def gateway(url: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"{}")


def member_list(url: str) -> dict:
    return gateway(url, "/v3/cluster/member/list", {})


def leader_of(url: str) -> str:
    return f"{int(gateway(url, '/v3/maintenance/status', {})['leader']):x}"


wait_for = wait_until


@pytest.fixture(scope="module")
def fk():
    """One 3-member fastkv cluster for the module."""
    with running_cluster(FastkvProcess) as cluster:
        yield Members(cluster)


@pytest.fixture
def etcd_cluster():
    with running_cluster(EtcdProcess) as cluster:
        yield Members(cluster)


# ---------------------------------------------------------------- read-only commands

FORMATS = ["simple", "json", "table", "fields", "protobuf"]


def listing_steps(members: "Members") -> tuple[list, list, list]:
    """Steps that change nothing, in every output format: (those that read, those that
    go through the raft log (etcd commits even an alarm list), those whose answer comes
    in the order the endpoints answer)."""
    plain, logged, health = [], [], []
    for fmt in FORMATS:
        plain += [["member", "list", "-w", fmt], ["endpoint", "hashkv", "-w", fmt],
                  ["endpoint", "hashkv", "--cluster", "-w", fmt], ["endpoint", "status", "-w", fmt],
                  (["endpoint", "status", "-w", fmt], members.all),
                  ["endpoint", "status", "--cluster", "-w", fmt]]
        if fmt != "fields":   # etcdctl 3.4 crashes on `alarm list -w fields` (see test_alarms_match)
            logged.append(["alarm", "list", "-w", fmt])
        health += [["endpoint", "health", "-w", fmt], (["endpoint", "health", "-w", fmt], members.all),
                   ["endpoint", "health", "--cluster", "-w", fmt]]
    return plain, logged, health


def test_listing_commands_match(fk):
    t = Transcript(fk.first)
    plain, logged, health = listing_steps(fk)
    plain += [["member", "list", "extra"], ["endpoint", "--cluster", "hashkv", "-w", "table"],
              ["endpoint", "hashkv", "--rev", "1", "-w", "json"],
              ["member", "-h"], ["member", "add", "-h"], ["endpoint", "status", "--help"], ["alarm"],
              ["compaction", "-h"], ["move-leader", "-h"], ["defrag", "-h"], ["endpoint", "hashkv", "-h"]]
    t.many(plain, tries=3)
    t.many(logged + [["alarm", "disarm"], ["alarm", "disarm", "-w", "json"],
                     ["alarm", "disarm", "-w", "table"]])
    results = t.many(health, sort=True)
    for args in (["defrag"], ["defrag", "-w", "json"], ["defrag", "--cluster"], ["defrag", "stray-arg"]):
        t.both(args)   # defrag changes the db size: one at a time
    t.verify()
    # the simple health line (on stderr), as etcdctl words it
    want, _ = results[0]
    assert re.fullmatch(r"127\.0\.0\.1:\d+ is healthy: successfully committed proposal: took = <t>\n", want[2])
    rc, _, err = run("fastkvctl", ["endpoint", "health"], fk.first)
    assert rc == 0 and re.fullmatch(r"127\.0\.0\.1:\d+ is healthy: successfully committed proposal: "
                                    r"took = \d+(\.\d+)?(ns|µs|ms|s)\n", err), err


def test_argument_and_server_errors_match(fk):
    t = Transcript(fk.first)
    leader = leader_of(fk.cluster.members[0].url)
    follower = next(m for m in fk.cluster.members if fk.ids[m.member_name] != leader)
    steps = [
        ["member", "add"], ["member", "add", "a", "b"], ["member", "add", "a", "b", "http://x", "HTTPS://y"],
        ["member", "add", "a"], ["member", "add", "a", "--peer-urls="],
        ["member", "add", "a", "--peer-urls=foo"], ["member", "add", "a", "--peer-urls=http://127.0.0.1:1/p"],
        ["member", "add", "a", "--peer-urls=http://h"],
        ["member", "add", "a", "--peer-urls=http://127.0.0.1:1,ftp://x:1"],
        ["member", "remove"], ["member", "remove", "zz"], ["member", "remove", "1", "2"],
        ["member", "remove", "10000000000000000"], ["member", "remove", "0x12"], ["member", "remove", "1234"],
        ["member", "remove", "-1"], ["member", "remove", "1234", "-w", "json"],
        ["member", "update", "1234"], ["member", "update", "zz", "--peer-urls=http://127.0.0.1:1"],
        ["member", "update", "1234", "--peer-urls=http://127.0.0.1:1"],
        ["member", "update", "1234", "--peer-urls=nope"],
        ["member", "promote"], ["member", "promote", "zz"], ["member", "promote", "1234"],
        ["member", "promote", fk.ids["m1"]], ["member", "list", "--bogus"],
        ["alarm", "list", "x"], ["alarm", "disarm", "x"],
        ["compaction"], ["compaction", "abc"], ["compaction", "1", "2"], ["compaction", "99999999"],
        ["compaction", "99999999", "--physical", "-w", "json"], ["compaction", "99999999999999999999"],
        ["compaction", "--", "-5"], ["compaction", "-5"],
        ["endpoint", "hashkv", "--rev", "99999999"], ["endpoint", "hashkv", "--rev", "abc"],
        ["endpoint", "health", "--cluster=maybe"],
        ["move-leader"], ["move-leader", "zz"], ["move-leader", "1", "2"], ["move-leader", "-w", "json"],
    ]
    steps += [  # move-leader looks for the leader among the endpoints
        (["move-leader", "1234"], endpoints_of([follower])), (["move-leader", "1234"], fk.all),
        (["move-leader", "1234", "-w", "json"], fk.all)]
    results = t.many(steps)
    t.verify()
    assert results[steps.index(["compaction", "99999999"])][0] == \
        (1, "", "Error: etcdserver: mvcc: required revision is a future revision\n")


def test_unreachable_endpoints_match(fk):
    """An endpoint that refuses connections, next to a live one: each command's own way of
    saying so (per endpoint on stderr, then its exit code). All steps run at once."""
    dead = f"127.0.0.1:{free_port()}"
    live = fk.first
    quick = ["--dial-timeout", "1s", "--command-timeout", "1s"]
    steps = [
        (quick + ["endpoint", "health"], f"{live},{dead}", True),
        (quick + ["endpoint", "health", "-w", "json"], f"{live},{dead}", True),
        (quick + ["endpoint", "health", "-w", "table"], f"{dead},{live}", True),
        (quick + ["endpoint", "status"], f"{live},{dead}", False),
        (quick + ["endpoint", "status", "-w", "json"], f"{dead}", False),
        (quick + ["endpoint", "status", "-w", "table"], f"{dead}", False),
        (quick + ["endpoint", "hashkv", "-w", "json"], f"{live},{dead}", False),
        (quick + ["member", "list"], f"{dead}", False),
        (quick + ["member", "list"], f"{dead},{live}", False),
        (quick + ["endpoint", "status", "--cluster"], f"{dead}", False),
        (quick + ["move-leader", "12"], f"{dead},{live}", False),
        (quick + ["alarm", "list"], f"{dead}", False),
        (quick + ["compaction", "1"], f"{dead}", False),
    ]

    def one(step):
        args, eps, sort = step
        return pair(args, eps, sort=sort, subst={dead: "<dead>"})

    # defrag changes the db size: at another member than the one the status steps ask
    steps.append((quick + ["defrag"], f"{dead},{endpoints_of(fk.cluster.members[1:2])}", False))
    t = Transcript(live)
    with ThreadPoolExecutor(len(steps)) as pool:
        for (args, eps, _), (want, got) in zip(steps, pool.map(one, steps)):
            t.check(f"{' '.join(args)} at {eps}", want, got)
    t.verify()


# ---------------------------------------------------------------- changes

def _new_ids(out: str) -> list[str]:
    """The hex ID of a member just added, from etcdctl's simple or JSON answer."""
    ids = re.findall(r"Member +([0-9a-f]+) added to cluster", out)
    ids += [f"{int(n):x}" for n in re.findall(r'"member":\{"ID":(\d+)', out)]
    return ids


def member_sequence(tool: str, members: "Members", run_no: int) -> list[tuple]:
    """Add, list, update, remove (voting and learner members, every format); the cluster
    ends as it began. Each run has its own peer ports (in the same order, as etcd sorts a
    member's URLs); the new members' IDs and those ports are replaced by names."""
    ports = [20000 + 1000 * run_no + i for i in range(8)]
    url = [f"http://127.0.0.1:{p}" for p in ports]
    taken = members.cluster.members[0].peer_url
    new: list[str] = []
    steps = [
        ["member", "add", "n1", f"--peer-urls={url[1]},{url[0]}"],
        ["member", "list"], ["member", "list", "-w", "table"], ["member", "list", "-w", "json"],
        ["member", "update", "{0}", f"--peer-urls={url[2]}"],
        ["member", "update", "{0}", f"--peer-urls={url[3]},{url[2]}", "-w", "json"],
        ["member", "update", "{0}", f"--peer-urls={url[4]}", "-w", "fields"],   # updated, then exit 4
        ["member", "list", "-w", "fields"],
        ["member", "add", "n2", f"--peer-urls={url[5]}"],      # refused: n1 is not started
        ["member", "remove", "{0}", "-w", "protobuf"],
        ["member", "add", "n2", "--learner", f"--peer-urls={url[5]}", "-w", "json"],
        ["member", "update", "{1}", f"--peer-urls={url[6]}", "-w", "table"],   # updated, then exit 4
        ["member", "list"],
        ["member", "update", "{1}", f"--peer-urls={taken}"],                   # refused: m0's URL
        ["member", "remove", "{1}", "-w", "json"],
        ["member", "remove", "{1}"],                                            # not found
        ["member", "add", "n4", "--learner", f"--peer-urls={url[7]}", "-w", "table"],  # added, exit 4
        ["member", "remove", "{2}"],
        ["member", "list", "-w", "protobuf"],
        ["member", "list"],
    ]
    rows = []
    for args in steps:
        args = [re.sub(r"\{(\d)\}", lambda m: new[int(m.group(1))] if int(m.group(1)) < len(new) else "ffff", a)
                for a in args]
        rc, out, err = run(tool, args, members.first)
        deadline = time.monotonic() + 15
        while "--learner" in args and "unhealthy cluster" in err and time.monotonic() < deadline:
            # etcd refuses any member change for 5 s after one of its peer streams
            # reconnects (its strict reconfiguration check): not what is compared here
            time.sleep(0.5)
            rc, out, err = run(tool, args, members.first)
        if args[:2] == ["member", "add"] and rc in (0, 4):
            if args[-2:] == ["-w", "table"]:   # nothing printed: find it in the member list
                listed = member_list(members.cluster.members[0].url)["members"]
                new += [f"{int(m['ID']):x}" for m in listed if url[7] in m.get("peerURLs", [])]
            else:
                new += _new_ids(out)
        texts = [" ".join(args), normalise(out), normalise(err)]
        for i, hex_id in enumerate(new):
            for id_text in (hex_id, str(int(hex_id, 16))):
                texts = [re.sub(rf"\b{id_text}\b", f"<new{i}>", x) for x in texts]
        for i, p in enumerate(ports):
            texts = [x.replace(f":{p}", f":<p{i}>") for x in texts]
        rows.append((texts[0], rc, members_in_any_order(texts[1]), texts[2]))
    return rows


def members_in_any_order(text: str) -> str:
    """Members are listed in ID order, and the IDs of new members are random: sort them
    (the listing test checks the order); %16x pads a short ID with spaces."""
    text = re.sub(r"(Member|cluster) +", r"\1 ", text)
    text = re.sub(r'ETCD_INITIAL_CLUSTER="([^"]*)"',
                  lambda m: 'ETCD_INITIAL_CLUSTER="%s"' % ",".join(sorted(m.group(1).split(","))), text)
    s = text.strip()
    if s.startswith("{") and '"members":' in s:
        doc = json.loads(re.sub(r":(<new\d+>)", r':"\1"', s))   # an ID named in a number's place
        doc["members"].sort(key=lambda d: json.dumps(d, sort_keys=True))
        return json.dumps(doc) + "\n"
    if s.startswith("+"):
        lines = ["| " + " | ".join(_cells(ln)) + " |" if ln.startswith("|") else ln for ln in text.split("\n")]
        return "\n".join(lines[:3] + sorted(ln for ln in lines[3:] if ln.startswith("|")))
    if s.startswith('"ClusterID"'):
        lines = text.split("\n")
        return "\n".join(lines[:4]) + "\n" + "\n\n".join(sorted("\n".join(lines[4:]).split("\n\n")))
    if re.match(r"[0-9a-f<]", s) and ", started, " in s:
        return "\n".join(sorted(text.split("\n")))
    return text


def row(rows: list[tuple], prefix: str) -> tuple:
    return next(r for r in rows if r[0].startswith(prefix))[1:]


def test_member_changes_match(fk):
    fk.wait_member_changes_allowed()
    before = member_list(fk.cluster.members[0].url)["members"]
    transcripts = [member_sequence(tool, fk, i) for i, tool in enumerate(TOOLS)]
    t = Transcript(fk.first)
    for want, got in zip(*transcripts):
        t.check(f"{want[0]} / {got[0]}", want[1:], got[1:])
    t.verify()
    assert member_list(fk.cluster.members[0].url)["members"] == before
    rows = transcripts[0]
    rc, out, _ = row(rows, "member add n1")
    assert rc == 0 and out.startswith("Member <new0> added to cluster "), out
    assert '\nETCD_INITIAL_CLUSTER_STATE="existing"\n' in out
    assert row(rows, "member add n2 --peer-urls") == (1, "", "Error: etcdserver: unhealthy cluster\n")
    assert row(rows, "member update <new0> --peer-urls=http://127.0.0.1:<p4>") == \
        (4, "", "Error: fields not supported as output format\n")


def arm_alarms(url: str, member_ids=("1234", "5678")) -> None:
    """NOSPACE alarms, raised as etcd lets a client raise one (Alarm ACTIVATE)."""
    for member_id in member_ids:
        gateway(url, "/v3/maintenance/alarm", {"action": "ACTIVATE", "memberID": member_id, "alarm": "NOSPACE"})


def disarm_rows(members: "Members", fmt: str, member_ids=("1234", "5678")) -> list[tuple]:
    """Each tool disarms the same alarms (raised again before each)."""
    url = members.cluster.members[0].url
    rows = []
    for tool in TOOLS:
        arm_alarms(url, member_ids)
        rc, out, err = run(tool, ["alarm", "disarm", "-w", fmt], members.first)
        rows.append((rc, normalise(out), normalise(err)))
        assert gateway(url, "/v3/maintenance/alarm", {"action": "GET"}) == {}, f"{tool} left alarms armed"
    return rows


def test_alarms_match(fk):
    """Alarms listed, shown by endpoint status (fastkv leaves them out of its errors: etcd
    lists them, see test_fastkvctl_drives_etcd), and disarmed by each tool in turn."""
    url = fk.cluster.members[0].url
    t = Transcript(fk.first)
    arm_alarms(url)
    try:
        results = t.many([["alarm", "list", "-w", fmt] for fmt in ("simple", "json", "table", "protobuf")]
                         + [["endpoint", "status", "-w", fmt] for fmt in ("simple", "table", "fields")]
                         + [["endpoint", "health"]], tries=3)
        assert results[0][0] == (0, "memberID:1234 alarm:NOSPACE \nmemberID:5678 alarm:NOSPACE \n", "")
        # etcdctl 3.4 dies of a nil header here (etcd's AlarmResponse has none); fastkvctl
        # prints what there is
        rc, out, err = run("fastkvctl", ["alarm", "list", "-w", "fields"], fk.first)
        assert (rc, out, err) == (0, '"MemberID" : 1234\n"AlarmType" : NOSPACE\n\n'
                                     '"MemberID" : 5678\n"AlarmType" : NOSPACE\n\n', "")
        for fmt in ("simple", "json", "protobuf", "table"):
            t.check(f"alarm disarm -w {fmt}", *disarm_rows(fk, fmt))
        t.both(["alarm", "list"])
        t.verify()
    finally:
        for member_id in ("1234", "5678"):
            gateway(url, "/v3/maintenance/alarm",
                    {"action": "DEACTIVATE", "memberID": member_id, "alarm": "NOSPACE"})


def _put(url: str, key: str, value: str) -> int:
    resp = gateway(url, "/v3/kv/put", {"key": base64.b64encode(key.encode()).decode(),
                                       "value": base64.b64encode(value.encode()).decode()})
    return int(resp["header"]["revision"])


def compaction_sequence(tool: str, members: "Members") -> list[tuple]:
    """Each tool writes and compacts its own revisions: the numbers are named by role
    (r: the revision after its writes); hashes and sizes follow the data."""
    url = members.cluster.members[0].url
    for i in range(3):
        rev = _put(url, f"c/{i}", tool)
    names = {str(rev - 2): "<r-2>", str(rev - 1): "<r-1>", str(rev): "<r>", str(rev + 1000): "<r+1000>"}
    steps = [["compaction", str(rev - 1)], ["compaction", str(rev - 1)],
             ["compaction", str(rev - 2), "-w", "json"], ["endpoint", "hashkv", "--rev", str(rev - 2)],
             ["endpoint", "hashkv", "--rev", str(rev), "-w", "json"], ["compaction", str(rev + 1000), "--physical"],
             ["compaction", str(rev), "--physical", "-w", "table"], ["endpoint", "hashkv", "-w", "fields"],
             ["endpoint", "hashkv", "-w", "json"], ["defrag", "--cluster"]]
    revision = re.compile(r'(compacted revision |"compact_revision":|"revision":|"Revision" : |--rev |compaction )'
                          r'(\d+)')
    rows = []
    for args in steps:
        rc, out, err = run(tool, args, members.first)
        texts = [revision.sub(lambda m: m.group(1) + names.get(m.group(2), m.group(2)), x)
                 for x in (" ".join(args), normalise(out), normalise(err))]
        texts[1] = re.sub(r'"hash":\d+', '"hash":H', texts[1])
        texts[1] = re.sub(r'^"Hash" : \d+$', '"Hash" : H', texts[1], flags=re.M)
        rows.append((texts[0], rc, texts[1], texts[2]))
    return rows


def test_compaction_and_hashkv_match(fk):
    rows = {tool: compaction_sequence(tool, fk) for tool in TOOLS}
    t = Transcript(fk.first)
    for want, got in zip(rows["etcdctl"], rows["fastkvctl"]):
        t.check(f"{want[0]} / {got[0]}", want[1:], got[1:])
    t.verify()
    assert rows["etcdctl"][0][1:] == (0, "compacted revision <r-1>\n", "")
    assert rows["etcdctl"][1][1:] == (1, "", "Error: etcdserver: mvcc: required revision has been compacted\n")


def test_defrag_data_dir_is_refused(tmp_path):
    """etcdctl defragments an etcd member's bbolt file itself (and panics on a missing one);
    fastkv keeps no bbolt file: fastkvctl refuses, with etcdctl's wording and exit code."""
    rc, out, err = run("fastkvctl", ["defrag", "--data-dir", str(tmp_path)], "127.0.0.1:1")
    assert (rc, out) == (1, "")
    assert err.startswith(f"Failed to defragment etcd data[{tmp_path}] (")


def test_learner_added_started_and_promoted(fk):
    """fastkvctl adds a learner; the member is started with the ETCD_INITIAL_CLUSTER
    fastkvctl printed; fastkvctl promotes it once it has caught up; etcdctl and fastkvctl
    then say the same about it; etcdctl removes it."""
    fk.wait_member_changes_allowed()
    cluster = fk.cluster
    proc = cluster.new_member("m3")
    rc, out, err = run("fastkvctl", ["member", "add", "m3", "--learner", f"--peer-urls={proc.peer_url}"],
                       fk.first)
    assert rc == 0, err
    new_id = _new_ids(out)[0]
    env = dict(line.split("=", 1) for line in out.strip().split("\n")[2:])
    assert env["ETCD_NAME"] == '"m3"' and env["ETCD_INITIAL_CLUSTER_STATE"] == '"existing"'
    assert env["ETCD_INITIAL_ADVERTISE_PEER_URLS"] == f'"{proc.peer_url}"'
    proc.initial_cluster = env["ETCD_INITIAL_CLUSTER"].strip('"')
    proc.launch()
    t = Transcript(fk.first)
    subst = {new_id: "<m3>", str(int(new_id, 16)): "<m3>", str(proc.client_port): "<m3:client>"}

    def promoted():
        rc, out, err = run("fastkvctl", ["member", "promote", new_id], fk.first)
        return (rc, out, err) if rc == 0 or "in sync" not in err else None

    rc, out, err = wait_for(promoted, "the learner to catch up and be promoted", timeout=60)
    assert (rc, err) == (0, ""), err
    cluster_id = f"{int(member_list(cluster.members[0].url)['header']['cluster_id']):x}"
    assert out == f"Member {new_id:>16} promoted in cluster {cluster_id:>16}\n"
    wait_for(lambda: ", started, m3, " in run("fastkvctl", ["member", "list"], fk.first)[1],
             "m3 to publish its name")
    t.both(["member", "promote", new_id], subst=subst)
    t.both(["member", "list", "-w", "table"], subst=subst)
    t.both(["endpoint", "status", "--cluster", "-w", "fields"], tries=3, subst=subst)
    t.both(["member", "promote", "1234"], subst=subst)
    rc, out, err = run("etcdctl", ["member", "remove", new_id], fk.first)
    assert rc == 0 and out == f"Member {new_id:>16} removed from cluster {cluster_id:>16}\n", err
    t.both(["member", "remove", new_id], subst=subst)
    t.verify()


def test_move_leader_matches(fk):
    """Leadership to a follower with etcdctl, back with fastkvctl: the same sentence with
    the roles swapped."""
    t = Transcript(fk.all)
    url = fk.cluster.members[0].url
    names = {v: k for k, v in fk.ids.items()}

    def settled(target):
        return lambda: all(leader_of(m.url) == target for m in fk.cluster.members)

    rows = []
    for tool, fmt in [(tool, fmt) for fmt in ("simple", "json") for tool in TOOLS]:
        leader = leader_of(url)
        target = sorted(i for i in fk.ids.values() if i != leader)[0]
        rc, out, err = run(tool, ["move-leader", target, "-w", fmt], fk.all)
        wait_for(settled(target), f"{names[target]} to lead")
        rows.append((rc, out.replace(leader, "<from>").replace(target, "<to>"), normalise(err)))
    t.check("move-leader (simple)", rows[0], rows[1])
    t.check("move-leader -w json", rows[2], rows[3])
    assert rows[0] == (0, "Leadership transferred from <from> to <to>\n", "")
    leader = leader_of(url)
    t.both(["move-leader", leader], subst={leader: "<leader>"})        # to itself: nothing to do
    for fmt in ("table", "fields", "protobuf"):
        rows = []
        for tool in TOOLS:
            leader = leader_of(url)
            target = sorted(i for i in fk.ids.values() if i != leader)[0]
            rc, out, err = run(tool, ["move-leader", target, "-w", fmt], fk.all)
            wait_for(settled(target), f"{names[target]} to lead")   # moved, whatever was printed
            rows.append((rc, out, normalise(err)))
        t.check(f"move-leader -w {fmt}", *rows)
    t.verify()


# ---------------------------------------------------------------- against etcd 3.4

def test_fastkvctl_drives_etcd(etcd_cluster):
    """The same comparisons against a 3-member etcd 3.4 cluster."""
    ec = etcd_cluster
    url = ec.cluster.members[0].url
    t = Transcript(ec.first)
    plain, logged, health = listing_steps(ec)
    t.many(plain, tries=3)
    t.many(logged)
    t.many(health, sort=True)
    # refused changes (etcd commits a refused member change to its log: a raft index later)
    t.many([["member", "remove", "1234"], ["member", "promote", "1234"], ["move-leader", "1234"],
            ["compaction", "100"], ["endpoint", "hashkv", "--rev", "100"]], endpoints=ec.all)
    t.both(["defrag", "--cluster"])
    compactions = [compaction_sequence(tool, ec) for tool in TOOLS]
    for want, got in zip(*compactions):
        t.check(f"{want[0]} / {got[0]}", want[1:], got[1:])
    # etcd lists its alarms in endpoint status' errors: one alarm (etcd lists several in
    # Go's map order), its text long enough for the table to wrap the cell
    longest = (str((1 << 64) - 1),)
    arm_alarms(url, longest)
    t.many([["endpoint", "status", "-w", fmt] for fmt in ("simple", "json", "table", "fields")]
           + [["alarm", "list"], ["alarm", "list", "-w", "json"]], tries=3)
    t.check("alarm disarm -w json", *disarm_rows(ec, "json", longest))
    # members: each tool adds (and removes) its own
    ec.wait_member_changes_allowed()
    transcripts = [member_sequence(tool, ec, i) for i, tool in enumerate(TOOLS)]
    for want, got in zip(*transcripts):
        t.check(f"{want[0]} / {got[0]}", want[1:], got[1:])
    assert row(transcripts[0], "member add n1")[0] == 0, transcripts[0][0]
    # leadership: away and back
    names = {v: k for k, v in ec.ids.items()}
    rows = []
    for tool in TOOLS:
        leader = leader_of(url)
        target = sorted(i for i in ec.ids.values() if i != leader)[0]
        rc, out, err = run(tool, ["move-leader", target], ec.all)
        wait_for(lambda: all(leader_of(m.url) == target for m in ec.cluster.members),
                 f"{names[target]} to lead")
        rows.append((rc, out.replace(leader, "<from>").replace(target, "<to>"), normalise(err)))
    t.check("move-leader", *rows)
    t.verify()
