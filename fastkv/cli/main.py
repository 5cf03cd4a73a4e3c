"""fastkvctl: etcdctl (API v3, version 3.4) work-alike over the v3 JSON gateway.

This module is the command table and the command bodies: each turns its
arguments into a gateway request exactly as etcdctl's clientv3 would build the
protobuf, sends it through :mod:`fastkv.cli.transport`, and hands the response
to :mod:`fastkv.cli.printer`. Messages and exit codes are etcdctl's
(ctlv3/command/error.go).
"""
from __future__ import annotations

import base64
import os
import signal
import ssl
import sys
import time

from fastkv.cli import flags as fl
from fastkv.cli.auth_commands import AUTH_COMMAND, ROLE_COMMAND, USER_COMMAND
from fastkv.cli.check_commands import CHECK_COMMAND
from fastkv.cli.completion import COMPLETION_COMMAND
from fastkv.cli.concurrency_commands import ELECT_COMMAND, LOCK_COMMAND
from fastkv.cli.help_command import HELP_COMMAND
from fastkv.cli.migrate_command import MIGRATE_COMMAND
from fastkv.cli.mirror_command import MAKE_MIRROR_COMMAND
from fastkv.cli.cluster_commands import (ALARM_COMMAND, COMPACTION_COMMAND, DEFRAG_COMMAND,
                                      ENDPOINT_COMMAND, MEMBER_COMMAND, MOVE_LEADER_COMMAND)
from fastkv.cli.printer import FORMATS, KNOWN_FORMATS, new_printer
from fastkv.cli.snapshot_commands import SNAPSHOT_COMMAND
from fastkv.cli.transport import ClientError, GatewayClient, RPCError
from fastkv.cli.txn_command import TXN_COMMAND
from fastkv.cli.watch_command import WATCH_COMMAND
from fastkv.keyrange import prefix_end

PROGRAM = "etcdctl"  # cobra's root name appears in usage; keep etcdctl's wording
VERSION = "3.4.23"
API_VERSION = "3.4"

# ctlv3/command/error.go
EXIT_SUCCESS = 0
EXIT_ERROR = 1
EXIT_BAD_CONNECTION = 2
EXIT_INVALID_INPUT = 3
EXIT_BAD_FEATURE = 4
EXIT_INTERRUPTED = 5
EXIT_IO = 6
EXIT_BAD_ARGS = 128


class Exit(Exception):
    """ExitWithError: print ``Error: <message>`` on stderr and exit with ``code``."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class Quit(Exception):
    """Exit with ``code``, the reason already printed (a fatal log line)."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def b64e(s: str | bytes) -> str:
    return base64.b64encode(s.encode("utf-8", "surrogateescape") if isinstance(s, str) else s).decode()


