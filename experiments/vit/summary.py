"""Print a quick Markdown summary of ViT result files: mean and std over seeds per cell.

    python -m experiments.vit.summary [--profile cpu_profile] [table1 table2 figure1 ...]

For each experiment and each (dataset, method, rank, blocks, modification, switch)
cell it prints the number of seeds, test accuracy after the last epoch, the best
epoch's test accuracy and the last epoch's train loss. The paper's tables and
figures themselves come from `make figures`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from experiments.results import RESULTS_ROOT, iter_results


def _mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.2f} ± {spread:.2f}"


def summarise(directory: Path) -> list[str]:
    """Return Markdown table lines for the results under `directory` (one experiment)."""
    cells: dict[tuple, list[dict]] = defaultdict(list)
    for record in iter_results(directory):
        config = record["config"]
        switch = f"→{config['switch_blocks']}@{config['switch_epoch']}" if config.get("switch_blocks") else ""
        key = (config["dataset"], config["method"], config["rank"], config["blocks"] + switch,
               config.get("modification", "none"))
        cells[key].append(record)
    order = {"Q": 0, "K": 1, "V": 2, "O": 3, "QK": 4, "QV": 5, "OV": 6}
    lines = ["| dataset | method | rank | blocks | modification | seeds | params | test acc last | "
             "test acc best | train loss last |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for key in sorted(cells, key=lambda k: (k[0], k[1], k[4], k[2], order.get(k[3], 9), k[3])):
        records = cells[key]
        last = [r["metrics"]["test_accuracy_last"] for r in records]
        best = [r["metrics"]["test_accuracy_best"] for r in records]
        loss = [r["history"][-1]["train_loss"] for r in records]
        params = records[0]["metrics"]["trainable_params"]
        lines.append(f"| {' | '.join(map(str, key[:4]))} | {key[4]} | {len(records)} | {params} | "
                     f"{_mean_std(last)} | {_mean_std(best)} | {statistics.fmean(loss):.4f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.vit.summary", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="*", default=["table1", "table2", "figure1"])
    parser.add_argument("--profile", default="cpu_profile", help="results subfolder (default cpu_profile)")
    parser.add_argument("--output-root", type=Path, default=RESULTS_ROOT, help="results folder (default results/)")
    args = parser.parse_args(argv)
    for experiment in args.experiments:
        directory = args.output_root / args.profile / experiment
        if not directory.is_dir():
            print(f"error: no results folder {directory}; run the experiment first", file=sys.stderr)
            return 2
        print(f"\n### {experiment} ({args.profile})\n")
        print("\n".join(summarise(directory)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
