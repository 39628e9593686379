"""Report drift of each variant against the Keras reference, under the same decode loop and inputs.

Per variant (reports from the bench's first thread count, beam as set):
    identical        share of inputs whose tokens equal the Keras model's exactly
    nlg              BLEU-1..4 / METEOR / ROUGE-L / CIDEr against the real studies' findings (inputs that have
                     findings), and `relative`: (variant - keras) / keras for each
    clinical         agreement of the rule-based labeler's 14 labels with the Keras report's labels
                     (share of (report, observation) pairs equal, share of reports with all 14 equal), and
                     clinical efficacy against the references (micro / macro F1, positive vs rest), with the
                     change relative to Keras
    differing        the inputs whose report differs, with both texts (to read what changed)

Baselines (`baselines()`), scored on the same inputs the same way: the most common findings text among the
reference run's training reports, and the nearest neighbour (the findings of the most similar OTHER real
study, by cosine of the Keras model's mean-pooled image features; an input's own study is never retrieved,
since derived views would find their source).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from edgecap.benchmarks.rows import Variant
from edgecap.labeler import Labeler
from edgecap.labeler.labeler import OBSERVATIONS

if TYPE_CHECKING:
    from edgecap.benchmarks.inputs import InputSet

NLG_KEYS = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider")


def add_drift(variants: list[Variant], inputs: InputSet, log: Callable[[str], None] = print) -> None:
    """Set v.drift on every row (and drop the raw reports, v.reports); the compiled Keras row is the
    reference (its own drift: identical 1.0, relative 0)."""
    ref = next((v for v in variants if v.reference and v.reports), None)
    names = [i.name for i in inputs.inputs]
    refs = {i.name: i.reference for i in inputs.inputs if i.reference}
    labeler = Labeler.default()
    if ref is None or ref.reports is None:
        for v in variants:
            v.reports = None
            v.drift = {"status": "unavailable", "reason": "no Keras reference reports (no --run, or it failed)"}
        return
    ref_text = {n: r["text"] for n, r in zip(names, ref.reports)}
    ref_tokens = {n: r["tokens"] for n, r in zip(names, ref.reports)}
    ref_labels = {n: labeler.label(t) for n, t in ref_text.items()}
    scorer, pipeline_note = _scorer(log)
    try:
        ref_nlg = _nlg(scorer, refs, ref_text)
        ref_ce = _clinical(refs, ref_text, labeler)
        for v in variants:
            reports, v.reports = v.reports, None
            if reports is None:
                v.drift = {"status": "unavailable", "reason": v.error or "no reports"}
                continue
            if v.drift_note:
                v.drift = {"status": "unavailable", "reason": v.drift_note}
                continue
            mine = {n: r for n, r in zip(names, reports)}
            common = [n for n in names if n in mine]
            same = [n for n in common if mine[n]["tokens"] == ref_tokens[n]]
            texts = {n: mine[n]["text"] for n in common}
            d: dict = {
                "status": "ok",
                "n": len(common),
                "identical": len(same) / len(common),
                "identical_count": len(same),
                "differing": [{"input": n, "text": texts[n], "keras": ref_text[n]} for n in common if n not in same][
                    :20
                ],
            }
            labels = {n: labeler.label(t) for n, t in texts.items()}
            pairs = [(labels[n][o], ref_labels[n][o]) for n in common for o in OBSERVATIONS]
            d["clinical"] = {
                "label_agreement": sum(a == b for a, b in pairs) / len(pairs),
                "reports_all_labels_equal": sum(labels[n] == ref_labels[n] for n in common) / len(common),
                "label_agreement_per_observation": {
                    o: sum(labels[n][o] == ref_labels[n][o] for n in common) / len(common) for o in OBSERVATIONS
                },
            }
            scored = {n: t for n, t in texts.items() if n in refs}
            if len(scored) >= 10 and not v.eager:
                nlg = _nlg(scorer, {n: refs[n] for n in scored}, scored)
                d["nlg"] = {**nlg, "n": len(scored), "pipeline": pipeline_note}
                d["relative"] = {
                    k: (nlg[k] - ref_nlg[k]) / ref_nlg[k] if ref_nlg.get(k) else None for k in NLG_KEYS if k in nlg
                }
                ce = _clinical({n: refs[n] for n in scored}, scored, labeler)
                d["clinical"].update(ce)
                ref_f1 = ref_ce["micro"]["f1"]
                d["clinical"]["relative_micro_f1"] = (ce["micro"]["f1"] - ref_f1) / ref_f1 if ref_f1 else None
            else:
                d["nlg_note"] = (
                    "eager Keras is decoded on a few inputs only (it is slow): token identity only"
                    if v.eager
                    else f"{len(scored)} inputs with findings: too few for NLG scores"
                )
            v.drift = d
    finally:
        if scorer is not None:
            scorer.close()


def _scorer(log):
    """One NLGScorer for all variants (one METEOR JVM); without Java, BLEU / ROUGE-L / CIDEr on plain
    tokens (the report's own tokenisation) and no METEOR, said in every variant's nlg.pipeline."""
    from edgecap.evaluation.nlg import NLGScorer, java_available

    if java_available():
        return NLGScorer(), "pycocoevalcap+ptb"
    log("warning: no Java: METEOR skipped, BLEU / ROUGE-L / CIDEr without the PTB tokenizer")
    return NLGScorer(tokenize=False, meteor=False), "pycocoevalcap (no Java: no METEOR)"


def _nlg(scorer, refs: dict[str, str], hyps: dict[str, str]) -> dict:
    keys = [k for k in refs if k in hyps]
    scores = scorer.score({k: refs[k] for k in keys}, {k: hyps[k] or "." for k in keys})
    return {k: float(scores[k]) for k in NLG_KEYS if k in scores}


def _clinical(refs: dict[str, str], hyps: dict[str, str], labeler) -> dict:
    """Clinical efficacy against the references (R2Gen convention: positive vs the rest): micro, macro and
    per-observation precision / recall / F1 (evaluation.clinical)."""
    from edgecap.evaluation.clinical import clinical_scores

    keys = [k for k in refs if k in hyps]
    s = clinical_scores({k: refs[k] for k in keys}, {k: hyps[k] for k in keys}, labeler)
    return {
        "micro": s["micro"],
        "macro": s["macro"],
        "per_observation": s["per_observation"],
        "macro_over": s["macro_over"],
    }


def baselines(ref_run, inputs: InputSet, log: Callable[[str], None] = print) -> dict:
    """The two evaluation baselines on the bench's inputs -> {name: {"nlg", "clinical", "note"}} (see the
    module docstring). Needs TensorFlow (the Keras encoder for nearest-neighbour features)."""
    from collections import Counter

    import numpy as np

    from edgecap.data import iu_xray
    from edgecap.runtime.study import encode_study_files
    from edgecap.runtime.text import clean_report
    from edgecap.training.keras_step import KerasBundle
    from edgecap.training.run_dir import RunDir, load_model

    refs = {i.name: i.reference for i in inputs.inputs if i.reference}
    if len(refs) < 10:
        return {}
    cfg, vocab, model = load_model(ref_run)
    out: dict = {}
    # most common training report: the run's training split, over every report of the inputs' data folder
    split = RunDir(ref_run).load_split().get("splits", {}) if RunDir(ref_run).split.is_file() else {}
    ds = iu_xray.load(inputs.source)
    train = [clean_report(s.text(cfg.text.section), cfg.text.xxxx) for s in ds.studies if split.get(s.uid) == "train"]
    train = [t for t in train if t]
    if train:
        text, freq = Counter(train).most_common(1)[0]
        hyps = {n: text for n in refs}
        out["most-common"] = {
            "hyps": hyps,
            "note": f"the most common of {len(train)} training reports ({freq} times): {text!r}",
        }
    # nearest neighbour among the other real studies (the inputs' "original" rows), Keras features
    keras = KerasBundle(model, vocab, str(ref_run))

    def pooled(i) -> np.ndarray:
        """The study's views as the model's attention memory (runtime.study), mean over the real views'
        positions, unit length."""
        features, mask = encode_study_files(keras, [i.frontal, i.lateral][: keras.max_views])
        f = features[mask > 0].mean(0)
        return f / (np.linalg.norm(f) + 1e-8)

    # each study encoded once: the bank's vectors are its "original" inputs' (the query of such an input is its
    # bank vector); a query was once re-encoded for every bank entry, inputs x bank Keras calls (~10,000 for
    # 100 inputs from a full-size folder: the bench's longest stage)
    vectors = {i.name: pooled(i) for i in inputs.inputs if i.name in refs}
    bank = [(i.uid, i.reference, vectors[i.name]) for i in inputs.inputs if i.transform == "original" and i.reference]
    if len(bank) >= 2:
        hyps = {}
        uid_of = {i.name: i.uid for i in inputs.inputs}
        for name, q in vectors.items():
            others = [(float(v @ q), text) for u, text, v in bank if u != uid_of[name]]
            hyps[name] = max(others)[1]
        out["nearest-neighbour"] = {
            "hyps": hyps,
            "note": f"bank: the {len(bank)} real studies with findings, the input's own study excluded",
        }
    return out


def score_baselines(found: dict, inputs: InputSet, log: Callable[[str], None] = print) -> dict:
    """NLG and clinical scores of baselines() against the inputs' references."""
    refs = {i.name: i.reference for i in inputs.inputs if i.reference}
    labeler = Labeler.default()
    scorer, note = _scorer(log)
    try:
        return {
            name: {
                "nlg": {**_nlg(scorer, refs, b["hyps"]), "n": len(refs), "pipeline": note},
                "clinical": _clinical(refs, b["hyps"], labeler),
                "note": b["note"],
            }
            for name, b in found.items()
        }
    finally:
        scorer.close()
