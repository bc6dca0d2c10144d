"""The cascade networks as the bundles' configs build them (``network_def``)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from custom_nets.networks.cascade_unet import CascadeUNet
from custom_nets.networks.dose_mask_cascade import DoseMaskCascade

__all__ = ["build_dose_network"]


def build_dose_network(in_channels: int, mask_fractions: Sequence[float] = (),
                       widths_a: Sequence[int] = (16, 32, 64, 128, 256),
                       widths_b: Sequence[int] = (32, 64, 128, 256, 512),
                       prior_checkpoint: str | None = None, require_prior: bool = False,
                       ptv_channel: int | None = None) -> torch.nn.Module:
    """The basic cascade without dose masks, else the dose-mask cascade with a frozen prior of the same widths.

    ``prior_checkpoint`` (the basic bundle's weights, given by the training configs) is loaded when it exists.
    ``require_prior`` (training with masks from the prior) makes a missing file an error: an untrained prior would
    make meaningless masks; without it a missing file marks the network's prior as untrained, which its
    checkpoints keep. At inference (``prior_checkpoint`` None) the prior's weights come with the mask network's
    own checkpoint. ``ptv_channel`` (None: as the paper) makes the networks predict relative to the case's top
    prescription (:class:`CascadeUNet`).
    """
    if not mask_fractions:
        return CascadeUNet(in_channels, widths_a, widths_b, ptv_channel=ptv_channel)
    found = bool(prior_checkpoint) and Path(str(prior_checkpoint)).is_file()
    if require_prior and not found:
        raise FileNotFoundError(f"the dose masks come from the prior (mask_source 'prior'), but its weights "
                                f"{prior_checkpoint} do not exist: train the basic bundle first, or set "
                                "prior_checkpoint, or use mask_source 'reference'")
    network = DoseMaskCascade(in_channels, mask_fractions, widths_a, widths_b,
                              prior_checkpoint=prior_checkpoint if found else None, ptv_channel=ptv_channel)
    if prior_checkpoint and not found:
        warnings.warn(f"no prior weights at {prior_checkpoint}: this mask cascade trains with masks from the planned "
                      "dose only, and its checkpoints will refuse masks from the (untrained) prior", stacklevel=2)
        network.mark_prior_untrained()
    return network
