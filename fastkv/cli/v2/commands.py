"""The bodies of etcdctl v2's commands (etcdctl/ctlv2/command/*.go), in the same order
of checks, requests and prints, with the same messages and exit codes.

Every command builds its client first (``must_new_*``: endpoints, TLS, and unless
``--no-sync`` a cluster sync), then checks its arguments, then makes its request
under ``--total-timeout`` (watches wait without a deadline). Errors end the
program through :func:`handle_error`: ``Error:  <err>`` on stderr and an exit
code from error.go. The output formats are format.go's.
"""
from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
import threading
import time

from fastkv.cli.v2 import gostd
from fastkv.cli.v2.client import (
    BACKGROUND, PREV_EXIST, PREV_IGNORE, PREV_NO_EXIST, Client, ClientError, ClusterError, Context,
    KeysAPI, MembersAPI, NoEndpoints, Request, Transport, errno_text, is_connection_error, tls_error_text)
from fastkv.cli.v2.flags import Context as CliContext
from fastkv.cli.v2.flags import OsExit
from fastkv.errors import EtcdError, StorageCorruption

# error.go
EXIT_SUCCESS = 0
EXIT_BAD_ARGS = 1
EXIT_BAD_CONNECTION = 2
EXIT_BAD_AUTH = 3
EXIT_SERVER_ERROR = 4
EXIT_CLUSTER_NOT_HEALTHY = 5

DEFAULT_ENDPOINTS = "http://127.0.0.1:2379,http://127.0.0.1:4001"
DEFAULT_DIAL_TIMEOUT_NS = 30 * 1000000000


class CommandError(Exception):
    """A plain Go ``errors.New`` value."""


def handle_error(c: CliContext, code: int, err: Exception) -> None:
    """error.go's handleError. (Its JSON branch wants a *client.Error, which the
    client never returns: errors are always printed as text.)"""
    c.io.err(f"Error:  {err}\n")
    if isinstance(err, ClusterError):
        c.io.err(err.detail() + "\n")
    raise OsExit(code)


def go_panic(c: CliContext, message: str) -> None:
    """What a Go runtime panic leaves: its message on stderr (then a goroutine trace
    we cannot reproduce), exit status 2."""
    c.io.err(f"panic: {message}\n\ngoroutine 1 [running]:\n")
    raise OsExit(2)


NIL_DEREFERENCE = "runtime error: invalid memory address or nil pointer dereference"


def out(c: CliContext, text: str) -> None:
    c.io.out(text)


# -- util.go ---------------------------------------------------------------------

def _peers_flag_value(c: CliContext) -> list[str]:
    peerstr = (c.global_string("endpoints") or os.environ.get("ETCDCTL_ENDPOINTS", "")
               or c.global_string("endpoint") or os.environ.get("ETCDCTL_ENDPOINT", "")
               or c.global_string("peers") or os.environ.get("ETCDCTL_PEERS", "")
               or DEFAULT_ENDPOINTS)
    return peerstr.split(",")


def _discovery_domain(c: CliContext) -> tuple[str, bool, str]:
    domain = c.global_string("discovery-srv") or os.environ.get("ETCDCTL_DISCOVERY_SRV", "")
    insecure = c.global_bool("insecure-discovery") or os.environ.get("ETCDCTL_INSECURE_DISCOVERY", "") != ""
    service = os.environ.get("ETCDCTL_DISCOVERY_SRV_NAME", "")
    return domain, insecure, service


def _domain_discovery_value(c: CliContext) -> list[str]:
    domain, insecure, service = _discovery_domain(c)
    if not domain:
        return []
    from fastkv import dnssrv
    try:
        return dnssrv.client_endpoints(
            domain, service, insecure,
            lambda ep: c.io.err(f"ignoring discovered insecure endpoint {gostd.quote(ep)}\n"))
    except dnssrv.SRVLookupError as exc:
        raise ClientError(str(exc)) from None


