"""Figures of a model comparison (PNG, matplotlib): the cascade paper's Figs. 6-8 and per-case views.

Each function takes numbers already computed (by the evaluation) and one output path; models are keyed by
their display name, in the order given, and keep one colour across all figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from custom_nets.io.canonical import DoseCase
from custom_nets.reports.case_preview import (
    VIEW_NAMES,
    VIEW_XLABELS,
    orthogonal_views,
    pyplot,
    save_figure,
    to_ras,
    view_centre,
    view_extents,
)

__all__ = ["plot_isodose_dice", "plot_structure_mae", "plot_training_curves", "plot_case_dvh",
           "plot_case_dose_views"]


def _colour(index: int):
    return pyplot().get_cmap("tab10")(index % 10)


def plot_isodose_dice(levels_gy: np.ndarray, dice_by_model: Mapping[str, np.ndarray], path: str | Path,
                      reference_dose_gy: float) -> Path:
    """Fig. 6: mean isodose Dice against the isodose level, with a +-1 sd band across cases.

    ``dice_by_model[name]`` is (cases, levels).
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5), constrained_layout=True)
    for i, (name, dice) in enumerate(dice_by_model.items()):
        mean, sd = np.nanmean(dice, axis=0), np.nanstd(dice, axis=0, ddof=1 if len(dice) > 1 else 0)
        ax.plot(levels_gy, mean, color=_colour(i), label=f"{name} (n={len(dice)})")
        ax.fill_between(levels_gy, mean - sd, np.minimum(mean + sd, 1.0), color=_colour(i), alpha=0.2)
    ax.set_xlabel("isodose level (Gy)")
    ax.set_ylabel("Dice of isodose volumes")
    ax.set_xlim(0, reference_dose_gy)
    ax.set_ylim(0, 1.02)
    top = ax.secondary_xaxis("top", functions=(lambda g: 100 * g / reference_dose_gy,
                                               lambda p: p * reference_dose_gy / 100))
    top.set_xlabel(f"% of the reference dose ({reference_dose_gy:g} Gy)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    return save_figure(fig, path)


def plot_structure_mae(mae_by_model: Mapping[str, Mapping[str, Sequence[float]]], path: str | Path) -> Path:
    """Fig. 7: box plots of the voxel-wise MAE (Gy) per structure, one box per model and structure.

    ``mae_by_model[name][structure]`` holds one MAE per case (NaN for an absent structure, left out).
    """
    plt = pyplot()
    models = list(mae_by_model)
    structures = [s for s in next(iter(mae_by_model.values()))
                  if any(np.isfinite(mae_by_model[m].get(s, [np.nan])).any() for m in models)]
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(structures) * max(1, len(models) / 2)), 5),
                           constrained_layout=True)
    for i, name in enumerate(models):
        data = [np.asarray(mae_by_model[name].get(s, []), dtype=float) for s in structures]
        data = [d[np.isfinite(d)] for d in data]
        positions = np.arange(len(structures)) + (i - (len(models) - 1) / 2) * width
        boxes = ax.boxplot(data, positions=positions, widths=width * 0.9, patch_artist=True, showfliers=True,
                           flierprops={"markersize": 3})
        for box in boxes["boxes"]:
            box.set_facecolor(_colour(i))
            box.set_alpha(0.6)
        ax.plot([], [], color=_colour(i), linewidth=6, alpha=0.6, label=name)
    ax.set_xticks(np.arange(len(structures)), structures, rotation=30, ha="right")
    ax.set_ylabel("voxel-wise MAE (Gy)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def plot_training_curves(logs: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]], path: str | Path,
                         loss_tag: str, validation_tag: str) -> Path:
    """Fig. 8: training loss per iteration (raw, faint, and a running mean) and the validation score per
    epoch. ``logs[name][tag] = (steps, values)``; models without a log are named in the title."""
    plt = pyplot()
    fig, (loss_ax, val_ax) = plt.subplots(1, 2, figsize=(13, 4.8), constrained_layout=True)
    missing = []
    for i, (name, tags) in enumerate(logs.items()):
        steps, loss = tags.get(loss_tag, (np.empty(0), np.empty(0)))
        if not len(steps):
            missing.append(name)
            continue
        window = max(1, len(loss) // 50)
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
        loss_ax.plot(steps, loss, color=_colour(i), alpha=0.2, linewidth=0.6)
        label = name if window == 1 else f"{name} (running mean of {window})"
        loss_ax.plot(steps[window - 1:], smooth, color=_colour(i), label=label)
        epochs, score = tags.get(validation_tag, (np.empty(0), np.empty(0)))
        if len(epochs):
            val_ax.plot(epochs, score, "o-", color=_colour(i), label=name)
    loss_ax.set(xlabel="iteration", ylabel="training loss", yscale="log")
    val_ax.set(xlabel="epoch", ylabel="validation dose score (Gy)")
    for ax in (loss_ax, val_ax):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    if missing:
        fig.suptitle("no training log found for: " + ", ".join(missing), fontsize=9)
    return save_figure(fig, path)


def plot_case_dvh(case_id: str, curves_by_model: Mapping[str, Mapping[str, np.ndarray]], path: str | Path) -> Path:
    """DVH overlay of one case: planned (solid) and each model's prediction (dashed, dotted, ...), one colour per
    structure. ``curves_by_model[name]`` are the columns of the evaluation's ``dvh/<case>.csv``; without
    ``|reference`` columns (a new patient has no plan yet) only the predictions are drawn."""
    plt = pyplot()
    styles = ["--", ":", "-.", (0, (5, 1)), (0, (1, 3))]
    first = next(iter(curves_by_model.values()))
    structures = list(dict.fromkeys(c.split("|")[0] for c in first if "|" in c))
    fig, ax = plt.subplots(figsize=(9, 5.5))
    # fixed margins for the one axes: constrained layout drew the figure twice (0.17 s against 0.10 s a figure,
    # which `predict` waits for)
    fig.subplots_adjust(left=0.07, right=0.985, bottom=0.09, top=0.94)
    for s, structure in enumerate(structures):
        if f"{structure}|reference" in first:
            ax.plot(first["dose_gy"], first[f"{structure}|reference"], color=_colour(s), linewidth=1.6)
        for m, (name, curves) in enumerate(curves_by_model.items()):
            if f"{structure}|predicted" in curves:
                ax.plot(curves["dose_gy"], curves[f"{structure}|predicted"], color=_colour(s),
                        linestyle=styles[m % len(styles)], linewidth=1.2)
    has_planned = any(c.endswith("|reference") for c in first)
    model_handles = [plt.Line2D([], [], color="black", linewidth=1.6, label="planned")] if has_planned else []
    model_handles += [plt.Line2D([], [], color="black", linestyle=styles[m % len(styles)], label=name)
                      for m, name in enumerate(curves_by_model)]
    legend = ax.legend(handles=model_handles, loc="upper right", fontsize=8)
    ax.add_artist(legend)
    ax.legend(handles=[plt.Line2D([], [], color=_colour(s), label=name) for s, name in enumerate(structures)],
              loc="lower left", fontsize=7, ncol=2)
    ax.set(xlabel="dose (Gy)", ylabel="volume (%)", ylim=(0, 101), xlim=(0, None), title=f"{case_id}: DVH")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Slices of the smallest box holding ``mask``, widened by ``margin`` voxels (clipped to the volume)."""
    nonzero = np.argwhere(mask)
    low = np.maximum(nonzero.min(axis=0) - margin, 0)
    high = np.minimum(nonzero.max(axis=0) + margin + 1, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high))


def plot_case_dose_views(case: DoseCase, predictions_gy: Mapping[str, np.ndarray], path: str | Path,
                         difference_range_gy: float | None = None) -> Path:
    """Axial, coronal and sagittal planned dose, each model's predicted dose and its difference (predicted -
    planned) through the centre of the highest-prescription target, over the CT."""
    plt = pyplot()
    reference = max(case.prescriptions_gy.values())
    span = difference_range_gy or 0.2 * reference
    box = _bounding_box(to_ras(case.possible_dose_mask, case.affine), margin=4)
    ct = to_ras(case.ct_hu, case.affine)[box]
    centre = tuple(c - b.start for c, b in zip(view_centre(case), box))
    extents = view_extents(case)
    rows = [("planned", to_ras(case.dose_gy, case.affine)[box], False)]
    for name, dose in predictions_gy.items():
        rows.append((name, to_ras(dose, case.affine)[box], False))
    for name, dose in predictions_gy.items():
        rows.append((f"{name} - planned", to_ras(dose - case.dose_gy, case.affine)[box], True))
    fig, axes = plt.subplots(len(rows), 3, figsize=(13, 3.4 * len(rows)), constrained_layout=True, squeeze=False)
    ct_views = orthogonal_views(ct, centre)
    for r, (label, volume, is_difference) in enumerate(rows):
        views = orthogonal_views(volume, centre)
        for v in range(3):
            ax = axes[r, v]
            h, w = ct_views[v].shape
            extent = (0, w * extents[v][0], h * extents[v][1], 0)
            ax.imshow(ct_views[v], cmap="gray", vmin=-1000, vmax=600, extent=extent)
            if is_difference:
                image = ax.imshow(views[v], cmap="RdBu_r", vmin=-span, vmax=span, alpha=0.8, extent=extent)
            else:
                image = ax.imshow(np.ma.masked_less(views[v], 0.05 * reference), cmap="jet", alpha=0.5,
                                  vmin=0, vmax=1.1 * reference, extent=extent)
            ax.set_title(f"{label}: {VIEW_NAMES[v]}", fontsize=9)
            ax.set_xlabel(VIEW_XLABELS[v], fontsize=8)
            ax.tick_params(labelsize=7)
        fig.colorbar(image, ax=axes[r, :].tolist(), shrink=0.9,
                     label="dose difference (Gy)" if is_difference else "dose (Gy)")
    rx = ", ".join(f"{t} {g:g} Gy" for t, g in case.prescriptions_gy.items())
    fig.suptitle(f"{case.case_id}: {rx}")
    return save_figure(fig, path)
