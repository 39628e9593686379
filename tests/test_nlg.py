"""Tests for edgecap.evaluation.nlg: known properties of BLEU / METEOR / ROUGE-L / CIDEr on real IU X-Ray text.

The corpus is the FINDINGS of real IU X-Ray studies (shared/data/iu_xray/indiana_reports.csv, uid in the
comment), cleaned the R2Gen way (lowercase, punctuation stripped, " . " between sentences, "XXXX" runs as
one "xxxx"). The texts must differ: CIDEr's idf comes from the scored references, so a corpus of identical
reports scores CIDEr 0 even for perfect hypotheses.

Java-dependent tests (METEOR, PTB tokenizer) are marked `java` and skipped without a Java runtime. The whole
PTB+METEOR pipeline shares one METEOR JVM (module fixture): one JVM start (7-15 s) for the file.
"""

from __future__ import annotations

import gc
import math
import os
import random
import shutil
import threading

import pytest

from edgecap.evaluation import nlg
from edgecap.evaluation.nlg import METRIC_KEYS, MetricsUnavailable, NLGScorer, nlg_scores, ptb_tokenize

HAS_JAVA = shutil.which("java") is not None
needs_java = [
    pytest.mark.java,
    pytest.mark.skipif(
        not HAS_JAVA,
        reason="needs a Java runtime for METEOR and the PTB tokenizer (apt-get install -y default-jre-headless)",
    ),
]


def java(test):
    for mark in needs_java:
        test = mark(test)
    return test


FINDINGS = [
    # uid 1
    "the cardiac silhouette and mediastinum size are within normal limits . there is no pulmonary edema . "
    "there is no focal consolidation . there are no xxxx of a pleural effusion . "
    "there is no evidence of pneumothorax .",
    # uid 2
    "borderline cardiomegaly . midline sternotomy xxxx . enlarged pulmonary arteries . clear lungs . inferior xxxx .",
    # uid 6
    "heart size and mediastinal contour are within normal limits . there is no focal airspace consolidation or "
    "suspicious pulmonary opacity . no pneumothorax or large pleural effusion . "
    "mild degenerative change of the thoracic spine .",
    # uid 7
    "the cardiac contours are normal . xxxx basilar atelectasis . the lungs are clear . thoracic spondylosis . "
    "lower cervical xxxx arthritis .",
    # uid 11
    "cardiomediastinal silhouette and pulmonary vasculature are within normal limits . lungs are clear . "
    "no pneumothorax or pleural effusion . no acute osseous findings .",
    # uid 12
    "lungs are clear bilaterally . cardiac and mediastinal silhouettes are normal . pulmonary vasculature is "
    "normal . no pneumothorax or pleural effusion . no acute bony abnormality .",
    # uid 56 (one of the two most frequent IU X-Ray findings texts, 51 studies)
    "the heart is normal in size . the mediastinum is unremarkable . the lungs are clear .",
]
CONSTANT = FINDINGS[-1]


def _shuffled(text: str, seed: int) -> str:
    words = text.split()
    rng = random.Random(seed)
    while True:
        rng.shuffle(words)
        if " ".join(words) != text:
            return " ".join(words)


HYPOTHESES = {
    "perfect": list(FINDINGS),
    "constant": [CONSTANT] * len(FINDINGS),
    "shuffled": [_shuffled(t, seed) for seed, t in enumerate(FINDINGS)],
    "one_empty": FINDINGS[:-1] + [""],
    "all_empty": [""] * len(FINDINGS),
    "punctuation_only": ["."] * len(FINDINGS),
    # the same words as "perfect", with METEOR's separators and odd whitespace that must be neutralised
    "messy_whitespace": [t.replace(" . ", " .\n", 1).replace(" ", "\r", 1) + " |||" for t in FINDINGS],
}


@pytest.fixture(scope="module")
def ptb_scores():
    """All hypothesis sets through the standard pipeline (PTB + METEOR), one JVM."""
    if not HAS_JAVA:
        pytest.skip("needs a Java runtime (apt-get install -y default-jre-headless)")
    with NLGScorer(tokenize=True, meteor=True) as scorer:
        return {case: scorer.score(FINDINGS, hyps) for case, hyps in HYPOTHESES.items()}


