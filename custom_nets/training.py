"""Helpers the training configs call: resuming, lower-is-better key metrics, training-time network wrappers."""

from __future__ import annotations

import random
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.utils.checkpoint
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader, CheckpointSaver, from_engine
from monai.transforms import Compose, Randomizable

from custom_nets.distributed import is_main_process
from custom_nets.options import as_bool, as_optional_bool
from custom_nets.performance.hardware import cpu_has_native_bf16, warn_if_bf16_is_emulated
from custom_nets.performance.wide_kernel_conv import guard_wide_kernel_convolutions

__all__ = ["RaiseOnNonFiniteLoss", "lower_is_better", "latest_checkpoint", "attach_checkpoints", "trainable_parameters",
           "with_gradient_checkpointing", "with_cpu_autocast", "use_cpu_bf16", "prepare_training_network"]


def with_gradient_checkpointing(network: torch.nn.Module, enabled: bool = True) -> torch.nn.Module:
    """``network`` whose encoder/decoder stages (the items of its outermost ``nn.ModuleList``s) recompute their
    activations in the backward pass instead of storing them: less memory for 128^3 training on small GPUs, about a
    third more compute. Parameters and ``state_dict`` keys are unchanged (each stage's ``forward`` is wrapped in
    place); lists inside a stage are left alone, as the stage's recomputation covers them."""
    if not enabled:
        return network
    stages = list(_outer_stages(network))
    if not stages:
        raise ValueError(f"{type(network).__name__} has no ModuleList stages to checkpoint")
    for stage in stages:
        stage.forward = _checkpointed(stage.forward)
    return network


def _outer_stages(module: torch.nn.Module):
    for child in module.children():
        if isinstance(child, torch.nn.ModuleList):
            yield from child
        else:
            yield from _outer_stages(child)


def _checkpointed(forward):
    def run(*args: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False)
        return forward(*args)
    return run


def use_cpu_bf16(device: str | torch.device, enabled: bool | str | None = None) -> bool:
    """Whether training on ``device`` runs in bf16 autocast: by default (None, "auto") on CPUs with native bf16
    only (CUDA has MONAI's own fp16 AMP; elsewhere bf16 is emulated and slower). Command lines hand over strings
    ("true", "false"), which are read as such; ``True`` on another device is an error."""
    enabled = as_optional_bool(enabled, "cpu_bf16")
    on_cpu = torch.device(device).type == "cpu"
    if enabled is None:
        return on_cpu and cpu_has_native_bf16()
    if enabled and not on_cpu:
        raise ValueError(f"cpu_bf16 is for training on a CPU, but the device is {device} (use amp on CUDA)")
    if enabled:
        warn_if_bf16_is_emulated("cpu_bf16 true")
    return bool(enabled)


def with_cpu_autocast(network: torch.nn.Module, enabled: bool = True) -> torch.nn.Module:
    """``network`` whose forward runs under CPU bf16 autocast while it is in training mode, and returns float32.

    Validation and inference (eval mode) stay fp32, so model selection scores what inference predicts. MONAI's
    engines only autocast on CUDA, hence this wrapper; like :func:`with_gradient_checkpointing` it wraps
    ``forward`` in place, so parameters and ``state_dict`` keys are unchanged. Convolutions whose kernel covers
    their map run in fp32 (``custom_nets.performance.wide_kernel_conv``: oneDNN's bf16 weight gradient is wrong there).
    """
    if not enabled:
        return network
    guard_wide_kernel_convolutions(network)
    forward = network.forward

    def run(*args: torch.Tensor) -> torch.Tensor:
        if not network.training:
            return forward(*args)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return forward(*args).float()

    network.forward = run
    network.cpu_bf16_autocast = True
    return network


def prepare_training_network(network: torch.nn.Module, device: str | torch.device,
                             gradient_checkpointing: bool = False, channels_last: bool = False,
                             cpu_bf16: bool | str | None = None) -> torch.nn.Module:
    """The training configs' network: optional gradient checkpointing, bf16 autocast on CPUs with native bf16
    (``cpu_bf16`` None: where supported), moved to ``device`` (channels-last 3D layout if asked)."""
    network = with_gradient_checkpointing(network, as_bool(gradient_checkpointing, "gradient_checkpointing"))
    network = with_cpu_autocast(network, use_cpu_bf16(device, cpu_bf16))
    layout = torch.channels_last_3d if as_bool(channels_last, "channels_last") else torch.contiguous_format
    return network.to(device, memory_format=layout)


