"""Tests of the rule-based findings labeler (a CheXpert *proxy*), its MeSH validation and its CLI."""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from edgecap.cli.label import label as label_command
from edgecap.labeler import OBSERVATIONS, Labeler
from edgecap.labeler.validate import classify_term, default_mesh_map, reference_labels, validate

IU_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "iu_xray" / "indiana_reports.csv"
needs_iu = pytest.mark.skipif(not IU_CSV.is_file(), reason="shared IU X-Ray data not present")

# Macro F1 reached on the full IU X-Ray CSV when this floor was set: 0.897 (12 observations >= 30 positives).
MACRO_F1_FLOOR = 0.88


@pytest.fixture(scope="module")
def lab() -> Labeler:
    return Labeler.default()


# --------------------------------------------------------------------------- API
def test_observations_and_api(lab):
    assert len(OBSERVATIONS) == 14
    assert OBSERVATIONS[0] == "No Finding" and OBSERVATIONS[-1] == "Support Devices"
    out = lab.label("Mild cardiomegaly.")
    assert list(out) == list(OBSERVATIONS)
    assert set(out.values()) <= {1, 0, -1, None}
    assert Labeler.default() is lab  # cached


def test_empty_and_anonymised_text(lab):
    for text in ("", "   ", None, "XXXX XXXX XXXX."):
        assert all(v is None for v in lab.label(text).values()), text


