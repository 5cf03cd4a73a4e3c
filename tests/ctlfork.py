"""Run fastkvctl hundreds of times without paying its start-up each time.

The compat suites run fastkvctl ~700 times; a fresh interpreter plus fastkvctl's
imports costs ~0.2 s per run, most of those suites' time. A fork server (one per
test session) imports fastkv.cli once and forks a child per command: the child is
a real process (its own pid, environment, working directory, stdin/stdout/stderr,
signals, exit code), runs the same ``fastkv.cli.main.main()`` as the ``fastkvctl``
entry point, and exits the way the interpreter would (non-daemon threads joined,
atexit handlers run, stdio flushed, SystemExit and KeyboardInterrupt as Python
reports them). What it skips is only the interpreter's start-up and the imports.

    from ctlfork import run
    p = run(["put", "a", "1"], env=env, cwd=REPO, input=b"", timeout=60)
    p.returncode, p.stdout, p.stderr        # a subprocess.CompletedProcess

tests/integration/test_fastkvctl.py and ci/install-check still run the real
``fastkvctl`` program. The server exits when the session ends (tests/conftest.py
calls ``shutdown``) or when its parent dies (its stdin pipe closes); commands still
running then are killed.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# modules fastkvctl imports on demand for common commands: imported once, up front
_WARM = ("fastkv.cli.main", "fastkv.cli.v2.main", "fastkv.cli.printer", "fastkv.cli.transport",
         "fastkv.cli.auth_commands", "fastkv.cli.cluster_commands", "fastkv.cli.txn_command",
         "fastkv.cli.concurrency_commands", "fastkv.cli.snapshot_commands")

_HEADER = struct.Struct("!I")


# ---------------------------------------------------------------- the server side

def _recv_request(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 3)
    if len(data) < _HEADER.size:
        raise ConnectionError("short request")
    (size,) = _HEADER.unpack_from(data)
    body = data[_HEADER.size:]
    while len(body) < size:
        more = conn.recv(size - len(body))
        if not more:
            raise ConnectionError("truncated request")
        body += more
    return json.loads(body), list(fds)


def _exit_code(e: SystemExit) -> int:
    """What the interpreter makes of ``sys.exit(x)``."""
    code = e.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        sys.stderr.write(f"{code}\n")
    except Exception:   # noqa: BLE001 - stderr may be gone
        pass
    return 1


def _child(req: dict, fds: list[int]) -> None:
    """In the forked child: become ``fastkvctl <argv>`` and never return."""
    rc = 1
    try:
        import atexit
        import io
        import threading as th
        import traceback

        for i, fd in enumerate(fds):
            os.dup2(fd, i)
        os.closerange(3, 1 << 16)   # the server's sockets, pidfds and the passed copies
        # the signal dispositions a fresh interpreter starts with
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(req["env"])
        os.chdir(req["cwd"])
        sys.argv = ["fastkvctl"] + req["argv"]
        enc = sys.stdout.encoding
        sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), enc)
        sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)), enc)
        sys.stderr = io.TextIOWrapper(io.BufferedWriter(io.FileIO(2, "w", closefd=False)), enc,
                                      errors="backslashreplace", line_buffering=True)
        from fastkv.cli.main import main
        try:
            rc = _exit_code(SystemExit(main()))
        except SystemExit as e:
            rc = _exit_code(e)
        except KeyboardInterrupt:
            rc = -signal.SIGINT
        except BaseException:   # noqa: BLE001 - as the interpreter: traceback, status 1
            traceback.print_exc()
            rc = 1
        th._shutdown()             # join non-daemon threads, as interpreter exit does
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BrokenPipeError:
                rc = 120
        if rc == -signal.SIGINT:   # Python 3.8+: an uncaught ^C kills the process by SIGINT
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        os._exit(rc if rc >= 0 else 1)


def serve(path: str) -> None:
    import importlib
    import selectors

    for name in _WARM:
        importlib.import_module(name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, ("accept",))
    sel.register(0, selectors.EVENT_READ, ("parent",))
    running: dict[int, tuple[int, socket.socket]] = {}   # pid -> (pidfd, conn)
    sys.stdout.write("ready\n")
    sys.stdout.flush()

    def finish(pid: int) -> None:
        pidfd, conn = running.pop(pid)
        _, status = os.waitpid(pid, 0)
        for fileobj in (pidfd, conn):
            try:
                sel.unregister(fileobj)
            except KeyError:
                pass
        os.close(pidfd)
        try:
            conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
        except OSError:
            pass   # the client gave up on it
        conn.close()

    while True:
        for key, _ in sel.select():
            what = key.data
            if what[0] == "accept":
                conn, _ = listener.accept()
                try:
                    req, fds = _recv_request(conn)
                except (OSError, ValueError):
                    conn.close()
                    continue
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    _child(req, fds)
                for fd in fds:
                    os.close(fd)
                pidfd = os.pidfd_open(pid)
                running[pid] = (pidfd, conn)
                conn.sendall(f"{pid}\n".encode())
                sel.register(pidfd, selectors.EVENT_READ, ("exited", pid))
                sel.register(conn, selectors.EVENT_READ, ("abandoned", pid))
            elif what[0] == "exited":
                finish(what[1])
            elif what[0] == "abandoned":   # the client closed its end: stop the command
                pid = what[1]
                sel.unregister(key.fileobj)
                if pid in running:
                    os.kill(pid, signal.SIGKILL)
            elif what[0] == "parent" and not os.read(0, 4096):   # the tests are over
                for pid in list(running):
                    os.kill(pid, signal.SIGKILL)
                    finish(pid)
                listener.close()
                return


# ---------------------------------------------------------------- the test side

_lock = threading.Lock()
_server: tuple[subprocess.Popen, str, str] | None = None


def _server_path() -> str:
    global _server
    with _lock:
        if _server is None or _server[0].poll() is not None:
            tmp = tempfile.mkdtemp(prefix="fastkvctl-fork-")
            path = os.path.join(tmp, "sock")
            env = dict(os.environ)
            env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
            proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "serve", path],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=REPO)
            if proc.stdout.readline() != b"ready\n":
                proc.kill()
                proc.wait()
                raise RuntimeError("the fastkvctl fork server did not start")
            _server = (proc, path, tmp)
        return _server[1]


def shutdown() -> None:
    """Stop the fork server (and any command still running)."""
    global _server
    with _lock:
        if _server is None:
            return
        proc, path, tmp = _server
        _server = None
    try:
        proc.stdin.close()
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for p in (path,):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
    os.rmdir(tmp)


def _memfd(name: str, data: bytes = b"") -> int:
    fd = os.memfd_create(name)
    if data:
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _read_line(f) -> bytes:
    line = f.readline()
    if not line:
        raise RuntimeError("the fastkvctl fork server closed the connection")
    return line


def run(argv: list[str], *, env: dict, cwd: str = REPO, input: bytes = b"",
        timeout: float = 60) -> subprocess.CompletedProcess:
    """``fastkvctl <argv>`` with that environment and stdin, its output captured;
    like ``subprocess.run(..., capture_output=True, timeout=...)``."""
    fds = [_memfd("stdin", input or b""), _memfd("stdout"), _memfd("stderr")]
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(_server_path())
        body = json.dumps({"argv": list(argv), "env": dict(env), "cwd": cwd}).encode()
        socket.send_fds(conn, [_HEADER.pack(len(body)) + body], fds)
        f = conn.makefile("rb")
        conn.settimeout(30)
        pid = int(_read_line(f))
        conn.settimeout(timeout)
        try:
            rc = int(_read_line(f))
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)
            raise subprocess.TimeoutExpired(["fastkvctl", *argv], timeout) from None
        out = []
        for fd in fds[1:]:
            os.lseek(fd, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            out.append(b"".join(chunks))
        return subprocess.CompletedProcess(["fastkvctl", *argv], rc, out[0], out[1])
    finally:
        conn.close()
        for fd in fds:
            os.close(fd)


FASTKVCTL = [sys.executable, "-m", "fastkv.cli"]   # how the suites spell fastkvctl


def run_command(cmd: list[str], *, env: dict, cwd: str = REPO, input: bytes = b"",
                timeout: float = 60) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True)``, with ``FASTKVCTL + args`` run by
    the fork server."""
    if cmd[:len(FASTKVCTL)] == FASTKVCTL:
        return run(cmd[len(FASTKVCTL):], env=env, cwd=cwd, input=input, timeout=timeout)
    return subprocess.run(cmd, input=input, capture_output=True, timeout=timeout, env=env,
                          cwd=cwd)


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    serve(sys.argv[2])
