"""OpenKBP's official CSV format: read patients (folders or ``.tar.xz`` archives), write submissions.

Axis convention of the OpenKBP grid (128 x 128 x 128, C order, flat index = i*16384 + j*128 + k):
axis 0 runs anterior -> posterior, axis 1 runs patient right -> left, axis 2 runs head -> feet, i.e. the
grid is (y, x, -z) in DICOM patient coordinates and its nibabel axis codes are ``("P", "L", "I")``. The
affine written to NIfTI encodes exactly that (RAS world, grid centre at the origin: OpenKBP does not
publish absolute positions), so 3D Slicer shows the anatomy the right way up. The test suite checks the
convention on real patients (mandible anterior of the cord, brainstem above it, left parotid on the left).

CT values are clipped to 0..4095 and shifted by -1024 to Hounsfield units, as the data description asks.
"""

from __future__ import annotations

import io
import lzma
import re
import tarfile
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from custom_nets.io.atomic import atomic_file
from custom_nets.io.canonical import CaseError, DoseCase, write_case
from custom_nets.io.orientation import reorient
from custom_nets.profiles import OPENKBP

__all__ = [
    "OPENKBP_SHAPE",
    "OPENKBP_AXCODES",
    "openkbp_affine",
    "parse_sparse_csv",
    "case_from_openkbp_files",
    "read_openkbp_patient",
    "OpenKBPReference",
    "read_openkbp_reference",
    "patient_folders",
    "iter_openkbp_patients",
    "convert_openkbp",
    "read_sparse_dose_csv",
    "to_openkbp_grid",
    "write_submission_csv",
]

