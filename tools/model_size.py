"""``dosepred model-size``: parameters and FLOPs of a bundle's network at a given input size."""

from __future__ import annotations

from pathlib import Path

from custom_nets.bundles.config import bundle_parser, profile_configs
from custom_nets.networks.complexity import forward_flops, parameter_counts
from custom_nets.options import as_bool
from dosepred.bundles import BUNDLES_DIR


def model_size(bundle: str = "randose", size: int = 128, profile: str = "openkbp", cpu: bool = False) -> dict:
    """Build BUNDLE's network from its inference config (PROFILE: lung or openkbp; CPU: the cpu.json widths)
    and print its parameter count and the FLOPs of one forward pass on a SIZE^3 input."""
    root = Path(bundle) if Path(bundle).is_dir() else BUNDLES_DIR / bundle
    cpu = as_bool(cpu, "cpu")
    parser = bundle_parser(root, profile_configs("inference", profile, cpu))
    network = parser.get_parsed_content("network_def")
    in_channels = parser.get_parsed_content("in_channels")
    counts = parameter_counts(network)
    flops = forward_flops(network, (1, in_channels, size, size, size))
    result = {"bundle": root.name, "profile": profile, "widths": "cpu" if cpu else "paper", "input_channels":
              in_channels, "size": size, "parameters": counts["total"], "trainable_parameters": counts["trainable"],
              "forward_gflop": round(flops / 1e9, 3)}
    print(f"{root.name} ({profile}, {result['widths']} widths, {in_channels} input channels): "
          f"{counts['total'] / 1e6:.2f} M parameters ({counts['trainable'] / 1e6:.2f} M trainable), "
          f"{flops / 1e12:.3f} TFLOP per forward pass at {size}^3")
    return result
