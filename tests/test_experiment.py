"""``dosepred experiment cpu-budget`` at toy settings: trains, evaluates, reports, and reuses finished runs."""

from __future__ import annotations

import json

import pytest

from conftest import TINY
from dosepred.experiment import cpu_budget

TINY_IDS = {TINY[i][2:]: json.loads(TINY[i + 1]) for i in range(0, len(TINY), 2)}


def test_experiment_trains_evaluates_and_reports_then_reuses_the_runs(openkbp_mini_datalist, tmp_path):
    out, report = tmp_path / "runs", tmp_path / "results" / "cpu-budget"
    overrides = json.dumps({**TINY_IDS, "max_iterations": 2, "iterations_per_epoch": 2, "num_workers": 0})
    markdown = cpu_budget(data=str(openkbp_mini_datalist.parent), out=str(out), report=str(report),
                          only="cascunet_basic", overrides=overrides)
    text = (tmp_path / "results" / "cpu-budget.md").read_text()
    assert markdown.endswith("cpu-budget.md") and "Not budget v1" in text
    rows = json.loads((report / "models.json").read_text())
    assert [r["model"] for r in rows] == ["cascunet_basic", "cascunet_basic [no_tta]"]
    for row in rows:
        assert row["dose score (Gy)"] > 0 and row["iterations"] == 2 and row["s / iteration"] > 0
        assert row["peak memory (GB)"] > 0 and row["mask source"] == "none"
    assert (report / "report.md").is_file() and (report / "isodose_dice.png").is_file()
    commands = (out / "cascunet_basic" / "commands.txt").read_text().splitlines()
    assert len(commands) == 3 and "run training" in commands[0]
    assert "[[],[0],[2],[0,2]]" in commands[1] and "--tta_flip_axes '[[]]'" in commands[2]
    cpu_budget(data=str(openkbp_mini_datalist.parent), out=str(out), report=str(report), only="cascunet_basic",
               overrides=overrides)
    assert (out / "cascunet_basic" / "commands.txt").read_text().splitlines() == commands  # nothing rerun


def test_experiment_refuses_unknown_runs_and_a_missing_prior(openkbp_mini_datalist, tmp_path):
    with pytest.raises(ValueError, match="unknown runs"):
        cpu_budget(data=str(openkbp_mini_datalist.parent), out=str(tmp_path), only="cascunet_dm4")
    with pytest.raises(FileNotFoundError, match="needs its prior, cascunet_basic"):
        cpu_budget(data=str(openkbp_mini_datalist.parent), out=str(tmp_path), only="cascunet_dm3")
    with pytest.raises(FileNotFoundError, match="openkbp convert"):
        cpu_budget(data=str(tmp_path / "nothing"), out=str(tmp_path))


def test_pooling_floor_is_small_and_lower_for_the_region_than_the_whole_volume(openkbp_mini_datalist):
    from dosepred.experiment import pooling_floor

    floor = pooling_floor(data=str(openkbp_mini_datalist.parent), split="training", network_size=64)
    assert 0 < floor["region"] < floor["whole_volume"] < 2.0
    assert pooling_floor(data=str(openkbp_mini_datalist.parent), split="training", network_size=128)["whole_volume"] \
        < 1e-5  # no pooling at the full size: the dose comes back exactly


def test_the_mask_claim_needs_both_scores_to_fall_beyond_the_seed_spread():
    from dosepred.experiment import mask_claim

    def row(model, dose, dvh):
        return {"model": model, "dose score (Gy)": dose, "DVH score (Gy)": dvh}

    basic = row("cascunet_basic", 4.0, 3.8)
    assert "It holds here" in mask_claim([basic, row("cascunet_dm3 [masks-prior]", 3.8, 3.6),
                                          row("cascunet_dm10 [masks-prior]", 3.6, 3.4)])
    ties = mask_claim([basic, row("cascunet_dm3 [masks-prior]", 3.99, 3.81)])
    assert "within the margin" in ties and "0.05 Gy (no second seed" in ties and "Not yet run: 5, 7, 10" in ties
    worse = mask_claim([basic, row("cascunet_dm10 [masks-prior]", 3.7, 4.0), row("basic_seed1", 4.02, 3.85)])
    assert "does not hold" in worse and "two seeds of the basic cascade, 0.05 Gy" in worse
    assert "dose score falls" in worse and "DVH score rises" in worse


def test_the_seed_spread_is_the_yardstick_of_single_runs():
    from dosepred.experiment import seed_spread

    def row(model, dose, dvh):
        return {"model": model, "dose score (Gy)": dose, "DVH score (Gy)": dvh}

    assert "has not run yet" in seed_spread([row("cascunet_basic", 4.0, 3.8)])
    text = seed_spread([row("cascunet_basic", 3.99, 3.79), row("basic_seed1", 3.86, 3.75)])
    assert "0.13 Gy apart in dose score and 0.04 Gy in DVH score" in text
