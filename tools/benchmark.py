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
import tempfile
import time
from pathlib import Path

import torch

from custom_nets.bundles.config import profile_configs
from custom_nets.bundles.render import RUN_OUTPUTS
from custom_nets.io.atomic import write_text_atomic
from custom_nets.performance.benchmark import benchmark_inference, benchmark_training
from custom_nets.performance.end_to_end import time_evaluation, time_predict, time_scoring
from custom_nets.performance.hardware import (EMULATED_BF16, cpu_has_native_bf16, cpu_threads, matmul_gflops,
                                                select_device)
from custom_nets.performance.inference import INFERENCE_MODES
from custom_nets.performance.scoring import benchmark_scoring
from custom_nets.performance.summary import markdown_summary
from dosepred.bundles import BUNDLES_DIR
from dosepred.arguments import as_list, as_mapping
from dosepred.openkbp import convert

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


def _natively_run(modes: list[str], device: torch.device, what: str) -> list[str]:
    """``modes`` without bf16 on a CPU that emulates it (50-200x slower than fp32: a 128^3 pass of the paper
    widths had not ended after 15 min)."""
    if device.type != "cpu" or cpu_has_native_bf16() or "bf16" not in modes:
        return modes
    print(f"{what}: bf16 left out: {EMULATED_BF16}")
    return [m for m in modes if m != "bf16"]


def benchmark(bundles: str | list = "cascunet_basic", size: int = 128, widths: str = "paper", profile: str = "openkbp",
              modes: str | list = ",".join(INFERENCE_MODES), warmup: int = 1, repeats: int = 3,
              train: str | list = "cpu", train_iterations: int = 3, train_precisions: str | list = "fp32,bf16",
              dataset_dir: str = "data/openkbp",
              openkbp_mini: str = str(OPENKBP_MINI), evaluation_cases: int = 2, official_open_kbp: str | None = None,
              scoring_submission: str | None = None, scoring_reference: str | None = None,
              predict: str | list = "eager,frozen", op_profile: str | list = "",
              overrides=None, device: str | None = None, threads: int | None = None,
              out: str = "runs/benchmark/benchmark.json") -> str:
    """Benchmark BUNDLES (comma-separated) and write OUT (JSON) with a Markdown table beside it.

    Args:
        size: inference input edge (128 is the papers' grid); widths: "paper" or "cpu" (configs/cpu.json).
        modes: inference modes among eager, torchscript, frozen, fast, bf16 (on CUDA, amp is added: fp16 autocast).
            bf16, here and in predict, is timed on CPUs with native bf16 only (``native_bf16`` in the result).
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
        op_profile: inference modes (among MODES) whose forward pass is also profiled by kind of operator.
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
                    "size": size, "widths": widths, "profile": profile, "native_bf16": cpu_has_native_bf16()}
    result["matmul_peak_gflops"] = matmul_gflops(dev)
    print(f"fp32 matrix product: {result['matmul_peak_gflops']:.1f} GFLOP/s on {dev} ({result['threads']} threads)")
    cpu_widths = widths == "cpu"
    names = as_list(bundles)
    inference_modes = _natively_run(as_list(modes), dev, "inference") + (
        ["amp"] if dev.type == "cuda" and "amp" not in as_list(modes) else [])
    result["inference"] = [
        benchmark_inference(_bundle_dir(n), profile_configs("inference", profile, cpu_widths), size, dev,
                            result["matmul_peak_gflops"], extra, inference_modes, warmup, repeats,
                            as_list(op_profile)) for n in names]
    with tempfile.TemporaryDirectory(prefix="dosepred-benchmark-") as tmp:
        work = Path(tmp)
        data = Path(dataset_dir) / "datalist.json"
        if Path(openkbp_mini).is_dir():
            result["conversion"], mini_datalist = _time_conversion(Path(openkbp_mini), work)
            result["evaluation"] = time_evaluation(mini_datalist, evaluation_cases)
            result["scoring"] = time_scoring(Path(openkbp_mini), work, official_open_kbp)
            if not data.is_file():
                data = mini_datalist
        if scoring_submission and scoring_reference:
            result["scoring_given"] = benchmark_scoring(scoring_submission, scoring_reference, official_open_kbp)
        result["training"] = []
        precisions = [p for p in _natively_run(as_list(train_precisions), dev, "training")
                      if p == "fp32" or (p == "bf16" and dev.type == "cpu")]
        for name in names:
            mask_set = json.loads((_bundle_dir(name) / "configs" / "train.json").read_text()).get("dose_mask_set")
            # masks from the planned dose, no prior: the bundle's shipped prior has other widths than a timing run
            mask = {"mask_source": "reference", "prior_checkpoint": None} if mask_set else {}
            for train_profile in as_list(train):
                files = profile_configs("train", profile, cpu=train_profile == "cpu")
                sizes = {} if train_profile == "cpu" else {"patch_size": [128, 128, 128], "network_size": None}
                for precision in precisions:
                    copy = Path(shutil.copytree(_bundle_dir(name), work / "train" / train_profile / precision / name,
                                                ignore=shutil.ignore_patterns(*RUN_OUTPUTS)))
                    row = benchmark_training(copy, files, data.parent, train_iterations,
                                             {"cache_rate": 0.05, **sizes, **mask, **extra,
                                              "cpu_bf16": precision == "bf16"})
                    result["training"].append({"profile": train_profile, "precision": precision, **row, **mask})
        if as_list(predict):
            configs = profile_configs("inference", "openkbp", cpu_widths)
            result["predict"] = time_predict(_bundle_dir(names[0]), configs, extra, size, dev, work,
                                             _natively_run(as_list(predict), dev, "predict"))
    out_path = Path(out)
    write_text_atomic(out_path, json.dumps(result, indent=1, default=float) + "\n")
    table = markdown_summary(result)
    write_text_atomic(out_path.with_suffix(".md"), table + "\n")
    print(table)
    return str(out_path)


