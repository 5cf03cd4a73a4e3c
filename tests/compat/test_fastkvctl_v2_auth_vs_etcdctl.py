"""ETCDCTL_API=2 user, role and auth commands: etcdctl and fastkvctl, on etcd 3.4 and
on fastkv (both --enable-v2), side by side.

One sequence of commands (setting auth up, every error each command can print, then
key and member commands with and without --username once auth is on, the guest
role narrowed, and auth switched off again) runs four times, each on a server of
its own started fresh: etcdctl on etcd, fastkvctl on etcd, etcdctl on fastkv and
fastkvctl on fastkv. The four transcripts (exit code, stdout, stderr of every
step) must be the same. Steps with a password prompt (and a sample of the rest)
run fastkvctl as a program; the others in one long-lived interpreter.
"""
from __future__ import annotations

import re
import shlex

import pytest

from servers import EtcdProcess, FastkvProcess
from test_fastkvctl_v2_vs_etcdctl import reset_store, run_tool

pytestmark = pytest.mark.etcd

R = "-u root:rootpw "
A = "-u alice:apw2 "

# "args" or ("args", stdin): a stdin means a process of its own (a password prompt)
STEPS = [
    "auth enable",
    "auth disable",
    "auth enable now",
    "user list",
    "user list extra",
    "role list",
    "user add",
    "user add a b",
    "user add root:rootpw",
    "user add root:rootpw",                  # an update, still "created"
    "user add alice:apw",
    ("user add bob", b"bobpw\n"),
    "user add ed:",
    "user add x:y:z",
    "user get alice",
    "user get nobody",
    "user get root",
    "role add r1",
    "role add r1",
    "role add root",
    "role add",
    "role grant r1",
    "role grant r1 --path foo",
    "role grant r1 --path /foo/../bar/",
    "role grant r1 --path /foo/*",
    "role grant r1 --path /foo/* --read --write",
    "role grant nope --path /x --read",
    "role grant r1 --path /foo/* --readwrite",
    "role grant r1 --path /foo/* -rw",
    "role grant r1 --path /bar --read",
    "role grant r1 --path /w/ --write",
    "role revoke r1 --path /nope --write",
    "role revoke r1 --path /bar --read",
    "role revoke r1 --path /w/ --rw",
    "role revoke nope --path /x --read",
    "role get r1",
    "role get root",
    "role get nope",
    "role get",
    "role list",
    "role list x",
    "role remove nope",
    "role remove root",
    "role add tmp",
    "role remove tmp",
    "user grant alice",
    "user grant alice --roles r1 --roles r2",
    "user grant alice --roles r1",
    "user grant nobody --roles r1",
    "user get alice",                        # r2 is granted but does not exist
    "user list",
    "user revoke alice --roles r2",
    "user revoke alice --roles r2",
    "user get alice",
    "user grant bob --roles r1,r2",
    "user get bob",
    ("user passwd alice", b"apw2\n"),
    ("user passwd nobody", b"x\n"),          # creates the user, then fails on 201
    "user get nobody",
    "user remove nobody",
    "user remove nobody",
    "user passwd",
    # on
    "auth enable",
    "auth enable",
    R + "auth enable",
    "user list",
    "role list",
    "user get alice",
    A + "user list",
    "-u root:bad role get guest",
    R + "user list",
    R + "role list",
    R + "role get guest",
    R + "user get root",
    "set /foo/x 1",                          # the guest role: everything, until narrowed
    "get /foo/x",
    R + "role revoke guest --path /* --rw",
    R + "role get guest",
    "set /foo/y 2",
    "get /foo/x",
    "ls /",
    A + "set /foo/y 2",
    A + "get /foo/y",
    A + "ls /foo",
    A + "ls --recursive /foo",
    A + "ls --sort --recursive /foo/",   # (etcd lists a directory in random order)
    A + "update /foo/y 3",
    A + "rm /foo/y",
    A + "mk /bar 1",
    A + "get /bar",
    A + "rm --recursive /foo",
    "-u alice:wrong get /foo/x",
    "-u nobody:x get /foo/x",
    R + "rm --recursive /foo",
    A + "member list",
    A + "member add m2 http://127.0.0.1:1",
    A + "member update 1234 http://127.0.0.1:1",
    ("-u root member remove 1234", b"rootpw\n"),
    R + "user remove root",
    R + "user remove bob",
    R + "role remove r1",
    R + "user get alice",
    "--debug " + R + "role get r1",
    A + "auth disable",
    R + "auth disable",
    "auth disable",
    "get /foo/x",
    "user remove root",
    "auth enable",
]


def transcript(tool: str, srv) -> list[tuple]:
    """The rows (step, exit code, stdout, stderr); the server's URLs and member ID
    named, store indexes counted from the store's index before the first step."""
    base = reset_store(srv.url)

    def norm(text: str) -> str:
        text = text.replace(srv.url, "URL").replace(srv.peer_url, "PEER")
        text = re.sub(r"^[0-9a-f]{1,16}(?=: name=)", "ID", text, flags=re.M)   # member IDs
        # an error's store index ("[0]": none)
        return re.sub(r"\[([1-9]\d*)\]$", lambda m: f"[<{int(m.group(1)) - base}>]", text,
                      flags=re.M)
    rows = []
    for step in STEPS:
        text, stdin = (step, None) if isinstance(step, str) else step
        args = ["--endpoints", srv.url] + shlex.split(text)
        rc, out, err = run_tool(tool, args, stdin or b"")
        rows.append((text, rc, norm(out), norm(err)))
    return rows


@pytest.fixture
def servers():
    started = []
    try:
        for kind in (EtcdProcess, EtcdProcess, FastkvProcess, FastkvProcess):
            flag = "--enable-v2=true" if kind is EtcdProcess else "--enable-v2"
            started.append(kind(extra_args=[flag]).launch())
        for s in started:
            s.wait_healthy()
        yield started
    finally:
        for s in started:
            s.cleanup()


def test_user_role_auth_commands_match_etcdctl(servers):
    etcd_a, etcd_b, fastkv_a, fastkv_b = servers
    runs = {
        "etcdctl on etcd": transcript("etcdctl", etcd_a),
        "fastkvctl on etcd": transcript("fastkvctl", etcd_b),
        "etcdctl on fastkv": transcript("etcdctl", fastkv_a),
        "fastkvctl on fastkv": transcript("fastkvctl", fastkv_b),
    }
    want = runs.pop("etcdctl on etcd")
    problems = []
    for name, got in runs.items():
        for w, g in zip(want, got):
            if w != g:
                problems.append(f"{name}: step `{w[0]}`\n  etcdctl on etcd: rc={w[1]} "
                                f"out={w[2]!r} err={w[3]!r}\n  {name}: rc={g[1]} out={g[2]!r} "
                                f"err={g[3]!r}")
    assert not problems, f"{len(problems)} differences:\n" + "\n".join(problems[:30])
    # the sequence did what it says (so that a broken server cannot pass by failing alike)
    rows = {}
    for r in want:
        rows.setdefault(r[0], r)     # a step's first run
    assert rows[R + "user list"][1:3] == (0, "alice\nbob\nroot\nx\n")
    assert rows[R + "role list"][1:3] == (0, "guest\nr1\nroot\n")
    assert rows["user list"][1:3] == (0, "")
    assert rows["set /foo/y 2"][1] == 4 and "Insufficient credentials" in rows["set /foo/y 2"][3]
    assert rows[A + "get /foo/y"][1:3] == (0, "2\n")
    assert rows[R + "auth disable"][1:3] == (0, "Authentication Disabled\n")
