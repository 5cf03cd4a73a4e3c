"""fastkvctl's ``watch`` against real etcdctl 3.4: interactive sessions (``-i``), the
exec-command, ETCDCTL_WATCH_KEY / ETCDCTL_WATCH_RANGE_END, and the argument errors.

Both tools run the same steps at once against the same member (one fastkv for the
module, one etcd 3.4 for the runs that show fastkvctl drives etcd too), so they
see the same events at the same revisions; exit codes, stdout and stderr are
compared after ``clean`` (etcdctl's zap log lines, a Go panic's stack).
Watches that go on are started with Popen and stopped by the test (also when it
fails). The writes start once every watch is made: for the non-interactive ones
the member's watcher gauge says so (a watch made late would catch up with several
revisions in one response, one ETCD_WATCH_REVISION for all); an interactive
session makes each watch before it reads the next line, so a bad line after them
(its complaint on stderr) says they are all there.
"""
from __future__ import annotations

import re
import signal
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from servers import REPO, EtcdProcess, FastkvProcess, wait_until
from test_fastkvctl_more_vs_etcdctl import TOOLS, clean, run, tool_command, tool_env

pytestmark = pytest.mark.etcd


# ---------------------------------------------------------------- servers and processes

@pytest.fixture(scope="module")
def members():
    """One fastkv and one etcd 3.4 for the module, started together."""
    servers = []
    try:
        for kind in (FastkvProcess, EtcdProcess):
            servers.append(kind())
            servers[-1].launch()
        for s in servers:
            s.wait_healthy(30)
        yield servers
    finally:
        for s in servers:
            s.cleanup()


@pytest.fixture
def fastkv(members):
    return members[0]


@pytest.fixture
def etcd(members):
    return members[1]


