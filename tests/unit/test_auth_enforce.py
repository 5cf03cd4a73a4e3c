"""Auth enforcement without a server: the checks of each request kind (fastkv.auth.enforce),
the applier's revision-aware checks of log entries, JWT tokens and --auth-token parsing,
and where a request's credentials come from (fastkv.auth.identity)."""
from __future__ import annotations

import asyncio
import time
import types

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fastkv import requests
from fastkv.apply import Applier
from fastkv.auth import READ, READWRITE, WRITE, AuthStore, SimpleTokens, hash_password
from fastkv.auth import enforce
from fastkv.auth.identity import Credentials, grpc_credentials, http_credentials, identify
from fastkv.auth.jwt_tokens import (AuthOptionsError, JWTTokens, NopTokens, parse_go_duration,
                                    token_provider)
from fastkv.errors import (ErrAuthOldRevision, ErrInvalidAuthToken, ErrPermissionDenied,
                           ErrUserEmpty, ErrUserNotFound, EtcdError, GrpcCode)
from fastkv.membership import Membership
from fastkv.mvcc.lease import Lessor
from fastkv.mvcc.store import KVStore
from fastkv.mvcc.watch import WatchHub
from fastkv.storage.wal import Entry

PW = hash_password("pw", b"0123456789abcdef", 4)


def perm(t, key, end=b""):
    p = {"permType": t, "key": key}
    if end:
        p["range_end"] = end
    return p


def build_store(tokens=None) -> AuthStore:
    """root (role root); alice: read /foo/ prefix, write /foo/w; bob: readwrite [a, c)."""
    s = AuthStore(tokens)
    for name in ("root", "alice", "bob"):
        s.user_add({"name": name, "hashedPassword": PW})
    s.user_grant_role({"user": "root", "role": "root"})
    s.role_add({"name": "reader"})
    s.role_grant_permission({"name": "reader", "perm": perm(READ, b"/foo/", b"/foo0")})
    s.role_grant_permission({"name": "reader", "perm": perm(WRITE, b"/foo/w")})
    s.user_grant_role({"user": "alice", "role": "reader"})
    s.role_add({"name": "rw"})
    s.role_grant_permission({"name": "rw", "perm": perm(READWRITE, b"a", b"c")})
    s.user_grant_role({"user": "bob", "role": "rw"})
    s.auth_enable()
    return s


def as_user(s: AuthStore, user: str):
    return (user, s.revision)


def raises(err_cls, fn, *args):
    with pytest.raises(err_cls):
        fn(*args)


# ---------------------------------------------------------------- request checks

def test_range_put_delete_checks():
    s = build_store()
    lessor = Lessor()
    alice, bob, root = as_user(s, "alice"), as_user(s, "bob"), as_user(s, "root")
    enforce.check_range(s, alice, b"/foo/a")
    enforce.check_range(s, alice, b"/foo/", b"/foo0")
    raises(ErrPermissionDenied, enforce.check_range, s, alice, b"/foo/", b"/fop")
    raises(ErrPermissionDenied, enforce.check_range, s, alice, b"/bar")
    raises(ErrUserEmpty, enforce.check_range, s, None, b"/foo/a")
    enforce.check_range(s, root, b"\0", b"\0")   # root: everything
    enforce.check_put(s, lessor, alice, {"key": b"/foo/w"})
    raises(ErrPermissionDenied, enforce.check_put, s, lessor, alice, {"key": b"/foo/a"})
    # prev_kv needs read too: bob may write and read [a, c); alice only writes /foo/w
    enforce.check_put(s, lessor, alice, {"key": b"/foo/w", "prev_kv": True})  # /foo/w readable
    enforce.check_put(s, lessor, bob, {"key": b"b", "prev_kv": True})
    enforce.check_delete_range(s, bob, {"key": b"a", "range_end": b"c", "prev_kv": True})
    raises(ErrPermissionDenied, enforce.check_delete_range, s, bob,
           {"key": b"a", "range_end": b"d"})
    raises(ErrPermissionDenied, enforce.check_delete_range, s, alice,
           {"key": b"/foo/", "range_end": b"/foo0"})
    raises(ErrUserEmpty, enforce.check_delete_range, s, None, {"key": b"a"})