def get_endpoints(c: CliContext) -> list[str]:
    eps = _domain_discovery_value(c)
    if not eps:
        eps = _peers_flag_value(c)
    out_eps = []
    for ep in eps:
        u = gostd.parse_url(ep)
        if not u.scheme:
            u.scheme = "http"
        out_eps.append(str(u))
    return out_eps


def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ClientError(f"open {path}: {errno_text(e)}") from None


_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.S)


def _tls_context(cert: str, key: str, ca: str) -> ssl.SSLContext | None:
    """pkg/transport's TLSInfo.ClientConfig, with its checks in its order."""
    if not (cert or key or ca):
        return None
    if cert or key:
        if not key or not cert:
            raise ClientError(f"KeyFile and CertFile must both be present[key: {key}, cert: {cert}]")
        cert_pem, key_pem = _read_file(cert), _read_file(key)
        if not _PEM_CERT.search(cert_pem):
            raise ClientError("tls: failed to find any PEM data in certificate input")
        if b"-----BEGIN" not in key_pem:
            raise ClientError("tls: failed to find any PEM data in key input")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca:
        # the CA file's certificates and only those (a file without any trusts nothing)
        blocks = _PEM_CERT.findall(_read_file(ca))
        try:
            if blocks:
                ctx.load_verify_locations(cadata=b"\n".join(blocks).decode("ascii"))
        except (ssl.SSLError, ValueError):
            raise ClientError("x509: malformed certificate") from None
    else:
        ctx.load_default_certs()
    if cert:
        try:
            ctx.load_cert_chain(cert, key)
        except ssl.SSLError as e:
            raise ClientError(tls_error_text(e)) from None
    return ctx


def get_transport(c: CliContext) -> Transport:
    ca = c.global_string("ca-file") or os.environ.get("ETCDCTL_CA_FILE", "")
    cert = c.global_string("cert-file") or os.environ.get("ETCDCTL_CERT_FILE", "")
    key = c.global_string("key-file") or os.environ.get("ETCDCTL_KEY_FILE", "")
    domain, insecure, _ = _discovery_domain(c)
    dial = DEFAULT_DIAL_TIMEOUT_NS
    total = c.global_duration("total-timeout")
    if total != 0 and total < dial:
        dial = total
    return Transport(_tls_context(cert, key, ca), dial, server_name="" if insecure else domain)


def ask_password(c: CliContext, prompt: str) -> str:
    """speakeasy.Ask: the prompt on stdout, echo off with stty, one line from stdin."""
    c.io.out(prompt)
    c.io.stdout.flush()
    try:
        subprocess.run(["stty", "-echo"], executable="/bin/stty", check=False)
    except OSError as e:
        raise ClientError(f"failed turning off console echo for password entry:\n\t{e}") from None
    try:
        line = bytearray()
        while True:
            try:
                b = os.read(0, 1)
            except OSError as e:
                raise ClientError(f"failed during password entry: {e}") from None
            if not b or b == b"\n":
                break
            line += b
    finally:
        try:
            subprocess.run(["stty", "echo"], executable="/bin/stty", check=False)
        except OSError:
            pass
        c.io.out("\n")
    return os.fsdecode(bytes(line)).removesuffix("\r").strip()


def new_client(c: CliContext) -> Client:
    eps = get_endpoints(c)
    tr = get_transport(c)
    uflag = c.global_string("username") or os.environ.get("ETCDCTL_USERNAME", "")
    username, password = None, ""
    if uflag:
        if ":" in uflag:
            username, password = uflag.split(":", 1)
        else:
            username = uflag
            password = ask_password(c, "Password: ")
    return Client(eps, tr, c.global_duration("timeout"), username, password)


def _new_client_or_exit(c: CliContext) -> Client:
    try:
        return new_client(c)
    except (ClientError, gostd.URLError) as e:
        c.io.err(f"{e}\n")
        raise OsExit(1) from None


def total_timeout(c: CliContext) -> Context:
    return Context(c.global_duration("total-timeout"))


