"""The rehearsal data set (data.rehearsal, `edgecap data rehearsal`): real reports, real image names, images
derived from the packaged real sample; deterministic; marked as rehearsal in what is made from it."""

import hashlib
import json
import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edgecap.cli import app
from edgecap.data import iu_xray, rehearsal

N = 6  # reports
IMAGES = 13  # the images they name, both projections


@pytest.fixture(scope="module")
def built(iu_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("rehearsal") / "small"
    result = rehearsal.build(iu_data / "NLMCXR_reports.tgz", out, seed=3, limit=N, log=lambda *a: None)
    return out, result


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((folder / "images").glob("*.png"))}


def test_real_reports_and_real_image_names(iu_data, built):
    out, result = built
    real = rehearsal.read_reports(iu_data / "NLMCXR_reports.tgz", N)
    names = sorted(f"{i}.png" for _, _, ids in real for i in ids)
    assert result.studies == N and result.images == len(names) == IMAGES
    assert sorted(p.name for p in (out / "images").glob("*.png")) == names
    for name, data, _ in real:  # the reports are the real XMLs, byte for byte
        assert (out / "ecgen-radiology" / name).read_bytes() == data
    ds = iu_xray.load(out)  # a layout the project reads: Open-i, every image found with its projection
    assert ds.layout == "openi" and len(ds.studies) == N
    assert all(im.path is not None for s in ds.studies for im in s.images)
    projections = [im.projection for s in ds.studies for im in s.images]
    assert projections.count("frontal") == result.by_projection["frontal"] > 0
    assert projections.count("lateral") == result.by_projection["lateral"] > 0
    for p in (out / "images").glob("*.png"):
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        assert img.shape == (rehearsal.IMAGE_SIZE, rehearsal.IMAGE_SIZE) and img.dtype == np.uint8


def test_frontal_names_from_frontal_samples(built):
    out, _ = built
    table = iu_xray.packaged_projections()
    rows = (out / "rehearsal_sources.csv").read_text().splitlines()[1:]
    assert len(rows) == IMAGES
    for row in rows:
        name, projection, source = row.split(",")
        assert projection in ("frontal", "lateral")
        assert table[iu_xray.image_key(source)] == projection == table[iu_xray.image_key(name)]


def test_marker_and_readme(built):
    out, _ = built
    assert rehearsal.notice_of(out) == rehearsal.NOTICE
    assert rehearsal.notice_of(out / "images" / "CXR1_1_IM-0001-3001.png") is None  # only the folder's own marker
    assert rehearsal.NOTICE in (out / "README.md").read_text() and "REHEARSAL" in (out / "README.md").read_text()
    info = json.loads((out / "rehearsal.json").read_text())
    assert info["notice"] == rehearsal.NOTICE and info["images"] == IMAGES


def test_deterministic_whatever_the_processes_and_the_subset(iu_data, built, tmp_path):
    out, _ = built
    again = tmp_path / "again"
    r = rehearsal.build(
        iu_data / "NLMCXR_reports.tgz", again, seed=3, limit=N, jobs=2, per_worker=6, log=lambda *a: None
    )
    assert r.written == IMAGES
    assert _digests(again) == _digests(out)  # 2 spawned workers, unordered: the same bytes
    fewer = tmp_path / "fewer"
    rehearsal.build(iu_data / "NLMCXR_reports.tgz", fewer, seed=3, limit=2, log=lambda *a: None)
    small = _digests(fewer)
    assert small and all(_digests(out)[k] == v for k, v in small.items())  # a name keeps its image in a subset
    other = tmp_path / "other"
    rehearsal.build(iu_data / "NLMCXR_reports.tgz", other, seed=4, limit=2, log=lambda *a: None)
    assert all(_digests(other)[k] != v for k, v in small.items())  # the seed changes every image


def _corr(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def _best_match(made, src):
    """Highest correlation of `made` (48, 48) with any square crop of `src` that derive could have taken
    (sides 85-97 % of the short side, offsets on a grid), both at 48 px."""
    side0 = min(src.shape)
    best = -1.0
    for frac in np.linspace(*rehearsal.CROP_RANGE, 4):
        side = int(side0 * frac)
        for y in np.linspace(0, src.shape[0] - side, 5).astype(int):
            for x in np.linspace(0, src.shape[1] - side, 5).astype(int):
                crop = cv2.resize(src[y : y + side, x : x + side], (48, 48), interpolation=cv2.INTER_AREA)
                best = max(best, _corr(made, crop.astype(np.float64)))
    return best


def test_no_left_right_flip(built):
    """Each image matches a crop of its source better than any crop of the source's mirror image."""
    out, _ = built
    sources = {p.name: p for ps in rehearsal.sample_images().values() for p in ps}
    for row in (out / "rehearsal_sources.csv").read_text().splitlines()[1:]:
        name, _, source = row.split(",")
        made = cv2.resize(cv2.imread(str(out / "images" / name), 0), (48, 48), interpolation=cv2.INTER_AREA)
        src = cv2.imread(str(sources[source]), 0)
        made = made.astype(np.float64)
        assert _best_match(made, src) > _best_match(made, np.ascontiguousarray(src[:, ::-1])) + 0.02, name


def test_derive_never_flips_even_when_the_draw_would():
    """derive asks augment for no flip: the same image from a mirrored source is the mirrored image."""
    gray = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))
    a = rehearsal.derive(gray, "CXR1_IM-0001-1001.png", 0, size=64).astype(float)
    assert a[:, :8].mean() < a[:, -8:].mean() - 100  # dark left, bright right, as the source


