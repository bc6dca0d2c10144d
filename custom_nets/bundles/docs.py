"""A bundle's ``docs/README.md``, filled from the Markdown sources: ``base/docs/README.md`` with its ``$`` fields,
each layer's ``model.md``, ``schedule.md``, ``bf16_accuracy.md`` and ``references.md`` (the last layer that has one wins), a variant's
own paragraph (``variants/<name>.md``) and, for a mask variant, ``dose_masks.md``."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from string import Template

from custom_nets.bundles.metadata import mask_fractions
from custom_nets.bundles.pretrained import PRETRAINED_CONFIG
from custom_nets.bundles.variants import BundleVariant
from custom_nets.profiles import LUNG, OPENKBP

__all__ = ["layer_text", "references", "bundle_readme"]

_BF16_LABELS = {"fp32": "fp32 (`--inference_mode frozen`; MONAI Label and Deploy run this)",
                "bf16": "bf16 (the default on CPUs with native bf16)"}


def layer_text(variant: BundleVariant, source_dir: Path, name: str) -> str:
    """The text of ``<layer>/<name>`` from the last of the variant's layers that has it ("" if none does)."""
    for layer in reversed(variant.layers):
        path = source_dir / layer / name
        if path.is_file():
            return path.read_text()
    return ""


def references(variant: BundleVariant, source_dir: Path) -> list[str]:
    """One citation per ``- `` item of the variant's ``references.md`` and of the OpenKBP reference."""
    text = layer_text(variant, source_dir, "references.md") + (source_dir / "base" / "docs" /
                                                              "openkbp_reference.md").read_text()
    return [" ".join(line.strip() for line in item.splitlines()) for item in re.split(r"^- ", text, flags=re.M)
            if item.strip()]


def _pretrained_text(source_dir: Path, record: Mapping | None, config: Mapping, is_mask_variant: bool) -> str:
    if not record:
        return ""
    docs = source_dir / "base" / "docs"
    if record.get("training_overrides"):
        return Template((docs / "pretrained_trial.md").read_text()).substitute(
            version=record["version"], pretrained_config=PRETRAINED_CONFIG,
            training_overrides=json.dumps(record["training_overrides"]))
    rows = "\n".join(f"| {_BF16_LABELS[mode]} | {scores['dose_score_gy']:.3f} | {scores['dvh_score_gy']:.3f} |"
                     for mode, scores in record["validation"].items())
    prior = (" Its prior is the basic cascade shipped in `cascunet_basic` (stored inside this checkpoint too)."
             if is_mask_variant else "")
    return Template((docs / "pretrained.md").read_text()).substitute(
        version=record["version"], size_mb=f"{record['size_mb']:.1f}", storage_dtype=record["storage_dtype"],
        pretrained_config=PRETRAINED_CONFIG, training_data=record["training_data"], iterations=record["iterations"],
        batch_size=config["batch_size"], network_size="x".join(map(str, config["network_size"])),
        precision="bf16 autocast" if record["bf16_autocast"] else "fp32",
        wall_time_min=f"{record['wall_time_min']:.0f}", machine=record["machine"],
        best_iteration=record["best_iteration"], validation_data=record["validation_data"], prior_text=prior,
        score_rows=rows)


def bundle_readme(variant: BundleVariant, source_dir: str | Path, summary: str, record: Mapping | None = None,
                  pretrained_config: Mapping | None = None) -> str:
    """The variant's ``docs/README.md`` (``summary``: its metadata description)."""
    source_dir = Path(source_dir)
    fractions = mask_fractions(variant)
    own = source_dir / "variants" / f"{variant.name}.md"
    variant_text = own.read_text() if own.is_file() else ""
    training_text = ""
    if fractions:
        thresholds = ", ".join(f"{round(100 * f)}%" for f in fractions)
        variant_text += Template(layer_text(variant, source_dir, "dose_masks.md")).substitute(
            n_masks=len(fractions), thresholds=thresholds)
        training_text = layer_text(variant, source_dir, "dose_masks_training.md")
    channels = variant.input_channel_names()
    table = "| channel | content |\n| --- | --- |\n" + "\n".join(f"| {i} | {c} |" for i, c in enumerate(channels))
    openkbp_reference = (source_dir / "base" / "docs" / "openkbp_reference.md").read_text()
    return Template((source_dir / "base" / "docs" / "README.md").read_text()).substitute(
        title=variant.title, summary=summary, channel_table=table,
        reference_dose_gy=f"{LUNG.reference_dose_gy:g}", openkbp_reference_dose_gy=f"{OPENKBP.reference_dose_gy:g}",
        variant_text=variant_text, training_text=training_text,
        model_text=layer_text(variant, source_dir, "model.md").rstrip("\n"),
        schedule_text=layer_text(variant, source_dir, "schedule.md").rstrip("\n"),
        bf16_accuracy=layer_text(variant, source_dir, "bf16_accuracy.md").rstrip("\n"),
        pretrained_text=_pretrained_text(source_dir, record, pretrained_config or {}, bool(fractions)),
        references=layer_text(variant, source_dir, "references.md") + openkbp_reference.rstrip("\n"))
