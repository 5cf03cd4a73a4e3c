"""Authentication and RBAC through Debian's etcdctl 3.4 (gRPC): fastkv must answer as etcd 3.4.

* etcd's documented sequence (op-guide/authentication.md): a root user, ``auth
  enable``, a read-only role on a prefix and a user holding it; reads allowed,
  writes refused; ``auth disable``;
* an RBAC matrix: every kind of request etcdctl can send, by a user who may and by
  one who may not (or by nobody), in the same order on a fresh etcd and a fresh
  fastkv, compared after normalising IDs; each step also says what etcd answers
  (allowed, or which error), so a step cannot pass by both servers being wrong alike;
* fastkvctl's ``user``, ``role`` and ``auth`` commands print what etcdctl prints:
  etcdctl against etcd, fastkvctl against fastkv, the same command sequence.

Both servers run with ``--bcrypt-cost 4`` (etcd's minimum) so that the many
authentications (etcdctl authenticates at every run) stay cheap.
"""
from __future__ import annotations

import os
import tempfile

import pytest

from servers import EtcdProcess, FastkvProcess
from test_etcdctl_vs_etcd import Both, Ctl
from test_fastkvctl_vs_etcdctl import Session

pytestmark = pytest.mark.etcd

FAST_AUTH = ["--bcrypt-cost", "4"]
OK = None   # the step succeeds (rc 0)
DENIED = "etcdserver: permission denied"
EMPTY = "etcdserver: user name is empty"
RAW_DENIED = "rpc error: code = Unknown desc = auth: permission denied"
ROOT = ["--user", "root:rootpw"]
ALICE = ["--user", "alice:apw"]
BOB = ["--user", "bob:bpw"]


@pytest.fixture
def both():
    servers = []
    try:
        for cls in (EtcdProcess, FastkvProcess):
            servers.append(cls(extra_args=FAST_AUTH).start())
        yield Both(Ctl("etcd", [servers[0]]), Ctl("fastkv", [servers[1]]))
    finally:
        for s in servers:
            s.cleanup()


def expect(both: Both, args, want, stdin: bytes | None = None, sort: bool = False) -> None:
    """One step on both servers (compared by Both), and what etcd must have answered."""
    e, f = both.step(args, stdin=stdin, sort=sort)
    what = " ".join(args)
    if want is OK:
        assert e.rc == 0, f"etcd refused `{what}`: {e.show()}"
        assert f.rc == 0, f"fastkv refused `{what}`: {f.show()}"
    else:
        assert e.rc != 0 and want in e.err, f"etcd: `{what}` should fail with {want!r}: {e.show()}"
        assert f.rc != 0 and want in f.err, \
            f"fastkv: `{what}` should fail with {want!r}: {f.show()}"


def test_documented_sequence(both):
    """etcd's op-guide: root, auth enable, a read-only role on a prefix, a user with it."""
    for args, want, stdin in [
        (["user", "add", "root", "--interactive=false"], OK, b"rootpw\n"),
        (["user", "grant-role", "root", "root"], OK, None),
        (["role", "add", "readonly"], OK, None),
        (["role", "grant-permission", "readonly", "--prefix=true", "read", "/config/"], OK, None),
        (["role", "get", "readonly"], OK, None),
        (["user", "add", "reader:readerpw"], OK, None),
        (["user", "grant-role", "reader", "readonly"], OK, None),
        (["user", "get", "reader"], OK, None),
        (["put", "/config/a", "1"], OK, None),
        (["auth", "enable"], OK, None),
        (["get", "/config/a"], EMPTY, None),
        (["get", "/config/a", "--user", "reader:readerpw"], OK, None),
        (["get", "/config/", "--prefix", "--user", "reader:readerpw", "-w", "json"], OK, None),
        (["put", "/config/a", "2", "--user", "reader:readerpw"], DENIED, None),
        (["get", "/other", "--user", "reader:readerpw"], DENIED, None),
        (["get", "/config/a", "--user", "reader:wrong"],
         "etcdserver: authentication failed, invalid user ID or password", None),
        (["put", "/config/a", "2", "--user", "root:rootpw"], OK, None),
        (["user", "list", "--user", "reader:readerpw"], DENIED, None),
        (["auth", "disable", "--user", "reader:readerpw"], DENIED, None),
        (["auth", "disable", "--user", "root:rootpw"], OK, None),
        (["put", "/config/a", "3"], OK, None),
        (["get", "/config/a"], OK, None),
    ]:
        expect(both, args, want, stdin)
    both.verify()


