"""Input and target channels of the dose networks: merged PTV, relative dose, dose masks.

MONAI provides channel concatenation (``ConcatItemsd``); the CT window is :class:`~custom_nets.transforms.ct.WindowCTd`;
what MONAI lacks for dose is here.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from custom_nets.dose_masks import threshold_dose
from custom_nets.profiles import dose_mask_thresholds

__all__ = ["MergePTVd", "ScaleDosed", "DoseMasksd", "merge_ptv", "dose_masks"]

def merge_ptv(ptv: torch.Tensor, prescriptions_gy: torch.Tensor, reference_dose_gy: float) -> torch.Tensor:
    """One PTV channel: prescription / reference dose inside each target, the higher prescription winning.

    Args:
        ptv: (n_target, X, Y, Z) binary target masks.
        prescriptions_gy: (n_target,) prescriptions in Gy (0 for an absent target).
        reference_dose_gy: dose that maps to 1.0.

    Returns:
        (1, X, Y, Z) float tensor: an outer (lower-dose) target is cropped by the inner ones.
    """
    if ptv.shape[0] != prescriptions_gy.numel():
        raise ValueError(f"{ptv.shape[0]} target masks but {prescriptions_gy.numel()} prescriptions")
    levels = (prescriptions_gy.to(ptv.device, torch.float32) / reference_dose_gy).reshape(-1, *[1] * (ptv.ndim - 1))
    weighted = (ptv > 0.5).to(torch.float32) * levels
    return weighted.amax(dim=0, keepdim=True)


def dose_masks(relative_dose: torch.Tensor, fractions: Sequence[float]) -> torch.Tensor:
    """Binary masks ``dose >= f`` for each fraction ``f`` of the reference dose (to within 1e-6 of it).

    Args:
        relative_dose: (1, X, Y, Z) or (B, 1, X, Y, Z) dose divided by the reference dose.
        fractions: thresholds as fractions of the reference dose.

    Returns:
        float masks with one channel per fraction: (n, X, Y, Z) or (B, n, X, Y, Z).
    """
    unbatched = relative_dose.ndim == 4
    batch = relative_dose.unsqueeze(0) if unbatched else relative_dose
    if batch.shape[1] != 1:
        raise ValueError(f"expected a single-channel dose, got shape {tuple(relative_dose.shape)}")
    masks = threshold_dose(batch, torch.as_tensor(fractions, dtype=torch.float64))
    return masks[0] if unbatched else masks


class MergePTVd(MapTransform):
    """Add ``output_key`` = :func:`merge_ptv` of ``data[ptv_key]`` and ``data[prescriptions_key]``."""

    def __init__(self, reference_dose_gy: float, ptv_key: str = "ptv", prescriptions_key: str = "prescriptions_gy",
                 output_key: str = "ptv_merged") -> None:
        super().__init__([ptv_key])
        self.reference_dose_gy = float(reference_dose_gy)
        self.ptv_key, self.prescriptions_key, self.output_key = ptv_key, prescriptions_key, output_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        # torch operations on a MetaTensor keep its meta (affine, file name), so the result stays saveable
        d[self.output_key] = merge_ptv(d[self.ptv_key], torch.as_tensor(d[self.prescriptions_key]),
                                       self.reference_dose_gy)
        return d


class ScaleDosed(MapTransform):
    """Dose in Gy -> dose / reference dose (``to_relative=True``), or back to Gy (``False``)."""

    def __init__(self, keys: KeysCollection, reference_dose_gy: float, to_relative: bool = True,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if reference_dose_gy <= 0:
            raise ValueError(f"reference dose must be positive, got {reference_dose_gy} Gy")
        self.factor = 1.0 / reference_dose_gy if to_relative else float(reference_dose_gy)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = d[key] * self.factor
        return d


class DoseMasksd(MapTransform):
    """Add ``output_key`` = :func:`dose_masks` of a relative dose (``dose_key``) for a named or explicit set.

    ``dose_key`` is the planned dose (``"dose"``: an oracle, for ablation) or a prior network's prediction
    (``"prior_dose"``: deployable); both must already be relative to the reference dose.
    """

    def __init__(self, thresholds: str | int | Sequence[float], dose_key: str = "dose",
                 output_key: str = "dose_masks") -> None:
        super().__init__([dose_key])
        self.fractions = dose_mask_thresholds(thresholds)
        self.dose_key, self.output_key = dose_key, output_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        if not self.fractions:
            return d
        if self.dose_key not in d:
            raise KeyError(f"case {d.get('case_id', '?')}: dose masks need {self.dose_key!r}, which is missing "
                           f"(mask source 'reference' needs a planned dose, 'prior' a prior prediction)")
        d[self.output_key] = dose_masks(d[self.dose_key], self.fractions)
        return d
