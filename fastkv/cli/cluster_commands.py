"""fastkvctl's operator commands, as etcdctl 3.4's: ``member``, ``endpoint``, ``alarm``,
``compaction``, ``defrag`` and ``move-leader``.

Each command sends what clientv3 would send, over the v3 JSON gateway
(/v3/cluster/member/*, /v3/maintenance/*, /v3/kv/compaction), and hands the answer,
shaped as the Go response struct json.Marshal would print (etcd's field names, ints,
zero values left out), to the printer (fastkv/cli/printer.py). Argument checks,
messages and exit codes are etcdctl's (ctlv3/command/member_command.go,
ep_command.go, alarm_command.go, compaction_command.go, defrag_command.go,
move_leader_command.go).

The endpoint commands talk to each endpoint on its own (a client per endpoint, as
etcdctl's ``Status(ctx, ep)`` does), and ``--cluster`` takes the endpoints from the
member list. ``endpoint hashkv`` is the one gRPC call: etcd 3.4's JSON gateway has no
route for HashKV (its ``/v3/maintenance/hash`` is Hash), so it goes to the same port
over gRPC (Maintenance/HashKV), which fastkv and etcd both serve.

Where etcdctl 3.4 crashes on a nil dereference in its printers, fastkvctl answers
instead of panicking: ``member promote -w json|protobuf`` print the response and
``-w table|fields`` say the format is not supported (etcdctl 3.5's behaviour), and
``alarm list -w fields`` prints the alarms without the header etcd never sends.
``defrag --data-dir`` (etcdctl opens an etcd member's bbolt file) is refused: fastkv
keeps no bbolt file.
"""
from __future__ import annotations

import base64
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from fastkv.cli import flags as fl
from fastkv.cli.auth_commands import rpc_error_text
from fastkv.cli.transport import ClientError, DeadlineExceeded, GatewayClient, RPCError, normalise_endpoint

__all__ = ["MEMBER_COMMAND", "ENDPOINT_COMMAND", "ALARM_COMMAND", "COMPACTION_COMMAND",
           "DEFRAG_COMMAND", "MOVE_LEADER_COMMAND"]

ALARM_TYPES = {"NONE": 0, "NOSPACE": 1, "CORRUPT": 2}
ERR_PERMISSION_DENIED = "etcdserver: permission denied"


def _main():
    from fastkv.cli import main   # the command layer (avoids an import cycle)
    return main


# -- Go's strconv, for the arguments ------------------------------------------------------

def _num_error(fn: str, text: str, why: str) -> ValueError:
    from fastkv.cli.v2.gostd import quote
    return ValueError(f"strconv.{fn}: parsing {quote(text)}: {why}")


def parse_uint64_hex(text: str) -> int:
    """strconv.ParseUint(text, 16, 64)."""
    if not text or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise _num_error("ParseUint", text, "invalid syntax")
    value = int(text, 16)
    if value >= 1 << 64:
        raise _num_error("ParseUint", text, "value out of range")
    return value


def parse_int64(text: str) -> int:
    """strconv.ParseInt(text, 10, 64)."""
    digits = text[1:] if text[:1] in "+-" else text
    if not digits or any(c not in "0123456789" for c in digits):
        raise _num_error("ParseInt", text, "invalid syntax")
    value = int(text, 10)
    if not -(1 << 63) <= value < 1 << 63:
        raise _num_error("ParseInt", text, "value out of range")
    return value


def _member_id_arg(args: list[str]) -> int:
    m = _main()
    if len(args) != 1:
        raise m.Exit(m.EXIT_BAD_ARGS, "member ID is not provided")
    try:
        return parse_uint64_hex(args[0])
    except ValueError as e:
        raise m.Exit(m.EXIT_BAD_ARGS, f"bad member ID arg ({e}), expecting ID in Hex") from None


def _check_urls(urls: list[str]) -> None:
    """clientv3's fail-fast check of peer URLs (types.NewURLs) before MemberAdd/MemberUpdate."""
    from fastkv.cli.v2.client import ClientError as URLError, new_urls
    try:
        new_urls(urls)
    except URLError as e:
        m = _main()
        raise m.Exit(m.EXIT_ERROR, str(e)) from None


