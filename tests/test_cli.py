"""The command line as a user runs it (README's first command on a reduced phantom set)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO_ROOT


def test_quickstart_command_runs_on_the_embedded_phantoms(tmp_path):
    out = tmp_path / "qs"
    result = subprocess.run(
        [sys.executable, "-m", "dosepred.cli", "quickstart", "--out", str(out), "--n_training", "2", "--n_validation",
         "1", "--n_test", "1", "--shape", "32", "--network_size", "32", "--iterations", "2"],
        capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0, result.stderr[-2000:]
    datalist = json.loads((out / "data" / "datalist.json").read_text())
    assert [len(datalist[s]) for s in ("training", "validation", "test")] == [2, 1, 1]
    assert len(list((out / "data" / "previews").glob("*.png"))) == 4
    evaluation = out / "cascunet_basic" / "eval" / "test"
    info = json.loads((evaluation / "run_info.json").read_text())
    assert info["split"] == "test" and info["metrics"]["dose_score_gy"] > 0
    assert f"report: {out / 'report' / 'report.md'}" in result.stdout
    case_id = datalist["test"][0]["case_id"]
    for produced in ("report.md", "targets.csv", "oars.csv", "isodose_dice.png", "training_curves.png",
                     f"cases/{case_id}_dose.png", f"cases/{case_id}_dvh.png"):
        assert (out / "report" / produced).is_file(), produced
    assert (out / "cascunet_basic" / "models" / "model.pt").is_file()
    settings = json.loads((out / "cascunet_basic" / "configs" / "quickstart.json").read_text())
    assert settings["prescription_relative"] and settings["target_loss_weight"] > 0
    state = torch.load(out / "cascunet_basic" / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert "relative_ptv_channel" in state  # trained relative to the top prescription; inference loaded it so


def test_bad_arguments_get_a_clear_message(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "dosepred.cli", "phantoms", "generate", "--out", str(tmp_path), "--shape", "8"],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode != 0 and "shape must be three sizes >= 16" in result.stderr


def test_model_size_counts_parameters_and_flops_of_a_bundle_network():
    from custom_nets.networks import RANDose
    from dosepred.model_size import model_size

    result = model_size("randose", size=32, cpu=True)
    network = RANDose(9, widths=[6, 12, 24, 48, 96], stem_channels=6)
    assert result["parameters"] == sum(p.numel() for p in network.parameters()) and result["input_channels"] == 9
    first_conv = network.ct_stem.conv  # 1 -> 6 channels, 3^3 kernel, at every one of the 32^3 voxels
    assert first_conv.weight.shape == (6, 1, 3, 3, 3)
    assert result["forward_gflop"] * 1e9 > 2 * 6 * 27 * 32**3  # more than the first convolution alone
    assert model_size("randose", size=64, cpu=True)["forward_gflop"] == pytest.approx(8 * result["forward_gflop"],
                                                                                        rel=0.01)


def _dosepred(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dosepred.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=Path(__file__).resolve().parents[1])


def test_clinical_and_benchmark_commands_are_wired(tmp_path):
    listing = _dosepred("--help")
    for command in ("predict", "benchmark", "dicom"):
        assert command in listing.stdout + listing.stderr, command
    written = _dosepred("dicom", "phantom", "--out", str(tmp_path / "patient"), "--shape", "32,32,24")
    assert written.returncode == 0, written.stderr[-2000:]
    assert len(list((tmp_path / "patient").glob("CT.*.dcm"))) == 24
    assert {p.name for p in (tmp_path / "patient").glob("R?.dcm")} == {"RS.dcm", "RP.dcm", "RD.dcm"}
    (tmp_path / "weights.pt").write_bytes(b"")  # predict checks the weights exist before reading the patient
    missing = _dosepred("predict", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"), "--ckpt_path",
                        str(tmp_path / "weights.pt"))
    assert missing.returncode == 2 and f"DICOM folder not found: {tmp_path / 'nowhere'}" in missing.stderr


def test_setup_installs_every_package_and_no_generic_tools():
    """setup.cfg lists every package (tools/ installs as ``dosepred``, never as a top-level ``tools``)."""
    import configparser

    setup = configparser.ConfigParser()
    setup.read(REPO_ROOT / "setup.cfg")
    listed = set(setup["options"]["packages"].split())
    found = {".".join(p.parent.relative_to(REPO_ROOT).parts) for p in (REPO_ROOT / "custom_nets").rglob("__init__.py")}
    assert listed == found | {"dosepred"}, "a package is missing from setup.cfg's [options] packages"
    assert setup["options"]["package_dir"].split() == ["dosepred", "=", "tools"]
    assert "dosepred.cli:main" in setup["options.entry_points"]["console_scripts"]
