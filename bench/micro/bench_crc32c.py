"""CRC-32C throughput: fastkv._crc32c (hardware and table paths) against the
pure-Python reference and the `crc32c` PyPI package, on 4 KiB and 1 MiB.

    python bench/micro/bench_crc32c.py --fast

pyperf prints the time per call; the GB/s summary follows at the end.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import crc32c as crc32c_pypi  # noqa: E402
import pyperf  # noqa: E402

from fastkv import _crc32c  # noqa: E402
from fastkv.crc32c_ref import crc32c as crc32c_ref  # noqa: E402

SIZES = {"4KiB": 4096, "1MiB": 1 << 20}
IMPLS = {
    "fastkv(" + _crc32c.backend() + ")": _crc32c.crc32c,
    "fastkv(table)": _crc32c.crc32c_table,
    "crc32c-pypi": crc32c_pypi.crc32c,
    "reference": crc32c_ref,
}


def main():
    runner = pyperf.Runner()
    results = []
    for size_name, size in SIZES.items():
        data = os.urandom(size)
        for impl_name, fn in IMPLS.items():
            bench = runner.bench_func(f"crc32c {impl_name} {size_name}", fn, data)
            if bench is not None and not runner.args.worker:
                results.append((impl_name, size_name, size / bench.mean() / 1e9))
    if results:
        print("\nthroughput (GB/s):")
        for impl_name, size_name, gbs in results:
            print(f"  {impl_name:22s} {size_name:5s} {gbs:10.4f}")


if __name__ == "__main__":
    main()
