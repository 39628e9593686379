"""Clinical efficacy: findings labels of generated reports against those of the reference reports.

Labels come from edgecap's rule-based labeler (a CheXpert-labeler *proxy*, validated against IU X-Ray's
MeSH annotations: `edgecap label --validate`). R2Gen convention: an observation counts as predicted when
its label is positive (1); negative, uncertain and not mentioned are "the rest". Micro figures pool every
(study, observation) pair; macro figures average the per-observation figures over observations that are
positive in at least one reference (others have undefined recall).
"""

from __future__ import annotations

from edgecap.labeler import OBSERVATIONS, POSITIVE, Labeler


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def clinical_scores(references: dict[str, str], hypotheses: dict[str, str], labeler: Labeler | None = None) -> dict:
    """-> {"micro": {precision, recall, f1}, "macro": {...}, "per_observation": {obs: {..., support}},
    "labeler": name}. Texts may be cleaned ("the heart is normal .") or plain."""
    labeler = labeler or Labeler.default()
    counts = {o: [0, 0, 0, 0] for o in OBSERVATIONS}  # tp, fp, fn, support
    for uid, ref in references.items():
        r, h = labeler.label(ref), labeler.label(hypotheses[uid])
        for o in OBSERVATIONS:
            rp, hp = r[o] == POSITIVE, h[o] == POSITIVE
            c = counts[o]
            c[0] += rp and hp
            c[1] += hp and not rp
            c[2] += rp and not hp
            c[3] += rp
    per = {o: {**_prf(*c[:3]), "support": c[3]} for o, c in counts.items()}
    tp, fp, fn = (sum(c[i] for c in counts.values()) for i in range(3))
    present = [o for o in OBSERVATIONS if counts[o][3] > 0]
    macro = {
        k: sum(per[o][k] for o in present) / len(present) if present else 0.0 for k in ("precision", "recall", "f1")
    }
    return {
        "micro": _prf(tp, fp, fn),
        "macro": macro,
        "per_observation": per,
        "macro_over": present,
        "labeler": "edgecap rule-based labeler (CheXpert-proxy, positive vs rest)",
    }
