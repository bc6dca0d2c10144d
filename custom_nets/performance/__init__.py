"""Measuring and using the hardware: device, threads, throughput, memory; fast inference; training timers; a
threaded data loader that raises its errors."""

from custom_nets.performance.inference import INFERENCE_MODES, OptimiseForInference, prepare_network
from custom_nets.performance.memory import LowMemoryCacheDataset, release_free_memory
from custom_nets.performance.thread_loader import ThreadDataLoader
from custom_nets.performance.training import IterationTimer, attach_training_summary

__all__ = ["INFERENCE_MODES", "OptimiseForInference", "prepare_network", "IterationTimer", "attach_training_summary",
           "LowMemoryCacheDataset", "release_free_memory", "ThreadDataLoader"]
