"""Losses of the dose networks."""

from custom_nets.losses.cascade_loss import CascadeDoseLoss, masked_l1

__all__ = ["CascadeDoseLoss", "masked_l1"]
