"""`edgecap evaluate --html FILE`: one self-contained HTML page (images inlined as base64 PNG, no scripts,
no external resources) with the metric tables for the model and both baselines, the training curves, and a
card per study: the image with the attention overlay, generated vs reference text, and the findings labels
side by side with disagreements highlighted."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import cv2
import numpy as np

from edgecap.labeler import OBSERVATIONS, Labeler
from edgecap.runtime.text import render_report, tokenize
from edgecap.training.visualize import attention_map, overlay

LABEL_TEXT = {1: "positive", 0: "negative", -1: "uncertain", None: "—"}
CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#1b1f24;max-width:1200px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccd}
table{border-collapse:collapse;margin:8px 0;font-size:.9em}
th,td{border:1px solid #ccd;padding:4px 8px;text-align:right}th:first-child,td:first-child{text-align:left}
th{background:#eef1f6}.note{color:#555;font-size:.9em}
.card{display:flex;gap:16px;border:1px solid #ccd;border-radius:6px;padding:12px;margin:12px 0}
.card img{width:260px;height:auto;border-radius:4px}.texts{flex:1}
.texts p{margin:4px 0 10px}.diff{background:#ffe1e1;font-weight:600}.same{color:#3a6}
.warn{background:#fff4d6;border:1px solid #e6c35c;padding:8px;border-radius:4px}
"""


def _png_b64(rgb01: np.ndarray, max_side: int = 520) -> str:
    img = (np.clip(rgb01, 0, 1) * 255).astype(np.uint8)
    h, w = img.shape[:2]
    if max(h, w) > max_side:
        s = max_side / max(h, w)
        img = cv2.resize(img, (int(w * s), int(h * s)), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".png", img[:, :, ::-1])
    return base64.b64encode(buf.tobytes()).decode()


def _table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def write_html(result, outputs, refs: dict[str, str], cfg, run_dir: Path, path: Path, max_cards: int = 50) -> None:
    """result: training.evaluate_run.EvalResult; outputs: training.generate.Generated per study."""
    labeler = Labeler.default()
    systems = result.systems
    nlg_keys = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider")
    nlg = _table(
        ["system", *nlg_keys],
        [[n, *[f"{s['metrics'][k]:.3f}" if k in s["metrics"] else "-" for k in nlg_keys]] for n, s in systems.items()],
    )
    clin = _table(
        ["system", "micro P", "micro R", "micro F1", "macro P", "macro R", "macro F1"],
        [
            [n, *[f"{s['clinical'][a][k]:.3f}" for a in ("micro", "macro") for k in ("precision", "recall", "f1")]]
            for n, s in systems.items()
        ],
    )
    support = {o: systems["model"]["clinical"]["per_observation"][o]["support"] for o in OBSERVATIONS}
    per_obs = _table(
        ["observation", "support", *[f"{n} F1" for n in systems]],
        [
            [
                o,
                str(support[o]),
                *[
                    f"{s['clinical']['per_observation'][o]['f1']:.3f}" if support[o] else "n/a"
                    for s in systems.values()
                ],
            ]
            for o in OBSERVATIONS
        ],
    )
    div = _table(
        ["system", "distinct-1", "distinct-2", "distinct reports", "most common report share"],
        [
            [
                n,
                f"{s['diversity']['distinct_1']:.3f}",
                f"{s['diversity']['distinct_2']:.3f}",
                f"{s['diversity']['distinct_reports']:.3f}",
                f"{s['diversity']['most_common_share']:.3f}",
            ]
            for n, s in systems.items()
        ],
    )
    curves = Path(run_dir) / "curves.png"
    curves_html = (
        f'<img alt="training curves" style="max-width:100%" src="data:image/png;base64,'
        f'{base64.b64encode(curves.read_bytes()).decode()}">'
        if curves.is_file()
        else '<p class="note">no curves.png in the run directory</p>'
    )
    cards = []
    for out in outputs[:max_cards]:
        view = 0 if out.views[0] else 1
        img = _png_b64(overlay(out.views[view], attention_map(out.decoded.attention, view, cfg.grid)))
        ref_l, gen_l = labeler.label(refs[out.uid]), labeler.label(out.text)
        rows = "".join(
            f'<tr class="{"diff" if ref_l[o] != gen_l[o] else "same"}"><td>{o}</td><td>{LABEL_TEXT[gen_l[o]]}</td>'
            f"<td>{LABEL_TEXT[ref_l[o]]}</td></tr>"
            for o in OBSERVATIONS
            if ref_l[o] is not None or gen_l[o] is not None
        )
        cards.append(
            f'<div class="card" data-uid="{html.escape(out.uid)}">'
            f'<img alt="study {html.escape(out.uid)} with attention" '
            f'src="data:image/png;base64,{img}"><div class="texts"><b>Study {html.escape(out.uid)}</b>'
            f'<p class="generated"><b>Generated:</b> {html.escape(render_report(tokenize(out.text)))}</p>'
            f'<p class="reference"><b>Reference:</b> {html.escape(render_report(tokenize(refs[out.uid])))}</p>'
            f'<table class="labels"><thead><tr><th>observation</th><th>generated</th><th>reference</th></tr></thead>'
            f"<tbody>{rows}</tbody></table></div></div>"
        )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in result.notes)
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">\
<title>edgecap evaluation: {html.escape(str(run_dir))}</title>
<style>{CSS}</style></head><body>
<h1>edgecap evaluation</h1>
<p>Run <code>{html.escape(str(run_dir))}</code>, split <b>{html.escape(result.split)}</b>, {result.n_studies} studies.
Metrics: pycocoevalcap ({html.escape(systems["model"]["metrics"].get("pipeline", ""))}); clinical efficacy from the
rule-based findings labeler (a CheXpert-labeler proxy, positive vs rest).</p>
<p class="warn">Not validated for clinical use. On IU X-Ray a near-constant report scores close to published BLEU: \
a model is
only worth something where it beats both baselines, on the clinical measure and on diversity too.</p>
<h2>Report quality (NLG)</h2>{nlg}
<h2>Clinical efficacy</h2>{clin}<h3>Per observation (F1)</h3>{per_obs}
<h2>Diversity</h2>{div}
<h2>Training curves</h2>{curves_html}
<h2>Studies</h2>{"".join(cards)}
<h2>Notes</h2><ul>{notes}</ul>
</body></html>"""
    Path(path).write_text(page, encoding="utf-8")
