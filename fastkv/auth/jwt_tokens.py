"""etcd 3.4's JWT auth tokens (auth/jwt.go, auth/options.go) and ``--auth-token``.

``--auth-token jwt,pub-key=<PEM file>,priv-key=<PEM file>,sign-method=<alg>,ttl=<Go
duration>`` makes a member sign its tokens instead of keeping a table: a token
carries the claims ``username``, ``revision`` (the auth revision it was issued
at) and ``exp`` (now + ttl, default 5 minutes), so any member holding the key
checks it without asking anyone. The revision claim makes etcd's revision rule
apply to it: once the auth store changed (a permission granted or revoked, a
user deleted...), requests carrying an older token are refused with "revision
of auth store is old" and the client authenticates again, so a token never
carries permissions the store no longer gives.

Signing methods are golang-jwt's: HS256/384/512 (the key is priv-key's bytes),
RS256/384/512 and PS256/384/512 (RSA PEM keys), ES256/384/512 (EC PEM keys). With
only pub-key a member verifies tokens but cannot issue them (etcd's verify-only
mode: Authenticate fails with "auth: token signing attempted with verify-only key").

:func:`token_provider` parses ``--auth-token`` as etcd's NewTokenProvider: ``simple``
(the default; :class:`fastkv.auth.tokens.SimpleTokens`), ``jwt,...`` or, as etcd,
an empty string for a provider that issues nothing.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from typing import Callable

import jwt as pyjwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fastkv.auth.tokens import SimpleTokens, TokenAssignError

__all__ = ["JWTTokens", "NopTokens", "AuthOptionsError", "token_provider", "parse_go_duration",
           "DEFAULT_JWT_TTL", "SIGN_METHODS"]

DEFAULT_JWT_TTL = 300.0   # auth.DefaultTTL: 5 minutes

# golang-jwt's registered methods and the key family each needs.
SIGN_METHODS = {
    "HS256": "hmac", "HS384": "hmac", "HS512": "hmac",
    "RS256": "rsa", "RS384": "rsa", "RS512": "rsa",
    "PS256": "rsa", "PS384": "rsa", "PS512": "rsa",
    "ES256": "ec", "ES384": "ec", "ES512": "ec",
}
_KNOWN_OPTIONS = ("sign-method", "pub-key", "priv-key", "ttl")


class AuthOptionsError(ValueError):
    """A bad ``--auth-token``: the member does not start (etcd's messages)."""


# auth package errors a token provider reports (etcd's texts)
ERR_INVALID_AUTH_OPTS = "auth: invalid auth options"
ERR_INVALID_AUTH_METHOD = "auth: invalid auth signature method"
ERR_MISSING_KEY = "auth: missing key data"
ERR_KEY_MISMATCH = "auth: public and private keys don't match"
ERR_VERIFY_ONLY = "auth: token signing attempted with verify-only key"


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3,
                   "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)([a-z\u00b5\u03bc]+)")


def parse_go_duration(text: str) -> float:
    """Go's time.ParseDuration, in seconds ("5m", "1h30m", "1.5s", "300ms", "0")."""
    s = text
    sign = 1.0
    if s[:1] in ("+", "-"):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f'time: invalid duration "{text}"')
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None or m.group(1) in ("", ".") or m.group(2) not in _DURATION_UNITS:
            if m is not None and m.group(1) not in ("", ".") and m.group(2):
                raise ValueError(f'time: unknown unit "{m.group(2)}" in duration "{text}"')
            if m is not None and m.group(1) not in ("", "."):
                raise ValueError(f'time: missing unit in duration "{text}"')
            raise ValueError(f'time: invalid duration "{text}"')
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def _decompose(optstr: str) -> tuple[str, dict[str, str]]:
    """etcd's decomposeOpts: ``type,key=value,...``; a pair without exactly one "="
    or a key given twice is refused."""
    parts = optstr.split(",")
    opts: dict[str, str] = {}
    for part in parts[1:]:
        pair = part.split("=")
        if len(pair) != 2:
            raise AuthOptionsError(ERR_INVALID_AUTH_OPTS)
        if pair[0] in opts:
            raise AuthOptionsError(ERR_INVALID_AUTH_OPTS)
        opts[pair[0]] = pair[1]
    return parts[0], opts


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise AuthOptionsError(f"open {path}: {exc.strerror.lower() if exc.strerror else exc}") \
            from None


