"""The papers' CT window, defined once: HU clipped to [-1024, 1500] and divided by 1000."""

from __future__ import annotations

from monai.config import KeysCollection
from monai.transforms import ScaleIntensityRanged

__all__ = ["CT_WINDOW_HU", "CT_HU_PER_UNIT", "CT_AIR", "WindowCTd"]

CT_WINDOW_HU = (-1024.0, 1500.0)
"""CT values outside this range (HU) are clipped."""
CT_HU_PER_UNIT = 1000.0
"""Network CT units: HU / 1000 (the cascade paper's [-1.024, 1.5])."""
CT_AIR = CT_WINDOW_HU[0] / CT_HU_PER_UNIT
"""Air (and padding outside the patient) in network CT units."""


class WindowCTd(ScaleIntensityRanged):
    """MONAI's ``ScaleIntensityRanged`` with the window above: HU -> [-1.024, 1.5], clipped."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        low, high = CT_WINDOW_HU
        super().__init__(keys, a_min=low, a_max=high, b_min=low / CT_HU_PER_UNIT, b_max=high / CT_HU_PER_UNIT,
                         clip=True, allow_missing_keys=allow_missing_keys)
