"""Server-side locks and elections: etcd's v3lock and v3election services.

etcd serves these by running its client-side recipes (clientv3/concurrency:
Mutex, Election) inside the member against its own KV API; so do we, on the
server's dict API (docs/internals.md), with the same keys, the same
transactions and the same answers:

- a contender's key is ``<name>/<lease id in hex>``, put under its lease;
- the owner is the key under ``<name>/`` with the lowest create revision;
- a waiter watches the newest key created before its own until it is deleted,
  and again, until no older key is left (etcd's waitDeletes).

A session with lease 0 gets a new 60 s lease (etcd's default session TTL) that
nobody keeps alive, as etcd's orphaned sessions. Errors that come from the
KV layer keep their message but travel with gRPC's Unknown code, as they do
through etcd's in-process client; the recipes' own errors are etcd's plain
strings ("election: no leader", ...).
"""
from __future__ import annotations

import asyncio

from fastkv.errors import EtcdError, GrpcCode
from fastkv.keyrange import prefix_end

SESSION_TTL = 60   # concurrency.defaultSessionTTL

_EQUAL, _ASCEND, _DESCEND, _SORT_CREATE = 0, 1, 2, 2
_TARGET_CREATE = 1   # Compare.CREATE


class RecipeError(EtcdError):
    """An error of the recipes themselves: plain text, code Unknown (Go's errors.New)."""
    code = GrpcCode.UNKNOWN


ErrElectionNoLeader = RecipeError("election: no leader")
ErrElectionNotLeader = RecipeError("election: not leader")
ErrMissingLeaderKey = RecipeError('"leader" field must be provided')


def _create_is(key: bytes, rev: int) -> dict:
    return {"key": key, "result": _EQUAL, "target": _TARGET_CREATE, "create_revision": rev}


def _top(prefix: bytes, order: int, max_create: int = 0) -> dict:
    """withTop: the first (or last) key by create revision under a prefix."""
    req = {"key": prefix, "range_end": prefix_end(prefix), "sort_target": _SORT_CREATE,
           "sort_order": order, "limit": 1}
    if max_create:
        req["max_create_revision"] = max_create
    return req


def _as_unknown(err: EtcdError) -> EtcdError:
    if isinstance(err, RecipeError):
        return err
    return EtcdError(err.message, GrpcCode.UNKNOWN)


class _AsCaller:
    """The server's KV API with one caller's credentials on every call: etcd's recipes
    run through its in-process client with the caller's context, so every range, txn,
    delete, lease grant and watch they make is checked as the caller's own."""

    def __init__(self, server, creds):
        self._server = server
        self._creds = creds

    async def range(self, req: dict) -> dict:
        return await self._server.range(req, self._creds)

    async def txn(self, req: dict) -> dict:
        return await self._server.txn(req, self._creds)

    async def delete_range(self, req: dict) -> dict:
        return await self._server.delete_range(req, self._creds)

    async def lease_grant(self, req: dict) -> dict:
        return await self._server.lease_grant(req, self._creds)

    def watch_stream(self):
        return self._server.watch_stream(self._creds)


