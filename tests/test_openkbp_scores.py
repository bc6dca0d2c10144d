"""Our OpenKBP scorer against the official scorer's figures for a fixed prediction (mini/scorer-check)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import require_shared
from custom_nets.io.openkbp import read_openkbp_patient, read_sparse_dose_csv
from custom_nets.metrics import dose_error, dose_score, dvh_score, openkbp_dvh_metrics

PATIENTS = ["pt_1", "pt_2", "pt_3", "pt_4", "pt_201", "pt_202"]


@pytest.fixture(scope="module")
def official():
    return json.loads((require_shared("data/openkbp/mini/scorer-check") / "official_scores.json").read_text())


@pytest.fixture(scope="module")
def ours():
    check = require_shared("data/openkbp/mini/scorer-check")
    errors, reference, predicted = {}, {}, {}
    for patient in PATIENTS:
        split = "validation-pats" if int(patient[3:]) > 200 else "train-pats"
        case = read_openkbp_patient(require_shared(f"data/openkbp/mini/{split}/{patient}"))
        prediction = read_sparse_dose_csv(check / "predictions" / f"{patient}.csv")
        voxel_mm3 = float(np.prod(case.spacing_mm))
        errors[patient] = dose_error(case.dose_gy.astype(np.float64), prediction, case.possible_dose_mask)
        reference[patient] = openkbp_dvh_metrics(case.dose_gy.astype(np.float64), case.structures, voxel_mm3)
        predicted[patient] = openkbp_dvh_metrics(prediction, case.structures, voxel_mm3)
    return errors, reference, predicted


def _same(ours_value: float, official_value: float | None) -> bool:
    if official_value is None:
        return bool(np.isnan(ours_value))
    return abs(ours_value - official_value) <= 1e-6


def test_dose_errors_and_dose_score_match_the_official_scorer(official, ours):
    errors, _, _ = ours
    for patient in PATIENTS:
        assert _same(errors[patient], official["dose_error_per_patient"][patient]), patient
    assert _same(dose_score(list(errors.values())), official["dose_score"])


def test_every_dvh_metric_and_the_dvh_score_match(official, ours):
    _, reference, predicted = ours
    for patient in PATIENTS:
        for key, value in official["reference_dvh_metrics"][patient].items():
            assert _same(reference[patient][key], value), (patient, key, reference[patient][key], value)
        for key, value in official["predicted_dvh_metrics"][patient].items():
            assert _same(predicted[patient][key], value), (patient, key, predicted[patient][key], value)
        assert set(reference[patient]) == set(official["reference_dvh_metrics"][patient])
    score = dvh_score([reference[p] for p in PATIENTS], [predicted[p] for p in PATIENTS])
    assert _same(score, official["dvh_score"])
