"""fastkv's pytest plugin: a real, temporary etcd-compatible server for an application's tests.

Installed with fastkv (entry point ``pytest11: fastkv``), so ``pip install fastkv`` is all
an application needs; no etcd download. Fixtures (docs/testing.md has the whole story):

``fastkv_server``          a fresh single member for one test (function scope)
``fastkv_server_session``  one member shared by the whole session
``fastkv_cluster``         a fresh 3-member cluster for one test (failover tests)
``fastkv_factory``         session-scoped factory: build servers and clusters for fixtures of
                           any scope (``fastkv_factory.server(...)``, ``.cluster(...)``)

Every member listens on 127.0.0.1 only, on free ports, with a temporary data directory,
and is stopped (its directory removed) at teardown, also when the test failed; whatever
is left (a member started by hand and never closed) is stopped when Python exits.

A member runs as a child process ``python -m fastkv`` by default, or, for a single member,
in the test process on an event loop thread of its own (``--fastkv-mode=inprocess``, the
ini option ``fastkv_mode`` or ``@pytest.mark.fastkv(mode="inprocess")``). Extra server
flags come from the ini option ``fastkv_flags``, ``--fastkv-flags`` and the marker
``@pytest.mark.fastkv("--enable-v2=true")`` / ``@pytest.mark.fastkv(flags=[...])``, in
that order (a flag given twice: the last one wins, as with etcd).

This module is imported at start-up by every pytest run in an environment where fastkv is
installed, so it imports nothing beyond what pytest itself has loaded; fastkv's server is
imported only when a test asks for an in-process member.
"""
from __future__ import annotations

import atexit
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

__all__ = ["FastkvServer", "FastkvCluster", "FastkvFactory", "FastkvStartError"]

HOST = "127.0.0.1"
MODES = ("subprocess", "inprocess")
DEFAULT_START_TIMEOUT = 30.0   # seconds for a member to answer /health (a cluster: each member)
STOP_TIMEOUT = 10.0            # SIGTERM, then SIGKILL after this
MARKER_KEYS = frozenset({"flags", "mode", "size", "start_timeout"})
_LOG_TAIL = 4000

# Every member started and not yet stopped: stopped at exit whatever happened to the code
# that started it (the fixtures stop theirs at teardown, also after a failure or Ctrl-C).
_live: set = set()
_live_lock = threading.Lock()
_handed_out: set[int] = set()


class FastkvStartError(RuntimeError):
    """A member exited or did not become healthy in time; the message has its log's tail."""


def free_port() -> int:
    """A loopback port nobody listens on now, and not handed out before by this process (a
    cluster's members get their ports before any of them binds)."""
    while True:
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def _as_flags(value) -> list[str]:
    """Flags given as one string ("--a=1 --b", split as a shell would) or as a sequence of
    argv items (taken as they are: a value may hold spaces)."""
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(v) for v in value]


def _http_json(url: str, body: dict | None = None, timeout: float = 2.0):
    """GET (body None) or POST JSON; the decoded answer. OSError/ValueError on failure."""
    import urllib.request
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data,
                                 headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"null")


def _child_env() -> dict[str, str]:
    # fastkv (as etcd) reads its flags also from ETCD_* variables: an application's own
    # ETCD_* settings must not reconfigure the test member.
    return {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}