# --------------------------------------------------------------------------- golden sentences
GOLDEN = [
    # negation, and its scope over a list
    ("No pneumothorax or pleural effusion.", {"Pneumothorax": 0, "Pleural Effusion": 0, "No Finding": 1}),
    (
        "No focal consolidation, pneumothorax or large pleural effusion.",
        {"Consolidation": 0, "Pneumothorax": 0, "Pleural Effusion": 0},
    ),
    (
        "No displaced rib fractures, pneumothorax, or pleural effusion identified.",
        {"Fracture": 0, "Pneumothorax": 0, "Pleural Effusion": 0},
    ),
    (
        "There is no evidence of pneumothorax, effusion, or consolidation.",
        {"Pneumothorax": 0, "Pleural Effusion": 0, "Consolidation": 0},
    ),
    ("Without evidence of pneumonia.", {"Pneumonia": 0}),
    ("Lungs are clear of focal consolidation.", {"Consolidation": 0}),
    ("Negative for pneumothorax.", {"Pneumothorax": 0}),
    ("There are no XXXX of a pleural effusion.", {"Pleural Effusion": 0}),
    ("No focal consolidation to suggest pneumonia.", {"Consolidation": 0, "Pneumonia": 0}),
    # scope ends at clause / sentence boundaries
    (
        "There is no pneumothorax, but there is a small right pleural effusion.",
        {"Pneumothorax": 0, "Pleural Effusion": 1, "No Finding": None},
    ),
    ("No pleural effusion. Small left apical pneumothorax.", {"Pleural Effusion": 0, "Pneumothorax": 1}),
    ("No pleural effusion, small left apical pneumothorax.", {"Pleural Effusion": 0, "Pneumothorax": 1}),
    ("Hyperexpanded lungs without focal consolidation.", {"Consolidation": 0, "No Finding": None}),
    # resolved / removed
    ("Resolved pneumothorax.", {"Pneumothorax": 0}),
    ("The previously seen pneumothorax has resolved.", {"Pneumothorax": 0}),
    ("Interval resolution of the left lower lobe consolidation.", {"Consolidation": 0}),
    ("Pneumothorax is no longer seen.", {"Pneumothorax": 0}),
    ("The chest tube has been removed.", {"Support Devices": 0}),
    # uncertainty
    ("Cannot exclude small effusion.", {"Pleural Effusion": -1}),
    ("A small left effusion cannot be excluded.", {"Pleural Effusion": -1}),
    ("Opacity may represent atelectasis.", {"Lung Opacity": 1, "Atelectasis": -1}),
    ("Possible right lower lobe pneumonia.", {"Pneumonia": -1, "No Finding": None}),
    ("Questionable right lower lobe infiltrate.", {"Lung Opacity": -1}),
    ("Findings suspicious for pneumonia.", {"Pneumonia": -1}),
    (
        "Left basal opacity may reflect atelectasis, though infection cannot be excluded.",
        {"Lung Opacity": 1, "Atelectasis": -1, "Pneumonia": -1},
    ),
    ("No new consolidation.", {"Consolidation": -1}),
    ("Atelectasis versus pneumonia in the left base.", {"Atelectasis": -1, "Pneumonia": -1}),
    ("Borderline heart size.", {"Cardiomegaly": -1}),
    # "likely" / "consistent with" assert, as in the CheXpert labeler
    ("Bibasilar opacities, likely atelectasis.", {"Lung Opacity": 1, "Atelectasis": 1}),
    # pseudo-negation
    ("No significant change in the small left effusion.", {"Pleural Effusion": 1}),
    # heart size and mediastinum as attributes
    ("Heart size is normal.", {"Cardiomegaly": 0, "No Finding": 1}),
    ("Normal heart size.", {"Cardiomegaly": 0}),
    ("The heart is not enlarged.", {"Cardiomegaly": 0}),
    ("The heart is not significantly enlarged.", {"Cardiomegaly": 0}),
    ("Heart size is upper limits of normal.", {"Cardiomegaly": 0}),
    ("Mild cardiomegaly.", {"Cardiomegaly": 1, "No Finding": None}),
    ("Heart size is mildly enlarged.", {"Cardiomegaly": 1}),
    ("Stable enlarged cardiac silhouette.", {"Cardiomegaly": 1}),
    ("The cardiomediastinal silhouette is within normal limits.", {"Cardiomegaly": 0, "Enlarged Cardiomediastinum": 0}),
    ("Widened mediastinum.", {"Enlarged Cardiomediastinum": 1}),
    (
        "Heart size mildly enlarged, stable mediastinal contours.",
        {"Cardiomegaly": 1, "Enlarged Cardiomediastinum": None},
    ),
    # other observations
    ("Healed left rib fractures.", {"Fracture": 1}),
    ("Right upper lobe nodule.", {"Lung Lesion": 1}),
    ("Calcified right upper lobe nodule.", {"Lung Lesion": None, "No Finding": None}),
    ("Left pleural thickening.", {"Pleural Other": 1}),
    ("Pulmonary vascular congestion and interstitial edema.", {"Edema": 1}),
    ("Right lower lobe consolidation.", {"Consolidation": 1}),
    ("Left basilar atelectasis.", {"Atelectasis": 1}),
    ("Left lower lobe airspace disease.", {"Lung Opacity": 1}),
    # support devices do not rule out No Finding
    ("Left PICC line tip in the SVC. No acute cardiopulmonary abnormality.", {"Support Devices": 1, "No Finding": 1}),
    ("Endotracheal tube 4 cm above the carina. Nasogastric tube in the stomach.", {"Support Devices": 1}),
    ("Pacemaker leads in the right atrium and right ventricle.", {"Support Devices": 1}),
    ("Right chest XXXX with tip at the cavoatrial junction.", {"Support Devices": 1}),
    # No Finding
    ("No acute cardiopulmonary abnormality.", {"No Finding": 1}),
    ("Normal chest x-XXXX.", {"No Finding": 1}),
    ("The lungs are clear. Heart size is normal. No pneumothorax.", {"No Finding": 1}),
    # findings outside the 14 observations rule out No Finding but label nothing
    ("Calcified granuloma in the left lower lobe.", {"No Finding": None, "Lung Lesion": None}),
    ("Degenerative changes of the thoracic spine.", {"No Finding": None}),
    ("Low lung volumes.", {"No Finding": None}),
    ("Lung volumes are normal. No effusion.", {"No Finding": 1}),
    ("No hiatal hernia. No pneumothorax.", {"No Finding": 1}),
]


