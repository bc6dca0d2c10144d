"""The possible-dose region at the network's size, and the prediction back on the patient's grid.

The CPU profile trains and infers on the same input: the bounding box of the possible-dose mask (plus a margin),
scaled by one factor on every axis so that it fits the network size, and pooled down to it. Pooling is
mask-aware where MONAI's ``Resized`` is not: the possible-dose mask by maximum (a coarse voxel that can receive
dose is kept), the dose averaged over the possible-dose voxels only (no zeros from outside the body leak into the
label), CT and structure masks by plain area averaging (a small OAR survives as a partial volume). The network's
prediction goes back to the box by trilinear interpolation and is zero outside it.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

__all__ = ["region_box", "resample_region", "restore_region", "pooled_affine", "ResampleRegiond", "RestoreRegiond",
           "REGION_MODES"]

#: How a key is pooled into the network grid.
REGION_MODES = ("mean", "max", "masked_mean")


def region_box(mask: torch.Tensor, network_size: Sequence[int], margin_voxels: int = 4) -> torch.Tensor:
    """The box pooled into the network grid: the bounding box of ``mask`` grown by ``margin_voxels``, centred,
    enlarged to ``scale * network_size`` with one scale ``>= 1`` for every axis (never upsampled, proportions
    kept), then clipped to the volume (an axis that cannot hold it is taken whole) and shifted inside it.

    Args:
        mask: (X, Y, Z) or (1, X, Y, Z) region, e.g. the possible-dose mask.
        network_size: (n_x, n_y, n_z) the network's input size; the volume must be at least as large.

    Returns:
        (2, 3) int64: [start, size] per axis in voxels, inside the volume.
    """
    mask = mask.reshape(mask.shape[-3:]) > 0.5
    shape = [int(n) for n in mask.shape]
    target = [int(n) for n in network_size]
    if any(n < t for n, t in zip(shape, target)):
        raise ValueError(f"the volume {shape} is smaller than the network size {target}: use a finer grid or a "
                         "smaller network_size")
    if not bool(mask.any()):
        raise ValueError("the region mask is empty: there is no possible-dose region to predict")
    lo, hi = [], []
    for axis in range(3):
        occupied = torch.nonzero(mask.any(dim=tuple(d for d in range(3) if d != axis)))[:, 0]
        lo.append(int(occupied[0]))
        hi.append(int(occupied[-1]))
    extent = [h - l + 1 + 2 * int(margin_voxels) for l, h in zip(lo, hi)]
    scale = max(1.0, max(e / t for e, t in zip(extent, target)))
    size = [min(n, max(e, math.ceil(scale * t - 1e-6))) for n, e, t in zip(shape, extent, target)]
    start = [min(max(0, (l + h + 1 - e) // 2), n - e) for l, h, e, n in zip(lo, hi, size, shape)]
    return torch.tensor([start, size], dtype=torch.int64)


def _plain(x: torch.Tensor) -> torch.Tensor:
    return x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)


def _meta_without_affine(x: MetaTensor) -> dict:
    return {k: v for k, v in x.meta.items() if k != "affine"}


def pooled_affine(affine: torch.Tensor, box: torch.Tensor, network_size: Sequence[int]) -> torch.Tensor:
    """The voxel-to-world affine of the network grid: pooled voxel i covers box voxels
    [start + i s, start + (i + 1) s) with s = size / n, so its centre is at start + (i + 1/2) s - 1/2."""
    affine = torch.as_tensor(affine, dtype=torch.float64).reshape(4, 4)
    step = box[1].double() / torch.tensor([float(n) for n in network_size], dtype=torch.float64)
    to_box = torch.eye(4, dtype=torch.float64)
    to_box[:3, :3] = torch.diag(step)
    to_box[:3, 3] = box[0].double() + 0.5 * step - 0.5
    return affine @ to_box


def _crop(volume: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """(C, X, Y, Z) -> (C, *box size)."""
    (x, y, z), (sx, sy, sz) = box.tolist()
    return volume[:, x:x + sx, y:y + sy, z:z + sz]


def resample_region(volume: torch.Tensor, box: torch.Tensor, network_size: Sequence[int], mode: str = "mean",
                    weight: torch.Tensor | None = None) -> torch.Tensor:
    """Pool the ``box`` of ``volume`` (C, X, Y, Z) into ``network_size``: (C, n_x, n_y, n_z) float32.

    ``mode``: ``"mean"`` (area average), ``"max"``, or ``"masked_mean"`` (average over the voxels where
    ``weight`` (1, X, Y, Z) is set; 0 where none is).
    """
    if mode not in REGION_MODES:
        raise ValueError(f"unknown region pooling mode {mode!r}; use one of {REGION_MODES}")
    size = tuple(int(n) for n in network_size)
    crop = _crop(torch.as_tensor(volume).float(), box)[None]
    if mode == "max":
        return F.adaptive_max_pool3d(crop, size)[0]
    if mode == "mean":
        return F.adaptive_avg_pool3d(crop, size)[0]
    if weight is None:
        raise ValueError("masked_mean pooling needs a weight mask")
    w = _crop((torch.as_tensor(weight) > 0.5).float(), box)[None]
    total = F.adaptive_avg_pool3d(crop * w, size)[0]
    count = F.adaptive_avg_pool3d(w, size)[0]
    return torch.where(count > 0, total / count.clamp_min(1e-12), torch.zeros_like(total))


def restore_region(prediction: torch.Tensor, box: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Put a network-grid prediction (C, n_x, n_y, n_z) back on the patient's grid (C, *shape): trilinear to the
    box (voxel centres aligned: ``align_corners=False`` matches area pooling), zero outside the box."""
    (x, y, z), size = box.tolist()
    up = F.interpolate(prediction[None].float(), size=tuple(size), mode="trilinear", align_corners=False)[0]
    out = torch.zeros((prediction.shape[0], *[int(n) for n in shape]), dtype=up.dtype, device=up.device)
    out[:, x:x + size[0], y:y + size[1], z:z + size[2]] = up
    return out