def test_put_needs_write_on_every_key_of_its_lease():
    s = build_store()
    lessor = Lessor()
    lessor.grant(5, 60)
    lessor.attach(5, b"b")
    bob, alice = as_user(s, "bob"), as_user(s, "alice")
    enforce.check_put(s, lessor, bob, {"key": b"a", "lease": 5})
    lessor.attach(5, b"/foo/a")     # a key bob may not write
    raises(ErrPermissionDenied, enforce.check_put, s, lessor, bob, {"key": b"a", "lease": 5})
    raises(ErrPermissionDenied, enforce.check_lease_revoke, s, lessor, bob, 5)
    raises(ErrPermissionDenied, enforce.check_lease_revoke, s, lessor, alice, 5)
    enforce.check_lease_revoke(s, lessor, as_user(s, "root"), 5)
    lessor.grant(6, 60)              # no keys: anyone may revoke it (etcd)
    enforce.check_lease_revoke(s, lessor, None, 6)
    enforce.check_lease_revoke(s, lessor, None, 999)   # unknown: applying says not found


def test_txn_checks_compares_each_op_and_nested_txns():
    s = build_store()
    bob, alice = as_user(s, "bob"), as_user(s, "alice")
    ok = {"compare": [{"key": b"a", "target": 0}],
          "success": [{"request_put": {"key": b"b"}}],
          "failure": [{"request_range": {"key": b"a", "range_end": b"c"}},
                      {"request_delete_range": {"key": b"b", "prev_kv": True}}]}
    enforce.check_txn(s, bob, ok)
    bad_compare = dict(ok, compare=[{"key": b"x", "target": 0}])
    raises(ErrPermissionDenied, enforce.check_txn, s, bob, bad_compare)
    bad_failure = dict(ok, failure=[{"request_put": {"key": b"z"}}])   # never run, still checked
    raises(ErrPermissionDenied, enforce.check_txn, s, bob, bad_failure)
    nested = dict(ok, success=[{"request_txn": {"success": [{"request_put": {"key": b"z"}}]}}])
    raises(ErrPermissionDenied, enforce.check_txn, s, bob, nested)
    nested_cmp = dict(ok, success=[{"request_txn": {"compare": [{"key": b"z"}]}}])
    raises(ErrPermissionDenied, enforce.check_txn, s, bob, nested_cmp)
    # a write-only key: a txn put is write only (etcd does not ask read for its prev_kv)
    enforce.check_txn(s, alice, {"success": [{"request_put": {"key": b"/foo/w", "prev_kv": True}}]})
    raises(ErrPermissionDenied, enforce.check_txn, s, alice,
           {"success": [{"request_delete_range": {"key": b"/foo/a"}}]})


def test_admin_user_get_role_get_and_raw_maintenance_errors():
    s = build_store()
    alice, root = as_user(s, "alice"), as_user(s, "root")
    enforce.check_admin(s, root)
    raises(ErrPermissionDenied, enforce.check_admin, s, alice)
    raises(ErrUserEmpty, enforce.check_admin, s, None)
    raises(ErrUserNotFound, enforce.check_admin, s, ("ghost", s.revision))
    enforce.check_user_get(s, alice, "alice")
    raises(ErrPermissionDenied, enforce.check_user_get, s, alice, "bob")
    enforce.check_role_get(s, alice, "reader")
    raises(ErrPermissionDenied, enforce.check_role_get, s, alice, "rw")
    for who, text in ((alice, "auth: permission denied"), (None, "auth: user name is empty"),
                      (("ghost", 1), "auth: user not found")):
        with pytest.raises(EtcdError) as ei:
            enforce.check_admin_raw(s, who)
        assert (ei.value.code, ei.value.message) == (GrpcCode.UNKNOWN, text)
    assert enforce.raw_auth_error(ErrInvalidAuthToken()).message == "auth: invalid auth token"


def test_watch_create_checks_and_cancel_reasons():
    s = build_store()
    alice = as_user(s, "alice")
    enforce.check_watch_create(s, alice, {"key": b"/foo/x"})
    enforce.check_watch_create(s, alice, {"key": b"/foo/", "range_end": b"/foo0"})
    # etcd checks a from-key watch as its key alone
    enforce.check_watch_create(s, alice, {"key": b"/foo/x", "range_end": b"\0"})
    raises(ErrPermissionDenied, enforce.check_watch_create, s, alice, {"key": b"/bar"})
    raises(ErrPermissionDenied, enforce.check_watch_create, s, alice, {})   # key "\0"
    assert enforce.watch_refusal(ErrPermissionDenied()) == \
        "rpc error: code = PermissionDenied desc = etcdserver: permission denied"
    assert enforce.watch_refusal(ErrUserEmpty()) == \
        "rpc error: code = InvalidArgument desc = etcdserver: user name is empty"
    assert enforce.watch_refusal(ErrInvalidAuthToken()) == \
        "rpc error: code = Unauthenticated desc = etcdserver: invalid auth token"
    assert enforce.watch_refusal(ErrAuthOldRevision()) == \
        "rpc error: code = InvalidArgument desc = etcdserver: revision of auth store is old"
    assert enforce.watch_refusal(ErrUserNotFound()) == \
        "rpc error: code = PermissionDenied desc = etcdserver: permission denied"


