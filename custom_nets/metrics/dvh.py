"""Dose-volume metrics of the cascade paper (Tables 4-7), vectorised over a structure's voxels.

Conventions (ICRU 83): ``D_x%`` is the minimum dose to the hottest x% of the structure, i.e. the
``100 - x`` percentile of its voxel doses (numpy's linear interpolation, as OpenKBP); ``V_xGy`` is the
percentage of the structure receiving at least x Gy; ``Dmax`` is the point maximum (a voxel), reported
beside the near-maximum ``D_0.1cc`` (OpenKBP's voxel-count rule) and ``D2%``. An absent or empty structure
gives NaN for every metric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "d_0_1_cc",
    "dose_at_volume_percent",
    "volume_percent_at_dose",
    "paddick_conformity_index",
    "homogeneity_index",
    "cumulative_dvh",
    "target_metrics",
    "oar_metrics",
    "structure_mae",
]

TARGET_VOLUME_PERCENTS = (2.0, 95.0, 98.0, 99.0)
OAR_DOSE_LEVELS_GY = (5.0, 20.0, 30.0, 40.0)


def dose_at_volume_percent(roi_dose: np.ndarray, percent: float) -> float:
    """``D_percent%`` (Gy): the dose that the hottest ``percent`` % of the voxels receive at least."""
    return float(np.percentile(roi_dose, 100.0 - percent)) if roi_dose.size else np.nan


def d_0_1_cc(roi_dose: np.ndarray, voxel_volume_mm3: float) -> float:
    """Near-maximum dose to the hottest 0.1 cc, OpenKBP's voxel-count rule: the percentile ``100 - 100 n / N``
    with ``n = max(1, round(100 mm^3 / voxel volume))``."""
    voxels = max(1.0, float(np.round(100.0 / voxel_volume_mm3)))
    return float(np.percentile(roi_dose, 100.0 - voxels / roi_dose.size * 100.0))


def volume_percent_at_dose(roi_dose: np.ndarray, dose_gy: float) -> float:
    """``V_doseGy`` (%): the share of the voxels receiving at least ``dose_gy``."""
    return float(100.0 * np.count_nonzero(roi_dose >= dose_gy) / roi_dose.size) if roi_dose.size else np.nan


def paddick_conformity_index(dose_gy: np.ndarray, target: np.ndarray, prescription_gy: float) -> float:
    """Paddick's CI = TV_PIV^2 / (TV x PIV): TV target voxels, PIV voxels anywhere >= Rx, TV_PIV both."""
    target = target.astype(bool)
    covered = dose_gy >= prescription_gy
    tv, piv = np.count_nonzero(target), np.count_nonzero(covered)
    if tv == 0 or piv == 0:
        return np.nan if tv == 0 else 0.0
    return float(np.count_nonzero(covered & target) ** 2 / (tv * piv))


def homogeneity_index(roi_dose: np.ndarray, prescription_gy: float) -> float:
    """HI = (D2% - D98%) / prescription (0 is perfectly homogeneous)."""
    return (dose_at_volume_percent(roi_dose, 2.0) - dose_at_volume_percent(roi_dose, 98.0)) / prescription_gy


def cumulative_dvh(roi_dose: np.ndarray, bin_width_gy: float = 0.1, max_dose_gy: float | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative DVH: dose levels 0, w, 2w, ... and the % of the structure receiving at least each level."""
    top = float(roi_dose.max()) if max_dose_gy is None and roi_dose.size else float(max_dose_gy or 0.0)
    levels = np.arange(0.0, top + bin_width_gy, bin_width_gy)
    if not roi_dose.size:
        return levels, np.full(levels.shape, np.nan)
    ordered = np.sort(roi_dose)
    at_least = ordered.size - np.searchsorted(ordered, levels, side="left")
    return levels, 100.0 * at_least / ordered.size


def target_metrics(dose_gy: np.ndarray, target: np.ndarray | None, prescription_gy: float,
                   voxel_volume_mm3: float) -> dict[str, float]:
    """D2%, D95%, D98%, D99%, Dmean, Dmax (point), D0.1cc, CI (Paddick) and HI of one target."""
    roi_dose = dose_gy[target.astype(bool)] if target is not None else np.empty(0)
    out = {f"D{p:g}%": dose_at_volume_percent(roi_dose, p) for p in TARGET_VOLUME_PERCENTS}
    out["Dmean"] = float(roi_dose.mean()) if roi_dose.size else np.nan
    out["Dmax"] = float(roi_dose.max()) if roi_dose.size else np.nan
    out["D0.1cc"] = d_0_1_cc(roi_dose, voxel_volume_mm3) if roi_dose.size else np.nan
    out["CI"] = paddick_conformity_index(dose_gy, target, prescription_gy) if roi_dose.size else np.nan
    out["HI"] = homogeneity_index(roi_dose, prescription_gy) if roi_dose.size else np.nan
    return out


def oar_metrics(dose_gy: np.ndarray, oar: np.ndarray | None, voxel_volume_mm3: float,
                dose_levels_gy: Sequence[float] = OAR_DOSE_LEVELS_GY) -> dict[str, float]:
    """V5Gy, V20Gy, V30Gy, V40Gy (%), Dmean, Dmax (point) and D0.1cc of one organ at risk."""
    roi_dose = dose_gy[oar.astype(bool)] if oar is not None else np.empty(0)
    out = {f"V{level:g}Gy": volume_percent_at_dose(roi_dose, level) for level in dose_levels_gy}
    out["Dmean"] = float(roi_dose.mean()) if roi_dose.size else np.nan
    out["Dmax"] = float(roi_dose.max()) if roi_dose.size else np.nan
    out["D0.1cc"] = d_0_1_cc(roi_dose, voxel_volume_mm3) if roi_dose.size else np.nan
    return out


def structure_mae(reference_gy: np.ndarray, predicted_gy: np.ndarray,
                  structures: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Voxel-wise mean absolute dose error (Gy) inside each structure (NaN for an empty one)."""
    error = np.abs(reference_gy - predicted_gy)
    return {name: float(error[mask.astype(bool)].mean()) if mask.any() else np.nan
            for name, mask in structures.items()}
