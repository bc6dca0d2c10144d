"""CascU-Net-DM as one deployable module: a frozen prior cascade makes the dose masks for the mask cascade."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from custom_nets.dose_masks import threshold_dose
from custom_nets.networks.cascade_unet import CascadeUNet
from custom_nets.networks.checkpoints import check_checkpoint

__all__ = ["DoseMaskCascade"]


class DoseMaskCascade(nn.Module):
    """A mask cascade fed with dose masks, either given or made by a frozen prior cascade.

    Args:
        in_channels: base input channels (CT, merged PTV, OARs, body), without masks.
        fractions: dose-mask thresholds as fractions of the reference dose.
        widths_a, widths_b: widths of the mask cascade.
        prior_widths_a, prior_widths_b: widths of the prior (the basic cascade); default: the same.
        prior_checkpoint: weights of the trained basic cascade to load into the prior (optional here: a
            complete checkpoint of this module carries them too).
        ptv_channel: as :class:`CascadeUNet`, for the prior and the mask cascade (the prior's must match the basic
            cascade it comes from).

    Forward: x of shape (B, C, X, Y, Z) with relative dose units:
        * C = in_channels: masks come from the prior's predicted dose (mask source ``prior``, deployable);
        * C = in_channels + len(fractions): the last channels are the masks (mask source ``reference``).
        Output as :class:`CascadeUNet` (eval: (B, 1, ...); training: (B, 2, ...)).
    """

    def __init__(self, in_channels: int, fractions: Sequence[float],
                 widths_a: Sequence[int] = (16, 32, 64, 128, 256), widths_b: Sequence[int] = (32, 64, 128, 256, 512),
                 prior_widths_a: Sequence[int] | None = None, prior_widths_b: Sequence[int] | None = None,
                 prior_checkpoint: str | None = None, ptv_channel: int | None = None) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.n_masks = len(fractions)
        self.prior = CascadeUNet(in_channels, prior_widths_a or widths_a, prior_widths_b or widths_b,
                                 ptv_channel=ptv_channel)
        self.refine = CascadeUNet(in_channels + self.n_masks, widths_a, widths_b, ptv_channel=ptv_channel)
        self.register_buffer("fractions", torch.tensor(list(fractions), dtype=torch.float32))
        # saved with the weights, so a checkpoint trained without a prior cannot make masks from random output
        self.register_buffer("prior_untrained", torch.tensor(False))
        self.prior.requires_grad_(False)
        self.prior.eval()
        self.divisor = max(self.prior.divisor, self.refine.divisor)
        if prior_checkpoint:
            self.load_prior(prior_checkpoint)

    def load_prior(self, checkpoint: str | Path) -> None:
        """Load the basic cascade's weights into the prior."""
        self.prior.load_state_dict(check_checkpoint(checkpoint, self.prior))
        self.prior_untrained.fill_(False)

    def mark_prior_untrained(self) -> None:
        """Record (in the state dict, so in every checkpoint) that this network is trained without prior weights:
        it then refuses to make masks from its prior."""
        self.prior_untrained.fill_(True)

    def train(self, mode: bool = True) -> "DoseMaskCascade":
        super().train(mode)
        self.prior.eval()  # the prior is frozen: always in inference mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == self.in_channels + self.n_masks:
            return self.refine(x)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} channels (masks from the prior) or "
                             f"{self.in_channels + self.n_masks} (masks given), got {x.shape[1]}")
        if not self.prior_untrained.is_meta and bool(self.prior_untrained):  # meta: FLOP counting, no values
            raise RuntimeError("this mask cascade's prior was never trained (no prior checkpoint was loaded), so its "
                               "masks would threshold random output: give masks from a planned dose (mask source "
                               "'reference') or train with prior_checkpoint set to a trained basic cascade")
        prior_dose = self.prior(x).detach()  # frozen: its parameters need no gradient
        masks = threshold_dose(prior_dose, self.fractions)
        return self.refine(torch.cat([x, masks], dim=1))
