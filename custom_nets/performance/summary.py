"""The benchmark's JSON as Markdown tables."""

from __future__ import annotations

from custom_nets.performance.inference import INFERENCE_MODES

__all__ = ["markdown_summary"]


def markdown_summary(result: dict) -> str:
    """The benchmark as Markdown tables (one per kind of measurement)."""
    lines = [f"Device {result['device']}, {result['threads']} threads, torch {result['torch']}; fp32 matrix product "
             f"{result['matmul_peak_gflops']:.1f} GFLOP/s. Inference at {result['size']}^3, {result['widths']} "
             f"widths, {result['profile']} inputs, random weights.", ""]
    modes = [m for m in (*INFERENCE_MODES, "amp") if f"{m}_s" in result["inference"][0]]
    header = ["bundle", "parameters (M)", "GFLOP / forward", *(f"{m} s (% of peak, peak MB)" for m in modes)]
    lines += [_row(header), _row(["---"] * len(header))]
    for row in result["inference"]:
        lines.append(_row([row["bundle"], f"{row['parameters_m']:.2f}", f"{row['gflop_per_forward']:.1f}", *(
            f"{row[f'{m}_s']:.3f} ({100 * row[f'{m}_share_of_peak']:.0f}%, "
            f"{row[f'{m}_peak_memory_mb'] or float('nan'):.0f})" for m in modes)]))
    profiled = [(row["bundle"], m, row[f"{m}_operators"]) for row in result["inference"] for m in modes
                if f"{m}_operators" in row]
    if profiled:
        kinds = list(profiled[0][2]["shares"])
        lines += ["", "Where a forward pass spends its time (operators' own time, PyTorch profiler; the convolutions' "
                      "rate counts their FLOPs only):", "",
                  "| bundle | mode | profiled s | " + " | ".join(kinds) + " | convolutions GFLOP/s (% of peak) |",
                  "| --- " * (4 + len(kinds)) + "|"]
        for bundle, mode, ops in profiled:
            lines.append(f"| {bundle} | {mode} | {ops['forward_s']:.2f} | "
                         + " | ".join(f"{100 * ops['shares'][k]:.0f}%" for k in kinds)
                         + f" | {ops['convolution_gflops']:.0f} ({100 * ops['convolution_share_of_peak']:.0f}%) |")
    if result.get("training"):
        lines += ["", "| bundle | training profile | patch, batch | arithmetic | s / iteration | data wait |",
                  "| --- " * 6 + "|"]
        for row in result["training"]:
            lines.append(f"| {row['bundle']} | {row['profile']} | {row['patch_size']}, {row['batch_size']} | "
                         f"{row.get('precision', 'fp32')} | {row['s_per_iteration']:.3f} | "
                         f"{100 * row['data_wait_share']:.1f}% |")
    if "conversion" in result:
        lines += ["", f"OpenKBP conversion: {result['conversion']['s_per_patient']:.2f} s per patient "
                      f"({result['conversion']['patients']} patients); evaluation (all metrics, gamma 3%/2 mm): "
                      f"{result['evaluation']['s_per_case']:.2f} s per case."]
    for key, what in (("scoring", "the scorer-check submission"), ("scoring_given", "the given submission")):
        if key in result:
            scoring = result[key]
            timings = ", ".join(f"{name.removesuffix('_s_per_patient').replace('_', ' ')} {value:.3f} s"
                                for name, value in scoring.items() if name.endswith("_s_per_patient"))
            scores = ", ".join(f"{name.removesuffix('_scores').replace('_', ' ')} {value[0]:.6f} / {value[1]:.6f}"
                               for name, value in scoring.items() if name.endswith("_scores"))
            lines += ["", f"OpenKBP scoring of {what}, seconds per patient ({scoring['patients']} patients): "
                          f"{timings}; dose / DVH scores: {scores}" + (
                              f"; largest difference from the official figures: "
                              f"{scoring['max_difference_to_official_figures']:.1e} Gy." if key == "scoring" else ".")]
    for p in result.get("predict", []):
        setup = f"bundle start {p['bundle_setup_s']:.2f}, " if "bundle_setup_s" in p else ""
        lines += ["", f"predict ({p['bundle']}, {p['network_mode']}, CT {p['ct_shape']} -> {p['grid']}^3): "
                      f"{p['predict_s']:.2f} s (import {p['import_s']:.2f}, {setup}inference {p['inference_s']:.2f}, "
                      f"export {p['export_s']:.2f}) vs network {p['network_s']:.2f} s: {p['ratio']:.2f}x"
                      + (f" (its first pass {p['network_first_s']:.2f} s: {p['predict_s'] / p['network_first_s']:.2f}x)"
                         if "network_first_s" in p else "")
                      + (f"; {p['cohort_patients']} patients in one call: {p['cohort_s_per_patient']:.2f} s per "
                         f"patient, {p['cohort_ratio']:.2f}x" if "cohort_ratio" in p else "")
                      + (f" of the network keeping its freed memory ({p['network_kept_memory_s']:.2f} s)"
                         if "network_kept_memory_s" in p else "")]
    return "\n".join(lines)


def _row(cells: list[str]) -> str:
    """A Markdown table row (a run without inference modes has no mode columns, not an empty one)."""
    return "| " + " | ".join(cells) + " |"
