"""The auth store (etcd 3.4's auth/store.go), its password hashes and simple tokens."""
import functools
import marshal
import random
import types

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastkv import errors
from fastkv.auth import (MIN_COST, READ, READWRITE, WRITE, AuthStore, SimpleTokens,
                         hash_password, normalize_cost, token_index, verify_password)
from fastkv.auth.interval_tree import IntervalTree, affine_cmp
from fastkv.auth.passwords import DEFAULT_COST
from fastkv.errors import EtcdError, GrpcCode

SALT = b"0123456789abcdef"


@functools.lru_cache(maxsize=None)
def hashed(password: str) -> str:
    return hash_password(password, SALT, MIN_COST)


@pytest.fixture
def clock():
    """A fake monotonic clock: tests move ``clock.t``."""
    return types.SimpleNamespace(t=1000.0)


@pytest.fixture
def tokens(clock):
    return SimpleTokens(ttl=300, clock=lambda: clock.t, choice=random.Random(7).choice)


@pytest.fixture
def store(tokens):
    return AuthStore(tokens=tokens)


def add_user(store, name, password="pw", roles=()):
    store.user_add({"name": name, "hashedPassword": hashed(password)})
    for role in roles:
        if role != "root" and role not in store.role_list().get("roles", []):
            store.role_add({"name": role})
        store.user_grant_role({"user": name, "role": role})


def grant(store, role, key, range_end=b"", perm_type=READ):
    perm = {"key": key, "permType": perm_type}
    if range_end:
        perm["range_end"] = range_end
    store.role_grant_permission({"name": role, "perm": perm})


def enable(store):
    if "root" not in store.user_list().get("users", []):
        add_user(store, "root", "rootpw", roles=["root"])
    store.auth_enable()


def refuses(store, method, req, err, *args):
    """``method(req, *args)`` raises exactly ``err`` (class, message, code) and changes nothing."""
    before = store.to_state()
    with pytest.raises(EtcdError) as e:
        getattr(store, method)(req, *args)
    assert type(e.value) is err
    assert (e.value.message, e.value.code) == (err.message, err.code)
    assert store.to_state() == before
    return e.value


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("err, code, message", [
    (errors.ErrRootUserNotExist, GrpcCode.FAILED_PRECONDITION, "etcdserver: root user does not exist"),
    (errors.ErrRootRoleNotExist, GrpcCode.FAILED_PRECONDITION,
     "etcdserver: root user does not have root role"),
    (errors.ErrUserAlreadyExist, GrpcCode.FAILED_PRECONDITION, "etcdserver: user name already exists"),
    (errors.ErrUserEmpty, GrpcCode.INVALID_ARGUMENT, "etcdserver: user name is empty"),
    (errors.ErrUserNotFound, GrpcCode.FAILED_PRECONDITION, "etcdserver: user name not found"),
    (errors.ErrRoleAlreadyExist, GrpcCode.FAILED_PRECONDITION, "etcdserver: role name already exists"),
    (errors.ErrRoleNotFound, GrpcCode.FAILED_PRECONDITION, "etcdserver: role name not found"),
    (errors.ErrRoleEmpty, GrpcCode.INVALID_ARGUMENT, "etcdserver: role name is empty"),
    (errors.ErrAuthFailed, GrpcCode.INVALID_ARGUMENT,
     "etcdserver: authentication failed, invalid user ID or password"),
    (errors.ErrPermissionDenied, GrpcCode.PERMISSION_DENIED, "etcdserver: permission denied"),
    (errors.ErrRoleNotGranted, GrpcCode.FAILED_PRECONDITION,
     "etcdserver: role is not granted to the user"),
    (errors.ErrPermissionNotGranted, GrpcCode.FAILED_PRECONDITION,
     "etcdserver: permission is not granted to the role"),
    (errors.ErrAuthNotEnabled, GrpcCode.FAILED_PRECONDITION, "etcdserver: authentication is not enabled"),
    (errors.ErrInvalidAuthToken, GrpcCode.UNAUTHENTICATED, "etcdserver: invalid auth token"),
    (errors.ErrInvalidAuthMgmt, GrpcCode.INVALID_ARGUMENT, "etcdserver: invalid auth management"),
    (errors.ErrAuthOldRevision, GrpcCode.INVALID_ARGUMENT, "etcdserver: revision of auth store is old"),
    (errors.ErrNoPasswordUser, GrpcCode.UNKNOWN,
     "auth: authentication failed, password was given for no password user"),
    (errors.ErrPermissionNotGiven, GrpcCode.INVALID_ARGUMENT, "etcdserver: permission not given"),
])
def test_error_codes_and_messages_are_etcds(err, code, message):
    assert (err.code, err.message) == (code, message)
    assert errors.error_named(err.__name__, code, message) == err()


# ---------------------------------------------------------------- users


