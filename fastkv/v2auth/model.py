"""etcd 3.4's v2 auth data (etcdserver/api/v2auth/auth.go): users, roles and
permissions, their JSON as Go's encoding/json reads and writes it, the merges that
grant and revoke, and the access checks.

A user is a dict ``{"user", "password", "roles", "grant", "revoke"}`` and a role
``{"role", "permissions", "grant", "revoke"}`` whose permissions are
``{"kv": {"read": [...], "write": [...]}}``. A Go nil slice or pointer is None, an
empty one ``[]``: etcd compares users and roles with reflect.DeepEqual (``User not
updated``), which tells them apart, and so does Python's ``==`` here.
"""
from __future__ import annotations

import json
import re

from fastkv.api import gojson
from fastkv.v2store.wire import dumps

PREFIX = "/2"            # etcd's StorePermsPrefix: users, roles, "enabled" live under it
ROOT_ROLE = "root"
GUEST_ROLE = "guest"


class AuthError(Exception):
    """v2auth.Error: an HTTP status and "auth: ..." (etcd answers {"message": ...})."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = "auth: " + message


class GoJSONError(ValueError):
    """encoding/json refused the document (syntax, or a value of the wrong type)."""


def go_format_without_args(s: str) -> str:
    """fmt.Sprintf(s) with no arguments: etcd formats two of its messages this way, so
    a '%' in a role or user name comes out as Go's %!verb(MISSING)."""
    out = []
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        i += 1
        while i < n and s[i] in "+-# 0":
            i += 1
        while i < n and s[i].isdigit():
            i += 1
        if i < n and s[i] == ".":
            i += 1
            while i < n and s[i].isdigit():
                i += 1
        if i >= n:
            out.append("%!(NOVERB)")
            break
        verb = s[i]
        i += 1
        out.append("%" if verb == "%" else f"%!{verb}(MISSING)")
    return "".join(out)


# ---- Go's encoding/json, reading ----------------------------------------------------

class _Object(list):
    """A JSON object as its (key, value) pairs in order, duplicates kept (Go assigns
    each in turn, so the last wins, and two objects for one struct field merge)."""


def _reject_constant(name):
    raise GoJSONError(f"invalid character '{name[0]}' looking for beginning of value")


_DECODER = json.JSONDecoder(object_pairs_hook=_Object, parse_constant=_reject_constant)
_SURROGATE = re.compile("[\ud800-\udfff]")


def decode_first(data: bytes):
    """json.NewDecoder(body).Decode: the first JSON value of the stream; what follows
    it is never read. GoJSONError when there is no (valid) value."""
    try:
        node, end = gojson.decode_next(bytes(data), 0, final=True)
    except gojson.GoJSONError as e:
        raise GoJSONError(str(e)) from None
    if node is None:
        raise GoJSONError("EOF")
    return _parse(bytes(data)[node[1]:end])


def unmarshal(data: bytes | str):
    """json.Unmarshal's parse: exactly one JSON value, only whitespace around it; the
    error text is Go's."""
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)
    try:
        gojson.unmarshal_check(raw)
    except gojson.GoJSONError as e:
        raise GoJSONError(str(e)) from None
    return _parse(raw)


def _parse(raw: bytes):
    """Valid JSON (Go's scanner said so) as Python values, objects as _Object."""
    try:
        return _DECODER.decode(raw.decode("utf-8", "replace"))
    except ValueError as e:    # (not expected after Go's scanner)
        raise GoJSONError(str(e)) from None


def _fold(s: str) -> str:
    # Go's case-insensitive field match folds k/K/U+212A and s/S/U+017F together
    return s.replace("\u212a", "k").replace("\u017f", "s").lower()


def _fields(obj: _Object, names: tuple):
    """(field, value) for each pair whose key names a field: the exact name first,
    else a case-insensitive match (encoding/json's rule); other keys are ignored."""
    for key, value in obj:
        if key in names:
            yield key, value
            continue
        folded = _fold(key)
        for name in names:
            if folded == name:
                yield name, value
                break


