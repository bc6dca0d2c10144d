"""Shared code of the dose-prediction bundles: profiles, readers/writers, phantoms, transforms, networks."""

__version__ = "0.1.0"
