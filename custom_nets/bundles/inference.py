"""A bundle's inference config run in this process on in-memory cases, one after another.

``python -m monai.bundle run`` builds the network, loads and prepares its weights and runs the evaluator once per
process. :class:`BundleInference` does the same through MONAI's ``ConfigWorkflow`` and then runs the same
evaluator again for each further case, as MONAI's bundle workflows allow (their run expressions are re-evaluated,
the evaluator kept): a cohort pays the bundle's start (config, network, weights, oneDNN's kernels) once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from ignite.engine import Events
from monai.bundle import ConfigWorkflow
from monai.handlers import CheckpointLoader

from custom_nets.io.canonical import DoseCase

__all__ = ["BundleInference"]


class BundleInference:
    """The inference config of ``bundle`` (with ``config_files`` and ``overrides``), initialised once.

    Calling it with a case runs the bundle's preprocessing, network, inferer and postprocessing on that case
    (``LoadDoseCased`` takes a :class:`DoseCase` in memory); the bundle writes its output for the case (the predicted
    dose NIfTI and ``prediction.json``) into ``<output_dir>/<case_id>``. Use it as a context manager, or call
    :meth:`close`.
    """

    def __init__(self, bundle: str | Path, config_files: Sequence[str], overrides: Mapping,
                 output_dir: str | Path) -> None:
        bundle = Path(bundle).resolve()
        self.output_dir = Path(output_dir)
        self.workflow = ConfigWorkflow(config_file=[str(bundle / c) for c in config_files], workflow_type="infer",
                                       meta_file=str(bundle / "configs" / "metadata.json"),
                                       logging_file=str(bundle / "configs" / "logging.conf"),
                                       **{"bundle_root": str(bundle), **overrides, "data": [],
                                          "output_dir": str(self.output_dir)})
        _unwrapped(self.workflow.initialize)
        self.cases_run = 0

    def __call__(self, case: DoseCase) -> Path:
        """Predict ``case``; returns the bundle's output folder for it."""
        self.workflow.dataset.data = [{"case": case}]
        _unwrapped(self.workflow.run)
        if self.cases_run == 0:
            # The weights are in: loading them again for the next case would cost a full read of the checkpoint,
            # and fail on a network whose inference mode wrapped a submodule (a mask variant's bf16 prior).
            for handler in self.workflow.handlers:
                if isinstance(handler, CheckpointLoader):
                    self.workflow.evaluator.remove_event_handler(handler, Events.STARTED)
        self.cases_run += 1
        return self.output_dir / case.case_id

    def close(self) -> None:
        self.workflow.finalize()

    def __enter__(self) -> BundleInference:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def _unwrapped(step: Callable[[], object]) -> None:
    """Run a workflow step; MONAI wraps a config expression's error: hand over the clear message inside."""
    try:
        step()
    except RuntimeError as err:
        if isinstance(err.__cause__, (ValueError, FileNotFoundError)):
            raise err.__cause__ from None
        raise
