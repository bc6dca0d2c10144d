"""The clinical path in one call: DICOM-RT patient folder -> a bundle's prediction -> RT Dose, NIfTI and DVHs.

Steps: import (CT + RTSTRUCT [+ RTPLAN] [+ planned RTDOSE]) onto the model grid -> the bundle's own inference
config (its preprocessing, network, inferer and postprocessing, run by MONAI's ConfigWorkflow) -> the predicted
dose mapped back onto the CT grid -> ``RD_predicted.dcm`` (on the CT's frame of reference and study, referencing
the RT Plan), ``dose_predicted.nii.gz`` (CT grid, RAS), ``dvh_metrics.csv``, ``dvh.csv``, ``dvh.png`` and
``predict_report.json`` (ROI mapping, prescriptions, warnings, timings).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigWorkflow

from custom_nets.bundles.config import bundle_parser
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

__all__ = ["OUTPUT_FILES", "predict_dicom", "run_bundle_inference"]

logger = logging.getLogger(__name__)

OUTPUT_FILES = {"rtdose": "RD_predicted.dcm", "rtplan": "RP_prescription.dcm", "nifti": "dose_predicted.nii.gz",
                "dvh_metrics": "dvh_metrics.csv", "dvh": "dvh.csv", "dvh_png": "dvh.png",
                "report": "predict_report.json"}


def run_bundle_inference(bundle: str | Path, config_files: Sequence[str], overrides: Mapping) -> None:
    """Run a bundle's inference config in this process, as ``python -m monai.bundle run`` would."""
    bundle = Path(bundle).resolve()
    workflow = ConfigWorkflow(config_file=[str(bundle / c) for c in config_files], workflow_type="infer",
                              meta_file=str(bundle / "configs" / "metadata.json"),
                              logging_file=str(bundle / "configs" / "logging.conf"),
                              **{"bundle_root": str(bundle), **overrides})
    try:
        workflow.initialize()
        workflow.run()
        workflow.finalize()
    except RuntimeError as err:  # MONAI wraps a config expression's error: hand over the clear message inside
        cause = err.__cause__
        if isinstance(cause, (ValueError, FileNotFoundError)):
            raise cause from None
        raise


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
    bundle, out_dir = Path(bundle).resolve(), Path(out_dir).resolve()
    overrides = dict(overrides or {})
    if ckpt_path is not None:
        overrides["ckpt_path"] = str(Path(ckpt_path).resolve())
    grid_shape = tuple(int(s) for s in grid_shape)
    parser = bundle_parser(bundle, config_files, overrides)
    with torch.device("meta"):  # the network's shape rules, without allocating its weights
        divisor = int(getattr(parser.get_parsed_content("network_def"), "divisor", 1))
    if len(grid_shape) != 3 or any(s < divisor or s % divisor for s in grid_shape):
        raise ValueError(f"grid_shape must be 3 multiples of {divisor} (what {bundle.name}'s network halves the grid "
                         f"to), got {grid_shape}")
    check_dose_bits(dose_bits)
    if out_dir.is_file():
        raise ValueError(f"--out {out_dir} is a file; give a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / OUTPUT_FILES["report"]).is_file():
        raise ValueError(f"--out {out_dir}: the folder holds other files and no earlier prediction; give a new or "
                         "empty folder (an earlier prediction's folder is replaced as a whole)")
    profile_name = str(parser.get_parsed_content("profile_name"))
    # the planned dose goes onto the model grid only for a bundle that makes its input dose masks from it
    with_dose = bool(parser.get_parsed_content("input_mask_fractions", default=[]))
    weights = Path(str(parser.get_parsed_content("ckpt_path")))
    if not weights.is_file():
        raise FileNotFoundError(f"no weights at {weights}: train the bundle first, or give --ckpt_path")
    with atomic_directory(out_dir) as staging:  # never a mix of two runs' outputs, nothing half-written
        report = _predict_into(staging, dicom_dir, bundle, config_files, overrides, profile_name, prescriptions_gy,
                               roi_map, grid_shape, dose_bits, ignore_rois, with_dose)
        report["outputs"] = {k: str(out_dir / Path(v).name) for k, v in report["outputs"].items()}
        write_text_atomic(staging / OUTPUT_FILES["report"], json.dumps(report, indent=1, default=str) + "\n")
    return report


def _predict_into(out_dir: Path, dicom_dir: str | Path, bundle: Path, config_files: Sequence[str], overrides: dict,
                  profile_name: str, prescriptions_gy: Mapping[str, float] | None, roi_map: Mapping[str, str] | None,
                  grid_shape: tuple[int, ...], dose_bits: int, ignore_rois: Sequence[str], with_dose: bool) -> dict:
    timings: dict[str, float] = {}
    start = time.perf_counter()
    logger.info("importing %s for profile %s on a %s grid", dicom_dir, profile_name, grid_shape)
    imported = import_dicom_case(dicom_dir, profile_name, prescriptions_gy, roi_map, grid_shape,
                                 ignore_rois=ignore_rois, with_dose=with_dose)
    if with_dose and imported.planned is None:
        raise ValueError(f"{bundle.name} makes its input dose masks from the planned dose (mask_source 'reference'), "
                         f"and {dicom_dir} holds no RT Dose of the plan: give the folder its RT Dose, or use "
                         "mask_source 'prior'")
    timings["import_s"] = time.perf_counter() - start

    start = time.perf_counter()
    predictions = out_dir / "work" / "predictions"
    logger.info("predicting with %s", bundle.name)
    # the case goes to the bundle's loader in memory (LoadDoseCased takes a DoseCase): writing it as a case folder
    # and reading it back cost 0.25 s at 128^3. It is never an OpenKBP submission, whatever grid it is on.
    run_bundle_inference(bundle, config_files, {**overrides, "data": [{"case": imported.case}],
                                                "output_dir": str(predictions), "openkbp_csv": False})
    dose_model = read_predicted_dose(predictions / imported.case.case_id / PREDICTED_DOSE_FILE,
                                     imported.case.affine, imported.case.shape)
    timings["inference_s"] = time.perf_counter() - start

    start = time.perf_counter()
    report = _export(imported, dose_model, out_dir, dose_bits)
    timings["export_s"] = time.perf_counter() - start
    report.update({"bundle": str(bundle), "config_files": list(config_files), "grid_shape": list(grid_shape),
                   "timings_s": {k: round(v, 3) for k, v in timings.items()}})
    return report


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