def _go_str(s: str) -> str:
    # Go decodes a lone surrogate escape as U+FFFD
    return _SURROGATE.sub("\ufffd", s) if _SURROGATE.search(s) else s


def _string(cur: str, v) -> str:
    if v is None:
        return cur
    if isinstance(v, str):
        return _go_str(v)
    raise GoJSONError("cannot unmarshal into a string")


def _strings(cur, v):
    """Into a []string: null makes it nil; a null element is ""."""
    if v is None:
        return None
    if not isinstance(v, list) or isinstance(v, _Object):
        raise GoJSONError("cannot unmarshal into []string")
    out = []
    for x in v:
        if x is None:
            out.append("")
        elif isinstance(x, str):
            out.append(_go_str(x))
        else:
            raise GoJSONError("cannot unmarshal into string")
    return out


def new_permissions(read=None, write=None) -> dict:
    return {"kv": {"read": read, "write": write}}


def _rw_into(rw: dict, v) -> None:
    if v is None:
        return
    if not isinstance(v, _Object):
        raise GoJSONError("cannot unmarshal into RWPermission")
    for name, value in _fields(v, ("read", "write")):
        rw[name] = _strings(rw[name], value)


def _permissions_into(p: dict, v) -> None:
    """Into a Permissions struct (null leaves it as it is)."""
    if v is None:
        return
    if not isinstance(v, _Object):
        raise GoJSONError("cannot unmarshal into Permissions")
    for _name, value in _fields(v, ("kv",)):
        _rw_into(p["kv"], value)


def _permissions_ptr(cur, v):
    """Into a *Permissions: null makes it nil, an object fills it (allocated if nil)."""
    if v is None:
        return None
    if cur is None:
        cur = new_permissions()
    _permissions_into(cur, v)
    return cur


def new_user(name: str = "") -> dict:
    return {"user": name, "password": "", "roles": None, "grant": None, "revoke": None}


def new_role(name: str = "") -> dict:
    return {"role": name, "permissions": new_permissions(), "grant": None, "revoke": None}


def user_from_json(obj) -> dict:
    """A parsed document into a v2auth.User (as json.Unmarshal / Decode would fill it)."""
    u = new_user()
    if obj is None:
        return u
    if not isinstance(obj, _Object):
        raise GoJSONError("cannot unmarshal into User")
    for name, value in _fields(obj, ("user", "password", "roles", "grant", "revoke")):
        if name in ("user", "password"):
            u[name] = _string(u[name], value)
        else:
            u[name] = _strings(u[name], value)
    return u


def role_from_json(obj) -> dict:
    """A parsed document into a v2auth.Role."""
    r = new_role()
    if obj is None:
        return r
    if not isinstance(obj, _Object):
        raise GoJSONError("cannot unmarshal into Role")
    for name, value in _fields(obj, ("role", "permissions", "grant", "revoke")):
        if name == "role":
            r["role"] = _string(r["role"], value)
        elif name == "permissions":
            _permissions_into(r["permissions"], value)
        else:
            r[name] = _permissions_ptr(r[name], value)
    return r


# ---- Go's encoding/json, writing (struct tags: field order, omitempty) -----------------

def _perm_obj(p: dict) -> dict:
    return {"kv": {"read": p["kv"]["read"], "write": p["kv"]["write"]}}


def role_obj(r: dict) -> dict:
    out = {"role": r["role"], "permissions": _perm_obj(r["permissions"])}
    if r.get("grant") is not None:
        out["grant"] = _perm_obj(r["grant"])
    if r.get("revoke") is not None:
        out["revoke"] = _perm_obj(r["revoke"])
    return out


def user_obj(u: dict) -> dict:
    out = {"user": u["user"]}
    if u["password"]:
        out["password"] = u["password"]
    out["roles"] = u["roles"]
    if u.get("grant"):
        out["grant"] = u["grant"]
    if u.get("revoke"):
        out["revoke"] = u["revoke"]
    return out


