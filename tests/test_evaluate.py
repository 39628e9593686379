"""`edgecap evaluate` on the overfit run: metrics for the model and both baselines, JSON and figure."""

import json

import pytest
from typer.testing import CliRunner

from edgecap.cli import app

pytestmark = [pytest.mark.tf, pytest.mark.slow, pytest.mark.java]


def test_evaluate_cli(overfit_run, iu_data, tmp_path):
    out, _ = overfit_run
    r = CliRunner().invoke(app, ["evaluate", "--run", str(out), "--data", str(iu_data), "--split", "train",
                                 "--json", str(tmp_path / "e.json"), "--grid", str(tmp_path / "grid.png")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "e.json").read_text())
    assert res["n_studies"] == 10 and set(res["systems"]) == {"model", "most-common", "nearest-neighbour"}
    model, common = res["systems"]["model"], res["systems"]["most-common"]
    for key in ("bleu1", "bleu4", "meteor", "rouge_l", "cider"):
        assert key in model["metrics"]
    assert model["metrics"]["pipeline"] == "pycocoevalcap+ptb"
    # the overfit model recites its training reports; the constant report cannot
    assert model["metrics"]["bleu4"] > 0.9 > common["metrics"]["bleu4"]
    assert common["diversity"]["distinct_reports"] == pytest.approx(0.1)
    assert model["diversity"]["distinct_reports"] > 0.8
    # retrieval never returns the study itself
    for ex in res["examples"]:
        assert ex["nearest-neighbour"] != ex["reference"] or ex["uid"] in ("54", "3781")
    assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"
    assert "most common training report" in r.output
