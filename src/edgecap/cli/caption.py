"""`edgecap caption`: reports for chest X-ray images from a converted bundle, offline, without TensorFlow.

    edgecap caption chest.png                                  # the default bundle, text on stdout
    edgecap caption frontal.dcm --lateral lateral.dcm --format json
    edgecap caption scans/ "more/**/*.png" --out reports.jsonl # batch: progress bar, resumable
    edgecap caption scans/ --out reports.csv --bundle bundles/int8 --threads 2

Batch behaviour, output formats, which existing --out is used, the lock and resume: cli.batch. An input that
does not look like a chest X-ray or is too small to read one is "flagged": its record carries the reasons and
no report text, unless --show-flagged-text (then in "flagged_text", marked as not describing the image).
An image over --max-megapixels (from its header, before decoding) is an error record. Exit status:

    0  every input captioned, none flagged
    1  some input failed (unreadable, corrupt, unsupported, over the pixel limit, missing; a glob or folder
       that matched nothing): the others were still captioned and written; or a record could not be written
       (disk full: the error names ENOSPC; the records before it are kept, the same command resumes)
    2  bad usage, a refused --out (one of the inputs, not written by edgecap caption, or being written by
       another run; left untouched) or an unusable bundle (missing, corrupt, no interpreter): nothing captioned
    3  every input captioned, but some were flagged (not a chest X-ray, or too small)
    130 interrupted, from the first instant (what was written is kept; run the same command to resume)

Precedence: 2, then 1, then 3 (a failed input outranks a flagged one). Bad input never gives a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from edgecap.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    beam_option,
    bundle_option,
    error,
    fail,
    interrupt_exits_at_once,
    quiet_opencv,
    threads_option,
)
from edgecap.runtime.image_header import DEFAULT_MAX_MEGAPIXELS

if TYPE_CHECKING:
    from edgecap.cli.batch import Sink
    from edgecap.runtime.captioner import Captioner

MEGAPIXEL = 1_000_000


def caption(
    inputs: List[str] = typer.Argument(..., metavar="IMAGE|DIR|GLOB...", show_default=False, help="Images, folders "
                                                                                                  "(searched "
                                                                                                  "recursively) or "
                                                                                                  "quoted globs."),
    bundle: Optional[Path] = bundle_option(),
    lateral: Optional[Path] = typer.Option(None, "--lateral", help="Lateral view of the same study (with one frontal "
                                                                   "IMAGE)."),
    beam: int = beam_option(),
    threads: Optional[int] = threads_option("Interpreter threads (default 1)."),
    fmt: Optional[str] = typer.Option(None, "--format", help="text, json (JSON Lines) or csv."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write results to this file (re-run to resume). An "
                                                           "existing file is used only if edgecap caption wrote it "
                                                           "in this format and it is not an input."),
    retry_errors: bool = typer.Option(False, "--retry-errors", help="Redo inputs recorded as errors in --out."),
    attention: bool = typer.Option(True, "--attention/--no-attention", help="Per-token attention in json."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar (several inputs)."),
    show_flagged_text: bool = typer.Option(False, "--show-flagged-text", help="For flagged inputs (not a chest "
                                                                              "X-ray, or too small), also write "
                                                                              "the model's text, marked as not "
                                                                              "describing the image: JSON and CSV "
                                                                              "'flagged_text' (never 'text')."),
    max_megapixels: float = typer.Option(DEFAULT_MAX_MEGAPIXELS, "--max-megapixels", min=0.01, help="Refuse images "
                                                                                                    "with more "
                                                                                                    "pixels (in "
                                                                                                    "millions, read "
                                                                                                    "from the header "
                                                                                                    "before "
                                                                                                    "decoding): an "
                                                                                                    "error record, "
                                                                                                    "the batch goes "
                                                                                                    "on. The default "
                                                                                                    "is sized for a "
                                                                                                    "4 GB device."),
) -> None:
    """Write reports for chest X-ray images (PNG 8/16-bit, JPEG, BMP, TIFF, DICOM), folders or globs.

    Several inputs: a progress bar on stderr, each result written as it comes; re-run to resume an --out.
    Formats: text, json (JSON Lines), csv; default from the --out suffix (.jsonl, .json, .csv), else text.
    Flagged inputs (not a chest X-ray, or too small) get status "flagged" and no report text.

    Exit status: 0 all captioned; 1 some input failed or the output could not be written (the rest is
    kept); 2 bad usage, a refused --out or a bundle error; 3 all captioned, but some input flagged;
    130 interrupted. Precedence: 2, then 1, then 3.
    """
    with interrupt_exits_at_once():  # nothing is written before the batch: Ctrl-C ends at once, exit 130
        from edgecap.cli.batch import OutputError, run_batch

        sink, captioner, paths, unmatched = _prepare(inputs, bundle, lateral, threads, fmt, out, retry_errors,
                                                     max_megapixels)
    try:
        with sink:
            try:
                summary = run_batch(
                    captioner,
                    paths,
                    sink,
                    beam=beam,
                    lateral=lateral,
                    retry_errors=retry_errors,
                    progress=progress,
                    attention=attention,
                    show_flagged_text=show_flagged_text,
                )
            except KeyboardInterrupt:
                typer.echo(
                    f"\ninterrupted: results so far are in {out or 'the output'}; run the same command to resume",
                    err=True,
                )
                raise typer.Exit(EXIT_INTERRUPTED) from None
    except OutputError as e:
        fail(str(e), EXIT_FAILED)
    summary.failed += len(unmatched)
    if len(paths) > 1 or out is not None:
        typer.echo(
            f"{summary.captioned} captioned, {summary.skipped} already done, {summary.failed} failed, "
            f"{summary.flagged} flagged (not a chest X-ray, or too small)" + (f" -> {out}" if out else ""),
            err=True,
        )
    code = summary.exit_code()
    if code:
        raise typer.Exit(code)


def _prepare(
    inputs: List[str],
    bundle: Optional[Path],
    lateral: Optional[Path],
    threads: Optional[int],
    fmt: Optional[str],
    out: Optional[Path],
    retry_errors: bool,
    max_megapixels: float,
) -> tuple[Sink, Optional[Captioner], list[Path], list[str]]:
    """Inputs expanded, the output opened (its records read) and the bundle loaded when some input is not done
    yet: (sink, captioner or None, paths, specs that matched nothing). Usage errors end the command (exit 2)."""
    from edgecap.cli.batch import BatchError, expand_inputs, format_for, input_key, is_done

    quiet_opencv()  # our error line says what is wrong with an image; not libpng's too
    try:
        fmt = format_for(out, fmt)
    except BatchError as e:
        fail(str(e))
    paths, unmatched = expand_inputs(inputs)
    for spec in unmatched:
        error(f"{spec}: matched no image files")
    if not paths:
        fail("no input images")
    if lateral is not None and len(paths) != 1:
        fail(f"--lateral goes with exactly one frontal image, got {len(paths)}")
    sink = _open_output(out, fmt, paths + ([lateral] if lateral is not None else []))
    try:
        done = sink.done()
        pending = any(not is_done(done, input_key(p, lateral), retry_errors) for p in paths)
        captioner = _load(bundle, threads, max_megapixels) if pending else None  # all done: no bundle needed
    except BaseException:  # a bundle error (exit 2): the output is closed, its lock released
        sink.close()
        raise
    return sink, captioner, paths, unmatched


def _open_output(out: Optional[Path], fmt: str, inputs: list[Path]) -> Sink:
    """The sink of --out (stdout without it), its earlier records read; a usage error, the file untouched,
    when it is one of the inputs, not an output of edgecap caption, locked by another run or unusable."""
    from edgecap.cli.batch import BatchError, open_sink

    try:
        return open_sink(out, fmt, inputs)
    except BatchError as e:
        fail(str(e))


def _load(bundle: Optional[Path], threads: Optional[int], max_megapixels: float) -> Captioner:
    from edgecap.runtime.bundle import BundleError
    from edgecap.runtime.captioner import Captioner
    from edgecap.runtime.interpreter import InterpreterUnavailable

    try:
        return Captioner.from_bundle(bundle, num_threads=threads, max_pixels=int(max_megapixels * MEGAPIXEL))
    except (BundleError, InterpreterUnavailable) as e:
        fail(str(e))
