"""The cascade paper's DVH metrics on real OpenKBP patients, against plain computations written here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import require_shared
from custom_nets.io.openkbp import read_openkbp_patient, read_sparse_dose_csv
from custom_nets.metrics.dvh import cumulative_dvh, oar_metrics, structure_mae, target_metrics


@pytest.fixture(scope="module")
def patient():
    case = read_openkbp_patient(require_shared("data/openkbp/mini/train-pats/pt_1"))
    prediction = read_sparse_dose_csv(require_shared("data/openkbp/mini/scorer-check/predictions/pt_1.csv"))
    return case, prediction


def _percentile_by_sorting(values: np.ndarray, q: float) -> float:
    """Linear interpolation between the sorted values at rank (n - 1) q / 100."""
    ordered = sorted(values.tolist())
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def test_target_metrics_match_plain_computations(patient):
    case, dose = patient
    voxel_mm3 = float(np.prod(case.spacing_mm))
    target = case.structures["PTV70"]
    got = target_metrics(dose, target, 70.0, voxel_mm3)
    values = dose[target]
    for percent in (2, 95, 98, 99):
        assert got[f"D{percent}%"] == pytest.approx(_percentile_by_sorting(values, 100 - percent), abs=1e-9)
    assert got["Dmax"] == max(values.tolist())
    assert got["Dmean"] == pytest.approx(sum(values.tolist()) / len(values))
    n = max(1, round(100.0 / voxel_mm3))  # OpenKBP's 0.1 cc voxel count: 3 voxels of 38.1 mm^3
    assert n == 3
    assert got["D0.1cc"] == pytest.approx(_percentile_by_sorting(values, 100 - 100 * n / len(values)), abs=1e-9)
    inside = sum(1 for v in values.tolist() if v >= 70.0)
    everywhere = int((dose >= 70.0).sum())
    assert got["CI"] == pytest.approx(inside**2 / (len(values) * everywhere))
    assert got["HI"] == pytest.approx((got["D2%"] - got["D98%"]) / 70.0)


def test_oar_metrics_match_plain_counts(patient):
    case, dose = patient
    voxel_mm3 = float(np.prod(case.spacing_mm))
    parotid = case.structures["LeftParotid"]
    got = oar_metrics(dose, parotid, voxel_mm3)
    values = dose[parotid].tolist()
    for level in (5, 20, 30, 40):
        assert got[f"V{level}Gy"] == pytest.approx(100.0 * sum(v >= level for v in values) / len(values))
    assert got["Dmax"] == max(values)


def test_missing_structure_gives_nan_and_perfect_prediction_gives_zero_error(patient):
    case, _ = patient
    reference = case.dose_gy
    assert "Esophagus" not in case.structures
    missing = oar_metrics(reference, case.structures.get("Esophagus"), 38.0)
    assert all(math.isnan(v) for v in missing.values())
    assert all(math.isnan(v) for v in target_metrics(reference, None, 70.0, 38.0).values())
    mae = structure_mae(reference, reference.copy(), case.structures)
    assert set(mae.values()) == {0.0}


def test_cumulative_dvh_counts_voxels_at_or_above_each_level(patient):
    case, dose = patient
    values = dose[case.structures["Brainstem"]]
    levels, percent = cumulative_dvh(values, bin_width_gy=0.5)
    assert levels[0] == 0.0 and percent[0] == 100.0
    for level, share in list(zip(levels, percent))[::7]:
        assert share == pytest.approx(100.0 * np.count_nonzero(values >= level) / values.size)
    assert np.all(np.diff(percent) <= 0)
