"""The bundles: one template, six variants. The five cascades differ only in their dose-mask set; RANDose
replaces the network, the loss, the optimiser settings and the input/label channels (config overrides).

``bundles/_template`` holds the shared configs and docs; :func:`render_bundle` writes a self-contained
bundle folder for a variant (configs with its ``dose_mask_set``, metadata.json with its channels, docs).
Each bundle must stay self-contained (MONAI Label and Deploy read one bundle folder), so the generated files
are committed, and a test checks that they equal what the template renders.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from custom_nets import __version__
from custom_nets.bundle_packaging import large_files_yaml
from custom_nets.profiles import LUNG, OPENKBP, DatasetProfile, dose_mask_thresholds

__all__ = ["BundleVariant", "VARIANTS", "render_bundle", "metadata", "profile_metadata", "SCHEMA_URL",
           "openkbp_cpu_config", "pretrained_records", "PRETRAINED_CONFIG"]

SCHEMA_URL = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
BUNDLE_VERSION = "0.1.0"
#: Versions the bundles were tested with (fixed here so that rendering does not depend on the machine).
TESTED_VERSIONS = {"monai": "1.6.1", "torch": "2.13.0", "numpy": "2.4.6", "nibabel": "5.4.2",
                   "pytorch-ignite": "0.5.5", "scipy": "1.17.1", "pydicom": "3.0.2"}
#: The override config of the shipped OpenKBP weights, and the template file that records them (written by
#: ``dosepred pretrained ship``: version, sha256, training run, validation scores).
PRETRAINED_CONFIG = "openkbp_cpu.json"
PRETRAINED_RECORDS = "pretrained.json"
#: Validate the shipped models' training runs every this many epochs (of ``iterations_per_epoch``).
PRETRAINED_VAL_INTERVAL = 5
_CONFIGS = ("train.json", "inference.json", "evaluate.json", "multi_gpu_train.json", "cpu.json", "openkbp.json",
            "logging.conf")


CASCADE_MODEL_TEXT = (
    "The network is CascU-Net (two 3D U-Nets in series: GD-Net, then RD-Net fed with the input and GD-Net's "
    "last\nfeature map), as in \"CascU-Net with dose masks for lung IMRT\" (see References).")
CASCADE_SCHEDULE_TEXT = (
    "Paper schedule (default): Adam, lr 3e-4, weight decay 1e-4, cosine annealing per iteration to 1e-7 over\n"
    "80,000 iterations, batch 2, 500 iterations per epoch, validation every epoch; loss 0.5 x L1(GD-Net) +\n"
    "1.0 x L1(RD-Net) over the possible-dose voxels; Kaiming initialisation; augmentation: random flips of\n"
    "the x and z axes, rotation about the axial axis by multiples of 40 degrees, translation up to 20 voxels.")
CASCADE_REFERENCES = (
    "- CascU-Net with dose masks for lung IMRT dose prediction (the cascade paper, ../shared/papers in the\n"
    "  project).\n"
    "- Liu S, et al. \"A cascade 3D U-Net for dose prediction in radiotherapy.\" Medical Physics 48(9), 2021\n"
    "  (C3D, the OpenKBP-winning cascade this design follows).")
OPENKBP_REFERENCE = ("- Babier A, et al. \"OpenKBP: The open-access knowledge-based planning grand challenge and "
                     "dataset.\"\n  Medical Physics 48(9):5549-5561, 2021.")


@dataclass(frozen=True)
class BundleVariant:
    """What distinguishes one bundle from another.

    Attributes:
        name, title: folder name and title.
        dose_mask_set: the cascade's dose-mask set (None: no dose masks).
        with_body: the input has the body / possible-dose channel.
        config_overrides: per config file, top-level keys replaced in the template's config.
        extra_configs: further config files of this bundle only (e.g. ablation overrides).
        model_text, schedule_text, references: the variant's paragraphs of docs/README.md.
        pretrained_iterations: the variant ships OpenKBP weights trained for this many iterations at the CPU
            profile (``configs/openkbp_cpu.json``); None: no weights.
    """

    name: str
    title: str
    dose_mask_set: str | None
    with_body: bool = True
    config_overrides: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    extra_configs: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    model_text: str = CASCADE_MODEL_TEXT
    schedule_text: str = CASCADE_SCHEDULE_TEXT
    references: str = CASCADE_REFERENCES
    pretrained_iterations: int | None = None

    def input_channel_names(self, profile: DatasetProfile = LUNG) -> list[str]:
        names = profile.input_channel_names()  # a mask variant makes its masks inside the network
        return names if self.with_body else [n for n in names if n != (profile.body or "possible_dose_mask")]


_RANDOSE_NETWORK: dict[str, object] = {
    "widths": [16, 32, 64, 128, 256],
    "stem_channels": 8,
    "use_msfe": True,
    "use_csa": True,
    "use_pi": True,
    "use_af": True,
    "in_channels": "$2 + len(@profile.oars)",
    "input_keys": ["ct", "ptv_merged", "oar"],
    "network_def": {"_target_": "custom_nets.networks.RANDose", "in_channels": "@in_channels", "widths": "@widths",
                    "stem_channels": "@stem_channels", "use_msfe": "@use_msfe", "use_csa": "@use_csa",
                    "use_pi": "@use_pi", "use_af": "@use_af"},
}
_RANDOSE_TRAINING: dict[str, object] = {
    **_RANDOSE_NETWORK,
    "loss_ptv": True,
    "loss_oar": True,
    "learnable_loss_weights": True,
    "loss_def": {"_target_": "custom_nets.losses.RegionAwareDoseLoss", "n_targets": "$len(@profile.target_names)",
                 "use_ptv": "@loss_ptv", "use_oar": "@loss_oar", "learnable": "@learnable_loss_weights"},
    "learning_rate": 0.0001,
    "weight_decay": 0.0,
    "lr_scheduler": {"_target_": "torch.optim.lr_scheduler.ConstantLR", "optimizer": "@optimizer", "factor": 1.0,
                     "total_iters": 0},
    "label_keys": ["dose", "possible_dose_mask", "ptv", "oar"],
    "spatial_keys": ["ct", "dose", "possible_dose_mask", "body", "oar", "ptv_merged", "ptv"],
    "spatial_modes": ["bilinear", "bilinear", "nearest", "nearest", "nearest", "nearest", "nearest"],
}
_OFF = {"use_msfe": False, "use_csa": False, "use_pi": False, "use_af": False}
RANDOSE = BundleVariant(
    "randose", "RANDose: region-aware attention U-Net (MSCSA, PTV integration, attention fusion)", None,
    with_body=False,
    config_overrides={"train.json": _RANDOSE_TRAINING, "inference.json": _RANDOSE_NETWORK,
                      "cpu.json": {"widths": [6, 12, 24, 48, 96], "stem_channels": 6}},  # the CPU cascade's FLOPs
    extra_configs={  # Table 2 of the RANDose paper: (a) modules, (b) loss terms; the full model is the default
        "ablation_unet.json": _OFF,
        "ablation_msfe.json": {**_OFF, "use_msfe": True},
        "ablation_msfe_csa.json": {**_OFF, "use_msfe": True, "use_csa": True},
        "ablation_msfe_csa_pi.json": {"use_af": False},
        "ablation_loss_l1.json": {"loss_ptv": False, "loss_oar": False},
        "ablation_loss_l1_ptv.json": {"loss_oar": False},
        "loss_fixed_weights.json": {"learnable_loss_weights": False},
    },
    model_text=(
        "The network is RANDose (\"Region-aware Attention Net\", MICCAI 2025): a 5-stage 3D U-Net whose encoder\n"
        "stages are MSCSA blocks (parallel 3/5/7 convolutions summed, then channel and spatial attention fused\n"
        "as F_CA + alpha F_SA), with PTV integration (PI) at every encoder stage from the second on and\n"
        "attention fusion (AF: CSA(F_E) + beta CSA(F_D)) on every skip; CT, merged PTV and OARs have separate\n"
        "input convolutions (`custom_nets.networks.RANDose`). Each module can be switched off: the\n"
        "`configs/ablation_*.json` overrides are the paper's Table 2 rows. Size, from `dosepred model-size\n"
        "randose [--cpu]` (OpenKBP, 9 input channels, 128^3): 94.23 M parameters and 2.18 TFLOP per forward\n"
        "pass at the default widths [16..256]; 13.55 M and 0.436 TFLOP at the CPU profile's [6..96]\n"
        "(chosen to match the CPU cascade's FLOPs: 54 GFLOP per 64^3 forward pass for both). The paper\n"
        "gives no widths; most of the size is the 5^3 and 7^3 kernels of MSFE and PI at the deep stages."),
    schedule_text=(
        "Paper setting (default): Adam, lr 1e-4 (constant; the paper names no schedule, no weight decay),\n"
        "80,000 iterations, batch 2, 500 iterations per epoch, validation every epoch; region-aware loss\n"
        "L1(possible-dose voxels) + w_PTV L1(PTV voxels) + w_OAR L1(OAR voxels)\n"
        "(`custom_nets.losses.RegionAwareDoseLoss`). The paper's learnable weights would collapse to zero as\n"
        "plain multipliers; here they are uncertainty weights, exp(-s) L + s, whose optimum exp(-s) = 1 / L\n"
        "stays positive. They are logged every 50 iterations (console, TensorBoard `loss_weight/*`);\n"
        "`configs/loss_fixed_weights.json` keeps them fixed at 1. Augmentation as the cascade bundles:\n"
        "random flips of x and z, axial rotation by multiples of 40 degrees, translation up to 20 voxels."),
    references=("- Region-aware attention network for radiotherapy dose prediction (RANDose), MICCAI 2025\n"
                "  (../shared/papers in the project)."),
    pretrained_iterations=3000,
)

VARIANTS: dict[str, BundleVariant] = {
    v.name: v
    for v in (
        BundleVariant("cascunet_basic", "CascU-Net-B: basic cascade (CT, PTV, OARs, body)", None,
                      pretrained_iterations=4000),
        BundleVariant("cascunet_dm3", "CascU-Net-DM3: cascade with 3 dose masks", "3"),
        BundleVariant("cascunet_dm5", "CascU-Net-DM5: cascade with 5 dose masks", "5"),
        BundleVariant("cascunet_dm7", "CascU-Net-DM7: cascade with 7 dose masks", "7"),
        BundleVariant("cascunet_dm10", "CascU-Net-DM10: cascade with 10 dose masks", "10",
                      pretrained_iterations=3000),  # the best prior-mask variant of docs/results/cpu-budget.md
        RANDOSE,
    )
}


def _fractions(variant: BundleVariant) -> tuple[float, ...]:
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


def openkbp_cpu_config(variant: BundleVariant, template_dir: str | Path) -> dict:
    """``configs/openkbp_cpu.json``: everything the shipped OpenKBP weights were trained with in one override
    (``openkbp.json``, then ``cpu.json``, then the training length), layered on ``train.json`` or
    ``inference.json``."""
    if not variant.pretrained_iterations:
        raise ValueError(f"{variant.name} ships no pretrained weights")
    config: dict = {}
    for name in ("openkbp.json", "cpu.json"):
        config.update(json.loads((Path(template_dir) / "configs" / name).read_text()))
        config.update(variant.config_overrides.get(name, {}))
    return {**config, "max_iterations": variant.pretrained_iterations, "val_interval": PRETRAINED_VAL_INTERVAL}


def pretrained_records(template_dir: str | Path) -> dict[str, dict]:
    """Bundle name -> the record of its shipped weights (``bundles/_template/pretrained.json``; none yet: {})."""
    path = Path(template_dir) / PRETRAINED_RECORDS
    return json.loads(path.read_text()) if path.is_file() else {}


def metadata(variant: BundleVariant, record: Mapping | None = None) -> dict:
    """``configs/metadata.json`` of a variant (MONAI meta_schema_20240725), for the default lung profile; with
    ``record`` (see :func:`pretrained_records`), the version, changelog and performance of its shipped weights."""
    channels = variant.input_channel_names()
    fractions = _fractions(variant)
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
        "image_classes": "CT (clipped to [-1024, 1500] HU, / 1000) and binary masks; PTV = prescription / reference dose",
        "label_classes": (f"dose / reference dose ({LUNG.reference_dose_gy:g} Gy lung, "
                          f"{OPENKBP.reference_dose_gy:g} Gy OpenKBP)"),
        "pred_classes": "dose / reference dose; inference writes Gy",
        "eval_metrics": {"dose_score_gy": "OpenKBP dose score (lower is better)",
                         "dvh_score_gy": "OpenKBP DVH score (lower is better)"},
        "intended_use": "Research and knowledge-based planning support; not a treatment planning system.",
        "references": [line.lstrip("- ").strip() for line in
                       (variant.references + "\n" + OPENKBP_REFERENCE).replace("\n  ", " ").splitlines()],
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


def _performance(record: Mapping) -> dict:
    """metadata.json's ``performance``: what the shipped weights score, and on what."""
    return {"configs": ["configs/inference.json", f"configs/{PRETRAINED_CONFIG}"],
            "training_data": record["training_data"], "selection_data": record["validation_data"],
            "iterations": record["iterations"], "best_iteration": record["best_iteration"],
            "training_wall_time_min": record["wall_time_min"], "machine": record["machine"],
            "validation": record["validation"]}


