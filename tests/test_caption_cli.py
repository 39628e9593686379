"""`edgecap caption` on a real converted bundle (conftest.caption_bundle) and real IU X-Ray images: formats,
incremental batch output, resume, a corrupt file among real ones, not-a-chest-X-ray exit status, usage errors.
"""

import csv
import json
import shutil

import cv2
import pytest
import typer
from typer.testing import CliRunner

from edgecap.cli.caption import caption

pytestmark = pytest.mark.tf  # building the bundle fixture needs TensorFlow; the command does not

IMAGES = ["CXR25_IM-1024-2001.png", "CXR2608_IM-1098-1001.png", "CXR303_IM-1404-1001.png", "CXR799_IM-2333-1001.png"]


@pytest.fixture(scope="module")
def run(caption_bundle):
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(caption)
    runner = CliRunner()

    def invoke(*args, bundle=True):
        argv = [str(a) for a in args] + (["--bundle", str(caption_bundle)] if bundle else [])
        result = runner.invoke(app, argv)
        assert "Traceback" not in result.output + result.stderr, result.output + result.stderr
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    return invoke


@pytest.fixture
def folder(iu_data, tmp_path):
    d = tmp_path / "scans"
    d.mkdir()
    for name in IMAGES:
        shutil.copy(iu_data / "images" / name, d / name)
    return d


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_single_image_text(run, folder):
    r = run(folder / IMAGES[0], "--beam", 1)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith(f"== {folder / IMAGES[0]} [ok]\nThe ")
    assert "not validated for clinical use" in r.stdout


