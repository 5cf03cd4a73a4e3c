"""etcd's gRPC API (services of etcdserverpb, v3lockpb, v3electionpb) on grpc.aio.

A thin adapter: each RPC turns its protobuf request into the server's dict
(fastkv/api/grpc_convert.py), awaits the same server method the JSON gateway
calls, and turns the answer back. An :class:`EtcdError` becomes the gRPC status
etcd sends (same code, same message: clients match on the strings).

One port, as etcd: the HTTP/1.1 server owns every --listen-client-urls socket
and sniffs each connection's first bytes. A connection that opens with the
HTTP/2 preface is handed to :class:`GrpcFrontend.adopt`, which relays its bytes,
without the GIL (csrc/relay.pyx), to the grpc.aio server listening on a private
abstract Unix socket. gRPC's HTTP/2 (flow control, pings, deadlines) stays
grpc's; the split costs one extra hop inside the machine.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading

import grpc

from fastkv.api import grpc_convert as cv
from fastkv.api._relay import relay
from fastkv.api.grpc_h2 import MESSAGE_PREFIX
from fastkv.auth.identity import client_cert_auth, grpc_credentials
from fastkv.errors import EtcdError, ErrNoLeader, ErrNotSupportedForLearner, GrpcCode
from fastkv.proto.etcdserverpb import rpc_pb2 as pb
from fastkv.proto.etcdserverpb import rpc_pb2_grpc as pb_grpc
from fastkv.proto.v3electionpb import v3election_pb2 as epb
from fastkv.proto.v3electionpb import v3election_pb2_grpc as epb_grpc
from fastkv.proto.v3lockpb import v3lock_pb2 as lpb
from fastkv.proto.v3lockpb import v3lock_pb2_grpc as lpb_grpc

log = logging.getLogger("fastkv.grpc")

GRPC_OVERHEAD_BYTES = 512 * 1024     # etcd's grpcOverheadBytes
WATCH_SEND_BATCH_BYTES = 64 * 1024   # a watch stream takes up to this much per write
_CODES = {c.value[0]: c for c in grpc.StatusCode}
_REQUIRE_LEADER_KEY = "hasleader"   # clientv3.WithRequireLeader's metadata


async def _abort(context, err: EtcdError):
    await context.abort(_CODES.get(err.code, grpc.StatusCode.UNKNOWN), err.message)


def _requires_leader(context) -> bool:
    md = context.invocation_metadata()
    if not md:
        return False
    for k, v in md:
        if k == _REQUIRE_LEADER_KEY:
            return v == "true"
    return False


def _learner_may(request) -> bool:
    """etcd's isRPCSupportedForLearner: a learner serves Status and serializable Range."""
    if isinstance(request, pb.StatusRequest):
        return True
    return isinstance(request, pb.RangeRequest) and request.serializable


async def _admit(server, request, context) -> None:
    """etcd's interceptors: a learner refuses what it cannot serve, and a call with
    the `hasleader` metadata fails while the member knows no leader."""
    if server.is_learner and (request is None or not _learner_may(request)):
        await _abort(context, ErrNotSupportedForLearner())
    if _requires_leader(context) and server.core.lead == 0:
        await _abort(context, ErrNoLeader())


def _creds(server, context):
    """The call's credentials (metadata token, verified client certificate's name)."""
    return grpc_credentials(context, client_cert_auth(server))


def _unary(method, to_req, to_resp, auth: bool = False):
    """An RPC that calls `method(server)(dict)` and converts both ways. With `auth`,
    while auth is enabled, the call's credentials go along: `method(server)(dict, creds)`."""
    async def handler(self, request, context):
        server = self.server
        await _admit(server, request, context)
        try:
            if auth and server.auth.enabled:
                resp = await method(server)(to_req(request), _creds(server, context))
            else:
                resp = await method(server)(to_req(request))
        except EtcdError as err:
            await _abort(context, err)
        return to_resp(resp)
    return handler


def _generic(resp_cls):
    return lambda d: cv.from_dict(resp_cls, d)


class _Base:
    def __init__(self, server):
        self.server = server


