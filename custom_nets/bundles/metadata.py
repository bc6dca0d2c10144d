"""``configs/metadata.json`` of a bundle (MONAI's meta_schema_20240725), from its variant and the profiles."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from custom_nets import __version__
from custom_nets.bundles.pretrained import PRETRAINED_CONFIG
from custom_nets.bundles.variants import BundleVariant
from custom_nets.profiles import LUNG, OPENKBP, DatasetProfile, dose_mask_thresholds
from custom_nets.transforms.ct import CT_HU_PER_UNIT, CT_WINDOW_HU

__all__ = ["metadata", "profile_metadata", "mask_fractions", "SCHEMA_URL", "BUNDLE_VERSION", "TESTED_VERSIONS"]

SCHEMA_URL = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
BUNDLE_VERSION = "0.1.0"
TESTED_VERSIONS = {"monai": "1.6.1", "torch": "2.13.0", "numpy": "2.4.6", "nibabel": "5.4.2",
                   "pytorch-ignite": "0.5.5", "scipy": "1.17.1", "pydicom": "3.0.2"}
"""Versions the bundles were tested with (fixed here so that rendering does not depend on the machine)."""


def mask_fractions(variant: BundleVariant) -> tuple[float, ...]:
    """The variant's dose-mask thresholds (fractions of the reference dose); () without dose masks."""
    return dose_mask_thresholds(variant.dose_mask_set) if variant.dose_mask_set else ()


def profile_metadata(variant: BundleVariant, profile: DatasetProfile) -> dict:
    """``configs/metadata_<profile>.json``: what changes in metadata.json with ``configs/<profile>.json`` (the input
    channels), in MONAI's ``#`` paths; read after metadata.json, e.g.
    ``verify_net_in_out --meta_file "['configs/metadata.json','configs/metadata_openkbp.json']"``."""
    channels = variant.input_channel_names(profile)
    image, pred = "network_data_format#inputs#image", "network_data_format#outputs#pred"
    return {f"{image}#num_channels": len(channels),
            f"{image}#channel_def": {str(i): name for i, name in enumerate(channels)},
            f"{pred}#channel_def": {"0": f"dose / reference dose ({profile.reference_dose_gy:g} Gy for "
                                         f"{profile.name})"},
            "label_classes": f"dose / reference dose ({profile.reference_dose_gy:g} Gy)"}


def metadata(variant: BundleVariant, references: Sequence[str], record: Mapping | None = None) -> dict:
    """``configs/metadata.json`` of a variant for the default lung profile; ``references``: one citation each;
    with ``record`` (see :func:`~custom_nets.bundles.pretrained.pretrained_records`), the version, changelog
    and performance of its shipped weights."""
    channels = variant.input_channel_names()
    fractions = mask_fractions(variant)
    masks = (f" Its {len(fractions)} dose masks (dose >= {', '.join(f'{round(100 * f)}%' for f in fractions)} of "
             "the reference dose) come from a frozen prior (the basic cascade) inside the network, so the input is "
             "the same as the basic bundle's.") if fractions else ""
    spatial = ["16*(n+1)"] * 3  # the networks halve the grid 4 times; instance norm needs 2^3 at the bottom
    changelog = {BUNDLE_VERSION: "first release: CascU-Net cascade, lung and OpenKBP profiles, CPU profile"}
    if record:
        changelog = {record["version"]: f"OpenKBP weights (models/model.pt, {PRETRAINED_CONFIG})", **changelog}
    return {
        "schema": SCHEMA_URL,
        "version": record["version"] if record else BUNDLE_VERSION,
        "changelog": changelog,
        **({"performance": _performance(record)} if record else {}),
        "monai_version": TESTED_VERSIONS["monai"],
        "pytorch_version": TESTED_VERSIONS["torch"],
        "numpy_version": TESTED_VERSIONS["numpy"],
        "required_packages_version": {"custom-nets": __version__, **{k: TESTED_VERSIONS[k] for k in
                                                                      ("nibabel", "pytorch-ignite", "scipy", "pydicom")}},
        "supported_apps": {},
        "name": variant.title.split(":")[0],
        "task": "3D radiotherapy dose prediction (IMRT)",
        "description": (f"{variant.title}. Predicts the 3D IMRT dose from CT, a merged PTV channel "
                        f"(prescription / reference dose), OAR masks{' and the body mask' if variant.with_body else ''}.{masks}"),
        "authors": "dose-prediction bundles contributors",
        "copyright": "Copyright (c) the dose-prediction bundles contributors",
        "data_source": "synthetic lung phantoms (default); OpenKBP with configs/openkbp.json; your DICOM-RT data",
        "data_type": "nibabel",
        "image_classes": (f"CT (clipped to [{CT_WINDOW_HU[0]:g}, {CT_WINDOW_HU[1]:g}] HU, / {CT_HU_PER_UNIT:g}) and "
                          "binary masks; PTV = prescription / reference dose"),
        "label_classes": (f"dose / reference dose ({LUNG.reference_dose_gy:g} Gy lung, "
                          f"{OPENKBP.reference_dose_gy:g} Gy OpenKBP)"),
        "pred_classes": "dose / reference dose; inference writes Gy",
        "eval_metrics": {"dose_score_gy": "OpenKBP dose score (lower is better)",
                         "dvh_score_gy": "OpenKBP DVH score (lower is better)"},
        "intended_use": "Research and knowledge-based planning support; not a treatment planning system.",
        "references": list(references),
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "modality": "CT",
                    "num_channels": len(channels),
                    "spatial_shape": spatial,
                    "dtype": "float32",
                    "value_range": [w / CT_HU_PER_UNIT for w in CT_WINDOW_HU],
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


def _performance(record: Mapping) -> dict:
    """metadata.json's ``performance``: what the shipped weights score, and on what."""
    return {"configs": ["configs/inference.json", f"configs/{PRETRAINED_CONFIG}"],
            "training_data": record["training_data"], "selection_data": record["validation_data"],
            "iterations": record["iterations"], "best_iteration": record["best_iteration"],
            "training_wall_time_min": record["wall_time_min"], "machine": record["machine"],
            "validation": record["validation"]}