def must_new_client(c: CliContext) -> Client:
    hc = _new_client_or_exit(c)
    debug = c.global_bool("debug")
    if debug:
        hc.debug_out = c.io.err
    if not c.global_bool("no-sync"):
        if debug:
            c.io.err(f"start to sync cluster using endpoints({','.join(hc.endpoint_strings())})\n")
        try:
            hc.sync(total_timeout(c))
        except NoEndpoints as e:
            c.io.err("etcd cluster has no published client endpoints.\n")
            c.io.err("Try '--no-sync' if you want to access non-published client endpoints"
                     f"({','.join(hc.endpoint_strings())}).\n")
            handle_error(c, EXIT_SERVER_ERROR, e)
        except ClientError as e:
            if is_connection_error(e):
                handle_error(c, EXIT_BAD_CONNECTION, e)
        if debug:
            c.io.err(f"got endpoints({','.join(hc.endpoint_strings())}) after sync\n")
    if debug:
        c.io.err(f"Cluster-Endpoints: {', '.join(hc.endpoint_strings())}\n")
    return hc


def must_new_client_no_sync(c: CliContext) -> Client:
    hc = _new_client_or_exit(c)
    if c.global_bool("debug"):
        c.io.err(f"Cluster-Endpoints: {', '.join(hc.endpoint_strings())}\n")
        hc.debug_out = c.io.err
    return hc


def must_new_key_api(c: CliContext) -> KeysAPI:
    return KeysAPI(must_new_client(c))


def must_new_members_api(c: CliContext) -> MembersAPI:
    return MembersAPI(must_new_client(c))


def arg_or_stdin(c: CliContext, args: list[str], i: int) -> str:
    if i < len(args):
        return args[i]
    data = c.io.stdin.read() if c.io.stdin is not None else b""
    if not data:
        raise CommandError("no available argument and stdin")
    return data.decode("utf-8", "surrogateescape")


# -- format.go -------------------------------------------------------------------

def print_response_key(c: CliContext, resp, fmt: str) -> None:
    if fmt == "simple":
        if resp.action != "delete":
            out(c, f"{_node(c, resp).value}\n")
        else:
            if resp.prev_node is None:
                go_panic(c, NIL_DEREFERENCE)
            out(c, f"PrevNode.Value: {resp.prev_node.value}\n")
    elif fmt == "extended":
        n = _node(c, resp)
        out(c, f"Key: {n.key}\nCreated-Index: {n.created_index}\nModified-Index: {n.modified_index}\n")
        if resp.prev_node is not None:
            out(c, f"PrevNode.Value: {resp.prev_node.value}\n")
        out(c, f"TTL: {n.ttl}\nIndex: {resp.index}\n")
        if resp.action != "delete":
            out(c, f"\n{n.value}\n")
    elif fmt == "json":
        out(c, resp.marshal() + "\n")
    else:
        c.io.err(f"Unsupported output format: {fmt}\n")


def _node(c: CliContext, resp):
    if resp.node is None:
        go_panic(c, NIL_DEREFERENCE)
    return resp.node


def _output(c: CliContext) -> str:
    return c.global_string("output")


# -- key commands -------------------------------------------------------------------

def _key_arg(c: CliContext) -> str:
    """The first argument, or etcdctl's "key required" (exit 1)."""
    args = c.args()
    if not args:
        handle_error(c, EXIT_BAD_ARGS, CommandError("key required"))
    return args[0]


def _key_and_value(c: CliContext) -> tuple[str, str]:
    """<key> <value> (the value may come from stdin), with etcdctl's errors."""
    key = _key_arg(c)
    try:
        value = arg_or_stdin(c, c.args(), 1)
    except CommandError:
        handle_error(c, EXIT_BAD_ARGS, CommandError("value required"))
    return key, value


def set_command(c: CliContext) -> None:
    ki = must_new_key_api(c)
    key, value = _key_and_value(c)
    try:
        resp = ki.set(total_timeout(c), key, value, ttl=c.int("ttl"),
                      prev_index=c.int("swap-with-index"), prev_value=c.string("swap-with-value"))
    except ClientError as e:
        handle_error(c, EXIT_SERVER_ERROR, e)
    print_response_key(c, resp, _output(c))


