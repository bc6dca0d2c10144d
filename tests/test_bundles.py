"""The five cascade bundles as users run them: `python -m monai.bundle run ...` on real OpenKBP patients,
MONAI's own bundle checks, TorchScript export, resume and distributed training (tiny widths, CPU)."""

from __future__ import annotations

import filecmp
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import BUNDLE_SOURCES, BUNDLES, CONFIGS, MASK_BUNDLES, REPO_ROOT, TINY, VARIANTS, require_shared, run_bundle
from custom_nets.bundles import PRETRAINED_CONFIG, render_all
from custom_nets.bundles.render import GENERATED_KEY, rendered_files, unrendered_files
from custom_nets.io.canonical import read_case
from custom_nets.io.datalist import load_datalist
from custom_nets.io.openkbp import read_sparse_dose_csv, to_openkbp_grid

def test_committed_bundles_equal_their_rendered_sources():
    folders = {p.name for p in (REPO_ROOT / "bundles").iterdir() if p.is_dir() and p.name != "_template"}
    assert folders == set(BUNDLES), f"bundle folders without a variant in {BUNDLE_SOURCES / 'variants'}"
    for name, variant in VARIANTS.items():
        bundle = REPO_ROOT / "bundles" / name
        files = rendered_files(variant, BUNDLE_SOURCES)
        for relative, text in files.items():
            assert (bundle / relative).is_file() and (bundle / relative).read_text() == text, (
                f"{bundle / relative} differs from its sources: run `dosepred bundles sync`")
        assert not unrendered_files(bundle, files), f"{bundle}: files not rendered from {BUNDLE_SOURCES}"
        for relative in ("LICENSE", "docs/data_license.txt"):
            assert filecmp.cmp(bundle / relative, BUNDLE_SOURCES / "base" / relative, shallow=False)
        config = json.loads((bundle / "configs" / "train.json").read_text())
        assert next(iter(config)) == GENERATED_KEY and "dosepred bundles sync" in config[GENERATED_KEY]
        assert (bundle / "docs" / "README.md").read_text().startswith("<!-- generated from bundles/_template")


def test_randose_holds_only_what_randose_has():
    for name in ("train.json", "inference.json", "cpu.json", PRETRAINED_CONFIG):
        config = json.loads((REPO_ROOT / "bundles" / "randose" / "configs" / name).read_text())
        assert not {"dose_mask_set", "prior_checkpoint", "widths_a", "widths_b"} & set(config), name
    assert "C3D" not in (REPO_ROOT / "bundles" / "randose" / "docs" / "README.md").read_text()


def test_randose_openkbp_weights_train_with_the_region_weights_the_experiment_chose():
    """openkbp_cpu.json takes loss_fixed_weights.json (the variant's pretrained_configs); train.json keeps the
    paper's learnable weights, and the MONAI parser resolves the layered pair to a loss with fixed weights."""
    from custom_nets.bundles import bundle_parser

    configs = REPO_ROOT / "bundles" / "randose" / "configs"
    fixed = json.loads((configs / "loss_fixed_weights.json").read_text())
    assert {k: v for k, v in fixed.items() if k != GENERATED_KEY} == {"learnable_loss_weights": False}
    assert json.loads((configs / PRETRAINED_CONFIG).read_text())["learnable_loss_weights"] is False
    assert json.loads((configs / "train.json").read_text())["learnable_loss_weights"] is True
    loss = bundle_parser(configs.parent, ["configs/train.json", f"configs/{PRETRAINED_CONFIG}"]).get_parsed_content(
        "loss_def")
    assert not loss.learnable and not list(loss.parameters())


@pytest.mark.parametrize("name", BUNDLES)
def test_evaluation_layers_on_inference_and_honours_the_inference_mode(name):
    """evaluate.json adds its metrics saver to inference.json's handlers (checkpoint loading, the inference mode,
    progress) rather than replacing them, so ``--inference_mode`` applies to evaluation too."""
    from custom_nets.bundles import bundle_parser
    from custom_nets.performance import OptimiseForInference

    bundle = REPO_ROOT / "bundles" / name
    inference = bundle_parser(bundle, ["configs/inference.json"]).get("handlers")
    parser = bundle_parser(bundle, ["configs/inference.json", "configs/evaluate.json"], {"inference_mode": "fast"})
    assert [h["_target_"] for h in parser.get("handlers")] == [h["_target_"] for h in inference]
    assert parser.get("evaluator#val_handlers") == "$@handlers + [@metrics_saver]"
    optimise = parser.get_parsed_content("handlers#1")
    assert isinstance(optimise, OptimiseForInference) and optimise.mode == "fast"
    assert parser.get("metrics_saver#_target_") == "MetricsSaver"


