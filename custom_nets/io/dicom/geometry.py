"""The voxel grid of an axial DICOM image stack (CT series, RT Dose) and its affines.

DICOM places the centre of pixel (row r, column c) of a slice at
``ImagePositionPatient + c * PixelSpacing[1] * row_direction + r * PixelSpacing[0] * column_direction``
in the patient's LPS coordinates (mm); slices are stacked along ``row_direction x column_direction``.
Our volumes are indexed ``[column, row, slice]`` (X, Y, Z), as NIfTI and the canonical case are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from custom_nets.io.canonical import AFFINE_ATOL_MM

__all__ = ["AxialGrid", "LPS_TO_RAS", "check_axial", "uniform_step"]

#: DICOM's patient coordinates are LPS, NIfTI's (and the canonical case's) RAS: flip x and y.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_AXIAL_TOLERANCE = 1e-3  # direction cosines this close to the patient axes count as axial


def check_axial(orientation: Sequence[float], where: str) -> tuple[np.ndarray, np.ndarray]:
    """Row and column direction cosines of an ``ImageOrientationPatient``; raise unless the slices are axial.

    Axial means the slice normal runs along the patient's z axis (in-plane axes may be rotated or flipped only
    within the axial plane, as a patient lying head-first or feet-first gives)."""
    values = np.asarray([float(v) for v in orientation], dtype=float)
    if values.shape != (6,):
        raise ValueError(f"{where}: ImageOrientationPatient must have 6 values, got {list(values)}")
    row, col = values[:3], values[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or abs(row @ col) > 1e-3:
        raise ValueError(f"{where}: ImageOrientationPatient {list(values)} is not two orthonormal directions")
    normal = np.cross(row, col)
    if abs(abs(normal[2]) - 1) > _AXIAL_TOLERANCE:
        raise ValueError(f"{where}: the images are not axial (ImageOrientationPatient {list(values)}, slice normal "
                         f"{np.round(normal, 4).tolist()}); only axial CT and dose grids are supported")
    return row, col


def uniform_step(positions: Sequence[float], where: str, tolerance_mm: float = 0.01) -> float:
    """The common spacing of sorted slice positions (mm); raise naming the gap when one is missing or uneven."""
    positions = np.asarray(positions, dtype=float)
    if len(positions) < 2:
        raise ValueError(f"{where}: need at least 2 slices, got {len(positions)}")
    steps = np.diff(positions)
    step = float(np.median(steps))
    if abs(step) < 1e-6:
        raise ValueError(f"{where}: two slices share the position {positions[0]:g} mm")
    bad = np.flatnonzero(np.abs(steps - step) > tolerance_mm)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{where}: slices are not evenly spaced: {positions[i]:g} mm is followed by "
                         f"{positions[i + 1]:g} mm where the spacing is {step:g} mm elsewhere "
                         f"({bad.size} irregular step(s); a missing or duplicate slice?)")
    return step


@dataclass(frozen=True)
class AxialGrid:
    """A regular grid of axial slices in patient LPS coordinates.

    Attributes:
        origin_lps: centre of voxel [0, 0, 0] (mm), the first slice's ``ImagePositionPatient``.
        row_direction: unit vector along which the column index (X) grows.
        column_direction: unit vector along which the row index (Y) grows.
        spacing_mm: (column spacing, row spacing, slice step) in mm; the slice step is signed along the normal.
        shape: (columns, rows, slices).
    """

    origin_lps: np.ndarray
    row_direction: np.ndarray
    column_direction: np.ndarray
    spacing_mm: tuple[float, float, float]
    shape: tuple[int, int, int]

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_direction, self.column_direction)

    @property
    def affine_lps(self) -> np.ndarray:
        """4x4 voxel-index [X, Y, Z] to LPS (mm) matrix."""
        affine = np.eye(4)
        affine[:3, 0] = self.row_direction * self.spacing_mm[0]
        affine[:3, 1] = self.column_direction * self.spacing_mm[1]
        affine[:3, 2] = self.normal * self.spacing_mm[2]
        affine[:3, 3] = self.origin_lps
        return affine

    @property
    def affine_ras(self) -> np.ndarray:
        """4x4 voxel-index to RAS (mm) matrix, as NIfTI and the canonical case store it."""
        return LPS_TO_RAS @ self.affine_lps

    @property
    def slice_positions_mm(self) -> np.ndarray:
        """Position of every slice along the normal (mm); equals z for head-first axial slices."""
        return float(self.origin_lps @ self.normal) + self.spacing_mm[2] * np.arange(self.shape[2])

    def slice_origin_lps(self, k: int) -> np.ndarray:
        """``ImagePositionPatient`` of slice ``k``."""
        return self.origin_lps + k * self.spacing_mm[2] * self.normal

    def resampled(self, shape: Sequence[int]) -> AxialGrid:
        """A grid of ``shape`` voxels over the same field of view: the first and last voxel centres stay where
        they are, so mapping values back never extrapolates."""
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or min(shape) < 2:
            raise ValueError(f"grid shape must be 3 sizes of at least 2, got {shape}")
        spacing = tuple(s * (n - 1) / (m - 1) for s, n, m in zip(self.spacing_mm, self.shape, shape))
        return AxialGrid(self.origin_lps, self.row_direction, self.column_direction, spacing, shape)

    @classmethod
    def from_affine_ras(cls, affine: np.ndarray, shape: Sequence[int]) -> AxialGrid:
        """The grid of a canonical volume (RAS affine); raise unless its axes are orthogonal and axial."""
        lps = np.linalg.inv(LPS_TO_RAS) @ np.asarray(affine, dtype=float)
        spacing = np.linalg.norm(lps[:3, :3], axis=0)
        row, col = check_axial([*(lps[:3, 0] / spacing[0]), *(lps[:3, 1] / spacing[1])], "affine")
        step = float(lps[:3, 2] @ np.cross(row, col))
        if not np.allclose(lps[:3, 2], np.cross(row, col) * step, atol=1e-4 * abs(step)):
            raise ValueError(f"affine {np.round(affine, 4).tolist()}: slices are sheared (gantry tilt?)")
        return cls(lps[:3, 3].copy(), row, col, (float(spacing[0]), float(spacing[1]), step),
                   tuple(int(s) for s in shape))  # type: ignore[arg-type]

    def same_geometry(self, other: AxialGrid, atol_mm: float = AFFINE_ATOL_MM) -> bool:
        return self.shape == other.shape and np.allclose(self.affine_lps, other.affine_lps, atol=atol_mm)
