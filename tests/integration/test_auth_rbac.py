"""Authentication and RBAC enforced by a real fastkv, side by side with Debian's etcd 3.4.

* the JSON gateway: every kind of request with a token that may, one that may not,
  none, and a bad one: status codes and bodies as etcd's gateway answers them
  (tokens in ``Authorization``, as etcd's gateway takes them, or ``Grpc-Metadata-Token``);
* gRPC through fastkv's own stubs, with the token in the call metadata as clientv3
  sends it: watches (a refused create cancels it), the v3lock and v3election
  services, maintenance calls and their untranslated "auth: ..." errors;
* permission changes apply to tokens issued before them: a simple token gets the
  new permissions at once, a JWT (signed, carrying the auth revision it was issued
  at) is refused with "revision of auth store is old" until its user authenticates
  again (etcd's revision rule), on fastkv and etcd alike;
* a simple token issued by one member works on the others;
* the auth state survives a restart and a snapshot (``--snapshot-count`` small).

etcdctl's view of the same (and fastkvctl's) is in tests/compat/test_etcdctl_auth_vs_etcd.py.
"""
from __future__ import annotations

import base64
import glob
import json
import os
import re
import shutil
import tempfile

import grpc
import jwt as pyjwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from fastkv.proto.etcdserverpb import rpc_pb2 as pb
from fastkv.proto.etcdserverpb import rpc_pb2_grpc as rpc
from fastkv.proto.v3electionpb import v3election_pb2 as epb
from fastkv.proto.v3electionpb import v3election_pb2_grpc as erpc
from fastkv.proto.v3lockpb import v3lock_pb2 as lpb
from fastkv.proto.v3lockpb import v3lock_pb2_grpc as lrpc
from servers import Cluster, EtcdProcess, FastkvProcess

FAST_AUTH = ["--bcrypt-cost", "4"]
TIMEOUT = 10


def b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


# fields that differ between two servers by design: IDs (leases are random, members hash
# the time), sizes and indexes of the state on disk, hashes
VOLATILE = {"header", "cluster_id", "member_id", "raft_term", "blob", "remaining_bytes", "hash",
            "members", "member", "ID", "lease", "dbSize", "dbSizeInUse", "leader", "raftIndex",
            "raftAppliedIndex", "raftTerm"}


class Gateway:
    """The JSON gateway of one server, with a token per user."""

    def __init__(self, srv):
        self.srv = srv
        self.session = requests.Session()
        self.tokens: dict[str, str] = {}
        self.leases: list[int] = []

    def call(self, path: str, body: dict | None = None, token: str | None = None,
             header: str = "Authorization") -> tuple[int, object]:
        headers = {header: token} if token is not None else {}
        r = self.session.post(self.srv.url + path, data=json.dumps(body or {}), headers=headers,
                              timeout=TIMEOUT)
        try:
            doc = r.json()
        except ValueError:
            doc = r.text
        return r.status_code, doc

    def ok(self, path: str, body: dict | None = None, token: str | None = None) -> dict:
        status, doc = self.call(path, body, token)
        assert status == 200, f"{self.srv.name} {path}: {status} {doc}"
        return doc

    def login(self, user: str, password: str) -> str:
        self.tokens[user] = self.ok("/v3/auth/authenticate",
                                    {"name": user, "password": password})["token"]
        return self.tokens[user]

    def first_stream_message(self, path: str, body: dict, token: str | None) -> object:
        headers = {"Authorization": token} if token is not None else {}
        with self.session.post(self.srv.url + path, data=json.dumps(body), headers=headers,
                               stream=True, timeout=TIMEOUT) as r:
            for line in r.iter_lines():
                if line:
                    return r.status_code, json.loads(line)
        return r.status_code, None

    def normalise(self, doc):
        """A body without what differs between servers by design (IDs, headers)."""
        if isinstance(doc, dict):
            out = {}
            for k, v in doc.items():
                if k in VOLATILE:
                    continue
                if k == "key" and isinstance(v, str):   # a lock's or candidate's key
                    v = b64(re.sub(rb"/[0-9a-f]{1,16}$", b"/<lease>", base64.b64decode(v)))
                out[k] = self.normalise(v)
            return out
        if isinstance(doc, list):
            return [self.normalise(v) for v in doc]
        if isinstance(doc, str):
            for i, lid in enumerate(self.leases):
                doc = doc.replace(str(lid), f"<lease{i}>")
        return doc


