"""Shipped OpenKBP weights: how they are stored (float16 parameters, exact buffers), the train -> ship command on
the OpenKBP mini patients, and every shipped model as a user gets it (sha256, strict loading in each config that
claims it, MONAI's model-zoo checks, the recorded validation dose error of two patients)."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import REPO_ROOT, VARIANTS, require_shared, run_bundle, run_bundle_commands
from custom_nets.bundles.config import bundle_parser
from custom_nets.bundles.packaging import sha256_of
from custom_nets.bundles import PRETRAINED_CONFIG, pretrained_records
from custom_nets.networks import DoseMaskCascade, check_checkpoint, parameters_stored_as
from custom_nets.reports.tables import read_csv

RECORDS = pretrained_records(REPO_ROOT / "bundles" / "_template")
SHIPPED = sorted(RECORDS)


def test_float16_storage_keeps_buffers_exact_and_loads_into_float32():
    network = DoseMaskCascade(in_channels=4, fractions=(0.1, 0.3, 0.7), widths_a=(2, 4, 8, 16, 32),
                              widths_b=(2, 4, 8, 16, 32))
    stored = parameters_stored_as(network.state_dict(), network, torch.float16)
    assert stored["fractions"].dtype == torch.float32 and torch.equal(stored["fractions"], network.fractions)
    parameters = dict(network.named_parameters())
    assert all(stored[k].dtype == torch.float16 for k in parameters)
    copy = DoseMaskCascade(in_channels=4, fractions=(0.1, 0.3, 0.7), widths_a=(2, 4, 8, 16, 32),
                           widths_b=(2, 4, 8, 16, 32))
    copy.load_state_dict(stored, strict=True)
    for name, value in copy.named_parameters():
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, parameters[name].detach().half().float(), rtol=0, atol=0)
    with pytest.raises(ValueError, match="lacks"):
        parameters_stored_as({}, network, torch.float16)


def test_every_bundle_with_weights_has_a_record_and_the_reverse():
    with_weights = {p.parent.parent.name for p in (REPO_ROOT / "bundles").glob("*/models/model.pt")}
    assert with_weights == set(RECORDS)
    assert all(VARIANTS[name].pretrained_iterations for name in RECORDS)


def test_train_and_ship_on_the_mini_patients(openkbp_mini_datalist, tmp_path):
    """The whole command on 4 + 2 patients, 2 iterations: float16 storage is chosen only within the limit."""
    from dosepred.pretrained import ship, train

    bundles = tmp_path / "bundles"
    for name in ("_template", "cascunet_basic"):
        shutil.copytree(REPO_ROOT / "bundles" / name, bundles / name, ignore=shutil.ignore_patterns("models"))
    (bundles / "_template" / "pretrained.json").unlink(missing_ok=True)
    data, out = str(openkbp_mini_datalist.parent), str(tmp_path / "runs")
    train("cascunet_basic", data, out, str(bundles), overrides={"max_iterations": 2, "iterations_per_epoch": 2,
                                                               "val_interval": 1, "num_workers": 0})
    shipped = Path(ship("cascunet_basic", data, out, str(bundles), max_change_gy=1e6))
    record = json.loads((bundles / "_template" / "pretrained.json").read_text())["cascunet_basic"]
    assert record["storage_dtype"] == "float16" and record["sha256"] == sha256_of(shipped)
    assert record["iterations"] == 2 and record["training_overrides"]["max_iterations"] == 2
    assert set(record["validation_dose_error_gy"]) == {"pt_201", "pt_202"}
    assert all(v.dtype == torch.float16 for v in torch.load(shipped, weights_only=True).values())
    assert record["sha256"] in (bundles / "cascunet_basic" / "large_files.yml").read_text()
    assert json.loads((bundles / "cascunet_basic" / "configs" / "metadata.json").read_text())["version"] == "0.2.0"
    assert "a trial run" in (bundles / "cascunet_basic" / "docs" / "README.md").read_text()

    ship("cascunet_basic", data, out, str(bundles), max_change_gy=0)  # any change is too much: float32
    record = json.loads((bundles / "_template" / "pretrained.json").read_text())["cascunet_basic"]
    assert record["storage_dtype"] == "float32" and record["half_precision_check"]["max_voxel_change_gy"] > 0
    with pytest.raises(ValueError, match="ships no pretrained weights"):
        train("cascunet_dm3", data, out, str(bundles))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_match_their_sha256_and_load_in_every_config(name):
    bundle = REPO_ROOT / "bundles" / name
    weights = bundle / "models" / "model.pt"
    assert sha256_of(weights) == RECORDS[name]["sha256"]
    for base in ("inference.json", "train.json"):
        network = bundle_parser(bundle, [f"configs/{base}", f"configs/{PRETRAINED_CONFIG}"]).get_parsed_content(
            "network_def")
        network.load_state_dict(check_checkpoint(weights, network), strict=True)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_bundle_passes_the_model_zoo_checks(name, tmp_path):
    from monai.bundle import verify_metadata, verify_net_in_out

    schema = require_shared("schema/meta_schema_20240725.json")
    bundle = REPO_ROOT / "bundles" / name
    for required in ("configs/metadata.json", "configs/inference.json", "docs/README.md", "LICENSE",
                     "models/model.pt", "large_files.yml"):
        assert (bundle / required).is_file(), required
    configs = bundle / "configs"
    verify_metadata(meta_file=str(configs / "metadata.json"), filepath=str(schema))
    verify_net_in_out(net_id="network_def", meta_file=[str(configs / "metadata.json"),
                                                       str(configs / "metadata_openkbp.json")],
                      config_file=[str(configs / "inference.json"), str(configs / PRETRAINED_CONFIG)])
    exported = tmp_path / "model.ts"
    run_bundle_commands(bundle, [
        ["ckpt_export", "network_def", "--filepath", str(exported), "--ckpt_file", "models/model.pt",
         "--meta_file", "configs/metadata.json", "--config_file",
         f"['configs/inference.json','configs/{PRETRAINED_CONFIG}']"],
        ["download_large_files", "--bundle_path", str(bundle)]])
    assert torch.jit.load(str(exported)) is not None


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_give_the_recorded_validation_dose_errors(name, openkbp_mini_datalist, tmp_path):
    """pt_201 and pt_202 of the OpenKBP validation split, fp32 inference: each patient's dose error as recorded
    when the weights were shipped (on all 33 validation patients), within 1e-3 Gy."""
    bundle = REPO_ROOT / "bundles" / name
    out = tmp_path / "eval"
    run_bundle(bundle, "run", "--config_file",
               f"['configs/inference.json','configs/evaluate.json','configs/{PRETRAINED_CONFIG}']",
               "--dataset_dir", str(openkbp_mini_datalist.parent), "--split", "validation", "--output_dir", str(out),
               "--inference_mode", "frozen")
    measured = {row["case_id"]: float(row["dose_error_gy"]) for row in read_csv(out / "case_summary.csv")}
    assert set(measured) == {"pt_201", "pt_202"}
    for case, error in measured.items():
        assert error == pytest.approx(RECORDS[name]["validation_dose_error_gy"][case], abs=1e-3), case


def _readme_example() -> list[list[str]]:
    """The commands of the README block after the ``shipped-model-example`` marker, as argument lists."""
    text = (REPO_ROOT / "README.md").read_text()
    block = text.split("<!-- shipped-model-example", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line) for line in block.replace("\\\n", " ").splitlines() if line.strip()]


@pytest.mark.skipif("cascunet_basic" not in RECORDS, reason="the basic cascade's weights are not shipped")
def test_readme_example_predicts_a_validation_patient_with_the_shipped_model(tmp_path):
    """The README's commands, as written (run from a scratch folder; the repository's and ../shared's paths made
    absolute): a published OpenKBP validation patient -> DICOM -> RT Dose with the shipped basic cascade, in the
    default inference mode. Its dose error against the planned dose is the recorded fp32 one, within what bf16
    and the DICOM round trip move it."""
    from custom_nets.io.openkbp import read_openkbp_patient

    commands = _readme_example()
    assert commands[0][:3] == ["dosepred", "dicom", "export"] and commands[1][:2] == ["dosepred", "predict"]
    shared = require_shared("data/openkbp/mini/validation-pats/pt_201").parents[4]
    for command in commands:
        args = [str(shared / a.removeprefix("../shared/")) if a.startswith("../shared/") else
                str(REPO_ROOT / a) if a.startswith("bundles/") else a for a in command]
        result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{args}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    out = tmp_path / commands[1][commands[1].index("--out") + 1]
    for name in ("RD_predicted.dcm", "dose_predicted.nii.gz", "dvh_metrics.csv", "dvh.png"):
        assert (out / name).is_file(), name
    rows = (out / "dvh_metrics.csv").read_text().splitlines()
    assert any(r.startswith("PTV70,PTV70,predicted") for r in rows) and any(
        r.startswith("PTV70,PTV70,planned") for r in rows)
    case = read_openkbp_patient(require_shared("data/openkbp/mini/validation-pats/pt_201"))
    predicted = nib.load(out / "dose_predicted.nii.gz")
    dose = np.asarray(nib.as_closest_canonical(predicted).dataobj, dtype=np.float32)
    planned = np.asarray(nib.as_closest_canonical(nib.Nifti1Image(case.dose_gy, case.affine)).dataobj)
    mask = np.asarray(nib.as_closest_canonical(
        nib.Nifti1Image(case.possible_dose_mask.astype(np.uint8), case.affine)).dataobj) > 0
    error = float(np.abs(dose - planned)[mask].mean())
    assert error == pytest.approx(RECORDS["cascunet_basic"]["validation_dose_error_gy"]["pt_201"], abs=0.05)


def test_a_record_renders_into_metadata_docs_and_large_files(tmp_path):
    """What `ship` writes for a real run: metadata (version, changelog, performance, still schema-valid), the docs
    section with the scores and the recipe read from openkbp_cpu.json, and large_files.yml."""
    from monai.bundle import verify_metadata

    from custom_nets.bundles import render_bundle

    schema = require_shared("schema/meta_schema_20240725.json")
    template = Path(shutil.copytree(REPO_ROOT / "bundles" / "_template", tmp_path / "_template"))
    record = {"version": "0.2.0", "date": "2026-01-01", "sha256": "ab" * 32, "size_mb": 32.4,
              "storage_dtype": "float32", "iterations": 4000, "best_iteration": 3500, "wall_time_min": 95.2,
              "bf16_autocast": True, "machine": "2 CPU cores (x86_64)", "training_overrides": {},
              "training_data": "the 169 OpenKBP training patients",
              "validation_data": "the 33 OpenKBP validation patients",
              "validation": {"fp32": {"dose_score_gy": 3.1234, "dvh_score_gy": 2.5},
                             "bf16": {"dose_score_gy": 3.1301, "dvh_score_gy": 2.51}},
              "validation_dose_error_gy": {"pt_201": 2.9}}
    (template / "pretrained.json").write_text(json.dumps({"cascunet_basic": record}))
    bundle = render_bundle("cascunet_basic", template, tmp_path / "cascunet_basic")
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["version"] == "0.2.0" and list(meta["changelog"]) == ["0.2.0", "0.1.0"]
    assert meta["performance"]["validation"]["fp32"]["dose_score_gy"] == 3.1234
    verify_metadata(meta_file=str(bundle / "configs" / "metadata.json"), filepath=str(schema))
    docs = (bundle / "docs" / "README.md").read_text()
    assert "4000 iterations" in docs and "batch 2, 64x64x64 network input, bf16 autocast, on" in docs
    assert "(95 min\nof wall time in the training log's sittings" in docs
    assert "| 3.123 | 2.500 |" in docs and "iteration 3500" in docs
    assert f'hash_val: "{"ab" * 32}"' in (bundle / "large_files.yml").read_text()


def test_training_wall_time_sums_the_sittings_of_a_resumed_run(tmp_path):
    from dosepred.pretrained import training_wall_s

    log = tmp_path / "train.log"
    log.write_text("a warning without a time stamp\n"
                   "2026-11-24 08:00:00,100 - INFO - Setting logging properties based on config: configs/logging.conf.\n"
                   "Epoch [1/40]: [1/100]  1%| progress bar text\n"
                   "2026-11-24 08:30:00,900 - INFO - Epoch: 5/40, Iter: 10/100 -- train_loss: 0.2\n"
                   "2026-11-24 09:00:00,000 - INFO - Setting logging properties based on config: configs/logging.conf.\n"
                   "2026-11-24 09:10:30,000 - ignite.engine.engine.SupervisedTrainer - INFO - Engine run finished.\n")
    assert training_wall_s(log) == 30 * 60 + 10 * 60 + 30
