"""The cascade loss: 0.5 x L1(stage A) + 1.0 x L1(stage B) over the voxels that can receive dose."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CascadeDoseLoss", "masked_l1"]


def masked_l1(pred: torch.Tensor, dose: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the voxels where ``mask`` is set, pooled over the batch.

    All tensors (B, 1, X, Y, Z); returns a scalar in the dose's units.
    """
    return (torch.abs(pred - dose) * mask).sum() / mask.sum().clamp_min(1.0)


class CascadeDoseLoss(nn.Module):
    """Weighted masked L1 of the cascade's two stages.

    Args:
        weight_a: weight of stage A's (GD-Net's) error (paper: 0.5).
        weight_b: weight of stage B's (RD-Net's) error (paper: 1.0).

    Forward:
        pred: (B, 2, X, Y, Z) = [stage B dose, stage A dose] (the cascade in training mode), or (B, 1, ...)
            (stage B only: the stage-A term is then left out).
        label: (B, >=2, X, Y, Z) = [dose, possible-dose mask, ...] in relative dose units.
    """

    def __init__(self, weight_a: float = 0.5, weight_b: float = 1.0) -> None:
        super().__init__()
        self.weight_a, self.weight_b = float(weight_a), float(weight_b)

    def forward(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        dose, mask = label[:, 0:1], label[:, 1:2]
        loss = self.weight_b * masked_l1(pred[:, 0:1], dose, mask)
        if pred.shape[1] > 1:
            loss = loss + self.weight_a * masked_l1(pred[:, 1:2], dose, mask)
        return loss
