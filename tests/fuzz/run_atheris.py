#!/usr/bin/env python3
"""One fuzz target under atheris (libFuzzer, coverage-guided) for a bounded time.

    python tests/fuzz/run_atheris.py TARGET --seconds 600 [--corpus DIR]

TARGET is a name from tests/fuzz/targets.py. The corpus (default
tests/fuzz/corpus/TARGET, not committed) keeps the inputs that found new coverage
across runs. A crash leaves crash-* files in --artifacts and exits non-zero; put
the input into REGRESSIONS in test_fuzz_targets.py once fixed.
"""
from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("target")
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--corpus", default=None)
    ap.add_argument("--artifacts", default=os.path.join(HERE, "crashes"))
    args = ap.parse_args()
    import atheris
    sys.path.insert(0, HERE)
    with atheris.instrument_imports(include=["fastkv", "targets"]):
        import targets
    if args.target not in targets.TARGETS:
        ap.error(f"unknown target {args.target!r}; one of {sorted(targets.TARGETS)}")
    corpus = args.corpus or os.path.join(HERE, "corpus", args.target)
    os.makedirs(corpus, exist_ok=True)
    os.makedirs(args.artifacts, exist_ok=True)

    def one_input(data: bytes) -> None:
        targets.run(args.target, data)

    atheris.Setup([sys.argv[0], f"-max_total_time={args.seconds}", "-timeout=10",
                   "-rss_limit_mb=4096", f"-artifact_prefix={args.artifacts}/{args.target}-",
                   "-print_final_stats=1", corpus], one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