def get_command(c: CliContext) -> None:
    ki = must_new_key_api(c)
    key = _key_arg(c)
    try:
        resp = ki.get(total_timeout(c), key, sort=c.bool("sort"), quorum=c.bool("quorum"))
    except ClientError as e:
        handle_error(c, EXIT_SERVER_ERROR, e)
    node = _node(c, resp)
    if node.dir:
        c.io.err(f"{node.key}: is a directory\n")
        raise OsExit(1)
    print_response_key(c, resp, _output(c))


def update_command(c: CliContext) -> None:
    ki = must_new_key_api(c)
    key, value = _key_and_value(c)
    try:
        resp = ki.set(total_timeout(c), key, value, ttl=c.int("ttl"), prev_exist=PREV_EXIST)
    except ClientError as e:
        handle_error(c, EXIT_SERVER_ERROR, e)
    print_response_key(c, resp, _output(c))


def mk_command(c: CliContext) -> None:
    ki = must_new_key_api(c)
    key, value = _key_and_value(c)
    ttl = c.int("ttl")
    try:
        if not c.bool("in-order"):
            resp = ki.set(total_timeout(c), key, value, ttl=ttl, prev_exist=PREV_NO_EXIST)
        else:
            resp = ki.create_in_order(total_timeout(c), key, value, ttl=ttl)
    except ClientError as e:
        handle_error(c, EXIT_SERVER_ERROR, e)
    print_response_key(c, resp, _output(c))


def _mkdir(c: CliContext, prev_exist: str) -> None:
    ki = must_new_key_api(c)
    key = _key_arg(c)
    try:
        resp = ki.set(total_timeout(c), key, "", ttl=c.int("ttl"), dir=True, prev_exist=prev_exist)
    except ClientError as e:
        handle_error(c, EXIT_SERVER_ERROR, e)
    if _output(c) != "simple":
        print_response_key(c, resp, _output(c))


def mkdir_command(c: CliContext) -> None:
    _mkdir(c, PREV_NO_EXIST)


def setdir_command(c: CliContext) -> None:
    _mkdir(c, PREV_IGNORE)


def updatedir_command(c: CliContext) -> None:
    _mkdir(c, PREV_EXIST)


def _print_removed(c: CliContext, resp) -> None:
    if not _node(c, resp).dir or _output(c) != "simple":
        print_response_key(c, resp, _output(c))


def rm_command(c: CliContext) -> None:
    ki = must_new_key_api(c)
    key = _key_arg(c)
    try:
        resp = ki.delete(total_timeout(c), key, prev_index=c.int("with-index"),
                         prev_value=c.string("with-value"), dir=c.bool("dir"),
                         recursive=c.bool("recursive"))
    except ClientError as e:
        handle_error(c, EXIT_SERVER_ERROR, e)
    _print_removed(c, resp)


def rmdir_command(c: CliContext) -> None:
    ki = must_new_key_api(c)
    key = _key_arg(c)
    try:
        resp = ki.delete(total_timeout(c), key, dir=True)
    except ClientError as e:
        handle_error(c, EXIT_SERVER_ERROR, e)
    _print_removed(c, resp)


def ls_command(c: CliContext) -> None:
    ki = must_new_key_api(c)
    args = c.args()
    key = args[0] if args else "/"
    try:
        resp = ki.get(total_timeout(c), key, sort=c.bool("sort"), recursive=c.bool("recursive"),
                      quorum=c.bool("quorum"))
    except ClientError as e:
        handle_error(c, EXIT_SERVER_ERROR, e)
    if _output(c) == "simple":
        node = _node(c, resp)
        if not node.dir:
            out(c, f"{node.key}\n")
        for child in node.nodes or []:
            _r_print(c, child)
    else:
        print_response_key(c, resp, _output(c))


def _r_print(c: CliContext, n) -> None:
    if n is None:
        go_panic(c, NIL_DEREFERENCE)
    if n.dir and c.bool("p"):
        out(c, f"{n.key}/\n")
    else:
        out(c, f"{n.key}\n")
    for child in n.nodes or []:
        _r_print(c, child)


