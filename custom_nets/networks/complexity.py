"""Size and cost of a network: parameter counts and FLOPs of one forward pass, without running it."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["parameter_counts", "forward_flops"]


def parameter_counts(network: torch.nn.Module) -> dict[str, int]:
    """``{"total": ..., "trainable": ...}`` parameters (a mask variant's frozen prior is not trainable)."""
    return {"total": sum(p.numel() for p in network.parameters()),
            "trainable": sum(p.numel() for p in network.parameters() if p.requires_grad)}


def forward_flops(network: torch.nn.Module, input_shape: Sequence[int]) -> int:
    """FLOPs (a multiply-add counts 2) of one eval-mode forward pass on an input of ``input_shape``
    (B, C, X, Y, Z), counted by PyTorch's FlopCounterMode on the meta device: no memory, no compute."""
    model = copy.deepcopy(network).eval().to("meta")
    with torch.device("meta"):
        x = torch.empty(*input_shape)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return int(counter.get_total_flops())
