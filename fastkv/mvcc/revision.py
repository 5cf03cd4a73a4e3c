"""etcd's (main, sub) revision pair, packed into one int: main << 24 | sub."""

SUB_BITS = 24
SUB_MASK = (1 << SUB_BITS) - 1


def pack(main: int, sub: int = 0) -> int:
    return (main << SUB_BITS) | sub


def unpack(rev: int) -> tuple[int, int]:
    return rev >> SUB_BITS, rev & SUB_MASK


def main_of(rev: int) -> int:
    return rev >> SUB_BITS