# ---------------------------------------------------------------- the applier

def make_applier():
    lessor = Lessor()
    store = KVStore(lessor)
    hub = WatchHub(store, lambda rev=None: {})
    return Applier(store, lessor, hub, Membership(), auth=build_store()), store


def entry(index, kind, payload, auth=None):
    return Entry(2, index, 0, requests.encode(index, kind, payload, auth))


def test_the_log_carries_the_identity_and_old_entries_decode():
    data = requests.encode(7, requests.PUT, {"key": b"k"}, ("alice", 4))
    assert requests.decode_with_auth(data) == (7, requests.PUT, {"key": b"k"}, ("alice", 4))
    assert requests.decode(data) == (7, requests.PUT, {"key": b"k"})
    old = requests.encode(8, requests.PUT, {"key": b"k"})
    assert requests.decode_with_auth(old) == (8, requests.PUT, {"key": b"k"}, None)


def test_applying_checks_the_identity_against_the_store_at_that_entry():
    ap, store = make_applier()
    auth = ap.auth
    rev = auth.revision
    _id, res = ap.apply(entry(1, requests.PUT, {"key": b"b", "value": b"1"}, ("bob", rev)))
    assert not isinstance(res, Exception) and store.rev == 2
    _id, res = ap.apply(entry(2, requests.PUT, {"key": b"x", "value": b"1"}, ("bob", rev)))
    assert isinstance(res, ErrPermissionDenied) and store.rev == 2
    _id, res = ap.apply(entry(3, requests.PUT, {"key": b"b", "value": b"1"}))
    assert isinstance(res, ErrUserEmpty) and store.rev == 2
    # the auth store changes (a grant): a request authorised before it is refused, even
    # though the user may still (here: even more) do it, and changes nothing
    ap.apply(entry(4, requests.AUTH, {"op": "role_grant_permission", "req": {
        "name": "rw", "perm": perm(READWRITE, b"x")}}, ("root", rev)))
    assert auth.revision == rev + 1
    _id, res = ap.apply(entry(5, requests.PUT, {"key": b"x", "value": b"2"}, ("bob", rev)))
    assert isinstance(res, ErrAuthOldRevision) and store.rev == 2
    _id, res = ap.apply(entry(6, requests.PUT, {"key": b"x", "value": b"2"}, ("bob", rev + 1)))
    assert not isinstance(res, Exception) and store.rev == 3
    # admin ops: role root, checked at apply; no revision check (etcd's IsAdminPermitted)
    _id, res = ap.apply(entry(7, requests.AUTH, {"op": "role_add", "req": {"name": "x"}},
                              ("bob", auth.revision)))
    assert isinstance(res, ErrPermissionDenied)
    _id, res = ap.apply(entry(8, requests.AUTH, {"op": "role_add", "req": {"name": "x"}},
                              ("root", 1)))
    assert res == {} and "x" in auth.role_list()["roles"]
    # txn and delete as in etcd's authApplierV3
    _id, res = ap.apply(entry(9, requests.TXN, {"success": [{"request_put": {"key": b"/foo/a"}}]},
                              ("bob", auth.revision)))
    assert isinstance(res, ErrPermissionDenied)
    _id, res = ap.apply(entry(10, requests.DELETE_RANGE, {"key": b"a", "range_end": b"c",
                                                          "prev_kv": True}, ("bob", auth.revision)))
    assert res["deleted"] == 1


