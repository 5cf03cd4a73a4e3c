"""fastkv.v2auth and the v2 access checks without a server: Go's JSON rules for users
and roles, the grant/revoke merges, etcd's glob matching, and who a request is
(basic auth, the client certificate's CN with --client-cert-auth, else the guest)."""
from __future__ import annotations

import asyncio
import base64
import json
from types import SimpleNamespace

import pytest

from fastkv.api import v2_auth
from fastkv.v2auth import V2AuthStore, model
from fastkv.v2auth.model import AuthError, GoJSONError
from fastkv.v2auth.store import check_password, hash_password
from fastkv.v2store import V2Store
from fastkv.v2store.apply import NAMESPACES


# ---- Go's JSON ---------------------------------------------------------------------------

def test_user_decoding_follows_encoding_json():
    u = model.user_from_json(model.decode_first(
        b' {"USER":"a","Password":"p","roles":["x",null],"grant":null,"extra":{"k":[1]}} junk'))
    assert u == {"user": "a", "password": "p", "roles": ["x", ""], "grant": None, "revoke": None}
    # the last duplicate wins; null leaves a string alone but makes a slice nil
    u = model.user_from_json(model.unmarshal('{"user":"a","user":null,"roles":[],"roles":null}'))
    assert u["user"] == "a" and u["roles"] is None
    assert model.user_from_json(model.unmarshal("null")) == model.new_user()
    for bad in (b"", b"{", b"[1]", b'{"user":1}', b'{"roles":"x"}', b'{"roles":[1]}', b"NaN"):
        with pytest.raises(GoJSONError):
            model.user_from_json(model.decode_first(bad))


def test_role_decoding_keeps_nil_and_empty_apart():
    r = model.role_from_json(model.unmarshal(
        '{"role":"r","permissions":{"kv":{"read":[]}},"grant":{"kv":{"write":["/a"]}}}'))
    assert r == {"role": "r", "permissions": {"kv": {"read": [], "write": None}},
                 "grant": {"kv": {"read": None, "write": ["/a"]}}, "revoke": None}
    # two objects for one pointer field fill the same Permissions
    r = model.role_from_json(model.unmarshal(
        '{"role":"r","grant":{"kv":{"read":["/x"]}},"grant":{"kv":{"write":["/y"]}}}'))
    assert r["grant"] == {"kv": {"read": ["/x"], "write": ["/y"]}}
    assert model.role_json(r) == ('{"role":"r","permissions":{"kv":{"read":null,"write":null}},'
                                  '"grant":{"kv":{"read":["/x"],"write":["/y"]}}}')
    assert model.permissions_empty(model.new_permissions([], None))
    assert not model.permissions_empty(model.new_permissions(None, ["/a"]))


def test_encoding_is_gos():
    u = {"user": "a<b", "password": "", "roles": None, "grant": [], "revoke": None}
    assert model.user_json(u) == '{"user":"a\\u003cb","roles":null}'
    u = {"user": "a", "password": "h", "roles": [], "grant": ["g"], "revoke": ["r"]}
    assert model.user_json(u) == '{"user":"a","password":"h","roles":[],"grant":["g"],"revoke":["r"]}'


def test_unmarshal_errors_are_gos_texts():
    with pytest.raises(GoJSONError, match="invalid character 'p' after top-level value"):
        model.unmarshal(b"404 page not found\n")
    with pytest.raises(GoJSONError, match="unexpected end of JSON input"):
        model.unmarshal(b"")


def test_messages_formatted_as_go_formats_them():
    assert model.go_format_without_args("role a%d and 100%% x") == "role a%!d(MISSING) and 100% x"
    assert model.go_format_without_args("trailing %") == "trailing %!(NOVERB)"


# ---- merges ------------------------------------------------------------------------------

def test_user_role_merge():
    old = {"user": "u", "password": "h", "roles": ["b", "a"], "grant": None, "revoke": None}
    assert model.merge_user_roles(old, dict(model.new_user("u"), grant=["c"], revoke=["a"])) == \
        ["b", "c"]
    assert model.merge_user_roles(dict(old, roles=None), model.new_user("u")) == []
    with pytest.raises(AuthError) as e:
        model.merge_user_roles(old, dict(model.new_user("u"), grant=["x", "x"]))
    assert (e.value.status, e.value.message) == (409, "auth: Granting duplicate role x for user u")
    with pytest.raises(AuthError) as e:
        model.merge_user_roles(old, dict(model.new_user("u"), revoke=["z%s"]))
    assert e.value.message == "auth: Revoking ungranted role z%!s(MISSING) for user u"


def test_role_merge():
    old = model.new_role("r")
    new = model.merge_role(old, dict(model.new_role("r"), revoke=model.new_permissions(["/n"])))
    assert new["permissions"] == {"kv": {"read": [], "write": []}} and new != old
    grant = dict(model.new_role("r"), grant=model.new_permissions(["/b", "/a"], ["/w"]))
    new = model.merge_role(new, grant)
    assert new["permissions"] == {"kv": {"read": ["/a", "/b"], "write": ["/w"]}}
    with pytest.raises(AuthError, match="Granting duplicate write permission /w"):
        model.merge_role(new, dict(model.new_role("r"), grant=model.new_permissions(None, ["/w"])))
    # no grant and no revoke: the permissions as they were, nil slices included
    assert model.merge_role(old, model.new_role("r")) == old


# ---- access -------------------------------------------------------------------------------

