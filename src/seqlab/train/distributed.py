"""Device choice and data-parallel process handling, all in one place.

Run as usual for one process, or under `torchrun --nproc_per_node=K -m seqlab train ...` for
data-parallel training (DistributedDataParallel, Li et al. 2020): torchrun sets RANK, WORLD_SIZE
and LOCAL_RANK; the backend is nccl on CUDA and gloo on CPU. Every rank sees a different slice of
each epoch's batches; gradients are averaged by DDP; only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistContext", "resolve_device", "setup_distributed", "teardown_distributed"]


@dataclass
class DistContext:
    """Where this process runs and which part of the data-parallel group it is."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Sum a few numbers over ranks (identity for one process)."""
        if not self.enabled:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.tolist()

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on at least one (keeps ranks in step)."""
        if not self.enabled:
            return flag
        return self.all_reduce_sum([1.0 if flag else 0.0])[0] > 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the loop trains: DDP around `model` when data-parallel, `model` otherwise."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    """'auto' picks CUDA when present; 'cuda' without CUDA is a ValueError."""
    if preference not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device={preference!r} is not one of: auto, cpu, cuda")
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("trainer.device='cuda' but CUDA is not available; use trainer.device=cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def setup_distributed(preference: str) -> DistContext:
    """Read torchrun's environment, start the process group when WORLD_SIZE > 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(preference, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(device=device, rank=rank, world_size=world_size, local_rank=local_rank)


def teardown_distributed(context: DistContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()