def _load_private(pem: bytes, family: str):
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise AuthOptionsError(f"invalid key: {exc}") from None
    want = rsa.RSAPrivateKey if family == "rsa" else ec.EllipticCurvePrivateKey
    if not isinstance(key, want):
        raise AuthOptionsError("key is not a valid " + ("RSA" if family == "rsa" else "ECDSA")
                               + " private key")
    return key


def _load_public(pem: bytes, family: str):
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        try:   # golang-jwt also takes a certificate
            from cryptography import x509
            key = x509.load_pem_x509_certificate(pem).public_key()
        except ValueError as exc:
            raise AuthOptionsError(f"invalid key: {exc}") from None
    want = rsa.RSAPublicKey if family == "rsa" else ec.EllipticCurvePublicKey
    if not isinstance(key, want):
        raise AuthOptionsError("key is not a valid " + ("RSA" if family == "rsa" else "ECDSA")
                               + " public key")
    return key


class _TablelessTokens:
    """The token-provider interface (as SimpleTokens offers it to AuthStore and the
    server) for providers that keep no table of tokens: nothing to enable, expire or
    invalidate, and no log index to wait for before a token is known."""

    enabled = True

    def enable(self) -> None:
        pass

    def disable(self) -> None:
        pass

    def invalidate_user(self, user: str) -> None:
        pass

    def expire(self) -> int:
        return 0

    def gen_prefix(self) -> str:
        return ""

    def index_of(self, token: str) -> int:
        return 0


class JWTTokens(_TablelessTokens):
    """etcd's tokenJWT. Stateless: nothing to enable, disable or invalidate."""

    kind = "jwt"

    def __init__(self, sign_method: str, signing_key, verify_key, ttl: float = DEFAULT_JWT_TTL,
                 clock: Callable[[], float] = time.time):
        self.sign_method = sign_method
        self._signing_key = signing_key     # None: verify-only
        self._verify_key = verify_key
        self.ttl = ttl
        self._clock = clock

    @classmethod
    def from_options(cls, opts: dict[str, str]) -> "JWTTokens":
        """etcd's newTokenProviderJWT: jwtOptions.ParseWithDefaults, then Key()."""
        ttl = DEFAULT_JWT_TTL
        if opts.get("ttl"):
            try:
                ttl = parse_go_duration(opts["ttl"])
            except ValueError as exc:
                raise AuthOptionsError(ERR_INVALID_AUTH_OPTS + f" ({exc})") from None
        pub = _read(opts["pub-key"]) if opts.get("pub-key") else b""
        priv = _read(opts["priv-key"]) if opts.get("priv-key") else b""
        method = opts.get("sign-method", "")
        family = SIGN_METHODS.get(method)
        if family is None:
            raise AuthOptionsError(ERR_INVALID_AUTH_OPTS + f" ({ERR_INVALID_AUTH_METHOD})")
        if family == "hmac":
            if not priv:
                raise AuthOptionsError(ERR_MISSING_KEY)
            return cls(method, priv, priv, ttl)
        priv_key = _load_private(priv, family) if priv else None
        pub_key = _load_public(pub, family) if pub else None
        if priv_key is None:
            if pub_key is None:
                raise AuthOptionsError(ERR_MISSING_KEY)
            return cls(method, None, pub_key, ttl)   # verify only
        if pub_key is not None and _mismatch(priv_key, pub_key):
            raise AuthOptionsError(ERR_KEY_MISMATCH)
        # etcd verifies with the public half of the private key when it has one
        return cls(method, priv_key, priv_key.public_key(), ttl)

    @property
    def verify_only(self) -> bool:
        return self._signing_key is None


    def assign(self, user: str, prefix: str, index: int, revision: int = 0) -> str:
        """A signed token for ``user`` at auth revision ``revision`` (etcd's assign)."""
        if self._signing_key is None:
            raise TokenAssignError(ERR_VERIFY_ONLY)
        claims = {"exp": int(self._clock() + self.ttl), "revision": revision, "username": user}
        if self.sign_method in _HMAC:
            return _hmac_encode(claims, self._signing_key, self.sign_method)
        return pyjwt.encode(claims, self._signing_key, algorithm=self.sign_method)

    def identity(self, token: str, current_revision: int) -> tuple[str, int] | None:
        """(user, the token's revision) of a valid, unexpired token signed with our key
        by our method; None otherwise (etcd's info)."""
        if self.sign_method in _HMAC:
            claims = _hmac_decode(token, self._verify_key, self.sign_method, self._clock())
            if claims is None:
                return None
        else:
            try:
                claims = pyjwt.decode(token, self._verify_key, algorithms=[self.sign_method],
                                      options={"verify_aud": False, "verify_iss": False})
            except (pyjwt.PyJWTError, ValueError, TypeError):
                return None
        user = claims.get("username")
        revision = claims.get("revision")
        if not isinstance(user, str) or isinstance(revision, bool) or \
                not isinstance(revision, (int, float)) or revision < 0:
            return None
        return user, int(revision)


