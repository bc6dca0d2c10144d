"""Axial, coronal and sagittal views of a case: CT, dose colour wash and contours, as one PNG."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from custom_nets.io.atomic import atomic_file
from custom_nets.io.canonical import DoseCase
from custom_nets.io.orientation import reorient

__all__ = ["to_ras", "orthogonal_views", "view_centre", "view_extents", "pyplot", "save_figure", "render_case_png"]


def to_ras(volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Reorder a volume's axes so that they run towards patient Right, Anterior, Superior."""
    return reorient(volume, affine, ("R", "A", "S"))


VIEW_NAMES = ("axial", "coronal", "sagittal")
VIEW_XLABELS = ("R <-  -> L (mm)", "R <-  -> L (mm)", "A <-  -> P (mm)")


def orthogonal_views(volume: np.ndarray, centre: tuple[int, int, int]) -> list[np.ndarray]:
    """Axial, coronal and sagittal slices of a RAS volume through ``centre``, in radiological display:
    patient right on the image's left, anterior / superior at the top."""
    i, j, k = centre
    return [volume[::-1, ::-1, k].T, volume[::-1, j, ::-1].T, volume[i, ::-1, ::-1].T]


def view_centre(case: DoseCase) -> tuple[int, int, int]:
    """RAS voxel index of the centroid of the case's highest-prescription target."""
    top = max(case.prescriptions_gy, key=case.prescriptions_gy.get)
    return tuple(int(round(c)) for c in np.argwhere(to_ras(case.structures[top], case.affine)).mean(axis=0))


def view_extents(case: DoseCase) -> list[tuple[float, float]]:
    """Pixel size (mm, horizontal and vertical) of the three views of :func:`orthogonal_views`."""
    ornt = nib.orientations.io_orientation(case.affine)
    spacing = np.asarray(case.spacing_mm)[np.argsort(ornt[:, 0])]
    return [(spacing[0], spacing[1]), (spacing[0], spacing[2]), (spacing[1], spacing[2])]


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (matplotlib is the ``report`` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 80) -> Path:
    """Save a figure as PNG atomically and close it."""
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    pyplot().close(fig)
    return Path(path)


def render_case_png(case: DoseCase, path: str | Path, dose_gy: np.ndarray | None = None, title: str = "") -> Path:
    """Draw the case through the centre of its highest-prescription target and save a PNG.

    Args:
        case: the case (CT, structures, prescriptions; its planned dose unless ``dose_gy`` is given).
        path: PNG to write (atomically).
        dose_gy: a dose to show instead of the case's planned dose (e.g. a prediction), same grid.
        title: figure title (default: the case id and prescriptions).
    """
    plt = pyplot()
    dose = case.dose_gy if dose_gy is None else dose_gy
    ct = to_ras(case.ct_hu, case.affine)
    dose_ras = None if dose is None else to_ras(dose, case.affine)
    structures = {n: to_ras(m, case.affine) for n, m in case.structures.items()}
    centre = view_centre(case)
    reference = max(case.prescriptions_gy.values())
    extents = view_extents(case)
    colours = plt.get_cmap("tab10")

    fig, axes = plt.subplots(1, 3, figsize=(15, 5.6), constrained_layout=True)
    for view, ax in enumerate(axes):
        ct_view = orthogonal_views(ct, centre)[view]
        h, w = ct_view.shape
        extent = (0, w * extents[view][0], h * extents[view][1], 0)
        ax.imshow(ct_view, cmap="gray", vmin=-1000, vmax=600, extent=extent)
        if dose_ras is not None:
            dose_view = orthogonal_views(dose_ras, centre)[view]
            shown = np.ma.masked_less(dose_view, 0.1 * reference)
            image = ax.imshow(shown, cmap="jet", alpha=0.45, vmin=0, vmax=1.1 * reference, extent=extent)
        for n_struct, (name, mask) in enumerate(structures.items()):
            view_mask = orthogonal_views(mask.astype(float), centre)[view]
            if view_mask.any():
                xs, ys = (np.arange(w) + 0.5) * extents[view][0], (np.arange(h) + 0.5) * extents[view][1]
                ax.contour(xs, ys, view_mask, levels=[0.5], colors=[colours(n_struct % 10)], linewidths=1.0)
        ax.set_title(VIEW_NAMES[view])
        ax.set_xlabel(VIEW_XLABELS[view])
    if dose_ras is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="dose (Gy)")
    handles = [plt.Line2D([], [], color=colours(i % 10), label=n) for i, n in enumerate(structures)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), fontsize=8)
    rx = ", ".join(f"{t} {v:g} Gy" for t, v in case.prescriptions_gy.items())
    fig.suptitle(title or f"{case.case_id}: {rx}")
    return save_figure(fig, path)
