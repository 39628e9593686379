"""`edgecap caption` over many inputs: each result written (and flushed) as soon as it exists, re-runs resume.

Front-end plumbing of the caption command (globs, output files, resume keys, exit status) around the device
runtime's Captioner; TensorFlow-free like the runtime, which imports nothing from here.

    paths, unmatched = expand_inputs(["scans/", "more/*.dcm", "one.png"])
    with open_sink(Path("out.jsonl"), "json", inputs=paths) as sink:   # refused, or its records read first
        summary = run_batch(captioner, paths, sink)
    sys.exit(summary.exit_code())

Inputs: a file is taken as given; a folder is searched recursively and a glob is expanded (`**` too), both
keeping image files only (a suffix of runtime.formats, or no suffix and the DICOM "DICM" mark; hidden files
are left out).

Studies (cli.study_inputs, `--studies` / `--list`): run_batch also takes StudyInput items, a study's frontal
and lateral images captioned together into one record, keyed by both (input_key with a lateral): a plain
path is an image captioned alone. A study's record also has "study" (its name) and "unused" (its images the
model does not take, a third view say); an image of a pair that cannot be read makes the whole study an
error record naming that image (no report from the other view alone: its text would not say that a view is
missing), and the batch goes on.

Records (one per input or study, in input order) have a status: "ok" (a report), "flagged" (the input does not look
like a chest X-ray, or is too small to read one: runtime.sanity.FLAG_CODES; no report text unless
`show_flagged_text`) or "error" (the input could not be captioned; the batch goes on). Output formats:
    json   JSON Lines: {"key", "input", ...Report.to_dict()} (its "status" is "ok" or "flagged"; a flagged
           one has "text": null, "text_withheld": true, no tokens or attention; with show_flagged_text,
           "text_withheld": false and the model's text in "flagged_text") or
           {"key", "input", "status": "error", "error": message, "demonstration", "notice"}; a study's records
           also "study", "unused" (a list of paths) and, when an error, "inputs": {"frontal", "lateral"};
           "input" is the frontal view
    csv    one row per input: CSV_COLUMNS, i.e. key, input, lateral, study (empty for an image captioned
           alone; unused images are in json only), status, flagged, text_withheld, warnings (codes), text
           (empty unless status is "ok"), flagged_text (only with show_flagged_text), error, total_ms,
           decoder_steps, then one column per labeler observation (positive / negative / uncertain / empty;
           empty when flagged)
    text   blocks for people: "== INPUT [STATUS] key=KEY" (key= in files only; a study of several images:
           "== study NAME: FRONTAL + LATERAL [STATUS]", then "not used: ..." when it had more), then the
           report; a flagged one gives the reasons and "No report: the model's text is withheld" (with
           show_flagged_text, the text, introduced as not describing the image), findings, warnings,
           timings; a blank line ends each block, and no block holds a blank line

An existing --out is used only when edgecap caption wrote it, in the same format; anything else is refused
(BatchError) and left byte for byte, so a mistyped --out never costs a file:
    any    not one of the inputs (the same file, hard and symbolic links included; for a path that does not
           exist, the same resolved path: a missing input would be read back as the output). Empty: used.
    json   every line a JSON object with a string "key" and "input" and a status of STATUSES
    csv    the first line exactly CSV_COLUMNS; every further line a row of that many fields and a status
    text   every block (the file's start, and each line after a blank line) starts with a line
           "== INPUT [STATUS] key=KEY" (STATUS: ok, flagged, error, or "ok, flagged" from older versions)
Only then may its last record be torn (a run killed or out of space while writing it): what follows the
last complete record is cut, and that input is done again, provided it is the start of a record (json:
'{"key": "'; text: "== "; csv: no more fields than a row; or a prefix of these; a csv header cut short). A
device or pipe (/dev/null, /dev/stdout) is written as a stream: nothing read, cut, locked or resumed.

One writer per file: open_sink takes an exclusive advisory lock (fcntl.flock, non-blocking) on --out and
holds it until the sink is closed, so a second run on the same --out is refused (BatchError) rather than
writing every record twice; the lock goes with the process however it ends. On a platform without fcntl
(Windows) there is no lock: two runs on one --out are not detected and may each write a record of the same
input; the last record of a key wins on resume, so a later run stays correct, with duplicates.

A record that cannot be written (disk full, ENOSPC; file size limit, EFBIG; I/O error) raises OutputError
(one line, the errno named): the records before it are kept, a torn one is cut by the next run, and the same
command resumes once there is room.

Resume: a record's key is the input's resolved path, size and modification time (nanoseconds), so an edited
or replaced file is captioned again and a moved file is not confused with another. Opening an existing
output reads its keys (the last record of a key wins). Inputs whose key already has a record are skipped
(flagged ones too: show_flagged_text applies to the inputs captioned in this run); errors too, unless
`retry_errors` (a fixed file gets a new mtime, so it is retried anyway). A retried input's new record replaces
its error record: before the batch, Sink.forget_errors rewrites the output without the records of the inputs
it will retry (a new file, locked, then renamed over the old one: a run killed meanwhile leaves the old file or
the new one, never half of one), so every input has one record and is counted once.

Exit status (BatchSummary.exit_code, codes of cli.common), counted over every input of the run, resumed
ones included:
    0  EXIT_OK       every input captioned and none flagged
    1  EXIT_FAILED   some input failed (unreadable, corrupt, unsupported, over the pixel limit, missing, or a
                     glob / folder matched nothing); also (the caller's) an output that could not be written
    3  EXIT_FLAGGED  all inputs captioned, but some were flagged (status "flagged")
    2  EXIT_USAGE    is left to the caller for bad usage, a refused --out and bundle errors (nothing captioned)
A failure outranks a flag: an incomplete output matters more than a warned one.
"""

