"""The paper's reported numbers and the layout of each of its tables.

"The paper" throughout the figures package is "LoRA in the right place: which
block to tune in parameter-efficient fine-tuning?", the paper this repository
accompanies.

The CSV files in ``figures/paper_data`` are transcriptions of the paper's
tables, one row per reported cell (long format)::

    model,method,rank,blocks,params_m,dataset,mean,std

``params_m`` is the "# of Parameters" column in millions (empty where the
table has none), ``std`` is empty where the table reports no standard
deviation (the LLaMA tables 3 and 4). Table 6 (training setup) has its own
columns. Values are kept as the decimal strings the paper prints, so that
"0.10" stays distinguishable from "0.1".
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

PAPER_DATA = Path(__file__).resolve().parent / "paper_data"

# Canonical dataset keys (lower-case, alphanumeric only) and the names the paper prints.
DATASET_NAMES = {
    "cifar100": "CIFAR-100", "svhn": "SVHN", "food101": "Food-101",
    "boolq": "BoolQ", "piqa": "PIQA", "siqa": "SIQA", "hellaswag": "HellaSwag",
    "winogrande": "WinoGrande", "arce": "ARC-e", "arcc": "ARC-c", "obqa": "OBQA",
    "avg": "Avg",
}
# Other spellings that result files may use for the same datasets.
DATASET_ALIASES = {
    "arceasy": "arce", "arcchallenge": "arcc", "openbookqa": "obqa",
    "socialiqa": "siqa", "socialiqa2": "siqa", "average": "avg", "mean": "avg",
    "food": "food101", "cifar": "cifar100",
}
VIT_DATASETS = ("cifar100", "svhn", "food101")
COMMONSENSE_DATASETS = ("boolq", "piqa", "siqa", "hellaswag", "winogrande", "arce", "arcc", "obqa")

# Block sets as the paper labels them; other sets are written in Q, K, V, O order.
_PAIR_LABELS = {frozenset("OV"): "OV", frozenset("QV"): "QV", frozenset("QK"): "QK"}


def canonical_dataset(name: str) -> str:
    """Map a dataset name such as 'CIFAR-100', 'cifar_100' or 'ARC-Easy' to its canonical key."""
    key = re.sub(r"[^a-z0-9]", "", str(name).lower())
    return DATASET_ALIASES.get(key, key)


def canonical_blocks(blocks: str) -> str:
    """Return the paper's label for a block set: 'VO' and 'OV' both give 'OV'."""
    letters = str(blocks).upper().replace("+", "").replace(",", "").replace(" ", "")
    if not letters or set(letters) - set("QKVO") or len(set(letters)) != len(letters):
        raise ValueError(
            f"invalid blocks {blocks!r}: expected distinct letters from 'QKVO', such as 'O' or 'OV'")
    label = _PAIR_LABELS.get(frozenset(letters))
    return label or "".join(letter for letter in "QKVO" if letter in letters)


def block_sort_key(label: str) -> tuple[int, str]:
    """Order block labels as the paper does: Q, K, V, O, then QK, QV, OV, then anything else."""
    order = ("Q", "K", "V", "O", "QK", "QV", "OV")
    head = label.split()[0].split("→")[0]
    return (order.index(head) if head in order else len(order), label)


def dataset_label(key: str) -> str:
    return DATASET_NAMES.get(key, key)


@dataclass(frozen=True)
class TableSpec:
    """Layout of one accuracy table of the paper and the claim its text makes."""

    number: int
    experiments: tuple[str, ...]   # values of config["experiment"] (and result folders) that feed it
    title: str
    model: str               # backbone label used in the CSV
    datasets: tuple[str, ...]
    claim: str               # key into figures.ordering.CLAIMS
    has_std: bool
    has_params: bool


TABLES: dict[str, TableSpec] = {
    "table1": TableSpec(1, ("table1",), "LoRA on one block per layer, ViT-B/16 pretrained with MAE",
                        "vit_b16_mae", VIT_DATASETS, "single", True, True),
    "table2": TableSpec(2, ("table2",), "LoRA on one block per layer, ViT-B/16 pretrained supervised on ImageNet-21k",
                        "vit_b16_in21k", VIT_DATASETS, "single", True, True),
    "table3": TableSpec(3, ("table3", "commonsense_llama2_7b"), "LoRA on two blocks per layer, LLaMA2-7B, commonsense reasoning accuracy (%)",
                        "llama2_7b", COMMONSENSE_DATASETS + ("avg",), "pairs", False, False),
    "table4": TableSpec(4, ("table4", "commonsense_llama3_8b"), "LoRA on two blocks per layer, LLaMA3-8B, commonsense reasoning accuracy (%)",
                        "llama3_8b", COMMONSENSE_DATASETS + ("avg",), "pairs", False, False),
    "table5": TableSpec(5, ("table5",), "AdaLoRA and DoRA on V or O, ranks 1 and 2, ViT-B/16 (MAE)",
                        "vit_b16_mae", VIT_DATASETS, "o_over_v", True, False),
    "table7": TableSpec(7, ("table7",), "LoRA on two blocks per layer, ViT-B/16 pretrained supervised on ImageNet-21k",
                        "vit_b16_in21k", VIT_DATASETS, "pairs", True, True),
    "table8": TableSpec(8, ("table8",), "AdaLoRA and DoRA on V or O, ranks 4 and 8, ViT-B/16 (MAE)",
                        "vit_b16_mae", VIT_DATASETS, "o_over_v", True, False),
}


@dataclass(frozen=True)
class PaperCell:
    """One reported cell: mean (and std) accuracy in percent for one configuration and dataset."""

    table: str
    model: str
    method: str
    rank: int
    blocks: str
    dataset: str
    mean: float
    std: float | None
    params_m: str | None      # as printed, in millions, e.g. "0.10"
    mean_text: str            # as printed, e.g. "83.54"

    @property
    def config(self) -> tuple[str, int, str]:
        return (self.method, self.rank, self.blocks)


def csv_path(table: str) -> Path:
    return PAPER_DATA / f"{table}.csv"


def load_table(table: str) -> list[PaperCell]:
    """Read one transcribed accuracy table (e.g. 'table1'), in the paper's row order."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}: expected one of {sorted(TABLES)}")
    cells = []
    with csv_path(table).open(newline="") as stream:
        for line_number, row in enumerate(csv.DictReader(stream), start=2):
            try:
                cells.append(PaperCell(
                    table=table, model=row["model"], method=row["method"], rank=int(row["rank"]),
                    blocks=canonical_blocks(row["blocks"]), dataset=canonical_dataset(row["dataset"]),
                    mean=float(row["mean"]), std=float(row["std"]) if row["std"] else None,
                    params_m=row["params_m"] or None, mean_text=row["mean"],
                ))
            except (KeyError, ValueError) as error:
                raise ValueError(f"{csv_path(table)} line {line_number}: invalid row {row}: {error}") from error
    return cells


def load_setup() -> list[dict[str, str]]:
    """Read the transcription of Table 6 (training setup per task and model)."""
    with csv_path("table6").open(newline="") as stream:
        return list(csv.DictReader(stream))


def paper_configs(cells: list[PaperCell]) -> list[tuple[str, int, str]]:
    """Return the distinct (method, rank, blocks) rows in the order the paper prints them."""
    seen: dict[tuple[str, int, str], None] = {}
    for cell in cells:
        seen.setdefault(cell.config, None)
    return list(seen)
