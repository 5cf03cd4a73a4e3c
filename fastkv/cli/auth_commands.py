"""fastkvctl's ``user``, ``role`` and ``auth`` commands, as etcdctl 3.4's.

Each command builds the gateway request clientv3's Auth API would send
(/v3/auth/...), and prints etcdctl's answer: ``simple`` as printer_simple.go,
``json`` as ``json.Marshal`` of the response protobuf (header fields as numbers,
bytes as base64, the permission type as its number, zero values left out),
``fields`` as printer_fields.go (the header; a role's permissions, the role list;
none for user get/list, as 3.4) and ``protobuf`` as the Auth*Response message.
Messages, argument checks and exit codes are etcdctl's (ctlv3/command/
user_command.go, role_command.go, auth_command.go).

Passwords: ``user add name:password``, ``--new-user-password``, or asked for
(``Password of <name>:`` twice; with ``--interactive=false`` the first word of
stdin, as Go's ``fmt.Scanf("%s")``). A password never goes on any output.
"""
from __future__ import annotations


from fastkv.cli import flags as fl
from fastkv.cli.printer import _dump, b64, header_fields
from fastkv.cli.transport import ClientError, RPCError
from fastkv.keyrange import prefix_end

__all__ = ["USER_COMMAND", "ROLE_COMMAND", "AUTH_COMMAND", "rpc_error_text", "ask_password"]

# gRPC's code names, as a Go status error prints them ("rpc error: code = ... desc = ...")
_CODE_NAMES = ["OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
               "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
               "Aborted", "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss",
               "Unauthenticated"]
PERM_TYPES = {"READ": 0, "WRITE": 1, "READWRITE": 2}
ERR_ROOT_ROLE_NOT_EXIST = "etcdserver: root user does not have root role"
ERR_AUTH_NOT_ENABLED = "etcdserver: authentication is not enabled"


def rpc_error_text(e: ClientError) -> str:
    """An error as clientv3 shows it: etcd's own errors by their text (rpctypes knows
    them), anything else as the gRPC status ("rpc error: code = Unknown desc = auth: ...")."""
    if isinstance(e, RPCError) and not e.message.startswith("etcdserver: "):
        name = _CODE_NAMES[e.code] if 0 <= e.code < len(_CODE_NAMES) else f"Code({e.code})"
        return f"rpc error: code = {name} desc = {e.message}"
    return str(e)


def _main():
    from fastkv.cli import main   # the command layer (avoids an import cycle)
    return main


def _call(ctx, path: str, body: dict) -> dict:
    m = _main()
    try:
        return ctx.client().call(path, body)
    except ClientError as e:
        raise m.Exit(m.EXIT_ERROR, rpc_error_text(e)) from None


