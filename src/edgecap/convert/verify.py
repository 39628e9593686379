"""A converted bundle against the Keras model it came from, stage by stage, on real images.

    encoder        relative error ||bundle - keras|| / ||keras|| of each view's (P, D) feature map, the largest
                   over the verification images (and the max abs error, for information)
    decoder step   max |logits error| and top-1 agreement over decoder inputs recorded while Keras decodes
                   those studies (so the step is tested on the states real decoding visits)
    reports        share of studies whose report matches Keras's, greedy and beam 3, both through the SAME
                   loop (runtime.decoding) and view fusion (runtime.study.fuse_views). Strictly
                   token-identical reports are counted apart from near ties: different reports that are not
                   the converted model's preference (tie_gap below the mode's tie_margin, convert.modes).
    decoder only   the same reports with the bundle's decoder on Keras's encoder features (separates the
                   decoder's drift from the encoder's; informative, no threshold)

The bundle is loaded with runtime.bundle.Bundle (sha256 checks, LiteRT), exactly as a device loads it. Both
decoder kinds (recurrent steps, sequence-input decoders) are verified by the same measures and thresholds.
Thresholds come from the mode table (convert.modes); this module only measures and compares.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgecap.convert.calibration import record_decoding, row_logits
from edgecap.convert.modes import Thresholds
from edgecap.convert.sources import ImageStudy
from edgecap.progress import counted
from edgecap.runtime.bundle import Bundle
from edgecap.runtime.captioner import ReportModel
from edgecap.runtime.decoding import SpecialIds, decode, log_softmax, stepper
from edgecap.runtime.study import encode_views, fuse_views, prepare_views

BEAMS = (1, 3)
MAX_STEP_ROWS = 600  # recorded decoder rows re-run through the bundle for the step error


def beam_key(b: int) -> str:
    return "greedy" if b == 1 else f"beam{b}"


def tie_gap(
    reference, bundle, keras_input, bundle_input, special: SpecialIds, ref_ids: list[int], got_ids: list[int], beam: int
) -> float:
    """How much a different report is the conversion's fault, in nats (<= the mode's tie_margin: a near tie).

    Greedy decides token by token: at the first position where the reports differ (their common prefix
    teacher-forced through Keras), Keras's log-probability of its own token minus that of the bundle's
    token. A small value means Keras itself nearly chose the bundle's token.
    Beam search decides between whole reports: the bundle's log-probability of its own report minus that
    of Keras's report, both through the bundle (its encoder features, its decoder). A value <= 0 means the
    bundle's model ranks Keras's report at least as high; the reports differ because pruning took another
    path, not because the converted model prefers another report.
    """
    ref_seq, got_seq = ref_ids + [special.eos], got_ids + [special.eos]
    if beam == 1:
        t = next(i for i, (a, b) in enumerate(zip(ref_seq, got_seq)) if a != b)
        features, mask = keras_input
        logp = _teacher_forced(reference, features, mask, special, ref_seq[: t + 1])[t]
        return float(logp[ref_seq[t]] - logp[got_seq[t]])

    def score(seq):
        logp = _teacher_forced(bundle, bundle_input[0], bundle_input[1], special, seq)
        return float(sum(logp[i, tok] for i, tok in enumerate(seq)))

    return score(got_seq) - score(ref_seq)


def _teacher_forced(reference, features, mask, special: SpecialIds, seq: list[int]) -> np.ndarray:
    """Log-probabilities (len(seq), V) of a decoder of either kind at every position of seq, fed <bos> + seq[:-1]."""
    run = stepper(reference)
    state = run.start()
    out = []
    for tok in [special.bos] + seq[:-1]:
        logits, state, _ = run.advance(np.array([tok], np.int32), state, features, mask)
        out.append(log_softmax(np.asarray(logits[0], np.float64)))
    return np.stack(out)


def verify(
    bundle: Bundle,
    reference: ReportModel,
    studies: list[ImageStudy],
    thresholds: Thresholds,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict:
    """-> the manifest's "verification" object (see module docstring); result["passed"] says it all.
    `log`: progress (edgecap.progress counts: studies encoded, Keras reports, bundle reports per decode)."""
    views_n = bundle.max_views
    enc_err = enc_ref = enc_rel = 0.0
    fused_k, fused_b, images = [], [], 0
    for st in counted(log, studies, "verifying: studies encoded by both models"):
        prepared = prepare_views(bundle, st.views)  # the device's preprocessing, once for both models
        views_k, views_b = encode_views(reference.encode, prepared), encode_views(bundle.encode, prepared)
        for fk, fb in zip(views_k, views_b):  # (P, D) each, or None for a missing view
            if fk is None or fb is None:
                continue
            enc_err = max(enc_err, float(np.abs(fk - fb).max()))
            enc_ref = max(enc_ref, float(np.abs(fk).max()))
            enc_rel = max(enc_rel, float(np.linalg.norm(fb - fk) / np.maximum(np.linalg.norm(fk), 1e-12)))
            images += 1
        fused_k.append(fuse_views(views_k, views_n))
        fused_b.append(fuse_views(views_b, views_n))

    steps, ref_ids = record_decoding(
        reference, fused_k, bundle.special, bundle.max_len, BEAMS, log=log, what="verifying: Keras reports"
    )
    rows = steps.subset(MAX_STEP_ROWS, seed)
    step_err = step_ref = 0.0
    top1 = 0
    for i in range(len(rows)):
        logits = row_logits(bundle, rows.row(i))
        step_err = max(step_err, float(np.abs(logits - rows.logits[i]).max()))
        step_ref = max(step_ref, float(np.abs(rows.logits[i]).max()))
        top1 += int(np.argmax(logits) == np.argmax(rows.logits[i]))

    t = thresholds
    n = len(studies)
    reports, decoder_only, differences = {}, {}, []
    for b in BEAMS:
        same = ties = same_dec = 0
        decoded = zip(studies, fused_b, fused_k, ref_ids)
        for st, (fb, mb), (fk, mk), ids in counted(log, decoded, f"verifying: bundle reports, {beam_key(b)}", n):
            got = decode(bundle, fb, mb, bundle.special, bundle.max_len, beam=b).ids
            same_dec += decode(bundle, fk, mk, bundle.special, bundle.max_len, beam=b).ids == ids[b]
            if got == ids[b]:
                same += 1
                continue
            gap = tie_gap(reference, bundle, (fk, mk), (fb, mb), bundle.special, ids[b], got, b)
            tie = gap < t.tie_margin
            ties += tie
            differences.append(
                {
                    "uid": st.uid,
                    "decode": beam_key(b),
                    "tie_gap": round(gap, 4),
                    "near_tie": tie,
                    "keras": bundle.vocab.render(ids[b]),
                    "bundle": bundle.vocab.render(got),
                }
            )
        reports[beam_key(b)] = {
            "identical": same,
            "near_ties": ties,
            "total": n,
            "identical_share": same / n if n else 0.0,
            "share": (same + ties) / n if n else 0.0,
        }
        decoder_only[beam_key(b)] = same_dec / n if n else 0.0

    step_rel = step_err / max(step_ref, 1e-12)
    checks = {
        "encoder": enc_rel <= t.max_feature_error,
        "decoder_step": step_rel <= t.max_logit_error,
        **{f"reports_{k}": v["share"] >= t.min_identical for k, v in reports.items()},
    }
    return {
        "studies": n,
        "images": images,
        "uids": [s.uid for s in studies],
        "thresholds": t.to_dict(),
        "encoder": {"max_abs_error": enc_err, "max_abs_reference": enc_ref, "relative_error": enc_rel},
        "decoder_step": {
            "rows": len(rows),
            "max_abs_error": step_err,
            "max_abs_reference": step_ref,
            "relative_error": step_rel,
            "top1_agreement": top1 / max(len(rows), 1),
        },
        "reports": reports,
        "decoder_only_identical": decoder_only,
        "differences": differences,
        "checks": checks,
        "passed": all(checks.values()),
    }


def table(v: dict) -> list[list[str]]:
    """The verification object as printable rows (header first)."""
    t, ok = v["thresholds"], v["checks"]
    e, s = v["encoder"], v["decoder_step"]
    rows = [
        ["stage", "measure", "value", "threshold", "status"],
        [
            "encoder",
            f"feature map ||error|| / ||keras||, worst of {v['images']} images",
            f"{e['relative_error']:.2g}",
            f"<= {t['max_feature_error']:g}",
            _status(ok["encoder"]),
        ],
        [
            "encoder",
            "max abs feature error",
            f"{e['max_abs_error']:.3g} (max |keras| {e['max_abs_reference']:.3g})",
            "",
            "info",
        ],
        [
            "decoder step",
            f"max abs logit error, {s['rows']} real steps",
            f"{s['max_abs_error']:.3g} / {s['max_abs_reference']:.3g} = {s['relative_error']:.2g}",
            f"<= {t['max_logit_error']:g}",
            _status(ok["decoder_step"]),
        ],
        ["decoder step", "top-1 agreement", f"{s['top1_agreement']:.1%}", "", "info"],
    ]
    for k, r in v["reports"].items():
        tie = f" + {r['near_ties']} near tie" if r["near_ties"] else ""
        rows.append(
            [
                f"reports {k}",
                f"token-identical to Keras, {r['total']} studies",
                f"{r['identical']}{tie} = {r['share']:.0%}",
                f">= {t['min_identical']:.0%}" + (f", ties < {t['tie_margin']:g} nats" if t["tie_margin"] else ""),
                _status(ok[f"reports_{k}"]),
            ]
        )
    for k, share in v["decoder_only_identical"].items():
        rows.append([f"reports {k}", "decoder only, on Keras features", f"{share:.0%}", "", "info"])
    return rows


def _status(ok: bool) -> str:
    return "ok" if ok else "FAILED"
