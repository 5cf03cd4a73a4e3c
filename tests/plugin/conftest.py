"""Helpers for the tests of fastkv's pytest plugin (fastkv/pytest_plugin.py).

Each test writes a small test project with pytester (enabled in tests/conftest.py: pytest
takes pytest_plugins only from the top-level conftest), runs it in a child pytest, and
checks the outcome and what the fixtures left behind: the inner tests append one JSON line
per member they saw to the file named by $FASTKV_PLUGIN_RECORD (HELPERS.record).
"""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile

import pytest

RECORD_ENV = "FASTKV_PLUGIN_RECORD"

# kvhelpers.py of the inner projects: the v3 JSON gateway with urllib, the record file, and
# the TCP sockets a process listens on (Linux /proc).
HELPERS = r'''
import base64
import json
import os
import socket
import urllib.request


def b64(text):
    return base64.b64encode(text.encode()).decode()


def v3(url, path, body):
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def put(url, key, value):
    return v3(url, "/v3/kv/put", {"key": b64(key), "value": b64(value)})


def get(url, key):
    kvs = v3(url, "/v3/kv/range", {"key": b64(key)}).get("kvs", [])
    return base64.b64decode(kvs[0]["value"]).decode() if kvs else None


def record(member, **extra):
    with open(os.environ["FASTKV_PLUGIN_RECORD"], "a") as f:
        f.write(json.dumps({"pid": member.pid, "url": member.url, "port": member.port,
                            "dir": member.data_dir, **extra}) + "\n")


def _addr(hexaddr):
    raw = bytes.fromhex(hexaddr)
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))   # host-order words
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


def tcp_listeners(pid):
    """(address, port) of every TCP socket process pid listens on."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if cols[3] == "0A" and cols[9] in inodes:    # 0A: LISTEN
                addr, port = cols[1].split(":")
                found.append((_addr(addr), int(port, 16)))
    return sorted(found)
'''


@functools.cache
def plugin_args() -> tuple[str, ...]:
    """How the child pytest gets the plugin: by its entry point (as an application does) when
    the installed fastkv declares it, else by module name (an editable install made before
    the entry point was added). Asked of a child interpreter in a neutral directory, as the
    child pytest sees the installation (pytest loads every pytest11 entry point of every
    distribution it finds; a stale fastkv.egg-info in the checkout must not count)."""
    code = ("from importlib.metadata import distributions\n"
            "print(any(ep.group == 'pytest11' and ep.value == 'fastkv.pytest_plugin'\n"
            "          for d in distributions() for ep in d.entry_points))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tempfile.gettempdir(), timeout=60, check=True).stdout
    if out.strip() == "True":
        return ()
    # "no:fastkv" keeps an entry point that shows up after all from loading it twice
    return ("-p", "no:fastkv", "-p", "fastkv.pytest_plugin")


def pid_alive(pid: int) -> bool:
    """pid runs and is a fastkv member (a pid reused by another program does not count)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read()
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return b"fastkv" in cmd and state != "Z"


def port_open(port: int) -> bool:
    import socket
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Inner:
    """A child pytest run of a project written with pytester, and what it recorded."""

    def __init__(self, pytester, monkeypatch):
        self.pytester = pytester
        self.record_path = pytester.path / "record.jsonl"
        monkeypatch.setenv(RECORD_ENV, str(self.record_path))
        pytester.makepyfile(kvhelpers=HELPERS)

    def run(self, *args: str, timeout: float = 120):
        return self.pytester.runpytest_subprocess(*plugin_args(), "-p", "no:cacheprovider",
                                                  *args, timeout=timeout)

    def records(self) -> list[dict]:
        if not self.record_path.exists():
            return []
        return [json.loads(line) for line in self.record_path.read_text().splitlines()]

    def assert_nothing_left(self) -> None:
        """Every member the inner tests saw is gone: no process, no listener, no data."""
        recs = self.records()
        assert recs, "the inner tests recorded no member"
        for r in recs:
            if r["pid"] is not None:
                assert not pid_alive(r["pid"]), f"member {r['url']} (pid {r['pid']}) still runs"
            assert not port_open(r["port"]), f"something still listens on {r['url']}"
            assert not os.path.exists(r["dir"]), f"{r['dir']} was not removed"


@pytest.fixture
def inner(pytester, monkeypatch):
    # fastkv runs on Linux; the leak checks read /proc (a missing /proc is a broken
    # environment, not a reason to skip them)
    assert os.path.isdir("/proc/self/fd"), "the plugin's leak checks need /proc"
    return Inner(pytester, monkeypatch)