def test_user_add_get_list(store):
    assert store.revision == 1
    assert store.user_list() == {}
    assert store.user_add({"name": "bob", "hashedPassword": hashed("x")}) == {}
    assert store.revision == 2
    assert store.user_add({"name": "alice", "options": {"no_password": True},
                           "hashedPassword": hashed("ignored")}) == {}
    assert store.revision == 3
    assert store.user_list() == {"users": ["alice", "bob"]}
    assert store.user_get({"name": "bob"}) == {}
    users = {u[0]: u for u in store.to_state()["users"]}
    assert users["alice"] == ["alice", "", [], True]  # a no-password user keeps no hash
    assert users["bob"] == ["bob", hashed("x"), [], False]


def test_user_add_errors(store):
    add_user(store, "bob")
    refuses(store, "user_add", {"name": "", "hashedPassword": hashed("x")}, errors.ErrUserEmpty)
    refuses(store, "user_add", {"hashedPassword": hashed("x")}, errors.ErrUserEmpty)
    refuses(store, "user_add", {"name": "bob", "hashedPassword": hashed("y")},
            errors.ErrUserAlreadyExist)


def test_user_get_and_delete_errors(store):
    refuses(store, "user_get", {"name": "nobody"}, errors.ErrUserNotFound)
    refuses(store, "user_get", {}, errors.ErrUserNotFound)
    refuses(store, "user_delete", {"name": "nobody"}, errors.ErrUserNotFound)
    refuses(store, "user_change_password", {"name": "nobody", "hashedPassword": hashed("x")},
            errors.ErrUserNotFound)


def test_user_delete(store):
    add_user(store, "bob", roles=["r1"])
    rev = store.revision
    assert store.user_delete({"name": "bob"}) == {}
    assert store.revision == rev + 1
    assert store.user_list() == {}
    assert store.role_list() == {"roles": ["r1"]}  # roles stay


def test_root_user_rules_while_enabled(store):
    enable(store)
    refuses(store, "user_delete", {"name": "root"}, errors.ErrInvalidAuthMgmt)
    refuses(store, "user_revoke_role", {"name": "root", "role": "root"}, errors.ErrInvalidAuthMgmt)
    refuses(store, "role_delete", {"role": "root"}, errors.ErrInvalidAuthMgmt)
    store.auth_disable()
    # disabled: all three are ordinary again
    assert store.user_revoke_role({"name": "root", "role": "root"}) == {}
    assert store.user_delete({"name": "root"}) == {}
    refuses(store, "role_delete", {"role": "root"}, errors.ErrRoleNotFound)  # never added


def test_root_checks_come_before_existence_checks(store):
    add_user(store, "root", roles=["root"])  # role root granted, never added as a role
    store.auth_enable()
    # etcd checks the root rule first: deleting the absent role root is refused as
    # management, not as "role name not found"
    refuses(store, "role_delete", {"role": "root"}, errors.ErrInvalidAuthMgmt)
    store.auth_disable()
    refuses(store, "role_delete", {"role": "root"}, errors.ErrRoleNotFound)


def test_user_change_password(store, tokens):
    add_user(store, "bob", "old", roles=["r"])
    enable(store)
    assert store.check_password("bob", "old") == store.revision
    store.authenticate({"name": "bob", "simple_token": "p"}, 10)
    assert tokens.info("p.10") == "bob"
    rev = store.revision
    assert store.user_change_password({"name": "bob", "hashedPassword": hashed("new")}) == {}
    assert store.revision == rev + 1
    assert tokens.info("p.10") is None  # invalidated, as etcd's invalidateUser
    assert store.check_password("bob", "new") == store.revision
    with pytest.raises(errors.ErrAuthFailed):
        store.check_password("bob", "old")
    assert store.user_get({"name": "bob"}) == {"roles": ["r"]}  # roles kept


def test_change_password_keeps_no_password_option(store):
    store.user_add({"name": "svc", "options": {"no_password": True}})
    store.user_change_password({"name": "svc", "hashedPassword": hashed("x")})
    enable(store)
    with pytest.raises(errors.ErrNoPasswordUser):  # etcd 3.4 keeps the options
        store.check_password("svc", "x")


def test_user_grant_role(store):
    add_user(store, "bob")
    store.role_add({"name": "zeta"})
    store.role_add({"name": "alpha"})
    rev = store.revision
    assert store.user_grant_role({"user": "bob", "role": "zeta"}) == {}
    assert store.user_grant_role({"user": "bob", "role": "alpha"}) == {}
    assert store.revision == rev + 2
    assert store.user_get({"name": "bob"}) == {"roles": ["alpha", "zeta"]}  # sorted
    before = store.to_state()
    assert store.user_grant_role({"user": "bob", "role": "alpha"}) == {}  # already: no-op
    assert store.to_state() == before
    # role root may be granted without existing as a role
    assert store.user_grant_role({"user": "bob", "role": "root"}) == {}
    assert store.user_get({"name": "bob"}) == {"roles": ["alpha", "root", "zeta"]}
    assert store.role_list() == {"roles": ["alpha", "zeta"]}