def user_json(u: dict) -> str:
    return dumps(user_obj(u))


def role_json(r: dict) -> str:
    return dumps(role_obj(r))


# ---- the fixed roles -----------------------------------------------------------------

def root_role() -> dict:
    r = new_role(ROOT_ROLE)
    r["permissions"] = new_permissions(["/*"], ["/*"])
    return r


def guest_role() -> dict:
    r = new_role(GUEST_ROLE)
    r["permissions"] = new_permissions(["/*"], ["/*"])
    return r


def attach_root_role(u: dict) -> dict:
    """The root user always has the root role."""
    if ROOT_ROLE not in (u["roles"] or ()):
        u["roles"] = (u["roles"] or []) + [ROOT_ROLE]
    return u


def permissions_empty(p: dict | None) -> bool:
    return p is None or (not p["kv"]["read"] and not p["kv"]["write"])


# ---- merges (User.merge, Role.merge): grants, then revokes ----------------------------

def merge_user_roles(old: dict, new: dict) -> list:
    """The roles after `new`'s grants and revokes (sorted), or AuthError 409."""
    current = set(old["roles"] or ())
    for g in new["grant"] or ():
        if g in current:
            raise AuthError(409, go_format_without_args(
                f"Granting duplicate role {g} for user {new['user']}"))
        current.add(g)
    for r in new["revoke"] or ():
        if r not in current:
            raise AuthError(409, go_format_without_args(
                f"Revoking ungranted role {r} for user {new['user']}"))
        current.discard(r)
    return sorted(current)


def _rw_grant(rw: dict, n: dict) -> dict:
    read = set(rw["read"] or ())
    for r in n["read"] or ():
        if r in read:
            raise AuthError(409, f"Granting duplicate read permission {r}")
        read.add(r)
    write = set(rw["write"] or ())
    for w in n["write"] or ():
        if w in write:
            raise AuthError(409, f"Granting duplicate write permission {w}")
        write.add(w)
    return {"read": sorted(read), "write": sorted(write)}


def _rw_revoke(rw: dict, n: dict) -> dict:
    read = set(rw["read"] or ())
    read.difference_update(n["read"] or ())      # revoking an ungranted one is no error
    write = set(rw["write"] or ())
    write.difference_update(n["write"] or ())
    return {"read": sorted(read), "write": sorted(write)}


def merge_role(old: dict, new: dict) -> dict:
    """Role.merge: old's permissions with new's grant, then its revoke."""
    perms = old["permissions"]
    if new["grant"] is not None:
        perms = {"kv": _rw_grant(perms["kv"], new["grant"]["kv"])}
    if new["revoke"] is not None:
        perms = {"kv": _rw_revoke(perms["kv"], new["revoke"]["kv"])}
    return {"role": old["role"], "permissions": _perm_obj(perms), "grant": None, "revoke": None}


# ---- access ----------------------------------------------------------------------------
# (An empty pattern makes etcd's handler panic and drop the connection; here it matches
# nothing.)

def _simple_match(pattern: str, key: str) -> bool:
    if pattern.endswith("*"):
        return key.startswith(pattern[:-1])
    return pattern != "" and key == pattern


def _prefix_match(pattern: str, key: str) -> bool:
    return pattern.endswith("*") and key.startswith(pattern[:-1])


def has_key_access(role: dict, key: str, write: bool) -> bool:
    if role["role"] == ROOT_ROLE:
        return True
    kv = role["permissions"]["kv"]
    return any(_simple_match(p, key) for p in (kv["write"] if write else kv["read"]) or ())


def has_recursive_access(role: dict, key: str, write: bool) -> bool:
    if role["role"] == ROOT_ROLE:
        return True
    kv = role["permissions"]["kv"]
    return any(_prefix_match(p, key) for p in (kv["write"] if write else kv["read"]) or ())
