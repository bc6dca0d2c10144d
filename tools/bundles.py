"""The cascade bundles: render them from bundles/_template (run after editing the template)."""

from __future__ import annotations

from pathlib import Path

from custom_nets.bundle_variants import VARIANTS, render_bundle

BUNDLES_DIR = Path(__file__).resolve().parents[1] / "bundles"


def sync(bundles_dir: str = str(BUNDLES_DIR)) -> list[str]:
    """Regenerate every cascade bundle under BUNDLES_DIR from BUNDLES_DIR/_template."""
    root = Path(bundles_dir)
    return [str(render_bundle(v, root / "_template", root / v.name)) for v in VARIANTS.values()]