class Watch:
    """A tool left running: stdin a pipe, stdout and stderr gathered by threads."""

    def __init__(self, tool: str, server, args: list[str], env: dict | None = None):
        self.tool = tool
        self.args = args
        self.p = subprocess.Popen(tool_command(tool) + ["--endpoints", server.url] + args,
                                  env=tool_env(env), cwd=REPO, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out = bytearray()
        self.err = bytearray()
        self.pumps = [threading.Thread(target=self._pump, args=(self.p.stdout, self.out), daemon=True),
                      threading.Thread(target=self._pump, args=(self.p.stderr, self.err), daemon=True)]
        for t in self.pumps:
            t.start()

    @staticmethod
    def _pump(stream, into: bytearray) -> None:
        while True:
            chunk = stream.read1(65536)
            if not chunk:
                return
            into += chunk

    def send(self, text: str) -> None:
        self.p.stdin.write(text.encode())
        self.p.stdin.flush()

    def stdout(self) -> str:
        return bytes(self.out).decode(errors="replace")

    def stderr(self) -> str:
        return clean(bytes(self.err).decode(errors="replace"))

    def finish(self, how: str = "eof", timeout: float = 30) -> tuple[int, str, str]:
        """End it (``eof``: close stdin; ``sigint``: Ctrl-C; ``wait``: it ends by itself)
        and wait: (exit code, stdout, cleaned stderr)."""
        if how == "eof":
            self.p.stdin.close()
        elif how == "sigint" and self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
        rc = self.p.wait(timeout=timeout)   # ("wait": it ends by itself)
        for t in self.pumps:
            t.join(timeout=10)
        return rc, self.stdout(), self.stderr()

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(timeout=10)
        for f in (self.p.stdin, self.p.stdout, self.p.stderr):
            try:
                f.close()
            except OSError:
                pass


class Pair:
    """The same watch with both tools; every process is killed on the way out."""

    def __init__(self, server, args: list[str], env: dict | None = None):
        self.watches: list[Watch] = []
        try:
            for tool in TOOLS:
                self.watches.append(Watch(tool, server, args, env))
        except BaseException:
            self.kill()
            raise

    def send(self, text: str) -> None:
        for w in self.watches:
            w.send(text)

    def wait_out(self, pred, what: str, timeout: float = 30) -> None:
        def ok():
            return all(pred(w.stdout()) for w in self.watches)
        try:
            wait_until(ok, what, timeout=timeout)
        except Exception:
            raise AssertionError(f"{what}: " + "; ".join(
                f"{w.tool} out={w.stdout()!r} err={w.stderr()!r}" for w in self.watches)) from None

    def wait_err(self, text: str, timeout: float = 30) -> None:
        try:
            wait_until(lambda: all(text in w.stderr() for w in self.watches), text, timeout=timeout)
        except Exception:
            raise AssertionError(f"waiting for {text!r} on stderr: " + "; ".join(
                f"{w.tool} out={w.stdout()!r} err={w.stderr()!r}" for w in self.watches)) from None

    def finish(self, how: str = "eof") -> list:
        return [w.finish(how) for w in self.watches]

    def kill(self) -> None:
        for w in self.watches:
            try:
                w.kill()
            except Exception:   # noqa: BLE001 - the others are still stopped
                pass


def ctl(server, *args: str, stdin: bytes = b"") -> str:
    rc, out, err = run("etcdctl", server, list(args), stdin)
    assert rc == 0, err
    return out.decode(errors="replace")


def watchers(server) -> int:
    """The member's etcd_debugging_mvcc_watcher_total: how many watches it has now."""
    import urllib.request
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return int(float(re.search(r"^etcd_debugging_mvcc_watcher_total (\S+)$", text, re.M).group(1)))


def revision(server) -> int:
    out = ctl(server, "get", "nosuch-key", "-w", "json")
    return int(re.search(r'"revision":(\d+)', out).group(1))


def assert_same(results: list, what: str) -> None:
    want, got = results
    assert got == want, f"{what}:\n etcdctl:   {want!r}\n fastkvctl: {got!r}"


# ---------------------------------------------------------------- argument and input errors

KEY_ENV = {"ETCDCTL_WATCH_KEY": "foo"}
BAD_LINES = b"\n   \nfoo bar\nwatch\nwatch a b --prefix\nwatch -- echo\nbogus\r\n\xff\xfe\nprogress\n"
ERROR_CASES = [
    # (args, env, stdin)
    (["watch"], None, b""),
    (["watch", "foo", "--"], None, b""),
    (["watch", "--rev", "3", "--"], None, b""),
    (["watch", "--", "echo"], None, b""),
    (["watch", "--rev", "3"], None, b""),
    (["watch", "a", "b", "--prefix"], None, b""),
    (["watch", "--prefix", "a", "--", "echo", "echo"], None, b""),   # [a, echo) with --prefix
    (["watch", "--rev", "x", "foo"], None, b""),
    (["watch", "foo"], {"ETCDCTL_WATCH_RANGE_END": "z"}, b""),
    (["watch", "-i"], {"ETCDCTL_WATCH_RANGE_END": "z"}, b"watch foo\n"),
    (["watch", "foo"], KEY_ENV, b""),
    (["watch", "foo", "bar"], KEY_ENV, b""),
    (["watch", "foo", "--", "echo", "1"], KEY_ENV, b""),
    (["watch", "bar", "--rev", "2", "--", "echo"], KEY_ENV, b""),
    (["watch", "--"], KEY_ENV, b""),
    (["watch", "--prefix"], {"ETCDCTL_WATCH_KEY": "foo", "ETCDCTL_WATCH_RANGE_END": "zoo"}, b""),
    # interactive: what a request line may get wrong
    (["watch", "-i"], None, b""),
    (["watch", "-i", "ignored", "args"], None, b"watch foo"),            # no newline: EOF
    (["watch", "-i"], None, BAD_LINES),
    (["watch", "-i"], None, b"watch --bogus\n"),
    (["watch", "-i"], None, b"watch --help\n"),
    (["watch", "-i"], None, b"watch -h foo\n"),
    (["watch", "-i"], None, b"watch foo --\n"),
    (["watch", "-i"], None, b"watch --prefix\n"),
    (["watch", "-i"], None, b"watch -ix\n"),
    (["watch", "-i"], None, b"watch -i=\n"),
    (["watch", "-i"], None, b"watch --rev\n"),
    (["watch", "-i"], None, b"watch --rev x foo\n"),
    (["watch", "-i"], None, b"watch ---x\n"),
    (["watch", "-i"], None, b"watch --prefix=maybe foo\n"),
    (["watch", "-i"], None, b"watch -w json foo\n"),               # global flags are not a line's
    (["watch", "-i"], None, b'watch "a\\qb"\n'),                   # argify: invalid syntax (exit 3)
    (["watch", "-i"], None, b"watch 'ab' c d e f\n"),              # argify's slicing panics (exit 2)
    (["watch", "-i"], None, b"watch --rev 0x10 'abc' d\nwatch \"e f\" --prev-kv\n"),
    (["watch", "-i"], KEY_ENV, b"watch foo\n"),
    (["watch", "-i"], KEY_ENV, b"watch -- echo x\nwatch --prefix foo\n"),
]


def _error_row(tool: str, server, case) -> tuple:
    args, env, stdin = case
    rc, out, err = run(tool, server, args, stdin, env=env, timeout=30)
    text = out.decode(errors="replace")
    if "\nOPTIONS:\n" in text:   # usage: fastkvctl has 3.5's --progress-notify (columns move)
        text = re.sub("\t+", "\t", "\n".join(ln for ln in text.split("\n") if "--progress-notify" not in ln))
    return " ".join(args), env, stdin, rc, text, clean(err)


def test_argument_and_input_errors_match(fastkv):
    with ThreadPoolExecutor(8) as pool:
        rows = {tool: list(pool.map(lambda c, t=tool: _error_row(t, fastkv, c), ERROR_CASES))
                for tool in TOOLS}
    for want, got in zip(rows["etcdctl"], rows["fastkvctl"]):
        assert got == want, f"differs:\n etcdctl:   {want!r}\n fastkvctl: {got!r}"
    want = {(r[0], r[2]): r[3:] for r in rows["etcdctl"]}
    assert want[("watch", b"")] == (128, "", "Error: bad number of arguments\n")
    assert want[("watch -- echo", b"")] == (128, "", "Error: bad number of arguments\n")
    assert want[("watch --prefix", b"")] == (128, "", "Error: `range_end` and `--prefix` are mutually exclusive\n")
    assert want[("watch foo --", b"")][2] == "Error: bad number of arguments (found separator --, but no commands)\n"
    assert want[("watch foo", b"")][0] == 128
    assert want[("watch -i", b"")] == (3, "", "Error: Error reading watch request line: EOF\n")
    assert "Invalid command:  (watch and progress supported)\n" in want[("watch -i", BAD_LINES)][2]
    assert want[("watch -i", b"watch --help\n")] == (128, "", "Error: pflag: help requested\n")
    assert want[("watch -i", b'watch "a\\qb"\n')] == (3, "", "Error: invalid syntax\n")
    assert want[("watch -i", b"watch 'ab' c d e f\n")][0] == 2
    assert "-i, --interactive[=false]\tInteractive mode\n" in want[("watch --rev x foo", b"")][1]


# ---------------------------------------------------------------- exec-command, env var forms

ENV_ECHO = ('printf "%s|%s|%s|%s|%s|%s\\n" "$ETCD_WATCH_REVISION" "$ETCD_WATCH_EVENT_TYPE" "$ETCD_WATCH_KEY" '
            '"$ETCD_WATCH_VALUE" "${ETCDCTL_API-unset}" "$#"')
# (watch args, environment, what the output ends with once the END write came)
EXEC_CASES = [
    (["x/ex", "x/ey", "--", "sh", "-c", ENV_ECHO, "zero", "one", "two"], None, '|"END"|unset|2\n'),
    (["x/p", "--prefix", "--prev-kv", "--", "sh", "-c", "echo $ETCD_WATCH_KEY >&2; echo out"], None,
     "END\nout\n"),
    (["d/r", "--", "echo", "echo"], None, "END\necho\n"),             # watches [d/r, echo)
    (["x/n", "x/o", "x/z"], None, "x/n\nEND\n"),                      # no "--": x/n only
    (["x/a", "x/c", "-w", "json"], None, '"value":"RU5E"}}],"CompactRevision":0,"Canceled":false,'
                                         '"Created":false}\n'),
    (["--", "sh", "-c", "echo env $ETCD_WATCH_KEY"],
     {"ETCDCTL_WATCH_KEY": "x/e", "ETCDCTL_WATCH_RANGE_END": "x/g"}, 'env "x/f"\n'),
    (["--prefix", "--hex"], {"ETCDCTL_WATCH_KEY": "x/q"}, "\\x45\\x4e\\x44\n"),
]
EXEC_FAILURES = [
    ["x/f1", "--", "sh", "-c", "echo failing; exit 3"],
    ["x/f2", "--", "no-such-command-for-watch", "arg"],
    ["x/f3", "--", "sh", "-c", "kill -TERM $$"],
    ["x/f4", "--", "./"],
    ["x/f5", "--", "/nonexistent/watch-command"],
]
EXEC_WRITES = [
    ["put", "x/ex", 'a "quoted"\tvalue'], ["put", "x/ex", "\u00e9t\u00e9 \u2603"], ["del", "x/ex"],
    ["put", "x/p1", "1"], ["put", "x/p1", "2"], ["del", "x/p1"],
    ["put", "d/s", "in range"], ["put", "echo", "not in range"],
    ["put", "x/o", "not watched"], ["put", "x/n", "watched"],
    ["put", "x/b", "in"], ["put", "x/c", "out"],
    ["put", "x/e", "e"], ["put", "x/g", "out"], ["put", "x/q1", "q"],
    ["put", "x/f1", "f"], ["put", "x/f2", "f"], ["put", "x/f3", "f"], ["put", "x/f4", "f"], ["put", "x/f5", "f"],
]
EXEC_TXN = b'\nput x/ex2 first\nput x/ex3 second\nput x/p2 p\n\n\n'   # one response, two events
EXEC_ENDS = ["x/ex", "x/p9", "d/s", "x/n", "x/b", "x/f", "x/q9"]


def test_exec_command_and_env_forms_match(fastkv):
    # every watch made before the first write (see the module's docstring)
    wait_until(lambda: watchers(fastkv) == 0, "no watches left from before")
    rev = revision(fastkv) + 1
    pairs = []
    try:
        for args, env, _ in EXEC_CASES:
            pairs.append(Pair(fastkv, ["watch"] + args, env))
        for args in EXEC_FAILURES:
            pairs.append(Pair(fastkv, ["watch"] + args))
        n = 2 * len(pairs)
        wait_until(lambda: watchers(fastkv) == n, f"{n} watches made")
        for w in EXEC_WRITES:
            ctl(fastkv, *w)
        ctl(fastkv, "txn", stdin=EXEC_TXN)
        for key in EXEC_ENDS:
            ctl(fastkv, "put", key, "END")
        for pair, (args, _, tail) in zip(pairs, EXEC_CASES):
            pair.wait_out(lambda out, t=tail: out.endswith(t), f"{args} to end with {tail!r}")
        for pair in pairs[len(EXEC_CASES):]:   # the failing commands end the tools
            wait_until(lambda p=pair: all(w.p.poll() is not None for w in p.watches), "exit", timeout=30)
        results = [pair.finish("sigint") for pair in pairs]
    finally:
        for pair in pairs:
            pair.kill()
    for (args, _, _), res in zip(EXEC_CASES + [(a, None, None) for a in EXEC_FAILURES], results):
        assert_same(res, " ".join(args))
    env_out = results[0][0][1]
    assert env_out.startswith(f'PUT\nx/ex\na "quoted"\tvalue\n{rev}|"PUT"|"x/ex"|"a \\"quoted\\"\\tvalue"|unset|2\n')
    assert '|"PUT"|"x/ex"|"\u00e9t\u00e9 \u2603"|' in env_out and '|"DELETE"|"x/ex"|""|unset|2\n' in env_out
    txn_rev = re.search(r'\n(\d+)\|"PUT"\|"x/ex2"', env_out).group(1)
    assert (f'PUT\nx/ex2\nfirst\nPUT\nx/ex3\nsecond\n{txn_rev}|"PUT"|"x/ex2"|"first"|unset|2\n'
            f'{txn_rev}|"PUT"|"x/ex3"|"second"|unset|2\n') in env_out   # a txn's events, then the runs
    assert results[1][0][2] == '"x/p1"\n"x/p1"\n"x/p1"\n"x/p2"\n"x/p9"\n'   # its stderr is the tool's
    assert "not in range" not in results[2][0][1] and "not watched" not in results[3][0][1]
    fails = results[len(EXEC_CASES):]
    assert fails[0][0][0] == 1 and fails[0][0][1].endswith("failing\n")
    assert fails[0][0][2] == 'command ["sh" "-c" "echo failing; exit 3"] error (exit status 3)\n'
    assert fails[1][0][2].endswith('(exec: "no-such-command-for-watch": executable file not found in $PATH)\n')
    assert fails[2][0][2].endswith("error (signal: terminated)\n")
    assert fails[3][0][2] == 'command ["./"] error (fork/exec ./: permission denied)\n'
    assert fails[4][0][2].endswith("(fork/exec /nonexistent/watch-command: no such file or directory)\n")


# ---------------------------------------------------------------- interactive sessions

def test_interactive_session_matches(fastkv):
    pair = Pair(fastkv, ["watch", "-i"])
    try:
        pair.send("watch s/foo\n"
                  "watch --prefix s/k -- sh -c \"echo EXEC $ETCD_WATCH_REVISION $ETCD_WATCH_EVENT_TYPE "
                  "$ETCD_WATCH_KEY $ETCD_WATCH_VALUE\"\n"
                  "watch --prev-kv s/foo\n"
                  "watch s/a s/c\n"
                  "watch --prev-kv --rev 1 s/p\n"
                  "watch s/x s/y --prefix\n"
                  "\n"
                  "foo bar\n"
                  "watch\n"
                  "watch -- echo\n"
                  "sync-1\n")
        pair.wait_err("Invalid command sync-1 (only support watch)")
        ctl(fastkv, "put", "s/foo", "1")                 # two watches print the same lines
        pair.wait_out(lambda o: o.count("PUT\ns/foo\n1\n") == 2, "s/foo twice")
        ctl(fastkv, "put", "s/k1", 'a b"c')
        rev = revision(fastkv)
        pair.wait_out(lambda o: o.endswith('EXEC %d "PUT" "s/k1" "a b\\"c"\n' % rev), "exec")
        ctl(fastkv, "del", "s/k1")
        pair.wait_out(lambda o: '"DELETE" "s/k1" ""\n' in o, "exec of the delete")
        ctl(fastkv, "txn", stdin=b'\nput s/k2 x\nput s/k3 y\n\n\n')
        pair.wait_out(lambda o: '"PUT" "s/k3" "y"\n' in o, "exec of the txn")
        ctl(fastkv, "put", "s/p", "1")
        ctl(fastkv, "put", "s/p", "2")
        pair.wait_out(lambda o: o.endswith("PUT\ns/p\n1\ns/p\n2\n"), "prev-kv")
        ctl(fastkv, "put", "s/c", "out of range")
        ctl(fastkv, "put", "s/b", "in range")
        pair.wait_out(lambda o: o.endswith("PUT\ns/b\nin range\n"), "range")
        pair.send("progress\n")
        rev = revision(fastkv)
        pair.wait_out(lambda o: o.count("progress notify: %d\n" % rev) == 5, "progress")
        pair.send("watch --prefix s/z -- sh -c 'exit 0'\nwatch s/late\nsync-2\n")
        pair.wait_err("Invalid command sync-2 (only support watch)")
        ctl(fastkv, "put", "s/late", "L")
        pair.wait_out(lambda o: o.endswith("PUT\ns/late\nL\n"), "a watch made later")
        results = pair.finish("eof")
    finally:
        pair.kill()
    assert_same(results, "interactive session")
    rc, out, err = results[0]
    assert rc == 3 and err.endswith("Invalid command sync-2 (only support watch)\n"
                                    "Error: Error reading watch request line: EOF\n")
    assert "Invalid command watch s/x s/y --prefix (`range_end` and `--prefix` are mutually exclusive)\n" in err
    assert "out of range" not in out


def test_interactive_env_key_and_exec_failure_match(fastkv):
    """ETCDCTL_WATCH_KEY and _RANGE_END stand for each line's key; a line that names a key
    too ends the session (exit 128); a failing command ends it with exit 1."""
    pair = Pair(fastkv, ["watch", "-i"], {"ETCDCTL_WATCH_KEY": "v/a", "ETCDCTL_WATCH_RANGE_END": "v/c"})
    try:
        pair.send('watch\nwatch -- sh -c "echo got $ETCD_WATCH_KEY"\nsync\n')
        pair.wait_err("Invalid command sync (only support watch)")
        ctl(fastkv, "put", "v/b", "1")
        pair.wait_out(lambda o: 'got "v/b"\n' in o and o.count("PUT\nv/b\n1\n") == 2, "v/b")
        pair.send("watch v/b\n")
        results = pair.finish("wait")
    finally:
        pair.kill()
    # two watches print at once: the command's line may come before or after the other's
    assert_same([(rc, sorted(out.split("\n")), err) for rc, out, err in results], "env key session")
    assert results[0][0] == 128 and results[0][2].endswith(
        "Error: bad number of arguments (found conflicting environment key)\n")

    pair = Pair(fastkv, ["watch", "-i"])
    try:
        pair.send('watch v/fail -- sh -c "echo running; exit 7"\nsync\n')
        pair.wait_err("Invalid command sync (only support watch)")
        ctl(fastkv, "put", "v/fail", "x")
        results = pair.finish("wait")
    finally:
        pair.kill()
    assert_same(results, "exec failure in a session")
    assert results[0][0] == 1 and "error (exit status 7)\n" in results[0][2]


def test_fastkvctl_interactive_drives_etcd(etcd):
    """fastkvctl -i against etcd 3.4's own gateway, beside etcdctl: a compacted --rev is
    canceled (the session goes on), progress, JSON output."""
    for i in range(3):
        ctl(etcd, "put", "e/c", str(i))
    ctl(etcd, "compact", str(revision(etcd)))
    pair = Pair(etcd, ["-w", "json", "watch", "-i"])
    try:
        pair.send("watch --rev 2 e/c\nwatch --prefix e/k\nsync\n")
        pair.wait_err("Invalid command sync (only support watch)")
        # etcd cancels a compacted watch a moment after making it (its sync loop)
        pair.wait_err("watch was canceled (etcdserver: mvcc: required revision has been compacted)\n")
        ctl(etcd, "put", "e/k1", "v")
        pair.wait_out(lambda o: o.count('"key":"ZS9rMQ=="') == 1, "e/k1")
        pair.send("progress\n")
        rev = revision(etcd)
        pair.wait_out(lambda o: "progress notify: %d\n" % rev in o, "progress")
        results = pair.finish("eof")
    finally:
        pair.kill()
    assert_same(results, "session against etcd")
    assert "watch was canceled (etcdserver: mvcc: required revision has been compacted)\n" in results[0][2]


# ---------------------------------------------------------------- unit: parseWatchArgs

@pytest.mark.parametrize("os_args, command_args, env, interactive, want", [
    (["watch", "foo", "bar"], ["foo", "bar"], ("", ""), False, (["foo", "bar"], [])),
    (["watch", "foo", "bar", "--"], ["foo", "bar"], ("", ""), False,
     "bad number of arguments (found separator --, but no commands)"),
    (["watch"], [], ("k", "e"), False, (["k", "e"], [])),
    (["watch", "foo"], ["foo"], ("k", ""), False, "bad number of arguments (found conflicting environment key)"),
    (["--endpoints", "x", "watch", "--rev", "1", "--", "echo", "hi"], ["echo", "hi"], ("k", ""), False,
     (["k"], ["echo", "hi"])),
    (["watch", "a", "--", "echo", "hi"], ["a", "echo", "hi"], ("k", ""), False,
     "bad number of arguments (found conflicting environment key)"),
    (["watch", "a", "--rev", "1", "b", "--", "echo", "b"], ["a", "b", "echo", "b"], ("", ""), False,
     (["a", "b"], ["echo", "b"])),
    (["watch", "a", "--", "echo", "echo"], ["a", "echo", "echo"], ("", ""), False,
     (["a", "echo"], ["echo", "echo"])),    # the key words end at the last "echo"
    (["watch", "a", "x", "y"], ["a", "x", "y"], ("", ""), False, (["a", "x", "y"], [])),
    (["watch", "-i"], ["watch", "--rev", "0x10", "--prev-kv", "a", "--", "sh", "-c", "x"], ("", ""), True,
     (["a"], ["sh", "-c", "x"], {"rev": 16, "prev-kv": True, "prefix": False})),
    (["watch", "-i"], ["watch", "--prefix"], ("", ""), True, "bad number of arguments"),
    (["watch", "-i"], ["watch", "--prefix"], ("k", ""), True, (["k"], [], {"prefix": True})),
    (["watch", "-i"], ["watch", "a", "--"], ("", ""), True,
     "bad number of arguments (found separator --, but no commands)"),
    (["watch", "-i"], ["watch", "--nope", "a"], ("", ""), True, "unknown flag: --nope"),
    (["watch", "-i"], ["watch", "-ih", "a"], ("", ""), True, "pflag: help requested"),
    (["watch", "-i"], ["watch", "-iq", "a"], ("", ""), True, "unknown shorthand flag: 'q' in -q"),
    (["watch", "-i"], ["watch", "--rev", "9223372036854775808", "a"], ("", ""), True,
     'invalid argument "9223372036854775808" for "--rev" flag: strconv.ParseInt: parsing '
     '"9223372036854775808": value out of range'),
])
def test_parse_watch_args(os_args, command_args, env, interactive, want):
    from fastkv.cli.watch_command import WatchArgsError, parse_watch_args
    if isinstance(want, str):
        with pytest.raises(WatchArgsError) as e:
            parse_watch_args(os_args, command_args, env[0], env[1], interactive)
        assert str(e.value) == want
        return
    watch_args, exec_args, values = parse_watch_args(os_args, command_args, env[0], env[1], interactive)
    assert (watch_args, exec_args) == want[:2]
    if interactive:
        assert {k: values[k] for k in want[2]} == want[2]


def test_watch_create_request_and_argify():
    from fastkv.cli.txn_command import argify
    from fastkv.cli.watch_command import WatchArgsError, watch_create_request
    opts = {"prefix": False, "rev": 0, "prev-kv": False, "progress-notify": False}
    assert watch_create_request(["a", "c", "x"], opts) == {"key": "YQ=="}    # a third word is ignored
    assert watch_create_request(["a", "c"], dict(opts, rev=5, **{"prev-kv": True})) == {
        "key": "YQ==", "range_end": "Yw==", "start_revision": "5", "prev_kv": True}
    assert watch_create_request(["a"], dict(opts, prefix=True)) == {"key": "YQ==", "range_end": "Yg=="}
    with pytest.raises(WatchArgsError, match="mutually exclusive"):
        watch_create_request(["a", "c"], dict(opts, prefix=True))
    with pytest.raises(WatchArgsError, match="^bad number of arguments$"):
        watch_create_request([], opts)
    assert argify('watch "a b" --prefix -- sh -c "echo \\"$X\\""') == [
        "watch", "a b", "--prefix", "--", "sh", "-c", 'echo "$X"']