@pytest.fixture(scope="module")
def pair():
    """etcd 3.4 and fastkv with the same users, roles and keys, auth enabled."""
    servers = []
    try:
        for cls in (EtcdProcess, FastkvProcess):
            servers.append(cls(extra_args=FAST_AUTH).start())
        gws = [Gateway(s) for s in servers]
        for g in gws:
            for path, body in SETUP:
                g.ok(path, body)
            g.login("root", "rootpw")
            g.login("alice", "apw")
            g.login("bob", "bpw")
            for key in ("/other/x", "/app/y", None):    # leases 0, 1, 2 (2 holds no key)
                lid = int(g.ok("/v3/lease/grant", {"TTL": 600}, g.tokens["root"])["ID"])
                g.leases.append(lid)
                if key:
                    g.ok("/v3/kv/put", {"key": b64(key), "value": b64("1"), "lease": lid},
                         g.tokens["root"])
        yield gws
    finally:
        for s in servers:
            s.cleanup()


SETUP = [
    ("/v3/auth/user/add", {"name": "root", "password": "rootpw"}),
    ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
    ("/v3/auth/role/add", {"name": "app"}),
    ("/v3/auth/role/grant", {"name": "app", "perm": {"permType": "READWRITE", "key": b64("/app/"),
                                                     "range_end": b64("/app0")}}),
    ("/v3/auth/role/grant", {"name": "app", "perm": {"permType": "READ", "key": b64("/ro/"),
                                                     "range_end": b64("/ro0")}}),
    ("/v3/auth/role/grant", {"name": "app", "perm": {"permType": "WRITE", "key": b64("/wo/k")}}),
    ("/v3/auth/user/add", {"name": "alice", "password": "apw"}),
    ("/v3/auth/user/grant", {"user": "alice", "role": "app"}),
    ("/v3/auth/user/add", {"name": "bob", "password": "bpw"}),
    ("/v3/kv/put", {"key": b64("/ro/k"), "value": b64("v")}),
    ("/v3/kv/put", {"key": b64("/wo/k"), "value": b64("v")}),
    ("/v3/kv/put", {"key": b64("/other/k"), "value": b64("v")}),
    ("/v3/kv/put", {"key": b64("/app/k"), "value": b64("v")}),
    ("/v3/auth/enable", {}),
]

