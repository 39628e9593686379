"""``edgecap label``: the rule-based findings labeler (CheXpert-proxy) from the command line. Only ``typer``
and the labeler are imported (no TensorFlow).

* ``edgecap label "No pneumothorax. Mild cardiomegaly."``: a table of the 14 labels with evidence;
* ``edgecap label --csv reports.csv --column findings [--out labels.csv]``: labels for many reports
  (CSV, or JSON lines with ``--json``; stdout when ``--out`` is not given). ``--column`` may name several
  columns joined by commas (``findings,impression``), whose texts are concatenated;
* ``edgecap label --validate indiana_reports.csv`` (or the IU data folder): agreement with the human
  MeSH annotations, per observation and macro F1.

Two vocabularies, each where it belongs. JSON (``--json``, and ``--csv --json``) says what every JSON of
edgecap says (the caption records, the HTTP API's "findings"): "positive", "negative", "uncertain", or null
(not mentioned), the evidence items' "label" too. The CSV of ``--csv`` keeps the CheXpert labeler's numeric
codes, which evaluation tools read: 1 positive, 0 negative, -1 uncertain, empty not mentioned.

Exit status (cli.common): 0 labelled; 1 the labeler could not run (its rule files) or found nothing to
validate against (no annotated report); 2 bad usage or unusable input: no input or several, a --csv or
--validate path that is missing or unreadable, an empty or missing --column. One error line on stderr, never
a traceback.
"""

from __future__ import annotations

import csv as _csv
import json
import sys
from pathlib import Path
from typing import Optional, TextIO

import typer

from edgecap.cli.common import EXIT_FAILED, EXIT_USAGE, fail
from edgecap.labeler import OBSERVATIONS, Labeler
from edgecap.runtime.report import LABEL_NAMES, findings_from_labels

_MEANING = {1: "positive", 0: "negative", -1: "uncertain", None: ""}
ID_COLUMNS = ("uid", "id", "study_id", "image_id")  # the first one present names each output row


