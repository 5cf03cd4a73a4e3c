"""etcd's v2 auth on fastkv and on Debian's etcd 3.4 (both --enable-v2), side by side.

One sequence of HTTP requests (the /v2/auth endpoints, then /v2/keys, /v2/members,
/v2/machines and /v2/stats with and without credentials, with the guest role
narrowed, as a plain user and as root) runs against both servers; every answer
(status, the headers etcd sets, the body) must be the same once the store indexes
are shifted (etcd's v2 store also holds its membership). The v2 store's counters
must move alike too: etcd's auth reads its settings with counted gets.

With TLS and --client-cert-auth, a request without an Authorization header is the
user its client certificate names (its Common Name), on both servers alike.

Then fastkv alone: the python-etcd client with a username and password, the auth
state surviving a restart and a snapshot, and a 3-member cluster where auth
switched on through one member holds on the others.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import ssl
import tempfile
import time
import urllib.request

import etcd
import etcd.auth
import pytest
import requests

from fastkv.storage.snapshot import Snapshotter
from fastkv.v2store import V2Store
from servers import Cluster, EtcdProcess, FastkvProcess
from v2index import IndexShift
from test_cluster_api_vs_etcd import pair  # noqa: F401 (fastkv and etcd, both --enable-v2)

pytestmark = pytest.mark.etcd

ROOT = ("root", "rootpw")
ALICE = ("alice", "apw")
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# (method, path, body, credentials: None | (user, password) | a raw Authorization value)
# Bodies of /v2/auth requests are JSON, of /v2/keys forms.
SEQUENCE = [
    # auth off: the endpoints answer anyone
    ("GET", "/v2/auth/enable", None, None),
    ("PUT", "/v2/auth/enable", None, None),                  # no root user yet
    ("DELETE", "/v2/auth/enable", None, None),               # already disabled
    ("POST", "/v2/auth/enable", None, None),
    ("HEAD", "/v2/auth/users", None, None),
    ("GET", "/v2/auth/users", None, None),
    ("GET", "/v2/auth/roles", None, None),
    ("GET", "/v2/auth/users/root", None, None),
    ("GET", "/v2/auth/roles/root", None, None),
    ("GET", "/v2/auth/roles/guest", None, None),
    ("PUT", "/v2/auth/users/root", "", None),
    ("PUT", "/v2/auth/users/root", "[1, 2]", None),
    ("PUT", "/v2/auth/users/root", '{"user": 5}', None),
    ("PUT", "/v2/auth/users/root", '{"user":"alice"}', None),
    ("PUT", "/v2/auth/users/root", "null", None),
    ("PUT", "/v2/auth/users/root", '{"user":"root"}', None),  # empty password
    ("PUT", "/v2/auth/users/root", '{"user":"root","password":"rootpw"} and more', None),
    ("PUT", "/v2/auth/users/root", '{"user":"root","password":"rootpw"}', None),  # update
    ("PUT", "/v2/auth/users/alice", '{"user":"alice","password":"apw","roles":["r1"]}', None),
    ("PUT", "/v2/auth/users/alice", '{"user":"alice","password":"apw","roles":["r1"]}', None),
    ("PUT", "/v2/auth/users/alice", '{"user":"alice","roles":["x"],"grant":["y"]}', None),
    ("PUT", "/v2/auth/users/alice", '{"user":"alice","grant":["r1"]}', None),
    ("PUT", "/v2/auth/users/alice", '{"user":"alice","grant":["a%d"],"revoke":["zz"]}', None),
    ("PUT", "/v2/auth/users/alice", '{"USER":"alice","Revoke":["zz%"]}', None),
    ("PUT", "/v2/auth/users/nobody", '{"user":"nobody","grant":["r1"]}', None),
    ("PUT", "/v2/auth/users/bob", '{"user":"bob","password":"bpw"}', None),
    ("PUT", "/v2/auth/users/bob", '{"user":"bob"}', None),   # roles null -> []: an update
    ("PUT", "/v2/auth/users/bob", '{"user":"bob"}', None),   # now nothing changes
    ("GET", "/v2/auth/users/bob", None, None),
    ("PUT", "/v2/auth/roles/r1", '{"role":"r1"}', None),
    ("PUT", "/v2/auth/roles/r1", '{"role":"r1"}', None),
    ("PUT", "/v2/auth/roles/root", '{"role":"root"}', None),
    ("PUT", "/v2/auth/roles/root", '{"role":"root","grant":{"kv":{"read":["/a"]}}}', None),
    ("PUT", "/v2/auth/roles/r1", '{"role":"r2"}', None),
    ("PUT", "/v2/auth/roles/r1", '{"role":"r1","grant":{"kv":{"read":["/foo/*"],'
                                 '"write":["/foo/*","/foo/*"]}}}', None),
    ("PUT", "/v2/auth/roles/r1", '{"role":"r1","grant":{"kv":{"read":["/foo/*"],'
                                 '"write":["/foo/*"]}}}', None),
    ("PUT", "/v2/auth/roles/r1", '{"role":"r1","grant":{"kv":{"read":["/foo/*"]}}}', None),
    ("PUT", "/v2/auth/roles/r1", '{"role":"r1","permissions":{"kv":{"read":["/x"]}},'
                                 '"revoke":{"kv":{"read":["/foo/*"]}}}', None),
    ("PUT", "/v2/auth/roles/r1", '{"role":"r1","revoke":{"kv":{"read":["/nope"]}}}', None),
    ("PUT", "/v2/auth/roles/nope", '{"role":"nope","grant":{"kv":{"read":["/a"]}}}', None),
    ("PUT", "/v2/auth/roles/r2", '{"role":"r2","permissions":{"kv":{"read":["/bar"],'
                                 '"write":null}}}', None),
    ("PUT", "/v2/auth/roles/odd", '{"role":"odd","grant":{"kv":{"read":[]}}}', None),
    ("GET", "/v2/auth/roles/odd", None, None),
    ("PUT", "/v2/auth/roles/odd", '{"role":"odd","revoke":{"kv":{"write":["/w"]}}}', None),
    ("PUT", "/v2/auth/roles/odd", '{"role":"odd","revoke":{"kv":{"write":["/w"]}}}', None),
    ("GET", "/v2/auth/roles", None, None),
    ("PUT", "/v2/auth/users/alice", '{"user":"alice","grant":["r2","gone"]}', None),
    ("GET", "/v2/auth/users/alice", None, None),             # a granted role that is missing
    ("GET", "/v2/auth/users", None, None),                   # (skipped in the list)
    ("PUT", "/v2/auth/users/alice", '{"user":"alice","revoke":["gone"]}', None),
    ("GET", "/v2/auth/users/alice", None, None),
    ("GET", "/v2/auth/users/root", None, None),
    ("PUT", "/v2/auth/users/a/b", '{"user":"a/b"}', None),
    ("PUT", "/v2/auth/users/a%2Fb", '{"user":"a/b"}', None),
    ("PUT", "/v2/auth/users/%C3%BC%3C", '{"user":"\u00fc<","password":"x"}', None),
    ("PUT", "/v2/auth/users/_hidden", '{"user":"_hidden","password":"x"}', None),
    ("GET", "/v2/auth/users/_hidden", None, None),
    ("GET", "/v2/auth/users", None, None),                   # (hidden names are not listed)
    ("GET", "/v2/auth/users?%zz", None, None),               # Go's ParseForm refuses these
    ("GET", "/v2/auth/roles?a;b", None, None),
    ("GET", "/v2/auth/users/root?a;b", None, None),
    ("GET", "/v2/auth/users/nobody?a;b", None, None),
    ("GET", "/v2/auth/roles/root?a;b", None, None),
    ("GET", "/v2/auth/users?a=%41&b", None, None),
    ("POST", "/v2/auth/users/alice", None, None),
    ("GET", "/v2/auth/users/alice/", None, None),
    ("DELETE", "/v2/auth/users/nobody", None, None),
    ("DELETE", "/v2/auth/roles/nobody", None, None),
    ("DELETE", "/v2/auth/roles/root", None, None),
    ("DELETE", "/v2/auth/roles/odd", None, None),
    ("GET", "/v2/auth", None, None),
    ("GET", "/v2/auth/usersx", None, None),
    ("PUT", "/v2/keys/foo/a", "value=1", None),
    # on
    ("PUT", "/v2/auth/enable", None, None),
    ("PUT", "/v2/auth/enable", None, None),                  # now only root may
    ("PUT", "/v2/auth/enable", None, ROOT),
    ("GET", "/v2/auth/enable", None, None),
    ("GET", "/v2/auth/users", None, None),
    ("GET", "/v2/auth/users", None, ALICE),
    ("GET", "/v2/auth/users", None, ("root", "wrong")),
    ("GET", "/v2/auth/users", None, ("nobody", "x")),
    ("GET", "/v2/auth/roles", None, ROOT),
    ("GET", "/v2/auth/roles/guest", None, ROOT),
    ("GET", "/v2/auth/users/alice", None, ROOT),
    ("PUT", "/v2/auth/users/bob", '{"user":"bob","password":"b2"}', ALICE),
    # the guest role: read/write everything until narrowed
    ("GET", "/v2/keys/foo/a", None, None),
    ("PUT", "/v2/keys/guestkey", "value=g", None),
    ("GET", "/v2/keys/?recursive=true&sorted=true", None, None),
    ("PUT", "/v2/auth/roles/guest", '{"role":"guest","revoke":{"kv":{"read":["/*"],'
                                    '"write":["/*"]}}}', ROOT),
    ("PUT", "/v2/auth/roles/guest", '{"role":"guest","grant":{"kv":{"read":["/pub/*",'
                                    '"/pubkey"]}}}', ROOT),
    ("GET", "/v2/keys/foo/a", None, None),
    ("GET", "/v2/keys/pubkey", None, None),
    ("PUT", "/v2/keys/pub/x", "value=1", None),
    ("GET", "/v2/keys/pub/x", None, None),
    ("GET", "/v2/keys/pub?recursive=true", None, None),
    ("GET", "/v2/keys/pubkey?recursive=true", None, None),
    ("GET", "/v2/keys/foo/a?wait=x", None, None),          # a bad form is refused first
    # a user: r1 (/foo/* read and write), r2 (/bar read)
    ("PUT", "/v2/keys/foo/b", "value=2", ALICE),
    ("GET", "/v2/keys/foo/b", None, ALICE),
    ("GET", "/v2/keys/foo/b?quorum=true", None, ALICE),
    ("GET", "/v2/keys/foo?recursive=true", None, ALICE),
    ("GET", "/v2/keys/foo/a?recursive=true", None, ALICE),
    ("GET", "/v2/keys/bar", None, ALICE),
    ("HEAD", "/v2/keys/bar", None, ALICE),
    ("PUT", "/v2/keys/bar", "value=1", ALICE),
    ("POST", "/v2/keys/foo/q", "value=job", ALICE),
    ("DELETE", "/v2/keys/foo?recursive=true", None, ALICE),
    ("DELETE", "/v2/keys/foo/b", None, ALICE),
    ("GET", "/v2/keys/foo/a", None, ("alice", "wrong")),
    ("GET", "/v2/keys/foo/a", None, "Basic !!!"),
    ("GET", "/v2/keys/foo/a", None, "Basic " + base64.b64encode(b"nocolon").decode()),
    ("GET", "/v2/keys/foo/a", None, "Bearer xyz"),
    ("GET", "/v2/keys/foo/a", None, "basic " + base64.b64encode(b"alice:apw").decode()),
    ("GET", "/v2/keys/pub/x", None, ("nobody", "x")),     # credentials that fail: no guest
    # root
    ("GET", "/v2/keys/?recursive=true&sorted=true", None, ROOT),
    ("PUT", "/v2/keys/top", "value=t", ROOT),
    ("DELETE", "/v2/keys/foo?recursive=true", None, ROOT),
    # the cluster endpoints: reads open, member changes for root, stats and machines open
    ("GET", "/v2/members", None, None),
    ("POST", "/v2/members", '{"peerURLs":["http://127.0.0.1:1"]}', None),
    ("POST", "/v2/members", '{"peerURLs":["http://127.0.0.1:1"]}', ALICE),
    ("DELETE", "/v2/members/1234", None, ALICE),
    ("DELETE", "/v2/members/1234", None, ROOT),
    ("PUT", "/v2/members/1234", '{"peerURLs":["http://127.0.0.1:1"]}', ROOT),
    ("GET", "/v2/machines", None, None),
    ("GET", "/v2/stats/self", None, None),
    ("GET", "/v2/stats/store", None, None),
    # changes to users while on, and off again
    ("DELETE", "/v2/auth/users/root", None, ROOT),
    ("DELETE", "/v2/auth/users/bob", None, ROOT),
    ("DELETE", "/v2/auth/roles/r2", None, ROOT),
    ("GET", "/v2/auth/users/alice", None, ROOT),
    ("PUT", "/v2/auth/users/alice", '{"user":"alice","password":"new"}', ROOT),
    ("GET", "/v2/keys/foo/x", None, ALICE),
    ("GET", "/v2/keys/foo/x", None, ("alice", "new")),
    ("PUT", "/v2/auth/users/carol", '{"user":"carol","password":"c","roles":["root"]}', ROOT),
    ("GET", "/v2/auth/users", None, ("carol", "c")),         # the root role makes a root user
    ("DELETE", "/v2/auth/enable", None, ALICE),
    ("DELETE", "/v2/auth/enable", None, ("carol", "c")),
    ("DELETE", "/v2/auth/enable", None, ROOT),
    ("GET", "/v2/keys/foo/a", None, None),
    ("DELETE", "/v2/auth/users/root", None, None),
    ("PUT", "/v2/auth/enable", None, None),
]

# answers whose body names the server itself: compared by status only
STATUS_ONLY = {"/v2/members", "/v2/stats/self", "/v2/stats/store"}
HEADERS = ("Content-Type", "X-Etcd-Index", "Allow", "WWW-Authenticate", "X-Content-Type-Options")


class Side(IndexShift):
    def __init__(self, srv):
        super().__init__()
        self.srv = srv
        self.session = requests.Session()

    def do(self, method, path, body, creds):
        headers = {}
        if body is not None:
            headers["Content-Type"] = FORM if path.startswith("/v2/keys") else JSON
        if isinstance(creds, tuple):
            headers["Authorization"] = basic(*creds)
        elif isinstance(creds, str):
            headers["Authorization"] = creds
        r = self.session.request(method, self.srv.url + path, data=body, headers=headers,
                                 timeout=15, allow_redirects=False)
        if self.base is None and path.startswith("/v2/keys") and r.status_code == 201:
            self.base = int(r.json()["node"]["modifiedIndex"])
        hdrs = {}
        for h in HEADERS:
            if h in r.headers:
                v = r.headers[h]
                hdrs[h] = str(self.shift(int(v))) if h == "X-Etcd-Index" else v
        hdrs["cluster-id"] = "X-Etcd-Cluster-Id" in r.headers
        if path.split("?")[0] in STATUS_ONLY or path.startswith("/v2/members/"):
            return r.status_code, hdrs, None
        text = r.text.replace(self.srv.url, "URL")
        return r.status_code, hdrs, self.norm(text)


def store_counters(srv) -> dict:
    return requests.get(srv.url + "/v2/stats/store", timeout=5).json()


def test_same_answers_and_counters_as_etcd(pair):
    fk, et = Side(pair[0]), Side(pair[1])
    sides = (fk, et)
    before = [store_counters(s.srv) for s in sides]
    own = [dict.fromkeys(before[0], 0) for _ in sides]
    diffs = []
    for step in SEQUENCE:
        # etcd's membership lives in its v2 store: changing a member reads it there (not
        # auth's reads); those steps are left out of the counts
        membership = step[0] != "GET" and step[1].startswith("/v2/members/") and step[3] == ROOT
        if membership:
            pre = [store_counters(s.srv) for s in sides]
        a, b = fk.do(*step), et.do(*step)
        if a != b:
            diffs.append(f"{step}\n  fastkv {a}\n  etcd   {b}")
        if membership:
            for i, s in enumerate(sides):
                post = store_counters(s.srv)
                for k in post:
                    own[i][k] += post[k] - pre[i][k]
    assert not diffs, "\n".join(diffs)
    after = [store_counters(s.srv) for s in sides]
    moved = [{k: after[i][k] - before[i][k] - own[i][k] for k in after[i]} for i in (0, 1)]
    assert moved[0] == moved[1]
    assert moved[0]["getsFail"] > 0 and moved[0]["createSuccess"] > 0


# ---- users named by client certificates ---------------------------------------------------

def _tls_kind(kind, ca_file: str, client_cert: tuple[str, str]):
    """`kind` serving clients over https (health checked with a client certificate)."""

    class Tls(kind):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.url = self.url.replace("http://", "https://")

        def wait_healthy(self, timeout: float = 30.0):
            ctx = ssl.create_default_context(cafile=ca_file)
            ctx.load_cert_chain(*client_cert)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited: {self.log()}")
                try:
                    with urllib.request.urlopen(self.url + "/health", timeout=1,
                                                context=ctx) as r:
                        if r.status == 200:
                            return self
                except OSError:
                    pass
                time.sleep(0.05)
            self.stop()
            raise RuntimeError(f"{self.name} did not become healthy: {self.log()}")
    return Tls


# (method, path, body, client certificate CN, Authorization credentials)
CERT_SEQUENCE = [
    ("PUT", "/v2/auth/users/root", '{"user":"root","password":"rootpw"}', "root", None),
    ("PUT", "/v2/auth/users/alice", '{"user":"alice","password":"a","roles":["app"]}', "root",
     None),
    ("PUT", "/v2/auth/roles/app", '{"role":"app","permissions":{"kv":{"read":["/app/*"],'
                                  '"write":["/app/*"]}}}', "root", None),
    ("PUT", "/v2/auth/enable", None, "alice", None),
    ("PUT", "/v2/auth/enable", None, "root", None),
    ("PUT", "/v2/auth/roles/guest", '{"role":"guest","revoke":{"kv":{"read":["/*"],'
                                    '"write":["/*"]}}}', "alice", None),
    ("PUT", "/v2/auth/roles/guest", '{"role":"guest","revoke":{"kv":{"read":["/*"],'
                                    '"write":["/*"]}}}', "root", None),
    ("PUT", "/v2/keys/app/x", "value=1", "alice", None),
    ("PUT", "/v2/keys/other", "value=1", "alice", None),
    ("GET", "/v2/keys/app/x", None, "nobody", None),         # no such user: the guest
    ("PUT", "/v2/auth/roles/guest", '{"role":"guest","grant":{"kv":{"read":["/app/*"]}}}',
     "root", None),
    ("GET", "/v2/keys/app/x", None, "nobody", None),
    ("PUT", "/v2/keys/app/x", "value=2", "nobody", None),
    ("GET", "/v2/auth/users", None, "alice", None),
    ("GET", "/v2/auth/users", None, "nobody", None),
    ("GET", "/v2/auth/users", None, "root", None),
    ("GET", "/v2/auth/users", None, "alice", ROOT),          # an Authorization header wins
    ("GET", "/v2/auth/users", None, "root", ("alice", "a")),
    ("PUT", "/v2/keys/app/y", "value=1", "root", ("alice", "bad")),
    ("PUT", "/v2/keys/app/y", "value=1", "nobody", ("alice", "a")),
    ("DELETE", "/v2/members/1234", None, "alice", None),
    ("DELETE", "/v2/members/1234", None, "root", None),
    ("DELETE", "/v2/auth/enable", None, "nobody", None),
    ("DELETE", "/v2/auth/enable", None, "root", None),
    ("PUT", "/v2/keys/other", "value=1", "nobody", None),
]


def _write_pki(tmp: str) -> tuple[str, dict]:
    """A CA (with a Common Name: etcd also tries the CA's CN as a user name, and a CA
    without one makes its handler crash) and certificates for 127.0.0.1 named server,
    root, alice and nobody."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    import datetime
    import ipaddress

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write(path: str, cert, key) -> None:
        with open(path + ".pem", "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(path + "-key.pem", "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("v2auth test CA"))
          .issuer_name(name("v2auth test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    write(os.path.join(tmp, "ca"), ca, ca_key)
    certs = {}
    for cn in ("server", "root", "alice", "nobody"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                .add_extension(x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                    critical=False)
                .sign(ca_key, hashes.SHA256()))
        write(os.path.join(tmp, cn), cert, key)
        certs[cn] = (os.path.join(tmp, cn + ".pem"), os.path.join(tmp, cn + "-key.pem"))
    return os.path.join(tmp, "ca.pem"), certs


@pytest.fixture
def tls_pair():
    tmp = tempfile.mkdtemp(prefix="v2auth-pki-")
    try:
        ca_file, certs = _write_pki(tmp)
        tls = ["--cert-file", certs["server"][0], "--key-file", certs["server"][1],
               "--trusted-ca-file", ca_file, "--client-cert-auth"]
        a = _tls_kind(FastkvProcess, ca_file, certs["root"])(extra_args=["--enable-v2", *tls])
        b = _tls_kind(EtcdProcess, ca_file, certs["root"])(
            extra_args=["--enable-v2=true", *tls])
        try:
            a.launch()
            b.launch()
            a.wait_healthy()
            b.wait_healthy()
            yield a, b, ca_file, certs
        finally:
            b.cleanup()
            a.cleanup()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_client_certificates_name_users_as_etcd(tls_pair):
    fk, et, ca_file, certs = tls_pair
    answers = []
    for srv in (fk, et):
        side = IndexShift()
        got = []
        for method, path, body, cn, creds in CERT_SEQUENCE:
            headers = {}
            if body is not None:
                headers["Content-Type"] = FORM if path.startswith("/v2/keys") else JSON
            if creds:
                headers["Authorization"] = basic(*creds)
            r = requests.request(method, srv.url + path, data=body, headers=headers,
                                 cert=certs[cn], verify=ca_file, timeout=15)
            if side.base is None and path.startswith("/v2/keys") and r.status_code == 201:
                side.base = int(r.json()["node"]["modifiedIndex"])
            got.append((method, path, cn, creds, r.status_code,
                        None if path.startswith("/v2/members") else side.norm(r.text)))
        answers.append(got)
    diffs = [f"fastkv {a}\n  etcd {b}" for a, b in zip(*answers) if a != b]
    assert not diffs, "\n".join(diffs)
    statuses = [row[4] for row in answers[0]]
    assert statuses[7:10] == [201, 401, 401] and statuses[11] == 200


# ---- fastkv alone ---------------------------------------------------------------------------

def _http(url, method, path, body=None, creds=None):
    headers = {"Content-Type": JSON} if body is not None else {}
    if creds:
        headers["Authorization"] = basic(*creds)
    return requests.request(method, url + path, data=body, headers=headers, timeout=15)


def _set_up_auth(url: str) -> None:
    assert _http(url, "PUT", "/v2/auth/users/root", '{"user":"root","password":"rootpw"}'
                 ).status_code == 201
    assert _http(url, "PUT", "/v2/auth/roles/app", '{"role":"app","permissions":{"kv":'
                 '{"read":["/app/*"],"write":["/app/*"]}}}').status_code == 201
    assert _http(url, "PUT", "/v2/auth/users/svc", '{"user":"svc","password":"s",'
                 '"roles":["app"]}').status_code == 200
    assert _http(url, "PUT", "/v2/auth/enable").status_code == 200
    assert _http(url, "PUT", "/v2/auth/roles/guest", '{"role":"guest","revoke":{"kv":'
                 '{"read":["/*"],"write":["/*"]}}}', ROOT).status_code == 200


def _check_auth(url: str) -> None:
    """The state _set_up_auth left: enforced for /v2/keys and /v2/auth."""
    assert _http(url, "GET", "/v2/auth/enable").json() == {"enabled": True}
    assert _http(url, "GET", "/v2/keys/app/k").status_code == 401
    r = requests.put(url + "/v2/keys/app/k", data={"value": "v"},
                     headers={"Authorization": basic("svc", "s")}, timeout=15)
    assert r.status_code in (200, 201), r.text
    r = requests.put(url + "/v2/keys/other", data={"value": "v"},
                     headers={"Authorization": basic("svc", "s")}, timeout=15)
    assert r.status_code == 401 and r.json()["errorCode"] == 110
    assert _http(url, "GET", "/v2/auth/users", creds=("svc", "s")).status_code == 401
    assert [u["user"] for u in _http(url, "GET", "/v2/auth/users", creds=ROOT).json()["users"]] \
        == ["root", "svc"]
    assert _http(url, "GET", "/v2/auth/roles/guest", creds=ROOT).json()["permissions"] == \
        {"kv": {"read": [], "write": []}}


@pytest.mark.parametrize("kind", ["fastkv", "etcd"])
def test_python_etcd_client_with_credentials(kind):
    """python-etcd's auth classes set it up; its clients with a username and password
    (basic auth on every request) read and write what their roles allow. The same
    script against etcd shows these are etcd's answers."""
    if kind == "fastkv":
        srv = FastkvProcess(extra_args=["--enable-v2"]).start()
    else:
        srv = EtcdProcess(extra_args=["--enable-v2=true"]).start()
    try:
        admin = etcd.Client(host="127.0.0.1", port=srv.client_port,
                            username="root", password="rootpw")
        user = etcd.auth.EtcdUser(admin, "root")
        user.password = "rootpw"
        user.write()
        role = etcd.auth.EtcdRole(admin, "app")
        role.grant("/app/*", "RW")
        role.write()
        svc = etcd.auth.EtcdUser(admin, "svc")
        svc.password = "s3cret"
        svc.roles = ["app"]
        svc.write()
        auth = etcd.auth.Auth(admin)
        assert auth.active is False
        auth.active = True
        assert auth.active is True
        guest = etcd.auth.EtcdRole(admin, "guest")
        guest.read()
        assert guest.acls == {"/*": "RW"}
        guest.revoke("/*", "RW")
        guest.write()
        assert [u["user"] for u in etcd.auth.EtcdUser(admin, "x").names] == ["root", "svc"]
        assert svc.roles == {"app"}    # from the answer to its write (GET lists role objects)

        c = etcd.Client(host="127.0.0.1", port=srv.client_port, username="svc",
                        password="s3cret")
        assert c.write("/app/x", "1").value == "1"
        assert c.read("/app/x").value == "1"
        assert c.read("/app/x", quorum=True).value == "1"
        c.delete("/app/x")
        with pytest.raises(etcd.EtcdException) as e:
            c.write("/elsewhere", "1")
        assert "Insufficient credentials" in str(e.value.payload or e.value)
        anonymous = etcd.Client(host="127.0.0.1", port=srv.client_port)
        with pytest.raises(etcd.EtcdException):
            anonymous.read("/app")
        wrong = etcd.Client(host="127.0.0.1", port=srv.client_port, username="svc",
                            password="nope")
        with pytest.raises(etcd.EtcdException):
            wrong.read("/app/x")
        auth.active = False
        assert anonymous.write("/elsewhere", "1").value == "1"
    finally:
        srv.cleanup()


def test_auth_survives_restart_and_snapshot(tmp_path):
    data = str(tmp_path / "m")
    srv = FastkvProcess(data_dir=data, extra_args=["--enable-v2", "--snapshot-count", "5"])
    try:
        srv.start()
        _set_up_auth(srv.url)
        for i in range(12):    # enough entries for snapshots after the auth changes
            r = requests.put(srv.url + f"/v2/keys/app/n{i}", data={"value": str(i)},
                             headers={"Authorization": basic(*ROOT)}, timeout=15)
            assert r.status_code in (200, 201)
        _check_auth(srv.url)
        srv.stop()
        # the newest snapshot holds the auth state (users, roles, the switch) as etcd's does
        newest = Snapshotter(os.path.join(data, "member", "member", "snap")).load_newest()
        assert newest is not None, "no snapshot was written"
        tree = V2Store.from_state(newest[2]["v2"])
        assert tree.get("/2/enabled", now=0)["node"]["value"] == "true"
        assert sorted(n["key"] for n in tree.get("/2/users", now=0)["node"]["nodes"]) == \
            ["/2/users/root", "/2/users/svc"]
        assert json.loads(tree.get("/2/roles/app", now=0)["node"]["value"])["permissions"] == \
            {"kv": {"read": ["/app/*"], "write": ["/app/*"]}}
        srv.start()
        _check_auth(srv.url)
        # and a change after the restart (this member process creates nothing twice)
        assert _http(srv.url, "DELETE", "/v2/auth/users/svc", creds=ROOT).status_code == 200
        srv.stop()
        srv.start()
        assert [u["user"] for u in
                _http(srv.url, "GET", "/v2/auth/users", creds=ROOT).json()["users"]] == ["root"]
    finally:
        srv.cleanup()


def test_auth_replicates_to_every_member():
    cluster = Cluster(size=3, extra_args=["--enable-v2"]).start()
    try:
        a, b, c = cluster.urls
        _set_up_auth(a)
        for url in (b, c):
            _check_auth(url)
        # a change through another member (its first: it creates nothing twice)
        assert _http(b, "PUT", "/v2/auth/users/svc", '{"user":"svc","revoke":["app"]}',
                     ROOT).json() == {"user": "svc", "roles": []}
        # c checks permissions against its own applied state, as an etcd member does
        # (etcd's v2 auth reads users and roles without quorum): b's answer means the
        # change is committed, and c applies it when the leader's next message tells it so.
        deadline = time.monotonic() + 10
        while _http(c, "GET", "/v2/auth/users/svc", creds=ROOT).json().get("roles"):
            assert time.monotonic() < deadline, "the revoke never reached member c"
            time.sleep(0.05)
        r = requests.put(c + "/v2/keys/app/k", data={"value": "v"},
                         headers={"Authorization": basic("svc", "s")}, timeout=15)
        assert r.status_code == 401
    finally:
        cluster.stop()


def test_guest_and_recursive_rules():
    """etcd's checks in detail: guest access ignores `recursive` (a plain key match);
    a user's recursive read or delete needs a prefix glob covering the key's subtree."""
    srv = FastkvProcess(extra_args=["--enable-v2"]).start()
    try:
        url = srv.url
        _set_up_auth(url)
        assert _http(url, "PUT", "/v2/auth/roles/guest", '{"role":"guest","grant":{"kv":'
                     '{"read":["/open"]}}}', ROOT).status_code == 200
        assert requests.get(url + "/v2/keys/open?recursive=true", timeout=5).status_code == 404
        assert requests.get(url + "/v2/keys/open/x", timeout=5).status_code == 401
        auth = {"Authorization": basic("svc", "s")}
        assert requests.get(url + "/v2/keys/app?recursive=true", headers=auth,
                            timeout=5).status_code == 401
        assert requests.get(url + "/v2/keys/app/?recursive=true", headers=auth,
                            timeout=5).status_code == 404
        first = requests.put(url + "/v2/keys/app/d", data={"value": "1"}, headers=auth,
                             timeout=5).json()["node"]["modifiedIndex"]
        r = requests.get(url + f"/v2/keys/app?wait=true&recursive=true&waitIndex={first}",
                         headers=auth, timeout=5)
        assert r.status_code == 401     # a recursive watch needs the /app subtree: /app/* is not
        r = requests.get(url + f"/v2/keys/app/d?wait=true&waitIndex={first}", headers=auth,
                         timeout=5)
        assert r.status_code == 200 and r.json()["node"]["value"] == "1"
        body = requests.get(url + "/v2/keys/other?wait=true", timeout=5)
        assert body.status_code == 401 and re.search("Insufficient credentials", body.text)
    finally:
        srv.cleanup()
