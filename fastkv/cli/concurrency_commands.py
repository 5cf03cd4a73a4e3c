"""fastkvctl's ``lock`` and ``elect``, as etcdctl 3.4's (ctlv3/command/lock_command.go,
elect_command.go).

etcdctl runs clientv3's concurrency recipes (a session lease kept alive, a key
``<name>/<lease ID in hex>`` per waiter, the oldest key holds the lock or leads).
fastkvctl keeps the session lease itself and asks the server's v3lock and
v3election services, through their JSON gateway paths, to do the waiting: the
server runs the very same recipe with the lease given, so etcdctl and fastkvctl
holders of one lock or election queue up together.

``lock <name>`` prints the lock key (``get``'s output for it) and holds the lock
until interrupted (SIGINT/SIGTERM), then unlocks and exits 0; ``lock <name> cmd
args...`` runs the command with ETCD_LOCK_KEY and ETCD_LOCK_REV in its
environment and unlocks when it ends (its failure is the error). ``elect <name>
<proposal>`` campaigns, prints the leader key and proposal once elected, and
resigns on interrupt; ``elect -l <name>`` prints every leader in turn. An
interrupt while still waiting is etcdctl's "context canceled" (exit 1); the
waiter's key is deleted so nobody queues behind it.
"""
from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time

from fastkv.cli import flags as fl
from fastkv.cli.transport import ClientError, GatewayClient, RPCError

__all__ = ["LOCK_COMMAND", "ELECT_COMMAND", "Session", "Interrupts", "blocking_call"]

ELECT_SESSION_TTL = 60   # concurrency.NewSession's default TTL (elect has no --ttl)


def _main():
    from fastkv.cli import main   # the command layer (avoids an import cycle)
    return main


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _arg(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


class Interrupts:
    """signal.Notify(os.Interrupt, SIGTERM): an interrupt is remembered, and only breaks
    off what runs inside :meth:`waiting` (a blocking request, a wait)."""

    def __init__(self):
        self.hit = False
        self._raising = False
        self._old = {}

    def _handler(self, signum, frame):
        self.hit = True
        if self._raising:
            self._raising = False
            raise KeyboardInterrupt

    def __enter__(self) -> "Interrupts":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    @contextlib.contextmanager
    def waiting(self):
        """Run the block until it ends or an interrupt comes (KeyboardInterrupt)."""
        if self.hit:
            raise KeyboardInterrupt
        self._raising = True
        try:
            yield
        finally:
            self._raising = False

    @contextlib.contextmanager
    def held(self):
        """Inside :meth:`waiting`: let the block finish (printing one answer whole); an
        interrupt meanwhile breaks off afterwards."""
        self._raising = False
        yield
        if self.hit:
            raise KeyboardInterrupt
        self._raising = True

    def wait(self, done: threading.Event) -> bool:
        """Until an interrupt (True) or ``done`` is set (False)."""
        try:
            with self.waiting():
                while not done.wait(0.1):
                    pass
        except KeyboardInterrupt:
            return True
        return False


def blocking_call(client: GatewayClient, path: str, body: dict) -> dict:
    """A unary gateway call that may wait as long as it takes (lock, campaign), on its
    own connection; dialing still has --dial-timeout."""
    import http.client
    import json
    conn = client._open(time.monotonic() + client.dial_timeout, fresh=True, read_timeout=None)
    try:
        conn.request("POST", path, body=json.dumps(body).encode(), headers=client._headers())
        resp = conn.getresponse()
        data = resp.read()
    except (OSError, http.client.HTTPException) as e:
        raise ClientError(str(e)) from None
    finally:
        conn.close()
    return client._check(resp.status, data)


class Session:
    """concurrency.NewSession: a lease granted with the TTL and renewed every TTL/3 by a
    thread; ``done`` is set once the lease is gone (revoked, expired, or not renewed
    within its TTL)."""

    def __init__(self, ctx, ttl: int):
        m = _main()
        self.client = ctx.client()
        resp = m.call(ctx, "/v3/lease/grant", {"TTL": str(ttl)})
        if resp.get("error"):
            raise m.Exit(m.EXIT_ERROR, resp["error"])
        self.lease = resp["ID"]
        self.ttl = resp.get("TTL", ttl)
        self.done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keepalive, name="session-keepalive", daemon=True)
        self._thread.start()

    def _keepalive(self) -> None:
        m = _main()
        renewed = time.monotonic()
        while not self._stop.is_set():
            try:
                resp = m.keepalive_once(self.client, self.lease)
                renewed = time.monotonic()
                pause = max(resp.get("TTL", self.ttl) / 3.0, 0.5)
            except RPCError:
                self.done.set()
                return
            except ClientError:
                if time.monotonic() - renewed > self.ttl:
                    self.done.set()
                    return
                pause = 0.5
            self._stop.wait(pause)

    def close(self) -> None:
        """Stop renewing (the lease is left to expire, as etcdctl leaves it)."""
        self._stop.set()