@pytest.mark.parametrize("text,expected", GOLDEN, ids=[g[0][:50] for g in GOLDEN])
def test_golden(lab, text, expected):
    got = lab.label(text)
    for obs, want in expected.items():
        assert got[obs] == want, f"{obs}: got {got[obs]}, want {want} for {text!r}; {lab.explain(text)[obs]}"


def test_aggregation_positive_wins(lab):
    out = lab.label("No pleural effusion on the left. Small right pleural effusion.")
    assert out["Pleural Effusion"] == 1
    out = lab.label("No pleural effusion. Possible small effusion at the right base.")
    assert out["Pleural Effusion"] == -1


def test_explain_gives_phrase_and_trigger(lab):
    ex = lab.explain("No pneumothorax. Cannot exclude small left effusion. Mild cardiomegaly. Calcified granuloma.")
    assert set(OBSERVATIONS) <= set(ex)
    ptx = ex["Pneumothorax"]
    assert ptx["label"] == 0
    assert ptx["evidence"][0]["phrase"] == "pneumothorax" and ptx["evidence"][0]["trigger"] == "no"
    eff = ex["Pleural Effusion"]["evidence"][0]
    assert eff["label"] == -1 and eff["trigger"] == "cannot exclude" and "effusion" in eff["phrase"]
    assert ex["Cardiomegaly"]["evidence"][0]["trigger"] is None
    assert ex["No Finding"]["label"] is None
    assert "Cardiomegaly" in ex["No Finding"]["evidence"][0]["blocked_by"]
    assert any(e["phrase"] == "granuloma" for e in ex["(other finding)"]["evidence"])
    json.dumps(ex)  # serialisable


def test_rules_are_data(tmp_path, lab):
    """Behaviour comes from the JSON rule files: changing them changes the labels."""
    src = Path(__import__("edgecap.labeler", fromlist=["x"]).__file__).parent / "rules"
    dst = tmp_path / "rules"
    shutil.copytree(src, dst)
    text = "Left basilar atelectasis or scarring."
    assert lab.label(text)["Atelectasis"] == -1  # CheXpert convention: "X or Y" is uncertain
    mods = json.loads((dst / "modifiers.json").read_text())
    mods["disjunction"] = []
    mods["negation_pre"].append("sans")
    (dst / "modifiers.json").write_text(json.dumps(mods))
    custom = Labeler.from_dir(dst)
    assert custom.label(text)["Atelectasis"] == 1
    assert custom.label("Sans pneumothorax.")["Pneumothorax"] == 0
    assert lab.label("Sans pneumothorax.")["Pneumothorax"] == 1


def test_speed(lab):
    base = [
        "The cardiac silhouette and mediastinum size are within normal limits. There is no pulmonary edema. "
        "There is no focal consolidation. There are no XXXX of a pleural effusion. There is no evidence of "
        "pneumothorax. Normal chest x-XXXX.",
        "Borderline cardiomegaly. Midline sternotomy XXXX. Enlarged pulmonary arteries. Clear lungs. "
        "Stable left basilar atelectasis versus scarring. Right IJ catheter tip in the SVC.",
        "Low lung volumes. Patchy right lower lobe opacity may represent pneumonia. Small right pleural "
        "effusion cannot be excluded. Healed left rib fractures. Calcified granuloma.",
    ]
    texts = [f"{base[i % 3]} Report {i}." for i in range(4000)]
    t0 = time.perf_counter()
    for t in texts:
        lab.label(t)
    assert time.perf_counter() - t0 < 15.0  # ~1-2 s on a laptop core


