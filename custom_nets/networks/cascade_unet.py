"""CascU-Net: two 3D U-Nets in series (GD-Net then RD-Net), after the OpenKBP-winning C3D design.

Stage A maps the input to a coarse dose; stage B sees the input again together with stage A's last
full-resolution feature map and refines the dose. Widths, depth and input channels are parameters, so the
same class serves the paper's scale ([16..256] and [32..512]) and tiny test scales.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution, UpSample
from torch import nn

from custom_nets.networks.initialisation import kaiming_normal_
from custom_nets.networks.prescription_relative import relative_to_top_prescription

__all__ = ["DoseUNet", "CascadeUNet"]


def _block(in_channels: int, out_channels: int, stride: int = 1) -> Convolution:
    """Conv3d 3x3x3 (pad 1) -> InstanceNorm3d(affine) -> ReLU."""
    return Convolution(3, in_channels, out_channels, strides=stride, kernel_size=3, padding=1, act="RELU",
                       norm=("INSTANCE", {"affine": True}), adn_ordering="NA")


class DoseUNet(nn.Module):
    """One stage of the cascade: a 3D U-Net with ``len(widths)`` resolution levels.

    Level 1: two stride-1 blocks. Levels 2..L: a stride-2 block then a stride-1 block. Decoder: trilinear x2
    upsampling (align_corners) -> 3x3x3 block to the lower width -> concatenate the skip -> two blocks (one at
    full resolution). Spatial sizes must be divisible by ``2 ** (len(widths) - 1)``.

    Args:
        in_channels: input channels.
        widths: channels per level, e.g. (16, 32, 64, 128, 256).

    Shapes: (B, in_channels, X, Y, Z) -> features (B, widths[0], X, Y, Z).
    """

    def __init__(self, in_channels: int, widths: Sequence[int]) -> None:
        super().__init__()
        widths = list(widths)
        if len(widths) < 2:
            raise ValueError(f"a U-Net needs at least two levels, got widths {widths}")
        self.widths = widths
        self.divisor = 2 ** (len(widths) - 1)
        self.encoder = nn.ModuleList([nn.Sequential(_block(in_channels, widths[0]), _block(widths[0], widths[0]))])
        for lower, upper in zip(widths[:-1], widths[1:]):
            self.encoder.append(nn.Sequential(_block(lower, upper, stride=2), _block(upper, upper)))
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in range(len(widths) - 2, -1, -1):
            self.up.append(nn.Sequential(
                UpSample(3, scale_factor=2, mode="nontrainable", interp_mode="trilinear", align_corners=True),
                _block(widths[level + 1], widths[level]),
            ))
            blocks = [_block(2 * widths[level], widths[level])]
            if level > 0:
                blocks.append(_block(widths[level], widths[level]))
            self.decoder.append(nn.Sequential(*blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips[-1]
        for i, (up, decode) in enumerate(zip(self.up, self.decoder)):
            x = decode(torch.cat([up(x), skips[-2 - i]], dim=1))
        return x


class CascadeUNet(nn.Module):
    """Two-stage cascade: stage A (GD-Net) and stage B (RD-Net), each ending in a 1x1x1 dose head.

    Stage B's input is the original input concatenated with stage A's last feature map (``widths_a[0]``
    channels), not with its dose.

    Args:
        in_channels: input channels (CT, merged PTV, OARs, body, dose masks...).
        widths_a: stage A widths (paper: 16, 32, 64, 128, 256).
        widths_b: stage B widths (paper: 32, 64, 128, 256, 512).
        out_channels: dose channels (1).
        ptv_channel: None (the paper): the input as it is. An index: the merged PTV channel, which the network
            sees divided by the case's top prescription level, its dose multiplied back by that level (see
            ``prescription_relative``).

    Forward: (B, in_channels, X, Y, Z) relative dose inputs ->
        * in eval mode: stage B's dose, (B, out_channels, X, Y, Z) (what inference and export use);
        * in training mode: stage B's and stage A's dose stacked on the channel axis,
          (B, 2 * out_channels, X, Y, Z), for the cascade loss.
    """

    def __init__(self, in_channels: int, widths_a: Sequence[int] = (16, 32, 64, 128, 256),
                 widths_b: Sequence[int] = (32, 64, 128, 256, 512), out_channels: int = 1,
                 ptv_channel: int | None = None) -> None:
        super().__init__()
        if ptv_channel is not None and not 0 <= ptv_channel < in_channels:
            raise ValueError(f"ptv_channel {ptv_channel} is not one of the {in_channels} input channels")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.ptv_channel = ptv_channel
        if ptv_channel is not None:  # recorded in the checkpoint: a paper network refuses it, and the other way round
            self.register_buffer("relative_ptv_channel", torch.tensor(ptv_channel))
        self.stage_a = DoseUNet(in_channels, widths_a)
        self.head_a = nn.Conv3d(widths_a[0], out_channels, kernel_size=1)
        self.stage_b = DoseUNet(in_channels + widths_a[0], widths_b)
        self.head_b = nn.Conv3d(widths_b[0], out_channels, kernel_size=1)
        self.divisor = max(self.stage_a.divisor, self.stage_b.divisor)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming initialisation of every convolution (ReLU gain), zero biases, unit norm scales."""
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.InstanceNorm3d) and module.affine:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got {x.shape[1]}")
        for size in x.shape[2:]:
            if size % self.divisor != 0:
                raise ValueError(f"spatial size {list(x.shape[2:])} must be divisible by {self.divisor}")
        ptv_channel = self.ptv_channel
        if ptv_channel is None:
            return self._cascade(x)
        x, top = relative_to_top_prescription(x, ptv_channel)
        return self._cascade(x) * top

    def _cascade(self, x: torch.Tensor) -> torch.Tensor:
        features_a = self.stage_a(x)
        dose_b = self.head_b(self.stage_b(torch.cat([x, features_a], dim=1)))
        if self.training:
            return torch.cat([dose_b, self.head_a(features_a)], dim=1)
        return dose_b