def test_user_grant_role_errors(store):
    store.role_add({"name": "r"})
    add_user(store, "bob")
    refuses(store, "user_grant_role", {"user": "nobody", "role": "r"}, errors.ErrUserNotFound)
    refuses(store, "user_grant_role", {"user": "nobody", "role": "nope"}, errors.ErrUserNotFound)
    refuses(store, "user_grant_role", {"user": "bob", "role": "nope"}, errors.ErrRoleNotFound)
    refuses(store, "user_grant_role", {"user": "bob", "role": ""}, errors.ErrRoleNotFound)


def test_user_revoke_role(store):
    add_user(store, "bob", roles=["a", "b"])
    rev = store.revision
    assert store.user_revoke_role({"name": "bob", "role": "a"}) == {}
    assert store.revision == rev + 1
    assert store.user_get({"name": "bob"}) == {"roles": ["b"]}
    refuses(store, "user_revoke_role", {"name": "bob", "role": "a"}, errors.ErrRoleNotGranted)
    refuses(store, "user_revoke_role", {"name": "nobody", "role": "a"}, errors.ErrUserNotFound)


# ---------------------------------------------------------------- roles


def test_role_add_get_list_delete(store):
    assert store.role_list() == {}
    assert store.role_add({"name": "b"}) == {}
    assert store.role_add({"name": "a"}) == {}
    assert store.revision == 3
    assert store.role_list() == {"roles": ["a", "b"]}
    assert store.role_get({"role": "a"}) == {}
    refuses(store, "role_add", {"name": ""}, errors.ErrRoleEmpty)
    refuses(store, "role_add", {}, errors.ErrRoleEmpty)
    refuses(store, "role_add", {"name": "a"}, errors.ErrRoleAlreadyExist)
    refuses(store, "role_get", {"role": "c"}, errors.ErrRoleNotFound)
    refuses(store, "role_delete", {"role": "c"}, errors.ErrRoleNotFound)
    assert store.role_delete({"role": "a"}) == {}
    assert store.revision == 4
    assert store.role_list() == {"roles": ["b"]}


def test_role_delete_revokes_it_from_users(store):
    add_user(store, "u1", roles=["r", "s"])
    add_user(store, "u2", roles=["r"])
    add_user(store, "u3", roles=["s"])
    rev = store.revision
    store.role_delete({"role": "r"})
    assert store.revision == rev + 1  # one change, however many users it touched
    assert store.user_get({"name": "u1"}) == {"roles": ["s"]}
    assert store.user_get({"name": "u2"}) == {}
    assert store.user_get({"name": "u3"}) == {"roles": ["s"]}


def test_grant_permission_sorts_and_replaces(store):
    store.role_add({"name": "r"})
    grant(store, "r", b"m", perm_type=READ)
    grant(store, "r", b"c", b"f", WRITE)
    grant(store, "r", b"x", b"\x00", READWRITE)
    assert store.role_get({"role": "r"}) == {"perm": [
        {"permType": WRITE, "key": b"c", "range_end": b"f"},
        {"key": b"m"},  # READ (0) and the empty range end are left out, as proto3 JSON
        {"permType": READWRITE, "key": b"x", "range_end": b"\x00"},
    ]}
    rev = store.revision
    grant(store, "r", b"c", b"f", READ)  # same key and range end: the type is replaced
    assert store.revision == rev + 1
    assert store.role_get({"role": "r"})["perm"][0] == {"key": b"c", "range_end": b"f"}
    grant(store, "r", b"c", b"f", READ)  # even an identical grant is a change in etcd
    assert store.revision == rev + 2
    grant(store, "r", b"c", b"", WRITE)  # same key, other range end: a new permission
    assert store.role_get({"role": "r"})["perm"][:2] == [
        {"key": b"c", "range_end": b"f"}, {"permType": WRITE, "key": b"c"}]


def test_grant_permission_duplicate_quirk_is_etcds(store):
    """etcd looks only at the first permission with the granted key: granting again the
    second of two ranges on one key appends a duplicate; revoking removes both."""
    store.role_add({"name": "r"})
    grant(store, "r", b"k", b"m", READ)
    grant(store, "r", b"k", b"z", READ)
    grant(store, "r", b"k", b"z", WRITE)
    assert store.role_get({"role": "r"}) == {"perm": [
        {"key": b"k", "range_end": b"m"},
        {"key": b"k", "range_end": b"z"},
        {"permType": WRITE, "key": b"k", "range_end": b"z"},
    ]}
    store.role_revoke_permission({"role": "r", "key": b"k", "range_end": b"z"})
    assert store.role_get({"role": "r"}) == {"perm": [{"key": b"k", "range_end": b"m"}]}