class FastkvServer:
    """One fastkv member on 127.0.0.1: a child process (mode "subprocess") or a
    fastkv.server.Server on an event loop thread of this process (mode "inprocess").

    ``url`` ("http://127.0.0.1:PORT") serves the v3 JSON gateway, /health, /version, the
    v2 API (with --enable-v2) and gRPC; ``endpoints`` (["127.0.0.1:PORT"]) is the same
    address for gRPC clients and fastkvctl/etcdctl ``--endpoints``.

    Usable as a context manager (started on entry if it is not running, closed on exit).
    ``stop()``/``start()``/``restart()`` keep the ports and the data; ``kill()`` is SIGKILL
    (a crash: the member recovers from its WAL on ``start()``); ``close()`` stops it and
    removes its temporary directory.
    """

    def __init__(self, flags=(), mode: str = "subprocess", *, command=None,
                 name: str = "default", start_timeout: float = DEFAULT_START_TIMEOUT,
                 base_dir: str | None = None, initial_cluster: str | None = None,
                 token: str | None = None):
        if mode not in MODES:
            raise ValueError(f"fastkv mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.name = name
        self.mode = mode
        self.flags = _as_flags(flags)
        self.command = list(command) if command else [sys.executable, "-m", "fastkv"]
        self.start_timeout = start_timeout
        self._own_dir = base_dir is None
        self.base_dir = base_dir or tempfile.mkdtemp(prefix="fastkv-pytest-")
        self.data_dir = os.path.join(self.base_dir, f"{name}.fastkv")
        self.log_path = os.path.join(self.base_dir, f"{name}.log")
        self.initial_cluster = initial_cluster
        self.token = token
        self.host = HOST
        self._pick_ports()
        self._proc: subprocess.Popen | None = None
        self._log_file = None
        self._member_id: str | None = None
        # in-process mode
        self.server = None   # fastkv.server.Server while running in-process
        self.loop = None     # its event loop (own thread)
        self._thread: threading.Thread | None = None
        self._closed = False

    # ---- addresses -------------------------------------------------------------------------

    def _pick_ports(self) -> None:
        self.port = free_port()
        self.peer_port = free_port()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def urls(self) -> list[str]:
        return [self.url]

    @property
    def endpoints(self) -> list[str]:
        return [f"{HOST}:{self.port}"]

    @property
    def peer_url(self) -> str:
        return f"http://{HOST}:{self.peer_port}"

    def argv(self) -> list[str]:
        """The member's flags: ours, then the extra flags (which may override ours)."""
        return [
            "--name", self.name,
            "--data-dir", self.data_dir,
            "--listen-client-urls", self.url,
            "--advertise-client-urls", self.url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster or f"{self.name}={self.peer_url}",
            "--initial-cluster-state", "new",
            *(["--initial-cluster-token", self.token] if self.token else []),
            *self.flags,
        ]

    # ---- state -----------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The child process's pid while it runs (None in-process or when stopped)."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid
        return None

    @property
    def running(self) -> bool:
        if self.mode == "inprocess":
            return self.server is not None
        return self._proc is not None and self._proc.poll() is None

    def healthy(self) -> bool:
        """GET /health answers 200 (the member has a leader)."""
        try:
            return _http_json(self.url + "/health", timeout=1.0).get("health") == "true"
        except (OSError, ValueError, AttributeError):
            return False

    def status(self, timeout: float = 2.0) -> dict:
        """The v3 JSON gateway's /v3/maintenance/status (member_id, leader, raftIndex...)."""
        return _http_json(self.url + "/v3/maintenance/status", {}, timeout=timeout)

    @property
    def member_id(self) -> str:
        """This member's ID as the v3 JSON API spells it (a decimal string)."""
        if self._member_id is None:
            self._member_id = self.status()["header"]["member_id"]
        return self._member_id

    def log(self, limit: int = _LOG_TAIL) -> str:
        """The end of the child's output (empty in-process: its logs go to pytest's capture)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - limit))
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float | None = None) -> "FastkvServer":
        """Start the member (with its data, if it ran before) and wait until it is healthy."""
        if self._closed:
            raise RuntimeError("this fastkv member was closed")
        if self.running:
            return self
        timeout = self.start_timeout if timeout is None else timeout
        if self.mode == "inprocess":
            self._start_inprocess(timeout)
        else:
            self.launch()
            self.wait_healthy(timeout)
        return self

    def launch(self) -> "FastkvServer":
        """Start the child process without waiting for it (cluster members start together)."""
        if self.mode != "subprocess":
            raise RuntimeError("launch() is for subprocess members; use start()")
        self._close_log()
        self._log_file = open(self.log_path, "ab")
        self._proc = subprocess.Popen(self.command + self.argv(), stdin=subprocess.DEVNULL,
                                      stdout=self._log_file, stderr=subprocess.STDOUT,
                                      env=_child_env(), cwd=self.base_dir)
        with _live_lock:
            _live.add(self)
        return self

    def wait_healthy(self, timeout: float | None = None) -> "FastkvServer":
        timeout = self.start_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            if self.mode == "subprocess" and (self._proc is None or self._proc.poll() is not None):
                code = None if self._proc is None else self._proc.returncode
                self.stop()
                raise FastkvStartError(f"fastkv member {self.name} exited with {code}:\n"
                                       f"{self.log()}")
            if self.healthy() and self._answers_as_itself():
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise FastkvStartError(f"fastkv member {self.name} was not healthy within "
                                       f"{timeout:.0f}s:\n{self.log()}")
            time.sleep(0.05)

    def _answers_as_itself(self) -> bool:
        """The member answering on our client port has our peer URL: not another program
        that took the port between free_port() and our member's bind (our member then exits
        with "address already in use", and the factory retries on new ports)."""
        try:
            resp = _http_json(self.url + "/v3/cluster/member/list", {}, timeout=1.0)
            me = resp["header"]["member_id"]
            ok = any(m.get("ID") == me and self.peer_url in m.get("peerURLs", [])
                     for m in resp["members"])
        except (OSError, ValueError, KeyError, TypeError):
            return False
        if ok:
            self._member_id = me
        return ok

    def address_in_use(self) -> bool:
        """Its last start failed because a port was taken meanwhile (retry on new ports)."""
        return "address already in use" in self.log().lower()

    def stop(self) -> None:
        """Stop the member gracefully (SIGTERM; SIGKILL after a while); data is kept."""
        if self.mode == "inprocess":
            self._stop_inprocess()
        elif self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=STOP_TIMEOUT)
        self._close_log()
        with _live_lock:
            _live.discard(self)

    def kill(self) -> None:
        """SIGKILL the child (a crash; ``start()`` recovers it from its WAL)."""
        if self.mode == "inprocess":
            raise RuntimeError("kill() needs a subprocess member; in-process ones only stop()")
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait(timeout=STOP_TIMEOUT)
        self.stop()

    def restart(self, timeout: float | None = None) -> "FastkvServer":
        """stop() then start(): same ports, same data."""
        self.stop()
        return self.start(timeout)

    def close(self) -> None:
        """Stop the member and remove its temporary directory."""
        try:
            self.stop()
        finally:
            self._closed = True
            if self._own_dir:
                shutil.rmtree(self.base_dir, ignore_errors=True)

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> "FastkvServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.pid else ("running" if self.running else "stopped")
        return f"<FastkvServer {self.name} {self.url} {self.mode} {state}>"

    # ---- in-process ------------------------------------------------------------------------

    def run(self, coro, timeout: float = 30.0):
        """In-process mode: run a coroutine (e.g. ``srv.server.put({...})``) on the member's
        event loop and return its result."""
        import asyncio
        if self.loop is None:
            raise RuntimeError("run() needs a running in-process member")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def _start_inprocess(self, timeout: float) -> None:
        import asyncio
        from fastkv import config
        from fastkv.server import Server
        try:   # environ {}: no ETCD_* from the test process
            cfg = config.parse(self.argv(), {})
        except config.ConfigError as exc:
            raise FastkvStartError(f"fastkv member {self.name}: {exc}") from None
        try:
            import uvloop
            loop = uvloop.new_event_loop()
        except ImportError:   # a dependency of fastkv; plain asyncio works too
            loop = asyncio.new_event_loop()
        thread = threading.Thread(target=_run_loop, args=(loop,), daemon=True,
                                  name=f"fastkv-{self.name}-{self.port}")
        thread.start()
        self.loop, self._thread = loop, thread
        with _live_lock:
            _live.add(self)

        async def create_and_start():
            self.server = Server(cfg)
            await self.server.start()

        fut = asyncio.run_coroutine_threadsafe(create_and_start(), loop)
        try:
            fut.result(timeout)
        except BaseException as exc:
            fut.cancel()
            self._stop_inprocess()
            if isinstance(exc, Exception):
                raise FastkvStartError(f"in-process fastkv member {self.name} did not start: "
                                       f"{exc!r}") from exc
            raise

    def _stop_inprocess(self) -> None:
        import asyncio
        loop, thread, server = self.loop, self._thread, self.server
        self.server = None
        if loop is None:
            return
        try:
            if server is not None and not loop.is_closed():
                asyncio.run_coroutine_threadsafe(server.stop(), loop).result(STOP_TIMEOUT * 3)
        finally:
            if not loop.is_closed():
                loop.call_soon_threadsafe(loop.stop)
            if thread is not None:
                thread.join(STOP_TIMEOUT)
            self.loop, self._thread = None, None


def _run_loop(loop) -> None:
    """An in-process member's thread: the loop until stopped, then a clean close."""
    import asyncio
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        try:
            tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in tasks:
                t.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