def test_bad_bundle_sources_are_refused_naming_what_is_wrong(tmp_path):
    from custom_nets.bundles import layered_configs, load_variants, openkbp_cpu_config
    from custom_nets.bundles.layers import apply_overlay

    sources = Path(shutil.copytree(BUNDLE_SOURCES, tmp_path / "_template"))
    variant = sources / "variants" / "cascunet_dm3.json"
    spec = json.loads(variant.read_text())
    variant.write_text(json.dumps({**spec, "layer": ["cascade"]}))
    with pytest.raises(ValueError, match="cascunet_dm3.json: unknown fields \\['layer'\\]"):
        load_variants(sources)
    variant.write_text(json.dumps({**spec, "configs": {"train.json": {"dose_mask_set": "5"}}}))
    with pytest.raises(ValueError, match="set dose_mask_set under \"all\""):
        load_variants(sources)
    variant.write_text(json.dumps({**spec, "layers": ["cascades"]}))
    with pytest.raises(FileNotFoundError, match="names layers \\['cascades'\\]"):
        layered_configs(load_variants(sources)["cascunet_dm3"], sources)
    variant.write_text(json.dumps({**spec, "configs": {"train.jsn": {"learning_rate": 0.1}}}))
    with pytest.raises(KeyError, match="no config file 'train.jsn'"):
        layered_configs(load_variants(sources)["cascunet_dm3"], sources)
    variant.write_text(json.dumps({**spec, "configs": {"all": {"dose_mask_sets": "3"}}}))
    with pytest.raises(KeyError, match="dose_mask_sets.*are in no config file"):
        layered_configs(load_variants(sources)["cascunet_dm3"], sources)
    variant.write_text(json.dumps({**spec, "pretrained_iterations": 10, "pretrained_configs": ["fixed.json"]}))
    with pytest.raises(ValueError, match="cascunet_dm3.json: pretrained_configs \\['fixed.json'\\] are not config"):
        openkbp_cpu_config(load_variants(sources)["cascunet_dm3"], sources)
    with pytest.raises(KeyError, match="overlay key 'optimiser#lr'"):
        apply_overlay({"optimizer": {"lr": 1}}, {"optimiser#lr": 0.1})
    added = apply_overlay({"a": 1, "network": "$x", "run": []}, {"b": 2, "a": 3})
    assert list(added) == ["a", "b", "network", "run"] and added["a"] == 3  # changed in place, added before network


def test_changing_a_bundle_is_one_line_in_one_file_and_one_command(tmp_path):
    """The README's "Changing a bundle": dm3's learning rate, in its variant file, then `dosepred bundles sync`."""
    bundles = tmp_path / "bundles"
    shutil.copytree(REPO_ROOT / "bundles", bundles, ignore=shutil.ignore_patterns("models", "eval", "runs",
                                                                                   "predictions"))
    source = bundles / "_template" / "variants" / "cascunet_dm3.json"
    lines = source.read_text().splitlines()
    at = lines.index('    "configs": {')
    source.write_text("\n".join([*lines[:at + 1], '        "train.json": {"learning_rate": 0.0001},', *lines[at + 1:]])
                      + "\n")
    before = {p: p.read_text() for p in bundles.rglob("*.json") if "_template" not in p.parts}
    render_all(bundles)
    changed = {p for p, text in before.items() if p.read_text() != text}
    assert changed == {bundles / "cascunet_dm3" / "configs" / "train.json"}
    old, new = json.loads(before[bundles / "cascunet_dm3" / "configs" / "train.json"]), json.loads(
        (bundles / "cascunet_dm3" / "configs" / "train.json").read_text())
    assert new["learning_rate"] == 0.0001 and {k for k in new if new[k] != old[k]} == {"learning_rate"}
    (bundles / "cascunet_dm3" / "configs" / "my_override.json").write_text("{}\n")  # added by hand: refused
    with pytest.raises(FileExistsError, match="my_override.json"):
        render_all(bundles)