def test_grant_and_revoke_permission_errors(store):
    store.role_add({"name": "r"})
    grant(store, "r", b"a", b"b")
    refuses(store, "role_grant_permission", {"name": "nope", "perm": {"key": b"a"}},
            errors.ErrRoleNotFound)
    refuses(store, "role_grant_permission", {"name": "r"}, errors.ErrPermissionNotGiven)
    refuses(store, "role_revoke_permission", {"role": "nope", "key": b"a", "range_end": b"b"},
            errors.ErrRoleNotFound)
    refuses(store, "role_revoke_permission", {"role": "r", "key": b"a"},
            errors.ErrPermissionNotGranted)  # range end must match too
    refuses(store, "role_revoke_permission", {"role": "r", "key": b"b", "range_end": b"b"},
            errors.ErrPermissionNotGranted)
    rev = store.revision
    assert store.role_revoke_permission({"role": "r", "key": b"a", "range_end": b"b"}) == {}
    assert store.revision == rev + 1
    assert store.role_get({"role": "r"}) == {}


def test_wrongly_typed_requests_change_nothing(store):
    store.role_add({"name": "r"})
    add_user(store, "bob")
    for method, req in [
        ("user_add", {"name": 5}),
        ("user_add", {"name": "x", "hashedPassword": b"raw"}),
        ("user_add", {"name": "x", "options": {"no_password": "yes"}}),
        ("user_grant_role", {"user": "bob", "role": 5}),
        ("role_grant_permission", {"name": "r", "perm": {"key": "text"}}),
        ("role_grant_permission", {"name": "r", "perm": {"key": b"k", "permType": "READ"}}),
        ("role_grant_permission", {"name": "r", "perm": {"key": b"k", "permType": True}}),
        ("role_grant_permission", {"name": "r", "perm": [b"k"]}),
        ("role_revoke_permission", {"role": "r", "key": 1}),
    ]:
        before = store.to_state()
        with pytest.raises(EtcdError) as e:
            getattr(store, method)(req)
        assert e.value.code == GrpcCode.INVALID_ARGUMENT
        assert store.to_state() == before


# ---------------------------------------------------------------- enable / disable


def test_auth_enable_requires_root(store):
    refuses(store, "auth_enable", {}, errors.ErrRootUserNotExist)
    add_user(store, "root")
    refuses(store, "auth_enable", {}, errors.ErrRootRoleNotExist)
    store.role_add({"name": "admins"})
    store.user_grant_role({"user": "root", "role": "admins"})
    refuses(store, "auth_enable", {}, errors.ErrRootRoleNotExist)
    store.user_grant_role({"user": "root", "role": "root"})
    rev = store.revision
    assert store.auth_enable() == {}
    assert store.enabled
    assert store.revision == rev  # etcd's AuthEnable commits no revision
    assert store.auth_status() == {"enabled": True, "authRevision": rev}
    before = store.to_state()
    assert store.auth_enable() == {}  # already enabled: nothing changes
    assert store.to_state() == before


def test_auth_disable(store, tokens):
    before = store.to_state()
    assert store.auth_disable() == {}  # disabled already: nothing changes
    assert store.to_state() == before
    enable(store)
    assert tokens.enabled
    store.authenticate({"name": "root", "simple_token": "abc"}, 5)
    rev = store.revision
    assert store.auth_disable() == {}
    assert not store.enabled
    assert store.revision == rev + 1
    assert store.auth_status() == {"authRevision": rev + 1}
    assert not tokens.enabled and len(tokens) == 0


# ---------------------------------------------------------------- passwords and tokens


def test_check_password(store):
    add_user(store, "bob", "secret")
    store.user_add({"name": "svc", "options": {"no_password": True}})
    with pytest.raises(errors.ErrAuthNotEnabled):
        store.check_password("bob", "secret")
    enable(store)
    assert store.check_password("bob", "secret") == store.revision
    assert store.check_password("bob", b"secret") == store.revision
    with pytest.raises(errors.ErrAuthFailed):
        store.check_password("bob", "Secret")
    with pytest.raises(errors.ErrAuthFailed):
        store.check_password("nobody", "secret")
    with pytest.raises(errors.ErrNoPasswordUser):
        store.check_password("svc", "")


def test_authenticate(store, tokens, clock):
    add_user(store, "bob")
    store.user_add({"name": "svc", "options": {"no_password": True}})
    refuses(store, "authenticate", {"name": "bob", "simple_token": "p"}, errors.ErrAuthNotEnabled, 1)
    enable(store)
    before = store.to_state()
    prefix = tokens.gen_prefix()
    assert store.authenticate({"name": "bob", "simple_token": prefix}, 42) == {
        "token": prefix + ".42"}
    assert store.to_state() == before  # authenticating changes no state
    assert tokens.info(prefix + ".42") == "bob"
    refuses(store, "authenticate", {"name": "nobody", "simple_token": "p"}, errors.ErrAuthFailed, 43)
    refuses(store, "authenticate", {"name": "svc", "simple_token": "p"}, errors.ErrAuthFailed, 44)
    assert tokens.info("p.43") is None and tokens.info("p.44") is None


