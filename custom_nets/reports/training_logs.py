"""Scalars that MONAI's TensorBoardStatsHandler wrote during training (loss per iteration, validation per epoch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["TRAIN_LOSS_TAG", "VALIDATION_TAG", "read_scalars"]

TRAIN_LOSS_TAG = "train_loss"
VALIDATION_TAG = "val_dose_score_gy"


def read_scalars(log_dir: str | Path, tag: str) -> tuple[np.ndarray, np.ndarray]:
    """Steps and values of ``tag`` from every event file in ``log_dir`` (a resumed run adds files; a later file
    wins at a repeated step). Empty arrays when there is no such log or tag."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    by_step: dict[int, float] = {}
    for path in sorted(Path(log_dir).glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime):
        accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0})
        accumulator.Reload()
        if tag in accumulator.Tags().get("scalars", []):
            by_step.update({int(e.step): float(e.value) for e in accumulator.Scalars(tag)})
    steps = np.asarray(sorted(by_step), dtype=int)
    return steps, np.asarray([by_step[s] for s in steps], dtype=float)