class KVService(_Base, pb_grpc.KVServicer):
    Range = _unary(lambda s: s.range, cv.range_request, cv.range_response, True)
    Put = _unary(lambda s: s.put, cv.put_request, cv.put_response, True)
    DeleteRange = _unary(lambda s: s.delete_range, cv.to_dict, _generic(pb.DeleteRangeResponse),
                         True)
    Txn = _unary(lambda s: s.txn, cv.to_dict, _generic(pb.TxnResponse), True)
    Compact = _unary(lambda s: s.compact, cv.to_dict, _generic(pb.CompactionResponse), True)


class LeaseService(_Base, pb_grpc.LeaseServicer):
    LeaseGrant = _unary(lambda s: s.lease_grant, cv.to_dict, _generic(pb.LeaseGrantResponse),
                        True)
    LeaseRevoke = _unary(lambda s: s.lease_revoke, cv.to_dict, _generic(pb.LeaseRevokeResponse),
                         True)
    LeaseTimeToLive = _unary(lambda s: s.lease_timetolive, cv.to_dict,
                             _generic(pb.LeaseTimeToLiveResponse))
    LeaseLeases = _unary(lambda s: s.lease_leases, cv.to_dict, _generic(pb.LeaseLeasesResponse))

    async def LeaseKeepAlive(self, request_iterator, context):
        server = self.server
        await _admit(server, None, context)
        try:
            # The in-loop transport hands over every keepalive that arrived with this
            # one: they share one leadership check (Server.lease_keepalive_many) and
            # are answered in order. grpc.aio's iterator has no such method.
            take_ready = getattr(request_iterator, "take_ready", None)
            async for req in request_iterator:
                if take_ready is None:
                    resp = await server.lease_keepalive({"ID": req.ID})
                    await context.write(cv.from_dict(pb.LeaseKeepAliveResponse, resp))
                    continue
                ids = [req.ID]
                ids.extend(r.ID for r in take_ready())
                for resp in await server.lease_keepalive_many(ids):
                    await context.write(pb.LeaseKeepAliveResponse(
                        header=cv.header(resp["header"]), ID=resp["ID"], TTL=resp["TTL"]))
        except EtcdError as err:
            await _abort(context, err)


_ABANDONED = EtcdError("watch: slow consumer: the stream took no response; closed",
                       GrpcCode.CANCELLED)


async def _end_abandoned(context) -> None:
    """End a watch stream that cannot take even a slow-consumer cancel. The in-loop
    transport resets the HTTP/2 stream (RST_STREAM CANCEL: clientv3 sees a canceled
    stream) and drops what it had queued; under grpc.aio the status waits behind the
    queued data, in grpc core's bounded buffer."""
    reset = getattr(context, "reset_stream", None)
    if reset is not None:
        reset()
    else:
        await _abort(context, _ABANDONED)


