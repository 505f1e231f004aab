"""Read result files and aggregate them over seeds into table cells and curves.

Result files are written by the ViT and LLaMA runners through
``experiments.results``; this module only reads them. A ViT result has
one dataset (``config["dataset"]``) and scalar accuracies in ``metrics``; a
LLaMA result has no ``dataset`` key and stores ``metrics["accuracy"]`` (one
accuracy per commonsense test set) and ``metrics["average_accuracy"]``.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from experiments.results import iter_results
from figures.paper import COMMONSENSE_DATASETS, canonical_blocks, canonical_dataset

log = logging.getLogger(__name__)

PROFILES = ("cpu_profile", "paper_scale")
METRICS = {"last": "test_accuracy_last", "best": "test_accuracy_best"}


@dataclass
class CellStats:
    """Accuracy of one (method, rank, blocks, dataset, variant) cell over seeds, in percent."""

    values: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    params: list[int] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float | None:
        """Sample standard deviation (n - 1 in the denominator); None for a single seed."""
        return statistics.stdev(self.values) if self.n > 1 else None


CellKey = tuple[str, int, str, str, str]  # (method, rank, blocks, dataset, variant)

# Config fields that define a table cell, plus the seed. Any other field that differs between the
# records of one table row marks a variant, such as a run with other epochs, shown in a row of its own.
CELL_FIELDS = {"experiment", "profile", "method", "rank", "blocks", "dataset", "seed"}


def load_records(directory: Path, experiments: Iterable[str]) -> list[dict[str, Any]]:
    """Return the complete results of `experiments` from `directory`/<experiment>/ folders.

    Only records whose config['experiment'] matches the folder are kept. A missing folder yields
    no records (an experiment that has not been run yet).
    """
    records = []
    for experiment in experiments:
        folder = Path(directory) / experiment
        if not folder.is_dir():
            continue
        for record in iter_results(folder):
            if record.get("config", {}).get("experiment") == experiment:
                records.append(record)
            else:
                log.warning("skipping result %s in %s: its config names experiment %r",
                            record.get("config_hash"), folder, record.get("config", {}).get("experiment"))
    return records


def accuracy_percent(value: Any, where: str) -> float:
    """Validate one accuracy from a result file; the runners store accuracies in percent."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"invalid accuracy {value!r} in {where}: expected a finite number in percent")
    if not 0 <= value <= 100:
        raise ValueError(f"invalid accuracy {value!r} in {where}: expected a percentage in [0, 100]")
    return float(value)


def record_cells(record: dict[str, Any], metric: str) -> dict[str, float]:
    """Return {dataset: accuracy in percent} for one result file (ViT: one dataset; LLaMA: several)."""
    config, metrics = record["config"], record.get("metrics", {})
    where = f"result {record.get('config_hash', '?')} ({config.get('experiment')})"
    if "dataset" in config:
        if metric not in metrics:
            raise ValueError(f"{where} has no metric {metric!r}; its metrics are {sorted(metrics)}")
        return {canonical_dataset(config["dataset"]): accuracy_percent(metrics[metric], where)}

    # The LLaMA runner stores {"accuracy": {test set: %}, "average_accuracy": %}; flat
    # {test set: %} metrics are accepted too.
    nested = metrics.get("accuracy")
    flat = dict(nested) if isinstance(nested, dict) else dict(metrics)
    if "average_accuracy" in metrics:
        flat["avg"] = metrics["average_accuracy"]

    known = set(COMMONSENSE_DATASETS) | {"avg"}
    cells = {}
    for name, value in flat.items():
        key = canonical_dataset(name)
        if key in known and isinstance(value, (int, float)) and not isinstance(value, bool):
            cells[key] = accuracy_percent(value, where)
    if cells and "avg" not in cells and all(d in cells for d in COMMONSENSE_DATASETS):
        cells["avg"] = statistics.fmean(cells[d] for d in COMMONSENSE_DATASETS)
    return cells


def variant_labels(records: list[dict[str, Any]], ignore: Iterable[str] = ()) -> list[str]:
    """Label each record by the config fields outside CELL_FIELDS and `ignore` that differ across `records`.

    Returns "" for every record when they agree, else e.g. "epochs=2" for each record.
    """
    configs = [record["config"] for record in records]
    fields = sorted({name for config in configs for name in config} - CELL_FIELDS - set(ignore))
    varying = [name for name in fields
               if len({json.dumps(config.get(name), sort_keys=True) for config in configs}) > 1]
    return [", ".join(f"{name}={config.get(name)}" for name in varying) for config in configs]


