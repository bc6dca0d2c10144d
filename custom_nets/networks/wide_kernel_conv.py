"""A Conv3d that runs in fp32 under CPU autocast when its kernel is wider than the feature map.

torch 2.13's oneDNN corrupts the heap in the bf16 weight gradient of a 7^3 convolution over a 4^3 map (24 or more
channels; measured on an AVX512-BF16 CPU: the process aborts with "double free or corruption", or hangs). RANDose's
multi-scale blocks apply 7^3 kernels at every encoder stage, so its 64^3 CPU profile meets a 4^3 map at the bottom.
A kernel wider than the map is mostly padding and such maps are tiny, so computing them in fp32 costs nothing
measurable; the rule is wider than the one failing case on purpose.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["WideKernelSafeConv3d", "kernel_wider_than_map"]


def kernel_wider_than_map(kernel_size: tuple[int, ...], spatial_shape: tuple[int, ...]) -> bool:
    """Whether the kernel is wider than the map along some axis (e.g. 7 > 4)."""
    return any(k > s for k, s in zip(kernel_size, spatial_shape))


class WideKernelSafeConv3d(nn.Conv3d):
    """``nn.Conv3d`` (same arguments and parameters) computed in fp32, outside CPU autocast, when its kernel is
    wider than the input map; otherwise exactly ``nn.Conv3d``. Shapes: (B, C_in, X, Y, Z) -> (B, C_out, x, y, z)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():  # exported models run without autocast
            return self._conv_forward(x, self.weight, self.bias)
        return self._forward_eager(x)

    @torch.jit.unused
    def _forward_eager(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu") \
                and kernel_wider_than_map(self.kernel_size, tuple(x.shape[2:])):
            with torch.autocast("cpu", enabled=False):
                bias = None if self.bias is None else self.bias.float()
                return self._conv_forward(x.float(), self.weight.float(), bias)
        return self._conv_forward(x, self.weight, self.bias)
