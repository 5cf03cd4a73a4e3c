"""Certificates for the TLS tests (made with trustme), and servers that speak TLS.

``Pki(directory)`` writes, as PEM files:

- ``ca.pem``: the trusted CA; ``other-ca.pem``: a CA nobody trusts;
- ``server.pem``/``server-key.pem``: for 127.0.0.1 and localhost, CN "fastkv-server",
  used on the client port and as every member's peer certificate (trustme's
  certificates are good for server and client authentication);
- ``client.pem``/``client-key.pem``: CN "root" (what auth would take as the user);
- ``wrongca.pem``/``wrongca-key.pem``: 127.0.0.1, CN "root", signed by the other CA;
- ``expired.pem``/``expired-key.pem``: 127.0.0.1, CN "root", expired a day ago;
- ``intruder.pem``/``intruder-key.pem``: 127.0.0.1, CN "intruder", signed by the CA;

and ``write_crl([...])`` a CRL of the CA revoking some of them.

``tls_server(kind, pki, client=..., peer=...)`` makes a FastkvProcess/EtcdProcess
class whose client (and/or peer) URLs are https:// and whose health checks
present the client certificate.
"""
from __future__ import annotations

import datetime
import os
import ssl
import time
import urllib.request

import trustme

from servers import ServerProcess


class Pki:
    def __init__(self, directory: str):
        self.dir = directory
        ca, other = trustme.CA(), trustme.CA()
        self.ca = ca
        ca.cert_pem.write_to_path(self.path("ca.pem"))
        other.cert_pem.write_to_path(self.path("other-ca.pem"))
        now = datetime.datetime.now(datetime.timezone.utc)
        self._write("server", ca.issue_cert("127.0.0.1", "localhost", common_name="fastkv-server"))
        self._write("client", ca.issue_cert("127.0.0.1", common_name="root"))
        self._write("wrongca", other.issue_cert("127.0.0.1", common_name="root"))
        self._write("expired", ca.issue_cert(
            "127.0.0.1", common_name="root", not_before=now - datetime.timedelta(days=10),
            not_after=now - datetime.timedelta(days=1)))
        self._write("intruder", ca.issue_cert("127.0.0.1", common_name="intruder"))

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def _write(self, name: str, leaf) -> None:
        leaf.cert_chain_pems[0].write_to_path(self.path(f"{name}.pem"))
        leaf.private_key_pem.write_to_path(self.path(f"{name}-key.pem"))

    def write_crl(self, revoked: list[str], filename: str = "crl.pem") -> str:
        """A CRL of the CA listing the serial numbers of the named certificates."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        ca_cert = x509.load_pem_x509_certificate(self.ca.cert_pem.bytes())
        ca_key = serialization.load_pem_private_key(self.ca.private_key_pem.bytes(), None)
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
                   .last_update(now).next_update(now + datetime.timedelta(days=1)))
        for name in revoked:
            with open(self.path(f"{name}.pem"), "rb") as f:
                serial = x509.load_pem_x509_certificate(f.read()).serial_number
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now)
                .build())
        crl = builder.sign(ca_key, hashes.SHA256())
        with open(self.path(filename), "wb") as f:
            f.write(crl.public_bytes(serialization.Encoding.PEM))
        return self.path(filename)

    def cert(self, name: str) -> tuple[str, str]:
        return self.path(f"{name}.pem"), self.path(f"{name}-key.pem")

    def client_context(self, cert: str | None = "client", ca: str = "ca.pem",
                       verify: bool = True) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.path(ca))
        if not verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if cert:
            ctx.load_cert_chain(*self.cert(cert))
        return ctx

    def server_flags(self, client_cert_auth: bool = True) -> list[str]:
        """Client-port TLS flags (etcd's names)."""
        flags = ["--cert-file", self.path("server.pem"), "--key-file", self.path("server-key.pem"),
                 "--trusted-ca-file", self.path("ca.pem")]
        return flags + (["--client-cert-auth"] if client_cert_auth else [])

    def peer_flags(self, cert: str = "server", client_cert_auth: bool = True) -> list[str]:
        c, k = self.cert(cert)
        flags = ["--peer-cert-file", c, "--peer-key-file", k,
                 "--peer-trusted-ca-file", self.path("ca.pem")]
        return flags + (["--peer-client-cert-auth"] if client_cert_auth else [])

    def etcdctl_flags(self, cert: str = "client") -> list[str]:
        c, k = self.cert(cert)
        return ["--cacert", self.path("ca.pem"), "--cert", c, "--key", k]


def tls_server(kind: type[ServerProcess], *, client: bool = True, peer: bool = False,
               context: ssl.SSLContext | None = None) -> type[ServerProcess]:
    """`kind` with https:// client and/or peer URLs; health checks use `context`."""

    class TlsServer(kind):
        ssl_context = context

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if client:
                self.url = self.url.replace("http://", "https://")
            if peer:
                self.peer_url = self.peer_url.replace("http://", "https://")

        def _health_ok(self, timeout: float) -> bool:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=timeout,
                                            context=self.ssl_context) as r:
                    return r.status == 200
            except OSError:
                return False

        def healthy(self) -> bool:
            return self._health_ok(2)

        def wait_healthy(self, timeout: float = 30.0):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: "
                                       f"{self.log()}")
                if self._health_ok(1):
                    return self
                time.sleep(0.05)
            self.stop()
            raise RuntimeError(f"{self.name} did not become healthy: {self.log()}")

    TlsServer.__name__ = f"Tls{kind.__name__}"
    return TlsServer
