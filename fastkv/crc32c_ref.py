"""Pure-Python CRC-32C (Castagnoli), the reference for fastkv._crc32c.

Byte-at-a-time with one 256-entry table: slow (a few MB/s) but obviously
right. Used by the property tests and by the pure-Python WAL codec reference;
production code uses fastkv._crc32c.
"""

_POLY = 0x82F63B78  # reflected Castagnoli polynomial


def _make_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_TABLE = _make_table()


def crc32c(data, value: int = 0) -> int:
    """CRC-32C of `data` (any bytes-like object), continuing from `value`."""
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError("crc32c value must be in [0, 2**32)")
    table = _TABLE
    crc = value ^ 0xFFFFFFFF
    for b in memoryview(data).cast("B"):
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
