"""A canonical case as a DICOM-RT patient: CT series, RT Structure Set, RT Plan and the planned RT Dose.

Used to open OpenKBP patients in 3D Slicer or a planning system and to feed them to ``predict``, and to test
the clinical path end to end on phantoms (the cascade paper's lung patients are private, and the public
DICOM-RT example has one CT slice of 98). Contours trace voxel edges, so importing the folder on the CT grid
gives back every mask exactly (tested).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from custom_nets.io.atomic import atomic_directory
from custom_nets.io.canonical import DoseCase
from custom_nets.io.dicom.geometry import AxialGrid
from custom_nets.io.dicom.rtdose import write_rt_dose
from custom_nets.io.dicom.writers import new_patient_reference, write_ct_series, write_rt_plan, write_structure_set
from custom_nets.io.orientation import reorient_with_affine
from custom_nets.profiles import get_profile

__all__ = ["write_dicom_case", "DICOM_FILES"]

#: File names of the non-CT objects in a written patient folder.
DICOM_FILES = {"RTSTRUCT": "RS.dcm", "RTPLAN": "RP.dcm", "RTDOSE": "RD.dcm"}
_LPS = ("L", "P", "S")  # DICOM's patient axes: slices written with ImageOrientationPatient [1,0,0,0,1,0]


def write_dicom_case(case: DoseCase, out_dir: str | Path, roi_names: Mapping[str, str] | None = None,
                     fractions: int | None = 30, dose_bits: int = 32, with_plan: bool = True, with_dose: bool = True
                     ) -> Path:
    """Write ``case`` as a DICOM-RT patient folder (atomically) and return it.

    Args:
        case: a canonical case (a phantom, an OpenKBP patient); its planned dose, if any, becomes the RT Dose.
        roi_names: profile structure -> the ROI name to write (to exercise synonym matching); the profile's names
            otherwise. The body outline (or, for a profile without one, the possible-dose mask) is written as
            "External" of type EXTERNAL unless renamed here.
        fractions: fractions in the RT Plan (None: not stated).
        dose_bits: 16 or 32 bits for the planned RT Dose.
        with_plan / with_dose: write the RT Plan / RT Dose.
    """
    prof = get_profile(case.profile)
    names = dict(roi_names or {})
    body = prof.body or "Body"
    volumes = {"ct": case.ct_hu, "body": case.possible_dose_mask if prof.body is None else case.structures[body]}
    volumes.update({f"roi:{n}": m for n, m in case.structures.items() if n != body})
    if case.dose_gy is not None:
        volumes["dose"] = case.dose_gy
    lps = {k: reorient_with_affine(v, case.affine, _LPS) for k, v in volumes.items()}
    affine = lps["ct"][1]
    grid = AxialGrid.from_affine_ras(affine, lps["ct"][0].shape)
    masks = {names.get(body, "External"): lps["body"][0].astype(bool)}
    masks.update({names.get(k[4:], k[4:]): v[0].astype(bool) for k, v in lps.items() if k.startswith("roi:")})
    types = {names.get(body, "External"): "EXTERNAL"}
    types.update({names.get(t, t): "PTV" for t in case.prescriptions_gy})
    reference = new_patient_reference(case.case_id)
    with atomic_directory(out_dir) as tmp:
        slices = write_ct_series(tmp, lps["ct"][0], grid, reference)
        structure_set = write_structure_set(tmp / DICOM_FILES["RTSTRUCT"], masks, grid, slices, types)
        plan = None
        if with_plan:
            plan = write_rt_plan(tmp / DICOM_FILES["RTPLAN"], structure_set,
                                 {names.get(t, t): rx for t, rx in case.prescriptions_gy.items()}, fractions)
        if with_dose and case.dose_gy is not None:
            write_rt_dose(tmp / DICOM_FILES["RTDOSE"], lps["dose"][0], grid, slices[0], plan, bits=dose_bits,
                          series_description="Planned dose", manufacturer_model="custom_nets case export")
    return Path(out_dir)
