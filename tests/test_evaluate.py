"""`edgecap evaluate` on the overfit run: metrics for the model and both baselines, JSON and figure."""

import json
from html.parser import HTMLParser

import pytest
from typer.testing import CliRunner

from edgecap.cli import app

pytestmark = [pytest.mark.tf, pytest.mark.slow, pytest.mark.java]


def test_evaluate_cli(overfit_run, iu_data, tmp_path):
    out, _ = overfit_run
    r = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--run",
            str(out),
            "--data",
            str(iu_data),
            "--split",
            "train",
            "--json",
            str(tmp_path / "e.json"),
            "--grid",
            str(tmp_path / "grid.png"),
            "--html",
            str(tmp_path / "e.html"),
        ],
    )
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "e.json").read_text())
    assert res["n_studies"] == 10 and set(res["systems"]) == {"model", "most-common", "nearest-neighbour"}
    model, common = res["systems"]["model"], res["systems"]["most-common"]
    for key in ("bleu1", "bleu4", "meteor", "rouge_l", "cider"):
        assert key in model["metrics"]
    assert model["metrics"]["pipeline"] == "pycocoevalcap+ptb"
    # the overfit model recites its training reports; the constant report cannot
    assert model["metrics"]["bleu4"] > 0.8 > 0.3 > common["metrics"]["bleu4"]  # beam 3 with trigram blocking
    assert common["diversity"]["distinct_reports"] == pytest.approx(0.1)
    assert model["diversity"]["distinct_reports"] > 0.8
    # retrieval never returns the study itself
    for ex in res["examples"]:
        assert ex["nearest-neighbour"] != ex["reference"] or ex["uid"] in ("54", "3781")
    assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"
    assert "most common training report" in r.output
    # clinical efficacy for every system; the memorising model agrees with its references
    for s in res["systems"].values():
        assert set(s["clinical"]) >= {"micro", "macro", "per_observation"}
    assert model["clinical"]["micro"]["f1"] > 0.9
    _check_html(tmp_path / "e.html", res)


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.cards, self.imgs, self.diff_rows, self.external = [], [], [], 0, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "div" and a.get("class") == "card":
            self.cards.append(a["data-uid"])
        if tag == "img":
            self.imgs.append(a["src"])
        if tag == "tr" and a.get("class") == "diff":
            self.diff_rows += 1
        for k in ("src", "href"):
            if k in a and not a[k].startswith("data:"):
                self.external.append(a[k])
        if tag == "script":
            self.external.append("script")


def _check_html(path, res):
    page = _Page()
    page.feed(path.read_text())
    assert sorted(page.cards) == sorted(e["uid"] for e in res["examples"])
    assert page.tags.count("table") == 4 + len(page.cards)  # NLG, clinical, per observation, diversity + one per card
    assert all(src.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for src in page.imgs)
    assert len(page.imgs) == len(page.cards) + 1  # one overlay per study + the training curves
    assert page.external == [], "the page must be self-contained"
    text = path.read_text()
    for name in ("model", "most-common", "nearest-neighbour", "Clinical efficacy", "Not validated for clinical use"):
        assert name in text
