"""Properties of the reference LoRA and DoRA layers, checked against their equations on random shapes.

Each test compares with an explicit float64 formula, so the tolerance only has to cover reassociation
in float64 (rtol 1e-10 on values of order 1). HYPOTHESIS_PROFILE=ci (the default) is deterministic;
HYPOTHESIS_PROFILE=dev draws fresh examples and more of them.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import nn

from blockrank_ref.dora import DoRALinear
from blockrank_ref.lora import LoRALinear

PROFILE = settings(max_examples=60 if os.environ.get("HYPOTHESIS_PROFILE") == "dev" else 15,
                   derandomize=os.environ.get("HYPOTHESIS_PROFILE") != "dev", deadline=None)
RTOL, ATOL = 1e-10, 1e-12

layer_shapes = st.tuples(st.integers(1, 12), st.integers(1, 12), st.integers(1, 4), st.booleans(),
                         st.integers(0, 2**16))


def _linear(in_features: int, out_features: int, bias: bool, seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(in_features, out_features, bias=bias).double()


@PROFILE
@given(layer_shapes, st.floats(0.5, 16.0))
@example((1, 1, 1, False, 0), 1.0)
def test_lora_zero_b_is_identity(shape, alpha):
    """With B = 0 (the default init) the LoRA layer computes exactly its base layer, bit for bit."""
    in_features, out_features, r, bias, seed = shape
    base = _linear(in_features, out_features, bias, seed)
    layer = LoRALinear(base, r, alpha)
    x = torch.randn(3, in_features, dtype=torch.float64)
    assert torch.equal(layer(x), base(x))


@PROFILE
@given(layer_shapes, st.floats(0.5, 16.0))
def test_lora_forward_matches_equation(shape, alpha):
    """y = x W_0^T + b + (alpha / r) x A^T B^T for a random B."""
    in_features, out_features, r, bias, seed = shape
    base = _linear(in_features, out_features, bias, seed)
    layer = LoRALinear(base, r, alpha, zero_init=False)
    x = torch.randn(4, in_features, dtype=torch.float64)
    expected = x @ (base.weight + alpha / r * layer.B @ layer.A).T
    if bias:
        expected = expected + base.bias
    torch.testing.assert_close(layer(x), expected, rtol=RTOL, atol=ATOL)


@PROFILE
@given(layer_shapes, st.floats(0.5, 16.0), st.sampled_from([LoRALinear, DoRALinear]))
def test_merge_then_unmerge_restores_weights(shape, alpha, adapter_class):
    """merge() keeps the function (up to rounding) and unmerge() restores W_0 to rounding."""
    in_features, out_features, r, bias, seed = shape
    base = _linear(in_features, out_features, bias, seed)
    original = base.weight.detach().clone()
    layer = adapter_class(base, r, alpha, zero_init=False)
    with torch.no_grad():
        if adapter_class is DoRALinear:
            layer.m.mul_(1.5)  # a magnitude different from the norm, so DoRA's rescaling is not a no-op
    x = torch.randn(4, in_features, dtype=torch.float64)
    unmerged = layer(x)
    layer.merge()
    torch.testing.assert_close(layer(x), unmerged, rtol=1e-9, atol=1e-10)
    layer.unmerge()
    torch.testing.assert_close(base.weight, original, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(layer(x), unmerged, rtol=1e-9, atol=1e-10)


def test_merge_twice_raises():
    layer = LoRALinear(_linear(3, 2, True, 0), 1, 1.0)
    layer.merge()
    with pytest.raises(ValueError, match="already merged"):
        layer.merge()


@PROFILE
@given(layer_shapes, st.floats(0.5, 16.0))
def test_dora_zero_update_is_base(shape, alpha):
    """DoRA with B = 0 and m at its initial value ||W_0|| equals the base layer (rtol 1e-12: m / ||W_0|| = 1)."""
    in_features, out_features, r, bias, seed = shape
    base = _linear(in_features, out_features, bias, seed)
    layer = DoRALinear(base, r, alpha)
    x = torch.randn(3, in_features, dtype=torch.float64)
    torch.testing.assert_close(layer(x), base(x), rtol=1e-12, atol=1e-13)


@PROFILE
@given(layer_shapes, st.floats(0.5, 16.0))
def test_dora_forward_and_gradients_match_equation(shape, alpha):
    """Eval output is m * (W_0 + s B A) x / ||W_0 + s B A||_row + b; gradients treat the norm as a constant.

    The explicit reference detaches the row norm, as DoRA section 4.3 and peft do, and its autograd
    gradients for A, B and m must equal the layer's.
    """
    in_features, out_features, r, bias, seed = shape
    base = _linear(in_features, out_features, bias, seed)
    layer = DoRALinear(base, r, alpha, zero_init=False)
    with torch.no_grad():
        layer.m.mul_(torch.linspace(0.5, 2.0, out_features, dtype=torch.float64))
    x = torch.randn(5, in_features, dtype=torch.float64)

    A = layer.A.detach().clone().requires_grad_(True)
    B = layer.B.detach().clone().requires_grad_(True)
    m = layer.m.detach().clone().requires_grad_(True)
    V = base.weight + alpha / r * B @ A  # (out, in)
    W = m.view(-1, 1) * V / torch.linalg.norm(V, dim=1, keepdim=True).detach()
    expected = x @ W.T + (base.bias if bias else 0.0)

    torch.testing.assert_close(layer(x), expected, rtol=RTOL, atol=ATOL)
    upstream = torch.randn_like(expected)
    (layer(x) * upstream).sum().backward()
    (expected * upstream).sum().backward()
    for name, ours, reference in (("A", layer.A, A), ("B", layer.B, B), ("m", layer.m, m)):
        torch.testing.assert_close(ours.grad, reference.grad, rtol=1e-9, atol=1e-11, msg=f"gradient of {name}")


def test_dora_norm_is_row_wise():
    """The magnitude has one entry per output feature and starts at the row norms of W_0 + s B A."""
    base = _linear(5, 3, True, 0)
    layer = DoRALinear(base, 2, 4.0, zero_init=False)
    assert layer.m.shape == (3,)
    torch.testing.assert_close(layer.m.detach(), torch.linalg.norm(base.weight + 2.0 * layer.B @ layer.A, dim=1))


def test_rejects_non_linear_base():
    with pytest.raises(ValueError, match="must be an nn.Linear"):
        LoRALinear(nn.Conv2d(3, 3, 1), 1, 1.0)
    with pytest.raises(ValueError, match="positive integer"):
        LoRALinear(nn.Linear(3, 3), 0, 1.0)