def test_leases_at_apply_time():
    ap, store = make_applier()
    rev = ap.auth.revision
    ap.apply(entry(1, requests.LEASE_GRANT, {"ID": 9, "TTL": 60}))   # etcd: no check
    _id, res = ap.apply(entry(2, requests.PUT, {"key": b"/foo/w", "lease": 9}, ("alice", rev)))
    assert not isinstance(res, Exception)
    # bob may not write /foo/w: neither revoke the lease nor attach it to his own key
    _id, res = ap.apply(entry(3, requests.PUT, {"key": b"b", "lease": 9}, ("bob", rev)))
    assert isinstance(res, ErrPermissionDenied)
    _id, res = ap.apply(entry(4, requests.LEASE_REVOKE, {"ID": 9}, ("bob", rev)))
    assert isinstance(res, ErrPermissionDenied) and ap.lessor.lookup(9) is not None
    # the leader's own expiry is not a client's request
    _id, res = ap.apply(entry(5, requests.LEASE_REVOKE, {"ID": 9, "expiry_term": 2}))
    assert not isinstance(res, Exception) and ap.lessor.lookup(9) is None


def test_nothing_is_checked_while_auth_is_disabled():
    ap, store = make_applier()
    ap.auth.auth_disable()
    _id, res = ap.apply(entry(1, requests.PUT, {"key": b"x", "value": b"1"}))
    assert not isinstance(res, Exception)


# ---------------------------------------------------------------- JWT

