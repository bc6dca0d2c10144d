"""OpenKBP: convert the official CSV layout to canonical cases, export predictions as submission CSVs, score
submissions with the official definitions."""

from __future__ import annotations

import json
import tempfile
from collections import Counter
import time
from pathlib import Path

from tqdm import tqdm

from custom_nets.io.atomic import remove_stale_temporaries, replace_directory, write_text_atomic
from custom_nets.io.canonical import read_case
from custom_nets.io.datalist import SPLITS, write_datalist
from custom_nets.io.openkbp import convert_openkbp, to_openkbp_grid, write_submission_csv
from custom_nets.reports.dosimetric_evaluation import read_predicted_dose
from custom_nets.reports.openkbp_scoring import score_submission


def _split_of(source: Path) -> str:
    name = source.name.lower()
    for word, split in (("valid", "validation"), ("test", "test"), ("train", "training")):
        if word in name:
            return split
    raise ValueError(f"cannot tell the split of {source} from its name; pass split=training|validation|test")


def convert(*sources: str, out: str = "data/openkbp", split: str | None = None) -> str:
    """Convert OpenKBP folders or .tar.xz archives into canonical cases under OUT and write OUT/datalist.json.

    Each source's split comes from its name (train-pats -> training, validation-pats -> validation) unless
    --split is given. Example:
        dosepred openkbp convert ../shared/data/openkbp/train-pats.tar.xz \
            ../shared/data/openkbp/validation-pats.tar.xz --out data/openkbp
    """
    if not sources:
        raise ValueError("name at least one OpenKBP folder or archive")
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} is a file; give a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_temporaries(out_dir) + remove_stale_temporaries(out_dir / "cases"):
        print(f"removed {stale}, left by an interrupted run")
    splits: dict[str, list[Path]] = {}
    start = time.perf_counter()
    # every patient of every source converts into a staging folder first: a bad patient or a damaged
    # archive leaves OUT as it was
    with tempfile.TemporaryDirectory(prefix=".convert.", suffix=".tmp", dir=out_dir) as staging:
        for source in map(Path, sources):
            source_split = split or _split_of(source)
            with tqdm(desc=f"{source.name} -> {source_split}", unit="patient") as bar:
                cases = convert_openkbp(source, Path(staging) / "cases",
                                        progress=lambda cid: (bar.set_postfix_str(cid), bar.update()))
            splits.setdefault(source_split, []).extend(out_dir / "cases" / case.name for case in cases)
        counts = Counter(case.name for cases in splits.values() for case in cases)
        duplicates = sorted(name for name, n in counts.items() if n > 1)
        if duplicates:
            raise ValueError(f"patients {duplicates} appear in more than one source")
        (out_dir / "cases").mkdir(exist_ok=True)
        for case in sorted((Path(staging) / "cases").iterdir()):
            replace_directory(case, out_dir / "cases" / case.name)
    datalist = write_datalist(out_dir / "datalist.json", "openkbp", splits)
    per_split = ", ".join(f"{k}: {len(v)}" for k, v in splits.items())
    print(f"converted {sum(map(len, splits.values()))} patients ({per_split}) in {time.perf_counter() - start:.1f} s")
    print(f"datalist: {datalist}")
    return str(datalist)


def export(prediction: str, case: str, out: str) -> str:
    """Write a predicted dose NIfTI (Gy, any orientation, on the case's grid) as an OpenKBP submission CSV.

    CASE is the canonical case folder (its possible-dose mask decides which voxels are written).
    """
    case_data = read_case(case, "openkbp", with_dose=False)
    dose = read_predicted_dose(Path(prediction), case_data.affine, case_data.shape)  # refuses another grid
    dose = to_openkbp_grid(dose, case_data.affine)
    mask = to_openkbp_grid(case_data.possible_dose_mask, case_data.affine)
    path = write_submission_csv(dose, mask, out)
    print(f"wrote {path}")
    return str(path)


def score(submission: str, reference: str, out: str | None = None, workers: int | None = None) -> str:
    """Score the submission CSVs in SUBMISSION (pt_N.csv) against the OpenKBP patients in REFERENCE (pt_N/ folders
    with dose.csv), as the official scorer does; print the dose and DVH scores with each patient's dose error
    (JSON), and write every figure (all DVH metrics) to OUT when given.
    """
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"--workers must be a positive number of processes, got {workers!r}")
    result = score_submission(submission, reference, workers=workers)
    if out:
        write_text_atomic(Path(out), json.dumps(result, indent=1) + "\n")
    summary = {"dose_score": result["dose_score"], "dvh_score": result["dvh_score"],
               "dose_error_per_patient": {name: p["dose_error"] for name, p in result["patients"].items()},
               "ignored_predictions": result["ignored_predictions"], **({"figures": out} if out else {})}
    return json.dumps(summary, indent=1)  # fire prints it
