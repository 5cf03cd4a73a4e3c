"""Comparing v2 answers of fastkv and etcd: their store indexes differ by a constant.

etcd's v2 store also holds its own membership (/0), so the first key a test writes
gets a later index on etcd than on fastkv. An IndexShift learns the raw index of a
test's first change on one server (``base``) and rewrites every index in an answer
to count from that change (1 = the first), so both servers' answers compare equal.
"""
from __future__ import annotations

import re


class IndexShift:
    def __init__(self, mask_ttl: bool = True):
        self.base: int | None = None   # the raw index of the test's first change
        self.mask_ttl = mask_ttl

    def raw(self, k: int) -> int:
        """The raw index of the k-th change (k = 1 is the first)."""
        return self.base + k - 1

    def shift(self, n: int) -> int:
        return n - self.base + 1 if self.base is not None and n >= self.base else n

    def expand(self, text: str) -> str:
        """"{i:K}" in a request argument becomes the raw index of the K-th change."""
        return re.sub(r"\{i:(\d+)\}", lambda m: str(self.raw(int(m.group(1)))), text)

    def norm(self, text: str) -> str:
        """Indexes shifted in JSON bodies, in-order key names and compare failures
        ([given != the node's]: the tests' values are never numbers); TTL countdowns
        and expiration times masked (unless mask_ttl is off)."""
        sh = self.shift
        text = re.sub(r'"(modifiedIndex|createdIndex|index)":(\d+)',
                      lambda m: f'"{m.group(1)}":{sh(int(m.group(2)))}', text)
        text = re.sub(r"\[(\d+) != (\d+)\]",
                      lambda m: f"[{sh(int(m.group(1)))} != {sh(int(m.group(2)))}]", text)
        text = re.sub(r"/(\d{20})\b", lambda m: "/" + str(sh(int(m.group(1)))).zfill(20), text)
        if not self.mask_ttl:
            return text
        text = re.sub(r'"ttl":[1-9]\d*', '"ttl":T', text)
        return re.sub(r'"expiration":"[^"]+"', '"expiration":"E"', text)
