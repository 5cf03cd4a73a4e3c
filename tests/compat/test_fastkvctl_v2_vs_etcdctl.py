"""fastkvctl with ETCDCTL_API=2 against Debian's `ETCDCTL_API=2 etcdctl` 3.4.

Both tools run the same commands against the same server (an etcd 3.4 with
--enable-v2=true, a 3-member one for the cluster commands, and a fastkv for a
sanity run) and must print the same stdout and stderr and exit with the same code.

Key commands run as whole sequences, one tool after the other, each on a store
emptied first; indexes are then written relative to the store index the sequence
started from, so both transcripts compare. Remaining TTLs are rounded (a second
may pass) and expiration times masked. Watches, exec-watch and the cluster
commands run both tools at the same time against the same cluster, and compare
as they are (new member IDs and peer URLs named).

fastkvctl runs mostly through its entry point function (fastkv.cli.main:main) in
one long-lived child interpreter, because starting Python for each of several
hundred steps would take minutes; the commands that need a process of their own
(watches, exec-watch, the password prompt, the API switch) and a sample of the
rest run as `python -m fastkv.cli`.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

import pytest
from ctlfork import FASTKVCTL, run_command

from servers import REPO, Cluster, EtcdProcess, FastkvProcess, free_port

pytestmark = pytest.mark.etcd

ETCDCTL = shutil.which("etcdctl")
DEAD = f"http://127.0.0.1:{free_port()}"  # nothing listens here


def tool_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "2"
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


@pytest.fixture(scope="module")
def etcd():
    assert ETCDCTL, "etcdctl is not installed: ci/test installs Debian's etcd-client"
    srv = EtcdProcess(extra_args=["--enable-v2=true"]).start()
    try:
        yield srv
    finally:
        srv.cleanup()


def run_tool(tool: str, args: list[str], stdin: bytes = b"", env: dict | None = None
             ) -> tuple[int, str, str]:
    """One invocation: etcdctl, or fastkvctl (a process forked by tests/ctlfork.py)."""
    cmd = [ETCDCTL] if tool == "etcdctl" else FASTKVCTL
    p = run_command(cmd + args, input=stdin, timeout=60, env=tool_env(env), cwd=REPO)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


# -- the v2 store, directly ------------------------------------------------------------

def http(url: str, method: str, path: str, data: str | None = None, tls=None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url + path, method=method,
                                 data=data.encode() if data is not None else None)
    if data is not None:
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(req, timeout=10, context=tls) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def put(url: str, key: str, value: str | None = None, query: str = "") -> None:
    data = None if value is None else "value=" + urllib.parse.quote_plus(value)
    status, _, body = http(url, "PUT", "/v2/keys/" + urllib.parse.quote(key) + query, data or "")
    assert status in (200, 201), body


def delete(url: str, key: str, query: str = "") -> None:
    status, _, body = http(url, "DELETE", "/v2/keys/" + urllib.parse.quote(key) + query)
    assert status == 200, body


def reset_store(url: str, tls=None) -> int:
    """Remove every key; return the store index the next change follows."""
    _, _, body = http(url, "GET", "/v2/keys/", tls=tls)
    for node in json.loads(body)["node"].get("nodes", []):
        http(url, "DELETE", "/v2/keys" + urllib.parse.quote(node["key"]) + "?recursive=true", tls=tls)
    _, headers, _ = http(url, "GET", "/v2/keys/", tls=tls)
    return int(headers["X-Etcd-Index"])


def store_watchers(url: str) -> int:
    return json.loads(http(url, "GET", "/v2/stats/store")[2])["watchers"]


def wait_until(cond, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


# -- normalising -------------------------------------------------------------------------

class Norm:
    """Indexes counted from ``base`` (the store index before a sequence's first change),
    remaining TTLs rounded up to tens, expiration times masked."""

    def __init__(self, base: int = 0):
        self.base = base

    def idx(self, text: str) -> str:
        n = int(text)
        return f"<{n - self.base}>" if self.base <= n < self.base + 1000000 else text

    def __call__(self, text: str) -> str:
        text = re.sub(r"(Created-Index: |Modified-Index: |Index: |\"createdIndex\":|\"modifiedIndex\":)(\d+)\b",
                      lambda m: m.group(1) + self.idx(m.group(2)), text)
        text = re.sub(r"\[(\d+)\]$", lambda m: f"[{self.idx(m.group(1))}]", text, flags=re.M)
        text = re.sub(r"\[(\d+) != (\d+)\]", lambda m: f"[{self.idx(m.group(1))} != {self.idx(m.group(2))}]",
                      text)
        text = re.sub(r"/(\d{20})\b", lambda m: "/" + self.idx(m.group(1)), text)
        text = re.sub(r"(TTL: |\"ttl\":)(\d+)", lambda m: m.group(1) + str(-(-int(m.group(2)) // 10) * 10), text)
        return re.sub(r'"expiration":"[^"]*"', '"expiration":"<time>"', text)


def expand(step, url: str, base: int, subst: dict | None = None) -> tuple[list[str], bytes, dict | None]:
    """A step: "args" or ("args", stdin[, env]); {ep}, {dead}, {i+N} (the store
    index N changes after the start) and the names in ``subst`` are filled in.
    Without a leading "!", the step runs with --endpoints {ep}."""
    text, stdin, env = (step, b"", None) if isinstance(step, str) else (tuple(step) + (None,))[:3]
    raw = text.startswith("!")
    text = text[1:] if raw else text
    text = re.sub(r"\{i\+(\d+)\}", lambda m: str(base + int(m.group(1))), text)
    names = {"{ep}": url, "{dead}": DEAD, **{"{%s}" % k: v for k, v in (subst or {}).items()}}

    def fill(a: str) -> str:
        for name, value in names.items():
            a = a.replace(name, value)
        return a
    args = [fill(a) for a in shlex.split(text)]
    if env:
        env = {k: fill(v) for k, v in env.items()}
    return (args if raw else ["--endpoints", url] + args), stdin, env


def transcript(tool: str, url: str, steps, subst: dict | None = None,
               tls=None) -> list[tuple]:
    base = reset_store(url, tls)
    norm = Norm(base)
    rows = []
    for step in steps:
        args, stdin, env = expand(step, url, base, subst)
        rc, out, err = run_tool(tool, args, stdin, env)
        rows.append((step, rc, norm(out), norm(err)))
    return rows


def assert_same(want: list[tuple], got: list[tuple]) -> None:
    diffs = [f"step `{w[0]}`\n  etcdctl:   rc={w[1]} out={w[2]!r} err={w[3]!r}\n"
             f"  fastkvctl: rc={g[1]} out={g[2]!r} err={g[3]!r}"
             for w, g in zip(want, got) if w != g]
    assert not diffs, f"{len(diffs)} of {len(want)} steps differ:\n" + "\n".join(diffs[:20])


def compare(url: str, steps, subst: dict | None = None, tls=None) -> list[tuple]:
    want = transcript("etcdctl", url, steps, subst, tls)
    got = transcript("fastkvctl", url, steps, subst, tls)
    assert_same(want, got)
    return want


# -- key commands ----------------------------------------------------------------------------

KEY_STEPS = [
    # set: --ttl, --swap-with-value, --swap-with-index; value from stdin; errors
    "set foo bar",
    "get foo",
    "-o extended get foo",
    "-o json get foo",
    "set foo bar2 --ttl 100",
    "-o extended get foo",
    "-o json get foo",
    "--output=json set foo bar3",
    "-o extended set foo bar4",
    "set foo baz --swap-with-value bar4",
    "set foo qux --swap-with-value nope",
    "set foo qux --swap-with-index 1",
    "set foo qux --swap-with-index {i+6}",
    "-o json set foo qux --swap-with-index={i+7} --swap-with-value baz",
    ("set fromstdin", b"line1\nline2\n"),
    "get fromstdin",
    "set nostdin",
    "set",
    "set -- dash -v",
    "get dash",
    "set k v --ttl 0",
    "set k v --ttl -5",
    "set k v --ttl abc",
    "set k v --ttl",
    "set k v --ttl 0x64",
    "-o extended get k",
    "set k v --ttl 010",
    "set k v --ttl 1_0",
    "set k v --ttl 99999999999999999999",
    "set --swap-with-index=x k v",
    "set 'a b' 'v w'",
    "get 'a b'",
    "set 'x?y#z%' '<html>&amp;'",
    "-o json get 'x?y#z%'",
    "set ünï 'ünï\tcode'",
    "-o json get ünï",
    "set a/../dotdot dd",
    "get dotdot",
    "set //s//t// slashes",
    "set trail/ x",
    "set '' x",
    "get ''",
    "set plus 'a+b&c=d%20'",
    "get plus",
    "set k v --ttl 9223372037",
    "-o extended get k",
    # get: --sort, --quorum
    "get nosuch",
    "-o json get nosuch",
    "get --quorum foo",
    "get -q --sort foo",
    "get foo --sort=false",
    "get foo --sort=maybe",
    "get",
    "get foo --bogus",
    "get --bogus foo",
    "get foo extra args",
    # update: --ttl
    "update foo u1",
    "update nosuch u1",
    "update --ttl 50 foo u2",
    "-o extended update foo u3",
    ("update foo", b"u4"),
    "update",
    # mk: --in-order, --ttl
    "mk foo x",
    "mk newkey x",
    "mk --ttl 30 newkey2 x",
    "-o extended get newkey2",
    "mk --in-order q job1",
    "mk --in-order q job2",
    "-o json mk --in-order --ttl 200 q job3",
    ("mk --in-order q", b"job4"),
    "ls --sort q",
    "mk",
    "mk k2",
    # mkdir, setdir, updatedir: --ttl
    "mkdir d",
    "mkdir d",
    "-o json mkdir d2",
    "mkdir --ttl 100 d3",
    "-o extended get d3",
    "mkdir",
    "setdir d",
    "-o extended setdir d4",
    "setdir --ttl 300 d4",
    "-o json get d4",
    "updatedir d",
    "updatedir nosuchdir",
    "-o json updatedir --ttl 200 d",
    "updatedir foo",
    "updatedir",
    "set d/a 1",
    "set d/b/c 2",
    "mkdir d/e",
    # ls: --sort, --recursive, -p, --quorum
    "ls --sort",
    "ls --sort --recursive",
    "ls --sort -r -p",
    "ls --sort -p /",
    "ls --sort -p d",
    "ls --quorum --sort d",
    "ls -q -r --sort d",
    "-o json ls --sort d",
    "-o json ls --sort --recursive d",
    "-o extended ls d",
    "ls d/a",
    "ls nosuch",
    "ls -r --recursive",
    "get d",
    # rm: --dir, --recursive, --with-value, --with-index; rmdir
    "rm d",
    "rm --dir d",
    "rmdir d",
    "ls d2",
    "-o json ls d2",
    "-o extended ls --sort d2",
    "setdir foo",
    "updatedir --ttl 100 foo",
    "rmdir d2",
    "-o json rmdir d/e",
    "rm --dir d3",
    "rm foo --with-value nope",
    "rm foo --with-index 1",
    "rm foo --with-value u4",
    "set foo back",
    "rm foo --with-index {i+1}",
    "-o extended rm foo",
    "rm foo",
    "rm -r d",
    "-o json rm newkey",
    "-o extended rm newkey2",
    "rm --recursive q",
    "rm",
    "rmdir",
    "rm -r",
    "rmdir fromstdin",
    "rm -r --recursive x",
    # not a file, not a dir, root is read only
    "set nf/child x",
    "set nf x",
    "mkdir nf",
    "set nf/child/deeper x",
    "rm /",
    "rm -r /",
    "set / x",
    # output formats
    "-o bogus get k",
    "-o bogus mkdir zz",
    "-o bogus ls --sort",
    "-o json rm -r zz",
    "--output extended -o json get k",
    "-o json -o extended get k",
]


def test_key_commands_match(etcd):
    want = compare(etcd.url, KEY_STEPS)
    by_step = {w[0]: w for w in want if isinstance(w[0], str)}
    assert by_step["get foo"][1:3] == (0, "bar\n")
    assert re.fullmatch(r"Error:  100: Key not found \(/nosuch\) \[<\d+>\]\n", by_step["get nosuch"][3])
    assert by_step["set foo qux --swap-with-value nope"][3].startswith("Error:  101: Compare failed")


FLAG_AND_HELP_STEPS = [
    "!--help", "!-h", "!help", "!h", "!", "!--version", "!-v", "!help help", "!help -h",
    "!nosuch", "!help nosuch", "!--bogus", "!--endpoints", "!-o", "!---x", "!-=",
    "!--debug=maybe ls",
    "!--timeout bad ls", "!--total-timeout=1x ls",
    "!-C a --peers b ls",
    "member", "member --help", "member help", "member h", "member help add", "member help help",
    "member nosuch", "member help nosuch", "member --bogus list", "member list --bogus",
    "member add --bogus", "member list -h", "member add -h x",
    "user", "user --help", "role --help", "auth -h", "help backup", "role grant --help",
    "user grant -h",
] + [f"help {c}" for c in ("backup", "cluster-health", "mk", "mkdir", "rm", "rmdir", "get", "ls", "set",
                           "setdir", "update", "updatedir", "watch", "exec-watch", "member", "user",
                           "role", "auth")] + [
    f"{c} --help" for c in ("cluster-health", "mk", "mkdir", "rm", "rmdir", "get", "ls", "set", "setdir",
                            "update", "updatedir", "watch", "exec-watch")] + [
    "set --ttl", "set --help k v", "rm -h", "get -sort x", "watch --after-index=x k",
    "exec-watch --after-index", "cluster-health --forever=2", "ls -p=maybe",
    "set --ttl 1 --ttl 2 k v",
]


def test_flags_and_help_match(etcd):
    compare(etcd.url, FLAG_AND_HELP_STEPS)


CONNECTION_STEPS = [
    "--no-sync get k",
    "!--peers {ep} get k",
    "!-C {ep} get k",
    "!--endpoint {ep} get k",
    "!--endpoints {ep},{dead} --no-sync get k",
    "!--endpoints {dead} get k",
    "!--endpoints {dead} --no-sync get k",
    "!--endpoints {dead} --no-sync rm k",
    "!--endpoints {dead} --no-sync mk k x",
    "!--endpoints {dead} --no-sync -o json set k x",
    "!--endpoints {dead} ls",
    "!--endpoints {dead} member list",
    "!--endpoints {dead} cluster-health",
    "!--endpoints {dead} watch k",
    "!--endpoints {dead} --no-sync watch k",
    "!--endpoints {dead} --no-sync exec-watch k true",
    "!--endpoints 127.0.0.1:2379 get k",
    "!--endpoints localhost:1 get k",
    "!--endpoints http://127.0.0.1:x get k",
    "!--endpoints {ep}/ --debug get k",
    "!--endpoints {ep}/prefix --no-sync get k",
    "--debug set dbg 'va lue'",
    "--debug --no-sync get dbg",
    "--debug -o json mkdir dbgdir",
    "--debug setdir --ttl 100 dbgdir",
    "--debug mk --in-order dbgdir x",
    "--debug rm dbg",
    "--debug --no-sync ls --sort --recursive -q dbgdir",
    "--debug rm -r --dir dbgdir",
    "--debug --no-sync member list",
    "--debug cluster-health",
    "--total-timeout 0 get k",
    "--no-sync --total-timeout 0 get k",
    "--total-timeout 1ns get k",
    "--timeout 0 get k",
    "--timeout 1ns --no-sync get k",
    "--timeout 1ns get k",
    "--total-timeout=1m --timeout=3s get k",
    "-u root:pass get k",
    "--username=root:pass --debug --no-sync get k",
    "--cert-file /nonexistent get k",
    "--key-file /nonexistent get k",
    "--cert-file /nonexistent --key-file /nonexistent2 get k",
    "--cert-file /etc/hostname --key-file /etc/hostname get k",
    "--ca-file /nonexistent get k",
    "--ca-file /nonexistent cluster-health",
    ("!get k", b"", {"ETCDCTL_ENDPOINTS": "{ep}"}),
    ("!get k", b"", {"ETCDCTL_ENDPOINT": "{ep}"}),
    ("!get k", b"", {"ETCDCTL_PEERS": "{ep}"}),
    ("!--endpoints {dead} get k", b"", {"ETCDCTL_ENDPOINTS": "{ep}"}),
    ("!--peers {dead} get k", b"", {"ETCDCTL_ENDPOINTS": "{ep}"}),
    ("!get k", b"", {"ETCDCTL_ENDPOINT": "{ep}", "ETCDCTL_PEERS": "{dead}"}),
    ("!-C {ep} get k", b"", {"ETCDCTL_ENDPOINT": "{dead}"}),
    ("--debug get k", b"", {"ETCDCTL_USERNAME": "u:p"}),
    ("get k", b"", {"ETCDCTL_CA_FILE": "/nonexistent"}),
    ("get k", b"", {"ETCDCTL_CERT_FILE": "/etc/hostname"}),
    ("get k", b"", {"ETCDCTL_KEY_FILE": "/nonexistent"}),
    ("get k", b"", {"ETCDCTL_CERT_FILE": "/nonexistent", "ETCDCTL_KEY_FILE": "/etc/hostname"}),
]


def test_endpoints_and_connections_match(etcd):
    steps = ["set k v"] + CONNECTION_STEPS
    want = compare(etcd.url, steps)
    dead = next(w for w in want if w[0] == "!--endpoints {dead} get k")
    assert dead[1] == 2 and "connection refused" in dead[3]


# -- TLS ------------------------------------------------------------------------------------

def make_certs(tmp: str) -> dict[str, str]:
    """A CA, and server and client certificates it signed (for 127.0.0.1)."""
    openssl = shutil.which("openssl")
    assert openssl, "openssl is not installed (Debian's ca-certificates brings it)"

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=tmp, timeout=60)
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test-ca")
    with open(os.path.join(tmp, "ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
    for name in ("server", "client"):
        run("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", "ext")
    return {n: os.path.join(tmp, n) for n in ("ca.pem", "ca.key", "server.pem", "server.key",
                                              "client.pem", "client.key")}


class TLSEtcd(EtcdProcess):
    """etcd serving its clients over TLS, and asking them for a certificate."""

    def __init__(self, certs: dict[str, str]):
        super().__init__(extra_args=["--enable-v2=true", "--cert-file", certs["server.pem"],
                                     "--key-file", certs["server.key"], "--client-cert-auth",
                                     "--trusted-ca-file", certs["ca.pem"]])
        self.url = self.url.replace("http://", "https://", 1)
        self.tls = ssl.create_default_context(cafile=certs["ca.pem"])
        self.tls.load_cert_chain(certs["client.pem"], certs["client.key"])

    def wait_healthy(self, timeout: float = 30.0) -> "TLSEtcd":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode}: {self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1, context=self.tls) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"etcd did not become healthy: {self.log()}")


TLS_STEPS = [
    "--ca-file {ca} --cert-file {cert} --key-file {key} set tls v",
    "--ca-file {ca} --cert-file {cert} --key-file {key} -o json get tls",
    "--ca-file={ca} --cert-file={cert} --key-file={key} mkdir --ttl 100 tlsdir",
    "--ca-file {ca} --cert-file {cert} --key-file {key} ls --sort -p",
    "--ca-file {ca} --cert-file {cert} --key-file {key} cluster-health",
    "--ca-file {ca} --cert-file {cert} --key-file {key} member list",
    "--ca-file {ca} --cert-file {cert} --key-file {key} --debug --no-sync get tls",
    "--ca-file {ca} get tls",
    "get tls",
    "--cert-file {cert} --key-file {key} get tls",
    "--ca-file {ca} --cert-file {cert} --key-file {cakey} get tls",
    "--ca-file {cert} --cert-file {cert} --key-file {key} get tls",
    "!--endpoints {plain} get tls",
    "!--endpoints {plain} cluster-health",
    ("-o extended get tls", b"", {"ETCDCTL_CA_FILE": "{ca}", "ETCDCTL_CERT_FILE": "{cert}",
                                  "ETCDCTL_KEY_FILE": "{key}"}),
    ("--ca-file {ca} rm -r tlsdir", b"", {"ETCDCTL_CERT_FILE": "{cert}", "ETCDCTL_KEY_FILE": "{key}"}),
]


def test_tls_matches():
    """--ca-file, --cert-file, --key-file (and their ETCDCTL_* variables) against an
    etcd that serves TLS and wants client certificates."""
    tmp = tempfile.mkdtemp(prefix="fastkvctl-v2-tls-")
    srv = None
    try:
        certs = make_certs(tmp)
        srv = TLSEtcd(certs).start()
        subst = {"ca": certs["ca.pem"], "cert": certs["client.pem"], "key": certs["client.key"],
                 "cakey": certs["ca.key"], "plain": srv.url.replace("https://", "http://")}
        want = compare(srv.url, TLS_STEPS, subst, srv.tls)
        assert want[0][1:3] == (0, "v\n")
        assert "remote error: tls: bad certificate" in want[7][3]
        assert "x509: certificate signed by unknown authority" in want[8][3]
    finally:
        if srv is not None:
            srv.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


# -- as a program: the entry point itself ------------------------------------------------------

def test_as_a_program_matches(etcd):
    """`python -m fastkv.cli` itself, for a sample of the commands and what needs a
    process: the password prompt (speakeasy: stty on stdin), the API switch."""
    url = etcd.url
    steps = [
        "!--help", "!--version", "set p v", "-o json get p", "get nosuch", "set --ttl x k v",
        "!nosuch", "ls --sort -r",
        ("-u root get p", b"secret\n"),
        ("--username root get p", b""),
        ("set fromstdin", b"one\ntwo\n"),
        ("!get p", b"", {"ETCDCTL_ENDPOINTS": "{ep}"}),
        ("!--version", b"", {"ETCDCTL_API": "4"}),
    ]
    want = transcript("etcdctl", url, steps, None)
    got = transcript("fastkvctl", url, steps, None)
    assert_same(want, got)
    assert want[8][2] == "Password: \nv\n"
    assert want[-1][1:] == (1, "", "unsupported API version 4\n")


# -- watches ----------------------------------------------------------------------------------

class Background:
    """A tool running until told to stop (SIGINT, as Ctrl-C), output in files."""

    def __init__(self, tool: str, args: list[str], tmp: str, name: str):
        self.out_path = os.path.join(tmp, f"{name}.out")
        self.err_path = os.path.join(tmp, f"{name}.err")
        cmd = ([ETCDCTL] if tool == "etcdctl" else FASTKVCTL) + args
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         env=tool_env(), cwd=REPO)

    def out(self) -> str:
        with open(self.out_path, "rb") as f:
            return f.read().decode(errors="replace")

    def finish(self, interrupt: bool) -> tuple[int, str, str]:
        if interrupt and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise
        with open(self.err_path, "rb") as f:
            return self.proc.returncode, self.out(), f.read().decode(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


WATCHES = {
    # name: (args, runs until interrupted)
    "key": (["watch", "w/a"], False),
    "recursive": (["watch", "--recursive", "w"], False),
    "dir-only": (["watch", "w/d"], True),
    "json-forever": (["-o", "json", "watch", "--forever", "-r", "w"], True),
    "extended-forever": (["-o", "extended", "watch", "-f", "w/a"], True),
    "simple-forever": (["watch", "--forever", "w/a"], True),
    "after-index": (["watch", "--after-index", "{i+0}", "w/a"], False),
    "after-index-forever": (["-o", "json", "watch", "--after-index", "{i+1}", "-r", "-f", "w"], True),
    "no-key": (["watch"], False),
}
EXEC_SCRIPT = ('printf "%s|%s|%s|%s|%s\\n" "$ETCD_WATCH_ACTION" "$ETCD_WATCH_KEY" "$ETCD_WATCH_VALUE" '
               '"$ETCD_WATCH_MODIFIED_INDEX" "${ETCDCTL_API-unset}" >> "$0"; echo "ran for $ETCD_WATCH_KEY"')
# the changes below that each sees: w/a=1, w/b=2, w/d/e=x, w/a=3, delete w/a, w/a=END,
# w/d/e=END under w (making the directory w/d is ignored); w/a=0 (history), 1, 3, delete, END
EXEC_WATCH_EVENTS = {"exec-recursive": 7, "exec-after-index": 5}
EXEC_WATCHES = {
    "exec-recursive": ["exec-watch", "-r", "w", "--", "sh", "-c", EXEC_SCRIPT, "{file}"],
    "exec-after-index": ["exec-watch", "--after-index", "{i+0}", "--", "sh", "-c", EXEC_SCRIPT, "{file}", "w/a"],
}


def test_watch_and_exec_watch_match(etcd):
    """Every watch runs twice, once per tool, all at the same time: they see the same
    events, so their outputs are equal as they are."""
    url = etcd.url
    base = reset_store(url)
    put(url, "w/a", "0")                      # index base+1, before any watch starts
    procs: dict[tuple[str, str], Background] = {}
    tmp = tempfile.mkdtemp(prefix="fastkvctl-v2-watch-")
    try:
        for tool in ("etcdctl", "fastkvctl"):
            for name, (args, _) in WATCHES.items():
                args = [a.replace("{i+0}", str(base)).replace("{i+1}", str(base + 1)) for a in args]
                procs[tool, name] = Background(tool, ["--endpoints", url] + args, tmp, f"{tool}-{name}")
            for name, args in EXEC_WATCHES.items():
                file = os.path.join(tmp, f"{tool}-{name}.events")
                args = [a.replace("{i+0}", str(base)).replace("{file}", file) for a in args]
                procs[tool, name] = Background(tool, ["--endpoints", url] + args, tmp, f"{tool}-{name}")
        # the ones that wait for a change are registered with the store before it changes
        waiting = 2 * (sum(1 for n in WATCHES if n not in ("after-index", "no-key")) + len(EXEC_WATCHES))
        wait_until(lambda: store_watchers(url) >= waiting, f"{waiting} watchers")
        put(url, "w/a", "1")
        put(url, "w/b", "2")
        put(url, "w/d", query="?dir=true")
        put(url, "w/d/e", "x")
        put(url, "w/a", "3", "?ttl=500")
        delete(url, "w/a")
        put(url, "w/a", "END")
        put(url, "w/d/e", "END")

        def settled(tool, name):
            if name in EXEC_WATCHES:  # every command it started has written its line
                path = os.path.join(tmp, f"{tool}-{name}.events")
                count = EXEC_WATCH_EVENTS[name]
                return (os.path.exists(path) and len(open(path).read().splitlines()) == count
                        and procs[tool, name].out().count("ran for ") == count)
            return "END" in procs[tool, name].out()
        for tool in ("etcdctl", "fastkvctl"):
            for name in list(WATCHES) + list(EXEC_WATCHES):
                if name in EXEC_WATCHES or (WATCHES[name][1] and name != "dir-only"):
                    wait_until(lambda: settled(tool, name), f"{tool} {name} to see the last change")
        results = {}
        for (tool, name), p in procs.items():
            until_interrupted = name in EXEC_WATCHES or WATCHES[name][1]
            results[tool, name] = p.finish(interrupt=until_interrupted)
        norm = Norm(base)
        events = {}
        for tool in ("etcdctl", "fastkvctl"):
            for name in EXEC_WATCHES:
                with open(os.path.join(tmp, f"{tool}-{name}.events")) as f:
                    rows = [line.split("|") for line in f.read().splitlines()]
                # action|key|value|modified index|ETCDCTL_API as the command saw it
                events[tool, name] = sorted("|".join(r[:3] + [norm.idx(r[3])] + r[4:]) for r in rows)
    finally:
        for p in procs.values():
            p.kill()
        shutil.rmtree(tmp, ignore_errors=True)

    def watch_norm(text: str) -> str:
        # a wait's X-Etcd-Index is the store index when the (re-)registered wait was
        # answered: a matter of timing, unlike the event itself
        return re.sub(r"\\nIndex: <?\d+>?\\n", r"\\nIndex: <any>\\n", norm(text))
    for name in list(WATCHES) + list(EXEC_WATCHES):
        want, got = results["etcdctl", name], results["fastkvctl", name]
        if name in EXEC_WATCHES:  # the commands run concurrently: their lines in any order
            want = (want[0], sorted(want[1].splitlines()), want[2])
            got = (got[0], sorted(got[1].splitlines()), got[2])
        assert watch_norm(str(got)) == watch_norm(str(want)), f"{name}: etcdctl {want} fastkvctl {got}"
    assert results["etcdctl", "key"][:2] == (0, "1\n")
    assert results["etcdctl", "recursive"][:2] == (0, "[set] /w/a\n1\n")
    assert results["etcdctl", "no-key"] == (1, "", "Error:  key required\n")
    assert events["fastkvctl", "exec-recursive"] == events["etcdctl", "exec-recursive"]
    assert events["fastkvctl", "exec-after-index"] == events["etcdctl", "exec-after-index"]
    assert "set|/w/a|1|<2>|unset" in events["etcdctl", "exec-recursive"]
    assert "set|/w/a|0|<1>|unset" in events["etcdctl", "exec-after-index"]
    assert results["etcdctl", "exec-recursive"][2] == "Ignored dir /w/d change\n"


def test_exec_watch_errors_match(etcd):
    steps = [
        "exec-watch",
        "exec-watch w/a",
        "exec-watch -r w/a",
        "exec-watch --after-index=x w/a true",
    ]
    compare(etcd.url, steps)
    # a command that cannot start ends exec-watch at the first change
    url = etcd.url
    tmp = tempfile.mkdtemp(prefix="fastkvctl-v2-exec-")
    procs = {}
    try:
        for tool in ("etcdctl", "fastkvctl"):
            for name, cmd in (("notfound", "no-such-command-here"), ("nopath", "./no/such/file"),
                              ("noexec", "/etc/hostname")):
                procs[tool, name] = Background(tool, ["--endpoints", url, "exec-watch", cmd, "x/a"], tmp,
                                               f"{tool}-{name}")
        wait_until(lambda: store_watchers(url) >= len(procs), "the exec-watches")
        put(url, "x/a", "1")
        results = {k: p.finish(interrupt=False) for k, p in procs.items()}
    finally:
        for p in procs.values():
            p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    for name in ("notfound", "nopath", "noexec"):
        assert results["fastkvctl", name] == results["etcdctl", name], name
    assert results["etcdctl", "notfound"] == (
        1, "", 'exec: "no-such-command-here": executable file not found in $PATH')


def test_cluster_health_forever_matches(etcd):
    runs = {}
    tmp = tempfile.mkdtemp(prefix="fastkvctl-v2-health-")
    try:
        for tool in ("etcdctl", "fastkvctl"):
            runs[tool] = Background(tool, ["--endpoints", etcd.url, "cluster-health", "--forever"], tmp, tool)
        for p in runs.values():
            wait_until(lambda: "next check after 10 second" in p.out(), "the first health check")
        results = {tool: p.finish(interrupt=True) for tool, p in runs.items()}
    finally:
        for p in runs.values():
            p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    assert results["fastkvctl"] == results["etcdctl"]
    assert results["etcdctl"][0] == 0 and "cluster is healthy\n\nnext check after 10 second...\n\n" in \
        results["etcdctl"][1]


# -- a 3-member cluster --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def etcd_cluster():
    # strict reconfiguration would refuse member add until the members have been
    # connected for 5 s; the check is etcd's, not the tools'
    cluster = Cluster(EtcdProcess, size=3, extra_args=["--enable-v2=true", "--strict-reconfig-check=false"])
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def both(args: list[str]) -> tuple[tuple, tuple]:
    return run_tool("etcdctl", args), run_tool("fastkvctl", args)


def test_cluster_commands_match(etcd_cluster):
    """cluster-health and member list/add/update/remove on one cluster: fastkvctl and
    etcdctl side by side (member IDs and URLs are the cluster's, the same for both)."""
    cl = etcd_cluster
    ep = cl.members[0].url
    steps = [
        [ep, "cluster-health"],
        [",".join(cl.urls), "cluster-health"],
        [ep, "--debug", "cluster-health"],
        [ep, "-o", "json", "cluster-health"],
        [ep, "member", "list"],
        [ep, "member", "list", "extra"],
        [ep, "member", "add"],
        [ep, "member", "add", "n"],
        [ep, "member", "add", "n", "not a url"],
        [ep, "member", "add", "n", "ftp://x:1"],
        [ep, "member", "add", "n", "http://x"],
        [ep, "member", "add", "n", "http://x:1/p"],
        [ep, "member", "add", "n", "http://x:1", "more"],
        [ep, "member", "add", "dup", cl.members[1].peer_url],
        [ep, "member", "remove"],
        [ep, "member", "remove", "abc"],
        [ep, "member", "remove", "m1"],
        [ep, "member", "update"],
        [ep, "member", "update", "abc", "http://127.0.0.1:1"],
        [ep, "member", "update", "abc", "bad"],
        [ep, "member", "update", "abc", ""],
    ]
    for s in steps:
        want, got = both(["--endpoints"] + s)
        assert got == want, f"{s}\n  etcdctl:   {want}\n  fastkvctl: {got}"
    members = both(["--endpoints", ep, "member", "list"])[0][1]
    assert members.count("isLeader=true") == 1 and len(members.splitlines()) == 3

    # one tool adds a member, the other updates and removes it; then the other way round
    added = []
    for adder, other in (("etcdctl", "fastkvctl"), ("fastkvctl", "etcdctl")):
        peer = f"http://127.0.0.1:{free_port()}"
        run = {"etcdctl": lambda a: run_tool("etcdctl", a),
               "fastkvctl": lambda a: run_tool("fastkvctl", a)}
        rc, out, err = run[adder](["--endpoints", ep, "member", "add", "newbie", peer])
        assert rc == 0, err
        new_id = re.search(r"with ID ([0-9a-f]+) to cluster", out).group(1)
        added.append(normalise_added(out, new_id, peer))
        for args in (["member", "list"], ["cluster-health"]):
            want, got = both(["--endpoints", ep] + args)
            assert got == want, f"{args} after adding\n  etcdctl:   {want}\n  fastkvctl: {got}"
            if args == ["member", "list"]:
                assert f"{new_id}[unstarted]: peerURLs={peer}\n" in want[1]
            else:
                assert want[0] == 5 and "is unreachable: no available published client urls" in want[1]
        moved = peer.replace("127.0.0.1", "localhost")
        steps = [(other, ["member", "update", new_id, moved]),
                 (adder, ["member", "list"]),
                 (other, ["member", "remove", new_id]),
                 (adder, ["member", "remove", new_id]),
                 (other, ["member", "remove", new_id])]
        outs = [(tool, run[tool](["--endpoints", ep] + args)) for tool, args in steps]
        assert outs[0][1] == (0, f"Updated member with ID {new_id} in cluster\n", "")
        assert f"{new_id}[unstarted]: peerURLs={moved}\n" in outs[1][1][1]
        assert outs[2][1] == (0, f"Removed member {new_id} from cluster\n", "")
        assert outs[3][1] == outs[4][1] == (
            1, "", f"Couldn't find a member in the cluster with an ID of {new_id}.\n")
    assert added[1] == added[0]
    assert added[0][1].startswith("Added member named newbie with ID <new> to cluster\n\n"
                                  'ETCD_NAME="newbie"\nETCD_INITIAL_CLUSTER="')

    # a member down: degraded, and what a client of the dead member sees
    down = cl.members[2]
    down.stop()
    for s in ([ep, "cluster-health"], [ep, "member", "list"], [down.url, "member", "list"],
              [down.url, "cluster-health"], [down.url, "--no-sync", "get", "nosuch"],
              [f"{down.url},{ep}", "--no-sync", "ls", "/nosuch"]):
        want, got = both(["--endpoints"] + s)
        assert got == want, f"{s}\n  etcdctl:   {want}\n  fastkvctl: {got}"
        if s == [ep, "cluster-health"]:
            assert want[0] == 5 and "cluster is degraded\n" in want[1]


def normalise_added(out: str, new_id: str, peer: str) -> tuple[int, str]:
    """member add's answer with the new member named; the initial cluster list (in
    member ID order, which is random for a new member) sorted."""
    out = out.replace(new_id, "<new>").replace(peer, "<peer>")
    out = re.sub(r'ETCD_INITIAL_CLUSTER="([^"]*)"',
                 lambda m: 'ETCD_INITIAL_CLUSTER="' + ",".join(sorted(m.group(1).split(","))) + '"', out)
    return 0, out


# -- against fastkv ----------------------------------------------------------------------------------

def test_against_fastkv_sanity():
    """The key commands, both tools against a fastkv member: the same output."""
    srv = FastkvProcess(extra_args=["--enable-v2"]).start()
    try:
        for i in range(5):  # a fresh store is at index 0: move on, so steps' literal indexes are not ours
            put(srv.url, f"warmup{i}", "x")
        steps = KEY_STEPS[:60] + ["member list", "cluster-health", "-o json ls --sort -r", "rm -r d"]
        want = compare(srv.url, steps)
        assert next(w for w in want if w[0] == "get foo")[1:3] == (0, "bar\n")
    finally:
        srv.cleanup()
