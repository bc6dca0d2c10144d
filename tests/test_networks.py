"""CascU-Net, the dose-mask cascade and the cascade loss, at tiny widths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from custom_nets.losses import CascadeDoseLoss, masked_l1, per_case_masked_l1
from custom_nets.networks import CascadeUNet, DoseMaskCascade
from custom_nets.phantoms import make_phantom
from custom_nets.networks.checkpoints import check_checkpoint
from custom_nets.profiles import LUNG, MERGED_PTV_CHANNEL, dose_mask_thresholds
from custom_nets.transforms import dose_masks, merge_ptv

TINY_A, TINY_B = (2, 4, 8, 16, 32), (4, 8, 16, 32, 64)


def test_cascade_layout_follows_the_paper():
    net = CascadeUNet(9)
    assert [stage[0].conv.out_channels for stage in net.stage_a.encoder] == [16, 32, 64, 128, 256]
    assert [stage[0].conv.out_channels for stage in net.stage_b.encoder] == [32, 64, 128, 256, 512]
    assert net.stage_b.encoder[0][0].conv.in_channels == 9 + 16  # input + stage A's 16 feature maps
    assert [stage[0].conv.stride for stage in net.stage_a.encoder] == [(1, 1, 1)] + [(2, 2, 2)] * 4
    assert len(net.stage_a.decoder[-1]) == 1 and all(len(d) == 2 for d in net.stage_a.decoder[:-1])
    assert isinstance(net.stage_a.encoder[0][0].adn.N, torch.nn.InstanceNorm3d)
    assert net.stage_a.encoder[0][0].adn.N.affine
    assert net.head_a.kernel_size == (1, 1, 1) and net.head_b.kernel_size == (1, 1, 1)


@pytest.mark.parametrize("size", [(32, 32, 32), (32, 48, 16)])
def test_training_returns_both_stages_eval_returns_stage_b(size):
    net = CascadeUNet(5, TINY_A, TINY_B)
    x = torch.randn(2, 5, *size)
    assert net(x).shape == (2, 2, *size)
    net.eval()
    assert net(x).shape == (2, 1, *size)
    with pytest.raises(ValueError, match="divisible by 16"):
        net(torch.randn(1, 5, 24, 16, 16))
    with pytest.raises(ValueError, match="expected 5 input channels"):
        net(torch.randn(1, 4, 16, 16, 16))


def test_torchscript_equals_eager():
    net = CascadeUNet(5, TINY_A, TINY_B).eval()
    x = torch.randn(1, 5, 32, 32, 16)
    scripted = torch.jit.script(net)
    torch.testing.assert_close(scripted(x), net(x), rtol=0, atol=1e-6)


def test_prescription_relative_cascade_scales_its_dose_with_the_top_prescription_exactly(tmp_path):
    """Mixed prescription schemes: with ``ptv_channel`` the network sees the merged PTV relative to the case's top
    level, so the same plan prescribed at another level is predicted exactly that much higher or lower."""
    torch.manual_seed(0)
    net = CascadeUNet(5, TINY_A, TINY_B, ptv_channel=MERGED_PTV_CHANNEL).eval()
    x = torch.rand(2, 5, 32, 32, 16)
    x[:, MERGED_PTV_CHANNEL] = 0.0
    x[0, MERGED_PTV_CHANNEL, 8:16, 8:16, 4:8] = 50 / 65  # a lone PTV50
    x[1, MERGED_PTV_CHANNEL, 8:16, 8:16, 4:8] = 60 / 65  # PTV60 around a PTV65
    x[1, MERGED_PTV_CHANNEL, 10:14, 10:14, 5:7] = 1.0
    dose = net(x)
    scaled = x.clone()
    scaled[:, MERGED_PTV_CHANNEL] *= 60 / 50
    torch.testing.assert_close(net(scaled), dose * 60 / 50)
    net.ptv_channel = None  # the same weights without the scaling
    relative = x.clone()
    relative[0, MERGED_PTV_CHANNEL] /= 50 / 65  # the second case's top level is 1 already
    no_target = x.clone()
    no_target[:, MERGED_PTV_CHANNEL] = 0.0
    plain, plain_no_target = net(relative), net(no_target)
    net.ptv_channel = MERGED_PTV_CHANNEL
    torch.testing.assert_close(dose[0], plain[0] * 50 / 65)
    torch.testing.assert_close(dose[1], plain[1])
    torch.testing.assert_close(net(no_target), plain_no_target)  # no target: nothing to scale by
    torch.testing.assert_close(torch.jit.script(net)(x), dose, rtol=0, atol=1e-6)
    assert net.train()(x).shape == (2, 2, 32, 32, 16)
    # the checkpoint records it, so a network of the other kind refuses it instead of predicting at another level
    torch.save(net.state_dict(), tmp_path / "relative.pt")
    torch.save(CascadeUNet(5, TINY_A, TINY_B).state_dict(), tmp_path / "paper.pt")
    with pytest.raises(ValueError, match="prescription_relative"):
        check_checkpoint(tmp_path / "relative.pt", CascadeUNet(5, TINY_A, TINY_B))
    with pytest.raises(ValueError, match="dose relative to the top prescription"):
        check_checkpoint(tmp_path / "paper.pt", CascadeUNet(5, TINY_A, TINY_B, ptv_channel=MERGED_PTV_CHANNEL))
    mask_net = DoseMaskCascade(5, (0.5,), TINY_A, TINY_B, ptv_channel=MERGED_PTV_CHANNEL)
    assert mask_net.prior.ptv_channel == mask_net.refine.ptv_channel == MERGED_PTV_CHANNEL
    assert LUNG.input_channel_names()[MERGED_PTV_CHANNEL].startswith("PTV (merged")


def test_mask_cascade_uses_the_prior_or_given_masks():
    fractions = dose_mask_thresholds(3)
    net = DoseMaskCascade(5, fractions, TINY_A, TINY_B).eval()
    x = torch.randn(1, 5, 32, 32, 16)
    prior_dose = net.prior(x)
    given = torch.cat([x, dose_masks(prior_dose, fractions)], dim=1)
    torch.testing.assert_close(net(x), net(given))  # prior masks == the same masks given explicitly
    assert not any(p.requires_grad for p in net.prior.parameters())
    net.train()
    assert not net.prior.training and net(x).shape == (1, 2, 32, 32, 16)
    scripted = torch.jit.script(net.eval())
    torch.testing.assert_close(scripted(x), net(x), rtol=0, atol=1e-6)


def test_prior_weights_load_from_a_basic_checkpoint(tmp_path):
    basic = CascadeUNet(5, TINY_A, TINY_B)
    torch.save(basic.state_dict(), tmp_path / "model.pt")
    net = DoseMaskCascade(5, (0.5,), TINY_A, TINY_B, prior_checkpoint=str(tmp_path / "model.pt"))
    for key, value in basic.state_dict().items():
        torch.testing.assert_close(net.prior.state_dict()[key], value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        net.load_prior(tmp_path / "missing.pt")


def test_cascade_loss_weights_and_mask():
    dose = torch.zeros(1, 1, 2, 2, 2)
    mask = torch.zeros(1, 1, 2, 2, 2)
    mask[..., 0] = 1
    label = torch.cat([dose, mask], dim=1)
    pred_b = torch.full((1, 1, 2, 2, 2), 0.2)
    pred_a = torch.full((1, 1, 2, 2, 2), 0.4)
    pred_b[..., 1] = 100.0  # outside the possible-dose mask: ignored
    loss = CascadeDoseLoss()(torch.cat([pred_b, pred_a], dim=1), label)
    assert float(loss) == pytest.approx(1.0 * 0.2 + 0.5 * 0.4)
    assert float(CascadeDoseLoss()(pred_b, label)) == pytest.approx(0.2)
    assert float(masked_l1(pred_b, dose, mask)) == pytest.approx(0.2)
    ptv = torch.zeros(1, 1, 2, 2, 2)
    ptv[0, 0, 0, 0, 0] = 60 / 65  # one target voxel (merged PTV channel), where stage B is off by 0.5
    pred_b[0, 0, 0, 0, 0] = 0.5
    with_targets = CascadeDoseLoss(target_weight=0.25)(torch.cat([pred_b, pred_a], dim=1), torch.cat([label, ptv], 1))
    error_b = (0.5 + 3 * 0.2) / 4
    assert float(with_targets) == pytest.approx(1.0 * (error_b + 0.25 * 0.5) + 0.5 * (0.4 + 0.25 * 0.4))
    with pytest.raises(ValueError, match="ptv_merged"):
        CascadeDoseLoss(target_weight=0.25)(pred_b, label)
    # the target term averages per case: one voxel off by 1 in a one-voxel target and 0 in an eight-voxel target
    # weigh 0.5, not 1/9; a case without targets does not count
    pred, dose = torch.zeros(3, 1, 2, 2, 2), torch.zeros(3, 1, 2, 2, 2)
    pred[0, 0, 0, 0, 0] = 1.0
    targets = torch.zeros(3, 1, 2, 2, 2)
    targets[0, 0, 0, 0, 0] = 1.0
    targets[1] = 1.0
    assert float(per_case_masked_l1(pred, dose, targets)) == pytest.approx(0.5)
    assert float(masked_l1(pred, dose, targets)) == pytest.approx(1 / 9)


def test_tiny_cascade_overfits_one_phantom():
    """Loss falls at least 5x within a few hundred iterations on one lung phantom (relative units)."""
    torch.manual_seed(0)
    case = make_phantom("lung", 2, (16, 16, 16))
    ct = torch.as_tensor(np.clip(case.ct_hu, -1024, 1500) / 1000.0, dtype=torch.float32)[None]
    ptv = torch.stack([torch.as_tensor(case.structures.get(n, np.zeros(case.shape, bool))) for n in LUNG.target_names])
    rx = torch.tensor([case.prescriptions_gy.get(n, 0.0) for n in LUNG.target_names])
    oars = torch.stack([torch.as_tensor(case.structures[n]) for n in LUNG.oars]).float()
    body = torch.as_tensor(case.structures["Body"])[None].float()
    x = torch.cat([ct, merge_ptv(ptv, rx, LUNG.reference_dose_gy), oars, body])[None]
    label = torch.cat([torch.as_tensor(case.dose_gy)[None] / LUNG.reference_dose_gy,
                       torch.as_tensor(case.possible_dose_mask)[None].float()])[None]
    net = CascadeUNet(x.shape[1], (4, 8, 16, 32), (4, 8, 16, 32))  # four levels: 16^3 keeps 2^3 at the bottom
    loss_fn = CascadeDoseLoss()
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(200):
        optimizer.zero_grad()
        loss = loss_fn(net(x), label)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert min(losses[-20:]) < losses[0] / 5, (losses[0], losses[-1])


@pytest.mark.parametrize("name", ["cascunet_basic", "cascunet_dm5", "randose"])
def test_the_inference_network_is_built_zeroed_for_its_checkpoint_and_then_predicts_as_trained(name):
    """The inference configs build the network without random weights (the checkpoint replaces them): zero until
    loaded, then bit for bit the training config's network with the same weights."""
    import json

    from custom_nets.bundles.config import bundle_parser
    from tests.conftest import CONFIGS, REPO_ROOT, TINY

    tiny = {TINY[i][2:]: json.loads(TINY[i + 1]) for i in range(0, len(TINY), 2)}
    settings = {**tiny, "prior_checkpoint": None, "mask_source": "reference"}
    bundle = REPO_ROOT / "bundles" / name
    torch.manual_seed(0)
    trained = bundle_parser(bundle, json.loads(CONFIGS["train"].replace("'", '"')), settings)
    trained = trained.get_parsed_content("network_def").eval()
    infer = bundle_parser(bundle, json.loads(CONFIGS["infer"].replace("'", '"')), settings)
    built = infer.get_parsed_content("network_def")
    assert type(built) is type(trained) and all(not t.any() for t in built.state_dict().values())
    built.load_state_dict(trained.state_dict())
    x = torch.rand(1, int(infer.get_parsed_content("in_channels")), 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(built.eval()(x), trained(x), rtol=0, atol=0)


def test_a_shape_only_build_leaves_the_compiler_unimported():
    """Building a network on the meta device (predict's grid check, the FLOP counter) used to import torch._dynamo
    through the meta ``normal_``: 0.9 s of every `predict`."""
    import subprocess
    import sys

    code = ("import sys, torch\nfrom custom_nets.networks import RANDose, build_dose_network\n"
            "with torch.device('meta'):\n    build_dose_network(7)\n    RANDose(4)\n"
            "print('torch._dynamo' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
