"""A DICOM-RT patient folder (CT series + RT Structure Set [+ RT Plan] [+ RT Dose]) -> the canonical case.

The case is built on a *model grid*: the CT's field of view sampled at ``grid_shape`` voxels (the CT grid itself
when no shape is given), as the cascade paper resamples every patient to 128^3. ROIs are rasterised directly on
that grid (never resampled masks); the CT and a planned dose are interpolated trilinearly. Everything that was
guessed, skipped or is missing goes into the import report, and anything that would make a wrong dose raises.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from custom_nets.io.canonical import DoseCase, validate_case
from custom_nets.io.dicom.ct import CTSeries, read_ct_series
from custom_nets.io.dicom.geometry import AxialGrid
from custom_nets.io.dicom.resample import resample_to_grid
from custom_nets.io.dicom.roi_names import body_structure_name, match_roi_names, normalise_roi_name
from custom_nets.io.dicom.rtdose import RTDose, read_rt_dose
from custom_nets.io.dicom.rtplan import RTPlan, read_rt_plan
from custom_nets.io.dicom.rtstruct import Roi, StructureSet, rasterise, read_structure_set
from custom_nets.profiles import DatasetProfile, get_profile

__all__ = ["DicomFolder", "ImportedCase", "scan_dicom_folder", "import_dicom_case"]

logger = logging.getLogger(__name__)
_PLANE_TOLERANCE_MM = 0.01
AIR_HU = -1000.0


@dataclass
class DicomFolder:
    """The DICOM files of a folder (searched recursively), grouped by modality; CT slices by series UID."""

    folder: Path
    ct_series: dict[str, list[Path]] = field(default_factory=dict)
    structure_sets: list[Path] = field(default_factory=list)
    plans: list[Path] = field(default_factory=list)
    doses: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def scan_dicom_folder(folder: str | Path) -> DicomFolder:
    """Group the DICOM files under ``folder``; files that are not DICOM are listed in ``skipped``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"DICOM folder not found: {folder}")
    found = DicomFolder(folder)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality", "SeriesInstanceUID"])
        except (InvalidDicomError, OSError) as err:
            if path.suffix.lower() == ".dcm":  # meant to be DICOM: a damaged slice must not silently go missing
                raise ValueError(f"{path}: not a readable DICOM file ({err}); repair or remove it") from err
            found.skipped.append(f"{path}: not a DICOM file")
            continue
        modality = str(ds.get("Modality", ""))
        if modality == "CT":
            found.ct_series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(path)
        elif modality == "RTSTRUCT":
            found.structure_sets.append(path)
        elif modality == "RTPLAN":
            found.plans.append(path)
        elif modality == "RTDOSE":
            found.doses.append(path)
        else:
            found.skipped.append(f"{path}: modality {modality or 'unknown'} is not used")
    return found


@dataclass
class ImportedCase:
    """A DICOM patient as a canonical case, with what is needed to map a predicted dose back to DICOM.

    Attributes:
        case: the canonical case on ``model_grid`` (RAS affine, as every canonical case).
        ct: the CT series on its own grid (the grid an RT Dose is written on).
        model_grid: the grid of ``case``.
        structure_set: the RT Structure Set the structures came from.
        plan: the RT Plan, when the folder had one.
        planned: the planned RT Dose on its own grid, when the folder had one.
        report: ROI mapping (structure -> ROI name), prescriptions and their source, unmatched ROIs, missing
            structures, warnings.
    """

    case: DoseCase
    ct: CTSeries
    model_grid: AxialGrid
    structure_set: StructureSet
    plan: RTPlan | None
    planned: RTDose | None
    report: dict

    def structure_masks(self, grid: AxialGrid) -> dict[str, np.ndarray]:
        """The case's structures (targets, OARs; not the body) rasterised on ``grid`` from their ROIs' contours."""
        rois = {r.name: r for r in self.structure_set.rois}
        return {s: rasterise(rois[self.report["roi_mapping"][s]].contours, grid) for s in self.case.structures}

    def planned_dose_on(self, grid: AxialGrid) -> np.ndarray | None:
        """The planned dose (Gy) resampled from its own grid onto ``grid`` (0 outside the dose grid)."""
        if self.planned is None:
            return None
        return np.maximum(resample_to_grid(self.planned.dose_gy, self.planned.grid, grid, fill_value=0.0), 0.0)


