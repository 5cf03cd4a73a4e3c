"""Real server processes for tests: fastkv and Debian's etcd 3.4, on loopback.

Every process is bound to 127.0.0.1 on free ports, and stopped by the fixture
that started it (also when the test fails).
"""
from __future__ import annotations

import abc
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nobody listens on now, and not handed out before by this process
    (the kernel may offer a port again once it is released, and the members of a
    cluster get their ports before any of them binds)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


@contextlib.contextmanager
def inprocess_member(*extra_args: str):
    """One single-member fastkv Server in this process, on its own event loop (not
    started by `python -m fastkv`): for tests that call the server's methods directly
    next to its network front. Yields (loop, server, client_url); stops it after."""
    from fastkv import config
    from fastkv.server import Server
    tmp = tempfile.mkdtemp(prefix="fastkv-inproc-")
    cu, pu = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    cfg = config.parse(["--data-dir", tmp, "--listen-client-urls", cu,
                        "--advertise-client-urls", cu, "--listen-peer-urls", pu,
                        "--initial-advertise-peer-urls", pu, "--initial-cluster",
                        f"default={pu}", "--log-level", "error", *extra_args], {})
    loop = asyncio.new_event_loop()
    server = Server(cfg)
    try:
        loop.run_until_complete(server.start())
        yield loop, server, cu
    finally:
        loop.run_until_complete(server.stop())
        loop.close()
        shutil.rmtree(tmp, ignore_errors=True)


class ServerProcess(abc.ABC):
    """A server started as a child process; `url` is its client URL."""

    name = "server"

    def __init__(self, data_dir: str | None = None, extra_args=(), env=None, *,
                 name: str = "default", initial_cluster: str | None = None,
                 cluster_state: str = "new", token: str | None = None):
        self.client_port = free_port()
        self.peer_port = free_port()
        self.url = f"http://127.0.0.1:{self.client_port}"
        self.peer_url = f"http://127.0.0.1:{self.peer_port}"
        self.member_name = name
        self.initial_cluster = initial_cluster
        self.cluster_state = cluster_state
        self.token = token
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix=f"{self.name}-test-")
        self.extra_args = list(extra_args)
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(tempfile.gettempdir(),
                                     f"{self.name}-{self.client_port}.log")

    @abc.abstractmethod
    def command(self) -> list[str]:
        """The argv that starts this kind of server."""

    def flags(self) -> list[str]:
        flags = [
            "--name", self.member_name,
            "--data-dir", os.path.join(self.data_dir, "member"),
            "--listen-client-urls", self.url,
            "--advertise-client-urls", self.url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster or f"{self.member_name}={self.peer_url}",
            "--initial-cluster-state", self.cluster_state,
        ]
        if self.token:
            flags += ["--initial-cluster-token", self.token]
        return flags + self.extra_args

    def launch(self) -> "ServerProcess":
        """Start the process without waiting for it (cluster members start together)."""
        env = dict(os.environ)
        env.update(self.env or {})
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, cwd=REPO)
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def start(self, timeout: float = 30.0) -> "ServerProcess":
        self.launch()
        return self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 30.0) -> "ServerProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not become healthy: {self.log()}")

    def log(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-4000:].decode(errors="replace")
        except OSError:
            return ""

    def kill(self, sig=signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if getattr(self, "_log", None):
            self._log.close()

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


class FastkvProcess(ServerProcess):
    name = "fastkv"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "fastkv"] + self.flags()


class EtcdProcess(ServerProcess):
    name = "etcd"

    def command(self) -> list[str]:
        etcd = shutil.which("etcd")
        if etcd is None:
            raise RuntimeError("etcd is not installed: ci/test installs Debian's etcd-server")
        return [etcd] + self.flags()


class Cluster:
    """n members of one kind (FastkvProcess or EtcdProcess) on loopback, started together.

    ``stop()`` stops every member ever started, also members added later."""

    def __init__(self, kind=None, size: int = 3, extra_args=(), token: str | None = None,
                 data_root: str | None = None):
        self.kind = kind or FastkvProcess
        self.data_root = data_root
        self.extra_args = list(extra_args)
        self.token = token or f"tok-{os.getpid()}-{free_port()}"
        self.members: list[ServerProcess] = []
        names = [f"m{i}" for i in range(size)]
        procs = [self.kind(data_dir=self._data_dir(n), name=n, extra_args=self.extra_args,
                           token=self.token) for n in names]
        initial = ",".join(f"{p.member_name}={p.peer_url}" for p in procs)
        for p in procs:
            p.initial_cluster = initial
        self.members = procs
        self._all = list(procs)

    def start(self, timeout: float = 60.0) -> "Cluster":
        try:
            for m in self.members:
                m.launch()
            for m in self.members:
                m.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def new_member(self, name: str) -> ServerProcess:
        """A process for a member to be added at run time (state existing)."""
        p = self.kind(data_dir=self._data_dir(name), name=name, extra_args=self.extra_args,
                      token=self.token, cluster_state="existing")
        live = [m for m in self.members if m.proc is not None]
        p.initial_cluster = ",".join(f"{m.member_name}={m.peer_url}" for m in live + [p])
        self._all.append(p)
        return p

    def _data_dir(self, name: str) -> str | None:
        if self.data_root is None:
            return None   # the process makes (and removes) its own temporary dir
        path = os.path.join(self.data_root, name)
        os.makedirs(path, exist_ok=True)
        return path

    @property
    def urls(self) -> list[str]:
        return [m.url for m in self.members]

    def stop(self) -> None:
        for m in self._all:
            try:
                m.cleanup()
            except Exception:
                pass