from __future__ import annotations

import csv
import errno
import glob
import io
import json
import os
import re
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, TextIO

from edgecap.cli.common import EXIT_FAILED, EXIT_FLAGGED, EXIT_OK
from edgecap.cli.study_inputs import StudyInput
from edgecap.labeler import OBSERVATIONS
from edgecap.runtime.decoding import DEFAULT_BEAM
from edgecap.runtime.formats import DICOM_HEAD, has_dicom_magic, is_image_name
from edgecap.runtime.report import ATTENTION_DECIMALS, Report
from edgecap.runtime.sanity import FLAG_CODES

FORMATS = ("text", "json", "csv")
STATUSES = ("ok", "flagged", "error")
CSV_COLUMNS = (
    "key",
    "input",
    "lateral",
    "study",
    "status",
    "flagged",
    "text_withheld",
    "warnings",
    "text",
    "flagged_text",
    "error",
    "total_ms",
    "decoder_steps",
) + OBSERVATIONS
_STATUS_COLUMN = CSV_COLUMNS.index("status")


class BatchError(ValueError):
    """An output that cannot be used: unwritable, one of the inputs, not written by edgecap caption (in this
    format, with these columns), or being written by another run."""


class OutputError(BatchError):
    """A record could not be written (disk full, file too large, I/O error); the records before it are kept."""


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


def item_key(item: Path | StudyInput, lateral: Optional[Path] = None) -> str:
    """The resume key of a run's input: an image (with the run's --lateral) or a study (its two views)."""
    if isinstance(item, StudyInput):
        return input_key(item.frontal, item.lateral)
    return input_key(item, lateral)


# ---- outputs --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Done:
    status: str  # "ok" | "flagged" | "error"


def _status(record: dict) -> str:
    """A record's status; "ok" with flagged: true (records of versions before "flagged") reads as "flagged"."""
    return "flagged" if record["status"] == "ok" and record.get("flagged") else record["status"]


class NotOurs(BatchError):
    """Existing content that edgecap caption did not write in this format (the reason: which line and why)."""


