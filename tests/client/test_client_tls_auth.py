"""fastkv.client with TLS (client certificates, and the certificate's common name as
the user) and with user/password auth (permissions, token refresh, a restart), on
servers of this module's own (fastkv and etcd 3.4)."""
from __future__ import annotations

import asyncio

import grpc
import pytest
from clientsupport import KINDS
from tlspki import Pki, tls_server

from fastkv.client import (AsyncClient, Client, Permission, PermType, Role, User, errors,
                           prefix_end)
from fastkv.proto.etcdserverpb import rpc_pb2 as pb
from fastkv.proto.etcdserverpb import rpc_pb2_grpc as pb_grpc


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture
def tls_member(kind, pki, module_servers):
    """A member serving clients over TLS, client certificates required."""
    cls = tls_server(KINDS[kind], context=pki.client_context())
    return module_servers.get(("tls", kind), lambda: cls(extra_args=pki.server_flags()).start())


@pytest.fixture
def auth_member(kind, module_servers):
    return module_servers.get(("auth", kind), lambda: KINDS[kind]().start())


def _tls(pki: Pki, cert: str | None = "client", ca: str = "ca.pem") -> dict:
    opts = {"ca_file": pki.path(ca)}
    if cert:
        opts["cert_file"], opts["key_file"] = pki.cert(cert)
    return opts


def test_tls_with_client_certificate(tls_member, pki, prefix):
    assert tls_member.url.startswith("https://")
    with Client(tls_member.url, **_tls(pki)) as c:
        assert c.put(prefix + "k", "v").revision > 0
        with c.watch(prefix + "w") as w:
            c.put(prefix + "w", "1")
            assert w.get(10).value == b"1"
        with c.lease(30) as lease:
            assert c.lease_keepalive_once(lease.id) > 0
    # host:port (no scheme) uses TLS when TLS files are given
    with Client(tls_member.url.split("//", 1)[1], **_tls(pki)) as c:
        assert c.get(prefix + "k").text == "v"

    async def main():
        async with AsyncClient(tls_member.url, **_tls(pki)) as ac:
            assert (await ac.get(prefix + "k")).text == "v"
    asyncio.run(main())

    # no client certificate, or a server certificate from a CA we do not trust
    for opts in (_tls(pki, cert=None), _tls(pki, ca="other-ca.pem")):
        with Client(tls_member.url, timeout=1, **opts) as c:
            with pytest.raises(errors.ConnectionFailed):
                c.get(prefix + "k")
    with pytest.raises(ValueError):
        Client(tls_member.url, ca_file=pki.path("ca.pem"), cert_file=pki.cert("client")[0])


def test_client_certificate_common_name_is_the_user(tls_member, pki, prefix):
    with Client(tls_member.url, **_tls(pki)) as root:   # CN "root"
        root.user_add("root", "rootpw")
        root.role_add("root")
        root.user_grant_role("root", "root")
        root.auth_enable()
        try:
            # the certificate authenticates: no password, no token
            assert root.put(prefix + "k", "as-root").revision > 0
            assert root.get(prefix + "k").text == "as-root"
            assert "root" in root.user_list()
            with Client(tls_member.url, **_tls(pki, cert="intruder")) as intruder:
                with pytest.raises(errors.PermissionDenied) as ei:
                    intruder.put(prefix + "k", "x")
                assert str(ei.value) == "etcdserver: permission denied"
                with pytest.raises(errors.PermissionDenied):
                    intruder.get(prefix + "k")
        finally:
            root.auth_disable()
            root.user_delete("root")
            root.role_delete("root")
    with Client(tls_member.url, **_tls(pki, cert="intruder")) as anyone:
        assert anyone.get(prefix + "k").text == "as-root"   # auth is off again


def _raw_range(url: str, token: str, key: bytes):
    ch = grpc.insecure_channel(url.split("//", 1)[1])
    try:
        return pb_grpc.KVStub(ch).Range(pb.RangeRequest(key=key), metadata=(("token", token),),
                                        timeout=10)
    finally:
        ch.close()


