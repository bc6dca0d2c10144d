"""Thin command lines (python-fire) over ``custom_nets``; run ``dosepred --help``."""
