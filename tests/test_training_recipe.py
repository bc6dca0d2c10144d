"""The CPU training recipe: the possible-dose region at the network size, padding that invents no dose, the
prior that must be trained, the validation metric as the final evaluation computes it, bf16 autocast."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from custom_nets.io.datalist import load_datalist
from custom_nets.metrics.engine import DoseScoreMetric, DVHScoreMetric
from custom_nets.networks import CascadeUNet, DoseMaskCascade
from custom_nets.networks.randose_blocks import pool_to_stage
from custom_nets.networks import build_dose_network
from custom_nets.performance import ThreadDataLoader
from custom_nets.performance.wide_kernel_conv import WideKernelSafeConv3d
from custom_nets.training import RaiseOnNonFiniteLoss, prepare_training_network, use_cpu_bf16, with_cpu_autocast
from custom_nets.transforms import RandAxialRotateTranslated, ResampleRegiond, RestoreRegiond
from custom_nets.transforms.region import region_box, resample_region, restore_region

from conftest import BUNDLES, REPO_ROOT

TRAIN = ["configs/train.json", "configs/openkbp.json", "configs/cpu.json"]


def test_rotation_padding_invents_no_dose_and_pads_ct_with_air():
    """A possible-dose mask cut by the field-of-view edge is not extended into the padded strip (it used to be,
    with border padding, and those made-up voxels entered the loss); the CT is padded with air."""
    mask = torch.ones(1, 24, 24, 8)
    dose = torch.full((1, 24, 24, 8), 0.8)
    ct = torch.zeros(1, 24, 24, 8)
    transform = RandAxialRotateTranslated(["mask", "dose", "ct"], mode=["nearest", "bilinear", "bilinear"],
                                          prob=1.0, angle_step_deg=360.0, max_translation_voxels=6.0,
                                          translation_axes=(0,), padding_values={"ct": -1.024})
    transform.set_random_state(0)
    out = transform({"mask": mask, "dose": dose, "ct": ct})
    shift = int(round(abs(transform.translation[0])))
    assert shift >= 2
    strip = slice(24 - shift + 1, 24) if transform.translation[0] > 0 else slice(0, shift - 1)
    assert float(out["mask"][:, strip].max()) == 0.0
    assert float(out["dose"][:, strip].max()) == 0.0
    np.testing.assert_allclose(out["ct"][:, strip].numpy(), -1.024, atol=1e-6)


@pytest.mark.parametrize("name", BUNDLES)
def test_the_bundles_rotation_keeps_every_voxels_dose_and_structures_from_one_planned_voxel(name):
    """A small target of two planned dose levels, rotated by the bundle's own augmentation: every rotated target
    voxel carries one of the plan's target doses. A linearly resampled dose beside nearest-neighbour masks put
    doses no plan had on the target's edge, and briefly trained models learnt their small targets cold."""
    from custom_nets.bundles.config import bundle_parser

    parser = bundle_parser(REPO_ROOT / "bundles" / name, ["configs/train.json"],
                           {"rotate_translate_prob": 1.0, "max_translation_voxels": 2.0})
    rotate = next(t for t in parser.get_parsed_content("train#augmentation")
                  if isinstance(t, RandAxialRotateTranslated))
    keys = [str(k) for k in rotate.keys]
    ptv = torch.zeros(1, 24, 24, 4)
    ptv[:, 9:14, 10:13] = 1.0
    dose = 0.2 + 0.8 * ptv
    dose[:, 11, 11] = 0.9  # a second target level inside
    sample = {k: torch.zeros(1, 24, 24, 4) for k in keys}
    sample.update({"dose": dose, "ptv_merged": ptv, "ptv": ptv.repeat(4, 1, 1, 1)[:1]})
    rotate.set_random_state(1)
    out = rotate(sample)
    assert abs(rotate.angle_rad) > 0.1  # rotated off the voxel grid
    inside = out["ptv_merged"] > 0.5
    assert int(inside.sum()) > 5
    planned = torch.unique(dose[ptv > 0.5])
    rotated = torch.unique(torch.as_tensor(out["dose"])[inside])
    assert all(bool(torch.isclose(v, planned).any()) for v in rotated), (rotated, planned)


