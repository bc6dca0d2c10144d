"""Our OpenKBP scorer against the official scorer's figures for a fixed prediction (mini/scorer-check)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import require_shared
from custom_nets.io.openkbp import read_openkbp_patient, read_sparse_dose_csv
from custom_nets.metrics import dose_error, dose_score, dvh_score, openkbp_dvh_metrics
from dosepred.openkbp import score

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


@pytest.fixture(scope="module")
def mini_reference(tmp_path_factory):
    """The six mini patients in one folder, the official layout of a reference split."""
    folder = tmp_path_factory.mktemp("reference")
    for patient in PATIENTS:
        split = "validation-pats" if int(patient[3:]) > 200 else "train-pats"
        (folder / patient).symlink_to(require_shared(f"data/openkbp/mini/{split}/{patient}"))
    return folder


@pytest.mark.parametrize("workers", [1, 2])
def test_score_command_reproduces_every_official_figure(official, mini_reference, tmp_path, workers):
    check = require_shared("data/openkbp/mini/scorer-check")
    out = tmp_path / "scores.json"
    printed = json.loads(score(str(check / "predictions"), str(mini_reference), out=str(out), workers=workers))
    figures = json.loads(out.read_text())
    assert _same(printed["dose_score"], official["dose_score"]) and _same(figures["dvh_score"], official["dvh_score"])
    for patient in PATIENTS:
        assert _same(printed["dose_error_per_patient"][patient], official["dose_error_per_patient"][patient])
        for kind in ("reference_dvh_metrics", "predicted_dvh_metrics"):
            ours_metrics = figures["patients"][patient][kind]
            assert set(ours_metrics) == set(official[kind][patient])
            for key, value in official[kind][patient].items():
                assert (ours_metrics[key] is None and value is None) or abs(ours_metrics[key] - value) <= 1e-6
    assert printed["ignored_predictions"] == []


def test_score_command_refuses_a_missing_or_damaged_prediction(mini_reference, tmp_path):
    check = require_shared("data/openkbp/mini/scorer-check")
    submission = tmp_path / "submission"
    submission.mkdir()
    for patient in PATIENTS[:-1]:
        (submission / f"{patient}.csv").symlink_to(check / "predictions" / f"{patient}.csv")
    with pytest.raises(FileNotFoundError, match=f"no prediction for 1 of the 6 reference patients: {PATIENTS[-1]}.csv"):
        score(str(submission), str(mini_reference))
    text = (check / "predictions" / f"{PATIENTS[-1]}.csv").read_bytes()
    (submission / f"{PATIENTS[-1]}.csv").write_bytes(text[: len(text) // 2])
    with pytest.raises(ValueError, match=f"{PATIENTS[-1]}.csv: the last row has no newline"):
        score(str(submission), str(mini_reference), workers=1)


def test_score_command_refuses_a_bad_number_of_workers(mini_reference, tmp_path):
    check = require_shared("data/openkbp/mini/scorer-check")
    for workers in (0, "two"):
        with pytest.raises(ValueError, match="--workers must be a positive number of processes"):
            score(str(check / "predictions"), str(mini_reference), workers=workers)
