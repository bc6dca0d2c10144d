"""Speed work must not change the dose: inference modes against eager fp32 on trained bundles and real OpenKBP
input, the fused norm against PyTorch's, gradient checkpointing against plain backprop; and the benchmark command
runs end to end at reduced settings (exercised, not timed)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from conftest import BUNDLES, CONFIGS, TINY, require_shared
from custom_nets.bundles.config import bundle_parser
from custom_nets.io.datalist import load_datalist
from custom_nets.networks import CascadeUNet, RANDose
from custom_nets.performance.fused_norm import FusedInstanceNormAct3d, fuse_instance_norm_activations
from custom_nets.performance.inference import prepare_network
from custom_nets.training import with_gradient_checkpointing

TINY_IDS = {TINY[i][2:]: json.loads(TINY[i + 1]) for i in range(0, len(TINY), 2)}
EXACT_GY = 1e-4


@pytest.mark.parametrize("name", BUNDLES)
def test_inference_modes_give_the_eager_dose(openkbp_bundles, openkbp_mini_datalist, name):
    bundle = openkbp_bundles / name
    parser = bundle_parser(bundle, json.loads(CONFIGS["infer"].replace("'", '"')),
                           {**TINY_IDS, "dataset_dir": str(openkbp_mini_datalist.parent)})
    reference_gy = float(parser.get_parsed_content("reference_dose_gy"))
    network = parser.get_parsed_content("network_def").eval()
    network.load_state_dict(torch.load(bundle / "models" / "model.pt", map_location="cpu", weights_only=True))
    entry = load_datalist(openkbp_mini_datalist, "validation")[0]
    x = parser.get_parsed_content("preprocessing")(entry)["image"][None].as_tensor()  # the CPU profile's region
    assert x.shape[2:] == (32, 32, 32)
    with torch.no_grad():
        eager = network(x)
        fp64 = copy.deepcopy(network).double()(x.double())
        for mode in ("torchscript", "frozen"):  # the same arithmetic as eager
            out = prepare_network(network, mode)(x)
            assert reference_gy * (out - eager).abs().max() <= EXACT_GY, mode
        fast = prepare_network(network, "fast")(x)
    # fast sums the convolutions in another order: within fp32's own error (eager against fp64), never more
    fp32_error_gy = reference_gy * float((eager.double() - fp64).abs().max())
    assert reference_gy * float((fast - eager).abs().max()) <= EXACT_GY + 4 * fp32_error_gy
    assert fast.shape == eager.shape and fast.is_contiguous()
    if "fractions" in network.state_dict():  # bf16: a mask variant's prior, which makes the masks, stays fp32
        bf16 = prepare_network(network, "bf16")
        with torch.no_grad():
            torch.testing.assert_close(bf16.module.prior(x), network.prior(x), rtol=0, atol=0)
            assert bf16(x).dtype == torch.float32


@pytest.mark.parametrize("cases", [1, 2])  # one case: PyTorch's batch norm; more: the float32 passes
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last_3d])
def test_fused_norm_keeps_float32_statistics_for_bf16_activations(cases, layout):
    torch.manual_seed(0)
    fused = FusedInstanceNormAct3d(4, negative_slope=0.01)
    with torch.no_grad():
        fused.weight.uniform_(0.5, 1.5)
        fused.bias.uniform_(-0.5, 0.5)
    x = (torch.randn(cases, 4, 16, 16, 16) * 50 + 300).to(memory_format=layout)  # bf16 statistics would lose it
    with torch.no_grad():
        expected = fused(x)
        out = fused(x.bfloat16())
    assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=layout)
    assert float((out.float() - expected).abs().mean()) < 0.02  # the input's own bf16 rounding (300 +- 1)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last_3d])
@pytest.mark.parametrize("act", [nn.ReLU(), nn.LeakyReLU(0.01)])
def test_fused_instance_norm_equals_pytorchs(layout, act):
    torch.manual_seed(0)
    norm = nn.InstanceNorm3d(6, affine=True)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    slope = getattr(act, "negative_slope", 0.0)
    fused = FusedInstanceNormAct3d(6, negative_slope=slope)
    fused.load_state_dict(norm.state_dict())
    x = (torch.randn(2, 6, 12, 10, 8) * 3 + 5).contiguous(memory_format=layout)
    with torch.no_grad():
        expected = act(copy.deepcopy(norm).double()(x.double().contiguous()))
        out = fused(x)
    assert out.is_contiguous(memory_format=layout)
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=2e-6)


def test_fusion_finds_every_norm_activation_pair_and_keeps_the_state_dict():
    network = CascadeUNet(5, (2, 4, 8, 16, 32), (2, 4, 8, 16, 32))
    keys = list(network.state_dict())
    norms = sum(isinstance(m, nn.InstanceNorm3d) for m in network.modules())
    assert fuse_instance_norm_activations(network) == norms
    assert list(network.state_dict()) == keys
    assert not any(isinstance(m, (nn.ReLU, nn.LeakyReLU)) for m in network.modules())


@pytest.mark.parametrize("make", [lambda: CascadeUNet(5, (2, 4, 8, 16, 32), (2, 4, 8, 16, 32)),
                                  lambda: RANDose(5, widths=(2, 4, 8, 16, 32), stem_channels=2)])
def test_fast_mode_runs_every_convolution_in_onednn(make):
    """PyTorch's heuristic sends small batch-of-one fp32 3D convolutions (the deep stages) to its im2col path;
    fast mode calls oneDNN for each, with the same parameters and the eager result within fp32 rounding."""
    from custom_nets.performance.onednn_conv import OneDnnConv3d, route_convolutions_to_onednn

    network = make().eval()
    keys = list(network.state_dict())
    x = torch.rand(1, 5, 32, 32, 32)
    with torch.no_grad(), torch.profiler.profile() as before:
        eager = network(x)
    with torch.no_grad():
        fp32_error = float((eager.double() - copy.deepcopy(network).double()(x.double())).abs().max())
    assert any("slow_conv3d" in e.key for e in before.key_averages())  # what fast mode no longer runs
    convolutions = sum(isinstance(m, nn.Conv3d) for m in network.modules())
    fast = prepare_network(network, "fast")
    with torch.no_grad(), torch.profiler.profile() as after:
        out = fast(x)
    assert not any("slow_conv3d" in e.key for e in after.key_averages())
    assert route_convolutions_to_onednn(network) == convolutions
    assert all(isinstance(m, OneDnnConv3d) for m in network.modules() if isinstance(m, nn.Conv3d))
    assert list(network.state_dict()) == keys
    # another summation order: within fp32's own error (eager against fp64), as fast mode always was
    assert float((out - eager).abs().max()) <= 4 * fp32_error + 1e-6


def test_operator_profile_splits_a_forward_pass_by_kind():
    from custom_nets.networks.complexity import forward_flops
    from custom_nets.performance.operator_profile import operator_kind, profile_operators

    assert operator_kind("aten::upsample_trilinear3d") == "upsampling"
    assert operator_kind("aten::mkldnn_convolution") == "convolution and matrix product"
    assert operator_kind("aten::native_batch_norm") == "normalisation and activation"
    assert operator_kind("aten::cat") == "concatenation"
    network = CascadeUNet(5, (2, 4, 8, 16, 32), (2, 4, 8, 16, 32)).eval()
    flops = forward_flops(network, (1, 5, 32, 32, 32))
    profile = profile_operators(prepare_network(network, "frozen"), torch.rand(1, 5, 32, 32, 32), flops, 100.0)
    assert sum(profile["seconds"].values()) == pytest.approx(profile["forward_s"])
    assert sum(profile["shares"].values()) == pytest.approx(1.0)
    for kind in ("convolution and matrix product", "normalisation and activation", "upsampling", "concatenation"):
        assert profile["seconds"][kind] > 0, kind
    assert profile["convolution_gflops"] > 0 and profile["convolution_share_of_peak"] > 0


@pytest.mark.parametrize("make", [lambda: CascadeUNet(5, (2, 4, 8, 16, 32), (2, 4, 8, 16, 32)),
                                  lambda: RANDose(5, widths=(2, 4, 8, 16, 32), stem_channels=2)])
def test_gradient_checkpointing_gives_the_same_gradients(make):
    torch.manual_seed(0)
    plain = make().train()
    checkpointed = with_gradient_checkpointing(copy.deepcopy(plain))
    assert list(checkpointed.state_dict()) == list(plain.state_dict())
    x = torch.rand(2, 5, 32, 32, 32)
    for network in (plain, checkpointed):
        network(x).square().mean().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("make", [lambda: CascadeUNet(5, (2, 4, 8, 16, 32), (2, 4, 8, 16, 32)),
                                  lambda: RANDose(5, widths=(2, 4, 8, 16, 32), stem_channels=2)])
def test_the_benchmarks_networks_predict_a_constant_clinical_dose(make):
    from custom_nets.performance.end_to_end import constant_dose_heads

    network = constant_dose_heads(make().eval(), 0.5)
    with torch.no_grad():
        dose = network(torch.rand(1, 5, 32, 32, 32))
    torch.testing.assert_close(dose, torch.full_like(dose, 0.5))
    with pytest.raises(ValueError, match="Conv3d has no single-channel 1x1x1 convolution"):
        constant_dose_heads(nn.Conv3d(1, 2, 3), 0.5)


@pytest.mark.parametrize("mode", ["frozen", "fast", "bf16"])
def test_the_inference_handler_prepares_the_engines_network_in_place_as_a_copy_would(mode):
    from types import SimpleNamespace

    from custom_nets.performance import OptimiseForInference

    torch.manual_seed(0)
    network = CascadeUNet(5, (2, 4, 8, 16, 32), (2, 4, 8, 16, 32)).eval()
    before = {k: v.clone() for k, v in network.state_dict().items()}
    x = torch.rand(1, 5, 32, 32, 32)
    with torch.no_grad():
        copied = prepare_network(network, mode)(x)
        assert all(torch.equal(v, before[k]) for k, v in network.state_dict().items())  # a copy leaves it alone
        engine = SimpleNamespace(network=network, state=SimpleNamespace(epoch_length=1))
        OptimiseForInference(mode)(engine)
        assert engine.network is not network
        torch.testing.assert_close(engine.network(x), copied, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["frozen", "fast", "bf16"])
def test_a_second_run_of_the_engine_keeps_the_network_the_handler_prepared(mode, monkeypatch):
    from types import SimpleNamespace

    import custom_nets.performance.inference as inference
    from custom_nets.networks import DoseMaskCascade
    from custom_nets.performance import OptimiseForInference

    kept = []
    monkeypatch.setattr(inference, "keep_freed_memory", lambda: kept.append(True))
    torch.manual_seed(0)
    widths = (2, 4, 8, 16, 32)
    network = DoseMaskCascade(5, (0.3, 0.6, 0.9), widths, widths).eval()
    prior = copy.deepcopy(network.prior)
    x = torch.rand(1, 5, 32, 32, 32)
    engine = SimpleNamespace(network=network, state=SimpleNamespace(epoch_length=1))  # one case in its data
    handler = OptimiseForInference(mode)
    with torch.no_grad():
        handler(engine)  # Events.STARTED of the first run
        prepared, first = engine.network, engine.network(x)
        assert not kept, "one case gains nothing from keeping freed memory"
        handler(engine)  # and of the second
        assert kept == ([True] if mode == "bf16" else []), "a second case in bf16 reuses the first one's memory"
        assert engine.network is prepared
        torch.testing.assert_close(engine.network(x), first, rtol=0, atol=0)
        if mode == "bf16":  # the prior is still eager fp32 arithmetic: its thresholded dose cannot move
            torch.testing.assert_close(network.prior.module(x), prior(x), rtol=0, atol=0)
    kept.clear()
    several = SimpleNamespace(network=DoseMaskCascade(5, (0.3, 0.6, 0.9), widths, widths),
                              state=SimpleNamespace(epoch_length=3))
    OptimiseForInference(mode)(several)  # an engine over three cases keeps freed memory from its first
    assert kept == ([True] if mode == "bf16" else [])


@pytest.mark.parametrize("cases", [1, 2])
def test_a_monai_evaluator_over_several_cases_keeps_freed_memory_in_bf16(cases, monkeypatch):
    from monai.engines import SupervisedEvaluator

    import custom_nets.performance.inference as inference
    from custom_nets.performance import OptimiseForInference

    kept = []
    monkeypatch.setattr(inference, "keep_freed_memory", lambda: kept.append(True))
    widths = (2, 4, 8, 16, 32)
    data = [{"image": torch.rand(1, 5, 32, 32, 32), "label": torch.rand(1, 1, 32, 32, 32)} for _ in range(cases)]
    evaluator = SupervisedEvaluator(torch.device("cpu"), data, CascadeUNet(5, widths, widths),
                                    val_handlers=[OptimiseForInference("bf16")])
    evaluator.run()  # the engine's length is known at Events.STARTED, when the handler prepares the network
    assert kept == [True] * (cases > 1)


def test_benchmark_runs_at_reduced_settings(openkbp_mini_datalist, tmp_path):
    from dosepred.benchmark import benchmark

    mini = require_shared("data/openkbp/mini")
    out = tmp_path / "benchmark.json"
    benchmark(bundles="cascunet_basic,cascunet_dm3", size=32, widths="cpu", modes="eager,frozen,fast", warmup=0,
              repeats=1, train="cpu", train_iterations=2, dataset_dir=str(openkbp_mini_datalist.parent),
              openkbp_mini=str(mini), evaluation_cases=1, predict="frozen",
              scoring_submission=str(mini / "scorer-check" / "predictions"),
              scoring_reference=str(mini / "validation-pats"), overrides=json.dumps({**TINY_IDS, "num_workers": 0}),
              out=str(out))
    result = json.loads(out.read_text())
    assert result["matmul_peak_gflops"] > 0
    assert [row["bundle"] for row in result["inference"]] == ["cascunet_basic", "cascunet_dm3"]
    for row in result["inference"]:
        assert row["gflop_per_forward"] > 0 and row["parameters_m"] > 0
        for mode in ("eager", "frozen", "fast"):
            assert row[f"{mode}_s"] > 0 and row[f"{mode}_share_of_peak"] > 0
    assert result["inference"][1]["gflop_per_forward"] > result["inference"][0]["gflop_per_forward"]
    for row in result["training"]:
        assert row["iterations"] == 2 and row["s_per_iteration"] > 0 and 0 <= row["data_wait_share"] < 1
        assert row["patch_size"] == [32, 32, 32]
    assert result["conversion"]["patients"] == 6 and result["conversion"]["s_per_patient"] > 0
    assert result["evaluation"]["s_per_case"] > 0
    scoring = result["scoring"]
    assert scoring["patients"] == 6 and scoring["max_difference_to_official_figures"] <= 1e-6
    assert scoring["ours_1_process_s_per_patient"] > 0
    given = result["scoring_given"]
    assert given["patients"] == 2 and given["ours_1_process_scores"] == given[next(
        k for k in given if k.endswith("processes_scores"))]
    assert [(p["network_mode"], p["ratio"] > 0, p["network_first_s"] > 0, p["cohort_patients"],
             p["cohort_ratio"] > 0) for p in result["predict"]] == [("frozen", True, True, 3, True)]
    table = out.with_suffix(".md").read_text()
    assert "cascunet_dm3" in table and "GFLOP / forward" in table and "predict" in table and "scoring" in table
    assert "its first pass" in table and "3 patients in one call" in table


@pytest.mark.parametrize("modes", [[], ["eager", "bf16"]])
def test_benchmark_table_has_a_column_per_measured_mode_and_none_empty(modes):
    from custom_nets.performance.summary import markdown_summary

    row = {"bundle": "cascunet_basic", "parameters_m": 32.36, "gflop_per_forward": 1675.3}
    for i, mode in enumerate(modes):
        row.update({f"{mode}_s": 10.0 - i, f"{mode}_share_of_peak": 0.5, f"{mode}_peak_memory_mb": 2400})
    result = {"device": "cpu", "threads": 2, "torch": torch.__version__, "matmul_peak_gflops": 300.0, "size": 128,
              "widths": "paper", "profile": "openkbp", "inference": [row]}
    table = [line for line in markdown_summary(result).splitlines() if line.startswith("|")]
    header, separator, body = table
    assert [line.count("|") for line in table] == [4 + len(modes)] * 3
    assert "|  |" not in header and "| cascunet_basic | 32.36 | 1675.3 |" in body
    assert [m for m in modes if f"{m} s (% of peak" in header] == modes


def test_the_official_scorer_is_looked_for_in_a_clone_of_open_kbp(tmp_path):
    from custom_nets.performance.scoring import official_scores

    with pytest.raises(FileNotFoundError, match=f"{tmp_path} is not a clone of ababier/open-kbp"):
        official_scores(tmp_path, tmp_path, tmp_path)


_FREED_BLOCKS = """
import numpy as np
from custom_nets.performance.memory import release_free_memory