# -- responses: the gateway's JSON as the Go structs hold them ------------------------------

HEADER_FIELDS = ("cluster_id", "member_id", "revision", "raft_term")


def _int(v) -> int:
    return int(v) if v not in (None, "") else 0


def _shape_header(h: dict) -> dict:
    return {f: _int(h.get(f)) for f in HEADER_FIELDS if _int(h.get(f))}


def _with_header(resp: dict) -> dict:
    """``{"header": ...}`` when the response has one (a nil *ResponseHeader is left out)."""
    h = resp.get("header")
    return {} if h is None else {"header": _shape_header(h)}


def shape_member(m: dict) -> dict:
    out: dict = {}
    if _int(m.get("ID")):
        out["ID"] = _int(m.get("ID"))
    for f in ("name", "peerURLs", "clientURLs", "isLearner"):
        if m.get(f):
            out[f] = m[f]
    return out


def shape_members(resp: dict, with_member: bool = False) -> dict:
    """MemberListResponse, MemberAddResponse (``member``), MemberRemove/Update/PromoteResponse."""
    out = _with_header(resp)
    if with_member and resp.get("member") is not None:
        out["member"] = shape_member(resp["member"])
    if resp.get("members"):
        out["members"] = [shape_member(m) for m in resp["members"]]
    return out


def shape_status(resp: dict) -> dict:
    out = _with_header(resp)
    for f, kind in (("version", str), ("dbSize", int), ("leader", int), ("raftIndex", int),
                    ("raftTerm", int), ("raftAppliedIndex", int), ("errors", list),
                    ("dbSizeInUse", int), ("isLearner", bool)):
        v = _int(resp.get(f)) if kind is int else resp.get(f)
        if v:
            out[f] = v
    return out


def _alarm_type(v) -> int:
    return ALARM_TYPES.get(v, 0) if isinstance(v, str) else _int(v)


def shape_alarms(resp: dict) -> dict:
    out = _with_header(resp)
    alarms = []
    for a in resp.get("alarms") or []:
        item: dict = {}
        if _int(a.get("memberID")):
            item["memberID"] = _int(a.get("memberID"))
        if _alarm_type(a.get("alarm")):
            item["alarm"] = _alarm_type(a.get("alarm"))
        alarms.append(item)
    if alarms:
        out["alarms"] = alarms
    return out


# -- clients ------------------------------------------------------------------------------

def _call(ctx, path: str, body: dict, client: GatewayClient | None = None) -> dict:
    try:
        return (client or ctx.client()).call(path, body)
    except ClientError as e:
        m = _main()
        raise m.Exit(m.EXIT_ERROR, rpc_error_text(e)) from None


def _tls_configured(v: dict) -> bool:
    return bool(v["cacert"] or v["cert"] or v["key"] or not v["insecure-transport"])


def _endpoint_client(ctx, endpoint: str) -> GatewayClient:
    """A client of this one endpoint, with the command's TLS settings and token."""
    base = ctx.client()
    ep = endpoint.strip()
    if "://" not in ep and _tls_configured(ctx.values):
        ep = "https://" + ep     # as the main client: with TLS configured, no scheme means TLS
    try:
        client = GatewayClient([ep], base.dial_timeout, base.command_timeout, base.ssl_context)
    except (ClientError, ValueError) as e:
        m = _main()
        raise m.Exit(m.EXIT_BAD_CONNECTION, str(e)) from None
    client.token = base.token
    return client


def _endpoints(ctx, v: dict) -> list[str]:
    """etcdctl's endpointsFromCluster: --endpoints as given, or with --cluster every
    member's client URLs from the member list."""
    if not v.get("cluster"):
        return [e for e in v["endpoints"] if e.strip()]
    try:
        resp = ctx.client().call("/v3/cluster/member/list", {})
    except ClientError as e:
        m = _main()
        raise m.Exit(m.EXIT_ERROR, "failed to fetch endpoints from etcd cluster member list: "
                                   + rpc_error_text(e)) from None
    return [u for member in resp.get("members") or [] for u in member.get("clientURLs") or []]


