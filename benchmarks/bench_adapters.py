"""Training-step time and activation memory of the reference LoRA and DoRA relative to peft's.

Both backends wrap Q, K, V and O of the same timm ViT (same weights, same batch, rank 8) and run
alternating SGD steps (forward, backward, optimizer step) in one process, so machine load affects
both alike; the ratio of medians is printed, goal <= 1.0 for both methods. Memory is the peak CUDA
allocation on a GPU; on a CPU it is the total size of the tensors autograd saves for the backward
pass (the part of training memory that the adapter implementation decides), counted once per storage.
"""

from __future__ import annotations

import copy
import os
import statistics
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

STEPS, WARMUP, RANK, BATCH, IMAGE = 20, 2, 8, 8, 64


def _model_and_batch(device: torch.device):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=IMAGE, num_classes=10)
    images = torch.randn(BATCH, 3, IMAGE, IMAGE)
    labels = torch.randint(0, 10, (BATCH,))
    return model.to(device), images.to(device), labels.to(device)


def _saved_tensor_bytes(model, images, labels) -> int:
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(storages.values())


def _peak_cuda_bytes(model, images, labels, optimizer) -> int:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    _step(model, images, labels, optimizer)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


def _step(model, images, labels, optimizer) -> None:
    optimizer.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    optimizer.step()


def compare(method: str, device: torch.device) -> dict[str, float]:
    """Time alternating training steps of both backends; return medians and memory of each."""
    from experiments.targeting import apply_block_adapters, copy_adapter_parameters

    base, images, labels = _model_and_batch(device)
    models = {}
    for backend in ("peft", "reference"):
        models[backend], _ = apply_block_adapters(copy.deepcopy(base), method=method, blocks="QKVO", rank=RANK,
                                                  backend=backend, head="head")
        models[backend].train()
    copy_adapter_parameters(models["peft"], models["reference"])
    optimizers = {name: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-3)
                  for name, m in models.items()}
    times = {name: [] for name in models}
    for step in range(WARMUP + STEPS):
        for name, model in models.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            _step(model, images, labels, optimizers[name])
            if device.type == "cuda":
                torch.cuda.synchronize()
            if step >= WARMUP:
                times[name].append(time.perf_counter() - start)
    result = {f"{name}_ms": 1e3 * statistics.median(values) for name, values in times.items()}
    for name, model in models.items():
        if device.type == "cuda":
            result[f"{name}_bytes"] = _peak_cuda_bytes(model, images, labels, optimizers[name])
        else:
            result[f"{name}_bytes"] = _saved_tensor_bytes(model, images, labels)
    return result


def main() -> int:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    threads = torch.get_num_threads()
    if device.type == "cpu":
        # One thread: on a shared 2-core machine, spinning OpenMP threads made steps 50x slower and the
        # ratio mostly measured contention (about 10 s per step instead of 0.15 s).
        torch.set_num_threads(1)
    try:
        return _report(device)
    finally:
        torch.set_num_threads(threads)


def _report(device: torch.device) -> int:
    memory_kind = "peak CUDA memory" if device.type == "cuda" else "autograd saved-tensor memory"
    tokens = (IMAGE // 16) ** 2 + 1
    print(f"adapters: timm vit_tiny ({IMAGE} px, {tokens} tokens, 12 layers), blocks QKVO, r={RANK}, "
          f"batch {BATCH}, {device.type} ({torch.get_num_threads()} thread(s)), median of {STEPS} "
          "alternating training steps")
    for method in ("lora", "dora"):
        result = compare(method, device)
        time_ratio = result["reference_ms"] / result["peft_ms"]
        memory_ratio = result["reference_bytes"] / result["peft_bytes"]
        print(f"{method}: step time reference/peft = {time_ratio:.2f}x "
              f"({result['reference_ms']:.1f} ms vs {result['peft_ms']:.1f} ms); "
              f"{memory_kind} reference/peft = {memory_ratio:.2f}x "
              f"({result['reference_bytes'] / 2**20:.1f} MiB vs {result['peft_bytes'] / 2**20:.1f} MiB); "
              f"goal <= 1.0x: {'met' if time_ratio <= 1.0 and memory_ratio <= 1.0 else 'not met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