@pytest.mark.parametrize("name", BUNDLES)
def test_verify_metadata_and_net_in_out_at_their_defaults(name):
    """MONAI model-zoo CI: n=1, the bundle's own widths; the OpenKBP profile with its metadata override."""
    from monai.bundle import verify_metadata, verify_net_in_out

    schema = require_shared("schema/meta_schema_20240725.json")
    configs = REPO_ROOT / "bundles" / name / "configs"
    verify_metadata(meta_file=str(configs / "metadata.json"), filepath=str(schema))
    verify_net_in_out(net_id="network_def", meta_file=str(configs / "metadata.json"),
                      config_file=str(configs / "inference.json"))
    verify_net_in_out(net_id="network_def", meta_file=[str(configs / "metadata.json"),
                                                       str(configs / "metadata_openkbp.json")],
                      config_file=[str(configs / c) for c in ("inference.json", "openkbp.json", "cpu.json")])
    if VARIANTS[name].pretrained_iterations:  # the one override of the shipped weights
        verify_net_in_out(net_id="network_def", meta_file=[str(configs / "metadata.json"),
                                                           str(configs / "metadata_openkbp.json")],
                          config_file=[str(configs / "inference.json"), str(configs / PRETRAINED_CONFIG)])


@pytest.mark.parametrize("name", BUNDLES)
def test_openkbp_training_writes_checkpoints(openkbp_bundles, name):
    models = openkbp_bundles / name / "models"
    assert (models / "model.pt").is_file()
    assert list(models.glob("checkpoint_*.pt"))
    state = torch.load(models / "model.pt", map_location="cpu", weights_only=True)
    if name in MASK_BUNDLES:  # the prior inside the mask network is the basic bundle's trained cascade
        basic = torch.load(openkbp_bundles / "cascunet_basic" / "models" / "model.pt", map_location="cpu",
                           weights_only=True)
        for key, value in basic.items():
            torch.testing.assert_close(state[f"prior.{key}"], value)


@pytest.mark.parametrize("name", BUNDLES)
def test_inference_writes_physical_dose_and_submission(openkbp_bundles, openkbp_mini_datalist, name):
    for entry in load_datalist(openkbp_mini_datalist, "validation"):
        case = read_case(entry["case"], with_dose=False)
        out = openkbp_bundles / name / "predictions"
        image = nib.load(out / entry["case_id"] / "dose_pred.nii.gz")
        dose = to_openkbp_grid(np.asanyarray(image.dataobj), image.affine)
        mask = to_openkbp_grid(case.possible_dose_mask, case.affine)
        assert dose.shape == (128, 128, 128) and dose.min() >= 0 and np.all(dose[~mask] == 0)
        canonical = nib.as_closest_canonical(nib.Nifti1Image(case.possible_dose_mask.astype(np.uint8), case.affine))
        np.testing.assert_allclose(image.affine, canonical.affine)
        submission = read_sparse_dose_csv(out / "submission" / f"{entry['case_id']}.csv")
        np.testing.assert_allclose(submission, dose, rtol=1e-6, atol=1e-6)
        info = json.loads((out / entry["case_id"] / "prediction.json").read_text())
        assert info["mask_source"] == ("prior" if name in MASK_BUNDLES else "none") and info["model"] == name


@pytest.mark.parametrize("name", BUNDLES)
def test_evaluation_reports_scores_and_mask_source(openkbp_bundles, name):
    folder = "validation_masks-prior" if name in MASK_BUNDLES else "validation"
    out = openkbp_bundles / name / "eval" / folder
    info = json.loads((out / "run_info.json").read_text())
    assert info["split"] == "validation" and info["profile"] == "openkbp"
    assert info["mask_source"] == ("prior" if name in MASK_BUNDLES else "none")
    assert np.isfinite(info["metrics"]["dose_score_gy"]) and np.isfinite(info["metrics"]["dvh_score_gy"])
    raw = (out / "dose_score_gy_raw.csv").read_text().splitlines()
    assert [line.split("\t")[0].split(",")[0] for line in raw[1:]] == ["pt_201", "pt_202"]
    assert (out / "predictions" / "pt_201" / "dose_pred.nii.gz").is_file()