@pytest.fixture(scope="module")
def rsa_keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("jwt")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    priv = d / "key.pem"
    pub = d / "pub.pem"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    other = rsa.generate_private_key(public_exponent=3, key_size=2048)
    other_pub = d / "other.pem"
    other_pub.write_bytes(other.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    eck = ec.generate_private_key(ec.SECP256R1())
    ecpriv = d / "ec.pem"
    ecpriv.write_bytes(eck.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
    return types.SimpleNamespace(priv=str(priv), pub=str(pub), other_pub=str(other_pub),
                                 ec=str(ecpriv), key=key)


def test_jwt_tokens_carry_user_revision_and_expiry(rsa_keys):
    t = token_provider(f"jwt,pub-key={rsa_keys.pub},priv-key={rsa_keys.priv},sign-method=RS256,"
                       f"ttl=2m", 300)
    assert isinstance(t, JWTTokens) and t.ttl == 120 and not t.verify_only
    tok = t.assign("alice", "", 12, 7)
    claims = pyjwt.decode(tok, rsa_keys.key.public_key(), algorithms=["RS256"])
    assert claims["username"] == "alice" and claims["revision"] == 7
    assert abs(claims["exp"] - (time.time() + 120)) < 5
    assert t.identity(tok, 99) == ("alice", 7)      # the token's revision, not the store's
    assert t.index_of(tok) == 0 and t.gen_prefix() == ""
    assert t.identity(tok[:-3] + "abc", 99) is None  # a bad signature
    assert t.identity("junk", 99) is None
    # another algorithm, an expired token, a token without the claims: refused
    hs = pyjwt.encode({"username": "a", "revision": 1}, "k" * 32, algorithm="HS256")
    assert t.identity(hs, 1) is None
    key = rsa_keys.key
    expired = pyjwt.encode({"username": "a", "revision": 1, "exp": int(time.time()) - 10}, key,
                           algorithm="RS256")
    assert t.identity(expired, 1) is None
    assert t.identity(pyjwt.encode({"revision": 1}, key, algorithm="RS256"), 1) is None


def test_jwt_options_as_etcd(rsa_keys):
    verify = token_provider(f"jwt,pub-key={rsa_keys.pub},sign-method=RS256", 300)
    assert verify.verify_only and verify.ttl == 300   # default 5m
    signer = token_provider(f"jwt,priv-key={rsa_keys.priv},sign-method=PS384", 300)
    tok = signer.assign("bob", "", 1, 3)
    assert token_provider(f"jwt,pub-key={rsa_keys.pub},sign-method=PS384", 300).identity(tok, 0) \
        == ("bob", 3)
    from fastkv.auth.tokens import TokenAssignError
    with pytest.raises(TokenAssignError, match="verify-only"):
        verify.assign("bob", "", 1, 3)
    hs = token_provider(f"jwt,priv-key={rsa_keys.pub},sign-method=HS256", 300)   # any bytes
    assert hs.identity(hs.assign("c", "", 1, 2), 0) == ("c", 2)
    es = token_provider(f"jwt,priv-key={rsa_keys.ec},sign-method=ES256", 300)
    assert es.identity(es.assign("d", "", 1, 2), 0) == ("d", 2)
    for bad, text in [
        ("bogus", "auth: invalid auth options"),
        ("jwt,sign-method", "auth: invalid auth options"),
        ("jwt,a=1=2,sign-method=RS256", "auth: invalid auth options"),
        ("jwt,ttl=1m,ttl=2m,sign-method=RS256", "auth: invalid auth options"),
        (f"jwt,pub-key={rsa_keys.pub},sign-method=XX256", "invalid auth signature method"),
        (f"jwt,pub-key={rsa_keys.pub},sign-method=RS256,ttl=5x", "auth: invalid auth options"),
        ("jwt,sign-method=RS256", "auth: missing key data"),
        ("jwt,sign-method=HS256", "auth: missing key data"),
        (f"jwt,priv-key={rsa_keys.ec},sign-method=RS256", "RSA"),
        (f"jwt,pub-key={rsa_keys.other_pub},priv-key={rsa_keys.priv},sign-method=RS256",
         "auth: public and private keys don't match"),
        ("jwt,priv-key=/nonexistent/key,sign-method=RS256", "/nonexistent/key"),
    ]:
        with pytest.raises(AuthOptionsError, match=text):
            token_provider(bad, 300)
    assert isinstance(token_provider("simple", 30), SimpleTokens)
    assert token_provider("simple", 30).ttl == 30
    nop = token_provider("", 300)
    assert isinstance(nop, NopTokens) and nop.identity("x", 1) is None
    assert parse_go_duration("1h30m") == 5400 and parse_go_duration("1.5s") == 1.5
    assert parse_go_duration("300ms") == 0.3 and parse_go_duration("0") == 0
    for bad in ("", "5", "5x", "m"):
        with pytest.raises(ValueError):
            parse_go_duration(bad)


def test_hmac_tokens_are_standard_jwts(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"s" * 64)
    t = token_provider(f"jwt,priv-key={secret},sign-method=HS384,ttl=1m", 300)
    tok = t.assign("eve", "", 1, 4)
    claims = pyjwt.decode(tok, b"s" * 64, algorithms=["HS384"])
    assert (claims["username"], claims["revision"]) == ("eve", 4)
    other = pyjwt.encode({"username": "eve", "revision": 5, "exp": int(time.time()) + 60},
                         b"s" * 64, algorithm="HS384")
    assert t.identity(other, 0) == ("eve", 5)
    assert t.identity(pyjwt.encode({"username": "eve", "revision": 5}, b"s" * 64,
                                   algorithm="HS256"), 0) is None        # another method
    expired = pyjwt.encode({"username": "eve", "revision": 5, "exp": int(time.time()) - 5},
                           b"s" * 64, algorithm="HS384")
    assert t.identity(expired, 0) is None
    assert t.identity(tok[:-2] + ("AA" if tok[-2:] != "AA" else "BB"), 0) is None


def test_the_store_signs_jwt_at_the_current_revision(rsa_keys):
    t = token_provider(f"jwt,priv-key={rsa_keys.priv},sign-method=RS256", 300)
    s = build_store(t)
    resp = s.authenticate({"name": "alice", "simple_token": ""}, 40)
    assert t.identity(resp["token"], 0) == ("alice", s.revision)
    verify = token_provider(f"jwt,pub-key={rsa_keys.pub},sign-method=RS256", 300)
    s2 = build_store(verify)
    with pytest.raises(EtcdError) as ei:   # a verify-only member cannot issue tokens
        s2.authenticate({"name": "alice", "simple_token": ""}, 40)
    assert ei.value.message == "auth: token signing attempted with verify-only key"
    assert ei.value.code == GrpcCode.UNKNOWN
    with pytest.raises(EtcdError) as ei:   # --auth-token "": etcd's nop provider issues nothing
        build_store(NopTokens()).authenticate({"name": "alice", "simple_token": ""}, 41)
    assert ei.value.message == "etcdserver: authentication failed, invalid user ID or password"


def test_config_checks_auth_token():
    from fastkv.config import ConfigError, parse
    base = ["--name", "a", "--initial-cluster", "a=http://127.0.0.1:2380"]
    assert parse(base).auth_token == "simple"
    assert parse(base + ["--auth-token", "simple"]).auth_token == "simple"
    with pytest.raises(ConfigError, match="auth-token"):
        parse(base + ["--auth-token", "jwt,sign-method=RS256"])
    with pytest.raises(ConfigError, match="auth-token"):
        parse(base + ["--auth-token", "kerberos"])


# ---------------------------------------------------------------- identity

def test_credentials_from_grpc_metadata_and_http_headers():
    ctx = types.SimpleNamespace(invocation_metadata=lambda: (("authorization", "A"),
                                                             ("token", "T")), peer_cn="carol")
    assert grpc_credentials(ctx, False) == ("T", None)   # "token" wins, as etcd
    assert grpc_credentials(ctx, True) == ("T", "carol")
    ctx2 = types.SimpleNamespace(invocation_metadata=lambda: (("authorization", "A"),))
    assert grpc_credentials(ctx2, True) == ("A", None)   # no peer_cn attribute: no TLS
    ctx3 = types.SimpleNamespace(invocation_metadata=lambda: None, peer_cn="carol")
    assert grpc_credentials(ctx3, True) == (None, "carol")
    req = types.SimpleNamespace(authorization=b"tok.5", metadata_token=None, peer_cn="carol")
    assert http_credentials(req) == ("tok.5", None)   # never the certificate on the gateway
    req.metadata_token = b"mt.6"
    assert http_credentials(req) == ("mt.6", None)
    assert http_credentials(types.SimpleNamespace(authorization=b"")) == (None, None)
    assert "secret" not in repr(Credentials("secret.1"))


def test_identify_simple_tokens_waits_for_their_entry_and_certificates():
    tokens = SimpleTokens(ttl=300)
    store = build_store(tokens)
    token = store.authenticate({"name": "alice", "simple_token": "p" * 16}, 50)["token"]

    class FakeServer:
        def __init__(self):
            self.tokens, self.auth = tokens, store
            self.applier = types.SimpleNamespace(applied_index=10)
            self.waited = []

        async def wait_applied(self, index):
            self.waited.append(index)
            if index > 100:
                raise asyncio.TimeoutError()
            self.applier.applied_index = index

    async def run():
        srv = FakeServer()
        assert await identify(srv, None) is None
        assert await identify(srv, Credentials(token)) == ("alice", store.revision)
        assert srv.waited == [50]
        for bad in ("nodot", "a.b.c", "abc.x", "p" * 16 + ".49", "q.200"):
            with pytest.raises(ErrInvalidAuthToken):
                await identify(srv, Credentials(bad))
        assert await identify(srv, Credentials(None, "carol")) == ("carol", store.revision)
        assert await identify(srv, Credentials(None, None)) is None
    asyncio.run(run())


def test_a_failed_authentication_pauses_without_blocking_the_loop(monkeypatch):
    """Server.authenticate on a stand-in member: a wrong password answers after an
    asyncio.sleep of AUTH_FAILURE_DELAY (the loop serves others meanwhile); a right one
    does not wait; neither the password nor a token reaches the log."""
    import logging

    import fastkv.server as server_mod
    tokens = SimpleTokens()
    store = build_store(tokens)
    sleeps = []
    real_sleep = asyncio.sleep

    async def fake_sleep(delay, *a, **kw):
        sleeps.append(delay)
        await real_sleep(0)
    monkeypatch.setattr(server_mod.asyncio, "sleep", fake_sleep)

    class Member:
        auth = store

        def __init__(self):
            self.tokens = tokens

        async def _linearizable(self):
            pass

        async def _auth_change(self, op, req, creds=None):
            return store.authenticate(req, 77)

    records = []
    handler = logging.Handler()
    handler.emit = lambda rec: records.append(rec.getMessage())
    logging.getLogger("fastkv.server").addHandler(handler)
    try:
        async def run():
            with pytest.raises(EtcdError, match="authentication failed"):
                await server_mod.Server.authenticate(Member(), {"name": "alice",
                                                                "password": "wrong-pw"})
            assert sleeps == [server_mod.AUTH_FAILURE_DELAY] and sleeps[0] > 0
            resp = await server_mod.Server.authenticate(Member(), {"name": "alice",
                                                                   "password": "pw"})
            assert sleeps == [server_mod.AUTH_FAILURE_DELAY]
            return resp["token"]
        token = asyncio.run(run())
    finally:
        logging.getLogger("fastkv.server").removeHandler(handler)
    assert tokens.info(token) == "alice"
    assert not any("wrong-pw" in r or token in r for r in records)


def test_recipes_act_as_the_caller():
    from fastkv.concurrency import Recipes
    calls = []

    class S:
        async def range(self, req, creds=None):
            calls.append(("range", creds))
            return {"header": {"revision": 1}}

    r = Recipes(S())
    assert r.as_caller(None) is r

    async def run():
        with pytest.raises(EtcdError, match="election: no leader"):
            await r.as_caller(Credentials("t.1")).leader(b"e")
    asyncio.run(run())
    assert calls == [("range", ("t.1", None))]