# (path, body, who, expected status). who: a user, None (no token), "bad" (a bogus token),
# "meta:<user>" (the token in Grpc-Metadata-Token). Bodies may name leases as "{lease0}"...
DENIED, EMPTY, BADTOKEN, RAW = 403, 400, 401, 500
GATEWAY_MATRIX = [
    ("/v3/kv/range", {"key": b64("/app/k")}, "alice", 200),
    ("/v3/kv/range", {"key": b64("/app/k")}, "meta:alice", 200),
    ("/v3/kv/range", {"key": b64("/other/k")}, "alice", DENIED),
    ("/v3/kv/range", {"key": b64("/app/"), "range_end": b64("/app0")}, "alice", 200),
    ("/v3/kv/range", {"key": b64("/app/"), "range_end": b64("/app1")}, "alice", DENIED),
    ("/v3/kv/range", {"key": b64("/ro/k"), "serializable": True}, "alice", 200),
    ("/v3/kv/range", {"key": b64("/app/k")}, None, EMPTY),
    ("/v3/kv/range", {"key": b64("/app/k")}, "bad", BADTOKEN),
    ("/v3/kv/range", {"key": b64("/app/k")}, "bob", DENIED),
    ("/v3/kv/put", {"key": b64("/app/k"), "value": b64("2")}, "alice", 200),
    ("/v3/kv/put", {"key": b64("/ro/k"), "value": b64("2")}, "alice", DENIED),
    ("/v3/kv/put", {"key": b64("/app/k"), "value": b64("2")}, None, EMPTY),
    ("/v3/kv/put", {"key": b64("/app/k"), "value": b64("2")}, "bad", BADTOKEN),
    ("/v3/kv/put", {"key": b64("/wo/k"), "value": b64("2")}, "alice", 200),
    ("/v3/kv/put", {"key": b64("/wo/k"), "value": b64("3"), "prev_kv": True}, "alice", DENIED),
    ("/v3/kv/put", {"key": b64("/app/k"), "value": b64("3"), "prev_kv": True}, "alice", 200),
    ("/v3/kv/put", {"key": b64("/app/n"), "lease": "{lease0}"}, "alice", DENIED),
    ("/v3/kv/put", {"key": b64("/app/n"), "lease": "{lease1}"}, "alice", 200),
    ("/v3/kv/deleterange", {"key": b64("/app/n")}, "alice", 200),
    ("/v3/kv/deleterange", {"key": b64("/ro/k")}, "alice", DENIED),
    ("/v3/kv/deleterange", {"key": b64("/wo/k"), "prev_kv": True}, "alice", DENIED),
    ("/v3/kv/deleterange", {"key": b64("/app/"), "range_end": b64("/app0")}, "bob", DENIED),
    ("/v3/kv/txn", {"compare": [{"key": b64("/app/k"), "target": "VERSION", "version": "0"}],
                    "success": [{"request_put": {"key": b64("/app/t")}}],
                    "failure": [{"request_range": {"key": b64("/app/t")}}]}, "alice", 200),
    ("/v3/kv/txn", {"compare": [{"key": b64("/other/k"), "target": "VERSION"}]}, "alice", DENIED),
    ("/v3/kv/txn", {"success": [{"request_range": {"key": b64("/other/k")}}]}, "alice", DENIED),
    ("/v3/kv/txn", {"success": [{"request_range": {"key": b64("/app/k")}}]}, "alice", 200),
    ("/v3/kv/txn", {"failure": [{"request_delete_range": {"key": b64("/ro/k")}}]}, "alice",
     DENIED),
    ("/v3/kv/txn", {"success": [{"request_put": {"key": b64("/app/k")}}]}, None, EMPTY),
    ("/v3/lease/grant", {"TTL": 60}, "bob", 200),                 # etcd 3.4: no check
    ("/v3/lease/grant", {"TTL": 60}, "bad", BADTOKEN),
    ("/v3/lease/revoke", {"ID": "{lease0}"}, "alice", DENIED),
    ("/v3/lease/revoke", {"ID": "{lease1}"}, "bob", DENIED),
    ("/v3/kv/lease/revoke", {"ID": "{lease1}"}, "alice", 200),
    ("/v3/lease/revoke", {"ID": "{lease2}"}, None, 200),          # no keys: nothing to check
    ("/v3/lease/timetolive", {"ID": "{lease0}", "keys": True}, "bob", 200),
    ("/v3/kv/compaction", {"revision": "2"}, "bob", 200),        # etcd 3.4: no check
    ("/v3/kv/compaction", {"revision": "2"}, "bad", BADTOKEN),
    ("/v3/maintenance/alarm", {}, "bob", 200),
    ("/v3/maintenance/status", {}, "bad", 200),                  # tokens not even looked at
    ("/v3/maintenance/hash", {}, "alice", RAW),
    ("/v3/maintenance/hash", {}, None, RAW),
    ("/v3/maintenance/hash", {}, "bad", RAW),
    ("/v3/maintenance/hash", {}, "root", 200),
    ("/v3/maintenance/defragment", {}, "alice", RAW),
    ("/v3/maintenance/defragment", {}, "root", 200),
    ("/v3/cluster/member/list", {}, None, 200),
    ("/v3/cluster/member/add", {"peerURLs": ["http://127.0.0.1:1"]}, "alice", DENIED),
    ("/v3/cluster/member/add", {"peerURLs": ["http://127.0.0.1:1"]}, None, EMPTY),
    ("/v3/cluster/member/remove", {"ID": "1234"}, "alice", DENIED),
    ("/v3/cluster/member/update", {"ID": "1234", "peerURLs": ["http://127.0.0.1:2"]}, "alice",
     DENIED),
    ("/v3/cluster/member/promote", {"ID": "1234"}, "alice", DENIED),
    ("/v3/cluster/member/remove", {"ID": "1234"}, "root", 404),  # allowed, then not found
    ("/v3/auth/user/list", {}, "alice", DENIED),
    ("/v3/auth/user/list", {}, None, EMPTY),
    ("/v3/auth/user/list", {}, "root", 200),
    ("/v3/auth/user/get", {"name": "alice"}, "alice", 200),
    ("/v3/auth/user/get", {"name": "bob"}, "alice", DENIED),
    ("/v3/auth/role/get", {"role": "app"}, "alice", 200),
    ("/v3/auth/role/get", {"role": "root"}, "alice", DENIED),
    ("/v3/auth/role/list", {}, "bob", DENIED),
    ("/v3/auth/user/add", {"name": "eve", "password": "x"}, "alice", DENIED),
    ("/v3/auth/user/changepw", {"name": "bob", "password": "x"}, "alice", DENIED),
    ("/v3/auth/user/grant", {"user": "alice", "role": "root"}, "alice", DENIED),
    ("/v3/auth/user/revoke", {"name": "alice", "role": "app"}, "bob", DENIED),
    ("/v3/auth/user/delete", {"name": "bob"}, "alice", DENIED),
    ("/v3/auth/role/add", {"name": "r2"}, "alice", DENIED),
    ("/v3/auth/role/grant", {"name": "app", "perm": {"key": b64("/x")}}, "alice", DENIED),
    ("/v3/auth/role/revoke", {"role": "app", "key": b64("/wo/k")}, "alice", DENIED),
    ("/v3/auth/role/delete", {"role": "app"}, "alice", DENIED),
    ("/v3/auth/disable", {}, "alice", DENIED),
    ("/v3/auth/disable", {}, None, EMPTY),
    ("/v3/auth/enable", {}, "alice", DENIED),
    ("/v3/auth/authenticate", {"name": "alice", "password": "no"}, None, 400),
    ("/v3/auth/authenticate", {"name": "nobody", "password": "no"}, None, 400),
    ("/v3/auth/authenticate", {"name": "alice", "password": "apw"}, "bad", BADTOKEN),
    ("/v3/auth/user/delete", {"name": "root"}, "root", 400),    # invalid auth management
    ("/v3/lock/lock", {"name": b64("/app/l")}, "alice", 200),
    ("/v3/lock/lock", {"name": b64("/other/l")}, "alice", RAW),
    ("/v3/lock/lock", {"name": b64("/app/l2")}, None, RAW),
    ("/v3/election/campaign", {"name": b64("/app/e"), "value": b64("v")}, "alice", 200),
    ("/v3/election/campaign", {"name": b64("/other/e"), "value": b64("v")}, "alice", RAW),
    ("/v3/election/leader", {"name": b64("/app/e")}, "alice", 200),
    ("/v3/election/leader", {"name": b64("/other/e")}, "alice", RAW),
]