def _delete_key(ctx, key: bytes) -> None:
    """Withdraw a waiter's key after an interrupt (clientv3 deletes it when its wait
    is canceled); errors are of no use to anyone by then."""
    try:
        ctx.client().call("/v3/kv/deleterange", {"key": _b64(key)})
    except ClientError:
        pass


def _show_key(ctx, key: bytes) -> None:
    """etcdctl prints the lock/leader key through display.Get of a Get of it."""
    m = _main()
    resp = m.call(ctx, "/v3/kv/range", {"key": _b64(key)})
    if not resp.get("kvs"):
        raise m.Exit(m.EXIT_ERROR, "lock lost on init")
    ctx.display.get(resp)
    ctx.stdout.flush()


# -- lock ----------------------------------------------------------------------------------

def _exec_error(argv: list[str]) -> str | None:
    """What Go's exec.Command(...).Run() says before starting a program that cannot be."""
    name = argv[0]
    if "/" not in name:
        if shutil.which(name) is None:
            return f'exec: "{name}": executable file not found in $PATH'
        return None
    if not os.path.exists(name):
        return f"fork/exec {name}: no such file or directory"
    if os.path.isdir(name) or not os.access(name, os.X_OK):
        return f"fork/exec {name}: permission denied"
    return None


def _signal_name(signum: int) -> str:
    """Go's syscall.Signal.String() for the common ones."""
    names = {signal.SIGINT: "interrupt", signal.SIGTERM: "terminated", signal.SIGKILL: "killed",
             signal.SIGHUP: "hangup", signal.SIGQUIT: "quit", signal.SIGPIPE: "broken pipe",
             signal.SIGABRT: "aborted", signal.SIGSEGV: "segmentation fault",
             signal.SIGUSR1: "user defined signal 1", signal.SIGUSR2: "user defined signal 2",
             signal.SIGALRM: "alarm clock"}
    return names.get(signum, f"signal {signum}")


def _run_locked(ctx, argv: list[str], key: bytes, revision: int) -> str | None:
    """Run the exec-command; its error as Go's exec words it, or None."""
    env = {"ETCD_LOCK_KEY": key.decode("utf-8", "surrogateescape"), "ETCD_LOCK_REV": str(revision)}
    env.update(os.environ)   # Go's exec keeps the last of duplicated variables: os.Environ()'s
    err = _exec_error(argv)
    if err:
        return err
    ctx.stdout.flush()
    try:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
    except OSError as e:
        return f"fork/exec {argv[0]}: {os.strerror(e.errno) if e.errno else e}"
    while True:   # an interrupt is the child's business (it has its own), as with etcdctl
        try:
            rc = proc.wait()
            break
        except KeyboardInterrupt:
            continue
    if rc > 0:
        return f"exit status {rc}"
    if rc < 0:
        return f"signal: {_signal_name(-rc)}"
    return None