SETUP = [
    (["user", "add", "root:rootpw"], OK),
    (["user", "grant-role", "root", "root"], OK),
    (["role", "add", "app"], OK),
    (["role", "grant-permission", "app", "readwrite", "--prefix", "/app/"], OK),
    (["role", "grant-permission", "app", "read", "--prefix", "/ro/"], OK),
    (["role", "grant-permission", "app", "write", "/wo/k"], OK),
    (["user", "add", "alice:apw"], OK),
    (["user", "grant-role", "alice", "app"], OK),
    (["user", "add", "bob:bpw"], OK),
    (["put", "/ro/k", "v"], OK), (["put", "/wo/k", "v"], OK), (["put", "/other/k", "v"], OK),
    (["put", "/app/k", "v"], OK),
    (["auth", "enable"], OK),
    (["lease", "grant", "600"] + ROOT, OK),                  # {0}: holds a key alice may not write
    (["put", "--lease={0}", "/other/x", "1"] + ROOT, OK),
    (["lease", "grant", "600"] + ROOT, OK),                  # {1}: holds one of alice's keys
    (["put", "--lease={1}", "/app/y", "1"] + ROOT, OK),
    (["lease", "grant", "600"] + ROOT, OK),                  # {2}: no keys
]

TXN_OK = b'mod("/app/k") > "0"\n\nput /app/t 1\n\nget /app/t\n\n'
TXN_BAD_COMPARE = b'mod("/other/k") > "0"\n\nput /app/t 1\n\n\n'
TXN_BAD_FAILURE = b'mod("/app/k") > "0"\n\nput /app/t 2\n\nput /ro/k x\n\n'
TXN_READ_OK = b"\nget /app/t\n\n\n"
TXN_READ_BAD = b"\nget /other/k\n\n\n"