class Sink:
    """Where records go. File sinks resume; a stream sink (stdout, a device) starts empty."""

    def __init__(self, stream: TextIO, path: Optional[Path] = None, resumable: bool = False):
        self.stream, self.path, self.resumable = stream, path, resumable  # resumable: a regular file
        self._done: dict[str, Done] = {}
        self._needs_header = True  # csv: until a header is written or found
        self._broken = False  # a write failed: what is left in the stream's buffer is dropped

    @property
    def name(self) -> str:
        return "<stdout>" if self.path is None else str(self.path)

    def done(self) -> dict[str, Done]:
        return dict(self._done)

    def write(self, record: dict) -> None:
        """Write one record and flush it. Raises OutputError when the system refuses the bytes (a closed pipe
        on stdout is left to the CLI framework, which ends quietly)."""
        text = self.format(record)
        try:
            self.stream.write(text)
            self.stream.flush()
        except OSError as e:
            if self.path is None and e.errno == errno.EPIPE:
                raise
            self._broken = True
            resume = "; the records before it are kept: make room, then run the same command to resume"
            message = f"{self.name}: cannot write ({describe(e)})" + (resume if self.resumable else "")
            raise OutputError(message) from None
        self._done[record["key"]] = Done(_status(record))

    def format(self, record: dict) -> str:
        raise NotImplementedError

    def scan(self, content: bytes) -> int:
        """Read an existing output into done(): -> the length of its complete records, in bytes (what follows
        is a torn last record). Raises NotOurs when edgecap caption did not write it in this format."""
        raise NotImplementedError

    def pieces(self, content: bytes) -> list[tuple[bytes, Optional[str]]]:
        """Content already scanned, cut into (bytes, key of the record or None: a header) that join back to it."""
        raise NotImplementedError

    def forget_errors(self, keys: Iterable[str]) -> int:
        """Remove every record of those `keys` whose last record is an error, so that the record of their retry
        replaces it (--retry-errors): -> how many inputs. The file is written anew beside the old one, locked,
        flushed to disk and renamed over it (the lock goes with it); a stream (stdout, a device) has nothing to
        remove. Raises OutputError when the new file cannot be written (the old one is left as it was)."""
        drop = {k for k in keys if k in self._done and self._done[k].status == "error"}
        if not drop or not self.resumable or self.path is None:
            return 0
        self.stream.flush()
        target = Path(os.path.realpath(self.path))  # a symbolic link --out: replace the file it names
        try:
            content = target.read_bytes()
        except OSError as e:
            raise OutputError(f"{self.name}: cannot read it back ({describe(e)})") from None
        kept = b"".join(piece for piece, key in self.pieces(content) if key not in drop)
        self.stream, old = _replace_locked(target, kept), self.stream
        old.close()  # releases the old file's lock: the new file holds ours
        for k in drop:
            del self._done[k]
        return len(drop)

    def close(self) -> None:
        """Close a file (releasing its lock). After a failed write the unwritable rest is dropped: stdout is
        pointed at os.devnull, so the interpreter's final flush does not fail again."""
        if self.path is None:
            if self._broken:
                _drop_unwritten(self.stream)
            return
        try:
            self.stream.close()
        except OSError as e:
            if not self._broken:
                raise OutputError(f"{self.name}: cannot write ({describe(e)})") from None

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class JsonlSink(Sink):
    HEAD = b'{"key": "'  # how json.dumps begins every record: "key" is the first field

    def format(self, record: dict) -> str:
        return json.dumps(record, ensure_ascii=False) + "\n"

    def scan(self, content: bytes) -> int:
        cut = content.rfind(b"\n") + 1
        lines = content[:cut].split(b"\n")[:-1]
        for n, line in enumerate(lines, 1):
            record = _json_record(line)
            if record is None:
                raise NotOurs(f"line {n} is not an edgecap record")
            self._done[record["key"]] = Done(_status(record))
        if not _starts_like(content[cut:], self.HEAD):
            raise NotOurs(f"line {len(lines) + 1} is not an edgecap record")
        return cut

    def pieces(self, content: bytes) -> list[tuple[bytes, Optional[str]]]:
        return [(line, (_json_record(line) or {}).get("key")) for line in _split_after(content, b"\n")]


