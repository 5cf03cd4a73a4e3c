"""The v2 client's auth APIs (go.etcd.io/etcd/client auth_user.go, auth_role.go):
AuthAPI (enable, disable), AuthUserAPI and AuthRoleAPI, with the same requests
and the same results and errors, Go's JSON decoding quirks included.

Users and roles are the dicts of fastkv.v2auth.model (client.User and client.Role
have the server's field names and tags): None is a Go nil slice or pointer, so
``==`` is reflect.DeepEqual.
"""
from __future__ import annotations

from fastkv.cli.v2 import gostd
from fastkv.cli.v2.client import Action, Client, ClientError, Context, Request
from fastkv.v2auth import model
from fastkv.v2auth.model import GoJSONError

AUTH_PREFIX = "/v2/auth"
JSON = {"Content-Type": "application/json"}


class AuthError(ClientError):
    """client.authError: the server's {"message": ...}."""


def _auth_url(ep, action: str, name: str = ""):
    """v2AuthURL: path.Join(ep.Path, "/v2/auth", action[, name])."""
    ep.path = gostd.path_join(ep.path, AUTH_PREFIX, action, name) if name else \
        gostd.path_join(ep.path, AUTH_PREFIX, action)
    return ep


class _AuthAction(Action):
    def __init__(self, method: str, action: str, name: str = "", body: str | None = None,
                 list_request: bool = False):
        self.method, self.action, self.name, self.body = method, action, name, body
        self.list_request = list_request

    def request(self, ep) -> Request:
        u = _auth_url(ep, self.action, self.name)
        if self.list_request:   # the list actions send a JSON content type and no body
            return Request(self.method, u, None, dict(JSON))
        if self.body is None:
            return Request(self.method, u)
        return Request(self.method, u, gostd.to_bytes(self.body), dict(JSON))


def _assert_status(got: int, *want: int) -> bool:
    return got in want


def _unmarshal(body: bytes):
    try:
        return model.unmarshal(body)
    except GoJSONError as e:
        raise ClientError(str(e)) from None


def _auth_error(body: bytes) -> ClientError:
    """json.Unmarshal(body, &authError): its message (a JSON error if the body is none)."""
    obj = _unmarshal(body)
    message = ""
    if isinstance(obj, model._Object):
        for k, v in obj:
            if k == "message" or k.lower() == "message":
                if isinstance(v, str):
                    message = v
                elif v is not None:
                    return ClientError("json: cannot unmarshal into Go struct field "
                                       "authError.message of type string")
    elif obj is not None:
        return ClientError("json: cannot unmarshal into Go value of type client.authError")
    return AuthError(message)


def _status_error(got: int) -> ClientError:
    return ClientError(f"unexpected status code {got}")


def _role(obj) -> dict:
    try:
        return model.role_from_json(obj)
    except GoJSONError as e:
        raise ClientError(f"json: {e}") from None


class AuthAPI:
    def __init__(self, client: Client):
        self.client = client

    def _enable_disable(self, ctx: Context, method: str) -> None:
        resp = self.client.do(ctx, _AuthAction(method, "enable"))
        if not _assert_status(resp.status, 200, 201):
            raise _auth_error(resp.body)

    def enable(self, ctx: Context) -> None:
        self._enable_disable(ctx, "PUT")

    def disable(self, ctx: Context) -> None:
        self._enable_disable(ctx, "DELETE")


def _user_body(name: str, password: str = "", grant=None, revoke=None) -> str:
    return model.user_json({"user": name, "password": password, "roles": None,
                            "grant": grant, "revoke": revoke})


def _decode_mod_user(body: bytes) -> dict:
    """modUser's decoding: into a User; if that fails (GET answers roles as objects),
    into a UserRoles whose role names are appended to what the first attempt left in
    Roles (Go keeps a "" for each element it could not decode)."""
    obj = _unmarshal(body)
    try:
        return model.user_from_json(obj)
    except GoJSONError as first:
        partial = _partial_user(obj)
        try:
            names = _user_roles(obj)
        except GoJSONError:
            raise ClientError(f"json: {first}") from None
        roles = partial["roles"]
        if names:
            roles = (roles or []) + names
        return {"user": names_user(obj), "password": partial["password"], "roles": roles,
                "grant": partial["grant"], "revoke": partial["revoke"]}


def names_user(obj) -> str:
    name = ""
    for key, value in model._fields(obj, ("user",)):
        if isinstance(value, str):
            name = value
    return name


def _partial_user(obj) -> dict:
    """What json.Unmarshal leaves in a User when some values have the wrong type: the
    fields it could decode, and "" for each array element that is not a string."""
    u = model.new_user()
    if not isinstance(obj, model._Object):
        return u
    for name, value in model._fields(obj, ("user", "password", "roles", "grant", "revoke")):
        if name in ("user", "password"):
            if isinstance(value, str):
                u[name] = value
        elif value is None:
            u[name] = None
        elif isinstance(value, list) and not isinstance(value, model._Object):
            u[name] = [x if isinstance(x, str) else "" for x in value]
    return u


def _user_roles(obj) -> list:
    """json.Unmarshal into client.UserRoles: the roles' names (GoJSONError if it fails)."""
    if obj is None:
        return []
    if not isinstance(obj, model._Object):
        raise GoJSONError("cannot unmarshal into UserRoles")
    names: list | None = []
    for name, value in model._fields(obj, ("user", "roles")):
        if name == "user":
            if value is not None and not isinstance(value, str):
                raise GoJSONError("cannot unmarshal into string")
        elif value is None:
            names = []
        else:
            if not isinstance(value, list) or isinstance(value, model._Object):
                raise GoJSONError("cannot unmarshal into []Role")
            names = [model.role_from_json(x)["role"] for x in value]
    return names


