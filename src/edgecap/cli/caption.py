"""`edgecap caption`: reports for chest X-ray images from a converted bundle, offline, without TensorFlow.

    edgecap caption chest.png                                  # the default bundle, text on stdout
    edgecap caption frontal.dcm --lateral lateral.dcm --format json
    edgecap caption scans/ "more/**/*.png" --out reports.jsonl # batch: progress bar, resumable
    edgecap caption scans/ --out reports.csv --bundle bundles/int8 --threads 2
    edgecap caption --list studies.csv --out reports.jsonl     # study,frontal,lateral per line
    edgecap caption scans/ --studies none                      # one report per image, never paired

Studies (cli.study_inputs): by default (--studies auto) images with IU X-Ray / Open-i / Kaggle names
(CXR54_IM-2145-1001.png) are grouped by study, the frontal and lateral views captioned together into one
record, and a folder of study folders (one or two images each) likewise; --studies folders takes every
first-level subfolder as a study, names only the file names, none one report per image. --list FILE (.csv
with a header naming frontal, lateral, study; or .jsonl objects with those keys; paths relative to the
list) names the studies outright. An unreadable view makes its study an error record; the others go on.

Batch behaviour, output formats, which existing --out is used, the lock and resume: cli.batch. An input that
does not look like a chest X-ray or is too small to read one is "flagged": its record carries the reasons and
no report text, unless --show-flagged-text (then in "flagged_text", marked as not describing the image).
An image over --max-megapixels (from its header, before decoding) is an error record. Exit status:

    0  every input captioned, none flagged
    1  some input failed (unreadable, corrupt, unsupported, over the pixel limit, missing; a glob or folder
       that matched nothing): the others were still captioned and written; or a record could not be written
       (disk full: the error names ENOSPC; the records before it are kept, the same command resumes)
    2  bad usage, no input that exists (every image given is missing, or the --lateral view), a refused --out
       (one of the inputs, not written by edgecap caption, or being written by another run; left untouched) or
       an unusable bundle (missing, corrupt, no interpreter; a training run directory: convert it first):
       nothing captioned
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
    warn,
)
from edgecap.runtime.image_header import DEFAULT_MAX_MEGAPIXELS

if TYPE_CHECKING:
    from edgecap.cli.batch import Sink
    from edgecap.cli.study_inputs import StudyInput
    from edgecap.runtime.captioner import Captioner

MEGAPIXEL = 1_000_000


def caption(
    inputs: Optional[List[str]] = typer.Argument(None, metavar="IMAGE|DIR|GLOB...", show_default=False,
                                                 help="Images, folders (searched recursively) or quoted globs."),
    bundle: Optional[Path] = bundle_option(),
    lateral: Optional[Path] = typer.Option(None, "--lateral", help="Lateral view of the same study (with one frontal "
                                                                   "IMAGE)."),
    studies: str = typer.Option("auto", "--studies", help="Pair a study's views into one report: auto (IU "
                                                          "X-Ray file names, and folders of one or two "
                                                          "images each), names, folders (each subfolder one "
                                                          "study), none (one report per image)."),
    study_list: Optional[Path] = typer.Option(None, "--list", help="A .csv (header: study,frontal,lateral) or "
                                                                   ".jsonl list of studies, paths relative to "
                                                                   "it: one report each."),
    beam: int = beam_option(),
    threads: Optional[int] = threads_option("Interpreter threads (default 1)."),
    jobs: int = typer.Option(1, "--jobs", min=1, help="Processes, each with its own interpreter (--threads each): a "
                                                      "large archive on many cores. 1: in this process."),
    shard: Optional[str] = typer.Option(None, "--shard", help="I/N: only inputs I, I+N, I+2N... (from 0) of the "
                                                              "inputs, grouped into studies: one of N machines, "
                                                              "each with its own --out."),
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
    A study's frontal and lateral images give one report: by IU X-Ray file names and folders of one or two
    images (--studies auto), or listed (--list); --studies none: one report per image.

    Exit status: 0 all captioned; 1 some input failed or the output could not be written (the rest is
    kept); 2 bad usage, a refused --out or a bundle error; 3 all captioned, but some input flagged;
    130 interrupted. Precedence: 2, then 1, then 3.
    """
    with interrupt_exits_at_once():  # nothing is written before the batch: Ctrl-C ends at once, exit 130
        from edgecap.cli.batch import OutputError, run_batch

        sink, captioner, paths, unmatched = _prepare(inputs or [], studies, study_list, bundle, lateral, threads,
                                                     fmt, out, retry_errors, max_megapixels, shard)
    _say_if_demonstration(captioner)
    try:
        with sink, _jobs(jobs, captioner, paths, sink, lateral, retry_errors, bundle, threads, max_megapixels,
                         beam) as worker:
            try:
                summary = run_batch(
                    worker,
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
    studies: str,
    study_list: Optional[Path],
    bundle: Optional[Path],
    lateral: Optional[Path],
    threads: Optional[int],
    fmt: Optional[str],
    out: Optional[Path],
    retry_errors: bool,
    max_megapixels: float,
    shard: Optional[str] = None,
) -> tuple[Sink, Optional[Captioner], list[Path | StudyInput], list[str]]:
    """Inputs expanded and grouped into studies, the output opened (its records read) and the bundle loaded
    when some input is not done yet: (sink, captioner or None, images or studies, specs that matched
    nothing). Usage errors end the command (exit 2)."""
    from edgecap.cli.batch import BatchError, format_for, is_done, item_key
    from edgecap.cli.study_inputs import all_images

    quiet_opencv()  # our error line says what is wrong with an image; not libpng's too
    try:
        fmt = format_for(out, fmt)
    except BatchError as e:
        fail(str(e))
    paths, unmatched = _gather(inputs, studies, study_list, lateral)
    if shard is not None:
        from edgecap.cli.parallel import take_shard

        try:
            paths = take_shard(paths, shard)
        except ValueError as e:
            fail(str(e))
    if lateral is not None and len(paths) != 1:
        fail(f"--lateral goes with exactly one frontal image, got {len(paths)}")
    _refuse_all_missing(all_images(paths), lateral)
    given = [p for p in (lateral, study_list) if p is not None]
    sink = _open_output(out, fmt, all_images(paths) + given)
    try:
        done = sink.done()
        pending = any(not is_done(done, item_key(p, lateral), retry_errors) for p in paths)
        captioner = _load(bundle, threads, max_megapixels) if pending else None  # all done: no bundle needed
    except BaseException:  # a bundle error (exit 2): the output is closed, its lock released
        sink.close()
        raise
    return sink, captioner, paths, unmatched


