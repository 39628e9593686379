"""Issue 16 items 5 and 11: the text people read never holds IU X-Ray's anonymisation mark "xxxx", and a
demonstration bundle says so in every JSON record and once on the CLI's stderr.

Real text: IU X-Ray FINDINGS (shared/data/iu_xray/indiana_reports.csv) and the shipped default bundle (trained
with the mark kept, config text.xxxx = "keep") on the packaged sample images. No TensorFlow.
"""

import csv
import json

import pytest
import typer
from typer.testing import CliRunner

from edgecap.runtime.report import DEMONSTRATION_LINE, Report, is_demonstration
from edgecap.runtime.text import (
    REDACTED,
    XXXX_TOKEN,
    clean_report,
    readable_text,
    readable_tokens,
    render_report,
    tokenize,
)

SAMPLE = "CXR2608_IM-1098-1001.png"  # the default bundle: "... pulmonary xxxx remain normal. No xxxx infiltrates."


def readable(cleaned: str) -> str:
    return render_report(readable_tokens(tokenize(cleaned)))


@pytest.mark.parametrize(
    "cleaned, shown",
    [
        # the report: a noun replaced by the mark cannot be dropped; a modifier can
        (
            "consolidation and costophrenic xxxx remain normal . no xxxx infiltrates .",
            "Consolidation and costophrenic [redacted] remain normal. No infiltrates.",
        ),
        # real IU X-Ray sentences (the most frequent contexts of the mark)
        ("the xxxx are intact .", "The [redacted] are intact."),
        ("xxxx are normal .", "[redacted] are normal."),
        (
            "the xxxx examination consists of frontal and lateral radiographs of the chest .",
            "The examination consists of frontal and lateral radiographs of the chest.",
        ),
        (
            "no xxxx focal airspace consolidation or pleural effusion .",
            "No focal airspace consolidation or pleural effusion.",
        ),
        ("calcified mediastinal lymph xxxx .", "Calcified mediastinal lymph [redacted]."),
        # after a content word the mark may be a hedge ("likely"): never silently dropped
        ("unchanged xxxx chronic atelectasis .", "Unchanged [redacted] chronic atelectasis."),
        # two marks in a row are one gap; a sentence of marks only is dropped; a report of marks only is not empty
        ("heart size is normal . xxxx . xxxx xxxx are clear .", "Heart size is normal. [redacted] are clear."),
        ("xxxx .", "[redacted]."),
        # no mark: unchanged
        ("the heart is normal in size . the lungs are clear .", "The heart is normal in size. The lungs are clear."),
    ],
)
def test_rules_on_real_sentences(cleaned, shown):
    assert readable(cleaned) == shown
    assert readable_text(render_report(tokenize(cleaned))) == shown  # from the rendered text too
    assert readable_text(shown) == shown  # idempotent


def test_an_unfinished_report_stays_unfinished():
    assert readable_tokens(["no", "xxxx", "infiltrates", ".", "lymph", "xxxx"]) == [
        "no",
        "infiltrates",
        ".",
        "lymph",
        REDACTED,
    ]


def test_every_real_findings_text_reads_without_the_mark(iu_data):
    """All 3,337 IU X-Ray FINDINGS: no "xxxx" survives, and the counts quoted in docs/conventions.md hold."""
    with open(iu_data / "indiana_reports.csv", newline="") as f:
        reports = [clean_report(r["findings"]) for r in csv.DictReader(f)]
    reports = [r for r in reports if r]
    sentences = [s.split() for r in reports for s in r[:-2].split(" . ")]
    marked = [s for s in sentences if XXXX_TOKEN in s]
    kept_whole = [s for s in marked if REDACTED not in readable_tokens([*s, "."])]
    assert (len(reports), len(sentences), len(marked), len(kept_whole)) == (3337, 15449, 1900, 323)
    for r in reports:
        shown = readable(r)
        assert XXXX_TOKEN not in shown.lower().split() and "xxxx" not in shown.lower()
        assert shown  # never an empty report