# -- watches -------------------------------------------------------------------------

def watch_command(c: CliContext) -> None:
    ki = must_new_key_api(c)
    key = _key_arg(c)
    recursive = c.bool("recursive")
    forever = c.bool("forever")
    w = ki.watcher(key, after_index=c.int("after-index"), recursive=recursive)
    try:  # the SIGINT handler: os.Exit(0)
        while True:
            try:
                resp = w.next(BACKGROUND)
            except ClientError as e:
                handle_error(c, EXIT_SERVER_ERROR, e)
            node = _node(c, resp)
            if node.dir:
                continue
            if recursive:
                out(c, f"[{resp.action}] {node.key}\n")
            print_response_key(c, resp, _output(c))
            c.io.stdout.flush()
            if not forever:
                return
    except KeyboardInterrupt:
        raise OsExit(0) from None


def _watch_environ(resp) -> dict:
    env = dict(os.environ)
    env["ETCD_WATCH_ACTION"] = resp.action
    env["ETCD_WATCH_MODIFIED_INDEX"] = str(resp.node.modified_index)
    env["ETCD_WATCH_KEY"] = resp.node.key
    env["ETCD_WATCH_VALUE"] = resp.node.value
    return {gostd.to_bytes(k): gostd.to_bytes(v) for k, v in env.items()}


def _start(c: CliContext, argv: list[str], env: dict) -> None:
    """exec.Command(argv...).Start() with stdout/stderr shared; Wait in the background."""
    name = argv[0]
    path = name
    if "/" not in name:
        found = shutil.which(name)
        if found is None:
            c.io.err(f"exec: {gostd.quote(name)}: executable file not found in $PATH")
            raise OsExit(1)
        path = found
    c.io.stdout.flush()
    try:
        proc = subprocess.Popen([gostd.to_bytes(a) for a in argv], executable=gostd.to_bytes(path), env=env,
                                stdin=subprocess.DEVNULL)
    except OSError as e:
        c.io.err(f"fork/exec {path}: {errno_text(e)}")
        raise OsExit(1) from None
    threading.Thread(target=proc.wait, daemon=True).start()


def exec_watch_command(c: CliContext) -> None:
    ki = must_new_key_api(c)
    args = c.args()
    if len(args) < 2:
        handle_error(c, EXIT_BAD_ARGS, CommandError("key and command to exec required"))
    found_sep = any(a == "--" and i != 0 for i, a in enumerate(args))
    if found_sep:
        key, cmd_args = args[0], args[2:]
    else:
        key, cmd_args = args[-1], args[:-1]
    w = ki.watcher(key, after_index=c.int("after-index"), recursive=c.bool("recursive"))
    try:
        while True:
            try:
                resp = w.next(BACKGROUND)
            except ClientError as e:
                handle_error(c, EXIT_SERVER_ERROR, e)
            node = _node(c, resp)
            if node.dir:
                c.io.err(f"Ignored dir {node.key} change\n")
                continue
            if not cmd_args:
                go_panic(c, "runtime error: slice bounds out of range [1:0]")
            _start(c, cmd_args, _watch_environ(resp))
    except KeyboardInterrupt:
        raise OsExit(0) from None


# -- cluster ----------------------------------------------------------------------------

def _health_get(tr: Transport, url: str) -> bytes:
    """http.Client{Transport: tr}.Get(url): the body; errors as *url.Error."""
    target = url
    for _ in range(11):
        try:
            u = gostd.parse_url(target)
        except gostd.URLError as e:
            raise ClientError(str(e)) from None
        try:
            resp = tr.round_trip(Request("GET", u), BACKGROUND, None, str(u))
        except ClientError as e:
            raise ClientError(f"Get {gostd.quote(target)}: {e}") from None
        if resp.status in (301, 302, 303, 307, 308) and resp.headers.get("Location"):
            target = resp.headers["Location"]
            continue
        return resp.body
    raise ClientError(f"Get {gostd.quote(target)}: stopped after 10 redirects")