def _pretrained_text(variant: BundleVariant, record: Mapping | None, config: Mapping) -> str:
    """The bundle docs' section on its shipped weights (``config``: the openkbp_cpu.json they were trained with)."""
    if not record:
        return ""
    labels = {"fp32": "fp32 (`--inference_mode frozen`; MONAI Label and Deploy run this)",
              "bf16": "bf16 (the default on CPUs with native bf16)"}
    rows = "\n".join(f"| {labels[mode]} | {scores['dose_score_gy']:.3f} | {scores['dvh_score_gy']:.3f} |"
                      for mode, scores in record["validation"].items())
    extra = record.get("training_overrides")
    if extra:
        return (f"\n### Shipped OpenKBP weights (version {record['version']})\n\n`models/model.pt` was trained with "
                f"`configs/{PRETRAINED_CONFIG}` and the ids {json.dumps(extra)}: a trial run, not the "
                "shipped recipe; no figure is reported for it.\n")
    prior = (" Its prior is the basic cascade shipped in `cascunet_basic` (stored inside this checkpoint too)."
             if variant.dose_mask_set else "")
    return f"""
### Shipped OpenKBP weights (version {record["version"]})

`models/model.pt` ({record["size_mb"]:.1f} MB, {record["storage_dtype"]}; sha256 in `large_files.yml`) was
trained with `configs/{PRETRAINED_CONFIG}` on {record["training_data"]}: {record["iterations"]} iterations,
batch {config["batch_size"]}, {"x".join(map(str, config["network_size"]))} network input, \
{"bf16 autocast" if record["bf16_autocast"] else "fp32"}, {record["wall_time_min"]:.0f} min on {record["machine"]}. The
checkpoint is the one with the best validation dose score (iteration {record["best_iteration"]}), selected on
{record["validation_data"]}, where it scores (official OpenKBP definitions, flip TTA, mask source
`prior` for a mask variant):{prior}

| inference | dose score (Gy) | DVH score (Gy) |
| --- | --- | --- |
{rows}

```bash
python -m monai.bundle run --config_file "['configs/inference.json','configs/evaluate.json','configs/{PRETRAINED_CONFIG}']" \\
    --dataset_dir <converted OpenKBP> --split validation --inference_mode frozen
```
"""


