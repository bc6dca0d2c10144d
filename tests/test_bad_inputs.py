"""Malformed inputs fed to the command that meets them in real use: each is refused with exit status 2 and a
message naming the file or option and the problem, and leaves nothing half-written behind."""

from __future__ import annotations

import json
import lzma
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import REPO_ROOT, TINY, require_shared
from dosepred.cli import main


def dosepred(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """Run ``dosepred ARGS`` in this process; returns the exit status and what it printed on stderr."""
    monkeypatch.setattr(sys, "argv", ["dosepred", *args])
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    return code, capsys.readouterr().err


def _patients(tmp_path: Path, edit: Callable[[Path], None] | None, patient: str = "pt_2") -> Path:
    """``train-pats/`` holding mini pt_1 intact and ``patient`` changed by ``edit``."""
    source = tmp_path / "train-pats"
    for case_id in ("pt_1", patient):
        shutil.copytree(require_shared(f"data/openkbp/mini/train-pats/{case_id}"), source / case_id)
        for f in (source / case_id).iterdir():
            f.chmod(0o644)
    if edit is not None:
        edit(source / patient)
    return source


def _cut(name: str, fraction: float, at_row: bool) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        data = (folder / name).read_bytes()
        end = int(len(data) * fraction)
        if at_row:
            end = data.rindex(b"\n", 0, end) + 1
        (folder / name).write_bytes(data[:end])
    return edit


def _zero_dose(folder: Path) -> None:
    rows = (folder / "dose.csv").read_text().splitlines()
    (folder / "dose.csv").write_text("\n".join([rows[0]] + [r.split(",")[0] + ",0.0" for r in rows[1:]]) + "\n")


def _other_patients_dose(folder: Path) -> None:
    shutil.copy(folder.parent / "pt_1" / "dose.csv", folder / "dose.csv")


OPENKBP_CSVS = [
    ("ct cut at half, at a row boundary", _cut("ct.csv", 0.5, True), "ct.csv", "truncated"),
    ("ct cut at 90%, at a row boundary", _cut("ct.csv", 0.9, True), "ct.csv", "truncated"),
    ("ct cut mid-row", _cut("ct.csv", 0.7, False), "ct.csv", "truncated"),
    ("dose cut at half, at a row boundary", _cut("dose.csv", 0.5, True), "dose.csv", "truncated"),
    ("dose cut near its end", _cut("dose.csv", 0.99999, True), "dose.csv", "3 missing"),
    ("dose cut mid-row", _cut("dose.csv", 0.3, False), "dose.csv", "truncated"),
    ("mask cut at a row boundary", _cut("possible_dose_mask.csv", 0.6, True), "dose.csv", "outside it"),
    ("all-zero dose", _zero_dose, "dose.csv", "maximum dose is 0 Gy"),
    ("another patient's dose", _other_patients_dose, "dose.csv", "another patient"),
    ("dose value not a number", lambda f: (f / "dose.csv").write_text(",data\n5,abc\n"), "dose.csv",
     "unreadable row"),
    ("fractional flat index", lambda f: (f / "ct.csv").write_text(",data\n5.5,100\n"), "ct.csv", "integers"),
    ("repeated flat index", lambda f: (f / "PTV70.csv").write_text(",data\n5,\n5,\n"), "PTV70.csv", "repeated"),
    ("negative dose", lambda f: (f / "dose.csv").write_text((f / "dose.csv").read_text().replace(",0.", ",-0.", 1)),
     "dose.csv", "negative"),
    ("empty ct file", lambda f: (f / "ct.csv").write_text(""), "ct.csv", "header"),
    ("binary garbage", lambda f: (f / "possible_dose_mask.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00"),
     "possible_dose_mask.csv", "header"),
    ("spacing of two numbers", lambda f: (f / "voxel_dimensions.csv").write_text("3.9\n3.9\n"),
     "voxel_dimensions.csv", "3 positive"),
]


@pytest.mark.parametrize("edit, file, problem", [case[1:] for case in OPENKBP_CSVS], ids=[c[0] for c in OPENKBP_CSVS])
def test_openkbp_convert_refuses_a_damaged_patient_and_writes_nothing(tmp_path, monkeypatch, capsys, edit, file,
                                                                      problem):
    source = _patients(tmp_path, edit)
    code, err = dosepred(monkeypatch, capsys, "openkbp", "convert", str(source), "--out", str(tmp_path / "out"))
    assert code == 2, err
    assert f"pt_2/{file}" in err and problem in err, err
    assert not (tmp_path / "out" / "datalist.json").exists() and not list((tmp_path / "out").glob("cases/*"))
    assert [p.name for p in (tmp_path / "out").iterdir()] == [], "a staging folder was left behind"


@pytest.fixture(scope="module")
def intact_archive(tmp_path_factory) -> Path:
    """Two mini patients as ``train-pats.tar.xz`` (xz preset 0: the damage, not the compression, is under test)."""
    folder = tmp_path_factory.mktemp("archive")
    archive = folder / "train-pats.tar.xz"
    with tarfile.open(archive, "w:xz", preset=0) as tar:
        tar.add(_patients(folder, None), arcname="train-pats")
    return archive


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 64):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _flip_bytes, lambda p: p.write_bytes(b"not an archive\n" * 100),
                                    lambda p: p.write_bytes(lzma.compress(b"plain text, not a tar"))],
                         ids=["truncated", "byte-flipped", "not an archive", "xz of no tar"])
