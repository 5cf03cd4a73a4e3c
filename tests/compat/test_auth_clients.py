"""Public Python clients with credentials, against fastkv and etcd 3.4 (auth enabled).

* ``etcd3`` (PyPI etcd3 0.12, gRPC): ``etcd3.client(user=..., password=...)``
  authenticates and sends the token with every call. Run in a child interpreter,
  as tests/compat/test_etcd3_client.py explains. etcd3 sends the token twice: as call
  metadata ``token`` (what clientv3 does) and as gRPC call credentials, which grpcio
  of today refuses to send over a plaintext channel ("Established channel does not
  have a sufficient security level", on etcd as on fastkv); the child drops the call
  credentials and keeps the metadata.
* ``etcd3gw`` (PyPI, the JSON gateway): it has no auth API of its own; a client
  whose ``requests`` session carries the token (``Authorization``, as etcd's gateway
  reads it) works as that user.

Each test runs on both servers; passing on etcd proves the test.
"""
from __future__ import annotations

import base64
import json
import os
import sys
import threading
import time
import urllib.parse

import pytest
import requests

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from servers import (EtcdProcess, FastkvProcess, Scenarios, run_scenario_child,  # noqa: E402
                     scenario_child_main)

PURE_PYTHON_PROTOBUF = {"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
FAST_AUTH = ["--bcrypt-cost", "4"]

scenario = Scenarios()


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def setup_auth(url: str, verify: str | bool = True) -> None:
    """root; alice may read and write /app/ and read /ro/; auth on."""
    s = requests.Session()

    def ok(path, body):
        r = s.post(url + path, data=json.dumps(body), timeout=10, verify=verify)
        assert r.status_code == 200, (path, r.status_code, r.text)
    for path, body in [
        ("/v3/auth/user/add", {"name": "root", "password": "rootpw"}),
        ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
        ("/v3/auth/role/add", {"name": "app"}),
        ("/v3/auth/role/grant", {"name": "app", "perm": {
            "permType": "READWRITE", "key": b64("/app/"), "range_end": b64("/app0")}}),
        ("/v3/auth/role/grant", {"name": "app", "perm": {
            "permType": "READ", "key": b64("/ro/"), "range_end": b64("/ro0")}}),
        ("/v3/auth/user/add", {"name": "alice", "password": "apw"}),
        ("/v3/auth/user/grant", {"user": "alice", "role": "app"}),
        ("/v3/kv/put", {"key": b64("/ro/k"), "value": b64("ro")}),
        ("/v3/auth/enable", {}),
    ]:
        ok(path, body)
    s.close()


@pytest.fixture(params=["fastkv", pytest.param("etcd", marks=pytest.mark.etcd)])
def server(request):
    srv = (FastkvProcess if request.param == "fastkv" else EtcdProcess)(
        extra_args=FAST_AUTH).start()
    try:
        setup_auth(srv.url)
        yield srv
    finally:
        srv.cleanup()


# ---- etcd3 (child) ----------------------------------------------------------------------

def _client(info, user, password):
    return etcd3.client(host=info.host, port=info.port, timeout=10, user=user, password=password)


def _code(fn):
    try:
        fn()
    except grpc.RpcError as err:
        return err.code(), err.details()
    return None


@scenario
def etcd3_with_credentials(info):
    alice = _client(info, "alice", "apw")
    root = _client(info, "root", "rootpw")
    try:
        alice.put("/app/a", "1")
        assert alice.get("/app/a")[0] == b"1"
        assert alice.get("/ro/k")[0] == b"ro"
        assert [v for v, _m in alice.get_prefix("/app/")] == [b"1"]
        denied = (grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied")
        assert _code(lambda: alice.put("/ro/k", "x")) == denied
        assert _code(lambda: alice.get("/other")) == denied
        assert _code(lambda: alice.delete("/ro/k")) == denied
        ok, _ = alice.transaction(compare=[alice.transactions.value("/app/a") == "1"],
                                  success=[alice.transactions.put("/app/b", "2")], failure=[])
        assert ok and root.get("/app/b")[0] == b"2"
        assert _code(lambda: alice.transaction(
            compare=[], success=[alice.transactions.put("/other/x", "1")], failure=[])) == denied
        # a watch the user may make sees root's writes
        events, cancel = alice.watch("/app/w")
        got = []
        t = threading.Thread(target=lambda: got.extend([next(events)]), daemon=True)
        t.start()
        time.sleep(0.5)
        root.put("/app/w", "seen")
        t.join(10)
        cancel()
        assert [(e.key, e.value) for e in got] == [(b"/app/w", b"seen")]
        # leases: granted by anyone (etcd 3.4); revoking needs write on its keys
        lease = root.lease(600)
        root.put("/other/l", "1", lease=lease)
        assert _code(lambda: alice.revoke_lease(lease.id)) == denied
        root.revoke_lease(lease.id)
        mine = alice.lease(600)
        alice.put("/app/l", "1", lease=mine)
        alice.revoke_lease(mine.id)
        assert alice.get("/app/l") == (None, None)
        # root only: members, hashes, snapshots
        assert root.members and list(root.members)
        assert _code(lambda: alice.add_member(["http://127.0.0.1:1"])) == denied
        import io
        buf = io.BytesIO()
        root.snapshot(buf)
        assert buf.getvalue()
        assert _code(lambda: alice.snapshot(io.BytesIO()))[1] == "auth: permission denied"
    finally:
        alice.close()
        root.close()
    try:
        _client(info, "alice", "wrong")
    except grpc.RpcError as err:
        assert (err.code(), err.details()) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "etcdserver: authentication failed, invalid user ID or password")
    else:
        raise AssertionError("a wrong password was accepted")
    anon = etcd3.client(host=info.host, port=info.port, timeout=10)
    try:
        assert _code(lambda: anon.get("/app/a")) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                     "etcdserver: user name is empty")
    finally:
        anon.close()