def _stderr(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


# -- member ------------------------------------------------------------------------------

def cmd_member_list(ctx, args: list[str], v: dict) -> int:
    ctx.display.member_list(shape_members(_call(ctx, "/v3/cluster/member/list", {})))
    return 0


def cmd_member_add(ctx, args: list[str], v: dict) -> int:
    m = _main()
    if not args:
        raise m.Exit(m.EXIT_BAD_ARGS, "member name not provided")
    if len(args) > 1:
        text = "too many arguments"
        for s in args:
            if s.lower().startswith("http"):
                text += f", did you mean --peer-urls={s}"
        raise m.Exit(m.EXIT_BAD_ARGS, text)
    name = args[0]
    if not v["peer-urls"]:
        raise m.Exit(m.EXIT_BAD_ARGS, "member peer urls not provided")
    urls = v["peer-urls"].split(",")
    _check_urls(urls)
    body: dict = {"peerURLs": urls}
    if v["learner"]:
        body["isLearner"] = True
    resp = _call(ctx, "/v3/cluster/member/add", body)
    added = shape_members(resp, with_member=True)
    ctx.display.member_add(added)
    if ctx.format != "simple":
        return 0
    # the environment for the new member: the member list as the member that added it
    # sees it (after a fail-over, a quorum read brings another member up to date first)
    new_id = added.get("member", {}).get("ID", 0)
    want = added.get("header", {}).get("member_id", 0)
    listed = _call(ctx, "/v3/cluster/member/list", {})
    for _ in range(10):
        if _int((listed.get("header") or {}).get("member_id")) == want:
            break
        got = _call(ctx, "/v3/kv/range", {"key": base64.b64encode(b"_").decode()})
        want = _int((got.get("header") or {}).get("member_id"))
        listed = _call(ctx, "/v3/cluster/member/list", {})
    conf = []
    for member in listed.get("members") or []:
        shown = name if _int(member.get("ID")) == new_id else member.get("name", "")
        conf += [f"{shown}={u}" for u in member.get("peerURLs") or []]
    from fastkv.cli.v2.gostd import quote
    ctx.stdout.write(("\n"
                      f"ETCD_NAME={quote(name)}\n"
                      f"ETCD_INITIAL_CLUSTER={quote(','.join(conf))}\n"
                      f"ETCD_INITIAL_ADVERTISE_PEER_URLS={quote(v['peer-urls'])}\n"
                      'ETCD_INITIAL_CLUSTER_STATE="existing"\n').encode("utf-8", "surrogateescape"))
    return 0


def _member_change(ctx, args: list[str], path: str, show, **body) -> int:
    """One member change by ID (remove, update, promote), shown by `show`."""
    member_id = _member_id_arg(args)
    resp = _call(ctx, path, {"ID": str(member_id), **body})
    show(member_id, shape_members(resp))
    return 0


def cmd_member_remove(ctx, args: list[str], v: dict) -> int:
    return _member_change(ctx, args, "/v3/cluster/member/remove", ctx.display.member_remove)


def cmd_member_update(ctx, args: list[str], v: dict) -> int:
    m = _main()
    _member_id_arg(args)
    if not v["peer-urls"]:
        raise m.Exit(m.EXIT_BAD_ARGS, "member peer urls not provided")
    urls = v["peer-urls"].split(",")
    _check_urls(urls)
    return _member_change(ctx, args, "/v3/cluster/member/update", ctx.display.member_update,
                          peerURLs=urls)


def cmd_member_promote(ctx, args: list[str], v: dict) -> int:
    return _member_change(ctx, args, "/v3/cluster/member/promote", ctx.display.member_promote)


# -- endpoint ----------------------------------------------------------------------------

def _health(ctx, endpoint: str) -> dict:
    """One endpoint's health: a linearizable get of "health" (permission denied counts as
    healthy: the request went through consensus); took is Go's Duration.String()."""
    from fastkv.cli.v2.gostd import format_duration
    client = _endpoint_client(ctx, endpoint)
    error = ""
    started = time.monotonic_ns()
    try:
        client.call("/v3/kv/range", {"key": base64.b64encode(b"health").decode()})
    except RPCError as e:
        if e.message != ERR_PERMISSION_DENIED:
            error = rpc_error_text(e)
    except ClientError as e:
        error = rpc_error_text(e)
    finally:
        took = format_duration(time.monotonic_ns() - started)
        client.close()
    out = {"endpoint": endpoint, "health": not error, "took": took}
    if error:
        out["error"] = error
    return out


def cmd_endpoint_health(ctx, args: list[str], v: dict) -> int:
    endpoints = _endpoints(ctx, v)
    results = []
    if endpoints:
        with ThreadPoolExecutor(max_workers=len(endpoints)) as pool:   # all at once, as etcdctl
            results = list(pool.map(lambda ep: _health(ctx, ep), endpoints))
    ctx.display.endpoint_health(results)
    if any(h.get("error") for h in results):
        m = _main()
        raise m.Exit(m.EXIT_ERROR, "unhealthy cluster")
    return 0


def cmd_endpoint_status(ctx, args: list[str], v: dict) -> int:
    results, failed = [], False
    for ep in _endpoints(ctx, v):
        client = _endpoint_client(ctx, ep)
        try:
            resp = client.call("/v3/maintenance/status", {})
        except ClientError as e:
            failed = True
            _stderr(f"Failed to get the status of endpoint {ep} ({rpc_error_text(e)})")
            continue
        finally:
            client.close()
        results.append({"Endpoint": ep, "Status": shape_status(resp)})
    ctx.display.endpoint_status(results)
    return _main().EXIT_ERROR if failed else 0   # etcdctl exits 1 without an Error line


def _grpc_hash_kv(ctx, endpoint: str, revision: int) -> dict:
    """Maintenance/HashKV over gRPC (the JSON gateway of etcd 3.4 has no route for it)."""
    import grpc
    from google.protobuf import json_format
    from fastkv.proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
    base = ctx.client()
    v = ctx.values
    ep = endpoint.strip()
    if "://" not in ep and _tls_configured(v):
        ep = "https://" + ep
    try:
        scheme, host, port = normalise_endpoint(ep)
    except (ClientError, ValueError) as e:
        m = _main()
        raise m.Exit(m.EXIT_BAD_CONNECTION, str(e)) from None
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if scheme == "https":
        def read(path):
            with open(path, "rb") as f:
                return f.read()
        try:
            creds = grpc.ssl_channel_credentials(
                root_certificates=read(v["cacert"]) if v["cacert"] else None,
                private_key=read(v["key"]) if v["key"] else None,
                certificate_chain=read(v["cert"]) if v["cert"] else None)
        except OSError as e:
            m = _main()
            raise m.Exit(m.EXIT_BAD_CONNECTION, str(e)) from None
        channel = grpc.secure_channel(target, creds)
    else:
        channel = grpc.insecure_channel(target)
    try:
        resp = rpc_pb2_grpc.MaintenanceStub(channel).HashKV(
            rpc_pb2.HashKVRequest(revision=revision), timeout=base.dial_timeout + base.command_timeout,
            metadata=[("token", base.token)] if base.token else None, wait_for_ready=True)
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise DeadlineExceeded() from None
        raise RPCError(e.code().value[0], e.details() or "") from None
    finally:
        channel.close()
    d = json_format.MessageToDict(resp, preserving_proto_field_name=True)
    out = {"header": _shape_header(d["header"])} if resp.HasField("header") else {}
    for f in ("hash", "compact_revision"):
        if _int(d.get(f)):
            out[f] = _int(d.get(f))
    return out


def cmd_endpoint_hashkv(ctx, args: list[str], v: dict) -> int:
    results, last = [], None
    for ep in _endpoints(ctx, v):
        try:
            resp = _grpc_hash_kv(ctx, ep, v["rev"])
        except ClientError as e:
            last = rpc_error_text(e)
            _stderr(f"Failed to get the hash of endpoint {ep} ({last})")
            continue
        results.append({"Endpoint": ep, "HashKV": resp})
    ctx.display.endpoint_hashkv(results)
    if last is not None:
        m = _main()
        raise m.Exit(m.EXIT_ERROR, last)
    return 0


# -- alarm -------------------------------------------------------------------------------

def cmd_alarm_list(ctx, args: list[str], v: dict) -> int:
    m = _main()
    if args:
        raise m.Exit(m.EXIT_BAD_ARGS, "alarm list command accepts no arguments")
    ctx.display.alarm(shape_alarms(_call(ctx, "/v3/maintenance/alarm", {"action": "GET"})))
    return 0


def cmd_alarm_disarm(ctx, args: list[str], v: dict) -> int:
    """clientv3's AlarmDisarm of the zero AlarmMember: list the alarms, deactivate each;
    the answer (with no header) lists what was deactivated."""
    m = _main()
    if args:
        raise m.Exit(m.EXIT_BAD_ARGS, "alarm disarm command accepts no arguments")
    listed = shape_alarms(_call(ctx, "/v3/maintenance/alarm", {"action": "GET"}))
    disarmed: list = []
    for a in listed.get("alarms", []):
        resp = _call(ctx, "/v3/maintenance/alarm", {"action": "DEACTIVATE",
                                                    "memberID": str(a.get("memberID", 0)),
                                                    "alarm": a.get("alarm", 0)})
        disarmed += shape_alarms(resp).get("alarms", [])
    ctx.display.alarm({"alarms": disarmed} if disarmed else {})
    return 0


# -- compaction, defrag, move-leader -------------------------------------------------------

def _one_arg(args: list[str], command: str, parse, bad_value_exit: str):
    """The command's single argument, parsed; etcdctl's errors and exit codes."""
    m = _main()
    if len(args) != 1:
        raise m.Exit(m.EXIT_BAD_ARGS, f"{command} command needs 1 argument")
    try:
        return parse(args[0])
    except ValueError as e:
        raise m.Exit(getattr(m, bad_value_exit), str(e)) from None


def cmd_compaction(ctx, args: list[str], v: dict) -> int:
    rev = _one_arg(args, "compaction", parse_int64, "EXIT_ERROR")
    body: dict = {"revision": str(rev)}
    if v["physical"]:
        body["physical"] = True
    _call(ctx, "/v3/kv/compaction", body)
    ctx.stdout.write(f"compacted revision {rev}\n".encode())   # in every output format
    return 0


def cmd_defrag(ctx, args: list[str], v: dict) -> int:
    m = _main()
    if v["data-dir"]:
        # etcdctl opens the member's bbolt file itself; fastkv keeps no bbolt file
        _stderr(f"Failed to defragment etcd data[{v['data-dir']}] (offline defragmentation "
                "of a data directory is not supported by fastkvctl; defragment the running "
                "member instead)")
        return m.EXIT_ERROR
    failures = 0
    for ep in _endpoints(ctx, v):
        client = _endpoint_client(ctx, ep)
        try:
            client.call("/v3/maintenance/defragment", {})
        except ClientError as e:
            failures += 1
            _stderr(f"Failed to defragment etcd member[{ep}] ({rpc_error_text(e)})")
            continue
        finally:
            client.close()
        ctx.stdout.write(f"Finished defragmenting etcd member[{ep}]\n".encode("utf-8", "surrogateescape"))
        ctx.stdout.flush()
    return m.EXIT_ERROR if failures else 0


def cmd_move_leader(ctx, args: list[str], v: dict) -> int:
    """Find the leader among the endpoints (its status names itself as leader), and ask it
    to hand leadership to the target."""
    m = _main()
    target = _one_arg(args, "move-leader", parse_uint64_hex, "EXIT_BAD_ARGS")
    endpoints = [e for e in v["endpoints"] if e.strip()]
    leader_client, leader_id = None, 0
    for ep in endpoints:
        client = _endpoint_client(ctx, ep)
        resp = _call(ctx, "/v3/maintenance/status", {}, client)
        me = _int((resp.get("header") or {}).get("member_id"))
        if me == _int(resp.get("leader")):
            leader_client, leader_id = client, me
            break
        client.close()
    if leader_client is None:
        raise m.Exit(m.EXIT_BAD_ARGS, f"no leader endpoint given at [{' '.join(endpoints)}]")
    try:
        resp = _call(ctx, "/v3/maintenance/transfer-leadership", {"targetID": str(target)}, leader_client)
    finally:
        leader_client.close()
    ctx.display.move_leader(leader_id, target, _with_header(resp))
    return 0


# -- the command table --------------------------------------------------------------------

F = fl.Flag
C = fl.Command


def _cluster_flag() -> fl.Flag:
    return fl.Flag("cluster", "bool", False, "use all endpoints from the cluster member list")


MEMBER_COMMAND = C("member", "Membership related commands", "member <subcommand> [flags]", subcommands=[
    C("add", "Adds a member into the cluster", "member add <memberName> [options] [flags]", cmd_member_add, [
        F("learner", "bool", False, "indicates if the new member is raft learner"),
        F("peer-urls", "string", "", "comma separated peer URLs for the new member."),
    ]),
    C("list", "Lists all members in the cluster", "member list [flags]", cmd_member_list,
      description="When --write-out is set to simple, this command prints out comma-separated member "
                  "lists for each endpoint.\nThe items in the lists are ID, Status, Name, Peer Addrs, "
                  "Client Addrs, Is Learner."),
    C("promote", "Promotes a non-voting member in the cluster", "member promote <memberID> [flags]",
      cmd_member_promote, description="Promotes a non-voting learner member to a voting one in the cluster."),
    C("remove", "Removes a member from the cluster", "member remove <memberID> [flags]", cmd_member_remove),
    C("update", "Updates a member in the cluster", "member update <memberID> [options] [flags]",
      cmd_member_update, [F("peer-urls", "string", "", "comma separated peer URLs for the updated member.")]),
])

# --cluster is a persistent flag of `endpoint` in etcdctl: here every subcommand has it too
ENDPOINT_COMMAND = C("endpoint", "Endpoint related commands", "endpoint <subcommand> [flags]",
                     flags=[_cluster_flag()], subcommands=[
    C("hashkv", "Prints the KV history hash for each endpoint in --endpoints", "endpoint hashkv [flags]",
      cmd_endpoint_hashkv, [_cluster_flag(),
                            F("rev", "int", 0, "maximum revision to hash (default: all revisions)")]),
    C("health", "Checks the healthiness of endpoints specified in `--endpoints` flag",
      "endpoint health [flags]", cmd_endpoint_health, [_cluster_flag()]),
    C("status", "Prints out the status of endpoints specified in `--endpoints` flag",
      "endpoint status [flags]", cmd_endpoint_status, [_cluster_flag()],
      description="When --write-out is set to simple, this command prints out comma-separated status "
                  "lists for each endpoint.\nThe items in the lists are endpoint, ID, version, db size, "
                  "is leader, is learner, raft term, raft index, raft applied index, errors."),
])

ALARM_COMMAND = C("alarm", "Alarm related commands", "alarm <subcommand> [flags]", subcommands=[
    C("disarm", "Disarms all alarms", "alarm disarm [flags]", cmd_alarm_disarm),
    C("list", "Lists all alarms", "alarm list [flags]", cmd_alarm_list),
])

COMPACTION_COMMAND = C("compaction", "Compacts the event history in etcd",
                       "compaction [options] <revision> [flags]", cmd_compaction, [
                           F("physical", "bool", False,
                             "'true' to wait for compaction to physically remove all old revisions"),
                       ])

DEFRAG_COMMAND = C("defrag", "Defragments the storage of the etcd members with given endpoints",
                   "defrag [flags]", cmd_defrag, [
                       _cluster_flag(),
                       F("data-dir", "string", "",
                         "Optional. If present, defragments a data directory not in use by etcd."),
                   ])

MOVE_LEADER_COMMAND = C("move-leader", "Transfers leadership to another etcd cluster member.",
                        "move-leader <transferee-member-id> [flags]", cmd_move_leader)
del F, C