def _fill(gw: Gateway, body):
    if isinstance(body, dict):
        return {k: _fill(gw, v) for k, v in body.items()}
    if isinstance(body, list):
        return [_fill(gw, v) for v in body]
    if isinstance(body, str) and body.startswith("{lease"):
        return str(gw.leases[int(body[6:-1])])
    return body


def _token(gw: Gateway, who):
    if who is None:
        return None, "Authorization"
    if who == "bad":
        return "bogus", "Authorization"   # (".<index>" would make etcd wait for that index)
    if who.startswith("meta:"):
        return gw.tokens[who[5:]], "Grpc-Metadata-Token"
    return gw.tokens[who], "Authorization"


def test_gateway_matrix_as_etcd(pair):
    problems = []
    for path, body, who, want in GATEWAY_MATRIX:
        answers = []
        for gw in pair:
            token, header = _token(gw, who)
            status, doc = gw.call(path, _fill(gw, body), token, header)
            answers.append((status, gw.normalise(doc)))
        etcd, fastkv = answers
        label = f"{path} {body} as {who}"
        if etcd[0] != want:
            problems.append(f"etcd answered {etcd} to {label}, the test expects {want}")
        if fastkv != etcd:
            problems.append(f"{label}\n  etcd:   {etcd}\n  fastkv: {fastkv}")
    assert not problems, "\n".join(problems)