class FastkvCluster:
    """``size`` fastkv members (child processes) on 127.0.0.1, started together.

    ``members`` (FastkvServer each, named m0, m1...), ``endpoints``/``urls`` of all of them,
    ``leader()``, ``stop_member(i)``/``kill_member(i)``/``restart_member(i)`` for failover
    tests. Clusters always run as processes (a crash is a real one)."""

    def __init__(self, size: int = 3, flags=(), *, command=None,
                 start_timeout: float = DEFAULT_START_TIMEOUT * 2, token: str | None = None):
        if size < 1:
            raise ValueError("a cluster needs at least one member")
        self.size = size
        self.flags = _as_flags(flags)
        self.command = command
        self.start_timeout = start_timeout
        self.base_dir = tempfile.mkdtemp(prefix="fastkv-pytest-cluster-")
        self.token = token or f"fastkv-pytest-{os.getpid()}-{os.path.basename(self.base_dir)}"
        self.members: list[FastkvServer] = []
        self._closed = False
        self._new_members()

    def _new_members(self) -> None:
        for m in self.members:   # a failed attempt: start again from nothing
            m.close()
            shutil.rmtree(m.data_dir, ignore_errors=True)
            try:
                os.remove(m.log_path)
            except OSError:
                pass
        self.members = [FastkvServer(self.flags, "subprocess", command=self.command,
                                     name=f"m{i}", start_timeout=self.start_timeout,
                                     base_dir=self.base_dir, token=self.token)
                        for i in range(self.size)]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for m in self.members:
            m.initial_cluster = initial

    @property
    def endpoints(self) -> list[str]:
        return [e for m in self.members for e in m.endpoints]

    @property
    def urls(self) -> list[str]:
        return [m.url for m in self.members]

    def __len__(self) -> int:
        return len(self.members)

    def __iter__(self):
        return iter(self.members)

    def __getitem__(self, i: int) -> FastkvServer:
        return self.members[i]

    def start(self, timeout: float | None = None, attempts: int = 3) -> "FastkvCluster":
        """Launch every member, then wait until each is healthy (retried on fresh ports if
        another program took one of ours meanwhile)."""
        timeout = self.start_timeout if timeout is None else timeout
        for attempt in range(attempts):
            try:
                for m in self.members:
                    m.launch()
                for m in self.members:
                    m.wait_healthy(timeout)
                return self
            except FastkvStartError:
                retry = (attempt + 1 < attempts
                         and any(m.address_in_use() for m in self.members))
                self.stop()
                if not retry:
                    raise
                self._new_members()
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def leader(self, timeout: float = 10.0) -> FastkvServer:
        """The member that leads now (waits for an election if needed)."""
        return self.members[self.leader_index(timeout)]

    def leader_index(self, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while True:
            ids: dict[str, int] = {}
            votes: dict[str, int] = {}
            for i, m in enumerate(self.members):
                if not m.running:
                    continue
                try:
                    st = m.status(timeout=1.0)
                except (OSError, ValueError):
                    continue
                ids[st["header"]["member_id"]] = i
                m._member_id = st["header"]["member_id"]
                if st.get("leader", "0") not in ("0", "", None):
                    votes[st["leader"]] = votes.get(st["leader"], 0) + 1
            for lead, _n in sorted(votes.items(), key=lambda kv: -kv[1]):
                if lead in ids:   # a live member that others (and itself) call leader
                    return ids[lead]
            if time.monotonic() > deadline:
                raise FastkvStartError(f"no leader among the running members within {timeout}s")
            time.sleep(0.1)

    def followers(self, timeout: float = 10.0) -> list[FastkvServer]:
        lead = self.leader_index(timeout)
        return [m for i, m in enumerate(self.members) if i != lead and m.running]

    def stop_member(self, i: int) -> FastkvServer:
        self.members[i].stop()
        return self.members[i]

    def kill_member(self, i: int) -> FastkvServer:
        self.members[i].kill()
        return self.members[i]

    def restart_member(self, i: int, timeout: float | None = None) -> FastkvServer:
        """Start member i again (stopping it first if it runs): same ports, same data."""
        return self.members[i].restart(timeout)

    def stop(self) -> None:
        for m in self.members:
            try:
                m.stop()
            except Exception:   # noqa: BLE001 - stop the others anyway
                pass

    def close(self) -> None:
        """Stop every member and remove the cluster's temporary directory."""
        try:
            self.stop()
        finally:
            self._closed = True
            for m in self.members:
                m._closed = True
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> "FastkvCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<FastkvCluster {', '.join(self.urls)}>"


class FastkvFactory:
    """Builds started members and clusters with the session's settings (ini/command line)
    plus the flags given; whatever it built and is still running is stopped when the
    session ends. The ``fastkv_factory`` fixture (session scope) is one of these."""

    def __init__(self, mode: str = "subprocess", flags=(), command=None,
                 start_timeout: float = DEFAULT_START_TIMEOUT):
        self.mode = mode
        self.flags = _as_flags(flags)
        self.command = command
        self.start_timeout = start_timeout
        self._made: list = []   # what it built and nobody closed yet

    def _track(self, obj):
        self._made = [o for o in self._made if not o._closed]
        self._made.append(obj)
        return obj

    def server(self, flags=(), mode: str | None = None, start_timeout: float | None = None,
               start: bool = True) -> FastkvServer:
        """A single member (started unless start=False); close() it when done."""
        timeout = start_timeout or self.start_timeout
        for attempt in range(3):
            srv = FastkvServer(self.flags + _as_flags(flags), mode or self.mode,
                               command=self.command, start_timeout=timeout)
            self._track(srv)
            if not start:
                return srv
            try:
                return srv.start()
            except FastkvStartError:
                retry = attempt < 2 and srv.mode == "subprocess" and srv.address_in_use()
                srv.close()
                if not retry:
                    raise
        raise AssertionError("unreachable")

    def cluster(self, size: int = 3, flags=(), start_timeout: float | None = None,
                start: bool = True) -> FastkvCluster:
        """``size`` members started together (unless start=False); close() it when done."""
        c = FastkvCluster(size, self.flags + _as_flags(flags), command=self.command,
                          start_timeout=start_timeout or self.start_timeout * 2)
        self._track(c)
        if start:
            try:
                c.start()
            except BaseException:
                c.close()
                raise
        return c

    def close(self) -> None:
        for obj in reversed(self._made):
            try:
                obj.close()
            except Exception:   # noqa: BLE001 - close the others anyway
                pass
        self._made.clear()


def stop_all() -> None:
    """Stop every member still running (at exit: members started by hand, never closed)."""
    with _live_lock:
        live = list(_live)
    for srv in live:
        try:
            srv.stop()
        except Exception:   # noqa: BLE001
            pass


atexit.register(stop_all)


# ---- pytest hooks and fixtures ---------------------------------------------------------------

def pytest_addoption(parser) -> None:
    group = parser.getgroup("fastkv", "fastkv test servers (fastkv.pytest_plugin)")
    group.addoption("--fastkv-mode", choices=MODES, default=None,
                    help="how fastkv_server runs a member: subprocess (default: python -m "
                         "fastkv) or inprocess (an event loop thread of the test process)")
    group.addoption("--fastkv-flags", default=None, metavar="FLAGS",
                    help="extra etcd flags for every fastkv member, e.g. "
                         "'--enable-v2=true --auto-compaction-retention=1'")
    group.addoption("--fastkv-command", default=None, metavar="CMD",
                    help="the command that starts a member (default: this Python's "
                         "'-m fastkv'); it gets etcd's flags")
    group.addoption("--fastkv-start-timeout", type=float, default=None, metavar="SECONDS",
                    help=f"how long a member may take to become healthy "
                         f"(default {DEFAULT_START_TIMEOUT:.0f})")
    parser.addini("fastkv_mode", "fastkv_server's mode: subprocess or inprocess",
                  default="subprocess")
    parser.addini("fastkv_flags", "extra etcd flags for every fastkv member", type="args",
                  default=[])
    parser.addini("fastkv_command", "the command that starts a fastkv member", type="args",
                  default=[])
    parser.addini("fastkv_start_timeout", "seconds a fastkv member may take to start",
                  default=str(DEFAULT_START_TIMEOUT))


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers",
        "fastkv(*flags, flags=[...], mode='subprocess'|'inprocess', size=3, start_timeout=30): "
        "options of the fastkv_server / fastkv_cluster fixtures for this test")


