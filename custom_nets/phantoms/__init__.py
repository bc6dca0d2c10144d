"""Synthetic patients for both profiles: anatomy, a photon-beam dose model and SIB weighting."""

from custom_nets.phantoms.generator import beam_angles, generate_phantom_dataset, make_phantom

__all__ = ["beam_angles", "generate_phantom_dataset", "make_phantom"]