def test_gateway_watch_and_snapshot_streams(pair):
    problems = []
    for body, who, cancelled in [
        ({"create_request": {"key": b64("/app/k")}}, "alice", None),
        ({"create_request": {"key": b64("/app/"), "range_end": b64("/app0")}}, "alice", None),
        ({"create_request": {"key": b64("/other/k")}}, "alice",
         "rpc error: code = PermissionDenied desc = etcdserver: permission denied"),
        ({"create_request": {"key": b64("/app/k")}}, None,
         "rpc error: code = InvalidArgument desc = etcdserver: user name is empty"),
        ({"create_request": {"key": b64("/app/k")}}, "bad",
         "rpc error: code = Unauthenticated desc = etcdserver: invalid auth token"),
    ]:
        answers = []
        for gw in pair:
            status, msg = gw.first_stream_message("/v3/watch", body, _token(gw, who)[0])
            answers.append((status, gw.normalise(msg)))
        result = answers[0][1]["result"]
        assert result.get("cancel_reason") == cancelled and result["created"], answers
        if answers[1] != answers[0]:
            problems.append(f"watch {body} as {who}: etcd {answers[0]}, fastkv {answers[1]}")
    for who, want in (("alice", "auth: permission denied"), (None, "auth: user name is empty")):
        answers = []
        for gw in pair:
            answers.append(gw.first_stream_message("/v3/maintenance/snapshot", {},
                                                   _token(gw, who)[0]))
        assert answers[0][1]["error"]["message"] == want, answers[0]
        if answers[1] != answers[0]:
            problems.append(f"snapshot as {who}: etcd {answers[0]}, fastkv {answers[1]}")
    for gw in pair:
        status, msg = gw.first_stream_message("/v3/maintenance/snapshot", {}, gw.tokens["root"])
        assert status == 200 and "result" in msg, (gw.srv.name, status, str(msg)[:200])
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- gRPC

def _code(err: grpc.RpcError) -> tuple[str, str]:
    return err.code().name, err.details()


def grpc_outcome(fn) -> tuple:
    try:
        return ("ok", fn())
    except grpc.RpcError as err:
        return ("error",) + _code(err)


