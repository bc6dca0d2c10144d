"""Checkpoint files: read a network's state dict, and refuse one of another network by name, saying what it was
trained as (PyTorch's own message is a many-hundred-line list of tensor names)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

__all__ = ["check_checkpoint", "describe_state", "load_state_dict_file", "parameters_stored_as"]


def load_state_dict_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A network state dict from a checkpoint file (a bare state dict, or a MONAI/Ignite ``{"model": ...}``).

    The file is memory-mapped: a tensor's values are read when used, so checking names and shapes reads next to
    nothing (15 ms of a 130 MB checkpoint against 80 ms for a full read)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    state = torch.load(path, map_location=map_location, weights_only=True, mmap=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    return state


def _widths(state: Mapping[str, torch.Tensor], prefix: str) -> list[int]:
    widths, level = [], 0
    while f"{prefix}encoder.{level}.0.conv.weight" in state:
        widths.append(int(state[f"{prefix}encoder.{level}.0.conv.weight"].shape[0]))
        level += 1
    return widths


def _cascade(state: Mapping[str, torch.Tensor], prefix: str) -> str:
    inputs = int(state[f"{prefix}stage_a.encoder.0.0.conv.weight"].shape[1])
    relative = ", dose relative to the top prescription" if f"{prefix}relative_ptv_channel" in state else ""
    return (f"a cascade with {inputs} input channels, widths A {_widths(state, prefix + 'stage_a.')}, "
            f"B {_widths(state, prefix + 'stage_b.')}{relative}")


def describe_state(state: Mapping[str, torch.Tensor]) -> str:
    """What network a state dict belongs to: variant, input channels and widths, as far as its tensors tell."""
    if "fractions" in state and "refine.stage_a.encoder.0.0.conv.weight" in state:
        fractions = [round(float(f), 3) for f in state["fractions"]]
        return f"a dose-mask cascade ({len(fractions)} masks at {fractions}) of {_cascade(state, 'refine.')}"
    if "stage_a.encoder.0.0.conv.weight" in state:
        return f"the basic cascade: {_cascade(state, '')}"
    if "ct_stem.conv.weight" in state:
        stem = int(state["ct_stem.conv.weight"].shape[0])
        widths = [stem] + [int(state[f"encoder.{i}.down.conv.weight"].shape[0]) for i in range(1, 16)
                           if f"encoder.{i}.down.conv.weight" in state]
        oars = int(state["oar_stem.conv.weight"].shape[1]) if "oar_stem.conv.weight" in state else "?"
        return f"RANDose with stem {stem}, widths {widths}, {oars} OAR/body channels"
    return f"an unknown network of {len(state)} tensors"


def check_checkpoint(path: str | Path, network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` once checked to fit ``network`` exactly (names and shapes); else ``ValueError``
    naming ``path``, what it was trained as and what ``network`` is."""
    path = Path(path)
    try:
        state = load_state_dict_file(path)
    except FileNotFoundError:
        raise
    except Exception as err:  # torch.load raises many types for damaged or foreign files
        raise ValueError(f"checkpoint {path}: not a readable PyTorch checkpoint ({err})") from err
    expected = network.state_dict()
    mismatched = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    missing, unexpected = set(expected) - set(state), set(state) - set(expected)
    if mismatched or missing or unexpected:
        raise ValueError(f"checkpoint {path} was trained as {describe_state(state)}; this config builds "
                         f"{describe_state(expected)} ({len(mismatched)} tensors of another shape, {len(missing)} "
                         f"missing, {len(unexpected)} unexpected): set the widths, dose masks, profile or "
                         "prescription_relative it was trained with, or give its ckpt_path")
    return state


def parameters_stored_as(state: Mapping[str, torch.Tensor], network: torch.nn.Module,
                         dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """``state`` with the learnt parameters of ``network`` cast to ``dtype`` for storage, and every buffer (a mask
    cascade's dose fractions, its prior flag) left exact. ``load_state_dict`` casts them back to the network's
    dtype on loading, so a float16 file loads into a float32 network unchanged."""
    names = {name for name, _ in network.named_parameters()}
    unknown = names - set(state)
    if unknown:
        raise ValueError(f"the state dict lacks {len(unknown)} parameters of the network (e.g. {sorted(unknown)[0]})")
    return {k: (v.to(dtype) if k in names and v.is_floating_point() else v) for k, v in state.items()}
