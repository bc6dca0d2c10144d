"""What the bundles are: one JSON file per variant under ``<source>/variants/``, read into :class:`BundleVariant`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from custom_nets.bundles.layers import ALL_CONFIGS
from custom_nets.profiles import LUNG, DatasetProfile

__all__ = ["BundleVariant", "load_variants", "load_variant"]

_FIELDS = {"title", "layers", "with_body", "pretrained_iterations", "pretrained_configs", "configs"}


@dataclass(frozen=True)
class BundleVariant:
    """One bundle, as its source file ``variants/<name>.json`` states it.

    Attributes:
        name: bundle folder name (the file's stem).
        title: the bundle's title (its metadata name is the part before the colon).
        layers: the layer folders applied over ``base/`` before the variant's own ``configs`` (e.g. ``cascade``).
        configs: the variant's own overlay: per config file, MONAI ``#``-path keys and their values; the key
            ``all`` applies to every config file that has the key.
        with_body: the input has the body / possible-dose channel.
        pretrained_iterations: the variant ships OpenKBP weights trained for this many iterations at the CPU
            profile (``configs/openkbp_cpu.json``); None: no weights.
        pretrained_configs: the bundle's own override files (e.g. ``loss_fixed_weights.json``) whose keys the
            shipped weights were also trained with: they go into ``configs/openkbp_cpu.json`` after ``cpu.json``.
        dose_mask_set: the cascade's dose-mask set, from ``configs["all"]`` (None: no dose masks).
    """

    name: str
    title: str
    layers: tuple[str, ...] = ()
    configs: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    with_body: bool = True
    pretrained_iterations: int | None = None
    pretrained_configs: tuple[str, ...] = ()
    dose_mask_set: str | None = None

    def input_channel_names(self, profile: DatasetProfile = LUNG) -> list[str]:
        names = profile.input_channel_names()  # a mask variant makes its masks inside the network
        return names if self.with_body else [n for n in names if n != (profile.body or "possible_dose_mask")]


def load_variant(path: str | Path) -> BundleVariant:
    """The variant described by ``path`` (``<source>/variants/<name>.json``); unknown fields are an error."""
    path = Path(path)
    spec = json.loads(path.read_text())
    unknown = set(spec) - _FIELDS
    if unknown:
        raise ValueError(f"{path}: unknown fields {sorted(unknown)}; expected some of {sorted(_FIELDS)}")
    configs = spec.get("configs", {})
    per_file = [name for name, keys in configs.items() if name != ALL_CONFIGS and "dose_mask_set" in keys]
    if per_file:  # the metadata, docs and every config must agree on the masks: one place sets them
        raise ValueError(f"{path}: set dose_mask_set under \"all\", not in {per_file}")
    mask_set = configs.get(ALL_CONFIGS, {}).get("dose_mask_set")
    return BundleVariant(name=path.stem, title=spec["title"], layers=tuple(spec.get("layers", ())),
                         configs=configs, with_body=bool(spec.get("with_body", True)),
                         pretrained_iterations=spec.get("pretrained_iterations"),
                         pretrained_configs=tuple(spec.get("pretrained_configs", ())),
                         dose_mask_set=str(mask_set) if mask_set else None)


def load_variants(source_dir: str | Path) -> dict[str, BundleVariant]:
    """Bundle name -> variant, for every ``variants/*.json`` of the bundle sources, in name order."""
    files = sorted((Path(source_dir) / "variants").glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no bundle variants in {Path(source_dir) / 'variants'}")
    return {f.stem: load_variant(f) for f in files}