def label(
    text: Optional[str] = typer.Argument(None, help="Report text to label ('-' reads it from stdin)."),
    csv: Optional[Path] = typer.Option(None, "--csv", help="CSV file of reports to label."),
    column: str = typer.Option("findings", "--column", help="Text column(s) of --csv, comma-separated."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write --csv labels here (default: stdout)."),
    validate: Optional[Path] = typer.Option(None, "--validate", help="Validate against IU X-Ray MeSH: "
                                                                     "indiana_reports.csv or the IU data folder."),
    json_out: bool = typer.Option(False, "--json", help="JSON output (JSON lines for --csv)."),
    min_support: int = typer.Option(30, "--min-support", help="--validate: macro F1 over observations with at least "
                                                              "this many positive reports."),
) -> None:
    """Label reports for the 14 CheXpert observations with the rule-based labeler (a CheXpert proxy).

    JSON says positive / negative / uncertain / null (not mentioned), as caption and the API do; the CSV of
    --csv keeps the CheXpert codes for evaluation tools: 1 positive, 0 negative, -1 uncertain, empty.
    Scores from this labeler are "rule-based labeler (CheXpert-proxy)" scores, not CheXpert F1.
    """
    given = [x for x in (text is not None, csv is not None, validate is not None) if x]
    if not given:
        fail("give a report TEXT, --csv FILE or --validate PATH (see --help)")
    if len(given) > 1:
        fail("give only one of TEXT, --csv and --validate")
    try:
        lab = Labeler.default()
    except (OSError, ValueError) as e:  # rule files missing or invalid
        fail(str(e), EXIT_FAILED)
    if validate is not None:
        _validate(lab, validate, min_support, json_out)
    elif csv is not None:
        n = _label_csv(lab, csv, column, out, json_out)
        if out:
            typer.echo(f"labelled {n} reports -> {out}", err=True)
    else:
        _label_text(lab, sys.stdin.read() if text == "-" else text or "", json_out)


def _fmt(v: Optional[int]) -> str:
    return "" if v is None else str(v)


def _label_text(lab: Labeler, text: str, json_out: bool) -> None:
    if json_out:
        typer.echo(json.dumps({"labels": findings_from_labels(lab.label(text)), "explain": _explain_words(lab, text)},
                              indent=2))
    else:
        typer.echo(_text_table(lab, text))


def _explain_words(lab: Labeler, text: str) -> dict[str, dict]:
    """Labeler.explain with each label, the observation's and its evidence items', in words (LABEL_NAMES)."""
    out = {}
    for o, e in lab.explain(text).items():
        evidence = [{**i, "label": LABEL_NAMES[i["label"]]} if "label" in i else i for i in e["evidence"]]
        out[o] = {**e, "label": LABEL_NAMES[e["label"]], "evidence": evidence}
    return out


def _text_table(lab: Labeler, text: str) -> str:
    """The 14 observations as a table: label, meaning and the evidence phrases (with their triggers)."""
    ex = lab.explain(text)
    rows = [("observation", "label", "meaning", "evidence (phrase <- trigger)")]
    for o in OBSERVATIONS:
        e = ex[o]
        if o == "No Finding":
            blockers = e["evidence"][0]["blocked_by"] if e["evidence"] else []
            ev = (
                ("blocked by: " + ", ".join(blockers))
                if blockers
                else ("no finding positive or uncertain" if e["label"] == 1 else "")
            )
        else:
            parts = []
            for item in e["evidence"]:
                trig = f" <- {item['trigger']}" if item.get("trigger") else ""
                parts.append(f"{item['phrase']}{trig} [{_fmt(item['label'])}]")
            ev = "; ".join(dict.fromkeys(parts))
        rows.append((o, _fmt(e["label"]), _MEANING[e["label"]], ev))
    w0 = max(len(r[0]) for r in rows)
    lines = [f"{r[0]:<{w0}}  {r[1]:>5}  {r[2]:<9}  {r[3]}".rstrip() for r in rows]
    lines.insert(1, "-" * min(100, max(len(x) for x in lines)))
    other = [i["phrase"] for i in ex["(other finding)"]["evidence"] if i["label"] in (1, -1)]
    if other:
        lines.append(f"other findings (rule out No Finding): {', '.join(dict.fromkeys(other))}")
    return "\n".join(lines)


def _validate(lab: Labeler, path: Path, min_support: int, json_out: bool) -> None:
    """Agreement with IU X-Ray's MeSH annotations, as a table or JSON."""
    from edgecap.labeler.validate import format_table
    from edgecap.labeler.validate import validate as run_validation

    try:
        result = run_validation(path, lab, min_support=min_support)
    except FileNotFoundError as e:
        fail(str(e).strip("'\""), EXIT_USAGE)
    except (ValueError, OSError, SyntaxError) as e:  # bad CSV columns, unreadable file, bad XML
        fail(f"cannot validate with {path}: {e}", EXIT_USAGE)
    if result["reports"] == 0:
        fail(f"no annotated reports found in {path}", EXIT_FAILED)
    typer.echo(json.dumps(result, indent=2) if json_out else format_table(result))


def _label_csv(lab: Labeler, path: Path, column: str, out: Optional[Path], json_out: bool) -> int:
    """Label each row's `column` text(s); one CSV row or JSON line per report to `out` (or stdout)."""
    if not path.is_file():
        fail(f"CSV file not found: {path}", EXIT_USAGE)
    cols = [c.strip() for c in column.split(",") if c.strip()]
    if not cols:
        fail("--column is empty", EXIT_USAGE)
    _csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        fh = open(path, newline="", encoding="utf-8-sig")
    except OSError as e:
        fail(f"cannot read {path}: {e}", EXIT_USAGE)
    with fh:
        reader = _csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in cols if c not in header]
        if missing:
            fail(
                f"column(s) {', '.join(missing)} not in {path.name}; available: {', '.join(header) or '(none)'}",
                EXIT_USAGE,
            )
        id_col = next((c for c in ID_COLUMNS if c in header), None)
        try:
            sink: TextIO = open(out, "w", newline="", encoding="utf-8") if out else sys.stdout
        except OSError as e:
            fail(f"cannot write {out}: {e}", EXIT_FAILED)
        try:
            return _write_labels(lab, reader, cols, id_col, sink, json_out)
        finally:
            if out:
                sink.close()


def _write_labels(
    lab: Labeler, reader: _csv.DictReader, cols: list[str], id_col: Optional[str], sink: TextIO, json_out: bool
) -> int:
    writer = None
    if not json_out:
        writer = _csv.writer(sink)
        writer.writerow([id_col or "row", *OBSERVATIONS])
    n = 0
    for i, row in enumerate(reader):
        text = " ".join((row.get(c) or "").strip() for c in cols).strip()
        labels = lab.label(text)
        rid = row.get(id_col) if id_col else str(i)
        if writer is None:
            sink.write(json.dumps({id_col or "row": rid, "labels": findings_from_labels(labels)}) + "\n")
        else:
            writer.writerow([rid, *(_fmt(labels[o]) for o in OBSERVATIONS)])
        n += 1
    return n
