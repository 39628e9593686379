"""`edgecap evaluate`: a Keras run's reports on one split of a data folder, scored against the references
and against two baselines that the field's numbers must beat (docs/conventions.md): the most common training report,
and nearest-neighbour retrieval (the training study whose pooled encoder features are closest by cosine
gives its report). Reports come from training.generate (the runtime's preprocessing and decode loop).

All three go through the same metrics: BLEU-1..4, METEOR, ROUGE-L, CIDEr (pycocoevalcap with the PTB
tokenizer), clinical efficacy (evaluation.clinical: findings labels vs the reference's), and diversity
(distinct-1/2, share of distinct reports).

Retrieval never returns the evaluated study itself (leave-one-out: a split that holds training studies,
"train" or "all", would otherwise score the baseline 1.000 on them); where a study's own report is all the bank
has, the baseline is left out, with a warning. A split of the run that has no study to score fails with the
count of studies each split has and the split to use instead (split_counts, suggest_split): a run trained on
the bundled sample has no test split.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecap.config import Config
from edgecap.data import iu_xray, rehearsal, splits
from edgecap.evaluation.clinical import clinical_scores
from edgecap.evaluation.diversity import diversity
from edgecap.evaluation.nlg import NLGScorer
from edgecap.progress import counted
from edgecap.runtime.text import clean_report
from edgecap.runtime.vocab import Vocabulary
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
    warnings: list[str] = field(default_factory=list)  # what makes a figure mean less than it seems
    rehearsal: str | None = None  # data.rehearsal.NOTICE when the data (or the run) is rehearsal data

    def to_json(self) -> dict:
        return {
            "split": self.split,
            "n_studies": self.n_studies,
            "systems": self.systems,
            "examples": self.examples,
            "notes": self.notes,
            "warnings": self.warnings,
            "rehearsal": self.rehearsal,
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
    rd = RunDir.of(run)
    if not rd.exists():
        raise FileNotFoundError(f"{rd.root}: not a run directory (config.json / vocab.json missing)")
    cfg, vocab = rd.load_config(), rd.load_vocab()
    log(f"reading the studies of {data}")
    ds, split_info = load_with_run_split(rd, data)
    notes = [f"split from the run: {split_info['source']}"]
    candidates = make_examples(splits.studies_in(ds, split), vocab, cfg)
    examples, bad = readable(candidates, cfg.image.size)
    notes += [f"skipped unreadable image: {b}" for b in bad]
    if not examples:
        counts = split_counts(ds, vocab, cfg)
        raise EvaluateError(
            f"no study of the {split!r} split has a report and a readable image in {data}; "
            + describe_counts(counts, tried=split)
        )
    warnings = _training_overlap(examples, ds, split)
    notice = rehearsal.notice_of(data) or rehearsal.notice_of(rd.root)
    if notice:
        warnings.insert(0, f"{notice} (the images do not match the reports: no score here is a quality figure)")
    log(f"loading TensorFlow and the Keras model of {rd.root}")
    from edgecap.training.generate import ReportGenerator  # TensorFlow: only once there is something to score

    cfg, vocab, model = load_model(rd)
    gen = ReportGenerator(cfg, vocab, model)
    log(f"generating {len(examples)} reports (beam {beam})")
    outputs = [gen(ex.uid, ex.views, beam=beam) for ex in counted(log, examples, "generating reports")]

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
        log(f"nearest-neighbour baseline: encoding {len(train_img)} training studies")
        for ex in counted(log, train_img, "nearest-neighbour baseline: studies encoded"):
            f, m = gen.encode(ex.views)
            pooled.append((f * m[:, None]).sum(0) / max(m.sum(), 1.0))
        nearest = nearest_neighbours(np.stack(pooled), [ex.uid for ex in train_img], outputs)
        if nearest is None:
            warnings.append(
                "nearest-neighbour baseline not applicable: for some evaluated study the retrieval bank holds no "
                "training study but itself (leave-one-out)"
            )
        else:
            nn_reports = {uid: train_img[i].text for uid, i in nearest.items()}
            notes.append(
                f"nearest-neighbour bank: {len(train_img)} training studies with images, each evaluated study "
                "left out of its own bank"
            )
    else:
        notes.append("nearest-neighbour baseline skipped: no training study with images in this data folder")

    refs = {ex.uid: ex.text for ex in examples}
    systems_h = {"model": {o.uid: o.text for o in outputs}, "most-common": {u: most_common for u in refs}}
    if nn_reports:
        systems_h["nearest-neighbour"] = nn_reports
    systems = {}
    with NLGScorer(meteor=meteor) as scorer:  # one METEOR JVM for every system (its start costs 7-14 s)
        for name, hyps in systems_h.items():
            log(f"scoring {name}: BLEU, {'METEOR, ' if meteor else ''}ROUGE-L, CIDEr, clinical efficacy, diversity")
            systems[name] = {
                "metrics": scorer.score(refs, hyps),
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

        log(f"drawing the attention grid: {grid_png}")
        attention_grid(outputs, refs, vocab, cfg, grid_png)
    result = EvalResult(split, len(examples), systems, per_study, notes, warnings, notice)
    if html is not None:
        from edgecap.training.report_html import write_html

        log(f"writing the HTML report: {html}")
        write_html(result, outputs, refs, cfg, rd.root, html)
    return result


def nearest_neighbours(bank: np.ndarray, bank_uids: list[str], outputs: list) -> dict[str, int] | None:
    """Leave-one-out retrieval: bank (N, D) pooled features of training studies `bank_uids`; each output (its
    .uid, .pooled (D,)) -> the row of the most cosine-similar bank study other than itself. None when some
    output has no other study in the bank (the baseline cannot be computed for it)."""
    bank = bank / (np.linalg.norm(bank, axis=1, keepdims=True) + 1e-8)
    uids = np.asarray(bank_uids, dtype=object)
    nearest = {}
    for out in outputs:
        sims = bank @ (out.pooled / (np.linalg.norm(out.pooled) + 1e-8))
        sims[uids == out.uid] = -np.inf  # never the study itself
        if not np.isfinite(sims).any():
            return None
        nearest[out.uid] = int(np.argmax(sims))
    return nearest


def load_with_run_split(rd: RunDir, data: str | Path) -> tuple[iu_xray.Dataset, dict]:
    """The data folder, each study given the split the run recorded for it (None: the run never saw it)."""
    ds = iu_xray.load(data)
    split_info = rd.load_split()
    for s in ds.studies:
        s.split = split_info["splits"].get(s.uid)
    return ds, split_info


def split_counts(ds: iu_xray.Dataset, vocab: Vocabulary, cfg: Config) -> dict[str, int]:
    """Studies that evaluate can score (a report in cfg's section and an image on disk), per split: train,
    val, test and all."""
    return {name: len(make_examples(splits.studies_in(ds, name), vocab, cfg)) for name in (*splits.SPLITS, "all")}


def suggest_split(counts: dict[str, int], tried: str | None = None) -> str | None:
    """The split to evaluate: test, else val (held out), else all (then training studies), other than
    `tried`; None: nothing to evaluate."""
    return next((name for name in ("test", "val", "all") if counts[name] and name != tried), None)


def describe_counts(counts: dict[str, int], tried: str | None = None) -> str:
    """One line: the scorable studies per split and the --split to use instead of `tried`."""
    have = ", ".join(f"{name} {counts[name]}" for name in splits.SPLITS)
    line = f"studies with a report and an image per split of this run: {have}"
    best = suggest_split(counts, tried)
    if best is None:
        return line + " (none in this data folder: is it the data the run was trained on?)"
    line += f"; use --split {best} ({counts[best]} studies"
    if best == "all" and counts["train"]:
        some = "all" if counts["train"] == counts["all"] else str(counts["train"])
        line += f", {some} of them training studies: the scores measure fit, not generalisation"
    return line + ")"


def _training_overlap(examples: list, ds: iu_xray.Dataset, split: str) -> list[str]:
    """A warning when evaluated studies are training studies of the run (split train or all)."""
    split_of = {s.uid: s.split for s in ds.studies}
    n = sum(split_of.get(ex.uid) == "train" for ex in examples)
    if not n:
        return []
    return [
        f"{n} of the {len(examples)} studies of the {split!r} split are training studies: the model learnt their "
        "reports, so its scores measure fit, not generalisation (retrieval leaves each study out of its bank)"
    ]


def save_json(result: EvalResult, path: Path) -> None:
    Path(path).write_text(json.dumps(result.to_json(), indent=2, default=float) + "\n")
