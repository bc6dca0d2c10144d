"""The clinical path end to end, with bundles trained on the OpenKBP mini patients (tiny widths, CPU):
a synthetic DICOM patient through `dosepred predict`; a packaged bundle fetched by `download_large_files` and run
outside the repository; the loading contracts of MONAI Deploy and MONAI Label.

monai-deploy-app-sdk needs holoscan (CUDA builds) and monailabel pins a torchvision that does not import beside
torch 2.13 here, so the two loaders are reproduced from their source (MonaiBundleInferenceOperator._init_config /
get_bundle_config of monai-deploy-app-sdk 4.0.0; BundleInferTask.__init__ / BasicInferTask._get_network of
monailabel 0.8.5): the same files, ids, calls and checks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch

from conftest import CONFIGS, REPO_ROOT, TINY, run_bundle, run_dciodvfy
from custom_nets.bundles.config import bundle_parser
from custom_nets.bundles.packaging import package_bundle, sha256_of
from custom_nets.io.canonical import PREDICTED_DOSE_FILE
from custom_nets.io.datalist import load_datalist
from custom_nets.io.dicom.export import DICOM_FILES, write_dicom_case
from custom_nets.io.dicom.importer import import_dicom_case
from custom_nets.io.dicom.rtdose import read_rt_dose
from custom_nets.io.dicom.rtstruct import rasterise, read_structure_set
from custom_nets.networks import random_weights_
from custom_nets.phantoms import make_phantom
from custom_nets.predict import PatientsFailed
from custom_nets.reports.dosimetric_evaluation import read_predicted_dose
from custom_nets.reports.tables import read_csv
from dosepred.dicom import predict

TINY_IDS = {TINY[i][2:]: json.loads(TINY[i + 1]) for i in range(0, len(TINY), 2)}
OPENKBP_CONFIGS = ["configs/openkbp.json", "configs/cpu.json"]
CT_SHAPE = (48, 48, 32)
SYNONYMS = {"RightParotid": "Parotid_R", "LeftParotid": "Lt Parotid", "SpinalCord": "Cord",
            "Brainstem": "Brain Stem"}


@pytest.fixture(scope="module")
def dicom_patient(tmp_path_factory) -> Path:
    case = make_phantom("openkbp", 11, CT_SHAPE, case_id="dicom_phantom_11")
    return write_dicom_case(case, tmp_path_factory.mktemp("dicom") / "patient", roi_names=SYNONYMS)


def _ct_slices(folder: Path) -> list[pydicom.Dataset]:
    slices = [pydicom.dcmread(p) for p in folder.glob("CT.*.dcm")]
    return sorted(slices, key=lambda ds: float(ds.ImagePositionPatient[2]))


def test_predict_writes_an_rt_dose_on_the_ct_geometry(openkbp_bundles, dicom_patient, tmp_path):
    out = tmp_path / "out"
    rtdose_path = Path(predict(str(dicom_patient), bundle=str(openkbp_bundles / "cascunet_basic"), out=str(out),
                               configs=OPENKBP_CONFIGS, grid_shape=CT_SHAPE, overrides=TINY_IDS))
    ds = pydicom.dcmread(rtdose_path)
    slices = _ct_slices(dicom_patient)
    first = slices[0]
    assert ds.Modality == "RTDOSE" and ds.DoseUnits == "GY" and ds.DoseSummationType == "PLAN"
    for key in ("PatientID", "StudyInstanceUID", "FrameOfReferenceUID"):
        assert ds[key].value == first[key].value, key
    assert [float(v) for v in ds.ImagePositionPatient] == [float(v) for v in first.ImagePositionPatient]
    assert [float(v) for v in ds.ImageOrientationPatient] == [float(v) for v in first.ImageOrientationPatient]
    assert [float(v) for v in ds.PixelSpacing] == [float(v) for v in first.PixelSpacing]
    assert (ds.Rows, ds.Columns, int(ds.NumberOfFrames)) == (first.Rows, first.Columns, len(slices))
    slice_step = float(slices[1].ImagePositionPatient[2]) - float(first.ImagePositionPatient[2])
    np.testing.assert_allclose(np.diff([float(v) for v in ds.GridFrameOffsetVector]), slice_step)
    plan = pydicom.dcmread(dicom_patient / DICOM_FILES["RTPLAN"])
    assert ds.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == plan.SOPInstanceUID
    assert run_dciodvfy(rtdose_path) == []

    # The model grid is the CT grid here, so the RT Dose holds the network's prediction up to quantisation.
    report = json.loads((out / "predict_report.json").read_text())
    case_id = "dicom_phantom_11"
    assert not (out / "work" / "cases").exists()  # the imported case went to the bundle in memory
    case = import_dicom_case(dicom_patient, "openkbp", grid_shape=CT_SHAPE).case
    predicted = read_predicted_dose(out / "work" / "predictions" / case_id / PREDICTED_DOSE_FILE, case.affine,
                                    case.shape)
    written = read_rt_dose(rtdose_path).dose_gy
    assert written.max() > 0
    float32_rounding = 2 * np.finfo(np.float32).eps * float(predicted.max())  # the prediction is stored as float32
    assert np.abs(written - predicted).max() <= float(ds.DoseGridScaling) / 2 + float32_rounding
    assert report["roi_mapping"]["SpinalCord"] == "Cord" and report["roi_mapping"]["RightParotid"] == "Parotid_R"
    assert set(report["timings_s"]) == {"import_s", "bundle_setup_s", "inference_s", "export_s"}

    # DVH table: every structure, predicted and planned, with the dose of the written RT Dose.
    rows = read_csv(out / "dvh_metrics.csv")
    structures = read_structure_set(dicom_patient / DICOM_FILES["RTSTRUCT"])
    grid = read_rt_dose(rtdose_path).grid
    assert {r["structure"] for r in rows} == set(case.structures)
    for row in rows:
        if row["dose"] != "predicted":
            continue
        mask = rasterise(structures.roi(row["roi"]).contours, grid)
        assert float(row["Dmean"]) == pytest.approx(float(written[mask].mean()), abs=1e-3), row["structure"]
        assert float(row["volume_cc"]) == pytest.approx(mask.sum() * np.prod(grid.spacing_mm) / 1000, rel=1e-9)
    assert {r["dose"] for r in rows} == {"predicted", "planned"}
    assert (out / "dvh.png").stat().st_size > 10_000
    nifti = nib.load(str(out / "dose_predicted.nii.gz"))
    np.testing.assert_allclose(np.asarray(nifti.dataobj), predicted, atol=1e-5)


def test_predict_runs_both_stages_of_a_mask_variant_without_a_plan(openkbp_bundles, dicom_patient, tmp_path):
    patient = Path(shutil.copytree(dicom_patient, tmp_path / "patient"))
    (patient / DICOM_FILES["RTPLAN"]).unlink()
    (patient / DICOM_FILES["RTDOSE"]).unlink()
    rois = [r.name for r in read_structure_set(patient / DICOM_FILES["RTSTRUCT"]).rois if r.name.startswith("PTV")]
    prescriptions = {roi: float(roi[3:]) for roi in rois}
    out = tmp_path / "out"
    rtdose_path = Path(predict(str(patient), bundle=str(openkbp_bundles / "cascunet_dm3"), out=str(out),
                               configs=OPENKBP_CONFIGS, grid_shape=(32, 32, 32), overrides=TINY_IDS,
                               prescriptions=json.dumps(prescriptions)))
    info = json.loads((out / "work" / "predictions" / "dicom_phantom_11" / "prediction.json").read_text())
    assert info["mask_source"] == "prior" and info["dose_masks"] == [0.1, 0.5, 0.9]
    ds = pydicom.dcmread(rtdose_path)
    written_plan = pydicom.dcmread(out / "RP_prescription.dcm")
    assert ds.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == written_plan.SOPInstanceUID
    assert sorted(float(r.TargetPrescriptionDose) for r in written_plan.DoseReferenceSequence) == sorted(
        prescriptions.values())
    assert (ds.Rows, ds.Columns, int(ds.NumberOfFrames)) == (CT_SHAPE[1], CT_SHAPE[0], CT_SHAPE[2])
    assert read_rt_dose(rtdose_path).dose_gy.max() > 0
    assert run_dciodvfy(rtdose_path) == []
    assert {r["dose"] for r in read_csv(out / "dvh_metrics.csv")} == {"predicted"}

    # predicting again into that folder, now with the patient's plan, replaces the earlier run as a whole
    predict(str(dicom_patient), bundle=str(openkbp_bundles / "cascunet_dm3"), out=str(out), configs=OPENKBP_CONFIGS,
            grid_shape=(32, 32, 32), overrides=TINY_IDS)
    assert not (out / "RP_prescription.dcm").exists()
    report = json.loads((out / "predict_report.json").read_text())
    assert "rtplan" not in report["outputs"] and report["plan"].endswith(DICOM_FILES["RTPLAN"])


def test_predict_gives_a_bundle_with_masks_from_the_plan_the_planned_dose_on_its_grid(dicom_patient, tmp_path):
    """Dose masks from the planned dose (``mask_source: reference``, the oracle of the mask studies): the only input
    that needs the planned dose on the model grid, which `predict` otherwise leaves out of the imported case."""
    settings = {**TINY_IDS, "prior_checkpoint": None, "mask_source": "reference"}
    bundle = Path(shutil.copytree(REPO_ROOT / "bundles" / "cascunet_dm3", tmp_path / "cascunet_dm3",
                                  ignore=shutil.ignore_patterns("models")))
    configs = ["configs/inference.json", *OPENKBP_CONFIGS]
    network = random_weights_(bundle_parser(bundle, configs, settings).get_parsed_content("network_def"))
    (bundle / "models").mkdir()
    torch.save(network.state_dict(), bundle / "models" / "model.pt")
    out = tmp_path / "out"
    predict(str(dicom_patient), bundle=str(bundle), out=str(out), configs=OPENKBP_CONFIGS, grid_shape=(32, 32, 32),
            overrides=settings)
    info = json.loads((out / "work" / "predictions" / "dicom_phantom_11" / "prediction.json").read_text())
    assert info["mask_source"] == "reference" and info["dose_masks"] == [0.1, 0.5, 0.9]
    without_plan_dose = Path(shutil.copytree(dicom_patient, tmp_path / "patient"))
    (without_plan_dose / DICOM_FILES["RTDOSE"]).unlink()
    with pytest.raises(ValueError, match="makes its input dose masks from the planned dose .* holds no RT Dose"):
        predict(str(without_plan_dose), bundle=str(bundle), out=str(tmp_path / "out2"), configs=OPENKBP_CONFIGS,
                grid_shape=(32, 32, 32), overrides=settings)


def test_predict_gives_each_of_several_patients_what_it_gives_that_patient_alone(openkbp_bundles, dicom_patient,
                                                                                 tmp_path):
    """Several patients share one start of the bundle: the mask variant's evaluator runs again on each (its bf16
    prior wrapped by the first run, its checkpoint loaded once); a broken patient is reported, the others written."""
    second = write_dicom_case(make_phantom("openkbp", 12, CT_SHAPE, case_id="dicom_phantom_12"),
                              tmp_path / "dicom" / "second", roi_names=SYNONYMS)
    broken = Path(shutil.copytree(dicom_patient, tmp_path / "dicom" / "broken"))
    (broken / DICOM_FILES["RTSTRUCT"]).unlink()
    options = {"bundle": str(openkbp_bundles / "cascunet_dm3"), "configs": OPENKBP_CONFIGS,
               "grid_shape": (32, 32, 32), "overrides": TINY_IDS}
    out = tmp_path / "cohort"
    with pytest.raises(PatientsFailed, match="1 of 3 patients not predicted .* broken: .*no RT Structure Set"):
        predict(str(dicom_patient), str(broken), str(second), out=str(out), **options)
    summary = json.loads((out / "predict_summary.json").read_text())
    assert summary["failed"] == ["broken"] and sorted(p.name for p in out.iterdir()) == [
        "patient", "predict_summary.json", "second"]
    assert "bundle_setup_s" in summary["patients"]["patient"]["timings_s"]
    assert "bundle_setup_s" not in summary["patients"]["second"]["timings_s"]

    for folder, name in ((dicom_patient, "patient"), (second, "second")):
        alone = Path(predict(str(folder), out=str(tmp_path / f"alone_{name}"), **options))
        together = out / name / "RD_predicted.dcm"
        assert summary["patients"][name]["outputs"]["rtdose"] == str(together)
        assert pydicom.dcmread(together).pixel_array.max() > 0
        np.testing.assert_array_equal(pydicom.dcmread(together).pixel_array, pydicom.dcmread(alone).pixel_array)
        assert read_csv(out / name / "dvh_metrics.csv") == read_csv(alone.parent / "dvh_metrics.csv")


def test_predict_refuses_patient_folders_of_one_name_before_any_work(tmp_path):
    first, second = tmp_path / "a" / "DICOM", tmp_path / "b" / "DICOM"
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    with pytest.raises(ValueError, match=r"share the name\(s\) \['DICOM'\]"):
        predict(str(first), str(second), bundle=str(REPO_ROOT / "bundles" / "cascunet_basic"),
                out=str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="DICOM folder not found: .*missing"):
        predict(str(first), str(tmp_path / "missing"), out=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    # a bundle that cannot start stops the call before any patient, not once per patient
    (tmp_path / "weights.pt").write_bytes(b"")
    (tmp_path / "c" / "other").mkdir(parents=True)
    with pytest.raises(ValueError, match="checkpoint .*weights.pt"):
        predict(str(first), str(tmp_path / "c" / "other"), out=str(tmp_path / "out"),
                ckpt_path=str(tmp_path / "weights.pt"))
    assert list((tmp_path / "out").iterdir()) == []


def test_predict_refuses_a_grid_the_networks_cannot_take(openkbp_bundles, dicom_patient, tmp_path):
    with pytest.raises(ValueError, match="multiples of 16"):
        predict(str(dicom_patient), bundle=str(openkbp_bundles / "cascunet_basic"), out=str(tmp_path),
                configs=OPENKBP_CONFIGS, grid_shape=(48, 48, 30))


# --- a shared bundle --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fetched_bundle(openkbp_bundles, tmp_path_factory) -> Path:
    """cascunet_basic packaged with the settings it was trained with, unpacked elsewhere, weights fetched by
    MONAI's download_large_files from the file:// location of the release assets."""
    root = tmp_path_factory.mktemp("release")
    packaged = package_bundle(openkbp_bundles / "cascunet_basic", root / "dist", override_files=OPENKBP_CONFIGS,
                              overrides=TINY_IDS)
    with zipfile.ZipFile(packaged.archive) as archive:
        archive.extractall(root / "unpacked")
    bundle = root / "unpacked" / "cascunet_basic"
    assert not (bundle / "models").exists()
    subprocess.run([sys.executable, "-m", "monai.bundle", "download_large_files", "--bundle_path", str(bundle)],
                   cwd=root, check=True, capture_output=True, timeout=300)
    for relative, asset in packaged.assets.items():
        assert sha256_of(bundle / relative) == sha256_of(asset)
    return bundle


