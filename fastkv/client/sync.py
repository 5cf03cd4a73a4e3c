"""The blocking client: :class:`Client`, with :class:`Lease` and :class:`Watch`."""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import IO, Callable, Iterator

import grpc

from fastkv.proto.etcdserverpb import rpc_pb2 as pb

from . import _requests as R
from . import errors
from ._calls import (_CLOSED, _UNSET, ConnCore, LeaseCore, UnaryCalls, WatchCore, _Stop,
                     snapshot_file)
from ._requests import KeyLike
from ._types import Event, LeaseGrant, LeaseInfo, WatchResponse
from .txn import Txn

__all__ = ["Client", "Lease", "Watch"]

log = logging.getLogger("fastkv.client")



class _Conn(ConnCore):
    """One endpoint's channel and stubs, made on first use."""

    _channels = grpc

    def __init__(self, endpoint: R.Endpoint, creds: grpc.ChannelCredentials | None,
                 options: list):
        super().__init__(endpoint, creds, options)
        self._lock = threading.Lock()

    def stubs(self) -> R.Stubs:
        with self._lock:
            if self._stubs is None:
                self._stubs = self._open()
            return self._stubs

    def close(self) -> None:
        with self._lock:
            if self._stubs is not None:
                self._stubs.channel.close()
                self._stubs = None


