"""Put LoRA, DoRA or AdaLoRA on chosen attention blocks (Q, K, V, O) of timm ViT, BERT and LLaMA.

Block letters follow Eq. 1 of "LoRA in the right place" (the paper this project implements),
F = softmax(X W_Q^T W_K X^T / sqrt(d)) X W_V W_O:

    architecture      Q                  K                V                  O
    timm ViT          attn.qkv.q         attn.qkv.k       attn.qkv.v         attn.proj
    BERT              attention.self.query / .key / .value                   attention.output.dense
    LLaMA (and GQA)   self_attn.q_proj   k_proj           v_proj             o_proj

timm fuses Q, K and V into one `qkv` Linear, and peft can only wrap a whole Linear (a LoRA on `qkv`
shares one A across all three blocks). `split_fused_qkv` therefore replaces each fused `qkv` by a
`SplitQKV` holding three Linear layers whose weights are exact row slices of the fused weight; the
attention forward is untouched because `SplitQKV` returns the same concatenated tensor. We chose the
split over slice-wise adapters because it lets peft itself, unmodified, wrap any single block, so the
peft backend and the reference backend see identical module trees.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import nn

logger = logging.getLogger(__name__)

BLOCKS = ("Q", "K", "V", "O")
METHODS = ("lora", "dora", "adalora")
BACKENDS = ("peft", "reference")

# Keyword arguments accepted per method, beyond rank/alpha/dropout. `init_lora_weights=False` keeps a
# random B (as in peft) so that adapters are not a no-op at init, which numeric cross-checks need.
_METHOD_KWARGS = {
    "lora": {"init_lora_weights"},
    "dora": {"init_lora_weights"},
    "adalora": {"init_lora_weights", "init_r", "total_step", "tinit", "tfinal", "deltaT", "beta1", "beta2",
                "orth_reg_weight"},
}


class SplitQKV(nn.Module):
    """timm's fused `qkv` Linear as three Linear layers `q`, `k`, `v`; the output is their concatenation."""

    def __init__(self, q: nn.Linear, k: nn.Linear, v: nn.Linear) -> None:
        super().__init__()
        self.q, self.k, self.v = q, k, v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.q(x), self.k(x), self.v(x)], dim=-1)  # (..., 3 * attn_dim)


def _is_linear(module: nn.Module | None) -> bool:
    # An nn.Linear, or an adapter (peft or reference) that wraps one as `base_layer`.
    return isinstance(module, nn.Linear) or isinstance(getattr(module, "base_layer", None), nn.Linear)


def _is_timm_attention(module: nn.Module) -> bool:
    return (isinstance(getattr(module, "qkv", None), (nn.Linear, SplitQKV))
            and _is_linear(getattr(module, "proj", None))
            and hasattr(module, "num_heads") and hasattr(module, "head_dim"))


def split_fused_qkv(model: nn.Module) -> int:
    """Replace every timm attention `qkv` Linear by an exact `SplitQKV`; return how many were split.

    timm reshapes the fused output to (B, N, 3, heads, head_dim), so rows [0, a) of the weight and bias
    are Q, [a, 2a) are K and [2a, 3a) are V, with a = heads * head_dim. Already split layers are kept.
    """
    count = 0
    for name, module in list(model.named_modules()):
        if not _is_timm_attention(module) or not isinstance(module.qkv, nn.Linear):
            continue
        fused = module.qkv
        attn_dim = module.num_heads * module.head_dim
        if fused.out_features != 3 * attn_dim:
            raise ValueError(f"{name}.qkv has {fused.out_features} output features, expected 3 * {attn_dim}; "
                             "only the standard fused Q|K|V layout can be split")
        parts = []
        for index in range(3):
            rows = slice(index * attn_dim, (index + 1) * attn_dim)
            part = nn.Linear(fused.in_features, attn_dim, bias=fused.bias is not None,
                             device=fused.weight.device, dtype=fused.weight.dtype)
            with torch.no_grad():
                part.weight.copy_(fused.weight[rows])
                if fused.bias is not None:
                    part.bias.copy_(fused.bias[rows])
            part.requires_grad_(fused.weight.requires_grad)
            parts.append(part)
        module.qkv = SplitQKV(*parts)
        count += 1
    logger.debug("split %d fused qkv layers", count)
    return count