def test_download_large_files_checks_the_sha256(fetched_bundle, tmp_path):
    bundle = Path(shutil.copytree(fetched_bundle, tmp_path / "bundle"))
    shutil.rmtree(bundle / "models")
    yml = bundle / "large_files.yml"
    lines = yml.read_text().splitlines()
    yml.write_text("\n".join(line.replace('hash_val: "', 'hash_val: "0') if "hash_val" in line else line
                             for line in lines) + "\n")
    result = subprocess.run([sys.executable, "-m", "monai.bundle", "download_large_files", "--bundle_path",
                             str(bundle)], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "hash check" in (result.stdout + result.stderr)
    assert not (bundle / "models" / "model.pt").exists()


def test_packaged_bundle_runs_outside_the_repository(fetched_bundle, openkbp_bundles, openkbp_mini_datalist):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([sys.executable, "-c", "import custom_nets; print(custom_nets.__file__)"],
                           cwd=fetched_bundle, capture_output=True, text=True, env=env, check=True).stdout
    assert Path(where.strip()).is_relative_to(fetched_bundle)
    subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
                    "--dataset_dir", str(openkbp_mini_datalist.parent), "--split", "validation"],
                   cwd=fetched_bundle, check=True, capture_output=True, env=env, timeout=600)
    for entry in load_datalist(openkbp_mini_datalist, "validation"):
        ours = fetched_bundle / "predictions" / entry["case_id"] / PREDICTED_DOSE_FILE
        original = openkbp_bundles / "cascunet_basic" / "predictions" / entry["case_id"] / PREDICTED_DOSE_FILE
        np.testing.assert_allclose(_load(ours), _load(original), atol=1e-4)


