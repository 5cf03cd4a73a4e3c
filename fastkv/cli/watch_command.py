"""fastkvctl's ``watch``, as etcdctl 3.4's (ctlv3/command/watch_command.go).

``watch [options] <key or prefix> [range_end] [--] [exec-command arg1 arg2 ...]``
prints the events on a key, a prefix or a range until interrupted; a watch the
server cancels (a compacted ``--rev``) ends with ``watch is canceled by the
server`` (exit 5). A lost connection is not an end: the watch is made again from
the revision after the last one seen, as clientv3 resumes it.

* exec-command: after printing the events of a response, the command is run once
  per event, its stdout and stderr the tool's, with ETCD_WATCH_REVISION (the
  response's header revision), ETCD_WATCH_EVENT_TYPE, ETCD_WATCH_KEY and
  ETCD_WATCH_VALUE (Go's ``%q`` of each) added to the environment (ETCDCTL_API is
  not passed on: etcdctl unsets it). A command that fails prints ``command [...]
  error (...)`` and ends the tool with exit 1.
* ETCDCTL_WATCH_KEY / ETCDCTL_WATCH_RANGE_END stand for the key and range_end
  arguments (they are not "unrecognized" ETCDCTL_ variables for watch).
* ``-i``: watch request lines from stdin (``watch [options] <key> [range_end] [--]
  [exec-command ...]``, split as etcdctl's argify splits, each watch running beside
  the others; ``progress`` asks the server for its revision, printed by every
  watch as ``progress notify: <rev>``). End of input ends the tool with ``Error
  reading watch request line: EOF`` (exit 3).

Which arguments are the key, the range end and the command is decided by
etcdctl's parseWatchArgs, quirks included (it reads the raw command line for the
``--``; the watched key range ends where the last copy of the command's first word
stands; without ``--`` extra words are ignored), so that the same command line
watches the same keys and fails with the same message. fastkvctl keeps 3.5's
``--progress-notify`` (which also prints ``progress notify: <rev>``).
"""
from __future__ import annotations

import os
import sys
import time

from fastkv.cli import flags as fl
from fastkv.cli.transport import ClientError, RPCError

__all__ = ["WATCH_COMMAND", "parse_watch_args", "parse_line_flags", "watch_create_request",
           "WatchArgsError"]

ERR_BAD_ARGS_NUM = "bad number of arguments"
ERR_CONFLICT_ENV = "bad number of arguments (found conflicting environment key)"
ERR_SEPARATOR = "bad number of arguments (found separator --, but no commands)"
ERR_INTERACTIVE_WATCH = "args[0] must be 'watch' for interactive calls"
ERR_RANGE_PREFIX = "`range_end` and `--prefix` are mutually exclusive"
ERR_EOF = "Error reading watch request line: EOF"
ENV_KEY, ENV_RANGE = "ETCDCTL_WATCH_KEY", "ETCDCTL_WATCH_RANGE_END"


def _main():
    from fastkv.cli import main   # the command layer (avoids an import cycle)
    return main


class WatchArgsError(ValueError):
    """An error etcdctl ends with ExitBadArgs (128); str() is its message."""


class GoPanic(Exception):
    """What makes etcdctl panic: ``panic: <message>`` on stderr, exit 2."""


def _quote(text: str) -> str:
    from fastkv.cli.v2.gostd import quote   # Go's %q (imported when needed)
    return quote(text)


