"""`edgecap caption` pairing a study's views in batch (issue #16 item 10), on the shipped default bundle (no
TensorFlow) and the real IU X-Ray sample shipped in the package (10 studies, 11 images: study 54 has a
frontal and a lateral view; five others a lateral view alone).

Three input forms, each giving one record per study equal to `edgecap caption FRONTAL --lateral LATERAL`:
the Open-i / Kaggle file names (a folder of Open-i images as is), a folder per study, and a CSV / JSONL list.
Also: which view is frontal, a third image, a corrupt view (the study is an error, the others are written),
resume keyed per study, --studies none (one report per image, as before), and usage errors (exit 2).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgecap.cli import app
from edgecap.cli.study_inputs import StudyInput, StudyListError, choose_views, group_inputs, projection, read_study_list
from edgecap.resources import sample_dir

SAMPLE = sample_dir() / "images"
FRONTAL_54, LATERAL_54 = SAMPLE / "CXR54_IM-2145-1001.png", SAMPLE / "CXR54_IM-2145-1002.png"
LATERAL_ONLY = SAMPLE / "CXR1000_IM-0003-2001.png"  # the projection table: lateral; its study has no frontal
FRONTAL_ONLY = SAMPLE / "CXR25_IM-1024-2001.png"
runner = CliRunner()


def caption(*args):
    """`edgecap caption ARGS` in this process (the default bundle); never a traceback."""
    r = runner.invoke(app, ["caption", *map(str, args), "--no-progress", "--no-attention"])
    assert "Traceback" not in r.output + r.stderr, r.output + r.stderr
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def alone():
    """The text of `edgecap caption FRONTAL [--lateral LATERAL] --format json`, per (frontal, lateral) name."""
    seen: dict[tuple[str, str | None], str] = {}

    def text(frontal: Path, lateral: Path | None = None) -> str:
        key = (frontal.name, None if lateral is None else lateral.name)
        if key not in seen:
            r = caption(frontal, *(["--lateral", lateral] if lateral else []), "--format", "json")
            assert r.exit_code == 0, r.stderr
            (rec,) = [json.loads(line) for line in r.stdout.splitlines()]
            seen[key] = rec["text"]
        return seen[key]

    return text


def assert_each_study_as_alone(recs: list[dict], alone) -> None:
    for rec in recs:
        lateral = rec["inputs"]["lateral"]
        expected = alone(Path(rec["input"]), None if lateral is None else Path(lateral))
        assert rec["status"] == "ok" and rec["text"] == expected, rec["study"]


# ---- grouping, no captioning ---------------------------------------------------------------------------
def test_open_i_names_group_by_study_with_the_projection_table():
    studies, unmatched, how = group_inputs([str(SAMPLE)], "auto")
    assert unmatched == [] and how == "11 images -> 10 studies (by IU X-Ray file names)"
    assert len(studies) == 10 and StudyInput("54", FRONTAL_54, LATERAL_54) in studies
    alone = [s for s in studies if not isinstance(s, StudyInput)]  # an image alone names no study
    assert sorted(alone) == sorted(set(SAMPLE.glob("*.png")) - {FRONTAL_54, LATERAL_54})
    assert group_inputs([str(SAMPLE)], "names")[0] == studies
    assert group_inputs([str(SAMPLE)], "none")[0] == sorted(SAMPLE.glob("*.png"))


def test_kaggle_names_and_the_lateral_listed_first(tmp_path):
    """Kaggle's 54_IM-2145-1002.dcm.png given before its frontal: still study 54, frontal by the table."""
    shutil.copy(LATERAL_54, tmp_path / "54_IM-2145-1002.dcm.png")
    shutil.copy(FRONTAL_54, tmp_path / "54_IM-2145-1001.dcm.png")
    specs = [str(tmp_path / "54_IM-2145-1002.dcm.png"), str(tmp_path / "54_IM-2145-1001.dcm.png")]
    (study,), _, _ = group_inputs(specs, "auto")
    assert isinstance(study, StudyInput)
    assert (study.name, study.frontal.name, study.lateral.name) == (
        "54",
        "54_IM-2145-1001.dcm.png",
        "54_IM-2145-1002.dcm.png",
    )