def _load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj, dtype=np.float64)


def _predict_case(entry: dict, preprocessing, inferer, network, postprocessing, device) -> None:
    """One case through loaded bundle components, as both loaders drive them (image in, pred out)."""
    data = preprocessing(dict(entry))
    with torch.no_grad():
        pred = inferer(data["image"][None].to(device), network)
    data["pred"] = pred[0]
    postprocessing(data)


@pytest.fixture(scope="module")
def fp32_predictions(openkbp_bundles, openkbp_mini_datalist, tmp_path_factory) -> Path:
    """The basic bundle's validation predictions in fp32 (``frozen``): MONAI Deploy and Label run the network as
    they load it, without the bundle's ``inference_mode`` (``auto``: bf16 on CPUs with native bf16)."""
    out = tmp_path_factory.mktemp("fp32_predictions")
    run_bundle(openkbp_bundles / "cascunet_basic", "run", "--config_file", CONFIGS["infer"], "--dataset_dir",
               str(openkbp_mini_datalist.parent), *TINY, "--split", "validation", "--inference_mode", "frozen",
               "--output_dir", str(out))
    return out


def test_monai_deploy_loading_contract(fetched_bundle, fp32_predictions, openkbp_mini_datalist, tmp_path,
                                       monkeypatch):
    from monai.bundle import ConfigParser

    torchscript = fetched_bundle / "models" / "model.ts"
    # get_bundle_config: <file stem>/extra/metadata.json as the parser's meta, the named configs extracted and read.
    parser = ConfigParser()
    with zipfile.ZipFile(torchscript) as archive:
        name = torchscript.stem
        parser.read_meta(f=json.loads(archive.read(f"{name}/extra/metadata.json")))
        archive.extract(f"{name}/extra/inference.json", tmp_path)
    parser.read_config([tmp_path / name / "extra" / "inference.json"])
    parser.parse()
    meta = parser["_meta_"]
    assert list(meta["network_data_format"]["inputs"]) == ["image"]
    assert list(meta["network_data_format"]["outputs"]) == ["pred"]
    device = parser.get_parsed_content("device")
    inferer = parser.get_parsed_content("inferer")
    disallowed = ("LoadImage", "SaveImage")  # Deploy's operator drops these from the composes (in-memory I/O)
    preprocessing = parser.get_parsed_content("preprocessing")
    postprocessing = parser.get_parsed_content("postprocessing")
    for compose in (preprocessing, postprocessing):
        compose.transforms = tuple(t for t in compose.transforms
                                   if not any(d in type(t).__name__ for d in disallowed))
    network = torch.jit.load(str(torchscript), map_location=device).eval()
    monkeypatch.chdir(tmp_path)  # inference.json writes to $bundle_root/predictions, bundle_root "." here
    for entry in load_datalist(openkbp_mini_datalist, "validation"):
        _predict_case(entry, preprocessing, inferer, network, postprocessing, device)
        original = fp32_predictions / entry["case_id"] / PREDICTED_DOSE_FILE
        np.testing.assert_allclose(_load(tmp_path / "predictions" / entry["case_id"] / PREDICTED_DOSE_FILE),
                                   _load(original), atol=1e-4)