def test_region_box_holds_the_region_with_one_scale_and_stays_inside():
    mask = torch.zeros(128, 128, 128)
    mask[30:90, 10:119, 40:121] = 1
    box = region_box(mask, (64, 64, 64), margin_voxels=4)
    start, size = box.tolist()
    assert all(s >= 0 and s + e <= 128 for s, e in zip(start, size))
    assert all(s <= lo - 4 or s == 0 for s, lo in zip(start, (30, 10, 40)))
    assert all(s + e >= hi + 4 or s + e == 128 for s, e, hi in zip(start, size, (90, 119, 121)))
    assert size == [117, 117, 117]  # 109 + 2 * 4 on the longest axis sets one scale for all three
    small = torch.zeros(96, 96, 96)
    small[40:50, 40:50, 40:50] = 1
    assert region_box(small, (64, 64, 64)).tolist()[1] == [64, 64, 64]  # a small region is cropped, not upsampled
    with pytest.raises(ValueError, match="smaller than the network size"):
        region_box(torch.ones(48, 48, 48), (64, 64, 64))
    with pytest.raises(ValueError, match="empty"):
        region_box(torch.zeros(96, 96, 96), (64, 64, 64))


def test_mask_aware_pooling_and_restore():
    """The possible-dose mask pools by maximum, the dose by its mean over possible-dose voxels (no zeros from
    outside leak in), masks by area; a smooth dose comes back on the patient's grid closely."""
    shape = (96, 96, 64)
    grid = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in shape], indexing="ij"))
    mask = (((grid[0] - 48) / 40) ** 2 + ((grid[1] - 48) / 30) ** 2 + ((grid[2] - 32) / 28) ** 2 <= 1)[None]
    dose = (0.2 + 0.8 * torch.exp(-((grid - torch.tensor([48.0, 48.0, 32.0])[:, None, None, None]) ** 2).sum(0) / 800)
            )[None] * mask
    box = region_box(mask, (32, 32, 32))
    pooled_mask = resample_region(mask, box, (32, 32, 32), "max")
    pooled_dose = resample_region(dose, box, (32, 32, 32), "masked_mean", mask)
    plain = resample_region(dose, box, (32, 32, 32), "mean")
    area = resample_region(mask, box, (32, 32, 32), "mean")
    assert pooled_mask.shape == (1, 32, 32, 32) and set(torch.unique(pooled_mask).tolist()) == {0.0, 1.0}
    assert float(pooled_dose[pooled_mask > 0].min()) >= 0.2 - 1e-6  # no blend with the zeros outside
    assert float(plain[pooled_mask > 0].min()) < 0.1  # what plain averaging would do at the edge
    assert 0.0 < float(area[(area > 0) & (area < 1)].mean()) < 1.0
    back = restore_region(pooled_dose, box, shape)
    assert back.shape == (1, *shape)
    assert float((back - dose).abs()[mask].mean()) < 0.01


def test_restore_puts_the_prediction_back_with_the_case_geometry():
    from monai.data import MetaTensor

    affine = torch.diag(torch.tensor([2.0, 3.0, 2.5, 1.0], dtype=torch.float64))
    mask = torch.zeros(1, 80, 80, 80)
    mask[:, 10:70, 20:60, 5:75] = 1
    data = {"ct": MetaTensor(torch.randn(1, 80, 80, 80), affine=affine),
            "possible_dose_mask": MetaTensor(mask, affine=affine)}
    pooled = ResampleRegiond(["ct"], (32, 32, 32))(data)
    box = pooled["region_box"]
    assert pooled["ct"].shape == (1, 32, 32, 32)
    world_first = affine[:3, :3] @ (box[0].double() + 0.5 * box[1].double() / 32 - 0.5)
    np.testing.assert_allclose(pooled["ct"].affine[:3, 3].numpy(), world_first.numpy(), atol=1e-9)
    restored = RestoreRegiond("pred", like_key="possible_dose_mask")({**pooled, "pred": torch.ones(1, 32, 32, 32)})
    assert restored["pred"].shape == (1, 80, 80, 80)
    np.testing.assert_array_equal(restored["pred"].affine.numpy(), affine.numpy())
    inside = torch.zeros(80, 80, 80, dtype=torch.bool)
    (x, y, z), (sx, sy, sz) = box.tolist()
    inside[x:x + sx, y:y + sy, z:z + sz] = True
    assert bool((restored["pred"][0][inside] == 1).all()) and bool((restored["pred"][0][~inside] == 0).all())


