"""Compare evaluated runs: the cascade paper's tables (metric rows, model columns) and figures, as files.

``write_report(run_dirs, out_dir)`` reads evaluation folders (:mod:`custom_nets.reports.dosimetric_evaluation`)
of the same cases and writes::

    report.md                         every table below in Markdown, with the figures
    summary.csv                       per model: dose score, DVH score, voxel MAE, gamma pass rate, Dice
    targets.csv / oars.csv            Tables 4-7: per (structure, metric) the planned mean +- sd, and per
                                      model the predicted mean +- sd, MAE mean +- sd and the paired test
                                      (predicted vs planned) with its p-value
    model_comparison.csv              with two or more models: each model's absolute errors against the
                                      first model's (paired test, p-value)
    structure_mae.csv                 voxel-wise MAE per structure and model (mean +- sd)
    isodose_dice.png                  Fig. 6        structure_mae.png    Fig. 7
    training_curves.png               Fig. 8 (from each bundle's TensorBoard log, when there is one)
    cases/<case>_dvh.png, cases/<case>_dose.png   DVH overlays; dose and difference views
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from custom_nets.io.atomic import write_text_atomic
from custom_nets.io.canonical import PREDICTED_DOSE_FILE, read_case
from custom_nets.io.datalist import load_datalist
from custom_nets.metrics.case_evaluation import POSSIBLE_DOSE_REGION
from custom_nets.metrics.statistics import mean_sd, paired_test
from custom_nets.profiles import get_profile
from custom_nets.reports.dosimetric_evaluation import RunEvaluation, read_predicted_dose, load_evaluation
from custom_nets.reports.tables import format_number, markdown_table, write_csv
from custom_nets.reports.training_logs import TRAIN_LOSS_TAG, VALIDATION_TAG, read_scalars

__all__ = ["run_name", "dosimetric_table", "model_comparison_table", "structure_mae_table", "summary_table",
           "write_report"]


def run_name(run: RunEvaluation) -> str:
    """A display name: the bundle's folder name, with the mask source for a mask variant; else the folder."""
    bundle = run.info.get("bundle")
    if not bundle:
        return run.path.name
    name = Path(str(bundle)).resolve().name
    source = run.info.get("mask_source", "none")
    return f"{name} ({source} masks)" if source not in (None, "none") else name


def _pm(mean: float, sd: float, decimals: int = 2) -> str:
    """``mean ± sd`` with fixed decimals, as the paper's tables (empty for no value)."""
    return "" if np.isnan(mean) else f"{mean:.{decimals}f} ± {sd:.{decimals}f}"


def _by_key(run: RunEvaluation, role: str) -> dict[tuple[str, str], dict[str, tuple[float, float]]]:
    """(structure, metric) -> case_id -> (planned, predicted), in the order of the evaluation's rows."""
    out: dict[tuple[str, str], dict[str, tuple[float, float]]] = {}
    for row in run.dvh_rows:
        if row["role"] == role:
            out.setdefault((row["structure"], row["metric"]), {})[row["case_id"]] = (row["reference"], row["predicted"])
    return out


def dosimetric_table(runs: dict[str, RunEvaluation], role: str, alpha: float = 0.05) -> list[dict]:
    """Rows of Table 4/6 (``role="target"``) or 5/7 (``role="oar"``); see the module docstring."""
    tables = {name: _by_key(run, role) for name, run in runs.items()}
    first = next(iter(tables.values()))
    cases = next(iter(runs.values())).case_ids
    units = {(r["structure"], r["metric"]): r["unit"] for r in next(iter(runs.values())).dvh_rows}
    rows = []
    for key, planned_by_case in first.items():
        planned = np.asarray([planned_by_case.get(c, (np.nan, np.nan))[0] for c in cases])
        if np.all(np.isnan(planned)):
            continue  # a structure no case has
        mean, sd, n = mean_sd(planned)
        row = {"structure": key[0], "metric": key[1], "unit": units[key], "planned_mean": mean, "planned_sd": sd,
               "n": n}
        for name, table in tables.items():
            predicted = np.asarray([table[key].get(c, (np.nan, np.nan))[1] for c in cases])
            test = paired_test(predicted, planned, alpha)
            predicted_mean, predicted_sd, _ = mean_sd(predicted)
            mae_mean, mae_sd, _ = mean_sd(np.abs(predicted - planned))
            row.update({f"{name}|predicted_mean": predicted_mean, f"{name}|predicted_sd": predicted_sd,
                        f"{name}|mae_mean": mae_mean, f"{name}|mae_sd": mae_sd,
                        f"{name}|p": test.p_value, f"{name}|test": test.test, f"{name}|n": test.n})
        rows.append(row)
    return rows


