"""A JSON record of what an evaluation ran on and what it measured."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch

from custom_nets.io.atomic import write_text_atomic

__all__ = ["write_run_info"]


def write_run_info(output_dir: str | Path, bundle: str | Path, **info: object) -> Path:
    """Write ``<output_dir>/run_info.json``: the bundle's absolute path (reports find its training log there),
    ``info``, and the software and machine it ran on."""
    record = {"bundle": str(Path(bundle).resolve()), **info, "torch": torch.__version__,
              "cuda": torch.cuda.is_available(), "machine": platform.machine()}
    path = write_text_atomic(Path(output_dir) / "run_info.json", json.dumps(record, indent=1, default=str) + "\n")
    print(f"evaluation: {path}")
    return path
