"""Convolutions that run in fp32 under CPU bf16 autocast where their kernel is at least as wide as the feature map.

torch 2.13's oneDNN gets the bf16 weight gradient of such convolutions wrong on an AVX512-BF16 CPU (measured against
fp32, 16 or more channels): relative errors of about 1 or infinite values for 3^3 kernels over 2^3 and 3^3 maps,
5^3 over 3^3-4^3 and 7^3 over 3^3-6^3, and for 7^3 over 4^3 it corrupts the heap (the process aborts with "double
free or corruption", or hangs). Kernels narrower than the map were right to bf16 precision (3^3 over 4^3 and up,
5^3 over 5^3 and up, 7^3 over 7^3 and up; relative error 0.003). The networks meet such maps at their bottom: the
quickstart's 48^3 cascade at 3^3, RANDose's 7^3 branches at 4^3 in its 64^3 profile, the tests' 32^3 networks at
2^3. The maps are tiny, so fp32 there costs nothing measurable; the rule (kernel >= map) is a little wider than the
failures on purpose. bf16 training (``custom_nets.training.with_cpu_autocast``) applies it to every convolution of
the network, so the networks themselves stay as the papers define them.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["WideKernelSafeConv3d", "kernel_covers_map", "guard_wide_kernel_convolutions"]


def kernel_covers_map(kernel_size: tuple[int, ...], spatial_shape: tuple[int, ...]) -> bool:
    """Whether the kernel is at least as wide as the map along some axis (e.g. 3 >= 3)."""
    return any(k >= s for k, s in zip(kernel_size, spatial_shape))


class WideKernelSafeConv3d(nn.Conv3d):
    """``nn.Conv3d`` (same arguments and parameters) computed in fp32, outside CPU autocast, when its kernel is at
    least as wide as the input map; otherwise exactly ``nn.Conv3d``. Shapes: (B, C_in, X, Y, Z) -> (B, C_out, x, y, z).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():  # exported models run without autocast
            return self._conv_forward(x, self.weight, self.bias)
        return self._forward_eager(x)

    @torch.jit.unused
    def _forward_eager(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu") \
                and kernel_covers_map(self.kernel_size, tuple(x.shape[2:])):
            with torch.autocast("cpu", enabled=False):
                bias = None if self.bias is None else self.bias.float()
                return self._conv_forward(x.float(), self.weight.float(), bias)
        return self._conv_forward(x, self.weight, self.bias)


def guard_wide_kernel_convolutions(network: nn.Module) -> int:
    """Make every ``nn.Conv3d`` of ``network`` a :class:`WideKernelSafeConv3d` (in place: same parameters and
    ``state_dict``, no new initialisation). Returns how many."""
    guarded = 0
    for module in network.modules():
        if type(module) is nn.Conv3d:
            module.__class__ = WideKernelSafeConv3d
            guarded += 1
    return guarded
