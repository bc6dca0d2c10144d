"""Dose relative to the case's top prescription, for a network trained on mixed prescription schemes.

The merged PTV channel holds prescription / reference dose. Instance normalisation after the first convolution
removes most of its absolute level (a lone target's normalised channel is the same whatever its prescription), so
a network must infer a case's dose level indirectly and, briefly trained on mixed schemes, got it wrong by up to 20%.
Dividing the channel by its maximum (the top target's level) and multiplying the network's dose by that maximum
gives the level exactly: the network only learns the dose relative to the top prescription. For a dataset whose top
prescription is the reference dose (OpenKBP: PTV70, 70 Gy) both factors are 1.

The level is read from the input the network sees: where region pooling shrinks the grid (the CPU profiles), a top
target too small to fill one pooled cell reads lower than its prescription (and so does its predicted dose).
"""

from __future__ import annotations

import torch

__all__ = ["relative_to_top_prescription"]


def relative_to_top_prescription(x: torch.Tensor, ptv_channel: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the top prescription off a network input.

    Args:
        x: (B, C, X, Y, Z) network input whose channel ``ptv_channel`` is the merged PTV (prescription / reference).
        ptv_channel: index of the merged PTV channel.

    Returns:
        ``x`` with that channel divided by its per-case maximum, and the maximum, (B, 1, 1, 1, 1) (1 for a case
        without targets), by which the network's dose (relative to the reference dose) is multiplied.
    """
    top = x[:, ptv_channel:ptv_channel + 1].amax(dim=(2, 3, 4), keepdim=True)
    top = torch.where(top > 0, top, torch.ones_like(top))
    ptv = x[:, ptv_channel:ptv_channel + 1] / top
    return torch.cat([x[:, :ptv_channel], ptv, x[:, ptv_channel + 1:]], dim=1), top
