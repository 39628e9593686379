"""``edgecap label``: the rule-based findings labeler (CheXpert-proxy) from the command line.

The lead registers :func:`label` as a Typer command; it only needs ``typer`` (no TensorFlow).

* ``edgecap label "No pneumothorax. Mild cardiomegaly."``: a table of the 14 labels with evidence;
* ``edgecap label --csv reports.csv --column findings [--out labels.csv]``: labels for many reports
  (CSV, or JSON lines with ``--json``; stdout when ``--out`` is not given). ``--column`` may name several
  columns joined by commas (``findings,impression``), whose texts are concatenated;
* ``edgecap label --validate indiana_reports.csv`` (or the IU data folder): agreement with the human
  MeSH annotations, per observation and macro F1.

Bad input (missing file, missing column, no input at all) prints a one-line error and exits with a
non-zero code (``typer.Exit``), without a traceback.
"""

from __future__ import annotations

import csv as _csv
import json
import sys
from pathlib import Path
from typing import Optional

import typer

from .labeler import OBSERVATIONS, Labeler

_MEANING = {1: "positive", 0: "negative", -1: "uncertain", None: ""}
EXIT_USAGE = 2
EXIT_INPUT = 1


def _fail(msg: str, code: int = EXIT_INPUT) -> "typer.Exit":
    typer.echo(f"error: {msg}", err=True)
    return typer.Exit(code)


def _fmt(v: Optional[int]) -> str:
    return "" if v is None else str(v)


def _text_table(lab: Labeler, text: str) -> str:
    ex = lab.explain(text)
    rows = [("observation", "label", "meaning", "evidence (phrase <- trigger)")]
    for o in OBSERVATIONS:
        e = ex[o]
        if o == "No Finding":
            blockers = e["evidence"][0]["blocked_by"] if e["evidence"] else []
            ev = ("blocked by: " + ", ".join(blockers)) if blockers else (
                "no finding positive or uncertain" if e["label"] == 1 else "")
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


def _label_csv(lab: Labeler, path: Path, column: str, out: Optional[Path], json_out: bool) -> int:
    if not path.is_file():
        raise _fail(f"CSV file not found: {path}")
    cols = [c.strip() for c in column.split(",") if c.strip()]
    if not cols:
        raise _fail("--column is empty", EXIT_USAGE)
    _csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        fh = open(path, newline="", encoding="utf-8-sig")
    except OSError as e:
        raise _fail(f"cannot read {path}: {e}")
    with fh:
        reader = _csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in cols if c not in header]
        if missing:
            raise _fail(f"column(s) {', '.join(missing)} not in {path.name}; available: {', '.join(header) or '(none)'}",
                        EXIT_USAGE)
        id_col = next((c for c in ("uid", "id", "study_id", "image_id") if c in header), None)
        try:
            sink = open(out, "w", newline="", encoding="utf-8") if out else sys.stdout
        except OSError as e:
            raise _fail(f"cannot write {out}: {e}")
        n = 0
        try:
            writer = None
            if not json_out:
                writer = _csv.writer(sink)
                writer.writerow([id_col or "row", *OBSERVATIONS])
            for i, row in enumerate(reader):
                text = " ".join((row.get(c) or "").strip() for c in cols).strip()
                labels = lab.label(text)
                rid = row.get(id_col) if id_col else str(i)
                if json_out:
                    sink.write(json.dumps({id_col or "row": rid, "labels": labels}) + "\n")
                else:
                    writer.writerow([rid, *(_fmt(labels[o]) for o in OBSERVATIONS)])
                n += 1
        finally:
            if out:
                sink.close()
    return n


def label(
    text: Optional[str] = typer.Argument(None, help="Report text to label ('-' reads it from stdin)."),
    csv: Optional[Path] = typer.Option(None, "--csv", help="CSV file of reports to label."),
    column: str = typer.Option("findings", "--column", help="Text column(s) of --csv, comma-separated."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write --csv labels here (default: stdout)."),
    validate: Optional[Path] = typer.Option(
        None, "--validate", help="Validate against IU X-Ray MeSH: indiana_reports.csv or the IU data folder."),
    json_out: bool = typer.Option(False, "--json", help="JSON output (JSON lines for --csv)."),
    min_support: int = typer.Option(30, "--min-support", help="--validate: macro F1 over observations "
                                                              "with at least this many positive reports."),
) -> None:
    """Label reports for the 14 CheXpert observations with the rule-based labeler (a CheXpert proxy).

    Labels: 1 positive, 0 negative, -1 uncertain, empty = not mentioned. Scores from this labeler are
    "rule-based labeler (CheXpert-proxy)" scores, not CheXpert F1.
    """
    given = [x for x in (text is not None, csv is not None, validate is not None) if x]
    if not given:
        raise _fail("give a report TEXT, --csv FILE or --validate PATH (see --help)", EXIT_USAGE)
    if len(given) > 1:
        raise _fail("give only one of TEXT, --csv and --validate", EXIT_USAGE)

    try:
        lab = Labeler.default()
    except (OSError, ValueError) as e:  # rule files missing or invalid
        raise _fail(str(e))

    if validate is not None:
        from .validate import format_table, validate as run_validation

        try:
            result = run_validation(validate, lab, min_support=min_support)
        except FileNotFoundError as e:
            raise _fail(str(e).strip("'\""))
        except (ValueError, OSError, SyntaxError) as e:  # bad CSV columns, unreadable file, bad XML
            raise _fail(f"cannot validate with {validate}: {e}")
        if result["reports"] == 0:
            raise _fail(f"no annotated reports found in {validate}")
        typer.echo(json.dumps(result, indent=2) if json_out else format_table(result))
        return

    if csv is not None:
        n = _label_csv(lab, csv, column, out, json_out)
        if out:
            typer.echo(f"labelled {n} reports -> {out}", err=True)
        return

    if text == "-":
        text = sys.stdin.read()
    if json_out:
        typer.echo(json.dumps({"labels": lab.label(text), "explain": lab.explain(text)}, indent=2))
    else:
        typer.echo(_text_table(lab, text))
