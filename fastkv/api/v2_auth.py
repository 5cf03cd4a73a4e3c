"""etcd 3.4's v2 auth over HTTP (etcdserver/api/v2http/client_auth.go), with --enable-v2:

* ``/v2/auth/enable``: GET the switch, PUT enables (a root user must exist; the
  guest role is created with read/write on everything if missing), DELETE disables;
* ``/v2/auth/users``, ``/v2/auth/users/<name>``: list, GET, PUT (create, or update
  with ``grant``/``revoke`` roles or a new ``password``), DELETE;
* ``/v2/auth/roles``, ``/v2/auth/roles/<name>``: the same for roles and their
  ``permissions.kv.read``/``write`` globs;

and the access checks the other v2 handlers make once auth is enabled: a request
carries a user by HTTP basic auth (or, with --client-cert-auth and no
Authorization header, as its verified client certificate's CN); without one it is
the guest role's. The /v2/auth and member-changing endpoints need the root role;
/v2/keys needs a role granting the key (recursive requests: a ``/prefix*`` glob
covering the whole subtree). Answers, statuses and messages are etcd's; the
store behind them is fastkv/v2auth.
"""
from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote

from fastkv.api.v2_cluster import _NOT_FOUND, _http_error, _not_allowed
from fastkv.v2auth import model
from fastkv.v2auth.model import ROOT_ROLE, GUEST_ROLE, AuthError, GoJSONError
from fastkv.v2store import V2Error
from fastkv.v2store.wire import dumps

AUTH_PREFIX = "/v2/auth"
_JSON = (b"Content-Type", b"application/json")


def _headers(server) -> list:
    """What etcd's handlers set once a request passed its checks."""
    return [(b"X-Etcd-Cluster-Id", f"{server.cluster_id:x}".encode()), _JSON]


def _encoded(status: int, hdr: list, obj) -> tuple:
    """json.NewEncoder(w).Encode: Go's JSON and a newline."""
    return status, hdr, (dumps(obj) + "\n").encode()


def write_no_auth() -> tuple:
    """writeNoAuth: 401 {"message":"Insufficient credentials"} (no other header)."""
    return _http_error(401, "Insufficient credentials")


def _write_error(err: Exception, hdr: list) -> tuple:
    """v2http's writeError: auth and HTTP errors as {"message"}, v2 store errors as
    theirs, anything else 500 "Internal Server Error" (etcdhttp.WriteError)."""
    extra = [h for h in hdr if h[0] != b"Content-Type"]
    if isinstance(err, AuthError):
        return _http_error(err.status, err.message, extra)
    if isinstance(err, _HTTPError):
        return _http_error(err.status, err.message, extra)
    if isinstance(err, V2Error):
        return err.status, [*extra, _JSON, (b"X-Etcd-Index", str(err.index).encode())], \
            (err.to_json() + "\n").encode()
    return _http_error(500, "Internal Server Error", extra)


class _HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


# ---- who is asking ---------------------------------------------------------------------

def basic_auth(header: bytes) -> tuple[str, bytes] | None:
    """Go's Request.BasicAuth: (username, password) from "Basic base64(user:pass)"."""
    h = header.strip(b" \t")
    if len(h) < 6 or h[:6].lower() != b"basic ":
        return None
    data = h[6:].replace(b"\r", b"").replace(b"\n", b"")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = raw.partition(b":")
    if not sep:
        return None
    return user.decode("utf-8", "surrogateescape"), password


def _authorization(hreq) -> bytes:
    return getattr(hreq, "authorization", b"") or b""


def _client_cert_auth(server) -> bool:
    return bool(getattr(server.cfg, "client_cert_auth", False))


async def _user_from_basic_auth(auth, hreq) -> dict | None:
    creds = basic_auth(_authorization(hreq))
    if creds is None:
        return None
    name, password = creds
    try:
        user = auth.get_user(name)
    except Exception:
        return None
    if not await auth.check_password(user, password):
        return None
    return user


def _user_from_client_cert(auth, hreq) -> dict | None:
    """The user named by the verified client certificate's Common Name (etcd tries each
    certificate of the verified chains; fastkv knows the client's own)."""
    cn = getattr(hreq, "peer_cn", None)
    if cn is None:
        return None
    try:
        return auth.get_user(cn)
    except Exception:
        return None