def test_marker_carried_into_a_run_directory(built, tmp_path):
    from edgecap.config import Config
    from edgecap.training.train import prepare_run

    out, _ = built
    lines = []
    prepare_run(out, tmp_path / "run", Config.preset("tiny"), "random", lines.append)
    assert rehearsal.notice_of(tmp_path / "run") == rehearsal.NOTICE
    assert any(rehearsal.NOTICE in line for line in lines)


def test_bundle_notice_detected(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"notice": f"{rehearsal.NOTICE}; demonstration model"}))
    assert rehearsal.notice_of(tmp_path) == rehearsal.NOTICE
    (tmp_path / "manifest.json").write_text(json.dumps({"notice": "demonstration model"}))
    assert rehearsal.notice_of(tmp_path) is None


def test_never_writes_into_a_folder_that_is_not_a_rehearsal(iu_data, tmp_path):
    real = tmp_path / "real"
    (real / "images").mkdir(parents=True)
    (real / "images" / "CXR1_1_IM-0001-3001.png").write_bytes(b"a real image")
    r = CliRunner().invoke(app, ["data", "rehearsal", str(real), "--reports", str(iu_data / "NLMCXR_reports.tgz")])
    assert r.exit_code == 2 and "not a rehearsal folder" in r.output
    assert sorted(p.name for p in real.rglob("*")) == ["CXR1_1_IM-0001-3001.png", "images"]  # untouched


def test_data_stats_and_cli(iu_data, built, tmp_path):
    out, _ = built
    r = CliRunner().invoke(app, ["data", "stats", str(out), "--json", str(tmp_path / "s.json")])
    assert r.exit_code == 0, r.output
    assert rehearsal.NOTICE in r.output
    st = json.loads((tmp_path / "s.json").read_text())
    assert st["rehearsal"] == rehearsal.NOTICE and st["studies"] == N and st["images_found"] == IMAGES
    r = CliRunner().invoke(app, ["data", "rehearsal", str(tmp_path / "r"), "--reports", str(iu_data / "nope.tgz")])
    assert r.exit_code == 2 and "no such file" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(
        app,
        ["data", "rehearsal", str(tmp_path / "r"), "--reports", str(iu_data / "NLMCXR_reports.tgz"), "--limit", "2"],
    )
    assert r.exit_code == 0, r.output
    assert "2 reports" in r.output and rehearsal.NOTICE in r.output


def test_split_file_gives_every_stage_its_split(iu_data, tmp_path):
    """--split copies an R2Gen-style annotation in: the rehearsal folder then has the real split of those
    studies, as a download with annotation.json does; anything else is refused before a file is written."""
    reports = str(iu_data / "NLMCXR_reports.tgz")
    ann = iu_data / "annotation_r2gen_layout.json"
    r = CliRunner().invoke(app, ["data", "rehearsal", str(tmp_path / "r"), "--reports", reports, "--limit", "40",
                                 "--split", str(ann)])  # fmt: skip
    assert r.exit_code == 0, r.output
    ds = iu_xray.load(tmp_path / "r")
    split_of = {str(e["id"]): k for k, v in json.loads(ann.read_text()).items() for e in v}
    assert ds.split_source == "annotation:annotation.json"
    assert [s.split for s in ds.studies] == [split_of.get(s.uid) for s in ds.studies]
    assert {"train", "val", "test"} <= {s.split for s in ds.studies}
    bad = tmp_path / "bad.json"
    bad.write_text('{"train": ["25"]}')
    r = CliRunner().invoke(app, ["data", "rehearsal", str(tmp_path / "b"), "--reports", reports, "--split", str(bad)])
    assert r.exit_code == 2 and "not an R2Gen-style split" in r.output and not (tmp_path / "b").exists()


def test_sources_are_the_packaged_real_sample(iu_data):
    """The sample the builder derives from is the real Open-i sample, byte for byte."""
    src = rehearsal.sample_images()
    assert len(src["frontal"]) == 5 and len(src["lateral"]) == 6
    for p in src["frontal"] + src["lateral"]:
        assert p.read_bytes() == (iu_data / "images" / p.name).read_bytes()


def test_read_reports_counts(iu_data):
    reports = rehearsal.read_reports(iu_data / "NLMCXR_reports.tgz")
    assert len(reports) == 3955 and sum(len(ids) for *_, ids in reports) == 7470
    assert all(ET.fromstring(data).find("IUXRId") is not None for _, data, _ in reports[:5])
