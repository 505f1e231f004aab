"""`make bench`: run every `benchmarks/bench_*.py` module's `main()` in one process, in name order."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    selected = set(argv)
    status = 0
    for path in sorted(Path(__file__).parent.glob("bench_*.py")):
        name = path.stem
        if selected and name not in selected:
            continue
        print(f"== {name}", flush=True)
        module = importlib.import_module(f"benchmarks.{name}")
        status = max(status, int(module.main() or 0))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