def _health_result(body: bytes) -> tuple[bool, str | None]:
    """json.Unmarshal into struct{Health string}, else into struct{Health bool}."""
    import json
    try:
        obj = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        first = text[:1]
        if first and (first.isdigit() or first == "-"):
            import re
            m = re.match(r"-?\d+(\.\d+)?([eE][+-]?\d+)?", text)
            rest = text[m.end():].lstrip() if m else text
            return False, f"invalid character {gostd.quote(rest[:1])[1:-1]!r} after top-level value".replace(
                '"', "'")
        if not text:
            return False, "unexpected end of JSON input"
        return False, f"invalid character '{first}' looking for beginning of value"
    if not isinstance(obj, dict):
        kind = {list: "array", str: "string", bool: "bool", int: "number", float: "number"}.get(type(obj), "value")
        return False, f"json: cannot unmarshal {kind} into Go value of type struct {{ Health bool }}"
    health = None
    for k, v in obj.items():
        if k.lower() == "health":
            health = v
            if k == "Health":
                break
    if health is None or isinstance(health, str):
        return health == "true", None
    if isinstance(health, bool):
        return health, None
    kind = {list: "array", dict: "object", int: "number", float: "number"}.get(type(health), "value")
    return False, f"json: cannot unmarshal {kind} into Go struct field .Health of type bool"


def cluster_health_command(c: CliContext) -> None:
    forever = c.bool("forever")
    try:
        try:
            tr = get_transport(c)
        except ClientError as e:
            handle_error(c, EXIT_SERVER_ERROR, e)
        cln = must_new_client_no_sync(c)
        try:
            ms = MembersAPI(cln).list(BACKGROUND)
        except ClientError as e:
            out(c, "cluster may be unhealthy: failed to list members\n")
            handle_error(c, EXIT_SERVER_ERROR, e)
        while True:
            healthy = 0
            for m in ms:
                if not m.client_urls:
                    out(c, f"member {m.id} is unreachable: no available published client urls\n")
                    continue
                checked = False
                for url in m.client_urls:
                    try:
                        body = _health_get(tr, url + "/health")
                    except ClientError as e:
                        out(c, f"failed to check the health of member {m.id} on {url}: {e}\n")
                        continue
                    ok, err = _health_result(body)
                    if err is not None:
                        out(c, f"failed to check the health of member {m.id} on {url}: {err}\n")
                        continue
                    checked = True
                    if ok:
                        out(c, f"member {m.id} is healthy: got healthy result from {url}\n")
                        healthy += 1
                    else:
                        out(c, f"member {m.id} is unhealthy: got unhealthy result from {url}\n")
                    break
                if not checked:
                    out(c, f"member {m.id} is unreachable: [{' '.join(m.client_urls)}] are all unreachable\n")
            if healthy == len(ms):
                out(c, "cluster is healthy\n")
            elif healthy == 0:
                out(c, "cluster is unavailable\n")
            else:
                out(c, "cluster is degraded\n")
            if not forever:
                raise OsExit(EXIT_SUCCESS if healthy == len(ms) else EXIT_CLUSTER_NOT_HEALTHY)
            out(c, "\nnext check after 10 second...\n\n")
            c.io.stdout.flush()
            time.sleep(10)
    except KeyboardInterrupt:
        if not forever:
            raise
        raise OsExit(0) from None


# -- members ----------------------------------------------------------------------------

def _fail(c: CliContext, text: str) -> None:
    c.io.err(text)
    raise OsExit(1)


def member_list(c: CliContext) -> None:
    if c.args():
        _fail(c, "No arguments accepted\n")
    mapi = must_new_members_api(c)
    ctx = total_timeout(c)
    try:
        members = mapi.list(ctx)
    except ClientError as e:
        _fail(c, f"{e}\n")
    try:
        leader = mapi.leader(ctx)
    except ClientError as e:
        _fail(c, f"Failed to get leader:  {e}\n")
    for m in members:
        is_leader = "true" if m.id == leader.id else "false"
        if not m.name:
            out(c, f"{m.id}[unstarted]: peerURLs={','.join(m.peer_urls)}\n")
        else:
            out(c, f"{m.id}: name={m.name} peerURLs={','.join(m.peer_urls)} "
                   f"clientURLs={','.join(m.client_urls)} isLeader={is_leader}\n")