def test_password_auth(auth_member, prefix):
    url = auth_member.url
    app = prefix + "app/"
    with Client(url) as admin:
        with pytest.raises(errors.RootUserNotExist):
            admin.auth_enable()
        admin.user_add("root", "rootpw")
        admin.role_add("root")
        admin.user_grant_role("root", "root")
        admin.user_add("alice", "alicepw")
        admin.role_add("app")
        admin.role_grant_permission("app", app, prefix=True, perm="readwrite")
        admin.role_grant_permission("app", prefix + "ro", perm=PermType.READ)
        admin.user_grant_role("alice", "app")
        admin.user_add("cn-only", no_password=True)
        with pytest.raises(ValueError):
            admin.user_add("nopw")
        with pytest.raises(errors.UserExists):
            admin.user_add("alice", "again")
        with pytest.raises(errors.RoleNotFound):
            admin.user_grant_role("alice", "no-such-role")

        assert admin.user_get("alice") == User("alice", ("app",))
        assert set(admin.user_list()) >= {"root", "alice", "cn-only"}
        assert set(admin.role_list()) >= {"root", "app"}
        role = admin.role_get("app")
        assert isinstance(role, Role) and role.name == "app"
        assert set(role.permissions) == {
            Permission(PermType.READWRITE, app.encode(), prefix_end(app)),
            Permission(PermType.READ, (prefix + "ro").encode(), b"")}
        admin.put(prefix + "ro", "read-only")
        admin.auth_enable()

        # no credentials now: etcd's "user name is empty"
        with pytest.raises(errors.UserEmpty):
            admin.get(prefix + "ro")

    with Client(url, user="root", password="rootpw") as root:
        try:
            with Client(url, user="alice", password="wrong") as c:
                with pytest.raises(errors.AuthFailed) as ei:
                    c.get(app + "x")
                assert "authentication failed" in str(ei.value)

            with Client(url, user="alice", password="alicepw") as alice:
                assert alice.put(app + "x", "1").revision > 0
                assert alice.get(prefix + "ro").text == "read-only"
                with pytest.raises(errors.PermissionDenied):
                    alice.put(prefix + "ro", "no")
                with pytest.raises(errors.PermissionDenied):
                    alice.get(prefix + "elsewhere")
                with alice.watch(app, prefix=True) as w:
                    alice.put(app + "y", "2")
                    assert w.get(10).value == b"2"
                with alice.lease(30) as lease:
                    alice.put(app + "leased", "v", lease=lease.id)
                    assert alice.lease_keepalive_once(lease.id) > 0

                # the server forgets alice's tokens (a password change does that): the
                # client authenticates again by itself, once, and the call goes through
                old = alice._auth.token
                assert old and _raw_range(url, old, (app + "x").encode()).kvs
                root.user_change_password("alice", "alicepw")
                with pytest.raises(grpc.RpcError) as ei:
                    _raw_range(url, old, (app + "x").encode())
                assert ei.value.details() == "etcdserver: invalid auth token"
                assert alice.get(app + "x").text == "1"
                assert alice._auth.token and alice._auth.token != old

                # a watch made with a forgotten token gets a fresh one too
                root.user_change_password("alice", "alicepw")
                with alice.watch(app + "x") as w:
                    alice.put(app + "x", "3")
                    assert w.get(10).value == b"3"

                # a restarted member: the client reconnects (and re-authenticates if needed)
                auth_member.stop()
                auth_member.start()
                assert alice.get(app + "x").text == "3"

                async def main():
                    async with AsyncClient(url, user="alice", password="alicepw") as ac:
                        assert (await ac.get(app + "x")).text == "3"
                        stale = ac._auth.token
                        await root_async_change_password()
                        assert (await ac.put(app + "z", "async")).revision > 0
                        assert ac._auth.token != stale
                        async with ac.watch(app + "z") as w:
                            await ac.put(app + "z", "again")
                            assert (await w.get(10)).value == b"again"

                async def root_async_change_password():
                    root.user_change_password("alice", "alicepw")
                asyncio.run(main())

            assert root.user_get("root").roles == ("root",)
            root.user_revoke_role("alice", "app")
            assert root.user_get("alice").roles == ()
            root.role_revoke_permission("app", prefix + "ro")
            assert len(root.role_get("app").permissions) == 1
        finally:
            root.auth_disable()
    with Client(url) as admin:
        admin.user_delete("alice")
        admin.user_delete("cn-only")
        admin.role_delete("app")
        with pytest.raises(errors.UserNotFound):
            admin.user_get("alice")
        assert admin.get(app + "x").text == "3"
