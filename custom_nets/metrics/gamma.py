"""Gamma index (Low et al. 1998) between a reference dose and an evaluated dose on the same 3D grid.

For every reference voxel above the low-dose cutoff, gamma is the minimum over points r of the evaluated
dose, trilinearly interpolated, of ``sqrt((D_eval(r) - D_ref)^2 / dD^2 + |r - r_ref|^2 / DTA^2)``. The search
runs over offsets on a grid of step ``DTA / interp_fraction`` inside a sphere of radius ``max_gamma x DTA``,
shell by shell from the centre outwards; a voxel stops being searched once its best gamma is no larger than
the next shell's distance term, which no farther point can beat (the approach of Wendling et al. 2007 and
pymedphys). Gamma values are exact up to ``max_gamma``; beyond it they are reported as ``inf``, so the pass
rate (gamma <= 1) is exact for any ``max_gamma >= 1``. Search points outside the grid are not used.

Written here because MONAI has none, and it must take seconds on a 128^3 case on CPU. Every search offset
is the same for all voxels, so its trilinear weights are too: the interpolated doses of one shell are one
matrix product, (voxels x neighbour doses) @ (neighbour weights x offsets).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["gamma_index", "gamma_pass_rate"]

_SAMPLES_PER_CHUNK = 1 << 22


def _shells(spacing_mm: Sequence[float], step_mm: float, radius_mm: float) -> list[tuple[float, np.ndarray]]:
    """Search offsets grouped by distance: [(distance mm, offsets in voxel units (M, 3))], nearest first."""
    n = int(np.floor(radius_mm / step_mm + 1e-9))
    axis = np.arange(-n, n + 1)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    squared = (grid**2).sum(axis=1)
    keep = squared <= n * n
    grid, squared = grid[keep], squared[keep]
    return [(float(np.sqrt(value)) * step_mm, grid[squared == value] * step_mm / np.asarray(spacing_mm, float))
            for value in np.unique(squared)]


def _neighbour_weights(offsets_vox: np.ndarray, reach: np.ndarray) -> torch.Tensor:
    """Trilinear weights (K, M) of the K = prod(2 reach + 1) integer neighbours for M sub-voxel offsets."""
    sides = 2 * reach + 1
    weights = np.zeros((int(np.prod(sides)), len(offsets_vox)))
    base = np.floor(offsets_vox).astype(int)
    frac = offsets_vox - base
    columns = np.arange(len(offsets_vox))
    for corner in np.ndindex(2, 2, 2):
        corner = np.asarray(corner)
        weight = np.prod(np.where(corner == 1, frac, 1.0 - frac), axis=1)
        neighbour = base + corner + reach
        rows = np.ravel_multi_index(neighbour.T, sides)
        np.add.at(weights, (rows, columns), weight)
    return torch.as_tensor(weights)


def gamma_index(
    reference_gy: np.ndarray,
    evaluated_gy: np.ndarray,
    spacing_mm: Sequence[float],
    dose_percent: float = 3.0,
    distance_mm: float = 2.0,
    low_dose_cutoff_percent: float = 10.0,
    normalisation_gy: float | None = None,
    local: bool = False,
    interp_fraction: int = 10,
    max_gamma: float = 1.0,
) -> np.ndarray:
    """Gamma of every reference voxel (X, Y, Z) against the evaluated dose (X, Y, Z), both in Gy.

    Args:
        reference_gy: reference (planned) dose, Gy, shape (X, Y, Z).
        evaluated_gy: evaluated (predicted) dose on the same grid, Gy.
        spacing_mm: voxel size along the three array axes, mm.
        dose_percent: dose-difference criterion, % of ``normalisation_gy`` (global) or of the local
            reference dose (``local=True``).
        distance_mm: distance-to-agreement criterion (DTA), mm.
        low_dose_cutoff_percent: reference voxels below this % of ``normalisation_gy`` are not evaluated.
        normalisation_gy: dose that the percentages refer to; default the maximum reference dose.
        local: local instead of global dose difference.
        interp_fraction: search step is ``distance_mm / interp_fraction``.
        max_gamma: search radius in units of ``distance_mm``; larger gammas are returned as ``inf``.

    Returns:
        float64 array (X, Y, Z): gamma, NaN where the reference is below the cutoff.
    """
    reference = np.asarray(reference_gy, dtype=np.float64)
    evaluated = np.asarray(evaluated_gy, dtype=np.float64)
    if reference.shape != evaluated.shape or reference.ndim != 3:
        raise ValueError(f"gamma needs two 3D doses on one grid, got {reference.shape} and {evaluated.shape}")
    if distance_mm <= 0 or dose_percent <= 0 or max_gamma <= 0:
        raise ValueError("gamma criteria must be positive")
    norm = float(reference.max() if normalisation_gy is None else normalisation_gy)
    gamma = np.full(reference.shape, np.nan)
    if norm <= 0:
        return gamma
    points = np.argwhere(reference >= low_dose_cutoff_percent / 100.0 * norm)
    ref_values = torch.as_tensor(reference[tuple(points.T)])
    criterion = dose_percent / 100.0 * (ref_values if local else torch.full_like(ref_values, norm))
    step_mm, radius_mm = distance_mm / interp_fraction, max_gamma * distance_mm
    reach = np.floor(radius_mm / np.asarray(spacing_mm, dtype=float)).astype(int) + 1
    padded = np.pad(evaluated, [(r, r) for r in reach])
    cube = np.stack(np.meshgrid(*[np.arange(-r, r + 1) for r in reach], indexing="ij"), -1).reshape(-1, 3)
    neighbours = torch.as_tensor(padded[tuple((points[:, None, :] + reach + cube[None]).transpose(2, 0, 1))])
    coords = torch.as_tensor(points, dtype=torch.float64)
    upper = torch.as_tensor(reference.shape, dtype=torch.float64) - 1
    near_edge = torch.as_tensor(((points < reach) | (points > np.asarray(reference.shape) - 1 - reach)).any(axis=1))
    best = torch.full((len(points),), float("inf"), dtype=torch.float64)

    for distance, offsets in _shells(spacing_mm, step_mm, radius_mm):
        distance_term = (distance / distance_mm) ** 2
        undecided = torch.nonzero(best > distance_term).flatten()
        if undecided.numel() == 0:
            break
        weights = _neighbour_weights(offsets, reach)
        offsets_t = torch.as_tensor(offsets)
        chunk = max(1, _SAMPLES_PER_CHUNK // len(offsets))
        for start in range(0, undecided.numel(), chunk):
            index = undecided[start:start + chunk]
            difference = neighbours[index] @ weights - ref_values[index, None]
            squared = (difference / criterion[index, None]) ** 2 + distance_term
            edge = torch.nonzero(near_edge[index]).flatten()
            if edge.numel():
                at = coords[index[edge]][:, None, :] + offsets_t[None]
                outside = ((at < 0) | (at > upper)).any(dim=-1)
                squared[edge] = squared[edge].masked_fill(outside, float("inf"))
            best[index] = torch.minimum(best[index], squared.min(dim=1).values)

    values = torch.sqrt(best).numpy()
    values[values > max_gamma] = np.inf
    gamma[tuple(points.T)] = values
    return gamma


def gamma_pass_rate(gamma: np.ndarray) -> float:
    """Percentage of the evaluated voxels (non-NaN gamma) with gamma <= 1; NaN when none was evaluated."""
    evaluated = gamma[~np.isnan(gamma)]
    return float(100.0 * np.count_nonzero(evaluated <= 1.0) / evaluated.size) if evaluated.size else np.nan
