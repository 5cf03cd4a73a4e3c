"""etcd 3.4's v2 auth: users, roles and the auth switch in the v2 store under /2."""
from fastkv.v2auth.model import AuthError
from fastkv.v2auth.store import V2AuthStore

__all__ = ["AuthError", "V2AuthStore"]
