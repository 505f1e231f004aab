"""Figures 2, 4, 5 and 6: LLaMA training and validation loss per block set, and block norms.

Each figure has three panels: (a) training loss per step, smoothed with a
trailing moving average of 50 steps, (b) validation loss, smoothed over 10
evaluation points (the windows the paper states for Figure 2, used for all
four figures), (c) Frobenius norm of each attention block per layer, read
from the first history entry that records norms (the weights before tuning
when the runner logs step 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from figures.collect import initial_norms, load_records, mean_curve, row_variants
from figures.paper import block_sort_key, canonical_blocks
from figures.plotting import color, integer_x, mark_missing, moving_average, new_figure, plot_band, save, stamp_text

# The LLaMA runner stores every table and figure run of one model under one experiment name.
LLAMA2 = "commonsense_llama2_7b"
LLAMA3 = "commonsense_llama3_8b"
TRAIN_WINDOW = 50
VALIDATION_WINDOW = 10


@dataclass(frozen=True)
class LlamaFigureSpec:
    number: int
    experiments: tuple[str, ...]
    title: str
    rank: int
    block_sets: tuple[str, ...]


LLAMA_FIGURES = {
    "figure2": LlamaFigureSpec(2, ("figure2", LLAMA2), "LLaMA2-7B, rank 1: V alone, V+Q and V+O", 1,
                               ("V", "QV", "OV")),
    "figure4": LlamaFigureSpec(4, ("figure4", LLAMA2), "LLaMA2-7B, rank 1: one block at a time", 1,
                               ("Q", "K", "V", "O")),
    "figure5": LlamaFigureSpec(5, ("figure5", LLAMA2), "LLaMA2-7B, rank 2: V+Q against V+O", 2, ("QV", "OV")),
    "figure6": LlamaFigureSpec(6, ("figure6", LLAMA3), "LLaMA3-8B, rank 1: V alone, V+Q and V+O", 1,
                               ("V", "QV", "OV")),
}


def runs_by_block_set(records: list[dict], spec: LlamaFigureSpec) -> dict[str, list[dict]]:
    """Select LoRA runs of the figure's rank and group them by the paper's block label.

    Runs that differ in other settings (see figures.collect.variant_labels) get their own group,
    labelled e.g. "OV [loss_mode=whole]". Block sets without runs keep an empty group.
    """
    selected = [r for r in records
                if r["config"].get("method", "lora") == "lora" and int(r["config"].get("rank", -1)) == spec.rank
                and canonical_blocks(r["config"]["blocks"]) in spec.block_sets]
    groups: dict[str, list[dict]] = {}
    for record, ((_, _, label), variant) in zip(selected, row_variants(selected)):
        groups.setdefault(f"{label} [{variant}]" if variant else label, []).append(record)
    for label in spec.block_sets:
        if not any(name.split(" [")[0] == label for name in groups):
            groups[label] = []
    return {name: groups[name] for name in sorted(groups, key=block_sort_key)}


def draw_loss(ax, groups: dict[str, list[dict]], keys: tuple[str, ...], window: int, ylabel: str) -> None:
    drawn = 0
    for label, runs in groups.items():
        xs, means, stds = mean_curve([r.get("history", []) for r in runs], "step", keys)
        if not xs:
            continue
        plot_band(ax, xs, moving_average(means, window), moving_average(stds, window),
                  f"{label} (n={len(runs)})")
        drawn += 1
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    absent = [label for label, runs in groups.items()
              if not any(key in entry for key in keys for r in runs for entry in r.get("history", []))]
    if drawn == 0:
        mark_missing(ax, f"no {keys[0]} for {', '.join(groups)}")
        return
    if absent:
        ax.set_title(f"missing: {', '.join(absent)}", fontsize=8, color="0.35")
    ax.legend(fontsize=7)


def draw_norms(ax, groups: dict[str, list[dict]]) -> None:
    norms = next((n for runs in groups.values() for r in runs if (n := initial_norms(r, "frobenius"))), {})
    ax.set_xlabel("layer")
    integer_x(ax)
    ax.set_ylabel("Frobenius norm")
    if not norms:
        mark_missing(ax, "no norms recorded")
        return
    for block in "QKVO":
        if block in norms:
            ax.plot(range(len(norms[block])), norms[block], marker=".", label=block, color=color(block))
    ax.legend(fontsize=7)


def build_figure(records: list[dict], spec: LlamaFigureSpec) -> Figure:
    """Draw the three panels; missing block sets are named on the panel, never drawn as zeros."""
    groups = runs_by_block_set(records, spec)
    models = sorted({str(r["config"].get("model", "?")) for runs in groups.values() for r in runs})
    subtitle = f" (results: {', '.join(models)})" if models else " (no results)"
    figure, axes = new_figure(1, 3, f"Figure {spec.number}: {spec.title}{subtitle}")
    panel_a, panel_b, panel_c = axes[0]

    draw_loss(panel_a, groups, ("train_loss",), TRAIN_WINDOW, f"training loss (MA {TRAIN_WINDOW})")
    panel_a.set_title("(a) training loss", loc="left", fontsize=9)
    draw_loss(panel_b, groups, ("val_loss", "validation_loss"), VALIDATION_WINDOW, f"validation loss (MA {VALIDATION_WINDOW})")
    panel_b.set_title("(b) validation loss", loc="left", fontsize=9)
    draw_norms(panel_c, groups)
    panel_c.set_title("(c) block norms before tuning", loc="left", fontsize=9)
    return figure


def render(figure_id: str, results_dir: Path, out_dir: Path, profile: str, code_version: str) -> list[Path]:
    spec = LLAMA_FIGURES[figure_id]
    records = load_records(results_dir, spec.experiments)
    stamp = stamp_text(code_version, profile, len(records))
    return save(build_figure(records, spec), Path(out_dir) / figure_id, stamp)
