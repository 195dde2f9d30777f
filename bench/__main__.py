"""`python -m bench [NAME ...]` (what `make bench` runs): every benchmark, or the named ones.

Each benchmark is a module here with `main(argv) -> int` that prints its figures; the README quotes
them. They measure; they never assert: a slow run on a busy machine is data, not a failure.
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = ("policy", "replay", "aws", "proxy", "console")


def main(argv: list[str]) -> int:
    names = argv or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    status = 0
    for name in names:
        print(f"== bench.{name} ==", flush=True)
        status |= importlib.import_module(f"bench.{name}").main([])
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
