"""`fastkv gateway start`: an L4 TCP proxy in front of a cluster, as etcd 3.4's gateway.

Usage::

    python -m fastkv gateway start --endpoints=10.0.0.1:2379,10.0.0.2:2379 \\
        --listen-addr=127.0.0.1:23790
    python -m fastkv gateway start --discovery-srv=example.com [--discovery-srv-name=prod]

Each accepted client connection is piped byte for byte to one endpoint, so TLS,
HTTP/1.1 and gRPC pass through untouched: clients use the gateway's address with the
scheme and certificates they would use for a member. Endpoints (host:port; a URL's
scheme is stripped) are taken in turn among the active ones. A failed dial deactivates
an endpoint for --retry-delay (Go duration, default 1m0s; a probe dial then brings it
back) and the next one is tried for the same client; with none reachable the client
connection is closed. Half-closes are passed on; both connections close when both
directions ended or either side failed. --discovery-srv <domain> reads the SRV records
_etcd-client-ssl._tcp.<domain> and _etcd-client._tcp.<domain> (-<name> appended with
--discovery-srv-name) and picks by priority, then weight; without --insecure-discovery
only https records answering a dial are kept, and if none is, --endpoints is used.
Logs: zap JSON on stderr (logger "fastkv.gateway"). SIGINT/SIGTERM stop it (exit 0);
command-line errors exit 2, start-up failures (DNS, listen) exit 1.
"""
from __future__ import annotations

import asyncio
import csv
import dataclasses
import logging
import os
import random
import re
import signal
import socket
import ssl
import sys
import urllib.parse

log = logging.getLogger("fastkv.gateway")

# How long a dial to an endpoint may take. etcd's tcpproxy has no limit (the OS gives
# up after minutes on a black-holed address); the SRV validation dials of etcd use 5s.
DIAL_TIMEOUT = 5.0
# etcd's tcpproxy takes a zero monitor interval (--retry-delay=0) as 5 minutes.
ZERO_RETRY_DELAY = 300.0
BACKLOG = 1024


class UsageError(Exception):
    """A command line cobra would refuse: printed with the usage, exit 2."""


class HelpRequested(Exception):
    pass


class ListenError(Exception):
    """--listen-addr cannot be listened on: exit 1."""


# ---- flags (etcd's spf13/pflag semantics) ----------------------------------------------------

@dataclasses.dataclass
class GatewayConfig:
    listen_addr: str = "127.0.0.1:23790"
    endpoints: list[str] = dataclasses.field(default_factory=lambda: ["127.0.0.1:2379"])
    discovery_srv: str = ""
    discovery_srv_name: str = ""
    insecure_discovery: bool = False
    trusted_ca_file: str = ""
    retry_delay: float = 60.0   # seconds
    args: list[str] = dataclasses.field(default_factory=list)   # positional (ignored, as etcd)


# name -> (attribute, kind, type word in the usage, help); kinds: string, strings, bool, duration
FLAGS = {
    "discovery-srv": ("discovery_srv", "string", "string",
                      "DNS domain used to bootstrap initial cluster"),
    "discovery-srv-name": ("discovery_srv_name", "string", "string",
                           "service name to query when using DNS discovery"),
    "endpoints": ("endpoints", "strings", "strings",
                  "comma separated etcd cluster endpoints (default [127.0.0.1:2379])"),
    "help": (None, "bool", "", "help for start"),
    "insecure-discovery": ("insecure_discovery", "bool", "", "accept insecure SRV records"),
    "listen-addr": ("listen_addr", "string", "string",
                    'listen address (default "127.0.0.1:23790")'),
    "retry-delay": ("retry_delay", "duration", "duration",
                    "duration of delay before retrying failed endpoints (default 1m0s)"),
    "trusted-ca-file": ("trusted_ca_file", "string", "string",
                        "path to the client server TLS CA file for verifying the discovered "
                        "endpoints when discovery-srv is provided."),
}

GATEWAY_USAGE = """gateway related command

Usage:
  fastkv gateway [command]

Available Commands:
  start       start the gateway

Flags:
  -h, --help   help for gateway

Use "fastkv gateway [command] --help" for more information about a command."""


