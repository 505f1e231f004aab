"""The ViT runner end to end on a tiny timm ViT and tiny datasets in the real on-disk formats."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from experiments.targeting import split_fused_qkv
from experiments.vit import backbones, model_setup
from experiments.vit.config import RunConfig
from experiments.vit.fixtures import write_all
from experiments.vit.train import RunEnvironment, run

TINY = backbones.Backbone(
    "mae", "vit_tiny_patch16_224", backbones.IMAGENET_MEAN, backbones.IMAGENET_STD,
    model_kwargs=(("img_size", 32), ("patch_size", 8), ("embed_dim", 32), ("depth", 2), ("num_heads", 2)),
)
DEPTH, WIDTH = 2, 32


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """A data root with the three datasets and a checkpoint folder holding the tiny backbone."""
    import timm

    base = tmp_path_factory.mktemp("vit_runner")
    write_all(base / "data")
    torch.manual_seed(0)
    model = timm.create_model(TINY.checkpoint, pretrained=False, num_classes=0, **dict(TINY.model_kwargs))
    directory = base / "checkpoints" / TINY.checkpoint
    directory.mkdir(parents=True)
    save_file(model.state_dict(), str(directory / "model.safetensors"))
    return base


@pytest.fixture(autouse=True)
def tiny_backbone(monkeypatch):
    monkeypatch.setitem(backbones.PAPER_BACKBONES, "mae", TINY)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # The tiny model's matrices are too small to split across threads; one thread avoids contention.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_config(**fields) -> RunConfig:
    values = dict(experiment="test", backbone="mae", dataset="cifar100", method="lora", blocks="O", rank=2,
                  seed=0, epochs=2, batch_size=4, image_size=32)
    values.update(fields)
    return RunConfig(**values)


def make_env(roots, **fields) -> RunEnvironment:
    values = dict(output_root=roots / "results", data_root=roots / "data", checkpoint_dir=roots / "checkpoints",
                  verify_checksums=False, check_sizes=False, progress=False)
    values.update(fields)
    return RunEnvironment(**values)


@pytest.mark.parametrize("dataset, classes", [("cifar100", 100), ("svhn", 10), ("food101", 101)])
def test_run_writes_complete_result(roots, dataset, classes):
    config = make_config(dataset=dataset, blocks="OV", rank=2)
    record = json.loads(run(config, make_env(roots)).read_text())

    assert record["status"] == "complete"
    assert record["config"] == config.to_dict()
    for key in ("experiment", "backbone", "dataset", "method", "blocks", "rank", "seed", "epochs"):
        assert key in record["config"]
    metrics = record["metrics"]
    head = WIDTH * classes + classes
    assert metrics["head_params"] == head
    assert metrics["trainable_params"] == head + 2 * DEPTH * 2 * (WIDTH + WIDTH)  # two blocks, r (in + out)
    assert metrics["test_accuracy_best"] >= metrics["test_accuracy_last"]
    assert [row["epoch"] for row in record["history"]] == [1, 2]
    for row in record["history"]:
        assert row["train_loss"] > 0
        assert 0 <= row["test_accuracy"] <= 100
        assert sorted(row["norms"]) == ["K", "O", "Q", "V"]
        for letter in "QKVO":
            assert len(row["norms"][letter]["spectral"]) == DEPTH
            assert all(s <= f + 1e-9 for s, f in zip(row["norms"][letter]["spectral"],
                                                     row["norms"][letter]["frobenius"]))
    wrapped = record["wrapped_modules"]["OV"]
    assert wrapped["O"] == [f"blocks.{i}.attn.proj" for i in range(DEPTH)]
    assert wrapped["V"] == [f"blocks.{i}.attn.qkv.v" for i in range(DEPTH)]
    assert record["backbone_load"]["checkpoint"] == TINY.checkpoint
    assert record["backbone_load"]["missing_keys"] == ["head.weight", "head.bias"]


def test_tuned_block_norm_moves_and_frozen_do_not(roots):
    record = json.loads(run(make_config(blocks="Q", rank=4, lr=1e-2), make_env(roots)).read_text())
    initial, final = record["initial_norms"], record["history"][-1]["norms"]
    assert final["Q"]["frobenius"] != pytest.approx(initial["Q"]["frobenius"], rel=1e-6)
    for letter in "KVO":
        assert final[letter]["frobenius"] == pytest.approx(initial[letter]["frobenius"], rel=1e-9)


def test_switch_merges_v_then_tunes_o(roots):
    config = make_config(blocks="V", switch_blocks="O", switch_epoch=1, epochs=3, modification="large_o")
    record = json.loads(run(config, make_env(roots)).read_text())
    assert [row["tuned_blocks"] for row in record["history"]] == ["V", "O", "O"]
    assert sorted(record["wrapped_modules"]) == ["O", "V"]
    # After the switch V is merged and frozen, so its norms stay at their epoch-1 values.
    assert record["history"][2]["norms"]["V"]["spectral"] == pytest.approx(
        record["history"][0]["norms"]["V"]["spectral"], rel=1e-6)


def test_adalora_allocates_after_every_backward(roots, monkeypatch):
    from peft.tuners.adalora import AdaLoraModel

    calls = []
    original = AdaLoraModel.update_and_allocate

    def spy(self, global_step):
        grads = [p.grad for n, p in self.model.named_parameters() if "lora_E" in n and p.requires_grad]
        calls.append((global_step, all(g is not None for g in grads)))
        return original(self, global_step)

    monkeypatch.setattr(AdaLoraModel, "update_and_allocate", spy)
    record = json.loads(run(make_config(method="adalora", rank=2, epochs=2), make_env(roots)).read_text())
    steps = 2 * 3  # 12 train images, batch 4, last batch dropped only when partial
    assert [step for step, _ in calls] == list(range(steps))
    assert all(has_grad for _, has_grad in calls)
    init_r = 3  # round(1.5 * 2)
    head = WIDTH * 100 + 100
    assert record["metrics"]["trainable_params"] == head + DEPTH * (init_r * 2 * WIDTH + init_r)


def test_orthogonal_penalty_matches_definition():
    linear = torch.nn.Linear(4, 4)
    torch.nn.init.eye_(linear.weight)
    model = torch.nn.Module()
    model.lora_A = torch.nn.Parameter(torch.eye(2, 4))  # A A^T = I -> no penalty
    model.lora_B = torch.nn.Parameter(2 * torch.eye(4, 2))  # B^T B = 4 I -> ||3 I||_F = 3 sqrt(2)
    penalty = model_setup.adalora_orthogonal_penalty(model)
    assert penalty.item() == pytest.approx((0 + 3 * 2 ** 0.5) / 2)


def test_head_saved_and_restored_with_adapters(roots, tmp_path):
    model, _ = backbones.create_backbone("mae", 10, checkpoint_dir=roots / "checkpoints")
    model, report = model_setup.attach_adapters(model, make_config(blocks="OV"), "OV", total_steps=1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                parameter.add_(0.1 * torch.randn_like(parameter))
    images = torch.randn(3, 3, 32, 32)
    model.eval()
    expected = model(images)
    model_setup.save_adapters(model, tmp_path / "adapters")

    fresh, _ = backbones.create_backbone("mae", 10, checkpoint_dir=roots / "checkpoints")
    assert not torch.allclose(fresh(images), expected, atol=1e-4)
    restored = model_setup.load_adapters(fresh, tmp_path / "adapters")
    torch.testing.assert_close(restored(images), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("modification", ["large_o", "large_v"])
def test_modification_preserves_function(roots, modification):
    model, _ = backbones.create_backbone("mae", 10, checkpoint_dir=roots / "checkpoints")
    split_fused_qkv(model)
    before_v = model.blocks[0].attn.qkv.v.weight.clone()
    before_o = model.blocks[0].attn.proj.weight.clone()
    images = torch.randn(2, 3, 32, 32)
    model.eval()
    expected = model(images)
    model_setup.modify_norms(model, modification, 3.0, probe=images)
    factor = 3.0 if modification == "large_o" else 1 / 3.0
    torch.testing.assert_close(model.blocks[0].attn.proj.weight, factor * before_o)
    torch.testing.assert_close(model.blocks[0].attn.qkv.v.weight, before_v / factor)
    torch.testing.assert_close(model(images), expected, rtol=1e-4, atol=1e-5)


def test_effective_norm_is_base_plus_delta(roots):
    from experiments.norms import frobenius_norm

    model, _ = backbones.create_backbone("mae", 10, checkpoint_dir=roots / "checkpoints")
    layers = model_setup.attention_layers(model)
    model, _ = model_setup.attach_adapters(model, make_config(blocks="O", rank=2), "O", total_steps=1)
    proj = model.base_model.model.blocks[1].attn.proj
    with torch.no_grad():
        proj.lora_B["default"].weight.normal_()
    delta = proj.lora_B["default"].weight @ proj.lora_A["default"].weight * proj.scaling["default"]
    norms = model_setup.effective_block_norms(model, layers)
    assert norms["O"]["frobenius"][1] == pytest.approx(frobenius_norm(proj.base_layer.weight + delta), rel=1e-5)
    assert norms["O"]["frobenius"][1] != pytest.approx(frobenius_norm(proj.base_layer.weight), rel=1e-3)


def test_strict_load_rejects_missing_and_unexpected_keys(roots):
    import timm

    model = timm.create_model(TINY.checkpoint, num_classes=5, **dict(TINY.model_kwargs))
    state = {key: value for key, value in model.state_dict().items() if not key.startswith("head.")}
    missing = {key: value for key, value in state.items() if key != "blocks.0.attn.proj.weight"}
    with pytest.raises(ValueError, match=r"missing backbone keys \['blocks.0.attn.proj.weight'\]"):
        backbones.load_strict(model, missing, "tiny")
    with pytest.raises(ValueError, match=r"unexpected keys \['decoder.weight'\]"):
        backbones.load_strict(model, {**state, "decoder.weight": torch.zeros(1)}, "tiny")


def test_missing_checkpoint_names_path_and_command(tmp_path):
    with pytest.raises(FileNotFoundError) as raised:
        backbones.checkpoint_file(backbones.get_backbone("in21k"), tmp_path)
    message = str(raised.value)
    assert str(tmp_path / "vit_base_patch16_224.orig_in21k" / "model.safetensors") in message
    assert "huggingface-cli download timm/vit_base_patch16_224.orig_in21k" in message