def test_authenticate_without_token_table():
    s = AuthStore()
    add_user(s, "root", roles=["root"])
    s.auth_enable()
    assert s.authenticate({"name": "root", "simple_token": "q"}, 7) == {"token": "q.7"}


def test_user_delete_invalidates_tokens(store, tokens):
    add_user(store, "bob")
    enable(store)
    store.authenticate({"name": "bob", "simple_token": "a"}, 1)
    store.authenticate({"name": "root", "simple_token": "b"}, 2)
    store.user_delete({"name": "bob"})
    assert tokens.info("a.1") is None
    assert tokens.info("b.2") == "root"


def test_password_hashes():
    h = hash_password("pw", SALT, MIN_COST)
    assert h == hash_password("pw", SALT, MIN_COST)  # deterministic for a salt
    assert h != hash_password("pw", SALT[::-1], MIN_COST)
    assert h.startswith("$2a$04$") and len(h) == 60   # Go's bcrypt format
    assert hash_password("pw", cost=MIN_COST) != hash_password("pw", cost=MIN_COST)  # fresh salts
    assert verify_password(h, "pw") and verify_password(h, b"pw")
    assert not verify_password(h, "pW")
    assert verify_password(hash_password("pä", SALT, 5), "pä")  # the cost travels in the hash
    # only 72 bytes count, as with Go's bcrypt in etcd 3.4
    assert verify_password(hash_password("x" * 80, SALT, MIN_COST), "x" * 72 + "y")
    for bad in ["", "pw", "md5$1$AA==$AA==", "pbkdf2_sha256$x$AA==$AA==", "$2a$04$short",
                "pbkdf2_sha256$0$AA==$AA==", "pbkdf2_sha256$10$!!$AA==", "pbkdf2_sha256$10$AA==$"]:
        assert not verify_password(bad, "pw")
    # hashes of earlier fastkv versions (PBKDF2-SHA256) still verify
    import base64
    import hashlib
    old = "pbkdf2_sha256$4096$%s$%s" % (base64.b64encode(SALT).decode(), base64.b64encode(
        hashlib.pbkdf2_hmac("sha256", b"pw", SALT, 4096)).decode())
    assert verify_password(old, "pw") and not verify_password(old, "px")
    with pytest.raises(ValueError):
        hash_password("pw", SALT, 3)
    assert [normalize_cost(c) for c in (3, 4, 10, 31, 32)] == [DEFAULT_COST, 4, 10, 31, DEFAULT_COST]


def test_simple_tokens_expire_on_a_fake_clock(clock):
    t = SimpleTokens(ttl=300, clock=lambda: clock.t, choice=random.Random(1).choice)
    prefix = t.gen_prefix()
    assert len(prefix) == 16 and prefix.isascii() and prefix.isalpha()
    assert t.assign("bob", prefix, 9) == prefix + ".9"
    assert t.info(prefix + ".9") is None  # disabled: nothing is registered
    t.enable()
    tok = t.assign("bob", prefix, 9)
    clock.t += 300
    assert t.info(tok) == "bob"  # at the TTL exactly it still lives (etcd: now.After(end))
    clock.t += 299
    assert t.info(tok) == "bob"  # each use renews the TTL
    clock.t += 300.5
    assert t.info(tok) is None
    assert len(t) == 0
    # the sweep
    t1 = t.assign("a", "x" * 16, 1)
    clock.t += 100
    t2 = t.assign("b", "y" * 16, 2)
    clock.t += 250
    assert t.expire() == 1
    assert t.info(t1) is None and t.info(t2) == "b"
    t.invalidate_user("b")
    assert t.info(t2) is None
    t.assign("c", "z" * 16, 3)
    t.disable()
    assert len(t) == 0 and not t.enabled
    assert SimpleTokens(ttl=0).ttl == 300  # etcd: a TTL <= 0 means the default


@pytest.mark.parametrize("token, index", [
    ("abcdefghijklmnop.42", 42), ("a.0", 0), ("a.+7", 7), ("abc", None), ("a.b.1", None),
    ("a.", None), ("a.x1", None), ("a.-1", None), ("a.1 ", None), ("a.١", None),
])
def test_token_index(token, index):
    assert token_index(token) == index


# ---------------------------------------------------------------- permission checks


@pytest.fixture
def alice(store):
    """alice holds role "reader" (READ on [a, c) and the key "k") and role "writer"
    (WRITE on the prefix "w/" and READWRITE from "z" on); auth enabled."""
    add_user(store, "alice", roles=["reader", "writer"])
    grant(store, "reader", b"a", b"c", READ)
    grant(store, "reader", b"k", b"", READ)
    grant(store, "writer", b"w/", b"w0", WRITE)
    grant(store, "writer", b"z", b"\x00", READWRITE)
    enable(store)
    return store


