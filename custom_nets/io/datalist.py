"""Datalist JSON (MONAI style): training / validation / test lists of canonical cases.

Example::

    {
      "profile": "openkbp",
      "reference_dose_gy": 70.0,
      "training": [
        {"case_id": "pt_1", "case": "cases/pt_1",
         "prescriptions_gy": {"PTV70": 70.0, "PTV63": 63.0, "PTV56": 56.0},
         "structures": ["Brainstem", ...], "missing_structures": ["Esophagus", "Larynx"]}
      ],
      "validation": [...],
      "test": [...]
    }

``case`` paths are relative to the datalist's folder, so a dataset folder can be moved as a whole.
"""

from __future__ import annotations

import json
from pathlib import Path

from custom_nets.io.atomic import write_text_atomic
from custom_nets.io.canonical import CASE_JSON
from custom_nets.profiles import get_profile

__all__ = ["SPLITS", "write_datalist", "load_datalist", "datalist_entry"]

SPLITS = ("training", "validation", "test")


def datalist_entry(case_dir: str | Path, relative_to: str | Path) -> dict:
    """The datalist entry of a written case folder (read from its ``case.json``)."""
    case_dir = Path(case_dir)
    meta = json.loads((case_dir / CASE_JSON).read_text())
    return {
        "case_id": meta["case_id"],
        "case": Path(case_dir).resolve().relative_to(Path(relative_to).resolve()).as_posix(),
        "prescriptions_gy": meta["prescriptions_gy"],
        "structures": meta["structures"],
        "missing_structures": meta["missing_structures"],
    }


def write_datalist(path: str | Path, profile: str, splits: dict[str, list[str | Path]]) -> Path:
    """Write a datalist for case folders grouped by split (keys among ``training``, ``validation``, ``test``)."""
    path = Path(path)
    prof = get_profile(profile)
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise ValueError(f"{path}: unknown split names {sorted(unknown)}; use {SPLITS}")
    doc: dict = {"profile": prof.name, "reference_dose_gy": prof.reference_dose_gy}
    for split in SPLITS:
        doc[split] = [datalist_entry(c, path.parent) for c in splits.get(split, [])]
    return write_text_atomic(path, json.dumps(doc, indent=1) + "\n")


def load_datalist(path: str | Path, split: str = "training", allow_empty: bool = False) -> list[dict]:
    """Entries of one split with ``case`` resolved to an absolute folder path.

    Raises ``ValueError`` naming the datalist when the split is unknown, empty (unless ``allow_empty``; a run
    over no case would end "successfully" without a result) or a case folder is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"datalist {path} does not exist")
    doc = json.loads(path.read_text())
    if split not in SPLITS:
        raise ValueError(f"{path}: unknown split {split!r}; use one of {SPLITS}")
    entries = []
    for entry in doc.get(split, []):
        case_dir = (path.parent / entry["case"]).resolve()
        if not (case_dir / CASE_JSON).is_file():
            raise ValueError(f"{path}: case {entry.get('case_id')} points to {case_dir}, which is not a case folder")
        entries.append({**entry, "case": str(case_dir), "profile": doc["profile"]})
    if not entries and not allow_empty:
        raise ValueError(f"{path}: split {split!r} holds no case")
    return entries
