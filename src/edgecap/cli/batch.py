"""`edgecap caption` over many inputs: each result written (and flushed) as soon as it exists, re-runs resume.

Front-end plumbing of the caption command (globs, output files, resume keys, exit status) around the device
runtime's Captioner; TensorFlow-free like the runtime, which imports nothing from here.

    paths, unmatched = expand_inputs(["scans/", "more/*.dcm", "one.png"])
    with open_sink(Path("out.jsonl"), "json") as sink:      # existing records are read first
        summary = run_batch(captioner, paths, sink)
    sys.exit(summary.exit_code())

Inputs: a file is taken as given; a folder is searched recursively and a glob is expanded (`**` too), both
keeping image files only (a suffix of runtime.formats, or no suffix and the DICOM "DICM" mark; hidden files
are left out).

Output formats (one record per input, in input order):
    json   JSON Lines: {"key", "input", "status": "ok", ...Report.to_dict()} or
           {"key", "input", "status": "error", "error": message}
    csv    one row per input: key, input, lateral, status, flagged, warnings (codes), text, error, total_ms,
           decoder_steps, then one column per labeler observation (positive / negative / uncertain / empty)
    text   blocks for people: "== input [status] key=...", the text (flagged reports say so first),
           findings, warnings; a blank line ends each block

Resume: a record's key is the input's resolved path, size and modification time (nanoseconds), so an edited
or replaced file is captioned again and a moved file is not confused with another. Opening an existing
output reads its keys (the last record of a key wins) and cuts a partial last record left by a crash.
Inputs whose key already has a record are skipped; errors too, unless `retry_errors` (a fixed file gets a
new mtime, so it is retried anyway). One writer per output file.

Exit status (BatchSummary.exit_code, codes of cli.common), counted over every input of the run, resumed
ones included:
    0  EXIT_OK       every input captioned and every one looks like a chest X-ray
    1  EXIT_FAILED   some input failed (unreadable, corrupt, unsupported, missing, or a glob / folder matched
                     nothing)
    3  EXIT_FLAGGED  all inputs captioned, but some did not look like a chest X-ray (report flagged)
    2  EXIT_USAGE    is left to the caller for bad usage and bundle errors (nothing was captioned)
A failure outranks a flag: an incomplete output matters more than a warned one.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, TextIO

from edgecap.cli.common import EXIT_FAILED, EXIT_FLAGGED, EXIT_OK
from edgecap.labeler import OBSERVATIONS
from edgecap.runtime.decoding import DEFAULT_BEAM
from edgecap.runtime.formats import DICOM_HEAD, has_dicom_magic, is_image_name
from edgecap.runtime.report import ATTENTION_DECIMALS, Report
from edgecap.runtime.sanity import NOT_CXR_CODES

FORMATS = ("text", "json", "csv")
CSV_COLUMNS = (
    "key",
    "input",
    "lateral",
    "status",
    "flagged",
    "warnings",
    "text",
    "error",
    "total_ms",
    "decoder_steps",
) + OBSERVATIONS


class BatchError(ValueError):
    """An output that cannot be used (unwritable, or written by another format / column set)."""


# ---- inputs ---------------------------------------------------------------------------------------
def expand_inputs(specs: list[str]) -> tuple[list[Path], list[str]]:
    """Files, folders and globs -> (image paths, de-duplicated, in order; specs that matched nothing).

    A plain path that does not exist is kept (it becomes an error record, not a silent skip).
    """
    out: list[Path] = []
    unmatched: list[str] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if _is_image_file(p))
        elif glob.has_magic(spec):
            found = []
            for m in sorted(glob.glob(spec, recursive=True)):
                p = Path(m)
                found += (
                    sorted(q for q in p.rglob("*") if _is_image_file(q))
                    if p.is_dir()
                    else [p]
                    if _is_image_file(p)
                    else []
                )
        else:
            found = [path]
        if not found:
            unmatched.append(spec)
        out += found
    seen: set[str] = set()
    unique = []
    for p in out:
        r = str(p.resolve())
        if r not in seen:
            seen.add(r)
            unique.append(p)
    return unique, unmatched


def _is_image_file(p: Path) -> bool:
    if p.name.startswith(".") or not p.is_file():  # hidden: .DS_Store, macOS "._x.png" resource forks
        return False
    if is_image_name(p):
        return True
    if p.suffix:
        return False
    try:
        with open(p, "rb") as f:
            return has_dicom_magic(f.read(DICOM_HEAD))
    except OSError:
        return False


def is_done(done: dict[str, "Done"], key: str, retry_errors: bool = False) -> bool:
    """Whether an input with this key needs no new record (an error counts as done unless retried)."""
    prev = done.get(key)
    return prev is not None and not (retry_errors and prev.status == "error")


def input_key(path: Path, lateral: Optional[Path] = None) -> str:
    """resolved path | size | mtime_ns (+ the same for a lateral view). A missing file keys as 'missing'."""

    def one(p: Path) -> str:
        r = p.resolve()
        try:
            st = r.stat()
        except OSError:
            return f"{r}|missing"
        return f"{r}|{st.st_size}|{st.st_mtime_ns}"

    return one(path) if lateral is None else f"{one(path)}+{one(lateral)}"


# ---- outputs --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Done:
    status: str  # "ok" | "error"
    flagged: bool


class Sink:
    """Where records go. File sinks resume; a stream sink (stdout) starts empty."""

    def __init__(self, stream: TextIO, path: Optional[Path] = None):
        self.stream, self.path = stream, path
        self._done: dict[str, Done] = {}
        self._needs_header = True  # csv: until a header is written or found

    def done(self) -> dict[str, Done]:
        return dict(self._done)

    def write(self, record: dict) -> None:
        self.stream.write(self.format(record))
        self.stream.flush()
        self._done[record["key"]] = Done(record["status"], bool(record.get("flagged")))

    def format(self, record: dict) -> str:
        raise NotImplementedError

    def parse(self, content: str) -> None:
        """Read the records of an existing output (complete records only) into done()."""
        raise NotImplementedError

    def close(self) -> None:
        if self.path is not None:
            self.stream.close()

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class JsonlSink(Sink):
    def format(self, record: dict) -> str:
        return json.dumps(record, ensure_ascii=False) + "\n"

    def parse(self, content: str) -> None:
        for line in content.splitlines():
            try:
                r = json.loads(line)
                self._done[r["key"]] = Done(r["status"], bool(r.get("flagged")))
            except (ValueError, KeyError, TypeError):
                continue  # a foreign or damaged line: its input is simply captioned again


class CsvSink(Sink):
    def format(self, record: dict) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        if self._needs_header:
            w.writerow(CSV_COLUMNS)
            self._needs_header = False
        findings = record.get("findings") or {}
        row = {
            "key": record["key"],
            "input": record["input"],
            "lateral": (record.get("inputs") or {}).get("lateral"),
            "status": record["status"],
            "flagged": record.get("flagged", ""),
            "warnings": ";".join(w["code"] for w in record.get("warnings", [])),
            "text": record.get("text", ""),
            "error": record.get("error", ""),
            "total_ms": (record.get("timings") or {}).get("total_ms", ""),
            "decoder_steps": (record.get("timings") or {}).get("decoder_steps", ""),
            **{o: findings.get(o) or "" for o in OBSERVATIONS},
        }
        w.writerow([_one_line(row[c]) for c in CSV_COLUMNS])
        return buf.getvalue()

    def parse(self, content: str) -> None:
        rows = csv.reader(io.StringIO(content))
        header = next(rows, None)
        if header is None:
            return
        if tuple(header) != CSV_COLUMNS:
            raise BatchError(f"{self.path}: an existing CSV with other columns; choose another --out")
        self._needs_header = False
        for r in rows:
            if len(r) == len(CSV_COLUMNS):
                self._done[r[0]] = Done(r[3], r[4] == "True")


class TextSink(Sink):
    def format(self, record: dict) -> str:
        head = f"== {record['input']} [{record['status']}{', flagged' if record.get('flagged') else ''}]"
        lines = [f"{head} key={record['key']}" if self.path is not None else head]  # the key is for resuming
        if record["status"] != "ok":
            lines.append(f"error: {_one_line(record['error'])}")
        else:
            lines += Report.from_dict(record).render_text().splitlines()  # a flagged one opens with the reasons
            if record["flagged"]:
                lines.append("findings: withheld (not a chest X-ray)")
            else:
                said = [f"{k} {v}" for k, v in record["findings"].items() if v is not None]
                lines.append(f"findings (rule-based labeler on the text): {', '.join(said) or 'none mentioned'}")
            lines += [
                f"warning {w['code']}: {w['message']}" for w in record["warnings"] if w["code"] not in NOT_CXR_CODES
            ]
            t, b = record["timings"], record["bundle"]
            lines.append(
                f"({t['total_ms']:.0f} ms, {t['decoder_steps']} decoder steps, bundle {b['mode']}: {b['notice']})"
            )
        return "\n".join(lines) + "\n\n"

    def parse(self, content: str) -> None:
        for line in content.splitlines():
            if line.startswith("== ") and " key=" in line:
                head, key = line.rsplit(" key=", 1)
                status = head[head.rfind("[") + 1 :].split("]")[0]
                self._done[key] = Done(status.split(",")[0], "flagged" in status)


_SINKS = {"json": JsonlSink, "csv": CsvSink, "text": TextSink}


def format_for(out: Optional[Path], fmt: Optional[str]) -> str:
    """An explicit format wins; else from the --out suffix (.jsonl / .json / .csv, other: text); else text."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise BatchError(f"unknown format {fmt!r}: choose {', '.join(FORMATS)}")
        return fmt
    if out is None:
        return "text"
    return {".jsonl": "json", ".json": "json", ".csv": "csv"}.get(out.suffix.lower(), "text")


