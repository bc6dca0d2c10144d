"""RANDose building blocks: multi-scale feature extraction, channel-spatial attention, PTV integration and
attention fusion (RANDose, MICCAI 2025, Sec. 2.1-2.3). Every block maps (B, C, X, Y, Z) tensors."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import ChannelSELayer, Convolution
from torch import nn

__all__ = ["conv_block", "pool_to_stage", "MultiScaleFeatureExtraction", "SpatialAttention", "ChannelSpatialAttention",
           "PTVIntegration", "AttentionFusion"]


def conv_block(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> Convolution:
    """Conv3d (same padding) -> InstanceNorm3d(affine) -> LeakyReLU."""
    return Convolution(3, in_channels, out_channels, strides=stride, kernel_size=kernel_size,
                       padding=kernel_size // 2, act=("LEAKYRELU", {"negative_slope": 0.01}),
                       norm=("INSTANCE", {"affine": True}), adn_ordering="NA")


class MultiScaleFeatureExtraction(nn.Module):
    """MSFE: parallel Conv3d of kernel sizes ``kernels`` (same padding) summed, then InstanceNorm + LeakyReLU.

    Shapes: (B, in_channels, X, Y, Z) -> (B, out_channels, X, Y, Z).
    """

    def __init__(self, in_channels: int, out_channels: int, kernels: Sequence[int] = (3, 5, 7)) -> None:
        super().__init__()
        self.branches = nn.ModuleList([nn.Conv3d(in_channels, out_channels, k, padding=k // 2, bias=False)
                                       for k in kernels])
        self.norm = nn.InstanceNorm3d(out_channels, affine=True)
        self.act = nn.LeakyReLU(0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [branch(x) for branch in self.branches]
        return self.act(self.norm(torch.stack(outputs).sum(dim=0)))


class SpatialAttention(nn.Module):
    """x * sigmoid(conv1x1x1(x)): one weight per voxel, broadcast over channels. (B, C, ...) -> (B, C, ...)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(channels, 1, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv(x))


class ChannelSpatialAttention(nn.Module):
    """CSA: ``F_CA + alpha * F_SA`` with learnable ``alpha`` (initialised to 1).

    Channel attention is MONAI's squeeze-and-excitation layer (global average pool -> FC -> ReLU -> FC ->
    sigmoid -> scale); spatial attention is :class:`SpatialAttention`. (B, C, ...) -> (B, C, ...).
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.channel = ChannelSELayer(3, channels, r=min(reduction, channels))
        self.spatial = SpatialAttention(channels)
        self.alpha = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel(x) + self.alpha * self.spatial(x)


def pool_to_stage(features: torch.Tensor, size: list[int]) -> torch.Tensor:
    """(B, C, X, Y, Z) -> (B, C, *size) by adaptive max pooling: every input voxel reaches the coarse grid, so a
    target smaller than a coarse voxel still shows (trilinear interpolation samples between voxels and can miss it).
    """
    return F.adaptive_max_pool3d(features, size)


class PTVIntegration(nn.Module):
    """PI: fuse encoder features with the PTV features of the input stem at one encoder stage.

    The PTV features are max-pooled to the stage (a small target must not vanish, as it would under
    interpolation, which samples between voxels); each scale k of ``kernels`` applies a k^3 conv
    block to both inputs and a spatial attention to each; the scales' refined maps are summed and passed
    through a final spatial attention.

    Shapes: features (B, C, x, y, z), ptv_features (B, C_p, X, Y, Z) -> (B, C, x, y, z).
    """

    def __init__(self, channels: int, ptv_channels: int, kernels: Sequence[int] = (3, 5, 7)) -> None:
        super().__init__()
        self.encoder_convs = nn.ModuleList([conv_block(channels, channels, k) for k in kernels])
        self.ptv_convs = nn.ModuleList([conv_block(ptv_channels, channels, k) for k in kernels])
        self.encoder_attention = nn.ModuleList([SpatialAttention(channels) for _ in kernels])
        self.ptv_attention = nn.ModuleList([SpatialAttention(channels) for _ in kernels])
        self.final_attention = SpatialAttention(channels)

    def forward(self, features: torch.Tensor, ptv_features: torch.Tensor) -> torch.Tensor:
        ptv = pool_to_stage(ptv_features, features.shape[2:])
        total = torch.zeros_like(features)
        for conv_e, conv_p, att_e, att_p in zip(self.encoder_convs, self.ptv_convs, self.encoder_attention,
                                                self.ptv_attention):
            total = total + att_e(conv_e(features)) + att_p(conv_p(ptv))
        return self.final_attention(total)


class AttentionFusion(nn.Module):
    """AF: ``CSA(F_E) + beta * CSA(F_D)`` with learnable ``beta`` (initialised to 1), for a skip connection.

    Shapes: encoder (B, C, ...) and upsampled decoder features (B, C, ...) -> (B, C, ...).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.encoder_attention = ChannelSpatialAttention(channels)
        self.decoder_attention = ChannelSpatialAttention(channels)
        self.beta = nn.Parameter(torch.ones(1))

    def forward(self, encoder: torch.Tensor, decoder: torch.Tensor) -> torch.Tensor:
        return self.encoder_attention(encoder) + self.beta * self.decoder_attention(decoder)
