"""Config layering: a base config plus overlays of MONAI ``#``-path keys, as ``monai.bundle`` merges override files.

A key a layer changes keeps its place; a key it adds goes before ``network`` (where the model's own settings sit),
or at the end of a config without one.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

from monai.bundle import ConfigParser

__all__ = ["apply_overlay", "ALL_CONFIGS"]

ALL_CONFIGS = "all"
"""Overlay section whose keys apply to every config file that already has them (e.g. ``dose_mask_set``)."""


def apply_overlay(config: Mapping, overlay: Mapping[str, object], anchor: str = "network") -> dict:
    """``config`` with each ``#``-path key of ``overlay`` set (nested keys: their parent must exist)."""
    new_keys = [k for k in overlay if "#" not in k and k not in config]
    merged: dict = {}
    for key, value in config.items():
        if key == anchor:
            merged.update({k: None for k in new_keys})
        merged[key] = copy.deepcopy(value)
    parser = ConfigParser(merged)
    for key, value in overlay.items():
        try:
            parser[key] = copy.deepcopy(value)
        except (KeyError, IndexError, TypeError) as err:
            raise KeyError(f"overlay key {key!r}: no such place in the config ({err})") from err
    return parser.get()