def _one(paths: list[Path], what: str, folder: Path, frame_of_reference: str, read) -> object | None:
    """The one object among ``paths`` on the CT's frame of reference (None when there are none)."""
    if not paths:
        return None
    objects = [read(p) for p in paths]
    same = [o for o in objects if o.frame_of_reference_uid in ("", frame_of_reference)]
    if not same:
        raise ValueError(f"{paths[0]}: the {what} is on frame of reference {objects[0].frame_of_reference_uid}, "
                         f"the CT on {frame_of_reference}; they are not of the same scan")
    if len(same) > 1:
        raise ValueError(f"{folder}: {len(same)} {what}s on the CT's frame of reference ({[str(o.file) for o in same]}); "
                         "keep one in the folder")
    return same[0]


def _prescriptions_from_plan(plan: RTPlan, structures: StructureSet, report: dict) -> dict[str, float]:
    names = {r.number: r.name for r in structures.rois}
    by_roi = {}
    for ref in plan.prescriptions:
        if ref.roi_number is not None:
            if ref.roi_number not in names:
                raise ValueError(f"{plan.file}: a dose reference prescribes {ref.dose_gy:g} Gy to ROI number "
                                 f"{ref.roi_number}, which {structures.file} does not have")
            by_roi[names[ref.roi_number]] = ref.dose_gy
    if by_roi:
        report["prescription_source"] = f"{plan.file.name}: dose references to ROIs"
        return by_roi
    doses = plan.site_prescriptions_gy
    candidates = [r.name for r in structures.rois if r.contours and
                  (r.interpreted_type.upper() == "PTV" or normalise_roi_name(r.name).startswith("ptv"))]
    if len(doses) == 1 and len(candidates) == 1:
        report["prescription_source"] = f"{plan.file.name}: the plan's one target prescription, to its one PTV"
        return {candidates[0]: doses[0]}
    matched = {}
    for dose in doses:  # by the number in the name: PTV60 / PTV_6000 for 60 Gy
        hits = [c for c in candidates if any(abs(float(n) - dose) < 1e-6 or abs(float(n) / 100 - dose) < 1e-6
                                              for n in re.findall(r"\d+(?:\.\d+)?", c))]
        if len(hits) == 1:
            matched[hits[0]] = dose
    if doses and len(matched) == len(doses):
        report["prescription_source"] = f"{plan.file.name}: target prescriptions matched to PTV names by dose"
        return matched
    raise ValueError(f"{plan.file}: cannot tell which PTV receives which prescription (prescriptions "
                     f"{doses} Gy, PTV ROIs {candidates}); give them explicitly, e.g. "
                     f'--prescriptions \'{{"{candidates[0] if candidates else "PTV"}": {doses[0] if doses else 60}}}\'')


def _target_names(prescriptions: Mapping[str, float], profile: DatasetProfile, report: dict) -> dict[str, str]:
    """ROI name -> profile target name by the nearest nominal prescription (the PTV channel uses the true dose)."""
    targets = {}
    levels = profile.targets
    for roi, dose in sorted(prescriptions.items(), key=lambda kv: -kv[1]):
        name = min(levels, key=lambda t: abs(levels[t] - dose))
        if abs(levels[name] - dose) > 1e-6:
            low, high = min(levels.values()), max(levels.values())
            where = "" if low <= dose <= high else f", outside the {low:g}-{high:g} Gy the profile's models saw"
            report["warnings"].append(f"ROI {roi!r}: prescription {dose:g} Gy is not a nominal level of profile "
                                      f"{profile.name}; filed as {name} with its own {dose:g} Gy{where}")
        if name in targets.values():
            raise ValueError(f"ROIs {[r for r, t in targets.items() if t == name] + [roi]} both fall on target "
                             f"level {name} of profile {profile.name} (prescriptions {dict(prescriptions)} Gy)")
        targets[roi] = name
    return targets


