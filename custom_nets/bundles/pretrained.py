"""Where a bundle's shipped OpenKBP weights are recorded, and with what they were trained."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["PRETRAINED_CONFIG", "PRETRAINED_RECORDS", "PRETRAINED_VAL_INTERVAL", "pretrained_records"]

PRETRAINED_CONFIG = "openkbp_cpu.json"
"""The override config of the shipped OpenKBP weights."""
PRETRAINED_RECORDS = "pretrained.json"
"""The file of the bundle sources that records them (written by ``dosepred pretrained ship``: version, sha256,
training run, validation scores)."""
PRETRAINED_VAL_INTERVAL = 5
"""Validate the shipped models' training runs every this many epochs (of ``iterations_per_epoch``)."""


def pretrained_records(source_dir: str | Path) -> dict[str, dict]:
    """Bundle name -> the record of its shipped weights (``<source>/pretrained.json``; none yet: {})."""
    path = Path(source_dir) / PRETRAINED_RECORDS
    return json.loads(path.read_text()) if path.is_file() else {}
