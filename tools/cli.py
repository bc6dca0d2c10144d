"""``dosepred``: the project's command line.

    dosepred quickstart                      # phantoms -> (train -> predict -> evaluate) on CPU
    dosepred phantoms generate --profile lung --out data/phantoms
    dosepred phantoms previews data/phantoms/datalist.json
    dosepred openkbp convert <train-pats.tar.xz> <validation-pats.tar.xz> --out data/openkbp
    dosepred openkbp export <pred.nii.gz> <case folder> <pt_N.csv>
    dosepred openkbp score <submission dir> <validation-pats dir> --out scores.json   # official scores, fast
    dosepred bundles sync                    # re-render bundles/* from bundles/_template
    dosepred bundles package <trained bundle> --configs configs/openkbp.json --out dist   # archive + weights
    dosepred evaluate <datalist> <predictions dir> --split validation --out eval/mine
    dosepred report <eval dir> [<eval dir> ...] --out report --names "basic,10 masks"
    dosepred model-size randose --size 128   # parameters and FLOPs of a bundle's network
    dosepred dicom phantom --out data/dicom_phantom     # a synthetic DICOM-RT patient
    dosepred dicom export data/openkbp/cases/pt_201 --out data/dicom/pt_201   # a case as DICOM-RT
    dosepred predict <DICOM folder> --bundle bundles/cascunet_basic --out runs/predict   # -> RT Dose + DVHs
    dosepred predict <DICOM folder> <DICOM folder> ... --out runs/cohort   # one bundle start, a folder each
    dosepred benchmark --bundles cascunet_basic,randose --size 128   # speed table (JSON + Markdown)
    dosepred experiment cpu-budget --data data/openkbp   # the cascade paper's experiment at a CPU budget + report
    dosepred experiment pooling-floor --data data/openkbp   # the dose score the 64^3 network grid allows at best
    dosepred pretrained train cascunet_basic --data data/openkbp   # train a bundle's shipped OpenKBP weights
    dosepred pretrained ship cascunet_basic --data data/openkbp    # -> bundles/cascunet_basic/models/model.pt
"""

from __future__ import annotations

import inspect
import sys

import fire

from custom_nets.predict import PatientsFailed
from dosepred import benchmark, bundles, dicom, experiment, model_size, openkbp, phantoms, pretrained, quickstart, report


COMMANDS = {
    "quickstart": quickstart.run,
    "phantoms": {"generate": phantoms.generate, "previews": phantoms.previews},
    "openkbp": {"convert": openkbp.convert, "export": openkbp.export, "score": openkbp.score},
    "bundles": {"sync": bundles.sync, "package": bundles.package},
    "evaluate": report.evaluate,
    "report": report.report,
    "model-size": model_size.model_size,
    "dicom": {"phantom": dicom.phantom, "export": dicom.export},
    "predict": dicom.predict,
    "benchmark": benchmark.benchmark,
    "experiment": {"cpu-budget": experiment.cpu_budget, "pooling-floor": experiment.pooling_floor},
    "pretrained": {"train": pretrained.train, "ship": pretrained.ship},
}


def main() -> None:
    try:
        check_flags(sys.argv[1:])
        fire.Fire(COMMANDS, name="dosepred")
    except (ValueError, FileNotFoundError, KeyError) as err:  # bad input: say what, without a traceback
        print(f"dosepred: error: {err}", file=sys.stderr)
        sys.exit(2)
    except PatientsFailed as err:  # the other patients' outputs are written
        print(f"dosepred: error: {err}", file=sys.stderr)
        sys.exit(1)


def check_flags(argv: list[str]) -> None:
    """Refuse a flag the command does not take before any work starts (fire would run the command first and
    complain about the leftover flag afterwards)."""
    command, words = COMMANDS, list(argv)
    while isinstance(command, dict) and words and words[0] in command:
        command = command[words.pop(0)]
    if isinstance(command, dict) or any(w in ("--help", "-h") for w in words):
        return
    parameters = inspect.signature(command).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    names = {name.replace("_", "-") for name, parameter in parameters.items()
             if parameter.kind is not inspect.Parameter.VAR_POSITIONAL}
    for word in words:
        if word == "--":
            return
        if word.startswith("--"):
            flag = word[2:].split("=", 1)[0].replace("_", "-")
            if flag not in names and not (flag.startswith("no") and flag[2:] in names):
                raise ValueError(f"--{flag}: no such option of this command; it takes "
                                 f"{', '.join('--' + n for n in sorted(names))}")


if __name__ == "__main__":
    main()