def test_a_damaged_archive_is_named_and_leaves_no_case(intact_archive, tmp_path, monkeypatch, capsys, damage):
    archive = Path(shutil.copy(intact_archive, tmp_path / intact_archive.name))
    damage(archive)
    code, err = dosepred(monkeypatch, capsys, "openkbp", "convert", str(archive), "--out", str(tmp_path / "out"))
    assert code == 2 and "train-pats.tar.xz" in err and ("archive" in err or "no OpenKBP patient" in err), err
    assert [p.name for p in (tmp_path / "out").iterdir()] == []


def test_conversion_removes_what_a_killed_run_left(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    (out / "cases" / ".pt_1.abc123.tmp").mkdir(parents=True)
    (out / ".convert.xyz.tmp").mkdir()
    code, err = dosepred(monkeypatch, capsys, "openkbp", "convert", str(_patients(tmp_path, None)), "--out", str(out))
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["cases", "datalist.json"]
    assert sorted(p.name for p in (out / "cases").iterdir()) == ["pt_1", "pt_2"]


@pytest.fixture(scope="module")
def converted_case(tmp_path_factory) -> Path:
    from dosepred.openkbp import convert

    out = tmp_path_factory.mktemp("case")
    source = out / "validation-pats"
    shutil.copytree(require_shared("data/openkbp/mini/validation-pats/pt_201"), source / "pt_201")
    convert(str(source), out=str(out / "converted"))
    return out / "converted" / "cases" / "pt_201"


def _edited_case(converted_case: Path, tmp_path: Path, edit: Callable[[Path], None]) -> Path:
    case = Path(shutil.copytree(converted_case, tmp_path / "pt_201"))
    edit(case)
    return case


def _resave_all(case: Path, transform: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]) -> None:
    for path in [*case.glob("*.nii.gz"), *case.glob("structures/*.nii.gz")]:
        image = nib.load(path)
        data, affine = transform(np.asanyarray(image.dataobj), image.affine)
        nib.save(nib.Nifti1Image(data, affine, image.header), path)


def _stored_values(case: Path) -> None:
    image = nib.load(case / "ct.nii.gz")
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj) + 1024, image.affine, image.header), case / "ct.nii.gz")


def _doubled_spacing(case: Path) -> None:
    scale = np.diag([2.0, 2.0, 2.0, 1.0])
    _resave_all(case, lambda data, affine: (data, affine @ scale))


@pytest.mark.parametrize("edit, file, problem", [
    (_stored_values, "ct.nii.gz", "Hounsfield"),
    (_doubled_spacing, "ct.nii.gz", "differs from case.json"),
], ids=["CT in stored values", "every file claims another spacing"])
def test_a_canonical_case_that_lies_is_refused_before_prediction(converted_case, tmp_path, monkeypatch, capsys,
                                                                 edit, file, problem):
    case = _edited_case(converted_case, tmp_path, edit)
    dose = tmp_path / "pred.nii.gz"
    shutil.copy(case / "dose.nii.gz", dose)
    code, err = dosepred(monkeypatch, capsys, "openkbp", "export", str(dose), str(case), str(tmp_path / "pt_201.csv"))
    assert code == 2 and file in err and problem in err, err
    assert not (tmp_path / "pt_201.csv").exists()


def test_export_refuses_a_prediction_on_another_grid_of_the_same_shape(converted_case, tmp_path, monkeypatch,
                                                                       capsys):
    image = nib.load(converted_case / "dose.nii.gz")
    flipped = image.affine @ np.diag([-1.0, 1.0, 1.0, 1.0])  # the same array mirrored about the first voxel
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj), flipped), tmp_path / "pred.nii.gz")
    code, err = dosepred(monkeypatch, capsys, "openkbp", "export", str(tmp_path / "pred.nii.gz"),
                         str(converted_case), str(tmp_path / "pt_201.csv"))
    assert code == 2 and "pred.nii.gz" in err and "not on the case's grid" in err, err
    assert not (tmp_path / "pt_201.csv").exists()
    case_json = json.loads((converted_case / "case.json").read_text())
    assert case_json["has_dose"]  # the fixture itself is intact


