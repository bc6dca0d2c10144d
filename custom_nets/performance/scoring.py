"""How fast OpenKBP submissions are scored: ours against the official scorer, on the same patients in one run.

The official scorer (``DoseEvaluator`` of ababier/open-kbp, which needs pandas, tqdm and more-itertools) is not a
dependency: pass the folder of a clone of that repository to time it beside ours.
"""

from __future__ import annotations

import importlib
import sys
import time
import types
from pathlib import Path

from custom_nets.performance.hardware import cpu_threads
from custom_nets.reports.openkbp_scoring import reference_patients, score_submission

__all__ = ["benchmark_scoring", "official_scores"]


def official_scores(open_kbp_dir: str | Path, submission_dir: str | Path, reference_dir: str | Path
                    ) -> tuple[float, float]:
    """Dose and DVH scores from the official scorer in ``open_kbp_dir``, called as its ``main.py`` does."""
    package = Path(open_kbp_dir) / "provided_code"
    if not (package / "dose_evaluation_class.py").is_file():
        raise FileNotFoundError(f"{open_kbp_dir} is not a clone of ababier/open-kbp (no "
                                "provided_code/dose_evaluation_class.py)")
    if "provided_code" not in sys.modules:  # its __init__ imports the TensorFlow model: load the modules alone
        stub = types.ModuleType("provided_code")
        stub.__path__ = [str(package)]
        sys.modules["provided_code"] = stub
    loader = importlib.import_module("provided_code.data_loader").DataLoader
    evaluator_class = importlib.import_module("provided_code.dose_evaluation_class").DoseEvaluator
    evaluator = evaluator_class(loader(reference_patients(reference_dir)),
                                loader(sorted(Path(submission_dir).glob("*.csv"))))
    evaluator.evaluate()
    dose, dvh = evaluator.get_scores()
    return float(dose), float(dvh)


def benchmark_scoring(submission_dir: str | Path, reference_dir: str | Path,
                      official_open_kbp: str | Path | None = None) -> dict:
    """Seconds per patient to score ``submission_dir`` against ``reference_dir``: ours in one process and in one
    process per CPU thread, and the official scorer when ``official_open_kbp`` is given, with the scores of each."""
    patients = len(reference_patients(reference_dir))
    row: dict = {"patients": patients}
    runs = [("ours_1_process", lambda: _ours(submission_dir, reference_dir, 1)),
            (f"ours_{cpu_threads()}_processes", lambda: _ours(submission_dir, reference_dir, cpu_threads()))]
    if official_open_kbp:
        runs.insert(0, ("official", lambda: official_scores(official_open_kbp, submission_dir, reference_dir)))
    for name, run in runs:
        start = time.perf_counter()
        row[f"{name}_scores"] = run()
        row[f"{name}_s_per_patient"] = (time.perf_counter() - start) / patients
    return row


def _ours(submission_dir: str | Path, reference_dir: str | Path, workers: int) -> tuple[float, float]:
    result = score_submission(submission_dir, reference_dir, workers=workers, progress=False)
    return result["dose_score"], result["dvh_score"]