def wait_until(fn, what: str, timeout: float = 30.0, interval: float = 0.2):
    """Poll fn() until it returns something true (returned) or the deadline passes
    (an AssertionError naming what was awaited)."""
    deadline = time.monotonic() + timeout
    while True:
        res = fn()
        if res or time.monotonic() > deadline:
            assert res, f"timed out waiting for {what}"
            return res
        time.sleep(interval)


@contextlib.contextmanager
def running_cluster(kind=None, size: int = 3, extra_args=()):
    """A started Cluster, every member stopped on exit (also on failure)."""
    c = Cluster(kind, size, extra_args=extra_args)
    try:
        yield c.start()
    finally:
        c.stop()


# ---- Client libraries driven from a child interpreter ---------------------------------------
#
# Python etcd clients (etcd3, aetcd) ship their own generated etcd protobuf modules. They
# register the same names (etcdserverpb.*, mvccpb.*) in protobuf's default descriptor pool
# as fastkv.proto and as each other, so whichever is imported second in a process fails.
# Their tests therefore run each scenario in a child: `python SCRIPT SCENARIO SERVER_JSON`.

class Scenarios(dict):
    """Scenario name -> function; calling it on a function (as a decorator) registers it."""

    def __call__(self, fn):
        self[fn.__name__] = fn
        return fn


def serve(kind: str):
    """For a fixture: yield a fresh single member, "fastkv" or "etcd"; clean it up after."""
    srv = (FastkvProcess if kind == "fastkv" else EtcdProcess)().start()
    try:
        yield srv
    finally:
        srv.cleanup()


def run_scenario_child(script: str, scenario: str, srv: ServerProcess, env=None,
                       timeout: float = 60.0) -> None:
    """Run one scenario of `script` against `srv` in a child interpreter; an AssertionError
    with the child's output unless it exits 0."""
    import json
    info = {"kind": srv.name, "url": srv.url, "peer_url": srv.peer_url, "name": srv.member_name}
    child_env = dict(os.environ)
    child_env.update(env or {})
    try:
        p = subprocess.run([sys.executable, script, scenario, json.dumps(info)], env=child_env,
                           cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"") + (exc.stderr or b"")
        raise AssertionError(f"{scenario} against {srv.name}: no result in {timeout:.0f}s\n"
                             f"{out.decode(errors='replace')}") from None
    if p.returncode != 0:
        out = (p.stdout + p.stderr).decode(errors="replace")
        raise AssertionError(f"{scenario} against {srv.name} (exit {p.returncode}):\n{out}")


def scenario_child_main(scenarios: Scenarios, run) -> None:
    """The child's side: `run(fn, info)` the scenario named by argv[1] (info: argv[2] as a
    namespace with host and port added). On failure print the traceback and the locals of the
    innermost frame in the script, exit 1; else exit 0 (os._exit: client threads never hold us up)."""
    import json
    import traceback
    import types
    import urllib.parse
    info = types.SimpleNamespace(**json.loads(sys.argv[2]))
    u = urllib.parse.urlsplit(info.url)
    info.host, info.port = u.hostname, u.port
    code = 0
    try:
        run(scenarios[sys.argv[1]], info)
    except BaseException as exc:   # noqa: BLE001 - everything is reported to the parent
        code = 1
        text = "".join(traceback.format_exception(exc))
        frame, tb = None, exc.__traceback__
        script = os.path.abspath(sys.argv[0])
        while tb is not None:
            if os.path.abspath(tb.tb_frame.f_code.co_filename) == script:
                frame = tb.tb_frame
            tb = tb.tb_next
        if frame is not None:
            text += f"\nlocals of {frame.f_code.co_name}:\n" + "".join(
                f"  {k} = {_short_repr(v)}\n" for k, v in frame.f_locals.items())
        sys.stderr.write(text)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _short_repr(value, limit: int = 400) -> str:
    try:
        r = repr(value)
    except Exception as exc:   # noqa: BLE001
        r = f"<repr failed: {exc!r}>"
    return r if len(r) <= limit else r[:limit] + "..."
