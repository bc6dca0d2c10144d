"""RANDose (Region-aware Attention Net, MICCAI 2025): a 3D U-Net with MSCSA stages, PTV integration and
attention fusion, each switchable so that the paper's Table 2a ablation rows are configurations.

Input channels follow the project's layout (:meth:`DatasetProfile.input_channel_names`): channel 0 the CT,
channel 1 the merged PTV (prescription / reference dose), the rest the OAR masks (and any further structure
channels); each group has its own input convolution, as the paper's F_C, F_P and F_O.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import UpSample
from torch import nn

from custom_nets.networks.initialisation import kaiming_normal_
from custom_nets.networks.randose_blocks import (
    AttentionFusion,
    ChannelSpatialAttention,
    MultiScaleFeatureExtraction,
    PTVIntegration,
    conv_block,
)

__all__ = ["RANDose"]


class _EncoderStage(nn.Module):
    """[stride-2 conv block] -> [PI] -> MSFE (or a 3^3 conv block) -> 3^3 conv block -> [CSA]."""

    __constants__ = ["use_pi"]  # TorchScript compiles only the branch in use

    def __init__(self, in_channels: int, out_channels: int, ptv_channels: int, kernels: Sequence[int],
                 use_msfe: bool, use_csa: bool, use_pi: bool, downsample: bool) -> None:
        super().__init__()
        self.use_pi = use_pi
        self.down = conv_block(in_channels, out_channels, stride=2) if downsample else nn.Identity()
        channels = out_channels if downsample else in_channels
        self.pi = PTVIntegration(channels, ptv_channels, kernels) if use_pi else nn.Identity()
        first = MultiScaleFeatureExtraction(channels, out_channels, kernels) if use_msfe else conv_block(
            channels, out_channels)
        self.blocks = nn.Sequential(first, conv_block(out_channels, out_channels))
        self.attention = ChannelSpatialAttention(out_channels) if use_csa else nn.Identity()

    def forward(self, x: torch.Tensor, ptv_features: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        if self.use_pi:
            x = self.pi(x, ptv_features)
        return self.attention(self.blocks(x))


class _DecoderStage(nn.Module):
    """Upsample x2 (trilinear) + 3^3 conv block to the skip's width, fuse with the skip (AF, or concatenation),
    two 3^3 conv blocks."""

    __constants__ = ["use_af"]

    def __init__(self, lower_channels: int, channels: int, use_af: bool) -> None:
        super().__init__()
        self.use_af = use_af
        self.up = nn.Sequential(
            UpSample(3, scale_factor=2, mode="nontrainable", interp_mode="trilinear", align_corners=True),
            conv_block(lower_channels, channels))
        self.fusion = AttentionFusion(channels) if use_af else nn.Identity()
        self.blocks = nn.Sequential(conv_block(channels if use_af else 2 * channels, channels),
                                    conv_block(channels, channels))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.up(x)
        if self.use_af:
            fused = self.fusion(skip, up)
        else:
            fused = torch.cat([skip, up], dim=1)
        return self.blocks(fused)


class RANDose(nn.Module):
    """RANDose dose prediction network.

    Args:
        in_channels: input channels: CT, merged PTV, then OAR channels (at least 3).
        widths: channels per stage, S = len(widths) stages (the paper: S = 5).
        stem_channels: channels of each input convolution (CT, PTV, OAR); the first stage sees 3x as many.
        kernels: kernel sizes of MSFE and PI (the paper: 3, 5, 7).
        use_msfe, use_csa, use_pi, use_af: the modules of Table 2a; all False is the plain U-Net baseline.

    Shapes: (B, in_channels, X, Y, Z) -> dose relative to the reference dose (B, 1, X, Y, Z); X, Y, Z must
    be divisible by ``2 ** (S - 1)``.
    """

    def __init__(self, in_channels: int, widths: Sequence[int] = (16, 32, 64, 128, 256), stem_channels: int = 8,
                 kernels: Sequence[int] = (3, 5, 7), use_msfe: bool = True, use_csa: bool = True,
                 use_pi: bool = True, use_af: bool = True) -> None:
        super().__init__()
        widths = list(widths)
        if in_channels < 3:
            raise ValueError(f"RANDose needs CT, PTV and OAR channels, got in_channels={in_channels}")
        if len(widths) < 2:
            raise ValueError(f"RANDose needs at least two stages, got widths {widths}")
        self.divisor = 2 ** (len(widths) - 1)
        self.ct_stem = conv_block(1, stem_channels)
        self.ptv_stem = conv_block(1, stem_channels)
        self.oar_stem = conv_block(in_channels - 2, stem_channels)
        self.encoder = nn.ModuleList([_EncoderStage(3 * stem_channels, widths[0], stem_channels, kernels, use_msfe,
                                                    use_csa, use_pi=False, downsample=False)])
        for lower, upper in zip(widths[:-1], widths[1:]):
            self.encoder.append(_EncoderStage(lower, upper, stem_channels, kernels, use_msfe, use_csa, use_pi,
                                              downsample=True))
        self.decoder = nn.ModuleList([_DecoderStage(widths[s + 1], widths[s], use_af)
                                      for s in range(len(widths) - 2, -1, -1)])
        self.head = nn.Conv3d(widths[0], 1, kernel_size=1)
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                kaiming_normal_(module.weight, a=0.01, nonlinearity="leaky_relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ptv_features = self.ptv_stem(x[:, 1:2])
        features = torch.cat([self.ct_stem(x[:, 0:1]), ptv_features, self.oar_stem(x[:, 2:])], dim=1)
        skips: list[torch.Tensor] = []
        for stage in self.encoder:
            features = stage(features, ptv_features)
            skips.append(features)
        for index, stage in enumerate(self.decoder):
            features = stage(features, skips[-2 - index])
        return self.head(features)