def cmd_lock(ctx, args: list[str], v: dict) -> int:
    m = _main()
    if not args:
        raise m.Exit(m.EXIT_BAD_ARGS, "lock takes a lock name argument and an optional command to execute")
    name = _arg(args[0])
    with Interrupts() as intr:
        session = Session(ctx, v["ttl"])
        key = name + b"/" + b"%x" % session.lease
        try:
            with intr.waiting():
                resp = blocking_call(ctx.client(), "/v3/lock/lock",
                                     {"name": _b64(name), "lease": str(session.lease)})
        except KeyboardInterrupt:
            _delete_key(ctx, key)
            raise m.Exit(m.EXIT_ERROR, "context canceled") from None
        except ClientError as e:
            raise m.Exit(m.EXIT_ERROR, str(e)) from None
        key = base64.b64decode(resp.get("key", "")) or key
        revision = resp.get("header", {}).get("revision", 0)
        if len(args) > 1:
            err = _run_locked(ctx, args[1:], key, revision)
            unlock_err = _unlock(ctx, key)
            if err or unlock_err:
                raise m.Exit(m.EXIT_ERROR, err or unlock_err)
            return m.EXIT_SUCCESS
        _show_key(ctx, key)
        if not intr.wait(session.done):
            raise m.Exit(m.EXIT_ERROR, "session expired")
        session.close()
        unlock_err = _unlock(ctx, key)
        if unlock_err:
            raise m.Exit(m.EXIT_ERROR, unlock_err)
    return m.EXIT_SUCCESS


def _unlock(ctx, key: bytes) -> str | None:
    try:
        ctx.client().call("/v3/lock/unlock", {"key": _b64(key)})
    except ClientError as e:
        return str(e)
    return None


# -- elect ---------------------------------------------------------------------------------

def _campaign(ctx, name: bytes, proposal: bytes) -> int:
    m = _main()
    with Interrupts() as intr:
        session = Session(ctx, ELECT_SESSION_TTL)
        key = name + b"/" + b"%x" % session.lease
        try:
            with intr.waiting():
                resp = blocking_call(ctx.client(), "/v3/election/campaign",
                                     {"name": _b64(name), "lease": str(session.lease), "value": _b64(proposal)})
        except KeyboardInterrupt:
            _delete_key(ctx, key)   # Campaign resigns when its wait is canceled
            raise m.Exit(m.EXIT_ERROR, "context canceled") from None
        except ClientError as e:
            raise m.Exit(m.EXIT_ERROR, str(e)) from None
        leader = resp.get("leader", {})
        _show_key(ctx, base64.b64decode(leader.get("key", "")) or key)
        if not intr.wait(session.done):
            raise m.Exit(m.EXIT_ERROR, "elect: session expired")
        session.close()
        body = {"leader": {"name": leader.get("name", _b64(name)), "key": leader.get("key", _b64(key)),
                           "rev": str(leader.get("rev", 0)), "lease": str(leader.get("lease", session.lease))}}
        m.call(ctx, "/v3/election/resign", body)
    return m.EXIT_SUCCESS


def _observe(ctx, name: bytes) -> int:
    m = _main()
    with Interrupts() as intr:
        Session(ctx, ELECT_SESSION_TTL)   # etcdctl opens a session to observe too
        client = ctx.client()
        try:
            with intr.waiting():
                for resp in client.stream("/v3/election/observe", {"name": _b64(name)}, timeout=None):
                    with intr.held():   # each leader as a GetResponse of its key
                        out = {"header": resp.get("header", {}), "kvs": [resp["kv"]] if resp.get("kv") else []}
                        ctx.display.get(out)
                        ctx.stdout.flush()
        except KeyboardInterrupt:
            return m.EXIT_SUCCESS
        except ClientError:
            pass
    raise m.Exit(m.EXIT_ERROR, "elect: observer lost")


def cmd_elect(ctx, args: list[str], v: dict) -> int:
    m = _main()
    if len(args) not in (1, 2):
        raise m.Exit(m.EXIT_BAD_ARGS, "elect takes one election name argument and an optional proposal argument")
    ctx.client()
    if v["listen"]:
        return _observe(ctx, _arg(args[0]))
    if len(args) != 2:
        raise m.Exit(m.EXIT_BAD_ARGS, "no proposal argument but -l not set")
    return _campaign(ctx, _arg(args[0]), _arg(args[1]))


LOCK_COMMAND = fl.Command("lock", "Acquires a named lock",
                          "lock <lockname> [exec-command arg1 arg2 ...] [flags]", cmd_lock,
                          [fl.Flag("ttl", "int", 10, "timeout for session")])
ELECT_COMMAND = fl.Command("elect", "Observes and participates in leader election",
                           "elect <election-name> [proposal] [flags]", cmd_elect,
                           [fl.Flag("listen", "bool", False, "observation mode", "l")])