class Client(UnaryCalls):
    """A blocking etcd v3 client (fastkv or etcd 3.4).

    ``endpoints``: one URL or a list (``http://host:port``, ``https://host:port``,
    or ``host:port`` which uses TLS when TLS files are given). ``balance``:
    ``"round-robin"`` (etcd clientv3's way: each call or stream goes to the next
    endpoint that has not failed lately) or ``"pinned"`` (one endpoint until it
    fails); a failed endpoint is skipped (see the retry policy in docs/client.md).

    ``timeout``: seconds for each call, retries included (None: no deadline).
    ``user``/``password``: authenticate (the token is fetched on first use and again
    when the server no longer accepts it). ``ca_file``, ``cert_file``,
    ``key_file``: TLS (a client certificate also authenticates as its common name
    when the server runs with ``--client-cert-auth``); ``server_name`` overrides the
    name checked in the server certificate. ``grpc_options``: extra channel options.

    Use it as a context manager, or call :meth:`close`.
    """

    _conn_class = _Conn
    _lock_class = threading.Lock

    # ---- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop every watch and lease keep-alive of this client and close its
        connections (leases are not revoked: they expire)."""
        if self._closed:
            return
        self._closed = True
        with self._children_lock:
            children = list(self._children)
        for c in children:   # stop them first, so nothing reconnects ...
            try:
                c._shutdown(join=False)
            except Exception:   # noqa: BLE001 - closing goes on
                log.debug("closing %r", c, exc_info=True)
        for c in self._conns:   # ... then end their calls in flight ...
            c.close()
        for c in children:   # ... and wait for their threads
            c._join()

    # ---- transport ---------------------------------------------------------------------

    def _token_metadata(self, with_token: bool, deadline) -> tuple | None:
        if not with_token or not self._auth.has_credentials:
            return None
        if self._auth.needs_token():
            self._authenticate(self._auth.generation, deadline)
        return self._auth.metadata()

    def _authenticate(self, seen_generation: int, deadline) -> None:
        """Fetch a token, unless another thread already did since `seen_generation`."""
        with self._auth_lock:
            if self._auth.generation != seen_generation and self._auth.token:
                return
            try:
                token = self._invoke(R.c_authenticate(self._auth.user, self._auth.password),
                                     deadline=deadline)
            except errors.AuthNotEnabled:
                self._auth.set_token(None, disabled=True)
                return
            self._auth.set_token(token)

    def _reauthenticate(self, generation: int, deadline) -> None:
        """The server refused our token: drop it and fetch a new one."""
        self._auth.set_token(None)
        self._authenticate(generation + 1, deadline)

    def _before_retry(self, action: str, pause: float, generation: int, deadline) -> None:
        """After a failed attempt (:meth:`Attempts.failed`): authenticate again
        (REAUTH) or pause before the next one."""
        if action == R.REAUTH:
            self._reauthenticate(generation, deadline)
        elif pause:
            time.sleep(pause)

    def _invoke(self, call: R.Call, *, timeout=_UNSET, deadline=_UNSET,
                endpoint: int | None = None):
        """Send one unary call, with failover and token refresh per the retry policy."""
        self._check_open()
        att = R.Attempts(self._pool, self._deadline(timeout) if deadline is _UNSET else deadline,
                         endpoint)
        while True:
            idx = att.pick()
            conn = self._conns[idx]
            generation = self._auth.generation
            md = self._token_metadata(call.with_token, att.deadline)
            try:
                resp = conn.stubs().method(call.service, call.method)(
                    call.request, timeout=att.remaining(), metadata=md)
            except grpc.RpcError as e:
                action, pause = att.failed(idx, conn.endpoint.url, call.repeatable, e.code(),
                                           e.details(), self._can_reauth(call.with_token))
                self._before_retry(action, pause, generation, att.deadline)
                continue
            except ValueError as e:   # the channel was closed under us
                if self._closed:
                    raise errors.ClientClosed("client is closed") from e
                raise
            att.succeeded(idx)
            return call.convert(resp)

    # ---- KV ----------------------------------------------------------------------------

    def txn(self) -> Txn:
        """A transaction builder: ``client.txn().if_(...).then(...).else_(...).commit()``."""
        return Txn(self)

    # ---- leases ------------------------------------------------------------------------

    def lease_keepalive_once(self, id: int) -> int:
        """Renew a lease once; its new TTL. LeaseNotFound when it is gone."""
        return R.keepalive_ttl(id, self._keepalive_once(id, self._deadline(_UNSET)))

    def _keepalive_once(self, id: int, deadline):
        """One LeaseKeepAlive exchange (repeatable: failover, token refresh); the
        response (TTL <= 0: the lease is gone)."""
        self._check_open()
        req = pb.LeaseKeepAliveRequest(ID=id)
        att = R.Attempts(self._pool, deadline)
        while True:
            idx = att.pick()
            conn = self._conns[idx]
            generation = self._auth.generation
            md = self._token_metadata(True, deadline)
            remaining = att.remaining()
            answered = threading.Event()

            def requests():
                yield req
                answered.wait(remaining if remaining is not None else 60)

            call = None
            try:
                call = conn.stubs().Lease.LeaseKeepAlive(requests(), timeout=remaining,
                                                         metadata=md)
                resp = next(call, None)
                code = details = None
                if resp is None:   # the stream ended without an answer
                    code, details = grpc.StatusCode.UNAVAILABLE, "keep-alive stream ended"
            except grpc.RpcError as e:
                resp, code, details = None, e.code(), e.details()
            except ValueError as e:
                if self._closed:
                    raise errors.ClientClosed("client is closed") from e
                raise
            finally:
                answered.set()
                if call is not None:
                    call.cancel()
            if resp is not None:
                att.succeeded(idx)
                return resp
            action, pause = att.failed(idx, conn.endpoint.url, True, code, details,
                                       self._can_reauth())
            self._before_retry(action, pause, generation, deadline)

    def lease(self, ttl: int, *, on_lost: Callable[["Lease"], None] | None = None,
              id: int = 0) -> "Lease":
        """Grant a lease and keep it alive in a background thread until it is
        revoked (``revoke()``, or leaving its ``with`` block) or closed.

        ``on_lost(lease)`` is called (from the keep-alive thread) if the lease is lost:
        it expired because keep-alives did not get through in time, or someone else
        revoked it. ``lease.alive``, ``lease.wait_lost()`` and ``lease.check()`` tell too.
        """
        started = time.monotonic()
        grant = self.lease_grant(ttl, id=id)
        return Lease(self, grant, started, on_lost)

    # ---- watch -------------------------------------------------------------------------

    def watch(self, key: KeyLike, end: KeyLike | None = None, *, prefix: bool = False,
              from_key: bool = False, start_revision: int = 0, prev_kv: bool = False,
              no_put: bool = False, no_delete: bool = False, progress_notify: bool = False,
              require_leader: bool = True, max_buffer: int = 1024) -> "Watch":
        """Watch a key (or a range / prefix / keys from ``key`` on) for changes after
        ``start_revision`` (0: from now on). Returns once the server has created the
        watch: a change made after this returns is seen.

        Iterate the returned :class:`Watch` for :class:`Event`\\ s (or use
        ``responses()`` for whole batches with their revision). A broken stream is
        created again on another endpoint from the revision after the last one seen,
        so no event is lost or repeated; if that revision was compacted meanwhile,
        iteration raises :class:`~fastkv.client.errors.WatchCompacted`.
        """
        state = R.WatchState(key, end, prefix=prefix, from_key=from_key,
                             start_revision=start_revision, prev_kv=prev_kv, no_put=no_put,
                             no_delete=no_delete, progress_notify=progress_notify)
        w = Watch(self, state, require_leader, max_buffer)
        w._start(self._deadline(_UNSET))
        return w

    # ---- cluster -----------------------------------------------------------------------

    # ---- maintenance -------------------------------------------------------------------

    def snapshot(self, file: str | os.PathLike | IO[bytes]) -> int:
        """Stream a snapshot of the backend into ``file`` (a path or a binary file
        object); the number of bytes written. A path is written to a temporary name
        and renamed when complete."""
        self._check_open()
        with snapshot_file(file) as f:
            return self._snapshot_to(f)

    def _snapshot_to(self, f) -> int:
        # no deadline: a snapshot may take long; resent only before any data came
        att = R.Attempts(self._pool, None, max_rounds=3)
        while True:
            idx = att.pick()
            conn = self._conns[idx]
            generation = self._auth.generation
            md = self._token_metadata(True, None)
            written = 0
            try:
                for resp in conn.stubs().Maintenance.Snapshot(pb.SnapshotRequest(),
                                                              metadata=md):
                    if resp.blob:
                        f.write(resp.blob)
                        written += len(resp.blob)
                att.succeeded(idx)
                return written
            except grpc.RpcError as e:
                action, pause = att.failed(idx, conn.endpoint.url, written == 0, e.code(),
                                           e.details(), self._can_reauth() and written == 0)
                self._before_retry(action, pause, generation, None)

    def move_leader(self, target_id: int) -> None:
        """Hand leadership to member ``target_id`` (sent to the current leader, found
        among the client's endpoints)."""
        leader_idx = None
        for i in range(len(self._pool)):
            try:
                st = self._invoke(R.c_status(), endpoint=i)
            except errors.EtcdError:
                continue
            if st.is_leader:
                leader_idx = i
                break
        if leader_idx is None:
            raise errors.NotLeader("etcdserver: not leader (no endpoint of this client is "
                                   "the leader)", grpc.StatusCode.FAILED_PRECONDITION)
        self._invoke(R.c_move_leader(target_id), endpoint=leader_idx)

    # ---- auth --------------------------------------------------------------------------


# ---- Lease ------------------------------------------------------------------------------------

class Lease(LeaseCore):
    """A lease kept alive by a background thread (made by :meth:`Client.lease`).

    ``id``, ``ttl`` (granted); ``alive`` (False once lost or revoked);
    ``lost_reason``. ``revoke()`` (or leaving the ``with`` block) stops the
    keep-alive and revokes it; ``close()`` only stops the keep-alive.
    """

    def __init__(self, client: Client, grant: LeaseGrant, started: float,
                 on_lost: Callable[["Lease"], None] | None = None):
        self._client = client
        self.id = grant.id
        self.ttl = grant.ttl
        self.on_lost = on_lost
        self.lost_reason: str | None = None
        #: time.monotonic() of the last keep-alive the cluster answered (None: none yet)
        self.last_keepalive: float | None = None
        self._expires = started + grant.ttl
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._done = threading.Event()   # revoked or closed by us
        client._register(self)
        self._thread = threading.Thread(target=self._run, name=f"fastkv-lease-{self.id:x}",
                                        daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        state = "alive" if self.alive else ("lost" if self._lost.is_set() else "closed")
        return f"<Lease {self.id} ttl={self.ttl} {state}>"

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.revoke()

    @property
    def alive(self) -> bool:
        """Still kept alive: not lost, not revoked, not closed."""
        return not self._lost.is_set() and not self._done.is_set()

    def wait_lost(self, timeout: float | None = None) -> bool:
        """Block until the lease is lost (True) or ``timeout`` passes (False)."""
        return self._lost.wait(timeout)

    def time_to_live(self, *, keys: bool = False) -> LeaseInfo:
        return self._client.lease_time_to_live(self.id, keys=keys)

    def _run(self) -> None:
        wait = R.keepalive_interval(self.ttl)
        while not self._stop.wait(wait):
            sent = time.monotonic()
            try:
                resp = self._client._keepalive_once(self.id, self._keepalive_deadline(sent))
                new_ttl = R.keepalive_ttl(self.id, resp)
            except errors.LeaseNotFound:
                self._mark_lost("the lease expired or was revoked")
                return
            except errors.ClientClosed:
                return
            except Exception as e:   # noqa: BLE001 - unreachable for now; keep trying
                if self._stop.is_set():
                    return
                if self._expired():
                    self._mark_lost(f"no keep-alive got through before the lease expired ({e})")
                    return
                wait = self._retry_wait()
                continue
            wait = self._renewed(sent, new_ttl)

    def _mark_lost(self, reason: str) -> None:
        if self._stop.is_set():
            return
        self._record_loss(reason)
        if self.on_lost is not None:
            try:
                self.on_lost(self)
            except Exception:   # noqa: BLE001
                log.exception("on_lost callback of lease %d failed", self.id)

    def _shutdown(self, join: bool = True) -> None:
        self._stop.set()
        self._done.set()
        self._client._unregister(self)
        if join:
            self._join()

    def _join(self) -> None:
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def close(self) -> None:
        """Stop keeping the lease alive (it expires after its TTL)."""
        self._shutdown()

    def revoke(self) -> None:
        """Stop the keep-alive and revoke the lease (its keys are deleted). A lease that
        is already gone is fine."""
        self._shutdown()
        try:
            self._client.lease_revoke(self.id)
        except errors.LeaseNotFound:
            pass


# ---- Watch ------------------------------------------------------------------------------------

class Watch(WatchCore):
    """A running watch (made by :meth:`Client.watch`): iterate it for events.

    ``for event in watch`` blocks for the next :class:`Event`; ``get(timeout)``
    returns the next one or raises ``TimeoutError``; ``responses()`` /
    ``get_response(timeout)`` give whole batches (:class:`WatchResponse`, also the
    empty progress notifications). ``close()`` (or leaving the ``with`` block) ends
    it; iteration then stops. Errors the watch cannot recover from (compaction:
    :class:`~fastkv.client.errors.WatchCompacted`, permission denied...) are raised
    by the iteration.
    """

    def __init__(self, client: Client, state: R.WatchState, require_leader: bool,
                 max_buffer: int):
        super().__init__(client, state, require_leader)
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, max_buffer))
        self._closed = threading.Event()
        self._created = threading.Event()
        self._lock = threading.Lock()
        self._call = None
        self._requests: queue.Queue | None = None
        self._thread = threading.Thread(target=self._run, name="fastkv-watch", daemon=True)

    # ---- consumer side ---------------------------------------------------------------

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        try:
            return self._next_event(None)
        except _Stop:
            raise StopIteration from None

    def get(self, timeout: float | None = None) -> Event:
        """The next event; ``TimeoutError`` if none comes within ``timeout`` seconds;
        :class:`~fastkv.client.errors.ClientClosed` once the watch is closed."""
        try:
            return self._next_event(timeout)
        except _Stop:
            raise errors.ClientClosed("watch is closed") from None

    def responses(self) -> Iterator[WatchResponse]:
        """Iterate whole batches of events (empty ones: progress notifications)."""
        while True:
            try:
                yield self._next_response(None)
            except _Stop:
                return

    def get_response(self, timeout: float | None = None) -> WatchResponse:
        """The next batch; ``TimeoutError`` if none comes within ``timeout`` seconds."""
        try:
            return self._next_response(timeout)
        except _Stop:
            raise errors.ClientClosed("watch is closed") from None

    def _next_event(self, timeout) -> Event:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._events:
            rem = None if deadline is None else max(deadline - time.monotonic(), 0)
            self._events.extend(self._next_response(rem).events)
        return self._events.popleft()

    def _next_response(self, timeout) -> WatchResponse:
        self._check_finished(self._closed.is_set())
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no watch event within {timeout} s") from None
        return self._taken(item)

    def request_progress(self) -> None:
        """Ask the server for a progress notification (an empty response carrying the
        current revision, once every earlier event was sent)."""
        q = self._requests
        if q is not None:
            q.put(self._state.progress_request())

    def close(self) -> None:
        """End the watch (iteration stops after what was already received)."""
        self._shutdown()

    # ---- stream side -----------------------------------------------------------------

    def _start(self, deadline) -> None:
        self._client._check_open()
        self._client._register(self)
        self._thread.start()
        timeout = None if deadline is None else max(deadline - time.monotonic(), 0)
        if not self._created.wait(timeout):
            self._shutdown()
            raise errors.Timeout("watch was not created in time (no endpoint answered)")
        if self._error is not None and not self._state.created_once:
            err = self._error
            self._shutdown()
            raise err

    def _put(self, item) -> bool:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _fail(self, err: BaseException) -> None:
        self._error = err
        self._created.set()
        self._put(err)

    def _run(self) -> None:
        client = self._client
        attempts = R.WatchAttempts(client._pool, client._auth)
        while not self._closed.is_set():
            idx = client._pool.pick()
            conn = client._conns[idx]
            self.endpoint = conn.endpoint.url
            requests: queue.Queue = queue.Queue()
            requests.put(self._state.create_request())
            self._requests = requests
            try:
                generation = client._auth.generation
                md = (client._token_metadata(True, client._deadline(_UNSET)) or ()) \
                    + self._md_extra
                call = conn.stubs().Watch.Watch(iter(requests.get, None), metadata=md)
                with self._lock:
                    self._call = call
                if self._closed.is_set():
                    call.cancel()
                for resp in call:
                    out = self._state.handle(resp, conn.endpoint.url)
                    if resp.created:
                        attempts.created(idx)
                        self._created.set()
                    if out is not None and not self._put(out):
                        return
                # the server ended the stream: make it again
                if self._closed.is_set():
                    return
                client._pool.failed(idx)
            except (grpc.RpcError, errors.EtcdError) as e:
                action, err = attempts.failed(e, idx, conn.endpoint.url, self._closed.is_set(),
                                              self._state.next_revision)
                if action == R.REAUTH:
                    try:
                        client._reauthenticate(generation, client._deadline(_UNSET))
                    except errors.EtcdError as reauth_err:
                        self._fail(reauth_err)
                        return
                    continue
                if action == R.FAIL:
                    self._fail(err)
                    return
                if action == R.STOP:
                    return
            except ValueError:   # channel closed: client closing
                return
            finally:
                requests.put(None)
                with self._lock:
                    self._call = None
            if self._closed.wait(attempts.pause()):
                return

    def _shutdown(self, join: bool = True) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self._client._unregister(self)
            with self._lock:
                call = self._call
            if call is not None:
                call.cancel()
            q = self._requests
            if q is not None:
                q.put(None)
            self._created.set()
        if join:
            self._join()

    def _join(self) -> None:
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        # wake a consumer blocked in get() (when the buffer is full, the consumer is
        # not blocked: it finds the watch closed once it has drained the buffer)
        try:
            self._queue.put_nowait(_CLOSED)
        except queue.Full:
            pass