def test_evaluation_dose_score_is_the_openkbp_dose_error_of_the_written_prediction(openkbp_bundles,
                                                                                      openkbp_mini_datalist):
    from custom_nets.metrics import dose_error, dose_score

    out = openkbp_bundles / "cascunet_basic" / "eval" / "validation"
    errors = []
    for entry in load_datalist(openkbp_mini_datalist, "validation"):
        case = read_case(entry["case"])
        image = nib.load(out / "predictions" / entry["case_id"] / "dose_pred.nii.gz")
        prediction = to_openkbp_grid(np.asanyarray(image.dataobj), image.affine)
        reference = to_openkbp_grid(case.dose_gy, case.affine)
        errors.append(dose_error(reference, prediction, to_openkbp_grid(case.possible_dose_mask, case.affine)))
    recorded = json.loads((out / "run_info.json").read_text())["metrics"]["dose_score_gy"]
    assert recorded == pytest.approx(dose_score(errors), rel=1e-4)


@pytest.mark.parametrize("name", BUNDLES)
def test_ckpt_export_torchscript_equals_eager(openkbp_bundles, name):
    from monai.bundle import ConfigParser

    bundle = openkbp_bundles / name
    run_bundle(bundle, "ckpt_export", "network_def", "--filepath", "models/model.ts", "--ckpt_file", "models/model.pt",
               "--meta_file", "configs/metadata.json", "--config_file", CONFIGS["infer"], *TINY)
    exported = torch.jit.load(str(bundle / "models" / "model.ts"))
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / f) for f in ("inference.json", "openkbp.json", "cpu.json")])
    parser.update({TINY[i][2:]: json.loads(TINY[i + 1]) for i in range(0, len(TINY), 2)})
    parser["bundle_root"] = str(bundle)
    eager = parser.get_parsed_content("network_def")
    eager.load_state_dict(torch.load(bundle / "models" / "model.pt", map_location="cpu", weights_only=True))
    eager.eval()
    x = torch.rand(1, parser.get_parsed_content("in_channels"), 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), eager(x), rtol=0, atol=1e-5)


def test_resume_continues_from_the_latest_checkpoint(lung_phantom_datalist, tmp_path):
    bundle = Path(shutil.copytree(REPO_ROOT / "bundles" / "cascunet_basic", tmp_path / "cascunet_basic"))
    common = ["--config_file", "['configs/train.json','configs/cpu.json']", "--dataset_dir",
              str(lung_phantom_datalist.parent), *TINY, "--iterations_per_epoch", "2", "--num_workers", "0"]
    run_bundle(bundle, "run", "training", *common, "--max_iterations", "6", "--train#trainer#max_epochs", "2")
    log = run_bundle(bundle, "run", "training", *common, "--max_iterations", "6", "--resume", "true")
    assert "Epoch: 3/3" in log and "Epoch: 1/3" not in log
    checkpoint = next((bundle / "models").glob("checkpoint_*.pt"))
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert state["trainer"]["iteration"] == 6 and state["lr_scheduler"]["last_epoch"] == 6