def row_variants(records: list[dict[str, Any]], ignore: Iterable[str] = ()) -> list[tuple[tuple, str]]:
    """Return ((method, rank, blocks), variant label) per record, labelling variants within each row.

    Variants are looked for only among records of the same row, so a setting that legitimately
    changes from row to row (such as an alpha tied to the rank) does not split every row.
    """
    rows = [(r["config"].get("method", "lora"), int(r["config"]["rank"]), canonical_blocks(r["config"]["blocks"]))
            for r in records]
    labels = [""] * len(records)
    for row in set(rows):
        members = [index for index, other in enumerate(rows) if other == row]
        for index, label in zip(members, variant_labels([records[i] for i in members], ignore)):
            labels[index] = label
    return list(zip(rows, labels))


def aggregate_cells(records: Iterable[dict[str, Any]], metric: str) -> dict[CellKey, CellStats]:
    """Group results by (method, rank, blocks, dataset, variant) and collect one value per seed."""
    records = list(records)
    cells: dict[CellKey, CellStats] = defaultdict(CellStats)
    for record, (base, variant) in zip(records, row_variants(records)):
        config = record["config"]
        for dataset, value in record_cells(record, metric).items():
            key = base + (dataset, variant)
            cell = cells[key]
            seed = config.get("seed")
            if seed in cell.seeds:
                # Identical configs give identical hashes, so this is a copied or renamed result file.
                log.warning("two results for %s seed %s; both enter the mean", key, seed)
            cell.values.append(value)
            cell.seeds.append(seed)
            params = record.get("metrics", {}).get("trainable_params")
            if isinstance(params, int):
                cell.params.append(params)
    return dict(cells)


def mean_curve(histories: list[list[dict[str, Any]]], x_key: str,
               y_keys: str | tuple[str, ...]) -> tuple[list[float], list[float], list[float]]:
    """Average a metric over runs at each `x_key` value present in any run; return x, mean, std.

    `y_keys` names the metric, or several spellings of it (the first one an entry has is used).
    Points that a run lacks (a missing metric, a shorter run) are left out of that point's mean
    rather than filled with zeros, so std is 0 where only one run contributes.
    """
    names = (y_keys,) if isinstance(y_keys, str) else tuple(y_keys)
    by_x: dict[float, list[float]] = defaultdict(list)
    for history in histories:
        for entry in history:
            x = entry.get(x_key)
            y = next((entry[name] for name in names if entry.get(name) is not None), None)
            if x is None or y is None or not isinstance(y, (int, float)) or not math.isfinite(y):
                continue
            by_x[x].append(float(y))
    xs = sorted(by_x)
    means = [statistics.fmean(by_x[x]) for x in xs]
    stds = [statistics.stdev(by_x[x]) if len(by_x[x]) > 1 else 0.0 for x in xs]
    return xs, means, stds


def norms_by_layer(history: list[dict[str, Any]], kind: str, which: str = "last") -> dict[str, list[float]]:
    """Return {block: [norm per layer]} from the first or last history entry that has norms.

    History entries store norms as {"norms": {block: {"spectral": [...], "frobenius": [...]}}}.
    """
    if kind not in ("spectral", "frobenius"):
        raise ValueError(f"invalid norm kind {kind!r}: expected 'spectral' or 'frobenius'")
    entries = [entry["norms"] for entry in history if isinstance(entry.get("norms"), dict)]
    entries = [e for e in entries if any(isinstance(v, dict) and kind in v for v in e.values())]
    if not entries:
        return {}
    chosen = entries[0] if which == "first" else entries[-1]
    return {block: list(values[kind]) for block, values in chosen.items()
            if isinstance(values, dict) and kind in values}


def initial_norms(record: dict[str, Any], kind: str) -> dict[str, list[float]]:
    """Return {block: [norm per layer]} of the weights before tuning, or {} when the record has none.

    The ViT runner stores record["initial_norms"] = {block: {kind: [...]}}, the LLaMA runner
    record["pretrained_norms"] = {kind: {block: [...]}} (Frobenius only). Older records without
    either fall back to the first history entry with norms.
    """
    vit = record.get("initial_norms")
    if isinstance(vit, dict):
        found = {block: list(values[kind]) for block, values in vit.items()
                 if isinstance(values, dict) and kind in values}
        if found:
            return found
    llama = record.get("pretrained_norms")
    if isinstance(llama, dict) and isinstance(llama.get(kind), dict):
        return {block: list(values) for block, values in llama[kind].items() if block in "QKVO"}
    return norms_by_layer(record.get("history", []), kind, which="first")
