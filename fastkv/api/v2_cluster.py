"""etcd's v2 cluster endpoints: /v2/members, /v2/machines, /v2/stats/{self,leader}.

Served, as by etcd 3.4, only with --enable-v2 (else 404). A handler is
``async (server, method, url, body, ctype, hreq) -> (status, headers, body)``
(``hreq``: the HTTP request, whose ``authorization`` and ``peer_cn`` the v2 auth
checks read); answers are JSON written by Go's json.Encoder (so they end with a
newline), errors are httptypes.HTTPError bodies ``{"message": ...}``. Member
changes need the root role once v2 auth is on (fastkv/api/v2_auth.py).
"""
from __future__ import annotations

import orjson

from fastkv.errors import (ErrMemberExist, ErrMemberNotEnoughStarted, ErrMemberNotFound,
                           ErrPeerURLExist, ErrTimeout, ErrTimeoutDueToLeaderFail,
                           ErrUnhealthy, EtcdError)

_JSON = (b"Content-Type", b"application/json")
_TEXT = [(b"Content-Type", b"text/plain; charset=utf-8"), (b"X-Content-Type-Options", b"nosniff")]
_NOT_FOUND = (404, _TEXT, b"404 page not found\n")


def _json(status: int, obj, extra=(), newline: bool = True) -> tuple:
    """Go's json.Encoder ends with a newline; a handler writing json.Marshal's bytes not."""
    return status, [_JSON, *extra], orjson.dumps(obj) + (b"\n" if newline else b"")


def _http_error(status: int, message: str, extra=()) -> tuple:
    """httptypes.HTTPError.WriteTo: json.Marshal's bytes, no newline."""
    return _json(status, {"message": message}, extra, newline=False)


def _not_allowed(*methods: str) -> tuple:
    return (405, [(b"Allow", ",".join(methods).encode()), *_TEXT], b"Method Not Allowed\n")


def _server_error(err: Exception, extra=()) -> tuple:
    """etcdhttp.WriteError for errors that are not HTTP errors."""
    if isinstance(err, (ErrTimeoutDueToLeaderFail, ErrMemberNotEnoughStarted, ErrUnhealthy,
                        ErrTimeout)):
        return _http_error(503, err.message, extra)
    return _http_error(500, "Internal Server Error", extra)


def _cluster_header(server):
    return ((b"X-Etcd-Cluster-Id", f"{server.cluster_id:x}".encode()),)


def _member_v2(m: dict) -> dict:
    return {"id": f"{m['ID']:x}", "name": m.get("name", ""), "peerURLs": m.get("peerURLs", []),
            "clientURLs": m.get("clientURLs", [])}


def _parse_id(path: str, prefix: str):
    rest = path[len(prefix):]
    try:
        if not rest or "/" in rest:
            raise ValueError
        return int(rest, 16)
    except ValueError:
        return None


def _peer_urls(body: bytes):
    try:
        obj = orjson.loads(body)
        urls = obj["peerURLs"]
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise ValueError
        return urls
    except Exception:
        return None


def _bad_content_type(ctype: bytes, hdr):
    """etcd's unmarshalRequest: member bodies must be declared JSON."""
    c = ctype.decode("latin-1")
    if ";" in c:
        c = c[:c.index(";")].strip().lower()
    if c != "application/json":
        return _http_error(415, f"Bad Content-Type {c}, accept application/json", hdr)
    return None