def test_grpc_metadata_tokens(pair):
    """Token in the call metadata (clientv3's "token"; "authorization" works too)."""
    results = []
    for gw in pair:
        alice, root = gw.tokens["alice"], gw.tokens["root"]
        with grpc.insecure_channel(f"127.0.0.1:{gw.srv.client_port}") as ch:
            kv, mt = rpc.KVStub(ch), rpc.MaintenanceStub(ch)
            lock, elect = lrpc.LockStub(ch), erpc.ElectionStub(ch)
            md = (("token", alice),)

            def kvs(resp):
                return [(kv.key, kv.value) for kv in resp.kvs]
            out = [
                grpc_outcome(lambda: kvs(kv.Range(pb.RangeRequest(key=b"/app/k"), metadata=md,
                                                  timeout=TIMEOUT))),
                grpc_outcome(lambda: kvs(kv.Range(pb.RangeRequest(key=b"/app/k"), timeout=TIMEOUT,
                                                  metadata=(("authorization", alice),)))),
                grpc_outcome(lambda: kv.Range(pb.RangeRequest(key=b"/other/k"), metadata=md,
                                              timeout=TIMEOUT) and None),
                grpc_outcome(lambda: kv.Put(pb.PutRequest(key=b"/app/g", value=b"1"),
                                            timeout=TIMEOUT) and None),
                grpc_outcome(lambda: kv.Put(pb.PutRequest(key=b"/app/g", value=b"1"),
                                            metadata=(("token", "nope"),), timeout=TIMEOUT)
                             and None),
                grpc_outcome(lambda: mt.HashKV(pb.HashKVRequest(), metadata=md,
                                               timeout=TIMEOUT) and None),
                grpc_outcome(lambda: mt.Defragment(pb.DefragmentRequest(),
                                                   metadata=(("token", root),),
                                                   timeout=TIMEOUT) and None),
                grpc_outcome(lambda: lock.Lock(lpb.LockRequest(name=b"/other/l"), metadata=md,
                                               timeout=TIMEOUT) and None),
                grpc_outcome(lambda: lock.Unlock(lpb.UnlockRequest(key=lock.Lock(
                    lpb.LockRequest(name=b"/app/gl"), metadata=md, timeout=TIMEOUT).key),
                    metadata=md, timeout=TIMEOUT) and None),
                grpc_outcome(lambda: elect.Leader(epb.LeaderRequest(name=b"/app/none"),
                                                  metadata=md, timeout=TIMEOUT) and None),
                grpc_outcome(lambda: elect.Leader(epb.LeaderRequest(name=b"/other/e"),
                                                  metadata=md, timeout=TIMEOUT) and None),
                grpc_outcome(lambda: [s.blob[:0] for s in mt.Snapshot(
                    pb.SnapshotRequest(), metadata=md, timeout=TIMEOUT)]),
            ]
            results.append(out)
    etcd, fastkv = results
    assert etcd[0] == ("ok", [(b"/app/k", etcd[0][1][0][1])])
    assert etcd[2] == ("error", "PERMISSION_DENIED", "etcdserver: permission denied")
    assert etcd[3] == ("error", "INVALID_ARGUMENT", "etcdserver: user name is empty")
    assert etcd[4] == ("error", "UNAUTHENTICATED", "etcdserver: invalid auth token")
    assert etcd[5] == ("error", "UNKNOWN", "auth: permission denied")
    assert etcd[7] == ("error", "UNKNOWN", "etcdserver: permission denied")
    assert etcd[9] == ("error", "UNKNOWN", "election: no leader")
    assert fastkv == etcd


def _watch_first(stub, md, key: bytes) -> pb.WatchResponse:
    import threading
    done = threading.Event()

    def reqs():
        yield pb.WatchRequest(create_request=pb.WatchCreateRequest(key=key))
        done.wait(TIMEOUT)   # keep the stream open while the answer comes
    stream = stub.Watch(reqs(), metadata=md, timeout=TIMEOUT)
    try:
        return next(iter(stream))
    finally:
        done.set()
        stream.cancel()


def test_grpc_watch_create_is_checked(pair):
    results = []
    for gw in pair:
        with grpc.insecure_channel(f"127.0.0.1:{gw.srv.client_port}") as ch:
            w = rpc.WatchStub(ch)
            out = []
            for key, md in ((b"/app/k", (("token", gw.tokens["alice"]),)),
                            (b"/other/k", (("token", gw.tokens["alice"]),)),
                            (b"/app/k", ())):
                r = _watch_first(w, md, key)
                out.append((r.created, r.canceled, r.watch_id, r.cancel_reason))
            results.append(out)
    assert results[0] == [
        (True, False, 0, ""),
        (True, True, -1, "rpc error: code = PermissionDenied desc = etcdserver: permission denied"),
        (True, True, -1, "rpc error: code = InvalidArgument desc = etcdserver: user name is empty"),
    ]
    assert results[1] == results[0]


# ---------------------------------------------------------------- tokens and changes

