"""The cascade paper's spatial augmentation that MONAI has no ready transform for.

MONAI's ``RandFlipd`` covers the random flips; its ``RandAffined`` draws continuous angles, while the paper
rotates about the axial axis by multiples of 40 degrees, so this transform draws the multiple and the
translation and applies one MONAI ``Affine`` to every key (nearest for masks, linear for CT and dose).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import Affine, MapTransform, RandomizableTransform
from monai.utils import ensure_tuple_rep

__all__ = ["RandAxialRotateTranslated"]


class RandAxialRotateTranslated(RandomizableTransform, MapTransform):
    """Rotate about the axial (last spatial) axis by ``k * angle_step_deg`` and translate, identically for all keys.

    Expects channel-first 3D tensors whose last spatial axis is superior-inferior (``Orientationd`` to RAS).

    Args:
        keys: keys to transform together (CT, dose, masks, prior dose...).
        mode: interpolation per key or one for all: ``"bilinear"`` for the CT, ``"nearest"`` for masks and for a
            dose label, so that each voxel's dose and structures come from one voxel of the plan (a linear dose
            beside nearest masks gives a small target's edge doses no plan had).
        prob: probability of applying the transform.
        angle_step_deg: rotation angles are multiples of this (paper: 40).
        max_translation_voxels: translations are drawn uniformly in +- this, per axis of ``translation_axes``.
        translation_axes: spatial axes to translate along (default: all three).
        padding_values: per key, the value of voxels moved in from outside the field of view (default 0: no dose,
            outside every mask; give the CT its air value). Padding never repeats an edge: a possible-dose mask
            cut by a crop would otherwise be extended into made-up voxels that enter the loss.
    """

    def __init__(self, keys: KeysCollection, mode: str | Sequence[str] = "bilinear", prob: float = 0.5,
                 angle_step_deg: float = 40.0, max_translation_voxels: float = 20.0,
                 translation_axes: Sequence[int] = (0, 1, 2), padding_values: Mapping[str, float] | None = None,
                 allow_missing_keys: bool = True) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.mode = ensure_tuple_rep(mode, len(self.keys))
        self.angle_step_deg = float(angle_step_deg)
        self.max_translation_voxels = float(max_translation_voxels)
        self.translation_axes = tuple(translation_axes)
        self.padding_values = {str(k): float(v) for k, v in (padding_values or {}).items()}
        self.angle_rad = 0.0
        self.translation = np.zeros(3)

    def randomize(self, data: object = None) -> None:
        super().randomize(None)
        if not self._do_transform:
            return
        n_steps = max(1, int(round(360.0 / self.angle_step_deg)))
        self.angle_rad = float(np.deg2rad(self.R.randint(n_steps) * self.angle_step_deg))
        self.translation = np.zeros(3)
        for axis in self.translation_axes:
            self.translation[axis] = self.R.uniform(-self.max_translation_voxels, self.max_translation_voxels)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        affine = Affine(rotate_params=(0.0, 0.0, self.angle_rad), translate_params=self.translation.tolist(),
                        padding_mode="zeros", image_only=True)
        by_mode: dict[str, list[Hashable]] = {}
        shapes: dict[str, tuple[int, ...]] = {}
        for key, mode in self.key_iterator(d, self.mode):
            by_mode.setdefault(mode, []).append(key)
            shapes[str(key)] = tuple(d[key].shape[1:])
        if len(set(shapes.values())) > 1:
            raise ValueError(f"RandAxialRotateTranslated moves its keys together, so they need one spatial shape; got "
                             f"{shapes}")
        for mode, keys in by_mode.items():  # one resampling per mode: the grid is built once, not once per key
            fills = [self.padding_values.get(str(key), 0.0) for key in keys]
            moved = affine(torch.cat([torch.as_tensor(d[key]) - fill for key, fill in zip(keys, fills)]), mode=mode)
            for key, fill, part in zip(keys, fills, torch.split(moved, [d[key].shape[0] for key in keys])):
                d[key] = part + fill if fill else part
        return d