def _text(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


# -- the arguments, as parseWatchArgs / getWatchChan take them -------------------------------

WATCH_FLAGS = [
    fl.Flag("interactive", "bool", False, "Interactive mode", "i"),
    fl.Flag("prefix", "bool", False, "Watch on a prefix if prefix is set"),
    fl.Flag("rev", "int", 0, "Revision to start watching"),
    fl.Flag("prev-kv", "bool", False, "get the previous key-value pair before the event happens"),
    fl.Flag("progress-notify", "bool", False, "get periodic watch progress notification from server"),
]


def parse_line_flags(args: list[str]) -> tuple[dict, list[str]]:
    """pflag's FlagSet.Parse of a request line's words with watch's flags (a set without
    a help flag: ``--help`` and ``-h`` are "pflag: help requested"). Returns the flag
    values and the other words; WatchArgsError with pflag's wording."""
    values = {f.name: f.default for f in WATCH_FLAGS}
    longs = {f.name: f for f in WATCH_FLAGS}
    shorts = {f.short: f for f in WATCH_FLAGS if f.short}
    positional: list[str] = []

    def set_value(flag: fl.Flag, text: str, shown: str) -> None:
        try:
            values[flag.name] = flag.parse(text)
        except ValueError as e:
            raise WatchArgsError(f"invalid argument {_quote(text)} for {_quote(shown)} flag: {e}") from None

    rest = list(args)
    while rest:
        s = rest.pop(0)
        if len(s) < 2 or s[0] != "-":
            positional.append(s)
            continue
        if s[1] == "-":
            if len(s) == 2:   # "--" ends the flags
                positional.extend(rest)
                break
            name = s[2:]
            if name[0] in "-=":
                raise WatchArgsError(f"bad flag syntax: {s}")
            name, eq, text = name.partition("=")
            flag = longs.get(name)
            if flag is None:
                if name == "help":
                    raise WatchArgsError("pflag: help requested")
                raise WatchArgsError(f"unknown flag: --{name}")
            if not eq:
                if flag.kind == "bool":
                    text = "true"
                elif rest:
                    text = rest.pop(0)
                else:
                    raise WatchArgsError(f"flag needs an argument: {s}")
            set_value(flag, text, f"--{flag.name}")
            continue
        chars = s[1:]
        while chars:
            c = chars[0]
            flag = shorts.get(c)
            if flag is None:
                if c == "h":
                    raise WatchArgsError("pflag: help requested")
                raise WatchArgsError(f"unknown shorthand flag: {_quote_rune(c)} in -{chars}")
            if len(chars) > 2 and chars[1] == "=":
                text, chars = chars[2:], ""
            elif flag.kind == "bool":
                text, chars = "true", chars[1:]
            elif len(chars) > 1:
                text, chars = chars[1:], ""
            elif rest:
                text, chars = rest.pop(0), ""
            else:
                raise WatchArgsError(f"flag needs an argument: {_quote_rune(c)} in -{chars}")
            set_value(flag, text, f"-{flag.short}, --{flag.name}")
    return values, positional


def _quote_rune(c: str) -> str:
    """Go's %q of a byte: a quoted character literal."""
    q = _quote(c)[1:-1]
    return "'" + ("\\'" if c == "'" else q.replace('\\"', '"')) + "'"


def _first(items: list[str], word: str) -> int:
    """The index of word in items, or -1."""
    try:
        return items.index(word)
    except ValueError:
        return -1


def parse_watch_args(os_args: list[str], command_args: list[str], env_key: str, env_range: str,
                     interactive: bool) -> tuple[list[str], list[str], dict | None]:
    """etcdctl's parseWatchArgs: (the watch's key [and range end] words, the
    exec-command, and for a request line its flag values).

    ``os_args`` is the raw command line (the ``--`` is looked for there), and
    ``command_args`` the command's arguments after flag parsing; for a request line
    both are the line's words. WatchArgsError for what etcdctl refuses (exit 128),
    GoPanic where it panics."""
    raw = list(os_args)
    i = _first(raw, "watch")
    if i >= 0:
        raw = raw[i + 1:]
    watch_args = list(command_args)
    line_values = None
    if interactive:
        if not watch_args or watch_args[0] != "watch":
            raise WatchArgsError(ERR_INTERACTIVE_WATCH)
        watch_args = watch_args[1:]
        exec_idx = _first(watch_args, "--")
        if exec_idx >= 0 and exec_idx == len(watch_args) - 1:
            raise WatchArgsError(ERR_SEPARATOR)
        _, pargs = parse_line_flags(watch_args)
        if exec_idx < 0 and not env_key and not pargs:
            raise WatchArgsError(ERR_BAD_ARGS_NUM)
        if exec_idx < 0 and pargs and env_key:
            raise WatchArgsError(ERR_CONFLICT_ENV)
        with_sep = watch_args
    else:
        exec_idx = _first(raw, "--")
        if exec_idx >= 0 and exec_idx == len(raw) - 1:
            raise WatchArgsError(ERR_SEPARATOR)
        if exec_idx < 0 and not raw and not env_key:
            raise WatchArgsError(ERR_BAD_ARGS_NUM)
        if exec_idx >= 0 and env_key:
            # "ETCDCTL_WATCH_KEY=foo watch foo -- echo 1": a word before the "--" is a key
            widx, ridx = len(watch_args) - 1, len(raw) - 1
            while widx >= 0:
                if ridx < 0:
                    raise GoPanic(f"runtime error: index out of range [{ridx}]")
                if watch_args[widx] == raw[ridx]:
                    ridx -= 1
                elif ridx == exec_idx:
                    raise WatchArgsError(ERR_CONFLICT_ENV)
                widx -= 1
        if exec_idx < 0 and watch_args and env_key:
            raise WatchArgsError(ERR_CONFLICT_ENV)
        with_sep = raw

    sep = _first(with_sep, "--")
    exec_args = with_sep[sep + 1:] if sep >= 0 else []
    if interactive:
        line_values, watch_args = parse_line_flags(with_sep)
    if env_key:
        watch_args = [env_key] + ([env_range] if env_range else []) + watch_args
    if sep < 0:
        return watch_args, [], line_values
    # the key words end before the last copy of the command's first word
    end = len(watch_args) - 1
    while end >= 0 and watch_args[end] != with_sep[sep + 1]:
        end -= 1
    if end < 0:
        raise GoPanic(f"runtime error: slice bounds out of range [:{end}]")
    return watch_args[:end], exec_args, line_values


def watch_create_request(watch_args: list[str], opts: dict) -> dict:
    """etcdctl's getWatchChan: the WatchCreateRequest for the key words and the flags
    (only a second word is a range end; more are ignored)."""
    if not watch_args:
        raise WatchArgsError(ERR_BAD_ARGS_NUM)
    if len(watch_args) == 2 and opts["prefix"]:
        raise WatchArgsError(ERR_RANGE_PREFIX)
    range_end = watch_args[1] if len(watch_args) == 2 else None
    create = _main().range_body(watch_args[0], range_end, opts["prefix"], False)
    if opts.get("rev", 0) > 0:
        create["start_revision"] = str(opts["rev"])
    if opts.get("prev-kv"):
        create["prev_kv"] = True
    if opts.get("progress-notify"):
        create["progress_notify"] = True
    return create


# -- the watch stream -------------------------------------------------------------------------

def watch_error(resp: dict) -> str:
    """clientv3.WatchResponse.Err() for a canceled watch."""
    if resp.get("compact_revision"):
        return "etcdserver: mvcc: required revision has been compacted"
    if resp.get("cancel_reason"):
        return resp["cancel_reason"]
    return "etcdserver: mvcc: required revision is a future revision"


def is_progress_notify(resp: dict) -> bool:
    """clientv3.WatchResponse.IsProgressNotify."""
    return (not resp.get("events") and not resp.get("canceled") and not resp.get("created")
            and not resp.get("compact_revision") and bool(resp.get("header", {}).get("revision")))


def watch_responses(client, create: dict, on_created=None):
    """The responses of one watch as clientv3 hands them on (the creation answer is not
    one of them); a lost connection makes the watch again from the revision after the
    last one seen. A canceled response is the last. RPCError when the server refuses."""
    create = dict(create)
    next_rev = int(create.get("start_revision", 0))
    while True:
        if next_rev > 0:
            create["start_revision"] = str(next_rev)
        try:
            for resp in client.stream("/v3/watch", {"create_request": create}, timeout=None):
                if resp.get("created") and not resp.get("canceled"):
                    if next_rev <= 0:  # pin the start so a reconnect resumes without gaps
                        next_rev = resp.get("header", {}).get("revision", 0) + 1
                    if on_created is not None:
                        on_created()
                        on_created = None
                    continue
                if resp.get("canceled"):
                    yield resp
                    return
                events = resp.get("events", [])
                if events:
                    next_rev = events[-1].get("kv", {}).get("mod_revision", next_rev - 1) + 1
                elif resp.get("header", {}).get("revision"):
                    next_rev = max(next_rev, resp["header"]["revision"] + 1)
                yield resp
        except RPCError:
            raise
        except ClientError:
            pass  # connection lost: clientv3 retries the watch; so do we
        time.sleep(0.2)


class ExecFailed(Exception):
    """The exec-command failed (its message is printed): etcdctl exits 1."""


def _go_exec_error(exc: OSError, path: str) -> str:
    why = os.strerror(exc.errno) if exc.errno else str(exc)
    return f"fork/exec {path}: {why[:1].lower()}{why[1:]}"


def _look_path(name: str) -> tuple[str, str | None]:
    """Go 1.19's exec.Command lookup: (the path to run, or the error exec.Error words)."""
    if not name:
        return "", "exec: no command"
    if "/" in name:
        return name, None
    import stat
    for d in os.environ.get("PATH", "").split(os.pathsep):
        path = os.path.join(d or ".", name)
        try:
            st = os.stat(path)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) and st.st_mode & 0o111:
            if not os.path.isabs(path):
                return path, (f"exec: {_quote(name)}: cannot run executable found relative to "
                              "current directory")
            return path, None
    return "", f"exec: {_quote(name)}: executable file not found in $PATH"


