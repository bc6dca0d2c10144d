"""A JSON record of what an evaluation ran on and what it measured."""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping
from pathlib import Path

import torch

from custom_nets.io.atomic import write_text_atomic

__all__ = ["write_run_info"]


def write_run_info(output_dir: str | Path, bundle: str | Path, metrics: Mapping[str, object] | None = None,
                   **info: object) -> Path:
    """Write ``<output_dir>/run_info.json``: the bundle's absolute path (reports find its training log there),
    ``info``, the run's ``metrics`` (an engine's, as floats), and the software and machine it ran on."""
    if metrics is not None:
        info["metrics"] = {name: float(value) for name, value in metrics.items()}
    record = {"bundle": str(Path(bundle).resolve()), **info, "torch": torch.__version__,
              "cuda": torch.cuda.is_available(), "machine": platform.machine()}
    path = write_text_atomic(Path(output_dir) / "run_info.json", json.dumps(record, indent=1, default=str) + "\n")
    print(f"evaluation: {path}")
    return path
