"""Dose metrics: doses and masks in, numbers out. They know nothing of networks."""

from custom_nets.metrics.openkbp import d_0_1_cc, dose_error, dose_score, dvh_score, openkbp_dvh_metrics

__all__ = ["d_0_1_cc", "dose_error", "dose_score", "dvh_score", "openkbp_dvh_metrics"]
