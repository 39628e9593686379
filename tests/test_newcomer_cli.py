"""A newcomer's path through the CLI (issue 16): the next step train prints and evaluate's hint name a split that
works on the bundled sample; retrieval never scores a study against itself; one vocabulary of findings in
every JSON; a run directory given as --bundle, missing inputs and --retry-errors; readable --help; the sample
DICOM. Everything runs on the real bundled sample, the default bundle and the shipped reference run.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import click
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from edgecap.cli import app
from edgecap.resources import resources_dir, sample_dir

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = resources_dir() / "reference" / "default"  # a run directory: config.json, vocab.json, split.json
IMAGES = sample_dir() / "images"
PNG_25 = IMAGES / "CXR25_IM-1024-2001.png"
DICOM_25 = sample_dir() / "dicom" / "CXR25_frontal.dcm"
TYPE_LABEL = re.compile(r"<\s*(bool|str|int|float|path|file|dir|directory|list\[|tuple|uuid|datetime)")


def invoke(*args):
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in r.output + r.stderr, r.output + r.stderr
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r


# ---- 1: the split to evaluate ------------------------------------------------------------------------------
def test_evaluate_of_an_empty_split_names_the_split_to_use():
    """The README's `--split test` on the shipped reference run and the bundled sample: no test study, so exit 2
    with each split's count and the split that has studies (before: the bare "no study" line)."""
    r = invoke("evaluate", "--run", REFERENCE, "--data", sample_dir(), "--split", "test", "--no-meteor")
    assert r.exit_code == 2
    assert "per split of this run: train 9, val 0, test 0; use --split all (9 studies" in r.stderr, r.stderr
    assert "training studies" in r.stderr


def _run_with_split(tmp_path: Path, split_of: dict[str, str]) -> Path:
    """The reference run's config and vocabulary with another recorded split (uid -> split; others: train)."""
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "vocab.json"):
        shutil.copy(REFERENCE / name, run / name)
    recorded = json.loads((REFERENCE / "split.json").read_text())
    recorded["splits"] = {uid: split_of.get(uid, "train") for uid in recorded["splits"]}
    (run / "split.json").write_text(json.dumps(recorded))
    return run


def test_next_step_after_train_names_a_split_with_studies(tmp_path):
    """train's last line (cli.train._evaluate_split) on the bundled sample: `all` for the shipped reference (its
    split has no held-out study with an image), `test` / `val` when the run's split puts studies there."""
    from edgecap.cli.train import _evaluate_split

    assert _evaluate_split(REFERENCE, sample_dir()).startswith("--split all   # no held-out study")  # 9 training
    held_out = _run_with_split(tmp_path, {"25": "test", "303": "val", "799": "val"})
    assert _evaluate_split(held_out, sample_dir()) == "--split test   # 1 study"
    (tmp_path / "v").mkdir()
    val_only = _run_with_split(tmp_path / "v", {"303": "val", "799": "val"})
    assert _evaluate_split(val_only, sample_dir()) == "--split val   # 2 studies"


# ---- 4: retrieval never returns the evaluated study ---------------------------------------------------------
class _Out:
    def __init__(self, uid: str, pooled: np.ndarray):
        self.uid, self.pooled = uid, pooled


def test_nearest_neighbour_leaves_the_study_out_of_its_bank():
    from edgecap.training.evaluate_run import nearest_neighbours

    bank = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    found = nearest_neighbours(bank, ["a", "b", "c"], [_Out("a", bank[0]), _Out("c", bank[2]), _Out("z", bank[0])])
    assert found == {"a": 1, "c": 1, "z": 0}  # "a" and "c" never themselves; "z" is not in the bank
    assert nearest_neighbours(bank[:1], ["a"], [_Out("a", bank[0])]) is None  # only itself: not applicable


