"""RANDose modules and the region-aware loss: shapes, switches, learnable parameters (tiny widths, CPU)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from custom_nets.losses import RegionAwareDoseLoss
from custom_nets.networks.randose import RANDose
from custom_nets.performance.wide_kernel_conv import WideKernelSafeConv3d
from custom_nets.networks.randose_blocks import (
    AttentionFusion,
    ChannelSpatialAttention,
    MultiScaleFeatureExtraction,
    PTVIntegration,
)

TINY = {"widths": (4, 8, 8, 16), "stem_channels": 2}  # 16^3 inputs keep a 2^3 bottleneck


def _count(net: torch.nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in net.modules())


@pytest.mark.parametrize("shape", [(32, 32, 32), (32, 48, 64), (64, 32, 48)])
def test_output_has_the_input_grid_at_several_sizes(shape):
    net = RANDose(in_channels=10, widths=(2, 4, 4, 8, 8), stem_channels=2).eval()  # the paper's S = 5
    with torch.no_grad():
        out = net(torch.randn(2, 10, *shape))
    assert out.shape == (2, 1, *shape) and torch.isfinite(out).all()


def test_each_switch_adds_or_removes_its_modules():
    stages = len(TINY["widths"])
    plain = RANDose(9, use_msfe=False, use_csa=False, use_pi=False, use_af=False, **TINY)
    assert [_count(plain, k) for k in (MultiScaleFeatureExtraction, ChannelSpatialAttention, PTVIntegration,
                                       AttentionFusion)] == [0, 0, 0, 0]
    msfe = RANDose(9, use_csa=False, use_pi=False, use_af=False, **TINY)
    assert _count(msfe, MultiScaleFeatureExtraction) == stages and _count(msfe, ChannelSpatialAttention) == 0
    csa = RANDose(9, use_pi=False, use_af=False, **TINY)
    assert _count(csa, ChannelSpatialAttention) == stages
    pi = RANDose(9, use_af=False, **TINY)
    assert _count(pi, PTVIntegration) == stages - 1  # every encoder stage from the second on
    full = RANDose(9, **TINY)
    assert _count(full, AttentionFusion) == stages - 1  # one per skip connection
    assert _count(full, ChannelSpatialAttention) == stages + 2 * (stages - 1)
    sizes = [sum(p.numel() for p in n.parameters()) for n in (plain, msfe, csa, pi, full)]
    assert sizes[:4] == sorted(sizes[:4]) and len(set(sizes)) == 5  # AF replaces the skip concatenation
    branches = [m for m in full.modules() if isinstance(m, MultiScaleFeatureExtraction)][0].branches
    assert [b.kernel_size for b in branches] == [(3, 3, 3), (5, 5, 5), (7, 7, 7)]


def test_ptv_channel_changes_the_prediction_through_the_ptv_integration():
    torch.manual_seed(0)
    net = RANDose(9, **TINY).eval()
    x = torch.randn(1, 9, 16, 16, 16)
    moved = x.clone()
    moved[:, 1] = torch.roll(x[:, 1], 4, dims=-1)
    with torch.no_grad():
        assert not torch.allclose(net(x), net(moved))


def test_alpha_beta_and_loss_weights_receive_gradients_and_change():
    torch.manual_seed(0)
    net = RANDose(9, **TINY)
    loss_fn = RegionAwareDoseLoss(n_targets=3)
    optimizer = torch.optim.Adam([*net.parameters(), *loss_fn.parameters()], lr=1e-2)
    x = torch.randn(2, 9, 16, 16, 16)
    label = torch.cat([torch.rand(2, 1, 16, 16, 16), torch.ones(2, 1, 16, 16, 16),
                       (torch.rand(2, 10, 16, 16, 16) > 0.8).float()], dim=1)
    named = {n: p for n, p in net.named_parameters() if n.endswith(("alpha", "beta"))}
    assert any(n.endswith("alpha") for n in named) and any(n.endswith("beta") for n in named)
    before = {n: p.detach().clone() for n, p in named.items()}
    weights_before = loss_fn.weights()
    for _ in range(3):
        optimizer.zero_grad()
        loss = loss_fn(net(x), label)
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in named.values())
        assert loss_fn.log_inverse_weights.grad.abs().min() > 0
        optimizer.step()
    assert all(not torch.equal(before[n], p) for n, p in named.items())
    assert all(loss_fn.weights()[k] != weights_before[k] for k in weights_before)


def test_learnable_region_weights_settle_at_the_inverse_region_error_instead_of_zero():
    torch.manual_seed(1)
    loss_fn = RegionAwareDoseLoss(n_targets=1, learnable=True)
    pred = torch.zeros(1, 1, 8, 8, 8)
    label = torch.cat([torch.full((1, 1, 8, 8, 8), 0.5), torch.ones(1, 1, 8, 8, 8),
                       torch.ones(1, 1, 8, 8, 8), torch.ones(1, 1, 8, 8, 8)], dim=1)
    optimizer = torch.optim.Adam(loss_fn.parameters(), lr=0.05)
    for _ in range(400):
        optimizer.zero_grad()
        loss_fn(pred, label).backward()
        optimizer.step()
    assert loss_fn.weights()["w_ptv"] == pytest.approx(2.0, rel=0.02)  # 1 / L1 = 1 / 0.5
    assert loss_fn.weights()["w_oar"] == pytest.approx(2.0, rel=0.02)


def test_fixed_and_switched_off_terms():
    pred = torch.zeros(1, 1, 4, 4, 4)
    dose = torch.full((1, 1, 4, 4, 4), 0.4)
    ptv = torch.zeros(1, 1, 4, 4, 4)
    ptv[..., :2] = 1
    oar = 1 - ptv
    oar[..., 3] = 0
    label = torch.cat([dose, torch.ones_like(dose), ptv, oar], dim=1)
    fixed = RegionAwareDoseLoss(n_targets=1, learnable=False, ptv_weight=2.0, oar_weight=0.5)
    assert list(fixed.parameters()) == []
    assert fixed(pred, label).item() == pytest.approx(0.4 + 2.0 * 0.4 + 0.5 * 0.4)
    assert RegionAwareDoseLoss(1, use_ptv=False, use_oar=False)(pred, label).item() == pytest.approx(0.4)
    assert set(RegionAwareDoseLoss(1, use_oar=False).weights()) == {"w_ptv"}


def test_randose_is_scriptable_and_equal_to_eager():
    torch.manual_seed(0)
    for flags in ({}, {"use_msfe": False, "use_csa": False, "use_pi": False, "use_af": False}):
        net = RANDose(9, **TINY, **flags).eval()
        x = torch.randn(1, 9, 16, 16, 16)
        with torch.no_grad():
            torch.testing.assert_close(torch.jit.script(net)(x), net(x), rtol=1e-5, atol=1e-5)


def test_loss_weights_are_logged_during_training(tmp_path):
    from ignite.engine import Engine

    from custom_nets.reports.training_logs import read_scalars
    from custom_nets.training import log_loss_weights

    loss_fn = RegionAwareDoseLoss(n_targets=1)
    optimizer = torch.optim.SGD(loss_fn.parameters(), lr=0.1)
    label = torch.cat([torch.full((1, 1, 4, 4, 4), 0.5), torch.ones(1, 3, 4, 4, 4)], dim=1)

    def step(engine, batch):
        optimizer.zero_grad()
        loss_fn(torch.zeros(1, 1, 4, 4, 4), label).backward()
        optimizer.step()

    trainer = Engine(step)
    assert log_loss_weights(trainer, loss_fn, tmp_path, every_iterations=2)
    trainer.run(range(6), max_epochs=1)
    steps, values = read_scalars(tmp_path, "loss_weight/w_ptv")
    assert list(steps) == [2, 4, 6] and values[-1] == pytest.approx(loss_fn.weights()["w_ptv"])
    assert not log_loss_weights(Engine(step), torch.nn.L1Loss(), tmp_path)


def test_wide_kernels_train_under_cpu_bf16_autocast_without_corrupting_memory():
    """torch 2.13's oneDNN aborts ("double free or corruption") or hangs in the bf16 weight gradient of a 7^3 conv
    over a 4^3 map, where RANDose's 64^3 CPU profile ends; bf16 training computes such convs in fp32. In a
    subprocess, because the failure kills the process."""
    code = textwrap.dedent("""
        import torch
        from custom_nets.networks.randose_blocks import MultiScaleFeatureExtraction, conv_block
        from custom_nets.training import with_cpu_autocast
        torch.manual_seed(0)
        for block, channels in ((MultiScaleFeatureExtraction(48, 48), 48), (conv_block(24, 48, 7), 24)):
            x = torch.randn(2, channels, 4, 4, 4, requires_grad=True)
            with_cpu_autocast(block).train()(x).sum().backward()
        print("trained")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "trained" in result.stdout, result.stderr[-2000:]


