"""Real server processes for tests: fastkv and Debian's etcd 3.4, on loopback.

Every process is bound to 127.0.0.1 on free ports, and stopped by the fixture
that started it (also when the test fails).
"""
from __future__ import annotations

import abc
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess(abc.ABC):
    """A server started as a child process; `url` is its client URL."""

    name = "server"

    def __init__(self, data_dir: str | None = None, extra_args=(), env=None):
        self.client_port = free_port()
        self.peer_port = free_port()
        self.url = f"http://127.0.0.1:{self.client_port}"
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
        return [
            "--name", "default",
            "--data-dir", os.path.join(self.data_dir, "member"),
            "--listen-client-urls", self.url,
            "--advertise-client-urls", self.url,
            "--listen-peer-urls", f"http://127.0.0.1:{self.peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_port}",
            "--initial-cluster", f"default=http://127.0.0.1:{self.peer_port}",
        ] + self.extra_args

    def start(self, timeout: float = 30.0) -> "ServerProcess":
        env = dict(os.environ)
        env.update(self.env or {})
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, cwd=REPO)
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