def fuse_split_qkv(model: nn.Module) -> int:
    """Undo `split_fused_qkv` (e.g. to save a timm checkpoint); adapters must be merged and removed first."""
    count = 0
    for name, module in list(model.named_modules()):
        if not _is_timm_attention(module) or not isinstance(module.qkv, SplitQKV):
            continue
        parts = (module.qkv.q, module.qkv.k, module.qkv.v)
        if not all(type(part) is nn.Linear for part in parts):
            raise ValueError(f"{name}.qkv still carries adapters ({[type(p).__name__ for p in parts]}); "
                             "merge and unload them before fusing")
        fused = nn.Linear(parts[0].in_features, sum(p.out_features for p in parts),
                          bias=parts[0].bias is not None, device=parts[0].weight.device,
                          dtype=parts[0].weight.dtype)
        with torch.no_grad():
            fused.weight.copy_(torch.cat([p.weight for p in parts], dim=0))
            if fused.bias is not None:
                fused.bias.copy_(torch.cat([p.bias for p in parts], dim=0))
        module.qkv = fused
        count += 1
    return count


@dataclass(frozen=True)
class AttentionLayer:
    """One attention layer: where its Q, K, V, O projections live and its head layout.

    `modules` maps a block letter to a module name. For an unsplit timm layer Q, K and V all name the
    fused `qkv` Linear and `fused_qkv` is True; `block_weight` slices it.
    """

    name: str
    architecture: str  # "timm_vit", "bert" or "llama"
    modules: dict[str, str]
    num_heads: int
    num_kv_heads: int
    head_dim: int
    fused_qkv: bool = False