# --------------------------------------------------------------------------- MeSH reference
def test_mesh_map_terms():
    mm = default_mesh_map()
    assert classify_term("Cardiomegaly/mild", mm) == ("observation", ["Cardiomegaly"], 1)
    assert classify_term("Cardiomegaly/borderline", mm) == ("observation", ["Cardiomegaly"], -1)
    assert classify_term("Opacity/lung/base/left", mm)[1] == ["Lung Opacity"]
    assert classify_term("Opacity/ribs/left", mm)[0] == "other"
    assert classify_term("Opacity/lung/upper lobe/round", mm)[1] == ["Lung Lesion"]
    assert classify_term("Cicatrix/pleura/apex", mm)[1] == ["Pleural Other"]
    assert classify_term("Cicatrix/lung/base/left", mm)[1] == ["Lung Opacity"]
    assert classify_term("Catheters, Indwelling/right", mm)[1] == ["Support Devices"]
    assert classify_term("Fractures, Bone/ribs/healed", mm)[1] == ["Fracture"]
    assert classify_term("Calcified Granuloma/lung", mm)[0] == "other"
    assert classify_term("No Indexing", mm)[0] == "exclude_report"
    assert classify_term("Some Unknown Term/lung", mm)[0] == "other"
    # a nodule indexed with calcinosis at the same place is a calcified nodule
    terms = ["Nodule/lung/lingula", "Calcinosis/lung/lingula"]
    assert classify_term(terms[0], mm, terms)[0] == "other"
    assert classify_term("Nodule/lung/lingula", mm, ["Nodule/lung/lingula", "Calcinosis/aorta"])[1] == ["Lung Lesion"]


def test_reference_labels():
    ref = reference_labels(["normal"])
    assert ref["No Finding"] == 1 and all(ref[o] is None for o in OBSERVATIONS[1:])
    ref = reference_labels(["Catheters, Indwelling/right"])
    assert ref["No Finding"] == 1 and ref["Support Devices"] == 1
    ref = reference_labels(["Pleural Effusion/bilateral/small", "Hydropneumothorax/right"])
    assert ref["Pleural Effusion"] == 1 and ref["Pneumothorax"] == 1 and ref["No Finding"] == 0
    assert reference_labels(["Thoracic Vertebrae/degenerative"])["No Finding"] == 0
    assert reference_labels(["No Indexing"]) is None
    assert reference_labels([]) is None


def test_validate_small_csv(tmp_path):
    p = tmp_path / "mini.csv"
    rows = [
        ("1", "normal", "The heart is normal in size. The lungs are clear.", "No acute disease."),
        ("2", "Cardiomegaly/mild", "Mild cardiomegaly. No effusion.", ""),
        ("3", "Pleural Effusion/right/small", "Small right pleural effusion.", ""),
        ("4", "No Indexing", "No pneumothorax.", ""),
        ("5", "normal", "", ""),
    ]
    with open(p, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["uid", "MeSH", "Problems", "findings", "impression"])
        for uid, mesh, fi, im in rows:
            w.writerow([uid, mesh, mesh, fi, im])
    res = validate(p, min_support=1)
    assert res["reports"] == 3 and res["left_out_no_text"] == 1 and res["left_out_no_reference"] == 1
    per = res["per_observation"]
    assert per["Cardiomegaly"]["f1"] == 1.0 and per["Pleural Effusion"]["f1"] == 1.0
    assert per["No Finding"]["tp"] == 1 and per["No Finding"]["fp"] == 0
    assert res["macro_f1"] == 1.0
    assert "CheXpert F1" not in res["metric"]


@needs_iu
def test_validation_on_iu_xray():
    res = validate(IU_CSV)
    assert res["reports"] > 3500
    assert res["macro_f1"] >= MACRO_F1_FLOOR, res["macro_f1"]
    per = res["per_observation"]
    assert len(res["macro_observations"]) >= 10
    assert per["No Finding"]["f1"] >= 0.95
    assert per["Cardiomegaly"]["f1"] >= 0.95
    assert per["Pleural Effusion"]["f1"] >= 0.85
    assert res["seconds"] < 20


