"""The command line as a user runs it (README's first command on a reduced phantom set)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_quickstart_command_runs_on_the_embedded_phantoms(tmp_path):
    out = tmp_path / "qs"
    result = subprocess.run(
        [sys.executable, "-m", "tools.cli", "quickstart", "--out", str(out), "--n_training", "2", "--n_validation",
         "1", "--n_test", "1", "--shape", "32", "--iterations", "2"],
        capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0, result.stderr[-2000:]
    datalist = json.loads((out / "data" / "datalist.json").read_text())
    assert [len(datalist[s]) for s in ("training", "validation", "test")] == [2, 1, 1]
    assert len(list((out / "data" / "previews").glob("*.png"))) == 4
    report = out / "cascunet_basic" / "eval" / "test"
    assert f"report: {report}" in result.stdout
    info = json.loads((report / "run_info.json").read_text())
    assert info["split"] == "test" and info["metrics"]["dose_score_gy"] > 0
    assert len(list(report.glob("*_predicted.png"))) == 1
    assert (out / "cascunet_basic" / "models" / "model.pt").is_file()


def test_bad_arguments_get_a_clear_message(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tools.cli", "phantoms", "generate", "--out", str(tmp_path), "--shape", "8"],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode != 0 and "shape must be three sizes >= 16" in result.stderr