@pytest.mark.parametrize("args, option, problem", [
    (["phantoms", "generate", "--out", "OUT", "--seeed", "3"], "--seeed", "no such option"),
    (["openkbp", "convert", "x.tar.xz", "--outt", "OUT"], "--outt", "no such option"),
    (["dicom", "phantom", "--out", "OUT", "--plan", "maybe"], "--plan", "expected true or false"),
    (["phantoms", "generate", "--out", "OUT", "--preview", "nope"], "--preview", "expected true or false"),
    (["experiment", "cpu-budget", "--out", "OUT", "--report_only", "2"], "--report_only", "expected true or false"),
], ids=["mistyped flag", "mistyped flag of a subcommand", "--plan maybe", "--preview nope", "--report_only 2"])
def test_bad_options_are_refused_before_any_work(tmp_path, monkeypatch, capsys, args, option, problem):
    monkeypatch.chdir(tmp_path)
    code, err = dosepred(monkeypatch, capsys, *[str(tmp_path / "out") if a == "OUT" else a for a in args])
    assert code == 2 and option in err and problem in err, err
    assert list(tmp_path.iterdir()) == [], "work was done before the option was refused"


def test_false_means_false_on_every_command_line(tmp_path, monkeypatch, capsys):
    from custom_nets.options import as_bool, as_optional_bool

    code, err = dosepred(monkeypatch, capsys, "dicom", "phantom", "--out", str(tmp_path / "p"), "--shape", "32,32,16",
                         "--plan", "false", "--dose", "no")
    assert code == 0, err
    assert not list((tmp_path / "p").glob("R[PD].dcm")) and (tmp_path / "p" / "RS.dcm").is_file()
    assert [as_bool(v, "x") for v in ("false", "False", "no", "0", 0, False)] == [False] * 6
    assert [as_bool(v, "x") for v in ("true", "YES", "on", "1", 1, True)] == [True] * 6
    assert [as_optional_bool(v, "x") for v in (None, "null", "auto", "false")] == [None, None, None, False]


@pytest.fixture(scope="module")
def dicom_patient(tmp_path_factory) -> Path:
    from dosepred.dicom import phantom

    return Path(phantom(out=str(tmp_path_factory.mktemp("dicom") / "patient"), shape=(32, 32, 24)))


def _ct_files_by_z(folder: Path) -> list[Path]:
    import pydicom

    return sorted(folder.glob("CT.*.dcm"), key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))


def _garbage_slice(folder: Path) -> None:
    _ct_files_by_z(folder)[-1].write_bytes(b"\x00garbage" * 1000)


def _truncated_slice(folder: Path) -> None:
    last = _ct_files_by_z(folder)[0]
    last.write_bytes(last.read_bytes()[:-300])


@pytest.mark.parametrize("edit, file, problem", [
    (lambda f: _ct_files_by_z(f)[-1].unlink(), "RS.dcm", "beyond the CT's slices"),
    (lambda f: _ct_files_by_z(f)[0].unlink(), "RS.dcm", "beyond the CT's slices"),
    (_garbage_slice, "CT.", "not a readable DICOM file"),
    (_truncated_slice, "CT.", "pixel data"),
], ids=["last CT slice missing", "first CT slice missing", "a CT file replaced by garbage", "a truncated CT slice"])
def test_predict_refuses_a_damaged_patient_before_inference(dicom_patient, tmp_path, monkeypatch, capsys, edit, file,
                                                             problem):
    patient = Path(shutil.copytree(dicom_patient, tmp_path / "patient"))
    edit(patient)
    (tmp_path / "weights.pt").write_bytes(b"")  # the patient is refused before the weights are read
    code, err = dosepred(monkeypatch, capsys, "predict", str(patient), "--out", str(tmp_path / "out"),
                         "--grid_shape", "32,32,32", "--ckpt_path", str(tmp_path / "weights.pt"))
    assert code == 2 and file in err and problem in err, err
    assert not (tmp_path / "out").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["patient", "weights.pt"]


def test_predict_refuses_a_folder_of_other_files(dicom_patient, tmp_path, monkeypatch, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    code, err = dosepred(monkeypatch, capsys, "predict", str(dicom_patient), "--out", str(tmp_path / "out"))
    assert code == 2 and "--out" in err and "other files" in err, err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]