def _out(ctx, text: str | bytes) -> None:
    ctx.stdout.write(text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape"))


def _text(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def _json(ctx, resp: dict, *fields) -> None:
    """json.Marshal of an Auth*Response: header (numbers), then the given fields."""
    out: dict = {}
    h = header_fields(resp.get("header"))
    if h:
        out["header"] = h
    for name in fields:
        if resp.get(name):
            out[name] = resp[name]
    ctx.stdout.write(_dump(out))


def _json_wanted(ctx) -> bool:
    """JSON or simple; for the answers etcdctl 3.4 prints in no other format."""
    if ctx.format not in ("json", "simple"):
        ctx.display.unsupported()
    return ctx.format == "json"


def _fields_header(ctx, resp: dict) -> None:
    h = resp.get("header") or {}
    for name, f in (("ClusterID", "cluster_id"), ("MemberID", "member_id"), ("Revision", "revision"),
                    ("RaftTerm", "raft_term")):
        _out(ctx, f'"{name}" : {int(h.get(f, 0))}\n')


def _other_format(ctx, resp: dict, pb: str, fields=None) -> bool:
    """-w fields (the header, then ``fields(resp)``'s lines; None: etcdctl's fields printer
    has none for this answer), -w protobuf (the Auth*Response message) or -w table
    (etcdctl has none): True if printed."""
    if ctx.format == "fields" and fields is not None:
        _fields_header(ctx, resp)
        fields(resp)
        return True
    if ctx.format == "protobuf":
        ctx.display._pb(resp, pb)
        return True
    if ctx.format not in ("json", "simple"):
        ctx.display.unsupported()
    return False


def _done(ctx, resp: dict, simple: str, pb: str) -> int:
    """Print a change's answer: etcdctl's sentence, the response as JSON, its header as
    fields, or the message in protobuf."""
    if _other_format(ctx, resp, pb, lambda r: None):
        return 0
    if ctx.format == "json":
        _json(ctx, resp)
    else:
        _out(ctx, simple + "\n")
    return 0


# -- passwords ---------------------------------------------------------------------

def ask_password(ctx, prompt: str) -> str:
    """speakeasy.Ask: the prompt on stdout, a line from stdin (not echoed on a terminal)."""
    _out(ctx, prompt)
    ctx.stdout.flush()
    stdin = ctx.stdin
    fd = None
    try:
        fd = stdin.fileno()
    except (AttributeError, OSError, ValueError):
        pass
    if fd is not None:
        import os
        if os.isatty(fd):
            import termios
            old = termios.tcgetattr(fd)
            new = list(old)
            new[3] &= ~termios.ECHO
            try:
                termios.tcsetattr(fd, termios.TCSADRAIN, new)
                line = stdin.readline()
            finally:
                termios.tcsetattr(fd, termios.TCSADRAIN, old)
            _out(ctx, "\n")
            return _line_text(line)
    line = stdin.readline()
    _out(ctx, "\n")
    return _line_text(line)


def _line_text(line) -> str:
    if isinstance(line, bytes):
        line = line.decode("utf-8", "surrogateescape")
    return line.rstrip("\r\n")


def _scan_word(ctx) -> str:
    """Go's fmt.Scanf("%s", &s) on stdin: the first word of the first line."""
    words = _line_text(ctx.stdin.readline()).split()
    return words[0] if words else ""


def _read_new_password(ctx, name: str, interactive: bool) -> str:
    m = _main()
    if not interactive:
        return _scan_word(ctx)
    first = ask_password(ctx, f"Password of {name}: ")
    if not first:
        raise m.Exit(m.EXIT_BAD_ARGS, "empty password")
    second = ask_password(ctx, f"Type password of {name} again for confirmation: ")
    if first != second:
        raise m.Exit(m.EXIT_BAD_ARGS, "given passwords are different")
    return first


# -- user ---------------------------------------------------------------------------

def cmd_user_add(ctx, args: list[str], v: dict) -> int:
    m = _main()
    if len(args) != 1:
        raise m.Exit(m.EXIT_BAD_ARGS, "user add command requires user name as its argument")
    body: dict = {}
    if v["no-password"]:
        user, password = args[0], ""
        body["options"] = {"no_password": True}
    elif v["new-user-password"]:
        user, password = args[0], v["new-user-password"]
    else:
        user, sep, password = args[0].partition(":")
        if not sep:
            password = _read_new_password(ctx, args[0], v["interactive"])
        elif not user:
            raise m.Exit(m.EXIT_BAD_ARGS, "empty user name is not allowed")
    body["name"] = user
    body["password"] = password
    return _done(ctx, _call(ctx, "/v3/auth/user/add", body), f"User {user} created", "AuthUserAddResponse")


def cmd_user_delete(ctx, args: list[str], v: dict) -> int:
    m = _main()
    if len(args) != 1:
        raise m.Exit(m.EXIT_BAD_ARGS, "user delete command requires user name as its argument")
    resp = _call(ctx, "/v3/auth/user/delete", {"name": args[0]})
    return _done(ctx, resp, f"User {args[0]} deleted", "AuthUserDeleteResponse")


def cmd_user_get(ctx, args: list[str], v: dict) -> int:
    m = _main()
    if len(args) != 1:
        raise m.Exit(m.EXIT_BAD_ARGS, "user get command requires user name as its argument")
    name = args[0]
    resp = _call(ctx, "/v3/auth/user/get", {"name": name})
    roles = resp.get("roles") or []
    if v["detail"]:
        _out(ctx, f"User: {name}\n")
        for role in roles:
            _out(ctx, "\n")
            _print_role(ctx, role, _call(ctx, "/v3/auth/role/get", {"role": role}))
        return 0
    if _other_format(ctx, resp, "AuthUserGetResponse"):
        return 0
    if ctx.format == "json":
        _json(ctx, resp, "roles")
    else:
        _out(ctx, f"User: {name}\nRoles:" + "".join(f" {r}" for r in roles) + "\n")
    return 0


def cmd_user_list(ctx, args: list[str], v: dict) -> int:
    m = _main()
    if args:
        raise m.Exit(m.EXIT_BAD_ARGS, "user list command requires no arguments")
    resp = _call(ctx, "/v3/auth/user/list", {})
    if _other_format(ctx, resp, "AuthUserListResponse"):
        return 0
    if ctx.format == "json":
        _json(ctx, resp, "users")
    else:
        _out(ctx, "".join(f"{u}\n" for u in resp.get("users") or []))
    return 0


def cmd_user_passwd(ctx, args: list[str], v: dict) -> int:
    m = _main()
    if len(args) != 1:
        raise m.Exit(m.EXIT_BAD_ARGS, "user passwd command requires user name as its argument")
    password = _read_new_password(ctx, args[0], v["interactive"])
    resp = _call(ctx, "/v3/auth/user/changepw", {"name": args[0], "password": password})
    return _done(ctx, resp, "Password updated", "AuthUserChangePasswordResponse")


def cmd_user_grant_role(ctx, args: list[str], v: dict) -> int:
    m = _main()
    if len(args) != 2:
        raise m.Exit(m.EXIT_BAD_ARGS,
                     "user grant command requires user name and role name as its argument")
    resp = _call(ctx, "/v3/auth/user/grant", {"user": args[0], "role": args[1]})
    return _done(ctx, resp, f"Role {args[1]} is granted to user {args[0]}", "AuthUserGrantRoleResponse")


def cmd_user_revoke_role(ctx, args: list[str], v: dict) -> int:
    m = _main()
    if len(args) != 2:
        raise m.Exit(m.EXIT_BAD_ARGS,
                     "user revoke-role requires user name and role name as its argument")
    resp = _call(ctx, "/v3/auth/user/revoke", {"name": args[0], "role": args[1]})
    return _done(ctx, resp, f"Role {args[1]} is revoked from user {args[0]}", "AuthUserRevokeRoleResponse")


# -- role ---------------------------------------------------------------------------

def _perm_type(p: dict) -> int:
    t = p.get("permType", 0)
    return PERM_TYPES.get(t, 0) if isinstance(t, str) else int(t)


def _role_fields(ctx, resp: dict) -> None:
    from fastkv.cli.v2.gostd import quote
    names = {v: k for k, v in PERM_TYPES.items()}
    for p in resp.get("perm") or []:
        _out(ctx, f'"PermType" :  {names.get(_perm_type(p), _perm_type(p))}\n')
        _out(ctx, f'"Key" : {quote(_text(b64(p.get("key"))))}\n')
        _out(ctx, f'"RangeEnd" : {quote(_text(b64(p.get("range_end"))))}\n')


def _print_role(ctx, role: str, resp: dict) -> None:
    perms = resp.get("perm") or []
    if _other_format(ctx, resp, "AuthRoleGetResponse", lambda r: _role_fields(ctx, r)):
        return
    if ctx.format == "json":
        out: dict = {}
        h = header_fields(resp.get("header"))
        if h:
            out["header"] = h
        if perms:
            out["perm"] = []
            for p in perms:
                item: dict = {}
                if _perm_type(p):
                    item["permType"] = _perm_type(p)
                if p.get("key"):
                    item["key"] = p["key"]
                if p.get("range_end"):
                    item["range_end"] = p["range_end"]
                out["perm"].append(item)
        ctx.stdout.write(_dump(out))
        return
    lines = [f"Role {role}\n".encode(), b"KV Read:\n"]

    def one(p: dict) -> bytes:
        key, end = b64(p.get("key")), b64(p.get("range_end"))
        if not end:
            return b"\t" + key + b"\n"
        text = b"\t[" + key + b", " + end + b")" if end != b"\x00" else \
            b"\t[" + key + b", <open ended>"
        if prefix_end(key) == end:
            text += b" (prefix " + key + b")"
        return text + b"\n"
    lines += [one(p) for p in perms if _perm_type(p) in (0, 2)]
    lines.append(b"KV Write:\n")
    lines += [one(p) for p in perms if _perm_type(p) in (1, 2)]
    ctx.stdout.write(b"".join(lines))


def cmd_role_add(ctx, args: list[str], v: dict) -> int:
    m = _main()
    if len(args) != 1:
        raise m.Exit(m.EXIT_BAD_ARGS, "role add command requires role name as its argument")
    return _done(ctx, _call(ctx, "/v3/auth/role/add", {"name": args[0]}),
                 f"Role {args[0]} created", "AuthRoleAddResponse")


def cmd_role_delete(ctx, args: list[str], v: dict) -> int:
    m = _main()
    if len(args) != 1:
        raise m.Exit(m.EXIT_BAD_ARGS, "role delete command requires role name as its argument")
    return _done(ctx, _call(ctx, "/v3/auth/role/delete", {"role": args[0]}),
                 f"Role {args[0]} deleted", "AuthRoleDeleteResponse")


def cmd_role_get(ctx, args: list[str], v: dict) -> int:
    m = _main()
    if len(args) != 1:
        raise m.Exit(m.EXIT_BAD_ARGS, "role get command requires role name as its argument")
    _print_role(ctx, args[0], _call(ctx, "/v3/auth/role/get", {"role": args[0]}))
    return 0


def cmd_role_list(ctx, args: list[str], v: dict) -> int:
    m = _main()
    if args:
        raise m.Exit(m.EXIT_BAD_ARGS, "role list command requires no arguments")
    resp = _call(ctx, "/v3/auth/role/list", {})

    def roles_field(r: dict) -> None:
        from fastkv.cli.v2.gostd import quote
        _out(ctx, '"Roles" :' + "".join(" " + quote(x) for x in r.get("roles") or []) + "\n")
    if _other_format(ctx, resp, "AuthRoleListResponse", roles_field):
        return 0
    if ctx.format == "json":
        _json(ctx, resp, "roles")
    else:
        _out(ctx, "".join(f"{r}\n" for r in resp.get("roles") or []))
    return 0


def _perm_range(args: list[str], v: dict) -> tuple[bytes, bytes]:
    """etcdctl's permRange / rangeEndFromPermFlags."""
    m = _main()
    prefix, from_key = v["prefix"], v["from-key"]
    key = args[0].encode("utf-8", "surrogateescape")
    if not key:
        if prefix and from_key:
            raise m.Exit(m.EXIT_BAD_ARGS, "--from-key and --prefix flags are mutually exclusive")
        # the whole key space: ["\x00", "\x00") with --prefix or --from-key
        return b"\x00", (b"\x00" if prefix or from_key else b"")
    if len(args) == 1:
        if prefix:
            if from_key:
                raise m.Exit(m.EXIT_BAD_ARGS,
                             "--from-key and --prefix flags are mutually exclusive")
            return key, prefix_end(key)
        return key, (b"\x00" if from_key else b"")
    if prefix:
        raise m.Exit(m.EXIT_BAD_ARGS, "unexpected endkey argument with --prefix flag")
    if from_key:
        raise m.Exit(m.EXIT_BAD_ARGS, "unexpected endkey argument with --from-key flag")
    return key, args[1].encode("utf-8", "surrogateescape")


def cmd_role_grant_permission(ctx, args: list[str], v: dict) -> int:
    m = _main()
    if len(args) < 3:
        raise m.Exit(m.EXIT_BAD_ARGS, "role grant command requires role name, permission type, "
                                      "and key [endkey] as its argument")
    perm = PERM_TYPES.get(args[1].upper())
    if perm is None:
        raise m.Exit(m.EXIT_BAD_ARGS, f"invalid permission type: {args[1]}")
    key, end = _perm_range(args[2:], v)
    body_perm: dict = {"key": m.b64e(key)}
    if perm:
        body_perm["permType"] = perm
    if end:
        body_perm["range_end"] = m.b64e(end)
    resp = _call(ctx, "/v3/auth/role/grant", {"name": args[0], "perm": body_perm})
    return _done(ctx, resp, f"Role {args[0]} updated", "AuthRoleGrantPermissionResponse")


def cmd_role_revoke_permission(ctx, args: list[str], v: dict) -> int:
    m = _main()
    if len(args) < 2:
        raise m.Exit(m.EXIT_BAD_ARGS, "role revoke-permission command requires role name and "
                                      "key [endkey] as its argument")
    key, end = _perm_range(args[1:], v)
    body = {"role": args[0], "key": m.b64e(key)}
    if end:
        body["range_end"] = m.b64e(end)
    resp = _call(ctx, "/v3/auth/role/revoke", body)
    if _other_format(ctx, resp, "AuthRoleRevokePermissionResponse", lambda r: None):
        return 0
    if ctx.format == "json":
        _json(ctx, resp)
        return 0
    role, shown = args[0].encode("utf-8", "surrogateescape"), args[1].encode("utf-8",
                                                                             "surrogateescape")
    if not end:
        line = b"Permission of key " + shown + b" is revoked from role " + role
    elif end != b"\x00":
        line = b"Permission of range [" + shown + b", " + end + b") is revoked from role " + role
    else:
        line = b"Permission of range [" + shown + b", <open ended> is revoked from role " + role
    ctx.stdout.write(line + b"\n")
    return 0


# -- auth ---------------------------------------------------------------------------

def cmd_auth_enable(ctx, args: list[str], v: dict) -> int:
    m = _main()
    if args:
        raise m.Exit(m.EXIT_BAD_ARGS, "auth enable command does not accept any arguments")
    client = ctx.client()
    while True:   # etcdctl: without role root, create it and grant it to root, then retry
        try:
            client.call("/v3/auth/enable", {})
            break
        except RPCError as e:
            if e.message != ERR_ROOT_ROLE_NOT_EXIST:
                raise m.Exit(m.EXIT_ERROR, rpc_error_text(e)) from None
        except ClientError as e:
            raise m.Exit(m.EXIT_ERROR, rpc_error_text(e)) from None
        try:
            client.call("/v3/auth/role/add", {"name": "root"})
            client.call("/v3/auth/user/grant", {"user": "root", "role": "root"})
        except ClientError as e:
            raise m.Exit(m.EXIT_ERROR, rpc_error_text(e)) from None
    _out(ctx, "Authentication Enabled\n")
    return 0


def cmd_auth_disable(ctx, args: list[str], v: dict) -> int:
    m = _main()
    if args:
        raise m.Exit(m.EXIT_BAD_ARGS, "auth disable command does not accept any arguments")
    _call(ctx, "/v3/auth/disable", {})
    _out(ctx, "Authentication Disabled\n")
    return 0


# -- the command table --------------------------------------------------------------

F = fl.Flag
C = fl.Command
USER_COMMAND = C("user", "User related commands", "user <subcommand> [flags]", subcommands=[
    C("add", "Adds a new user", "user add <user name or user:password> [options] [flags]",
      cmd_user_add, [
          F("interactive", "bool", True,
            "Read password from stdin instead of interactive terminal"),
          F("new-user-password", "string", "", "Supply password from the command line flag"),
          F("no-password", "bool", False, "Create a user without password (CN based auth only)"),
      ]),
    C("delete", "Deletes a user", "user delete <user name> [flags]", cmd_user_delete),
    C("get", "Gets detailed information of a user", "user get <user name> [options] [flags]",
      cmd_user_get, [F("detail", "bool", False, "Show permissions of roles granted to the user")]),
    C("list", "Lists all users", "user list [flags]", cmd_user_list),
    C("passwd", "Changes password of user", "user passwd <user name> [options] [flags]",
      cmd_user_passwd, [F("interactive", "bool", True,
                          "If true, read password from stdin instead of interactive terminal")]),
    C("grant-role", "Grants a role to a user", "user grant-role <user name> <role name> [flags]",
      cmd_user_grant_role),
    C("revoke-role", "Revokes a role from a user",
      "user revoke-role <user name> <role name> [flags]", cmd_user_revoke_role),
])
ROLE_COMMAND = C("role", "Role related commands", "role <subcommand> [flags]", subcommands=[
    C("add", "Adds a new role", "role add <role name> [flags]", cmd_role_add),
    C("delete", "Deletes a role", "role delete <role name> [flags]", cmd_role_delete),
    C("get", "Gets detailed information of a role", "role get <role name> [flags]", cmd_role_get),
    C("list", "Lists all roles", "role list [flags]", cmd_role_list),
    C("grant-permission", "Grants a key to a role",
      "role grant-permission [options] <role name> <permission type> <key> [endkey] [flags]",
      cmd_role_grant_permission, [
          F("from-key", "bool", False, "grant a permission of keys that are greater than or "
                                       "equal to the given key using byte compare"),
          F("prefix", "bool", False, "grant a prefix permission"),
      ]),
    C("revoke-permission", "Revokes a key from a role",
      "role revoke-permission <role name> <key> [endkey] [flags]", cmd_role_revoke_permission, [
          F("from-key", "bool", False, "revoke a permission of keys that are greater than or "
                                       "equal to the given key using byte compare"),
          F("prefix", "bool", False, "revoke a prefix permission"),
      ]),
])
AUTH_COMMAND = C("auth", "Enable or disable authentication", "auth <enable or disable> [flags]",
                 subcommands=[
                     C("enable", "Enables authentication", "auth enable [flags]", cmd_auth_enable),
                     C("disable", "Disables authentication", "auth disable [flags]",
                       cmd_auth_disable),
                 ])
del F, C
