"""End-to-end timings for the benchmark: evaluation of a case, OpenKBP scoring, and the whole ``predict`` command
against the network's own time."""

from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from custom_nets.bundles.config import bundle_parser
from custom_nets.bundles.render import RUN_OUTPUTS
from custom_nets.io.canonical import read_case
from custom_nets.io.datalist import load_datalist
from custom_nets.io.dicom.export import write_dicom_case
from custom_nets.metrics.case_evaluation import evaluate_case
from custom_nets.networks.initialisation import random_weights_
from custom_nets.performance.inference import keeps_freed_memory, prepare_network, time_forward
from custom_nets.performance.memory import keep_freed_memory, reset_heap
from custom_nets.performance.scoring import benchmark_scoring
from custom_nets.phantoms import make_phantom
from custom_nets.predict import predict_dicom, predict_dicom_patients

__all__ = ["constant_dose_heads", "time_evaluation", "time_scoring", "time_predict"]


def constant_dose_heads(network: torch.nn.Module, relative_dose: float) -> torch.nn.Module:
    """Set every single-channel 1x1x1 convolution (the networks' dose heads) to output ``relative_dose`` (a
    fraction of the reference dose). Random weights predict hundreds of Gy, which makes the DVH tables and
    figures of `predict` several times longer than a trained model's; the network's arithmetic is unchanged."""
    heads = [m for m in network.modules()
             if isinstance(m, torch.nn.Conv3d) and m.out_channels == 1 and m.kernel_size == (1, 1, 1)]
    if not heads:
        raise ValueError(f"{type(network).__name__} has no single-channel 1x1x1 convolution to use as its dose head")
    with torch.no_grad():
        for head in heads:
            head.weight.zero_()
            head.bias.fill_(relative_dose)
    return network


def time_evaluation(datalist: Path, cases: int) -> dict:
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


def time_scoring(mini: Path, work: Path, official_open_kbp: str | None) -> dict:
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


def time_predict(bundle: Path, config_files: list[str], overrides: dict, size: int, device: torch.device,
                  work: Path, modes: list[str], cohort_patients: int = 3) -> list[dict]:
    """`predict` on a synthetic OpenKBP DICOM patient (CT 1.5x the model grid in-plane) against the network time
    in the same inference mode, both with random weights; one row per mode. ``network_s`` is the median forward
    pass after a warm-up; ``network_first_s`` the first pass of a freshly prepared network, which is what one
    `predict` pays (oneDNN primitive creation, first touch of the activations' memory, TorchScript's
    optimisation runs). The dose heads give half the reference dose everywhere (:func:`constant_dose_heads`), so
    the export meets a dose in the clinical range. With ``cohort_patients``, `predict` of that many patients (the same
    one under several names) in one call, its seconds per patient (``cohort_s_per_patient``) against the network
    (``cohort_ratio``): what each patient costs once the bundle is started. A run over several cases keeps its
    freed memory in bf16 (:class:`OptimiseForInference`): there the cohort is set against the network timed so
    (``network_kept_memory_s``)."""
    copy = Path(shutil.copytree(bundle, work / "predict_bundle" / bundle.name,
                                ignore=shutil.ignore_patterns(*RUN_OUTPUTS)))
    parser = bundle_parser(copy, config_files, overrides)
    network = constant_dose_heads(random_weights_(parser.get_parsed_content("network_def")), 0.5)
    (copy / "models").mkdir(exist_ok=True)
    torch.save(network.state_dict(), copy / "models" / "model.pt")
    ct_shape = (size * 3 // 2, size * 3 // 2, size)
    patient = write_dicom_case(make_phantom("openkbp", 0, ct_shape, case_id="benchmark"), work / "dicom")
    x = torch.rand(1, int(parser.get_parsed_content("in_channels")), size, size, size, device=device)
    cohort = [patient.parent / f"patient_{i}" for i in range(1, cohort_patients + 1)]
    for folder in cohort:
        folder.symlink_to(patient.resolve(), target_is_directory=True)
    rows = []
    for mode in modes:
        reset_heap()  # bf16 keeps its freed memory for the process (keep_freed_memory): each mode starts afresh
        settings = {**overrides, "inference_mode": mode}
        predict_dicom(patient, copy, work / "predict_warmup", config_files, settings, grid_shape=(size,) * 3)
        start = time.perf_counter()
        report = predict_dicom(patient, copy, work / f"predict_{mode}", config_files, settings,
                               grid_shape=(size,) * 3)
        total = time.perf_counter() - start
        row = {"bundle": bundle.name, "grid": size, "ct_shape": list(ct_shape), "predict_s": total,
               **report["timings_s"], "network_mode": mode}
        if cohort:
            start = time.perf_counter()
            predict_dicom_patients(cohort, copy, work / f"predict_cohort_{mode}", config_files, settings,
                                   grid_shape=(size,) * 3)
            row.update({"cohort_patients": len(cohort), "cohort_s_per_patient": (time.perf_counter() - start)
                        / len(cohort)})
        reset_heap()  # the network as one case's run has it
        prepared = prepare_network(network.to(device), mode)
        forward = time_forward(prepared, x, warmup=0, repeats=3)
        row.update({"network_s": statistics.median(forward["runs_s"][1:]), "network_first_s": forward["runs_s"][0]})
        row["ratio"] = total / row["network_s"]
        if cohort:
            network_s = row["network_s"]
            if keeps_freed_memory(mode, device):  # as a run over several cases has it
                keep_freed_memory()
                network_s = row["network_kept_memory_s"] = time_forward(prepared, x, warmup=1, repeats=3)["median_s"]
            row["cohort_ratio"] = row["cohort_s_per_patient"] / network_s
        rows.append(row)
    return rows
