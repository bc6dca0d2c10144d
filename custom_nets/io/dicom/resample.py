"""Resample a volume from one :class:`AxialGrid` to another by patient coordinates (the model grid and back)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from custom_nets.io.dicom.geometry import AxialGrid

__all__ = ["resample_to_grid"]

_INSIDE_TOLERANCE = 1e-3  # voxel index units: a target centre this far past the source's outer planes is inside


def resample_to_grid(volume: np.ndarray, source: AxialGrid, target: AxialGrid, order: int = 1,
                     fill_value: float = 0.0) -> np.ndarray:
    """``volume`` (X, Y, Z on ``source``) sampled at the voxel centres of ``target`` (trilinear by default).

    Target voxels outside the source grid get ``fill_value`` (0 Gy for a dose, -1000 HU for a CT). When the
    two grids coincide the volume comes back unchanged, so a round trip through the same grid is exact."""
    if volume.shape != source.shape:
        raise ValueError(f"volume of shape {volume.shape} does not match the source grid's {source.shape}")
    if source.same_geometry(target):
        return volume.copy()
    index_map = np.linalg.inv(source.affine_lps) @ target.affine_lps
    matrix, offset = index_map[:3, :3], index_map[:3, 3]
    fill = np.float32(fill_value)
    if np.array_equal(matrix, np.diag(np.diag(matrix))):  # each target axis maps to one source axis
        scales = np.diag(matrix)
        if order == 1:
            out = _separable_linear(np.ascontiguousarray(volume, dtype=np.float32), scales, offset, target.shape)
        else:
            out = ndimage.affine_transform(np.asarray(volume, dtype=np.float32), scales, offset,
                                           output_shape=target.shape, order=order, mode="nearest")
        for axis, (scale, shift, n) in enumerate(zip(scales, offset, source.shape)):  # outside: a union of slabs
            out[(slice(None),) * axis + (~_inside(scale * np.arange(target.shape[axis]) + shift, n),)] = fill
        return out
    # "nearest" extends the edge voxels, so centres on the source's outer planes (a float hair outside)
    # interpolate cleanly; centres truly outside get the fill value.
    out = ndimage.affine_transform(np.asarray(volume, dtype=np.float32), matrix, offset, output_shape=target.shape,
                                   order=order, mode="nearest")
    coords = _index_coordinates(index_map, target.shape)
    inside = np.all([_inside(c, n) for c, n in zip(coords, source.shape)], axis=0)
    return np.where(inside, out, fill).astype(np.float32)


def _separable_linear(volume: np.ndarray, scales: np.ndarray, offsets: np.ndarray,
                      shape: tuple[int, int, int]) -> np.ndarray:
    """Trilinear interpolation as three 1-D passes, target index ``i`` of an axis at source index
    ``scale * i + offset``, clamped to the edge voxels like scipy's ``mode="nearest"``. The same values as scipy's
    zoom-and-shift path up to float32 rounding (its arithmetic is float64), 3-6x faster at 128^3 <-> 192^2 x 128
    (scipy interpolates every output voxel from its 8 neighbours, one thread)."""
    out = volume
    for axis in (2, 1, 0):
        n = out.shape[axis]
        position = np.clip(scales[axis] * np.arange(shape[axis]) + offsets[axis], 0, n - 1)
        below = np.clip(np.floor(position), 0, max(n - 2, 0)).astype(np.intp)
        weight = (position - below).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(3)])
        low = np.take(out, below, axis)
        out = low + (np.take(out, np.minimum(below + 1, n - 1), axis) - low) * weight
    return out


def _inside(index: np.ndarray, n: int) -> np.ndarray:
    """Source voxel indices (continuous) that lie within a source axis of ``n`` voxels, up to the tolerance."""
    return (index > -_INSIDE_TOLERANCE) & (index < n - 1 + _INSIDE_TOLERANCE)


def _index_coordinates(index_map: np.ndarray, shape: tuple[int, int, int]) -> list[np.ndarray]:
    axes = [np.arange(n, dtype=np.float64) for n in shape]
    grid = np.meshgrid(*axes, indexing="ij", sparse=True)
    return [sum(index_map[r, c] * grid[c] for c in range(3)) + index_map[r, 3] for r in range(3)]