async def members(server, method: bytes, url: bytes, body: bytes,
                  ctype: bytes = b"", hreq=None):
    if not server.cfg.enable_v2:
        return _NOT_FOUND
    if method not in (b"GET", b"POST", b"DELETE", b"PUT"):
        return _not_allowed("GET", "POST", "DELETE", "PUT")
    if method != b"GET":   # etcd's hasWriteRootAccess: changes need root once v2 auth is on
        from fastkv.api.v2_auth import has_root_access, write_no_auth
        if not await has_root_access(server, hreq):
            return write_no_auth()
    hdr = _cluster_header(server)
    path = url.split(b"?", 1)[0].decode("latin-1")
    sub = path[len("/v2/members"):].lstrip("/")
    try:
        if method == b"GET":
            if sub == "":
                ms = (await server.member_list({}))["members"]
                return _json(200, {"members": [_member_v2(m) for m in ms]}, hdr)
            if sub == "leader":
                lead = server.core.lead
                m = server.membership.get(lead) if lead else None
                if m is None:
                    return _http_error(503, "During election", hdr)
                return _json(200, _member_v2(m.v3()), hdr)
            return _http_error(404, "Not found", hdr)
        if method == b"POST":
            bad = _bad_content_type(ctype, hdr)
            if bad:
                return bad
            urls = _peer_urls(body)
            if urls is None:
                return _http_error(400, "Invalid JSON", hdr)
            try:
                resp = await server.member_add({"peerURLs": urls})
            except (ErrMemberExist, ErrPeerURLExist) as err:
                return _http_error(409, _membership_text(err), hdr)
            return _json(201, _member_v2(resp["member"]), hdr)
        if sub == "":
            return 405, _TEXT + list(hdr), b"Method Not Allowed\n"
        mid = _parse_id(path, "/v2/members/")
        if mid is None:
            return _http_error(404, f"No such member: {sub}", hdr)
        if method == b"DELETE":
            from fastkv.membership import ErrIDRemoved
            try:
                await server.member_remove({"ID": mid})
            except ErrIDRemoved:
                return _http_error(410, f"Member permanently removed: {mid:x}", hdr)
            except ErrMemberNotFound:
                return _http_error(404, f"No such member: {mid:x}", hdr)
            return 204, list(hdr), b""
        bad = _bad_content_type(ctype, hdr)
        if bad:
            return bad
        urls = _peer_urls(body)
        if urls is None:
            return _http_error(400, "Invalid JSON", hdr)
        try:
            await server.member_update({"ID": mid, "peerURLs": urls})
        except ErrPeerURLExist as err:
            return _http_error(409, _membership_text(err), hdr)
        except ErrMemberNotFound:
            return _http_error(404, f"No such member: {mid:x}", hdr)
        return 204, list(hdr), b""
    except EtcdError as err:
        return _server_error(err, hdr)


def _membership_text(err: EtcdError) -> str:
    """v2 shows membership's own error texts."""
    if isinstance(err, ErrMemberExist):
        return "membership: ID exists"
    if isinstance(err, ErrPeerURLExist):
        return "membership: peerURL exists"
    return err.message


async def machines(server, method: bytes, url: bytes, body: bytes,
                  ctype: bytes = b"", hreq=None):
    if not server.cfg.enable_v2:
        return _NOT_FOUND
    if method not in (b"GET", b"HEAD"):
        return _not_allowed("GET", "HEAD")
    urls = [u for m in server.membership.sorted_members() for u in m.client_urls]
    return 200, [(b"~Content-Type", b"text/plain; charset=utf-8")], ", ".join(urls).encode()


async def stats_self(server, method: bytes, url: bytes, body: bytes,
                  ctype: bytes = b"", hreq=None):
    if not server.cfg.enable_v2:
        return _NOT_FOUND
    if method != b"GET":
        return _not_allowed("GET")
    return _json(200, server.self_stats(), newline=False)


async def stats_store(server, method: bytes, url: bytes, body: bytes,
                      ctype: bytes = b"", hreq=None):
    """The v2 store's member-local counters (getsSuccess, setsFail, ..., watchers)."""
    if not server.cfg.enable_v2:
        return _NOT_FOUND
    if method != b"GET":
        return _not_allowed("GET")
    return _json(200, server.v2.stats(), newline=False)


async def stats_leader(server, method: bytes, url: bytes, body: bytes,
                  ctype: bytes = b"", hreq=None):
    if not server.cfg.enable_v2:
        return _NOT_FOUND
    if method != b"GET":
        return _not_allowed("GET")
    stats = server.leader_stats()
    if stats is None:
        return _http_error(403, "not current leader")
    return _json(200, stats, newline=False)


def _keys_handler():
    """v2_keys.handle, imported on first use (v2_keys imports this module)."""
    global _keys
    if _keys is None:
        from fastkv.api.v2_keys import handle as _keys
    return _keys


_keys = None


def resolve(path: str):
    if path.startswith("/v2/keys/") or path == "/v2/keys":
        return _keys_handler()
    if path == "/v2/members" or path.startswith("/v2/members/"):
        return members
    if path == "/v2/machines":
        return machines
    if path == "/v2/stats/self":
        return stats_self
    if path == "/v2/stats/leader":
        return stats_leader
    if path == "/v2/stats/store":
        return stats_store
    if path.startswith("/v2/auth/"):
        from fastkv.api.v2_auth import resolve as resolve_auth
        return resolve_auth(path)
    return None
