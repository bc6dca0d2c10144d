"""OpenKBP's official scores (ababier/open-kbp, ``DoseEvaluator``), reproduced exactly.

* dose error of a patient: sum over all voxels of |reference - prediction| / number of possible-dose voxels
  (the prediction must be zero outside the possible-dose mask); dose score: NaN-mean over patients.
* DVH metrics per ROI present: OARs ``D_0.1_cc`` and ``mean``; targets ``D_99``, ``D_95``, ``D_1`` (numpy's
  linearly interpolated percentiles); ``D_0.1_cc`` is the percentile ``100 - 100 n / N`` with
  ``n = max(1, round(100 mm^3 / voxel volume))``. Absent ROIs give NaN.
* DVH score: NaN-mean of |reference metric - predicted metric| pooled over the patients x metrics table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from custom_nets.metrics.dvh import d_0_1_cc, dose_at_volume_percent
from custom_nets.profiles import DatasetProfile, get_profile

__all__ = ["dose_error", "openkbp_dvh_metrics", "dose_score", "dvh_score"]

OAR_METRICS = ("D_0.1_cc", "mean")
TARGET_METRICS = ("D_99", "D_95", "D_1")


def dose_error(reference_gy: np.ndarray, prediction_gy: np.ndarray, possible_dose_mask: np.ndarray) -> float:
    """OpenKBP dose error of one patient (Gy)."""
    return float(np.sum(np.abs(reference_gy - prediction_gy)) / np.sum(possible_dose_mask))


def openkbp_dvh_metrics(dose_gy: np.ndarray, structures: Mapping[str, np.ndarray], voxel_volume_mm3: float,
                        profile: str | DatasetProfile = "openkbp") -> dict[str, float]:
    """``{"metric|ROI": value}`` for every OAR and target of the profile (NaN where a ROI is absent or empty)."""
    prof = get_profile(profile)
    out: dict[str, float] = {}
    for roi in prof.oars:
        mask = structures.get(roi)
        roi_dose = dose_gy[mask.astype(bool, copy=False)] if mask is not None else np.empty(0)
        out[f"D_0.1_cc|{roi}"] = d_0_1_cc(roi_dose, voxel_volume_mm3) if roi_dose.size else np.nan
        out[f"mean|{roi}"] = float(roi_dose.mean()) if roi_dose.size else np.nan
    for roi in sorted(prof.targets, key=lambda t: prof.targets[t]):
        mask = structures.get(roi)
        roi_dose = dose_gy[mask.astype(bool, copy=False)] if mask is not None else np.empty(0)
        for metric, percent in zip(TARGET_METRICS, (99.0, 95.0, 1.0)):
            out[f"{metric}|{roi}"] = dose_at_volume_percent(roi_dose, percent)
    return out


def dose_score(dose_errors: Sequence[float]) -> float:
    """Mean of the patients' dose errors (NaN-mean, as the official scorer)."""
    return float(np.nanmean(np.asarray(dose_errors, dtype=float)))


def dvh_score(reference: Sequence[Mapping[str, float]], predicted: Sequence[Mapping[str, float]]) -> float:
    """NaN-mean of |reference - predicted| pooled over every patient's metrics."""
    differences = [abs(ref[key] - pred[key]) for ref, pred in zip(reference, predicted) for key in ref]
    return float(np.nanmean(np.asarray(differences, dtype=float)))
