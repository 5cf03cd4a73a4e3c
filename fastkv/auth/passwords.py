"""Password hashes: made by the server before it proposes, checked by the member asked.

etcd 3.4 hashes with bcrypt (golang.org/x/crypto/bcrypt, cost ``--bcrypt-cost``,
default 10). fastkv uses the standard library's PBKDF2-HMAC-SHA256 with the
same knob: a cost ``c`` in bcrypt's range [4, 31] means ``256 << c`` iterations,
which costs about as much time as bcrypt at that cost (about 60 ms at the
default 10; a few ms at 4, which is what tests use).

The hash is a string ``pbkdf2_sha256$<iterations>$<salt, base64>$<hash, base64>``
that carries its own iterations and salt, so changing the cost later leaves
existing hashes valid. The salt is chosen by the server (:func:`new_salt`) and
the hash travels in the log, so applying a user add or a password change is
deterministic; :func:`verify_password` runs where a client authenticates.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

__all__ = ["ALGORITHM", "MIN_COST", "MAX_COST", "DEFAULT_COST", "SALT_BYTES",
           "iterations_for_cost", "normalize_cost", "new_salt", "hash_password",
           "verify_password"]

ALGORITHM = "pbkdf2_sha256"
MIN_COST = 4        # bcrypt.MinCost
MAX_COST = 31       # bcrypt.MaxCost
DEFAULT_COST = 10   # bcrypt.DefaultCost, etcd's --bcrypt-cost default
SALT_BYTES = 16     # bcrypt's salt size


def iterations_for_cost(cost: int) -> int:
    """PBKDF2 iterations for a bcrypt-style cost: ``256 << cost`` (2**cost rounds, scaled)."""
    if not MIN_COST <= cost <= MAX_COST:
        raise ValueError(f"cost {cost} outside [{MIN_COST}, {MAX_COST}]")
    return 256 << cost


def normalize_cost(cost: int) -> int:
    """etcd's NewAuthStore: a cost outside [MIN_COST, MAX_COST] becomes DEFAULT_COST."""
    return cost if MIN_COST <= cost <= MAX_COST else DEFAULT_COST


def new_salt() -> bytes:
    """A fresh random salt (the server's job, before proposing)."""
    return os.urandom(SALT_BYTES)


def _utf8(password: str | bytes) -> bytes:
    return password.encode("utf-8") if isinstance(password, str) else bytes(password)


def hash_password(password: str | bytes, salt: bytes, cost: int = DEFAULT_COST) -> str:
    """The stored form of ``password``; deterministic for a given salt and cost."""
    iterations = iterations_for_cost(cost)
    digest = hashlib.pbkdf2_hmac("sha256", _utf8(password), salt, iterations)
    return "$".join((ALGORITHM, str(iterations), base64.b64encode(salt).decode("ascii"),
                     base64.b64encode(digest).decode("ascii")))


def verify_password(hashed: str, password: str | bytes) -> bool:
    """Whether ``password`` matches ``hashed`` (a malformed hash matches nothing)."""
    parts = hashed.split("$") if isinstance(hashed, str) else ()
    if len(parts) != 4 or parts[0] != ALGORITHM or not parts[1].isdigit():
        return False
    iterations = int(parts[1])
    try:
        salt = base64.b64decode(parts[2], validate=True)
        expected = base64.b64decode(parts[3], validate=True)
    except (binascii.Error, ValueError):
        return False
    if iterations <= 0 or not expected:
        return False
    digest = hashlib.pbkdf2_hmac("sha256", _utf8(password), salt, iterations)
    return hmac.compare_digest(digest, expected)