def open_sink(out: Optional[Path], fmt: str, stream: Optional[TextIO] = None) -> Sink:
    """A sink writing to `out` (resuming it) or to `stream` (default stdout)."""
    cls = _SINKS[fmt]
    if out is None:
        return cls(stream or sys.stdout)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        content = out.read_text(encoding="utf-8") if out.is_file() else ""
    except (OSError, UnicodeDecodeError) as e:
        raise BatchError(f"{out}: cannot read the existing output ({e})") from None
    keep = _complete_part(content, fmt)
    try:
        if len(keep) != len(content):  # a partial record from an interrupted run: cut it, it is redone
            with open(out, "r+b") as f:
                f.truncate(len(keep.encode("utf-8")))
        stream = open(out, "a", encoding="utf-8", newline="")
    except OSError as e:
        raise BatchError(f"{out}: cannot write ({e.strerror or e})") from None
    sink = cls(stream, out)
    try:
        sink.parse(keep)
    except BatchError:
        sink.close()
        raise
    return sink


def _complete_part(content: str, fmt: str) -> str:
    end = "\n\n" if fmt == "text" else "\n"
    cut = content.rfind(end)
    return content[: cut + len(end)] if cut >= 0 else ""


def _one_line(v) -> str:
    return "" if v is None else " ".join(str(v).splitlines())


