"""Users, roles and permissions: etcd 3.4's auth/store.go as a deterministic state machine.

Every member applies the same auth requests in log order, so the methods that
change state use no clock, no randomness and no I/O, and each one validates
first: it either changes the state completely or raises an :class:`EtcdError`
having changed nothing. Requests and responses are dicts named like etcd's
protobuf fields (responses leave out the header and fields at their default).

Passwords arrive already hashed (``hashedPassword``, etcd 3.5's field; see
``fastkv.auth.passwords``): the server hashes with a salt of its choosing before
proposing, so the hash is in the log and applying stays deterministic.

Semantics follow etcd 3.4 to the letter, quirks included:

* the auth revision starts at 1 and every change adds 1, except enabling auth
  (store.go's AuthEnable does not commit a revision) and no-op requests
  (enabling twice, disabling while disabled, granting a role the user has);
* the role ``root`` may be granted to a user without existing as a role, and a
  user holding it passes every permission check;
* while auth is enabled the user ``root`` cannot be deleted nor lose the role
  ``root``, and the role ``root`` cannot be deleted (ErrInvalidAuthMgmt);
* a permission grant replaces the permission type of the entry found at the
  first position whose key is >= the granted key, if that entry has the same key
  and range end; otherwise it appends and re-sorts by key (a stable sort, as Go's
  insertion sort for small roles), so a role with two ranges on one key can end
  up with duplicates, as in etcd; revoking removes every exact match;
* permission checks are interval unions per user and type (auth/range_perm_cache.go):
  a permission with no range end covers its key alone, ``range_end == b"\\0"``
  means every key >= key; READWRITE counts as both; unknown types count as
  neither; a permission with an empty key, or a range end at or below its key,
  covers nothing; an inverted request range (key >= range_end) gets the answer
  of etcd's interval tree, whose shape decides it (``fastkv.auth.interval_tree``).

The simple-token table is member-local, not state (``fastkv.auth.tokens``); the
store only tells it what etcd's store tells its token provider (enable, disable,
a user's tokens invalidated, a token assigned), when it is given one.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right

from fastkv.auth.interval_tree import IntervalTree
from fastkv.auth.passwords import verify_password
from fastkv.auth.tokens import SimpleTokens, TokenAssignError, simple_token
from fastkv.errors import (ErrAuthFailed, ErrAuthNotEnabled, ErrAuthOldRevision,
                           ErrInvalidAuthMgmt, ErrNoPasswordUser, ErrPermissionDenied,
                           ErrPermissionNotGiven, ErrPermissionNotGranted, ErrRoleAlreadyExist,
                           ErrRoleEmpty, ErrRoleNotFound, ErrRoleNotGranted, ErrRootRoleNotExist,
                           ErrRootUserNotExist, ErrUserAlreadyExist, ErrUserEmpty,
                           ErrUserNotFound, EtcdError, GrpcCode, invalid_argument)

__all__ = ["AuthStore", "ROOT_USER", "ROOT_ROLE", "READ", "WRITE", "READWRITE"]

ROOT_USER = "root"
ROOT_ROLE = "root"
# authpb.Permission.Type
READ = 0
WRITE = 1
READWRITE = 2

STATE_VERSION = 1
_FROM_KEY = b"\x00"


class _User:
    __slots__ = ("name", "password", "roles", "no_password")

    def __init__(self, name: str, password: str, roles: tuple[str, ...], no_password: bool):
        self.name = name
        self.password = password          # the stored hash ("" for a no-password user)
        self.roles = roles                # sorted, as etcd's UserGrantRole keeps them
        self.no_password = no_password    # UserAddOptions.no_password

    def with_roles(self, roles) -> "_User":
        return _User(self.name, self.password, tuple(roles), self.no_password)


# A permission is (key, range_end, permType); a role's permissions are a tuple of them,
# sorted by key. Both are immutable, so a change builds new ones and swaps them in.
Perm = tuple[bytes, bytes, int]


def _perm_interval(key: bytes, range_end: bytes) -> tuple[bytes, bytes]:
    """A permission as etcd's getMergedPerms makes it: a half-open interval of
    adt.BytesAffineComparable, where b"" sorts after everything (so an end b"" is
    unbounded). No range end: the key alone; b"\\0": every key from the key on."""
    if not range_end:
        return key, key + b"\x00"
    return key, (b"" if range_end == _FROM_KEY else range_end)


def _holds_keys(interval: tuple[bytes, bytes]) -> bool:
    """Whether an interval holds any key: an empty begin sorts after everything, and
    an end at or below the begin makes it empty."""
    begin, end = interval
    return bool(begin) and (not end or begin < end)


class _KeySet:
    """One user's permissions of one type: answers etcd's IntervalTree.Intersects (a key)
    and IntervalTree.Contains (a range) from the union of the intervals, merged into
    disjoint sorted runs (an end b"" is unbounded)."""

    __slots__ = ("_intervals", "_starts", "_ends", "_tree")

    def __init__(self, intervals: list[tuple[bytes, bytes]]):
        self._intervals = intervals  # etcd's insertion order, for the tree
        self._tree: IntervalTree | None = None
        starts: list[bytes] = []
        ends: list[bytes] = []
        for begin, end in sorted(filter(_holds_keys, intervals), key=lambda iv: iv[0]):
            if ends and (not ends[-1] or begin <= ends[-1]):  # overlaps or touches
                if ends[-1] and (not end or end > ends[-1]):
                    ends[-1] = end
                continue
            starts.append(begin)
            ends.append(end)
        self._starts = starts
        self._ends = ends

    def has_key(self, key: bytes) -> bool:
        i = bisect_right(self._starts, key) - 1
        if i < 0 or not key:
            return False
        end = self._ends[i]
        return not end or key < end

    def covers(self, key: bytes, range_end: bytes) -> bool:
        """Whether the request range is permitted (etcd's isRangeOpPermitted: no range
        end = the key alone, b"\\0" = from the key on)."""
        if not range_end:
            return self.has_key(key)
        if not key:
            return False  # begins "after everything": overlaps no permission
        end = b"" if range_end == _FROM_KEY else range_end
        if end and key >= end:
            # An inverted range: etcd's answer depends on its tree's shape (see
            # fastkv.auth.interval_tree), so build the same tree and ask it.
            if self._tree is None:
                self._tree = IntervalTree()
                for begin, stop in self._intervals:
                    self._tree.insert(begin, stop)
            return self._tree.contains(key, end)
        i = bisect_right(self._starts, key) - 1
        if i < 0:
            return False
        have = self._ends[i]
        return not have or (bool(end) and end <= have)


class _UserPerms:
    __slots__ = ("read", "write")

    def __init__(self, read: _KeySet, write: _KeySet):
        self.read = read
        self.write = write


def _field(req: dict, name: str, kind, default):
    """``req[name]``, checked to be of ``kind`` (the adapters decode types; this keeps a
    wrongly typed request from reaching the state)."""
    value = req.get(name)
    if value is None:  # absent (or JSON null): the proto default
        return default
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise invalid_argument(f"auth request field {name!r} has the wrong type")
    return value


def _text(req: dict, name: str) -> str:
    return _field(req, name, str, "")


def _bytes(req: dict, name: str) -> bytes:
    return bytes(_field(req, name, (bytes, bytearray), b""))


class AuthStore:
    """The auth state of one member (see the module docstring).

    ``tokens`` is this member's token table, told about enable/disable, user
    invalidation and assigned tokens; it is not part of the state."""

    def __init__(self, tokens: SimpleTokens | None = None):
        self.tokens = tokens
        self.enabled = False   # a plain attribute: the one check on the hot path
        self._revision = 1  # etcd's NewAuthStore commits revision 1 into a new backend
        self._users: dict[str, _User] = {}
        self._roles: dict[str, tuple[Perm, ...]] = {}
        self._perm_cache: dict[str, _UserPerms] = {}  # user -> merged permissions

    # ------------------------------------------------------------------ status

    @property
    def revision(self) -> int:
        """The auth revision: what a request header's auth_revision is checked against
        (etcd's Revision(); 3.5's AuthStatusResponse.authRevision)."""
        return self._revision

    def auth_status(self, req: dict | None = None) -> dict:
        """AuthStatusResponse (etcd 3.5's): ``{"enabled", "authRevision"}``."""
        resp: dict = {"authRevision": self._revision}
        if self.enabled:
            resp["enabled"] = True
        return resp

    def _commit(self) -> None:
        """After a change: the next revision, and the permission cache rebuilt on demand."""
        self._revision += 1
        self._perm_cache.clear()

    # ------------------------------------------------------------------ enable/disable

    def auth_enable(self, req: dict | None = None) -> dict:
        """AuthEnableResponse ``{}``. Needs user root holding role root; enabling an
        enabled store changes nothing; enabling does not move the revision (etcd)."""
        if self.enabled:
            return {}
        root = self._users.get(ROOT_USER)
        if root is None:
            raise ErrRootUserNotExist()
        if ROOT_ROLE not in root.roles:
            raise ErrRootRoleNotExist()
        self.enabled = True
        self._perm_cache.clear()
        if self.tokens is not None:
            self.tokens.enable()
        return {}

    def auth_disable(self, req: dict | None = None) -> dict:
        """AuthDisableResponse ``{}``; a no-op when disabled."""
        if not self.enabled:
            return {}
        self.enabled = False
        self._commit()
        if self.tokens is not None:
            self.tokens.disable()
        return {}

    def authenticate(self, req: dict, index: int) -> dict:
        """Apply an InternalAuthenticateRequest ``{"name", "simple_token"}`` (the password
        was checked by :meth:`check_password` before proposing) at log index ``index``;
        returns AuthenticateResponse ``{"token"}``. Changes no state."""
        name = _text(req, "name")
        prefix = _text(req, "simple_token")
        if not self.enabled:
            raise ErrAuthNotEnabled()
        user = self._users.get(name)
        if user is None or user.no_password:
            raise ErrAuthFailed()
        if self.tokens is not None:
            try:
                return {"token": self.tokens.assign(name, prefix, index, self._revision)}
            except TokenAssignError as exc:   # a verify-only JWT key: no state changed
                raise EtcdError(str(exc), GrpcCode.UNKNOWN) from None
        return {"token": simple_token(prefix, index)}

    def check_password(self, name: str, password: str | bytes) -> int:
        """etcd's CheckPassword, run by the member a client asks (not applied): returns
        the auth revision the check was made at (the server re-checks it after the
        authenticate entry is applied, and retries if it moved). Costly: run it off the
        event loop."""
        if not self.enabled:
            raise ErrAuthNotEnabled()
        revision = self._revision
        user = self._users.get(name)
        if user is None:
            raise ErrAuthFailed()
        if user.no_password:
            raise ErrNoPasswordUser()
        if not verify_password(user.password, password):
            raise ErrAuthFailed()
        return revision

    # ------------------------------------------------------------------ users

    def user_add(self, req: dict) -> dict:
        """AuthUserAddRequest ``{"name", "hashedPassword", "options": {"no_password"}}``
        -> AuthUserAddResponse ``{}``. A no-password user keeps no hash."""
        name = _text(req, "name")
        options = _field(req, "options", dict, None) or {}
        no_password = _field(options, "no_password", bool, False)
        hashed = "" if no_password else _text(req, "hashedPassword")
        if not name:
            raise ErrUserEmpty()
        if name in self._users:
            raise ErrUserAlreadyExist()
        self._users[name] = _User(name, hashed, (), no_password)
        self._commit()
        return {}

    def user_delete(self, req: dict) -> dict:
        """AuthUserDeleteRequest ``{"name"}`` -> ``{}``; the user's tokens go too."""
        name = _text(req, "name")
        if self.enabled and name == ROOT_USER:
            raise ErrInvalidAuthMgmt()
        if name not in self._users:
            raise ErrUserNotFound()
        del self._users[name]
        self._commit()
        if self.tokens is not None:
            self.tokens.invalidate_user(name)
        return {}

    def user_change_password(self, req: dict) -> dict:
        """AuthUserChangePasswordRequest ``{"name", "hashedPassword"}`` -> ``{}``; roles
        and options stay (a no-password user stays one, as in etcd 3.4); the user's
        tokens are invalidated."""
        name = _text(req, "name")
        hashed = _text(req, "hashedPassword")
        user = self._users.get(name)
        if user is None:
            raise ErrUserNotFound()
        self._users[name] = _User(name, hashed, user.roles, user.no_password)
        self._commit()
        if self.tokens is not None:
            self.tokens.invalidate_user(name)
        return {}

    def user_grant_role(self, req: dict) -> dict:
        """AuthUserGrantRoleRequest ``{"user", "role"}`` -> ``{}``. Role root need not
        exist; granting a role the user has changes nothing (not even the revision)."""
        name = _text(req, "user")
        role = _text(req, "role")
        user = self._users.get(name)
        if user is None:
            raise ErrUserNotFound()
        if role != ROOT_ROLE and role not in self._roles:
            raise ErrRoleNotFound()
        if role in user.roles:
            return {}
        self._users[name] = user.with_roles(sorted(user.roles + (role,)))
        self._commit()
        return {}

    def user_revoke_role(self, req: dict) -> dict:
        """AuthUserRevokeRoleRequest ``{"name", "role"}`` -> ``{}``."""
        name = _text(req, "name")
        role = _text(req, "role")
        if self.enabled and name == ROOT_USER and role == ROOT_ROLE:
            raise ErrInvalidAuthMgmt()
        user = self._users.get(name)
        if user is None:
            raise ErrUserNotFound()
        if role not in user.roles:
            raise ErrRoleNotGranted()
        self._users[name] = user.with_roles(r for r in user.roles if r != role)
        self._commit()
        return {}

    def user_get(self, req: dict) -> dict:
        """AuthUserGetRequest ``{"name"}`` -> AuthUserGetResponse ``{"roles"}`` (sorted)."""
        user = self._users.get(_text(req, "name"))
        if user is None:
            raise ErrUserNotFound()
        return {"roles": list(user.roles)} if user.roles else {}

    def user_list(self, req: dict | None = None) -> dict:
        """AuthUserListResponse ``{"users"}``, sorted (etcd walks its bucket in key order)."""
        return {"users": sorted(self._users)} if self._users else {}

    # ------------------------------------------------------------------ roles

    def role_add(self, req: dict) -> dict:
        """AuthRoleAddRequest ``{"name"}`` -> ``{}``."""
        name = _text(req, "name")
        if not name:
            raise ErrRoleEmpty()
        if name in self._roles:
            raise ErrRoleAlreadyExist()
        self._roles[name] = ()
        self._commit()
        return {}

    def role_delete(self, req: dict) -> dict:
        """AuthRoleDeleteRequest ``{"role"}`` -> ``{}``; the role is revoked from every user."""
        role = _text(req, "role")
        if self.enabled and role == ROOT_ROLE:
            raise ErrInvalidAuthMgmt()
        if role not in self._roles:
            raise ErrRoleNotFound()
        del self._roles[role]
        for name, user in list(self._users.items()):
            if role in user.roles:
                self._users[name] = user.with_roles(r for r in user.roles if r != role)
        self._commit()
        return {}

    def role_get(self, req: dict) -> dict:
        """AuthRoleGetRequest ``{"role"}`` -> AuthRoleGetResponse ``{"perm": [Permission]}``,
        a Permission being ``{"permType", "key", "range_end"}`` (defaults left out)."""
        perms = self._roles.get(_text(req, "role"))
        if perms is None:
            raise ErrRoleNotFound()
        return {"perm": [_perm_dict(p) for p in perms]} if perms else {}

    def role_list(self, req: dict | None = None) -> dict:
        """AuthRoleListResponse ``{"roles"}``, sorted."""
        return {"roles": sorted(self._roles)} if self._roles else {}

    def role_grant_permission(self, req: dict) -> dict:
        """AuthRoleGrantPermissionRequest ``{"name", "perm": {"permType", "key",
        "range_end"}}`` -> ``{}`` (see the module docstring for the merge rule)."""
        name = _text(req, "name")
        perm = _field(req, "perm", dict, None)
        if perm is None:
            raise ErrPermissionNotGiven()
        key = _bytes(perm, "key")
        range_end = _bytes(perm, "range_end")
        perm_type = _field(perm, "permType", int, READ)
        perms = self._roles.get(name)
        if perms is None:
            raise ErrRoleNotFound()
        new = list(perms)
        i = bisect_left([p[0] for p in new], key)
        if i < len(new) and new[i][0] == key and new[i][1] == range_end:
            new[i] = (key, range_end, perm_type)
        else:
            new.append((key, range_end, perm_type))
            new.sort(key=lambda p: p[0])
        self._roles[name] = tuple(new)
        self._commit()
        return {}

    def role_revoke_permission(self, req: dict) -> dict:
        """AuthRoleRevokePermissionRequest ``{"role", "key", "range_end"}`` -> ``{}``;
        removes every permission with exactly that key and range end."""
        role = _text(req, "role")
        key = _bytes(req, "key")
        range_end = _bytes(req, "range_end")
        perms = self._roles.get(role)
        if perms is None:
            raise ErrRoleNotFound()
        kept = tuple(p for p in perms if p[0] != key or p[1] != range_end)
        if len(kept) == len(perms):
            raise ErrPermissionNotGranted()
        self._roles[role] = kept
        self._commit()
        return {}

    # ------------------------------------------------------------------ checks

    def has_role(self, user: str, role: str) -> bool:
        u = self._users.get(user)
        return u is not None and role in u.roles

    def is_admin(self, user: str) -> bool:
        """etcd's IsAdminPermitted: True (auth disabled, or the user holds role root),
        else raises ErrUserEmpty / ErrUserNotFound / ErrPermissionDenied."""
        if not self.enabled:
            return True
        if not user:
            raise ErrUserEmpty()
        u = self._users.get(user)
        if u is None:
            raise ErrUserNotFound()
        if ROOT_ROLE not in u.roles:
            raise ErrPermissionDenied()
        return True

    def is_range_permitted(self, user: str, key: bytes, range_end: bytes = b"", *,
                           revision: int | None = None) -> bool:
        """May ``user`` read [key, range_end)? True, or raises (see :meth:`_check`)."""
        return self._check(user, revision, key, range_end, False)

    def is_put_permitted(self, user: str, key: bytes, *, revision: int | None = None) -> bool:
        """May ``user`` write ``key``? True, or raises (see :meth:`_check`)."""
        return self._check(user, revision, key, b"", True)

    def is_delete_range_permitted(self, user: str, key: bytes, range_end: bytes = b"", *,
                                  revision: int | None = None) -> bool:
        """May ``user`` delete [key, range_end)? True, or raises (see :meth:`_check`)."""
        return self._check(user, revision, key, range_end, True)

    def _check(self, user: str, revision: int | None, key: bytes, range_end: bytes,
               write: bool) -> bool:
        """etcd's isOpPermitted. ``revision`` is the auth revision the request was
        authorised at (the raft header's auth_revision; a simple token is always at the
        current one, which None stands for): 0 means no user. True when auth is disabled
        or the user may; otherwise raises ErrUserEmpty (no user), ErrAuthOldRevision
        (the store changed since), ErrPermissionDenied (unknown user, or not allowed)."""
        if not self.enabled:
            return True
        if revision is None:
            revision = self._revision if user else 0
        if revision == 0:
            raise ErrUserEmpty()
        if revision < self._revision:
            raise ErrAuthOldRevision()
        u = self._users.get(user)
        if u is None:
            raise ErrPermissionDenied()
        if ROOT_ROLE in u.roles:
            return True
        perms = self._perm_cache.get(user)
        if perms is None:
            perms = self._perm_cache[user] = self._merged_perms(u)
        if (perms.write if write else perms.read).covers(key, range_end):
            return True
        raise ErrPermissionDenied()

    def _merged_perms(self, user: _User) -> _UserPerms:
        """etcd's getMergedPerms: the user's roles' permissions as two interval unions."""
        read, write = [], []
        for role in user.roles:
            for key, range_end, perm_type in self._roles.get(role, ()):
                interval = _perm_interval(key, range_end)
                if perm_type in (READ, READWRITE):
                    read.append(interval)
                if perm_type in (WRITE, READWRITE):
                    write.append(interval)
        return _UserPerms(_KeySet(read), _KeySet(write))

    # ------------------------------------------------------------------ snapshots

    def to_state(self) -> dict:
        """The whole state as marshal-able builtins, in a canonical order: equal
        states give equal (and equally marshalled) results."""
        return {
            "version": STATE_VERSION,
            "enabled": self.enabled,
            "revision": self._revision,
            "users": [[u.name, u.password, list(u.roles), u.no_password]
                      for _, u in sorted(self._users.items())],
            "roles": [[name, [list(p) for p in perms]]
                      for name, perms in sorted(self._roles.items())],
        }

    @classmethod
    def from_state(cls, state: dict, tokens: SimpleTokens | None = None) -> "AuthStore":
        """The store a :meth:`to_state` result describes (etcd's Recover: the token
        table is enabled if auth is)."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"auth state version {state.get('version')!r} unknown")
        store = cls(tokens)
        store.enabled = bool(state["enabled"])
        store._revision = int(state["revision"])
        for name, password, roles, no_password in state["users"]:
            store._users[name] = _User(name, password, tuple(roles), bool(no_password))
        for name, perms in state["roles"]:
            store._roles[name] = tuple((bytes(k), bytes(e), int(t)) for k, e, t in perms)
        if store.enabled and tokens is not None:
            tokens.enable()
        return store


def _perm_dict(perm: Perm) -> dict:
    key, range_end, perm_type = perm
    d: dict = {}
    if perm_type:
        d["permType"] = perm_type
    if key:
        d["key"] = key
    if range_end:
        d["range_end"] = range_end
    return d
