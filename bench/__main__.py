"""Run the benchmarks: `python -m bench [NAME ...]` (all of them when no name is given)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    """`python -m bench [NAME …] [--flags …]`: flags go to every chosen benchmark."""
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    wanted = [a for a in argv if not a.startswith("-")]
    flags = [a for a in argv if a.startswith("-")]
    chosen = [n for n in names if not wanted or n.removeprefix("bench_") in wanted or n in wanted]
    if not chosen:
        print(f"no benchmark named {' '.join(wanted)}; have: {', '.join(names)}", file=sys.stderr)
        return 2
    for name in chosen:
        print(f"\n=== {name}", flush=True)
        started = time.perf_counter()
        sys.argv = [f"bench.{name}", *flags]  # each benchmark reads its own flags
        entry = importlib.import_module(f"bench.{name}").main
        if inspect.signature(entry).parameters:
            entry(flags)
        else:
            entry()
        print(f"--- {name} took {time.perf_counter() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
