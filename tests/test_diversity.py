"""Tests for edgecap.evaluation.diversity: golden values on hand-computable examples."""

from __future__ import annotations

import pytest

from edgecap.evaluation.diversity import diversity


def test_golden_small_corpus():
    # reports: "a b c" (twice, once with odd whitespace), "a b d", "" (an empty report is a report)
    d = diversity(["a b c", " a  b\tc ", "a b d", ""])
    # unigrams: a x3, b x3, c x2, d x1 -> 4 unique / 9;  bigrams: (a b) x3, (b c) x2, (b d) x1 -> 3 / 6
    assert d == {
        "n_reports": 4,
        "n_unique_reports": 3,
        "distinct_reports": 0.75,
        "distinct_1": pytest.approx(4 / 9),
        "distinct_2": 0.5,
        "n_unigrams": 9,
        "n_bigrams": 6,
        "most_common_report": "a b c",
        "most_common_count": 2,
        "most_common_share": 0.5,
    }


def test_constant_reports():
    report = "the heart is normal . the lungs are clear ."
    d = diversity([report] * 5)
    # 10 tokens per report, 8 unique (the heart is normal . lungs are clear) -> 8 / 50
    assert d["distinct_reports"] == pytest.approx(1 / 5)
    assert d["most_common_report"] == report
    assert d["most_common_share"] == 1.0
    assert d["distinct_1"] == pytest.approx(8 / 50)
    # bigrams per report: 9, all distinct within the report -> 9 unique / 45
    assert d["distinct_2"] == pytest.approx(9 / 45)


def test_bigrams_do_not_cross_reports_and_ties_keep_first():
    d = diversity(["a b", "c d"])
    assert d["n_bigrams"] == 2 and d["distinct_2"] == 1.0  # no ("b", "c") bigram
    assert d["distinct_1"] == 1.0 and d["distinct_reports"] == 1.0
    assert d["most_common_report"] == "a b" and d["most_common_share"] == 0.5


def test_case_and_punctuation_are_not_normalised():
    d = diversity(["No effusion .", "no effusion ."])
    assert d["n_unique_reports"] == 2
    assert d["distinct_1"] == pytest.approx(4 / 6)  # "No", "no", "effusion", "." of 6 tokens


def test_degenerate_inputs():
    d = diversity(["", "   "])
    assert d["distinct_1"] == 0.0 and d["distinct_2"] == 0.0
    assert d["n_unique_reports"] == 1 and d["most_common_report"] == "" and d["most_common_share"] == 1.0
    assert diversity(["one"])["distinct_2"] == 0.0  # no bigrams at all
    with pytest.raises(ValueError):
        diversity([])
    with pytest.raises(TypeError):
        diversity("a b c")
    with pytest.raises(TypeError):
        diversity(["a", None])
