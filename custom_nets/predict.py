"""The clinical path in one call: DICOM-RT patient folder -> a bundle's prediction -> RT Dose, NIfTI and DVHs.

Steps: import (CT + RTSTRUCT [+ RTPLAN] [+ planned RTDOSE]) onto the model grid -> the bundle's own inference
config (its preprocessing, network, inferer and postprocessing, run by MONAI's ConfigWorkflow) -> the predicted
dose mapped back onto the CT grid -> ``RD_predicted.dcm`` (on the CT's frame of reference and study, referencing
the RT Plan), ``dose_predicted.nii.gz`` (CT grid, RAS), ``dvh_metrics.csv``, ``dvh.csv``, ``dvh.png`` and
``predict_report.json`` (ROI mapping, prescriptions, warnings, timings). Several patients share one start of the
bundle (:func:`predict_dicom_patients`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from custom_nets.bundles.config import bundle_parser
from custom_nets.bundles.inference import BundleInference
from custom_nets.io.atomic import atomic_directory, atomic_file, write_text_atomic
from custom_nets.io.canonical import PREDICTED_DOSE_FILE
from custom_nets.io.dicom.importer import ImportedCase, import_dicom_case
from custom_nets.io.dicom.resample import resample_to_grid
from custom_nets.io.dicom.rtdose import check_dose_bits, write_rt_dose
from custom_nets.io.dicom.writers import write_rt_plan
from custom_nets.metrics.case_evaluation import DVH_BIN_GY
from custom_nets.metrics.dvh import cumulative_dvh, oar_metrics, target_metrics
from custom_nets.reports.dosimetric_evaluation import read_predicted_dose
from custom_nets.reports.tables import write_csv

__all__ = ["OUTPUT_FILES", "SUMMARY_FILE", "PatientsFailed", "predict_dicom", "predict_dicom_patients"]

logger = logging.getLogger(__name__)

OUTPUT_FILES = {"rtdose": "RD_predicted.dcm", "rtplan": "RP_prescription.dcm", "nifti": "dose_predicted.nii.gz",
                "dvh_metrics": "dvh_metrics.csv", "dvh": "dvh.csv", "dvh_png": "dvh.png",
                "report": "predict_report.json"}
SUMMARY_FILE = "predict_summary.json"


def predict_dicom(dicom_dir: str | Path, bundle: str | Path, out_dir: str | Path,
                  config_files: Sequence[str] = ("configs/inference.json",), overrides: Mapping | None = None,
                  prescriptions_gy: Mapping[str, float] | None = None, roi_map: Mapping[str, str] | None = None,
                  grid_shape: Sequence[int] = (128, 128, 128), ckpt_path: str | Path | None = None,
                  dose_bits: int = 16, ignore_rois: Sequence[str] = ()) -> dict:
    """Predict the dose of a DICOM-RT patient with a bundle and write it as DICOM, NIfTI and DVH tables.

    Args:
        dicom_dir: CT series + RT Structure Set (+ RT Plan for prescriptions, + a planned RT Dose to compare with).
        bundle: the bundle folder (``configs/``, ``models/``).
        out_dir: where the outputs (:data:`OUTPUT_FILES`) go, and the bundle's own output (``work/predictions``).
        config_files: the bundle's inference config and overrides (e.g. ``configs/openkbp.json``), relative to it.
        overrides: config ids to override (e.g. network widths of a small model).
        prescriptions_gy / roi_map / ignore_rois: see :func:`import_dicom_case`.
        grid_shape: the model grid over the CT's field of view (multiples of 16; the papers use 128^3).
        ckpt_path: weights (default: the bundle's ``models/model.pt``).
        dose_bits: 16 or 32 bits in the RT Dose.

    Returns the report written to ``predict_report.json``.
    """
    _check_patient_folder(Path(dicom_dir))
    out_dir = Path(out_dir).resolve()
    _check_out_dir(out_dir, OUTPUT_FILES["report"])
    with _Predictor(bundle, config_files, overrides, prescriptions_gy, roi_map, grid_shape, ckpt_path, dose_bits,
                    ignore_rois, out_dir.parent) as predictor:
        return predictor(dicom_dir, out_dir)


def predict_dicom_patients(dicom_dirs: Sequence[str | Path], bundle: str | Path, out_dir: str | Path,
                           config_files: Sequence[str] = ("configs/inference.json",), overrides: Mapping | None = None,
                           prescriptions_gy: Mapping[str, float] | None = None, roi_map: Mapping[str, str] | None = None,
                           grid_shape: Sequence[int] = (128, 128, 128), ckpt_path: str | Path | None = None,
                           dose_bits: int = 16, ignore_rois: Sequence[str] = ()) -> dict:
    """:func:`predict_dicom` for several patients with one start of the bundle (its config, network, weights and
    kernels: 0.3-0.6 s at 128^3 on this CPU, besides the 3-7 s of imports of a new process).

    Each patient's outputs go to ``out_dir/<its folder's name>``, written as a whole when it is done, so the
    patients finished before an interruption keep theirs. A patient whose folder or data are wrong (a clear
    ``ValueError`` or ``FileNotFoundError``) is recorded and the others predicted; ``predict_summary.json`` lists
    every patient's outputs or error and timings, and a :class:`PatientsFailed` error names the failed ones.
    Prescriptions, ROI map and ignored ROIs apply to every patient (default: each one's RT Plan).

    Returns the summary.
    """
    folders = [Path(os.path.abspath(d)) for d in dicom_dirs]  # a patient's name is its folder's, links kept
    if not folders:
        raise ValueError("no patient folder given")
    for folder in folders:
        _check_patient_folder(folder)
    names = [folder.name for folder in folders]
    shared = sorted({name for name in names if names.count(name) > 1})
    if shared:
        raise ValueError(f"patient folders share the name(s) {shared}: their outputs would go to the same folder "
                         "of --out; give each patient a folder of its own name")
    out_dir = Path(out_dir).resolve()
    _check_out_dir(out_dir, SUMMARY_FILE)
    patients: dict[str, dict] = {}
    with _Predictor(bundle, config_files, overrides, prescriptions_gy, roi_map, grid_shape, ckpt_path, dose_bits,
                    ignore_rois, out_dir) as predictor:
        predictor.start_bundle()  # a bundle that cannot start stops the call before any patient
        for number, (folder, name) in enumerate(zip(folders, names), start=1):
            logger.info("patient %d/%d: %s", number, len(folders), folder)
            try:
                report = predictor(folder, out_dir / name)
            except (ValueError, FileNotFoundError) as err:
                logger.error("patient %d/%d: %s: %s", number, len(folders), folder, err)
                patients[name] = {"dicom_dir": str(folder), "error": str(err)}
                continue
            patients[name] = {"dicom_dir": str(folder), "outputs": report["outputs"], "warnings": report["warnings"],
                              "max_dose_gy": report["max_dose_gy"], "timings_s": report["timings_s"]}
            logger.info("patient %d/%d: %s done in %.1f s", number, len(folders), name,
                        sum(report["timings_s"].values()))
    failed = {name: p["error"] for name, p in patients.items() if "error" in p}
    summary = {"bundle": str(Path(bundle).resolve()), "config_files": list(config_files),
               "grid_shape": [int(s) for s in grid_shape], "patients": patients, "failed": sorted(failed)}
    write_text_atomic(out_dir / SUMMARY_FILE, json.dumps(summary, indent=1, default=str) + "\n")
    if failed:
        raise PatientsFailed(f"{len(failed)} of {len(folders)} patients not predicted (see {out_dir / SUMMARY_FILE}): "
                             + "; ".join(f"{name}: {error}" for name, error in failed.items()))
    return summary


class PatientsFailed(RuntimeError):
    """Some patients of :func:`predict_dicom_patients` were not predicted; the others' outputs are written."""


def _check_patient_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise FileNotFoundError(f"DICOM folder not found: {folder}")


def _check_out_dir(out_dir: Path, marker: str) -> None:
    """Refuse an output folder that is a file, or holds other files than an earlier run's (marked by ``marker``)."""
    if out_dir.is_file():
        raise ValueError(f"--out {out_dir} is a file; give a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / marker).is_file():
        raise ValueError(f"--out {out_dir}: the folder holds other files and no earlier prediction; give a new or "
                         "empty folder (an earlier prediction's folder is replaced as a whole)")


class _Predictor:
    """The options of a `predict` run, checked before any patient is read, and the bundle, started once for all
    its patients (by the first one's prediction unless :meth:`start_bundle` is called first). ``work_root`` holds
    the bundle's scratch output (on the outputs' file system: each case's folder moves from there to its patient's
    outputs)."""

    def __init__(self, bundle: str | Path, config_files: Sequence[str], overrides: Mapping | None,
                 prescriptions_gy: Mapping[str, float] | None, roi_map: Mapping[str, str] | None,
                 grid_shape: Sequence[int], ckpt_path: str | Path | None, dose_bits: int, ignore_rois: Sequence[str],
                 work_root: Path) -> None:
        self.bundle = Path(bundle).resolve()
        self.config_files = list(config_files)
        self.overrides = dict(overrides or {})
        if ckpt_path is not None:
            self.overrides["ckpt_path"] = str(Path(ckpt_path).resolve())
        self.grid_shape = tuple(int(s) for s in grid_shape)
        parser = bundle_parser(self.bundle, self.config_files, self.overrides)
        with torch.device("meta"):  # the network's shape rules, without allocating its weights
            divisor = int(getattr(parser.get_parsed_content("network_def"), "divisor", 1))
        if len(self.grid_shape) != 3 or any(s < divisor or s % divisor for s in self.grid_shape):
            raise ValueError(f"grid_shape must be 3 multiples of {divisor} (what {self.bundle.name}'s network halves "
                             f"the grid to), got {self.grid_shape}")
        check_dose_bits(dose_bits)
        self.dose_bits = dose_bits
        self.profile_name = str(parser.get_parsed_content("profile_name"))
        # the planned dose goes onto the model grid only for a bundle that makes its input dose masks from it
        self.with_dose = bool(parser.get_parsed_content("input_mask_fractions", default=[]))
        weights = Path(str(parser.get_parsed_content("ckpt_path")))
        if not weights.is_file():
            raise FileNotFoundError(f"no weights at {weights}: train the bundle first, or give --ckpt_path")
        self.import_options = {"prescriptions_gy": prescriptions_gy, "roi_map": roi_map, "ignore_rois": ignore_rois}
        self.work_root = work_root
        self._scratch: Path | None = None
        self._bundle_run: BundleInference | None = None
        self._setup_s: float | None = None

    def start_bundle(self) -> None:
        """Start the bundle (config, network, weights); its errors are the bundle's, not a patient's."""
        start = time.perf_counter()
        logger.info("starting %s", self.bundle.name)
        self.work_root.mkdir(parents=True, exist_ok=True)
        self._scratch = Path(tempfile.mkdtemp(prefix=".bundle-output.", dir=self.work_root))
        # Cases go to the bundle's loader in memory (LoadDoseCased takes a DoseCase): writing one as a case folder
        # and reading it back cost 0.25 s at 128^3. They are never OpenKBP submissions, whatever their grid.
        self._bundle_run = BundleInference(self.bundle, self.config_files, {**self.overrides, "openkbp_csv": False},
                                           self._scratch)
        self._setup_s = time.perf_counter() - start

    def __call__(self, dicom_dir: str | Path, out_dir: Path) -> dict:
        """Predict one patient into ``out_dir`` (replaced as a whole); returns its report."""
        with atomic_directory(out_dir) as staging:  # never a mix of two runs' outputs, nothing half-written
            report = self._predict_into(staging, dicom_dir)
            report["outputs"] = {k: str(out_dir / Path(v).name) for k, v in report["outputs"].items()}
            write_text_atomic(staging / OUTPUT_FILES["report"], json.dumps(report, indent=1, default=str) + "\n")
        return report

    def _predict_into(self, out_dir: Path, dicom_dir: str | Path) -> dict:
        timings: dict[str, float] = {}
        start = time.perf_counter()
        logger.info("importing %s for profile %s on a %s grid", dicom_dir, self.profile_name, self.grid_shape)
        imported = import_dicom_case(dicom_dir, self.profile_name, grid_shape=self.grid_shape,
                                     with_dose=self.with_dose, **self.import_options)
        if self.with_dose and imported.planned is None:
            raise ValueError(f"{self.bundle.name} makes its input dose masks from the planned dose (mask_source "
                             f"'reference'), and {dicom_dir} holds no RT Dose of the plan: give the folder its RT Dose, "
                             "or use mask_source 'prior'")
        timings["import_s"] = time.perf_counter() - start

        if self._bundle_run is None:  # one patient: its folder is checked before the bundle starts
            self.start_bundle()
        if self._setup_s is not None:  # the first report of the call records the bundle's start, paid once
            timings["bundle_setup_s"], self._setup_s = self._setup_s, None

        start = time.perf_counter()
        logger.info("predicting with %s", self.bundle.name)
        bundle_output = self._bundle_run(imported.case)
        predictions = out_dir / "work" / "predictions"
        predictions.mkdir(parents=True)
        case_output = Path(shutil.move(bundle_output, predictions / bundle_output.name))
        dose_model = read_predicted_dose(case_output / PREDICTED_DOSE_FILE, imported.case.affine,
                                         imported.case.shape)
        timings["inference_s"] = time.perf_counter() - start

        start = time.perf_counter()
        report = _export(imported, dose_model, out_dir, self.dose_bits)
        timings["export_s"] = time.perf_counter() - start
        report.update({"bundle": str(self.bundle), "config_files": self.config_files,
                       "grid_shape": list(self.grid_shape), "timings_s": {k: round(v, 3) for k, v in timings.items()}})
        return report

    def close(self) -> None:
        try:
            if self._bundle_run is not None:
                self._bundle_run.close()
        finally:
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> _Predictor:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _export(imported: ImportedCase, dose_model: np.ndarray, out_dir: Path, dose_bits: int) -> dict:
    """Map the model-grid dose onto the CT grid and write the RT Dose, NIfTI and DVH outputs.

    The DVH outputs are made on a second thread while this one writes the dose files (0.3 s and 0.2 s for a
    192^2 x 128 CT): most of their time (rasterising, resampling, compressing) is numpy and zlib, which release the
    GIL. The structures are rasterised on that thread while this one resamples both doses onto the CT grid.
    """
    ct = imported.ct
    with ThreadPoolExecutor(max_workers=1) as dvh_thread:
        masks = dvh_thread.submit(imported.structure_masks, ct.grid)
        planned = imported.planned_dose_on(ct.grid)
        dose_ct = np.maximum(resample_to_grid(dose_model.astype(np.float32), imported.model_grid, ct.grid), 0.0)
        dvh = dvh_thread.submit(lambda: _write_dvh(imported, masks.result(), dose_ct, planned, out_dir))
        plan = imported.plan.header if imported.plan is not None else None
        if plan is None:  # an RT Dose of a plan must reference one: record the prescriptions it was predicted for
            by_roi = {roi: imported.case.prescriptions_gy[target] for target, roi in
                      imported.report["roi_mapping"].items() if target in imported.case.prescriptions_gy}
            plan = write_rt_plan(out_dir / OUTPUT_FILES["rtplan"], imported.structure_set.header, by_roi,
                                 fractions=None)
        write_rt_dose(out_dir / OUTPUT_FILES["rtdose"], dose_ct, ct.grid, ct.header, plan, bits=dose_bits)
        with atomic_file(out_dir / OUTPUT_FILES["nifti"]) as tmp:
            image = nib.Nifti1Image(dose_ct.astype(np.float32), ct.grid.affine_ras)
            image.set_qform(ct.grid.affine_ras, code=1)
            image.set_sform(ct.grid.affine_ras, code=1)
            nib.save(image, tmp)
        dvh.result()
    return {**imported.report, "outputs": {k: str(out_dir / v) for k, v in OUTPUT_FILES.items()
                                          if (out_dir / v).exists() or k == "report"},
            "max_dose_gy": float(dose_ct.max())}


def _write_dvh(imported: ImportedCase, masks: Mapping[str, np.ndarray], dose_gy: np.ndarray,
               planned_gy: np.ndarray | None, out_dir: Path) -> None:
    """DVH metrics per structure (predicted, and planned when the folder had a plan dose) and the curves."""
    voxel_mm3 = float(np.prod(np.abs(imported.ct.grid.spacing_mm)))
    doses = {"predicted": dose_gy, **({"reference": planned_gy} if planned_gy is not None else {})}
    rows, columns = [], ["structure", "roi", "dose", "volume_cc"]
    for structure, mask in masks.items():
        rx = imported.case.prescriptions_gy.get(structure)
        for which, dose in doses.items():
            values = (target_metrics(dose, mask, rx, voxel_mm3) if rx is not None
                      else oar_metrics(dose, mask, voxel_mm3))
            columns += [k for k in values if k not in columns]
            rows.append({"structure": structure, "roi": imported.report["roi_mapping"].get(structure, ""),
                         "dose": "planned" if which == "reference" else which,
                         "volume_cc": float(mask.sum()) * voxel_mm3 / 1000.0, **values})
    write_csv(out_dir / OUTPUT_FILES["dvh_metrics"], rows, columns)
    top = max(float(d.max()) for d in doses.values())
    curves: dict[str, np.ndarray] = {}
    for structure, mask in masks.items():
        for which, dose in doses.items():
            levels, curve = cumulative_dvh(dose[mask], DVH_BIN_GY, top)
            curves["dose_gy"] = levels
            curves[f"{structure}|{which}"] = curve
    write_csv(out_dir / OUTPUT_FILES["dvh"], [dict(zip(curves, values)) for values in zip(*curves.values())],
              list(curves))
    try:
        from custom_nets.reports.figures import plot_case_dvh
    except ImportError:  # matplotlib is optional (the report extra)
        logger.warning("matplotlib is not installed: %s not drawn", OUTPUT_FILES["dvh_png"])
        return
    plot_case_dvh(imported.case.case_id, {"predicted": curves}, out_dir / OUTPUT_FILES["dvh_png"])