def check_spatial_sizes(network: torch.nn.Module, **sizes: Sequence[int] | None) -> None:
    """Refuse, naming the option, a spatial size (``patch_size=[...]``, ``network_size=...``; None: not used) that
    is not three whole multiples of what the network halves to (``network.divisor``, 16 for four poolings)."""
    divisor = int(getattr(network, "divisor", 1))
    for option, size in sizes.items():
        if size is None:
            continue
        values = list(size) if isinstance(size, (list, tuple)) else [size]
        if len(values) != 3 or not all(isinstance(v, int) and v >= divisor and v % divisor == 0 for v in values):
            raise ValueError(f"--{option}: expected three sizes that are multiples of {divisor} (the network halves "
                             f"the grid {divisor.bit_length() - 1} times), e.g. [64,64,64]; got {size!r}")


class RaiseOnNonFiniteLoss:
    """Trainer handler: raise ``FloatingPointError`` at the first iteration whose training loss is NaN or infinite.

    Training would otherwise go on with broken weights, its validation would save them as ``model.pt`` and the run
    would exit 0 (Ignite's ``TerminateOnNan`` stops the run but also exits 0).
    """

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        loss = from_engine(["loss"], first=True)(engine.state.output)
        value = float(loss)
        if not np.isfinite(value):
            raise FloatingPointError(f"the training loss is {value} at iteration {engine.state.iteration} (epoch "
                                     f"{engine.state.epoch}): training stopped; lower the learning rate or check the "
                                     "inputs for non-finite values")


