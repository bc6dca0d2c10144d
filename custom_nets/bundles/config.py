"""Read a bundle's configs from Python the way ``monai.bundle run`` merges them (config list, then ids)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from monai.bundle import ConfigParser

__all__ = ["bundle_parser", "profile_configs"]


def profile_configs(base: str, profile: str = "lung", cpu: bool = False) -> list[str]:
    """``configs/<base>.json`` plus the override files of a dataset profile and the CPU profile, in run order."""
    return [f"configs/{base}.json", *(["configs/openkbp.json"] if profile == "openkbp" else []),
            *(["configs/cpu.json"] if cpu else [])]


def bundle_parser(bundle: str | Path, config_files: Sequence[str], overrides: Mapping | None = None
                  ) -> ConfigParser:
    """A parser of ``config_files`` (relative to ``bundle``) with ``bundle_root`` set and ``overrides`` applied."""
    bundle = Path(bundle).resolve()
    if not (bundle / "configs").is_dir():
        raise FileNotFoundError(f"{bundle} is not a bundle folder (no configs/)")
    parser = ConfigParser()
    parser.read_config([str(bundle / c) for c in config_files])
    parser.update({"bundle_root": str(bundle), **(overrides or {})})
    return parser
