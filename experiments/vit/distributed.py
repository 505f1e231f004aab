"""Data-parallel execution of one run under `torchrun` or `accelerate launch`.

Both launchers set WORLD_SIZE, RANK and LOCAL_RANK. With WORLD_SIZE > 1 every
process trains the same run on its shard of each epoch (DistributedSampler),
gradients are averaged by DistributedDataParallel, every process evaluates the
whole test set (so the accuracy is exact, with no padded duplicates), and only
rank 0 writes the result file. Without those variables nothing changes.
"""

from __future__ import annotations

import os

import torch
from torch import distributed as dist
from torch import nn


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    return world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def initialise(device: str) -> str:
    """Join the process group once (NCCL on GPUs, Gloo on CPUs); return this process's device."""
    if not is_distributed():
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda")
    if cuda:
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return device


def wrap(model: nn.Module, device: str) -> nn.Module:
    """Return `model` wrapped in DistributedDataParallel when running distributed, else `model`."""
    if not is_distributed():
        return model
    device_ids = [torch.device(device).index] if device.startswith("cuda") else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def sum_over_processes(values: list[float], device: str) -> list[float]:
    """Return the element-wise sum of `values` over all processes."""
    if not is_distributed():
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def barrier() -> None:
    if is_distributed() and dist.is_initialized():
        dist.barrier()
