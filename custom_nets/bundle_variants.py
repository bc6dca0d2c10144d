"""The cascade bundles: one template, five variants that differ only in their dose-mask set.

``bundles/_template`` holds the shared configs and docs; :func:`render_bundle` writes a self-contained
bundle folder for a variant (configs with its ``dose_mask_set``, metadata.json with its channels, docs).
Each bundle must stay self-contained (MONAI Label and Deploy read one bundle folder), so the generated files
are committed, and a test checks that they equal what the template renders.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from string import Template

from custom_nets import __version__
from custom_nets.profiles import LUNG, dose_mask_thresholds

__all__ = ["BundleVariant", "VARIANTS", "render_bundle", "metadata", "SCHEMA_URL"]

SCHEMA_URL = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
BUNDLE_VERSION = "0.1.0"
#: Versions the bundles were tested with (fixed here so that rendering does not depend on the machine).
TESTED_VERSIONS = {"monai": "1.6.1", "torch": "2.13.0", "numpy": "2.4.6", "nibabel": "5.4.2",
                   "pytorch-ignite": "0.5.5", "scipy": "1.17.1", "pydicom": "3.0.2"}
_CONFIGS = ("train.json", "inference.json", "evaluate.json", "multi_gpu_train.json", "cpu.json", "openkbp.json",
            "logging.conf")


@dataclass(frozen=True)
class BundleVariant:
    """What distinguishes one cascade bundle from another."""

    name: str
    title: str
    dose_mask_set: str | None  # None: the basic cascade (no dose masks)


VARIANTS: dict[str, BundleVariant] = {
    v.name: v
    for v in (
        BundleVariant("cascunet_basic", "CascU-Net-B: basic cascade (CT, PTV, OARs, body)", None),
        BundleVariant("cascunet_dm3", "CascU-Net-DM3: cascade with 3 dose masks", "3"),
        BundleVariant("cascunet_dm5", "CascU-Net-DM5: cascade with 5 dose masks", "5"),
        BundleVariant("cascunet_dm7", "CascU-Net-DM7: cascade with 7 dose masks", "7"),
        BundleVariant("cascunet_dm10", "CascU-Net-DM10: cascade with 10 dose masks", "10"),
    )
}


def _fractions(variant: BundleVariant) -> tuple[float, ...]:
    return dose_mask_thresholds(variant.dose_mask_set) if variant.dose_mask_set else ()


def metadata(variant: BundleVariant) -> dict:
    """``configs/metadata.json`` of a variant (MONAI meta_schema_20240725), for the default lung profile."""
    channels = LUNG.input_channel_names()
    fractions = _fractions(variant)
    masks = (f" Its {len(fractions)} dose masks (dose >= {', '.join(f'{round(100 * f)}%' for f in fractions)} of "
             "the reference dose) come from a frozen prior (the basic cascade) inside the network, so the input is "
             "the same as the basic bundle's.") if fractions else ""
    spatial = ["16*n", "16*n", "16*n"]
    return {
        "schema": SCHEMA_URL,
        "version": BUNDLE_VERSION,
        "changelog": {BUNDLE_VERSION: "first release: CascU-Net cascade, lung and OpenKBP profiles, CPU profile"},
        "monai_version": TESTED_VERSIONS["monai"],
        "pytorch_version": TESTED_VERSIONS["torch"],
        "numpy_version": TESTED_VERSIONS["numpy"],
        "required_packages_version": {"custom-nets": __version__, **{k: TESTED_VERSIONS[k] for k in
                                                                      ("nibabel", "pytorch-ignite", "scipy", "pydicom")}},
        "supported_apps": {},
        "name": variant.title.split(":")[0],
        "task": "3D radiotherapy dose prediction (IMRT)",
        "description": (f"{variant.title}. Predicts the 3D IMRT dose from CT, a merged PTV channel "
                        f"(prescription / reference dose), OAR masks and the body mask.{masks}"),
        "authors": "dose-prediction bundles contributors",
        "copyright": "Copyright (c) the dose-prediction bundles contributors",
        "data_source": "synthetic lung phantoms (default); OpenKBP with configs/openkbp.json; your DICOM-RT data",
        "data_type": "nibabel",
        "image_classes": "CT (clipped to [-1024, 1500] HU, / 1000) and binary masks; PTV = prescription / reference dose",
        "label_classes": "dose / reference dose (65 Gy lung, 70 Gy OpenKBP)",
        "pred_classes": "dose / reference dose; inference writes Gy",
        "eval_metrics": {"dose_score_gy": "OpenKBP dose score (lower is better)",
                         "dvh_score_gy": "OpenKBP DVH score (lower is better)"},
        "intended_use": "Research and knowledge-based planning support; not a treatment planning system.",
        "references": ["CascU-Net with dose masks for lung IMRT dose prediction",
                       "Liu S, et al. A cascade 3D U-Net for dose prediction in radiotherapy. Med Phys 2021",
                       "Babier A, et al. OpenKBP. Med Phys 48(9):5549-5561, 2021"],
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "modality": "CT",
                    "num_channels": len(channels),
                    "spatial_shape": spatial,
                    "dtype": "float32",
                    "value_range": [-1.024, 1.5],
                    "is_patch_data": False,
                    "channel_def": {str(i): name for i, name in enumerate(channels)},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "magnitude",
                    "num_channels": 1,
                    "spatial_shape": spatial,
                    "dtype": "float32",
                    "value_range": [0, 2],
                    "is_patch_data": False,
                    "channel_def": {"0": f"dose / reference dose ({LUNG.reference_dose_gy:g} Gy for lung)"},
                }
            },
        },
    }


def _docs(variant: BundleVariant, template: str) -> str:
    fractions = _fractions(variant)
    channels = LUNG.input_channel_names()
    table = "| channel | content |\n| --- | --- |\n" + "\n".join(f"| {i} | {c} |" for i, c in enumerate(channels))
    if fractions:
        variant_text = (
            f"\nThis variant adds {len(fractions)} dose masks, dose >= "
            f"{', '.join(f'{round(100 * f)}%' for f in fractions)} of the reference dose. At inference they come "
            "from a prior: the basic cascade (`cascunet_basic`), frozen inside this network "
            "(`custom_nets.networks.DoseMaskCascade`), so no planned dose is needed and the input is the same as "
            "the basic bundle's. The mask source is a config choice, `mask_source`: `prior` (deployable, the "
            "default) or `reference` (masks from the planned dose, an oracle for ablation; the masks are then "
            "appended to the input channels).\n")
        training_text = (
            "\nTraining needs the basic bundle's trained weights as the prior (`prior_checkpoint`, default "
            "`../cascunet_basic/models/model.pt`); they are stored in this bundle's checkpoints too. With "
            "`--mask_source reference` the masks come from the planned dose instead (oracle).\n")
        mask_note = " and the mask source (prior or reference)"
    else:
        variant_text = "\nThis is the basic cascade, without dose masks; it is the prior of the mask variants.\n"
        training_text = ""
        mask_note = ""
    return Template(template).substitute(
        title=variant.title, summary=metadata(variant)["description"], channel_table=table,
        reference_dose_gy=f"{LUNG.reference_dose_gy:g}", variant_text=variant_text, training_text=training_text,
        mask_note=mask_note)


def render_bundle(variant: BundleVariant | str, template_dir: str | Path, out_dir: str | Path) -> Path:
    """Write the bundle of ``variant`` from ``template_dir`` into ``out_dir`` (created or updated in place)."""
    variant = VARIANTS[variant] if isinstance(variant, str) else variant
    template_dir, out_dir = Path(template_dir), Path(out_dir)
    (out_dir / "configs").mkdir(parents=True, exist_ok=True)
    (out_dir / "docs").mkdir(exist_ok=True)
    mask_set = variant.dose_mask_set if variant.dose_mask_set else []
    for name in _CONFIGS:
        source = template_dir / "configs" / name
        text = source.read_text()
        if name.endswith(".json"):
            config = json.loads(text)
            if "dose_mask_set" in config:
                config["dose_mask_set"] = mask_set
            text = json.dumps(config, indent=4) + "\n"
        (out_dir / "configs" / name).write_text(text)
    (out_dir / "configs" / "metadata.json").write_text(json.dumps(metadata(variant), indent=4) + "\n")
    (out_dir / "docs" / "README.md").write_text(_docs(variant, (template_dir / "docs" / "README.md").read_text()))
    shutil.copyfile(template_dir / "docs" / "data_license.txt", out_dir / "docs" / "data_license.txt")
    shutil.copyfile(template_dir / "LICENSE", out_dir / "LICENSE")
    (out_dir / "large_files.yml").write_text(
        "# Pretrained weights are not committed. Entries: {path, url, hash_val, hash_type}.\n"
        "large_files: []\n")
    return out_dir