def test_simple_tokens_get_permission_changes_at_once():
    srv = FastkvProcess(extra_args=FAST_AUTH).start()
    try:
        gw = Gateway(srv)
        for path, body in SETUP:
            gw.ok(path, body)
        root, alice = gw.login("root", "rootpw"), gw.login("alice", "apw")
        assert gw.call("/v3/kv/put", {"key": b64("/ro/k")}, alice)[0] == DENIED
        gw.ok("/v3/auth/role/grant", {"name": "app", "perm": {
            "permType": "READWRITE", "key": b64("/ro/"), "range_end": b64("/ro0")}}, root)
        gw.ok("/v3/kv/put", {"key": b64("/ro/k"), "value": b64("mine")}, alice)   # same token
        gw.ok("/v3/auth/user/revoke", {"name": "alice", "role": "app"}, root)
        assert gw.call("/v3/kv/range", {"key": b64("/app/k")}, alice)[0] == DENIED
        gw.ok("/v3/auth/user/changepw", {"name": "alice", "password": "new"}, root)
        status, doc = gw.call("/v3/kv/range", {"key": b64("/app/k")}, alice)
        assert (status, doc["message"]) == (401, "etcdserver: invalid auth token")
        gw.ok("/v3/auth/disable", {}, root)
        gw.ok("/v3/kv/range", {"key": b64("/app/k")})
        # while auth is disabled tokens are not looked at; after enabling, old ones are gone
        gw.ok("/v3/kv/range", {"key": b64("/app/k")}, "whatever")
        gw.ok("/v3/auth/enable", {})
        status, doc = gw.call("/v3/kv/range", {"key": b64("/app/k")}, root)
        assert (status, doc["message"]) == (401, "etcdserver: invalid auth token")
    finally:
        srv.cleanup()


@pytest.fixture(scope="module")
def jwt_keys():
    d = tempfile.mkdtemp(prefix="jwt-keys-")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with open(os.path.join(d, "key.pem"), "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption()))
    with open(os.path.join(d, "pub.pem"), "wb") as f:
        f.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo))
    try:
        yield d, key
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_jwt_tokens_and_the_auth_revision(jwt_keys):
    """A JWT issued before a permission change is refused until its user authenticates
    again: it never carries permissions the store no longer gives. As etcd."""
    d, key = jwt_keys
    opt = (f"jwt,pub-key={d}/pub.pem,priv-key={d}/key.pem,sign-method=RS256,ttl=10m")
    servers = []
    try:
        for cls in (EtcdProcess, FastkvProcess):
            servers.append(cls(extra_args=FAST_AUTH + ["--auth-token", opt]).start())
        transcripts = []
        for srv in servers:
            gw = Gateway(srv)
            for path, body in SETUP:
                gw.ok(path, body)
            root, alice = gw.login("root", "rootpw"), gw.login("alice", "apw")
            claims = pyjwt.decode(alice, key.public_key(), algorithms=["RS256"])
            t = [sorted(k for k in claims), claims["username"]]

            def step(path, body, token):
                status, doc = gw.call(path, body, token)
                t.append((path, status, doc.get("message") if isinstance(doc, dict) else doc))
            step("/v3/kv/range", {"key": b64("/app/k")}, alice)
            step("/v3/kv/put", {"key": b64("/ro/k")}, alice)
            gw.ok("/v3/auth/role/grant", {"name": "app", "perm": {
                "permType": "READWRITE", "key": b64("/ro/"), "range_end": b64("/ro0")}}, root)
            step("/v3/kv/put", {"key": b64("/ro/k")}, alice)       # old token: old revision
            step("/v3/kv/range", {"key": b64("/app/k")}, alice)
            alice2 = gw.login("alice", "apw")
            step("/v3/kv/put", {"key": b64("/ro/k")}, alice2)
            gw.ok("/v3/auth/user/revoke", {"name": "alice", "role": "app"}, gw.login("root",
                                                                                     "rootpw"))
            step("/v3/kv/range", {"key": b64("/app/k")}, alice2)  # revoked: never the old rights
            step("/v3/kv/range", {"key": b64("/app/k")}, gw.login("alice", "apw"))
            # a token signed with another key, or tampered with, is no token
            step("/v3/kv/range", {"key": b64("/app/k")}, alice2[:-4] + "AAAA")
            transcripts.append(t)
        etcd, fastkv = transcripts
        old = "etcdserver: revision of auth store is old"
        assert etcd == [["exp", "revision", "username"], "alice",
                        ("/v3/kv/range", 200, None),
                        ("/v3/kv/put", 403, "etcdserver: permission denied"),
                        ("/v3/kv/put", 400, old), ("/v3/kv/range", 400, old),
                        ("/v3/kv/put", 200, None),
                        ("/v3/kv/range", 400, old),
                        ("/v3/kv/range", 403, "etcdserver: permission denied"),
                        ("/v3/kv/range", 401, "etcdserver: invalid auth token")]
        assert fastkv == etcd
    finally:
        for s in servers:
            s.cleanup()