_items_servers = pytest.StashKey[list]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report gets the end of the logs of the members it used."""
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and rep.when == "call":
        for srv in item.stash.get(_items_servers, []):
            members = srv.members if isinstance(srv, FastkvCluster) else [srv]
            for m in members:
                text = m.log() if m.mode == "subprocess" else ""
                if text:
                    rep.sections.append((f"fastkv {m.name} {m.url} log (end)", text))


def _settings(config) -> dict:
    mode = config.getoption("fastkv_mode") or config.getini("fastkv_mode") or "subprocess"
    if mode not in MODES:
        raise pytest.UsageError(f"fastkv_mode must be one of {', '.join(MODES)}, not {mode!r}")
    flags = list(config.getini("fastkv_flags")) + _as_flags(config.getoption("fastkv_flags"))
    command = (_as_flags(config.getoption("fastkv_command"))
               or list(config.getini("fastkv_command")) or None)
    timeout = config.getoption("fastkv_start_timeout")
    if timeout is None:
        try:
            timeout = float(config.getini("fastkv_start_timeout"))
        except ValueError:
            raise pytest.UsageError("fastkv_start_timeout must be a number of seconds") from None
    return {"mode": mode, "flags": flags, "command": command, "start_timeout": timeout}


def _options(request) -> dict:
    """This test's options: its fastkv markers (outermost first, so the closest wins) and an
    indirect parametrization of the fixture (a dict of the same keys, or flags)."""
    opts: dict = {"flags": []}
    sources = []
    for mark in reversed(list(request.node.iter_markers("fastkv"))):
        sources.append((mark.args, dict(mark.kwargs)))
    param = getattr(request, "param", None)
    if isinstance(param, dict):
        sources.append(((), dict(param)))
    elif param is not None:
        sources.append(((param,) if isinstance(param, str) else tuple(param), {}))
    for args, kwargs in sources:
        unknown = set(kwargs) - MARKER_KEYS
        if unknown:
            raise pytest.UsageError(f"fastkv marker: unknown option(s) {sorted(unknown)}; "
                                    f"known: {sorted(MARKER_KEYS)}")
        opts["flags"] += _as_flags(args) + _as_flags(kwargs.pop("flags", ()))
        opts.update(kwargs)
    return opts


@pytest.fixture(scope="session")
def fastkv_factory(pytestconfig):
    """Session-scoped factory of started members/clusters, for fixtures of any scope:

        @pytest.fixture(scope="module")
        def kv(fastkv_factory):
            with fastkv_factory.server(flags=["--enable-v2=true"]) as srv:
                yield srv
    """
    factory = FastkvFactory(**_settings(pytestconfig))
    try:
        yield factory
    finally:
        factory.close()


def _owned(request, thing):
    """A fixture's body for a server or cluster of this test: known to the test's report
    (its logs on failure), closed afterwards."""
    request.node.stash.setdefault(_items_servers, []).append(thing)
    try:
        yield thing
    finally:
        thing.close()


@pytest.fixture
def fastkv_server(request, fastkv_factory):
    """A fresh single fastkv member for this test; stopped (data removed) afterwards."""
    opts = _options(request)
    srv = fastkv_factory.server(flags=opts["flags"], mode=opts.get("mode"),
                                start_timeout=opts.get("start_timeout"))
    yield from _owned(request, srv)


@pytest.fixture(scope="session")
def fastkv_server_session(fastkv_factory):
    """One fastkv member shared by every test of the session (keep keys apart, e.g. by a
    prefix per test); settings from the ini file and command line only."""
    with fastkv_factory.server() as srv:
        yield srv


@pytest.fixture
def fastkv_cluster(request, fastkv_factory):
    """A fresh fastkv cluster (3 members unless the marker says size=N) for this test."""
    opts = _options(request)
    cluster = fastkv_factory.cluster(size=int(opts.get("size", 3)), flags=opts["flags"],
                                     start_timeout=opts.get("start_timeout"))
    yield from _owned(request, cluster)