class Recipes:
    """Locks and elections over a fastkv.server.Server."""

    def __init__(self, server):
        self.server = server

    def as_caller(self, creds) -> "Recipes":
        """These recipes acting with a caller's credentials (fastkv.auth.identity)."""
        return self if creds is None else Recipes(_AsCaller(self.server, creds))

    # ------------------------------------------------------------- sessions

    async def _contender(self, name: bytes, lease: int) -> tuple[int, bytes, bytes]:
        """(lease, prefix, key) of a session's contender for `name` (a new orphaned
        lease when none is given)."""
        if not lease:
            lease = (await self.server.lease_grant({"TTL": SESSION_TTL}))["ID"]
        prefix = name + b"/"
        return lease, prefix, prefix + b"%x" % lease

    # ------------------------------------------------------------- waiting

    async def _wait_delete(self, key: bytes, rev: int) -> None:
        """Until `key` is deleted (watching from revision `rev`)."""
        stream = self.server.watch_stream()
        try:
            await stream.handle({"create_request": {"key": key, "start_revision": rev}})
            async for resp in stream.responses():
                if resp.get("canceled"):
                    raise EtcdError(resp.get("cancel_reason") or "etcdserver: watch canceled",
                                    GrpcCode.UNKNOWN)
                for ev in resp.get("events", ()):
                    if ev.get("type", 0) == 1:
                        return
        finally:
            stream.close()

    async def _wait_deletes(self, prefix: bytes, max_create: int) -> dict:
        """etcd's waitDeletes: until no key under prefix was created at or before
        max_create; returns the header of the last read."""
        while True:
            resp = await self.server.range(_top(prefix, _DESCEND, max_create))
            kvs = resp.get("kvs")
            if not kvs:
                return resp["header"]
            await self._wait_delete(kvs[0]["key"], resp["header"]["revision"])

    # ------------------------------------------------------------- v3lock

    async def lock(self, name: bytes, lease: int) -> dict:
        """LockResponse {header, key}: returns once this contender owns the lock."""
        try:
            lease, prefix, key = await self._contender(name, lease)
            resp = await self.server.txn({
                "compare": [_create_is(key, 0)],
                "success": [{"request_put": {"key": key, "lease": lease}},
                            {"request_range": _top(prefix, _ASCEND)}],
                "failure": [{"request_range": {"key": key}},
                            {"request_range": _top(prefix, _ASCEND)}]})
            my_rev = resp["header"]["revision"]
            if not resp.get("succeeded"):
                my_rev = resp["responses"][0]["response_range"]["kvs"][0]["create_revision"]
            owner = resp["responses"][1]["response_range"].get("kvs")
            header = resp["header"]
            if owner and owner[0]["create_revision"] != my_rev:
                try:
                    header = await self._wait_deletes(prefix, my_rev - 1)
                except BaseException:
                    # gave up (client gone, error): release our place in the queue
                    await self._detached(self.server.delete_range({"key": key}))
                    raise
            return {"header": header, "key": key}
        except EtcdError as err:
            raise _as_unknown(err) from None

    async def unlock(self, key: bytes) -> dict:
        try:
            resp = await self.server.delete_range({"key": key})
        except EtcdError as err:
            raise _as_unknown(err) from None
        return {"header": resp["header"]}

    async def _detached(self, coro) -> None:
        """Run a clean-up to its end even if our caller is being cancelled."""
        task = asyncio.ensure_future(coro)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            pass
        except EtcdError:
            pass

    # ------------------------------------------------------------- v3election

    async def campaign(self, name: bytes, lease: int, value: bytes) -> dict:
        """CampaignResponse {header, leader: LeaderKey}: once this candidate leads."""
        try:
            lease, prefix, key = await self._contender(name, lease)
            resp = await self.server.txn({
                "compare": [_create_is(key, 0)],
                "success": [{"request_put": {"key": key, "value": value, "lease": lease}}],
                "failure": [{"request_range": {"key": key}}]})
            rev = resp["header"]["revision"]
            if not resp.get("succeeded"):
                kv = resp["responses"][0]["response_range"]["kvs"][0]
                rev = kv["create_revision"]
                if kv.get("value", b"") != value:
                    try:
                        await self._proclaim(key, rev, lease, value)
                    except BaseException:
                        await self._detached(self._resign(key, rev))
                        raise
            try:
                await self._wait_deletes(prefix, rev - 1)
            except BaseException:
                await self._detached(self._resign(key, rev))
                raise
            leader = {"name": name, "key": key, "rev": rev, "lease": lease}
            return {"header": resp["header"], "leader": leader}
        except EtcdError as err:
            raise _as_unknown(err) from None

    async def _proclaim(self, key: bytes, rev: int, lease: int, value: bytes) -> dict:
        resp = await self.server.txn({
            "compare": [_create_is(key, rev)],
            "success": [{"request_put": {"key": key, "value": value, "lease": lease}}]})
        if not resp.get("succeeded"):
            raise ErrElectionNotLeader
        return resp["header"]

    async def _resign(self, key: bytes, rev: int) -> dict:
        resp = await self.server.txn({"compare": [_create_is(key, rev)],
                                      "success": [{"request_delete_range": {"key": key}}]})
        return resp["header"]

    @staticmethod
    def _leader_key(leader: dict | None) -> dict:
        if leader is None:
            raise ErrMissingLeaderKey
        return leader

    async def proclaim(self, leader: dict | None, value: bytes) -> dict:
        leader = self._leader_key(leader)
        try:
            hdr = await self._proclaim(leader.get("key", b""), leader.get("rev", 0),
                                       leader.get("lease", 0), value)
        except EtcdError as err:
            raise _as_unknown(err) from None
        return {"header": hdr}

    async def resign(self, leader: dict | None) -> dict:
        leader = self._leader_key(leader)
        try:
            hdr = await self._resign(leader.get("key", b""), leader.get("rev", 0))
        except EtcdError as err:
            raise _as_unknown(err) from None
        return {"header": hdr}

    async def leader(self, name: bytes) -> dict:
        """LeaderResponse {header, kv}: the current leader's key."""
        try:
            resp = await self.server.range(_top(name + b"/", _ASCEND))
        except EtcdError as err:
            raise _as_unknown(err) from None
        kvs = resp.get("kvs")
        if not kvs:
            raise ErrElectionNoLeader
        return {"header": resp["header"], "kv": kvs[0]}

    async def observe(self, name: bytes):
        """etcd's Election.Observe: the leader now (or the first one to come), each
        new value it proclaims, then the next leader once it is gone, and so on."""
        prefix = name + b"/"
        while True:
            resp = await self.server.range(_top(prefix, _ASCEND))
            kvs = resp.get("kvs")
            if kvs:
                hdr, kv = resp["header"], kvs[0]
            else:
                hdr, kv = await self._first_put(prefix, resp["header"]["revision"])
            yield {"header": hdr, "kv": kv}
            async for item in self._values_until_deleted(kv["key"], hdr["revision"] + 1):
                yield item

    async def _first_put(self, prefix: bytes, rev: int):
        stream = self.server.watch_stream()
        try:
            await stream.handle({"create_request": {
                "key": prefix, "range_end": prefix_end(prefix), "start_revision": rev}})
            async for resp in stream.responses():
                for ev in resp.get("events", ()):
                    if ev.get("type", 0) == 0:
                        kv = ev["kv"]
                        hdr = dict(resp["header"])
                        hdr["revision"] = kv["mod_revision"]
                        return hdr, kv
        finally:
            stream.close()
        raise ErrElectionNoLeader   # the stream ended (the member is stopping)

    async def _values_until_deleted(self, key: bytes, rev: int):
        stream = self.server.watch_stream()
        try:
            await stream.handle({"create_request": {"key": key, "start_revision": rev}})
            async for resp in stream.responses():
                for ev in resp.get("events", ()):
                    if ev.get("type", 0) == 1:
                        return
                    yield {"header": resp["header"], "kv": ev["kv"]}
        finally:
            stream.close()