def _bundle_run(bundle: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monai.bundle", "run", *args], cwd=bundle, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def lung_bundle(tmp_path_factory, lung_phantom_datalist) -> Path:
    """The basic bundle trained for two iterations on the lung phantoms at the tiny test widths."""
    bundle = Path(shutil.copytree(REPO_ROOT / "bundles" / "cascunet_basic", tmp_path_factory.mktemp("b") / "basic"))
    result = _bundle_run(bundle, "training", "--config_file", "configs/train.json", "--dataset_dir",
                         str(lung_phantom_datalist.parent), *TINY, "--max_iterations", "2", "--iterations_per_epoch",
                         "2", "--num_workers", "0", "--resume", "false")
    assert result.returncode == 0, result.stderr[-3000:]
    return bundle


@pytest.mark.parametrize("args, option, problem", [
    (["--patch_size", "[32,32]"], "--patch_size", "expected three sizes"),
    (["--network_size", "[40,40,40]"], "--network_size", "multiples of 16"),
    (["--amp", "maybe"], "--amp", "expected true or false"),
    (["--datalist", "EMPTY"], "datalist.json", "split 'validation' holds no case"),
], ids=["2D patch", "network size not a multiple of 16", "--amp maybe", "empty validation split"])
def test_training_refuses_bad_options_before_caching_data(lung_bundle, lung_phantom_datalist, tmp_path, args, option,
                                                          problem):
    bundle = Path(shutil.copytree(lung_bundle, tmp_path / "bundle", ignore=shutil.ignore_patterns("models", "runs")))
    empty = tmp_path / "empty" / "datalist.json"
    empty.parent.mkdir()
    doc = json.loads(lung_phantom_datalist.read_text())
    doc["validation"] = []
    empty.write_text(json.dumps({**doc, **{s: [{**e, "case": str((lung_phantom_datalist.parent / e["case"]).resolve())}
                                           for e in doc[s]] for s in ("training", "test")}}))
    args = [str(empty) if a == "EMPTY" else a for a in args]
    result = _bundle_run(bundle, "training", "--config_file", "configs/train.json", "--dataset_dir",
                         str(lung_phantom_datalist.parent), *TINY, "--max_iterations", "2", "--num_workers", "0", *args)
    assert result.returncode != 0 and option in result.stderr and problem in result.stderr, result.stderr[-3000:]
    assert not (bundle / "models" / "model.pt").exists()


def test_training_fails_when_its_data_pipeline_raises(lung_bundle, lung_phantom_datalist, tmp_path):
    """A transform that raises on every sample (here: a label channel the cases do not have) used to end each epoch
    silently in MONAI's ThreadDataLoader: training saved untrained weights and exited 0."""
    bundle = Path(shutil.copytree(lung_bundle, tmp_path / "bundle", ignore=shutil.ignore_patterns("models", "runs")))
    result = _bundle_run(bundle, "training", "--config_file", "configs/train.json", "--dataset_dir",
                         str(lung_phantom_datalist.parent), *TINY, "--max_iterations", "2", "--num_workers", "0",
                         "--label_keys", "['dose','possible_dose_mask','no_such_key']")
    assert result.returncode != 0 and "no_such_key" in result.stderr, result.stderr[-3000:]
    assert not (bundle / "models" / "model.pt").exists()


def test_inference_refuses_a_checkpoint_of_other_widths_by_name(lung_bundle, lung_phantom_datalist, tmp_path):
    widths = ["--widths_a", "[4,8,16,32,64]", "--widths_b", "[4,8,16,32,64]"]
    result = _bundle_run(lung_bundle, "--config_file", "configs/inference.json", "--dataset_dir",
                         str(lung_phantom_datalist.parent), *TINY, *widths, "--output_dir", str(tmp_path / "out"))
    message = next((line for line in result.stderr.splitlines() if line.startswith("ValueError: checkpoint")),
                   result.stderr[-3000:])
    assert result.returncode != 0 and "models/model.pt was trained as the basic cascade" in message, message
    assert "widths A [2, 4, 8, 16, 32]" in message and "this config builds" in message
    assert not (tmp_path / "out").exists()


def test_resume_false_means_a_fresh_run(lung_bundle):
    from ignite.engine import Engine

    from custom_nets.training import attach_checkpoints

    assert list((lung_bundle / "models").glob("checkpoint_*.pt")), "the fixture should have left a checkpoint"
    for word in ("false", "False", "no", "0"):
        engine = Engine(lambda e, b: None)
        assert attach_checkpoints(engine, lung_bundle / "models", {}, resume=word, save=False) is None
    assert attach_checkpoints(Engine(lambda e, b: None), lung_bundle / "models", {}, resume="true", save=False)
    with pytest.raises(ValueError, match="--resume: expected true or false"):
        attach_checkpoints(Engine(lambda e, b: None), lung_bundle / "models", {}, resume="flase", save=False)
