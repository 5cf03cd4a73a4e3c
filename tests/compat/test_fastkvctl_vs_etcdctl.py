"""fastkvctl against real etcdctl 3.4: the same command sequence, the same output.

Each sequence runs twice on two fresh etcd 3.4 members: once with
``ETCDCTL_API=3 etcdctl``, once with ``fastkvctl``. Two fresh members go
through the same revisions, so stdout, stderr and exit codes must be equal
after normalising what differs between members by design: cluster/member IDs,
lease IDs (handed out from the member ID) and remaining lease TTLs (clock).
etcdctl's client-side zap warnings (JSON log lines on stderr) are dropped.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time

import pytest
from ctlfork import FASTKVCTL, run_command

from servers import REPO, EtcdProcess

ETCDCTL = shutil.which("etcdctl")


def tool_command(tool: str) -> list[str]:
    if tool == "etcdctl":
        assert ETCDCTL, "etcdctl is not installed: ci/test installs Debian's etcd-client"
        return [ETCDCTL]
    return FASTKVCTL


def tool_env(tool: str, extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


class Session:
    """Runs one tool against one server, remembering lease IDs the tool printed."""

    def __init__(self, tool: str, server):
        self.tool = tool
        self.server = server
        self.leases: list[str] = []  # hex IDs in the order they were granted

    def run(self, args: list[str], stdin: bytes = b"", env: dict | None = None,
            endpoints: bool = True) -> tuple[int, str, str]:
        args = [a.format(*self.leases) if "{" in a else a for a in args]
        cmd = tool_command(self.tool) + (["--endpoints", self.server.url] if endpoints else []) + args
        p = run_command(cmd, input=stdin, timeout=60, env=tool_env(self.tool, env), cwd=REPO)
        out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
        for m in re.finditer(r"lease ([0-9a-f]{16}) granted with TTL", out):
            self.leases.append(m.group(1))
        for m in re.finditer(r'"ID":(\d+),"TTL"', out):
            if args[:2] == ["lease", "grant"]:
                self.leases.append(f"{int(m.group(1)):016x}")
        return p.returncode, out, err

    def normalise(self, text: str) -> str:
        text = "\n".join(line for line in text.split("\n") if not line.startswith('{"level":'))
        if text.startswith("NAME:\n"):
            # usage after a flag error: the flag tables differ on purpose (fastkvctl has
            # fewer global flags, and get --count-only from 3.5); the head must match
            text = "\n".join(text.split("\n")[:6]) + "\n<options>\n"
        text = re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} ", "<time> ", text, flags=re.M)
        text = re.sub(r'"cluster_id":\d+', '"cluster_id":C', text)
        text = re.sub(r'"member_id":\d+', '"member_id":M', text)
        for i, hex_id in enumerate(self.leases):
            text = text.replace(hex_id, f"<lease{i}>")
            text = re.sub(rf"\b{int(hex_id, 16)}\b", f"<lease{i}>", text)
        text = re.sub(r"remaining\(\d+s\)", "remaining(Ns)", text)
        # etcd lists a lease's keys in Go map order (random): compare them as sets
        text = re.sub(r'"keys":\[([^\]]*)\]',
                      lambda m: '"keys":[' + ",".join(sorted(m.group(1).split(","))) + "]", text)
        text = re.sub(r"attached keys\(\[([^\]]*)\]\)",
                      lambda m: "attached keys([" + " ".join(sorted(m.group(1).split(" "))) + "])", text)
        text = re.sub(r'"ttl":(\d+),"granted-ttl":([1-9])', r'"ttl":N,"granted-ttl":\2', text)
        return text


@pytest.fixture
def two_etcds(etcd_server):
    second = EtcdProcess().start()
    try:
        yield etcd_server, second
    finally:
        second.cleanup()


def run_both(two_etcds, steps):
    """Run the steps with each tool on its own fresh member; return both transcripts."""
    sessions = [Session("etcdctl", two_etcds[0]), Session("fastkvctl", two_etcds[1])]
    transcripts = [[], []]
    for i, step in enumerate(steps):
        args, stdin, env = step if isinstance(step, tuple) else (step, b"", None)
        for s, t in zip(sessions, transcripts):
            rc, out, err = s.run(args, stdin, env)
            t.append((i, " ".join(args), rc, s.normalise(out), s.normalise(err)))
    return transcripts


def assert_same(transcripts):
    want, got = transcripts
    for w, g in zip(want, got):
        assert g == w, (f"step {w[0]} `{w[1]}` differs\n etcdctl:   rc={w[2]} out={w[3]!r} err={w[4]!r}\n"
                        f" fastkvctl: rc={g[2]} out={g[3]!r} err={g[4]!r}")


KV_STEPS = [
    ["put", "foo", "bar"],
    ["put", "foo", "bar2", "--prev-kv"],
    ["put", "foo", "bar3", "--prev-kv", "-w", "json"],
    ["put", "empty", ""],
    (["put", "fromstdin"], b"line1\nline2\n", None),
    ["put", "nostdin"],
    ["put"],
    ["get", "foo"],
    ["get", "foo", "-w", "json"],
    ["get", "empty", "-w", "json"],
    ["get", "fromstdin"],
    ["get", "nosuch"],
    ["get", "nosuch", "-w", "json"],
    ["put", "k/a", "1"], ["put", "k/b", "2"], ["put", "k/c", "3"], ["put", "k/d", "40"],
    ["get", "k/", "--prefix"],
    ["get", "k/", "--prefix", "--keys-only"],
    ["get", "k/", "--prefix", "--print-value-only"],
    ["get", "k/", "--prefix", "--limit", "2", "-w", "json"],
    ["get", "k/", "--prefix", "--limit=2"],
    ["get", "k/a", "k/c"],
    ["get", "k/b", "--from-key"],
    ["get", "", "--prefix", "--keys-only"],
    ["get", "", "--from-key", "-w", "json"],
    ["get", "k/", "--prefix", "--sort-by=VALUE", "--order=DESCEND"],
    ["get", "k/", "--prefix", "--sort-by", "modify", "--order", "ascend", "-w", "json"],
    ["get", "k/", "--prefix", "--sort-by=CREATE"],
    ["get", "k/", "--prefix", "--sort-by=VERSION", "--order=DESCEND", "--limit", "1"],
    ["get", "k/", "--prefix", "--order=DESCEND"],
    ["get", "k/", "--prefix", "--consistency=s"],
    ["get", "foo", "--rev", "2"],
    ["get", "foo", "--rev=3", "-w", "json"],
    ["get", "foo", "--rev", "1000"],
    ["get", "foo", "--hex"],
    ["get", "k/", "--prefix", "--hex", "--print-value-only"],
    ["get", "foo", "--hex", "-w", "json"],
    ["get", "k/", "--prefix", "--from-key"],
    ["get", "k/a", "k/c", "--prefix"],
    ["get", "foo", "--sort-by=FOO"],
    ["get", "foo", "--order=sideways"],
    ["get", "foo", "--consistency=x"],
    ["get", "foo", "-w", "json", "--print-value-only"],
    ["get", "foo", "-w", "table"],
    ["get", "foo", "-w", "nonsense"],
    ["get", "foo", "--limit", "abc"],
    ["get", "k/", "--prefix", "--limit", "0x2"],          # pflag: strconv.ParseInt(s, 0, 64)
    ["get", "k/", "--prefix", "--limit", "01_1"],
    ["get", "k/", "--prefix", "--rev", "0b11", "--limit", "0o1"],
    ["get", "foo", "--limit", "99999999999999999999"],
    ["get", "foo", "--limit", " 5"],
    ["get"],
    ["put", "foo", "--ignore-value"],
    ["put", "foo", "x", "--ignore-value"],
    ["put", "nokey", "--ignore-value"],
    ["put", "foo", "v", "--ignore-lease"],
    ["put", "foo", "v", "--lease", "zz"],
    ["put", "foo", "v", "--lease", "1234"],
    ["del", "nosuch"],
    ["del", "foo", "--prev-kv"],
    ["del", "k/a", "k/c", "-w", "json"],
    ["del", "k/", "--prefix", "--prev-kv", "-w", "json"],
    ["del", "e", "--from-key", "--prev-kv"],
    ["del"],
    ["del", "a", "b", "c"],
    ["del", "a", "--prefix", "--from-key"],
    ["get", "", "--from-key"],
    ["bogus"],
    ["get", "--bogus-flag", "x"],
    ["get", "x", "--limit"],
    ["version"],
]


def test_kv_commands_match(two_etcds):
    assert_same(run_both(two_etcds, KV_STEPS))


LEASE_STEPS = [
    ["lease", "grant", "600"],
    ["lease", "grant", "300", "-w", "json"],
    ["lease", "list"],
    ["lease", "list", "-w", "json"],
    ["put", "l1", "v1", "--lease", "{0}"],
    ["put", "l2", "v2", "--lease={0}", "-w", "json"],
    ["get", "l1", "-w", "json"],
    ["lease", "timetolive", "{0}"],
    ["lease", "timetolive", "{0}", "--keys"],
    ["lease", "timetolive", "{0}", "--keys", "-w", "json"],
    ["lease", "timetolive", "{1}", "--keys"],
    ["lease", "timetolive", "{1}", "-w", "json"],
    ["lease", "keep-alive", "--once", "{0}"],
    ["lease", "keep-alive", "{1}", "--once", "-w", "json"],
    ["lease", "revoke", "{0}"],
    ["get", "l", "--prefix"],
    ["lease", "revoke", "{0}"],
    ["lease", "revoke", "{1}", "-w", "json"],
    ["lease", "timetolive", "{0}"],
    ["lease", "timetolive", "{0}", "-w", "json"],
    ["lease", "keep-alive", "--once", "{0}"],
    ["lease", "keep-alive", "{0}"],
    ["lease", "revoke", "123abc"],
    ["lease", "revoke", "zz"],
    ["lease", "revoke"],
    ["lease", "grant"],
    ["lease", "grant", "ten"],
    ["lease", "timetolive"],
    ["lease", "keep-alive"],
    ["lease", "list"],
]


def test_lease_commands_match(two_etcds):
    assert_same(run_both(two_etcds, LEASE_STEPS))


def test_env_vars_match(two_etcds):
    sessions = [Session("etcdctl", two_etcds[0]), Session("fastkvctl", two_etcds[1])]
    results = []
    for s in sessions:
        env = {"ETCDCTL_ENDPOINTS": s.server.url, "ETCDCTL_WRITE_OUT": "json"}
        rows = []
        for args in (["put", "e", "1"], ["get", "e"], ["get", "e", "-w", "simple"]):
            rc, out, err = s.run(args, env=env, endpoints=False)
            rows.append((rc, s.normalise(out), s.normalise(err)))
        results.append(rows)
    assert results[1] == results[0]
    assert '"kvs":[{"key":"ZQ=="' in results[0][1][1]


def test_unreachable_endpoint_matches(two_etcds):
    dead = f"127.0.0.1:{__import__('servers').free_port()}"
    outs = []
    for tool in ("etcdctl", "fastkvctl"):
        s = Session(tool, two_etcds[0])
        t0 = time.monotonic()
        rc, out, err = s.run(["--endpoints", dead, "--dial-timeout", "1s", "--command-timeout", "1s",
                              "get", "x"], endpoints=False)
        outs.append((rc, out, s.normalise(err), time.monotonic() - t0 < 15))
        rc, out, err = s.run(["--endpoints", f"{dead},{s.server.url}", "put", "x", "y"], endpoints=False)
        outs.append((rc, out, s.normalise(err)))
    assert outs[2:] == outs[:2]
    assert outs[0][:3] == (1, "", "Error: context deadline exceeded\n")


def _watch_transcript(tool: str, server, watch_args: list[str], writes: list[list[str]]) -> tuple:
    s = Session(tool, server)
    cmd = tool_command(tool) + ["--endpoints", server.url, "watch"] + watch_args
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=tool_env(tool), cwd=REPO)
    try:
        time.sleep(1.5)  # let the watch be created before writing
        for w in writes:
            rc, _, err = s.run(w)
            assert rc == 0, err
        time.sleep(1.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, s.normalise(out.decode()), s.normalise(err.decode())


WATCH_WRITES = [["put", "w/a", "1"], ["put", "w/a", "2"], ["put", "w/b", "x"], ["put", "other", "o"],
                ["del", "w/a"], ["del", "w/", "--prefix"]]


@pytest.mark.parametrize("watch_args", [
    ["w/a"],
    ["w/", "--prefix", "--prev-kv"],
    ["w/", "--prefix", "-w", "json"],
    ["w/a", "w/c", "--hex"],
    ["w/", "--prefix", "--rev", "1", "--prev-kv", "-w", "json"],
], ids=["key", "prefix-prevkv", "json", "range-hex", "rev-json"])
def test_watch_output_matches(two_etcds, watch_args):
    # both at once (each on its own server): the transcripts wait on fixed sleeps
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(2) as pool:
        want_f = pool.submit(_watch_transcript, "etcdctl", two_etcds[0], watch_args, WATCH_WRITES)
        got_f = pool.submit(_watch_transcript, "fastkvctl", two_etcds[1], watch_args,
                            WATCH_WRITES)
        want, got = want_f.result(), got_f.result()
    assert got == want
    assert want[1], "the watch printed nothing"


def test_watch_errors_match(two_etcds):
    steps = [["put", "c", "1"], ["put", "c", "2"], ["put", "c", "3"]]
    transcripts = run_both(two_etcds, steps)
    assert_same(transcripts)
    rows = []
    for tool, server in (("etcdctl", two_etcds[0]), ("fastkvctl", two_etcds[1])):
        s = Session(tool, server)
        r = []
        # compaction through the gateway, so both members are compacted the same way
        import json
        import urllib.request
        req = urllib.request.Request(server.url + "/v3/kv/compaction",
                                     data=json.dumps({"revision": "3", "physical": True}).encode())
        urllib.request.urlopen(req, timeout=10).read()
        for args in (["watch", "c", "--rev", "2"], ["watch", "c", "--rev", "2", "-w", "json"],
                     ["watch"], ["watch", "a", "b", "--prefix"], ["get", "c", "--rev", "2"]):
            r.append(s.run(args))
        rows.append([(rc, s.normalise(o), s.normalise(e)) for rc, o, e in r])
    assert rows[1] == rows[0]
    assert rows[0][0][0] == 5


def test_auth_matches(two_etcds):
    """--user/--password: a token from /v3/auth/authenticate, sent on every request."""
    for server in two_etcds:
        for args in (["user", "add", "root:pw"], ["auth", "enable"]):
            rc, _, err = Session("etcdctl", server).run(args)
            assert rc == 0, err
    steps = [
        ["--user", "root:pw", "put", "a", "1"],
        ["--user", "root", "--password", "pw", "get", "a"],
        ["--user=root:pw", "get", "a", "-w", "json"],
        ["get", "a"],
        ["put", "a", "2"],
        ["--user", "root:wrong", "get", "a"],
        ["--user", "nobody:pw", "put", "a", "3"],
    ]
    transcripts = run_both(two_etcds, steps)
    assert_same(transcripts)
    assert transcripts[0][1][3] == "a\n1\n"
    assert transcripts[0][3][4] == "Error: etcdserver: user name is empty\n"