@pytest.mark.parametrize("name", ["cascunet_basic", "randose"])
def test_distributed_training_with_two_cpu_processes(lung_phantom_datalist, tmp_path, name):
    """multi_gpu_train.json only switches ``distributed`` on: the network train.json builds is wrapped in DDP, and
    so is RANDose's loss, whose learnable region weights must stay the same on every rank."""
    bundle = Path(shutil.copytree(REPO_ROOT / "bundles" / name, tmp_path / name))
    (bundle / "configs" / "save_rank_state.json").write_text(json.dumps({"finalize": [
        "$torch.save({'loss': @loss.state_dict(), 'network': @network.state_dict()}, "
        "@output_dir + f'/state_rank{torch.distributed.get_rank()}.pt')",
        "$custom_nets.distributed.end_distributed()"]}))
    run_bundle(bundle, "--standalone", "--nnodes=1", "--nproc_per_node=2", "-m", "monai.bundle", "run",
               "--config_file",
               "['configs/train.json','configs/multi_gpu_train.json','configs/cpu.json','configs/save_rank_state.json']",
               "--dataset_dir", str(lung_phantom_datalist.parent), *TINY, "--max_iterations", "4",
               "--iterations_per_epoch", "2", "--num_workers", "0", launcher=("-m", "torch.distributed.run"))
    assert (bundle / "models" / "model.pt").is_file()
    ranks = [torch.load(bundle / "runs" / f"state_rank{r}.pt", weights_only=True) for r in (0, 1)]
    for part in ("network", "loss"):
        for key, value in ranks[0][part].items():
            torch.testing.assert_close(ranks[1][part][key], value, rtol=0, atol=0, msg=f"{part} {key}")
    if name == "randose":  # the weights learnt (they start at 0) and the ranks agree on them
        assert ranks[0]["loss"] and all(v.abs().sum() > 0 for v in ranks[0]["loss"].values())


def test_evaluate_config_writes_the_dosimetric_tables(openkbp_bundles, openkbp_mini_datalist):
    from custom_nets.reports import load_evaluation
    from custom_nets.reports.dosimetric_evaluation import read_predicted_dose

    out = openkbp_bundles / "cascunet_basic" / "eval" / "validation"
    run = load_evaluation(out)
    assert run.case_ids == ["pt_201", "pt_202"] and run.info["gamma"]["distance_mm"] == 2.0
    assert run.info["gamma"]["interp_fraction"] == 3  # the fixture's override reached gamma
    for entry in load_datalist(openkbp_mini_datalist, "validation"):
        case = read_case(entry["case"])
        predicted = read_predicted_dose(out / "predictions" / case.case_id / "dose_pred.nii.gz", case.affine,
                                        case.shape)
        ptv = case.structures["PTV70"]
        assert run.structure_mae["PTV70"][case.case_id] == pytest.approx(
            np.abs(predicted[ptv] - case.dose_gy[ptv]).mean(), rel=1e-6)
        d95 = next(r for r in run.dvh_rows if r["case_id"] == case.case_id and r["structure"] == "PTV70"
                   and r["metric"] == "D95%")
        assert d95["reference"] == pytest.approx(np.percentile(case.dose_gy[ptv], 5), rel=1e-6)
        assert 0 <= run.summary[case.case_id]["gamma_pass_rate_percent"] <= 100


def test_report_compares_two_runs_in_tables_and_figures(openkbp_bundles, tmp_path):
    from matplotlib.image import imread

    from custom_nets.reports import write_report
    from custom_nets.reports.tables import read_csv

    runs = [openkbp_bundles / "cascunet_basic" / "eval" / "validation",
            openkbp_bundles / "cascunet_dm3" / "eval" / "validation_masks-prior"]
    report = write_report(runs, tmp_path / "report", max_case_figures=1, progress=False)
    names = ["cascunet_basic", "cascunet_dm3 (prior masks)"]
    targets = read_csv(tmp_path / "report" / "targets.csv")
    assert {(r["structure"], r["metric"]) for r in targets} >= {("PTV70", m) for m in
                                                                ("D2%", "D95%", "D98%", "D99%", "Dmean", "Dmax",
                                                                 "D0.1cc", "CI", "HI")}
    for name in names:
        assert all(f"{name}|mae_mean" in r and r[f"{name}|test"] in ("too few",) for r in targets)  # 2 patients
    oars = read_csv(tmp_path / "report" / "oars.csv")
    assert {r["metric"] for r in oars} == {"V5Gy", "V20Gy", "V30Gy", "V40Gy", "Dmean", "Dmax", "D0.1cc"}
    esophagus = next(r for r in oars if r["structure"] == "Esophagus" and r["metric"] == "Dmean")
    assert esophagus["n"] == "1"  # pt_202 has no esophagus contour: its NaN is left out, not counted as zero
    assert read_csv(tmp_path / "report" / "model_comparison.csv")
    summary = read_csv(tmp_path / "report" / "summary.csv")
    assert [r["model"] for r in summary] == names and summary[1]["mask_source"] == "prior"
    text = report.read_text()
    assert "Tables 4 and 6" in text and "cascunet_dm3 (prior masks): MAE" in text
    figures = ["isodose_dice.png", "structure_mae.png", "training_curves.png", "cases/pt_201_dvh.png",
               "cases/pt_201_dose.png"]
    for figure in figures:
        image = imread(tmp_path / "report" / figure)
        assert image.shape[0] > 300 and image.shape[1] > 500 and image.std() > 0.05, figure
    assert not (tmp_path / "report" / "cases" / "pt_202_dose.png").exists()


