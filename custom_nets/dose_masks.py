"""What a dose mask is: dose >= f x reference dose. One definition for the transforms and the networks."""

from __future__ import annotations

import torch

from custom_nets.profiles import DOSE_MASK_TOLERANCE

__all__ = ["threshold_dose"]


def threshold_dose(relative_dose: torch.Tensor, fractions: torch.Tensor,
                   tolerance: float = DOSE_MASK_TOLERANCE) -> torch.Tensor:
    """Binary masks ``relative_dose >= f`` (to within ``tolerance``) for each fraction ``f``.

    Args:
        relative_dose: (B, 1, X, Y, Z) dose divided by the reference dose.
        fractions: (n,) thresholds as fractions of the reference dose.
        tolerance: a dose this close below a threshold counts as reaching it (float32 rounding).

    Returns:
        (B, n, X, Y, Z) masks in the dose's dtype. TorchScript-compatible.
    """
    if relative_dose.shape[1] != 1:
        raise ValueError("expected a single-channel dose")
    shape = [1, -1] + [1] * (relative_dose.dim() - 2)
    thresholds = fractions.to(relative_dose.device, relative_dose.dtype) - tolerance
    return (relative_dose >= thresholds.view(shape)).to(relative_dose.dtype)