def member_add(c: CliContext) -> None:
    args = c.args()
    if len(args) != 2:
        _fail(c, "Provide a name and a single member peerURL\n")
    mapi = must_new_members_api(c)
    ctx = total_timeout(c)
    try:
        m = mapi.add(ctx, args[1])
    except ClientError as e:
        _fail(c, f"{e}\n")
    new_id, new_name = m.id, args[0]
    out(c, f"Added member named {new_name} with ID {new_id} to cluster\n")
    try:
        members = mapi.list(ctx)
    except ClientError as e:
        _fail(c, f"{e}\n")
    conf = [f"{new_name if memb.id == new_id else memb.name}={u}" for memb in members for u in memb.peer_urls]
    out(c, "\n")
    out(c, f"ETCD_NAME={gostd.quote(new_name)}\n")
    out(c, f"ETCD_INITIAL_CLUSTER={gostd.quote(','.join(conf))}\n")
    out(c, 'ETCD_INITIAL_CLUSTER_STATE="existing"\n')


def member_remove(c: CliContext) -> None:
    args = c.args()
    if len(args) != 1:
        _fail(c, "Provide a single member ID\n")
    removal = args[0]
    mapi = must_new_members_api(c)
    ctx = total_timeout(c)
    try:
        members = mapi.list(ctx)
    except ClientError as e:
        _fail(c, f"Error while verifying ID against known members: {e}\n")
    found = False
    for m in members:
        if m.id == removal:
            found = True
        if m.name == removal:
            c.io.err(f"Found a member named {m.name}; if this is correct, please use its ID, eg:\n"
                     f"\tetcdctl member remove {m.id}\n")
            c.io.err("For more details, read the documentation at https://github.com/etcd-io/etcd/blob/"
                     "master/Documentation/runtime-configuration.md#remove-a-member\n\n")
    if not found:
        _fail(c, f"Couldn't find a member in the cluster with an ID of {removal}.\n")
    try:
        mapi.remove(ctx, removal)
    except ClientError as e:
        _fail(c, f"Received an error trying to remove member {removal}: {e}")
    out(c, f"Removed member {removal} from cluster\n")


def member_update(c: CliContext) -> None:
    args = c.args()
    if len(args) != 2:
        _fail(c, "Provide an ID and a list of comma separated peerURL (0xabcd http://example.com,"
                 "http://example1.com)\n")
    mapi = must_new_members_api(c)
    mid, urls = args
    try:
        mapi.update(total_timeout(c), mid, urls.split(","))
    except ClientError as e:
        _fail(c, f"{e}\n")
    out(c, f"Updated member with ID {mid} in cluster\n")


# -- backup_command.go -------------------------------------------------------------

def _go_log(c: CliContext, message: str) -> None:
    """Go's log.Println: a local date and time, then the message, on stderr."""
    c.io.err(time.strftime("%Y/%m/%d %H:%M:%S ") + message + "\n")


def backup_command(c: CliContext) -> None:
    """etcdctl backup for a fastkv data dir (fastkv.storage.backup): start the copy with
    fastkv --force-new-cluster. As etcdctl, a failure is log.Fatal: logged, exit 1."""
    from fastkv.storage.backup import backup
    try:
        backup(c.string("data-dir"), c.string("backup-dir"), wal_dir=c.string("wal-dir"),
               backup_wal_dir=c.string("backup-wal-dir"), with_v3=c.bool("with-v3"),
               log=lambda msg: _go_log(c, msg))
    except (OSError, ValueError, EtcdError, StorageCorruption) as e:
        _go_log(c, str(e))
        raise OsExit(1) from None

