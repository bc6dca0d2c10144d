"""MONAI dictionary transforms for dose prediction (loading, channels, augmentation)."""

from custom_nets.transforms.augment import RandAxialRotateTranslated
from custom_nets.transforms.ct import CT_AIR, CT_HU_PER_UNIT, CT_WINDOW_HU, WindowCTd
from custom_nets.transforms.channels import DoseMasksd, MergePTVd, ScaleDosed, dose_masks, merge_ptv
from custom_nets.transforms.load import CASE_KEYS, LoadDoseCased
from custom_nets.transforms.postprocess import PhysicalDosed, SaveDosed
from custom_nets.transforms.region import ResampleRegiond, RestoreRegiond

__all__ = ["CT_AIR", "CT_HU_PER_UNIT", "CT_WINDOW_HU", "WindowCTd", "CASE_KEYS", "DoseMasksd", "LoadDoseCased", "MergePTVd", "PhysicalDosed", "RandAxialRotateTranslated",
           "ResampleRegiond", "RestoreRegiond", "SaveDosed", "ScaleDosed", "dose_masks", "merge_ptv"]
