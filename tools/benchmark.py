"""``dosepred benchmark``: how fast the bundles run on this machine (CPU, or CUDA where present).

Prints a Markdown table and writes JSON: the measured fp32 matrix-product peak; per bundle its parameters,
FLOPs per forward pass, seconds per forward pass in each inference mode with the share of that peak and the
peak memory, and seconds per training iteration (CPU profile and/or the paper's 128^3) with the share spent
waiting for data; OpenKBP conversion seconds per patient; evaluation seconds per case; OpenKBP scoring seconds per
patient (ours, and the official scorer beside it when a clone of ababier/open-kbp is given); and the whole
`predict` command on a synthetic DICOM patient against the network's own time.
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from custom_nets.bundles.config import bundle_parser, profile_configs
from custom_nets.io.canonical import read_case
from custom_nets.io.datalist import load_datalist
from custom_nets.io.atomic import write_text_atomic
from custom_nets.metrics.case_evaluation import evaluate_case
from custom_nets.performance.benchmark import benchmark_inference, benchmark_training
from custom_nets.performance.scoring import benchmark_scoring
from custom_nets.performance.hardware import cpu_has_native_bf16, cpu_threads, matmul_gflops, select_device
from custom_nets.performance.inference import INFERENCE_MODES, prepare_network, time_forward
from custom_nets.phantoms import make_phantom
from custom_nets.io.dicom.export import write_dicom_case
from custom_nets.predict import predict_dicom
from tools.bundles import BUNDLES_DIR
from tools.arguments import as_list, as_mapping
from tools.openkbp import convert

OPENKBP_MINI = Path(__file__).resolve().parents[2] / "shared" / "data" / "openkbp" / "mini"


def _bundle_dir(name: str) -> Path:
    return Path(name) if Path(name).is_dir() else BUNDLES_DIR / name


def _time_conversion(source: Path, work: Path) -> tuple[dict, Path]:
    sources = [source / "train-pats", source / "validation-pats"]
    missing = [s for s in sources if not s.is_dir()]
    if missing:
        raise FileNotFoundError(f"OpenKBP patients not found: {missing}")
    patients = sum(len(list(s.glob("pt_*"))) for s in sources)
    start = time.perf_counter()
    datalist = Path(convert(*map(str, sources), out=str(work / "openkbp")))
    seconds = time.perf_counter() - start
    return {"patients": patients, "s_per_patient": seconds / patients}, datalist


def _time_evaluation(datalist: Path, cases: int) -> dict:
    """Full evaluation (scores, DVH metrics, gamma, isodose Dice, DVH curves) of a plausible wrong prediction:
    the planned dose +3% and shifted by one voxel."""
    seconds = []
    for entry in load_datalist(datalist, "validation")[:cases]:
        case = read_case(entry["case"])
        predicted = np.roll(case.dose_gy * 1.03, 1, axis=0)
        start = time.perf_counter()
        evaluate_case(case, predicted, entry["prescriptions_gy"])
        seconds.append(time.perf_counter() - start)
    return {"cases": len(seconds), "s_per_case": statistics.median(seconds)}


def _time_scoring(mini: Path, work: Path, official_open_kbp: str | None) -> dict:
    """Scoring of the scorer-check submission against the six mini patients, with the largest difference of any
    score from the figures the official scorer reported for it (official_scores.json)."""
    reference = work / "scoring_reference"
    reference.mkdir()
    for patient in [*(mini / "train-pats").glob("pt_*"), *(mini / "validation-pats").glob("pt_*")]:
        (reference / patient.name).symlink_to(patient.resolve())
    row = benchmark_scoring(mini / "scorer-check" / "predictions", reference, official_open_kbp)
    recorded = json.loads((mini / "scorer-check" / "official_scores.json").read_text())
    row["max_difference_to_official_figures"] = max(
        max(abs(scores[0] - recorded["dose_score"]), abs(scores[1] - recorded["dvh_score"]))
        for key, scores in row.items() if key.endswith("_scores"))
    return row


def _time_predict(bundle: Path, config_files: list[str], overrides: dict, size: int, device: torch.device,
                  work: Path, modes: list[str]) -> list[dict]:
    """`predict` on a synthetic OpenKBP DICOM patient (CT 1.5x the model grid in-plane) against the network time
    in the same inference mode, both with random weights; one row per mode."""
    copy = Path(shutil.copytree(bundle, work / "predict_bundle" / bundle.name))
    parser = bundle_parser(copy, config_files, overrides)
    network = parser.get_parsed_content("network_def")
    (copy / "models").mkdir(exist_ok=True)
    torch.save(network.state_dict(), copy / "models" / "model.pt")
    ct_shape = (size * 3 // 2, size * 3 // 2, size)
    patient = write_dicom_case(make_phantom("openkbp", 0, ct_shape, case_id="benchmark"), work / "dicom")
    x = torch.rand(1, int(parser.get_parsed_content("in_channels")), size, size, size, device=device)
    rows = []
    for mode in modes:
        settings = {**overrides, "inference_mode": mode}
        predict_dicom(patient, copy, work / "predict_warmup", config_files, settings, grid_shape=(size,) * 3)
        start = time.perf_counter()
        report = predict_dicom(patient, copy, work / f"predict_{mode}", config_files, settings,
                               grid_shape=(size,) * 3)
        total = time.perf_counter() - start
        network_s = time_forward(prepare_network(network.to(device), mode), x, warmup=1, repeats=2)["median_s"]
        rows.append({"bundle": bundle.name, "grid": size, "ct_shape": list(ct_shape), "predict_s": total,
                     **report["timings_s"], "network_mode": mode, "network_s": network_s,
                     "ratio": total / network_s})
    return rows


def benchmark(bundles: str | list = "cascunet_basic", size: int = 128, widths: str = "paper", profile: str = "openkbp",
              modes: str | list = ",".join(INFERENCE_MODES), warmup: int = 1, repeats: int = 3,
              train: str | list = "cpu", train_iterations: int = 3, train_precisions: str | list = "fp32,bf16",
              dataset_dir: str = "data/openkbp",
              openkbp_mini: str = str(OPENKBP_MINI), evaluation_cases: int = 2, official_open_kbp: str | None = None,
              scoring_submission: str | None = None, scoring_reference: str | None = None,
              predict: str | list = "eager,frozen",
              overrides=None, device: str | None = None, threads: int | None = None,
              out: str = "runs/benchmark/benchmark.json") -> str:
    """Benchmark BUNDLES (comma-separated) and write OUT (JSON) with a Markdown table beside it.

    Args:
        size: inference input edge (128 is the papers' grid); widths: "paper" or "cpu" (configs/cpu.json).
        modes: inference modes among eager, torchscript, frozen, fast (on CUDA, amp is added: fp16 autocast).
        train: training profiles to time among "cpu" (configs/cpu.json) and "128" (the paper's 128^3 patches);
            "" for none. Mask variants train with masks from the planned dose (mask_source reference), so no
            trained prior is needed.
        train_precisions: training arithmetic to time among "fp32" and "bf16" (autocast; timed on CPUs with
            native bf16 only, where it is the training default).
        dataset_dir: canonical OpenKBP data for training (default data/openkbp; the converted mini patients
            when that is absent).
        openkbp_mini: OpenKBP patients (train-pats/, validation-pats/) to time conversion, evaluation and scoring
            on (scoring: the submission of its scorer-check/ against its six patients).
        official_open_kbp: a clone of ababier/open-kbp, to time the official scorer on the same patients.
        scoring_submission, scoring_reference: a submission folder and a folder of OpenKBP patients to time
            scoring on as well (e.g. a model's validation predictions against the unpacked validation-pats).
        predict: inference modes in which to time `predict` end to end against the network time ("" for none).
        overrides: config ids for every bundle, e.g. '{"widths_a": [2,4,8,16,32]}' (tests use tiny widths).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    dev = select_device(device)
    if dev.type == "cpu":
        torch.set_num_threads(threads or cpu_threads())
    else:
        torch.backends.cudnn.benchmark = True
    extra = as_mapping(overrides, "overrides") or {}
    result: dict = {"device": str(dev), "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "size": size, "widths": widths, "profile": profile}
    result["matmul_peak_gflops"] = matmul_gflops(dev)
    print(f"fp32 matrix product: {result['matmul_peak_gflops']:.1f} GFLOP/s on {dev} ({result['threads']} threads)")
    cpu_widths = widths == "cpu"
    names = as_list(bundles)
    inference_modes = as_list(modes) + (["amp"] if dev.type == "cuda" and "amp" not in as_list(modes) else [])
    result["inference"] = [
        benchmark_inference(_bundle_dir(n), profile_configs("inference", profile, cpu_widths), size, dev,
                            result["matmul_peak_gflops"], extra, inference_modes, warmup, repeats) for n in names]
    with tempfile.TemporaryDirectory(prefix="dosepred-benchmark-") as tmp:
        work = Path(tmp)
        data = Path(dataset_dir) / "datalist.json"
        if Path(openkbp_mini).is_dir():
            result["conversion"], mini_datalist = _time_conversion(Path(openkbp_mini), work)
            result["evaluation"] = _time_evaluation(mini_datalist, evaluation_cases)
            result["scoring"] = _time_scoring(Path(openkbp_mini), work, official_open_kbp)
            if not data.is_file():
                data = mini_datalist
        if scoring_submission and scoring_reference:
            result["scoring_given"] = benchmark_scoring(scoring_submission, scoring_reference, official_open_kbp)
        result["training"] = []
        precisions = [p for p in as_list(train_precisions) if p == "fp32" or (p == "bf16" and dev.type == "cpu"
                                                                             and cpu_has_native_bf16())]
        for name in names:
            mask_set = json.loads((_bundle_dir(name) / "configs" / "train.json").read_text()).get("dose_mask_set")
            mask = {"mask_source": "reference"} if mask_set else {}
            for train_profile in as_list(train):
                files = profile_configs("train", profile, cpu=train_profile == "cpu")
                sizes = {} if train_profile == "cpu" else {"patch_size": [128, 128, 128], "network_size": None}
                for precision in precisions:
                    copy = Path(shutil.copytree(_bundle_dir(name), work / "train" / train_profile / precision / name))
                    row = benchmark_training(copy, files, data.parent, train_iterations,
                                             {"cache_rate": 0.05, **sizes, **mask, **extra,
                                              "cpu_bf16": precision == "bf16"})
                    result["training"].append({"profile": train_profile, "precision": precision, **row, **mask})
        if as_list(predict):
            configs = profile_configs("inference", "openkbp", cpu_widths)
            result["predict"] = _time_predict(_bundle_dir(names[0]), configs, extra, size, dev, work, as_list(predict))
    out_path = Path(out)
    write_text_atomic(out_path, json.dumps(result, indent=1, default=float) + "\n")
    table = markdown_summary(result)
    write_text_atomic(out_path.with_suffix(".md"), table + "\n")
    print(table)
    return str(out_path)


def markdown_summary(result: dict) -> str:
    """The benchmark as Markdown tables (one per kind of measurement)."""
    lines = [f"Device {result['device']}, {result['threads']} threads, torch {result['torch']}; fp32 matrix product "
             f"{result['matmul_peak_gflops']:.1f} GFLOP/s. Inference at {result['size']}^3, {result['widths']} "
             f"widths, {result['profile']} inputs, random weights.", ""]
    modes = [m for m in (*INFERENCE_MODES, "amp") if f"{m}_s" in result["inference"][0]]
    lines.append("| bundle | parameters (M) | GFLOP / forward | " + " | ".join(
        f"{m} s (% of peak, peak MB)" for m in modes) + " |")
    lines.append("| --- " * (3 + len(modes)) + "|")
    for row in result["inference"]:
        cells = [f"{row[f'{m}_s']:.3f} ({100 * row[f'{m}_share_of_peak']:.0f}%, "
                 f"{row[f'{m}_peak_memory_mb'] or float('nan'):.0f})" for m in modes]
        lines.append(f"| {row['bundle']} | {row['parameters_m']:.2f} | {row['gflop_per_forward']:.1f} | "
                     + " | ".join(cells) + " |")
    if result.get("training"):
        lines += ["", "| bundle | training profile | patch, batch | arithmetic | s / iteration | data wait |",
                  "| --- " * 6 + "|"]
        for row in result["training"]:
            lines.append(f"| {row['bundle']} | {row['profile']} | {row['patch_size']}, {row['batch_size']} | "
                         f"{row.get('precision', 'fp32')} | {row['s_per_iteration']:.3f} | "
                         f"{100 * row['data_wait_share']:.1f}% |")
    if "conversion" in result:
        lines += ["", f"OpenKBP conversion: {result['conversion']['s_per_patient']:.2f} s per patient "
                      f"({result['conversion']['patients']} patients); evaluation (all metrics, gamma 3%/2 mm): "
                      f"{result['evaluation']['s_per_case']:.2f} s per case."]
    for key, what in (("scoring", "the scorer-check submission"), ("scoring_given", "the given submission")):
        if key in result:
            scoring = result[key]
            timings = ", ".join(f"{name.removesuffix('_s_per_patient').replace('_', ' ')} {value:.3f} s"
                                for name, value in scoring.items() if name.endswith("_s_per_patient"))
            scores = ", ".join(f"{name.removesuffix('_scores').replace('_', ' ')} {value[0]:.6f} / {value[1]:.6f}"
                               for name, value in scoring.items() if name.endswith("_scores"))
            lines += ["", f"OpenKBP scoring of {what}, seconds per patient ({scoring['patients']} patients): "
                          f"{timings}; dose / DVH scores: {scores}" + (
                              f"; largest difference from the official figures: "
                              f"{scoring['max_difference_to_official_figures']:.1e} Gy." if key == "scoring" else ".")]
    for p in result.get("predict", []):
        lines += ["", f"predict ({p['bundle']}, {p['network_mode']}, CT {p['ct_shape']} -> {p['grid']}^3): "
                      f"{p['predict_s']:.2f} s (import {p['import_s']:.2f}, inference {p['inference_s']:.2f}, "
                      f"export {p['export_s']:.2f}) vs network {p['network_s']:.2f} s: {p['ratio']:.2f}x"]
    return "\n".join(lines)
