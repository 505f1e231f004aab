"""The transcribed paper tables: spot checks against the printed paper, and completeness."""

from __future__ import annotations

import pytest

from figures.paper import (TABLES, canonical_blocks, canonical_dataset, load_setup, load_table,
                           paper_configs)

# (table, method, rank, blocks, dataset, mean, std) read off the paper's tables by hand.
SPOT_CHECKS = [
    ("table1", "lora", 1, "O", "cifar100", 83.54, 0.17),
    ("table1", "lora", 4, "V", "svhn", 96.42, 0.11),
    ("table1", "lora", 8, "K", "food101", 85.02, 0.14),
    ("table2", "lora", 1, "Q", "cifar100", 88.05, 0.17),
    ("table2", "lora", 4, "O", "svhn", 90.22, 0.06),
    ("table2", "lora", 8, "V", "food101", 90.52, 0.07),
    ("table3", "lora", 1, "QK", "boolq", 68.41, None),
    ("table3", "lora", 4, "QV", "hellaswag", 89.23, None),
    ("table3", "lora", 8, "OV", "avg", 82.72, None),
    ("table4", "lora", 1, "OV", "avg", 85.66, None),
    ("table4", "lora", 2, "QV", "boolq", 65.96, None),
    ("table4", "lora", 8, "OV", "obqa", 90.20, None),
    ("table5", "adalora", 1, "O", "food101", 83.95, 0.15),
    ("table5", "dora", 2, "V", "svhn", 95.80, 0.10),
    ("table7", "lora", 1, "OV", "svhn", 95.79, 0.11),
    ("table7", "lora", 8, "QK", "food101", 89.22, 0.09),
    ("table8", "adalora", 8, "O", "cifar100", 85.23, 0.07),
    ("table8", "dora", 4, "V", "svhn", 96.46, 0.07),
]
EXPECTED_CELLS = {"table1": 48, "table2": 48, "table3": 108, "table4": 108, "table5": 24, "table7": 36,
                  "table8": 24}


@pytest.mark.parametrize("table, method, rank, blocks, dataset, mean, std", SPOT_CHECKS)
def test_paper_cell_matches_print(table, method, rank, blocks, dataset, mean, std):
    cells = {(c.method, c.rank, c.blocks, c.dataset): c for c in load_table(table)}
    cell = cells[(method, rank, blocks, dataset)]
    assert cell.mean == mean
    assert cell.std == std


def test_printed_parameter_counts():
    counts = {(c.table, c.rank, c.blocks): c.params_m for t in ("table1", "table7") for c in load_table(t)}
    assert counts[("table1", 1, "Q")] == "0.10"
    assert counts[("table1", 8, "O")] == "0.22"
    assert counts[("table7", 8, "OV")] == "0.37"


@pytest.mark.parametrize("table", sorted(TABLES))
def test_table_grid_is_complete(table):
    cells = load_table(table)
    spec = TABLES[table]
    keys = [(c.method, c.rank, c.blocks, c.dataset) for c in cells]
    assert len(keys) == len(set(keys)) == EXPECTED_CELLS[table]
    for config in paper_configs(cells):
        assert {c.dataset for c in cells if c.config == config} == set(spec.datasets)
    assert all((c.std is not None) == spec.has_std for c in cells)
    assert all((c.params_m is not None) == spec.has_params for c in cells)


def test_setup_table_epochs():
    epochs = {(row["peft"], row["model"]): row["epochs"] for row in load_setup()}
    assert epochs[("lora", "vit_b16_mae")] == "50"
    assert epochs[("lora", "vit_b16_in21k")] == "20"
    assert epochs[("dora", "vit_b16_mae")] == "50"
    assert epochs[("lora", "llama2_7b")] == ""


def test_canonical_names():
    assert canonical_blocks("VO") == "OV"
    assert canonical_blocks("v+q") == "QV"
    assert canonical_blocks("KQ") == "QK"
    assert canonical_blocks("o") == "O"
    assert canonical_dataset("CIFAR-100") == "cifar100"
    assert canonical_dataset("ARC-Easy") == "arce"
    assert canonical_dataset("social_i_qa") == "siqa"
    assert canonical_dataset("openbookqa") == "obqa"


@pytest.mark.parametrize("blocks", ["", "QX", "OO"])
def test_canonical_blocks_rejects_invalid(blocks):
    with pytest.raises(ValueError, match="invalid blocks"):
        canonical_blocks(blocks)


def test_unknown_table_rejected():
    with pytest.raises(ValueError, match="unknown table 'table6'"):
        load_table("table6")
