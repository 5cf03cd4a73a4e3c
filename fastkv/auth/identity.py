"""Who a request comes from: its credentials, and the identity the member gives them.

Credentials are what a request carries, gathered by the API adapters only while
auth is enabled (when it is not, nothing is looked at: the hot path stays one
attribute check):

* gRPC: the metadata ``token`` (clientv3 sends it there), else ``authorization``
  (etcd's AuthInfoFromCtx reads both);
* the JSON gateway: the ``Grpc-Metadata-Token`` header, else ``Authorization``
  (grpc-gateway forwards them as those two metadata keys; the value is the raw
  token, no "Bearer");
* with ``--client-cert-auth``, a gRPC connection's verified client certificate:
  its Common Name is the user name when the request carries no token (etcd's
  AuthInfoFromTLS). The transports expose the verified name as ``peer_cn`` on the
  call context (``getattr(ctx, "peer_cn", None)``: None without TLS). As etcd,
  the JSON gateway never identifies a user by certificate (etcd's gateway reaches
  the server as its own gRPC client, and the server ignores the Common Name of a
  gateway request).

:func:`identify` turns credentials into an identity ``(user, auth revision)``
(fastkv.auth.enforce.AuthInfo) or raises "invalid auth token". A simple token
names the log index of the entry that issued it: a member that has not applied
that entry yet waits for it (bounded by the request timeout), as etcd's
isValidSimpleToken. Tokens are never logged.
"""
from __future__ import annotations

import asyncio

from fastkv.errors import ErrInvalidAuthToken

__all__ = ["Credentials", "grpc_credentials", "http_credentials", "identify",
           "client_cert_auth"]

_TOKEN = "token"              # rpctypes.TokenFieldNameGRPC
_AUTHORIZATION = "authorization"   # rpctypes.TokenFieldNameSwagger


class Credentials(tuple):
    """``(token, common name)``; either may be None."""

    __slots__ = ()

    def __new__(cls, token: str | None = None, cn: str | None = None):
        return tuple.__new__(cls, (token, cn))

    @property
    def token(self) -> str | None:
        return self[0]

    @property
    def cn(self) -> str | None:
        return self[1]

    def __repr__(self) -> str:   # never show a token
        return f"Credentials(token={'<set>' if self[0] is not None else None}, cn={self[1]!r})"


def client_cert_auth(server) -> bool:
    """etcd's ClientCertAuthEnabled: --client-cert-auth as the client TLS settings ended up
    (fastkv.tlsconfig: off under --auto-tls, as etcd), else the flag."""
    tls = getattr(server, "tls", None)
    info = getattr(tls, "client", None)
    if info is not None:
        return bool(info.client_cert_auth)
    return bool(getattr(server.cfg, "client_cert_auth", False))


def grpc_credentials(context, client_cert_auth: bool) -> Credentials:
    """A gRPC call's credentials (grpc.aio's ServicerContext or our CallContext)."""
    token = auth = None
    for k, v in context.invocation_metadata() or ():
        if k == _TOKEN:
            if token is None:
                token = v
        elif k == _AUTHORIZATION and auth is None:
            auth = v
    if token is None:
        token = auth
    cn = getattr(context, "peer_cn", None) if client_cert_auth else None
    return Credentials(token, cn)


def http_credentials(req) -> Credentials:
    """A JSON gateway request's credentials (fastkv.api.http's request: the raw
    ``Grpc-Metadata-Token`` and ``Authorization`` header values it kept)."""
    token = getattr(req, "metadata_token", None)
    if token is None:
        token = getattr(req, "authorization", None) or None   # b"": no header
    if isinstance(token, (bytes, bytearray)):
        token = bytes(token).decode("latin-1")
    return Credentials(token, None)


async def identify(server, creds) -> tuple[str, int] | None:
    """The identity of ``creds`` on ``server``: (user, revision), None without one.

    ``server`` provides ``tokens`` (the token provider), ``auth`` (the AuthStore),
    ``applier.applied_index`` and ``wait_applied(index)``."""
    if creds is None:
        return None
    token, cn = creds
    if token is not None:
        tokens = server.tokens
        index = tokens.index_of(token)
        if index < 0:
            raise ErrInvalidAuthToken()
        if index > server.applier.applied_index:
            try:
                await server.wait_applied(index)
            except asyncio.TimeoutError:
                raise ErrInvalidAuthToken() from None
        ident = tokens.identity(token, server.auth.revision)
        if ident is None:
            raise ErrInvalidAuthToken()
        return ident
    if cn:
        return cn, server.auth.revision
    return None