class CsvSink(Sink):
    HEADER = ",".join(CSV_COLUMNS) + "\n"  # no column name needs quoting

    def format(self, record: dict) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        if self._needs_header:
            buf.write(self.HEADER)
            self._needs_header = False
        findings = record.get("findings") or {}
        timings = record.get("timings") or {}
        row = {
            "key": record["key"],
            "input": record["input"],
            "lateral": (record.get("inputs") or {}).get("lateral"),
            "study": record.get("study"),
            "status": record["status"],
            "flagged": record.get("flagged", ""),
            "text_withheld": record.get("text_withheld", ""),
            "warnings": ";".join(w["code"] for w in record.get("warnings", [])),
            "text": record.get("text"),  # None when flagged: a reader of this column never meets that text
            "flagged_text": record.get("flagged_text"),
            "error": record.get("error"),
            "total_ms": timings.get("total_ms", ""),
            "decoder_steps": timings.get("decoder_steps", ""),
            **{o: findings.get(o) or "" for o in OBSERVATIONS},
        }
        w.writerow([_one_line(row[c]) for c in CSV_COLUMNS])  # one physical line per row
        return buf.getvalue()

    def scan(self, content: bytes) -> int:
        header = self.HEADER.encode()
        if not content.startswith(header):
            if header.startswith(content):  # empty, or a header cut short by a run killed at its first write
                return 0
            if content.startswith(b"key,input,"):
                raise NotOurs("an edgecap CSV with other columns, from another version")
            raise NotOurs("line 1 is not edgecap's CSV header")
        self._needs_header = False
        cut = content.rfind(b"\n") + 1
        for n, line in enumerate(content[len(header) : cut].split(b"\n")[:-1], 2):
            row = _csv_row(line)
            if row is None or len(row) != len(CSV_COLUMNS) or row[_STATUS_COLUMN] not in STATUSES:
                raise NotOurs(f"line {n} is not an edgecap row")
            self._done[row[0]] = Done(row[_STATUS_COLUMN])
        tail, last = content[cut:], content.count(b"\n", 0, cut) + 1
        row = _csv_row(tail, strict=False)
        if tail and (row is None or len(row) > len(CSV_COLUMNS)):
            raise NotOurs(f"line {last} is not an edgecap row")
        return cut

    def pieces(self, content: bytes) -> list[tuple[bytes, Optional[str]]]:
        lines = _split_after(content, b"\n")
        return [(line, _csv_key(line) if n else None) for n, line in enumerate(lines)]  # line 0: the header


class TextSink(Sink):
    HEAD = re.compile(r"== .+ \[(ok|flagged|error)(, flagged)?\] key=(.+)")

    def format(self, record: dict) -> str:
        status = record["status"]
        head = f"== {_one_line(_label(record))} [{status}]"
        lines = [f"{head} key={_one_line(record['key'])}" if self.path is not None else head]  # key: for resuming
        if record.get("unused"):
            lines.append(f"not used (the model takes one frontal and one lateral view): {', '.join(record['unused'])}")
        if status == "error":
            lines.append(f"error: {_one_line(record['error'])}")
        else:
            shown = "flagged_text" in record  # a flagged report whose text was asked for
            lines += Report.from_dict(record).render_text(show_flagged_text=shown).splitlines()
            if status == "flagged":
                lines.append("findings: withheld (flagged input)")
            else:
                said = [f"{k} {v}" for k, v in record["findings"].items() if v is not None]
                lines.append(f"findings (rule-based labeler on the text): {', '.join(said) or 'none mentioned'}")
            lines += [
                f"warning {w['code']}: {w['message']}" for w in record["warnings"] if w["code"] not in FLAG_CODES
            ]
            t, b = record["timings"], record["bundle"]
            lines.append(
                f"({t['total_ms']:.0f} ms, {t['decoder_steps']} decoder steps, bundle {b['mode']}: {b['notice']})"
            )
        return "\n".join(line for line in lines if line.strip()) + "\n\n"  # no blank line inside a block

    def scan(self, content: bytes) -> int:
        cut = content.rfind(b"\n\n") + 2 if b"\n\n" in content else 0
        try:
            *blocks, rest = content[:cut].decode("utf-8").split("\n\n")  # rest: "" unless a third newline
        except UnicodeDecodeError:
            raise NotOurs("not UTF-8 text") from None
        line = 1
        for block in blocks:
            head = self.HEAD.fullmatch(block.split("\n", 1)[0])
            if head is None:
                raise NotOurs(f"line {line} does not start a block with '== INPUT [STATUS] key=KEY'")
            self._done[head[3]] = Done("flagged" if head[2] else head[1])
            line += block.count("\n") + 2
        if rest or not _starts_like(content[cut:], b"== "):
            raise NotOurs(f"line {line} does not start a block with '== INPUT [STATUS] key=KEY'")
        return cut

    def pieces(self, content: bytes) -> list[tuple[bytes, Optional[str]]]:
        out: list[tuple[bytes, Optional[str]]] = []
        for block in _split_after(content, b"\n\n"):
            head = self.HEAD.fullmatch(block.split(b"\n", 1)[0].decode("utf-8", "replace"))
            out.append((block, head[3] if head else None))
        return out


