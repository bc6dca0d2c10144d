"""Measuring and using the hardware: device, threads, throughput, memory; fast inference; training timers."""

from custom_nets.performance.inference import INFERENCE_MODES, OptimiseForInference, prepare_network
from custom_nets.performance.training import IterationTimer

__all__ = ["INFERENCE_MODES", "OptimiseForInference", "prepare_network", "IterationTimer"]
