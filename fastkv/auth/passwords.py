"""Password hashes: made by the server before it proposes, checked by the member asked.

etcd 3.4 hashes with bcrypt (golang.org/x/crypto/bcrypt) at ``--bcrypt-cost``
(default 10; a cost outside bcrypt's [4, 31] falls back to 10, as etcd's
NewAuthStore does). So does fastkv, with the ``bcrypt`` package and Go's
``$2a$`` prefix, so a hash is the same string Go would store. Like Go's bcrypt
of etcd 3.4's time, only the first 72 bytes of a password count.

The salt is chosen by the server (:func:`new_salt`) and the hash travels in the
log (etcd 3.5's ``hashedPassword``), so applying a user add or a password change
is deterministic and no password is ever written to the WAL;
:func:`verify_password` runs where a client authenticates (off the event loop:
it costs about 60 ms at the default cost, a millisecond at 4).

Hashes made by earlier fastkv versions (``pbkdf2_sha256$<iterations>$<salt>$<hash>``)
still verify: their check is the standard library's and as costly as bcrypt's.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

import bcrypt

__all__ = ["MIN_COST", "MAX_COST", "DEFAULT_COST", "SALT_BYTES", "MAX_PASSWORD_BYTES",
           "normalize_cost", "new_salt", "hash_password", "verify_password"]

MIN_COST = 4        # bcrypt.MinCost
MAX_COST = 31       # bcrypt.MaxCost
DEFAULT_COST = 10   # bcrypt.DefaultCost, etcd's --bcrypt-cost default
SALT_BYTES = 16     # bcrypt's salt size
MAX_PASSWORD_BYTES = 72   # bcrypt reads no further (Go's bcrypt of etcd 3.4 truncated silently)

# bcrypt's own base64 alphabet (not RFC 4648's), for a salt of our choosing.
_BCRYPT_B64 = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
    b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_PBKDF2 = "pbkdf2_sha256"


def normalize_cost(cost: int) -> int:
    """etcd's NewAuthStore: a cost outside [MIN_COST, MAX_COST] becomes DEFAULT_COST."""
    return cost if MIN_COST <= cost <= MAX_COST else DEFAULT_COST


def new_salt() -> bytes:
    """A fresh random salt (the server's job, before proposing)."""
    return os.urandom(SALT_BYTES)


def _utf8(password: str | bytes) -> bytes:
    raw = password.encode("utf-8") if isinstance(password, str) else bytes(password)
    return raw[:MAX_PASSWORD_BYTES]


def _bcrypt_salt(salt: bytes, cost: int) -> bytes:
    """Go's "$2a$<cost>$<22 chars>" from 16 raw salt bytes (other lengths are first
    stretched or shortened to 16 by SHA-256)."""
    if len(salt) != SALT_BYTES:
        salt = hashlib.sha256(salt).digest()[:SALT_BYTES]
    encoded = base64.b64encode(salt).rstrip(b"=").translate(_BCRYPT_B64)[:22]
    return b"$2a$%02d$" % cost + encoded


def hash_password(password: str | bytes, salt: bytes | None = None,
                  cost: int = DEFAULT_COST) -> str:
    """The stored form of ``password``: a bcrypt hash, deterministic for a given salt
    (16 bytes; a fresh one when None) and cost (in [MIN_COST, MAX_COST])."""
    if not MIN_COST <= cost <= MAX_COST:
        raise ValueError(f"cost {cost} outside [{MIN_COST}, {MAX_COST}]")
    return bcrypt.hashpw(_utf8(password),
                         _bcrypt_salt(salt if salt is not None else new_salt(), cost)).decode()


def verify_password(hashed: str, password: str | bytes) -> bool:
    """Whether ``password`` matches ``hashed`` (a malformed hash matches nothing)."""
    if not isinstance(hashed, str) or not hashed:
        return False
    if hashed.startswith("$2"):
        try:
            return bcrypt.checkpw(_utf8(password), hashed.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            return False
    return _verify_pbkdf2(hashed, password)


def _verify_pbkdf2(hashed: str, password: str | bytes) -> bool:
    """Hashes of fastkv before bcrypt: PBKDF2-HMAC-SHA256 with their own iterations."""
    parts = hashed.split("$")
    if len(parts) != 4 or parts[0] != _PBKDF2 or not parts[1].isdigit():
        return False
    iterations = int(parts[1])
    try:
        salt = base64.b64decode(parts[2], validate=True)
        expected = base64.b64decode(parts[3], validate=True)
    except (binascii.Error, ValueError):
        return False
    if not 0 < iterations <= 256 << MAX_COST or not expected:
        return False
    raw = password.encode("utf-8") if isinstance(password, str) else bytes(password)
    digest = hashlib.pbkdf2_hmac("sha256", raw, salt, iterations)
    return hmac.compare_digest(digest, expected)