def _label(record: dict) -> str:
    """What a text block is about: the input; for a study of several images its name and views."""
    lateral = (record.get("inputs") or {}).get("lateral")
    if record.get("study") is None or (lateral is None and not record.get("unused")):
        return record["input"]
    return f"study {record['study']}: {record['input']}" + (f" + {lateral}" if lateral else "")


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


def open_sink(
    out: Optional[Path], fmt: str, inputs: Iterable[Path] = (), stream: Optional[TextIO] = None
) -> Sink:
    """A sink writing to `out` (locked, its records read, a torn last one cut) or to `stream` (default
    stdout). Raises BatchError, leaving `out` as it was, when `out` is one of `inputs`, is not an output of
    edgecap caption in this format (module docstring), is locked by another run, or cannot be opened."""
    cls = _SINKS[fmt]
    if out is None:
        return cls(stream or sys.stdout)
    refuse_an_input(out, inputs)
    try:
        st: Optional[os.stat_result] = out.stat()
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise BatchError(f"{out}: cannot open ({describe(e)})") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise BatchError(f"{out}: is a folder; --out takes a file")
    try:
        if st is not None and not stat.S_ISREG(st.st_mode):  # /dev/null, /dev/stdout, a pipe: a stream
            return cls(open(out, "a", encoding="utf-8", newline=""), out)
        out.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(out, os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as e:
        raise BatchError(f"{out}: cannot write ({describe(e)})") from None
    try:
        _lock(fd, out)
        sink = cls(io.StringIO(), out, resumable=True)  # a placeholder stream until the content is ours
        content = _read_all(fd)
        keep = sink.scan(content)
        if keep < len(content):  # a torn last record: cut, and its input done again
            os.ftruncate(fd, keep)
        sink.stream = open(fd, "a", encoding="utf-8", newline="")  # owns fd now: closing it releases the lock
    except NotOurs as e:
        os.close(fd)
        raise BatchError(
            f"{out} exists and was not written by edgecap caption as {fmt} ({e}); it is left as it is: choose "
            "another --out"
        ) from None
    except OSError as e:
        os.close(fd)
        raise BatchError(f"{out}: cannot use the existing output ({describe(e)})") from None
    except BaseException:
        os.close(fd)
        raise
    return sink


def refuse_an_input(out: Path, inputs: Iterable[Path]) -> None:
    """BatchError when `out` is one of `inputs`: the same file (hard or symbolic links too), or, where either
    does not exist, the same resolved path."""
    target = _identity(out)
    for p in inputs:
        if _identity(p) == target:
            raise BatchError(f"--out {out} is one of the inputs ({p}): writing it would destroy that input")


def _identity(p: Path) -> tuple:
    try:
        st = p.stat()
    except OSError:
        return ("path", os.path.realpath(p))
    return ("file", st.st_dev, st.st_ino)


def _lock(fd: int, out: Path) -> None:
    """An exclusive, non-blocking flock on the open output: BatchError while another run holds it."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock (module docstring)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise BatchError(
            f"another edgecap caption is writing {out}; wait for it to end, or choose another --out"
        ) from None
    except OSError as e:  # ENOLCK (a network share without locking): refused rather than written twice
        raise BatchError(f"{out}: cannot lock it against a second run ({describe(e)}); choose another --out") from None


def _csv_key(line: bytes) -> Optional[str]:
    """The key (first field) of a CSV row, None when the line is not one."""
    row = _csv_row(line.rstrip(b"\n"))
    return row[0] if row else None


def _split_after(content: bytes, sep: bytes) -> list[bytes]:
    """`content` cut after each `sep` (kept with the piece before it); what follows the last one, if any."""
    parts = content.split(sep)
    return [part + sep for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _replace_locked(target: Path, content: bytes) -> TextIO:
    """Write `content` to a new file beside `target`, lock it, flush it to disk, then rename it over `target`
    (its permissions kept): -> the new file, open for appending. Raises OutputError, `target` untouched, when
    any step fails."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.edgecap-new")
    try:
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as e:
        raise OutputError(f"{target}: cannot write its new version ({describe(e)})") from None
    try:
        _lock(fd, tmp)
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        os.chmod(tmp, stat.S_IMODE(target.stat().st_mode))
        os.replace(tmp, target)
    except OSError as e:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{target}: cannot write its new version ({describe(e)}); it is left as it was") from None
    except BaseException:  # Ctrl-C: the old file stays
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    return open(fd, "a", encoding="utf-8", newline="")


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _json_record(line: bytes) -> Optional[dict]:
    """The record on a JSONL line, or None when the line is not one of edgecap caption's."""
    try:
        r = json.loads(line.decode("utf-8"))
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both
        return None
    ok = isinstance(r, dict) and isinstance(r.get("key"), str) and isinstance(r.get("input"), str)
    return r if ok and r.get("status") in STATUSES else None


