"""Dosimetric evaluation of a folder of predicted doses against the planned doses of a datalist split.

Writes, into one evaluation folder (what the bundles' evaluate config and ``dosepred evaluate`` produce)::

    dvh_metrics.csv      case_id, structure, role, prescription_gy, metric, unit, reference, predicted
    structure_mae.csv    case_id, structure, mae_gy            (voxel-wise, per structure and PossibleDose)
    case_summary.csv     case_id, dose_error_gy, gamma_pass_rate_percent
    isodose_dice.csv     case_id, then one column per isodose level (Gy)
    dvh/<case_id>.csv    dose_gy, then "<structure>|reference" and "<structure>|predicted" (% volume)
    evaluation.json      what was compared, with which criteria (written last: marks a complete folder)

Predictions are ``<predictions_dir>/<case_id>/dose_pred.nii.gz`` (Gy) on the case's grid, as ``SaveDosed``
writes them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from custom_nets.io.atomic import write_text_atomic
from custom_nets.io.canonical import AFFINE_ATOL_MM, PREDICTED_DOSE_FILE, read_case
from custom_nets.io.datalist import load_datalist
from custom_nets.io.orientation import axcodes_of, reorient_with_affine
from custom_nets.metrics.case_evaluation import DEFAULT_GAMMA, DVH_BIN_GY, evaluate_case
from custom_nets.reports.tables import read_csv, write_csv

__all__ = ["EVALUATION_JSON", "read_predicted_dose", "evaluate_predictions", "RunEvaluation", "load_evaluation"]

EVALUATION_JSON = "evaluation.json"


def read_predicted_dose(path: Path, case_affine: np.ndarray, case_shape: tuple[int, ...]) -> np.ndarray:
    """A predicted dose (Gy) in the case's array layout, checked to lie on the case's grid (the bundles write
    predictions in RAS layout; axes are reordered, never resampled) and to be finite and non-negative."""
    if not path.is_file():
        raise FileNotFoundError(f"predicted dose {path} does not exist")
    image = nib.load(str(path))
    dose = np.asarray(image.dataobj, dtype=np.float64)
    if dose.ndim == 4 and dose.shape[-1] == 1:
        dose = dose[..., 0]
    if dose.ndim != 3:
        raise ValueError(f"{path}: a predicted dose must be 3D, got shape {dose.shape}")
    dose, affine = reorient_with_affine(dose, image.affine, axcodes_of(case_affine))
    if tuple(dose.shape) != tuple(case_shape) or not np.allclose(affine, case_affine, atol=AFFINE_ATOL_MM):
        raise ValueError(f"{path}: not on the case's grid (shape {dose.shape} vs {tuple(case_shape)}, or another "
                         f"affine)")
    if not np.all(np.isfinite(dose)) or dose.min() < 0:
        raise ValueError(f"{path}: predicted dose must be finite and non-negative")
    return dose


def evaluate_predictions(datalist: str | Path, split: str, predictions_dir: str | Path, output_dir: str | Path,
                         gamma: Mapping | None = None, isodose_step_gy: float = 0.5, progress: bool = True) -> Path:
    """Evaluate every case of ``split`` and write the tables listed in the module docstring.

    Args:
        datalist: datalist JSON of the canonical cases (with planned doses).
        split: ``training``, ``validation`` or ``test``.
        predictions_dir: folder of ``<case_id>/dose_pred.nii.gz``.
        output_dir: evaluation folder to write (created).
        gamma: gamma criteria overriding the default 3%/2 mm global, 10% cutoff.
        isodose_step_gy: spacing of the isodose Dice levels.
        progress: show a progress bar.

    Returns:
        the path of ``evaluation.json``.
    """
    entries = load_datalist(datalist, split)
    if not entries:
        raise ValueError(f"{datalist}: split {split!r} has no cases to evaluate")
    predictions_dir, output_dir = Path(predictions_dir), Path(output_dir)
    criteria = {**DEFAULT_GAMMA, **dict(gamma or {})}
    dvh_rows, mae_rows, summary_rows, dice_rows = [], [], [], []
    levels = None
    start = time.perf_counter()
    for entry in tqdm(entries, desc=f"evaluating {split}", unit="case", disable=not progress):
        case = read_case(entry["case"])
        predicted = read_predicted_dose(predictions_dir / entry["case_id"] / PREDICTED_DOSE_FILE, case.affine,
                                        case.shape)
        result = evaluate_case(case, predicted, entry["prescriptions_gy"], gamma=criteria,
                               isodose_step_gy=isodose_step_gy)
        dvh_rows += [{"case_id": case.case_id, **row} for row in result.dvh_rows]
        mae_rows += [{"case_id": case.case_id, "structure": s, "mae_gy": v} for s, v in result.structure_mae_gy.items()]
        summary_rows.append({"case_id": case.case_id, "dose_error_gy": result.dose_error_gy,
                             "gamma_pass_rate_percent": result.gamma_pass_rate_percent})
        levels = result.isodose_levels_gy
        dice_rows.append({"case_id": case.case_id, **{f"{lv:g}": d for lv, d in zip(levels, result.isodose_dice)}})
        curves = result.dvh_curves
        if curves:
            dose_axis = max((c[0] for c in curves.values()), key=len)
            columns = {"dose_gy": dose_axis}
            for name, (lv, ref, pred) in curves.items():
                columns[f"{name}|reference"] = np.pad(ref, (0, len(dose_axis) - len(lv)))
                columns[f"{name}|predicted"] = np.pad(pred, (0, len(dose_axis) - len(lv)))
            write_csv(output_dir / "dvh" / f"{case.case_id}.csv",
                      [{k: float(v[i]) for k, v in columns.items()} for i in range(len(dose_axis))], list(columns))

    write_csv(output_dir / "dvh_metrics.csv", dvh_rows,
              ["case_id", "structure", "role", "prescription_gy", "metric", "unit", "reference", "predicted"])
    write_csv(output_dir / "structure_mae.csv", mae_rows, ["case_id", "structure", "mae_gy"])
    write_csv(output_dir / "case_summary.csv", summary_rows, ["case_id", "dose_error_gy", "gamma_pass_rate_percent"])
    write_csv(output_dir / "isodose_dice.csv", dice_rows, ["case_id"] + [f"{lv:g}" for lv in levels])
    record = {"datalist": str(Path(datalist).resolve()), "split": split, "profile": entries[0]["profile"],
              "predictions": str(predictions_dir.resolve()), "cases": [e["case_id"] for e in entries],
              "gamma": criteria, "isodose_step_gy": isodose_step_gy, "dvh_bin_gy": DVH_BIN_GY,
              "seconds": round(time.perf_counter() - start, 2)}
    return write_text_atomic(output_dir / EVALUATION_JSON, json.dumps(record, indent=1) + "\n")


def _float(text: str) -> float:
    return float(text) if text not in ("", None) else np.nan


@dataclass
class RunEvaluation:
    """An evaluation folder read back (see the module docstring for the files).

    Attributes:
        path: the folder.
        info: ``evaluation.json`` merged with the bundle's ``run_info.json`` when present.
        dvh_rows: rows of ``dvh_metrics.csv`` (numbers as floats).
        structure_mae: structure -> {case_id: MAE Gy}.
        summary: case_id -> {"dose_error_gy", "gamma_pass_rate_percent"}.
        isodose_levels_gy: (L,); isodose_dice: case_id -> (L,) Dice.
    """

    path: Path
    info: dict
    dvh_rows: list[dict]
    structure_mae: dict[str, dict[str, float]]
    summary: dict[str, dict[str, float]]
    isodose_levels_gy: np.ndarray
    isodose_dice: dict[str, np.ndarray]

    @property
    def case_ids(self) -> list[str]:
        return list(self.info["cases"])

    def dvh_curves(self, case_id: str) -> dict[str, np.ndarray]:
        """Columns of ``dvh/<case_id>.csv`` as arrays (empty when the case has none)."""
        path = self.path / "dvh" / f"{case_id}.csv"
        rows = read_csv(path) if path.is_file() else []
        return {k: np.asarray([_float(r[k]) for r in rows]) for k in (rows[0] if rows else {})}


def load_evaluation(path: str | Path) -> RunEvaluation:
    """Read an evaluation folder; errors name the folder when it is incomplete."""
    path = Path(path)
    record_path = path / EVALUATION_JSON
    if not record_path.is_file():
        raise FileNotFoundError(f"{path} is not a complete evaluation folder: {EVALUATION_JSON} is missing "
                                f"(run the bundle's evaluate config or `dosepred evaluate` first)")
    info = json.loads(record_path.read_text())
    run_info = path / "run_info.json"
    if run_info.is_file():
        info = {**json.loads(run_info.read_text()), **info}
    dvh_rows = [{**r, **{k: _float(r[k]) for k in ("prescription_gy", "reference", "predicted")}}
                for r in read_csv(path / "dvh_metrics.csv")]
    structure_mae: dict[str, dict[str, float]] = {}
    for r in read_csv(path / "structure_mae.csv"):
        structure_mae.setdefault(r["structure"], {})[r["case_id"]] = _float(r["mae_gy"])
    summary = {r["case_id"]: {k: _float(v) for k, v in r.items() if k != "case_id"}
               for r in read_csv(path / "case_summary.csv")}
    dice_rows = read_csv(path / "isodose_dice.csv")
    levels = np.asarray([float(k) for k in dice_rows[0] if k != "case_id"]) if dice_rows else np.empty(0)
    dice = {r["case_id"]: np.asarray([_float(v) for k, v in r.items() if k != "case_id"]) for r in dice_rows}
    return RunEvaluation(path, info, dvh_rows, structure_mae, summary, levels, dice)