def permitted(check, *args, **kw):
    try:
        return check(*args, **kw)
    except errors.ErrPermissionDenied:
        return False


def test_permission_checks(alice):
    r, p, d = alice.is_range_permitted, alice.is_put_permitted, alice.is_delete_range_permitted
    # a key permission covers exactly that key
    assert r("alice", b"k") is True
    assert not permitted(r, "alice", b"k0")
    assert not permitted(r, "alice", b"k", b"k0")  # [k, k0) holds more than k
    assert r("alice", b"k", b"k\x00") is True   # [k, k\0) is the key alone
    assert not permitted(p, "alice", b"k")
    # a range permission covers its keys and sub-ranges, end excluded
    assert r("alice", b"a") and r("alice", b"bzzz") and r("alice", b"a", b"c")
    assert not permitted(r, "alice", b"c")
    assert not permitted(r, "alice", b"a", b"c\x00")
    assert not permitted(r, "alice", b"a", b"\x00")  # from-key is more than [a, c)
    # prefix permission
    assert p("alice", b"w/x") and d("alice", b"w/", b"w0") and d("alice", b"w/a", b"w/b")
    assert not permitted(r, "alice", b"w/x")  # WRITE only
    assert not permitted(d, "alice", b"w", b"w0")
    # from-key permission, READWRITE
    assert r("alice", b"z") and p("alice", b"zzz") and d("alice", b"z", b"\x00")
    assert r("alice", b"zz", b"\x00") and r("alice", b"z\xff\xff", b"\xff")
    assert not permitted(r, "alice", b"y", b"\x00")
    # no user, unknown user
    with pytest.raises(errors.ErrUserEmpty):
        r("", b"a")
    with pytest.raises(errors.ErrUserEmpty):
        r("alice", b"a", revision=0)
    with pytest.raises(errors.ErrPermissionDenied):
        r("nobody", b"a")


def test_permission_union_across_roles_and_gaps(store):
    add_user(store, "u", roles=["r1", "r2"])
    grant(store, "r1", b"a", b"c")
    grant(store, "r2", b"c", b"e")   # touches [a, c): together [a, e)
    grant(store, "r2", b"f", b"h")   # a gap at [e, f)
    enable(store)
    assert store.is_range_permitted("u", b"b", b"d")
    assert store.is_range_permitted("u", b"a", b"e")
    for key, end in [(b"a", b"f"), (b"d", b"g"), (b"e", b"f"), (b"a", b"h")]:
        assert not permitted(store.is_range_permitted, "u", key, end)
    assert store.is_range_permitted("u", b"f", b"h")


def test_degenerate_permissions_and_queries(store):
    add_user(store, "u", roles=["r"])
    grant(store, "r", b"m", b"c")        # range end below the key: covers nothing
    grant(store, "r", b"", b"\x00")      # empty key: covers nothing (affine: "" is +inf)
    grant(store, "r", b"p", b"q")
    enable(store)
    for key in (b"m", b"d", b"a", b"x"):
        assert not permitted(store.is_range_permitted, "u", key)
    # inverted query ranges: etcd's tree decides; with these permissions, as the key alone
    assert store.is_range_permitted("u", b"p\x01", b"a")
    assert not permitted(store.is_range_permitted, "u", b"o", b"a")
    assert not permitted(store.is_range_permitted, "u", b"", b"z")   # empty key: never
    assert not permitted(store.is_range_permitted, "u", b"")


def test_root_role_and_disabled_auth(store):
    add_user(store, "bob")
    # disabled: everything is permitted, even for nobody
    assert store.is_put_permitted("", b"x") and store.is_admin("")
    enable(store)
    assert store.is_range_permitted("root", b"", b"\x00")   # root bypasses the ranges
    assert store.is_delete_range_permitted("root", b"a", b"\x00")
    assert store.is_admin("root")
    with pytest.raises(errors.ErrPermissionDenied):
        store.is_admin("bob")
    with pytest.raises(errors.ErrUserNotFound):
        store.is_admin("nobody")
    with pytest.raises(errors.ErrUserEmpty):
        store.is_admin("")
    # the root role counts even when it does not exist as a role
    store.user_grant_role({"user": "bob", "role": "root"})
    assert store.is_admin("bob") and store.is_put_permitted("bob", b"anything")
    assert store.has_role("bob", "root") and not store.has_role("bob", "x")
    assert not store.has_role("nobody", "root")


def test_old_auth_revision(alice):
    rev = alice.revision
    assert alice.is_range_permitted("alice", b"a", revision=rev)
    assert alice.is_range_permitted("alice", b"a", revision=rev + 1)
    grant(alice, "reader", b"q")
    with pytest.raises(errors.ErrAuthOldRevision):
        alice.is_range_permitted("alice", b"a", revision=rev)
    with pytest.raises(errors.ErrAuthOldRevision):
        alice.is_put_permitted("nobody", b"a", revision=rev)  # before the user lookup


