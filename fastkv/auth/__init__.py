"""Authentication and authorisation, as etcd 3.4's auth package.

* :mod:`fastkv.auth.store`: users, roles, permissions, the auth revision; the
  deterministic state machine every member applies from the log.
* :mod:`fastkv.auth.passwords`: password hashes, made by the server before it
  proposes and checked where a client authenticates.
* :mod:`fastkv.auth.tokens`: etcd's "simple" tokens, a member-local table.
* :mod:`fastkv.auth.jwt_tokens`: etcd's JWT tokens (``--auth-token jwt,...``), and
  :func:`~fastkv.auth.jwt_tokens.token_provider`, which reads ``--auth-token``.
* :mod:`fastkv.auth.identity`: who a request comes from (token, client certificate).
* :mod:`fastkv.auth.enforce`: etcd's permission checks of each kind of request.
"""
from fastkv.auth.passwords import (DEFAULT_COST, MAX_COST, MIN_COST, hash_password, new_salt,
                                   normalize_cost, verify_password)
from fastkv.auth.store import READ, READWRITE, ROOT_ROLE, ROOT_USER, WRITE, AuthStore
from fastkv.auth.tokens import DEFAULT_TOKEN_TTL, SimpleTokens, token_index

__all__ = ["AuthStore", "SimpleTokens", "hash_password", "verify_password", "new_salt",
           "normalize_cost", "token_index", "DEFAULT_COST", "MIN_COST", "MAX_COST",
           "DEFAULT_TOKEN_TTL", "ROOT_USER", "ROOT_ROLE", "READ", "WRITE", "READWRITE"]
