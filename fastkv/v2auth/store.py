"""etcd 3.4's v2 auth store (etcdserver/api/v2auth): users and roles kept as JSON
values in the v2 store under /2 (``/2/users/<name>``, ``/2/roles/<name>``,
``/2/enabled``), read and written with v2 requests exactly as etcd's store does.

Reads are local gets of the v2 store (counted in /v2/stats/store, as etcd's);
quorum reads (QGET) and changes are v2 requests proposed through the Raft log
(``requests.V2`` entries applied by fastkv/v2store/apply.py), so the auth state
replicates, lives in snapshots and survives restarts with the rest of the v2 tree.
Like etcd's, an update is a read followed by a write (not one atomic step), and
the first change a member makes creates /2, /2/users, /2/roles and /2/enabled
(ensureAuthDirectories, once per member process).

Passwords are bcrypt hashes ($2a$, cost 10: Go's bcrypt.DefaultCost), computed by
the member that proposes the change. Go's bcrypt reads at most 72 bytes of a
password, so longer ones are cut there. Hashing and checking run in a worker
thread; a password already checked against a hash is remembered (a bounded map
of digests), so a client sending basic auth with every request pays bcrypt once.
"""
from __future__ import annotations

import asyncio
import hashlib
import time

import bcrypt

from fastkv import requests
from fastkv.v2auth import model
from fastkv.v2auth.model import (GUEST_ROLE, PREFIX, ROOT_ROLE, AuthError, GoJSONError)
from fastkv.v2store import V2Error
from fastkv.v2store import errors as ec
from fastkv.v2store.store import clean_path

BCRYPT_COST = 10              # golang.org/x/crypto/bcrypt.DefaultCost
BCRYPT_MAX_PASSWORD = 72      # bytes Go's bcrypt uses
_CHECKED_MAX = 1024
_ENABLED = PREFIX + "/enabled"


def hash_password(password: bytes) -> str:
    return bcrypt.hashpw(password[:BCRYPT_MAX_PASSWORD],
                         bcrypt.gensalt(BCRYPT_COST, prefix=b"2a")).decode("ascii")


def check_password(hashed: str, password: bytes) -> bool:
    """bcrypt.CompareHashAndPassword == nil."""
    try:
        return bcrypt.checkpw(password[:BCRYPT_MAX_PASSWORD], hashed.encode("utf-8"))
    except ValueError:   # not a bcrypt hash
        return False


