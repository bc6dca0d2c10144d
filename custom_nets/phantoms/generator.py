"""Seeded synthetic patients with planned doses, and whole phantom datasets in the canonical format."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from custom_nets.io.canonical import DoseCase, write_case
from custom_nets.io.datalist import write_datalist
from custom_nets.phantoms.anatomy import FIELD_OF_VIEW_MM, Anatomy, head_and_neck, thorax
from custom_nets.phantoms.beams import BeamModel, level_doses, plan_sib_dose
from custom_nets.profiles import DatasetProfile, get_profile

__all__ = ["beam_angles", "make_phantom", "generate_phantom_dataset"]

_BUILDERS = {"lung": thorax, "openkbp": head_and_neck}


def beam_angles(profile: DatasetProfile, side: str, rng: np.random.Generator) -> list[float]:
    """Gantry angles: the profile's fixed set, else 5-9 beams, on a 200-degree arc on the tumour's side for a
    unilateral lung tumour (sparing the other lung) or around the patient for a bilateral one."""
    if profile.beam_angles_deg is not None:
        return list(profile.beam_angles_deg)
    n_beams = int(rng.integers(5, 10))
    if side == "bilateral":
        start = rng.uniform(0, 360 / n_beams)
        return [float((start + i * 360 / n_beams) % 360) for i in range(n_beams)]
    centre = 270.0 if side == "right" else 90.0  # IEC: gantry 270 enters from the patient's right
    return [float(a % 360) for a in centre + np.linspace(-100, 100, n_beams)]


def _affine(shape: tuple[int, int, int], spacing: tuple[float, ...]) -> np.ndarray:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -np.asarray(spacing) * (np.asarray(shape) - 1) / 2.0
    return affine


def make_phantom(profile: str | DatasetProfile, seed: int, shape: tuple[int, int, int] = (64, 64, 64),
                 case_id: str | None = None, model: BeamModel = BeamModel()) -> DoseCase:
    """One synthetic patient of ``profile`` (``lung`` or ``openkbp``) with its planned dose.

    The prescription scheme is drawn from the profile's schemes; the same seed gives the same patient.
    """
    prof = get_profile(profile)
    if prof.name not in _BUILDERS:
        raise ValueError(f"no phantom anatomy for profile {prof.name!r}; available: {sorted(_BUILDERS)}")
    rng = np.random.default_rng(seed)
    scheme = prof.prescription_schemes_gy[int(rng.integers(len(prof.prescription_schemes_gy)))]
    names = {rx: prof.target_for_prescription(rx) for rx in scheme}
    anatomy: Anatomy = _BUILDERS[prof.name](tuple(shape), rng, scheme, names)
    spacing = tuple(f / n for f, n in zip(FIELD_OF_VIEW_MM[prof.name], shape))

    levels = sorted(scheme, reverse=True)
    full = [anatomy.targets[names[rx]] for rx in levels]
    cropped = [mask & ~np.any(full[:i], axis=0) if i else mask for i, mask in enumerate(full)]
    angles = beam_angles(prof, anatomy.side, rng)
    doses = level_doses(anatomy.ct_hu, anatomy.body, full, angles, spacing, model=model)
    dose = plan_sib_dose(doses, cropped, levels)

    stored_targets = full if anatomy.overlapping_targets else cropped
    structures = {**anatomy.structures, **{names[rx]: m for rx, m in zip(levels, stored_targets)}}
    structures = {name: mask for name, mask in structures.items() if mask.any()}
    return DoseCase(
        case_id=case_id or f"phantom_{prof.name}_{seed}",
        profile=prof.name,
        affine=_affine(tuple(shape), spacing),
        ct_hu=anatomy.ct_hu,
        possible_dose_mask=anatomy.body,
        structures=structures,
        prescriptions_gy={names[rx]: float(rx) for rx in levels},
        dose_gy=dose,
        source=f"phantom profile={prof.name} seed={seed} shape={list(shape)} side={anatomy.side} "
               f"beams={[round(a, 1) for a in angles]}",
    )


def generate_phantom_dataset(out_dir: str | Path, profile: str = "lung", n_training: int = 8,
                             n_validation: int = 2, n_test: int = 2, shape: tuple[int, int, int] = (64, 64, 64),
                             seed: int = 0, progress: Callable[[str], None] | None = None) -> Path:
    """Write ``n_training + n_validation + n_test`` phantoms as canonical cases and a ``datalist.json``.

    Case ``i`` uses seed ``seed + i``, so datasets of different sizes share their first patients.
    Returns the datalist path.
    """
    prof = get_profile(profile)
    out_dir = Path(out_dir)
    counts = {"training": n_training, "validation": n_validation, "test": n_test}
    bad = {f"n_{split}": n for split, n in counts.items() if not isinstance(n, int) or n < 0}
    if bad or not sum(counts.values()):
        raise ValueError(f"phantom counts must be whole numbers >= 0, at least one case in all; got {counts}")
    splits: dict[str, list[Path]] = {}
    index = 0
    for split, count in counts.items():
        splits[split] = []
        for _ in range(count):
            case_id = f"phantom_{prof.name}_{index:03d}"
            case = make_phantom(prof, seed + index, tuple(shape), case_id=case_id)
            splits[split].append(write_case(case, out_dir / "cases" / case_id))
            if progress is not None:
                progress(case_id)
            index += 1
    return write_datalist(out_dir / "datalist.json", prof.name, splits)
