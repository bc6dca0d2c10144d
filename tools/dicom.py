"""Command lines of the clinical path: predict from a DICOM-RT folder, and write a synthetic DICOM patient."""

from __future__ import annotations

import logging
from pathlib import Path

from custom_nets.io.canonical import read_case
from custom_nets.io.dicom.export import write_dicom_case
from custom_nets.io.dicom.rtdose import check_dose_bits
from custom_nets.io.openkbp import read_openkbp_patient
from custom_nets.options import as_bool
from custom_nets.phantoms import make_phantom
from custom_nets.predict import SUMMARY_FILE, predict_dicom, predict_dicom_patients
from dosepred.arguments import as_list, as_mapping
from dosepred.bundles import BUNDLES_DIR


def predict(*dicom_dirs: str, bundle: str = str(BUNDLES_DIR / "cascunet_basic"), out: str = "runs/predict",
            configs: str | list = "", prescriptions=None, roi_map=None, grid_shape=(128, 128, 128),
            ckpt_path: str | None = None, bits: int = 16, overrides=None, ignore_rois=None) -> str:
    """Predict the dose of the DICOM-RT patient in DICOM_DIR (CT + RTSTRUCT [+ RTPLAN]) with BUNDLE, on CPU or GPU.

    Writes OUT/RD_predicted.dcm (RT Dose on the CT grid), dose_predicted.nii.gz, dvh_metrics.csv, dvh.csv, dvh.png
    and predict_report.json (ROI mapping, prescriptions, warnings, timings). Several DICOM_DIRs are predicted with
    one start of the bundle, each into OUT/<its folder's name>/, with OUT/predict_summary.json; a patient that
    fails is reported and the others predicted.

    Args:
        configs: the bundle's override configs after inference.json, e.g. "configs/openkbp.json,configs/cpu.json".
        prescriptions: target ROI -> Gy, e.g. '{"PTV_High": 60, "PTV_Low": 50}' (default: the RTPLAN's).
        roi_map: ROI -> profile structure for names the synonyms miss, e.g. '{"Coeur": "Heart"}'.
        ignore_rois: PTV ROIs left out of the input on purpose, e.g. "PTV_eval,zPTV_ring" (every other PTV needs a
            prescription).
        grid_shape: the model grid over the CT's field of view (multiples of 16).
        overrides: other bundle config ids as JSON, e.g. '{"widths_a": [8,16,32,64,128]}'.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if not dicom_dirs:
        raise ValueError("give the patient's DICOM folder (or several)")
    options = {"config_files": ["configs/inference.json", *as_list(configs)],
               "overrides": as_mapping(overrides, "overrides"),
               "prescriptions_gy": as_mapping(prescriptions, "prescriptions"),
               "roi_map": as_mapping(roi_map, "roi_map"), "grid_shape": grid_shape, "ckpt_path": ckpt_path,
               "dose_bits": bits, "ignore_rois": as_list(ignore_rois)}
    if len(dicom_dirs) > 1:
        summary = predict_dicom_patients([str(d) for d in dicom_dirs], bundle, out, **options)
        for name, patient in summary["patients"].items():
            for warning in patient["warnings"]:
                print(f"{name}: warning: {warning}")
            print(f"{name}: RT Dose {patient['outputs']['rtdose']} (max {patient['max_dose_gy']:.2f} Gy); "
                  f"timings {patient['timings_s']}")
        return str(Path(out) / SUMMARY_FILE)
    report = predict_dicom(str(dicom_dirs[0]), bundle, out, **options)
    for warning in report["warnings"]:
        print(f"warning: {warning}")
    print(f"RT Dose: {report['outputs']['rtdose']} (max {report['max_dose_gy']:.2f} Gy); "
          f"timings {report['timings_s']}")
    return report["outputs"]["rtdose"]


def phantom(out: str = "data/dicom_phantom", profile: str = "lung", seed: int = 0, shape=(64, 64, 64),
            bits: int = 16, plan: bool = True, dose: bool = True) -> str:
    """Write a synthetic DICOM-RT patient (CT series, RTSTRUCT, RTPLAN, RTDOSE) from the phantom generator."""
    with_plan, with_dose = as_bool(plan, "plan"), as_bool(dose, "dose")
    case = make_phantom(profile, seed, tuple(int(s) for s in shape), case_id=f"dicom_phantom_{profile}_{seed}")
    return str(write_dicom_case(case, out, dose_bits=bits, with_plan=with_plan, with_dose=with_dose))


def export(case: str, out: str, bits: int = 16, plan: bool = True, dose: bool = True,
           fractions: int | None = None) -> str:
    """Write CASE as a DICOM-RT folder: CT series + RTSTRUCT, with --plan an RTPLAN of its prescriptions
    (--fractions if known) and with --dose the planned dose as RTDOSE. CASE is a canonical case folder (a converted
    OpenKBP patient, a phantom) or an OpenKBP patient folder as published (ct.csv, dose.csv, ...).

    Example: dosepred dicom export ../shared/data/openkbp/mini/validation-pats/pt_201 --out data/dicom/pt_201
    """
    with_plan, with_dose, bits = as_bool(plan, "plan"), as_bool(dose, "dose"), check_dose_bits(bits)
    source = Path(case)
    loaded = read_openkbp_patient(source) if (source / "ct.csv").is_file() else read_case(source)
    folder = write_dicom_case(loaded, out, fractions=fractions, dose_bits=bits, with_plan=with_plan,
                              with_dose=with_dose)
    print(f"wrote {folder}")
    return str(folder)
