"""The bundles: render them from their sources in bundles/_template (run after editing those), and package one to
share."""

from __future__ import annotations

from pathlib import Path

from custom_nets.bundles.packaging import package_bundle
from custom_nets.bundles import render_all
from custom_nets.options import as_bool
from dosepred.arguments import as_list, as_mapping

BUNDLES_DIR = Path(__file__).resolve().parents[1] / "bundles"


def sync(bundles_dir: str = str(BUNDLES_DIR)) -> list[str]:
    """Regenerate every bundle under BUNDLES_DIR from its sources in BUNDLES_DIR/_template."""
    return [str(path) for path in render_all(bundles_dir)]


def package(bundle: str, out: str = "dist", configs: str | list = "", weights: str | None = None, overrides=None,
            weights_url: str | None = None, torchscript: bool = True) -> str:
    """Package BUNDLE (a trained copy with models/model.pt) as OUT/<name>_v<version>.zip plus OUT/assets/ weights.

    Args:
        configs: the override configs the model was trained with, e.g. "configs/openkbp.json,configs/cpu.json"
            (merged into inference.json and train.json so MONAI Label / Deploy see the trained model's settings).
        overrides: further ids the model was trained with, as JSON or a dict, e.g. '{"widths_a": [8,16,32,64,128]}'.
        weights_url: where OUT/assets will be published (large_files.yml urls); default their file:// location.
    """
    packaged = package_bundle(bundle, out, weights, as_list(configs), as_mapping(overrides, "overrides"), weights_url,
                              as_bool(torchscript, "torchscript"))
    for entry in packaged.large_files:
        print(f"{entry['path']}: {entry['url']} sha256 {entry['hash_val']}")
    return str(packaged.archive)