def import_dicom_case(folder: str | Path, profile: str | DatasetProfile, prescriptions_gy: Mapping[str, float] | None = None,
                      roi_map: Mapping[str, str] | None = None, grid_shape: Sequence[int] | None = None,
                      case_id: str | None = None, ignore_rois: Sequence[str] = (), with_dose: bool = True
                      ) -> ImportedCase:
    """Read a DICOM-RT patient folder into a canonical case of ``profile`` on the model grid.

    Args:
        folder: a folder with one CT series and one RT Structure Set of the same frame of reference, optionally an
            RT Plan (prescriptions) and an RT Dose (the planned dose, kept as the case's dose for comparison).
        profile: the dataset profile (structures, prescription levels) of the bundle that will predict.
        prescriptions_gy: target ROI name -> prescription (Gy); overrides the RT Plan's dose references.
        roi_map: ROI name -> profile structure, for names the synonyms do not know.
        grid_shape: the model grid (X, Y, Z) over the CT's field of view; the CT grid when ``None``.
        case_id: the case's name; the CT's PatientID by default.
        ignore_rois: PTV ROIs to leave out of the input on purpose (every other contoured PTV needs a prescription).
        with_dose: resample the planned dose onto the model grid as the case's dose (``False``: the case has none,
            and :meth:`ImportedCase.planned_dose_on` still gives it on any grid).
    """
    prof = get_profile(profile)
    found = scan_dicom_folder(folder)
    folder = found.folder
    if not found.ct_series:
        raise ValueError(f"{folder}: no CT slices found")
    if len(found.ct_series) > 1:
        raise ValueError(f"{folder}: {len(found.ct_series)} CT series ({sorted(found.ct_series)}); keep one")
    ct = read_ct_series(next(iter(found.ct_series.values())))
    frame = ct.frame_of_reference_uid
    if not found.structure_sets:
        raise ValueError(f"{folder}: no RT Structure Set found (the contours are needed for every input channel)")
    structures: StructureSet = _one(found.structure_sets, "RT Structure Set", folder, frame, read_structure_set)
    plan: RTPlan | None = _one(found.plans, "RT Plan", folder, frame, read_rt_plan)
    report: dict = {"folder": str(folder), "ct_files": len(ct.files), "structure_set": str(structures.file),
                    "plan": None if plan is None else str(plan.file), "skipped_files": found.skipped, "warnings": []}

    if prescriptions_gy:
        report["prescription_source"] = "given by the user"
        known = {normalise_roi_name(r.name): r.name for r in structures.rois}
        unknown = [r for r in prescriptions_gy if normalise_roi_name(r) not in known]
        if unknown:
            raise ValueError(f"{structures.file}: prescriptions name ROIs that are not in the structure set: "
                             f"{unknown} (ROIs: {[r.name for r in structures.rois]})")
        prescriptions = {known[normalise_roi_name(r)]: float(d) for r, d in prescriptions_gy.items()}
    elif plan is not None:
        prescriptions = _prescriptions_from_plan(plan, structures, report)
    else:
        raise ValueError(f"{folder}: no prescriptions: put the RT Plan in the folder or give them, e.g. "
                         "--prescriptions '{\"PTV\": 60}' (target ROI name -> Gy)")
    bad = {r: d for r, d in prescriptions.items() if not (np.isfinite(d) and d > 0)}
    if bad:
        raise ValueError(f"{folder}: prescriptions must be positive doses in Gy, got {bad}")
    _check_every_ptv_prescribed(structures, prescriptions, ignore_rois)
    targets = _target_names(prescriptions, prof, report)

    rois = {r.name: r for r in structures.rois}
    externals = [r.name for r in structures.rois if r.interpreted_type.upper() == "EXTERNAL"]
    candidates = [n for n in rois if n not in targets]
    oar_rois = match_roi_names(candidates, prof, roi_map, body_rois=[n for n in externals if n in candidates])

    body_name = body_structure_name(prof)
    if body_name not in oar_rois:
        raise ValueError(f"{structures.file}: no body outline (a ROI named like Body / External, or of type "
                         f"EXTERNAL) among {list(rois)}; name it with --roi_map '{{\"<ROI>\": \"{body_name}\"}}'")
    report["roi_mapping"] = {**{t: r for r, t in targets.items()}, **oar_rois}
    report["prescriptions_gy"] = {targets[r]: d for r, d in prescriptions.items()}
    report["unmatched_rois"] = [n for n in rois if n not in targets and n not in oar_rois.values()]

    for roi_name in report["roi_mapping"].values():
        _check_within_ct(rois[roi_name], ct, structures.file)
    model_grid = ct.grid if grid_shape is None else ct.grid.resampled(grid_shape)
    masks: dict[str, np.ndarray] = {}
    for structure, roi_name in {**{t: r for r, t in targets.items()}, **oar_rois}.items():
        roi = rois[roi_name]
        mask = rasterise(roi.contours, model_grid) if roi.contours else None
        if mask is None or not mask.any():
            problem = "has no contours" if mask is None else "covers no voxel of the model grid"
            if structure in targets.values() or structure == body_name:
                raise ValueError(f"{structures.file}: ROI {roi_name!r} ({structure}) {problem}")
            report["warnings"].append(f"ROI {roi_name!r} ({structure}) {problem}: recorded as not contoured")
            continue
        masks[structure] = mask
    report["missing_structures"] = [s for s in prof.oars if s not in masks]
    for structure in report["missing_structures"]:
        if structure not in oar_rois:
            report["warnings"].append(f"no ROI found for {structure}: recorded as not contoured")

    body = masks.pop(body_name) if prof.body is None else masks[body_name]
    planned = _planned_dose(found, frame, report)
    ras = model_grid.affine_ras
    case = DoseCase(
        case_id=case_id or re.sub(r"[^\w.-]+", "_", str(ct.header.get("PatientID", "")) or "patient"),
        profile=prof.name, affine=ras,
        # whole HU, as a case folder stores them: `predict` hands this case over in memory, and the network sees
        # what it would read from the imported folder
        ct_hu=np.rint(resample_to_grid(ct.hu, ct.grid, model_grid, fill_value=AIR_HU)),
        possible_dose_mask=body, structures=masks,
        prescriptions_gy={targets[r]: float(d) for r, d in prescriptions.items()},
        dose_gy=None, source=f"DICOM {folder}", missing_structures=report["missing_structures"])
    imported = ImportedCase(case, ct, model_grid, structures, plan, planned, report)
    if with_dose:
        case.dose_gy = imported.planned_dose_on(model_grid)
    validate_case(case, prof, folder)
    for warning in report["warnings"]:
        logger.warning("%s: %s", folder, warning)
    return imported


