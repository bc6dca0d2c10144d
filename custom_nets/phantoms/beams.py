"""A simple photon-beam dose model and a target-weighting "planner" for synthetic patients.

Not a treatment planning system, but physics rather than a blur of the PTV:

* coplanar 6 MV-like beams (IEC gantry angles: 0 deg enters from anterior, 90 deg from the patient's left);
* per beam and target level, an aperture shaped to the target's projection in the beam's eye view, with a
  Gaussian penumbra;
* depth dose along the radiological (water-equivalent) depth traced through the CT densities:
  build-up ``1 - exp(-d / d_build)`` times attenuation ``exp(-mu d)``, and inverse square from the source;
* a scatter term (the primary dose convolved with a wide Gaussian) that makes the low-dose bath;
* simultaneous integrated boost: one fluence component per prescription level, weighted by non-negative
  least squares so that each target gets its own prescription, then normalised so that 95% of the highest
  target receives its prescription (D95 = Rx), as planners normalise IMRT plans.

Arrays use RAS index axes: axis 0 towards the patient's right (x), axis 1 anterior (y), axis 2 superior.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, optimize

__all__ = ["BeamModel", "density_from_hu", "radiological_depth_mm", "level_doses", "plan_sib_dose"]


@dataclass(frozen=True)
class BeamModel:
    """Parameters of the beam model (lengths in mm)."""

    attenuation_per_mm: float = 0.0045  # effective linear attenuation of a 6 MV beam in water
    build_up_mm: float = 6.0  # build-up length: dose rises to its maximum within ~15 mm
    source_axis_distance_mm: float = 1000.0
    penumbra_sigma_mm: float = 3.5  # ~6 mm 80-20% penumbra
    aperture_margin_mm: float = 3.0
    scatter_sigma_mm: float = 15.0
    scatter_fraction: float = 0.15


def density_from_hu(ct_hu: np.ndarray) -> np.ndarray:
    """Relative electron density from HU (linear: water 1.0, air ~0, bone up to ~2)."""
    return np.clip(1.0 + np.asarray(ct_hu, dtype=np.float32) / 1000.0, 0.0, 2.5).astype(np.float32)


def _beam_axes(angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """In-plane unit vectors (x, y) of the beam direction and of its lateral axis."""
    theta = np.deg2rad(angle_deg)
    direction = np.array([np.sin(theta), -np.cos(theta)])  # gantry 0: travels anterior -> posterior
    lateral = np.array([np.cos(theta), np.sin(theta)])
    return direction, lateral


def radiological_depth_mm(density: np.ndarray, angle_deg: float, isocenter: np.ndarray,
                          spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """Water-equivalent depth (mm) of every voxel along a beam at ``angle_deg`` through ``isocenter``.

    The density is resampled into a beam-aligned grid (depth along its axis 1), integrated cumulatively
    from the upstream edge, and resampled back. In-plane spacing must be isotropic.
    """
    h = spacing_mm[0]
    if abs(spacing_mm[0] - spacing_mm[1]) > 1e-6:
        raise ValueError(f"the beam model needs isotropic in-plane voxels, got spacing {spacing_mm}")
    direction, lateral = _beam_axes(angle_deg)
    shape = np.asarray(density.shape)
    corners = np.array([[x, y] for x in (0, shape[0] - 1) for y in (0, shape[1] - 1)], dtype=float)
    half = int(np.ceil(np.max(np.linalg.norm(corners - isocenter[:2], axis=1)))) + 2
    size = 2 * half
    matrix = np.eye(3)
    matrix[:2, 0], matrix[:2, 1] = lateral, direction
    offset = np.array([*(isocenter[:2] - (lateral + direction) * half), 0.0])
    bev = ndimage.affine_transform(density, matrix, offset, output_shape=(size, size, int(shape[2])),
                                   order=1, cval=0.0)
    depth_bev = (np.cumsum(bev, axis=1) - 0.5 * bev) * h
    inverse = matrix.T
    return ndimage.affine_transform(depth_bev, inverse, -inverse @ offset, output_shape=tuple(shape), order=1,
                                    mode="nearest")


def _aperture_fluence(target: np.ndarray, lateral: np.ndarray, isocenter: np.ndarray, lateral_idx: np.ndarray,
                      spacing_mm: tuple[float, float, float], model: BeamModel) -> np.ndarray:
    """Fluence of an aperture shaped to ``target``'s beam's-eye-view projection, at every voxel."""
    h, hz = spacing_mm[0], spacing_mm[2]
    pad = int(np.ceil((model.aperture_margin_mm + 4 * model.penumbra_sigma_mm) / h)) + 2
    lo = int(np.floor(lateral_idx.min())) - pad
    n_p = int(np.ceil(lateral_idx.max())) + pad - lo + 1
    aperture = np.zeros((n_p, target.shape[2]), dtype=np.float32)
    x, y, z = np.nonzero(target)
    p = (x - isocenter[0]) * lateral[0] + (y - isocenter[1]) * lateral[1]
    aperture[np.round(p - lo).astype(int), z] = 1.0
    margin = (max(1, round(model.aperture_margin_mm / h)), max(1, round(model.aperture_margin_mm / hz)))
    aperture = ndimage.binary_dilation(aperture > 0, structure=np.ones((2 * margin[0] + 1, 2 * margin[1] + 1)))
    fluence = ndimage.gaussian_filter(aperture.astype(np.float32),
                                      sigma=(model.penumbra_sigma_mm / h, model.penumbra_sigma_mm / hz))
    zz = np.broadcast_to(np.arange(target.shape[2], dtype=np.float32), lateral_idx.shape)
    return ndimage.map_coordinates(fluence, [lateral_idx - lo, zz], order=1, mode="constant", cval=0.0)


def level_doses(ct_hu: np.ndarray, body: np.ndarray, targets: list[np.ndarray], angles_deg: list[float],
                spacing_mm: tuple[float, float, float], isocenter: np.ndarray | None = None,
                model: BeamModel = BeamModel()) -> np.ndarray:
    """Dose of each target level's aperture set with unit weight per beam, shape (n_levels, X, Y, Z).

    Args:
        ct_hu: CT in HU, (X, Y, Z), RAS index axes, isotropic in-plane spacing.
        body: body mask; dose is zero outside it.
        targets: one bool mask per level (for nested SIB targets, each level's full extent).
        angles_deg: gantry angles of the coplanar beams.
        spacing_mm: voxel size (mm) along the three axes.
        isocenter: beam isocentre in voxel coordinates (default: centroid of the union of targets).
    """
    shape = ct_hu.shape
    density = density_from_hu(ct_hu) * body
    if isocenter is None:
        isocenter = np.array(ndimage.center_of_mass(np.any(targets, axis=0)))
    grid = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape[:2]), indexing="ij")
    doses = np.zeros((len(targets), *shape), dtype=np.float32)
    h = spacing_mm[0]
    for angle in angles_deg:
        direction, lateral = _beam_axes(angle)
        depth = radiological_depth_mm(density, angle, isocenter, spacing_mm)
        along = ((grid[0] - isocenter[0]) * direction[0] + (grid[1] - isocenter[1]) * direction[1]) * h
        inverse_square = (model.source_axis_distance_mm / (model.source_axis_distance_mm + along)) ** 2
        depth_dose = ((1.0 - np.exp(-depth / model.build_up_mm)) * np.exp(-model.attenuation_per_mm * depth)
                      * inverse_square[..., None])
        lateral_idx = (grid[0] - isocenter[0]) * lateral[0] + (grid[1] - isocenter[1]) * lateral[1]
        lateral_idx = np.broadcast_to(lateral_idx[..., None], shape)
        for level, target in enumerate(targets):
            doses[level] += _aperture_fluence(target, lateral, isocenter, lateral_idx, spacing_mm, model) * depth_dose
    sigma = [model.scatter_sigma_mm / s for s in spacing_mm]
    for level in range(len(targets)):
        scatter = ndimage.gaussian_filter(doses[level], sigma=sigma)
        doses[level] = ((1.0 - model.scatter_fraction) * doses[level] + model.scatter_fraction * scatter) * body
    return doses


def plan_sib_dose(doses: np.ndarray, cropped_targets: list[np.ndarray], prescriptions_gy: list[float],
                  iterations: int = 30) -> np.ndarray:
    """Weight the level doses so every target gets its prescription; normalise D95 of the top target to Rx.

    Args:
        doses: (n_levels, X, Y, Z) unit-weight level doses from :func:`level_doses`.
        cropped_targets: per level, the voxels whose prescription is that level's (outer targets cropped by
            inner ones), in the same order as ``doses``.
        prescriptions_gy: prescription of each level.
        iterations: coverage refinements after the least-squares start.

    Returns:
        The plan's dose in Gy, (X, Y, Z).
    """
    rows, wanted = [], []
    for mask, rx in zip(cropped_targets, prescriptions_gy):
        rows.append(doses[:, mask].T)
        wanted.append(np.full(int(mask.sum()), rx))
    weights, _ = optimize.nnls(np.concatenate(rows).astype(np.float64), np.concatenate(wanted))
    if not np.any(weights > 0):
        raise RuntimeError("SIB weighting failed: no beam weight is positive")
    # Least squares aims at the mean; planners aim at coverage. Nudge each level until its D95 meets its Rx.
    for _ in range(iterations):
        d95 = np.array([np.percentile(r @ weights, 5) for r in rows])
        weights = weights * (np.asarray(prescriptions_gy) / np.maximum(d95, 1e-6)) ** 0.5
    dose = np.tensordot(weights, doses, axes=1)
    top = int(np.argmax(prescriptions_gy))
    d95 = np.percentile(dose[cropped_targets[top]], 5)
    return (dose * (prescriptions_gy[top] / d95)).astype(np.float32)