def _gather(
    inputs: List[str], studies: str, study_list: Optional[Path], lateral: Optional[Path]
) -> tuple[list[Path | StudyInput], list[str]]:
    """The run's images (--studies none, or --lateral: the pair is given) or studies, grouped and listed;
    specs that matched nothing are reported. Usage errors (no input, a bad mode or list) end the command."""
    from edgecap.cli.study_inputs import STUDY_MODES, StudyListError, group_inputs, read_study_list

    if studies not in STUDY_MODES:
        fail(f"unknown --studies {studies!r}: choose {', '.join(STUDY_MODES)}")
    if not inputs and study_list is None:
        fail("no input: give images, folders or globs (IMAGE|DIR|GLOB...), or a study list (--list FILE)")
    if lateral is not None and study_list is not None:
        fail("--lateral goes with one frontal IMAGE, not with --list (a list names each study's lateral)")
    items: list[Path | StudyInput]
    grouped, unmatched, how = group_inputs(inputs, "none" if lateral is not None else studies)
    items = list(grouped)
    for spec in unmatched:
        error(f"{spec}: matched no image files")
    if how:
        typer.echo(f"{how}; --studies none: one report per image", err=True)
    if study_list is not None:
        try:
            listed, ignored = read_study_list(study_list)
        except StudyListError as e:
            fail(str(e))
        if ignored:
            warn(f"{study_list}: columns {', '.join(ignored)} ignored (read: study, frontal, lateral)")
        items += listed
    if not items:
        fail("no input images" if study_list is None else f"{study_list}: lists no study")
    return items, unmatched


def _refuse_all_missing(images: list[Path], lateral: Optional[Path]) -> None:
    """Exit 2 (bad usage, nothing done) when no input image exists, or the --lateral view does not: a missing
    file among inputs that exist is an error record like a corrupt one, and the batch goes on (exit 1)."""
    if lateral is not None and not lateral.exists():
        fail(f"{lateral}: no such file (--lateral)")
    missing = [p for p in images if not p.exists()]
    if missing and len(missing) == len(images):
        for p in missing[:-1]:
            error(f"{p}: no such file")
        fail(f"{missing[-1]}: no such file")


def _open_output(out: Optional[Path], fmt: str, inputs: list[Path]) -> Sink:
    """The sink of --out (stdout without it), its earlier records read; a usage error, the file untouched,
    when it is one of the inputs, not an output of edgecap caption, locked by another run or unusable."""
    from edgecap.cli.batch import BatchError, open_sink

    try:
        return open_sink(out, fmt, inputs)
    except BatchError as e:
        fail(str(e))


def _jobs(jobs: int, captioner: Optional[Captioner], paths: list, sink: Sink, lateral: Optional[Path],
          retry_errors: bool, bundle: Optional[Path], threads: Optional[int], max_megapixels: float, beam: int):
    """--jobs N > 1: a cli.parallel.PoolCaptioner (N processes) over the inputs not yet in the output, as a
    context that stops its workers on leaving; else the captioner itself."""
    from contextlib import nullcontext

    if jobs < 2 or captioner is None:
        return nullcontext(captioner)
    from edgecap.cli.parallel import PoolCaptioner, todo_studies

    todo = todo_studies(paths, sink.done(), lateral, retry_errors)
    load = dict(path=bundle, num_threads=threads, max_pixels=int(max_megapixels * MEGAPIXEL))
    return PoolCaptioner(captioner, min(jobs, max(len(todo), 1)), todo, load, beam)


def _say_if_demonstration(captioner: Optional[Captioner]) -> None:
    """One stderr line per run (not per image) when the bundle is a demonstration model (its notice says so)."""
    from edgecap.runtime.manifest import DEFAULT_NOTICE
    from edgecap.runtime.report import DEMONSTRATION_LINE, is_demonstration

    notice = str(captioner.bundle_info.get("notice") or "") if captioner is not None else ""
    if is_demonstration(notice):
        own = f" The bundle says: {notice}." if notice.strip().lower() != DEFAULT_NOTICE else ""
        typer.echo(f"warning: {DEMONSTRATION_LINE}{own}", err=True)


def _load(bundle: Optional[Path], threads: Optional[int], max_megapixels: float) -> Captioner:
    from edgecap.runtime.bundle import BundleError
    from edgecap.runtime.captioner import Captioner
    from edgecap.runtime.interpreter import InterpreterUnavailable

    try:
        return Captioner.from_bundle(bundle, num_threads=threads, max_pixels=int(max_megapixels * MEGAPIXEL))
    except (BundleError, InterpreterUnavailable) as e:
        fail(str(e))