def test_permission_cache_follows_changes(alice):
    assert not permitted(alice.is_range_permitted, "alice", b"q")
    grant(alice, "reader", b"q")
    assert alice.is_range_permitted("alice", b"q")
    alice.role_revoke_permission({"role": "reader", "key": b"q"})
    assert not permitted(alice.is_range_permitted, "alice", b"q")
    assert alice.is_range_permitted("alice", b"a")
    alice.user_revoke_role({"name": "alice", "role": "reader"})
    assert not permitted(alice.is_range_permitted, "alice", b"a")
    assert alice.is_put_permitted("alice", b"w/1")
    alice.role_delete({"role": "writer"})
    assert not permitted(alice.is_put_permitted, "alice", b"w/1")
    grant(alice, "reader", b"a", b"c", WRITE)
    alice.user_grant_role({"user": "alice", "role": "reader"})
    assert alice.is_put_permitted("alice", b"b") and not permitted(alice.is_range_permitted,
                                                                  "alice", b"b")


# Two references. The literal one: etcd's adt semantics read off its code (an overlap is
# Interval.Compare == 0 with BytesAffineComparable; Contains is the in-order walk over
# every overlapping interval with its contiguity test). And the port of etcd's tree
# (fastkv.auth.interval_tree), whose pruned walk is what etcd answers; the two agree
# except on inverted ranges, where the tree's shape decides.

def _overlap(q, x):
    if affine_cmp(q[0], x[0]) < 0 and affine_cmp(q[1], x[0]) <= 0:
        return False
    return affine_cmp(q[0], x[1]) < 0


def _etcd_interval(key, range_end):
    if not range_end:
        return key, key + b"\x00"
    return key, b"" if range_end == b"\x00" else range_end


def _literal_permitted(ivls, key, range_end):
    q = _etcd_interval(key, range_end)
    if not range_end:
        return any(_overlap(q, x) for x in ivls)
    seen = sorted((x for x in ivls if _overlap(q, x)),
                  key=functools.cmp_to_key(lambda a, b: affine_cmp(a[0], b[0])))
    if not seen:
        return False
    min_begin, max_end = seen[0]
    for begin, end in seen[1:]:
        if affine_cmp(max_end, begin) < 0:
            return False
        if affine_cmp(end, max_end) > 0:
            max_end = end
    return affine_cmp(max_end, q[1]) >= 0 and affine_cmp(min_begin, q[0]) <= 0


def _tree_permitted(ivls, key, range_end):
    tree = IntervalTree()
    for begin, end in ivls:
        tree.insert(begin, end)
    q = _etcd_interval(key, range_end)
    return tree.intersects(*q) if not range_end else tree.contains(*q)


_keys = st.sampled_from([b"", b"a", b"a\x00", b"ab", b"b", b"ba", b"bb", b"c", b"\xff"])
_ends = st.one_of(st.just(b""), st.just(b"\x00"), _keys)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(perms=st.lists(st.tuples(st.sampled_from(["r1", "r2"]), _keys, _ends), max_size=8),
       queries=st.lists(st.tuples(_keys, _ends), min_size=1, max_size=8))
def test_permission_checks_match_etcds_interval_tree(perms, queries):
    s = AuthStore()
    add_user(s, "root", roles=["root"])
    add_user(s, "u", roles=["r2", "r1"])
    for role, key, end in perms:
        grant(s, role, key, end, READ)
    s.auth_enable()
    # etcd's insertion order: the user's roles (sorted), each role's permissions as stored
    ivls = [_etcd_interval(p.get("key", b""), p.get("range_end", b""))
            for role in ("r1", "r2") for p in s.role_get({"role": role}).get("perm", [])]
    for key, end in queries:
        expected = _tree_permitted(ivls, key, end)
        assert permitted(s.is_range_permitted, "u", key, end) == expected, (ivls, key, end)
        assert not permitted(s.is_delete_range_permitted, "u", key, end)
        inverted = end not in (b"", b"\x00") and affine_cmp(key, end) >= 0
        if not inverted:
            assert _literal_permitted(ivls, key, end) == expected, (ivls, key, end)


def test_inverted_ranges_follow_etcds_tree_shape(store):
    """Checked against etcd 3.4.23: with these permissions etcd permits the inverted
    range [b, a) when [a, \\0) is its only permission, and denies it once the tree has
    rebalanced around the other permissions."""
    add_user(store, "u", roles=["r"])
    grant(store, "r", b"a", b"\x00")
    enable(store)
    assert store.is_range_permitted("u", b"ba", b"ab")
    store.auth_disable()
    grant(store, "r", b"ab", b"a")
    grant(store, "r", b"ba", b"a\x00")
    grant(store, "r", b"\xff", b"\xff")
    store.auth_enable()
    assert not permitted(store.is_range_permitted, "u", b"ba", b"ab")
    assert store.is_range_permitted("u", b"ba", b"\x00")  # well-formed: the union decides