def model_comparison_table(runs: dict[str, RunEvaluation], alpha: float = 0.05) -> list[dict]:
    """Each model after the first against the first: paired test of the per-case absolute errors of every
    target and OAR metric; ``mae_difference`` is the mean of (model error - first model error)."""
    names = list(runs)
    base = names[0]
    cases = runs[base].case_ids
    rows = []
    for role in ("target", "oar"):
        tables = {name: _by_key(run, role) for name, run in runs.items()}
        for key, base_by_case in tables[base].items():
            base_error = np.asarray([abs(np.subtract(*base_by_case.get(c, (np.nan, np.nan)))) for c in cases])
            if np.all(np.isnan(base_error)):
                continue
            row = {"role": role, "structure": key[0], "metric": key[1]}
            for name in names[1:]:
                error = np.asarray([abs(np.subtract(*tables[name][key].get(c, (np.nan, np.nan)))) for c in cases])
                test = paired_test(error, base_error, alpha)
                row.update({f"{name}|mae_difference": mean_sd(error - base_error)[0], f"{name}|p": test.p_value,
                            f"{name}|test": test.test, f"{name}|n": test.n})
            rows.append(row)
    return rows


def structure_mae_table(runs: dict[str, RunEvaluation]) -> list[dict]:
    """Voxel-wise MAE (Gy) per structure: mean, sd and number of cases per model."""
    first = next(iter(runs.values()))
    rows = []
    for structure in first.structure_mae:
        row = {"structure": structure}
        for name, run in runs.items():
            mean, sd, n = mean_sd(np.asarray([run.structure_mae.get(structure, {}).get(c, np.nan)
                                              for c in run.case_ids]))
            row.update({f"{name}|mae_mean": mean, f"{name}|mae_sd": sd, f"{name}|n": n})
        if any(row[f"{name}|n"] for name in runs):
            rows.append(row)
    return rows


def summary_table(runs: dict[str, RunEvaluation]) -> list[dict]:
    """One row per model: what it is, and its whole-case scores (mean and sd over the cases)."""
    rows = []
    for name, run in runs.items():
        cases = run.case_ids
        dose_error = np.asarray([run.summary[c]["dose_error_gy"] for c in cases])
        gamma = np.asarray([run.summary[c]["gamma_pass_rate_percent"] for c in cases])
        possible = run.structure_mae.get(POSSIBLE_DOSE_REGION, {})
        dice = np.asarray([np.nanmean(run.isodose_dice[c]) for c in cases])
        metrics = run.info.get("metrics", {})
        (dose_mean, dose_sd, _), (gamma_mean, gamma_sd, _), (dice_mean, dice_sd, _) = (
            mean_sd(dose_error), mean_sd(gamma), mean_sd(dice))
        rows.append({
            "model": name, "split": run.info.get("split", ""), "cases": len(cases),
            "dose_masks": run.info.get("dose_masks", ""), "mask_source": run.info.get("mask_source", ""),
            "checkpoint": run.info.get("checkpoint", ""),
            "dose_score_gy": dose_mean, "dose_error_sd_gy": dose_sd,
            "dvh_score_gy": float(metrics.get("dvh_score_gy", np.nan)),
            "possible_dose_mae_gy": mean_sd(np.asarray([possible.get(c, np.nan) for c in cases]))[0],
            "gamma_pass_rate_percent": gamma_mean, "gamma_pass_rate_sd": gamma_sd,
            "mean_isodose_dice": dice_mean, "mean_isodose_dice_sd": dice_sd,
        })
    return rows


