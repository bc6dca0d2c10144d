"""OpenKBP's official scores of a submission folder against a folder of reference patients.

Reads only what the official scorer (ababier/open-kbp ``DoseEvaluator``) reads, never the CT, with numpy's C
CSV reader; the figures equal the official scorer's to 1e-6 (``tests/test_openkbp_scores.py``).
"""

from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from tqdm import tqdm

from custom_nets.io.openkbp import patient_folders, read_openkbp_reference, read_sparse_dose_csv
from custom_nets.performance.hardware import cpu_threads
from custom_nets.metrics.openkbp import dose_error, dose_score, dvh_score, openkbp_dvh_metrics

__all__ = ["reference_patients", "score_patient", "score_submission"]


def reference_patients(reference_dir: str | Path) -> list[Path]:
    """The ``pt_N`` folders of ``reference_dir`` (OpenKBP's layout), in patient order."""
    reference_dir = Path(reference_dir)
    if not reference_dir.is_dir():
        raise FileNotFoundError(f"reference folder {reference_dir} does not exist")
    folders = [p for p in patient_folders(reference_dir) if p != reference_dir]  # a split's folder, not a patient
    if not folders:
        raise FileNotFoundError(f"{reference_dir}: no OpenKBP patient folder (pt_N/) in it")
    return folders


def score_submission(submission_dir: str | Path, reference_dir: str | Path, workers: int | None = None,
                     progress: bool = True) -> dict:
    """Score the submission CSVs (``pt_N.csv``) of ``submission_dir`` against the patients of ``reference_dir``.

    Every reference patient needs a prediction (checked before any file is read); predictions of other patients
    are listed under ``ignored_predictions``. Patients are read in ``workers`` processes (default: one per CPU
    thread; parsing the dose CSVs is most of the work). Returns ``dose_score`` and ``dvh_score`` (Gy) and, per
    patient, its ``dose_error`` and the reference and predicted DVH metrics (``"metric|ROI"``, ``None`` where
    the ROI is not contoured), the layout of the official scorer's figures.
    """
    submission_dir = Path(submission_dir)
    if not submission_dir.is_dir():
        raise FileNotFoundError(f"submission folder {submission_dir} does not exist")
    references = reference_patients(reference_dir)
    missing = [r.name for r in references if not (submission_dir / f"{r.name}.csv").is_file()]
    if missing:
        raise FileNotFoundError(f"{submission_dir} has no prediction for {len(missing)} of the "
                                f"{len(references)} reference patients: {', '.join(f'{m}.csv' for m in missing)}")
    jobs = [(folder, submission_dir / f"{folder.name}.csv") for folder in references]
    workers = max(1, min(workers or cpu_threads(), len(jobs)))
    bar = tqdm(total=len(jobs), desc="scoring", unit="patient", disable=not progress)
    if workers == 1:
        patients = {}
        for folder, prediction in jobs:
            patients[folder.name] = score_patient(folder, prediction)
            bar.update()
    else:
        with ProcessPoolExecutor(workers) as pool:
            futures = {pool.submit(score_patient, folder, prediction): folder.name for folder, prediction in jobs}
            for future in as_completed(futures):
                bar.update()
            patients = {name: future.result() for future, name in futures.items()}
    bar.close()
    scored = {r.name for r in references}
    return {
        "dose_score": dose_score([p["dose_error"] for p in patients.values()]),
        "dvh_score": dvh_score([p["reference_dvh_metrics"] for p in patients.values()],
                               [p["predicted_dvh_metrics"] for p in patients.values()]),
        "patients": {name: _none_for_nan(figures) for name, figures in patients.items()},
        "ignored_predictions": sorted(p.name for p in submission_dir.glob("pt_*.csv") if p.stem not in scored),
    }


def score_patient(reference_folder: str | Path, prediction_csv: str | Path) -> dict:
    """The official figures of one patient: ``dose_error`` (Gy) and the reference and predicted DVH metrics."""
    reference = read_openkbp_reference(reference_folder)
    predicted = read_sparse_dose_csv(prediction_csv)
    voxel_mm3 = float(np.prod(reference.spacing_mm))
    return {
        "dose_error": dose_error(reference.dose_gy, predicted, reference.possible_dose_mask),
        "reference_dvh_metrics": openkbp_dvh_metrics(reference.dose_gy, reference.structures, voxel_mm3),
        "predicted_dvh_metrics": openkbp_dvh_metrics(predicted, reference.structures, voxel_mm3),
    }


def _none_for_nan(value: float | dict) -> float | dict | None:
    """JSON has no NaN: an absent ROI's metric is ``None``, as in the official figures."""
    if isinstance(value, dict):
        return {key: _none_for_nan(v) for key, v in value.items()}
    return None if math.isnan(value) else value