def _exit_text(rc: int) -> str:
    """Go's ProcessState.String() of a failed child."""
    if rc > 0:
        return f"exit status {rc}"
    import signal
    try:
        name = signal.strsignal(-rc) or ""
    except ValueError:
        name = ""
    if not name or name.startswith("Unknown") or name.startswith("Real-time"):
        return f"signal: signal {-rc}"
    return f"signal: {name[:1].lower()}{name[1:]}"


def _fileno(stream):
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def run_exec(ctx, exec_args: list[str], revision: int, ev: dict) -> None:
    """Run the exec-command for one event as printWatchCh does; ExecFailed (with the
    message printed) if it could not run or did not exit 0."""
    import subprocess
    from fastkv.cli.printer import b64
    kv = ev.get("kv", {})
    etype = "DELETE" if ev.get("type") in ("DELETE", 1) else "PUT"
    env = {k: v for k, v in os.environ.items() if k != "ETCDCTL_API"}   # etcdctl unsets it
    env.update({"ETCD_WATCH_REVISION": str(revision),
                "ETCD_WATCH_EVENT_TYPE": _quote(etype),
                "ETCD_WATCH_KEY": _quote(_text(b64(kv.get("key")))),
                "ETCD_WATCH_VALUE": _quote(_text(b64(kv.get("value"))))})
    path, err = _look_path(exec_args[0])
    rc = 0
    if err is None:
        ctx.stdout.flush()
        sys.stderr.flush()
        out_fd, err_fd = _fileno(ctx.stdout), _fileno(sys.stderr)
        try:
            proc = subprocess.Popen([a.encode("utf-8", "surrogateescape") for a in exec_args],
                                    executable=path.encode("utf-8", "surrogateescape"), env=env,
                                    stdin=subprocess.DEVNULL,
                                    stdout=out_fd if out_fd is not None else subprocess.PIPE,
                                    stderr=err_fd if err_fd is not None else subprocess.PIPE)
        except OSError as e:
            err = _go_exec_error(e, path)
        except ValueError:   # a NUL byte in a word (a request line may have one)
            err = f"fork/exec {path}: invalid argument"
        else:
            out, errout = proc.communicate()
            if out:
                ctx.stdout.write(out)
                ctx.stdout.flush()
            if errout:
                sys.stderr.write(_text(errout))
                sys.stderr.flush()
            rc = proc.returncode
            if rc:
                err = _exit_text(rc)
    if err is not None:
        ctx.stdout.flush()
        args = "[" + " ".join(_quote(a) for a in exec_args) + "]"
        sys.stderr.write(f"command {args} error ({err})\n")
        sys.stderr.flush()
        raise ExecFailed()


