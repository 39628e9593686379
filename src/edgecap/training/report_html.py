"""`edgecap evaluate --html FILE`: self-contained HTML pages (images inlined as base64 JPEG, no scripts, no
external resources) with the metric tables for the model and both baselines, the training curves, and a card
per study: the image with the attention overlay, generated vs reference text, and the findings labels side by
side with disagreements highlighted.

Every study gets a card, CARDS_PER_PAGE to a page: FILE holds the tables and the first cards, FILE.p2.html,
FILE.p3.html, ... the rest, each page linked to the others. Sized for the full test split: the overlay is a
JPEG of THUMB_SIDE px (its displayed width is 260 px), about 25-40 KB a card, where a 520 px PNG was ~330 KB
(3.0 MB for 9 studies: ~200 MB for the 590 of the R2Gen test split in one page). A page of rehearsal data
(data.rehearsal) says so at its top.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import cv2
import numpy as np

from edgecap.labeler import OBSERVATIONS, Labeler
from edgecap.runtime.preprocess import read_image, to_gray
from edgecap.runtime.text import render_report, tokenize
from edgecap.training.visualize import attention_map

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


CARDS_PER_PAGE = 50
THUMB_SIDE = 390  # px: 1.5x the displayed 260 px
JPEG_QUALITY = 80


def _thumbnail_b64(image_path: Path, att: np.ndarray, max_side: int = THUMB_SIDE) -> str:
    """The X-ray with its (g, g) attention overlaid as visualize.overlay draws it, but at thumbnail size (the
    longer side at most max_side px: overlaying at full size cost ~1 s a study, 10 minutes for 590), as a
    base64 JPEG."""
    gray = to_gray(read_image(image_path)).astype(np.float32)
    h, w = gray.shape
    if max(h, w) > max_side:
        s = max_side / max(h, w)
        gray = cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    heat = cv2.resize(att.astype(np.float32), gray.shape[::-1], interpolation=cv2.INTER_CUBIC).clip(0, 1)
    color = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET).astype(np.float32)  # BGR
    bgr = np.clip(0.6 * 255.0 * gray[:, :, None] + 0.4 * color, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return base64.b64encode(buf.tobytes()).decode()


def page_paths(path: Path, n_cards: int, per_page: int = CARDS_PER_PAGE) -> list[Path]:
    """FILE for the first page, then FILE.p2.html, FILE.p3.html, ...: one per `per_page` cards (at least one)."""
    pages = max(1, -(-n_cards // per_page))
    return [path] + [path.with_name(f"{path.name}.p{k}.html") for k in range(2, pages + 1)]


def _table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def write_html(
    result, outputs, refs: dict[str, str], cfg, run_dir: Path, path: Path, per_page: int = CARDS_PER_PAGE
) -> list[Path]:
    """result: training.evaluate_run.EvalResult; outputs: training.generate.Generated per study. Writes one
    card per output, `per_page` to a page (page_paths); returns the pages written."""
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
    pages = page_paths(Path(path), len(outputs), per_page)
    nav = _nav(pages, len(outputs), per_page)
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in result.notes)
    rehearsal = getattr(result, "rehearsal", None)
    banner = (
        f'<p class="warn rehearsal"><b>{html.escape(rehearsal)}</b>: the images do not match the reports.</p>'
        if rehearsal
        else ""
    )
    head = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">\
<title>edgecap evaluation: {html.escape(str(run_dir))}</title>
<style>{CSS}</style></head><body>
<h1>edgecap evaluation</h1>
{banner}\
<p>Run <code>{html.escape(str(run_dir))}</code>, split <b>{html.escape(result.split)}</b>, {result.n_studies} studies.
Metrics: pycocoevalcap ({html.escape(systems["model"]["metrics"].get("pipeline", ""))}); clinical efficacy from the
rule-based findings labeler (a CheXpert-labeler proxy, positive vs rest).</p>
<p class="warn">Not validated for clinical use. On IU X-Ray a near-constant report scores close to published BLEU: \
a model is
only worth something where it beats both baselines, on the clinical measure and on diversity too.</p>
"""
    summary = f"""<h2>Report quality (NLG)</h2>{nlg}
<h2>Clinical efficacy</h2>{clin}<h3>Per observation (F1)</h3>{per_obs}
<h2>Diversity</h2>{div}
<h2>Training curves</h2>{curves_html}
"""
    for k, page in enumerate(pages):
        chunk = outputs[k * per_page : (k + 1) * per_page]
        cards = "".join(_card(out, refs, labeler, cfg) for out in chunk)
        body = (summary if k == 0 else "") + f"<h2>Studies</h2>{nav[k]}{cards}{nav[k]}"
        tail = f"<h2>Notes</h2><ul>{notes}</ul>" if k == 0 else ""
        page.write_text(f"{head}{body}{tail}\n</body></html>", encoding="utf-8")
    return pages


def _card(out, refs: dict[str, str], labeler, cfg) -> str:
    """One study: the attention overlay (JPEG thumbnail), generated vs reference, findings labels."""
    view = 0 if out.views[0] else 1
    img = _thumbnail_b64(out.views[view], attention_map(out.decoded.attention, view, cfg.grid))
    ref_l, gen_l = labeler.label(refs[out.uid]), labeler.label(out.text)
    rows = "".join(
        f'<tr class="{"diff" if ref_l[o] != gen_l[o] else "same"}"><td>{o}</td><td>{LABEL_TEXT[gen_l[o]]}</td>'
        f"<td>{LABEL_TEXT[ref_l[o]]}</td></tr>"
        for o in OBSERVATIONS
        if ref_l[o] is not None or gen_l[o] is not None
    )
    uid = html.escape(out.uid)
    return (
        f'<div class="card" data-uid="{uid}">'
        f'<img alt="study {uid} with attention" loading="lazy" '
        f'src="data:image/jpeg;base64,{img}"><div class="texts"><b>Study {uid}</b>'
        f'<p class="generated"><b>Generated:</b> {html.escape(render_report(tokenize(out.text)))}</p>'
        f'<p class="reference"><b>Reference:</b> {html.escape(render_report(tokenize(refs[out.uid])))}</p>'
        f'<table class="labels"><thead><tr><th>observation</th><th>generated</th><th>reference</th></tr></thead>'
        f"<tbody>{rows}</tbody></table></div></div>"
    )


def _nav(pages: list[Path], n: int, per_page: int) -> list[str]:
    """Per page: a line of links to every page (sibling files, relative), empty when there is one page."""
    if len(pages) < 2:
        return [""] * len(pages)
    out = []
    for k in range(len(pages)):
        links = [
            f"<b>{j * per_page + 1}-{min(n, (j + 1) * per_page)}</b>"
            if j == k
            else f'<a href="{html.escape(p.name)}">{j * per_page + 1}-{min(n, (j + 1) * per_page)}</a>'
            for j, p in enumerate(pages)
        ]
        out.append(f'<p class="pages">studies {n}, {per_page} a page: {" | ".join(links)}</p>')
    return out
