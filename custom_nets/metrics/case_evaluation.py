"""Every dosimetric comparison of one predicted dose with the planned dose of its case.

Gathers the metric modules (DVH points, conformity, homogeneity, voxel MAE, isodose Dice, gamma, the OpenKBP
dose error) for one case, for every structure of the profile: absent structures give NaN rows, so that
tables over cases keep one row per (structure, metric) and count what was missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from custom_nets.io.canonical import DoseCase
from custom_nets.metrics.dvh import cumulative_dvh, oar_metrics, structure_mae, target_metrics
from custom_nets.metrics.gamma import gamma_index, gamma_pass_rate
from custom_nets.metrics.isodose import isodose_dice, isodose_levels_gy
from custom_nets.metrics.openkbp import dose_error
from custom_nets.profiles import get_profile

__all__ = ["DEFAULT_GAMMA", "POSSIBLE_DOSE_REGION", "CaseEvaluation", "evaluate_case"]

DEFAULT_GAMMA: dict = {"dose_percent": 3.0, "distance_mm": 2.0, "low_dose_cutoff_percent": 10.0, "local": False}
POSSIBLE_DOSE_REGION = "PossibleDose"  # name of the possible-dose (body) region in the MAE table
DVH_BIN_GY = 0.1


@dataclass
class CaseEvaluation:
    """Results for one case.

    Attributes:
        case_id: the patient.
        dvh_rows: one dict per (structure, metric): structure, role ("target" or "oar"), prescription_gy
            (targets; NaN for OARs), metric, unit, reference, predicted.
        structure_mae_gy: voxel-wise mean |predicted - reference| (Gy) per structure and over the possible-dose
            region (:data:`POSSIBLE_DOSE_REGION`); NaN for absent structures.
        dose_error_gy: OpenKBP dose error (mean |error| over the possible-dose voxels).
        isodose_levels_gy, isodose_dice: Dice of the isodose volumes at each level (within the possible-dose
            region).
        gamma_pass_rate_percent: share of evaluated voxels with gamma <= 1.
        dvh_curves: structure -> (dose levels Gy, reference % volume, predicted % volume) for present ones.
    """

    case_id: str
    dvh_rows: list[dict] = field(default_factory=list)
    structure_mae_gy: dict[str, float] = field(default_factory=dict)
    dose_error_gy: float = np.nan
    isodose_levels_gy: np.ndarray = field(default_factory=lambda: np.empty(0))
    isodose_dice: np.ndarray = field(default_factory=lambda: np.empty(0))
    gamma_pass_rate_percent: float = np.nan
    dvh_curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)


def _unit(metric: str) -> str:
    return "%" if metric.startswith("V") else "" if metric in ("CI", "HI") else "Gy"


def evaluate_case(case: DoseCase, predicted_gy: np.ndarray, prescriptions_gy: Mapping[str, float] | None = None,
                  reference_dose_gy: float | None = None, gamma: Mapping | None = None,
                  isodose_step_gy: float = 0.5) -> CaseEvaluation:
    """Compare ``predicted_gy`` (X, Y, Z, Gy, on the case's grid) with the case's planned dose.

    Args:
        case: a canonical case with its planned dose.
        predicted_gy: the prediction; it is zeroed outside the possible-dose mask, as the OpenKBP scorer does.
        prescriptions_gy: prescription per target (from the datalist entry); default the case's own.
        reference_dose_gy: top of the isodose Dice levels; default the profile's reference dose.
        gamma: gamma criteria overriding :data:`DEFAULT_GAMMA` (see :func:`gamma_index`).
        isodose_step_gy: spacing of the isodose Dice levels.
    """
    if case.dose_gy is None:
        raise ValueError(f"case {case.case_id}: no planned dose to compare with")
    if tuple(predicted_gy.shape) != case.shape:
        raise ValueError(f"case {case.case_id}: predicted dose shape {tuple(predicted_gy.shape)} differs from the "
                         f"case's {case.shape}")
    profile = get_profile(case.profile)
    prescriptions = dict(case.prescriptions_gy if prescriptions_gy is None else prescriptions_gy)
    region = case.possible_dose_mask.astype(bool)
    reference = np.asarray(case.dose_gy, dtype=np.float64)
    predicted = np.asarray(predicted_gy, dtype=np.float64) * region
    voxel_mm3 = float(np.prod(case.spacing_mm))
    result = CaseEvaluation(case.case_id)

    for role, names in (("target", profile.target_names), ("oar", profile.oars)):
        for name in names:
            mask = case.structures.get(name)
            rx = float(prescriptions.get(name, np.nan)) if role == "target" else np.nan
            if role == "target":
                ref, pred = (target_metrics(d, mask, rx, voxel_mm3) for d in (reference, predicted))
            else:
                ref, pred = (oar_metrics(d, mask, voxel_mm3) for d in (reference, predicted))
            result.dvh_rows += [{"structure": name, "role": role, "prescription_gy": rx, "metric": metric,
                                 "unit": _unit(metric), "reference": ref[metric], "predicted": pred[metric]}
                                for metric in ref]
            if mask is not None and mask.any():
                top = max(float(reference[mask].max()), float(predicted[mask].max()))
                levels, ref_curve = cumulative_dvh(reference[mask], DVH_BIN_GY, top)
                _, pred_curve = cumulative_dvh(predicted[mask], DVH_BIN_GY, top)
                result.dvh_curves[name] = (levels, ref_curve, pred_curve)

    mae = structure_mae(reference, predicted, {POSSIBLE_DOSE_REGION: region, **case.structures})
    result.structure_mae_gy = {name: mae.get(name, np.nan) for name in (POSSIBLE_DOSE_REGION, *profile.structures)}
    result.dose_error_gy = dose_error(reference, predicted, region)
    top = profile.reference_dose_gy if reference_dose_gy is None else reference_dose_gy
    result.isodose_levels_gy = isodose_levels_gy(top, isodose_step_gy)
    result.isodose_dice = isodose_dice(reference, predicted, result.isodose_levels_gy, region)
    criteria = {**DEFAULT_GAMMA, **dict(gamma or {})}
    result.gamma_pass_rate_percent = gamma_pass_rate(gamma_index(reference, predicted, case.spacing_mm, **criteria))
    return result
