"""RANDose's region-aware loss: L1 over the dose-receiving voxels plus weighted L1 over the PTVs and the OARs.

The paper's "learnable" weights multiply positive losses, which the optimizer simply drives to zero (see the
project's REFERENCE.md). Here a learnable weight is homoscedastic-uncertainty weighting (Kendall et al.,
CVPR 2018): a region term is ``exp(-s) * L_region + s`` with a free parameter ``s``; its optimum
``exp(-s) = 1 / L_region`` is positive and finite, so the weight ``w = exp(-s)`` stays meaningful and moves
as the region's error does. ``learnable=False`` keeps fixed weights ``w * L_region``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from custom_nets.losses.cascade_loss import masked_l1

__all__ = ["RegionAwareDoseLoss"]


class RegionAwareDoseLoss(nn.Module):
    """``L1(possible-dose voxels) + [w_PTV L1(PTV voxels)] + [w_OAR L1(OAR voxels)]``.

    Args:
        n_targets: number of target channels in the label (the profile's targets).
        use_ptv, use_oar: include the PTV / OAR term (Table 2b rows: L1; L1 + PTV; L1 + PTV + OAR).
        learnable: learn the region weights (uncertainty weighting) instead of keeping them fixed.
        ptv_weight, oar_weight: fixed weights, or the learnable weights' initial values (> 0).

    Forward:
        pred: (B, 1, X, Y, Z) predicted dose (relative units), or (B, C, ...) whose channel 0 is the dose.
        label: (B, 2 + n_targets + n_oars, X, Y, Z) = [dose, possible-dose mask, target masks, OAR masks].
    """

    def __init__(self, n_targets: int, use_ptv: bool = True, use_oar: bool = True, learnable: bool = True,
                 ptv_weight: float = 1.0, oar_weight: float = 1.0) -> None:
        super().__init__()
        if ptv_weight <= 0 or oar_weight <= 0:
            raise ValueError("region weights must be positive")
        self.n_targets = int(n_targets)
        self.use_ptv, self.use_oar, self.learnable = bool(use_ptv), bool(use_oar), bool(learnable)
        log_weights = torch.tensor([-math.log(ptv_weight), -math.log(oar_weight)])
        if learnable:
            self.log_inverse_weights = nn.Parameter(log_weights)  # s = -log(w)
        else:
            self.register_buffer("log_inverse_weights", log_weights)

    def weights(self) -> dict[str, float]:
        """Current weights of the terms in use, e.g. ``{"w_ptv": 1.3, "w_oar": 0.8}``."""
        values = torch.exp(-self.log_inverse_weights.detach()).tolist()
        names = [("w_ptv", self.use_ptv), ("w_oar", self.use_oar)]
        return {name: value for (name, used), value in zip(names, values) if used}

    def forward(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        pred, dose, possible = pred[:, 0:1], label[:, 0:1], label[:, 1:2]
        loss = masked_l1(pred, dose, possible)
        regions = []
        if self.use_ptv:
            regions.append((0, label[:, 2:2 + self.n_targets].amax(dim=1, keepdim=True)))
        if self.use_oar:
            regions.append((1, label[:, 2 + self.n_targets:].amax(dim=1, keepdim=True)))
        for index, region in regions:
            error = masked_l1(pred, dose, region)
            s = self.log_inverse_weights[index]
            loss = loss + (torch.exp(-s) * error + s if self.learnable else torch.exp(-s) * error)
        return loss
