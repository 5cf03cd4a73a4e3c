"""Key-range helpers shared by the server and the command-line client."""
from __future__ import annotations


def prefix_end(key: bytes) -> bytes:
    """clientv3.GetPrefixRangeEnd: the smallest key greater than every key with this prefix."""
    end = bytearray(key)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\x00"  # all 0xff: everything from the key on