async def has_root_access(server, hreq) -> bool:
    """hasRootAccess: auth off, or a user holding the root role."""
    auth = server.v2auth
    if not auth.enabled():
        return True
    if not _authorization(hreq) and _client_cert_auth(server):
        user = _user_from_client_cert(auth, hreq)
    else:
        user = await _user_from_basic_auth(auth, hreq)
    if user is None:
        return False
    return ROOT_ROLE in (user["roles"] or ())


async def has_write_root_access(server, method: bytes, hreq) -> bool:
    """hasWriteRootAccess: reads are free, changes need root."""
    if method in (b"GET", b"HEAD"):
        return True
    return await has_root_access(server, hreq)


async def has_key_access_enabled(server, hreq, method: str, key: str, recursive: bool) -> bool:
    """hasKeyPrefixAccess once auth is known to be on: the request's user (or the guest
    role without credentials) may read / write `key` (a key path under /v2/keys)."""
    auth = server.v2auth
    write = method not in ("GET", "HEAD")
    if not _authorization(hreq):
        user = _user_from_client_cert(auth, hreq) if _client_cert_auth(server) else None
        if user is None:
            try:
                guest = auth.get_role(GUEST_ROLE)
            except Exception:
                return False
            return model.has_key_access(guest, key, write)
    else:
        user = await _user_from_basic_auth(auth, hreq)
        if user is None:
            return False
    for name in user["roles"] or ():
        try:
            role = auth.get_role(name)
        except Exception:
            continue
        if recursive:
            if model.has_recursive_access(role, key, write):
                return True
        elif model.has_key_access(role, key, write):
            return True
    return False


# ---- /v2/auth handlers -------------------------------------------------------------------

def _clean(p: str) -> str:
    """Go's path.Clean."""
    rooted = p.startswith("/")
    parts: list[str] = []
    for part in p.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(part)
    out = ("/" if rooted else "") + "/".join(parts)
    return out or "."


_HEX = frozenset("0123456789abcdefABCDEF")


def _query_refused(url: bytes) -> bool:
    """Whether Go's r.ParseForm fails on the URL's query (a ';' separator, or a '%' not
    followed by two hex digits): etcd's list and GET handlers then answer 500."""
    _, sep, query = url.partition(b"?")
    if not sep:
        return False
    for part in query.decode("latin-1").split("&"):
        if ";" in part:
            return True
        i = part.find("%")
        while i >= 0:
            if len(part) < i + 3 or part[i + 1] not in _HEX or part[i + 2] not in _HEX:
                return True
            i = part.find("%", i + 3)
    return False


def _subpath_pieces(url: bytes) -> list[str]:
    raw = url.split(b"?", 1)[0].decode("latin-1")
    path = unquote(raw, errors="surrogateescape")
    return _clean(path[len(AUTH_PREFIX):]).split("/")


async def base_roles(server, method: bytes, url: bytes, hreq) -> tuple:
    if method != b"GET":
        return _not_allowed("GET")
    if not await has_root_access(server, hreq):
        return write_no_auth()
    hdr = _headers(server)
    auth = server.v2auth
    try:
        names = auth.all_roles()
        if _query_refused(url):
            raise ValueError("bad query")
        roles = [model.role_obj(auth.get_role(name)) for name in names]
    except Exception as e:
        return _write_error(e, hdr)
    return _encoded(200, hdr, {"roles": roles or None})


async def base_users(server, method: bytes, url: bytes, hreq) -> tuple:
    if method != b"GET":
        return _not_allowed("GET")
    if not await has_root_access(server, hreq):
        return write_no_auth()
    hdr = _headers(server)
    auth = server.v2auth
    users = []
    try:
        names = auth.all_users()
        if _query_refused(url):
            raise ValueError("bad query")
        for name in names:
            u = auth.get_user(name)
            entry = {"user": u["user"]}
            roles = []
            for rn in u["roles"] or ():
                try:
                    roles.append(model.role_obj(auth.get_role(rn)))
                except Exception:
                    continue
            if roles:
                entry["roles"] = roles
            users.append(entry)
    except Exception as e:
        return _write_error(e, hdr)
    return _encoded(200, hdr, {"users": users or None})


def _decode_body(body: bytes, decode):
    try:
        return decode(model.decode_first(body))
    except GoJSONError:
        raise _HTTPError(400, "Invalid JSON in request body.") from None