def rss_mb():
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmRSS")).split()[1]) // 1024

warm = np.ones(1 << 20)
del warm  # glibc now serves 8 MB blocks from its heap instead of mapping each
blocks, kept = [], []
for _ in range(16):  # 128 MB of 8 MB volumes with a small kept tensor after each, as caching leaves them
    blocks.append(np.ones(1 << 20))
    kept.append(np.ones(1 << 14))
before = rss_mb()
del blocks
freed = rss_mb()
released = release_free_memory()
print(before, freed, rss_mb(), released)
"""


def test_release_free_memory_hands_freed_heap_blocks_back():
    import subprocess
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("measures resident memory through /proc (Linux)")
    before, freed, after, released = subprocess.run(
        [sys.executable, "-c", _FREED_BLOCKS], capture_output=True, text=True, check=True).stdout.split()
    assert released == "True"
    assert int(before) - int(freed) < 32, "freeing alone should leave the heap blocks resident (glibc)"
    assert int(freed) - int(after) > 100, (before, freed, after)


_REUSED_BLOCKS = """
import resource
import numpy as np
from custom_nets.performance.memory import keep_freed_memory, reset_heap

def faults_of_a_64_mb_volume():
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    np.ones(1 << 23)  # every page written, then freed
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start

faults_of_a_64_mb_volume()
mapped = faults_of_a_64_mb_volume()
kept = keep_freed_memory()
faults_of_a_64_mb_volume()
reused = faults_of_a_64_mb_volume()
reset = reset_heap()
faults_of_a_64_mb_volume()
print(mapped, kept, reused, reset, faults_of_a_64_mb_volume())
"""


def test_keep_freed_memory_reuses_large_blocks_until_the_heap_is_reset():
    import subprocess
    import sys

    from custom_nets.performance.memory import keep_freed_memory

    if not sys.platform.startswith("linux"):
        pytest.skip("counts page faults of glibc's heap (Linux)")
    mapped, kept, reused, reset, mapped_again = subprocess.run(
        [sys.executable, "-c", _REUSED_BLOCKS], capture_output=True, text=True, check=True).stdout.split()
    if kept == "False":
        pytest.skip("the C library is not glibc")
    assert reset == "True"
    # 16: a 64 MB block is 32 faults even where the kernel backs it with 2 MB pages
    assert int(mapped) >= 16, "glibc maps a 64 MB block afresh each time (its pages faulted in again)"
    assert int(reused) < int(mapped) / 10, (mapped, reused)
    assert int(mapped_again) >= 16, "after reset_heap, blocks are mapped afresh again"
    with pytest.raises(ValueError, match="max_block_bytes"):
        keep_freed_memory(0)


def test_low_memory_cache_dataset_caches_what_cache_dataset_caches():
    from monai.data import CacheDataset
    from monai.transforms import Compose, Lambdad, RandFlipd

    from custom_nets.performance import LowMemoryCacheDataset

    data = [{"image": torch.full((1, 8, 8, 8), float(i))} for i in range(4)]
    transform = Compose([Lambdad("image", lambda x: x * 2), RandFlipd("image", prob=1.0, spatial_axis=0)])
    ours, theirs = (cls(data, transform, cache_rate=1.0, num_workers=2, progress=False)
                    for cls in (LowMemoryCacheDataset, CacheDataset))
    for a, b in zip(ours._cache, theirs._cache):
        assert torch.equal(a["image"], b["image"])
    assert torch.equal(ours[3]["image"], torch.full((1, 8, 8, 8), 6.0))


@pytest.mark.parametrize("native", [True, False])
def test_bf16_asked_for_on_a_cpu_that_emulates_it_warns_and_the_benchmark_leaves_it_out(native, monkeypatch,
                                                                                         capsys):
    """Emulated bf16 ran a 32^3 cascade pass in 36 s against 0.17-0.68 s in fp32 (AVX2 EPYC): the user who asks
    for it is told, and the benchmark, whose default modes include bf16, does not spend hours on it."""
    import warnings

    import custom_nets.performance.hardware as hardware
    import tools.benchmark as benchmark_tool
    from custom_nets.performance.inference import OptimiseForInference, resolve_mode
    from custom_nets.training import use_cpu_bf16

    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: native)
    monkeypatch.setattr(benchmark_tool, "cpu_has_native_bf16", lambda: native)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_mode("bf16", torch.device("cpu")) == "bf16"  # still what was asked: right, only slow
        prepare_network(nn.Conv3d(1, 1, 1), "bf16")  # where bf16 is applied: the one warning of a run
        assert use_cpu_bf16("cpu", "true") is True
        resolve_mode("bf16", torch.device("cuda"))
        prepare_network(nn.Conv3d(1, 1, 1), "fast")
        OptimiseForInference("bf16")  # the device is not known yet
    messages = [str(w.message) for w in caught if issubclass(w.category, hardware.EmulatedBf16Warning)]
    assert [m.split(":")[0] for m in messages] == ([] if native else ["inference_mode bf16", "cpu_bf16 true"])
    assert native or "emulates it, 50-200x slower than fp32" in messages[0]
    kept = benchmark_tool._natively_run(["frozen", "bf16"], torch.device("cpu"), "predict")
    assert kept == (["frozen", "bf16"] if native else ["frozen"])
    assert ("predict: bf16 left out" in capsys.readouterr().out) is not native
    assert benchmark_tool._natively_run(["bf16"], torch.device("cuda"), "inference") == ["bf16"]


def test_auto_inference_mode_is_bf16_exactly_where_the_cpu_has_native_bf16():
    from custom_nets.performance.hardware import cpu_has_native_bf16
    from custom_nets.performance.inference import OptimiseForInference, resolve_mode

    assert resolve_mode("auto", torch.device("cpu")) == ("bf16" if cpu_has_native_bf16() else "frozen")
    assert resolve_mode("auto", torch.device("cuda")) == "frozen"  # CUDA's half precision is the configs' amp
    assert resolve_mode("fast", torch.device("cpu")) == "fast"
    with pytest.raises(ValueError, match="unknown inference mode 'fastest'"):
        OptimiseForInference("fastest")
