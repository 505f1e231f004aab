"""Exact block sensitivities at ViT-B size, and the wall time of `blockrank verify`.

Targets: all four exact sensitivities of one ViT-B attention layer (n = 197
tokens, d = 768, one head and 12 heads) in <= 5 s on a 2-core CPU, and
`blockrank verify --profile default` in <= 60 s. Printed side by side in one
run: each time, its ratio to the target, its ratio to one forward pass of the
same layer, and, at a size where both run, the time relative to materialising
the Jacobian with torch.func.jacrev and taking its spectral norm.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time

import torch

from blockrank_ref.attention import attention
from blockrank_ref.sensitivity import BLOCKS, sensitivities

TARGET_LAYER_SECONDS = 5.0
TARGET_VERIFY_SECONDS = 60.0


def vit_layer(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Return unit-norm token rows and weights of spectral norm about 3, as in a trained ViT-B layer."""
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, dtype=torch.float64, generator=generator)
    X = X / X.norm(dim=1, keepdim=True)
    weights = [3 * torch.randn(d, d, dtype=torch.float64, generator=generator) / (2 * math.sqrt(d))
               for _ in range(4)]
    return (X, *weights)


def best_of(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def layer_benchmark() -> None:
    X, *weights = vit_layer(197, 768)
    forward = best_of(lambda: attention(X, *weights, heads=12), repeats=5)
    for heads in (1, 12):
        seconds = best_of(lambda: sensitivities(X, *weights, heads=heads), repeats=1)
        print(f"ViT-B layer, {heads:>2} head(s): all four exact sensitivities {seconds:6.2f} s = "
              f"{seconds / TARGET_LAYER_SECONDS:.2f}x the 5 s target = {seconds / forward:,.0f}x one forward pass "
              f"({forward * 1e3:.1f} ms)")


def jacobian_benchmark() -> None:
    from torch.func import jacrev

    X, *weights = vit_layer(12, 24, seed=1)

    def materialised() -> None:
        for index in range(4):
            def forward(W: torch.Tensor, index: int = index) -> torch.Tensor:
                arguments = list(weights)
                arguments[index] = W
                return attention(X, *arguments, heads=4)

            jacobian = jacrev(forward)(weights[index]).reshape(12 * 24, 24 * 24)
            torch.linalg.matrix_norm(jacobian, ord=2)

    ours = best_of(lambda: sensitivities(X, *weights, heads=4), repeats=3)
    reference = best_of(materialised, repeats=3)
    print(f"n = 12, d = 24, 4 heads: exact sensitivities {ours * 1e3:.1f} ms vs materialised Jacobian "
          f"{reference * 1e3:.1f} ms: ratio {ours / reference:.2f}x "
          f"(the Jacobian would hold {197 * 768 * 768 * 768 * 8 / 2**40:.1f} TiB at ViT-B size)")


def verify_benchmark() -> None:
    with tempfile.TemporaryDirectory() as output:
        start = time.perf_counter()
        completed = subprocess.run(
            [sys.executable, "-m", "blockrank_ref.cli", "verify", "--profile", "default", "--output", output],
            capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"),
        )
        seconds = time.perf_counter() - start
    status = "ok" if completed.returncode == 0 else f"exit status {completed.returncode}"
    print(f"blockrank verify --profile default: {seconds:.1f} s = {seconds / TARGET_VERIFY_SECONDS:.2f}x the "
          f"60 s target ({status})")


def main() -> int:
    print(f"cores: {os.cpu_count()}; `sensitivities` runs on one torch thread")
    layer_benchmark()
    jacobian_benchmark()
    verify_benchmark()
    return 0


if __name__ == "__main__":
    sys.exit(main())
