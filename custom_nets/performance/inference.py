"""Fast CPU/GPU inference of a dose network, and a timer for one forward pass.

Modes: ``eager`` (the network as trained, eval mode, no autograd), ``torchscript`` (what ``ckpt_export``
produces), ``fast`` (eval, inference mode, weights and activations in the channels-last 3D memory format so
oneDNN's convolutions run without reordering between layers; on CUDA also fp16 autocast). Every mode must give
the eager fp32 dose within 1e-4 Gy (tested); ``fast`` on CUDA uses autocast, which is why it is opt-in there.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from custom_nets.performance.hardware import synchronize

__all__ = ["INFERENCE_MODES", "prepare_network", "FastInference", "time_forward"]

INFERENCE_MODES = ("eager", "torchscript", "fast")


class FastInference(nn.Module):
    """``network`` run with channels-last 3D weights and inputs under ``torch.inference_mode``.

    Shapes: (B, C, X, Y, Z) -> the network's output, returned contiguous (NCDHW) so downstream code sees the
    usual layout. The wrapped network's ``state_dict`` keys are unchanged (``load_state_dict`` passes through)."""

    def __init__(self, network: nn.Module, autocast: bool = False) -> None:
        super().__init__()
        self.network = network.eval().to(memory_format=torch.channels_last_3d)
        self.autocast = autocast

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast(x.device.type, enabled=self.autocast):
            out = self.network(x.contiguous(memory_format=torch.channels_last_3d))
        return out.float().contiguous()

    def state_dict(self, *args, **kwargs):
        return self.network.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = self.network.load_state_dict(state_dict, strict=strict, assign=assign)
        self.network.to(memory_format=torch.channels_last_3d)
        return result


def prepare_network(network: nn.Module, mode: str = "fast", autocast: bool = False) -> nn.Module:
    """A copy of ``network`` ready to time or run in ``mode`` (one of :data:`INFERENCE_MODES`)."""
    network = copy.deepcopy(network).eval()
    if mode == "eager":
        return network
    if mode == "torchscript":
        return torch.jit.script(network)
    if mode == "fast":
        return FastInference(network, autocast=autocast)
    raise ValueError(f"unknown inference mode {mode!r}; choose from {INFERENCE_MODES}")


def time_forward(network: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, warmup: int = 1,
                 repeats: int = 3) -> dict:
    """Seconds per forward pass of ``network`` on ``x``: the median (and every run) after ``warmup`` passes."""
    seconds = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            synchronize(x.device)
            start = time.perf_counter()
            network(x)
            synchronize(x.device)
            if i >= warmup:
                seconds.append(time.perf_counter() - start)
    return {"median_s": statistics.median(seconds), "runs_s": seconds}
