"""DICOM-RT in and out: the real dicompyler-core patient, the project's synthetic DICOM patients, malformed input."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from custom_nets.io.canonical import read_case, write_case
from custom_nets.io.dicom.contours import mask_to_polygons
from custom_nets.io.dicom.geometry import AxialGrid
from custom_nets.io.dicom.importer import import_dicom_case
from custom_nets.io.dicom.resample import resample_to_grid
from custom_nets.io.dicom.rtdose import dose_grid_scaling, read_rt_dose, write_rt_dose
from custom_nets.io.dicom.rtstruct import rasterise, read_structure_set
from custom_nets.io.orientation import axcodes_of, reorient
from custom_nets.metrics.dvh import cumulative_dvh, oar_metrics
from custom_nets.io.dicom.export import DICOM_FILES, write_dicom_case
from custom_nets.phantoms import make_phantom
from tests.conftest import require_shared, run_dciodvfy

DICOMPYLER = "data/dicom-rt/dicompyler-example"


def _axial_grid(shape=(40, 30, 12), spacing=(1.5, 2.0, 3.0), origin=(-30.0, -20.0, 10.0)) -> AxialGrid:
    return AxialGrid(np.asarray(origin), np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), spacing, shape)


# --- the real patient ------------------------------------------------------------------------------------------

def test_heart_dvh_on_the_planning_systems_dose_grid():
    folder = require_shared(DICOMPYLER)
    structures = read_structure_set(folder / "rtss.dcm")
    dose = read_rt_dose(folder / "rtdose.dcm")
    heart = rasterise(structures.roi("Heart").contours, dose.grid)
    voxel_mm3 = float(np.prod(np.abs(dose.grid.spacing_mm)))
    metrics = oar_metrics(dose.dose_gy, heart, voxel_mm3)
    # dicompyler-core's test suite: 440.23 cc, mean 0.6475 Gy, max 3.1 Gy (1 cGy bins)
    assert round(heart.sum() * voxel_mm3 / 1000, 2) == 440.23
    assert metrics["Dmean"] == pytest.approx(0.6475, abs=5e-5)
    assert round(metrics["Dmax"], 1) == 3.1
    levels, volume_percent = cumulative_dvh(dose.dose_gy[heart], bin_width_gy=0.01)
    assert volume_percent[0] == 100.0 and volume_percent[-2] > 0 == volume_percent[-1] and levels[-1] < 3.11


def test_reading_the_planning_systems_rt_dose_gives_the_stored_dose():
    path = require_shared(DICOMPYLER) / "rtdose.dcm"
    ds = pydicom.dcmread(path)
    dose = read_rt_dose(path)
    assert dose.grid.shape == (ds.Columns, ds.Rows, ds.NumberOfFrames) == (194, 129, 98)
    assert dose.grid.spacing_mm == (2.5, 2.5, 3.0)
    np.testing.assert_allclose(dose.grid.origin_lps, [float(v) for v in ds.ImagePositionPatient])
    stored = ds.pixel_array.astype(np.float64) * float(ds.DoseGridScaling)  # (frames, rows, columns)
    np.testing.assert_allclose(dose.dose_gy, stored.transpose(2, 1, 0), rtol=1e-6)
    frame, row, column = 40, 70, 100
    expected_position = (np.asarray(ds.ImagePositionPatient, dtype=float)
                         + [column * 2.5, row * 2.5, float(ds.GridFrameOffsetVector[frame])])
    np.testing.assert_allclose(dose.grid.affine_lps @ [column, row, frame, 1], [*expected_position, 1])


def test_a_roi_without_contours_in_the_real_structure_set_is_read_as_empty():
    structures = read_structure_set(require_shared(DICOMPYLER) / "rtss.dcm")
    assert structures.roi("Areola").contours == []
    assert len(structures.rois) == 10


# --- rasteriser, contours, resampling --------------------------------------------------------------------------

def test_rasteriser_takes_voxel_centres_inside_float_polygons_and_xors_holes():
    matplotlib_path = pytest.importorskip("matplotlib.path")
    grid = _axial_grid()
    angles = np.linspace(0, 2 * np.pi, 37)[:-1]
    outer = np.stack([3.3 + 17.7 * np.cos(angles), 4.1 + 13.2 * np.sin(angles)], axis=1)
    hole = np.stack([5.0 + 6.1 * np.cos(angles), 2.0 + 4.3 * np.sin(angles)], axis=1)
    z_plane = grid.slice_positions_mm[5] + 0.4  # contours sit between planes; the nearest plane takes them
    contours = [np.column_stack([p, np.full(len(p), z_plane)]) for p in (outer, hole)]
    mask = rasterise(contours, grid)
    assert mask[:, :, [k for k in range(12) if k != 5]].sum() == 0
    x = grid.origin_lps[0] + 1.5 * np.arange(40)
    y = grid.origin_lps[1] + 2.0 * np.arange(30)
    centres = np.stack(np.meshgrid(x, y, indexing="ij"), axis=-1).reshape(-1, 2)
    expected = (matplotlib_path.Path(outer).contains_points(centres)
                ^ matplotlib_path.Path(hole).contains_points(centres)).reshape(40, 30)
    np.testing.assert_array_equal(mask[:, :, 5], expected)
    assert 0 < expected.sum() < 40 * 30


def test_pixel_border_contours_rasterise_back_to_the_mask_exactly():
    rng = np.random.default_rng(0)
    grid = _axial_grid(shape=(24, 20, 3))
    for _ in range(5):
        mask2d = rng.random((24, 20)) < 0.45  # diagonal touches, holes, single pixels
        mask2d[8:14, 6:12] = True
        mask2d[10:12, 8:10] = False  # a hole
        contours = [np.column_stack([grid.origin_lps[0] + p[:, 0] * 1.5, grid.origin_lps[1] + p[:, 1] * 2.0,
                                     np.full(len(p), grid.slice_positions_mm[1])]) for p in mask_to_polygons(mask2d)]
        np.testing.assert_array_equal(rasterise(contours, grid)[:, :, 1], mask2d)


def test_resampling_is_exact_on_the_same_grid_and_exact_for_linear_fields():
    grid = _axial_grid()
    finer = grid.resampled((79, 59, 23))
    xs = np.meshgrid(*[np.arange(n) * s for n, s in zip(grid.shape, grid.spacing_mm)], indexing="ij")
    field = 2.0 + 0.3 * xs[0] - 0.1 * xs[1] + 0.05 * xs[2]
    np.testing.assert_array_equal(resample_to_grid(field, grid, grid), field)
    there = resample_to_grid(field, grid, finer)
    np.testing.assert_allclose(resample_to_grid(there, finer, grid), field, atol=1e-4)
    assert finer.affine_lps[:3, 3].tolist() == grid.affine_lps[:3, 3].tolist()
    np.testing.assert_allclose(finer.affine_lps @ [78, 58, 22, 1], grid.affine_lps @ [39, 29, 11, 1])


def test_axis_aligned_resampling_matches_scipys_trilinear_interpolation():
    """The 1-D passes give what scipy's trilinear interpolation (edge voxels extended) gives, to float32 rounding:
    up and down in size, a flipped axis, a two-slice source."""
    from scipy import ndimage
    rng = np.random.default_rng(3)
    cases = [(_axial_grid(shape=(32, 24, 16)), (48, 36, 16)), (_axial_grid(shape=(48, 36, 20)), (32, 24, 9)),
             (_axial_grid(shape=(20, 18, 2)), (31, 7, 5))]
    for source, shape in cases:
        field = (rng.random(source.shape, dtype=np.float32) * 70).astype(np.float32)
        target = source.resampled(shape)
        # the same voxel centres, the first axis reversed
        flipped = AxialGrid(target.origin_lps + target.row_direction * target.spacing_mm[0] * (shape[0] - 1),
                            -target.row_direction, target.column_direction,  # the slice normal flips with it
                            (*target.spacing_mm[:2], -target.spacing_mm[2]), target.shape)
        for grid in (target, flipped):
            index = np.linalg.inv(source.affine_lps) @ grid.affine_lps
            expected = ndimage.affine_transform(field, np.diag(index[:3, :3]), index[:3, 3], output_shape=shape,
                                                order=1, mode="nearest")
            np.testing.assert_allclose(resample_to_grid(field, source, grid), expected, rtol=0, atol=70 * 4e-7)
        np.testing.assert_array_equal(resample_to_grid(field, source, flipped)[::-1],
                                      resample_to_grid(field, source, target))


def test_axis_aligned_and_rotated_grids_resample_alike_with_the_fill_value_outside():
    source = _axial_grid()
    rng = np.random.default_rng(1)
    field = rng.random(source.shape, dtype=np.float32) * 70
    # a target reaching past the source on every side; the same voxel centres indexed with x and y swapped make a
    # non-diagonal index map (scipy's general path) where the axis-aligned one takes the zoom-and-shift path
    aligned = AxialGrid(np.array([-34.0, -25.0, 4.0]), np.array([1.0, 0, 0]), np.array([0, 1.0, 0]),
                        (1.3, 1.7, 2.2), (52, 41, 20))
    swapped = AxialGrid(aligned.origin_lps, aligned.column_direction, aligned.row_direction,
                        (1.7, 1.3, -2.2), (41, 52, 20))  # its slice normal points down: the step is signed
    fast = resample_to_grid(field, source, aligned, fill_value=-1000.0)
    general = resample_to_grid(field, source, swapped, fill_value=-1000.0).transpose(1, 0, 2)
    np.testing.assert_allclose(fast, general, atol=1e-4)
    index = np.linalg.inv(source.affine_lps) @ aligned.affine_lps
    centres = [index[a, a] * np.arange(n) + index[a, 3] for a, n in enumerate(aligned.shape)]
    inside = [(c > -1e-3) & (c < n - 1 + 1e-3) for c, n in zip(centres, source.shape)]
    inside = inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :]
    assert (fast[~inside] == -1000.0).all() and 0 < inside.sum() < inside.size
    assert fast[inside].min() >= 0 and fast.dtype == np.float32


# --- RT Dose writing --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [16, 32])
def test_rt_dose_round_trip_quantisation_and_geometry(tmp_path, bits):
    case = make_phantom("lung", 2, (32, 32, 24))
    folder = write_dicom_case(case, tmp_path / "patient", dose_bits=bits)
    written = read_rt_dose(folder / DICOM_FILES["RTDOSE"])
    ct_first = pydicom.dcmread(folder / "CT.0001.dcm")
    header = written.header
    assert header.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.2" and header.BitsAllocated == bits
    for key in ("PatientID", "StudyInstanceUID", "FrameOfReferenceUID"):
        assert header[key].value == ct_first[key].value
    assert header.SeriesInstanceUID != ct_first.SeriesInstanceUID
    plan = pydicom.dcmread(folder / DICOM_FILES["RTPLAN"])
    assert header.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == plan.SOPInstanceUID
    assert list(header.ImageOrientationPatient) == list(ct_first.ImageOrientationPatient)
    assert [float(v) for v in header.ImagePositionPatient] == [float(v) for v in ct_first.ImagePositionPatient]
    assert [float(v) for v in header.PixelSpacing] == [float(v) for v in ct_first.PixelSpacing]
    assert float(header.GridFrameOffsetVector[0]) == 0.0 and header.DoseUnits == "GY"
    planned = reorient(case.dose_gy, case.affine, axcodes_of(written.grid.affine_ras))
    error = np.abs(written.dose_gy - planned).max()
    assert error <= float(header.DoseGridScaling) / 2 * 1.0001 + 1e-6
    assert error < 1e-3 * planned.max()


@pytest.mark.parametrize("bits, dtype", [(16, np.float32), (32, np.float64)])
def test_rt_dose_stores_each_voxel_rounded_to_the_nearest_unit_frame_by_frame(tmp_path, bits, dtype):
    grid = _axial_grid()
    dose = (np.random.default_rng(3).random(grid.shape) * 66.0).astype(dtype)
    reference = pydicom.Dataset()
    reference.FrameOfReferenceUID = "1.2.3"
    header = pydicom.dcmread(write_rt_dose(tmp_path / "rd.dcm", dose, grid, reference, bits=bits))
    stored = np.frombuffer(header.PixelData, dtype=np.uint16 if bits == 16 else np.uint32)
    frames = stored.reshape(grid.shape[2], grid.shape[1], grid.shape[0])  # frame (Z), row (Y), column (X)
    expected = np.rint(dose.astype(np.float64) / float(header.DoseGridScaling)).transpose(2, 1, 0)
    np.testing.assert_array_equal(frames, expected)
    assert (header.Rows, header.Columns, header.NumberOfFrames) == (grid.shape[1], grid.shape[0], grid.shape[2])


def test_dose_grid_scaling_keeps_the_maximum_in_range_and_refuses_bad_doses(tmp_path):
    for max_dose in (0.013, 14.68, 70.0, 81.234567):
        scaling = dose_grid_scaling(max_dose, 16)
        assert scaling * 65535 >= max_dose and scaling * 65535 < max_dose * (1 + 1e-6)
    grid = _axial_grid(shape=(4, 4, 3))
    reference = pydicom.Dataset()
    reference.FrameOfReferenceUID = "1.2.3"
    with pytest.raises(ValueError, match="finite and non-negative"):
        write_rt_dose(tmp_path / "bad.dcm", np.full(grid.shape, -1.0), grid, reference)
    with pytest.raises(ValueError, match="does not match the grid"):
        write_rt_dose(tmp_path / "bad.dcm", np.ones((4, 4, 4)), grid, reference)
    assert not (tmp_path / "bad.dcm").exists()


def test_dciodvfy_reports_no_errors_on_written_objects(tmp_path):
    dciodvfy = shutil.which("dciodvfy")
    if dciodvfy is None:
        message = "dciodvfy (Debian's dicom3tools) is not installed"
        if os.environ.get("CI"):
            pytest.fail(message + "; .ci/run installs it")
        pytest.skip(message)
    folder = write_dicom_case(make_phantom("lung", 4, (32, 32, 24)), tmp_path / "patient", dose_bits=16)
    for name in (DICOM_FILES["RTDOSE"], DICOM_FILES["RTSTRUCT"], DICOM_FILES["RTPLAN"], "CT.0001.dcm"):
        result = subprocess.run([dciodvfy, str(folder / name)], capture_output=True, text=True)
        errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
        assert not errors, f"{name}: {errors}"


# --- import of the synthetic patient ------------------------------------------------------------------------------

def test_synthetic_patient_imports_back_to_the_phantom(tmp_path):
    case = make_phantom("lung", 3, (48, 48, 40))
    names = {"Lung_L": "Lt Lung", "Lung_R": "RIGHT_LUNG", "SpinalCord": "Cord", "Heart": "HEART", "Body": "BODY"}
    folder = write_dicom_case(case, tmp_path / "patient", roi_names=names)
    imported = import_dicom_case(folder, "lung")
    back = imported.case
    axes = axcodes_of(case.affine)
    assert set(back.structures) == set(case.structures)
    for name, mask in case.structures.items():
        np.testing.assert_array_equal(reorient(back.structures[name], back.affine, axes), mask, err_msg=name)
    np.testing.assert_array_equal(reorient(back.ct_hu, back.affine, axes), case.ct_hu)
    np.testing.assert_allclose(reorient(back.dose_gy, back.affine, axes), case.dose_gy, atol=1e-5)
    np.testing.assert_allclose(np.abs(back.affine), np.abs(case.affine), atol=1e-6)
    assert back.prescriptions_gy == case.prescriptions_gy
    assert imported.report["roi_mapping"]["Lung_L"] == "Lt Lung"
    assert imported.report["roi_mapping"]["SpinalCord"] == "Cord"
    assert imported.report["prescription_source"].endswith("dose references to ROIs")


def test_import_on_a_model_grid_keeps_the_field_of_view(tmp_path):
    case = make_phantom("openkbp", 5, (48, 48, 40))
    folder = write_dicom_case(case, tmp_path / "patient", with_plan=False)
    rx = {t: rx for t, rx in case.prescriptions_gy.items()}
    imported = import_dicom_case(folder, "openkbp", prescriptions_gy=rx, grid_shape=(32, 32, 32))
    model, ct = imported.model_grid, imported.ct.grid
    assert imported.case.shape == (32, 32, 32)
    np.testing.assert_allclose(model.affine_lps @ [31, 31, 31, 1], ct.affine_lps @ [47, 47, 39, 1])
    assert imported.report["prescription_source"] == "given by the user"
    body_fraction = imported.case.possible_dose_mask.mean()
    assert body_fraction == pytest.approx(case.possible_dose_mask.mean(), rel=0.05)
    assert imported.case.dose_gy.max() > 0  # the planned dose, resampled onto the model grid
    # whole HU, as its folder stores them: predict's in-memory case is what the folder would give the network
    np.testing.assert_array_equal(read_case(write_case(imported.case, tmp_path / "case")).ct_hu, imported.case.ct_hu)
    without = import_dicom_case(folder, "openkbp", prescriptions_gy=rx, grid_shape=(32, 32, 32), with_dose=False)
    assert without.case.dose_gy is None
    np.testing.assert_array_equal(without.planned_dose_on(model), imported.case.dose_gy)


# --- malformed input --------------------------------------------------------------------------------------------

@pytest.fixture()
def patient(tmp_path):
    return write_dicom_case(make_phantom("lung", 6, (32, 32, 24)), tmp_path / "patient")


def _edit(path, change):
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path)


def test_a_missing_ct_slice_is_refused(patient):
    (patient / "CT.0012.dcm").unlink()
    with pytest.raises(ValueError, match="not evenly spaced"):
        import_dicom_case(patient, "lung")


def test_a_structure_set_of_another_frame_of_reference_is_refused(patient):
    _edit(patient / DICOM_FILES["RTSTRUCT"], lambda ds: (
        setattr(ds.ReferencedFrameOfReferenceSequence[0], "FrameOfReferenceUID", "1.2.3.4"),
        [setattr(r, "ReferencedFrameOfReferenceUID", "1.2.3.4") for r in ds.StructureSetROISequence]))
    with pytest.raises(ValueError, match="frame of reference"):
        import_dicom_case(patient, "lung")


def test_contour_coordinates_that_are_not_numbers_are_refused_naming_the_roi(patient):
    raw = (patient / DICOM_FILES["RTSTRUCT"]).read_bytes()
    first = raw.index(b"\x06\x30\x50\x00DS") + 8  # the first ContourData's first character (explicit VR LE)
    (patient / DICOM_FILES["RTSTRUCT"]).write_bytes(raw[:first] + b"x" + raw[first + 1:])  # same length: valid
    with pytest.raises(ValueError, match=r"RS.dcm: ROI .* has a contour whose ContourData are not decimal numbers"):
        read_structure_set(patient / DICOM_FILES["RTSTRUCT"])


def _drop_contours(name):
    def change(ds):
        number = next(r.ROINumber for r in ds.StructureSetROISequence if r.ROIName == name)
        item = next(c for c in ds.ROIContourSequence if c.ReferencedROINumber == number)
        del item.ContourSequence
    return change


def test_an_oar_without_contours_is_a_recorded_warning_and_a_target_without_is_an_error(patient):
    _edit(patient / DICOM_FILES["RTSTRUCT"], _drop_contours("Heart"))
    imported = import_dicom_case(patient, "lung")
    assert "Heart" not in imported.case.structures and "Heart" in imported.case.missing_structures
    assert any("'Heart'" in w and "no contours" in w for w in imported.report["warnings"])
    target = next(iter(imported.case.prescriptions_gy))
    _edit(patient / DICOM_FILES["RTSTRUCT"], _drop_contours(target))
    with pytest.raises(ValueError, match=f"'{target}'.*has no contours"):
        import_dicom_case(patient, "lung")


def test_non_axial_and_tilted_ct_are_refused(patient):
    slices = sorted(patient.glob("CT.*.dcm"))
    _edit(slices[3], lambda ds: setattr(ds, "GantryDetectorTilt", 12.0))
    with pytest.raises(ValueError, match="gantry tilt"):
        import_dicom_case(patient, "lung")
    for path in slices:
        _edit(path, lambda ds: setattr(ds, "ImageOrientationPatient", [0, 1, 0, 0, 0, -1]))
    with pytest.raises(ValueError, match="not axial"):
        import_dicom_case(patient, "lung")


def test_missing_prescriptions_and_unknown_rois_get_clear_errors(patient):
    (patient / DICOM_FILES["RTPLAN"]).unlink()
    with pytest.raises(ValueError, match="no prescriptions"):
        import_dicom_case(patient, "lung")
    with pytest.raises(ValueError, match="not in the structure set"):
        import_dicom_case(patient, "lung", prescriptions_gy={"PTV_boost": 60.0})
    with pytest.raises(ValueError, match="not an OAR or body"):
        import_dicom_case(patient, "lung", prescriptions_gy={"PTV60": 60.0, "PTV45": 45.0},
                          roi_map={"Heart": "Liver"})


def test_a_contoured_ptv_left_without_prescription_is_refused_unless_ignored_on_purpose(patient):
    (patient / DICOM_FILES["RTPLAN"]).unlink()
    with pytest.raises(ValueError, match=r"PTV ROIs without a prescription: \['PTV45'\]"):
        import_dicom_case(patient, "lung", prescriptions_gy={"PTV60": 60.0})
    with pytest.raises(ValueError, match="--ignore_rois names ROIs that are not in"):
        import_dicom_case(patient, "lung", prescriptions_gy={"PTV60": 60.0}, ignore_rois=["PTV_eval"])
    imported = import_dicom_case(patient, "lung", prescriptions_gy={"PTV60": 60.0}, ignore_rois=["PTV45"])
    assert set(imported.case.prescriptions_gy) == {"PTV60"}


def test_an_off_level_prescription_is_filed_with_a_warning_keeping_its_dose(patient):
    rois = [r.name for r in read_structure_set(patient / DICOM_FILES["RTSTRUCT"]).rois]
    target = next(r for r in rois if r.startswith("PTV"))
    others = {r for r in rois if r.startswith("PTV")} - {target}
    (patient / DICOM_FILES["RTPLAN"]).unlink()
    given = {target: 66.0, **{o: 45.0 + i for i, o in enumerate(sorted(others))}}
    imported = import_dicom_case(patient, "lung", prescriptions_gy=given)
    assert 66.0 in imported.case.prescriptions_gy.values()
    assert any("66 Gy is not a nominal level" in w for w in imported.report["warnings"])


def test_an_openkbp_patient_exported_to_dicom_imports_back_exactly(openkbp_mini_datalist, tmp_path):
    """`dosepred dicom export`: CT and masks come back exactly, the dose within the 16-bit quantisation; every
    object passes dciodvfy."""
    from dosepred.dicom import export

    case = read_case(openkbp_mini_datalist.parent / "cases" / "pt_201")
    folder = Path(export(str(openkbp_mini_datalist.parent / "cases" / "pt_201"), str(tmp_path / "pt_201")))
    for name in (*DICOM_FILES.values(), "CT.0001.dcm"):
        assert run_dciodvfy(folder / name) == [], name
    imported = import_dicom_case(folder, "openkbp").case
    codes = axcodes_of(imported.affine)
    np.testing.assert_allclose(imported.affine, _reoriented_affine(case, codes), atol=1e-4)
    np.testing.assert_array_equal(imported.ct_hu, reorient(case.ct_hu, case.affine, codes))
    np.testing.assert_array_equal(imported.possible_dose_mask, reorient(case.possible_dose_mask, case.affine, codes))
    assert set(imported.structures) == set(case.structures)
    for name, mask in case.structures.items():
        np.testing.assert_array_equal(imported.structures[name], reorient(mask, case.affine, codes), err_msg=name)
    assert imported.prescriptions_gy == case.prescriptions_gy
    step = float(pydicom.dcmread(folder / DICOM_FILES["RTDOSE"]).DoseGridScaling)
    error = np.abs(imported.dose_gy - reorient(case.dose_gy, case.affine, codes))
    assert error.max() <= step / 2 + 1e-5 and step < 1.5e-3


def _reoriented_affine(case, codes) -> np.ndarray:
    import nibabel as nib

    image = nib.Nifti1Image(np.zeros(case.shape, np.uint8), case.affine)
    target = nib.orientations.axcodes2ornt(codes)
    transform = nib.orientations.ornt_transform(nib.orientations.io_orientation(case.affine), target)
    return image.as_reoriented(transform).affine


def test_an_openkbp_patient_folder_as_published_exports_like_its_converted_case(openkbp_mini_datalist, tmp_path):
    """`dosepred dicom export <OpenKBP pt folder>` reads the CSVs directly: the same CT and structures as the
    converted case's export, the dose within a quantisation step (the CSV dose is float64, the case's float32)."""
    from dosepred.dicom import export

    published = require_shared("data/openkbp/mini/validation-pats/pt_201")
    direct = import_dicom_case(Path(export(str(published), str(tmp_path / "direct"))), "openkbp").case
    converted = import_dicom_case(Path(export(str(openkbp_mini_datalist.parent / "cases" / "pt_201"),
                                              str(tmp_path / "converted"))), "openkbp").case
    np.testing.assert_array_equal(direct.ct_hu, converted.ct_hu)
    np.testing.assert_allclose(direct.affine, converted.affine, atol=1e-4)  # the case stores float32 spacing
    assert set(direct.structures) == set(converted.structures)
    for name, mask in converted.structures.items():
        np.testing.assert_array_equal(direct.structures[name], mask, err_msg=name)
    assert direct.prescriptions_gy == converted.prescriptions_gy
    assert np.abs(direct.dose_gy - converted.dose_gy).max() < 1.5e-3
