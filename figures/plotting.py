"""Shared matplotlib helpers: headless backend, smoothing, missing panels, stamped output."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: `make figures` runs without a display

import matplotlib.pyplot as plt  # noqa: E402  (must follow the backend choice)
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

# One colour per block set, stable across figures so that O is always the same colour.
BLOCK_COLORS = {
    "Q": "tab:blue", "K": "tab:orange", "V": "tab:green", "O": "tab:red",
    "QK": "tab:purple", "QV": "tab:olive", "OV": "tab:red",
}
MISSING_TEXT = "missing"


def color(label: str) -> str | None:
    return BLOCK_COLORS.get(label.split()[0])


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average; the first window-1 points average over the points seen so far."""
    if window < 1:
        raise ValueError(f"invalid moving-average window {window}: must be >= 1")
    smoothed, total = [], 0.0
    for index, value in enumerate(values):
        total += value
        if index >= window:
            total -= values[index - window]
        smoothed.append(total / min(index + 1, window))
    return smoothed


def new_figure(rows: int, columns: int, title: str) -> tuple[Figure, list[list[Axes]]]:
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    figure.suptitle(title, fontsize=11)
    return figure, [list(row) for row in axes]


def mark_missing(ax: Axes, absent: str) -> None:
    """Label an empty panel with what is absent, so that absent runs never read as zeros."""
    ax.text(0.5, 0.5, f"{MISSING_TEXT}: {absent}", ha="center", va="center", wrap=True,
            transform=ax.transAxes, fontsize=8, color="0.35")
    ax.set_xticks([])
    ax.set_yticks([])


def integer_x(ax: Axes) -> None:
    """Use integer ticks on the x axis (epochs, steps, layer indices)."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_band(ax: Axes, xs: list[float], means: list[float], stds: list[float], label: str,
              linestyle: str = "-") -> None:
    """Plot a mean curve with a ±1 std band (the band is invisible where std is 0)."""
    line, = ax.plot(xs, means, linestyle=linestyle, label=label, color=color(label))
    integer_x(ax)
    lower = [m - s for m, s in zip(means, stds)]
    upper = [m + s for m, s in zip(means, stds)]
    if any(s > 0 for s in stds):
        ax.fill_between(xs, lower, upper, color=line.get_color(), alpha=0.2, linewidth=0)


def stamp_text(code_version: str, profile: str, runs: int) -> str:
    # ASCII only, so that the PDF stores it as a plain, searchable string.
    return f"blockrank {code_version}, profile {profile}, {runs} runs"


def save(figure: Figure, stem: Path, stamp: str) -> list[Path]:
    """Write `stem`.png and `stem`.pdf with the stamp drawn in the corner and stored as metadata."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    figure.text(0.995, 0.005, stamp, ha="right", va="bottom", fontsize=6, color="0.4")
    figure.tight_layout(rect=(0, 0.02, 1, 0.97))
    png, pdf = stem.with_suffix(".png"), stem.with_suffix(".pdf")
    figure.savefig(png, dpi=120, metadata={"Software": "blockrank figures", "Description": stamp})
    # Without a CreationDate the PDF stays identical between runs on the same inputs.
    figure.savefig(pdf, metadata={"Creator": "blockrank figures", "Subject": stamp, "CreationDate": None})
    plt.close(figure)
    return [png, pdf]