def test_globs_and_recursive_access():
    role = dict(model.new_role("r"), permissions=model.new_permissions(
        ["/foo/*", "/exact", ""], ["/w*"]))
    assert model.has_key_access(role, "/foo/a", False)
    assert not model.has_key_access(role, "/foo", False)
    assert model.has_key_access(role, "/exact", False)
    assert not model.has_key_access(role, "/exact/x", False)
    assert not model.has_key_access(role, "", False)      # an empty pattern matches nothing
    assert model.has_key_access(role, "/wx", True) and not model.has_key_access(role, "/foo/a", True)
    assert model.has_recursive_access(role, "/foo/a", False)
    assert not model.has_recursive_access(role, "/exact", False)   # only globs cover a subtree
    root = model.root_role()
    assert model.has_key_access(root, "/anything", True)
    assert model.has_recursive_access(root, "/", True)


def test_basic_auth_header_parsing():
    def b64(s: bytes) -> bytes:
        return base64.b64encode(s)
    assert v2_auth.basic_auth(b"Basic " + b64(b"u:p:q")) == ("u", b"p:q")
    assert v2_auth.basic_auth(b"basic " + b64(b"u:")) == ("u", b"")
    assert v2_auth.basic_auth(b"Basic " + b64(b"nocolon")) is None
    assert v2_auth.basic_auth(b"Basic !!!") is None
    assert v2_auth.basic_auth(b"Bearer x") is None
    assert v2_auth.basic_auth(b"") is None


def test_passwords_are_bcrypt_as_go_writes_them():
    h = hash_password(b"secret")
    assert h.startswith("$2a$10$")
    assert check_password(h, b"secret") and not check_password(h, b"Secret")
    long = b"x" * 72
    assert check_password(hash_password(long + b"ignored"), long + b"other")  # Go reads 72 bytes
    assert not check_password("not a hash", b"secret")


# ---- who is asking -----------------------------------------------------------------------

class _Server:
    """What the access checks read: the v2 store, the config, the auth store."""

    def __init__(self, client_cert_auth: bool):
        self.v2 = V2Store(NAMESPACES)
        self.cfg = SimpleNamespace(client_cert_auth=client_cert_auth, enable_v2=True)
        self.v2auth = V2AuthStore(self)
        now = 0
        for d in ("/2", "/2/users", "/2/roles"):
            self.v2.create(d, dir=True, now=now)
        self.v2.create("/2/enabled", "true", now=now)
        pw = hash_password(b"pw")
        for name, roles in (("root", ["root"]), ("alice", ["app"]), ("bob", None)):
            self.v2.create(f"/2/users/{name}", json.dumps(
                {"user": name, "password": pw, "roles": roles}), now=now)
        self.v2.create("/2/roles/app", model.role_json(dict(
            model.new_role("app"), permissions=model.new_permissions(["/app/*"], ["/app/*"]))),
            now=now)
        self.v2.create("/2/roles/guest", model.role_json(dict(
            model.new_role("guest"), permissions=model.new_permissions(["/pub"], None))), now=now)


def _req(authorization: bytes = b"", peer_cn=None):
    return SimpleNamespace(authorization=authorization, peer_cn=peer_cn)


def _access(server, hreq, method, key, recursive=False):
    return asyncio.run(v2_auth.has_key_access_enabled(server, hreq, method, key, recursive))


def _basic(user: str, pw: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{pw}".encode())


def test_who_a_request_is():
    srv = _Server(client_cert_auth=True)
    assert srv.v2auth.enabled()
    # basic auth
    assert _access(srv, _req(_basic("alice", "pw")), "PUT", "/app/x")
    assert not _access(srv, _req(_basic("alice", "pw")), "PUT", "/other")
    assert not _access(srv, _req(_basic("alice", "bad")), "GET", "/pub")   # no guest fallback
    # the client certificate's CN, when no Authorization header came
    assert _access(srv, _req(peer_cn="alice"), "DELETE", "/app/x")
    assert not _access(srv, _req(peer_cn="alice"), "GET", "/pub")
    # an unknown CN, or no certificate: the guest role
    assert _access(srv, _req(peer_cn="nobody"), "GET", "/pub")
    assert _access(srv, _req(), "GET", "/pub", recursive=True)   # guests match keys plainly
    assert not _access(srv, _req(), "PUT", "/pub")
    # a user without roles may do nothing
    assert not _access(srv, _req(_basic("bob", "pw")), "GET", "/pub")
    # root: by basic auth, or by certificate
    assert asyncio.run(v2_auth.has_root_access(srv, _req(peer_cn="root")))
    assert asyncio.run(v2_auth.has_root_access(srv, _req(_basic("root", "pw"))))
    assert not asyncio.run(v2_auth.has_root_access(srv, _req(peer_cn="alice")))
    assert not asyncio.run(v2_auth.has_root_access(srv, _req(_basic("root", "x"), "root")))
    assert asyncio.run(v2_auth.has_write_root_access(srv, b"GET", _req()))
    assert not asyncio.run(v2_auth.has_write_root_access(srv, b"POST", _req()))


def test_certificates_count_only_with_client_cert_auth():
    srv = _Server(client_cert_auth=False)
    assert not _access(srv, _req(peer_cn="alice"), "PUT", "/app/x")     # the guest's rights
    assert not asyncio.run(v2_auth.has_root_access(srv, _req(peer_cn="root")))


def test_a_request_object_without_the_attributes():
    """Before the TLS work lands the request may not carry peer_cn."""
    srv = _Server(client_cert_auth=True)
    assert _access(srv, SimpleNamespace(authorization=b""), "GET", "/pub")
    assert _access(srv, None, "GET", "/pub")
