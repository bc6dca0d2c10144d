"""Gamma, isodose Dice, paired statistics and the per-case evaluation, on real OpenKBP patients, against plain
computations written here."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import ndimage, stats

from conftest import require_shared
from custom_nets.io.openkbp import read_openkbp_patient, read_sparse_dose_csv
from custom_nets.metrics import evaluate_case, gamma_index, gamma_pass_rate, isodose_dice, paired_test
from custom_nets.profiles import OPENKBP


@pytest.fixture(scope="module")
def patient():
    case = read_openkbp_patient(require_shared("data/openkbp/mini/train-pats/pt_1"))
    prediction = read_sparse_dose_csv(require_shared("data/openkbp/mini/scorer-check/predictions/pt_1.csv"))
    return case, prediction


def _plain_gamma(reference, evaluated, spacing, point, dose_percent, distance_mm, norm, local, step_fraction=10,
                 max_gamma=1.0):
    """Gamma of one reference voxel by trying every offset of the search grid (trilinear interpolation)."""
    step = distance_mm / step_fraction
    n = int(round(max_gamma * step_fraction))
    criterion = dose_percent / 100 * (reference[point] if local else norm)
    best = math.inf
    offsets = [o for o in itertools.product(range(-n, n + 1), repeat=3) if sum(c * c for c in o) <= n * n]
    at = np.array([[point[a] + o[a] * step / spacing[a] for a in range(3)] for o in offsets])
    inside = np.all((at >= 0) & (at <= np.array(reference.shape) - 1), axis=1)
    values = ndimage.map_coordinates(evaluated, at[inside].T, order=1)
    for offset, value in zip(np.array(offsets)[inside], values):
        distance = step * math.sqrt(sum(int(c) ** 2 for c in offset))
        best = min(best, ((value - reference[point]) / criterion) ** 2 + (distance / distance_mm) ** 2)
    return math.sqrt(best) if math.sqrt(best) <= max_gamma else math.inf


@pytest.mark.parametrize("local", [False, True])
def test_gamma_matches_an_exhaustive_search(patient, local):
    case, prediction = patient
    reference = case.dose_gy.astype(np.float64)
    gamma = gamma_index(reference, prediction, case.spacing_mm, local=local)
    norm = reference.max()
    evaluated = np.argwhere(~np.isnan(gamma))
    assert len(evaluated) == np.count_nonzero(reference >= 0.1 * norm)  # the 10% low-dose cutoff
    rng = np.random.default_rng(0)
    for point in map(tuple, evaluated[rng.choice(len(evaluated), 40, replace=False)]):
        expected = _plain_gamma(reference, prediction, case.spacing_mm, point, 3.0, 2.0, norm, local)
        assert gamma[point] == pytest.approx(expected, rel=1e-9, abs=1e-9), point
    rate = gamma_pass_rate(gamma)
    assert rate == pytest.approx(100 * np.count_nonzero(gamma[~np.isnan(gamma)] <= 1) / len(evaluated))
    assert 0 < rate < 100


def test_gamma_of_a_perfect_prediction_and_of_a_small_global_offset(patient):
    case, _ = patient
    reference = case.dose_gy.astype(np.float64)
    perfect = gamma_index(reference, reference.copy(), case.spacing_mm)
    assert gamma_pass_rate(perfect) == 100.0 and np.nanmax(perfect) == 0.0
    # every dose raised by 2% of the maximum is within 3% at distance zero: gamma <= 2/3 everywhere
    raised = gamma_index(reference, reference + 0.02 * reference.max(), case.spacing_mm)
    assert gamma_pass_rate(raised) == 100.0 and np.nanmax(raised) <= 2 / 3 + 1e-9


def test_isodose_dice_matches_masks_level_by_level(patient):
    case, prediction = patient
    reference, body = case.dose_gy, case.possible_dose_mask
    levels = np.arange(0.0, 70.5, 0.5)
    dice = isodose_dice(reference, prediction, levels, body)
    for level, value in list(zip(levels, dice))[::9]:
        a, b = (reference >= level) & body, (prediction >= level) & body
        assert value == pytest.approx(2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b)))
    perfect = isodose_dice(reference, reference, levels, body)
    assert np.all(perfect == 1.0)
    above_all = isodose_dice(reference, reference, np.array([reference.max() + 1.0]), body)
    assert np.isnan(above_all[0])


def _exact_wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided exact signed-rank p by enumerating every sign assignment (no ties, no zeros)."""
    ranks = stats.rankdata(np.abs(differences))
    observed = ranks[differences > 0].sum()
    total = ranks.sum()
    extreme = min(observed, total - observed)
    sums = [sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product([0, 1], repeat=len(ranks))]
    return min(1.0, 2 * sum(1 for s in sums if s <= extreme) / len(sums))


