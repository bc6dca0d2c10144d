"""Synthetic anatomy: a thorax (lung profile) and a head and neck (OpenKBP profile).

Shapes are ellipsoids and elliptic cylinders in world millimetres (RAS: x towards the patient's right,
y anterior, z superior, origin at the centre of the field of view), with sizes and the tumour drawn from a
seeded generator. Each builder returns CT numbers, structure masks and per-level target masks; the beam
model turns them into a dose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Anatomy", "thorax", "head_and_neck", "FIELD_OF_VIEW_MM"]

#: Field of view (x, y, z) in mm of each profile's phantom; the voxel size is this divided by the shape.
FIELD_OF_VIEW_MM = {"lung": (420.0, 420.0, 300.0), "openkbp": (300.0, 300.0, 240.0)}


@dataclass
class Anatomy:
    """A synthetic patient before planning.

    Attributes:
        ct_hu: CT numbers (X, Y, Z).
        body: body mask (X, Y, Z), the possible-dose region.
        structures: OAR (and body) masks by profile name.
        targets: nested target masks by name (each level's full extent, inner levels included).
        prescriptions_gy: prescription of each target.
        side: where the tumour is ("left", "right" or "bilateral").
        overlapping_targets: whether the contoured targets overlap (nested lung PTVs) or not (OpenKBP,
            where each lower level excludes the higher ones).
    """

    ct_hu: np.ndarray
    body: np.ndarray
    structures: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]
    prescriptions_gy: dict[str, float]
    side: str
    overlapping_targets: bool


def _grid(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> list[np.ndarray]:
    return [((np.arange(n) - (n - 1) / 2.0) * s).astype(np.float32) for n, s in zip(shape, spacing)]


def _ellipsoid(axes: list[np.ndarray], centre, radii) -> np.ndarray:
    x, y, z = axes
    return (((x[:, None, None] - centre[0]) / radii[0]) ** 2 + ((y[None, :, None] - centre[1]) / radii[1]) ** 2
            + ((z[None, None, :] - centre[2]) / radii[2]) ** 2) <= 1.0


def _cylinder(axes: list[np.ndarray], centre_xy, radii_xy, z_range=(-np.inf, np.inf)) -> np.ndarray:
    x, y, z = axes
    disc = ((x[:, None] - centre_xy[0]) / radii_xy[0]) ** 2 + ((y[None, :] - centre_xy[1]) / radii_xy[1]) ** 2 <= 1
    span = (z >= z_range[0]) & (z <= z_range[1])
    return disc[:, :, None] & span[None, None, :]


def _nested_targets(axes, lesions: list[tuple[np.ndarray, np.ndarray]], prescriptions: list[float],
                    margin_mm: float, body: np.ndarray, names: dict[float, str]) -> dict[str, np.ndarray]:
    """Nested targets around each lesion: the highest prescription innermost, each lower level
    ``margin_mm`` larger."""
    targets = {}
    for rank, rx in enumerate(sorted(prescriptions, reverse=True)):
        mask = np.zeros(body.shape, dtype=bool)
        for centre, radii in lesions:
            mask |= _ellipsoid(axes, centre, radii + rank * margin_mm)
        targets[names[rx]] = mask & body
    return targets


def thorax(shape: tuple[int, int, int], rng: np.random.Generator, prescriptions_gy: tuple[float, ...],
           target_names: dict[float, str]) -> Anatomy:
    """A thorax with lungs, heart, oesophagus, spine and cord, and nested lung PTVs."""
    spacing = tuple(f / n for f, n in zip(FIELD_OF_VIEW_MM["lung"], shape))
    axes = _grid(shape, spacing)
    half_width, half_depth = rng.uniform(150, 170), rng.uniform(100, 115)
    body = _cylinder(axes, (0, 0), (half_width, half_depth))
    fat = body & ~_cylinder(axes, (0, 0), (half_width - 12, half_depth - 12))
    lung_radii = np.array([rng.uniform(50, 60), rng.uniform(70, 80), rng.uniform(105, 120)])
    lung_r = _ellipsoid(axes, (78, 5, 0), lung_radii) & body  # +x is the patient's right
    lung_l = _ellipsoid(axes, (-80, 5, 0), lung_radii * np.array([0.95, 1.0, 1.0])) & body
    heart = _ellipsoid(axes, (-22, 42, -45), (rng.uniform(45, 55), rng.uniform(40, 48), 50)) & body
    thin = 0.75 * max(spacing[:2])  # small organs keep at least a voxel's width on coarse grids
    vertebra = _cylinder(axes, (0, -72), (20, 18))
    canal = _cylinder(axes, (0, -80), (max(8, thin + 3),) * 2)
    cord = _cylinder(axes, (0, -80), (max(5, thin),) * 2)
    esophagus = _cylinder(axes, (4, -45), (max(8, thin), max(7, thin)))
    lung_l, lung_r = lung_l & ~heart & ~esophagus, lung_r & ~heart & ~esophagus

    ct = np.full(shape, -1000.0, dtype=np.float32)
    ct[body] = 40.0
    ct[fat] = -100.0
    ct[lung_l | lung_r] = -820.0
    ct[heart] = 45.0
    ct[vertebra & ~canal] = 650.0
    ct[canal] = 30.0
    ct[esophagus] = 20.0
    ct += rng.normal(0.0, 15.0, shape).astype(np.float32) * body

    side = str(rng.choice(["left", "right", "bilateral"], p=[0.3, 0.45, 0.25]))
    lesions = []
    for lung_side in (["left", "right"] if side == "bilateral" else [side]):
        sign = 1.0 if lung_side == "right" else -1.0
        centre = np.array([sign * rng.uniform(60, 95), rng.uniform(-20, 30), rng.uniform(-40, 50)])
        radii = rng.uniform(14, 26, size=3)
        lesions.append((centre, radii))
    targets = _nested_targets(axes, lesions, list(prescriptions_gy), 9.0, body, target_names)
    structures = {"Lung_L": lung_l, "Lung_R": lung_r, "Lungs": lung_l | lung_r, "Heart": heart,
                  "Esophagus": esophagus, "SpinalCord": cord, "Body": body}
    prescriptions = {target_names[rx]: float(rx) for rx in prescriptions_gy}
    return Anatomy(ct.round(), body, structures, targets, prescriptions, side, True)


def head_and_neck(shape: tuple[int, int, int], rng: np.random.Generator, prescriptions_gy: tuple[float, ...],
                  target_names: dict[float, str]) -> Anatomy:
    """A head and neck with brainstem, cord, parotids, larynx, oesophagus, mandible and nodal PTVs.

    Targets do not overlap (as in OpenKBP): each lower level is a larger region minus the higher ones.
    """
    spacing = tuple(f / n for f, n in zip(FIELD_OF_VIEW_MM["openkbp"], shape))
    axes = _grid(shape, spacing)
    neck = _cylinder(axes, (0, 5), (rng.uniform(62, 70), rng.uniform(70, 78)), (-np.inf, 20))
    head = _ellipsoid(axes, (0, 10, 60), (rng.uniform(72, 80), rng.uniform(88, 96), 95))
    body = neck | head
    thin = 0.75 * max(spacing[:2])  # small organs keep at least a voxel's width on coarse grids
    cord = _cylinder(axes, (0, -38), (max(5, thin),) * 2, (-np.inf, 25))
    brainstem = _ellipsoid(axes, (0, -25, 50), (11, 12, 26))
    vertebra = _cylinder(axes, (0, -30), (17, 15), (-np.inf, 25)) & ~_cylinder(axes, (0, -38), (8, 8))
    outer = _cylinder(axes, (0, 20), (48, 52), (5, 35))
    inner = _cylinder(axes, (0, 20), (40, 44), (5, 35))
    mandible = outer & ~inner & (axes[1][None, :, None] > 5) & body
    parotid_r = _ellipsoid(axes, (46, -8, 40), (12, 18, 20)) & body
    parotid_l = _ellipsoid(axes, (-46, -8, 40), (12, 18, 20)) & body
    larynx = _ellipsoid(axes, (0, 40, -25), (15, 13, 22)) & body
    airway = _ellipsoid(axes, (0, 40, -25), (6, 5, 20)) | _cylinder(axes, (0, 38), (5, 4), (-np.inf, -45))
    esophagus = _cylinder(axes, (0, -14), (max(7, thin), max(6, thin)), (-np.inf, -45)) & body

    ct = np.full(shape, -1000.0, dtype=np.float32)
    ct[body] = 35.0
    ct[body & ~_cylinder(axes, (0, 5), (55, 63))] = -90.0
    ct[mandible | vertebra] = 800.0
    ct[parotid_l | parotid_r] = 15.0
    ct[larynx] = 45.0
    ct[airway & body] = -950.0
    ct += rng.normal(0.0, 15.0, shape).astype(np.float32) * body

    side = str(rng.choice(["left", "right"]))
    sign = 1.0 if side == "right" else -1.0
    primary_centre = np.array([sign * rng.uniform(10, 25), rng.uniform(5, 25), rng.uniform(-5, 25)])
    primary_radii = rng.uniform(14, 22, size=3)
    regions = {
        70.0: _ellipsoid(axes, primary_centre, primary_radii),
        63.0: _ellipsoid(axes, primary_centre + np.array([sign * 12, -8, -12]), primary_radii + 14),
        56.0: (_ellipsoid(axes, (38, 0, -10), (16, 22, 45)) | _ellipsoid(axes, (-38, 0, -10), (16, 22, 45))),
    }
    targets, taken = {}, np.zeros(shape, dtype=bool)
    for rx in sorted(prescriptions_gy, reverse=True):
        mask = regions[rx] & body & ~taken & ~cord & ~brainstem
        targets[target_names[rx]] = mask | taken  # nested view: a level's full extent includes higher ones
        taken |= mask
    structures = {"Brainstem": brainstem, "SpinalCord": cord, "RightParotid": parotid_r, "LeftParotid": parotid_l,
                  "Esophagus": esophagus, "Larynx": larynx, "Mandible": mandible}
    prescriptions = {target_names[rx]: float(rx) for rx in prescriptions_gy}
    return Anatomy(ct.round(), body, structures, targets, prescriptions, side, False)