def test_which_view_is_frontal():
    assert projection(FRONTAL_54) == "frontal" and projection(LATERAL_54) == "lateral"
    assert projection(Path("a/PA.dcm")) == "frontal" and projection(Path("chest_lateral.png")) == "lateral"
    assert projection(Path("IM0001")) == "unknown" and projection(Path("palate.png")) == "unknown"
    # names decide over file-name order; unknown views: the first is frontal, the second lateral
    s = choose_views("x", [Path("1_lateral.png"), Path("2_pa.png")])
    assert (s.frontal, s.lateral) == (Path("2_pa.png"), Path("1_lateral.png"))
    s = choose_views("x", [Path("IM0001"), Path("IM0002")])
    assert (s.frontal, s.lateral, s.unused) == (Path("IM0001"), Path("IM0002"), ())


def test_a_third_image_is_left_out():
    """IU X-Ray study 163 has two frontal views and a lateral: the first frontal (name order) and the lateral
    are used, the second frontal is listed as unused."""
    s = choose_views("163", [Path(f"CXR163_IM-0410-{n}.png") for n in ("12012", "2002", "3003")])
    assert (s.frontal.name, s.lateral.name) == ("CXR163_IM-0410-12012.png", "CXR163_IM-0410-3003.png")
    assert s.unused == (Path("CXR163_IM-0410-2002.png"),)


def test_study_folders(tmp_path):
    """Each first-level subfolder one study: auto takes a folder laid out so; one with three images in a
    subfolder, or images loose beside them, is not taken as study folders by auto (--studies folders is)."""
    root = tmp_path / "studies"
    for name, files in {"a": [FRONTAL_54, LATERAL_54], "b": [FRONTAL_ONLY]}.items():
        (root / name).mkdir(parents=True)
        for i, f in enumerate(files):
            shutil.copy(f, root / name / f"view{i}.png")
    studies, _, how = group_inputs([str(root)], "auto")
    assert [(s.name, s.frontal.name, s.lateral and s.lateral.name) for s in studies] == [
        ("a", "view0.png", "view1.png"),
        ("b", "view0.png", None),
    ]
    assert how == "3 images -> 2 studies (by folders)"
    shutil.copy(LATERAL_ONLY, root / "a" / "view2.png")
    assert group_inputs([str(root)], "auto")[0] == sorted(root.rglob("*.png"))  # each image alone
    (a,) = [s for s in group_inputs([str(root)], "folders")[0] if s.name == "a"]
    assert a.unused == (root / "a" / "view2.png",)
    assert [len(s.images) for s in group_inputs([str(root / "a")], "folders")[0]] == [3]  # the folder itself


def test_study_lists(tmp_path):
    (tmp_path / "csv").mkdir()
    lst = tmp_path / "csv" / "studies.csv"
    lst.write_text("Study,Frontal,Lateral,patient\n54,img/f.png,img/l.png,x\n\n25,/abs/f.png,,y\n")
    studies, ignored = read_study_list(lst)
    assert ignored == ["patient"]
    assert studies == [
        StudyInput("54", tmp_path / "csv" / "img" / "f.png", tmp_path / "csv" / "img" / "l.png"),
        StudyInput("25", Path("/abs/f.png")),
    ]
    jl = tmp_path / "studies.jsonl"
    jl.write_text('{"study": 54, "frontal": "f.png", "lateral": null}\n\n{"frontal": "g.png"}\n')
    assert read_study_list(jl)[0] == [StudyInput("54", tmp_path / "f.png"), StudyInput("g.png", tmp_path / "g.png")]
    for name, content, says in [
        ("a.csv", "image,lateral\nf.png,l.png\n", "line 1 must name the columns"),
        ("b.csv", "frontal,lateral\n,l.png\n", "line 2 has no frontal image"),
        ("c.jsonl", '{"frontal": "f.png"}\n[1, 2]\n', "line 2 is not a JSON object"),
        ("d.txt", "frontal\nf.png\n", "a .csv or .jsonl file"),
    ]:
        (tmp_path / name).write_text(content)
        with pytest.raises(StudyListError, match=says):
            read_study_list(tmp_path / name)