def trainable_parameters(network: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Parameters the optimizer updates (a dose-mask cascade's prior is frozen)."""
    return [p for p in network.parameters() if p.requires_grad]


def lower_is_better(current: float, best: float) -> bool:
    """``metric_cmp_fn`` for a dose error: MONAI starts ``best`` at -1, which means "none yet"."""
    return best < 0 or current < best


def latest_checkpoint(ckpt_dir: str | Path, prefix: str = "checkpoint") -> Path | None:
    """The newest ``<prefix>_*=N.pt`` that CheckpointSaver wrote in ``ckpt_dir`` (highest N), if any."""
    found = []
    for path in Path(ckpt_dir).glob(f"{prefix}_*.pt"):
        match = re.search(r"=(\d+)\.pt$", path.name)
        if match:
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


class ResumeState:
    """What a training checkpoint holds beyond the network, optimiser and scheduler, so that a killed run resumed
    from it ends with the weights an uninterrupted run would have: the random-number states (torch, numpy,
    Python, and every random transform of the training data, which draw in this process when ``num_workers`` is
    0; workers are re-seeded from torch's state each epoch) and the best validation score with the record of the
    saver that keeps ``model.pt`` (else the first validation after a resume always counts as a new best).

    Captured when the checkpoint is saved, at the end of an epoch after its validation; restored when the
    checkpoint is loaded, before the next epoch draws anything.
    """

    def __init__(self, trainer, evaluator=None, best_saver: CheckpointSaver | None = None):
        self.trainer, self.evaluator, self.best_saver = trainer, evaluator, best_saver

    def _random_transforms(self) -> list[Randomizable]:
        transform = getattr(getattr(self.trainer.data_loader, "dataset", None), "transform", None)
        found = transform.flatten().transforms if isinstance(transform, Compose) else [transform]
        return [t for t in found if isinstance(t, Randomizable)]

    def state_dict(self) -> dict:
        state = {"torch": torch.get_rng_state(), "numpy": _to_tensors(np.random.get_state()),
                 "python": random.getstate(),
                 "transforms": [_to_tensors(t.R.get_state()) for t in self._random_transforms()]}
        if self.evaluator is not None:
            state["best_metric"] = (self.evaluator.state.best_metric, self.evaluator.state.best_metric_epoch)
        # MONAI's saver restores this record with load_state_dict but offers no getter for it
        if self.best_saver is not None and self.best_saver._key_metric_checkpoint is not None:
            state["best_saver"] = self.best_saver._key_metric_checkpoint.state_dict()
        return state

    def load_state_dict(self, state: Mapping) -> None:
        transforms = self._random_transforms()
        if len(transforms) != len(state["transforms"]):
            raise ValueError(f"the checkpoint has {len(state['transforms'])} random transforms, this config "
                             f"{len(transforms)}: resume with the training config the run started with")
        torch.set_rng_state(state["torch"])
        np.random.set_state(_from_tensors(state["numpy"]))
        random.setstate(state["python"])
        for transform, transform_state in zip(transforms, state["transforms"]):
            transform.R.set_state(_from_tensors(transform_state))
        if self.evaluator is not None and "best_metric" in state:
            self.evaluator.state.best_metric, self.evaluator.state.best_metric_epoch = state["best_metric"]
        if self.best_saver is not None and "best_saver" in state:
            self.best_saver.load_state_dict(state["best_saver"])


def _to_tensors(numpy_state: tuple) -> tuple:
    """A numpy random state with its key array as a tensor: checkpoints are read with ``weights_only=True``."""
    return tuple(torch.from_numpy(v.astype(np.int64)) if isinstance(v, np.ndarray) else v for v in numpy_state)


def _from_tensors(state: tuple) -> tuple:
    return tuple(v.numpy().astype(np.uint32) if isinstance(v, torch.Tensor) else v for v in state)


def attach_checkpoints(trainer, ckpt_dir: str | Path, objects: Mapping[str, object], resume: bool = False,
                       every_epochs: int = 1, save: bool | None = None, evaluator=None,
                       best_saver: CheckpointSaver | None = None) -> Path | None:
    """Save the full training state every ``every_epochs`` epochs (``checkpoint_*.pt``, newest kept), and with
    ``resume`` restore it from the latest such checkpoint before the first iteration.

    ``objects`` holds the network, optimizer and scheduler; the trainer's own state (iteration, epoch) and a
    :class:`ResumeState` (random numbers; the best score of ``evaluator`` and the record of ``best_saver``, the
    validation's ``model.pt`` saver) are added here, since a handler inside the trainer's config cannot refer to
    the trainer. ``save=False`` only resumes; by default the main process saves (rank 0 in distributed training,
    whose other ranks only resume). Returns the
    checkpoint resumed from, if any; resuming with no checkpoint, or with a learning-rate schedule of another
    length (a changed ``max_iterations``), is an error.
    """
    state = {**objects, "trainer": trainer, "resume_state": ResumeState(trainer, evaluator, best_saver)}
    if is_main_process() if save is None else save:
        CheckpointSaver(save_dir=str(ckpt_dir), save_dict=state, file_prefix="checkpoint", save_interval=every_epochs,
                        epoch_level=True, n_saved=1).attach(trainer)
    if not as_bool(resume, "resume"):
        return None
    checkpoint = latest_checkpoint(ckpt_dir)
    if checkpoint is None:
        raise FileNotFoundError(f"resume requested but {ckpt_dir} holds no checkpoint_*.pt")
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    _check_same_schedule(checkpoint, saved.get("lr_scheduler", {}), objects.get("lr_scheduler"))
    if "resume_state" not in saved:
        warnings.warn(f"{checkpoint} predates random-number states in checkpoints: the resumed run will not end "
                      "exactly as an uninterrupted one", stacklevel=2)
        state.pop("resume_state")
    CheckpointLoader(load_path=str(checkpoint), load_dict=state, map_location="cpu").attach(trainer)
    return checkpoint


def _check_same_schedule(checkpoint: Path, saved: Mapping, scheduler) -> None:
    if scheduler is None:
        return
    current = scheduler.state_dict()
    for key in ("T_max", "total_steps"):
        if key in saved and key in current and saved[key] != current[key]:
            raise ValueError(f"--max_iterations: the checkpoint {checkpoint} was trained with a schedule of "
                             f"{saved[key]} iterations, this config sets {current[key]}; resume with the same "
                             "max_iterations (a longer run is a new run, or fine-tuning from its model.pt)")


def log_loss_weights(trainer, loss: torch.nn.Module, log_dir: str | Path, every_iterations: int = 50) -> bool:
    """Log a loss's region weights (``loss.weights()``, e.g. RANDose's learnable ones) every
    ``every_iterations`` iterations to the console and as TensorBoard scalars ``loss_weight/<name>`` in
    ``log_dir``, on the main process. Losses without weights are left alone; returns whether anything was
    attached."""
    if not is_main_process() or not callable(getattr(loss, "weights", None)) or not loss.weights():
        return False
    from ignite.engine import Events
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(log_dir))

    @trainer.on(Events.ITERATION_COMPLETED(every=every_iterations))
    def _log(engine) -> None:
        weights = loss.weights()
        for name, value in weights.items():
            writer.add_scalar(f"loss_weight/{name}", value, engine.state.iteration)
        writer.flush()
        engine.logger.info("loss weights: " + ", ".join(f"{k} {v:.4f}" for k, v in weights.items()))

    trainer.add_event_handler(Events.COMPLETED, lambda _: writer.close())
    return True

