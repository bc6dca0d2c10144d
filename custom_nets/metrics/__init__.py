"""Dose metrics: doses and masks in, numbers out. They know nothing of networks."""

from custom_nets.metrics.case_evaluation import CaseEvaluation, evaluate_case
from custom_nets.metrics.dvh import cumulative_dvh, d_0_1_cc, oar_metrics, structure_mae, target_metrics
from custom_nets.metrics.gamma import gamma_index, gamma_pass_rate
from custom_nets.metrics.isodose import isodose_dice, isodose_levels_gy
from custom_nets.metrics.openkbp import dose_error, dose_score, dvh_score, openkbp_dvh_metrics
from custom_nets.metrics.statistics import PairedTest, mean_sd, paired_test

__all__ = ["CaseEvaluation", "PairedTest", "cumulative_dvh", "d_0_1_cc", "dose_error", "dose_score", "dvh_score",
           "evaluate_case", "gamma_index", "gamma_pass_rate", "isodose_dice", "isodose_levels_gy", "mean_sd",
           "oar_metrics", "openkbp_dvh_metrics", "paired_test", "structure_mae", "target_metrics"]