@pytest.fixture(scope="module")
def plain_scores():
    """All hypothesis sets through the no-tokenizer, no-METEOR pipeline (no Java)."""
    with NLGScorer(tokenize=False, meteor=False) as scorer:
        return {case: scorer.score(FINDINGS, hyps) for case, hyps in HYPOTHESES.items()}


PIPELINES = [pytest.param("ptb", marks=needs_java), "plain"]


@pytest.fixture(params=PIPELINES)
def scores(request):
    return request.getfixturevalue(f"{request.param}_scores")


def _metrics(result: dict) -> dict[str, float]:
    return {k: result[k] for k in METRIC_KEYS if k in result}


# ----------------------------------------------------------------------------------------------- properties


def test_result_keys_and_pipeline(scores):
    perfect = scores["perfect"]
    with_meteor = perfect["pipeline"] == "pycocoevalcap+ptb"  # the ptb fixture runs METEOR, plain does not
    expected = set(METRIC_KEYS) if with_meteor else set(METRIC_KEYS) - {"meteor"}
    assert set(perfect) == expected | {"pipeline"}
    for result in scores.values():
        assert all(isinstance(v, float) and math.isfinite(v) for v in _metrics(result).values())


def test_perfect_hypotheses(scores):
    perfect = scores["perfect"]
    for k in ("bleu1", "bleu2", "bleu3", "bleu4"):
        assert perfect[k] == pytest.approx(1.0, abs=1e-6)
    assert perfect["rouge_l"] == pytest.approx(1.0, abs=1e-9)
    assert perfect["cider"] > 1.0  # distinct references: idf > 0 (pycocoevalcap's CIDEr is x10 scaled)
    if "meteor" in perfect:
        assert perfect["meteor"] > 0.9


def test_constant_report_scores_lower_on_every_metric(scores):
    perfect, constant = _metrics(scores["perfect"]), _metrics(scores["constant"])
    for k in perfect:
        assert constant[k] < perfect[k] - 0.05, k
    assert constant["bleu1"] > 0.05  # ... but not zero: it shares "the lungs are clear" with the corpus


def test_shuffled_words_keep_bleu1_but_lose_bleu4(scores):
    shuffled = scores["shuffled"]
    assert shuffled["bleu1"] == pytest.approx(1.0, abs=1e-6)  # same words, same counts, same length
    assert shuffled["bleu4"] < 0.3
    assert shuffled["rouge_l"] < scores["perfect"]["rouge_l"]


def test_empty_hypotheses_do_not_crash(scores):
    perfect, one_empty = _metrics(scores["perfect"]), _metrics(scores["one_empty"])
    for k in perfect:
        assert 0.0 < one_empty[k] < perfect[k], k
    for k, v in _metrics(scores["all_empty"]).items():
        assert v == pytest.approx(0.0, abs=1e-9), k


def test_separators_and_odd_whitespace_are_neutralised(scores):
    # "\r", "\n" and "|||" would desynchronise METEOR's pipe or PTB's line alignment if passed through.
    messy, perfect = scores["messy_whitespace"], scores["perfect"]
    for k, v in _metrics(perfect).items():
        assert messy[k] == pytest.approx(v, abs=1e-9), k


@java
def test_ptb_removes_punctuation(ptb_scores, plain_scores):
    # With PTB, "." is dropped: a hypothesis of only "." is empty -> 0 everywhere. Without it, "." is a
    # token that matches the references' "." (why the two pipelines are not comparable).
    for k, v in _metrics(ptb_scores["punctuation_only"]).items():
        assert v == pytest.approx(0.0, abs=1e-9), k
    # (BLEU hides it behind the brevity penalty; ROUGE-L's precision of 1/1 does not)
    assert plain_scores["punctuation_only"]["rouge_l"] > 0.01
    assert ptb_scores["constant"]["bleu1"] < plain_scores["constant"]["bleu1"] - 0.01  # "." matches freely


# ------------------------------------------------------------------------------------------ inputs, errors


def test_dict_inputs_are_matched_by_key():
    refs = {f"s{i}": t for i, t in enumerate(FINDINGS)}
    hyps = {k: refs[k] for k in reversed(list(refs))}  # same pairs, other key order
    by_key = nlg_scores(refs, hyps, tokenize=False, meteor=False)
    by_position = nlg_scores(FINDINGS, FINDINGS, tokenize=False, meteor=False)
    assert by_key == by_position
    assert by_key["pipeline"] == "pycocoevalcap"