OPENKBP_SHAPE = (128, 128, 128)
OPENKBP_AXCODES = ("P", "L", "I")
_AXIS_DIRECTIONS_RAS = np.array([[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]).T  # columns: P, L, I
_REQUIRED = ("ct.csv", "possible_dose_mask.csv", "voxel_dimensions.csv")
_PATIENT_RE = re.compile(r"^pt_\d+$")
_MAX_FRACTION_BEYOND_CT = 0.01
_MIN_MAX_DOSE_FRACTION = 0.5  # every OpenKBP plan reaches at least 71 Gy for a 70 Gy PTV


def openkbp_affine(spacing_mm: tuple[float, float, float], shape: tuple[int, int, int] = OPENKBP_SHAPE) -> np.ndarray:
    """4x4 RAS affine of the OpenKBP grid with the given voxel size along axes 0, 1, 2 (mm)."""
    affine = np.eye(4)
    affine[:3, :3] = _AXIS_DIRECTIONS_RAS * np.asarray(spacing_mm, dtype=float)
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return affine


def parse_sparse_csv(text: bytes | str, name: str = "<csv>", with_values: bool = True,
                     size: int = int(np.prod(OPENKBP_SHAPE))) -> tuple[np.ndarray, np.ndarray | None]:
    """Parse an OpenKBP sparse CSV (header ``,data`` then ``flat_index,value``).

    Returns flat indices (int64) and, if ``with_values``, float64 values. Mask files leave values empty.
    Raises ``ValueError`` naming ``name`` on a bad header, a file cut mid-row (no final newline), a bad row,
    a non-integer, out-of-range or repeated index, or a non-finite value.
    """
    if isinstance(text, str):
        text = text.encode("ascii")
    header, _, body = text.partition(b"\n")
    if header.strip().replace(b" ", b"") not in (b",data", b"index,data"):
        raise ValueError(f"{name}: expected the header ',data', got {header[:40].decode(errors='replace')!r}")
    empty = not body or body.isspace()  # isspace stops at the first character; strip() would copy the file
    if not empty and not body.endswith(b"\n"):
        raise ValueError(f"{name}: the last row has no newline: the file looks truncated")
    if empty:
        return np.zeros(0, np.int64), (np.zeros(0) if with_values else None)
    indices = None if with_values else _mask_indices(body)
    values = None
    if indices is None:
        try:  # numpy's C reader: 8x faster than splitting rows in Python
            table = np.loadtxt(io.BytesIO(body), delimiter=",", usecols=(0, 1) if with_values else (0,),
                               ndmin=2, comments=None, dtype=np.float64)
        except ValueError as err:
            raise ValueError(f"{name}: unreadable row after the header ({err})") from err
        flat = table[:, 0]
        if not np.all(flat == np.round(flat)):
            raise ValueError(f"{name}: flat indices must be integers")
        indices = flat.astype(np.int64)
        values = table[:, 1] if with_values else None
    if indices.min() < 0 or indices.max() >= size:
        raise ValueError(f"{name}: flat index out of range 0..{size - 1} (min {indices.min()}, max {indices.max()})")
    ordered = indices if np.all(indices[1:] > indices[:-1]) else np.sort(indices)  # OpenKBP's files are sorted
    if np.any(ordered[1:] == ordered[:-1]):
        raise ValueError(f"{name}: repeated flat indices")
    if values is not None and not np.all(np.isfinite(values)):
        raise ValueError(f"{name}: non-finite values")
    return indices, values


def _mask_indices(body: bytes) -> np.ndarray | None:
    """The indices of a mask file's rows (``index,``), read as integers (4x faster than ``loadtxt``); ``None``
    when a row is not exactly that, for ``loadtxt`` to read or to name the problem."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # older numpy warns where it stops reading early
            indices = np.fromstring(body.replace(b",", b" "), dtype=np.int64, sep=" ")
    except ValueError:
        return None
    rows = body.count(b"\n")
    return indices if indices.size == rows and body.count(b",") == rows else None


def _dense(indices: np.ndarray, values: np.ndarray | float, dtype: type) -> np.ndarray:
    volume = np.zeros(int(np.prod(OPENKBP_SHAPE)), dtype=dtype)
    volume[indices] = values
    return volume.reshape(OPENKBP_SHAPE)


def case_from_openkbp_files(case_id: str, files: dict[str, bytes], source: str = "") -> DoseCase:
    """Build a :class:`DoseCase` from the CSV files of one OpenKBP patient (file name -> content)."""
    where = source or case_id
    _check_file_names(case_id, where, files, _REQUIRED)
    spacing = _spacing(case_id, where, files)
    ct_idx, raw = _parse(case_id, where, files, "ct.csv", True)
    ct_hu = np.full(OPENKBP_SHAPE, -1024, np.int16)  # voxels absent from ct.csv hold raw value 0
    ct_hu.reshape(-1)[ct_idx] = np.clip(raw, 0, 4095) - 1024
    mask_idx = _parse(case_id, where, files, "possible_dose_mask.csv", False)[0]
    # ct.csv lists the non-zero voxels in flat-index order; a file cut at a row boundary still parses, but
    # stops before the patient does (on the 202 OpenKBP patients at most 4 possible-dose voxels lie beyond)
    beyond = int(np.count_nonzero(mask_idx > (ct_idx.max() if ct_idx.size else -1)))
    if beyond > _MAX_FRACTION_BEYOND_CT * max(mask_idx.size, 1):
        raise CaseError(case_id, f"{where}/ct.csv", f"the CT stops before {beyond} of the {mask_idx.size} "
                        "possible-dose voxels: the file looks truncated")
    structures = {name: _dense(idx, True, bool) for name, idx in _structure_indices(case_id, where, files).items()}
    prescriptions = {t: OPENKBP.targets[t] for t in OPENKBP.targets if t in structures}
    dose = None
    if "dose.csv" in files:
        dose = _planned_dose(case_id, where, files, mask_idx, prescriptions)
    return DoseCase(case_id=case_id, profile=OPENKBP.name, affine=openkbp_affine(tuple(spacing)), ct_hu=ct_hu,
                    possible_dose_mask=_dense(mask_idx, True, bool), structures=structures,
                    prescriptions_gy=prescriptions, dose_gy=dose, source=source)


@dataclass(frozen=True)
class OpenKBPReference:
    """What OpenKBP's scorer reads of a patient: the planned dose and the masks, not the CT.

    Attributes:
        case_id: ``pt_N``.
        spacing_mm: voxel size along axes 0, 1, 2 (mm).
        dose_gy: planned dose, float64 (128, 128, 128), exactly the CSV values.
        possible_dose_mask: bool (128, 128, 128).
        structures: contoured OpenKBP structures present, name -> bool (128, 128, 128).
    """

    case_id: str
    spacing_mm: tuple[float, float, float]
    dose_gy: np.ndarray
    possible_dose_mask: np.ndarray
    structures: dict[str, np.ndarray]


def read_openkbp_reference(folder: str | Path) -> OpenKBPReference:
    """Read the scoring reference of one OpenKBP patient folder (``pt_N/`` with ``dose.csv``); ``ct.csv`` is
    neither needed nor read."""
    folder = Path(folder)
    files = _csv_files(folder, skip=("ct.csv",))
    case_id, where = folder.name, str(folder)
    _check_file_names(case_id, where, files, ("dose.csv", "possible_dose_mask.csv", "voxel_dimensions.csv"))
    spacing = _spacing(case_id, where, files)
    mask_idx = _parse(case_id, where, files, "possible_dose_mask.csv", False)[0]
    structures = {name: _dense(idx, True, bool) for name, idx in _structure_indices(case_id, where, files).items()}
    prescriptions = {t: OPENKBP.targets[t] for t in OPENKBP.targets if t in structures}
    return OpenKBPReference(case_id=case_id, spacing_mm=tuple(float(s) for s in spacing),
                            dose_gy=_planned_dose(case_id, where, files, mask_idx, prescriptions),
                            possible_dose_mask=_dense(mask_idx, True, bool), structures=structures)


def _check_file_names(case_id: str, where: str, files: dict[str, bytes], required: tuple[str, ...]) -> None:
    for name in required:
        if name not in files:
            raise CaseError(case_id, f"{where}/{name}", "file is missing")
    known = {f"{s}.csv" for s in OPENKBP.structures} | {"ct.csv", "dose.csv", "possible_dose_mask.csv",
                                                        "voxel_dimensions.csv"}
    unknown = sorted(set(files) - known)
    if unknown:
        raise CaseError(case_id, f"{where}/{unknown[0]}",
                        f"unknown file(s) {unknown}; OpenKBP structures are {list(OPENKBP.structures)}")


def _parse(case_id: str, where: str, files: dict[str, bytes], name: str,
           with_values: bool) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        return parse_sparse_csv(files[name], f"{where}/{name}", with_values)
    except ValueError as err:
        raise CaseError(case_id, f"{where}/{name}", str(err)) from err


def _spacing(case_id: str, where: str, files: dict[str, bytes]) -> np.ndarray:
    try:
        spacing = np.loadtxt(io.BytesIO(files["voxel_dimensions.csv"]), dtype=float).reshape(-1)
    except ValueError as err:
        raise CaseError(case_id, f"{where}/voxel_dimensions.csv", f"unreadable: {err}") from err
    if spacing.shape != (3,) or not np.all(spacing > 0):
        raise CaseError(case_id, f"{where}/voxel_dimensions.csv", f"expected 3 positive spacings, got {spacing}")
    return spacing


def _structure_indices(case_id: str, where: str, files: dict[str, bytes]) -> dict[str, np.ndarray]:
    """Flat indices of every OpenKBP structure present, in the profile's order."""
    structures = {}
    for name in OPENKBP.structures:
        if f"{name}.csv" in files:
            idx = _parse(case_id, where, files, f"{name}.csv", False)[0]
            if idx.size == 0:
                raise CaseError(case_id, f"{where}/{name}.csv", "structure file lists no voxel")
            structures[name] = idx
    return structures


def _planned_dose(case_id: str, where: str, files: dict[str, bytes], mask_indices: np.ndarray,
                  prescriptions_gy: dict[str, float]) -> np.ndarray:
    """Dense float64 planned dose (the exact CSV values; the canonical NIfTI stores float32), checked."""
    idx, values = _parse(case_id, where, files, "dose.csv", True)
    _check_planned_dose(case_id, f"{where}/dose.csv", idx, values, mask_indices, prescriptions_gy)
    return _dense(idx, values, np.float64)


def _check_planned_dose(case_id: str, where: str, indices: np.ndarray, values: np.ndarray, mask_indices: np.ndarray,
                        prescriptions_gy: dict[str, float]) -> None:
    """A training label must be a whole plan: OpenKBP's dose.csv lists exactly the possible-dose voxels."""
    if indices.size != mask_indices.size or not np.array_equal(np.sort(indices), np.sort(mask_indices)):
        missing, extra = np.setdiff1d(mask_indices, indices).size, np.setdiff1d(indices, mask_indices).size
        raise CaseError(case_id, where, f"lists {indices.size} voxels, the possible-dose mask {mask_indices.size} "
                        f"({missing} missing, {extra} outside it); OpenKBP's dose.csv lists exactly the "
                        "possible-dose voxels: the file looks truncated or belongs to another patient")
    if values.min() < 0:
        raise CaseError(case_id, where, f"negative dose values (min {values.min():g} Gy)")
    top_rx = max(prescriptions_gy.values(), default=0.0)
    if values.max() < _MIN_MAX_DOSE_FRACTION * top_rx:
        raise CaseError(case_id, where, f"the maximum dose is {values.max():g} Gy, below half the top prescription "
                        f"({top_rx:g} Gy): not the dose of a plan")


def read_openkbp_patient(folder: str | Path) -> DoseCase:
    """Read one unpacked OpenKBP patient folder (``pt_N/``)."""
    folder = Path(folder)
    return case_from_openkbp_files(folder.name, _csv_files(folder), source=str(folder))


def _csv_files(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """File name -> content of the CSV files of one patient folder, but those named in ``skip``."""
    if not folder.is_dir():
        raise FileNotFoundError(f"OpenKBP patient folder {folder} does not exist")
    return {p.name: p.read_bytes() for p in folder.iterdir()
            if p.is_file() and p.suffix == ".csv" and p.name not in skip}


def patient_folders(source: str | Path) -> list[Path]:
    """The ``pt_N/`` folders of ``source`` in patient order (``source`` itself when it is one)."""
    source = Path(source)
    folders = [source] if _PATIENT_RE.match(source.name) else [p for p in source.iterdir()
                                                                 if p.is_dir() and _PATIENT_RE.match(p.name)]
    return sorted(folders, key=lambda p: int(p.name[3:]))


def iter_openkbp_patients(source: str | Path) -> Iterator[tuple[str, dict[str, bytes], str]]:
    """Yield ``(case_id, files, origin)`` for every patient of a folder or a ``.tar.xz`` archive.

    A folder may hold ``pt_N/`` folders directly or be one patient folder. Archives are streamed (never
    unpacked to disk); a patient's files must be contiguous in the archive, as they are in OpenKBP's.
    """
    source = Path(source)
    if source.is_dir():
        for folder in patient_folders(source):
            yield folder.name, _csv_files(folder), str(folder)
        return
    if not source.is_file():
        raise FileNotFoundError(f"OpenKBP source {source} is neither a folder nor an archive")
    try:
        yield from _iter_archive(source)
    except (tarfile.TarError, EOFError, lzma.LZMAError, zlib.error, OSError) as err:
        raise ValueError(f"{source}: not a readable OpenKBP archive (.tar.xz) or it is damaged: {err}") from err


def _iter_archive(source: Path) -> Iterator[tuple[str, dict[str, bytes], str]]:
    current: str | None = None
    files: dict[str, bytes] = {}
    seen: set[str] = set()
    with tarfile.open(source, "r|*") as archive:
        for member in archive:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) < 2 or not _PATIENT_RE.match(parts[-2]):
                continue
            patient = parts[-2]
            if patient != current:
                if current is not None:
                    yield current, files, f"{source}:{current}"
                if patient in seen:
                    raise ValueError(f"{source}: files of {patient} are not contiguous in the archive")
                seen.add(patient)
                current, files = patient, {}
            handle = archive.extractfile(member)
            assert handle is not None
            files[parts[-1]] = handle.read()
        if current is not None:
            yield current, files, f"{source}:{current}"


def convert_openkbp(source: str | Path, out_dir: str | Path,
                    progress: Callable[[str], None] | None = None) -> list[Path]:
    """Convert every patient of ``source`` (folder or archive) into canonical case folders under ``out_dir``.

    Returns the written case folders in the order read. ``progress`` is called with each case id.
    """
    out_dir = Path(out_dir)
    written = []
    for case_id, files, origin in iter_openkbp_patients(source):
        case = case_from_openkbp_files(case_id, files, source=origin)
        written.append(write_case(case, out_dir / case_id))
        if progress is not None:
            progress(case_id)
    if not written:
        raise ValueError(f"{source}: no OpenKBP patient (pt_N folder) found")
    return written


def read_sparse_dose_csv(path: str | Path) -> np.ndarray:
    """Dense float64 dose (128^3, Gy) of an OpenKBP dose or submission CSV."""
    path = Path(path)
    indices, values = parse_sparse_csv(path.read_bytes(), str(path))
    volume = np.zeros(int(np.prod(OPENKBP_SHAPE)), dtype=np.float64)
    volume[indices] = values
    return volume.reshape(OPENKBP_SHAPE)


def to_openkbp_grid(volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Reorient a volume with a RAS ``affine`` to OpenKBP's (P, L, I) array layout."""
    out = reorient(volume, affine, OPENKBP_AXCODES)
    if out.shape != OPENKBP_SHAPE:
        raise ValueError(f"volume of shape {out.shape} is not on the OpenKBP grid {OPENKBP_SHAPE}")
    return out


def write_submission_csv(dose_gy: np.ndarray, possible_dose_mask: np.ndarray, path: str | Path) -> Path:
    """Write a dose on the OpenKBP grid as an official submission CSV (``pt_N.csv``).

    Every voxel of the possible-dose mask is listed (as in OpenKBP's own ``dose.csv``), in ascending flat
    index order; the dose outside the mask is dropped, i.e. zero. Values are the shortest decimal that
    reads back as the same float32.
    """
    dose_gy = np.asarray(dose_gy)
    if dose_gy.shape != OPENKBP_SHAPE or possible_dose_mask.shape != OPENKBP_SHAPE:
        raise ValueError(f"{path}: dose and mask must be on the OpenKBP grid {OPENKBP_SHAPE}, "
                         f"got {dose_gy.shape} and {possible_dose_mask.shape}")
    if not np.all(np.isfinite(dose_gy)):
        raise ValueError(f"{path}: dose contains NaN or infinite values")
    if dose_gy.min() < 0:
        raise ValueError(f"{path}: dose has negative values (min {dose_gy.min():g} Gy)")
    indices = np.flatnonzero(possible_dose_mask.reshape(-1))
    values = dose_gy.reshape(-1)[indices].astype(np.float32).astype(str)
    text = ",data\n" + "".join(f"{i},{v}\n" for i, v in zip(indices.tolist(), values.tolist()))
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return Path(path)
