"""Adapter overhead on the CPU profile's ViT: LoRA training step vs the frozen model's forward+backward.

Both sides use the same model, batch and thread count, and are timed in
alternating rounds so that load changes on a shared machine hit both alike.
Baseline: backbone frozen and only the head trained, but gradients flow back
through every block to the input, so its backward visits the same layers as
LoRA's. Its fused qkv is split into Q, K, V layers, as in the adapted model. LoRA: the same plus peft LoRA on one block type of every layer.
Each side's step is forward, cross-entropy, backward and an AdamW step.
The printed ratio is LoRA images/s divided by baseline images/s (1.0 = no overhead).
"""

from __future__ import annotations

import statistics
import time

import torch
from torch.nn import functional as F

BATCH = 64
ROUNDS = 5
STEPS_PER_ROUND = 5


def _make_step(model, parameters):
    optimizer = torch.optim.AdamW(parameters, lr=1e-3, weight_decay=0.1)

    def step(images, labels):
        images = images.requires_grad_(True)  # gradients reach the input, through every block
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _throughput(step, images, labels) -> float:
    start = time.perf_counter()
    for _ in range(STEPS_PER_ROUND):
        step(images.detach(), labels)
    return STEPS_PER_ROUND * len(labels) / (time.perf_counter() - start)


def measure(blocks: str, rank: int) -> tuple[float, float]:
    """Return median images/s of (LoRA step, frozen forward+backward) for one block type and rank."""
    from experiments.targeting import split_fused_qkv
    from experiments.vit import digits, model_setup
    from experiments.vit.config import RunConfig

    torch.manual_seed(0)
    images = torch.randn(BATCH, 1, 8, 8)
    labels = torch.randint(0, 5, (BATCH,))

    frozen = digits.create_model(5)
    split_fused_qkv(frozen)  # the adapted model is split too, so the ratio isolates the adapters
    for name, parameter in frozen.named_parameters():
        parameter.requires_grad_(name.startswith("head."))
    baseline = _make_step(frozen, [p for p in frozen.parameters() if p.requires_grad])

    adapted = digits.create_model(5)
    split_fused_qkv(adapted)
    adapted.load_state_dict(frozen.state_dict())
    config = RunConfig(experiment="bench", backbone="digits_sup", dataset="digits", method="lora", blocks=blocks,
                       rank=rank, seed=0, epochs=1, profile="cpu_profile", batch_size=BATCH, image_size=8)
    adapted, _ = model_setup.attach_adapters(adapted, config, blocks, total_steps=1)
    lora = _make_step(adapted, [p for p in adapted.parameters() if p.requires_grad])

    for step in (baseline, lora):  # warm-up
        _throughput(step, images, labels)
    lora_rates, base_rates = [], []
    for _ in range(ROUNDS):
        lora_rates.append(_throughput(lora, images, labels))
        base_rates.append(_throughput(baseline, images, labels))
    return statistics.median(lora_rates), statistics.median(base_rates)


def main() -> int:
    # One thread, as in the CPU profile's workers: these matrices are too small to split across threads.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    print(f"bench_vit: CPU-profile ViT (width 64, depth 4, 17 tokens), batch {BATCH}, 1 thread, "
          f"median of {ROUNDS} alternating rounds of {STEPS_PER_ROUND} steps")
    try:
        for blocks, rank in (("Q", 4), ("V", 4), ("O", 4), ("O", 1), ("O", 8), ("OV", 4)):
            lora, base = measure(blocks, rank)
            print(f"  LoRA {blocks:<2} r={rank}: {lora:8.0f} img/s   frozen fwd+bwd: {base:8.0f} img/s   "
                  f"ratio {lora / base:.2f}", flush=True)
    finally:
        torch.set_num_threads(threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
