"""Render the self-contained bundle folders from their sources (``bundles/_template``).

MONAI Label and Deploy read one bundle folder (``inference.json`` alone), so each bundle holds complete configs;
they are rendered from data a person edits, and committed:

* ``base/``: what every bundle has (configs, the docs skeleton, licences);
* a layer per model family (``cascade/``, ``randose/``): ``overlay.json`` (per config file, MONAI ``#``-path keys
  and values), its docs (``model.md``, ``schedule.md``, ``references.md``) and any further config files of its own
  (``configs/``, e.g. RANDose's ablations);
* ``variants/<name>.json``: one bundle (title, layers, its own overlay; ``variants/<name>.md`` its paragraph).

Every rendered config and doc says where it comes from; the drift test renders again and compares every file.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path

from custom_nets.bundles.docs import bundle_readme, references
from custom_nets.bundles.layers import ALL_CONFIGS, apply_overlay
from custom_nets.bundles.metadata import metadata, profile_metadata
from custom_nets.bundles.packaging import large_files_yaml
from custom_nets.bundles.pretrained import PRETRAINED_CONFIG, PRETRAINED_VAL_INTERVAL, pretrained_records
from custom_nets.bundles.variants import BundleVariant, load_variants
from custom_nets.profiles import OPENKBP

__all__ = ["render_bundle", "render_all", "rendered_files", "unrendered_files", "layered_configs", "openkbp_cpu_config",
           "provenance", "GENERATED_KEY", "SYNC_COMMAND", "RUN_OUTPUTS"]

SYNC_COMMAND = "dosepred bundles sync"
GENERATED_KEY = "_generated"
"""First key of every rendered JSON config: where it comes from (JSON has no comments; MONAI ignores the key)."""
RUN_OUTPUTS = ("models", "eval", "runs", "predictions")
"""Folders of a bundle that training and inference write (the shipped ``models/model.pt`` is not rendered either)."""


def provenance(variant: BundleVariant) -> str:
    """One sentence naming a rendered file's sources and the command that regenerates it."""
    sources = ", ".join(["base", *variant.layers, f"variants/{variant.name}.json"])
    return (f"generated from bundles/_template ({sources}) by `{SYNC_COMMAND}`: edit those and run it, "
            "not this file")


def layered_configs(variant: BundleVariant, source_dir: str | Path) -> dict[str, dict | str]:
    """File name -> content of every config of the variant: ``base/configs`` with each layer's ``overlay.json`` and
    the variant's own ``configs`` applied in turn (JSON as dicts, other files as text), plus the layers' own
    config files."""
    source_dir = Path(source_dir)
    configs: dict[str, dict | str] = {}
    for path in sorted((source_dir / "base" / "configs").iterdir()):
        configs[path.name] = json.loads(path.read_text()) if path.suffix == ".json" else path.read_text()
    missing = [layer for layer in variant.layers if not (source_dir / layer).is_dir()]
    if missing:
        raise FileNotFoundError(f"variants/{variant.name}.json names layers {missing} that are not folders of "
                                f"{source_dir}")
    overlays = [json.loads((source_dir / layer / "overlay.json").read_text()) for layer in variant.layers
                if (source_dir / layer / "overlay.json").is_file()]
    for overlay in [*overlays, variant.configs]:
        unplaced = [k for k in overlay.get(ALL_CONFIGS, {}) if not any(isinstance(c, dict) and k in c
                                                                       for c in configs.values())]
        if unplaced:
            raise KeyError(f"overlay of {variant.name}: {unplaced} under {ALL_CONFIGS!r} are in no config file")
        for name, keys in overlay.items():
            targets = [n for n, c in configs.items() if isinstance(c, dict)] if name == ALL_CONFIGS else [name]
            for target in targets:
                if target not in configs:
                    raise KeyError(f"overlay of {variant.name}: no config file {target!r} in base/configs")
                present = keys if name != ALL_CONFIGS else {k: v for k, v in keys.items() if k in configs[target]}
                configs[target] = apply_overlay(configs[target], present)
    for layer in variant.layers:
        for path in sorted((source_dir / layer / "configs").glob("*.json")):
            configs[path.name] = json.loads(path.read_text())
    return configs


def openkbp_cpu_config(variant: BundleVariant, source_dir: str | Path) -> dict:
    """``configs/openkbp_cpu.json``: everything the shipped OpenKBP weights were trained with in one override
    (``openkbp.json``, then ``cpu.json``, then the variant's ``pretrained_configs``, then the training length),
    layered on ``train.json`` or ``inference.json``."""
    return _openkbp_cpu(variant, layered_configs(variant, source_dir))