def test_invalid_inputs_raise():
    kw = dict(tokenize=False, meteor=False)
    with pytest.raises(ValueError, match="2 references but 1"):
        nlg_scores(FINDINGS[:2], FINDINGS[:1], **kw)
    with pytest.raises(ValueError, match="different ids"):
        nlg_scores({"a": FINDINGS[0]}, {"b": FINDINGS[0]}, **kw)
    with pytest.raises(TypeError):
        nlg_scores({"a": FINDINGS[0]}, [FINDINGS[0]], **kw)
    with pytest.raises(TypeError):
        nlg_scores([FINDINGS[0]], [None], **kw)
    with pytest.raises(ValueError, match="nothing to score"):
        nlg_scores([], [], **kw)
    with pytest.raises(ValueError, match="empty reference"):
        nlg_scores(["  ", FINDINGS[0]], ["x", "y"], **kw)


def test_without_java_metrics_unavailable(monkeypatch):
    monkeypatch.setattr(nlg.shutil, "which", lambda name: None)
    assert not nlg.java_available()
    for kwargs in ({}, {"tokenize": False}, {"meteor": False}):
        with pytest.raises(MetricsUnavailable, match="apt-get install -y default-jre-headless"):
            nlg_scores(FINDINGS, FINDINGS, **kwargs)
    with pytest.raises(MetricsUnavailable, match="default-jre-headless"):
        ptb_tokenize(["a"])
    assert nlg_scores(FINDINGS, FINDINGS, tokenize=False, meteor=False)["bleu4"] == pytest.approx(1.0, abs=1e-6)


# ------------------------------------------------------------------------------------ JVM, tokenizer quirks


def _process_gone(pid: int) -> bool:
    return not os.path.exists(f"/proc/{pid}") if os.path.isdir("/proc") else True


@java
def test_meteor_jvm_is_reaped_after_one_shot_call(monkeypatch):
    started = []

    class Recording(nlg._MeteorJVM):
        def __init__(self):
            super().__init__()
            started.append(self)

    monkeypatch.setattr(nlg, "_MeteorJVM", Recording)
    with pytest.raises(ValueError):  # fails after the JVM started: the with block must still reap it
        nlg_scores(FINDINGS, FINDINGS[:2], tokenize=False)
    (jvm,) = started
    assert jvm.closed and jvm.returncode is not None
    assert _process_gone(jvm.pid)  # killed AND waited for: no zombie left in the process table


@java
def test_failed_meteor_call_releases_pycocoevalcap_lock():
    scorer = NLGScorer(tokenize=False, meteor=True)
    jvm = scorer._meteor
    jvm._proc.kill()  # the JVM dies mid-session: pycocoevalcap reads EOF and raises with its lock held
    with pytest.raises(RuntimeError, match="METEOR failed"):
        scorer.score(FINDINGS, FINDINGS)
    assert jvm.closed and jvm.returncode is not None
    assert not jvm._meteor.lock.locked()
    with pytest.raises(RuntimeError, match="closed"):
        scorer.score(FINDINGS, FINDINGS)
    # pycocoevalcap's Meteor.__del__ acquires that lock: it must return, not hang (run it in a thread).
    t = threading.Thread(target=jvm._meteor.__del__, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive()
    scorer.close()
    del scorer, jvm
    gc.collect()


@java
def test_ptb_tokenize_matches_pycocoevalcap_and_keeps_alignment(capfd):
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    texts = [
        "The heart is normal in size. The lungs are clear.",
        "Heart size normal; lungs, clear! No XXXX-XXXX effusion (small).",
        "3.5 cm nodule, don't miss it...",
        ".",
        "",
        "no acute disease .",
    ]
    ours = ptb_tokenize(texts)
    theirs = PTBTokenizer().tokenize({i: [{"caption": t}] for i, t in enumerate(texts)})
    capfd.readouterr()  # PTBTokenizer prints its token rate to stderr
    assert ours == [theirs[i][0] for i in range(len(texts))]
    assert ours[0] == "the heart is normal in size the lungs are clear"
    assert ours[3] == "" and ours[4] == ""
    # a carriage return is a line break to the Java tokenizer; it must not shift later texts onto other ids
    assert ptb_tokenize(["a\rb", "c\u2028d", "e"]) == ["a b", "c d", "e"]
