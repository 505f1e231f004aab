"""The `blockrank` command line: one subcommand per module in this package."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Each subcommand lives in its own module, which defines `add_parser(subparsers)`
# and `run(args) -> int`. Modules are imported lazily so that a light command
# (threshold) does not import transformers or timm.
SUBCOMMANDS = {
    "threshold": "blockrank_ref.cli.threshold",
    "sensitivity": "blockrank_ref.cli.sensitivity",
    "verify": "blockrank_ref.cli.verify",
    "recommend": "blockrank_ref.cli.recommend",
}


class UsageError(ValueError):
    """Invalid command-line input; the CLI prints it on one line and exits with status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blockrank",
        description="Check the block-sensitivity theory of 'LoRA in the right place' and apply it.",
        epilog="Runs offline: HF_HUB_OFFLINE defaults to 1, so a hub model name is looked up only in the "
               "local cache. Set HF_HUB_OFFLINE=0 to allow downloads.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, module_name in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Set before any subcommand imports huggingface_hub, which reads it at import time.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except UsageError as error:
        print(f"blockrank {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
