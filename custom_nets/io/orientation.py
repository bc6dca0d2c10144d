"""Reorder a volume's axes to named anatomical directions (nibabel axis codes), without resampling."""

from __future__ import annotations

from collections.abc import Sequence

import nibabel as nib
import numpy as np

__all__ = ["reorient", "reorient_with_affine", "axcodes_of"]


def axcodes_of(affine: np.ndarray) -> tuple[str, ...]:
    """Nibabel axis codes of an affine, e.g. ``("P", "L", "I")`` for OpenKBP's grid."""
    return tuple(nib.aff2axcodes(np.asarray(affine, dtype=float)))


def reorient(volume: np.ndarray, affine: np.ndarray, axcodes: Sequence[str]) -> np.ndarray:
    """``volume`` (X, Y, Z) with voxel-to-world ``affine`` reordered/flipped so its axes run towards ``axcodes``."""
    return reorient_with_affine(volume, affine, axcodes)[0]


def reorient_with_affine(volume: np.ndarray, affine: np.ndarray, axcodes: Sequence[str]
                         ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`reorient`, also returning the reoriented volume's affine (the same voxels in the same places)."""
    affine = np.asarray(affine, dtype=float)
    transform = nib.orientations.ornt_transform(nib.orientations.io_orientation(affine),
                                                nib.orientations.axcodes2ornt(tuple(axcodes)))
    volume = np.asarray(volume)
    return (nib.orientations.apply_orientation(volume, transform),
            affine @ nib.orientations.inv_ornt_aff(transform, volume.shape))
