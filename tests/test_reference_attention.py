"""Unit tests of the reference attention (Eq. 1), margins and exact sensitivities."""

from __future__ import annotations

import math

import mpmath
import pytest
import torch
from torch.func import jacrev, jvp

from blockrank_ref.attention import attention, margins, row_margins
from blockrank_ref.sensitivity import BLOCKS, AttentionPoint, head_operator_norm, operator_norm, sensitivities


def random_layer(n: int, d: int, seed: int, scale: float = 1.0) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, dtype=torch.float64, generator=generator)
    weights = [scale * torch.randn(d, d, dtype=torch.float64, generator=generator) for _ in range(4)]
    return (X, *weights)


def test_attention_matches_torch_multihead_layout() -> None:
    """Eq. (1) per head equals torch's scaled_dot_product_attention with nn.Linear-style projections."""
    X, W_Q, W_K, W_V, W_O = random_layer(5, 6, seed=0)
    heads, width = 3, 2
    queries = (X @ W_Q.T).reshape(5, heads, width).transpose(0, 1)  # H x n x d_h
    keys = (X @ W_K.T).reshape(5, heads, width).transpose(0, 1)
    values = (X @ W_V).reshape(5, heads, width).transpose(0, 1)
    context = torch.nn.functional.scaled_dot_product_attention(queries, keys, values)  # H x n x d_h
    expected = context.transpose(0, 1).reshape(5, 6) @ W_O
    torch.testing.assert_close(attention(X, W_Q, W_K, W_V, W_O, heads=heads), expected, rtol=1e-12, atol=1e-12)