def _markdown_dosimetric(rows: list[dict], names: Sequence[str]) -> str:
    columns = ["structure", "metric", "planned"]
    for name in names:
        columns += [f"{name}: predicted", f"{name}: MAE", f"{name}: p"]
    shown = []
    for row in rows:
        unit = f" ({row['unit']})" if row["unit"] else ""
        decimals = 2 if row["unit"] else 3  # CI and HI are fractions
        out = {"structure": row["structure"], "metric": row["metric"] + unit,
               "planned": _pm(row["planned_mean"], row["planned_sd"], decimals)}
        for name in names:
            out[f"{name}: predicted"] = _pm(row[f"{name}|predicted_mean"], row[f"{name}|predicted_sd"], decimals)
            out[f"{name}: MAE"] = _pm(row[f"{name}|mae_mean"], row[f"{name}|mae_sd"], decimals)
            out[f"{name}: p"] = _p_text(row[f"{name}|p"], row[f"{name}|test"], row[f"{name}|n"])
        shown.append(out)
    return markdown_table(shown, columns)


def _p_text(p: float, test: str, n: int) -> str:
    return f"n/a (n={n})" if test == "too few" else f"p={format_number(p, 3)} ({test}, n={n})"


def _check_comparable(runs: dict[str, RunEvaluation]) -> None:
    names = list(runs)
    base = runs[names[0]]
    for name in names[1:]:
        run = runs[name]
        if run.case_ids != base.case_ids:
            raise ValueError(f"{run.path} evaluated cases {run.case_ids}, but {base.path} evaluated "
                             f"{base.case_ids}: a comparison needs the same cases")
        planned = {(r["case_id"], r["structure"], r["metric"]): r["reference"] for r in base.dvh_rows}
        for r in run.dvh_rows:
            expected = planned.get((r["case_id"], r["structure"], r["metric"]), np.nan)
            if not (np.isnan(expected) and np.isnan(r["reference"])) and not np.isclose(expected, r["reference"],
                                                                                         atol=1e-4):
                raise ValueError(f"{run.path} and {base.path} compare against different planned doses "
                                 f"({r['case_id']} {r['structure']} {r['metric']})")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def write_report(run_dirs: Sequence[str | Path], out_dir: str | Path, names: Sequence[str] | None = None,
                 alpha: float = 0.05, max_case_figures: int | None = None, progress: bool = True) -> Path:
    """Compare the evaluation folders ``run_dirs`` and write the tables and figures into ``out_dir``.

    Args:
        run_dirs: evaluation folders of the same cases (bundles' ``eval/<split>...`` or ``dosepred evaluate``).
        out_dir: report folder (created).
        names: display names (default :func:`run_name`); the first model is the baseline of the comparison.
        alpha: Shapiro-Wilk level choosing the paired t-test or Wilcoxon.
        max_case_figures: draw the per-case figures for the first N cases only (default all).
        progress: show a progress bar.

    Returns:
        the path of ``report.md``.
    """
    if not run_dirs:
        raise ValueError("report: give at least one evaluation folder")
    loaded = [load_evaluation(d) for d in run_dirs]
    names = list(names) if names else [run_name(r) for r in loaded]
    if len(names) != len(loaded):
        raise ValueError(f"report: {len(names)} names for {len(loaded)} runs")
    for i, name in enumerate(names):
        if names.count(name) > 1:
            names[i] = f"{name} [{i + 1}]"
    runs = dict(zip(names, loaded))
    _check_comparable(runs)
    out = Path(out_dir)
    base = loaded[0]
    profile = get_profile(base.info["profile"])

    summary = summary_table(runs)
    targets, oars = dosimetric_table(runs, "target", alpha), dosimetric_table(runs, "oar", alpha)
    mae = structure_mae_table(runs)
    write_csv(out / "summary.csv", summary, list(summary[0]))
    for table_name, rows in (("targets", targets), ("oars", oars), ("structure_mae", mae)):
        write_csv(out / f"{table_name}.csv", rows, list(rows[0]) if rows else ["structure"])
    comparison = model_comparison_table(runs, alpha) if len(runs) > 1 else []
    if comparison:
        write_csv(out / "model_comparison.csv", comparison, list(comparison[0]))

    from custom_nets.reports import figures

    figures.plot_isodose_dice(base.isodose_levels_gy,
                              {n: np.stack([r.isodose_dice[c] for c in r.case_ids]) for n, r in runs.items()},
                              out / "isodose_dice.png", profile.reference_dose_gy)
    figures.plot_structure_mae({n: {s: [v.get(c, np.nan) for c in r.case_ids] for s, v in r.structure_mae.items()}
                                for n, r in runs.items()}, out / "structure_mae.png")
    logs = {}
    for name, run in runs.items():
        log_dir = Path(str(run.info.get("bundle", ""))) / "runs" if run.info.get("bundle") else None
        logs[name] = {tag: read_scalars(log_dir, tag) for tag in (TRAIN_LOSS_TAG, VALIDATION_TAG)} if log_dir else {}
    figures.plot_training_curves(logs, out / "training_curves.png", TRAIN_LOSS_TAG, VALIDATION_TAG)

    entries = {e["case_id"]: e for e in load_datalist(base.info["datalist"], base.info["split"])}
    case_ids = base.case_ids[:max_case_figures] if max_case_figures is not None else base.case_ids
    for case_id in tqdm(case_ids, desc="case figures", unit="case", disable=not progress):
        figures.plot_case_dvh(case_id, {n: r.dvh_curves(case_id) for n, r in runs.items()},
                              out / "cases" / f"{_safe(case_id)}_dvh.png")
        case = read_case(entries[case_id]["case"])
        predictions = {n: read_predicted_dose(Path(r.info["predictions"]) / case_id / PREDICTED_DOSE_FILE, case.affine,
                                           case.shape) for n, r in runs.items()}
        figures.plot_case_dose_views(case, predictions, out / "cases" / f"{_safe(case_id)}_dose.png")

    text = [f"# Dose prediction report: {', '.join(names)}\n",
            f"Split `{base.info['split']}` of `{base.info['datalist']}` ({len(base.case_ids)} cases, profile "
            f"{profile.name}, reference dose {profile.reference_dose_gy:g} Gy). Gamma "
            f"{base.info['gamma']['dose_percent']:g}%/{base.info['gamma']['distance_mm']:g} mm "
            f"{'local' if base.info['gamma']['local'] else 'global'}, "
            f"{base.info['gamma']['low_dose_cutoff_percent']:g}% low-dose cutoff. p-values: paired t-test where the "
            f"paired differences pass Shapiro-Wilk at alpha {alpha:g}, else Wilcoxon signed-rank.\n",
            "## Summary\n", markdown_table(summary, list(summary[0])),
            "## Targets (cascade paper Tables 4 and 6)\n", _markdown_dosimetric(targets, names),
            "## Organs at risk (Tables 5 and 7)\n", _markdown_dosimetric(oars, names)]
    if comparison:
        columns = ["role", "structure", "metric"]
        shown = []
        for row in comparison:
            out_row = {k: row[k] for k in columns}
            for name in names[1:]:
                out_row[f"{name} - {names[0]}: MAE difference"] = format_number(row[f"{name}|mae_difference"])
                out_row[f"{name} vs {names[0]}: p"] = _p_text(row[f"{name}|p"], row[f"{name}|test"], row[f"{name}|n"])
            shown.append(out_row)
        text += [f"## Models against {names[0]} (absolute errors)\n", markdown_table(shown, list(shown[0]))]
    text += ["## Voxel-wise MAE per structure (Gy)\n",
             markdown_table([{"structure": r["structure"], **{n: _pm(r[f"{n}|mae_mean"], r[f"{n}|mae_sd"])
                                                              for n in names}} for r in mae], ["structure", *names]),
             "## Figures\n", "![isodose Dice](isodose_dice.png)\n", "![voxel MAE](structure_mae.png)\n",
             "![training curves](training_curves.png)\n"]
    text += [f"- {c}: [DVH](cases/{_safe(c)}_dvh.png), [dose](cases/{_safe(c)}_dose.png)\n" for c in case_ids]
    report = write_text_atomic(out / "report.md", "\n".join(text))
    print(f"report: {report}")
    return report
