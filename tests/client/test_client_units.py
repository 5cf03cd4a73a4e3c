"""fastkv.client pieces that need no server: error mapping, the retry decision, the
watch's resume bookkeeping, key ranges, endpoint choice. (Everything else in this
directory runs against fastkv and etcd 3.4.)"""
from __future__ import annotations

import grpc
import pytest

from fastkv.client import _requests as R
from fastkv.client import errors, prefix_end
from fastkv.proto.etcdserverpb import rpc_pb2 as pb
from fastkv.proto.mvccpb import kv_pb2

U = grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("code,message,cls", [
    (grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted",
     errors.Compacted),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded",
     errors.NoSpace),
    (grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found", errors.LeaseNotFound),
    (grpc.StatusCode.INVALID_ARGUMENT,
     "etcdserver: authentication failed, invalid user ID or password", errors.AuthFailed),
    (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: user name is empty", errors.UserEmpty),
    (grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied", errors.PermissionDenied),
    (grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token", errors.InvalidAuthToken),
    (U, "etcdserver: no leader", errors.NoLeader),
    (U, "etcdserver: request timed out, possibly due to connection lost",
     errors.RequestTimedOut),
    (U, "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
        "Failed to connect to remote host: Connection refused", errors.ConnectionFailed),
    (U, "Stream removed (Socket closed)", errors.ConnectionLost),
    (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", errors.Timeout),
    (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: some future message", errors.InvalidArgument),
    (None, "rpc error: code = Unauthenticated desc = etcdserver: invalid auth token",
     errors.InvalidAuthToken),
])
def test_error_mapping(code, message, cls):
    err = errors.from_status(code, message)
    assert type(err) is cls
    assert isinstance(err, errors.EtcdError)
    if message.startswith("etcdserver:"):
        assert str(err) == message   # etcd's own words, unchanged


def test_error_families():
    assert issubclass(errors.NoSpace, errors.ResourceExhausted)
    assert issubclass(errors.WatchCompacted, errors.Compacted)
    assert issubclass(errors.ConnectionFailed, errors.Unavailable)
    assert issubclass(errors.Timeout, TimeoutError)
    assert issubclass(errors.AuthFailed, errors.AuthError)
    assert issubclass(errors.LeaseLost, errors.LeaseError)


@pytest.mark.parametrize("repeatable,code,details,expected", [
    (True, U, "etcdserver: leader changed", R.FAILOVER),
    (False, U, "etcdserver: leader changed", R.RAISE),          # may have been applied
    (False, U, "Stream removed (Socket closed)", R.RAISE),      # sent, then broke
    (False, U, "failed to connect to all addresses; last error: x", R.FAILOVER),  # never sent
    (False, U, "etcdserver: rpc not supported for learner", R.FAILOVER),          # refused
    (True, grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been "
     "compacted", R.RAISE),
    (True, grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", R.RAISE),
    (False, grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token", R.REAUTH),
])
def test_retry_decision(repeatable, code, details, expected):
    assert R.decide(repeatable, code, details, can_reauth=True) == expected


def test_no_reauth_without_credentials():
    assert R.decide(True, grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token",
                    can_reauth=False) == R.RAISE


def _resp(rev, events=(), created=False, **kw):
    evs = [kv_pb2.Event(type=0, kv=kv_pb2.KeyValue(key=b"k", mod_revision=r, value=b"v"))
           for r in events]
    return pb.WatchResponse(header=pb.ResponseHeader(revision=rev), created=created,
                            events=evs, **kw)


def test_watch_state_resumes_without_gaps_or_repeats():
    st = R.WatchState("k")
    assert st.create_request().create_request.start_revision == 0
    assert st.handle(_resp(10, created=True)) is None
    assert st.next_revision == 11          # a watch "from now" created at 10
    out = st.handle(_resp(12, [11, 12]))
    assert [e.revision for e in out] == [11, 12] and st.next_revision == 13
    # the stream broke; the watch is made again from 13 ...
    assert st.create_request().create_request.start_revision == 13
    assert st.handle(_resp(14, created=True)) is None and st.next_revision == 13
    # ... and a repeat of what was seen is dropped, the rest handed out
    out = st.handle(_resp(14, [12, 13, 14]))
    assert [e.revision for e in out] == [13, 14]
    assert st.handle(_resp(14, [14])) is None
    # a progress notification moves the resume point
    prog = st.handle(_resp(20))
    assert prog.is_progress_notify and st.next_revision == 21


def test_watch_state_errors():
    st = R.WatchState("k", start_revision=3)
    with pytest.raises(errors.WatchCompacted) as ei:
        st.handle(_resp(9, canceled=True, compact_revision=7))
    assert ei.value.compact_revision == 7
    with pytest.raises(errors.PermissionDenied):
        st.handle(_resp(9, canceled=True, cancel_reason="etcdserver: permission denied"))
    with pytest.raises(errors.WatchCanceled):
        st.handle(_resp(9, canceled=True))


def test_key_ranges():
    assert prefix_end("a") == b"b" and prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0" and prefix_end("") == b"\0"
    assert R.key_range("k") == (b"k", b"")
    assert R.key_range("k", "m") == (b"k", b"m")
    assert R.key_range("k", prefix=True) == (b"k", b"l")
    assert R.key_range("", prefix=True) == (b"\0", b"\0")
    assert R.key_range("k", from_key=True) == (b"k", b"\0")
    assert R.key_range("", from_key=True) == (b"\0", b"\0")
    with pytest.raises(ValueError):
        R.key_range("k", "m", prefix=True)
    with pytest.raises(TypeError):
        R.to_bytes(1)


def test_endpoint_pool_sticks_and_fails_over():
    eps = [R.parse_endpoint(u, False) for u in ("http://a:1", "https://b:2", "c:3")]
    assert [e.secure for e in eps] == [False, True, False]
    assert eps[0].target == "a:1"
    pool = R.EndpointPool(eps, balance="pinned")
    assert pool.pick() == 0
    pool.failed(0)
    assert pool.pick() == 1
    pool.failed(1)
    assert pool.pick() == 2
    pool.failed(2)
    assert pool.pick() == 0          # all failed lately: the one that failed first
    pool.succeeded(1)
    assert pool.pick() == 1          # sticks to the one that works
    assert pool.pick() == 1


def test_endpoint_pool_round_robin_skips_failed():
    eps = [R.parse_endpoint(u, False) for u in ("http://a:1", "http://b:2", "http://c:3")]
    pool = R.EndpointPool(eps)
    assert pool.balance == "round-robin"
    assert [pool.pick() for _ in range(4)] == [0, 1, 2, 0]
    pool.failed(2)
    assert [pool.pick() for _ in range(4)] == [1, 0, 1, 0]   # 2 is skipped while cooling down
    assert pool.current is eps[1] and pool.pick() == 1      # `current` does not move on
    pool.succeeded(2)
    assert [pool.pick() for _ in range(3)] == [2, 0, 1]
    for i in range(3):
        pool.failed(i)
    assert pool.pick() == 0          # all failed lately: the one that failed first
    with pytest.raises(ValueError):
        R.EndpointPool(eps, balance="random")


class _RpcError(grpc.RpcError):
    def __init__(self, code, details):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


def test_watch_attempts_reconnect_reauth_and_fail():
    eps = [R.parse_endpoint(u, False) for u in ("http://a:1", "http://b:2")]
    pool = R.EndpointPool(eps, balance="pinned")
    wa = R.WatchAttempts(pool, R.AuthState("u", "p"))
    broken = _RpcError(U, "Socket closed")
    assert wa.failed(broken, 0, "http://a:1", False, 5) == (R.RETRY, None)
    assert pool.pick() == 1                       # the broken endpoint is skipped
    assert wa.pause() == 0.0                      # not a whole round yet
    assert wa.pause() == R.backoff(1)             # two endpoints, two failures
    assert wa.failed(broken, 1, "http://b:2", True, 5) == (R.STOP, None)   # closed
    stale = _RpcError(grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token")
    assert wa.failed(stale, 1, "http://b:2", False, 5) == (R.REAUTH, None)
    action, err = wa.failed(stale, 1, "http://b:2", False, 5)   # once only
    assert action == R.FAIL and isinstance(err, errors.InvalidAuthToken)
    denied = errors.PermissionDenied("etcdserver: permission denied")
    assert wa.failed(denied, 1, "http://b:2", False, 5) == (R.FAIL, denied)
    wa.created(1)                                 # a created watch resets all that
    assert wa.failures == 0 and not wa.reauthed
    assert wa.failed(denied, 1, "http://b:2", False, 5) == (R.REAUTH, None)
    assert wa.failed(errors.NoLeader("etcdserver: no leader"), 1, "u", False, 5) \
        == (R.RETRY, None)
    compacted = errors.WatchCompacted(3)
    assert wa.failed(compacted, 1, "u", True, 5) == (R.FAIL, compacted)
    action, err = wa.failed(_RpcError(grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: x"), 1,
                            "u", False, 5)
    assert action == R.FAIL and isinstance(err, errors.InvalidArgument)
    no_creds = R.WatchAttempts(pool, R.AuthState(None, None))
    assert no_creds.failed(denied, 0, "u", False, 5) == (R.FAIL, denied)
    assert no_creds.failed(stale, 0, "u", False, 5)[0] == R.FAIL


def test_snapshot_file(tmp_path):
    from fastkv.client._calls import snapshot_file
    path = tmp_path / "snap.db"
    with snapshot_file(path) as f:
        f.write(b"data")
        assert not path.exists()                  # written to a temporary name
    assert path.read_bytes() == b"data" and not (tmp_path / "snap.db.part").exists()
    with pytest.raises(RuntimeError):
        with snapshot_file(tmp_path / "bad.db") as f:
            f.write(b"partial")
            raise RuntimeError("broken stream")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap.db"]
    with open(tmp_path / "obj", "wb") as obj:
        with snapshot_file(obj) as f:
            assert f is obj