# ---------------------------------------------------------------- state: snapshots, bad input


def test_snapshot_round_trip(alice, tokens):
    alice.user_add({"name": "svc", "options": {"no_password": True}})
    state = alice.to_state()
    assert marshal.loads(marshal.dumps(state, 4)) == state
    t2 = SimpleTokens()
    copy = AuthStore.from_state(marshal.loads(marshal.dumps(state, 4)), tokens=t2)
    assert copy.to_state() == state
    assert marshal.dumps(copy.to_state(), 4) == marshal.dumps(state, 4)
    assert copy.enabled and copy.revision == alice.revision and t2.enabled
    assert copy.is_put_permitted("alice", b"w/x")
    assert not permitted(copy.is_put_permitted, "alice", b"a")
    assert copy.check_password("alice", "pw") == copy.revision
    assert AuthStore.from_state(AuthStore().to_state()).to_state() == AuthStore().to_state()
    with pytest.raises(ValueError):
        AuthStore.from_state({**state, "version": 99})


def test_equal_states_give_equal_snapshots():
    a, b = AuthStore(), AuthStore()
    for name in ("x", "y"):
        a.role_add({"name": name})
    for name in ("y", "x"):
        b.role_add({"name": name})
    for s, users in ((a, ("u", "v")), (b, ("v", "u"))):
        for u in users:
            s.user_add({"name": u, "hashedPassword": hashed("pw")})
            s.user_grant_role({"user": u, "role": "y"})
            s.user_grant_role({"user": u, "role": "x"})
    grant(a, "x", b"k1")
    grant(a, "x", b"k0")
    grant(b, "x", b"k0")
    grant(b, "x", b"k1")
    assert marshal.dumps(a.to_state(), 4) == marshal.dumps(b.to_state(), 4)


_names = st.sampled_from(["", "root", "u", "v", "r"])
_ops = st.one_of(
    st.tuples(st.just("user_add"), st.fixed_dictionaries(
        {"name": _names}, optional={"options": st.fixed_dictionaries({"no_password": st.booleans()}),
                                    "hashedPassword": st.just(hashed("pw"))})),
    st.tuples(st.just("user_delete"), st.fixed_dictionaries({"name": _names})),
    st.tuples(st.just("user_change_password"), st.fixed_dictionaries(
        {"name": _names, "hashedPassword": st.sampled_from([hashed("pw"), hashed("pw2")])})),
    st.tuples(st.just("user_grant_role"), st.fixed_dictionaries({"user": _names, "role": _names})),
    st.tuples(st.just("user_revoke_role"), st.fixed_dictionaries({"name": _names, "role": _names})),
    st.tuples(st.just("role_add"), st.fixed_dictionaries({"name": _names})),
    st.tuples(st.just("role_delete"), st.fixed_dictionaries({"role": _names})),
    st.tuples(st.just("role_grant_permission"), st.fixed_dictionaries(
        {"name": _names}, optional={"perm": st.fixed_dictionaries(
            {"key": _keys, "range_end": _ends, "permType": st.sampled_from([0, 1, 2])})})),
    st.tuples(st.just("role_revoke_permission"), st.fixed_dictionaries(
        {"role": _names, "key": _keys, "range_end": _ends})),
    st.tuples(st.just("auth_enable"), st.just({})),
    st.tuples(st.just("auth_disable"), st.just({})),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(_ops, max_size=40))
def test_every_request_changes_all_or_nothing(ops):
    s = AuthStore(tokens=SimpleTokens(clock=lambda: 0.0))
    twin = AuthStore()
    for method, req in ops:
        before = s.to_state()
        try:
            resp = getattr(s, method)(dict(req))
        except EtcdError:
            assert s.to_state() == before  # refused: nothing changed
            with pytest.raises(EtcdError):
                getattr(twin, method)(dict(req))
            continue
        assert resp == {}
        assert getattr(twin, method)(dict(req)) == {}
        after = s.to_state()
        if after == before:
            continue  # a no-op (already enabled, role already granted...)
        # one change, one revision (enabling is the exception, as etcd)
        expected = before["revision"] + (0 if method == "auth_enable" else 1)
        assert after["revision"] == expected
        # the invariants etcd keeps
        users = {u[0]: u for u in after["users"]}
        roles = {r[0] for r in after["roles"]}
        for name, _, user_roles, _ in after["users"]:
            assert user_roles == sorted(set(user_roles))
            assert all(r in roles or r == "root" for r in user_roles)
        for _, perms in after["roles"]:
            assert [p[0] for p in perms] == sorted(p[0] for p in perms)
        if after["enabled"]:
            assert "root" in users and "root" in users["root"][2]
    assert s.to_state() == twin.to_state()  # same requests, same state (determinism)
    assert AuthStore.from_state(s.to_state()).to_state() == s.to_state()
