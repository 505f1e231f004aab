"""Run configs and the per-table / per-figure config files."""

from __future__ import annotations

import json

import pytest

from experiments.results import config_hash
from experiments.vit import backbones, plans
from experiments.vit.config import RunConfig

BASE = dict(experiment="table1", backbone="mae", dataset="cifar100", method="lora", blocks="O", rank=1, seed=0,
            epochs=50)


@pytest.mark.parametrize("field, value, message", [
    ("method", "ia3", "invalid method 'ia3'"),
    ("blocks", "OX", "invalid blocks 'OX'"),
    ("blocks", "OO", "invalid blocks 'OO'"),
    ("rank", 0, "invalid rank 0"),
    ("epochs", 2.5, "invalid epochs 2.5"),
    ("lr", float("nan"), "invalid lr nan"),
    ("lr_decay", 1.5, "0 < lr_decay <= 1"),
    ("dropout", 1.0, "invalid dropout 1.0"),
    ("modification", "huge_o", "invalid modification 'huge_o'"),
    ("profile", "gpu", "invalid profile 'gpu'"),
])
def test_invalid_field_rejected(field, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RunConfig(**{**BASE, field: value})


def test_switch_needs_epoch_inside_run():
    with pytest.raises(ValueError, match="0 < switch_epoch < epochs"):
        RunConfig(**{**BASE, "blocks": "V", "switch_blocks": "O", "switch_epoch": 50})


def test_unknown_field_rejected():
    with pytest.raises(ValueError, match=r"unknown RunConfig fields \['learning_rate'\]"):
        RunConfig.from_dict({**BASE, "learning_rate": 1e-3})


def test_config_round_trips_through_json():
    config = RunConfig(**BASE)
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_protocol_defaults():
    config = RunConfig(**BASE)
    assert (config.lr, config.weight_decay, config.lr_decay) == (1e-3, 0.1, 0.9)
    assert config.effective_alpha == 1.0
    assert RunConfig(**{**BASE, "method": "adalora", "rank": 8}).effective_adalora_init_r == 12


@pytest.mark.parametrize("name, paper_runs, cpu_runs", [
    ("table1", 144, 48), ("table2", 144, 48), ("table5", 72, 24), ("table7", 108, 36), ("table8", 72, 24),
    ("figure1", 21, 21), ("figure3", 36, 12),
])
def test_plan_sizes(name, paper_runs, cpu_runs):
    assert len(plans.load_plan(name, "paper_scale").runs) == paper_runs
    assert len(plans.load_plan(name, "cpu_profile").runs) == cpu_runs


def test_paper_scale_epochs_follow_table_6():
    for name in ("table1", "table5", "table8"):
        assert {run.epochs for run in plans.load_plan(name, "paper_scale").runs} == {50}
        assert {run.backbone for run in plans.load_plan(name, "paper_scale").runs} == {"mae"}
    for name in ("table2", "table7", "figure1"):
        assert {run.epochs for run in plans.load_plan(name, "paper_scale").runs} == {20}
        assert {run.backbone for run in plans.load_plan(name, "paper_scale").runs} == {"in21k"}


def test_figure3_reuses_table1_runs():
    table1 = {config_hash(run.to_dict()) for run in plans.load_plan("table1", "paper_scale").runs}
    figure3 = {config_hash(run.to_dict()) for run in plans.load_plan("figure3", "paper_scale").runs}
    assert figure3 <= table1
    assert {run.rank for run in plans.load_plan("figure3", "paper_scale").runs} == {4}


def test_overrides_replace_epochs_and_seeds():
    plan = plans.load_plan("table2", "cpu_profile", {"epochs": 2, "seed": [7]})
    assert {run.epochs for run in plan.runs} == {2}
    assert {run.seed for run in plan.runs} == {7}
    assert len(plan.runs) == 16


def test_figure1_grid_contents():
    runs = plans.load_plan("figure1", "paper_scale").runs
    assert {(run.modification, run.blocks, run.switch_blocks) for run in runs} == {
        ("large_o", "V", ""), ("large_o", "O", ""), ("large_v", "V", ""), ("large_v", "O", ""),
        ("none", "V", ""), ("none", "O", ""), ("none", "V", "O")}
    assert {run.switch_epoch for run in runs if run.switch_blocks} == {5}


def test_unknown_plan_and_table_rejected():
    with pytest.raises(ValueError, match="config file .*table9.json not found"):
        plans.load_plan("table9", "cpu_profile")
    with pytest.raises(ValueError, match="invalid table '3'"):
        plans.plan_name("3", None)


def test_paper_backbones_use_exact_checkpoint_names():
    assert backbones.get_backbone("in21k").checkpoint == "vit_base_patch16_224.orig_in21k"
    assert backbones.get_backbone("in21k").mean == (0.5, 0.5, 0.5)
    assert backbones.get_backbone("mae").checkpoint == "vit_base_patch16_224.mae"
    assert backbones.get_backbone("mae").mean == (0.485, 0.456, 0.406)
    with pytest.raises(ValueError, match="invalid backbone 'vit_base_patch16_224_in21k'"):
        backbones.get_backbone("vit_base_patch16_224_in21k")


def test_checkpoint_override_rejected_for_cpu_backbone():
    with pytest.raises(ValueError, match="invalid checkpoint 'vit_small' for CPU-profile backbone 'digits_sup'"):
        backbones.create_backbone("digits_sup", 5, checkpoint_name="vit_small")


@pytest.mark.parametrize("key", ["mae", "in21k"])
def test_backbone_matches_timm_pretrained_config(key):
    import timm

    backbone = backbones.get_backbone(key)
    pretrained = timm.models.get_pretrained_cfg(backbone.checkpoint)
    assert tuple(pretrained.mean) == backbone.mean
    assert tuple(pretrained.std) == backbone.std
    assert pretrained.hf_hub_id == backbone.hub_repo
