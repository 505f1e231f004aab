"""Expand the per-table and per-figure config files (`configs/*.json`) into lists of runs.

A config file holds, per profile (`paper_scale`, `cpu_profile`), a `base` dict
of `RunConfig` fields and a list of `grids`; each grid maps field names to lists
of values, and every combination of one grid, laid over `base`, is one run.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.vit.config import PROFILES, RunConfig

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
TABLES = ("1", "2", "5", "7", "8")
FIGURES = ("1", "3")
# What `make reproduce` runs without TABLE or FIGURE, per profile.
DEFAULT_PLANS = {"paper_scale": ("table1", "table2", "table5", "table7", "table8", "figure1"),
                 "cpu_profile": ("table1", "table2", "figure1")}


@dataclass(frozen=True)
class Plan:
    """The runs of one table or figure in one profile."""

    name: str
    experiment: str
    description: str
    reported_metric: str
    runs: tuple[RunConfig, ...]


def plan_name(table: str | None, figure: str | None) -> str:
    if table is not None:
        if str(table) not in TABLES:
            raise ValueError(f"invalid table {table!r}: the ViT tables are {TABLES}")
        return f"table{table}"
    if figure is not None:
        if str(figure) not in FIGURES:
            raise ValueError(f"invalid figure {figure!r}: the ViT figures are {FIGURES}")
        return f"figure{figure}"
    raise ValueError("give a table or a figure")


def load_plan(name_or_path: str | Path, profile: str, overrides: dict[str, Any] | None = None) -> Plan:
    """Return the runs of a config file (a name such as 'table1', or a path) for `profile`.

    `overrides` replaces fields in every run (for example {"epochs": 2}); a list
    value replaces that field's grid axis (for example {"seed": [0]}).
    """
    if profile not in PROFILES:
        raise ValueError(f"invalid profile {profile!r}: choose one of {PROFILES}")
    path = Path(name_or_path)
    if path.suffix != ".json":
        path = CONFIG_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise ValueError(f"config file {path} not found; the ViT configs are {sorted(p.stem for p in CONFIG_DIR.glob('*.json'))}")
    document = json.loads(path.read_text())
    if profile not in document:
        raise ValueError(f"config file {path} has no section for profile {profile!r}")
    section = document[profile]
    overrides = dict(overrides or {})
    axis_overrides = {key: value for key, value in overrides.items() if isinstance(value, list)}
    scalar_overrides = {key: value for key, value in overrides.items() if not isinstance(value, list)}

    runs: list[RunConfig] = []
    seen: set[str] = set()
    for grid in section["grids"]:
        grid = {**grid, **{key: value for key, value in axis_overrides.items() if key in grid or key == "seed"}}
        keys = sorted(grid)
        for values in itertools.product(*(grid[key] for key in keys)):
            fields = {**section["base"], **dict(zip(keys, values)), **scalar_overrides,
                      "experiment": document["experiment"], "profile": profile}
            config = RunConfig.from_dict(fields)
            key = json.dumps(config.to_dict(), sort_keys=True)
            if key not in seen:
                seen.add(key)
                runs.append(config)
    return Plan(path.stem, document["experiment"], document["description"], document["reported_metric"], tuple(runs))