@pytest.mark.tf
@pytest.mark.slow
def test_evaluate_all_does_not_score_retrieval_against_itself():
    """`--split all` of the reference run: all 9 studies are in the bank; before, retrieval found each study
    itself and scored 1.000 on every metric. Now each is left out (the measured BLEU-4 is 0.04) and a warning
    says the split holds training studies."""
    from edgecap.training.evaluate_run import evaluate

    res = evaluate(REFERENCE, sample_dir(), "all", meteor=False, log=lambda *a: None)
    nn = res.systems["nearest-neighbour"]["metrics"]
    assert res.n_studies == 9 and nn["bleu4"] < 0.5 and nn["cider"] < 5
    assert all(ex["nearest-neighbour"] != ex["reference"] for ex in res.examples)
    assert any("9 of the 9 studies" in w and "training studies" in w for w in res.warnings)


# ---- 6: one vocabulary of findings --------------------------------------------------------------------------
def test_label_json_speaks_as_caption_json():
    """caption's JSON findings and `label --json` of the same text: the same words (before: 1 / 0 / -1)."""
    cap = invoke("caption", PNG_25, "--format", "json", "--no-attention")
    assert cap.exit_code == 0, cap.stderr
    record = json.loads(cap.stdout)
    lab = invoke("label", "--json", record["text"])
    assert lab.exit_code == 0
    assert json.loads(lab.stdout)["labels"] == record["findings"]
    words = {v for v in record["findings"].values()}
    assert words <= {"positive", "negative", "uncertain", None} and words - {None}


def test_label_csv_keeps_the_chexpert_codes(tmp_path):
    src = tmp_path / "r.csv"
    src.write_text("uid,findings\na,Mild cardiomegaly. No effusion.\n")
    csv_out = invoke("label", "--csv", src).stdout.splitlines()
    row = dict(zip(csv_out[0].split(","), csv_out[1].split(",")))
    assert (row["Cardiomegaly"], row["Pleural Effusion"], row["Edema"]) == ("1", "0", "")
    jsonl = json.loads(invoke("label", "--csv", src, "--json").stdout)
    assert (jsonl["labels"]["Cardiomegaly"], jsonl["labels"]["Pleural Effusion"]) == ("positive", "negative")


# ---- 7: a run directory as --bundle, missing inputs, --retry-errors ------------------------------------------
@pytest.mark.parametrize("command", [["caption", PNG_25], ["serve"], ["bench", "--quick"]])
def test_a_run_directory_as_bundle_says_to_convert_it(command):
    r = invoke(*command, "--bundle", REFERENCE)
    assert r.exit_code == 2
    assert "is a training run directory, not a bundle" in r.stderr
    assert f"edgecap convert --run {REFERENCE} --out BUNDLE" in r.stderr


def test_missing_inputs_are_bad_usage(tmp_path):
    """Nothing to caption (every input missing, or the --lateral view): exit 2, as the README says of bad usage,
    before any bundle is loaded (before: 1). A missing file among others: an error record, exit 1."""
    r = invoke("caption", tmp_path / "nope.png")
    assert r.exit_code == 2 and f"{tmp_path / 'nope.png'}: no such file" in r.stderr
    r = invoke("caption", tmp_path / "a.png", tmp_path / "b.png")
    assert r.exit_code == 2 and "a.png: no such file" in r.stderr and "b.png: no such file" in r.stderr
    r = invoke("caption", PNG_25, "--lateral", tmp_path / "lat.png")
    assert r.exit_code == 2 and "lat.png: no such file (--lateral)" in r.stderr
    r = invoke("caption", PNG_25, tmp_path / "nope.png", "--format", "json", "--no-attention", "--no-progress")
    assert r.exit_code == 1
    assert [json.loads(x)["status"] for x in r.stdout.splitlines()] == ["ok", "error"]
    assert invoke("label", "--csv", tmp_path / "nope.csv").exit_code == 2


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".txt"])
def test_retry_errors_replaces_the_error_record(tmp_path, suffix):
    """A corrupt image retried (twice) with --retry-errors: one record per input in every format, counted once
    (before: each retry appended another error record beside the first)."""
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(PNG_25, scans / PNG_25.name)
    (scans / "torn.png").write_bytes(PNG_25.read_bytes()[:3000])
    out = tmp_path / f"reports{suffix}"
    assert invoke("caption", scans, "--out", out, "--no-progress").exit_code == 1
    first = out.read_text()
    for _ in range(2):
        r = invoke("caption", scans, "--out", out, "--no-progress", "--retry-errors")
        assert r.exit_code == 1 and "0 captioned, 1 already done, 1 failed" in r.stderr, r.stderr
    text = out.read_text()
    assert text.count("torn.png: not a readable image") == 1
    assert text.count(PNG_25.name) == first.count(PNG_25.name)  # the good record is kept as it was
    assert text.startswith(first.split("\n", 1)[0])  # csv header / first record unchanged
    assert not list(tmp_path.rglob("*.edgecap-new"))  # no new file left beside it
    shutil.copy(PNG_25, scans / "torn.png")  # fixed (a new key): captioned, the old error record stays history
    r = invoke("caption", scans, "--out", out, "--no-progress")
    assert r.exit_code == 0 and "1 captioned, 1 already done, 0 failed" in r.stderr