def test_randose_checkpoint_holds_the_learnable_loss_weights(openkbp_bundles):
    checkpoint = next((openkbp_bundles / "randose" / "models").glob("checkpoint_*.pt"))
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    log_inverse_weights = state["loss"]["log_inverse_weights"]
    assert log_inverse_weights.shape == (2,) and torch.all(log_inverse_weights != 0)  # moved from w = 1 (s = 0)


@pytest.mark.parametrize("override, modules", [
    ("ablation_unet.json", set()),
    ("ablation_msfe.json", {"MultiScaleFeatureExtraction"}),
    ("ablation_msfe_csa.json", {"MultiScaleFeatureExtraction", "ChannelSpatialAttention"}),
    ("ablation_msfe_csa_pi.json", {"MultiScaleFeatureExtraction", "ChannelSpatialAttention", "PTVIntegration"}),
    (None, {"MultiScaleFeatureExtraction", "ChannelSpatialAttention", "PTVIntegration", "AttentionFusion"}),
])
def test_randose_ablation_overrides_are_the_table_2_networks(override, modules):
    from monai.bundle import ConfigParser

    configs = REPO_ROOT / "bundles" / "randose" / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "train.json"), str(configs / "cpu.json")]
                       + ([str(configs / override)] if override else []))
    network = parser.get_parsed_content("network_def")
    attention = {"MultiScaleFeatureExtraction", "ChannelSpatialAttention", "PTVIntegration", "AttentionFusion"}
    assert {type(m).__name__ for m in network.modules()} & attention == modules


@pytest.mark.parametrize("override, terms, learnable", [("ablation_loss_l1.json", set(), True),
                                                        ("ablation_loss_l1_ptv.json", {"w_ptv"}, True),
                                                        ("loss_fixed_weights.json", {"w_ptv", "w_oar"}, False)])
def test_randose_loss_overrides_are_the_table_2b_rows(override, terms, learnable):
    from monai.bundle import ConfigParser

    configs = REPO_ROOT / "bundles" / "randose" / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "train.json"), str(configs / override)])
    loss = parser.get_parsed_content("loss_def")
    assert set(loss.weights()) == terms and bool(list(loss.parameters())) == learnable


def test_inference_shows_progress_over_the_cases(openkbp_bundles, openkbp_mini_datalist, tmp_path):
    output = run_bundle(openkbp_bundles / "cascunet_basic", "run", "--config_file", CONFIGS["infer"], "--dataset_dir",
                        str(openkbp_mini_datalist.parent), *TINY, "--split", "validation", "--output_dir",
                        str(tmp_path / "predictions"))
    assert "predicting" in output and "2/2" in output, output[-2000:]


@pytest.mark.parametrize("name", ["cascunet_basic", "cascunet_dm5"])
@pytest.mark.parametrize("config", ["train.json", "inference.json"])
def test_prescription_relative_option_reaches_every_cascade_of_the_network(name, config):
    from monai.bundle import ConfigParser

    from custom_nets.profiles import MERGED_PTV_CHANNEL

    configs = REPO_ROOT / "bundles" / name / "configs"
    for relative, channel in ((False, None), (True, MERGED_PTV_CHANNEL)):
        parser = ConfigParser()
        parser.read_config([str(configs / config), str(configs / "cpu.json")])
        parser.update({"prescription_relative": relative, "prior_checkpoint": None, "mask_source": "reference"})
        network = parser.get_parsed_content("network_def")
        cascades = [m for m in network.modules() if hasattr(m, "stage_a")]
        assert cascades and all(m.ptv_channel == channel for m in cascades)