def test_cpu_profile_trains_and_validates_on_the_same_network_input(openkbp_mini_datalist):
    """Training (augmentation off) and validation give the network the same input for a case: the same region,
    pooled the same way; validation keeps the full-resolution label for scoring."""
    parser = ConfigParser()
    parser.read_config([str(REPO_ROOT / "bundles" / "cascunet_basic" / name) for name in TRAIN])
    parser["dataset_dir"] = str(openkbp_mini_datalist.parent)
    parser["train#augmentation"] = []
    entry = load_datalist(openkbp_mini_datalist, "training")[0]
    trained = parser.get_parsed_content("train#preprocessing", instantiate=True)(entry)
    trained = trained[0] if isinstance(trained, list) else trained
    validated = parser.get_parsed_content("validate#preprocessing", instantiate=True)(entry)
    assert trained["image"].shape == validated["image"].shape == (10, 64, 64, 64)
    # the training cache keeps the inputs as float16 (cache_input_dtype): the same values, rounded once
    rounded = validated["image"].numpy().astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(trained["image"].numpy(), rounded)
    assert validated["label"].shape[1:] == (128, 128, 128) and trained["label"].shape[1:] == (64, 64, 64)


class _FailsAtTwo(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        if index == 2:
            raise KeyError("Key `ptv` of transform `ConcatItemsd` was missing in the data")
        return torch.tensor([index])


def test_the_training_loader_raises_its_data_errors():
    """The batches before a failing sample are used, then its error is raised in the loop (MONAI's
    ThreadDataLoader ends the epoch there without a word); every bundle's training and validation use it."""
    for prefetch in (True, False):  # a batch prepared beside the network, or in turn (the quickstart)
        seen = []
        with pytest.raises(KeyError, match="ptv"):
            for batch in ThreadDataLoader(_FailsAtTwo(), batch_size=1, prefetch=prefetch):
                seen.append(int(batch))
        assert seen == [0, 1]
        repeated = ThreadDataLoader(torch.utils.data.TensorDataset(torch.arange(3)), batch_size=2, repeats=2,
                                    prefetch=prefetch)
        assert [batch[0].tolist() for batch in repeated] == [[0, 1], [0, 1], [2], [2]]
    for name in BUNDLES:
        parser = ConfigParser()
        parser.read_config(str(REPO_ROOT / "bundles" / name / "configs" / "train.json"))
        for section in ("train", "validate"):
            assert parser[section]["dataloader"]["_target_"] == "custom_nets.performance.ThreadDataLoader", name


def test_ptv_integration_keeps_a_small_target_at_every_position():
    """A 6-voxel PTV cube reaches the 1/16-scale stage wherever it lies (trilinear resizing lost it in 7 of 16
    positions)."""
    for offset in range(16):
        ptv = torch.zeros(1, 1, 64, 64, 64)
        ptv[..., 20 + offset:26 + offset, 20 + offset:26 + offset, 20 + offset:26 + offset] = 1
        assert float(pool_to_stage(ptv, [4, 4, 4]).max()) == 1.0


def test_a_mask_cascade_without_a_trained_prior_refuses_prior_masks(tmp_path):
    with pytest.warns(UserWarning, match="no prior weights"):
        network = build_dose_network(5, (0.1, 0.5, 0.9), [2, 4, 8], [2, 4, 8],
                                     prior_checkpoint=str(tmp_path / "missing.pt"))
    x = torch.zeros(1, 5, 16, 16, 16)
    assert network.eval()(torch.zeros(1, 8, 16, 16, 16)).shape == (1, 1, 16, 16, 16)  # oracle masks: fine
    with pytest.raises(RuntimeError, match="prior was never trained"):
        network(x)
    reloaded = DoseMaskCascade(5, (0.1, 0.5, 0.9), [2, 4, 8], [2, 4, 8])
    reloaded.load_state_dict(network.state_dict())  # the flag travels with the checkpoint
    with pytest.raises(RuntimeError, match="prior was never trained"):
        reloaded.eval()(x)
    fresh = build_dose_network(5, (0.1, 0.5, 0.9), [2, 4, 8], [2, 4, 8])  # inference config: weights come later
    assert fresh.eval()(x).shape == (1, 1, 16, 16, 16)
    torch.save(CascadeUNet(5, [2, 4, 8], [2, 4, 8]).state_dict(), tmp_path / "prior.pt")
    trained = build_dose_network(5, (0.1, 0.5, 0.9), [2, 4, 8], [2, 4, 8], prior_checkpoint=str(tmp_path / "prior.pt"))
    assert trained.eval()(x).shape == (1, 1, 16, 16, 16)


def test_validation_metrics_clamp_negative_dose_like_the_final_evaluation():
    """A negative prediction scores as 0 Gy, as the physical post-processing makes it before evaluation."""
    label = torch.zeros(1, 2 + 7 + 3, 8, 8, 8)
    label[:, 1] = 1
    label[:, 2, 2:6, 2:6, 2:6] = 1
    prediction = torch.full((1, 1, 8, 8, 8), -0.1)
    metric = DoseScoreMetric(70.0)
    metric(prediction, label)
    assert float(metric.aggregate()) == 0.0
    dvh = DVHScoreMetric(70.0, "openkbp", voxel_volume_mm3=8.0)
    dvh(prediction, label)
    assert float(dvh.aggregate()) == 0.0


def test_cpu_bf16_autocast_trains_in_bf16_and_validates_in_fp32():
    torch.manual_seed(0)
    network = CascadeUNet(3, [4, 8], [4, 8])
    reference = CascadeUNet(3, [4, 8], [4, 8])
    reference.load_state_dict(network.state_dict())
    seen: list[torch.dtype] = []
    network.stage_a.encoder[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    wrapped = with_cpu_autocast(network)
    x = torch.randn(1, 3, 16, 16, 16)
    out = wrapped.train()(x)
    assert out.dtype == torch.float32 and seen[-1] == torch.bfloat16
    torch.testing.assert_close(out, reference.train()(x), atol=0.05, rtol=0.05)
    assert torch.equal(wrapped.eval()(x), reference.eval()(x)) and seen[-1] == torch.float32
    assert set(wrapped.state_dict()) == set(reference.state_dict())
    convolutions = [m for m in wrapped.modules() if isinstance(m, torch.nn.Conv3d)]
    assert convolutions and all(isinstance(m, WideKernelSafeConv3d) for m in convolutions)  # oneDNN's bf16 bug
    assert not any(isinstance(m, WideKernelSafeConv3d) for m in with_cpu_autocast(reference, False).modules())
    assert use_cpu_bf16("cpu", False) is False
    assert use_cpu_bf16("cpu", "false") is False and use_cpu_bf16("cpu", "True") is True  # as fire hands them over
    assert use_cpu_bf16("cpu", "no") is False
    with pytest.raises(ValueError, match="--cpu_bf16: expected true, false or auto"):
        use_cpu_bf16("cpu", "maybe")
    with pytest.raises(ValueError, match="cpu_bf16"):
        use_cpu_bf16("cuda", True)
    assert prepare_training_network(CascadeUNet(3, [4, 8], [4, 8]), "cpu", cpu_bf16=False).training


def test_training_stops_with_an_error_at_the_first_non_finite_loss():
    """A diverged training (a tiny mask cascade trained to NaN weights on one CPU) must fail, not save its weights and
    exit 0; every bundle's trainer has the handler."""
    from ignite.engine import Engine

    losses = [0.5, 0.4, float("nan"), 0.3]
    engine = Engine(lambda engine, batch: [{"loss": torch.tensor(batch)}])
    RaiseOnNonFiniteLoss().attach(engine)
    with pytest.raises(FloatingPointError, match="the training loss is nan at iteration 3"):
        engine.run(losses, max_epochs=1)
    engine = Engine(lambda engine, batch: [{"loss": torch.tensor(batch)}])
    RaiseOnNonFiniteLoss().attach(engine)
    assert engine.run([0.5, 0.4], max_epochs=1).iteration == 2
    for name in BUNDLES:
        parser = ConfigParser()
        parser.read_config(str(REPO_ROOT / "bundles" / name / "configs" / "train.json"))
        assert {"_target_": "custom_nets.training.RaiseOnNonFiniteLoss"} in parser["train"]["handlers"], name
