"""Figures 1 and 3: ViT training dynamics per tuned block, and the norm experiments.

Figure 1 compares tuning O with tuning V after a function-preserving rescaling
of the pretrained weights. Config ``modification`` "large_o" multiplies W_O by
3 and divides W_V by 3, and "large_v" does the reverse. Panel (c) switches
from V to O after ``switch_epoch`` epochs. Rows: training loss and test
accuracy per epoch.

Figure 3 shows rank-4 LoRA on each single block: training loss and test
accuracy per epoch, and the spectral norm of each block per layer. Solid lines
are the norms before tuning (the result's "initial_norms"), dashed lines the
tuned block's effective weight after the last epoch. The ViT runner files Figure 3's runs
as Table 1's rank-4 runs, so it reads experiment "table1" unless a "figure3"
folder holds rank-4 single-block runs.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from figures.collect import initial_norms, load_records, mean_curve, norms_by_layer, variant_labels
from figures.paper import block_sort_key, canonical_blocks, canonical_dataset, dataset_label
from figures.plotting import color, integer_x, mark_missing, new_figure, plot_band, save, stamp_text

FIGURE1_PANELS = (("large_o", "(a) Large O"), ("large_v", "(b) Large V"), ("none", "(c) switch V to O"))
CURVES = (("train_loss", "training loss"), ("test_accuracy", "test accuracy (%)"))
FIGURE3_RANK = 4
# Settings that Figure 1's panels and labels already show.
FIGURE1_FIELDS = ("modification", "switch_blocks", "switch_epoch")


def run_label(config: dict, vary_rank: bool, vary_dataset: bool) -> str:
    label = canonical_blocks(config["blocks"])
    if config.get("switch_blocks"):
        label += f"→{canonical_blocks(config['switch_blocks'])} at epoch {config.get('switch_epoch')}"
    if vary_rank:
        label += f" r{config.get('rank')}"
    if vary_dataset:
        label += f" {dataset_label(canonical_dataset(config.get('dataset', '?')))}"
    return label


def group_runs(records: list[dict]) -> dict[str, list[dict]]:
    """Group runs by a label that names blocks, a switch, and rank, dataset or other settings where they vary."""
    vary_rank = len({r["config"].get("rank") for r in records}) > 1
    vary_dataset = len({r["config"].get("dataset") for r in records}) > 1
    labels = [run_label(record["config"], vary_rank, vary_dataset) for record in records]
    groups: dict[str, list[dict]] = defaultdict(list)
    for label in set(labels):
        members = [record for record, other in zip(records, labels) if other == label]
        for record, variant in zip(members, variant_labels(members, ignore=FIGURE1_FIELDS)):
            groups[f"{label} [{variant}]" if variant else label].append(record)
    return {label: groups[label] for label in sorted(groups, key=block_sort_key)}


def draw_curves(ax: Axes, groups: dict[str, list[dict]], key: str, ylabel: str, absent: str) -> None:
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    drawn = 0
    for label, runs in groups.items():
        xs, means, stds = mean_curve([r.get("history", []) for r in runs], "epoch", key)
        if xs:
            plot_band(ax, xs, means, stds, f"{label} (n={len(runs)})")
            drawn += 1
    if drawn:
        ax.legend(fontsize=7)
    else:
        mark_missing(ax, absent)


def build_figure1(records: list[dict]) -> Figure:
    backbones = sorted({str(r["config"].get("backbone", "?")) for r in records})
    title = "Figure 1: effect of block norms on tuning O or V" + (
        f" (results: {', '.join(backbones)})" if backbones else " (no results)")
    figure, axes = new_figure(len(CURVES), len(FIGURE1_PANELS), title)
    for column, (modification, panel_title) in enumerate(FIGURE1_PANELS):
        runs = [r for r in records if r["config"].get("modification", "none") == modification]
        groups = group_runs(runs)
        switch_epochs = sorted({r["config"]["switch_epoch"] for r in runs if r["config"].get("switch_blocks")})
        for row, (key, ylabel) in enumerate(CURVES):
            ax = axes[row][column]
            draw_curves(ax, groups, key, ylabel, f"runs with modification={modification}")
            for epoch in switch_epochs:
                # The switch happens after `epoch` epochs: the next point is the first with the new block.
                ax.axvline(epoch, linestyle=":", color="0.5", linewidth=1)
            if row == 0:
                ax.set_title(panel_title, loc="left", fontsize=9)
    return figure


def figure3_records(records: list[dict]) -> list[dict]:
    """Prefer dedicated Figure 3 runs; otherwise use Table 1's rank-4 LoRA runs on single blocks."""
    def eligible(record: dict) -> bool:
        config = record["config"]
        return (config.get("method") == "lora" and int(config.get("rank", -1)) == FIGURE3_RANK
                and len(canonical_blocks(config["blocks"])) == 1)

    dedicated = [r for r in records if r["config"].get("experiment") == "figure3" and eligible(r)]
    if dedicated:
        return dedicated
    return [r for r in records if r["config"].get("experiment") == "table1" and eligible(r)]


