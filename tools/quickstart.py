"""The README's first command: the whole job on the embedded default data (synthetic lung phantoms), on CPU.

phantoms -> train the basic cascade briefly (CPU profile) -> predict the test patients -> evaluate them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.bundle import run as run_bundle

from custom_nets.io.canonical import read_case
from custom_nets.io.datalist import load_datalist
from custom_nets.io.orientation import axcodes_of, reorient
from custom_nets.reports.case_preview import render_case_png
from tools import phantoms
from tools.bundles import BUNDLES_DIR


def run(out: str = "runs/quickstart", n_training: int = 6, n_validation: int = 2, n_test: int = 2,
        shape: int = 48, iterations: int = 60, seed: int = 0) -> str:
    """Generate lung phantoms, train cascunet_basic for ITERATIONS on CPU, predict and evaluate the test split.

    Prints where the report is and returns the evaluation folder.
    """
    out_dir = Path(out).resolve()
    datalist = phantoms.generate(out=str(out_dir / "data"), profile="lung", n_training=n_training,
                                 n_validation=n_validation, n_test=n_test, shape=shape, seed=seed, preview=True)
    bundle = out_dir / "cascunet_basic"
    shutil.rmtree(bundle, ignore_errors=True)
    shutil.copytree(BUNDLES_DIR / "cascunet_basic", bundle)
    configs = bundle / "configs"
    common = {"bundle_root": str(bundle), "dataset_dir": str(Path(datalist).parent), "logging_file":
              str(configs / "logging.conf"), "meta_file": str(configs / "metadata.json")}
    patch = [shape] * 3
    run_bundle("training", config_file=[str(configs / "train.json"), str(configs / "cpu.json")], **common,
               patch_size=patch, max_iterations=iterations, iterations_per_epoch=max(1, iterations // 3))
    inference = [str(configs / "inference.json"), str(configs / "cpu.json")]
    run_bundle(config_file=inference, **common, split="test")
    run_bundle(config_file=[*inference[:1], str(configs / "evaluate.json"), inference[1]], **common, split="test")

    report = bundle / "eval" / "test"
    for entry in load_datalist(datalist, "test"):
        case = read_case(entry["case"])
        predicted = nib.load(bundle / "predictions" / case.case_id / "dose_pred.nii.gz")
        dose = reorient(np.asanyarray(predicted.dataobj), predicted.affine, axcodes_of(case.affine))
        render_case_png(case, report / f"{case.case_id}_planned.png", title=f"{case.case_id}: planned dose")
        render_case_png(case, report / f"{case.case_id}_predicted.png", dose_gy=dose,
                        title=f"{case.case_id}: predicted dose (cascunet_basic, {iterations} CPU iterations)")
    metrics = json.loads((report / "run_info.json").read_text())["metrics"]
    print(f"test split ({n_test} phantoms), basic cascade after {iterations} iterations at the CPU profile: "
          + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()))
    print(f"report: {report}")
    return str(report)