def test_a_simple_token_works_on_every_member():
    c = Cluster(FastkvProcess, size=3, extra_args=FAST_AUTH + [
        "--heartbeat-interval", "50", "--election-timeout", "500"]).start()
    try:
        gws = [Gateway(m) for m in c.members]
        for path, body in SETUP:
            gws[0].ok(path, body)
        token = gws[1].login("alice", "apw")
        for gw in gws:    # a member that has not applied the token's entry yet waits for it
            gw.ok("/v3/kv/put", {"key": b64("/app/k"), "value": b64(gw.srv.member_name)}, token)
            assert gw.call("/v3/kv/range", {"key": b64("/ro/x"), "range_end": b64("/ro1")},
                           token)[0] == DENIED
        with grpc.insecure_channel(f"127.0.0.1:{c.members[2].client_port}") as ch:
            resp = rpc.KVStub(ch).Range(pb.RangeRequest(key=b"/app/k"), timeout=TIMEOUT,
                                        metadata=(("token", token),))
            assert resp.kvs[0].value == c.members[2].member_name.encode()
    finally:
        c.stop()


def test_auth_survives_restart_and_snapshot():
    data = tempfile.mkdtemp(prefix="auth-restart-")
    srv = FastkvProcess(data_dir=data, extra_args=FAST_AUTH + ["--snapshot-count", "5"])
    try:
        srv.start()
        gw = Gateway(srv)
        for path, body in SETUP:
            gw.ok(path, body)
        root = gw.login("root", "rootpw")
        for i in range(8):    # past --snapshot-count: the auth state goes into a snapshot
            gw.ok("/v3/kv/put", {"key": b64(f"/app/{i}"), "value": b64("x")}, root)
        gw.ok("/v3/auth/user/changepw", {"name": "bob", "password": "bpw2"}, root)
        assert glob.glob(os.path.join(data, "member", "member", "snap", "*")), \
            "no snapshot was taken"
        srv.stop()
        srv.start()
        gw = Gateway(srv)
        status, doc = gw.call("/v3/kv/range", {"key": b64("/app/k")}, root)
        assert (status, doc["message"]) == (401, "etcdserver: invalid auth token")  # tables go
        status, doc = gw.call("/v3/kv/range", {"key": b64("/app/k")})
        assert (status, doc["message"]) == (400, "etcdserver: user name is empty")  # still on
        alice = gw.login("alice", "apw")
        gw.ok("/v3/kv/range", {"key": b64("/app/k")}, alice)
        assert gw.call("/v3/kv/put", {"key": b64("/ro/k")}, alice)[0] == DENIED
        assert gw.call("/v3/auth/authenticate", {"name": "bob", "password": "bpw"})[0] == 400
        gw.login("bob", "bpw2")
        root = gw.login("root", "rootpw")
        roles = gw.ok("/v3/auth/role/get", {"role": "app"}, root)["perm"]
        assert {(p.get("permType", "READ"), base64.b64decode(p["key"])) for p in roles} == {
            ("READWRITE", b"/app/"), ("READ", b"/ro/"), ("WRITE", b"/wo/k")}
        assert gw.ok("/v3/auth/user/list", {}, root)["users"] == ["alice", "bob", "root"]
        # no password in the WAL or the snapshots: only bcrypt hashes
        for path in glob.glob(os.path.join(data, "member", "member", "*", "*")):
            with open(path, "rb") as f:
                blob = f.read()
            for secret in (b"rootpw", b"bpw2", b"apw"):
                assert secret not in blob, f"{secret!r} written to {path}"
        log = open(srv.log_path, "rb").read()
        assert b"rootpw" not in log and alice.encode() not in log and root.encode() not in log
    finally:
        srv.cleanup()
        shutil.rmtree(data, ignore_errors=True)