def test_report_text_is_readable_findings_and_tokens_are_the_models():
    tokens = tokenize("consolidation and pulmonary xxxx remain normal . no xxxx infiltrates .")
    r = Report(
        text=render_report(tokens),
        tokens=tokens,
        attention=None,
        findings={"Consolidation": "negative"},
        timings={},
        bundle={"notice": "demonstration model, not validated for clinical use"},
    )
    assert r.text == "Consolidation and pulmonary [redacted] remain normal. No infiltrates."
    d = r.to_dict(attention=False)
    assert d["text"] == r.text and d["tokens"] == tokens and d["findings"] == {"Consolidation": "negative"}
    assert d["demonstration"] is True and d["notice"] == "demonstration model, not validated for clinical use"
    assert Report.from_dict(d).text == r.text


@pytest.mark.parametrize(
    "notice, demo",
    [
        ("demonstration model, not validated for clinical use", True),
        ("Demonstration build for the workshop", True),
        ("the Keras reference model", False),
        ("validated at site A, 2025", False),
        ("", False),
        (None, False),
    ],
)
def test_what_marks_a_demonstration(notice, demo):
    assert is_demonstration(notice) is demo


@pytest.fixture(scope="module")
def default_captioner():
    from edgecap.runtime.captioner import Captioner

    return Captioner.from_bundle(None)  # the shipped default bundle: trained with the mark kept


def test_default_bundle_report_never_shows_the_mark(default_captioner, iu_data):
    """The shipped bundle writes the mark (its tokens keep it); the text people read does not, and the findings
    are the labeler's reading of the model's own text."""
    r = default_captioner.caption(iu_data / "images" / SAMPLE, beam=3)
    assert XXXX_TOKEN in r.tokens and "xxxx" not in r.text.lower()
    assert r.text == readable_text(render_report(r.tokens))
    from edgecap.runtime.report import findings_from_labels

    assert r.findings == findings_from_labels(default_captioner.labeler.label(render_report(r.tokens)))
    assert r.demonstration and r.to_dict()["demonstration"] is True


def test_cli_says_demonstration_once_and_in_every_json_record(iu_data, tmp_path):
    from edgecap.cli.caption import caption

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(caption)
    images = [iu_data / "images" / n for n in (SAMPLE, "CXR303_IM-1404-1001.png", "CXR799_IM-2333-1001.png")]
    broken = tmp_path / "broken.png"
    broken.write_bytes(images[0].read_bytes()[:200])  # a truncated PNG: an error record
    out = tmp_path / "r.jsonl"
    args = [*map(str, images), str(broken), "--out", str(out), "--no-attention", "--no-progress", "--studies", "none"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 1, r.stderr
    assert r.stderr.count(DEMONSTRATION_LINE) == 1  # once per run, not per image
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 4 and all(rec["demonstration"] is True for rec in records)  # the error record too
    assert [rec["status"] for rec in records] == ["ok", "ok", "ok", "error"]
    assert all("xxxx" not in rec["text"].lower() for rec in records[:3])
    one = CliRunner().invoke(app, [str(images[0]), "--format", "json", "--no-attention"])
    assert one.exit_code == 0 and json.loads(one.stdout)["demonstration"] is True
    assert one.stderr.count(DEMONSTRATION_LINE) == 1


def test_metrics_score_the_kept_mark_unless_asked_for_the_readable_text():
    """R2Gen scores text with the mark kept: the default. readable=True scores what people read, and says so."""
    from edgecap.evaluation.nlg import NLGScorer

    refs = ["the xxxx are intact . no xxxx infiltrates .", "the heart is normal . the lungs are clear ."]
    hyps = ["the bones are intact . no infiltrates .", "the heart is normal . the lungs are clear ."]
    with NLGScorer(tokenize=False, meteor=False) as scorer:
        kept, shown = scorer.score(refs, hyps), scorer.score(refs, hyps, readable=True)
    assert kept["pipeline"] == "pycocoevalcap" and shown["pipeline"] == "pycocoevalcap+readable"
    assert shown["bleu1"] != kept["bleu1"]  # "no infiltrates" matches once the mark is dropped from the reference