@scenario
def etcd3_with_credentials_over_tls(info):
    """etcd3.client(user=..., password=..., ca_cert=...): on a TLS channel grpcio sends
    etcd3's call credentials too, so nothing is patched."""
    ca = os.environ["FASTKV_TEST_CA"]
    alice = etcd3.client(host=info.host, port=info.port, timeout=10, ca_cert=ca,
                         user="alice", password="apw")
    try:
        alice.put("/app/tls", "1")
        assert alice.get("/app/tls")[0] == b"1"
        assert _code(lambda: alice.put("/ro/k", "x")) == (grpc.StatusCode.PERMISSION_DENIED,
                                                         "etcdserver: permission denied")
    finally:
        alice.close()
    try:
        etcd3.client(host=info.host, port=info.port, timeout=10, ca_cert=ca, user="alice",
                     password="wrong")
    except grpc.RpcError as err:
        assert err.details() == "etcdserver: authentication failed, invalid user ID or password"
    else:
        raise AssertionError("a wrong password was accepted")


def _run(fn, info) -> None:
    from google.protobuf.internal import api_implementation
    assert api_implementation.Type() == "python", "etcd3 0.12 needs the pure-Python protobuf"
    if fn is not etcd3_with_credentials_over_tls:
        # grpcio refuses call credentials on a plaintext channel; etcd3 sends the token
        # as call metadata as well, which is all etcd (and clientv3) use
        etcd3.client.__globals__["grpc"].metadata_call_credentials = lambda plugin: None
    fn(info)


def test_etcd3_client_with_credentials(server):
    run_scenario_child(os.path.abspath(__file__), "etcd3_with_credentials", server,
                       env=PURE_PYTHON_PROTOBUF)


@pytest.mark.parametrize("kind", ["fastkv", pytest.param("etcd", marks=pytest.mark.etcd)])
def test_etcd3_client_with_credentials_over_tls(kind, tmp_path):
    from tlspki import Pki, tls_server
    pki = Pki(str(tmp_path))
    ctx = pki.client_context(cert=None)
    cls = tls_server(FastkvProcess if kind == "fastkv" else EtcdProcess, context=ctx)
    # a server certificate only (a trusted CA would make client certificates required)
    tls = ["--cert-file", pki.path("server.pem"), "--key-file", pki.path("server-key.pem")]
    srv = cls(extra_args=FAST_AUTH + tls).start()
    try:
        setup_auth(srv.url, verify=pki.path("ca.pem"))
        run_scenario_child(os.path.abspath(__file__), "etcd3_with_credentials_over_tls", srv,
                           env=dict(PURE_PYTHON_PROTOBUF, FASTKV_TEST_CA=pki.path("ca.pem")))
    finally:
        srv.cleanup()


# ---- etcd3gw (this process) ---------------------------------------------------------------

def test_etcd3gw_with_a_token(server):
    import etcd3gw
    from etcd3gw import exceptions as gwexc
    u = urllib.parse.urlsplit(server.url)

    def client(token=None):
        c = etcd3gw.client(host=u.hostname, port=u.port, api_path="/v3/", timeout=10)
        if token is not None:
            c.session.headers["Authorization"] = token
        return c
    anon = client()
    token = anon.post(anon.get_url("/auth/authenticate"),
                      json={"name": "alice", "password": "apw"})["token"]
    root_token = anon.post(anon.get_url("/auth/authenticate"),
                           json={"name": "root", "password": "rootpw"})["token"]
    alice, root = client(token), client(root_token)
    try:
        assert alice.put("/app/a", "1") is True
        assert alice.get("/app/a") == [b"1"]
        assert alice.get("/ro/k") == [b"ro"]
        with pytest.raises(gwexc.Etcd3Exception) as ei:
            alice.put("/ro/k", "x")
        assert json.loads(ei.value.detail_text)["message"] == "etcdserver: permission denied"
        with pytest.raises(gwexc.Etcd3Exception) as ei:
            anon.get("/app/a")
        assert json.loads(ei.value.detail_text)["message"] == "etcdserver: user name is empty"
        with pytest.raises(gwexc.Etcd3Exception) as ei:
            client("not-a-token").get("/app/a")
        assert json.loads(ei.value.detail_text)["message"] == "etcdserver: invalid auth token"
        assert alice.create("/app/c", "1") is True          # a txn
        assert alice.create("/app/c", "2") is False
        lease = alice.lease(ttl=600)
        assert alice.put("/app/l", "1", lease=lease) is True
        assert lease.revoke() is True
        assert alice.get("/app/l") == []
        # a watch as alice sees root's writes
        events, cancel = alice.watch("/app/w")
        got = []
        t = threading.Thread(target=lambda: got.append(next(iter(events))), daemon=True)
        t.start()
        time.sleep(0.5)
        root.put("/app/w", "seen")
        t.join(10)
        cancel()
        assert [(e["kv"]["key"], e["kv"]["value"]) for e in got] == [(b"/app/w", b"seen")]
        assert root.get("/other") == []
        assert alice.status()["version"] == "3.4.23"        # no permission needed
    finally:
        for c in (anon, alice, root):
            c.session.close()


if __name__ == "__main__":
    import grpc
    import etcd3
    scenario_child_main(scenario, _run)
