"""File names made of two 16-digit hex numbers: ``<a:016x>-<b:016x><suffix>``.

WAL segments are ``<seq>-<first index>.wal`` and snapshots
``<term>-<index>.snap``, as in etcd, so a directory listing sorts in order.
"""
from __future__ import annotations


def hex_pair_name(a: int, b: int, suffix: str) -> str:
    return f"{a:016x}-{b:016x}{suffix}"


def parse_hex_pair_name(name: str, suffix: str) -> tuple[int, int] | None:
    if not name.endswith(suffix):
        return None
    parts = name[: -len(suffix)].split("-")
    if len(parts) != 2 or any(len(p) != 16 for p in parts):
        return None
    try:
        return int(parts[0], 16), int(parts[1], 16)
    except ValueError:
        return None
