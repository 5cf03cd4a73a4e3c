"""etcd 3.4's "simple" auth tokens (auth/simple_token.go): a member-local table.

A token is ``<16 random letters>.<log index>``. The member that a client asks
to authenticate checks the password, draws the random prefix
(:meth:`SimpleTokens.gen_prefix`) and proposes ``{"name", "simple_token":
prefix}``; every member applying that entry registers ``prefix.<entry index>``
for the user (``AuthStore.authenticate`` calls :meth:`SimpleTokens.assign`), as
etcd does, so the token works on any member once that member has applied the
entry (the server waits for :func:`token_index` before looking a token up).

The table itself is not replicated state: it is kept out of the auth store's
snapshot, and expiry follows each member's own clock (injected: monotonic
seconds). A token lives ``ttl`` seconds (``--auth-token-ttl``, default 300)
after it was issued or last used (:meth:`SimpleTokens.info` renews it, as
etcd's resetSimpleToken). Expiry is checked lazily on lookup;
:meth:`SimpleTokens.expire` sweeps the table (etcd sweeps once a second).
"""
from __future__ import annotations

import secrets
import time
from typing import Callable

__all__ = ["SimpleTokens", "TokenAssignError", "DEFAULT_TOKEN_TTL", "TOKEN_PREFIX_LENGTH",
           "simple_token",
           "token_index"]

DEFAULT_TOKEN_TTL = 300.0   # etcd's --auth-token-ttl default (simpleTokenTTLDefault)
TOKEN_PREFIX_LENGTH = 16    # defaultSimpleTokenLength
LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def simple_token(prefix: str, index: int) -> str:
    """The token a member registers for an authenticate entry at ``index``."""
    return f"{prefix}.{index}"


def token_index(token: str) -> int | None:
    """The log index a simple token names, or None if it is not shaped like one
    (etcd's isValidSimpleToken: exactly one dot, a decimal index after it)."""
    parts = token.split(".")
    if len(parts) != 2:
        return None
    digits = parts[1][1:] if parts[1][:1] in ("+", "-") else parts[1]
    if not digits.isascii() or not digits.isdigit():
        return None
    index = int(parts[1])
    return index if index >= 0 else None


class TokenAssignError(Exception):
    """A token provider cannot issue a token (a verify-only JWT key, the nop provider);
    the text is etcd's."""


class SimpleTokens:
    """token -> user name, with a TTL per token (see the module docstring)."""

    kind = "simple"

    def __init__(self, ttl: float = DEFAULT_TOKEN_TTL,
                 clock: Callable[[], float] = time.monotonic,
                 choice: Callable[[str], str] = secrets.choice):
        self.ttl = ttl if ttl > 0 else DEFAULT_TOKEN_TTL  # etcd: ttl <= 0 means the default
        self._clock = clock
        self._choice = choice
        self._enabled = False
        self._users: dict[str, str] = {}        # token -> user
        self._expiry: dict[str, float] = {}     # token -> clock time after which it is gone

    @property
    def enabled(self) -> bool:
        return self._enabled

    def __len__(self) -> int:
        return len(self._users)

    def gen_prefix(self) -> str:
        """A fresh random prefix (the authenticating member draws it before proposing)."""
        return "".join(self._choice(LETTERS) for _ in range(TOKEN_PREFIX_LENGTH))

    def enable(self) -> None:
        self._enabled = True

    def disable(self) -> None:
        """Auth turned off: every token is forgotten (etcd's tokenSimple.disable)."""
        self._enabled = False
        self._users.clear()
        self._expiry.clear()

    def assign(self, user: str, prefix: str, index: int, revision: int = 0) -> str:
        """Register ``prefix.index`` for ``user``; returns the token. While disabled
        nothing is registered (etcd: no TTL keeper), but the token is still returned.
        (``revision`` is for signed tokens; a simple token is always at the current one.)"""
        token = simple_token(prefix, index)
        if self._enabled:
            self._users[token] = user
            self._expiry[token] = self._clock() + self.ttl
        return token

    def info(self, token: str) -> str | None:
        """The user a live token belongs to, renewing its TTL; None if unknown or expired."""
        user = self._users.get(token)
        if user is None:
            return None
        now = self._clock()
        if now > self._expiry[token]:
            self._forget(token)
            return None
        self._expiry[token] = now + self.ttl
        return user

    def index_of(self, token: str) -> int:
        """The log index of the authenticate entry that made ``token`` (wait until it is
        applied here before looking the token up, as etcd's isValidSimpleToken); -1 if
        the token is not shaped like a simple token."""
        index = token_index(token)
        return -1 if index is None else index

    def identity(self, token: str, current_revision: int) -> tuple[str, int] | None:
        """(user, revision) of a live token (renewing it): a simple token is always at
        the auth store's current revision (etcd's tokenSimple.info)."""
        user = self.info(token)
        return None if user is None else (user, current_revision)

    def invalidate_user(self, user: str) -> None:
        """Drop every token of ``user`` (deleted, or its password changed)."""
        for token in [t for t, u in self._users.items() if u == user]:
            self._forget(token)

    def expire(self) -> int:
        """Drop every expired token; returns how many were dropped."""
        now = self._clock()
        gone = [t for t, due in self._expiry.items() if now > due]
        for token in gone:
            self._forget(token)
        return len(gone)

    def _forget(self, token: str) -> None:
        del self._users[token]
        del self._expiry[token]