def start_usage() -> str:
    lines = []
    for name, (_, _, typ, text) in FLAGS.items():
        short = "-h, " if name == "help" else "    "
        lines.append((f"  {short}--{name}" + (f" {typ}" if typ else ""), text))
    width = max(len(left) for left, _ in lines) + 3
    flags = "\n".join(left.ljust(width) + text for left, text in lines)
    return f"start the gateway\n\nUsage:\n  fastkv gateway start [flags]\n\nFlags:\n{flags}"


_BOOLS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
          "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}

_UNITS = {"ns": 1, "us": 10**3, "\u00b5s": 10**3, "\u03bcs": 10**3, "ms": 10**6,
          "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
_NUMBER = re.compile(r"([0-9]*)(?:\.([0-9]*))?")
_UNIT = re.compile(r"[^0-9.]*")


def parse_duration(text: str) -> int:
    """Go's time.ParseDuration: nanoseconds; ValueError worded as Go's."""
    s, neg = text, False
    if s[:1] in ("-", "+"):
        neg, s = s[0] == "-", s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(f'time: invalid duration "{text}"')
    total = 0
    while s:
        m = _NUMBER.match(s)
        whole, frac = m.group(1), m.group(2)
        if not whole and not frac:
            raise ValueError(f'time: invalid duration "{text}"')
        s = s[m.end():]
        unit = _UNIT.match(s).group(0)
        if not unit:
            raise ValueError(f'time: missing unit in duration "{text}"')
        if unit not in _UNITS:
            raise ValueError(f'time: unknown unit "{unit}" in duration "{text}"')
        s = s[len(unit):]
        scale = _UNITS[unit]
        total += int(whole or 0) * scale
        if frac:
            total += int(frac) * scale // 10 ** len(frac)
        if total > 2**63 - 1:
            raise ValueError(f'time: invalid duration "{text}"')
    return -total if neg else total


def _decimal(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    return f"{whole}." + str(frac).rjust(len(str(unit)) - 1, "0").rstrip("0")


def format_duration(ns: int) -> str:
    """Go's time.Duration.String (60 s -> "1m0s")."""
    if ns == 0:
        return "0s"
    sign, u = ("-" if ns < 0 else ""), abs(ns)
    if u < 1000:
        return f"{sign}{u}ns"
    if u < 10**6:
        return f"{sign}{_decimal(u, 1000)}\u00b5s"
    if u < 10**9:
        return f"{sign}{_decimal(u, 10**6)}ms"
    hours, rest = divmod(u, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    secs = _decimal(rest, 10**9) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}"
    if minutes:
        return f"{sign}{minutes}m{secs}"
    return sign + secs


def _split_csv(value: str) -> list[str]:
    """pflag's StringSlice reads the value as one CSV record ("" is no element)."""
    if value == "":
        return []
    try:
        return next(csv.reader([value], strict=True))
    except csv.Error as exc:
        raise ValueError(str(exc)) from None


def _set(cfg: GatewayConfig, name: str, value: str, seen: set[str]) -> None:
    attr, kind, _, _ = FLAGS[name]
    try:
        if kind == "bool":
            if value not in _BOOLS:
                raise ValueError(f'strconv.ParseBool: parsing "{value}": invalid syntax')
            if attr is None:   # --help
                if _BOOLS[value]:
                    raise HelpRequested
                return
            setattr(cfg, attr, _BOOLS[value])
        elif kind == "duration":
            ns = parse_duration(value)
            if ns < 0:
                raise ValueError("a negative duration is not a retry delay")
            setattr(cfg, attr, ns / 1e9)
        elif kind == "strings":   # the first use replaces the default, later ones append
            items = _split_csv(value)
            setattr(cfg, attr, (getattr(cfg, attr) if name in seen else []) + items)
        else:
            setattr(cfg, attr, value)
    except ValueError as exc:
        raise UsageError(f'invalid argument "{value}" for "--{name}" flag: {exc}') from None
    seen.add(name)


def parse_start_flags(argv: list[str]) -> GatewayConfig:
    """The flags of `gateway start`, parsed as cobra/pflag parse them. Raises UsageError,
    or HelpRequested for -h/--help."""
    cfg = GatewayConfig()
    seen: set[str] = set()
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            cfg.args.extend(argv[i:])
            break
        if arg.startswith("--"):
            name, has_value, value = arg[2:].partition("=")
            if name not in FLAGS:
                raise UsageError(f"unknown flag: --{name}")
            if not has_value:
                if FLAGS[name][1] == "bool":
                    value = "true"
                elif i < len(argv):
                    value = argv[i]
                    i += 1
                else:
                    raise UsageError(f"flag needs an argument: --{name}")
            _set(cfg, name, value, seen)
        elif arg.startswith("-") and arg != "-":
            # single-dash: shorthand flags, and the only one is -h
            if arg[1] == "h":
                raise HelpRequested
            raise UsageError(f"unknown shorthand flag: '{arg[1]}' in {arg}")
        else:
            cfg.args.append(arg)   # cobra passes positional arguments on; etcd ignores them
    if not split_host_port(cfg.listen_addr):
        raise UsageError(f'invalid argument "{cfg.listen_addr}" for "--listen-addr" flag: '
                         "missing port in address")
    return cfg


# ---- endpoints ------------------------------------------------------------------------------

@dataclasses.dataclass(eq=False)
class Remote:
    """One endpoint; priority and weight as its SRV record gave them (0 without SRV)."""
    host: str
    port: int
    priority: int = 0
    weight: int = 0
    active: bool = True

    @property
    def addr(self) -> str:
        return join_host_port(self.host, self.port)


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_host_port(text: str) -> tuple[str, int] | None:
    """net.SplitHostPort plus a decimal port; None when it is not host:port."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            return None
        port = rest[1:]
    else:
        if text.count(":") != 1:
            return None
        host, port = text.split(":")
    if not port.isdigit() or int(port) > 65535:
        return None
    return host, int(port)


def strip_scheme(endpoint: str) -> str:
    """etcd's stripSchema: a URL with a host becomes that host:port."""
    if "://" in endpoint or endpoint.startswith("//"):
        u = urllib.parse.urlsplit(endpoint)
        if u.netloc:
            return u.netloc.rpartition("@")[2]
    return endpoint


def _given_endpoints(cfg: GatewayConfig) -> list[Remote]:
    remotes = endpoint_remotes(cfg.endpoints)
    if not remotes:
        raise UsageError("no endpoints found")
    return remotes


def endpoint_remotes(endpoints: list[str]) -> list[Remote]:
    remotes = []
    for ep in endpoints:
        hp = split_host_port(strip_scheme(ep))
        if hp is None:
            raise UsageError(f'error parsing endpoint "{ep}"')
        # an empty host is the local system, as Go dials it
        remotes.append(Remote(hp[0].rstrip(".") or "localhost", hp[1]))
    return remotes


def _srv_service(secure: bool, name: str) -> str:
    service = "etcd-client-ssl" if secure else "etcd-client"
    return f"{service}-{name}" if name else service


def discover(cfg: GatewayConfig) -> list[tuple[str, Remote]]:
    """etcd's discoverEndpoints for the gateway: (url, remote) from the SRV records, https
    first. Without --insecure-discovery only https records that answer a TCP dial are kept
    (etcd's ValidateSecureEndpoints). Raises dnssrv.SRVLookupError when both lookups fail."""
    from fastkv import dnssrv
    found: list[tuple[str, Remote]] = []
    errors = []
    for scheme in ("https", "http"):
        try:
            records = dnssrv.lookup_srv(_srv_service(scheme == "https", cfg.discovery_srv_name),
                                        "tcp", cfg.discovery_srv)
        except dnssrv.SRVLookupError as exc:
            errors.append(str(exc))
            continue
        for priority, weight, port, target in records:
            url = f"{scheme}://{join_host_port(target, port)}"
            found.append((url, Remote(target.rstrip("."), port, priority, weight)))
    if len(errors) == 2:
        raise dnssrv.SRVLookupError(f"dns lookup errors: {errors[0]} and {errors[1]}")
    urls = [u for u, _ in found]
    log.info("discovered cluster from SRV %s: endpoints %s", cfg.discovery_srv, urls)
    if cfg.insecure_discovery:
        return found
    log.info("validating discovered SRV endpoints %s", urls)
    problems: list[str] = []
    kept: list[tuple[str, Remote]] = []
    try:
        if cfg.trusted_ca_file:
            ssl.create_default_context(cafile=cfg.trusted_ca_file)
    except (OSError, ssl.SSLError, ValueError) as exc:
        problems.append(f"--trusted-ca-file {cfg.trusted_ca_file}: {exc}")
        found = []
    for url, remote in found:
        if not url.startswith("https://"):
            problems.append(f'"{url}" is insecure')
            continue
        try:
            socket.create_connection((remote.host, remote.port), timeout=DIAL_TIMEOUT).close()
        except OSError as exc:
            problems.append(f'"{url}" failed to dial ({exc})')
            continue
        kept.append((url, remote))
    if problems:
        log.warning("failed to validate discovered endpoints from %s (kept %s): %s",
                    cfg.discovery_srv, [u for u, _ in kept], ",".join(problems))
    else:
        log.info("using validated discovered SRV endpoints %s", [u for u, _ in kept])
    return kept


# ---- the proxy ------------------------------------------------------------------------------

class _Side(asyncio.Protocol):
    """One end of a piped pair: what it reads is written to its peer's transport."""

    __slots__ = ("pipe", "peer", "transport", "eof")

    def __init__(self, pipe: "_Pipe"):
        self.pipe = pipe
        self.peer: _Side | None = None
        self.transport: asyncio.Transport | None = None
        self.eof = False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.peer.transport.write(data)

    def eof_received(self):
        self.pipe.eof(self)
        return True   # keep our writing half open: the other direction may go on

    def connection_lost(self, exc):
        self.pipe.lost(self)

    # back-pressure: our outgoing buffer is full -> stop reading what fills it
    def pause_writing(self):
        t = self.peer.transport
        if t is not None and not t.is_closing():
            t.pause_reading()

    def resume_writing(self):
        t = self.peer.transport
        if t is not None and not t.is_closing():
            t.resume_reading()


class _ClientSide(_Side):
    """The accepted client connection: until an endpoint answers, what it sends is held
    (and reading paused; uvloop may deliver a first read after connection_made)."""

    __slots__ = ("early",)

    def __init__(self, pipe: "_Pipe"):
        super().__init__(pipe)
        self.early: list[bytes] | None = []

    def connection_made(self, transport):
        self.transport = transport
        transport.pause_reading()
        self.pipe.start()

    def data_received(self, data):
        if self.early is None:
            self.peer.transport.write(data)
        else:
            self.early.append(data)
            self.transport.pause_reading()

    def eof_received(self):
        if self.early is None:
            self.pipe.eof(self)
        else:
            self.eof = True   # passed on once connected
        return True

    def connected(self) -> None:
        """The upstream connection is made: send what came early, then pipe."""
        early, self.early = self.early, None
        t = self.peer.transport
        if early:
            t.write(b"".join(early))
        if self.eof:
            self.pipe.eof(self)
        elif not self.transport.is_closing():
            self.transport.resume_reading()


class _Pipe:
    __slots__ = ("proxy", "client", "upstream", "closed", "task")

    def __init__(self, proxy: "TCPProxy"):
        self.proxy = proxy
        self.client = _ClientSide(self)
        self.upstream = _Side(self)
        self.client.peer, self.upstream.peer = self.upstream, self.client
        self.closed = False
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.proxy.pipes.add(self)
        self.task = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        tried: set[int] = set()
        while not self.closed:
            remote = self.proxy.pick(tried)
            if remote is None:
                peer = self.client.transport.get_extra_info("peername")
                log.warning("no active endpoint for the client %s: closing its connection",
                            peer)
                self.close()
                return
            tried.add(id(remote))
            try:
                await asyncio.wait_for(loop.create_connection(
                    lambda: self.upstream, remote.host, remote.port), DIAL_TIMEOUT)
            except asyncio.CancelledError:
                self.close()
                raise
            except (OSError, asyncio.TimeoutError) as exc:
                self.proxy.deactivate(remote, exc)
                continue
            if self.closed:   # the client went away meanwhile
                self.upstream.transport.close()
            else:
                self.client.connected()
            return

    def eof(self, side: _Side) -> None:
        side.eof = True
        t = side.peer.transport
        if t is not None and not t.is_closing():
            if t.can_write_eof():
                t.write_eof()
            else:
                self.close()
                return
        if side.peer.eof or t is None:
            self.close()

    def lost(self, side: _Side) -> None:
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.proxy.pipes.discard(self)
        for t in (self.client.transport, self.upstream.transport):
            if t is not None and not t.is_closing():
                t.close()

    def abort(self) -> None:
        self.closed = True
        if self.task is not None and not self.task.done():
            self.task.cancel()
        for t in (self.client.transport, self.upstream.transport):
            if t is not None:
                t.abort()


class TCPProxy:
    """etcd's tcpproxy.TCPProxy on asyncio: pick an endpoint per client connection."""

    def __init__(self, remotes: list[Remote], retry_delay: float):
        self.remotes = remotes
        self.retry_delay = retry_delay or ZERO_RETRY_DELAY
        self.pick_count = 0
        self.pipes: set[_Pipe] = set()
        self._probes: dict[int, asyncio.TimerHandle | asyncio.Task] = {}
        self.server: asyncio.AbstractServer | None = None

    def pick(self, exclude: set[int] = frozenset()) -> Remote | None:
        """Among the active endpoints of the best (lowest) priority: by weight when some
        have one (a weight-0 one now and then, RFC 2782), else in turn."""
        candidates = [r for r in self.remotes if r.active and id(r) not in exclude]
        if not candidates:
            return None
        best = min(r.priority for r in candidates)
        group = [r for r in candidates if r.priority == best]
        weighted = [r for r in group if r.weight > 0]
        unweighted = [r for r in group if r.weight == 0]
        if weighted and not (unweighted and random.randrange(100) == 1):
            choose = random.randrange(sum(r.weight for r in weighted))
            for r in weighted:
                if choose < r.weight:
                    return r
                choose -= r.weight
        members = set(map(id, unweighted))
        n = len(self.remotes)
        for k in range(n):   # round robin over the list, from where the last pick stopped
            r = self.remotes[(self.pick_count + k) % n]
            if id(r) in members:
                self.pick_count = (self.pick_count + k + 1) % n
                return r
        return None

    def deactivate(self, remote: Remote, exc: BaseException) -> None:
        if not remote.active:
            return
        remote.active = False
        log.warning("deactivated endpoint %s for %s: %s", remote.addr,
                    format_duration(round(self.retry_delay * 1e9)), _err_text(exc))
        self._schedule_probe(remote)

    def _schedule_probe(self, remote: Remote) -> None:
        loop = asyncio.get_running_loop()
        self._probes[id(remote)] = loop.call_later(
            self.retry_delay, lambda: self._start_probe(remote))

    def _start_probe(self, remote: Remote) -> None:
        self._probes[id(remote)] = asyncio.get_running_loop().create_task(self._probe(remote))

    async def _probe(self, remote: Remote) -> None:
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(remote.host, remote.port), DIAL_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as exc:
            log.warning("failed to activate endpoint %s (stay inactive for another %s): %s",
                        remote.addr, format_duration(round(self.retry_delay * 1e9)),
                        _err_text(exc))
            self._schedule_probe(remote)
            return
        writer.close()
        self._probes.pop(id(remote), None)
        remote.active = True
        log.info("activated endpoint %s", remote.addr)

    async def start(self, host: str | None, port: int) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Pipe(self).client, host, port,
                                               backlog=BACKLOG)

    def close(self) -> None:
        """Stop accepting, drop every piped connection, stop the probes."""
        if self.server is not None:
            self.server.close()
        for p in list(self._probes.values()):
            p.cancel()
        self._probes.clear()
        for pipe in list(self.pipes):
            pipe.abort()
        self.pipes.clear()


def _err_text(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "i/o timeout"
    return str(exc) or type(exc).__name__


# ---- main -----------------------------------------------------------------------------------

def _usage_error(message: str, usage: str) -> int:
    print(f"Error: {message}\n{usage}\n", file=sys.stderr)
    return 2


def main(argv: list[str]) -> int:
    """`fastkv gateway ...` (argv: what follows "gateway")."""
    gateway_usage = GATEWAY_USAGE.split("\n", 2)[2]
    if not argv or argv[0] in ("-h", "--help") or argv == ["help"]:
        print(GATEWAY_USAGE)
        return 0
    if argv == ["help", "start"]:
        print(start_usage())
        return 0
    if argv[0] != "start":
        if argv[0].startswith("--"):
            return _usage_error(f"unknown flag: {argv[0].partition('=')[0]}", gateway_usage)
        if argv[0].startswith("-") and argv[0] != "-":
            return _usage_error(f"unknown shorthand flag: '{argv[0][1]}' in {argv[0]}",
                                gateway_usage)
        return _usage_error(f'unknown command "{argv[0]}" for "fastkv gateway"', gateway_usage)
    try:
        cfg = parse_start_flags(argv[1:])
    except HelpRequested:
        print(start_usage())
        return 0
    except UsageError as exc:
        return _usage_error(str(exc), start_usage().split("\n", 2)[2])
    return start(cfg)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def start(cfg: GatewayConfig) -> int:
    """Run the gateway until SIGINT/SIGTERM (exit 0); 1 when it cannot start, 2 for bad
    endpoints."""
    previous = signal.signal(signal.SIGTERM, _interrupt)   # also while discovery waits
    try:
        return _start(cfg)
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def _start(cfg: GatewayConfig) -> int:
    from fastkv import dnssrv, logsetup
    remotes: list[Remote] = []
    if not cfg.discovery_srv:
        try:
            remotes = _given_endpoints(cfg)
        except UsageError as exc:
            print(f"fastkv gateway: {exc}", file=sys.stderr)
            return 2
    logsetup.configure("info", "zap", ["stderr"])
    if cfg.discovery_srv:
        try:
            remotes = [r for _, r in discover(cfg)]
        except dnssrv.SRVLookupError as exc:
            print(f"fastkv gateway: {exc}", file=sys.stderr)
            return 1
        if not remotes:   # etcd: nothing (usable) discovered -> the --endpoints
            log.warning("no usable endpoints discovered from %s: using --endpoints %s",
                        cfg.discovery_srv, cfg.endpoints)
            try:
                remotes = _given_endpoints(cfg)
            except UsageError as exc:
                print(f"fastkv gateway: {exc}", file=sys.stderr)
                return 2
    try:
        import uvloop
        uvloop.install()
    except ImportError:   # uvloop is a dependency; plain asyncio works too
        pass
    try:
        return asyncio.run(_serve(cfg, remotes))
    except ListenError as exc:
        print(f"fastkv gateway: {exc}", file=sys.stderr)
        return 1


async def _serve(cfg: GatewayConfig, remotes: list[Remote]) -> int:
    host, port = split_host_port(cfg.listen_addr)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    proxy = TCPProxy(remotes, cfg.retry_delay)
    try:
        await proxy.start(host or None, port)
    except socket.gaierror as exc:
        raise ListenError(f"listen tcp {cfg.listen_addr}: lookup {host}: {exc.strerror}") from None
    except OSError as exc:
        why = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        raise ListenError(f"listen tcp {cfg.listen_addr}: bind: {why}") from None
    listening = [join_host_port(*s.getsockname()[:2]) for s in proxy.server.sockets]
    log.info("ready to proxy client requests to %s on %s (retry delay %s)",
             [r.addr for r in remotes], ", ".join(listening),
             format_duration(round(proxy.retry_delay * 1e9)))
    try:
        await stop.wait()
    finally:
        log.info("stopping the gateway (%d open connections)", len(proxy.pipes))
        proxy.close()
        await proxy.server.wait_closed()
    return 0
