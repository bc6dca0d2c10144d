"""Dice similarity of isodose volumes: how well the predicted and planned regions above each dose level agree."""

from __future__ import annotations

import numpy as np

__all__ = ["isodose_levels_gy", "isodose_dice"]


def isodose_levels_gy(reference_dose_gy: float, step_gy: float = 0.5) -> np.ndarray:
    """Dose levels 0, step, 2 step, ... up to the reference dose inclusive (the cascade paper's Fig. 6 axis)."""
    return np.round(np.arange(0.0, reference_dose_gy + step_gy / 2, step_gy), 6)


def isodose_dice(reference_gy: np.ndarray, predicted_gy: np.ndarray, levels_gy: np.ndarray,
                 region: np.ndarray | None = None) -> np.ndarray:
    """Dice of the isodose volumes ``{dose >= level}`` of the two doses, for every level.

    Args:
        reference_gy, predicted_gy: doses in Gy on one grid, any shape.
        levels_gy: dose levels (L,), Gy.
        region: voxels taken into account (e.g. the body / possible-dose mask); default all.

    Returns:
        (L,) Dice values; NaN where neither dose reaches the level.

    Counts come from sorted doses instead of one mask per level: ``|A_l|`` from the reference, ``|B_l|``
    from the prediction and ``|A_l & B_l|`` from their voxel-wise minimum, each by a binary search.
    """
    reference = np.asarray(reference_gy, dtype=np.float64)
    predicted = np.asarray(predicted_gy, dtype=np.float64)
    if reference.shape != predicted.shape:
        raise ValueError(f"isodose Dice needs doses on one grid, got {reference.shape} and {predicted.shape}")
    if region is not None:
        reference, predicted = reference[region.astype(bool)], predicted[region.astype(bool)]
    reference, predicted = reference.ravel(), predicted.ravel()
    levels = np.asarray(levels_gy, dtype=np.float64)

    def at_least(values: np.ndarray) -> np.ndarray:
        ordered = np.sort(values)
        return ordered.size - np.searchsorted(ordered, levels, side="left")

    both = at_least(np.minimum(reference, predicted))
    total = at_least(reference) + at_least(predicted)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2.0 * both / np.maximum(total, 1), np.nan)
