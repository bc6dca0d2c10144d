"""Binary mask -> closed planar contours that trace pixel edges, for writing RT Structure Sets.

The contours run along pixel borders (half-integer indices), so no pixel centre lies on them and the
even-odd rasteriser of :mod:`custom_nets.io.dicom.rtstruct` gives back exactly the mask, holes included.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

__all__ = ["mask_to_polygons"]

# Directed pixel-border edges (start corner, end corner) per missing neighbour, corner (a, b) being the point
# (a - 0.5, b - 0.5) in index space; the foreground stays on the same side of every edge.
_SIDES = (
    ((0, -1), ((0, 0), (1, 0))),
    ((1, 0), ((1, 0), (1, 1))),
    ((0, 1), ((1, 1), (0, 1))),
    ((-1, 0), ((0, 1), (0, 0))),
)


def mask_to_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """Closed polygons (each (N, 2) float (column, row) index coordinates) bounding a 2D mask (X, Y).

    Outer borders and hole borders are separate polygons; their even-odd fill is the mask."""
    mask = np.asarray(mask, dtype=bool)
    padded = np.pad(mask, 1)
    next_corner: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for (di, dj), ((a0, b0), (a1, b1)) in _SIDES:
        neighbour = padded[1 + di:padded.shape[0] - 1 + di, 1 + dj:padded.shape[1] - 1 + dj]
        for i, j in np.argwhere(mask & ~neighbour):
            next_corner[(int(i) + a0, int(j) + b0)].append((int(i) + a1, int(j) + b1))
    polygons = []
    while next_corner:
        start = next(iter(next_corner))
        loop, corner = [start], start
        while True:
            following = next_corner[corner].pop()
            if not next_corner[corner]:
                del next_corner[corner]
            if following == start:
                break
            loop.append(following)
            corner = following
        polygons.append(_drop_collinear(np.asarray(loop, dtype=float) - 0.5))
    return polygons


def _drop_collinear(points: np.ndarray) -> np.ndarray:
    before = points - np.roll(points, 1, axis=0)
    after = np.roll(points, -1, axis=0) - points
    turning = np.abs(before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]) > 0
    return points[turning]
