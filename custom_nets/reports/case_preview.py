"""Axial, coronal and sagittal views of a case: CT, dose colour wash and contours, as one PNG."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from custom_nets.io.atomic import atomic_file
from custom_nets.io.canonical import DoseCase
from custom_nets.io.orientation import reorient
from custom_nets.profiles import get_profile

__all__ = ["to_ras", "render_case_png"]


def to_ras(volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Reorder a volume's axes so that they run towards patient Right, Anterior, Superior."""
    return reorient(volume, affine, ("R", "A", "S"))


def _views(volume: np.ndarray, centre: tuple[int, int, int]) -> list[np.ndarray]:
    """Radiological display: patient right on the image's left, anterior/superior at the top."""
    i, j, k = centre
    return [volume[::-1, ::-1, k].T, volume[::-1, j, ::-1].T, volume[i, ::-1, ::-1].T]


def render_case_png(case: DoseCase, path: str | Path, dose_gy: np.ndarray | None = None, title: str = "") -> Path:
    """Draw the case through the centre of its highest-prescription target and save a PNG.

    Args:
        case: the case (CT, structures, prescriptions; its planned dose unless ``dose_gy`` is given).
        path: PNG to write (atomically).
        dose_gy: a dose to show instead of the case's planned dose (e.g. a prediction), same grid.
        title: figure title (default: the case id and prescriptions).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    profile = get_profile(case.profile)
    dose = case.dose_gy if dose_gy is None else dose_gy
    ornt = nib.orientations.io_orientation(case.affine)
    spacing = np.asarray(case.spacing_mm)[np.argsort(ornt[:, 0])]
    ct = to_ras(case.ct_hu, case.affine)
    dose_ras = None if dose is None else to_ras(dose, case.affine)
    top = next(t for t in profile.target_names if t in case.structures)
    structures = {n: to_ras(m, case.affine) for n, m in case.structures.items()}
    centre = tuple(int(round(c)) for c in np.argwhere(structures[top]).mean(axis=0))
    reference = max(case.prescriptions_gy.values())
    extents = [(spacing[0], spacing[1]), (spacing[0], spacing[2]), (spacing[1], spacing[2])]
    colours = plt.get_cmap("tab10")

    fig, axes = plt.subplots(1, 3, figsize=(15, 5.6), constrained_layout=True)
    for view, ax in enumerate(axes):
        ct_view = _views(ct, centre)[view]
        h, w = ct_view.shape
        extent = (0, w * extents[view][0], h * extents[view][1], 0)
        ax.imshow(ct_view, cmap="gray", vmin=-1000, vmax=600, extent=extent)
        if dose_ras is not None:
            dose_view = _views(dose_ras, centre)[view]
            shown = np.ma.masked_less(dose_view, 0.1 * reference)
            image = ax.imshow(shown, cmap="jet", alpha=0.45, vmin=0, vmax=1.1 * reference, extent=extent)
        for n_struct, (name, mask) in enumerate(structures.items()):
            view_mask = _views(mask.astype(float), centre)[view]
            if view_mask.any():
                xs, ys = (np.arange(w) + 0.5) * extents[view][0], (np.arange(h) + 0.5) * extents[view][1]
                ax.contour(xs, ys, view_mask, levels=[0.5], colors=[colours(n_struct % 10)], linewidths=1.0)
        ax.set_title(["axial", "coronal", "sagittal"][view])
        ax.set_xlabel(["R <-  -> L (mm)", "R <-  -> L (mm)", "A <-  -> P (mm)"][view])
    if dose_ras is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="dose (Gy)")
    handles = [plt.Line2D([], [], color=colours(i % 10), label=n) for i, n in enumerate(structures)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), fontsize=8)
    rx = ", ".join(f"{t} {v:g} Gy" for t, v in case.prescriptions_gy.items())
    fig.suptitle(title or f"{case.case_id}: {rx}")
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return Path(path)
