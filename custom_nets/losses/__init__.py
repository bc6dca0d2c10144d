"""Losses of the dose networks."""

from custom_nets.losses.cascade_loss import CascadeDoseLoss, masked_l1, per_case_masked_l1
from custom_nets.losses.region_aware_loss import RegionAwareDoseLoss

__all__ = ["CascadeDoseLoss", "RegionAwareDoseLoss", "masked_l1", "per_case_masked_l1"]
