"""Where one forward pass spends its time, by kind of operator (PyTorch's profiler), against the matrix-product peak.

What keeps a mode below the fp32 peak shows here: the convolutions' own rate (FLOPs counted by
:func:`~custom_nets.networks.complexity.forward_flops`, which are convolutions and matrix products) against the
time of the memory-bound rest (normalisation, activations, upsampling, concatenation, copies).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from custom_nets.performance.hardware import synchronize

__all__ = ["OPERATOR_KINDS", "operator_kind", "profile_operators"]

#: Kind of operator -> substrings of ATen operator names; the first kind that matches wins, the rest is "other".
OPERATOR_KINDS: dict[str, tuple[str, ...]] = {
    "convolution and matrix product": ("conv", "addmm", "aten::mm", "bmm", "aten::linear", "matmul"),
    # the fused instance norm of fast and bf16 runs as reductions and in-place elementwise steps
    "normalisation and activation": ("norm", "relu", "clamp", "sigmoid", "gelu", "silu", "tanh", "sum", "mean",
                                     "sub", "pow", "square", "mul", "add", "rsqrt", "div"),
    "upsampling": ("upsample", "interpolate", "grid_sampler"),
    "concatenation": ("aten::cat",),
    "copy and layout": ("copy_", "contiguous", "clone", "aten::to", "_to_copy", "empty", "permute", "reorder"),
}


def operator_kind(name: str) -> str:
    """The :data:`OPERATOR_KINDS` key of an ATen operator name (``"other"`` if none matches)."""
    for kind, patterns in OPERATOR_KINDS.items():
        if any(p in name for p in patterns):
            return kind
    return "other"


def profile_operators(network: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, flops: float,
                      matmul_peak_gflops: float, warmup: int = 2) -> dict:
    """Profile one forward pass of ``network`` on ``x`` after ``warmup`` unprofiled passes (TorchScript optimises
    a graph on its second run).

    Args:
        network: a prepared network (any inference mode).
        x: its input (B, C, X, Y, Z).
        flops: FLOPs of one forward pass (convolutions and matrix products).
        matmul_peak_gflops: the measured fp32 matrix-product rate, GFLOP/s.

    Returns ``{"forward_s", "seconds": {kind: s}, "shares": {kind: share of the operators' time},
    "convolution_gflops", "convolution_share_of_peak", "top": [(operator, s), ...]}``; seconds are self times
    (an operator's own time, without the operators it calls), so kinds add up to the profiled total.
    """
    activities = [torch.profiler.ProfilerActivity.CPU]
    if x.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.no_grad():
        for _ in range(warmup):
            network(x)
        synchronize(x.device)
        with torch.profiler.profile(activities=activities) as profiler:
            network(x)
            synchronize(x.device)
    by_operator: dict[str, float] = {}
    for event in profiler.key_averages():
        self_us = event.self_device_time_total if x.device.type == "cuda" else event.self_cpu_time_total
        by_operator[event.key] = by_operator.get(event.key, 0.0) + self_us / 1e6
    seconds: dict[str, float] = {kind: 0.0 for kind in (*OPERATOR_KINDS, "other")}
    for name, s in by_operator.items():
        seconds[operator_kind(name)] += s
    total = sum(seconds.values())
    convolution_s = seconds["convolution and matrix product"]
    convolution_gflops = flops / convolution_s / 1e9 if convolution_s else float("nan")
    return {"forward_s": total, "seconds": seconds, "shares": {k: s / total for k, s in seconds.items()},
            "convolution_gflops": convolution_gflops,
            "convolution_share_of_peak": convolution_gflops / matmul_peak_gflops,
            "top": sorted(by_operator.items(), key=lambda item: -item[1])[:8]}