# ---- captioning: the three input forms ----------------------------------------------------------------------
def test_a_folder_of_open_i_images_gives_one_report_per_study(tmp_path, alone):
    out = tmp_path / "reports.jsonl"
    r = caption(SAMPLE, "--out", out)
    assert r.exit_code == 0, r.stderr
    assert "11 images -> 10 studies (by IU X-Ray file names)" in r.stderr
    recs = records(out)
    assert len(recs) == 10 and len({x["input"] for x in recs}) == 10
    (pair,) = [x for x in recs if "study" in x]
    assert (pair["study"], pair["input"], pair["inputs"]["lateral"], pair["unused"]) == (
        "54",
        str(FRONTAL_54),
        str(LATERAL_54),
        [],
    )
    (lone,) = [x for x in recs if x["input"] == str(LATERAL_ONLY)]  # a lateral view alone: captioned from it
    assert lone["inputs"]["lateral"] is None
    assert_each_study_as_alone(recs, alone)
    assert alone(FRONTAL_54, LATERAL_54) != alone(FRONTAL_54)  # the lateral view changes this report
    again = caption(SAMPLE, "--out", out)  # resume, keyed per study
    assert again.exit_code == 0 and "0 captioned, 10 already done" in again.stderr and len(records(out)) == 10


def test_a_folder_per_study(tmp_path, alone):
    """Views named by a word of the name (PA, lateral), listed lateral first; and a study of three images."""
    root = tmp_path / "studies"
    for name, files in {
        "p1": {"1-lateral.png": LATERAL_54, "2-pa.png": FRONTAL_54},
        "p2": {"scan.png": FRONTAL_ONLY},
        "p3": {"a.png": FRONTAL_54, "b.png": LATERAL_54, "c.png": LATERAL_ONLY},
    }.items():
        (root / name).mkdir(parents=True)
        for target, src in files.items():
            shutil.copy(src, root / name / target)
    out = tmp_path / "reports.jsonl"
    r = caption("--studies", "folders", root, "--out", out)
    assert r.exit_code == 0, r.stderr
    recs = records(out)
    assert [(x["study"], Path(x["input"]).name, Path(x["inputs"]["lateral"] or "-").name) for x in recs] == [
        ("p1", "2-pa.png", "1-lateral.png"),
        ("p2", "scan.png", "-"),
        ("p3", "a.png", "b.png"),
    ]
    assert recs[2]["unused"] == [str(root / "p3" / "c.png")]
    assert recs[0]["text"] == recs[2]["text"] == alone(FRONTAL_54, LATERAL_54)
    assert recs[1]["text"] == alone(FRONTAL_ONLY)
    text = caption("--studies", "folders", root).stdout
    assert f"== study p3: {root / 'p3' / 'a.png'} + {root / 'p3' / 'b.png'} [ok]\nnot used" in text


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_study_list(tmp_path, alone, suffix):
    """Paths relative to the list; the CSV output names each study; the list itself is never --out."""
    (tmp_path / "img").mkdir()
    for f in (FRONTAL_54, LATERAL_54):
        shutil.copy(f, tmp_path / "img" / f.name)
    (tmp_path / "lists").mkdir()
    lst = tmp_path / "lists" / f"studies{suffix}"
    rows = [  # relative to the list's folder (not the working directory), and absolute
        {"study": "pair", "frontal": f"../img/{FRONTAL_54.name}", "lateral": f"../img/{LATERAL_54.name}"},
        {"study": "one", "frontal": str(FRONTAL_ONLY), "lateral": None},
    ]
    if suffix == ".csv":
        lst.write_text(
            "study,frontal,lateral\n" + "".join(f"{x['study']},{x['frontal']},{x['lateral'] or ''}\n" for x in rows)
        )
    else:
        lst.write_text("".join(json.dumps(x) + "\n" for x in rows))
    out = tmp_path / "reports.csv"
    r = caption("--list", lst, "--out", out)
    assert r.exit_code == 0, r.stderr
    got = list(csv.DictReader(out.open()))
    assert [(x["study"], Path(x["input"]).name, Path(x["lateral"] or "-").name) for x in got] == [
        ("pair", FRONTAL_54.name, LATERAL_54.name),
        ("one", FRONTAL_ONLY.name, "-"),
    ]
    assert [x["text"] for x in got] == [alone(FRONTAL_54, LATERAL_54), alone(FRONTAL_ONLY)]
    refused = caption("--list", lst, "--out", lst)
    assert refused.exit_code == 2 and "is one of the inputs" in refused.stderr