async def for_user(server, method: bytes, url: bytes, name: str, body: bytes, hreq) -> tuple:
    if method not in (b"GET", b"PUT", b"DELETE"):
        return _not_allowed("GET", "PUT", "DELETE")
    if not await has_root_access(server, hreq):
        return write_no_auth()
    hdr = _headers(server)
    auth = server.v2auth
    try:
        if method == b"GET":
            u = auth.get_user(name)
            if _query_refused(url):
                raise ValueError("bad query")
            entry = {"user": u["user"]}
            roles = [model.role_obj(auth.get_role(rn)) for rn in u["roles"] or ()]
            if roles:
                entry["roles"] = roles
            return _encoded(200, hdr, entry)
        if method == b"DELETE":
            await auth.delete_user(name)
            return 200, hdr, b""
        u = _decode_body(body, model.user_from_json)
        if u["user"] != name:
            raise _HTTPError(400, "User JSON name does not match the name in the URL")
        created = False
        if not u["grant"] and not u["revoke"]:
            if u["roles"]:
                out = await auth.create_user(u)
            else:
                out, created = await auth.create_or_update_user(u)
        else:
            if u["roles"]:
                raise _HTTPError(400, "User JSON contains both roles and grant/revoke")
            out = await auth.update_user(u)
        return _encoded(201 if created else 200, hdr, model.user_obj(dict(out, password="")))
    except Exception as e:
        return _write_error(e, hdr)


async def for_role(server, method: bytes, name: str, body: bytes, hreq) -> tuple:
    if method not in (b"GET", b"PUT", b"DELETE"):
        return _not_allowed("GET", "PUT", "DELETE")
    if not await has_root_access(server, hreq):
        return write_no_auth()
    hdr = _headers(server)
    auth = server.v2auth
    try:
        if method == b"GET":
            return _encoded(200, hdr, model.role_obj(auth.get_role(name)))
        if method == b"DELETE":
            await auth.delete_role(name)
            return 200, hdr, b""
        r = _decode_body(body, model.role_from_json)
        if r["role"] != name:
            raise _HTTPError(400, "Role JSON name does not match the name in the URL")
        if model.permissions_empty(r["grant"]) and model.permissions_empty(r["revoke"]):
            await auth.create_role(r)
            return _encoded(201, hdr, model.role_obj(r))
        if not model.permissions_empty(r["permissions"]):
            raise _HTTPError(400, "Role JSON contains both permissions and grant/revoke")
        out = await auth.update_role(r)
        return _encoded(200, hdr, model.role_obj(out))
    except Exception as e:
        return _write_error(e, hdr)


async def enable_disable(server, method: bytes, url: bytes, body: bytes,
                         ctype: bytes = b"", hreq=None):
    if not server.cfg.enable_v2:
        return _NOT_FOUND
    if method not in (b"GET", b"PUT", b"DELETE"):
        return _not_allowed("GET", "PUT", "DELETE")
    if not await has_write_root_access(server, method, hreq):
        return write_no_auth()
    hdr = _headers(server)
    auth = server.v2auth
    is_enabled = auth.enabled()
    try:
        if method == b"GET":
            return _encoded(200, hdr, {"enabled": is_enabled})
        if method == b"PUT":
            await auth.enable_auth()
        else:
            await auth.disable_auth()
    except Exception as e:
        return _write_error(e, hdr)
    return 200, hdr, b""


async def users(server, method: bytes, url: bytes, body: bytes, ctype: bytes = b"",
                hreq=None):
    """/v2/auth/users and /v2/auth/users/<name> (etcd's handleUsers)."""
    if not server.cfg.enable_v2:
        return _NOT_FOUND
    pieces = _subpath_pieces(url)
    if len(pieces) == 2:
        return await base_users(server, method, url, hreq)
    if len(pieces) != 3:
        return _write_error(_HTTPError(400, "Invalid path"), [])
    return await for_user(server, method, url, pieces[2], body, hreq)


async def roles(server, method: bytes, url: bytes, body: bytes, ctype: bytes = b"",
                hreq=None):
    """/v2/auth/roles and /v2/auth/roles/<name> (etcd's handleRoles)."""
    if not server.cfg.enable_v2:
        return _NOT_FOUND
    pieces = _subpath_pieces(url)
    if len(pieces) == 2:
        return await base_roles(server, method, url, hreq)
    if len(pieces) != 3:
        return _write_error(_HTTPError(400, "Invalid path"), [])
    return await for_role(server, method, pieces[2], body, hreq)


def resolve(path: str):
    """etcd's mux patterns under /v2/auth (exact names, and the two subtrees)."""
    if path == "/v2/auth/enable":
        return enable_disable
    if path == "/v2/auth/users" or path.startswith("/v2/auth/users/"):
        return users
    if path == "/v2/auth/roles" or path.startswith("/v2/auth/roles/"):
        return roles
    return None