def arg_bytes(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def parse_hex_int64(text: str) -> int:
    """Go's strconv.ParseInt(text, 16, 64), with its error wording."""
    digits = text[1:] if text[:1] in "+-" else text
    if not digits or any(c not in "0123456789abcdefABCDEF" for c in digits):
        raise ValueError(f'strconv.ParseInt: parsing "{text}": invalid syntax')
    value = int(text, 16)
    if not -(1 << 63) <= value < (1 << 63):
        raise ValueError(f'strconv.ParseInt: parsing "{text}": value out of range')
    return value


def lease_from_arg(arg: str) -> int:
    """etcdctl's leaseFromArgs."""
    try:
        return parse_hex_int64(arg)
    except ValueError as e:
        raise Exit(EXIT_BAD_ARGS, f"bad lease ID arg ({e}), expecting ID in Hex") from None


# -- context: the client and the printer a command works with ------------------

class Context:
    def __init__(self, values: dict, stdin, stdout, stderr=None, parsed: fl.Parsed | None = None):
        self.values = values
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr or sys.stderr
        # etcdctl reads ETCDCTL_* when it builds a client's configuration: its warnings
        # (and a conflict with a flag) come then, after the command checked its arguments
        self._env_report = (parsed.env_warnings, parsed.env_conflict) if parsed else ([], None)
        fmt = values["write-out"]
        if fmt not in FORMATS:
            if fmt in KNOWN_FORMATS:
                raise Exit(EXIT_BAD_FEATURE, f"{fmt} not supported as output format")
            raise Exit(EXIT_BAD_FEATURE, "unsupported output format")
        self.format = fmt
        self.display = new_printer(fmt, stdout, values["hex"])
        self._client: GatewayClient | None = None

    def report_env(self) -> None:
        """The ETCDCTL_* warnings, once; an ETCDCTL_* variable given as a flag too ends
        the program (etcdctl's pkg/flags logs it at CRITICAL and exits 1)."""
        (warnings, conflict), self._env_report = self._env_report, ([], None)
        for w in warnings:
            capnslog(self.stderr, "W", w)
        if conflict is not None:
            capnslog(self.stderr, "C", str(conflict))
            raise Quit(EXIT_ERROR)

    def client(self) -> GatewayClient:
        if self._client is None:
            self.report_env()
            v = self.values
            if v.get("debug"):
                debug_dump(v)
            endpoints = self._discovered() or [e for e in v["endpoints"] if e.strip()]
            ctx = None
            if v["cacert"] or v["cert"] or v["insecure-skip-tls-verify"] or \
                    not v["insecure-transport"] or \
                    any(e.strip().startswith("https://") for e in endpoints):
                for path in (v["cert"], v["key"], v["cacert"]):   # the order Go's tlsutil reads them
                    if path:
                        try:
                            with open(path, "rb"):
                                pass
                        except OSError as e:   # as etcdctl: bad arguments (128), Go's wording
                            why = os.strerror(e.errno) if e.errno else str(e)
                            raise Exit(EXIT_BAD_ARGS, f"open {path}: {why[:1].lower()}{why[1:]}") from None
                try:
                    ctx = ssl.create_default_context(cafile=v["cacert"] or None)
                    if v["cert"]:
                        ctx.load_cert_chain(v["cert"], v["key"] or None)
                except OSError as e:  # unreadable or invalid certificate files
                    raise Exit(EXIT_BAD_CONNECTION, str(e)) from None
                if v["insecure-skip-tls-verify"]:
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                # as etcdctl: with TLS configured (a CA, a certificate or
                # --insecure-transport=false), an endpoint without a scheme is dialed with
                # TLS (http:// still means plaintext). Unlike etcdctl 3.4, whose
                # --insecure-skip-tls-verify alone leaves https:// endpoints verified,
                # fastkvctl always honours it.
                if v["cacert"] or v["cert"] or v["key"] or not v["insecure-transport"]:
                    endpoints = [e if "://" in e else "https://" + e.strip() for e in endpoints]
            try:
                self._client = GatewayClient(endpoints, v["dial-timeout"], v["command-timeout"], ctx)
            except (ClientError, ValueError) as e:
                raise Exit(EXIT_BAD_CONNECTION, str(e)) from None
            if v["user"]:
                self._authenticate(self._client)
        return self._client

    def _discovered(self) -> list[str]:
        """etcdctl's endpointsFromFlagValue: with --discovery-srv, the endpoints are the
        _etcd-client-ssl._tcp / _etcd-client._tcp SRV records' (http ones dropped
        unless --insecure-discovery, the default)."""
        v = self.values
        if not v["discovery-srv"]:
            return []
        from fastkv import dnssrv
        try:
            return dnssrv.client_endpoints(
                v["discovery-srv"], v["discovery-srv-name"], v["insecure-discovery"],
                lambda ep: sys.stderr.write(f'ignoring discovered insecure endpoint "{ep}"\n'))
        except dnssrv.SRVLookupError as e:
            raise Exit(EXIT_ERROR, str(e)) from None

    def _authenticate(self, client: GatewayClient) -> None:
        """etcdctl's authCfgFromCmd + clientv3.New: --user name[:password] (--password
        wins; without either, "Password: " is asked), then Authenticate; no password
        means no token, and a cluster without auth is used without one."""
        from fastkv.cli.auth_commands import ERR_AUTH_NOT_ENABLED, ask_password, rpc_error_text
        user, password = self.values["user"], self.values["password"]
        if not password:
            user, sep, password = user.partition(":")
            if not sep:
                password = ask_password(self, "Password: ")
        if not user or not password:
            return
        try:
            resp = client.call("/v3/auth/authenticate", {"name": user, "password": password})
        except RPCError as e:
            if e.message == ERR_AUTH_NOT_ENABLED:
                return
            raise Exit(EXIT_BAD_CONNECTION, rpc_error_text(e)) from None
        except ClientError as e:
            raise Exit(EXIT_BAD_CONNECTION, str(e)) from None
        client.token = resp.get("token", "")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def debug_dump(values: dict) -> None:
    """--debug: etcdctl lists every global flag as its ETCDCTL_* variable on stderr (its
    gRPC logging has no counterpart here). Unlike etcdctl, a password is not shown."""
    from fastkv.cli.v2.gostd import format_duration
    for f in sorted(GLOBAL_FLAGS, key=lambda f: f.name):
        val = values.get(f.name, f.default)
        if f.kind == "strings":
            text = "[" + ",".join(val) + "]"
        elif f.kind == "bool":
            text = "true" if val else "false"
        elif f.kind == "duration":
            text = format_duration(round(val * 1e9))
        else:
            text = str(val)
        if f.name == "password" and text:
            text = "********"
        sys.stderr.write(f"{fl.env_name('ETCDCTL', f.name)}={text}\n")
    sys.stderr.flush()


def call(ctx: Context, path: str, body: dict, exit_code: int = EXIT_ERROR, wrap: str = "%s") -> dict:
    try:
        return ctx.client().call(path, body)
    except ClientError as e:
        raise Exit(exit_code, wrap % e) from None


# -- kv commands ---------------------------------------------------------------

def put_request(args: list[str], v: dict, read_stdin) -> dict:
    """etcdctl's getPutOp: the PutRequest for ``put``'s arguments and flags (also a txn line's)."""
    if not args:
        raise Exit(EXIT_BAD_ARGS, "put command needs 1 argument and input from stdin or 2 arguments")
    if v["ignore-value"] and len(args) > 1:
        raise Exit(EXIT_BAD_ARGS, "put command needs only 1 argument when 'ignore-value' is set")
    value = b""
    if not v["ignore-value"]:
        if len(args) > 1:
            value = arg_bytes(args[1])
        else:
            value = read_stdin()
            if not value:
                raise Exit(EXIT_BAD_ARGS, "put command needs 1 argument and input from stdin or 2 arguments")
    try:
        lease = parse_hex_int64(v["lease"])
    except ValueError as e:
        raise Exit(EXIT_BAD_ARGS, f"bad lease ID ({e}), expecting ID in Hex") from None
    body = {"key": b64e(args[0])}
    if value:
        body["value"] = b64e(value)
    if lease:
        body["lease"] = str(lease)
    if v["prev-kv"]:
        body["prev_kv"] = True
    if v["ignore-value"]:
        body["ignore_value"] = True
    if v["ignore-lease"]:
        body["ignore_lease"] = True
    return body


def cmd_put(ctx: Context, args: list[str], v: dict) -> int:
    body = put_request(args, v, ctx.stdin.read)
    ctx.display.put(call(ctx, "/v3/kv/put", body))
    return EXIT_SUCCESS


SORT_TARGETS = {"": 0, "KEY": 0, "VERSION": 1, "CREATE": 2, "MODIFY": 3, "VALUE": 4}
SORT_ORDERS = {"": 0, "ASCEND": 1, "DESCEND": 2}


def range_body(key: str, range_end: str | None, prefix: bool, from_key: bool) -> dict:
    """Key and range_end as clientv3's WithRange / WithPrefix / WithFromKey set them."""
    k = arg_bytes(key)
    end = arg_bytes(range_end) if range_end is not None else None
    if prefix:
        if not k:
            k, end = b"\x00", b"\x00"
        else:
            end = prefix_end(k)
    if from_key:
        if not k:
            k = b"\x00"
        end = b"\x00"
    body = {"key": b64e(k)}
    if end:
        body["range_end"] = b64e(end)
    return body


def get_request(args: list[str], v: dict) -> dict:
    """etcdctl's getGetOp: the RangeRequest for ``get``'s arguments and flags."""
    if not args:
        raise Exit(EXIT_BAD_ARGS, "get command needs one argument as key and an optional argument as range_end")
    if v["prefix"] and v["from-key"]:
        raise Exit(EXIT_BAD_ARGS, "`--prefix` and `--from-key` cannot be set at the same time, choose one")
    if v["consistency"] not in ("l", "s"):
        raise Exit(EXIT_BAD_FEATURE, f'unknown consistency flag "{v["consistency"]}"')
    if len(args) > 1 and (v["prefix"] or v["from-key"]):
        raise Exit(EXIT_BAD_ARGS, "too many arguments, only accept one argument when `--prefix` or `--from-key` is set")
    order = v["order"].upper()
    if order not in SORT_ORDERS:
        raise Exit(EXIT_BAD_FEATURE, f"bad sort order {v['order']}")
    target = v["sort-by"].upper()
    if target not in SORT_TARGETS:
        raise Exit(EXIT_BAD_FEATURE, f"bad sort target {v['sort-by']}")
    body = range_body(args[0], args[1] if len(args) > 1 else None, v["prefix"], v["from-key"])
    if v["limit"]:
        body["limit"] = str(v["limit"])
    if v["rev"] > 0:
        body["revision"] = str(v["rev"])
    sort_order, sort_target = SORT_ORDERS[order], SORT_TARGETS[target]
    if sort_target == 0 and sort_order == 1:
        sort_order = 0  # clientv3.WithSort: ascending by key is the server's natural order
    if sort_order:
        body["sort_order"] = sort_order
    if sort_target:
        body["sort_target"] = sort_target
    if v["consistency"] == "s":
        body["serializable"] = True
    if v["keys-only"]:
        body["keys_only"] = True
    if v.get("count-only"):
        body["count_only"] = True
    return body


def cmd_get(ctx: Context, args: list[str], v: dict) -> int:
    body = get_request(args, v)
    if v["print-value-only"]:
        if ctx.format != "simple":
            raise Exit(EXIT_BAD_ARGS, "print-value-only is only for `--write-out=simple`")
        ctx.display.value_only = True
    ctx.display.get(call(ctx, "/v3/kv/range", body), count_only=v["count-only"])
    return EXIT_SUCCESS


def del_request(args: list[str], v: dict) -> dict:
    """etcdctl's getDelOp: the DeleteRangeRequest for ``del``'s arguments and flags."""
    if not args or len(args) > 2:
        raise Exit(EXIT_BAD_ARGS, "del command needs one argument as key and an optional argument as range_end")
    if v["prefix"] and v["from-key"]:
        raise Exit(EXIT_BAD_ARGS, "`--prefix` and `--from-key` cannot be set at the same time, choose one")
    if len(args) > 1 and (v["prefix"] or v["from-key"]):
        raise Exit(EXIT_BAD_ARGS, "too many arguments, only accept one argument when `--prefix` or `--from-key` is set")
    body = range_body(args[0], args[1] if len(args) > 1 else None, v["prefix"], v["from-key"])
    if v["prev-kv"]:
        body["prev_kv"] = True
    return body


def cmd_del(ctx: Context, args: list[str], v: dict) -> int:
    body = del_request(args, v)
    ctx.display.delete(call(ctx, "/v3/kv/deleterange", body))
    return EXIT_SUCCESS


# -- lease commands ------------------------------------------------------------

def cmd_lease_grant(ctx: Context, args: list[str], v: dict) -> int:
    if len(args) != 1:
        raise Exit(EXIT_BAD_ARGS, "lease grant command needs TTL argument")
    from fastkv.cli.cluster_commands import parse_int64   # strconv.ParseInt(args[0], 10, 64)
    try:
        ttl = parse_int64(args[0])
    except ValueError as e:
        raise Exit(EXIT_BAD_ARGS, f"bad TTL ({e})") from None
    resp = call(ctx, "/v3/lease/grant", {"TTL": str(ttl)}, wrap="failed to grant lease (%s)")
    ctx.display.grant(resp)
    return EXIT_SUCCESS


def cmd_lease_revoke(ctx: Context, args: list[str], v: dict) -> int:
    if len(args) != 1:
        raise Exit(EXIT_BAD_ARGS, "lease revoke command needs 1 argument")
    lid = lease_from_arg(args[0])
    resp = call(ctx, "/v3/lease/revoke", {"ID": str(lid)}, wrap="failed to revoke lease (%s)")
    ctx.display.revoke(lid, resp)
    return EXIT_SUCCESS


def cmd_lease_timetolive(ctx: Context, args: list[str], v: dict) -> int:
    if len(args) != 1:
        raise Exit(EXIT_BAD_ARGS, "lease timetolive command needs lease ID as argument")
    lid = lease_from_arg(args[0])
    body = {"ID": str(lid)}
    if v["keys"]:
        body["keys"] = True
    resp = call(ctx, "/v3/lease/timetolive", body, exit_code=EXIT_BAD_CONNECTION)
    resp.setdefault("ID", lid)
    ctx.display.timetolive(resp, v["keys"])
    return EXIT_SUCCESS


def cmd_lease_list(ctx: Context, args: list[str], v: dict) -> int:
    resp = call(ctx, "/v3/lease/leases", {}, exit_code=EXIT_BAD_CONNECTION)
    ctx.display.leases(resp)
    return EXIT_SUCCESS


def keepalive_once(client: GatewayClient, lid: int) -> dict:
    """One LeaseKeepAlive round trip; clientv3 turns TTL <= 0 into ErrLeaseNotFound."""
    for resp in client.stream("/v3/lease/keepalive", {"ID": str(lid)}, timeout=client.command_timeout):
        if resp.get("TTL", 0) <= 0:
            raise RPCError(5, "etcdserver: requested lease not found")
        resp["ID"] = lid
        return resp
    raise ClientError("etcdserver: no response to lease keep-alive")


def cmd_lease_keepalive(ctx: Context, args: list[str], v: dict) -> int:
    if len(args) != 1:
        raise Exit(EXIT_BAD_ARGS, "lease keep-alive command needs lease ID as argument")
    lid = lease_from_arg(args[0])
    client = ctx.client()
    if v["once"]:
        try:
            resp = keepalive_once(client, lid)
        except ClientError as e:
            raise Exit(EXIT_BAD_CONNECTION, str(e)) from None
        ctx.display.keepalive(resp)
        return EXIT_SUCCESS
    # clientv3.KeepAlive: renew every TTL/3; the channel closes when the lease is gone
    while True:
        try:
            resp = keepalive_once(client, lid)
        except RPCError:
            break
        except ClientError:
            time.sleep(0.5)  # server unreachable: keep trying, as clientv3 does
            continue
        ctx.display.keepalive(resp)
        ctx.stdout.flush()
        time.sleep(max(resp["TTL"] / 3.0, 0.5))
    ctx.display.keepalive_ended(lid)
    return EXIT_SUCCESS


def cmd_version(ctx: Context, args: list[str], v: dict) -> int:
    ctx.stdout.write(f"etcdctl version: {VERSION}\nAPI version: {API_VERSION}\n".encode())
    return EXIT_SUCCESS


# -- the command table ---------------------------------------------------------

PUT_DESCRIPTION = """
Puts the given key into the store.

When <value> begins with '-', <value> is interpreted as a flag.
Insert '--' for workaround:

$ put <key> -- <value>
$ put -- <key> <value>

If <value> isn't given as a command line argument and '--ignore-value' is not specified,
this command tries to read the value from standard input.

If <lease> isn't given as a command line argument and '--ignore-lease' is not specified,
this command tries to read the value from standard input.

For example,
$ cat file | put <key>
will store the content of the file to <key>.
"""

F = fl.Flag
GLOBAL_FLAGS = [
    F("endpoints", "strings", ["127.0.0.1:2379"], "gRPC endpoints"),
    F("discovery-srv", "string", "", "domain name to query for SRV records describing cluster endpoints", "d"),
    F("discovery-srv-name", "string", "", "service name to query when using DNS discovery"),
    F("insecure-discovery", "bool", True, "accept insecure SRV records describing cluster endpoints"),
    F("debug", "bool", False, "enable client-side debug logging"),
    F("write-out", "string", "simple", "set the output format (fields, json, protobuf, simple, table)", "w"),
    F("hex", "bool", False, "print byte strings as hex encoded strings"),
    F("dial-timeout", "duration", 2.0, "dial timeout for client connections"),
    F("command-timeout", "duration", 5.0, "timeout for short running command (excluding dial timeout)"),
    # gRPC keepalive pings; the JSON gateway transport has none (accepted, shown by --debug)
    F("keepalive-time", "duration", 2.0, "keepalive time for client connections"),
    F("keepalive-timeout", "duration", 6.0, "keepalive timeout for client connections"),
    F("cacert", "string", "", "verify certificates of TLS-enabled secure servers using this CA bundle"),
    F("cert", "string", "", "identify secure client using this TLS certificate file"),
    F("key", "string", "", "identify secure client using this TLS key file"),
    F("insecure-skip-tls-verify", "bool", False,
      "skip server certificate verification (CAUTION: this option should be enabled only for testing purposes)"),
    F("insecure-transport", "bool", True, "disable transport security for client connections"),
    F("user", "string", "", "username[:password] for authentication (prompt if password is not supplied)"),
    F("password", "string", "",
      "password for authentication (if this option is used, --user option shouldn't include password)"),
]

ROOT = fl.Command(PROGRAM, "A simple command line client for etcd3.", f"{PROGRAM} [flags]", subcommands=[
    fl.Command("put", "Puts the given key into the store",
               "put [options] <key> <value> (<value> can also be given from stdin) [flags]", cmd_put,
               description=PUT_DESCRIPTION, flags=[
                   F("lease", "string", "0", "lease ID (in hexadecimal) to attach to the key"),
                   F("prev-kv", "bool", False, "return the previous key-value pair before modification"),
                   F("ignore-value", "bool", False, "updates the key using its current value"),
                   F("ignore-lease", "bool", False, "updates the key using its current lease"),
               ]),
    fl.Command("get", "Gets the key or a range of keys", "get [options] <key> [range_end] [flags]", cmd_get, [
        F("consistency", "string", "l", "Linearizable(l) or Serializable(s)"),
        F("order", "string", "", "Order of results; ASCEND or DESCEND (ASCEND by default)"),
        F("sort-by", "string", "", "Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION"),
        F("limit", "int", 0, "Maximum number of results"),
        F("prefix", "bool", False, "Get keys with matching prefix"),
        F("from-key", "bool", False, "Get keys that are greater than or equal to the given key using byte compare"),
        F("rev", "int", 0, "Specify the kv revision"),
        F("keys-only", "bool", False, "Get only the keys"),
        F("count-only", "bool", False, "Get only the count"),
        F("print-value-only", "bool", False, 'Only write values when using the "simple" output format'),
    ]),
    fl.Command("del", "Removes the specified key or range of keys [key, range_end)",
               "del [options] <key> [range_end] [flags]", cmd_del, [
                   F("prefix", "bool", False, "delete keys with matching prefix"),
                   F("prev-kv", "bool", False, "return deleted key-value pairs"),
                   F("from-key", "bool", False,
                     "delete keys that are greater than or equal to the given key using byte compare"),
               ]),
    WATCH_COMMAND,
    fl.Command("lease", "Lease related commands", "lease <subcommand> [flags]", subcommands=[
        fl.Command("grant", "Creates leases", "lease grant <ttl> [flags]", cmd_lease_grant),
        fl.Command("keep-alive", "Keeps leases alive (renew)", "lease keep-alive [options] <leaseID> [flags]",
                   cmd_lease_keepalive,
                   [F("once", "bool", False,
                      "Resets the keep-alive time to its original value and exits immediately")]),
        fl.Command("list", "List all active leases", "lease list [flags]", cmd_lease_list),
        fl.Command("revoke", "Revokes leases", "lease revoke <leaseID> [flags]", cmd_lease_revoke),
        fl.Command("timetolive", "Get lease information", "lease timetolive <leaseID> [options] [flags]",
                   cmd_lease_timetolive, [F("keys", "bool", False, "Get keys attached to this lease")]),
    ]),
    fl.Command("version", "Prints the version of etcdctl", "version [flags]", cmd_version, uses_env=False),
    USER_COMMAND,
    ROLE_COMMAND,
    AUTH_COMMAND,
    MEMBER_COMMAND,
    ENDPOINT_COMMAND,
    ALARM_COMMAND,
    COMPACTION_COMMAND,
    DEFRAG_COMMAND,
    MOVE_LEADER_COMMAND,
    SNAPSHOT_COMMAND,
    TXN_COMMAND,
    LOCK_COMMAND,
    ELECT_COMMAND,
    MAKE_MIRROR_COMMAND,
    CHECK_COMMAND,
    COMPLETION_COMMAND,
    HELP_COMMAND,
    MIGRATE_COMMAND,
])
del F


def main(argv: list[str] | None = None, stdin=None, stdout=None, stderr=None,
         interrupt_kills: bool = True) -> int:
    # etcdctl's main.go: ETCDCTL_API picks the mode; "" or "3" is this one
    apiv = os.environ.get("ETCDCTL_API", "")
    if apiv == "2":
        os.environ.pop("ETCDCTL_API")  # etcdctl unsets it: exec-watch's commands never see it
        from fastkv.cli.v2.main import main as main_v2
        return main_v2(argv, stdin, stdout, stderr, interrupt_kills)
    if apiv not in ("", "3"):
        (stderr or sys.stderr).write(f"unsupported API version {apiv}\n")
        return EXIT_ERROR
    if argv is None:  # run as a program: die quietly on a closed pipe, as Go programs do
        argv = sys.argv[1:]
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    stderr = stderr or sys.stderr

    def error(msg: str) -> None:
        stderr.write(f"Error: {msg}\n")
        stderr.flush()

    try:
        parsed = fl.parse(ROOT, GLOBAL_FLAGS, argv)
    except LookupError as e:
        msg = f'unknown command "{e.args[0]}" for "{PROGRAM}"'
        stderr.write(f"Error: {msg}\nRun '{PROGRAM} --help' for usage.\n")
        error(msg)
        return EXIT_ERROR
    except fl.UsageError as e:
        # cobra: error, usage on stdout, blank line; then etcdctl's own ExitWithError
        cmd = e.command or ROOT
        stderr.write(f"Error: {e}\n")
        stdout.write(usage(cmd).encode())
        stdout.flush()
        stderr.write("\n")
        error(str(e))
        return EXIT_ERROR
    cmd = parsed.command
    if parsed.values["help"] or cmd.run is None:
        stdout.write(usage(cmd).encode())
        stdout.flush()
        return EXIT_SUCCESS
    ctx = None
    try:
        ctx = Context(parsed.values, stdin, stdout, stderr, parsed)
        ctx.argv = argv   # the raw command line: watch looks for its "--" there, as etcdctl does
        code = cmd.run(ctx, parsed.args, parsed.values)
        stdout.flush()
        return code
    except Exit as e:
        stdout.flush()
        error(e.message)
        return e.code
    except Quit as e:
        stdout.flush()
        return e.code
    except KeyboardInterrupt:
        stdout.flush()
        if interrupt_kills:
            _die_of_sigint()
        return 130
    except BrokenPipeError:
        return EXIT_IO
    finally:
        if ctx is not None:
            ctx.close()


def usage(cmd: fl.Command, help_flag: bool = True) -> str:
    return fl.usage_text(cmd, GLOBAL_FLAGS, PROGRAM, VERSION, API_VERSION, help_flag)


def capnslog(stderr, level: str, message: str) -> None:
    """A pkg/flags log line as etcdctl's capnslog prints it."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)) + f".{int(now * 1e6) % 1000000:06d}"
    stderr.write(f"{stamp} {level} | pkg/flags: {message}\n")
    stderr.flush()


def _die_of_sigint() -> None:
    """Leave as a Go program does on Ctrl-C: killed by SIGINT (the shell shows 130)."""
    sys.stdout.flush()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())
