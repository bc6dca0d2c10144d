"""Where a training iteration's time goes: waiting for the data loader versus the step itself."""

from __future__ import annotations

import time

from ignite.engine import Engine, Events

__all__ = ["IterationTimer"]


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
        """Mean seconds per iteration, mean data wait and its share, over the recorded iterations."""
        n = len(self.iteration_s)
        if not n:
            return {"iterations": 0, "s_per_iteration": None, "data_wait_s": None, "data_wait_share": None}
        total, data = sum(self.iteration_s), sum(self.data_s)
        return {"iterations": n, "s_per_iteration": total / n, "data_wait_s": data / n, "data_wait_share": data / total}