def _csv_row(line: bytes, strict: bool = True) -> Optional[list[str]]:
    """One CSV line -> its fields; None when it is not UTF-8 (strict) or not CSV. Not strict: for a torn
    line, whose last character may be cut."""
    try:
        text = line.decode("utf-8", "strict" if strict else "ignore")
        return next(csv.reader([text]), [])
    except (UnicodeDecodeError, csv.Error):
        return None


def _starts_like(tail: bytes, head: bytes) -> bool:
    """Whether `tail` (what follows the last complete record) may be a torn record beginning with `head`."""
    return tail.startswith(head) or head.startswith(tail)


def _drop_unwritten(stream: TextIO) -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, io.UnsupportedOperation):  # not a real file (a test's capture): nothing to do
        pass


def describe(e: OSError) -> str:
    """The system's words and the errno's name, e.g. "No space left on device (ENOSPC)"."""
    name = errno.errorcode.get(e.errno) if e.errno is not None else None
    return f"{e.strerror or e}" + (f" ({name})" if name else "")


def _one_line(v) -> str:
    return "" if v is None else " ".join(str(v).splitlines())


# ---- the loop -------------------------------------------------------------------------------------
@dataclass
class BatchSummary:
    total: int = 0  # inputs of this run
    captioned: int = 0  # records with a report now: "ok" or "flagged"
    skipped: int = 0  # already in the output
    failed: int = 0  # error records (now or resumed) + specs that matched nothing
    flagged: int = 0  # flagged records (now or resumed)

    def exit_code(self) -> int:
        if self.failed:
            return EXIT_FAILED
        if self.flagged:
            return EXIT_FLAGGED
        return EXIT_OK


class _NoBar:
    """What run_batch uses of a tqdm bar, doing nothing but write()."""

    def write(self, msg: str, file: Any = None) -> None:
        print(msg, file=file or sys.stderr)

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