@pytest.mark.parametrize("kernel,size", [(3, 2), (3, 3), (5, 4), (7, 6)])
def test_convolutions_over_maps_their_kernel_covers_get_fp32_weight_gradients_under_bf16_autocast(kernel, size):
    """There oneDNN's bf16 weight gradient was wrong (relative error about 1 against fp32, 16 channels)."""
    torch.manual_seed(0)
    safe = WideKernelSafeConv3d(16, 16, kernel, padding=kernel // 2)
    plain = torch.nn.Conv3d(16, 16, kernel, padding=kernel // 2)
    plain.load_state_dict(safe.state_dict())
    x = torch.randn(2, 16, size, size, size)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = safe(x)
    assert y.dtype == torch.float32
    gradient = torch.randn(y.shape)
    y.backward(gradient)
    plain(x).backward(gradient)
    torch.testing.assert_close(safe.weight.grad, plain.weight.grad, rtol=1e-4, atol=1e-4)


def test_wide_kernel_conv_is_a_conv3d_that_leaves_autocast_only_where_the_kernel_covers_the_map():
    torch.manual_seed(0)
    safe = WideKernelSafeConv3d(4, 6, 7, padding=3)
    plain = torch.nn.Conv3d(4, 6, 7, padding=3)
    plain.load_state_dict(safe.state_dict())
    small, large = torch.randn(1, 4, 4, 4, 4), torch.randn(1, 4, 8, 8, 8)
    torch.testing.assert_close(safe(small), plain(small))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        wide, narrow = safe(small), safe(large)
        assert wide.dtype == torch.float32 and narrow.dtype == torch.bfloat16
    torch.testing.assert_close(wide, plain(small))
    scripted = torch.jit.script(safe)
    torch.testing.assert_close(scripted(large), plain(large))