# ---- failures, resume, the old behaviour ---------------------------------------------------------------------
def test_a_corrupt_view_fails_its_study_and_the_others_are_written(tmp_path, alone):
    scans = tmp_path / "scans"
    scans.mkdir()
    for f in (FRONTAL_54, FRONTAL_ONLY):
        shutil.copy(f, scans / f.name)
    torn = scans / LATERAL_54.name
    torn.write_bytes(LATERAL_54.read_bytes()[:5000])
    out = tmp_path / "reports.jsonl"
    r = caption(scans, "--out", out)
    assert r.exit_code == 1
    assert f"error: study 54: {scans / FRONTAL_54.name} + {torn}: {torn}: not a readable image" in r.stderr
    bad, good = sorted(records(out), key=lambda x: x["status"])
    assert (bad["study"], bad["status"], bad["inputs"]["lateral"]) == ("54", "error", str(torn))
    assert good["status"] == "ok" and good["text"] == alone(FRONTAL_ONLY) and "study" not in good
    again = caption(scans, "--out", out)  # keyed per study: the failed study stays failed, nothing redone
    assert again.exit_code == 1 and "0 captioned, 2 already done, 1 failed" in again.stderr
    retried = caption(scans, "--out", out, "--retry-errors")  # the study is tried again, and fails again
    assert retried.exit_code == 1 and "0 captioned, 1 already done, 1 failed" in retried.stderr
    assert [x.get("study") for x in records(out)].count("54") == 1  # its new record replaced the old one
    shutil.copy(LATERAL_54, torn)  # fixed: a new modification time, a new key: the study is captioned
    fixed = caption(scans, "--out", out)
    assert fixed.exit_code == 0 and "1 captioned, 1 already done, 0 failed" in fixed.stderr
    assert records(out)[-1]["text"] == alone(FRONTAL_54, LATERAL_54)


def test_studies_none_keeps_one_report_per_image(tmp_path):
    out = tmp_path / "reports.jsonl"
    r = caption(SAMPLE, "--studies", "none", "--out", out)
    assert r.exit_code == 0 and "images ->" not in r.stderr
    recs = records(out)
    assert len(recs) == 11 and all("study" not in x for x in recs)


def test_usage_errors_exit_2(tmp_path):
    (tmp_path / "bad.csv").write_text("image\nf.png\n")
    for args, says in [
        ((), "no input: give images"),
        ((SAMPLE, "--studies", "pairs"), "unknown --studies 'pairs'"),
        (("--list", tmp_path / "none.csv"), "none.csv: no such file"),
        (("--list", tmp_path / "bad.csv"), "line 1 must name the columns"),
        ((FRONTAL_54, "--lateral", LATERAL_54, "--list", tmp_path / "bad.csv"), "not with --list"),
    ]:
        r = caption(*args)
        assert r.exit_code == 2 and says in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
