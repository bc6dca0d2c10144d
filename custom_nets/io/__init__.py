"""Readers and writers: formats in, the canonical case out (and back). They know formats, not models."""

from custom_nets.io.canonical import CaseError, DoseCase, read_case, validate_case, write_case
from custom_nets.io.datalist import load_datalist, write_datalist

__all__ = ["CaseError", "DoseCase", "read_case", "validate_case", "write_case", "load_datalist", "write_datalist"]
