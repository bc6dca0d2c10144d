"""Benchmarks of a bundle: size and FLOPs, seconds per forward pass in each inference mode, training iterations.

Each function measures one thing and returns a flat dict, so a command line can print a table and write JSON.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from monai.bundle import ConfigWorkflow

from custom_nets.bundles.config import bundle_parser
from custom_nets.networks.complexity import forward_flops, parameter_counts
from custom_nets.networks.initialisation import random_weights_
from custom_nets.performance.hardware import peak_memory_mb, reset_peak_memory
from custom_nets.performance.inference import INFERENCE_MODES, prepare_network, time_forward
from custom_nets.performance.memory import reset_heap
from custom_nets.performance.operator_profile import profile_operators
from custom_nets.performance.training import IterationTimer

__all__ = ["benchmark_inference", "benchmark_training"]

logger = logging.getLogger(__name__)


def benchmark_inference(bundle: str | Path, config_files: Sequence[str], size: int, device: torch.device,
                        matmul_peak_gflops: float, overrides: Mapping | None = None,
                        modes: Sequence[str] = INFERENCE_MODES, warmup: int = 1, repeats: int = 3,
                        profile_modes: Sequence[str] = ()) -> dict:
    """Parameters, FLOPs and seconds per forward pass at ``size``^3 in each mode (:data:`INFERENCE_MODES`, and
    ``amp`` on CUDA), with the achieved share of the measured matrix-product peak and the peak memory of each mode;
    for the modes in ``profile_modes``, where the time goes by kind of operator (:func:`profile_operators`).

    The network is the bundle's ``network_def`` with random weights (speed does not depend on their values)."""
    parser = bundle_parser(bundle, config_files, overrides)
    network = random_weights_(parser.get_parsed_content("network_def")).eval()
    in_channels = int(parser.get_parsed_content("in_channels"))
    shape = (1, in_channels, size, size, size)
    flops = forward_flops(network, shape)
    counts = parameter_counts(network)
    row: dict = {"bundle": Path(bundle).name, "size": size, "parameters_m": counts["total"] / 1e6,
                 "gflop_per_forward": flops / 1e9}
    x = torch.rand(shape, device=device)
    network = network.to(device)
    for mode in modes:
        logger.info("%s: %s forward at %d^3", row["bundle"], mode, size)
        reset_heap()  # bf16 keeps its freed memory for the process (keep_freed_memory): each mode starts afresh
        if mode == "amp":  # CUDA only: the frozen network under fp16 autocast, as the configs' amp flag runs it
            frozen = prepare_network(network, "frozen").to(device)

            def prepared(inputs: torch.Tensor) -> torch.Tensor:
                with torch.autocast(device.type, dtype=torch.float16):
                    return frozen(inputs)
        else:
            prepared = prepare_network(network, mode).to(device)
        reset_peak_memory(device)
        timing = time_forward(prepared, x, warmup=warmup, repeats=repeats)
        row[f"{mode}_s"] = timing["median_s"]
        row[f"{mode}_peak_memory_mb"] = peak_memory_mb(device)
        row[f"{mode}_gflops"] = flops / timing["median_s"] / 1e9
        row[f"{mode}_share_of_peak"] = row[f"{mode}_gflops"] / matmul_peak_gflops
        if mode in profile_modes:
            row[f"{mode}_operators"] = profile_operators(prepared, x, flops, matmul_peak_gflops)
        del prepared
    return row


def benchmark_training(bundle: str | Path, config_files: Sequence[str], dataset_dir: str | Path, iterations: int,
                       overrides: Mapping | None = None, work_dir: str | Path | None = None) -> dict:
    """Seconds per training iteration (after the first) and the share spent waiting for data, running the
    bundle's own training config for ``iterations`` iterations (no validation, outputs under ``work_dir``)."""
    bundle = Path(bundle).resolve()
    timer = IterationTimer(skip=1)
    settings = {"bundle_root": str(bundle), "dataset_dir": str(Path(dataset_dir).resolve()),
                "max_iterations": iterations + 1, "iterations_per_epoch": iterations + 1,
                "val_interval": 10 ** 6, **(overrides or {})}
    if work_dir is not None:
        settings["output_dir"] = str(Path(work_dir).resolve())
    workflow = ConfigWorkflow(config_file=[str(bundle / c) for c in config_files], workflow_type="train",
                              meta_file=str(bundle / "configs" / "metadata.json"),
                              logging_file=str(bundle / "configs" / "logging.conf"), **settings)
    reset_heap()  # a training process never ran a bf16 prediction (keep_freed_memory)
    workflow.initialize()
    timer.attach(workflow.parser.get_parsed_content("train#trainer"))
    workflow.run()
    workflow.finalize()
    summary = timer.summary()
    parser = workflow.parser
    return {"bundle": bundle.name, "patch_size": parser.get_parsed_content("patch_size"),
            "batch_size": parser.get_parsed_content("batch_size"), **summary}