def test_paired_test_picks_t_for_normal_differences_and_wilcoxon_otherwise():
    rng = np.random.default_rng(3)
    planned = rng.normal(60, 2, 12)
    predicted = planned + rng.normal(0.8, 0.5, 12)
    result = paired_test(predicted, planned)
    d = predicted - planned
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    assert result.test == "paired t" and result.shapiro_p >= 0.05 and result.n == 12
    assert result.p_value == pytest.approx(2 * stats.t.sf(abs(t), len(d) - 1))

    skewed = np.array([0.01, 0.02, 0.03, 0.05, 0.04, 0.07, 0.06, 0.11, 5.0, 9.0])
    result = paired_test(planned[:10] + skewed, planned[:10])
    assert result.test == "Wilcoxon" and result.shapiro_p < 0.05
    assert result.p_value == pytest.approx(_exact_wilcoxon_p(skewed))


def test_paired_test_drops_nan_pairs_and_names_degenerate_cases():
    a = np.array([1.0, 2.0, np.nan, 4.0, 5.0])
    assert paired_test(a, a).test == "identical" and paired_test(a, a).p_value == 1.0 and paired_test(a, a).n == 4
    few = paired_test(np.array([1.0, np.nan, 3.0]), np.array([2.0, 2.0, np.nan]))
    assert few.test == "too few" and math.isnan(few.p_value) and few.n == 1


def test_case_evaluation_of_a_perfect_prediction(patient):
    case, _ = patient
    result = evaluate_case(case, case.dose_gy.copy(), case.prescriptions_gy)
    assert len(result.dvh_rows) == 9 * len(OPENKBP.target_names) + 7 * len(OPENKBP.oars)
    for row in result.dvh_rows:
        if row["structure"] in case.structures:
            assert row["predicted"] == row["reference"], row
        else:  # Esophagus and Larynx are not contoured on pt_1: NaN, not zero
            assert math.isnan(row["reference"]) and math.isnan(row["predicted"])
    present = [v for k, v in result.structure_mae_gy.items() if k in case.structures or k == "PossibleDose"]
    assert set(present) == {0.0} and math.isnan(result.structure_mae_gy["Esophagus"])
    assert result.dose_error_gy == 0.0 and result.gamma_pass_rate_percent == 100.0
    assert np.all(result.isodose_dice[~np.isnan(result.isodose_dice)] == 1.0)
    levels, planned, predicted = result.dvh_curves["PTV70"]
    np.testing.assert_array_equal(planned, predicted)


def test_case_evaluation_takes_prescriptions_from_the_datalist_entry(patient):
    case, prediction = patient
    default = evaluate_case(case, prediction)
    lowered = evaluate_case(case, prediction, {**case.prescriptions_gy, "PTV70": 66.0})

    def ci(result):
        return next(r for r in result.dvh_rows if r["structure"] == "PTV70" and r["metric"] == "CI")

    assert ci(lowered)["prescription_gy"] == 66.0 and ci(default)["prescription_gy"] == 70.0
    target, dose = case.structures["PTV70"], case.dose_gy
    covered = dose >= 66.0
    assert ci(lowered)["reference"] == pytest.approx(
        np.count_nonzero(covered & target) ** 2 / (np.count_nonzero(target) * np.count_nonzero(covered)))