def print_response(ctx, resp: dict, exec_args: list[str], lock=None) -> None:
    """printWatchCh for one response: the cancel reason on stderr, ``progress notify``,
    the events as the output format prints them, then the exec-command per event."""
    import contextlib
    with lock if lock is not None else contextlib.nullcontext():
        if resp.get("canceled"):
            sys.stderr.write(f"watch was canceled ({watch_error(resp)})\n")
            sys.stderr.flush()
        if is_progress_notify(resp):
            ctx.stdout.write(b"progress notify: %d\n" % resp["header"]["revision"])
        ctx.display.watch(resp)
        ctx.stdout.flush()
    if exec_args:
        revision = resp.get("header", {}).get("revision", 0)
        for ev in resp.get("events", []):
            run_exec(ctx, exec_args, revision, ev)


# -- the command --------------------------------------------------------------------------------

def _os_args(ctx) -> list[str]:
    argv = getattr(ctx, "argv", None)
    return list(argv) if argv is not None else sys.argv[1:]


def cmd_watch(ctx, args: list[str], v: dict) -> int:
    m = _main()
    env_key, env_range = os.environ.get(ENV_KEY, ""), os.environ.get(ENV_RANGE, "")
    if not env_key and env_range:
        raise m.Exit(m.EXIT_BAD_ARGS, f"{ENV_KEY} is empty but got {ENV_RANGE}={_quote(env_range)}")
    if v["interactive"]:
        return watch_interactive(ctx, env_key, env_range)
    try:
        watch_args, exec_args, _ = parse_watch_args(_os_args(ctx), args, env_key, env_range, False)
    except WatchArgsError as e:
        raise m.Exit(m.EXIT_BAD_ARGS, str(e)) from None
    except GoPanic as e:
        return _panic(ctx, e)
    client = ctx.client()
    try:
        create = watch_create_request(watch_args, v)
    except WatchArgsError as e:
        raise m.Exit(m.EXIT_BAD_ARGS, str(e)) from None
    try:
        for resp in watch_responses(client, create):
            print_response(ctx, resp, exec_args)
            if resp.get("canceled"):
                raise m.Exit(m.EXIT_INTERRUPTED, "watch is canceled by the server")
    except RPCError as e:
        raise m.Exit(m.EXIT_INTERRUPTED if e.code == 1 else m.EXIT_BAD_CONNECTION, str(e)) from None
    except ExecFailed:
        return m.EXIT_ERROR
    return m.EXIT_SUCCESS   # not reached: a watch ends only when canceled