def _openkbp_cpu(variant: BundleVariant, configs: Mapping[str, dict | str]) -> dict:
    if not variant.pretrained_iterations:
        raise ValueError(f"{variant.name} ships no pretrained weights")
    missing = [name for name in variant.pretrained_configs if not isinstance(configs.get(name), dict)]
    if missing:
        raise ValueError(f"variants/{variant.name}.json: pretrained_configs {missing} are not config files of the "
                         f"bundle; it has {sorted(n for n, c in configs.items() if isinstance(c, dict))}")
    chosen = [configs[name] for name in variant.pretrained_configs]
    return {**configs["openkbp.json"], **configs["cpu.json"], **{k: v for c in chosen for k, v in c.items()},
            "max_iterations": variant.pretrained_iterations, "val_interval": PRETRAINED_VAL_INTERVAL}


def _json(config: Mapping, note: str) -> str:
    return json.dumps({GENERATED_KEY: note, **{k: v for k, v in config.items() if k != GENERATED_KEY}},
                      indent=4) + "\n"


def rendered_files(variant: BundleVariant, source_dir: str | Path) -> dict[str, str]:
    """Bundle-relative path -> text of every file :func:`render_bundle` writes for ``variant``."""
    source_dir = Path(source_dir)
    note = provenance(variant)
    files: dict[str, str] = {}
    configs = layered_configs(variant, source_dir)
    for name, config in configs.items():
        files[f"configs/{name}"] = _json(config, note) if isinstance(config, dict) else f"# {note}\n{config}"
    record = pretrained_records(source_dir).get(variant.name)
    pretrained_config = _openkbp_cpu(variant, configs) if variant.pretrained_iterations else None
    if pretrained_config:
        files[f"configs/{PRETRAINED_CONFIG}"] = _json(pretrained_config, note)
    meta = metadata(variant, references(variant, source_dir), record)
    files["configs/metadata.json"] = _json(meta, note)
    files["configs/metadata_openkbp.json"] = _json(profile_metadata(variant, OPENKBP), note)
    readme = bundle_readme(variant, source_dir, meta["description"], record, pretrained_config)
    files["docs/README.md"] = f"<!-- {note} -->\n{readme}"
    if record:  # committed beside this file: download_large_files only checks the sha256 (the url is for a copy)
        entries = [{"path": "models/model.pt", "url": "", "hash_val": record["sha256"], "hash_type": "sha256"}]
        files["large_files.yml"] = large_files_yaml(
            entries, f"# The shipped weights, committed with the bundle: `python -m monai.bundle download_large_files "
                     f"--bundle_path <bundle>` checks their sha256.\n# {note}")
    else:
        files["large_files.yml"] = (f"# No pretrained weights for this bundle. Entries: {{path, url, hash_val, "
                                    f"hash_type}}.\n# {note}\nlarge_files: []\n")
    return files


def render_bundle(variant: BundleVariant | str, source_dir: str | Path, out_dir: str | Path) -> Path:
    """Write the bundle of ``variant`` from ``source_dir`` into ``out_dir`` (created or updated in place). A file
    there that rendering does not write (added by hand) is an error, before anything is written: its content
    belongs in the sources."""
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    variant = load_variants(source_dir)[variant] if isinstance(variant, str) else variant
    files = rendered_files(variant, source_dir)
    unrendered = unrendered_files(out_dir, files)
    if unrendered:
        raise FileExistsError(f"{out_dir}: {unrendered} are not rendered from {source_dir}: move what they hold into "
                              "the sources (a variant's configs or a layer's configs/) or delete them")
    for relative, text in files.items():
        (out_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        (out_dir / relative).write_text(text)
    for name in ("LICENSE", "docs/data_license.txt"):
        shutil.copyfile(source_dir / "base" / name, out_dir / name)
    return out_dir


def unrendered_files(bundle_dir: str | Path, files: Mapping[str, str]) -> list[str]:
    """Files in ``bundle_dir`` that rendering would not write (e.g. added by hand), outside what runs write."""
    bundle_dir = Path(bundle_dir)
    expected = {*files, "LICENSE", "docs/data_license.txt"}
    present = [p.relative_to(bundle_dir).as_posix() for p in bundle_dir.rglob("*") if p.is_file()] \
        if bundle_dir.is_dir() else []
    return sorted(p for p in present if p not in expected and p.split("/")[0] not in RUN_OUTPUTS)


def render_all(bundles_dir: str | Path) -> list[Path]:
    """Render every variant of ``<bundles_dir>/_template`` into ``<bundles_dir>/<name>``."""
    source_dir = Path(bundles_dir) / "_template"
    return [render_bundle(v, source_dir, Path(bundles_dir) / name) for name, v in load_variants(source_dir).items()]