def test_margin_conventions() -> None:
    """A tie gives gamma = 0; one token gives gamma = +inf."""
    S = torch.tensor([[1.0, 3.0, 3.0], [2.0, 0.5, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(row_margins(S), torch.tensor([0.0, 1.5], dtype=torch.float64))
    assert math.isinf(float(row_margins(torch.tensor([[4.0]], dtype=torch.float64))[0]))
    X, W_Q, W_K, _, _ = random_layer(1, 3, seed=1)
    assert math.isinf(margins(X, W_Q, W_K).gamma_min)


@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("block", BLOCKS)
def test_derivative_matches_forward_mode_autodiff(block: str, heads: int) -> None:
    """The closed-form D_W F[dW] equals torch.func.jvp of Eq. (1), and vjp is its adjoint."""
    X, *weights = random_layer(5, 4, seed=2)
    index = BLOCKS.index(block)
    point = AttentionPoint(X, *weights, heads=heads)
    dW = torch.randn(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    G = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))

    def forward(W: torch.Tensor) -> torch.Tensor:
        arguments = list(weights)
        arguments[index] = W
        return attention(X, *arguments, heads=heads)

    _, expected = jvp(forward, (weights[index],), (dW,))
    torch.testing.assert_close(point.jvp(block, dW), expected, rtol=1e-12, atol=1e-12)
    inner_left = float((point.jvp(block, dW) * G).sum())
    inner_right = float((dW * point.vjp(block, G)).sum())
    assert inner_left == pytest.approx(inner_right, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("heads", [1, 2])
def test_operator_norm_matches_materialised_jacobian(heads: int) -> None:
    """Exact sensitivities equal the spectral norm of the materialised Jacobian (relative 1e-10)."""
    X, *weights = random_layer(6, 4, seed=5, scale=1.5)
    exact = sensitivities(X, *weights, heads=heads)
    for index, block in enumerate(BLOCKS):
        def forward(W: torch.Tensor) -> torch.Tensor:
            arguments = list(weights)
            arguments[index] = W
            return attention(X, *arguments, heads=heads)

        jacobian = jacrev(forward)(weights[index]).reshape(6 * 4, 4 * 4)
        assert exact[block] == pytest.approx(float(torch.linalg.matrix_norm(jacobian, ord=2)), rel=1e-10)


def test_lanczos_path_matches_dense_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above the dense size limit the Lanczos result agrees with the dense one (relative 1e-9)."""
    import blockrank_ref.sensitivity as sensitivity

    X, *weights = random_layer(12, 12, seed=6)
    point = AttentionPoint(X, *weights, heads=3)
    dense = {block: operator_norm(point, block) for block in "QKV"}
    monkeypatch.setattr(sensitivity, "DENSE_MAX_DIM", 0)
    for block in "QKV":
        assert operator_norm(point, block) == pytest.approx(dense[block], rel=1e-9)
    monkeypatch.setattr(sensitivity, "DENSE_HEAD_MAX_DIM", 0)
    single = AttentionPoint(X, *weights, heads=1)
    monkeypatch.setattr(sensitivity, "DENSE_MAX_DIM", 256)
    for block in "QK":
        lanczos = head_operator_norm(single, block, 0)
        monkeypatch.setattr(sensitivity, "DENSE_HEAD_MAX_DIM", 2025)
        assert lanczos == pytest.approx(head_operator_norm(single, block, 0), rel=1e-9)
        monkeypatch.setattr(sensitivity, "DENSE_HEAD_MAX_DIM", 0)


def test_sharp_softmax_sensitivity_keeps_digits() -> None:
    """With logit margins of 37 and 71 the Q sensitivity (~2e-16) matches a 100-digit mpmath Jacobian to 1e-10.

    Here a_max is within 1e-16 of 1 but not equal to it, so the textbook softmax
    derivative a_j (e_j - a.e), which torch's autograd uses, cancels catastrophically.
    """
    X = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
    W_Q = torch.tensor([[60.0, 10.0], [5.0, 40.0]], dtype=torch.float64)
    W_K = torch.tensor([[5.0, 0.0], [0.0, 5.0]], dtype=torch.float64)
    W_V = torch.tensor([[1.0, 0.5], [0.0, 1.0]], dtype=torch.float64)
    W_O = torch.tensor([[1.0, 0.0], [0.3, 1.0]], dtype=torch.float64)
    computed = sensitivities(X, W_Q, W_K, W_V, W_O)["Q"]

    mpmath.mp.dps = 100
    to_mp = lambda M: mpmath.matrix(M.tolist())  # noqa: E731
    Xm, Km, Vm, Om = to_mp(X), to_mp(W_K), to_mp(W_V), to_mp(W_O)

    def forward(W_Q_entries: list) -> mpmath.matrix:
        Qm = mpmath.matrix(2, 2)
        for k, value in enumerate(W_Q_entries):
            Qm[k // 2, k % 2] = value
        S = Xm * Qm.T * Km * Xm.T / mpmath.sqrt(2)
        A = mpmath.matrix(2, 2)
        for i in range(2):
            row = [mpmath.exp(S[i, j] - max(S[i, 0], S[i, 1])) for j in range(2)]
            for j in range(2):
                A[i, j] = row[j] / sum(row)
        return A * Xm * Vm * Om

    base = [mpmath.mpf(v) for v in W_Q.flatten().tolist()]
    step = mpmath.mpf(10) ** -40  # F ~ 1 and dF ~ 1e-70: 100 digits leave 30 to spare
    jacobian = mpmath.matrix(4, 4)
    for k in range(4):
        shifted = list(base)
        shifted[k] += step
        difference = (forward(shifted) - forward(base)) / step
        for r in range(4):
            jacobian[r, k] = difference[r // 2, r % 2]
    reference = float(max(mpmath.svd_r(jacobian, compute_uv=False)))
    assert reference < 1e-15
    assert computed == pytest.approx(reference, rel=1e-10)

    autograd = jacrev(lambda W: attention(X, W, W_K, W_V, W_O))(W_Q).reshape(4, 4)
    assert abs(float(torch.linalg.matrix_norm(autograd, ord=2)) / reference - 1) > 0.1


@pytest.mark.parametrize("bad, message", [
    (lambda X, W: (X[None], W), "n x d"),
    (lambda X, W: (X, W[:, :2]), "W_Q must be d x d"),
    (lambda X, W: (X.clone().fill_(float("nan")), W), "NaN"),
])
def test_invalid_inputs_raise_value_error(bad, message: str) -> None:
    X, W_Q, W_K, W_V, W_O = random_layer(3, 3, seed=7)
    X_bad, W_Q_bad = bad(X, W_Q)
    with pytest.raises(ValueError, match=message):
        AttentionPoint(X_bad, W_Q_bad, W_K, W_V, W_O)


def test_heads_must_divide_width() -> None:
    X, *weights = random_layer(3, 4, seed=8)
    with pytest.raises(ValueError, match="heads must be a positive integer that divides d = 4; got 3"):
        AttentionPoint(X, *weights, heads=3)


def test_fused_attention_rejects_forward_mode() -> None:
    """torch's fused CPU attention kernel has no forward-mode AD (torch 2.14), while Eq. (1)'s explicit math does.

    This is why `blockrank_ref.attention` spells out matmul and softmax. If a
    future torch adds the rule, this test fails and the NOTE can go.
    """
    queries = torch.randn(1, 2, 5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    tangent = torch.ones_like(queries)

    def fused(q: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.scaled_dot_product_attention(q, q, q)

    with pytest.raises(NotImplementedError, match="forward AD"):
        jvp(fused, (queries,), (tangent,))
    X, *weights = random_layer(5, 4, seed=9)
    direction = torch.ones(4, 4, dtype=torch.float64)
    _, tangent_out = jvp(lambda W: attention(X, W, *weights[1:]), (weights[0],), (direction,))
    assert torch.isfinite(tangent_out).all()
