"""What the machine can do: the device, thread count, measured fp32 matrix-product throughput, peak memory."""

from __future__ import annotations

import os
import statistics
import time
import warnings
from pathlib import Path

import torch

__all__ = ["select_device", "cpu_threads", "synchronize", "matmul_gflops", "reset_peak_memory", "peak_memory_mb",
           "cpu_has_native_bf16", "EMULATED_BF16", "EmulatedBf16Warning", "warn_if_bf16_is_emulated"]

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def select_device(device: str | None = None) -> torch.device:
    """``device`` if given, else CUDA when present, else CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def cpu_threads() -> int:
    """Cores this process may run on (its affinity mask, which containers and ``taskset`` narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_has_native_bf16() -> bool:
    """The CPU computes bf16 products natively (AVX512-BF16 or AMX): there bf16 convolutions run about twice as fast
    as fp32; elsewhere bf16 is emulated and slower than fp32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


#: Why bf16 is not used on a CPU without native bf16, as the warning and the benchmark say it.
EMULATED_BF16 = "this CPU has no native bf16 (AVX512-BF16 or AMX) and emulates it, 50-200x slower than fp32"


class EmulatedBf16Warning(UserWarning):
    """bf16 asked for on a CPU that emulates it."""


def warn_if_bf16_is_emulated(option: str) -> None:
    """Warn that ``option`` (e.g. ``inference_mode bf16``) asks for bf16 on a CPU without native bf16: emulated,
    a cascade's convolutions ran 50-200x slower than fp32 (torch 2.13, AVX2 EPYC: 36 s against 0.17-0.68 s for a
    32^3 pass of the CPU widths; one 128^3 pass of the paper widths had not ended after 15 min). Results are right,
    only slow: a warning, not an error."""
    if not cpu_has_native_bf16():
        warnings.warn(f"{option}: {EMULATED_BF16}; leave the option at its default (auto), which runs fp32 here",
                      EmulatedBf16Warning, stacklevel=3)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(device: torch.device, size: int = 2048, repeats: int = 10, dtype: torch.dtype = torch.float32
                  ) -> float:
    """Measured matrix-product throughput (GFLOP/s, 2 n^3 FLOPs per product; median of ``repeats`` after a
    warm-up): the practical peak a convolution network can be compared with."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    torch.mm(a, b)
    synchronize(device)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return 2 * size ** 3 / statistics.median(seconds) / 1e9


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory measurement (CUDA allocator peak; on Linux CPUs the process's peak RSS)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    elif _CLEAR_REFS.exists():
        try:
            _CLEAR_REFS.write_text("5")  # resets VmHWM, the peak resident set size (Linux >= 4.0)
        except OSError:
            pass


def peak_memory_mb(device: torch.device) -> float | None:
    """Peak memory since :func:`reset_peak_memory`: CUDA allocated bytes, or the process's peak RSS on Linux."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    if _STATUS.exists():
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None
