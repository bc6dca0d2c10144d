"""The canonical case on disk: one folder per patient, NIfTI volumes and a ``case.json``.

Layout of a case folder::

    <case_id>/
        case.json                   # profile, prescriptions (Gy), structures present and absent, spacing
        ct.nii.gz                   # int16, Hounsfield units
        dose.nii.gz                 # float32, Gy (absent for a patient still to be planned)
        possible_dose_mask.nii.gz   # uint8, voxels that can receive dose (scores and losses use it)
        structures/<name>.nii.gz    # uint8, one binary mask per contoured structure of the profile

Every volume shares one grid and one affine (RAS world coordinates in mm), so each opens the right way
up in 3D Slicer. Readers of other formats produce a :class:`DoseCase`; :func:`write_case` checks it and
writes it atomically, :func:`read_case` reads it back and checks it again, naming the case, the file and
the problem in every error.
"""

from __future__ import annotations

import gzip
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from custom_nets.io.atomic import atomic_directory
from custom_nets.profiles import DatasetProfile, get_profile

__all__ = [
    "AFFINE_ATOL_MM",
    "CASE_JSON",
    "CT_FILE",
    "DOSE_FILE",
    "PREDICTED_DOSE_FILE",
    "POSSIBLE_DOSE_MASK_FILE",
    "STRUCTURE_DIR",
    "CaseError",
    "DoseCase",
    "read_case",
    "write_case",
    "validate_case",
]

FORMAT_VERSION = 1
CASE_JSON = "case.json"
CT_FILE = "ct.nii.gz"
DOSE_FILE = "dose.nii.gz"
PREDICTED_DOSE_FILE = "dose_pred.nii.gz"  # a prediction: <predictions>/<case_id>/dose_pred.nii.gz
POSSIBLE_DOSE_MASK_FILE = "possible_dose_mask.nii.gz"
STRUCTURE_DIR = "structures"
AFFINE_ATOL_MM = 1e-3  # two grids closer than this (mm) are the same grid
_AIR_PERCENTILE, _AIR_MAX_HU = 1.0, -500.0
_LOWEST_HU = -4096  # the widest scale in use (-3024 marks voxels outside the reconstruction circle)


class CaseError(ValueError):
    """A case that cannot be used as it is; the message names the case, the file and the problem."""

    def __init__(self, case_id: str, file: str | Path | None, problem: str):
        self.case_id, self.file, self.problem = case_id, None if file is None else str(file), problem
        where = f" ({file})" if file is not None else ""
        super().__init__(f"case {case_id}{where}: {problem}")


@dataclass
class DoseCase:
    """One patient on one voxel grid.

    Attributes:
        case_id: patient identifier, also the folder name.
        profile: name of the dataset profile whose structure names the case uses.
        affine: 4x4 voxel-to-world matrix (RAS, mm), shared by every volume.
        ct_hu: CT in Hounsfield units, shape (X, Y, Z).
        possible_dose_mask: voxels that can receive dose, bool (X, Y, Z).
        structures: contoured structures present, name -> bool (X, Y, Z).
        prescriptions_gy: prescription of every target present, name -> Gy.
        dose_gy: planned dose in Gy (X, Y, Z), or ``None`` when there is no plan yet.
        source: where the case came from (a path, a generator and its seed).
        missing_structures: profile structures that are not contoured (recorded absence).
    """

    case_id: str
    profile: str
    affine: np.ndarray
    ct_hu: np.ndarray
    possible_dose_mask: np.ndarray
    structures: dict[str, np.ndarray]
    prescriptions_gy: dict[str, float]
    dose_gy: np.ndarray | None = None
    source: str = ""
    missing_structures: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.ct_hu.shape)  # type: ignore[return-value]

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size along the three array axes in mm."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def voxel_volume_cc(self) -> float:
        return float(np.prod(self.spacing_mm)) / 1000.0


