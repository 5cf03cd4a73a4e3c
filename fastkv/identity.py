"""Member and cluster IDs, computed as etcd computes them.

A member's ID is the first 8 bytes (big-endian) of SHA-1 over its sorted peer
URLs joined, followed by the cluster token; the cluster ID is the first 8 bytes
of SHA-1 over the sorted member IDs (8 bytes big-endian each). So a default
fastkv has the same IDs as a default etcd.
"""
from __future__ import annotations

import hashlib
import struct


def member_id(peer_urls: list[str], cluster_token: str) -> int:
    b = "".join(sorted(peer_urls)).encode() + cluster_token.encode()
    return struct.unpack(">Q", hashlib.sha1(b).digest()[:8])[0]


def cluster_id(member_ids: list[int]) -> int:
    b = b"".join(struct.pack(">Q", m) for m in sorted(member_ids))
    return struct.unpack(">Q", hashlib.sha1(b).digest()[:8])[0]


class IdGenerator:
    """etcd's idutil.Generator: 2 bytes of member ID, then a time-seeded counter.

    Unique across members (the prefix) and across restarts (the millisecond
    seed moves forward faster than a member can use IDs)."""

    def __init__(self, member: int, now_ms: int):
        self.prefix = (member & 0xFFFF) << 48
        self.suffix = (now_ms << 8) & ((1 << 48) - 1)

    def next(self) -> int:
        self.suffix = (self.suffix + 1) & ((1 << 48) - 1)
        return self.prefix | self.suffix