def draw_block_norms(ax: Axes, groups: dict[str, list[dict]]) -> None:
    ax.set_xlabel("layer")
    integer_x(ax)
    ax.set_ylabel("spectral norm")
    drawn = False
    before = next((norms for runs in groups.values() for r in runs if (norms := initial_norms(r, "spectral"))), {})
    for block in "QKVO":
        if block in before:
            ax.plot(range(len(before[block])), before[block], marker=".", color=color(block), label=f"{block} before")
            drawn = True
        # Mean over seeds of the tuned block's norms after the last epoch.
        after = [norms[block] for r in groups.get(block, [])
                 if block in (norms := norms_by_layer(r.get("history", []), "spectral", "last"))]
        if after:
            mean = [statistics.fmean(values) for values in zip(*after)]
            ax.plot(range(len(mean)), mean, linestyle="--", color=color(block), label=f"{block} after tuning {block}")
            drawn = True
    if drawn:
        ax.legend(fontsize=6, ncol=2)
    else:
        mark_missing(ax, "no norms recorded")


def build_figure3(records: list[dict]) -> Figure:
    selected = figure3_records(records)
    by_dataset: dict[str, list[dict]] = defaultdict(list)
    for record in selected:
        by_dataset[canonical_dataset(record["config"].get("dataset", "?"))].append(record)
    datasets = sorted(by_dataset) or ["(none)"]
    backbones = sorted({str(r["config"].get("backbone", "?")) for r in selected})
    title = f"Figure 3: rank-{FIGURE3_RANK} LoRA on one block" + (
        f" (results: {', '.join(backbones)})" if backbones else " (no results)")
    figure, axes = new_figure(len(datasets), 3, title)
    for row, dataset in enumerate(datasets):
        groups = {label: runs for label, runs in group_runs(by_dataset.get(dataset, [])).items()}
        name = dataset_label(dataset)
        draw_curves(axes[row][0], groups, "train_loss", f"training loss, {name}", "rank-4 single-block runs")
        draw_curves(axes[row][1], groups, "test_accuracy", f"test accuracy (%), {name}", "rank-4 single-block runs")
        draw_block_norms(axes[row][2], groups)
        absent = [block for block in "QKVO" if block not in groups]
        if groups and absent:
            axes[row][0].set_title(f"missing: {', '.join(absent)}", fontsize=8, color="0.35")
    for column, panel_title in enumerate(("(a) training", "(b) test", "(c) norms per layer")):
        axes[0][column].set_title(panel_title, loc="left", fontsize=9)
    return figure


BUILDERS = {"figure1": (build_figure1, ("figure1",)), "figure3": (build_figure3, ("figure3", "table1"))}


def render(figure_id: str, results_dir: Path, out_dir: Path, profile: str, code_version: str) -> list[Path]:
    builder, experiments = BUILDERS[figure_id]
    records = load_records(results_dir, experiments)
    used = figure3_records(records) if figure_id == "figure3" else records
    stamp = stamp_text(code_version, profile, len(used))
    return save(builder(records), Path(out_dir) / figure_id, stamp)