def _panic(ctx, e: Exception) -> int:
    ctx.stdout.flush()
    sys.stderr.write(f"panic: {e}\n\ngoroutine 1 [running]:\n")
    sys.stderr.flush()
    return 2


def _write_err(text: str) -> None:
    """A line on stderr, the request line's bytes as they came."""
    sys.stderr.flush()
    buf = getattr(sys.stderr, "buffer", None)
    if buf is not None:
        buf.write(text.encode("utf-8", "surrogateescape"))
        buf.flush()
    else:
        sys.stderr.write(text)
        sys.stderr.flush()


class _InteractiveWatch:
    """One watch of an interactive session: a thread reads its stream into a queue (a
    Go channel), another prints what comes out of it; ``progress`` adds to the queue."""

    def __init__(self, session: "_Session", create: dict, exec_args: list[str]):
        import queue
        import threading
        self.session = session
        self.create = create
        self.exec_args = exec_args
        self.queue: queue.Queue = queue.Queue()
        self.created = threading.Event()
        self.alive = True
        for target in (self._read, self._print):
            threading.Thread(target=target, daemon=True).start()

    def _read(self) -> None:
        try:
            for resp in watch_responses(self.session.client, self.create, self.created.set):
                if resp.get("canceled"):
                    self.alive = False
                self.queue.put(resp)
        except RPCError as e:   # clientv3 closes the channel with the error
            self.alive = False
            self.queue.put({"header": {}, "canceled": True, "cancel_reason": e.message})
        finally:
            self.alive = False
            self.created.set()

    def _print(self) -> None:
        s = self.session
        while True:
            resp = self.queue.get()
            try:
                print_response(s.ctx, resp, self.exec_args, s.lock)
            except ExecFailed:
                s.die(1)
            except (BrokenPipeError, ValueError):
                return   # stdout is gone or closed: the process is ending
            if resp.get("canceled"):
                return


