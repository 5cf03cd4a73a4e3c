"""etcdctl v2's ``user``, ``role`` and ``auth`` commands (etcdctl/ctlv2/command/
user_commands.go, role_commands.go, auth_commands.go): the same checks in the same
order, the same requests, prints and exit codes.

These commands print their errors themselves (``fmt.Fprintln(os.Stderr, err)``,
exit 1), not through handleError.
"""
from __future__ import annotations

from fastkv.cli.v2 import gostd
from fastkv.cli.v2.auth_api import READ, READ_WRITE, WRITE, AuthAPI, AuthRoleAPI, AuthUserAPI
from fastkv.cli.v2.client import ClientError
from fastkv.cli.v2.commands import ask_password, must_new_client, out, total_timeout
from fastkv.cli.v2.flags import Context as CliContext
from fastkv.cli.v2.flags import OsExit


def _fail(c: CliContext, text: str) -> None:
    """fmt.Fprintln(os.Stderr, ...); os.Exit(1)."""
    c.io.err(text + "\n")
    raise OsExit(1)


def _debug_endpoints(c: CliContext, hc) -> None:
    if c.global_bool("debug"):
        c.io.err(f"Cluster-Endpoints: {', '.join(hc.endpoint_strings())}\n")


def _client(c: CliContext):
    hc = must_new_client(c)
    _debug_endpoints(c, hc)
    return hc


def _username_password(c: CliContext, prompt: str, flag: str) -> tuple[str, str]:
    """getUsernamePassword: "name:password", or the name and a prompted password."""
    name, sep, password = flag.partition(":")
    if not sep:
        password = ask_password(c, prompt)
    return name, password


# ---- user ---------------------------------------------------------------------------

def _user_api_and_name(c: CliContext) -> tuple[AuthUserAPI, str]:
    args = c.args()
    if len(args) != 1:
        _fail(c, "Please provide a username")
    return AuthUserAPI(_client(c)), args[0]


def user_list(c: CliContext) -> None:
    if c.args():
        _fail(c, "No arguments accepted")
    api = AuthUserAPI(_client(c))
    try:
        users = api.list_users(total_timeout(c))
    except ClientError as e:
        _fail(c, str(e))
    for u in users:
        out(c, f"{u}\n")


def user_add(c: CliContext) -> None:
    api, userarg = _user_api_and_name(c)
    ctx = total_timeout(c)
    user = userarg.partition(":")[0]
    try:
        _name, password = _username_password(c, "New password: ", userarg)
    except ClientError as e:
        _fail(c, f"Error reading password: {e}")
    try:
        api.add_user(ctx, user, password)
    except ClientError as e:
        _fail(c, str(e))
    out(c, f"User {user} created\n")


def user_remove(c: CliContext) -> None:
    api, user = _user_api_and_name(c)
    try:
        api.remove_user(total_timeout(c), user)
    except ClientError as e:
        _fail(c, str(e))
    out(c, f"User {user} removed\n")


def user_passwd(c: CliContext) -> None:
    api, user = _user_api_and_name(c)
    ctx = total_timeout(c)
    try:
        password = ask_password(c, "New password: ")
    except ClientError as e:
        _fail(c, f"Error reading password: {e}")
    try:
        api.change_password(ctx, user, password)
    except ClientError as e:
        _fail(c, str(e))
    out(c, "Password updated\n")


def _user_grant_revoke(c: CliContext, grant: bool) -> None:
    roles = c.string_slice("roles")
    if not roles:
        _fail(c, "No roles specified; please use `--roles`")
    ctx = total_timeout(c)
    api, user = _user_api_and_name(c)
    try:
        if grant:
            api.grant_user(ctx, user, roles)
        else:
            api.revoke_user(ctx, user, roles)
    except ClientError as e:
        _fail(c, str(e))
    out(c, f"User {user} updated\n")


def user_grant(c: CliContext) -> None:
    _user_grant_revoke(c, True)


def user_revoke(c: CliContext) -> None:
    _user_grant_revoke(c, False)


