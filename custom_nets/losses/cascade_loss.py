"""The cascade loss: 0.5 x L1(stage A) + 1.0 x L1(stage B) over the voxels that can receive dose (optionally plus
an L1 over the targets, as RANDose's region-aware loss has)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CascadeDoseLoss", "masked_l1", "per_case_masked_l1"]


def masked_l1(pred: torch.Tensor, dose: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the voxels where ``mask`` is set, pooled over the batch.

    All tensors (B, 1, X, Y, Z); returns a scalar in the dose's units.
    """
    return (torch.abs(pred - dose) * mask).sum() / mask.sum().clamp_min(1.0)


def per_case_masked_l1(pred: torch.Tensor, dose: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the cases that have ``mask`` voxels of each case's mean absolute error over them: a small target
    weighs as much as a large one of another case in the batch. All tensors (B, 1, X, Y, Z); returns a scalar."""
    count = mask.sum(dim=(1, 2, 3, 4))
    error = (torch.abs(pred - dose) * mask).sum(dim=(1, 2, 3, 4)) / count.clamp_min(1.0)
    present = (count > 0).to(error.dtype)
    return (error * present).sum() / present.sum().clamp_min(1.0)


class CascadeDoseLoss(nn.Module):
    """Weighted masked L1 of the cascade's two stages.

    Args:
        weight_a: weight of stage A's (GD-Net's) error (paper: 0.5).
        weight_b: weight of stage B's (RD-Net's) error (paper: 1.0).
        target_weight: each stage's error also adds this times its L1 over the target voxels, averaged per case
            (paper: 0, no such term): targets are a small share of the dose-receiving voxels, so a briefly trained
            cascade gets their dose, and so D95%, least right; pooled over the batch, a small target's voxels
            counted little beside a large one's, and small lone targets stayed coldest.

    Forward:
        pred: (B, 2, X, Y, Z) = [stage B dose, stage A dose] (the cascade in training mode), or (B, 1, ...)
            (stage B only: the stage-A term is then left out).
        label: (B, >=2, X, Y, Z) = [dose, possible-dose mask, ...] in relative dose units; with a
            ``target_weight``, channel 2 is the merged PTV channel (targets where it is above 0).
    """

    def __init__(self, weight_a: float = 0.5, weight_b: float = 1.0, target_weight: float = 0.0) -> None:
        super().__init__()
        if target_weight < 0:
            raise ValueError(f"target_weight must be 0 or more, got {target_weight}")
        self.weight_a, self.weight_b, self.target_weight = float(weight_a), float(weight_b), float(target_weight)

    def forward(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        dose, mask = label[:, 0:1], label[:, 1:2]
        targets = None
        if self.target_weight:
            if label.shape[1] < 3:
                raise ValueError("target_weight needs the merged PTV as the label's third channel (label_keys "
                                 f"[dose, possible_dose_mask, ptv_merged]); the label has {label.shape[1]} channels")
            targets = (label[:, 2:3] > 0).to(dose.dtype)
        loss = self.weight_b * self._stage_error(pred[:, 0:1], dose, mask, targets)
        if pred.shape[1] > 1:
            loss = loss + self.weight_a * self._stage_error(pred[:, 1:2], dose, mask, targets)
        return loss

    def _stage_error(self, pred: torch.Tensor, dose: torch.Tensor, mask: torch.Tensor,
                     targets: torch.Tensor | None) -> torch.Tensor:
        error = masked_l1(pred, dose, mask)
        if targets is not None:
            error = error + self.target_weight * per_case_masked_l1(pred, dose, targets)
        return error
