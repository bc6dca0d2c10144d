"""Initialisation: Kaiming weights that meta-device builds skip, and networks built for a checkpoint with no random
initialisation that the checkpoint would overwrite."""

from __future__ import annotations

from collections.abc import Callable
from itertools import chain

import torch
from torch import nn

__all__ = ["build_uninitialised", "kaiming_normal_", "random_weights_"]


def kaiming_normal_(weight: torch.Tensor, **kwargs) -> torch.Tensor:
    """``nn.init.kaiming_normal_``, except on the meta device, where a tensor holds no values: PyTorch's meta
    ``normal_`` imports its compiler (``torch._dynamo``, 0.9 s a process), which every shape-only build paid."""
    return weight if weight.is_meta else nn.init.kaiming_normal_(weight, **kwargs)


def build_uninitialised(build: Callable[..., nn.Module], **kwargs) -> nn.Module:
    """``build(**kwargs)`` without its random initialisation: every parameter and buffer zero, on the default
    device. For inference, where the checkpoint then replaces every tensor (``check_checkpoint`` makes sure it
    holds them all, and a network left unloaded predicts 0 Gy everywhere rather than random doses). The network is
    built on the meta device, then its tensors are allocated: at paper widths the cascade's initialisation took
    0.26 s of a 3.3 s bf16 prediction. Under ``torch.device("meta")`` it stays on meta (shape rules only)."""
    with torch.device("meta"):
        network = build(**kwargs)
    network = network.to_empty(device=torch.get_default_device())
    with torch.no_grad():
        for tensor in chain(network.parameters(), network.buffers()):
            tensor.zero_()
    return network


def random_weights_(network: nn.Module, seed: int = 0) -> nn.Module:
    """Every layer of ``network`` re-drawn by its own ``reset_parameters`` (seeded, the caller's random state left
    as it was), in place: for timing a network that an inference config built zeroed for its checkpoint, where
    all-zero weights would time all-zero activations."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in network.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return network
