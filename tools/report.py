"""``dosepred evaluate`` and ``dosepred report``: dosimetric tables of predictions, and comparisons of runs."""

from __future__ import annotations

from custom_nets.options import as_optional_bool
from custom_nets.reports import evaluate_predictions, write_report


def evaluate(datalist: str, predictions: str, out: str, split: str = "validation", dose_percent: float | None = None,
             distance_mm: float | None = None, low_dose_cutoff_percent: float | None = None,
             local: bool | None = None, isodose_step_gy: float = 0.5) -> str:
    """Evaluate PREDICTIONS (<case_id>/dose_pred.nii.gz, Gy) against the planned doses of SPLIT of DATALIST.

    Writes DVH metrics, voxel MAE, isodose Dice, gamma pass rates and DVH curves into OUT (see
    custom_nets.reports.dosimetric_evaluation); the bundles' evaluate config does the same after inference.
    Gamma criteria not given keep custom_nets.metrics.case_evaluation.DEFAULT_GAMMA (3%/2 mm global, 10% cutoff).
    """
    given = {"dose_percent": dose_percent, "distance_mm": distance_mm,
             "low_dose_cutoff_percent": low_dose_cutoff_percent, "local": as_optional_bool(local, "local")}
    gamma = {name: value for name, value in given.items() if value is not None}
    path = evaluate_predictions(datalist, split, predictions, out, gamma=gamma, isodose_step_gy=isodose_step_gy)
    print(f"evaluation: {path.parent}")
    return str(path.parent)


def report(*runs: str, out: str = "report", names: str | list[str] | tuple[str, ...] | None = None,
           alpha: float = 0.05, max_case_figures: int | None = None) -> str:
    """Compare evaluated RUNS (evaluation folders of the same cases): tables of the cascade paper (CSV and
    Markdown), isodose Dice curves, voxel-MAE box plots, training curves, per-case DVH and dose images.

    NAMES: comma-separated display names, one per run (default: bundle name and mask source). The first run
    is the baseline of the model-against-model tests.
    """
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",")]
    return str(write_report(list(runs), out, names=names, alpha=alpha, max_case_figures=max_case_figures))
