"""Reports: evaluation tables, model comparisons, pictures of cases and doses (matplotlib only to draw)."""

from custom_nets.reports.comparison import write_report
from custom_nets.reports.dosimetric_evaluation import evaluate_predictions, load_evaluation
from custom_nets.reports.run_info import write_run_info

__all__ = ["evaluate_predictions", "load_evaluation", "write_report", "write_run_info"]