class AuthUserAPI:
    def __init__(self, client: Client):
        self.client = client

    def list_users(self, ctx: Context) -> list[str]:
        resp = self.client.do(ctx, _AuthAction("GET", "users", list_request=True))
        if not _assert_status(resp.status, 200):
            raise _auth_error(resp.body)
        obj = _unmarshal(resp.body)
        out = []
        if isinstance(obj, model._Object):
            for _name, users in model._fields(obj, ("users",)):
                if users is None:
                    out = []
                    continue
                if not isinstance(users, list) or isinstance(users, model._Object):
                    raise ClientError("json: cannot unmarshal into Go struct field .users of "
                                      "type []client.userListEntry")
                out = []
                for entry in users:
                    name = ""
                    if isinstance(entry, model._Object):
                        for _f, v in model._fields(entry, ("user",)):
                            if isinstance(v, str):
                                name = v
                    out.append(name)
        elif obj is not None:
            raise ClientError("json: cannot unmarshal into Go value of type struct { Users "
                              "[]client.userListEntry \"json:\\\"users\\\"\" }")
        return out

    def _add_remove(self, ctx: Context, action: _AuthAction) -> None:
        resp = self.client.do(ctx, action)
        if not _assert_status(resp.status, 200, 201):
            raise _auth_error(resp.body)

    def add_user(self, ctx: Context, name: str, password: str) -> None:
        self._add_remove(ctx, _AuthAction("PUT", "users", name, _user_body(name, password)))

    def remove_user(self, ctx: Context, name: str) -> None:
        self._add_remove(ctx, _AuthAction("DELETE", "users", name))

    def _mod_user(self, ctx: Context, action: _AuthAction) -> dict:
        resp = self.client.do(ctx, action)
        if not _assert_status(resp.status, 200):
            raise _auth_error(resp.body)
        return _decode_mod_user(resp.body)

    def get_user(self, ctx: Context, name: str) -> dict:
        return self._mod_user(ctx, _AuthAction("GET", "users", name))

    def grant_user(self, ctx: Context, name: str, roles: list[str]) -> dict:
        return self._mod_user(ctx, _AuthAction("PUT", "users", name, _user_body(name, grant=roles)))

    def revoke_user(self, ctx: Context, name: str, roles: list[str]) -> dict:
        return self._mod_user(ctx, _AuthAction("PUT", "users", name,
                                               _user_body(name, revoke=roles)))

    def change_password(self, ctx: Context, name: str, password: str) -> dict:
        return self._mod_user(ctx, _AuthAction("PUT", "users", name, _user_body(name, password)))


READ, WRITE, READ_WRITE = 0, 1, 2


def _rw_permission(prefixes: list[str], perm: int) -> dict:
    """buildRWPermission."""
    return model.new_permissions(prefixes if perm in (READ, READ_WRITE) else None,
                                 prefixes if perm in (WRITE, READ_WRITE) else None)


class AuthRoleAPI:
    def __init__(self, client: Client):
        self.client = client

    def list_roles(self, ctx: Context) -> list[str]:
        resp = self.client.do(ctx, _AuthAction("GET", "roles", list_request=True))
        if not _assert_status(resp.status, 200):
            raise _status_error(resp.status)
        obj = _unmarshal(resp.body)
        out = []
        if isinstance(obj, model._Object):
            for _name, roles in model._fields(obj, ("roles",)):
                if roles is None:
                    out = []
                    continue
                if not isinstance(roles, list) or isinstance(roles, model._Object):
                    raise ClientError("json: cannot unmarshal into Go struct field .roles of "
                                      "type []client.Role")
                out = [_role(r)["role"] for r in roles]
        elif obj is not None:
            raise ClientError("json: cannot unmarshal into Go value of type struct { Roles "
                              "[]client.Role \"json:\\\"roles\\\"\" }")
        return out

    def _add_remove(self, ctx: Context, action: _AuthAction) -> None:
        resp = self.client.do(ctx, action)
        if not _assert_status(resp.status, 200, 201):
            raise _auth_error(resp.body)

    def add_role(self, ctx: Context, name: str) -> None:
        self._add_remove(ctx, _AuthAction("PUT", "roles", name,
                                          model.role_json(model.new_role(name))))

    def remove_role(self, ctx: Context, name: str) -> None:
        self._add_remove(ctx, _AuthAction("DELETE", "roles", name))

    def _mod_role(self, ctx: Context, action: _AuthAction) -> dict:
        resp = self.client.do(ctx, action)
        if not _assert_status(resp.status, 200):
            raise _auth_error(resp.body)
        return _role(_unmarshal(resp.body))

    def get_role(self, ctx: Context, name: str) -> dict:
        return self._mod_role(ctx, _AuthAction("GET", "roles", name))

    def grant_role_kv(self, ctx: Context, name: str, prefixes: list[str], perm: int) -> dict:
        role = model.new_role(name)
        role["grant"] = _rw_permission(prefixes, perm)
        return self._mod_role(ctx, _AuthAction("PUT", "roles", name, model.role_json(role)))

    def revoke_role_kv(self, ctx: Context, name: str, prefixes: list[str], perm: int) -> dict:
        role = model.new_role(name)
        role["revoke"] = _rw_permission(prefixes, perm)
        return self._mod_role(ctx, _AuthAction("PUT", "roles", name, model.role_json(role)))