def test_single_image_json_to_stdout(run, folder):
    r = run(folder / IMAGES[0], "--format", "json")
    assert r.exit_code == 0
    (rec,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert rec["status"] == "ok" and rec["format"] == "edgecap-report/1" and rec["beam"] == 3
    assert len(rec["attention"]) == len(rec["tokens"])


def test_batch_jsonl_with_a_corrupt_file_then_resume(run, folder, iu_data):
    """A truncated PNG among real images: reported, recorded, skipped; the others written; exit 1.
    Re-running recomputes nothing; an interrupted last record is redone."""
    (folder / "truncated.png").write_bytes((iu_data / "images" / "CXR79_IM-2329-1001.png").read_bytes()[:5000])
    out = folder.parent / "out" / "reports.jsonl"
    r = run(folder, "--out", out, "--no-attention")
    assert r.exit_code == 1
    assert "truncated.png: not a readable image" in r.stderr
    assert "4 captioned, 0 already done, 1 failed" in r.stderr
    recs = read_jsonl(out)
    assert [x["status"] for x in recs] == ["ok"] * 4 + ["error"]
    assert {x["input"].rsplit("/", 1)[1] for x in recs[:4]} == set(IMAGES)
    assert all(x["text"] and "attention" not in x for x in recs[:4])
    before = out.read_bytes()

    r = run(folder, "--out", out)
    assert r.exit_code == 1 and "0 captioned, 5 already done, 1 failed" in r.stderr
    assert out.read_bytes() == before

    lines = before.splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:3]) + lines[3][: len(lines[3]) // 2])  # as if killed while writing record 4
    r = run(folder, "--out", out, "--no-attention")
    assert r.exit_code == 1 and "1 captioned, 3 already done, 1 failed" in r.stderr
    again = read_jsonl(out)
    assert [(x["key"], x.get("text")) for x in again] == [(x["key"], x.get("text")) for x in recs]


def test_resume_sees_changed_files(run, folder, iu_data):
    out = folder.parent / "reports.jsonl"
    assert run(folder, "--out", out).exit_code == 0
    shutil.copy(iu_data / "images" / "CXR79_IM-2329-1001.png", folder / IMAGES[0])  # replaced: new size, mtime
    r = run(folder, "--out", out)
    assert r.exit_code == 0 and "1 captioned, 3 already done" in r.stderr
    assert len(read_jsonl(out)) == 5


def test_batch_csv_incremental_and_resumed(run, folder):
    out = folder.parent / "reports.csv"
    assert run(folder / IMAGES[0], folder / IMAGES[1], "--out", out).exit_code == 0
    r = run(folder, "--out", out)  # the two new ones only
    assert r.exit_code == 0 and "2 captioned, 2 already done" in r.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 4 and all(row["status"] == "ok" and row["text"] for row in rows)
    assert rows[0]["Cardiomegaly"] in ("positive", "negative", "uncertain", "")
    assert out.read_text().count("key,input") == 1


def test_not_a_chest_xray_exit_status(run, folder, iu_data):
    skdata = pytest.importorskip("skimage.data")
    cv2.imwrite(str(folder / "cat.jpg"), skdata.chelsea()[..., ::-1])
    out = folder.parent / "reports.jsonl"
    r = run(folder, "--out", out)
    assert r.exit_code == 3
    assert "cat.jpg: flagged (not_grayscale): not a chest X-ray, or too small to read; no report text" in r.stderr
    cat = [x for x in read_jsonl(out) if x["input"].endswith("cat.jpg")][0]
    assert cat["status"] == "flagged" and cat["flagged"] and cat["warnings"][0]["code"] == "not_grayscale"
    assert cat["text"] is None and cat["text_withheld"] and "flagged_text" not in cat
    assert run(folder, "--out", out).exit_code == 3  # resumed: still 3
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert run(folder, "--out", out).exit_code == 1  # a failure outranks a flag


def test_text_output_says_not_a_chest_xray(run, tmp_path):
    skdata = pytest.importorskip("skimage.data")
    cat = tmp_path / "cat.png"
    cv2.imwrite(str(cat), skdata.chelsea()[..., ::-1])
    r = run(cat)
    assert r.exit_code == 3
    head, reasons, withheld = r.stdout.splitlines()[:3]
    assert head == f"== {cat} [flagged]" and reasons.startswith("NOT A CHEST X-RAY, OR NOT READABLE AS ONE: frontal")
    assert withheld == "No report: the model's text is withheld."


def test_dicom_and_glob_inputs(run, folder, make_dicom):
    from edgecap.runtime.preprocess import read_image

    gray = read_image(folder / IMAGES[0])[..., 0].copy()
    (folder / "sub").mkdir()
    (folder / "sub" / "study.dcm").write_bytes(make_dicom(gray, photometric="MONOCHROME1"))
    (folder / "sub" / "IM0001").write_bytes(make_dicom(gray))  # no suffix: found by its DICM mark
    (folder / "sub" / "notes.txt").write_text("not an image")
    r = run(f"{folder}/**/*", "--format", "json", "--no-progress")
    assert r.exit_code == 0, r.stderr
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(recs) == 6
    texts = {x["input"].rsplit("/", 1)[1]: x["text"] for x in recs}
    assert texts["study.dcm"] == texts["IM0001"] == texts[IMAGES[0]]


def test_lateral(run, iu_data):
    r = run(
        iu_data / "images" / "CXR54_IM-2145-1001.png",
        "--lateral",
        iu_data / "images" / "CXR54_IM-2145-1002.png",
        "--format",
        "json",
    )
    assert r.exit_code == 0
    assert json.loads(r.stdout)["inputs"]["lateral"].endswith("CXR54_IM-2145-1002.png")


def test_usage_errors_exit_2(run, folder, caption_bundle, tmp_path):
    r = run(tmp_path / "nothing-here" / "*.png")
    assert r.exit_code == 2 and "matched no image files" in r.stderr
    r = run(folder, "--lateral", folder / IMAGES[1])
    assert r.exit_code == 2 and "--lateral goes with exactly one" in r.stderr
    r = run(folder / IMAGES[0], "--format", "xml")
    assert r.exit_code == 2 and "unknown format" in r.stderr
    r = run(folder / IMAGES[0], "--bundle", tmp_path / "no-bundle", bundle=False)
    assert r.exit_code == 2 and "no-bundle" in r.stderr
    broken = tmp_path / "broken-bundle"
    shutil.copytree(caption_bundle, broken)
    step = next(broken.glob("decoder_step_*.tflite"))
    data = bytearray(step.read_bytes())
    data[len(data) // 2] ^= 0xFF
    step.write_bytes(bytes(data))
    r = run(folder / IMAGES[0], "--bundle", broken, bundle=False)
    assert r.exit_code == 2 and "sha256 mismatch" in r.stderr


def test_missing_input_among_others_exit_1(run, folder):
    r = run(folder / IMAGES[0], folder / "missing.png", "--format", "csv")
    assert r.exit_code == 1 and "missing.png: no such file" in r.stderr
    rows = list(csv.DictReader(r.stdout.splitlines()))
    assert [row["status"] for row in rows] == ["ok", "error"]


def test_text_file_output_resumes_and_retry_errors(run, folder):
    (folder / "empty.png").write_bytes(b"")
    out = folder.parent / "reports.txt"
    assert run(folder, "--out", out, "--beam", 1).exit_code == 1
    text = out.read_text()
    assert text.count("\n== ") + text.startswith("== ") == 5 and "empty.png: empty file" in text
    r = run(folder, "--out", out, "--beam", 1)
    assert r.exit_code == 1 and "0 captioned, 5 already done, 1 failed" in r.stderr
    r = run(folder, "--out", out, "--beam", 1, "--retry-errors")
    assert r.exit_code == 1 and "0 captioned, 4 already done, 1 failed" in r.stderr
    assert out.read_text().count("empty.png: empty file") == 1  # the retry's record replaced the error record
    assert out.read_text().count("\n== ") + 1 == 5  # one block per input


def test_csv_of_other_columns_is_refused_untouched(run, folder):
    """A CSV from before the flagged status (no text_withheld / flagged_text columns): edgecap's, but not one
    this version can append to without mixing column sets."""
    out = folder.parent / "old.csv"
    old_columns = "key,input,lateral,status,flagged,warnings,text,error,total_ms,decoder_steps"
    out.write_text(f"{old_columns}\n/x.png|1|2,/x.png,,ok,False,,The heart is normal.,,12.5,9\n")
    before = out.read_bytes()
    r = run(folder / IMAGES[0], "--out", out)
    assert r.exit_code == 2 and "an edgecap CSV with other columns" in r.stderr
    assert out.read_bytes() == before


def test_opencv_logs_quieted_with_either_api(monkeypatch):
    """OpenCV 4.14 (constraints.txt) has only cv2.utils.logging; 4.8-4.11 (beside numpy 1, e.g. on a Pi with
    tflite-runtime 2.14) only cv2.setLogLevel, on which `caption` used to fail with an AttributeError."""
    import cv2

    from edgecap.cli.common import quiet_opencv

    quiet_opencv()  # the installed OpenCV's own API
    assert cv2.utils.logging.getLogLevel() == cv2.utils.logging.LOG_LEVEL_ERROR
    levels = []
    monkeypatch.delattr(cv2.utils, "logging")  # as in OpenCV 4.11: the older, top-level API only
    monkeypatch.setattr(cv2, "setLogLevel", levels.append, raising=False)
    quiet_opencv()
    assert levels == [2]