# ---- 8: readable --help -------------------------------------------------------------------------------------
def _commands(group: click.Command, path: tuple[str, ...] = ()):
    yield path
    for name, sub in getattr(group, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def test_no_help_shows_type_labels():
    """Every command's --help: value names such as PATH, N, TEXT; nothing after a flag; never Typer's
    <bool>, <path>, <list[str]> labels."""
    commands = list(_commands(typer.main.get_command(app)))
    assert ("caption",) in commands and ("bundle", "verify") in commands
    for path in commands:
        r = CliRunner().invoke(app, [*path, "--help"], terminal_width=200)
        assert r.exit_code == 0, (path, r.output)
        assert not TYPE_LABEL.search(r.output), (path, TYPE_LABEL.search(r.output), r.output)
    caption_help = CliRunner().invoke(app, ["caption", "--help"], terminal_width=200).output
    assert re.search(r"--bundle\s+PATH\s", caption_help) and re.search(r"--beam\s+N \[1<=x<=", caption_help)
    assert re.search(r"--retry-errors\s+Redo", caption_help)  # a flag: no value name


def test_readable_type_names():
    from edgecap.cli.common import readable_type

    cases = {
        "<path>": "PATH",
        "<int range>": "N",
        "<float>": "NUMBER",
        "<str>": "TEXT",
        "<list[str]>": "TEXT...",
        "<list[path]>": "PATH...",
        "<bool>": "",
        "<a|b>": "a|b",
        "IMAGE|DIR|GLOB...": "IMAGE|DIR|GLOB...",
    }
    assert {k: readable_type(k) for k in cases} == cases


# ---- 9: the sample DICOM ------------------------------------------------------------------------------------
def _script():
    spec = importlib.util.spec_from_file_location("make_sample_dicom", ROOT / "scripts" / "make_sample_dicom.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sample_dicom_is_what_the_script_writes_from_the_png():
    pytest.importorskip("pydicom")
    from edgecap.runtime.dicom import import_pydicom

    assert DICOM_25.read_bytes() == _script().sample_dicom(PNG_25)  # reproducible, byte for byte
    ds = import_pydicom().dcmread(str(DICOM_25))
    import cv2

    png = cv2.imread(str(PNG_25), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(ds.pixel_array, png[..., 0])  # the distributed pixels, unchanged
    assert ds.PatientName == "" and ds.Modality == "OT" and "CC BY-NC-ND 4.0" in ds.ImageComments


def test_sample_dicom_gets_the_report_of_its_png():
    """`edgecap caption` of the DICOM and of its source PNG: the same report, token for token."""
    pytest.importorskip("pydicom")
    reports = []
    for image in (DICOM_25, PNG_25):
        r = invoke("caption", image, "--format", "json", "--no-attention")
        assert r.exit_code == 0, r.stderr
        reports.append(json.loads(r.stdout))
    dcm, png = reports
    assert dcm["text"] == png["text"] and dcm["tokens"] == png["tokens"] and dcm["findings"] == png["findings"]
    assert dcm["warnings"] == png["warnings"]


def test_data_loaders_leave_the_sample_dicom_out():
    """The DICOM is not named like an Open-i image: the sample still has 11 images of 10 studies for training,
    calibration and data stats."""
    from edgecap.data.iu_xray import index_images

    found = index_images(sample_dir())
    assert len(found) == 11 and all(p.suffix == ".png" for p in found.values())