MATRIX = [
    # Range: read on the key or range, linearizable or serializable
    (["get", "/app/k"] + ALICE, OK),
    (["get", "/other/k"] + ALICE, DENIED),
    (["get", "/app/k"], EMPTY),
    (["get", "/app/", "--prefix", "-w", "json"] + ALICE, OK),
    (["get", "/ap", "--prefix"] + ALICE, DENIED),
    (["get", "/ro/k", "--consistency=s"] + ALICE, OK),
    (["get", "/other/k", "--consistency=s"] + ALICE, DENIED),
    (["get", "/app/k"] + BOB, DENIED),
    # Put: write; prev_kv also read; a lease whose keys the user may not write
    (["put", "/app/k", "v2"] + ALICE, OK),
    (["put", "/ro/k", "x"] + ALICE, DENIED),
    (["put", "/app/k", "x"], EMPTY),
    (["put", "/app/k", "v3", "--prev-kv"] + ALICE, OK),
    (["put", "/wo/k", "w1"] + ALICE, OK),
    (["put", "/wo/k", "w2", "--prev-kv"] + ALICE, DENIED),
    (["put", "/app/n", "1", "--lease={0}"] + ALICE, DENIED),
    (["put", "/app/n", "1", "--lease={1}"] + ALICE, OK),
    # DeleteRange: write; prev_kv also read
    (["del", "/app/n"] + ALICE, OK),
    (["del", "/ro/k"] + ALICE, DENIED),
    (["del", "/wo/k", "--prev-kv"] + ALICE, DENIED),
    (["del", "/app/", "/app0", "--prev-kv"] + BOB, DENIED),
    (["del", "/app/t", "--prev-kv"] + ALICE, OK),
    # Txn: every compare read, every op (both branches) its own check; read-only txns too
    (["txn"] + ALICE, OK, TXN_OK),
    (["txn"] + ALICE, DENIED, TXN_BAD_COMPARE),
    (["txn"] + ALICE, DENIED, TXN_BAD_FAILURE),
    (["txn"] + ALICE, OK, TXN_READ_OK),
    (["txn"] + ALICE, DENIED, TXN_READ_BAD),
    # Watch: a refused create cancels the watch
    (["watch", "/other/k"] + ALICE,
     "rpc error: code = PermissionDenied desc = etcdserver: permission denied"),
    (["watch", "/app/k"],
     "rpc error: code = InvalidArgument desc = etcdserver: user name is empty"),
    # Leases: revoking needs write on every attached key; grant, TTL, list: no check (etcd 3.4)
    (["lease", "grant", "100"] + ALICE, OK),
    (["lease", "revoke", "{0}"] + ALICE, DENIED),
    (["lease", "revoke", "{1}"] + BOB, DENIED),
    (["lease", "revoke", "{1}"] + ALICE, OK),
    (["lease", "revoke", "{2}"] + BOB, OK),
    (["lease", "timetolive", "{0}", "--keys"] + BOB, OK),
    # Lock: etcdctl's client-side mutex, made of the user's own puts, txns and watches
    (["lock", "/app/l", "echo", "locked"] + ALICE, OK),
    (["lock", "/other/l", "echo", "locked"] + ALICE, DENIED),
    # Maintenance: hash, defragment, snapshot need root (the auth package's raw errors)
    (["endpoint", "hashkv"] + ALICE, RAW_DENIED),
    (["endpoint", "hashkv"] + ROOT, OK),
    (["defrag"] + ALICE, RAW_DENIED),
    (["defrag"] + ROOT, OK),
    (["endpoint", "status"] + BOB, OK),
    (["alarm", "list"] + BOB, OK),
    (["compaction", "2"] + ALICE, OK),                 # etcd 3.4 checks no permission
    (["move-leader", "1"] + ALICE, "etcdserver: bad leader transferee"),   # nor here
    # Membership changes need root
    (["member", "list"] + BOB, OK),
    (["member", "add", "m2", "--learner", "--peer-urls=http://127.0.0.1:1"] + ALICE, DENIED),
    (["member", "add", "m2", "--learner", "--peer-urls=http://127.0.0.1:1"] + ROOT, OK),
    (["member", "update", "{m2}", "--peer-urls=http://127.0.0.1:2"] + ALICE, DENIED),
    (["member", "update", "{m2}", "--peer-urls=http://127.0.0.1:2"] + ROOT, OK),
    (["member", "promote", "{m2}"] + ALICE, DENIED),
    (["member", "promote", "{m2}"] + ROOT,
     "etcdserver: can only promote a learner member which is in sync with leader"),
    (["member", "remove", "{m2}"] + ALICE, DENIED),
    (["member", "remove", "{m2}"] + ROOT, OK),
    # The auth store: root only, except a user's own record and its own roles
    (["user", "list"] + ALICE, DENIED),
    (["user", "list"], EMPTY),
    (["user", "list"] + ROOT, OK),
    (["user", "add", "eve:x"] + ALICE, DENIED),
    (["user", "get", "alice"] + ALICE, OK),
    (["user", "get", "bob"] + ALICE, DENIED),
    (["user", "get", "alice", "--detail"] + ALICE, OK),
    (["user", "grant-role", "alice", "root"] + ALICE, DENIED),
    (["user", "revoke-role", "alice", "app"] + ALICE, DENIED),
    (["user", "delete", "bob"] + ALICE, DENIED),
    (["role", "get", "app"] + ALICE, OK),
    (["role", "get", "root"] + ALICE, DENIED),
    (["role", "list"] + ALICE, DENIED),
    (["role", "add", "r2"] + ALICE, DENIED),
    (["role", "grant-permission", "app", "readwrite", "/other/k"] + ALICE, DENIED),
    (["role", "revoke-permission", "app", "/wo/k"] + ALICE, DENIED),
    (["role", "delete", "app"] + ALICE, DENIED),
    (["auth", "disable"] + ALICE, DENIED),
    (["auth", "enable"] + ALICE, DENIED),             # even when it would change nothing
    # root cannot be locked out
    (["user", "delete", "root"] + ROOT, "etcdserver: invalid auth management"),
    (["user", "revoke-role", "root", "root"] + ROOT, "etcdserver: invalid auth management"),
    (["role", "delete", "root"] + ROOT, "etcdserver: invalid auth management"),
    # a permission change applies at once; the next authentication sees it
    (["role", "revoke-permission", "app", "--prefix", "/app/"] + ROOT, OK),
    (["get", "/app/k"] + ALICE, DENIED),
    (["role", "grant-permission", "app", "readwrite", "--prefix", "/app/"] + ROOT, OK),
    (["get", "/app/k"] + ALICE, OK),
    (["user", "passwd", "alice", "--interactive=false"] + ROOT, OK, b"apw2\n"),
    (["get", "/app/k"] + ALICE,
     "etcdserver: authentication failed, invalid user ID or password"),
    (["get", "/app/k", "--user", "alice:apw2"], OK),
    (["auth", "disable"] + ROOT, OK),
    (["get", "/app/k"], OK),
]