def user_get(c: CliContext) -> None:
    api, name = _user_api_and_name(c)
    try:
        user = api.get_user(total_timeout(c), name)
    except ClientError as e:
        _fail(c, str(e))
    out(c, f"User: {user['user']}\n")
    out(c, f"Roles: {' '.join(user['roles'] or [])}\n")


# ---- role ---------------------------------------------------------------------------

def _role_api_and_name(c: CliContext) -> tuple[AuthRoleAPI, str]:
    args = c.args()
    if len(args) != 1:
        _fail(c, "Please provide a role name")
    name = args[0]
    return AuthRoleAPI(_client(c)), name


def role_list(c: CliContext) -> None:
    if c.args():
        _fail(c, "No arguments accepted")
    api = AuthRoleAPI(_client(c))
    try:
        roles = api.list_roles(total_timeout(c))
    except ClientError as e:
        _fail(c, str(e))
    for r in roles:
        out(c, f"{r}\n")


def role_add(c: CliContext) -> None:
    api, role = _role_api_and_name(c)
    ctx = total_timeout(c)
    try:
        current = api.get_role(ctx, role)
    except ClientError:
        current = None
    if current is not None:
        _fail(c, f"Role {role} already exists")
    try:
        api.add_role(ctx, role)
    except ClientError as e:
        _fail(c, str(e))
    out(c, f"Role {role} created\n")


def role_remove(c: CliContext) -> None:
    api, role = _role_api_and_name(c)
    try:
        api.remove_role(total_timeout(c), role)
    except ClientError as e:
        _fail(c, str(e))
    out(c, f"Role {role} removed\n")


def _role_grant_revoke(c: CliContext, grant: bool) -> None:
    path = c.string("path")
    if path == "":
        _fail(c, "No path specified; please use `--path`")
    canonical = gostd.canonical_url_path(path)
    if canonical != path:
        _fail(c, f"Not canonical path; please use `--path={canonical}`")
    read, write, rw = c.bool("read"), c.bool("write"), c.bool("readwrite")
    if [read, write, rw].count(True) != 1:
        _fail(c, "Please specify exactly one of --read, --write or --readwrite")
    perm = READ if read else WRITE if write else READ_WRITE
    api, role = _role_api_and_name(c)
    ctx = total_timeout(c)
    try:
        current = api.get_role(ctx, role)
    except ClientError as e:
        _fail(c, str(e))
    try:
        if grant:
            new = api.grant_role_kv(ctx, role, [path], perm)
        else:
            new = api.revoke_role_kv(ctx, role, [path], perm)
    except ClientError as e:
        _fail(c, str(e))
    if new == current:
        out(c, "Role unchanged; already granted" if grant else "Role unchanged; already revoked")
    out(c, f"Role {role} updated\n")


def role_grant(c: CliContext) -> None:
    _role_grant_revoke(c, True)


def role_revoke(c: CliContext) -> None:
    _role_grant_revoke(c, False)


def role_get(c: CliContext) -> None:
    api, name = _role_api_and_name(c)
    try:
        role = api.get_role(total_timeout(c), name)
    except ClientError as e:
        _fail(c, str(e))
    out(c, f"Role: {role['role']}\n")
    out(c, "KV Read:\n")
    for v in role["permissions"]["kv"]["read"] or ():
        out(c, f"\t{v}\n")
    out(c, "KV Write:\n")
    for v in role["permissions"]["kv"]["write"] or ():
        out(c, f"\t{v}\n")


# ---- auth ---------------------------------------------------------------------------

def _auth_enable_disable(c: CliContext, enable: bool) -> None:
    if c.args():
        _fail(c, "No arguments accepted")
    api = AuthAPI(_client(c))
    try:
        if enable:
            api.enable(total_timeout(c))
        else:
            api.disable(total_timeout(c))
    except ClientError as e:
        _fail(c, str(e))
    out(c, "Authentication Enabled\n" if enable else "Authentication Disabled\n")


def auth_enable(c: CliContext) -> None:
    _auth_enable_disable(c, True)


def auth_disable(c: CliContext) -> None:
    _auth_enable_disable(c, False)
