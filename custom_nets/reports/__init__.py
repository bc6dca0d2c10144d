"""Reports: pictures and records of cases, doses and runs (matplotlib is imported only to draw)."""

from custom_nets.reports.run_info import write_run_info

__all__ = ["write_run_info"]
