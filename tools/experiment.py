"""``dosepred experiment cpu-budget``: the cascade paper's experiment on OpenKBP at a CPU budget, in one command.

Every model is a copy of its bundle trained with ``python -m monai.bundle run training`` on the OpenKBP training
split at the CPU profile (``configs/cpu.json``: 700 iterations, batch 2, 64^3 network input), then evaluated on the
validation split with the bundle's evaluate config. A run that finished is not repeated; an interrupted one
resumes from its latest checkpoint. The report (``dosepred report`` tables and figures, plus the budget table:
seconds per iteration, wall time, peak memory) goes to ``--report``.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from custom_nets.bundles.config import bundle_parser
from custom_nets.io.atomic import write_text_atomic
from custom_nets.io.datalist import load_datalist
from custom_nets.options import as_bool
from custom_nets.reports import write_report
from dosepred.arguments import as_mapping
from dosepred.bundles import BUNDLES_DIR

TRAIN = ["configs/train.json", "configs/openkbp.json", "configs/cpu.json"]
EVALUATE = ["configs/inference.json", "configs/evaluate.json", "configs/openkbp.json", "configs/cpu.json"]
TTA = "[[],[0],[2],[0,2]]"
#: The reference C3D implementation under budget v1 (700 iterations, batch 2, 64^3, same widths), as issue 12
#: reports it on the 33 validation patients: dose score, DVH score (Gy).
REFERENCE_C3D_VALIDATION = (4.54, 5.12)


@dataclass(frozen=True)
class Run:
    """One trained model of the experiment.

    Attributes:
        name: folder and display name.
        bundle: the bundle it is a copy of.
        what: one line for the report.
        train_args: extra ``monai.bundle`` arguments of training and evaluation (config ids).
        extra_configs: override files of the bundle, layered after the CPU profile.
        mask_sources: mask sources it is evaluated with (mask variants).
        prior: the run whose best weights are this mask cascade's prior.
        without_tta: also evaluate without flip test-time augmentation (the CPU profile's default has it).
        role: ``recipe`` (choosing the CPU recipe) or ``paper`` (the cascade paper's comparison).
        note: what a reader of the report should know about this run.
    """

    name: str
    bundle: str
    what: str
    train_args: tuple[str, ...] = ()
    extra_configs: tuple[str, ...] = ()
    mask_sources: tuple[str, ...] = ()
    prior: str | None = None
    without_tta: bool = False
    note: str = ""
    role: str = "paper"


_SHARED_CORES = ("trained while tests or benchmarks at times shared the two cores: its seconds per iteration and "
                 "wall time are not comparable with the other rows")
RUNS: tuple[Run, ...] = (  # in the order they run: the recipe check first, then the paper's comparison
    Run("cascunet_basic", "cascunet_basic", "basic cascade, possible-dose region at 64^3, flips, bf16",
        ("--rotate_translate_prob", "0"), without_tta=True),
    Run("basic_rotation", "cascunet_basic", "as cascunet_basic, plus the paper's rotation (multiples of 40 degrees) "
        "and translation (up to 10 voxels), probability 0.5", ("--rotate_translate_prob", "0.5"), without_tta=True,
        role="recipe", note="trained while other jobs shared the two cores, and before the median was recorded: "
        "its seconds per iteration (a mean) and wall time are not comparable with the other rows"),
    Run("basic_whole_volume", "cascunet_basic", "as cascunet_basic, input: the whole 128^3 volume pooled to 64^3 "
        "(C3D's input)", ("--region_margin_voxels", "128"), role="recipe",
        note="trained while the test suite shared the two cores: its wall time is not comparable"),
    Run("basic_fp32", "cascunet_basic", "as cascunet_basic, in fp32", ("--cpu_bf16", "false"), role="recipe"),
    Run("cascunet_dm10", "cascunet_dm10", "10 dose masks from the prior", mask_sources=("prior",),
        prior="cascunet_basic"),
    Run("randose", "randose", "RANDose, learnable region weights", note=_SHARED_CORES),
    Run("cascunet_dm3", "cascunet_dm3", "3 dose masks from the prior", mask_sources=("prior",), prior="cascunet_basic"),
    Run("cascunet_dm5", "cascunet_dm5", "5 dose masks from the prior", mask_sources=("prior",), prior="cascunet_basic",
        note=_SHARED_CORES),
    Run("cascunet_dm7", "cascunet_dm7", "7 dose masks from the prior", mask_sources=("prior",), prior="cascunet_basic",
        note=_SHARED_CORES),
    Run("cascunet_dm10_oracle", "cascunet_dm10", "10 dose masks, trained on masks from the planned dose",
        ("--mask_source", "reference"), mask_sources=("reference", "prior"), prior="cascunet_basic",
        note=_SHARED_CORES),
    Run("randose_fixed_weights", "randose", "RANDose, fixed region weights (1, 1)",
        extra_configs=("configs/loss_fixed_weights.json",),
        note="interrupted at the end of a working session and resumed: its seconds per iteration and wall time "
        "are those of the last sitting only (300 of 700 iterations; the first 400 shared the cores with tests)"),
    Run("basic_seed1", "cascunet_basic", "as cascunet_basic, seed 1: the seed-to-seed spread that bf16 against fp32 "
        "is judged by", ("--rotate_translate_prob", "0", "--seed", "1"), role="recipe"),
)


def config_list(files: list[str]) -> str:
    """``--config_file``'s value for several files, as ``monai.bundle`` reads a list from the command line."""
    return "[" + ",".join(f"'{f}'" for f in files) + "]"


def _configs(files: list[str], run: Run) -> str:
    return config_list([*files, *run.extra_configs])


def run_logged(bundle_dir: Path, args: list[str], log_name: str) -> None:
    """Run ``python -m monai.bundle ARGS`` in the bundle, appending the command to ``commands.txt`` and its output
    to ``LOG_NAME``; a failure names the log."""
    command = [sys.executable, "-m", "monai.bundle", *args]
    with open(bundle_dir / "commands.txt", "a") as record:
        record.write(f"cd {bundle_dir} && {shlex.join(['python', *command[1:]])}\n")
    log = bundle_dir / log_name
    with open(log, "a") as out:
        result = subprocess.run(command, cwd=bundle_dir, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed in {bundle_dir} (exit {result.returncode}); see {log}")


def _train(run: Run, bundle_dir: Path, data: Path, out: Path, common: list[str]) -> None:
    if (bundle_dir / "runs" / "training_summary.json").is_file():
        return
    args = ["run", "training", "--config_file", _configs(TRAIN, run), "--dataset_dir", str(data), *run.train_args,
            *common]
    if run.prior:
        args += ["--prior_checkpoint", str(out / run.prior / "models" / "model.pt")]
    if any((bundle_dir / "models").glob("checkpoint_*.pt")):
        args += ["--resume", "true"]
    print(f"[{time.strftime('%H:%M:%S')}] training {run.name}: log {bundle_dir / 'train.log'}", flush=True)
    run_logged(bundle_dir, args, "train.log")


def _evaluate(run: Run, bundle_dir: Path, data: Path, common: list[str]) -> dict[str, Path]:
    """Evaluate on the validation split once per mask source, with flip TTA as the CPU profile does (and without,
    for ``without_tta``); returns label -> folder."""
    variants = [(f"masks-{s}", ["--mask_source", s]) for s in run.mask_sources] or [("", [])]
    variants = [(label, [*a, "--tta_flip_axes", TTA]) for label, a in variants] + (
        [("_".join(filter(None, (label, "no_tta"))), [*a, "--tta_flip_axes", "[[]]"]) for label, a in variants]
        if run.without_tta else [])
    folders = {}
    for label, extra in variants:
        folder = bundle_dir / "eval" / ("validation" + (f"_{label}" if label else ""))
        if not (folder / "run_info.json").is_file() or not (folder / "case_summary.csv").is_file():
            print(f"[{time.strftime('%H:%M:%S')}] evaluating {run.name} {label or ''}", flush=True)
            args = ["run", "--config_file", _configs(EVALUATE, run), "--dataset_dir", str(data), "--split",
                    "validation", "--output_dir", str(folder), *_without(run.train_args, extra), *common, *extra]
            run_logged(bundle_dir, args, "evaluate.log")
        folders[label] = folder
    return folders


def _without(args: tuple[str, ...], given: list[str]) -> list[str]:
    """``args`` (``--key value`` pairs) without the keys that ``given`` sets."""
    keys = set(given[0::2])
    pairs = zip(args[0::2], args[1::2])
    return [item for key, value in pairs if key not in keys for item in (key, value)]


def _row(run: Run, label: str, folder: Path, bundle_dir: Path) -> dict:
    info = json.loads((folder / "evaluation.json").read_text()) | json.loads((folder / "run_info.json").read_text())
    summary_file = bundle_dir / "runs" / "training_summary.json"
    timing = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    config = bundle_parser(bundle_dir, [*TRAIN, *run.extra_configs]).config
    counts = {split: len(load_datalist(info["datalist"], split, allow_empty=True))
              for split in ("training", info["split"])}
    size = "x".join(str(n) for n in config["network_size"]) if config.get("network_size") else "whole volume"
    return {"model": run.name + (f" [{label}]" if label else ""), "what": run.what, "role": run.role,
            "split": f"train {counts['training']} / {info['split']} {counts[info['split']]}",
            "budget": f"{timing.get('iterations_run')} it x batch {config['batch_size']}, {size}",
            "mask source": info.get("mask_source", "none"), "dose score (Gy)": info["metrics"]["dose_score_gy"],
            "DVH score (Gy)": info["metrics"]["dvh_score_gy"], "iterations": timing.get("iterations_run"),
            "s / iteration": timing.get("median_s_per_iteration") or timing.get("s_per_iteration"),
            "wall (min)": (timing.get("wall_s") or 0) / 60,
            "peak memory (GB)": (timing.get("peak_memory_mb") or 0) / 1024, "bf16": timing.get("cpu_bf16_autocast"),
            "folder": str(folder)}


#: Differences smaller than this count as ties until a second seed of the basic cascade measures the spread.
TIE_MARGIN_GY = 0.05


def mask_claim(rows: list[dict]) -> str:
    """Whether "more dose masks, better" holds for the deployable (prior-mask) cascades of ``rows``: both scores
    must fall, by more than the seed-to-seed spread (else :data:`TIE_MARGIN_GY`), with every added set of masks."""
    by_count = {0: r for r in rows if r["model"] == "cascunet_basic"}
    for count in (3, 5, 7, 10):
        by_count.update({count: r for r in rows if r["model"] == f"cascunet_dm{count} [masks-prior]"})
    if len(by_count) < 2:
        return "Not enough of the mask cascades have run yet to test it.\n"
    seed = next((r for r in rows if r["model"] == "basic_seed1"), None)
    if seed is not None and 0 in by_count:
        margin = max(abs(seed[k] - by_count[0][k]) for k in ("dose score (Gy)", "DVH score (Gy)"))
        basis = f"the larger score difference between two seeds of the basic cascade, {margin:.2f} Gy"
    else:
        margin, basis = TIE_MARGIN_GY, f"{TIE_MARGIN_GY} Gy (no second seed measured yet)"
    counts = sorted(by_count)
    listed = "; ".join(f"{n} masks: {by_count[n]['dose score (Gy)']:.2f} / {by_count[n]['DVH score (Gy)']:.2f} Gy"
                       for n in counts)
    trends = {}
    for key, label in (("dose score (Gy)", "dose score"), ("DVH score (Gy)", "DVH score")):
        steps = [by_count[b][key] - by_count[a][key] for a, b in zip(counts, counts[1:])]
        trends[label] = ("falls with every added set of masks" if all(d < -margin for d in steps) else
                         "rises with some added set of masks" if any(d > margin for d in steps) else
                         "stays within the margin")
    holds = all(t.startswith("falls") for t in trends.values())
    against = any(t.startswith("rises") for t in trends.values())
    verdict = ("It holds here." if holds else "It does not hold here." if against else
               "It is not shown here: the differences are within the margin.")
    missing = [n for n in (0, 3, 5, 7, 10) if n not in by_count]
    return (f"The cascade paper claims that more dose masks give a better prediction. With deployable masks (from "
            f"the basic cascade's prediction), dose / DVH scores on validation: {listed}. Counting differences "
            f"under {basis} as ties, the {'; the '.join(f'{k} {v}' for k, v in trends.items())}. {verdict}"
            + (f" Not yet run: {', '.join(str(n) for n in missing)} masks." if missing else "") + "\n")


def seed_spread(rows: list[dict]) -> str:
    """How far two seeds of the basic cascade land apart: the yardstick of every one-run comparison."""
    by_name = {r["model"]: r for r in rows}
    if not {"cascunet_basic", "basic_seed1"} <= set(by_name):
        return "A second seed of the basic cascade has not run yet: single-run differences have no yardstick.\n"
    a, b = by_name["cascunet_basic"], by_name["basic_seed1"]
    dose, dvh = (abs(a[k] - b[k]) for k in ("dose score (Gy)", "DVH score (Gy)"))
    return (f"Two seeds of the basic cascade (cascunet_basic, basic_seed1) land {dose:.2f} Gy apart in dose score and "
            f"{dvh:.2f} Gy in DVH score: a difference between two single runs smaller than that is not decided "
            "by this experiment.\n")


def _markdown(rows: list[dict], columns: list[str]) -> str:
    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.2f}" if abs(value) >= 0.01 or value == 0 else f"{value:.2e}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(cell(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def cpu_budget(data: str = "data/openkbp", out: str = "runs/cpu-budget", report: str = "docs/results/cpu-budget",
               only: str | list[str] | tuple[str, ...] | None = None, report_only: bool = False,
               overrides=None) -> str:
    """Train and evaluate every model of the CPU-budget experiment (or ONLY, comma-separated names) and write
    the report into REPORT (``REPORT.md`` beside a folder of tables and figures).

    DATA is the converted OpenKBP dataset (``dosepred openkbp convert``); OUT holds one bundle copy per model.
    REPORT_ONLY rewrites the report from the runs in OUT. OVERRIDES (JSON object of config ids, e.g.
    '{"max_iterations": 100}') apply to every run; a report made with them is not budget v1.
    """
    common = [item for key, value in (as_mapping(overrides, "overrides") or {}).items()
              for item in (f"--{key}", json.dumps(value))]
    report_only = as_bool(report_only, "report_only")
    data_dir, out_dir = Path(data).resolve(), Path(out).resolve()
    if not (data_dir / "datalist.json").is_file():
        raise FileNotFoundError(f"{data_dir / 'datalist.json'} does not exist: run dosepred openkbp convert first")
    names = [n.strip() for n in only.split(",")] if isinstance(only, str) else list(only or [r.name for r in RUNS])
    unknown = sorted(set(names) - {r.name for r in RUNS})
    if unknown:
        raise ValueError(f"--only names unknown runs {unknown}; runs: {[r.name for r in RUNS]}")
    rows = []
    for run in RUNS:
        bundle_dir = out_dir / run.name
        if run.name in names and not report_only:
            if run.prior and not (out_dir / run.prior / "models" / "model.pt").is_file():
                raise FileNotFoundError(f"{run.name} needs its prior, {run.prior}: train it first")
            if not bundle_dir.exists():
                shutil.copytree(BUNDLES_DIR / run.bundle, bundle_dir)
            _train(run, bundle_dir, data_dir, out_dir, common)
            _evaluate(run, bundle_dir, data_dir, common)
        for label, folder in _existing_evaluations(bundle_dir):
            rows.append(_row(run, label, folder, bundle_dir))
    if not rows:
        raise FileNotFoundError(f"no evaluated run in {out_dir}")
    return _write(rows, Path(report), common)


def _existing_evaluations(bundle_dir: Path) -> list[tuple[str, Path]]:
    found = []
    for folder in sorted((bundle_dir / "eval").glob("validation*")):
        if (folder / "run_info.json").is_file() and (folder / "case_summary.csv").is_file():
            found.append((folder.name.removeprefix("validation").lstrip("_"), folder))
    return found


def _write(rows: list[dict], report: Path, common: list[str]) -> str:
    paper = [r for r in rows if r["role"] == "paper" and not r["model"].endswith("no_tta]")]
    write_report([r["folder"] for r in paper], report, names=[r["model"] for r in paper], max_case_figures=2,
                 progress=False)
    columns = ["model", "what", "split", "budget", "mask source", "dose score (Gy)", "DVH score (Gy)",
               "s / iteration", "wall (min)", "peak memory (GB)"]
    ref_dose, ref_dvh = REFERENCE_C3D_VALIDATION
    text = [
        "# The cascade paper's experiment at a CPU budget (OpenKBP)\n",
        "Regenerate: `dosepred experiment cpu-budget --data data/openkbp --out runs/cpu-budget "
        f"--report {report}` (after `dosepred openkbp convert`). Finished runs are reused.\n",
        "Every row: trained on the 169 OpenKBP training patients, scored on the 33 validation patients with the "
        "official OpenKBP dose and DVH scores (lower is better); budget v1: 700 iterations, batch 2, 64^3 network "
        "input, cascade widths A [8..128], B [16..256] (RANDose: `dosepred model-size randose --cpu`), each "
        "model's own optimiser settings, on this machine's 2 CPU cores. The mask source says where a mask "
        "variant's masks came from: `prior` (the basic cascade's prediction: deployable) or `reference` (the "
        "planned dose: an oracle). Seconds per iteration are the median over the run (training steps only); "
        "wall time includes caching the data and validating every 100 iterations; peak memory is the training "
        "process's peak resident set.\n",
        *([f"**Not budget v1**: every run was made with `{' '.join(common)}`.\n"] if common else []),
        f"The reference C3D implementation under the same budget scores {ref_dose} / {ref_dvh} Gy on these "
        "validation patients (figure from issue 12, not measured here).\n",
        "## Models\n", _markdown(rows, columns),
        "## More masks, better?\n", mask_claim(rows),
        "## Choosing the CPU recipe\n",
        f"{', '.join(r.name for r in RUNS if r.role == 'recipe')} train the basic cascade under the same budget "
        "as cascunet_basic with one thing changed: the input region (the possible-dose region versus the whole "
        "volume pooled to 64^3, as C3D does) and the "
        "arithmetic (bf16 autocast versus fp32); the augmentation (flips only versus the paper's rotation and "
        "translation as well). Every model is evaluated with flip test-time augmentation (the CPU profile's "
        "default: flips of axes 0 and 2, averaged); `[no_tta]` rows are the same model without it.\n",
        seed_spread(rows),
        *(f"- {r.name}: {r.note}\n" for r in RUNS if r.note and any(row["model"].split(" [")[0] == r.name
                                                                     for row in rows)),
        "## Tables and figures\n", f"[report.md]({report.name}/report.md): the cascade paper's tables (DVH metrics, "
        "paired tests, voxel MAE per structure), isodose Dice, voxel-MAE box plots, training curves.\n",
    ]
    markdown = report.with_suffix(".md")
    write_text_atomic(markdown, "\n".join(text))
    write_text_atomic(report / "models.json", json.dumps(rows, indent=1) + "\n")
    print(f"report: {markdown}")
    return str(markdown)


def pooling_floor(data: str = "data/openkbp", split: str = "validation", network_size: int = 64,
                  margin_voxels: int = 4) -> dict:
    """The dose score the network grid allows at best: each planned dose of SPLIT pooled into NETWORK_SIZE^3 as
    the CPU profile pools it and restored to the patient's grid, scored against itself (Gy), for the
    possible-dose region (the CPU profile) and for the whole volume (C3D's input)."""
    import torch

    from custom_nets.profiles import get_profile
    from custom_nets.transforms import LoadDoseCased
    from custom_nets.transforms.region import region_box, resample_region, restore_region

    datalist = Path(data) / "datalist.json"
    entries = load_datalist(datalist, split)
    load = LoadDoseCased(profile=get_profile(json.loads(datalist.read_text())["profile"]))
    size = (int(network_size),) * 3
    errors: dict[str, list[float]] = {"region": [], "whole_volume": []}
    for entry in entries:
        case = load(entry)
        dose, mask = case["dose"].as_tensor(), case["possible_dose_mask"].as_tensor()
        boxes = {"region": region_box(mask, size, margin_voxels),
                 "whole_volume": torch.tensor([[0, 0, 0], list(dose.shape[1:])])}
        for name, box in boxes.items():
            restored = restore_region(resample_region(dose, box, size, "masked_mean", mask), box, dose.shape[1:])
            errors[name].append(float((restored - dose).abs()[mask > 0].mean()))
    result = {name: sum(v) / len(v) for name, v in errors.items()}
    print(f"{split} ({len(entries)} cases), {network_size}^3: dose score of the pooled and restored planned dose "
          + ", ".join(f"{k} {v:.3f} Gy" for k, v in result.items()))
    return result
