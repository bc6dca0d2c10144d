"""Dose metrics: doses and masks in, numbers out. They know nothing of networks."""

from custom_nets.metrics.dvh import cumulative_dvh, d_0_1_cc, oar_metrics, structure_mae, target_metrics
from custom_nets.metrics.openkbp import dose_error, dose_score, dvh_score, openkbp_dvh_metrics

__all__ = ["cumulative_dvh", "d_0_1_cc", "dose_error", "dose_score", "dvh_score", "oar_metrics",
           "openkbp_dvh_metrics", "structure_mae", "target_metrics"]