class ResampleRegiond(MapTransform):
    """Pool ``keys`` into the network grid over the region of ``region_key`` (see :func:`region_box`).

    Adds ``box_key`` ((2, 3) int64, for :class:`RestoreRegiond`). With ``network_size`` None (the paper-scale
    profiles, which feed the whole volume or crops of it) the volumes are passed through unchanged.

    Args:
        keys: channel-first (C, X, Y, Z) volumes on one grid.
        network_size: the network's input size, e.g. (64, 64, 64).
        names: where the pooled volumes go, one per key (default: in place). Validation and inference pool the
            input and keep the full-resolution label and masks for scoring and post-processing.
        region_key: the mask whose bounding box is pooled (the possible-dose mask).
        modes: pooling per source key (``"max"``, ``"masked_mean"``); keys not named pool by ``"mean"``.
        weight_key: the mask ``masked_mean`` averages over (read before anything is pooled).
        margin_voxels: grows the region's bounding box on every side.
    """

    def __init__(self, keys: KeysCollection, network_size: Sequence[int] | None, names: Sequence[str] | None = None,
                 region_key: str = "possible_dose_mask", modes: Mapping[str, str] | None = None,
                 weight_key: str = "possible_dose_mask", margin_voxels: int = 4, box_key: str = "region_box",
                 allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)
        self.network_size = None if network_size is None else tuple(int(n) for n in network_size)
        self.names = tuple(names) if names is not None else tuple(self.keys)
        if len(self.names) != len(self.keys):
            raise ValueError(f"{len(self.keys)} keys but {len(self.names)} names")
        self.region_key, self.weight_key, self.box_key = region_key, weight_key, box_key
        self.modes = dict(modes or {})
        self.margin_voxels = int(margin_voxels)
        for key, mode in self.modes.items():
            if mode not in REGION_MODES:
                raise ValueError(f"region pooling mode of {key!r} is {mode!r}; use one of {REGION_MODES}")

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        if self.network_size is None:
            for key, name in self.key_iterator(d, self.names):
                d[name] = d[key]
            return d
        box = region_box(_plain(d[self.region_key]), self.network_size, self.margin_voxels)
        weight = _plain(d[self.weight_key]) if self.weight_key in d else None
        for key, name in self.key_iterator(d, self.names):
            source = d[key]
            pooled = resample_region(_plain(source), box, self.network_size, self.modes.get(key, "mean"), weight)
            if isinstance(source, MetaTensor):
                pooled = MetaTensor(pooled, affine=pooled_affine(source.affine, box, self.network_size),
                                    meta=_meta_without_affine(source))
            d[name] = pooled
        d[self.box_key] = box
        return d


class RestoreRegiond(MapTransform):
    """Put ``keys`` (network-grid predictions) back on the grid of ``like_key`` (a full-resolution volume of the
    same case, e.g. its possible-dose mask) with :func:`restore_region`; its affine and meta are carried over.
    A dictionary without ``box_key`` (no region pooling in this profile) is returned unchanged."""

    def __init__(self, keys: KeysCollection = "pred", like_key: str = "possible_dose_mask",
                 box_key: str = "region_box") -> None:
        super().__init__(keys)
        self.like_key, self.box_key = like_key, box_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        if self.box_key not in d:
            return d
        like = d[self.like_key]
        box = torch.as_tensor(d[self.box_key]).reshape(2, 3)
        for key in self.key_iterator(d):
            restored = restore_region(_plain(d[key]), box, like.shape[1:])
            d[key] = MetaTensor(restored, affine=like.affine.clone(), meta=_meta_without_affine(like)) \
                if isinstance(like, MetaTensor) else restored
        return d