def validate_case(case: DoseCase, profile: DatasetProfile | str | None = None, origin: str | Path = "") -> None:
    """Check a case against its profile; raise :class:`CaseError` naming what is wrong.

    Checks: known structure names, non-empty masks, a prescription for every target present and none for
    anything else, at least one target, one grid for every volume, finite CT and dose, a non-negative dose,
    a valid affine. OARs that are not contoured are a recorded absence (``missing_structures``).
    """
    prof = get_profile(profile or case.profile)
    cid = case.case_id
    where = Path(origin) if origin else None
    if case.profile != prof.name:
        raise CaseError(cid, where, f"case is of profile {case.profile!r}, expected {prof.name!r}")
    affine = np.asarray(case.affine, dtype=float)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise CaseError(cid, where, f"invalid affine {affine.tolist()}")
    shape = case.shape
    if len(shape) != 3:
        raise CaseError(cid, _file(where, CT_FILE), f"CT must be 3D, got shape {shape}")
    if not np.all(np.isfinite(case.ct_hu)):
        raise CaseError(cid, _file(where, CT_FILE), "CT contains NaN or infinite values")
    _check_hounsfield(case.ct_hu, cid, _file(where, CT_FILE))
    volumes = {POSSIBLE_DOSE_MASK_FILE: case.possible_dose_mask}
    volumes.update({f"{STRUCTURE_DIR}/{n}.nii.gz": m for n, m in case.structures.items()})
    if case.dose_gy is not None:
        volumes[DOSE_FILE] = case.dose_gy
    for name, volume in volumes.items():
        if tuple(volume.shape) != shape:
            raise CaseError(cid, _file(where, name), f"shape {tuple(volume.shape)} differs from the CT's {shape}")
    if not case.possible_dose_mask.any():
        raise CaseError(cid, _file(where, POSSIBLE_DOSE_MASK_FILE), "possible-dose mask is empty")
    if case.dose_gy is not None:
        if not np.all(np.isfinite(case.dose_gy)):
            raise CaseError(cid, _file(where, DOSE_FILE), "dose contains NaN or infinite values")
        if case.dose_gy.min() < 0:
            raise CaseError(cid, _file(where, DOSE_FILE), f"dose has negative values (min {case.dose_gy.min():g} Gy)")
    for name, mask in case.structures.items():
        if name not in prof.structures:
            raise CaseError(cid, _file(where, f"{STRUCTURE_DIR}/{name}.nii.gz"),
                            f"unknown structure {name!r}; profile {prof.name} knows {list(prof.structures)}")
        if not mask.any():
            raise CaseError(cid, _file(where, f"{STRUCTURE_DIR}/{name}.nii.gz"),
                            f"structure {name} is empty; leave its file out to record it as not contoured")
    targets = [t for t in prof.target_names if t in case.structures]
    if not targets:
        raise CaseError(cid, where, f"no target contoured (expected one of {list(prof.target_names)})")
    for target in targets:
        rx = case.prescriptions_gy.get(target)
        if rx is None:
            raise CaseError(cid, where, f"target {target} has no prescription")
        if not np.isfinite(rx) or rx <= 0:
            raise CaseError(cid, where, f"target {target} has an invalid prescription {rx!r} Gy")
    extra = sorted(set(case.prescriptions_gy) - set(targets))
    if extra:
        raise CaseError(cid, where, f"prescriptions given for structures that are not contoured targets: {extra}")
    if prof.body is not None and prof.body not in case.structures:
        raise CaseError(cid, _file(where, f"{STRUCTURE_DIR}/{prof.body}.nii.gz"), "the body contour is missing")


def _check_hounsfield(ct: np.ndarray, case_id: str, file: Path | str) -> None:
    """Air (about -1000 HU) surrounds every patient and fills the airways: a CT without it is not in HU."""
    low = float(np.percentile(ct, _AIR_PERCENTILE))
    if low > _AIR_MAX_HU:
        raise CaseError(case_id, file, f"the CT does not look like Hounsfield units: {100 - _AIR_PERCENTILE:g}% of "
                        f"voxels are above {low:g}, while air is about -1000 HU (stored values without the "
                        "rescale slope and intercept?)")
    if float(ct.min()) < _LOWEST_HU:
        raise CaseError(case_id, file, f"CT values down to {float(ct.min()):g} lie below any Hounsfield scale "
                        f"({_LOWEST_HU} HU)")


def _file(folder: Path | None, name: str) -> Path | str:
    return folder / name if folder is not None else name


def _save(volume: np.ndarray, affine: np.ndarray, path: Path, dtype: type) -> None:
    volume = np.asarray(volume)
    if np.issubdtype(dtype, np.integer) and np.issubdtype(volume.dtype, np.floating):
        volume = np.rint(volume)  # a resampled CT's HU to the nearest whole number, not truncated towards 0
    image = nib.Nifti1Image(volume.astype(dtype, copy=False), affine)
    image.header.set_xyzt_units("mm")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    with gzip.GzipFile(path, "wb", compresslevel=1, mtime=0) as stream:  # nibabel's level; mtime 0: reproducible
        image.to_stream(stream)


