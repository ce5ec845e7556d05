"""Run the benchmarks: `python -m bench [NAME ...]` (all of them when no name is given)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    chosen = [n for n in names if not argv or n.removeprefix("bench_") in argv or n in argv]
    if not chosen:
        print(f"no benchmark named {' '.join(argv)}; have: {', '.join(names)}", file=sys.stderr)
        return 2
    for name in chosen:
        print(f"\n=== {name}", flush=True)
        started = time.perf_counter()
        importlib.import_module(f"bench.{name}").main()
        print(f"--- {name} took {time.perf_counter() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
