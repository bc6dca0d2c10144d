"""A killed training resumed with ``--resume true`` ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO_ROOT, TINY
from custom_nets.training import latest_checkpoint

ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def _train(bundle: Path, datalist: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(_training_command(datalist, *extra), cwd=bundle, capture_output=True, text=True, timeout=600,
                          env=ONE_THREAD)


def _training_command(datalist: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "configs/train.json",
            "--dataset_dir", str(datalist.parent), *TINY, "--max_iterations", "6", "--iterations_per_epoch", "2", *extra]


def _bundle(tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(REPO_ROOT / "bundles" / "cascunet_basic", tmp_path / name,
                                ignore=shutil.ignore_patterns("models", "runs", "eval")))


@pytest.mark.parametrize("num_workers", ["0", "2"])
def test_a_killed_and_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(lung_phantom_datalist, tmp_path,
                                                                               num_workers):
    workers = ["--num_workers", num_workers]
    whole = _bundle(tmp_path, "whole")
    # the uninterrupted run beside the interrupted one, each on one thread (bitwise equality needs the same threads)
    log = tmp_path / "whole.log"
    with log.open("w") as out:
        uninterrupted = subprocess.Popen(_training_command(lung_phantom_datalist, *workers), cwd=whole, stdout=out,
                                         stderr=subprocess.STDOUT, env=ONE_THREAD)
    killed = _bundle(tmp_path, "killed")
    # stopping after epoch 2 of 3 leaves what a kill during epoch 3 leaves: the epoch-2 checkpoint
    first = _train(killed, lung_phantom_datalist, *workers, "--train#trainer#max_epochs", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = _train(killed, lung_phantom_datalist, *workers, "--resume", "true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert uninterrupted.wait(timeout=600) == 0, log.read_text()[-3000:]

    expected = torch.load(latest_checkpoint(whole / "models"), weights_only=True)
    got = torch.load(latest_checkpoint(killed / "models"), weights_only=True)
    assert got["trainer"]["iteration"] == expected["trainer"]["iteration"] == 6
    for name, tensor in expected["model"].items():
        assert torch.equal(got["model"][name], tensor), name
    assert got["resume_state"]["best_metric"] == expected["resume_state"]["best_metric"]
    best_whole = torch.load(whole / "models" / "model.pt", weights_only=True)
    best_killed = torch.load(killed / "models" / "model.pt", weights_only=True)
    assert all(torch.equal(best_killed[k], v) for k, v in best_whole.items()), "model.pt differs"


def test_resume_with_another_schedule_length_is_refused(lung_phantom_datalist, tmp_path):
    bundle = _bundle(tmp_path, "b")
    first = _train(bundle, lung_phantom_datalist, "--num_workers", "0", "--train#trainer#max_epochs", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    longer = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "training", "--config_file",
                             "configs/train.json", "--dataset_dir", str(lung_phantom_datalist.parent), *TINY,
                             "--max_iterations", "8", "--iterations_per_epoch", "2", "--num_workers", "0",
                             "--resume", "true"], cwd=bundle, capture_output=True, text=True, timeout=600)
    assert longer.returncode != 0 and "--max_iterations" in longer.stderr and "schedule of 6" in longer.stderr
