"""Where a training iteration's time goes: waiting for the data loader versus the step itself."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch
from ignite.engine import Engine, Events

from custom_nets.distributed import is_main_process
from custom_nets.io.atomic import write_text_atomic
from custom_nets.performance.hardware import peak_memory_mb

__all__ = ["IterationTimer", "attach_training_summary"]


class IterationTimer:
    """Ignite handler recording, per iteration, the seconds spent waiting for a batch and the whole iteration.

    Attach it to a trainer (``timer.attach(trainer)``, or list it among a bundle's train handlers); read
    :meth:`summary` afterwards. The first ``skip`` iterations (warm-up, cache filling) are left out.
    """

    def __init__(self, skip: int = 1) -> None:
        self.skip = skip
        self.data_s: list[float] = []
        self.iteration_s: list[float] = []
        self._batch_start = self._iteration_start = 0.0
        self._data = 0.0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.GET_BATCH_STARTED, self._batch_started)
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, self._batch_completed)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)

    def _batch_started(self, engine: Engine) -> None:
        self._batch_start = time.perf_counter()
        self._iteration_start = self._batch_start

    def _batch_completed(self, engine: Engine) -> None:
        self._data = time.perf_counter() - self._batch_start

    def _iteration_completed(self, engine: Engine) -> None:
        if engine.state.iteration > self.skip:
            self.data_s.append(self._data)
            self.iteration_s.append(time.perf_counter() - self._iteration_start)

    def summary(self) -> dict:
        """Mean and median seconds per iteration (the median ignores the odd stall: another process, a paused
        job), mean data wait and its share, over the recorded iterations."""
        n = len(self.iteration_s)
        if not n:
            return {"iterations": 0, "s_per_iteration": None, "median_s_per_iteration": None, "data_wait_s": None,
                    "data_wait_share": None}
        total, data = sum(self.iteration_s), sum(self.data_s)
        return {"iterations": n, "s_per_iteration": total / n, "median_s_per_iteration": statistics.median(
            self.iteration_s), "data_wait_s": data / n, "data_wait_share": data / total}


def attach_training_summary(trainer: Engine, path: str | Path, network: torch.nn.Module | None = None,
                            skip: int = 1) -> IterationTimer:
    """Time ``trainer``'s iterations and, when it completes, write ``path`` (JSON): iterations run, mean and median
    seconds per iteration and data-wait share (after ``skip`` warm-up iterations), wall seconds of the run, the
    process's peak memory (MB; peak RSS on Linux CPUs, allocator peak on CUDA) and whether bf16 autocast was on.
    In distributed training the main process writes it (of its own iterations)."""
    timer = IterationTimer(skip=skip)
    timer.attach(trainer)
    started = time.perf_counter()

    def _write(engine: Engine) -> None:
        device = next(network.parameters()).device if network is not None else torch.device("cpu")
        summary = {**timer.summary(), "iterations_run": engine.state.iteration,
                   "wall_s": time.perf_counter() - started, "peak_memory_mb": peak_memory_mb(device),
                   "device": str(device), "cpu_bf16_autocast": bool(getattr(network, "cpu_bf16_autocast", False))}
        write_text_atomic(Path(path), json.dumps(summary, indent=1) + "\n")

    if is_main_process():
        trainer.add_event_handler(Events.COMPLETED, _write)
    return timer