class V2AuthStore:
    """One member's view of the v2 auth settings (etcd's v2auth.store)."""

    def __init__(self, server):
        self.server = server
        self.ensured_once = False
        self._checked: dict[bytes, bool] = {}

    # ---- the switch (read on every v2 request, so kept cheap) ----------------------

    def enabled(self) -> bool:
        """AuthEnabled (detectAuth): /2/enabled holds JSON true. One counted get."""
        on, found = self.peek_enabled()
        self.server.v2.count_get(found)
        return on

    def peek_enabled(self) -> tuple[bool, bool]:
        """(auth is on, /2/enabled exists), the read not counted yet: a caller that
        goes on to enabled() must not count it twice (v2_keys.handle_fast)."""
        n = self.server.v2.peek(_ENABLED, count=False)
        return (n is not None and n.children is None
                and n.value.strip(" \t\r\n") == "true"), n is not None

    # ---- v2 requests ------------------------------------------------------------

    def _get(self, res: str):
        return self.server.v2.get(clean_path(PREFIX + "/" + res), now=time.time_ns())

    async def _propose(self, payload: dict):
        payload["now"] = time.time_ns()
        result = await self.server._propose(requests.V2, payload)   # EtcdError propagates
        if isinstance(result, V2Error):
            raise result
        return result

    async def _request(self, res: str, quorum: bool):
        """requestResource: the event of a GET (local) or QGET (through the log)."""
        if not quorum:
            return self._get(res)
        return await self._propose({"method": "QGET", "path": clean_path(PREFIX + "/" + res)})

    async def _ensure_auth_directories(self) -> None:
        if self.ensured_once:
            return
        for res in (PREFIX, PREFIX + "/users/", PREFIX + "/roles/"):
            try:
                await self._propose({"method": "PUT", "path": res, "dir": True,
                                     "prevExist": False})
            except V2Error as e:
                if e.error_code != ec.NODE_EXIST:
                    raise
        try:
            await self._propose({"method": "PUT", "path": _ENABLED, "val": "false",
                                 "prevExist": False})
        except V2Error as e:
            if e.error_code != ec.NODE_EXIST:
                raise
        self.ensured_once = True

    async def _set_resource(self, res: str, value: str, prev_exist: bool):
        await self._ensure_auth_directories()
        payload = {"method": "PUT", "path": clean_path(PREFIX + "/" + res),
                   "prevExist": prev_exist}
        if value:
            payload["val"] = value
        return await self._propose(payload)

    async def _delete_resource(self, res: str) -> None:
        await self._ensure_auth_directories()
        await self._propose({"method": "DELETE", "path": clean_path(PREFIX + "/" + res),
                             "prevExist": True})

    @staticmethod
    def _value(ev) -> str:
        node = ev["node"]
        if node.get("dir"):
            # etcd dereferences a directory's nil value and its handler panics
            raise GoJSONError("a directory has no value")
        return node.get("value", "")

    # ---- users --------------------------------------------------------------------

    def _user(self, name: str, ev) -> dict:
        u = model.user_from_json(model.unmarshal(self._value(ev)))
        if u["user"] == ROOT_ROLE:
            model.attach_root_role(u)
        return u

    def get_user(self, name: str) -> dict:
        """GetUser: a local read."""
        try:
            return self._user(name, self._get("users/" + name))
        except V2Error as e:
            if e.error_code == ec.KEY_NOT_FOUND:
                raise AuthError(404, f"User {name} does not exist.") from None
            raise

    async def _get_user_quorum(self, name: str) -> dict:
        try:
            return self._user(name, await self._request("users/" + name, True))
        except V2Error as e:
            if e.error_code == ec.KEY_NOT_FOUND:
                raise AuthError(404, f"User {name} does not exist.") from None
            raise

    def all_users(self) -> list:
        try:
            ev = self._get("users/")
        except V2Error as e:
            if e.error_code == ec.KEY_NOT_FOUND:
                return []
            raise
        return sorted(n["key"].rsplit("/", 1)[1] for n in ev["node"].get("nodes") or ())

    async def create_or_update_user(self, user: dict) -> tuple[dict, bool]:
        try:
            await self._get_user_quorum(user["user"])
        except Exception:
            return await self.create_user(user), True
        return await self.update_user(user), False

    async def create_user(self, user: dict) -> dict:
        if user["user"] == ROOT_ROLE:
            model.attach_root_role(user)
        if user["password"] == "":
            raise AuthError(400, f"Cannot create user {user['user']} with an empty password")
        user = dict(user, password=await self.hash_password(user["password"]))
        try:
            await self._set_resource("users/" + user["user"], model.user_json(user), False)
        except V2Error as e:
            if e.error_code == ec.NODE_EXIST:
                raise AuthError(409, f"User {user['user']} already exists.") from None
            raise
        return user

    async def delete_user(self, name: str) -> None:
        if self.enabled() and name == ROOT_ROLE:
            raise AuthError(403, "Cannot delete root user while auth is enabled.")
        try:
            await self._delete_resource("users/" + name)
        except V2Error as e:
            if e.error_code == ec.KEY_NOT_FOUND:
                raise AuthError(404, f"User {name} does not exist") from None
            raise

    async def update_user(self, user: dict) -> dict:
        # (etcd's "User %s doesn't exist." is never said: the read already turned a
        # missing key into "User %s does not exist.")
        old = await self._get_user_quorum(user["user"])
        roles = model.merge_user_roles(old, user)
        password = old["password"]
        if user["password"] != "":
            password = await self.hash_password(user["password"])
        new = {"user": old["user"], "password": password, "roles": roles,
               "grant": None, "revoke": None}
        if new == old:
            raise AuthError(400, "User not updated. Use grant/revoke/password to update "
                                 "the user.")
        await self._set_resource("users/" + user["user"], model.user_json(new), True)
        return new

    # ---- roles --------------------------------------------------------------------

    def _role(self, name: str, ev) -> dict:
        return model.role_from_json(model.unmarshal(self._value(ev)))

    def get_role(self, name: str) -> dict:
        """GetRole: a local read (the root role is fixed, not stored)."""
        if name == ROOT_ROLE:
            return model.root_role()
        try:
            return self._role(name, self._get("roles/" + name))
        except V2Error as e:
            if e.error_code == ec.KEY_NOT_FOUND:
                raise AuthError(404, f"Role {name} does not exist.") from None
            raise

    async def _get_role_quorum(self, name: str) -> dict:
        if name == ROOT_ROLE:
            return model.root_role()
        try:
            return self._role(name, await self._request("roles/" + name, True))
        except V2Error as e:
            if e.error_code == ec.KEY_NOT_FOUND:
                raise AuthError(404, f"Role {name} does not exist.") from None
            raise

    def all_roles(self) -> list:
        names = [ROOT_ROLE]
        try:
            ev = self._get("roles/")
        except V2Error as e:
            if e.error_code == ec.KEY_NOT_FOUND:
                return names
            raise
        names += [n["key"].rsplit("/", 1)[1] for n in ev["node"].get("nodes") or ()]
        return sorted(names)

    async def create_role(self, role: dict) -> None:
        if role["role"] == ROOT_ROLE:
            raise AuthError(403, f"Cannot modify role {role['role']}: is root role.")
        try:
            await self._set_resource("roles/" + role["role"], model.role_json(role), False)
        except V2Error as e:
            if e.error_code == ec.NODE_EXIST:
                raise AuthError(409, f"Role {role['role']} already exists.") from None
            raise

    async def delete_role(self, name: str) -> None:
        if name == ROOT_ROLE:
            raise AuthError(403, f"Cannot modify role {name}: is root role.")
        try:
            await self._delete_resource("roles/" + name)
        except V2Error as e:
            if e.error_code == ec.KEY_NOT_FOUND:
                raise AuthError(404, f"Role {name} doesn't exist.") from None
            raise

    async def update_role(self, role: dict) -> dict:
        if role["role"] == ROOT_ROLE:
            raise AuthError(403, f"Cannot modify role {role['role']}: is root role.")
        old = await self._get_role_quorum(role["role"])   # (as for users)
        new = model.merge_role(old, role)
        if new == old:
            raise AuthError(400, "Role not updated. Use grant/revoke to update the role.")
        await self._set_resource("roles/" + role["role"], model.role_json(new), True)
        return new

    # ---- the switch ---------------------------------------------------------------

    async def enable_auth(self) -> None:
        if self.enabled():
            raise AuthError(409, "already enabled")
        try:
            await self._get_user_quorum(ROOT_ROLE)
        except Exception:
            raise AuthError(409, "No root user available, please create one") from None
        try:
            await self._get_role_quorum(GUEST_ROLE)
        except Exception:
            await self.create_role(model.guest_role())
        await self._set_resource("enabled", "true", True)

    async def disable_auth(self) -> None:
        if not self.enabled():
            raise AuthError(409, "already disabled")
        await self._set_resource("enabled", "false", True)

    # ---- passwords ----------------------------------------------------------------

    async def hash_password(self, password: str) -> str:
        data = password.encode("utf-8", "surrogateescape")
        return await asyncio.get_running_loop().run_in_executor(None, hash_password, data)

    async def check_password(self, user: dict, password: bytes) -> bool:
        hashed = user["password"]
        key = hashlib.sha256(hashed.encode("utf-8", "surrogateescape") + b"\0"
                             + password).digest()
        if key in self._checked:
            return True
        ok = await asyncio.get_running_loop().run_in_executor(
            None, check_password, hashed, password)
        if ok:
            if len(self._checked) >= _CHECKED_MAX:
                self._checked.clear()
            self._checked[key] = True
        return ok