def _take_framed(stream, limit: int) -> bytes:
    """The responses `stream` has ready (up to about `limit` bytes) as gRPC messages
    in one bytes. An event response is put together from parts encoded once for all
    the watchers of a revision (grpc_convert.watch_response, inline: this runs once
    per watcher per event); the responses of a group (fastkv/mvcc/watch._Group)
    differ only in watch_id and are taken together."""
    parts = []
    size = 0
    last_header = last_events = None
    head = tail = b""
    base = 0
    watch_ids = cv.watch_id_fields
    take, next_group, take_group = stream.take, stream.next_group, stream.take_group
    while size < limit:
        nxt = next_group()
        if nxt is not None:
            h, evs = nxt
            if h is not last_header or evs is not last_events:
                head, tail = cv.header_field(h), cv.events_field(evs)
                last_header, last_events, base = h, evs, len(head) + len(tail)
            ws = take_group(max(1, (limit - size) // (base + 8)))[0]
            for w in ws:
                wid = watch_ids.get(w.id) or cv.watch_id_field(w.id)
                n = base + len(wid)
                parts += ((n).to_bytes(5, "big"), head, wid, tail)   # flag 0, then length
                size += n + 5
            continue
        resp = take()
        if resp is None:
            break
        # an event response (WatchStream's always has header and watch_id too)
        if len(resp) == 3 and "events" in resp:
            h, evs = resp["header"], resp["events"]
            if h is not last_header or evs is not last_events:
                head, tail = cv.header_field(h), cv.events_field(evs)
                last_header, last_events, base = h, evs, len(head) + len(tail)
            wid = watch_ids.get(resp["watch_id"]) or cv.watch_id_field(resp["watch_id"])
            n = base + len(wid)
            parts += ((n).to_bytes(5, "big"), head, wid, tail)   # flag 0, then length
        else:
            payload = cv.watch_response(resp)
            n = len(payload)
            parts += (MESSAGE_PREFIX(0, n), payload)
        size += n + 5
    return b"".join(parts)


class WatchService(_Base, pb_grpc.WatchServicer):
    async def Watch(self, request_iterator, context):
        server = self.server
        require_leader = _requires_leader(context)
        await _admit(server, None, context)
        stream = server.watch_stream(_creds(server, context))   # checked at each create
        loop = asyncio.get_running_loop()
        failure = loop.create_future()   # an error that ends the stream

        def fail(exc) -> None:
            if not failure.done():
                failure.set_result(exc)

        async def read_requests():
            # The client closing its side does not end the stream (etcd's recvLoop).
            async for req in request_iterator:
                await stream.handle(cv.to_dict(req))

        def read_done(t: asyncio.Task) -> None:
            if not t.cancelled() and t.exception() is not None:
                fail(t.exception())

        async def send_responses():
            write_framed = getattr(context, "write_framed", None)
            if write_framed is None:   # grpc.aio: one message object per response
                async for resp in stream.responses():
                    await context.write(cv.from_dict(pb.WatchResponse, resp))
                return
            # the in-loop transport: what is ready goes out in one write
            while await stream.ready():
                data = _take_framed(stream, WATCH_SEND_BATCH_BYTES)
                if data:   # empty when all that was queued belonged to canceled watches
                    await write_framed(data)

        # a slow consumer that did not take even its cancel (fastkv/mvcc/watch.py)
        stream.on_abandon = lambda: fail(_ABANDONED)
        stream.peer = context.peer()
        tasks = [asyncio.ensure_future(read_requests())]
        tasks[0].add_done_callback(read_done)
        if require_leader:
            tasks.append(asyncio.ensure_future(_leader_monitor(server, fail)))
        sender = asyncio.ensure_future(send_responses())
        tasks.append(sender)
        try:
            await asyncio.wait({sender, failure}, return_when=asyncio.FIRST_COMPLETED)
            if failure.done():
                exc = failure.result()
                if exc is _ABANDONED:
                    await _end_abandoned(context)
                elif isinstance(exc, EtcdError):
                    await _abort(context, exc)
                return   # the client went away
            exc = sender.exception()
            if isinstance(exc, EtcdError):
                await _abort(context, exc)
        finally:
            for t in tasks:
                t.cancel()
            stream.close()


async def _leader_monitor(server, fail) -> None:
    """etcd's monitorLeader: a stream that asked for a leader ends, with "no leader",
    at the first check (every election timeout) that finds none."""
    while True:
        await asyncio.sleep(server.election_seconds)
        if server.core.lead == 0:
            fail(ErrNoLeader())
            return


class ClusterService(_Base, pb_grpc.ClusterServicer):
    MemberAdd = _unary(lambda s: s.member_add, cv.to_dict, _generic(pb.MemberAddResponse), True)
    MemberRemove = _unary(lambda s: s.member_remove, cv.to_dict,
                          _generic(pb.MemberRemoveResponse), True)
    MemberUpdate = _unary(lambda s: s.member_update, cv.to_dict,
                          _generic(pb.MemberUpdateResponse), True)
    MemberList = _unary(lambda s: s.member_list, cv.to_dict, _generic(pb.MemberListResponse))
    MemberPromote = _unary(lambda s: s.member_promote, cv.to_dict,
                           _generic(pb.MemberPromoteResponse), True)


class MaintenanceService(_Base, pb_grpc.MaintenanceServicer):
    Alarm = _unary(lambda s: s.alarm, cv.to_dict, _generic(pb.AlarmResponse), True)
    Status = _unary(lambda s: s.status, cv.to_dict, _generic(pb.StatusResponse))
    Defragment = _unary(lambda s: s.defragment, cv.to_dict, _generic(pb.DefragmentResponse),
                        True)
    Hash = _unary(lambda s: s.hash, cv.to_dict, _generic(pb.HashResponse), True)
    HashKV = _unary(lambda s: s.hash_kv, cv.to_dict, _generic(pb.HashKVResponse), True)
    MoveLeader = _unary(lambda s: s.move_leader, cv.to_dict, _generic(pb.MoveLeaderResponse))

    async def Snapshot(self, request, context):
        server = self.server
        await _admit(server, None, context)
        creds = _creds(server, context) if server.auth.enabled else None
        try:
            async for chunk in server.snapshot_stream(creds=creds):
                await context.write(cv.from_dict(pb.SnapshotResponse, chunk))
        except EtcdError as err:
            await _abort(context, err)


def _auth_rpc(method: str, resp_cls):
    return _unary(lambda s: getattr(s, method), cv.to_dict, _generic(resp_cls), True)


class AuthService(_Base, pb_grpc.AuthServicer):
    AuthEnable = _auth_rpc("auth_enable", pb.AuthEnableResponse)
    AuthDisable = _auth_rpc("auth_disable", pb.AuthDisableResponse)
    Authenticate = _auth_rpc("authenticate", pb.AuthenticateResponse)
    UserAdd = _auth_rpc("user_add", pb.AuthUserAddResponse)
    UserGet = _auth_rpc("user_get", pb.AuthUserGetResponse)
    UserList = _auth_rpc("user_list", pb.AuthUserListResponse)
    UserDelete = _auth_rpc("user_delete", pb.AuthUserDeleteResponse)
    UserChangePassword = _auth_rpc("user_change_password", pb.AuthUserChangePasswordResponse)
    UserGrantRole = _auth_rpc("user_grant_role", pb.AuthUserGrantRoleResponse)
    UserRevokeRole = _auth_rpc("user_revoke_role", pb.AuthUserRevokeRoleResponse)
    RoleAdd = _auth_rpc("role_add", pb.AuthRoleAddResponse)
    RoleGet = _auth_rpc("role_get", pb.AuthRoleGetResponse)
    RoleList = _auth_rpc("role_list", pb.AuthRoleListResponse)
    RoleDelete = _auth_rpc("role_delete", pb.AuthRoleDeleteResponse)
    RoleGrantPermission = _auth_rpc("role_grant_permission", pb.AuthRoleGrantPermissionResponse)
    RoleRevokePermission = _auth_rpc("role_revoke_permission",
                                     pb.AuthRoleRevokePermissionResponse)


# The recipes act with the caller's credentials (etcd runs them through its in-process
# client with the caller's context): `c` is None while auth is disabled.
class LockService(_Base, lpb_grpc.LockServicer):
    Lock = _unary(lambda s: lambda r, c=None: s.recipes.as_caller(c).lock(r.name, r.lease),
                  lambda r: r, _generic(lpb.LockResponse), True)
    Unlock = _unary(lambda s: lambda r, c=None: s.recipes.as_caller(c).unlock(r.key),
                    lambda r: r, _generic(lpb.UnlockResponse), True)


def _leader_key(req):
    return cv.to_dict(req.leader) if req.HasField("leader") else None


class ElectionService(_Base, epb_grpc.ElectionServicer):
    Campaign = _unary(lambda s: lambda r, c=None: s.recipes.as_caller(c).campaign(
        r.name, r.lease, r.value), lambda r: r, _generic(epb.CampaignResponse), True)
    Proclaim = _unary(lambda s: lambda r, c=None: s.recipes.as_caller(c).proclaim(
        _leader_key(r), r.value), lambda r: r, _generic(epb.ProclaimResponse), True)
    Resign = _unary(lambda s: lambda r, c=None: s.recipes.as_caller(c).resign(_leader_key(r)),
                    lambda r: r, _generic(epb.ResignResponse), True)
    Leader = _unary(lambda s: lambda r, c=None: s.recipes.as_caller(c).leader(r.name),
                    lambda r: r, _generic(epb.LeaderResponse), True)

    async def Observe(self, request, context):
        server = self.server
        await _admit(server, None, context)
        creds = _creds(server, context) if server.auth.enabled else None
        try:
            async for resp in server.recipes.as_caller(creds).observe(request.name):
                await context.write(cv.from_dict(epb.LeaderResponse, resp))
        except EtcdError as err:
            await _abort(context, err)


_EPB = epb.DESCRIPTOR.services_by_name
_LPB = lpb.DESCRIPTOR.services_by_name
_PB = pb.DESCRIPTOR.services_by_name
# (servicer class, grpc.aio registration, service descriptor)
SERVICES = [
    (KVService, pb_grpc.add_KVServicer_to_server, _PB["KV"]),
    (LeaseService, pb_grpc.add_LeaseServicer_to_server, _PB["Lease"]),
    (WatchService, pb_grpc.add_WatchServicer_to_server, _PB["Watch"]),
    (ClusterService, pb_grpc.add_ClusterServicer_to_server, _PB["Cluster"]),
    (MaintenanceService, pb_grpc.add_MaintenanceServicer_to_server, _PB["Maintenance"]),
    (AuthService, pb_grpc.add_AuthServicer_to_server, _PB["Auth"]),
    (LockService, lpb_grpc.add_LockServicer_to_server, _LPB["Lock"]),
    (ElectionService, epb_grpc.add_ElectionServicer_to_server, _EPB["Election"]),
]


def native_methods(server) -> dict:
    """The method table of the in-loop HTTP/2 transport (fastkv/api/grpc_h2.py)."""
    from fastkv.api.grpc_h2 import method_table
    return method_table([(cls(server), desc) for cls, _add, desc in SERVICES])


class GrpcFrontend:
    """The grpc.aio server behind the client ports, and the relays that feed it."""

    def __init__(self, server):
        self.server = server
        self.address = f"fastkv-grpc-{os.getpid()}-{id(self):x}"
        self.grpc_server: grpc.aio.Server | None = None
        self._relays: set[int] = set()
        self._lock = threading.Lock()
        self._closed = False

    def _options(self) -> list:
        cfg = self.server.cfg
        return [
            ("grpc.max_receive_message_length", cfg.max_request_bytes + GRPC_OVERHEAD_BYTES),
            ("grpc.max_send_message_length", 2**31 - 1),
            ("grpc.max_concurrent_streams", getattr(cfg, "max_concurrent_streams", 2**31 - 1)),
            # etcd: --grpc-keepalive-min-time 5s, pings without streams refused
            ("grpc.http2.min_ping_interval_without_data_ms", 5000),
            ("grpc.keepalive_permit_without_calls", 0),
            ("grpc.so_reuseport", 0),
        ]

    async def start(self) -> None:
        srv = grpc.aio.server(options=self._options())
        for cls, add, _desc in SERVICES:
            add(cls(self.server), srv)
        srv.add_insecure_port("unix-abstract:" + self.address)
        await srv.start()
        self.grpc_server = srv

    async def stop(self) -> None:
        self._closed = True
        with self._lock:
            fds = list(self._relays)
        for fd in fds:
            try:
                with socket.socket(fileno=os.dup(fd)) as s:   # wakes the relay's poll
                    s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self.grpc_server is not None:
            await self.grpc_server.stop(grace=0.5)

    def adopt(self, transport, initial: bytes) -> bool:
        """Take over an HTTP/2 connection from the HTTP server: its bytes go to gRPC."""
        if self._closed or self.grpc_server is None:
            return False
        sock = transport.get_extra_info("socket")
        if sock is None:   # not a plain TCP transport (TLS is relayed by the HTTP layer)
            return False
        fd = os.dup(sock.fileno())
        transport.pause_reading()
        transport.abort()   # closes asyncio's fd; the connection lives on in `fd`
        threading.Thread(target=self._relay, args=(fd, initial), daemon=True,
                         name="grpc-relay").start()
        return True

    def _relay(self, fd: int, initial: bytes) -> None:
        up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with self._lock:
            self._relays.add(fd)
        try:
            up.connect("\0" + self.address)
            relay(fd, up.fileno(), initial)
        except OSError as exc:
            log.debug("grpc relay ended: %r", exc)
        finally:
            with self._lock:
                self._relays.discard(fd)
            up.close()
            os.close(fd)


def code_of(err: EtcdError) -> grpc.StatusCode:
    return _CODES.get(err.code, grpc.StatusCode.UNKNOWN)


__all__ = ["GrpcFrontend", "code_of", "GrpcCode"]