# ---- the loop -------------------------------------------------------------------------------------
@dataclass
class BatchSummary:
    total: int = 0  # inputs of this run
    captioned: int = 0  # captioned now
    skipped: int = 0  # already in the output
    failed: int = 0  # error records (now or resumed) + specs that matched nothing
    flagged: int = 0  # flagged reports (now or resumed)

    def exit_code(self) -> int:
        if self.failed:
            return EXIT_FAILED
        if self.flagged:
            return EXIT_FLAGGED
        return EXIT_OK


def run_batch(
    captioner,
    paths: list[Path],
    sink: Sink,
    beam: int = DEFAULT_BEAM,
    lateral: Optional[Path] = None,
    retry_errors: bool = False,
    progress: bool = True,
    attention_decimals: Optional[int] = ATTENTION_DECIMALS,
    attention: bool = True,
    log: Callable[[str], None] | None = None,
) -> BatchSummary:
    """Caption every path not already in `sink`, writing one record each. Never raises for a bad input:
    it becomes an error record and a line through `log` (stderr by default)."""
    from tqdm import tqdm

    from edgecap.runtime.captioner import CaptionError
    from edgecap.runtime.errors import ImageError

    if lateral is not None and len(paths) != 1:
        raise BatchError("a lateral view goes with exactly one frontal image")
    done = sink.done()
    summary = BatchSummary(total=len(paths))
    bar = tqdm(
        total=len(paths), file=sys.stderr, disable=not progress or len(paths) < 2, unit="image", dynamic_ncols=True
    )
    say = log or (lambda msg: bar.write(msg, file=sys.stderr))
    try:
        for path in paths:
            key = input_key(path, lateral)
            if is_done(done, key, retry_errors):
                prev = done[key]
                summary.skipped += 1
                summary.failed += prev.status == "error"
                summary.flagged += prev.status == "ok" and prev.flagged
                bar.update()
                continue
            record: dict = {"key": key, "input": str(path)}
            try:
                report = captioner.caption(path, lateral=lateral, beam=beam)
            except (ImageError, CaptionError, OSError, ValueError) as e:
                record.update(status="error", error=str(e))
            except Exception as e:  # a bug must not end a batch of thousands: record it, go on
                record.update(status="error", error=f"internal error ({type(e).__name__}: {e})")
            else:
                record.update(status="ok", **report.to_dict(attention_decimals, attention))
            sink.write(record)
            if record["status"] == "error":
                summary.failed += 1
                say(f"error: {record['error'] if str(path) in record['error'] else f'{path}: ' + record['error']}")
            else:
                summary.captioned += 1
                if record["flagged"]:
                    summary.flagged += 1
                    say(f"warning: {path}: not a chest X-ray? " + "; ".join(w["code"] for w in record["warnings"]))
            bar.set_postfix(failed=summary.failed, flagged=summary.flagged, refresh=False)
            bar.update()
    finally:
        bar.close()
    return summary
