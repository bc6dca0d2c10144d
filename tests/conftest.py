"""Shared fixtures. Real data lives in ../shared (data/, schema/) beside the repository: tests that need it skip (naming the
missing path) in a user's clone, and fail in CI, where it is always present."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from custom_nets.bundles import load_variants

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
BUNDLE_SOURCES = REPO_ROOT / "bundles" / "_template"

VARIANTS = load_variants(BUNDLE_SOURCES)
BUNDLES = list(VARIANTS)
# cascade and RANDose widths, a 32^3 network input (unused keys are inert)
TINY = ["--widths_a", "[2,4,8,16,32]", "--widths_b", "[2,4,8,16,32]", "--widths", "[2,4,8,16,32]",
        "--stem_channels", "2", "--patch_size", "[32,32,32]", "--network_size", "[32,32,32]"]
MASK_BUNDLES = [name for name in BUNDLES if VARIANTS[name].dose_mask_set]
CONFIGS = {
    "train": "['configs/train.json','configs/openkbp.json','configs/cpu.json']",
    "infer": "['configs/inference.json','configs/openkbp.json','configs/cpu.json']",
    "evaluate": "['configs/inference.json','configs/evaluate.json','configs/openkbp.json','configs/cpu.json']",
}


def run_bundle(bundle_dir: Path, *args: str, launcher: tuple[str, ...] = ("-m", "monai.bundle"),
               env: dict[str, str] | None = None) -> str:
    result = subprocess.run([sys.executable, *launcher, *args], cwd=bundle_dir, capture_output=True, text=True,
                            timeout=900, env=None if env is None else {**os.environ, **env})
    assert result.returncode == 0, f"{' '.join(args)}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result.stdout + result.stderr


# `python -m monai.bundle` is fire over monai.bundle.scripts: this runs several of its commands in one process,
# which saves the 3.5-7 s of imports a process pays (torch, MONAI, Ignite) for each further command
_MONAI_BUNDLE_COMMANDS = """
import json, sys
import fire
from monai.bundle import scripts
for command in json.loads(sys.argv[1]):
    fire.Fire(scripts, command=command)
"""


def run_bundle_commands(bundle_dir: Path, commands: list[list[str]], env: dict[str, str] | None = None) -> str:
    """Run ``python -m monai.bundle <command>`` for each command in turn, in one process."""
    return run_bundle(bundle_dir, json.dumps(commands), launcher=("-c", _MONAI_BUNDLE_COMMANDS), env=env)


def require_shared(relative: str) -> Path:
    """Path to ``../shared/<relative>``; skip (or fail under CI) when it is absent."""
    path = SHARED / relative
    if not path.exists():
        message = f"shared data missing: {path}"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must have ../shared beside the clone)")
        pytest.skip(message)
    return path


def run_dciodvfy(path: Path) -> list[str]:
    """Error lines dciodvfy reports for a DICOM file (skips where it is not installed, fails under CI)."""
    dciodvfy = shutil.which("dciodvfy")
    if dciodvfy is None:
        if os.environ.get("CI"):
            pytest.fail("dciodvfy (Debian's dicom3tools) is not installed; .ci/run installs it")
        return []
    result = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


@pytest.fixture(scope="session")
def openkbp_mini_datalist(tmp_path_factory) -> Path:
    """The six OpenKBP mini patients converted to canonical cases (training pt_1-4, validation pt_201-202)."""
    from dosepred.openkbp import convert

    train = require_shared("data/openkbp/mini/train-pats")
    validation = require_shared("data/openkbp/mini/validation-pats")
    out = tmp_path_factory.mktemp("openkbp_mini")
    return Path(convert(str(train), str(validation), out=str(out)))


@pytest.fixture(scope="session")
def lung_phantom_datalist(tmp_path_factory) -> Path:
    """A small lung phantom dataset (4 training, 1 validation, 1 test) at 48^3."""
    from custom_nets.phantoms import generate_phantom_dataset

    out = tmp_path_factory.mktemp("lung_phantoms")
    return generate_phantom_dataset(out, "lung", n_training=4, n_validation=1, n_test=1, shape=(48, 48, 48), seed=0)


@pytest.fixture(scope="session")
def openkbp_bundles(openkbp_mini_datalist, tmp_path_factory) -> Path:
    """Every bundle trained for two iterations on the OpenKBP mini patients, then run for inference and
    evaluation on the validation patients; mask variants use the basic bundle's weights as their prior."""
    root = tmp_path_factory.mktemp("bundles")
    dataset = ["--dataset_dir", str(openkbp_mini_datalist.parent)]

    def train_infer_evaluate(name: str, env: dict[str, str] | None = None) -> None:
        bundle = Path(shutil.copytree(REPO_ROOT / "bundles" / name, root / name))
        run_bundle_commands(bundle, [
            ["run", "training", "--config_file", CONFIGS["train"], *dataset, *TINY, "--max_iterations", "2",
             "--iterations_per_epoch", "2", "--num_workers", "0"],
            ["run", "--config_file", CONFIGS["infer"], *dataset, *TINY, "--split", "validation"],
            # gamma at a search step of DTA/3 instead of DTA/10: untrained doses leave every voxel searched to the
            # full radius (15 s of a 38 s evaluate run of two cases on a 2-core AVX2 machine); test_evaluation_metrics
            # holds gamma to an exhaustive search at the default step
            ["run", "--config_file", CONFIGS["evaluate"], *dataset, *TINY, "--gamma_criteria#interp_fraction", "3"]],
            env=env)

    train_infer_evaluate("cascunet_basic")  # first: it is the prior of the others
    # the others two at a time, one thread each: their runs are mostly single-threaded start-up and I/O
    with ThreadPoolExecutor(max_workers=2) as pool:
        for done in [pool.submit(train_infer_evaluate, name, {"OMP_NUM_THREADS": "1"}) for name in BUNDLES
                     if name != "cascunet_basic"]:
            done.result()
    return root
