"""The C library's heap, tuned for the two ways this project uses memory.

Caching without keeping what caching threw away: caching a case reads its 128^3 volumes (8 MB each), transforms
them and keeps a few 64^3 tensors. glibc's malloc serves the volumes from heaps that hold small kept tensors in
between, so the freed space stays resident: the CPU profile's OpenKBP training process held 5.8 GB after caching
2.9 GB. ``malloc_trim`` hands the free pages inside the heaps back to the system; done after each cached case,
the process holds about what it keeps.

Inference that reuses what it freed: a 128^3 forward pass allocates and frees activations of 32-208 MB each,
above glibc's largest threshold for serving blocks from its heap (32 MB), so each one is a fresh mapping whose
pages the kernel faults in and zeroes: 0.9 million page faults per bf16 pass of the paper-width basic cascade,
about a third of a warm pass's time on this machine. :func:`keep_freed_memory` has glibc serve such blocks from
its heap and keep the heap when they are freed, so later layers and later cases reuse the same pages.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

from monai.data import CacheDataset

__all__ = ["keep_freed_memory", "release_free_memory", "reset_heap", "LowMemoryCacheDataset"]


#: mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: The largest block kept for reuse: the bf16 basic cascade's largest activation at 128^3 is 208 MB.
KEPT_BLOCK_BYTES = 256 * 2**20
#: glibc's largest heap-served block when left to itself (64-bit), and the trim threshold that goes with it
_DEFAULT_MAX_BLOCK_BYTES = 32 * 2**20


@functools.lru_cache(maxsize=None)
def _glibc(function: str):
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), function) if name else None
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl)
        return None


def keep_freed_memory(max_block_bytes: int = KEPT_BLOCK_BYTES) -> bool:
    """Have glibc serve blocks of up to ``max_block_bytes`` from its heap and never shrink the heap on its own, for
    the rest of the process; ``False`` where the C library is not glibc. The process then holds the high-water
    mark of its heap and reuses it (`predict` of five patients at 128^3 in bf16, kept from the second: peak 2.5 GB
    against 2.1 GB, 22.5 s against 26.1 s). :func:`release_free_memory` still hands the heap back when asked."""
    if not 0 < max_block_bytes < 2**31:
        raise ValueError(f"max_block_bytes must be between 1 byte and 2 GiB, got {max_block_bytes}")
    mallopt = _glibc("mallopt")
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, int(max_block_bytes)) and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def reset_heap() -> bool:
    """Undo :func:`keep_freed_memory` for what follows (the benchmark's rows each start from the same heap): the
    thresholds glibc settles at by itself once a process has freed a 32 MB block, and the free heap handed back.
    ``False`` where the C library is not glibc."""
    mallopt = _glibc("mallopt")
    if mallopt is None:
        return False
    mallopt(_M_MMAP_THRESHOLD, _DEFAULT_MAX_BLOCK_BYTES)
    mallopt(_M_TRIM_THRESHOLD, 2 * _DEFAULT_MAX_BLOCK_BYTES)
    return release_free_memory()


def release_free_memory() -> bool:
    """Return the free memory of every malloc heap to the system (glibc ``malloc_trim(0)``); ``False`` where the
    C library has no such call."""
    trim = _glibc("malloc_trim")
    if trim is None:
        return False
    trim(0)
    return True


class LowMemoryCacheDataset(CacheDataset):
    """:class:`monai.data.CacheDataset` that releases the memory each case's transforms freed once the case is
    cached, so the resident memory grows by the cached tensors only. Same arguments and behaviour otherwise."""

    def _load_cache_item(self, idx: int):
        item = super()._load_cache_item(idx)
        release_free_memory()
        return item