class _Session:
    def __init__(self, ctx):
        import threading
        self.ctx = ctx
        self.client = ctx.client()
        self.lock = threading.Lock()
        self.watches: list[_InteractiveWatch] = []

    def die(self, code: int) -> None:
        """os.Exit from a watch's goroutine: the whole tool ends now."""
        with self.lock:
            try:
                self.ctx.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)

    def progress(self) -> None:
        """clientv3's RequestProgress: the server's answer goes to every watch."""
        live = [w for w in self.watches if w.alive]
        if not live:
            return
        while True:
            stream = self.client.stream("/v3/watch", {"progress_request": {}},
                                        timeout=self.client.command_timeout)
            try:
                resp = next(stream, None)
            except RPCError as e:
                m = _main()
                raise m.Exit(m.EXIT_ERROR, e.message) from None
            except ClientError:
                resp = None
            finally:
                stream.close()
            if resp is not None:
                break
            time.sleep(0.2)   # as the watches: wait for the server to come back
        note = {"header": resp.get("header", {})}
        for w in live:
            if w.alive:
                w.queue.put(dict(note))


def watch_interactive(ctx, env_key: str, env_range: str) -> int:
    """etcdctl's watchInteractiveFunc: one request line at a time until end of input."""
    m = _main()
    from fastkv.cli.txn_command import GoLineReader, _Panic, argify
    session = _Session(ctx)
    reader = GoLineReader(ctx.stdin)
    while True:
        raw, ok = reader.readline()
        if not ok:
            session.lock.acquire(timeout=2)   # kept: no watch prints while the tool ends
            ctx.stdout.flush()
            raise m.Exit(m.EXIT_INVALID_INPUT, ERR_EOF)
        line = _text(raw[:-1] if raw.endswith(b"\n") else raw)
        try:
            args = argify(line)
        except _Panic as e:
            session.lock.acquire(timeout=2)
            return _panic(ctx, e)
        if not args:
            _write_err(f"Invalid command: {line} (watch and progress supported)\n")
            continue
        if args[0] == "watch":
            if len(args) < 2 and not env_key:
                _write_err(f"Invalid command {line} (command type or key is not provided)\n")
                continue
            try:
                watch_args, exec_args, opts = parse_watch_args(args, args, env_key, env_range, True)
            except WatchArgsError as e:
                session.lock.acquire(timeout=2)
                raise m.Exit(m.EXIT_BAD_ARGS, str(e)) from None
            except GoPanic as e:
                session.lock.acquire(timeout=2)
                return _panic(ctx, e)
            try:
                create = watch_create_request(watch_args, opts)
            except WatchArgsError as e:
                _write_err(f"Invalid command {line} ({e})\n")
                continue
            w = _InteractiveWatch(session, create, exec_args)
            session.watches.append(w)
            while not w.created.wait(0.5):   # clientv3's Watch returns once it is created
                pass
        elif args[0] == "progress":
            session.progress()
        else:
            _write_err(f"Invalid command {line} (only support watch)\n")


WATCH_COMMAND = fl.Command(
    "watch", "Watches events stream on keys or prefixes",
    "watch [options] [key or prefix] [range_end] [--] [exec-command arg1 arg2 ...] [flags]",
    cmd_watch, WATCH_FLAGS, env_names=(ENV_KEY, ENV_RANGE))