def write_case(case: DoseCase, case_dir: str | Path) -> Path:
    """Validate ``case`` and write it as a canonical case folder (atomically: complete or not at all)."""
    case_dir = Path(case_dir)
    prof = get_profile(case.profile)
    validate_case(case, prof)
    missing = [s for s in prof.structures if s not in case.structures]
    with atomic_directory(case_dir) as tmp:
        _save(case.ct_hu, case.affine, tmp / CT_FILE, np.int16)
        _save(case.possible_dose_mask, case.affine, tmp / POSSIBLE_DOSE_MASK_FILE, np.uint8)
        if case.dose_gy is not None:
            _save(case.dose_gy, case.affine, tmp / DOSE_FILE, np.float32)
        (tmp / STRUCTURE_DIR).mkdir()
        for name, mask in case.structures.items():
            _save(mask, case.affine, tmp / STRUCTURE_DIR / f"{name}.nii.gz", np.uint8)
        meta = {
            "format_version": FORMAT_VERSION,
            "case_id": case.case_id,
            "profile": prof.name,
            "prescriptions_gy": {t: float(case.prescriptions_gy[t]) for t in prof.target_names
                                 if t in case.prescriptions_gy},
            "structures": [s for s in prof.structures if s in case.structures],
            "missing_structures": missing,
            "has_dose": case.dose_gy is not None,
            "shape": list(case.shape),
            "spacing_mm": [round(s, 6) for s in case.spacing_mm],
            "source": case.source,
        }
        (tmp / CASE_JSON).write_text(json.dumps(meta, indent=1) + "\n")
    case.missing_structures = missing
    return case_dir


def _load(path: Path, case_id: str, affine: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise CaseError(case_id, path, "file is missing")
    try:
        image = nib.load(path)
        data = np.asanyarray(image.dataobj)
    except Exception as err:  # nibabel raises many types for corrupt files
        raise CaseError(case_id, path, f"cannot read NIfTI: {err}") from err
    if data.ndim != 3:
        raise CaseError(case_id, path, f"expected a 3D volume, got shape {data.shape}")
    if affine is not None and not np.allclose(image.affine, affine, atol=AFFINE_ATOL_MM):
        raise CaseError(case_id, path, "affine (spacing, orientation or origin) differs from the CT's:\n"
                        f"{np.round(image.affine, 4).tolist()} vs {np.round(affine, 4).tolist()}")
    return data, image.affine


def read_case(case_dir: str | Path, profile: DatasetProfile | str | None = None, with_dose: bool = True) -> DoseCase:
    """Read and validate a canonical case folder.

    Args:
        case_dir: the case folder.
        profile: expected profile (default: the one recorded in ``case.json``).
        with_dose: read the planned dose when the case has one.
    """
    case_dir = Path(case_dir)
    meta_path = case_dir / CASE_JSON
    case_id = case_dir.name
    if not meta_path.is_file():
        raise CaseError(case_id, meta_path, "not a canonical case folder: case.json is missing")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise CaseError(case_id, meta_path, f"invalid JSON: {err}") from err
    case_id = meta.get("case_id", case_id)
    if meta.get("format_version") != FORMAT_VERSION:
        raise CaseError(case_id, meta_path, f"unsupported format_version {meta.get('format_version')!r}")
    prof = get_profile(profile or meta["profile"])
    ct, affine = _load(case_dir / CT_FILE, case_id, None)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if list(ct.shape) != list(meta.get("shape", ct.shape)) or not np.allclose(
            spacing, meta.get("spacing_mm", spacing), atol=AFFINE_ATOL_MM):
        raise CaseError(case_id, case_dir / CT_FILE, f"grid (shape {list(ct.shape)}, spacing "
                        f"{np.round(spacing, 4).tolist()} mm) differs from case.json's (shape {meta.get('shape')}, "
                        f"spacing {meta.get('spacing_mm')} mm)")
    possible = _load(case_dir / POSSIBLE_DOSE_MASK_FILE, case_id, affine)[0]
    structures = {}
    for name in meta["structures"]:
        structures[name] = _load(case_dir / STRUCTURE_DIR / f"{name}.nii.gz", case_id, affine)[0] > 0
    on_disk = {p.name[: -len(".nii.gz")] for p in (case_dir / STRUCTURE_DIR).glob("*.nii.gz")}
    unlisted = sorted(on_disk - set(meta["structures"]))
    if unlisted:
        warnings.warn(f"case {case_id} ({case_dir / STRUCTURE_DIR}): files not listed in case.json are ignored: "
                      f"{unlisted}", stacklevel=2)
    dose = None
    if with_dose and meta.get("has_dose"):
        dose = _load(case_dir / DOSE_FILE, case_id, affine)[0].astype(np.float32)
    case = DoseCase(
        case_id=case_id,
        profile=meta["profile"],
        affine=affine,
        ct_hu=ct.astype(np.float32),
        possible_dose_mask=possible > 0,
        structures=structures,
        prescriptions_gy={k: float(v) for k, v in meta["prescriptions_gy"].items()},
        dose_gy=dose,
        source=meta.get("source", ""),
        missing_structures=list(meta.get("missing_structures", [])),
    )
    validate_case(case, prof, origin=case_dir)
    return case