# HS256/384/512 by hand: etcd takes any bytes as the HMAC key (a PEM file too), which
# PyJWT refuses.
_HMAC = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _hmac_encode(claims: dict, key: bytes, method: str) -> str:
    head = _b64url(json.dumps({"alg": method, "typ": "JWT"}, separators=(",", ":")).encode())
    body = _b64url(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    signing_input = f"{head}.{body}".encode("ascii")
    return f"{head}.{body}." + _b64url(hmac.new(key, signing_input, _HMAC[method]).digest())


def _hmac_decode(token: str, key: bytes, method: str, now: float) -> dict | None:
    """The claims of a token signed by ``method`` with ``key``, unexpired (golang-jwt's
    checks: the header's alg, the signature, exp/nbf when present); None otherwise."""
    try:
        head, body, sig = token.split(".")
        header = json.loads(_b64url_decode(head))
        if not isinstance(header, dict) or header.get("alg") != method:
            return None
        want = hmac.new(key, f"{head}.{body}".encode("ascii"), _HMAC[method]).digest()
        if not hmac.compare_digest(want, _b64url_decode(sig)):
            return None
        claims = json.loads(_b64url_decode(body))
    except (ValueError, TypeError, UnicodeError, binascii.Error):
        return None
    if not isinstance(claims, dict):
        return None
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if exp is not None and (not isinstance(exp, (int, float)) or now > exp):
        return None
    if nbf is not None and (not isinstance(nbf, (int, float)) or now < nbf):
        return None
    return claims


def _mismatch(priv, pub) -> bool:
    """etcd's check, condition as written there: keys mismatch when every part differs."""
    a, b = priv.public_key().public_numbers(), pub.public_numbers()
    if isinstance(a, rsa.RSAPublicNumbers):
        return a.e != b.e and a.n != b.n
    return a.curve.name != b.curve.name and a.x != b.x and a.y != b.y


class NopTokens(_TablelessTokens):
    """etcd's tokenNop (``--auth-token ""``): issues nothing, knows no token."""

    kind = "nop"

    def assign(self, user: str, prefix: str, index: int, revision: int = 0) -> str:
        from fastkv.errors import ErrAuthFailed
        raise ErrAuthFailed()   # etcd's tokenNop: auth.ErrAuthFailed, which gRPC translates

    def identity(self, token: str, current_revision: int):
        return None


def token_provider(optstr: str, simple_ttl: float):
    """etcd's NewTokenProvider for ``--auth-token``; AuthOptionsError if it is bad."""
    kind, opts = _decompose(optstr)
    if kind == "simple":
        return SimpleTokens(ttl=simple_ttl)
    if kind == "jwt":
        return JWTTokens.from_options(opts)
    if kind == "":
        return NopTokens()
    raise AuthOptionsError(ERR_INVALID_AUTH_OPTS)