def _check_every_ptv_prescribed(structures: StructureSet, prescriptions: Mapping[str, float],
                                ignore_rois: Sequence[str]) -> None:
    """A contoured PTV without a prescription would silently drop out of the PTV channel."""
    ignored = {normalise_roi_name(r) for r in ignore_rois}
    unknown = sorted(ignored - {normalise_roi_name(r.name) for r in structures.rois})
    if unknown:
        raise ValueError(f"--ignore_rois names ROIs that are not in {structures.file}: {unknown}")
    left_out = [r.name for r in structures.rois if r.contours and r.name not in prescriptions
                and normalise_roi_name(r.name) not in ignored
                and (r.interpreted_type.upper() == "PTV" or normalise_roi_name(r.name).startswith("ptv"))]
    if left_out:
        raise ValueError(f"{structures.file}: PTV ROIs without a prescription: {left_out} (prescribed: "
                         f"{sorted(prescriptions)}); give their doses with --prescriptions or leave them out on "
                         "purpose with --ignore_rois")


def _check_within_ct(roi: Roi, ct: CTSeries, structure_set_file: Path) -> None:
    """Contours on planes beyond the CT's slices would be dropped: usually a CT slice missing from the folder."""
    if not roi.contours:
        return
    slices = ct.grid.slice_positions_mm
    half = abs(ct.grid.spacing_mm[2]) / 2 + _PLANE_TOLERANCE_MM
    planes = np.unique(np.round([float(np.mean(c @ ct.grid.normal)) for c in roi.contours], 3))
    outside = planes[(planes < slices.min() - half) | (planes > slices.max() + half)]
    if outside.size:
        raise ValueError(f"{structure_set_file}: ROI {roi.name!r} has contours on {outside.size} plane(s) at "
                         f"{outside[:3].tolist()} mm, beyond the CT's slices ({slices.min():g} to {slices.max():g} "
                         "mm): is a CT slice missing from the folder?")


def _planned_dose(found: DicomFolder, frame: str, report: dict) -> RTDose | None:
    """The folder's planned dose (None without one); doses of other scans, or several plan doses, are skipped."""
    doses = [read_rt_dose(p) for p in found.doses]
    doses = [d for d in doses if str(d.header.get("FrameOfReferenceUID", "")) == frame
             and str(d.header.get("DoseSummationType", "")) == "PLAN"]
    if len(doses) > 1:
        report["warnings"].append(f"{len(doses)} plan doses in the folder; none kept as the planned dose")
    if len(doses) != 1:
        return None
    report["planned_dose"] = str(doses[0].header.filename)
    return doses[0]
