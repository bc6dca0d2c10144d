"""Package a trained bundle for sharing: one archive that runs outside this repository, and its weights as assets.

The archive ``<out>/<name>_v<version>.zip`` holds ``<name>/``: configs (the override files the model was trained
with merged into ``inference.json`` and ``train.json``, so MONAI Label and MONAI Deploy, which read
``inference.json`` alone, build the right profile and widths), docs, LICENSE, a vendored copy of ``custom_nets``
(importable from the bundle root, where ``python -m monai.bundle`` runs and where MONAI Label puts the bundle on
``sys.path``) and ``large_files.yml``. The weights (``models/model.pt``, and ``models/model.ts`` with its metadata
and inference config embedded for MONAI Deploy) go to ``<out>/assets/`` with their sha256 in ``large_files.yml``,
so ``python -m monai.bundle download_large_files`` fetches and checks them from wherever they are published.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from monai.bundle import ConfigParser, ckpt_export

from custom_nets.io.atomic import atomic_file, write_text_atomic

__all__ = ["PackagedBundle", "large_files_yaml", "merge_configs", "package_bundle", "sha256_of"]

CUSTOM_NETS_DIR = Path(__file__).resolve().parents[1]
MERGED_CONFIGS = ("inference.json", "train.json")


@dataclass
class PackagedBundle:
    archive: Path
    assets: dict[str, Path]  # bundle-relative path -> published file
    large_files: list[dict]


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def merge_configs(base: str | Path, override_files: Sequence[str | Path] = (), overrides: Mapping | None = None
                  ) -> dict:
    """``base`` with each override file's ids and then ``overrides`` applied, as ``monai.bundle run`` applies a
    config list and command-line ids (nested ids with ``#`` allowed); the result is one self-contained config."""
    parser = ConfigParser()
    parser.read_config(str(base))
    for path in override_files:
        for key, value in ConfigParser.load_config_file(str(path)).items():
            parser[key] = value
    for key, value in (overrides or {}).items():
        parser[key] = value
    config = dict(parser.get())
    config.pop(ConfigParser.meta_key, None)  # an empty "_meta_" would hide metadata.json from loaders that merge
    return config


def _vendor_custom_nets(destination: Path) -> None:
    shutil.copytree(CUSTOM_NETS_DIR, destination, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def package_bundle(bundle: str | Path, out_dir: str | Path, weights: str | Path | None = None,
                   override_files: Sequence[str] = (), overrides: Mapping | None = None,
                   weights_url: str | None = None, torchscript: bool = True) -> PackagedBundle:
    """Package ``bundle`` with ``weights`` (default ``models/model.pt``) into ``out_dir``.

    Args:
        override_files: the bundle's override configs the model was trained with (e.g. ``configs/openkbp.json``,
            ``configs/cpu.json``), relative to the bundle; merged into ``inference.json`` and ``train.json``.
        overrides: further config ids the model was trained with (e.g. ``{"widths_a": [...]}``).
        weights_url: where the files of ``<out>/assets`` will be published (``large_files.yml`` urls);
            default: their ``file://`` location, for a local or shared-drive release.
        torchscript: also export ``models/model.ts`` (metadata and inference config embedded).
    """
    bundle, out_dir = Path(bundle).resolve(), Path(out_dir).resolve()
    weights = Path(weights) if weights is not None else bundle / "models" / "model.pt"
    if not weights.is_file():
        raise FileNotFoundError(f"weights not found: {weights} (train the bundle first or pass --weights)")
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    name, version = bundle.name, str(meta["version"])
    stage = out_dir / f".{name}.staging"
    shutil.rmtree(stage, ignore_errors=True)
    root = stage / name
    shutil.copytree(bundle, root, ignore=shutil.ignore_patterns("models", "eval", "predictions", "logs", "runs",
                                                                 "__pycache__", "*.pyc"))
    override_paths = [bundle / f for f in override_files]
    for path in override_paths:
        if not path.is_file():
            raise FileNotFoundError(f"override config not found: {path}")
    for config in MERGED_CONFIGS:
        merged = merge_configs(bundle / "configs" / config, override_paths, overrides)
        write_text_atomic(root / "configs" / config, json.dumps(merged, indent=4) + "\n")
    _vendor_custom_nets(root / "custom_nets")

    assets_dir = out_dir / "assets"
    assets_dir.mkdir(parents=True, exist_ok=True)
    (root / "models").mkdir()
    shutil.copy2(weights, root / "models" / "model.pt")
    files = ["models/model.pt"]
    if torchscript:
        configs = root / "configs"
        ckpt_export(net_id="network_def", filepath=str(root / "models" / "model.ts"),
                    ckpt_file=str(root / "models" / "model.pt"), meta_file=str(configs / "metadata.json"),
                    config_file=str(configs / "inference.json"), bundle_root=str(root))
        files.append("models/model.ts")
    base_url = (weights_url or assets_dir.as_uri()).rstrip("/")
    entries, assets = [], {}
    for relative in files:
        asset = assets_dir / f"{name}_v{version}_{Path(relative).name}"
        shutil.move(root / relative, asset)
        assets[relative] = asset
        entries.append({"path": relative, "url": f"{base_url}/{asset.name}", "hash_val": sha256_of(asset),
                        "hash_type": "sha256"})
    (root / "models").rmdir()
    write_text_atomic(root / "large_files.yml", large_files_yaml(
        entries, "# Weights of this bundle: `python -m monai.bundle download_large_files --bundle_path <bundle>`"))
    _append_packaging_note(root / "docs" / "README.md", override_files, overrides, entries)

    archive = out_dir / f"{name}_v{version}.zip"
    with atomic_file(archive) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(stage).as_posix())
    shutil.rmtree(stage)
    return PackagedBundle(archive, assets, entries)


def large_files_yaml(entries: Sequence[Mapping[str, str]], comment: str) -> str:
    """``large_files.yml`` text: ``comment``, then one {path, url, hash_val, hash_type} entry per file."""
    lines = [comment, "", "large_files:"]
    for entry in entries:
        lines += [f'  - path: "{entry["path"]}"', f'    url: "{entry["url"]}"',
                  f'    hash_val: "{entry["hash_val"]}"', f'    hash_type: "{entry["hash_type"]}"']
    return "\n".join(lines) + "\n"


def _append_packaging_note(readme: Path, override_files: Sequence[str], overrides: Mapping | None,
                           entries: list[dict]) -> None:
    note = ["", "## This package", "",
            "Configs merged into `inference.json` and `train.json`: "
            + (", ".join(f"`{f}`" for f in override_files) or "none")
            + (f"; ids {json.dumps(dict(overrides))}" if overrides else "") + ".",
            "Fetch the weights with `python -m monai.bundle download_large_files --bundle_path .`; sha256:", ""]
    note += [f"- `{e['path']}`: `{e['hash_val']}`" for e in entries]
    write_text_atomic(readme, readme.read_text().rstrip("\n") + "\n" + "\n".join(note) + "\n")
