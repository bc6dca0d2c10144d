"""Synthetic phantom datasets (the project's embedded default data) and their preview pictures."""

from __future__ import annotations

import time
from pathlib import Path

from tqdm import tqdm

from custom_nets.io.datalist import load_datalist
from custom_nets.options import as_bool
from custom_nets.phantoms import generate_phantom_dataset


def _shape(shape: int | str | tuple | list) -> tuple[int, int, int]:
    if isinstance(shape, int):
        values: tuple[int, ...] = (shape, shape, shape)
    else:
        values = tuple(int(s) for s in (shape.split(",") if isinstance(shape, str) else shape))
    if len(values) != 3 or min(values) < 16:
        raise ValueError(f"shape must be three sizes >= 16 (e.g. 64,64,64), got {shape!r}")
    return values  # type: ignore[return-value]


def generate(out: str = "data/phantoms", profile: str = "lung", n_training: int = 8, n_validation: int = 2,
             n_test: int = 2, shape: str | int | tuple = 64, seed: int = 0, preview: bool = True) -> str:
    """Generate a seeded phantom dataset (canonical cases + datalist.json) and, with --preview, one PNG per case.

    Example: dosepred phantoms generate --profile lung --out data/phantoms --shape 64
    """
    with_previews = as_bool(preview, "preview")
    total = n_training + n_validation + n_test
    start = time.perf_counter()
    with tqdm(total=total, desc=f"{profile} phantoms", unit="case") as bar:
        datalist = generate_phantom_dataset(out, profile, n_training, n_validation, n_test, _shape(shape), seed,
                                            progress=lambda cid: (bar.set_postfix_str(cid), bar.update()))
    print(f"{total} {profile} phantoms in {time.perf_counter() - start:.1f} s; datalist: {datalist}")
    if with_previews:
        pictures = previews(str(datalist))
        print(f"previews: {Path(pictures[0]).parent}")
    return str(datalist)


def previews(datalist: str, out: str | None = None) -> list[str]:
    """Write a CT + dose + contours PNG for every case of a datalist (default: <dataset>/previews/)."""
    from custom_nets.io.canonical import read_case
    from custom_nets.reports.case_preview import render_case_png

    out_dir = Path(out) if out else Path(datalist).parent / "previews"
    written = []
    for split in ("training", "validation", "test"):
        for entry in load_datalist(datalist, split, allow_empty=True):
            case = read_case(entry["case"])
            written.append(str(render_case_png(case, out_dir / f"{case.case_id}.png")))
    return written