def find_attention_layers(model: nn.Module) -> list[AttentionLayer]:
    """List the self-attention layers of a timm ViT, BERT-style or LLaMA-style model, in forward order.

    Raises ValueError naming the attention module types present when none is recognised.
    """
    layers = []
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if _is_timm_attention(module):
            fused = isinstance(module.qkv, nn.Linear)
            qkv = {letter: f"{prefix}qkv" if fused else f"{prefix}qkv.{letter.lower()}" for letter in "QKV"}
            layers.append(AttentionLayer(name, "timm_vit", {**qkv, "O": f"{prefix}proj"},
                                         module.num_heads, module.num_heads, module.head_dim, fused))
        elif _is_bert_attention(module):
            if "crossattention" in name:
                logger.info("skipping cross-attention layer %s: only self-attention blocks are targeted", name)
                continue
            heads = module.self.num_attention_heads
            modules = {"Q": f"{prefix}self.query", "K": f"{prefix}self.key", "V": f"{prefix}self.value",
                       "O": f"{prefix}output.dense"}
            layers.append(AttentionLayer(name, "bert", modules, heads, heads, module.self.attention_head_size))
        elif _is_llama_attention(module):
            head_dim = module.head_dim
            modules = {letter: f"{prefix}{letter.lower()}_proj" for letter in BLOCKS}
            layers.append(AttentionLayer(name, "llama", modules, module.q_proj.out_features // head_dim,
                                         module.k_proj.out_features // head_dim, head_dim))
    if not layers:
        found = sorted({type(m).__name__ for m in model.modules() if "attention" in type(m).__name__.lower()})
        raise ValueError(
            f"no supported attention layers found in {type(model).__name__}; attention module types present: "
            f"{', '.join(found) or 'none'}. Supported: timm Attention (qkv + proj), BERT-style "
            "(self.query/key/value + output.dense) and LLaMA-style (q_proj/k_proj/v_proj/o_proj)")
    return layers


def _is_bert_attention(module: nn.Module) -> bool:
    inner, output = getattr(module, "self", None), getattr(module, "output", None)
    return (inner is not None and output is not None
            and all(_is_linear(getattr(inner, n, None)) for n in ("query", "key", "value"))
            and _is_linear(getattr(output, "dense", None)))


def _is_llama_attention(module: nn.Module) -> bool:
    return (all(_is_linear(getattr(module, f"{n}_proj", None)) for n in "qkvo")
            and hasattr(module, "head_dim"))


def block_weight(model: nn.Module, layer: AttentionLayer, block: str) -> torch.Tensor:
    """Return the torch-layout weight (out x in) of one block; Eq. 1's W_V and W_O are its transpose."""
    weight = _base_linear(model.get_submodule(layer.modules[block])).weight
    if layer.fused_qkv and block in "QKV":
        attn_dim = layer.num_heads * layer.head_dim
        start = "QKV".index(block) * attn_dim
        weight = weight[start:start + attn_dim]
    return weight


def _base_linear(module: nn.Module) -> nn.Linear:
    # peft layers and our reference adapters both expose the wrapped Linear as `base_layer`.
    while not isinstance(module, nn.Linear) and hasattr(module, "base_layer"):
        module = module.base_layer
    if not isinstance(module, nn.Linear):
        raise ValueError(f"expected an nn.Linear (possibly wrapped by an adapter), got {type(module).__name__}")
    return module


@dataclass
class TargetingReport:
    """Adapter placement and trainable-parameter counts produced by `apply_block_adapters`."""

    method: str
    backend: str
    blocks: str
    rank: int
    wrapped_modules: dict[str, list[str]] = field(default_factory=dict)
    trainable_params: int = 0
    expected_params: int = 0
    head_params: int = 0


def parse_blocks(blocks: str) -> str:
    """Validate a block string such as "O", "OV" or "QV"; return it upper-cased."""
    if not isinstance(blocks, str) or not blocks:
        raise ValueError(f"blocks must be a non-empty string over 'QKVO' such as 'O' or 'OV', got {blocks!r}")
    normalised = blocks.upper()
    invalid = sorted(set(normalised) - set(BLOCKS))
    if invalid:
        raise ValueError(f"blocks={blocks!r} contains {invalid}; use letters from 'QKVO', e.g. 'OV'")
    if len(set(normalised)) != len(normalised):
        raise ValueError(f"blocks={blocks!r} repeats a letter; name each block once, e.g. 'OV'")
    return normalised


def expected_adapter_params(method: str, in_features: int, out_features: int, rank: int) -> int:
    """Closed-form trainable parameter count of one adapted Linear (in -> out) with rank r.

    LoRA: r (in + out). DoRA adds the magnitude vector m (out). AdaLoRA: r (in + out) + r singular
    values, with r = init_r (pruning only masks, it never shrinks the tensors).
    """
    low_rank = rank * (in_features + out_features)
    if method == "lora":
        return low_rank
    if method == "dora":
        return low_rank + out_features
    if method == "adalora":
        return low_rank + rank
    raise ValueError(f"method={method!r} is not one of {METHODS}")


def apply_block_adapters(model: nn.Module, *, method: str, blocks: str, rank: int, alpha: float | None = None,
                         dropout: float = 0.0, backend: str = "peft", head: str | None = None,
                         **method_kwargs) -> tuple[nn.Module, TargetingReport]:
    """Wrap the chosen blocks of every attention layer with LoRA, DoRA or AdaLoRA; freeze the rest.

    rank is r for LoRA and DoRA and target_r for AdaLoRA (init_r defaults to round(1.5 r), peft's default
    ratio 12/8). alpha defaults to r, so the LoRA scaling alpha / r is 1. `head` names a module (e.g.
    "head" in timm, "classifier" in BERT) that is trained in full. Returns the model (a peft PeftModel for
    backend="peft") and a report; raises AssertionError if the wrapped modules or the trainable count
    disagree with the closed form.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not supported; use one of {METHODS}")
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not supported; use one of {BACKENDS}")
    blocks = parse_blocks(blocks)
    if not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank must be a positive integer, got {rank!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
    unknown = sorted(set(method_kwargs) - _METHOD_KWARGS[method])
    if unknown:
        raise ValueError(f"unknown keyword arguments {unknown} for method={method!r}; "
                         f"accepted: {sorted(_METHOD_KWARGS[method])}")
    alpha = float(rank if alpha is None else alpha)
    if method == "adalora":
        method_kwargs.setdefault("init_r", max(rank, round(1.5 * rank)))
        if method_kwargs.get("total_step") is None:
            raise ValueError("AdaLoRA needs total_step (the number of optimizer steps) for its budget schedule")
    if head is not None:
        model.get_submodule(head)  # raises AttributeError naming the missing module

    split_fused_qkv(model)
    layers = find_attention_layers(model)
    targets = {letter: [layer.modules[letter] for layer in layers] for letter in blocks}
    names = [name for letter in blocks for name in targets[letter]]

    if backend == "peft":
        model = _wrap_with_peft(model, method, names, rank, alpha, dropout, head, method_kwargs)
    else:
        _wrap_with_reference(model, method, names, rank, alpha, dropout, head, method_kwargs)

    report = TargetingReport(method, backend, blocks, rank, wrapped_modules=targets)
    adapter_rank = method_kwargs["init_r"] if method == "adalora" else rank
    for name in names:
        base = _base_linear(_find_module(model, name))
        report.expected_params += expected_adapter_params(method, base.in_features, base.out_features,
                                                          adapter_rank)
    if head is not None:
        report.head_params = sum(p.numel() for p in _find_module(model, head).parameters() if p.requires_grad)
        report.expected_params += sum(p.numel() for p in _find_module(model, head).parameters())
    report.trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    _check_report(model, report, len(layers))
    return model, report


def _find_module(model: nn.Module, name: str) -> nn.Module:
    # A PeftModel keeps the original model under base_model.model; a peft `modules_to_save` head is a
    # wrapper whose trainable copy is what the report counts.
    for prefix in ("", "base_model.model."):
        try:
            module = model.get_submodule(prefix + name)
        except AttributeError:
            continue
        trainable_copy = getattr(module, "modules_to_save", None)
        if isinstance(trainable_copy, nn.ModuleDict) and trainable_copy:
            return next(iter(trainable_copy.values()))
        return module
    raise ValueError(f"module {name!r} not found in {type(model).__name__}")


def _is_adapter(module: nn.Module) -> bool:
    from blockrank_ref.lora import LoRALinear
    from blockrank_ref.adalora import SVDLinear

    if isinstance(module, (LoRALinear, SVDLinear)):
        return True
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return False
    return isinstance(module, LoraLayer)


def _check_report(model: nn.Module, report: TargetingReport, depth: int) -> None:
    for letter, names in report.wrapped_modules.items():
        assert len(names) == depth, f"block {letter} has {len(names)} modules, expected one per layer ({depth})"
        for name in names:
            assert _is_adapter(_find_module(model, name)), f"{name} (block {letter}) carries no adapter"
    adapters = [name for name, module in model.named_modules() if _is_adapter(module)]
    assert len(adapters) == depth * len(report.blocks), (
        f"{len(adapters)} adapter modules in the model, expected {depth * len(report.blocks)}: {adapters}")
    assert report.trainable_params == report.expected_params, (
        f"trainable parameters {report.trainable_params} != closed form {report.expected_params} "
        f"({report.method}, r={report.rank}, blocks={report.blocks})")


def _wrap_with_peft(model, method, names, rank, alpha, dropout, head, method_kwargs):
    import peft

    common = dict(target_modules=names, lora_alpha=alpha, lora_dropout=dropout, bias="none",
                  modules_to_save=[head] if head is not None else None,
                  init_lora_weights=method_kwargs.get("init_lora_weights", True))
    if method == "adalora":
        schedule = {key: method_kwargs[key] for key in ("init_r", "total_step", "tinit", "tfinal", "deltaT",
                                                        "beta1", "beta2", "orth_reg_weight") if key in method_kwargs}
        config = peft.AdaLoraConfig(target_r=rank, **schedule, **common)
    else:
        config = peft.LoraConfig(r=rank, use_dora=method == "dora", **common)
    model = peft.get_peft_model(model, config)
    if method == "adalora":
        _freeze_ranknum(model)
    return model


def _freeze_ranknum(model: nn.Module) -> None:
    # peft 0.21.2 creates AdaLoRA's rank counter r_0 as a frozen float32 Parameter, but moving it to a
    # float64 or bfloat16 base layer re-registers it with requires_grad=True, so an optimizer would
    # train the scale alpha / r_0. It is a constant in AdaLoRA, so we freeze it again.
    thawed = [name for name, p in model.named_parameters() if ".ranknum." in name and p.requires_grad]
    for name in thawed:
        model.get_parameter(name).requires_grad_(False)
    if thawed:
        logger.warning("froze %d AdaLoRA ranknum parameters that peft left trainable", len(thawed))


def _wrap_with_reference(model, method, names, rank, alpha, dropout, head, method_kwargs):
    from blockrank_ref.adalora import SVDLinear
    from blockrank_ref.dora import DoRALinear
    from blockrank_ref.lora import LoRALinear

    model.requires_grad_(False)
    zero_init = method_kwargs.get("init_lora_weights", True)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        base = getattr(parent, child)
        if method == "lora":
            adapter = LoRALinear(base, rank, alpha, dropout, zero_init=zero_init)
        elif method == "dora":
            adapter = DoRALinear(base, rank, alpha, dropout, zero_init=zero_init)
        else:
            adapter = SVDLinear(base, method_kwargs["init_r"], alpha, dropout, zero_init=zero_init)
        setattr(parent, child, adapter)
    if head is not None:
        model.get_submodule(head).requires_grad_(True)


def adapter_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Map each adapted module name (without peft's "base_model.model." prefix) to its adapter module."""
    return {name.removeprefix("base_model.model."): module
            for name, module in model.named_modules() if _is_adapter(module)}


def adapter_parameters(model: nn.Module) -> dict[str, dict[str, nn.Parameter]]:
    """Map each adapted module name to its adapter tensors under the reference symbols.

    LoRA: A (r x in), B (out x r); DoRA adds m (out); AdaLoRA: P (out x r), Lambda (r x 1), Q (r x in).
    peft's lora_A / lora_B / lora_E / lora_magnitude_vector are mapped onto the same symbols, so
    `copy_adapter_parameters` can move trained adapters between the two backends.
    """
    from blockrank_ref.adalora import SVDLinear
    from blockrank_ref.dora import DoRALinear
    from blockrank_ref.lora import LoRALinear

    result = {}
    for name, module in model.named_modules():
        name = name.removeprefix("base_model.model.")
        if isinstance(module, SVDLinear):
            result[name] = {"P": module.P, "Lambda": module.Lambda, "Q": module.Q}
        elif isinstance(module, DoRALinear):
            result[name] = {"A": module.A, "B": module.B, "m": module.m}
        elif isinstance(module, LoRALinear):
            result[name] = {"A": module.A, "B": module.B}
        elif hasattr(module, "lora_E") and "default" in module.lora_E:
            result[name] = {"P": module.lora_B["default"], "Lambda": module.lora_E["default"],
                            "Q": module.lora_A["default"]}
        elif hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            tensors = {"A": module.lora_A["default"].weight, "B": module.lora_B["default"].weight}
            if "default" in getattr(module, "lora_magnitude_vector", {}):
                tensors["m"] = module.lora_magnitude_vector["default"].weight
            result[name] = tensors
    return result


def orthogonality_regularizer(model: nn.Module) -> torch.Tensor:
    """Return AdaLoRA's R = mean over all P and Q of ||P^T P - I||_F and ||Q Q^T - I||_F, for either backend.

    The PeftModel that `apply_block_adapters` returns has no task type, and peft 0.21's plain
    PeftModel.forward calls the wrapped model directly, so peft never adds this term there (nor for
    timm models, whose output has no `.loss`). Add orth_reg_weight * R to the loss yourself.
    """
    terms = []
    for tensors in adapter_parameters(model).values():
        if "Lambda" not in tensors:
            continue
        P, Q = tensors["P"], tensors["Q"]
        eye = torch.eye(Q.shape[0], dtype=Q.dtype, device=Q.device)
        terms.append(torch.linalg.matrix_norm(Q @ Q.T - eye))  # (r_0, r_0)
        terms.append(torch.linalg.matrix_norm(P.T @ P - eye))  # (r_0, r_0)
    if not terms:
        raise ValueError("the model has no AdaLoRA adapters; orthogonality_regularizer applies to AdaLoRA only")
    return torch.stack(terms).mean()


def copy_adapter_parameters(source: nn.Module, target: nn.Module) -> None:
    """Copy every adapter tensor of `source` into the same module and symbol of `target`."""
    source_tensors, target_tensors = adapter_parameters(source), adapter_parameters(target)
    if source_tensors.keys() != target_tensors.keys():
        raise ValueError(f"adapted modules differ: {sorted(source_tensors)} vs {sorted(target_tensors)}")
    with torch.no_grad():
        for name, tensors in source_tensors.items():
            for symbol, tensor in tensors.items():
                target_tensors[name][symbol].copy_(tensor)


def kv_groups(layer: AttentionLayer) -> int:
    """Number of query heads that share one key/value head (1 without grouped-query attention)."""
    return layer.num_heads // layer.num_kv_heads