# --------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def runner_app():
    app = typer.Typer()
    app.command()(label_command)
    return CliRunner(), app


def test_cli_text(runner_app):
    runner, app = runner_app
    r = runner.invoke(app, ["No pneumothorax. Mild cardiomegaly. Right IJ catheter tip in the SVC."])
    assert r.exit_code == 0, r.output
    assert "Cardiomegaly" in r.output and "positive" in r.output and "pneumothorax <- no" in r.output
    r = runner.invoke(app, ["--json", "Cannot exclude small effusion."])
    assert r.exit_code == 0
    data = json.loads(r.output)
    assert data["labels"]["Pleural Effusion"] == "uncertain"  # JSON: the words of caption's findings and the API
    assert data["explain"]["Pleural Effusion"]["label"] == "uncertain"
    assert data["explain"]["Pleural Effusion"]["evidence"][0]["label"] == "uncertain"
    assert data["explain"]["Pleural Effusion"]["evidence"][0]["trigger"] == "cannot exclude"


def test_cli_csv(runner_app, tmp_path):
    runner, app = runner_app
    src = tmp_path / "reports.csv"
    with open(src, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["uid", "findings", "impression"])
        w.writerow(["a", "No pneumothorax or pleural effusion.", "Normal chest."])
        w.writerow(["b", "Mild cardiomegaly.", "Possible pneumonia."])
        w.writerow(["c", "", ""])
    out = tmp_path / "labels.csv"
    r = runner.invoke(app, ["--csv", str(src), "--column", "findings", "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(out)))
    assert [x["uid"] for x in rows] == ["a", "b", "c"]
    assert rows[0]["Pneumothorax"] == "0" and rows[0]["No Finding"] == "1"
    assert rows[1]["Cardiomegaly"] == "1" and rows[1]["Pneumonia"] == ""
    assert all(rows[2][o] == "" for o in OBSERVATIONS)
    # several columns, CSV on stdout
    r = runner.invoke(app, ["--csv", str(src), "--column", "findings,impression"])
    assert r.exit_code == 0
    lines = r.output.strip().splitlines()
    assert lines[0].startswith("uid,No Finding") and len(lines) == 4
    assert list(csv.DictReader(lines))[1]["Pneumonia"] == "-1"
    # JSON lines
    r = runner.invoke(app, ["--csv", str(src), "--json"])
    assert json.loads(r.output.splitlines()[1])["labels"]["Cardiomegaly"] == "positive"


def test_cli_bad_input(runner_app, tmp_path):
    runner, app = runner_app
    cases = [
        ([], "give a report TEXT"),
        (["--csv", str(tmp_path / "missing.csv")], "not found"),  # unusable input: exit 2 (checked below)
        (["--validate", str(tmp_path / "missing_dir")], "no such file"),
        (["some text", "--validate", str(tmp_path)], "only one"),
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text("uid,text\n1,No effusion.\n")
    cases.append((["--csv", str(bad), "--column", "findings"], "findings"))
    cases.append((["--validate", str(bad)], "cannot validate"))
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    cases.append((["--validate", str(empty_dir)], "indiana_reports.csv"))
    for args, msg in cases:
        r = runner.invoke(app, args)
        assert r.exit_code != 0, args
        assert isinstance(r.exception, SystemExit), (args, r.exception)  # typer.Exit, no traceback
        assert "Traceback" not in r.output
        assert msg in r.output, (args, r.output)
    for missing in (["--csv", str(tmp_path / "missing.csv")], ["--validate", str(tmp_path / "missing_dir")]):
        assert runner.invoke(app, missing).exit_code == 2  # a missing input is bad usage (cli.common)


@needs_iu
def test_cli_validate(runner_app):
    runner, app = runner_app
    r = runner.invoke(app, ["--validate", str(IU_CSV.parent)])
    assert r.exit_code == 0, r.output
    assert "macro F1 over" in r.output and "CheXpert-proxy" in r.output and "Support Devices" in r.output
