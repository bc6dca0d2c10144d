"""Test-time augmentation by flips, around any MONAI inferer (MONAI has no flip-averaging inferer)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.inferers import Inferer

__all__ = ["FlipTTAInferer"]


class FlipTTAInferer(Inferer):
    """Average the predictions of ``inferer`` over flipped copies of the input (C3D: none, Z, W, Z+W).

    Args:
        inferer: the inferer to wrap (e.g. ``SlidingWindowInferer``).
        flip_axes: spatial axes of each flip, e.g. ``[[], [0], [2], [0, 2]]``; ``[[]]`` turns TTA off.
    """

    def __init__(self, inferer: Inferer, flip_axes: Sequence[Sequence[int]] = ((),)) -> None:
        super().__init__()
        self.inferer = inferer
        self.flip_axes = [tuple(int(a) + 2 for a in axes) for axes in flip_axes]  # skip batch and channel dims
        if not self.flip_axes:
            raise ValueError("flip_axes needs at least one entry ([] for the unflipped input)")

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        total = None
        for dims in self.flip_axes:
            x = torch.flip(inputs, dims) if dims else inputs
            pred = self.inferer(x, network, *args, **kwargs)
            pred = torch.flip(pred, dims) if dims else pred
            total = pred if total is None else total + pred
        return total / len(self.flip_axes)
