"""Distributed data-parallel training under ``torchrun``, switched on by one config value (``distributed: true``,
``configs/multi_gpu_train.json``); every other piece of ``train.json`` adapts through these helpers, so the
multi-GPU config adds to the single-process one instead of replacing parts of it.

Without a process group every helper is the identity: one process trains as before.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.distributed as dist
from monai.data import DistributedSampler
from torch.nn.parallel import DistributedDataParallel

__all__ = ["training_device", "is_main_process", "on_main_process", "distributed_module", "distributed_sampler",
           "end_distributed"]


def training_device(distributed: bool = False) -> torch.device:
    """This process's device. With ``distributed`` (launched by ``torchrun``) the process group starts here (NCCL on
    CUDA, gloo on CPU) and each process takes the GPU of its local rank, or the CPU; else ``cuda:0`` or the CPU."""
    if not distributed:
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if "LOCAL_RANK" not in os.environ:
        raise ValueError("distributed: true needs the process group torchrun sets up: run "
                         "torchrun --nproc_per_node=N -m monai.bundle run ...")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        device = torch.device(f"cuda:{int(os.environ['LOCAL_RANK'])}")
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def is_main_process() -> bool:
    """Rank 0 of a process group, or the only process: the one that logs and saves."""
    return not dist.is_initialized() or dist.get_rank() == 0


def on_main_process(handlers: Sequence) -> list:
    """``handlers`` on the main process, none on the others (logging and saving happen once)."""
    return list(handlers) if is_main_process() else []


def distributed_module(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` wrapped in DistributedDataParallel when a process group is running and it has trainable
    parameters (the network; a loss with learnable weights, whose gradients must be averaged over the ranks like
    the network's, or each rank would learn its own weights); else ``module`` itself."""
    if not dist.is_initialized() or not any(p.requires_grad for p in module.parameters()):
        return module
    return DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None)


def distributed_sampler(dataset: torch.utils.data.Dataset, shuffle: bool = True) -> DistributedSampler | None:
    """Each rank's share of ``dataset`` (shuffled, equal shares) under a process group; None in one process (the
    data loader then shuffles itself)."""
    return DistributedSampler(dataset, even_divisible=True, shuffle=shuffle) if dist.is_initialized() else None


def end_distributed() -> None:
    """Close the process group, if one is running."""
    if dist.is_initialized():
        dist.destroy_process_group()
