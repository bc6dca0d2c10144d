"""Fast CPU/GPU inference of a dose network, and a timer for one forward pass.

Modes, all fp32:

* ``eager``: the network as trained, eval mode, no autograd;
* ``torchscript``: what ``ckpt_export`` produces (same arithmetic as eager);
* ``frozen``: scripted and frozen, weights folded in as constants: the same arithmetic as eager, about 7%
  faster on CPU here; the bundles' default;
* ``fast``: additionally instance norm and activation fused, every tensor in the channels-last 3D memory
  format, where oneDNN's convolutions run about 1.4x faster here, and every convolution sent to oneDNN (PyTorch
  sends the deep stages' small ones to a slower path). Convolutions then sum in another order, so the
  dose differs from eager by fp32 rounding (2e-3 Gy at most on an OpenKBP patient, where eager itself is 7e-4 Gy
  from an fp64 evaluation): opt-in (``inference_mode: fast``).

and one in bf16:

* ``bf16``: ``fast``'s fused norms and channels-last layout, run under bf16 autocast (convolutions and matrix
  products in bf16, which CPUs with AVX512-BF16 or AMX run about twice as fast as fp32; instance-norm statistics
  in fp32), not scripted; the output is float32. A mask variant's prior stays fp32, so its thresholds do not move.
  A run over several cases keeps its freed memory for reuse (:func:`keep_freed_memory`, by
  :class:`OptimiseForInference`): at 128^3 each `predict` patient after the first 1.2-1.4x faster here, the
  process 0.45 GB larger; one case alone gained nothing from it.

``auto``, the bundles' default, is ``bf16`` on a CPU with native bf16 and ``frozen`` elsewhere (CUDA's fp16 is the
configs' ``amp``). The bundles' inference configs pick the mode (``inference_mode``); :class:`OptimiseForInference`
applies it once the checkpoint is loaded.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from custom_nets.performance.fused_norm import fuse_instance_norm_activations
from custom_nets.performance.hardware import cpu_has_native_bf16, synchronize, warn_if_bf16_is_emulated
from custom_nets.performance.memory import keep_freed_memory
from custom_nets.performance.onednn_conv import route_convolutions_to_onednn

__all__ = ["INFERENCE_MODES", "OptimiseForInference", "keeps_freed_memory", "make_bf16", "make_fast", "prepare_network",
           "resolve_mode", "time_forward"]

INFERENCE_MODES = ("eager", "torchscript", "frozen", "fast", "bf16")
AUTO = "auto"


#: Submodules whose output is thresholded (a mask variant's prior): masks are discontinuous in its dose, so any
#: change of float summation order could flip mask voxels; they keep the eager arithmetic.
KEEP_EXACT = ("prior",)


def make_fast(network: nn.Module) -> torch.jit.ScriptModule:
    """``network`` (changed in place, eval mode) with fused instance-norm activations, convolutions run by oneDNN
    and channels-last 3D weights (its convolutions then produce channels-last outputs whatever layout the input
    has), scripted and frozen; submodules named in :data:`KEEP_EXACT` are only scripted. Apply it after loading
    the weights: frozen weights are constants."""
    network.eval()
    for name, child in network.named_children():
        if name not in KEEP_EXACT:
            fuse_instance_norm_activations(child)
            route_convolutions_to_onednn(child)
            child.to(memory_format=torch.channels_last_3d)
    return torch.jit.freeze(torch.jit.script(network))


class _Autocast(nn.Module):
    """``module`` run under bf16 autocast on the input's device, returning float32."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return self.module(x).float()


