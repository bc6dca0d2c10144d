"""The canonical case format: what is written is read back; bad cases are refused with a named reason."""

from __future__ import annotations

import json
from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest

from custom_nets.io.canonical import CaseError, read_case, write_case
from custom_nets.io.datalist import load_datalist, write_datalist
from custom_nets.phantoms import make_phantom


@pytest.fixture(scope="module")
def case():
    return make_phantom("lung", 1, (32, 32, 32), case_id="lung_case")


def _copy(case, **changes):
    changes.setdefault("structures", dict(case.structures))
    changes.setdefault("prescriptions_gy", dict(case.prescriptions_gy))
    return replace(case, **changes)


def test_written_case_reads_back_identically(case, tmp_path):
    folder = write_case(case, tmp_path / case.case_id)
    back = read_case(folder)
    np.testing.assert_array_equal(back.ct_hu, case.ct_hu)
    np.testing.assert_array_equal(back.dose_gy, case.dose_gy)
    np.testing.assert_allclose(back.affine, case.affine)
    assert back.prescriptions_gy == case.prescriptions_gy
    assert set(back.structures) == set(case.structures)
    for name in case.structures:
        np.testing.assert_array_equal(back.structures[name], case.structures[name])
    meta = json.loads((folder / "case.json").read_text())
    assert meta["spacing_mm"] == pytest.approx(list(case.spacing_mm))
    image = nib.load(folder / "dose.nii.gz")
    assert image.header.get_xyzt_units()[0] == "mm" and image.get_data_dtype() == np.float32


def _with_nan(case):
    ct = case.ct_hu.copy()
    ct[3, 3, 3] = np.nan
    return _copy(case, ct_hu=ct)


def _with_negative_dose(case):
    dose = case.dose_gy.copy()
    dose[0, 0, 0] = -0.5
    return _copy(case, dose_gy=dose)


def _without(case, name):
    bad = _copy(case)
    del bad.structures[name]
    return bad


def _empty(case, name):
    bad = _copy(case)
    bad.structures[name] = np.zeros_like(bad.structures[name])
    return bad


def _unknown(case):
    bad = _copy(case)
    bad.structures["GTV"] = bad.structures["Heart"]
    return bad


def _wrong_shape(case):
    bad = _copy(case)
    bad.structures["Heart"] = bad.structures["Heart"][:-1]
    return bad


def _no_rx(case):
    bad = _copy(case)
    del bad.prescriptions_gy[next(iter(bad.prescriptions_gy))]
    return bad


def _rx_for_oar(case):
    bad = _copy(case)
    bad.prescriptions_gy["Heart"] = 30.0
    return bad


@pytest.mark.parametrize(
    "make_bad, problem",
    [
        (_with_nan, "CT contains NaN"),
        (_with_negative_dose, "negative"),
        (lambda c: _empty(c, "Heart"), "structure Heart is empty"),
        (_unknown, "unknown structure 'GTV'"),
        (_wrong_shape, "differs from the CT's"),
        (_no_rx, "has no prescription"),
        (_rx_for_oar, "not contoured targets"),
        (lambda c: _without(c, "Body"), "body contour is missing"),
        (lambda c: _copy(c, structures={k: v for k, v in c.structures.items() if not k.startswith("PTV")},
                         prescriptions_gy={}), "no target contoured"),
    ],
)
def test_bad_cases_are_refused_and_nothing_is_written(case, tmp_path, make_bad, problem):
    with pytest.raises(CaseError, match=problem) as err:
        write_case(make_bad(case), tmp_path / "bad")
    assert err.value.case_id == "lung_case"
    assert not (tmp_path / "bad").exists()
    assert not list(tmp_path.iterdir())  # no temporary folder left behind


def test_a_resampled_ct_is_stored_in_whole_hounsfield_units_rounded_not_truncated(case, tmp_path):
    fractional = replace(case, ct_hu=case.ct_hu.astype(np.float32) + np.float32(0.7))
    back = read_case(write_case(fractional, tmp_path / "fractional"))
    np.testing.assert_array_equal(back.ct_hu, np.rint(fractional.ct_hu))


def test_an_absent_oar_is_recorded_not_an_error(case, tmp_path):
    folder = write_case(_without(case, "Esophagus"), tmp_path / "c")
    unused_targets = [t for t in ("PTV65", "PTV60", "PTV50", "PTV45") if t not in case.prescriptions_gy]
    expected = ["Esophagus", *unused_targets]  # profile order: OARs, then targets
    assert json.loads((folder / "case.json").read_text())["missing_structures"] == expected
    assert read_case(folder).missing_structures == expected


def test_read_names_the_file_for_a_missing_volume_or_a_grid_mismatch(case, tmp_path):
    folder = write_case(case, tmp_path / "c")
    (folder / "structures" / "Heart.nii.gz").unlink()
    with pytest.raises(CaseError, match="file is missing") as err:
        read_case(folder)
    assert err.value.file.endswith("Heart.nii.gz")
    folder = write_case(case, tmp_path / "d")
    image = nib.load(folder / "dose.nii.gz")
    shifted = image.affine.copy()
    shifted[0, 3] += 5.0
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj), shifted), folder / "dose.nii.gz")
    with pytest.raises(CaseError, match="affine") as err:
        read_case(folder)
    assert err.value.file.endswith("dose.nii.gz")
    with pytest.raises(CaseError, match="case.json is missing"):
        read_case(tmp_path)


def test_rewriting_a_case_replaces_it_whole(case, tmp_path):
    write_case(case, tmp_path / "c")
    write_case(_without(case, "Esophagus"), tmp_path / "c")
    assert not (tmp_path / "c" / "structures" / "Esophagus.nii.gz").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_datalist_paths_are_relative_and_resolve(case, tmp_path):
    folder = write_case(case, tmp_path / "data" / "cases" / case.case_id)
    datalist = write_datalist(tmp_path / "data" / "datalist.json", "lung", {"validation": [folder]})
    doc = json.loads(datalist.read_text())
    assert doc["validation"][0]["case"] == "cases/lung_case" and doc["reference_dose_gy"] == 65.0
    (tmp_path / "data").rename(tmp_path / "moved")
    entry = load_datalist(tmp_path / "moved" / "datalist.json", "validation")[0]
    assert read_case(entry["case"]).case_id == "lung_case"
    with pytest.raises(ValueError, match="unknown split"):
        load_datalist(tmp_path / "moved" / "datalist.json", "train")
