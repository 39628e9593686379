"""Golden vocabulary: ids by count then alphabet, specials first, JSON round trip, <unk>."""

import json

import pytest

from edgecap.runtime.vocab import SPECIALS, Vocabulary

REPORTS = [
    "the heart is normal . the lungs are clear .",
    "the heart is enlarged . no effusion .",
    "the lungs are clear . no pneumothorax .",
]


def test_golden_ids():
    v = Vocabulary.build(REPORTS, min_count=2)
    # counts: . 6, the 4, are 2, clear 2, heart 2, is 2, lungs 2, no 2; the rest once
    assert v.tokens == list(SPECIALS) + [".", "the", "are", "clear", "heart", "is", "lungs", "no"]
    assert v.encode("the heart is huge .") == [5, 8, 9, v.unk_id, 4]
    assert v.decode([1, 5, 8, 2, 6]) == ["the", "heart"]  # <bos> skipped, stops at <eos>
    assert v.render([5, 8, 9, 4]) == "The heart is."


def test_min_count_three_default():
    v = Vocabulary.build(REPORTS)
    assert v.tokens == list(SPECIALS) + [".", "the"]


def test_json_roundtrip(tmp_path):
    v = Vocabulary.build(REPORTS, min_count=1)
    v.save(tmp_path / "vocab.json")
    w = Vocabulary.load(tmp_path / "vocab.json")
    assert w.tokens == v.tokens and w.min_count == 1
    assert json.loads((tmp_path / "vocab.json").read_text())["format"] == "edgecap-vocab/1"


def test_rejects_non_vocab(tmp_path):
    (tmp_path / "x.json").write_text('{"tokens": []}')
    with pytest.raises(ValueError, match="not an edgecap vocabulary"):
        Vocabulary.load(tmp_path / "x.json")


def test_max_len_cut():
    v = Vocabulary.build(REPORTS, min_count=1)
    assert len(v.encode(REPORTS[0], max_len=3)) == 3