def test_rbac_matrix(both):
    snap_dir = tempfile.mkdtemp(prefix="auth-snap-")
    try:
        for args, want in SETUP:
            expect(both, args, want)
        for step in MATRIX:
            args, want = step[0], step[1]
            stdin = step[2] if len(step) > 2 else None
            expect(both, args, want, stdin, sort=args[:2] in (["lease", "list"],))
        # snapshot save: root only (after auth disable every user may: check it before)
        expect(both, ["auth", "enable"] + ROOT, OK)
        expect(both, ["snapshot", "save", os.path.join(snap_dir, "a.db"), "--user", "alice:apw2"],
               RAW_DENIED)
        e, f = both.step(["snapshot", "save", os.path.join(snap_dir, "b.db")] + ROOT)
        assert e.rc == 0 and f.rc == 0, (e.show(), f.show())
    finally:
        import shutil
        shutil.rmtree(snap_dir, ignore_errors=True)
    both.verify()


# ---------------------------------------------------------------- fastkvctl

CLI_STEPS = [
    ["user", "add", "root:rootpw"],
    ["user", "add", "root:x"],
    (["user", "add", "carol", "--interactive=false"], b"cpw extra\n", None),
    ["user", "grant-role", "root", "root"],
    ["role", "add", "ro"],
    ["role", "add", "ro"],
    ["role", "grant-permission", "ro", "--prefix=true", "read", "/foo/"],
    ["role", "grant-permission", "ro", "bogus", "/foo/"],
    ["role", "grant-permission", "ro", "read"],
    ["user", "add", "alice", "--new-user-password=apw"],
    ["user", "add", ":pw"],
    ["user", "add"],
    ["user", "add", "nopw", "--no-password"],
    ["user", "grant-role", "alice", "ro"],
    ["user", "grant-role", "alice", "nosuch"],
    ["user", "grant-role", "alice"],
    ["user", "get", "alice"],
    ["user", "get", "alice", "-w", "json"],
    ["user", "get", "alice", "--detail"],
    ["user", "get", "alice", "--detail", "-w", "json"],
    ["user", "get", "nobody"],
    ["role", "get", "ro"],
    ["role", "get", "ro", "-w", "json"],
    ["role", "get", "nosuch"],
    ["role", "add", "rw"],
    ["role", "grant-permission", "rw", "readwrite", "/a", "/c"],
    ["role", "grant-permission", "rw", "write", "--from-key", "/z"],
    ["role", "grant-permission", "rw", "read", "--prefix", ""],
    ["role", "grant-permission", "rw", "READ", "k1", "-w", "json"],
    ["role", "grant-permission", "rw", "read", "--prefix", "/p", "/q"],
    ["role", "grant-permission", "rw", "read", "--from-key", "/p", "/q"],
    ["role", "grant-permission", "rw", "read", "--from-key", "--prefix", "/p"],
    ["role", "get", "rw"],
    ["role", "get", "rw", "-w", "json"],
    ["role", "list"],
    ["role", "list", "-w", "json"],
    ["user", "list"],
    ["user", "list", "-w", "json"],
    ["user", "list", "extra"],
    ["role", "revoke-permission", "rw", "/a", "/c"],
    ["role", "revoke-permission", "rw", "--from-key", "/z"],
    ["role", "revoke-permission", "rw", "--prefix", ""],
    ["role", "revoke-permission", "rw", "k1", "-w", "json"],
    ["role", "revoke-permission", "rw", "/nonexist"],
    ["role", "revoke-permission", "rw"],
    ["user", "revoke-role", "alice", "nosuch"],
    (["user", "passwd", "alice", "--interactive=false"], b"apw\n", None),
    ["auth", "enable", "extra"],
    ["auth", "enable"],
    ["put", "/foo/a", "1"],
    ["--user", "root:rootpw", "put", "/foo/a", "1"],
    ["--user", "alice:apw", "get", "/foo/a"],
    ["--user", "alice", "--password", "apw", "get", "/foo/a"],
    ["--user", "alice:apw", "put", "/foo/a", "2"],
    ["--user", "alice:bad", "get", "/foo/a"],
    ["--user", "nopw:x", "get", "/foo/a"],
    ["--user", "alice:apw", "user", "list"],
    ["--user", "alice:apw", "user", "get", "alice"],
    ["--user", "alice:apw", "role", "get", "ro"],
    ["--user", "alice:apw", "role", "get", "rw"],
    ["--user", "root:rootpw", "user", "delete", "root"],
    ["--user", "root:rootpw", "role", "delete", "root"],
    ["--user", "root:rootpw", "user", "revoke-role", "root", "root"],
    ["--user", "root:rootpw", "user", "delete", "nopw"],
    ["--user", "root:rootpw", "role", "delete", "rw"],
    ["--user", "root:rootpw", "user", "revoke-role", "alice", "ro", "-w", "json"],
    ["--user", "root:rootpw", "auth", "disable", "-w", "json"],
    ["--user", "alice:apw", "get", "/foo/a"],
    ["get", "/foo/a"],
    ["user", "delete", "alice"],
    ["auth", "disable"],
    ["user", "delete", "root"],
    ["auth", "enable"],
    ["user", "add", "root:rootpw"],
    ["auth", "enable"],
    ["--user", "root:rootpw", "role", "list"],
    ["--user", "root:rootpw", "auth", "disable"],
    ["user"],
    ["role", "nosuch"],
]


def test_fastkvctl_user_role_auth_print_as_etcdctl():
    """etcdctl against etcd and fastkvctl against fastkv: the same transcript."""
    servers = []
    try:
        for cls in (EtcdProcess, FastkvProcess):
            servers.append(cls(extra_args=FAST_AUTH).start())
        sessions = [Session("etcdctl", servers[0]), Session("fastkvctl", servers[1])]
        for i, step in enumerate(CLI_STEPS):
            args, stdin, env = step if isinstance(step, tuple) else (step, b"", None)
            results = []
            for s in sessions:
                rc, out, err = s.run(args, stdin, env)
                results.append((rc, s.normalise(out), s.normalise(err)))
            assert results[1] == results[0], (
                f"step {i} `{' '.join(args)}` differs\n etcdctl:   {results[0]!r}\n"
                f" fastkvctl: {results[1]!r}")
    finally:
        for s in servers:
            s.cleanup()
