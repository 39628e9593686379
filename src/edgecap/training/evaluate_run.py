"""`edgecap evaluate`: a Keras run's reports on one split of a data folder, scored against the references
and against two baselines that the field's numbers must beat (docs/conventions.md): the most common training report,
and nearest-neighbour retrieval (the training study whose pooled encoder features are closest by cosine
gives its report). Reports come from training.generate (the runtime's preprocessing and decode loop).

All three go through the same metrics: BLEU-1..4, METEOR, ROUGE-L, CIDEr (pycocoevalcap with the PTB
tokenizer), clinical efficacy (evaluation.clinical: findings labels vs the reference's), and diversity
(distinct-1/2, share of distinct reports).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecap.data import iu_xray, splits
from edgecap.evaluation.clinical import clinical_scores
from edgecap.evaluation.diversity import diversity
from edgecap.evaluation.nlg import nlg_scores
from edgecap.runtime.text import clean_report
from edgecap.training.dataset import make_examples, readable
from edgecap.training.run_dir import RunDir, load_model

METRIC_KEYS = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider")


class EvaluateError(RuntimeError):
    pass


@dataclass
class EvalResult:
    split: str
    n_studies: int
    systems: dict[str, dict]  # name -> {"metrics": ..., "diversity": ...}
    examples: list[dict]  # per study: uid, reference, model, baselines
    notes: list[str]

    def to_json(self) -> dict:
        return {
            "split": self.split,
            "n_studies": self.n_studies,
            "systems": self.systems,
            "examples": self.examples,
            "notes": self.notes,
        }

    def table(self) -> list[list[str]]:
        head = ["system", *METRIC_KEYS, "CE micro-F1", "CE macro-F1", "distinct-1", "distinct-2", "distinct reports"]
        rows = [head]
        for name, s in self.systems.items():
            m, c, d = s["metrics"], s["clinical"], s["diversity"]
            rows.append(
                [
                    name,
                    *[f"{m[k]:.3f}" if k in m else "-" for k in METRIC_KEYS],
                    f"{c['micro']['f1']:.3f}",
                    f"{c['macro']['f1']:.3f}",
                    f"{d['distinct_1']:.3f}",
                    f"{d['distinct_2']:.3f}",
                    f"{d['distinct_reports']:.2f}",
                ]
            )
        return rows


def evaluate(
    run: str | Path | RunDir,
    data: str | Path,
    split: str = "test",
    beam: int = 3,
    meteor: bool = True,
    grid_png: Path | None = None,
    html: Path | None = None,
    log: Callable = print,
) -> EvalResult:
    from edgecap.training.generate import ReportGenerator

    rd = RunDir.of(run)
    cfg, vocab, model = load_model(rd)
    ds = iu_xray.load(data)
    split_info = rd.load_split()
    for s in ds.studies:
        s.split = split_info["splits"].get(s.uid)
    notes = [f"split from the run: {split_info['source']}"]
    studies = splits.studies_in(ds, split)
    examples, bad = readable(make_examples(studies, vocab, cfg), cfg.image.size)
    notes += [f"skipped unreadable image: {b}" for b in bad]
    if not examples:
        raise EvaluateError(f"no study of the {split!r} split has a report and a readable image in {data}")
    gen = ReportGenerator(cfg, vocab, model)
    log(f"generating {len(examples)} reports (beam {beam})")
    outputs = [gen(ex.uid, ex.views, beam=beam) for ex in examples]

    # ---- baselines, computed on this data with this run's training split ------------------------
    train_studies = splits.studies_in(ds, "train")
    train_texts = [clean_report(s.text(cfg.text.section), cfg.text.xxxx) for s in train_studies]
    train_texts = [t for t in train_texts if t]
    most_common, freq = Counter(train_texts).most_common(1)[0]
    notes.append(f"most common training report ({freq} of {len(train_texts)} training reports): {most_common!r}")
    train_img, _ = readable(make_examples(train_studies, vocab, cfg), cfg.image.size)
    nn_reports = {}
    if train_img:
        pooled = []
        for ex in train_img:
            f, m = gen.encode(ex.views)
            pooled.append((f * m[:, None]).sum(0) / max(m.sum(), 1.0))
        bank = np.stack(pooled)
        bank /= np.linalg.norm(bank, axis=1, keepdims=True) + 1e-8
        for out in outputs:
            q = out.pooled / (np.linalg.norm(out.pooled) + 1e-8)
            sims = bank @ q
            if split == "train":  # never retrieve the study itself
                sims[[i for i, ex in enumerate(train_img) if ex.uid == out.uid]] = -np.inf
            nn_reports[out.uid] = train_img[int(np.argmax(sims))].text
        notes.append(f"nearest-neighbour bank: {len(train_img)} training studies with images")
    else:
        notes.append("nearest-neighbour baseline skipped: no training study with images in this data folder")

    refs = {ex.uid: ex.text for ex in examples}
    systems_h = {"model": {o.uid: o.text for o in outputs}, "most-common": {u: most_common for u in refs}}
    if nn_reports:
        systems_h["nearest-neighbour"] = nn_reports
    systems = {}
    for name, hyps in systems_h.items():
        systems[name] = {
            "metrics": nlg_scores(refs, hyps, meteor=meteor),
            "clinical": clinical_scores(refs, hyps),
            "diversity": diversity([hyps[u] for u in refs]),
        }
    per_study = [
        {
            "uid": o.uid,
            "images": [str(p) for p in o.views if p],
            "reference": refs[o.uid],
            **{name: hyps[o.uid] for name, hyps in systems_h.items()},
        }
        for o in outputs
    ]
    if grid_png is not None:
        from edgecap.training.visualize import attention_grid

        attention_grid(outputs, refs, vocab, cfg, grid_png)
    result = EvalResult(split, len(examples), systems, per_study, notes)
    if html is not None:
        from edgecap.training.report_html import write_html

        write_html(result, outputs, refs, cfg, rd.root, html)
    return result


def save_json(result: EvalResult, path: Path) -> None:
    Path(path).write_text(json.dumps(result.to_json(), indent=2, default=float) + "\n")
