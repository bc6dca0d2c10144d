"""Mask sources and test-time augmentation: the oracle path trains and evaluates, flips average correctly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from monai.inferers import SimpleInferer

from conftest import REPO_ROOT, run_bundle_commands
from custom_nets.inferers import FlipTTAInferer
from test_bundles import TINY


def test_flip_tta_averages_the_flipped_predictions():
    torch.manual_seed(0)
    weights = torch.rand(1, 1, 4, 4, 2)

    def network(x: torch.Tensor) -> torch.Tensor:  # not flip-equivariant: position-dependent weights
        return x * weights

    x = torch.rand(1, 1, 4, 4, 2)
    tta = FlipTTAInferer(SimpleInferer(), flip_axes=[[], [0], [2], [0, 2]])
    expected = sum(torch.flip(network(torch.flip(x, d)), d) if d else network(x)
                   for d in [(), (2,), (4,), (2, 4)]) / 4
    torch.testing.assert_close(tta(x, network), expected)
    torch.testing.assert_close(FlipTTAInferer(SimpleInferer())(x, network), network(x))


def test_reference_masks_train_and_evaluate_as_an_oracle(lung_phantom_datalist, tmp_path):
    bundle = Path(shutil.copytree(REPO_ROOT / "bundles" / "cascunet_dm3", tmp_path / "cascunet_dm3"))
    common = ["--dataset_dir", str(lung_phantom_datalist.parent), *TINY, "--mask_source", "reference"]
    run_bundle_commands(bundle, [
        ["run", "training", "--config_file", "['configs/train.json','configs/cpu.json']", *common,
         "--max_iterations", "2", "--iterations_per_epoch", "2", "--num_workers", "0"],
        ["run", "--config_file", "['configs/inference.json','configs/evaluate.json','configs/cpu.json']", *common]])
    info = json.loads((bundle / "eval" / "validation_masks-reference" / "run_info.json").read_text())
    assert info["mask_source"] == "reference" and info["dose_masks"] == [0.1, 0.5, 0.9]


def test_training_with_prior_masks_needs_the_prior_weights(tmp_path):
    import pytest

    from custom_nets.networks import build_dose_network

    with pytest.raises(FileNotFoundError, match="train the basic bundle first"):
        build_dose_network(9, (0.1, 0.5, 0.9), prior_checkpoint=str(tmp_path / "model.pt"), require_prior=True)
    assert build_dose_network(9, (0.1, 0.5, 0.9), [2, 4, 8, 16, 32], [2, 4, 8, 16, 32]).n_masks == 3
