"""OpenKBP CSV <-> canonical case, on the real mini patients."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import require_shared
from custom_nets.io.canonical import CaseError, read_case
from custom_nets.io.datalist import load_datalist
from custom_nets.io.openkbp import (
    OPENKBP_SHAPE,
    convert_openkbp,
    parse_sparse_csv,
    read_openkbp_patient,
    read_sparse_dose_csv,
    to_openkbp_grid,
    write_submission_csv,
)
from custom_nets.profiles import OPENKBP, dose_mask_thresholds
from custom_nets.transforms import LoadDoseCased, MergePTVd, dose_masks

MINI_PATIENTS = {"training": ["pt_1", "pt_2", "pt_3", "pt_4"], "validation": ["pt_201", "pt_202"]}


def _csv_rows(path: Path) -> dict[int, str]:
    """index -> value text, read plainly from an OpenKBP CSV."""
    lines = path.read_text().splitlines()[1:]
    return {int(line.split(",")[0]): line.split(",")[1] for line in lines if line}


def _patient_folder(case_id: str) -> Path:
    split = "validation-pats" if int(case_id[3:]) > 200 else "train-pats"
    return require_shared(f"data/openkbp/mini/{split}/{case_id}")


def test_mini_conversion_writes_every_patient_and_records_absent_rois(openkbp_mini_datalist):
    for split, expected in MINI_PATIENTS.items():
        entries = load_datalist(openkbp_mini_datalist, split)
        assert [e["case_id"] for e in entries] == expected
        for entry in entries:
            folder = _patient_folder(entry["case_id"])
            contoured = {p.stem for p in folder.glob("*.csv")} & set(OPENKBP.structures)
            assert set(entry["structures"]) == contoured
            assert set(entry["missing_structures"]) == set(OPENKBP.structures) - contoured
            assert entry["prescriptions_gy"] == {t: OPENKBP.targets[t] for t in OPENKBP.target_names if t in contoured}


@pytest.mark.parametrize("case_id", ["pt_1", "pt_2", "pt_201"])
def test_csv_nifti_csv_round_trip_is_exact(openkbp_mini_datalist, tmp_path, case_id):
    folder = _patient_folder(case_id)
    case = read_case(openkbp_mini_datalist.parent / "cases" / case_id)
    out = write_submission_csv(to_openkbp_grid(case.dose_gy, case.affine),
                               to_openkbp_grid(case.possible_dose_mask, case.affine), tmp_path / f"{case_id}.csv")
    original, written = _csv_rows(folder / "dose.csv"), _csv_rows(out)
    assert sorted(written) == sorted(original)
    assert all(float(written[i]) == float(original[i]) for i in original)
    assert list(written) == sorted(written)  # ascending, as the official sparse writer does
    for name in case.structures:
        mask_indices = np.flatnonzero(to_openkbp_grid(case.structures[name], case.affine).reshape(-1))
        assert mask_indices.tolist() == sorted(_csv_rows(folder / f"{name}.csv"))


def test_ct_is_clipped_and_shifted_to_hounsfield_units(openkbp_mini_datalist):
    folder = _patient_folder("pt_1")
    case = read_case(openkbp_mini_datalist.parent / "cases" / "pt_1")
    ct = to_openkbp_grid(case.ct_hu, case.affine).reshape(-1)
    rows = _csv_rows(folder / "ct.csv")
    listed = np.array(sorted(rows))
    raw = np.array([float(rows[i]) for i in listed])
    np.testing.assert_array_equal(ct[listed], np.clip(raw, 0, 4095) - 1024)
    unlisted = np.setdiff1d(np.arange(ct.size), listed)
    assert np.all(ct[unlisted] == -1024)
    assert case.spacing_mm == pytest.approx(tuple(np.loadtxt(folder / "voxel_dimensions.csv")))


def test_affine_puts_the_anatomy_the_right_way_up(openkbp_mini_datalist):
    """World (RAS) centroids: mandible anterior of the cord, brainstem above it, left parotid on the left."""
    for entry in load_datalist(openkbp_mini_datalist, "training"):
        case = read_case(entry["case"])

        def centroid(name: str) -> np.ndarray:
            ijk = np.argwhere(case.structures[name]).mean(axis=0)
            return case.affine[:3, :3] @ ijk + case.affine[:3, 3]

        x, y, z = 0, 1, 2
        if "Mandible" in case.structures:
            assert centroid("Mandible")[y] > centroid("SpinalCord")[y] + 20
        assert centroid("Brainstem")[z] > centroid("SpinalCord")[z] + 20
        if {"LeftParotid", "RightParotid"} <= set(case.structures):
            assert centroid("LeftParotid")[x] < centroid("RightParotid")[x] - 40  # RAS: +x is the right
        assert nib.aff2axcodes(case.affine) == ("P", "L", "I")


def test_merged_ptv_channel_on_a_real_patient(openkbp_mini_datalist):
    folder = _patient_folder("pt_1")
    expected = np.zeros(int(np.prod(OPENKBP_SHAPE)))
    for name in ("PTV56", "PTV63", "PTV70"):  # lowest first: an inner (higher) target overwrites an outer one
        expected[sorted(_csv_rows(folder / f"{name}.csv"))] = OPENKBP.targets[name] / 70.0
    entry = load_datalist(openkbp_mini_datalist, "training")[0]
    data = MergePTVd(OPENKBP.reference_dose_gy)(LoadDoseCased("case", "openkbp")(entry))
    merged = to_openkbp_grid(data["ptv_merged"][0].numpy(), data["ptv_merged"].affine.numpy()).reshape(-1)
    np.testing.assert_allclose(merged, expected, atol=1e-6)
    assert set(np.unique(merged).astype(float).round(6)) == {0.0, 0.8, 0.9, 1.0}


@pytest.mark.parametrize("mask_set", ["3", "5", "7", "10"])
def test_dose_mask_volumes_equal_a_direct_count_on_the_real_dose(openkbp_mini_datalist, mask_set):
    for entry in load_datalist(openkbp_mini_datalist, "validation"):
        values = np.array([float(v) for v in _csv_rows(_patient_folder(entry["case_id"]) / "dose.csv").values()])
        data = LoadDoseCased("case", "openkbp")(entry)
        masks = dose_masks(data["dose"] / OPENKBP.reference_dose_gy, dose_mask_thresholds(mask_set))
        for channel, fraction in enumerate(dose_mask_thresholds(mask_set)):
            direct = int(np.sum(values >= round(fraction * 70.0, 9)))  # in Gy, as a physicist counts
            assert int(masks[channel].sum()) == direct


def test_archive_streaming_converts_like_the_folder(tmp_path):
    mini = require_shared("data/openkbp/mini/train-pats")
    archive = tmp_path / "train-pats.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        for patient in ("pt_1", "pt_2"):
            tar.add(mini / patient, arcname=f"train-pats/{patient}")
    cases = convert_openkbp(archive, tmp_path / "cases")
    assert [c.name for c in cases] == ["pt_1", "pt_2"]
    from_folder = read_openkbp_patient(mini / "pt_2")
    from_archive = read_case(cases[1])
    np.testing.assert_array_equal(from_archive.dose_gy, from_folder.dose_gy.astype(np.float32))
    np.testing.assert_array_equal(from_archive.ct_hu, from_folder.ct_hu)


def _broken_copy(tmp_path: Path, edit) -> Path:
    folder = tmp_path / "pt_1"
    shutil.copytree(_patient_folder("pt_1"), folder)
    for f in folder.iterdir():
        f.chmod(0o644)
    edit(folder)
    return folder


@pytest.mark.parametrize(
    "edit, file, problem",
    [
        (lambda f: (f / "ct.csv").unlink(), "ct.csv", "file is missing"),
        (lambda f: (f / "Brainstem.csv").rename(f / "BrainStem_PRV.csv"), "BrainStem_PRV.csv", "unknown file"),
        (lambda f: (f / "dose.csv").write_text(",data\n1,2.0\n2097152,1.0\n"), "dose.csv", "out of range"),
        (lambda f: (f / "dose.csv").write_text(",data\n1,nan\n"), "dose.csv", "non-finite"),
        (lambda f: (f / "dose.csv").write_text("idx;value\n1;2\n"), "dose.csv", "header"),
        (lambda f: (f / "PTV70.csv").write_text(",data\n"), "PTV70.csv", "lists no voxel"),
        (lambda f: (f / "voxel_dimensions.csv").write_text("3.9\n3.9\n"), "voxel_dimensions.csv", "3 positive"),
    ],
)
def test_bad_openkbp_input_names_the_file_and_the_problem(tmp_path, edit, file, problem):
    folder = _broken_copy(tmp_path, edit)
    with pytest.raises(CaseError, match=problem) as err:
        read_openkbp_patient(folder)
    assert err.value.case_id == "pt_1" and err.value.file.endswith(file)


def test_submission_writer_refuses_negative_or_nan_dose_and_zeroes_outside_the_mask(tmp_path):
    mask = np.zeros(OPENKBP_SHAPE, dtype=bool)
    mask[60:62, 60:62, 60:62] = True
    dose = np.full(OPENKBP_SHAPE, 5.0, dtype=np.float32)
    rows = _csv_rows(write_submission_csv(dose, mask, tmp_path / "pt_9.csv"))
    assert sorted(rows) == np.flatnonzero(mask).tolist() and set(rows.values()) == {"5.0"}
    dose[0, 0, 0] = -1.0
    with pytest.raises(ValueError, match="negative"):
        write_submission_csv(dose, mask, tmp_path / "bad.csv")
    dose[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        write_submission_csv(dose, mask, tmp_path / "bad.csv")
    assert not (tmp_path / "bad.csv").exists()


def test_export_tool_reads_a_prediction_in_any_orientation(openkbp_mini_datalist, tmp_path):
    """A prediction saved in RAS order (as MONAI pipelines do) goes back to the official grid."""
    from custom_nets.reports.case_preview import to_ras
    from dosepred.openkbp import export

    case_dir = openkbp_mini_datalist.parent / "cases" / "pt_201"
    case = read_case(case_dir)
    ras = to_ras(case.dose_gy, case.affine)
    ras_affine = nib.as_closest_canonical(nib.Nifti1Image(case.dose_gy, case.affine)).affine
    nib.save(nib.Nifti1Image(ras, ras_affine), tmp_path / "pred.nii.gz")
    out = export(str(tmp_path / "pred.nii.gz"), str(case_dir), str(tmp_path / "pt_201.csv"))
    reference = read_sparse_dose_csv(_patient_folder("pt_201") / "dose.csv")
    np.testing.assert_array_equal(read_sparse_dose_csv(out), reference)


def test_sparse_parser_reads_mask_and_value_rows():
    indices, values = parse_sparse_csv(",data\n5,1.5\n7,0\n", "x.csv")
    assert indices.tolist() == [5, 7] and values.tolist() == [1.5, 0.0]
    indices, values = parse_sparse_csv(",data\n5,\n7,\n", "x.csv", with_values=False)
    assert indices.tolist() == [5, 7] and values is None
    with pytest.raises(ValueError, match="repeated"):
        parse_sparse_csv(",data\n5,\n5,\n", "x.csv", with_values=False)


def test_datalist_prescription_disagreement_is_an_error(openkbp_mini_datalist):
    entry = dict(load_datalist(openkbp_mini_datalist, "training")[0])
    entry["prescriptions_gy"] = {**entry["prescriptions_gy"], "PTV70": 66.0}
    with pytest.raises(CaseError, match="datalist prescriptions"):
        LoadDoseCased("case", "openkbp")(entry)
    assert json.loads((Path(entry["case"]) / "case.json").read_text())["prescriptions_gy"]["PTV70"] == 70.0
    assert torch.is_tensor(LoadDoseCased("case", "openkbp")(load_datalist(openkbp_mini_datalist)[0])["ptv"])
