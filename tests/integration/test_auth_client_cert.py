"""The user named by a verified client certificate (``--client-cert-auth``), as etcd 3.4.

With auth enabled, a gRPC request that carries no token is made by the user whose
name is the Common Name of the certificate the client presented (etcd's
AuthInfoFromTLS); a token, when there is one, wins. The JSON gateway never takes the
certificate's name (etcd's gateway reaches its server as a gRPC client of its own,
and the server ignores the Common Name of gateway requests): there a request
without a token has no user. Checked with etcdctl and requests against fastkv and
Debian's etcd, both serving TLS with the test PKI (tests/tlspki.py: client
certificates with CN "root" and "intruder").
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile

import pytest
import requests

from servers import EtcdProcess, FastkvProcess
from tlspki import Pki, tls_server

ETCDCTL = shutil.which("etcdctl")


def ctl_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    return env


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


@pytest.fixture(scope="module")
def pki():
    d = tempfile.mkdtemp(prefix="auth-pki-")
    try:
        yield Pki(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_common_name_is_the_user_on_grpc_not_on_the_gateway(pki):
    assert ETCDCTL, "etcdctl is not installed: ci/test installs Debian's etcd-client"
    transcripts = []
    for kind in (EtcdProcess, FastkvProcess):
        cls = tls_server(kind, context=pki.client_context("client"))
        srv = cls(extra_args=["--bcrypt-cost", "4"] + pki.server_flags()).start()
        try:
            s = requests.Session()
            ca = pki.path("ca.pem")

            def gw(path, body, cert="client", token=None):
                r = s.post(srv.url + path, data=json.dumps(body), cert=pki.cert(cert), verify=ca,
                           headers={"Authorization": token} if token else {}, timeout=10)
                if r.headers.get("Content-Type", "").startswith("text/plain"):
                    return r.status_code, r.text, "Access-Control-Allow-Origin" in r.headers
                return r.status_code, r.json().get("message")
            for path, body in [
                ("/v3/auth/user/add", {"name": "root", "password": "rootpw"}),
                ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
                ("/v3/auth/role/add", {"name": "app"}),
                ("/v3/auth/role/grant", {"name": "app", "perm": {
                    "permType": "READWRITE", "key": b64("/app/"), "range_end": b64("/app0")}}),
                ("/v3/auth/user/add", {"name": "intruder", "options": {"no_password": True}}),
                ("/v3/auth/user/grant", {"user": "intruder", "role": "app"}),
                ("/v3/kv/put", {"key": b64("/app/k"), "value": b64("v")}),
                ("/v3/auth/enable", {}),
            ]:
                assert gw(path, body)[0] == 200, (srv.name, path)
            t = []

            def ctl(cert, *args):
                p = subprocess.run([ETCDCTL, "--endpoints", srv.url] + pki.etcdctl_flags(cert)
                                   + list(args), capture_output=True, timeout=30, env=ctl_env(),
                                   stdin=subprocess.DEVNULL)
                err = [ln for ln in p.stderr.decode().splitlines() if not ln.startswith("{")]
                t.append((cert, args, p.returncode, p.stdout.decode(), err))
            ctl("intruder", "get", "/app/k")                 # the CN's permissions
            ctl("intruder", "put", "/app/k", "by-cn")
            ctl("intruder", "put", "/other/k", "x")
            ctl("intruder", "user", "list")
            ctl("client", "user", "list")                    # CN root: the root role
            ctl("client", "member", "add", "x", "--learner", "--peer-urls=https://127.0.0.1:1")
            ctl("intruder", "--user", "root:rootpw", "user", "list")   # a token wins
            ctl("intruder", "--user", "root:bad", "user", "list")
            ctl("client", "get", "/app/k")
            # the gateway: a certificate with a CN is refused outright (etcd's access control)
            t.append(gw("/v3/kv/range", {"key": b64("/app/k")}, "client"))
            t.append(gw("/v3/kv/range", {"key": b64("/app/k")}, "intruder"))
            t.append(gw("/v3beta/nosuch", {}, "intruder"))
            t.append(gw("/v3/auth/authenticate", {"name": "root", "password": "rootpw"},
                        "intruder", "some-token"))
            assert gw("/version", {}, "intruder")[0] == 405   # not /v3/: not refused
            transcripts.append(t)
        finally:
            srv.cleanup()
    etcd, fastkv = transcripts
    assert [e[2] for e in etcd[:9]] == [0, 0, 1, 1, 0, 0, 0, 2, 0], etcd
    assert etcd[0][3] == "/app/k\nv\n" and etcd[8][3] == "/app/k\nby-cn\n"
    refused = (400, "CommonName of client sending a request against gateway will be ignored "
                    "and not used as expected\n", False)
    assert etcd[9:] == [refused] * 4, etcd[9:]
    # member add prints the new member's ID: compare the rest
    etcd[5], fastkv[5] = etcd[5][:3], fastkv[5][:3]
    assert fastkv == etcd
