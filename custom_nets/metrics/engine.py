"""OpenKBP scores as MONAI cumulative metrics, for Ignite engines (``IgniteMetricHandler``).

Channel layout of ``y`` (what the configs' ``label`` holds): [dose, possible-dose mask, OARs (profile order),
targets (profile order)], doses relative to the reference dose. ``y_pred`` is (B, 1, X, Y, Z), relative.
Scores are reported in Gy. The voxel volume comes from ``y``'s affine (a MetaTensor) unless given.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric

from custom_nets.metrics.openkbp import openkbp_dvh_metrics
from custom_nets.profiles import DatasetProfile, get_profile

__all__ = ["DoseScoreMetric", "DVHScoreMetric", "voxel_volume_mm3"]


def voxel_volume_mm3(tensor: torch.Tensor) -> float:
    """Voxel volume (mm^3) from a MetaTensor's affine."""
    affine = getattr(tensor, "affine", None)
    if affine is None:
        raise ValueError("the label carries no affine: pass voxel_volume_mm3 explicitly")
    affine = torch.as_tensor(affine, dtype=torch.float64)
    if affine.ndim == 3:
        affine = affine[0]
    return float(abs(torch.linalg.det(affine[:3, :3])))


class DoseScoreMetric(CumulativeIterationMetric):
    """OpenKBP dose error per case (Gy): mean |reference - prediction| over the possible-dose voxels, with the
    prediction made physical as the final evaluation makes it (negatives clamped to 0, zero outside the mask);
    aggregated as the mean over cases (the dose score)."""

    def __init__(self, reference_dose_gy: float) -> None:
        super().__init__()
        self.reference_dose_gy = float(reference_dose_gy)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        dose, mask = y[:, 0:1].float(), y[:, 1:2].float()
        predicted = y_pred[:, 0:1].float().clamp_min(0.0)
        error = (torch.abs(predicted * mask - dose * mask)).flatten(1).sum(1) / mask.flatten(1).sum(1)
        return (error * self.reference_dose_gy).unsqueeze(1)

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        return torch.nanmean(self.get_buffer().float())


class DVHScoreMetric(CumulativeIterationMetric):
    """OpenKBP DVH errors per case: |reference - predicted| of every DVH metric (NaN for absent ROIs);
    aggregated as the NaN-mean pooled over cases and metrics (the DVH score)."""

    def __init__(self, reference_dose_gy: float, profile: str | DatasetProfile = "openkbp",
                 voxel_volume_mm3: float | None = None) -> None:
        super().__init__()
        self.reference_dose_gy = float(reference_dose_gy)
        self.profile = get_profile(profile)
        self.voxel_volume = voxel_volume_mm3

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        prof = self.profile
        n_oar = len(prof.oars)
        volume = self.voxel_volume or voxel_volume_mm3(y)
        rows = []
        for pred_case, label_case in zip(y_pred, y):
            label = label_case.detach().cpu().numpy()
            mask = label[1] > 0.5
            reference = label[0] * self.reference_dose_gy
            predicted = pred_case[0].detach().cpu().float().clamp_min(0.0).numpy() * self.reference_dose_gy * mask
            structures = {name: label[2 + i] > 0.5 for i, name in enumerate(prof.oars)}
            structures.update({name: label[2 + n_oar + i] > 0.5 for i, name in enumerate(prof.target_names)})
            structures = {k: v for k, v in structures.items() if v.any()}
            ref = openkbp_dvh_metrics(reference, structures, volume, prof)
            pred = openkbp_dvh_metrics(predicted, structures, volume, prof)
            rows.append([abs(ref[k] - pred[k]) for k in ref])
        return torch.as_tensor(np.asarray(rows, dtype=np.float32))

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        return torch.nanmean(self.get_buffer().float())
