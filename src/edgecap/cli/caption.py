"""`edgecap caption`: reports for chest X-ray images from a converted bundle, offline, without TensorFlow.

    edgecap caption chest.png                                  # the default bundle, text on stdout
    edgecap caption frontal.dcm --lateral lateral.dcm --format json
    edgecap caption scans/ "more/**/*.png" --out reports.jsonl # batch: progress bar, resumable
    edgecap caption scans/ --out reports.csv --bundle bundles/int8 --threads 2

Batch behaviour, output formats and resume: cli.batch. Exit status:

    0  every input captioned, all look like chest X-rays
    1  some input failed (unreadable, corrupt, unsupported, missing; a glob or folder that matched nothing);
       the others were still captioned and written
    2  bad usage or an unusable bundle (missing, corrupt, no interpreter): nothing captioned
    3  every input captioned, but some did not look like a chest X-ray (flagged reports)
    130 interrupted (what was written is kept; run the same command to resume)

Precedence: 2, then 1, then 3 (a failed input outranks a flagged one). Bad input never gives a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from edgecap.cli.common import EXIT_INTERRUPTED, beam_option, bundle_option, error, fail, threads_option

if TYPE_CHECKING:
    from edgecap.cli.batch import Sink
    from edgecap.runtime.captioner import Captioner


def caption(
    inputs: List[str] = typer.Argument(..., metavar="IMAGE|DIR|GLOB...", show_default=False, help="Images, folders "
                                                                                                  "(searched "
                                                                                                  "recursively) or "
                                                                                                  "quoted globs."),
    bundle: Optional[Path] = bundle_option(),
    lateral: Optional[Path] = typer.Option(None, "--lateral", help="Lateral view of the same study (with one frontal "
                                                                   "IMAGE)."),
    beam: int = beam_option(min=1),
    threads: Optional[int] = threads_option("Interpreter threads (default 1)."),
    fmt: Optional[str] = typer.Option(None, "--format", help="text, json (JSON Lines) or csv."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write results to this file (re-run to resume)."),
    retry_errors: bool = typer.Option(False, "--retry-errors", help="Redo inputs recorded as errors in --out."),
    attention: bool = typer.Option(True, "--attention/--no-attention", help="Per-token attention in json."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar (several inputs)."),
) -> None:
    """Write reports for chest X-ray images (PNG 8/16-bit, JPEG, DICOM), folders or globs.

    Several inputs: a progress bar on stderr, each result written as it comes; re-run to resume an --out.
    Formats: text, json (JSON Lines), csv; default from the --out suffix (.jsonl, .json, .csv), else text.

    Exit status: 0 all captioned; 1 some input failed (the others are written); 2 bad usage or bundle
    error; 3 all captioned, but some input is not a chest X-ray (flagged). Precedence: 2, then 1, then 3.
    """
    import cv2

    from edgecap.cli.batch import BatchError, expand_inputs, format_for, input_key, is_done, run_batch

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # our error line says it; not libpng's too
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
    with _open_output(out, fmt) as sink:
        done = sink.done()
        pending = any(not is_done(done, input_key(p, lateral), retry_errors) for p in paths)
        captioner = _load(bundle, threads) if pending else None  # all done: no bundle needed
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
            )
        except KeyboardInterrupt:
            typer.echo(
                f"\ninterrupted: results so far are in {out or 'the output'}; run the same command to resume", err=True
            )
            raise typer.Exit(EXIT_INTERRUPTED) from None
    summary.failed += len(unmatched)
    if len(paths) > 1 or out is not None:
        typer.echo(
            f"{summary.captioned} captioned, {summary.skipped} already done, {summary.failed} failed, "
            f"{summary.flagged} flagged as not a chest X-ray" + (f" -> {out}" if out else ""),
            err=True,
        )
    code = summary.exit_code()
    if code:
        raise typer.Exit(code)


def _open_output(out: Optional[Path], fmt: str) -> Sink:
    """The sink of --out (stdout without it), its earlier records read; a usage error when it is unusable."""
    from edgecap.cli.batch import BatchError, open_sink

    try:
        return open_sink(out, fmt)
    except BatchError as e:
        fail(str(e))


def _load(bundle: Optional[Path], threads: Optional[int]) -> Captioner:
    from edgecap.runtime.bundle import BundleError
    from edgecap.runtime.captioner import Captioner
    from edgecap.runtime.interpreter import InterpreterUnavailable

    try:
        return Captioner.from_bundle(bundle, num_threads=threads)
    except (BundleError, InterpreterUnavailable) as e:
        fail(str(e))