class _Float32(_Autocast):
    """``module`` run in float32 inside an autocast region."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.module(x.float())


def make_bf16(network: nn.Module) -> nn.Module:
    """``network`` (changed in place, eval mode) prepared as in :func:`make_fast` but not scripted, wrapped to run
    under bf16 autocast; submodules named in :data:`KEEP_EXACT` run in float32, untouched."""
    network.eval()
    for name, child in list(network.named_children()):
        if name in KEEP_EXACT:
            setattr(network, name, _Float32(child))
        else:
            fuse_instance_norm_activations(child)
            child.to(memory_format=torch.channels_last_3d)
    return _Autocast(network).eval()


def resolve_mode(mode: str, device: torch.device) -> str:
    """The concrete mode ``mode`` stands for on ``device``: ``auto`` is ``bf16`` on a CPU with native bf16
    (measured: 0.002 Gy on the dose score of the 33 OpenKBP validation patients), ``frozen`` elsewhere. ``bf16``
    asked for on a CPU that emulates it is kept (:func:`prepare_network` warns)."""
    _check_mode(mode)
    if mode == AUTO:
        return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "frozen"
    return mode


def _check_mode(mode: str) -> None:
    if mode not in (AUTO, *INFERENCE_MODES):
        raise ValueError(f"unknown inference mode {mode!r}; choose from {(AUTO, *INFERENCE_MODES)}")


def keeps_freed_memory(mode: str, device: torch.device) -> bool:
    """Whether a run of ``mode`` on ``device`` over several cases keeps the process's freed memory for reuse
    (:func:`keep_freed_memory`): bf16 on a CPU, whose activations fit under the kept block size (fp32's, twice
    as large, measured 1.2-1.4 GB more resident for no faster first pass)."""
    return resolve_mode(mode, device) == "bf16" and device.type == "cpu"


def prepare_network(network: nn.Module, mode: str = "frozen", in_place: bool = False) -> nn.Module:
    """A copy of ``network`` ready to time or run in ``mode`` (``auto`` or one of :data:`INFERENCE_MODES`); with
    ``in_place``, ``network`` itself is changed (``fast`` and ``bf16`` fuse its norms and change its layout) and
    no copy of the weights is made. ``bf16`` on a CPU that emulates it warns (:func:`warn_if_bf16_is_emulated`):
    here, where it is applied, so a run warns once however often its mode is resolved."""
    device = next(network.parameters()).device
    mode = resolve_mode(mode, device)
    if mode == "bf16" and device.type == "cpu":
        warn_if_bf16_is_emulated("inference_mode bf16")
    network = (network if in_place else copy.deepcopy(network)).eval()
    if mode == "eager":
        return network
    if mode == "torchscript":
        return torch.jit.script(network)
    if mode == "frozen":
        return torch.jit.freeze(torch.jit.script(network))
    if mode == "fast":
        return make_fast(network)
    return make_bf16(network)


class OptimiseForInference:
    """Ignite handler: at ``Events.STARTED`` (list it after the ``CheckpointLoader``) replace the engine's network
    by its ``mode`` version (:func:`prepare_network`, in place: the engine's network is replaced, and a copy of the
    paper-width cascade's weights cost 0.2 s of a 128^3 prediction). ``eager`` leaves it as it is. A second run
    of the engine keeps the network prepared by the first: preparing it again failed (a frozen network has no
    parameters left) or fused a mask variant's prior, which must keep the eager arithmetic. In ``bf16`` on a CPU,
    an engine that runs more than one case (several in its data, or a second run) keeps the process's freed memory
    for reuse (:func:`keep_freed_memory`)."""

    def __init__(self, mode: str = AUTO) -> None:
        _check_mode(mode)  # before any work; the device is known at STARTED
        self.mode = mode
        self._prepared: nn.Module | None = None
        self._keep_freed_memory = False

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine) -> None:
        if engine.network is self._prepared:
            several_cases = True  # the engine runs again, on a further case
        else:
            device = next(engine.network.parameters()).device
            mode = resolve_mode(self.mode, device)
            if mode != "eager":
                engine.network = prepare_network(engine.network, mode, in_place=True)
            self._prepared = engine.network
            self._keep_freed_memory = keeps_freed_memory(mode, device)
            several_cases = (engine.state.epoch_length or 1) > 1
        if several_cases and self._keep_freed_memory:
            keep_freed_memory()


def time_forward(network: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, warmup: int = 1,
                 repeats: int = 3) -> dict:
    """Seconds per forward pass of ``network`` on ``x``: the median (and every run) after ``warmup`` passes."""
    seconds = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            synchronize(x.device)
            start = time.perf_counter()
            network(x)
            synchronize(x.device)
            if i >= warmup:
                seconds.append(time.perf_counter() - start)
    return {"median_s": statistics.median(seconds), "runs_s": seconds}
