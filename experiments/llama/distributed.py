"""Data-parallel context for runs launched with `torchrun` or `accelerate launch`.

Both launchers export RANK, WORLD_SIZE and LOCAL_RANK; without them the run is a single process.
Only adapter gradients cross processes, and they are few (a rank-r LoRA on two blocks of a 7B model
is under 2 M numbers), so the training loop all-reduces them itself instead of wrapping the model in
DistributedDataParallel. That keeps ranks with an empty share of a short last batch in step.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Rank, world size and the device of this process."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over processes in place and return it (a no-op in a single process)."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Overwrite `tensor` with rank 0's copy on every process and return it."""
        if self.distributed:
            dist.broadcast(tensor, src=0)
        return tensor

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """Map "auto", "cuda" or "cpu" to this process's device; "cuda" without a GPU raises ValueError."""
    if device not in ("auto", "cuda", "cpu"):
        raise ValueError(f"invalid device {device!r}: choose auto, cuda or cpu")
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no GPU (torch.cuda.is_available() is False)")
    return torch.device("cuda", local_rank)


def init_distributed(device: str = "auto") -> DistContext:
    """Join the process group set up by the launcher (NCCL on GPUs, gloo on CPUs), if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    target = resolve_device(device, local_rank)
    if target.type == "cuda":
        torch.cuda.set_device(target)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if target.type == "cuda" else "gloo")
        logger.info("process %d of %d joined the process group on %s", rank, world_size, target)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=target)


def close_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
