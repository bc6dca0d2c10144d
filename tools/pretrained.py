"""``dosepred pretrained``: train the OpenKBP weights a bundle ships, check them, and ship them.

    dosepred pretrained train cascunet_basic --data data/openkbp    # runs/pretrained/cascunet_basic (resumes)
    dosepred pretrained ship cascunet_basic --data data/openkbp     # -> bundles/cascunet_basic/models/model.pt

``train`` runs ``python -m monai.bundle run training`` in a copy of the bundle with ``configs/openkbp_cpu.json``
(a mask variant's prior: the basic cascade shipped in ``bundles/cascunet_basic``), then evaluates the best
checkpoint on the validation split in fp32 and, on CPUs with native bf16, in bf16. ``ship`` stores the weights in
float16 only when that moves no validation voxel's dose by more than ``max_change_gy`` (else float32), writes
``models/model.pt`` into the bundle, records its sha256, training run and scores in
``bundles/_template/pretrained.json`` and re-renders the bundle (metadata, docs, ``large_files.yml``).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shutil
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from custom_nets.bundles.config import bundle_parser
from custom_nets.bundles.packaging import sha256_of
from custom_nets.bundles import PRETRAINED_CONFIG, PRETRAINED_RECORDS, load_variants, render_bundle
from custom_nets.io.atomic import atomic_file, write_text_atomic
from custom_nets.io.datalist import load_datalist
from custom_nets.networks import check_checkpoint, parameters_stored_as
from custom_nets.performance.hardware import cpu_has_native_bf16
from custom_nets.reports.tables import read_csv
from dosepred.arguments import as_mapping
from dosepred.bundles import BUNDLES_DIR
from dosepred.experiment import config_list, run_logged

TRAIN = ["configs/train.json", f"configs/{PRETRAINED_CONFIG}"]
EVALUATE = ["configs/inference.json", "configs/evaluate.json", f"configs/{PRETRAINED_CONFIG}"]
#: Inference modes the shipped weights are scored in: label -> ``inference_mode``.
MODES = {"fp32": "frozen", "bf16": "bf16"}


def _variant(name: str, bundles: Path):
    variants = load_variants(bundles / "_template")
    if name not in variants or not variants[name].pretrained_iterations:
        raise ValueError(f"{name} ships no pretrained weights; those that do: "
                         f"{[v.name for v in variants.values() if v.pretrained_iterations]}")
    return variants[name]


def _prior_args(name: str, bundles: Path) -> list[str]:
    if not _variant(name, bundles).dose_mask_set:
        return []
    prior = bundles / "cascunet_basic" / "models" / "model.pt"
    if not prior.is_file():
        raise FileNotFoundError(f"{name} needs the shipped basic cascade as its prior, {prior}: train and ship "
                                "cascunet_basic first")
    return ["--prior_checkpoint", str(prior)]


def _evaluate(bundle_dir: Path, data: Path, mode: str) -> Path:
    folder = bundle_dir / "eval" / f"validation_{mode}"
    if not (folder / "run_info.json").is_file():
        print(f"[{time.strftime('%H:%M:%S')}] evaluating {bundle_dir.name} ({mode}) on validation", flush=True)
        run_logged(bundle_dir, ["run", "--config_file", config_list(EVALUATE), "--dataset_dir", str(data), "--split",
                                 "validation", "--output_dir", str(folder), "--inference_mode", MODES[mode]],
                    "evaluate.log")
    return folder


def _modes() -> list[str]:
    return ["fp32", "bf16"] if cpu_has_native_bf16() else ["fp32"]


def train(name: str, data: str = "data/openkbp", out: str = "runs/pretrained", bundles: str = str(BUNDLES_DIR),
          overrides=None) -> str:
    """Train NAME's shipped model in OUT/NAME on DATA (converted OpenKBP) with ``configs/openkbp_cpu.json`` of
    BUNDLES/NAME, resuming an interrupted run, then evaluate it on the validation split. OVERRIDES (JSON object
    of config ids) are for trying the command on little data; shipped weights are trained without."""
    data_dir, bundle_dir, bundles_dir = Path(data).resolve(), Path(out).resolve() / name, Path(bundles)
    _variant(name, bundles_dir)
    if not (data_dir / "datalist.json").is_file():
        raise FileNotFoundError(f"{data_dir / 'datalist.json'} does not exist: run dosepred openkbp convert first")
    prior = _prior_args(name, bundles_dir)
    common = [item for key, value in (as_mapping(overrides, "overrides") or {}).items()
              for item in (f"--{key}", json.dumps(value))]
    if not bundle_dir.exists():
        shutil.copytree(bundles_dir / name, bundle_dir, ignore=shutil.ignore_patterns("models", "eval", "runs"))
        if common:
            write_text_atomic(bundle_dir / "overrides.json", json.dumps(as_mapping(overrides, "overrides")) + "\n")
    if not (bundle_dir / "runs" / "training_summary.json").is_file():
        args = ["run", "training", "--config_file", config_list(TRAIN), "--dataset_dir", str(data_dir), *prior,
                *common]
        if any((bundle_dir / "models").glob("checkpoint_*.pt")):
            args += ["--resume", "true"]
        print(f"[{time.strftime('%H:%M:%S')}] training {name}: log {bundle_dir / 'train.log'}", flush=True)
        run_logged(bundle_dir, args, "train.log")
    for mode in _modes():
        _evaluate(bundle_dir, data_dir, mode)
    return str(bundle_dir)


def _predictions(folder: Path) -> dict[str, np.ndarray]:
    return {p.parent.name: np.asarray(nib.load(p).dataobj, dtype=np.float32)
            for p in sorted((folder / "predictions").glob("*/dose_pred.nii.gz"))}


def _dose_errors(folder: Path) -> dict[str, float]:
    return {row["case_id"]: float(row["dose_error_gy"]) for row in read_csv(folder / "case_summary.csv")}


_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ - ")


def training_wall_s(train_log: Path) -> float:
    """Wall seconds a training run took over all its sittings: for each sitting (from one start of the trainer,
    fresh or resumed, to the next), its first to its last time-stamped log line. A killed sitting counts up to
    its last line."""
    sittings: list[list[datetime.datetime]] = []
    for line in train_log.read_text(errors="replace").splitlines():
        stamp = _STAMP.match(line)
        if stamp is None:
            continue
        when = datetime.datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S")
        if not sittings or "Setting logging properties based on config" in line:
            sittings.append([when, when])
        sittings[-1][1] = when
    return sum((end - start).total_seconds() for start, end in sittings)


def _iterations(bundle_dir: Path) -> tuple[int, int]:
    """Iterations trained and the iteration of the best validation score, from the latest training checkpoint."""
    latest = max((bundle_dir / "models").glob("checkpoint_*.pt"), key=lambda p: p.stat().st_mtime)
    state = torch.load(latest, map_location="cpu", weights_only=False)
    trainer = state["trainer"]
    best_epoch = int(state["resume_state"]["best_metric"][1])
    return int(trainer["iteration"]), best_epoch * int(trainer["epoch_length"])


def ship(name: str, data: str = "data/openkbp", out: str = "runs/pretrained", bundles: str = str(BUNDLES_DIR),
         max_change_gy: float = 1e-3) -> str:
    """Ship the model ``train`` made in OUT/NAME: weights into BUNDLES/NAME/models/model.pt (float16 when no
    validation voxel's dose moves by more than MAX_CHANGE_GY, else float32), its record into
    BUNDLES/_template/pretrained.json, and the bundle re-rendered."""
    data_dir, run_dir, bundles_dir = Path(data).resolve(), Path(out).resolve() / name, Path(bundles)
    variant = _variant(name, bundles_dir)
    trained = run_dir / "models" / "model.pt"
    evaluated = {mode: run_dir / "eval" / f"validation_{mode}" for mode in _modes()}
    if not trained.is_file() or not all((f / "run_info.json").is_file() for f in evaluated.values()):
        raise FileNotFoundError(f"{run_dir} has no evaluated model: run dosepred pretrained train {name} first")
    network = bundle_parser(run_dir, ["configs/inference.json", f"configs/{PRETRAINED_CONFIG}"]).get_parsed_content(
        "network_def")
    state = check_checkpoint(trained, network)

    half = run_dir / "half" / "models" / "model.pt"  # a copy of the bundle whose weights are stored in float16
    source = run_dir / "half" / "source.sha256"  # the weights it was made from: a retrained run redoes it
    if not source.is_file() or source.read_text().strip() != sha256_of(trained):
        shutil.rmtree(run_dir / "half", ignore_errors=True)
        half.parent.mkdir(parents=True)
        shutil.copytree(run_dir / "configs", run_dir / "half" / "configs")
        torch.save(parameters_stored_as(state, network, torch.float16), half)
        write_text_atomic(source, sha256_of(trained) + "\n")
    half_eval = _evaluate(run_dir / "half", data_dir, "fp32")
    full, halved = _predictions(evaluated["fp32"]), _predictions(half_eval)
    max_voxel = max(float(np.abs(full[c] - halved[c]).max()) for c in full)
    full_errors, half_errors = _dose_errors(evaluated["fp32"]), _dose_errors(half_eval)
    max_error_change = max(abs(full_errors[c] - half_errors[c]) for c in full_errors)
    dtype = torch.float16 if max_voxel <= float(max_change_gy) else torch.float32
    print(f"float16 storage moves the validation dose by at most {max_voxel:.4f} Gy (a patient's dose error by "
          f"{max_error_change:.4f} Gy): stored as {str(dtype).removeprefix('torch.')}")

    target = bundles_dir / name / "models" / "model.pt"
    target.parent.mkdir(exist_ok=True)
    with atomic_file(target) as tmp:
        torch.save(parameters_stored_as(state, network, dtype), tmp)
    if dtype == torch.float16:  # the fp32 scores of the weights as shipped (bf16's moved by less than the limit)
        evaluated["fp32"] = half_eval
    scores = {mode: json.loads((f / "run_info.json").read_text())["metrics"] for mode, f in evaluated.items()}
    iterations, best_iteration = _iterations(run_dir)
    datalist = data_dir / "datalist.json"
    counts = {split: len(load_datalist(datalist, split)) for split in ("training", "validation")}
    template = bundles_dir / "_template"
    records_file = template / PRETRAINED_RECORDS
    records = json.loads(records_file.read_text()) if records_file.is_file() else {}
    records[name] = {
        "version": "0.2.0", "date": datetime.date.today().isoformat(),
        "sha256": sha256_of(target), "size_mb": target.stat().st_size / 1e6,
        "storage_dtype": str(dtype).removeprefix("torch."),
        "half_precision_check": {"max_voxel_change_gy": max_voxel, "max_dose_error_change_gy": max_error_change,
                                 "limit_gy": float(max_change_gy)},
        "training_data": f"the {counts['training']} OpenKBP training patients",
        "validation_data": f"the {counts['validation']} OpenKBP validation patients",
        "iterations": iterations, "best_iteration": best_iteration,
        "wall_time_min": training_wall_s(run_dir / "train.log") / 60,
        "bf16_autocast": bool(json.loads((run_dir / "runs" / "training_summary.json").read_text())["cpu_bf16_autocast"]),
        "machine": f"{os.cpu_count()} CPU cores ({platform.machine()})",
        "training_overrides": (json.loads((run_dir / "overrides.json").read_text())
                               if (run_dir / "overrides.json").is_file() else {}),
        "validation": {mode: {k: float(v) for k, v in scores[mode].items()} for mode in scores},
        # fp32 inference with the shipped weights: what a clone reproduces (tests, within 1e-3 Gy)
        "validation_dose_error_gy": _dose_errors(evaluated["fp32"]),
    }
    write_text_atomic(records_file, json.dumps(records, indent=1) + "\n")
    render_bundle(variant, template, bundles_dir / name)
    print(f"shipped {target} ({target.stat().st_size / 1e6:.1f} MB); record in {records_file}")
    return str(target)