def _docs(variant: BundleVariant, template_dir: Path, record: Mapping | None = None,
          pretrained_config: Mapping | None = None) -> str:
    template = (template_dir / "docs" / "README.md").read_text()
    fractions = _fractions(variant)
    channels = variant.input_channel_names()
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
    elif variant.name == "cascunet_basic":
        variant_text = "\nThis is the basic cascade, without dose masks; it is the prior of the mask variants.\n"
        training_text = ""
        mask_note = ""
    else:
        variant_text = ""
        training_text = ""
        mask_note = ""
    return Template(template).substitute(
        title=variant.title, summary=metadata(variant, record)["description"], channel_table=table,
        reference_dose_gy=f"{LUNG.reference_dose_gy:g}", openkbp_reference_dose_gy=f"{OPENKBP.reference_dose_gy:g}",
        variant_text=variant_text, training_text=training_text,
        mask_note=mask_note, model_text=variant.model_text, schedule_text=variant.schedule_text,
        pretrained_text=_pretrained_text(variant, record, pretrained_config or {}),
        references=variant.references + "\n" + OPENKBP_REFERENCE)


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
            config.update(variant.config_overrides.get(name, {}))
            text = json.dumps(config, indent=4) + "\n"
        (out_dir / "configs" / name).write_text(text)
    for name, config in variant.extra_configs.items():
        (out_dir / "configs" / name).write_text(json.dumps(config, indent=4) + "\n")
    pretrained_config = openkbp_cpu_config(variant, template_dir) if variant.pretrained_iterations else None
    if pretrained_config:
        (out_dir / "configs" / PRETRAINED_CONFIG).write_text(json.dumps(pretrained_config, indent=4) + "\n")
    record = pretrained_records(template_dir).get(variant.name)
    (out_dir / "configs" / "metadata.json").write_text(json.dumps(metadata(variant, record), indent=4) + "\n")
    (out_dir / "configs" / "metadata_openkbp.json").write_text(json.dumps(profile_metadata(variant, OPENKBP),
                                                                          indent=4) + "\n")
    (out_dir / "docs" / "README.md").write_text(_docs(variant, template_dir, record, pretrained_config))
    shutil.copyfile(template_dir / "docs" / "data_license.txt", out_dir / "docs" / "data_license.txt")
    shutil.copyfile(template_dir / "LICENSE", out_dir / "LICENSE")
    if record:  # committed beside this file: download_large_files only checks the sha256 (the url is for a copy)
        entries = [{"path": "models/model.pt", "url": "", "hash_val": record["sha256"], "hash_type": "sha256"}]
        text = large_files_yaml(entries, "# The shipped weights, committed with the bundle: `python -m monai.bundle "
                                         "download_large_files --bundle_path <bundle>` checks their sha256.")
    else:
        text = "# No pretrained weights for this bundle. Entries: {path, url, hash_val, hash_type}.\nlarge_files: []\n"
    (out_dir / "large_files.yml").write_text(text)
    return out_dir