def run_batch(
    captioner,
    paths: Sequence[Path | StudyInput],
    sink: Sink,
    beam: int = DEFAULT_BEAM,
    lateral: Optional[Path] = None,
    retry_errors: bool = False,
    progress: bool = True,
    attention_decimals: Optional[int] = ATTENTION_DECIMALS,
    attention: bool = True,
    log: Callable[[str], None] | None = None,
    show_flagged_text: bool = False,
) -> BatchSummary:
    """Caption every path (an image, or a StudyInput: its views together) not already in `sink`, writing one
    record each. Never raises for a bad input: it becomes an error record and a line through `log` (stderr by
    default). Raises OutputError when a record cannot be written (the ones before it are kept)."""
    from edgecap.runtime.captioner import CaptionError
    from edgecap.runtime.errors import ImageError
    from edgecap.runtime.report import is_demonstration

    if lateral is not None and len(paths) != 1:
        raise BatchError("a lateral view goes with exactly one frontal image")
    if retry_errors:  # their new records replace the error records, not sit beside them
        sink.forget_errors(item_key(item, lateral) for item in paths)
    done = sink.done()
    notice = getattr(captioner, "bundle_info", {}).get("notice")  # error records say it too, as reports do
    model_fields = {"demonstration": is_demonstration(notice), "notice": notice}
    summary = BatchSummary(total=len(paths))
    unit = "study" if any(isinstance(p, StudyInput) for p in paths) else "image"
    if progress and len(paths) >= 2:
        from tqdm import tqdm

        bar: Any = tqdm(total=len(paths), file=sys.stderr, unit=unit, dynamic_ncols=True)
    else:  # one input, or --no-progress: no bar, and no tqdm import (~10 ms of a one-image start)
        bar = _NoBar()
    say = log or (lambda msg: bar.write(msg, file=sys.stderr))
    try:
        for item in paths:
            key = item_key(item, lateral)
            if is_done(done, key, retry_errors):
                summary.skipped += 1
                summary.failed += done[key].status == "error"
                summary.flagged += done[key].status == "flagged"
                bar.update()
                continue
            path, view, record = _start_record(item, key, lateral)
            try:
                report = captioner.caption(path, lateral=view, beam=beam)
            except (ImageError, CaptionError, OSError, ValueError) as e:  # over the pixel limit too: ImageError
                record.update(status="error", error=str(e), **model_fields)
            except Exception as e:  # a bug must not end a batch of thousands: record it, go on
                record.update(status="error", error=f"internal error ({type(e).__name__}: {e})", **model_fields)
            else:
                record.pop("inputs", None)  # the report's own, from here
                record.update(report.to_dict(attention_decimals, attention, show_flagged_text))  # "status" too
            sink.write(record)
            _count(record, _label(record) if isinstance(item, StudyInput) else path, summary, say)
            bar.set_postfix(failed=summary.failed, flagged=summary.flagged, refresh=False)
            bar.update()
    finally:
        bar.close()
    return summary


def _start_record(item: Path | StudyInput, key: str, lateral: Optional[Path]) -> tuple[Path, Optional[Path], dict]:
    """(frontal, lateral, the record's first fields) of an image with the run's --lateral, or of a study."""
    if not isinstance(item, StudyInput):
        return item, lateral, {"key": key, "input": str(item)}
    inputs = {"frontal": str(item.frontal), "lateral": None if item.lateral is None else str(item.lateral)}
    unused = [str(p) for p in item.unused]
    record = {"key": key, "input": str(item.frontal), "study": item.name, "unused": unused, "inputs": inputs}
    return item.frontal, item.lateral, record


def _count(record: dict, path: Path | str, summary: BatchSummary, say: Callable[[str], None]) -> None:
    """Count a record just written, and say why when it failed or was flagged."""
    if record["status"] == "error":
        summary.failed += 1
        say(f"error: {record['error'] if str(path) in record['error'] else f'{path}: ' + record['error']}")
        return
    summary.captioned += 1
    if record["status"] == "flagged":
        summary.flagged += 1
        codes = ", ".join(w["code"] for w in record["warnings"] if w["code"] in FLAG_CODES)
        shown = "its text is in flagged_text" if "flagged_text" in record else "no report text"
        say(f"warning: {path}: flagged ({codes}): not a chest X-ray, or too small to read; {shown}")