def test_monai_label_loading_contract(fetched_bundle, fp32_predictions, openkbp_mini_datalist, tmp_path):
    from monai.bundle import ConfigParser

    # BundleInferTask: configs/inference.json alone, bundle_root set to the bundle folder, network_def + model.pt.
    parser = ConfigParser()
    parser.read_config(str(fetched_bundle / "configs" / "inference.json"))
    parser.config.update({"bundle_root": str(fetched_bundle)})
    parser["output_dir"] = str(tmp_path / "predictions")
    network = parser.get_parsed_content("network_def", instantiate=True)
    checkpoint = torch.load(fetched_bundle / "models" / "model.pt", map_location="cpu")
    state = checkpoint.get("model", checkpoint)
    assert set(network.state_dict()) == set(state)  # BasicInferTask refuses mismatching keys
    network.load_state_dict(state, strict=True)
    network.eval()
    metadata = json.loads((fetched_bundle / "configs" / "metadata.json").read_text())
    assert next(iter(metadata["network_data_format"]["inputs"])) == "image"
    assert next(iter(metadata["network_data_format"]["outputs"])) == "pred"
    device = parser.get_parsed_content("device")
    network.to(device)
    preprocessing = parser.get_parsed_content("preprocessing", instantiate=True)
    inferer = parser.get_parsed_content("inferer", instantiate=True)
    postprocessing = parser.get_parsed_content("postprocessing", instantiate=True)
    for entry in load_datalist(openkbp_mini_datalist, "validation"):
        _predict_case(entry, preprocessing, inferer, network, postprocessing, device)
        original = fp32_predictions / entry["case_id"] / PREDICTED_DOSE_FILE
        np.testing.assert_allclose(_load(tmp_path / "predictions" / entry["case_id"] / PREDICTED_DOSE_FILE),
                                   _load(original), atol=1e-4)
