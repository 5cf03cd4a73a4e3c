"""The asyncio client: :class:`AsyncClient`, with :class:`AsyncLease` and
:class:`AsyncWatch`. Same methods as :class:`~fastkv.client.Client`, awaited."""
from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time
from typing import IO, Any, Awaitable, Callable

import grpc
import grpc.aio

from fastkv.proto.etcdserverpb import rpc_pb2 as pb

from . import _requests as R
from . import errors
from ._calls import (_CLOSED, _UNSET, AsyncUnaryCalls, ConnCore, LeaseCore, WatchCore, _Stop,
                     snapshot_file)
from ._requests import KeyLike
from ._types import Event, LeaseInfo, WatchResponse
from .txn import AsyncTxn

__all__ = ["AsyncClient", "AsyncLease", "AsyncWatch"]

log = logging.getLogger("fastkv.client")



class _Conn(ConnCore):
    """One endpoint's grpc.aio channel and stubs, made on first use (in the loop)."""

    _channels = grpc.aio

    def stubs(self) -> R.Stubs:
        if self._stubs is None:
            self._stubs = self._open()
        return self._stubs

    async def close(self) -> None:
        if self._stubs is not None:
            stubs, self._stubs = self._stubs, None
            await stubs.channel.close()


class AsyncClient(AsyncUnaryCalls):
    """The asyncio etcd v3 client: the same constructor and methods as
    :class:`~fastkv.client.Client`, as coroutines.

        async with AsyncClient("http://127.0.0.1:2379") as c:
            await c.put("k", "v")

    ``lease()`` and ``watch()`` return objects to ``await`` or to use with
    ``async with``; ``txn()`` returns a builder whose ``commit()`` is awaited.
    """

    _conn_class = _Conn
    _lock_class = asyncio.Lock

    # ---- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop every watch and lease keep-alive of this client and close its
        connections (leases are not revoked: they expire)."""
        if self._closed:
            return
        self._closed = True
        for c in list(self._children):
            try:
                await c._shutdown()
            except Exception:   # noqa: BLE001 - closing goes on
                log.debug("closing %r", c, exc_info=True)
        for c in self._conns:
            await c.close()

    # ---- transport ---------------------------------------------------------------------

    async def _token_metadata(self, with_token: bool, deadline) -> tuple | None:
        if not with_token or not self._auth.has_credentials:
            return None
        if self._auth.needs_token():
            await self._authenticate(self._auth.generation, deadline)
        return self._auth.metadata()

    async def _authenticate(self, seen_generation: int, deadline) -> None:
        async with self._auth_lock:
            if self._auth.generation != seen_generation and self._auth.token:
                return
            try:
                token = await self._invoke(
                    R.c_authenticate(self._auth.user, self._auth.password), deadline=deadline)
            except errors.AuthNotEnabled:
                self._auth.set_token(None, disabled=True)
                return
            self._auth.set_token(token)

    async def _reauthenticate(self, generation: int, deadline) -> None:
        """The server refused our token: drop it and fetch a new one."""
        self._auth.set_token(None)
        await self._authenticate(generation + 1, deadline)

    async def _before_retry(self, action: str, pause: float, generation: int, deadline) -> None:
        """After a failed attempt (:meth:`Attempts.failed`): authenticate again
        (REAUTH) or pause before the next one."""
        if action == R.REAUTH:
            await self._reauthenticate(generation, deadline)
        elif pause:
            await asyncio.sleep(pause)

    async def _invoke(self, call: R.Call, *, timeout=_UNSET, deadline=_UNSET,
                      endpoint: int | None = None):
        """Send one unary call, with failover and token refresh per the retry policy."""
        self._check_open()
        att = R.Attempts(self._pool, self._deadline(timeout) if deadline is _UNSET else deadline,
                         endpoint)
        while True:
            idx = att.pick()
            conn = self._conns[idx]
            generation = self._auth.generation
            md = await self._token_metadata(call.with_token, att.deadline)
            self._check_open()
            try:
                resp = await conn.stubs().method(call.service, call.method)(
                    call.request, timeout=att.remaining(), metadata=md)
            except grpc.RpcError as e:
                if self._closed:
                    raise errors.ClientClosed("client is closed") from None
                action, pause = att.failed(idx, conn.endpoint.url, call.repeatable, e.code(),
                                           e.details(), self._can_reauth(call.with_token))
                await self._before_retry(action, pause, generation, att.deadline)
                continue
            att.succeeded(idx)
            return call.convert(resp)

    # ---- KV ----------------------------------------------------------------------------

    def txn(self) -> AsyncTxn:
        """A transaction builder: ``await c.txn().if_(...).then(...).else_(...).commit()``."""
        return AsyncTxn(self)

    # ---- leases ------------------------------------------------------------------------

    async def lease_keepalive_once(self, id: int) -> int:
        return R.keepalive_ttl(id, await self._keepalive_once(id, self._deadline(_UNSET)))

    async def _keepalive_once(self, id: int, deadline):
        """One LeaseKeepAlive exchange (repeatable: failover, token refresh)."""
        self._check_open()
        req = pb.LeaseKeepAliveRequest(ID=id)
        att = R.Attempts(self._pool, deadline)
        while True:
            idx = att.pick()
            conn = self._conns[idx]
            generation = self._auth.generation
            md = await self._token_metadata(True, deadline)
            self._check_open()
            call = None
            try:
                call = conn.stubs().Lease.LeaseKeepAlive(timeout=att.remaining(), metadata=md)
                await call.write(req)
                resp = await call.read()
                code = details = None
                if resp is grpc.aio.EOF:
                    resp, code, details = None, grpc.StatusCode.UNAVAILABLE, \
                        "keep-alive stream ended"
            except grpc.RpcError as e:
                resp, code, details = None, e.code(), e.details()
            finally:
                if call is not None:
                    call.cancel()
            if resp is not None:
                att.succeeded(idx)
                return resp
            if self._closed:
                raise errors.ClientClosed("client is closed")
            action, pause = att.failed(idx, conn.endpoint.url, True, code, details,
                                       self._can_reauth())
            await self._before_retry(action, pause, generation, deadline)

    def lease(self, ttl: int, *, on_lost: Callable[["AsyncLease"], Any] | None = None,
              id: int = 0) -> "AsyncLease":
        """A lease kept alive by a background task: ``lease = await c.lease(10)`` or
        ``async with c.lease(10) as lease:`` (revoked on exit). ``on_lost(lease)``
        (a function or a coroutine function) runs if the lease is lost."""
        return AsyncLease(self, ttl, id, on_lost)

    # ---- watch -------------------------------------------------------------------------

    def watch(self, key: KeyLike, end: KeyLike | None = None, *, prefix: bool = False,
              from_key: bool = False, start_revision: int = 0, prev_kv: bool = False,
              no_put: bool = False, no_delete: bool = False, progress_notify: bool = False,
              require_leader: bool = True, max_buffer: int = 1024) -> "AsyncWatch":
        """A watch: ``w = await c.watch("k")`` or ``async with c.watch("k") as w:``,
        then ``async for event in w``. Created (so later changes are seen) once awaited."""
        state = R.WatchState(key, end, prefix=prefix, from_key=from_key,
                             start_revision=start_revision, prev_kv=prev_kv, no_put=no_put,
                             no_delete=no_delete, progress_notify=progress_notify)
        return AsyncWatch(self, state, require_leader, max_buffer)

    # ---- cluster -----------------------------------------------------------------------

    # ---- maintenance -------------------------------------------------------------------

    async def snapshot(self, file: str | os.PathLike | IO[bytes]) -> int:
        """Stream a snapshot into ``file`` (a path, written to a temporary name and
        renamed when complete, or a binary file object); the bytes written."""
        self._check_open()
        with snapshot_file(file) as f:
            return await self._snapshot_to(f)

    async def _snapshot_to(self, f) -> int:
        # no deadline: a snapshot may take long; resent only before any data came
        att = R.Attempts(self._pool, None, max_rounds=3)
        while True:
            idx = att.pick()
            conn = self._conns[idx]
            generation = self._auth.generation
            md = await self._token_metadata(True, None)
            written = 0
            try:
                async for resp in conn.stubs().Maintenance.Snapshot(pb.SnapshotRequest(),
                                                                    metadata=md):
                    if resp.blob:
                        f.write(resp.blob)
                        written += len(resp.blob)
                att.succeeded(idx)
                return written
            except grpc.RpcError as e:
                action, pause = att.failed(idx, conn.endpoint.url, written == 0, e.code(),
                                           e.details(), self._can_reauth() and written == 0)
                await self._before_retry(action, pause, generation, None)

    async def move_leader(self, target_id: int) -> None:
        leader_idx = None
        for i in range(len(self._pool)):
            try:
                st = await self._invoke(R.c_status(), endpoint=i)
            except errors.EtcdError:
                continue
            if st.is_leader:
                leader_idx = i
                break
        if leader_idx is None:
            raise errors.NotLeader("etcdserver: not leader (no endpoint of this client is "
                                   "the leader)", grpc.StatusCode.FAILED_PRECONDITION)
        await self._invoke(R.c_move_leader(target_id), endpoint=leader_idx)

    # ---- auth --------------------------------------------------------------------------


# ---- AsyncLease --------------------------------------------------------------------------------

class AsyncLease(LeaseCore):
    """A lease kept alive by a background task (made by :meth:`AsyncClient.lease`).

    ``await`` it (or ``async with`` it) to grant it; then ``id``, ``ttl``, ``alive``,
    ``lost``, ``lost_reason``, ``await wait_lost(timeout)``, ``check()``,
    ``await revoke()``, ``await close()``.
    """

    def __init__(self, client: AsyncClient, ttl: int, id: int = 0,
                 on_lost: Callable[["AsyncLease"], Any] | None = None):
        self._client = client
        self._want_ttl = ttl
        self._want_id = id
        self.on_lost = on_lost
        self.id: int = 0
        self.ttl: int = 0
        self.lost_reason: str | None = None
        #: time.monotonic() of the last keep-alive the cluster answered (None: none yet)
        self.last_keepalive: float | None = None
        self._lost = asyncio.Event()
        self._done = False
        self._task: asyncio.Task | None = None
        self._expires = 0.0

    def __repr__(self) -> str:
        state = "alive" if self.alive else ("lost" if self.lost else "not granted/closed")
        return f"<AsyncLease {self.id} ttl={self.ttl} {state}>"

    def __await__(self):
        return self._start().__await__()

    async def __aenter__(self) -> "AsyncLease":
        return await self._start()

    async def __aexit__(self, *exc) -> None:
        await self.revoke()

    async def _start(self) -> "AsyncLease":
        if self._task is None:
            started = time.monotonic()
            grant = await self._client.lease_grant(self._want_ttl, id=self._want_id)
            self.id, self.ttl = grant.id, grant.ttl
            self._expires = started + grant.ttl
            self._client._register(self)
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"fastkv-lease-{self.id:x}")
        return self

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._lost.is_set() and not self._done

    async def wait_lost(self, timeout: float | None = None) -> bool:
        """Wait until the lease is lost (True) or ``timeout`` passes (False)."""
        try:
            await asyncio.wait_for(self._lost.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def time_to_live(self, *, keys: bool = False) -> LeaseInfo:
        return await self._client.lease_time_to_live(self.id, keys=keys)

    async def _run(self) -> None:
        wait = R.keepalive_interval(self.ttl)
        while True:
            await asyncio.sleep(wait)
            sent = time.monotonic()
            try:
                resp = await self._client._keepalive_once(self.id,
                                                          self._keepalive_deadline(sent))
                new_ttl = R.keepalive_ttl(self.id, resp)
            except errors.LeaseNotFound:
                await self._mark_lost("the lease expired or was revoked")
                return
            except errors.ClientClosed:
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:   # noqa: BLE001 - unreachable for now; keep trying
                if self._expired():
                    await self._mark_lost(
                        f"no keep-alive got through before the lease expired ({e})")
                    return
                wait = self._retry_wait()
                continue
            wait = self._renewed(sent, new_ttl)

    async def _mark_lost(self, reason: str) -> None:
        if self._done:
            return
        self._record_loss(reason)
        if self.on_lost is not None:
            try:
                r = self.on_lost(self)
                if inspect.isawaitable(r):
                    await r
            except Exception:   # noqa: BLE001
                log.exception("on_lost callback of lease %d failed", self.id)

    async def _shutdown(self) -> None:
        self._done = True
        self._client._unregister(self)
        task = self._task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):   # noqa: BLE001
                pass

    async def close(self) -> None:
        """Stop keeping the lease alive (it expires after its TTL)."""
        await self._shutdown()

    async def revoke(self) -> None:
        """Stop the keep-alive and revoke the lease; a lease already gone is fine."""
        await self._shutdown()
        if self.id:
            try:
                await self._client.lease_revoke(self.id)
            except errors.LeaseNotFound:
                pass


# ---- AsyncWatch --------------------------------------------------------------------------------

class AsyncWatch(WatchCore):
    """A running watch (made by :meth:`AsyncClient.watch`).

    ``await`` it (or ``async with`` it) to create it on the server, then
    ``async for event in watch``; ``await get(timeout)`` for the next event
    (``TimeoutError``); ``responses()`` for whole batches;
    ``await request_progress()``; ``await close()``. Resumes after a broken stream
    like the sync :class:`~fastkv.client.Watch`.
    """

    def __init__(self, client: AsyncClient, state: R.WatchState, require_leader: bool,
                 max_buffer: int):
        super().__init__(client, state, require_leader)
        self._max_buffer = max(1, max_buffer)
        self._queue: asyncio.Queue | None = None
        self._closed = False
        self._created: asyncio.Event | None = None
        self._call = None
        self._task: asyncio.Task | None = None

    def __await__(self):
        return self._start().__await__()

    async def __aenter__(self) -> "AsyncWatch":
        return await self._start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def __aiter__(self) -> "AsyncWatch":
        return self

    async def __anext__(self) -> Event:
        await self._start()
        try:
            return await self._next_event()
        except _Stop:
            raise StopAsyncIteration from None

    async def get(self, timeout: float | None = None) -> Event:
        """The next event; ``TimeoutError`` if none comes within ``timeout`` seconds."""
        await self._start()
        try:
            return await asyncio.wait_for(self._next_event(), timeout)
        except _Stop:
            raise errors.ClientClosed("watch is closed") from None

    async def responses(self):
        """Iterate whole batches (:class:`WatchResponse`; empty: progress notifications)."""
        await self._start()
        while True:
            try:
                yield await self._next_response()
            except _Stop:
                return

    async def get_response(self, timeout: float | None = None) -> WatchResponse:
        await self._start()
        try:
            return await asyncio.wait_for(self._next_response(), timeout)
        except _Stop:
            raise errors.ClientClosed("watch is closed") from None

    async def request_progress(self) -> None:
        """Ask the server for a progress notification."""
        call = self._call
        if call is not None:
            await call.write(self._state.progress_request())

    async def close(self) -> None:
        await self._shutdown()

    async def _next_event(self) -> Event:
        while not self._events:
            self._events.extend((await self._next_response()).events)
        return self._events.popleft()

    async def _next_response(self) -> WatchResponse:
        self._check_finished(self._closed)
        return self._taken(await self._queue.get())

    async def _start(self) -> "AsyncWatch":
        if self._task is not None:
            return self
        self._client._check_open()
        self._queue = asyncio.Queue(self._max_buffer)
        self._created = asyncio.Event()
        self._client._register(self)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="fastkv-watch")
        deadline = self._client._deadline(_UNSET)
        timeout = None if deadline is None else max(deadline - time.monotonic(), 0)
        try:
            await asyncio.wait_for(self._created.wait(), timeout)
        except asyncio.TimeoutError:
            await self._shutdown()
            raise errors.Timeout("watch was not created in time (no endpoint answered)") \
                from None
        if self._error is not None and not self._state.created_once:
            err = self._error
            await self._shutdown()
            raise err
        return self

    def _fail(self, err: BaseException) -> Awaitable[None]:
        self._error = err
        self._created.set()
        return self._queue.put(err)

    async def _run(self) -> None:
        client = self._client
        attempts = R.WatchAttempts(client._pool, client._auth)
        while not self._closed:
            idx = client._pool.pick()
            conn = client._conns[idx]
            self.endpoint = conn.endpoint.url
            call = None
            try:
                generation = client._auth.generation
                md = (await client._token_metadata(True, client._deadline(_UNSET)) or ()) \
                    + self._md_extra
                client._check_open()
                call = conn.stubs().Watch.Watch(metadata=md)
                self._call = call
                await call.write(self._state.create_request())
                while True:
                    resp = await call.read()
                    if resp is grpc.aio.EOF:
                        break
                    out = self._state.handle(resp, conn.endpoint.url)
                    if resp.created:
                        attempts.created(idx)
                        self._created.set()
                    if out is not None:
                        await self._queue.put(out)
                client._pool.failed(idx)   # the server ended the stream: make it again
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._closed or (task is not None and task.cancelling()):
                    raise
                # the call (not this task) was cancelled: a broken stream
                client._pool.failed(idx)
            except errors.ClientClosed:
                return
            except (grpc.RpcError, errors.EtcdError) as e:
                action, err = attempts.failed(e, idx, conn.endpoint.url, self._closed,
                                              self._state.next_revision)
                if action == R.REAUTH:
                    try:
                        await client._reauthenticate(generation, client._deadline(_UNSET))
                    except errors.EtcdError as reauth_err:
                        await self._fail(reauth_err)
                        return
                    continue
                if action == R.FAIL:
                    await self._fail(err)
                    return
                if action == R.STOP:
                    return
            finally:
                self._call = None
                if call is not None:
                    call.cancel()
            pause = attempts.pause()
            if pause:
                await asyncio.sleep(pause)

    async def _shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._client._children.discard(self)
        call = self._call
        if call is not None:
            call.cancel()
        task = self._task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):   # noqa: BLE001
                pass
        if self._created is not None:
            self._created.set()
        if self._queue is not None:
            try:
                self._queue.put_nowait(_CLOSED)
            except asyncio.QueueFull:
                pass
