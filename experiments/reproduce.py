"""`make reproduce`: dispatch a paper table or figure to the ViT or the LLaMA runner."""

from __future__ import annotations

import argparse
import importlib
import sys

# Tables and figures of the paper, by the half of the experiments that makes them.
VIT_TABLES = {"1", "2", "5", "7", "8"}
VIT_FIGURES = {"1", "3"}
LLAMA_TABLES = {"3", "4"}
LLAMA_FIGURES = {"2", "4", "5", "6"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.reproduce", description=__doc__)
    parser.add_argument("--table", help="paper table number (1-5, 7, 8)")
    parser.add_argument("--figure", help="paper figure number (1-6)")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="options passed on to the runner")
    args = parser.parse_args(argv)

    if args.table and args.figure:
        parser.error("give --table or --figure, not both")
    known = VIT_TABLES | LLAMA_TABLES
    if args.table and args.table not in known:
        parser.error(f"invalid --table {args.table!r}: choose one of {sorted(known, key=int)}")
    if args.figure and args.figure not in VIT_FIGURES | LLAMA_FIGURES:
        parser.error(f"invalid --figure {args.figure!r}: choose one of 1-6")

    runners = []
    if args.table in LLAMA_TABLES or args.figure in LLAMA_FIGURES:
        runners.append("experiments.llama.reproduce")
    elif args.table or args.figure:
        runners.append("experiments.vit.reproduce")
    else:
        runners += ["experiments.vit.reproduce", "experiments.llama.reproduce"]

    status = 0
    for module_name in runners:
        module = importlib.import_module(module_name)
        status = max(status, module.main(table=args.table, figure=args.figure, extra=args.rest))
    return status


if __name__ == "__main__":
    sys.exit(main())
