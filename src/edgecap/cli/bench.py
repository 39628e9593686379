"""`edgecap bench`: latency, memory, size and report drift of bundles against the Keras model.

    edgecap bench                                   the default bundle against its own reference run
    edgecap bench --run default                     that reference converted into every mode, all measured
    edgecap bench --run runs/edge --threads 1,2 --json bench.json --markdown bench.md --plot bench.png
    edgecap bench --bundle bundles/a --bundle bundles/b --run runs/edge
    edgecap bench --from bench.json --check targets  re-check (or re-render) a saved result, no measurement

Exit status: 0 measured (and every --check passed); 1 a --check failed; 2 bad usage (no such run or bundle,
unreadable --check, no TensorFlow for the Keras reference). A variant that fails to load or crashes is a status
in its row, not an exit status of its own: gate on it with --check.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Optional

import typer

from edgecap.cli.common import EXIT_FAILED, beam_option, bundle_option, fail, quiet_tensorflow, require_module


def bench(
    run: Optional[str] = typer.Option(None, "--run", help="Reference run directory (Keras model); 'default' = the "
                                                          "run the default bundle was converted from. Without "
                                                          "--bundle, the run is converted into every mode (cached) "
                                                          "and all are measured."),
    bundle: Optional[List[str]] = bundle_option("Bundle folder to measure (repeatable; 'default' = the shipped "
                                                "bundle)."),
    modes: Optional[str] = typer.Option(None, "--modes", help="With --run: modes to convert and measure, e.g. "
                                                              "float32,int8 (default: all when no --bundle is given)."),
    data: Optional[Path] = typer.Option(None, "--data", help="IU X-Ray folder whose studies with images (and views "
                                                             "derived from them) are the inputs (default: the "
                                                             "packaged sample)."),
    threads: str = typer.Option("1,2,4", "--threads", help="Thread counts, e.g. 1,2,4 (--quick: the first)."),
    quick: bool = typer.Option(False, "--quick", help="20 inputs, first thread count, short runs (< 2 min)."),
    beam: int = beam_option("Beam size of the reports (1 = greedy)."),
    inputs: int = typer.Option(100, "--inputs", help="Input studies: the real ones plus derived views up to N; from "
                                                     "a folder with more, a seeded sample of N real ones."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the result (docs/bench.md schema)."),
    markdown_out: Optional[Path] = typer.Option(None, "--markdown", help="Write the result as a Markdown page."),
    plot_out: Optional[Path] = typer.Option(None, "--plot", help="PNG: latency against size, drift as colour."),
    check: Optional[str] = typer.Option(None, "--check", help="Thresholds, e.g. "
                                                              "'int8:identical>=0.95,int8:speedup>=5' or 'targets' "
                                                              "(exit 1 when one fails)."),
    from_json: Optional[Path] = typer.Option(None, "--from", help="Use a saved --json result instead of measuring."),
) -> None:
    """Latency, memory, size and report drift of every bundle against the full Keras model."""
    quiet_tensorflow()
    from edgecap.benchmarks import checks as chk

    parsed = None
    if check is not None:
        try:
            parsed = chk.parse(check)
        except chk.CheckSyntaxError as e:
            fail(str(e))
    if beam < 1 or inputs < 1:
        fail("--beam and --inputs must be at least 1")
    if from_json is not None:
        result = _load_result(from_json)
    else:
        result = _measure(run, bundle or [], modes, data, threads, quick, beam, inputs)
        from edgecap.data.rehearsal import notice_of

        notice = next((n for n in map(notice_of, [data, run, *(bundle or [])]) if n), None)
        if notice:  # made from rehearsal data (docs/scale.md): the figures are costs, not quality
            result["rehearsal"] = notice
            typer.echo(f"warning: {notice}", err=True)
    if parsed is not None:
        result["checks"] = chk.evaluate(result, parsed)
    _write(result, json_out, markdown_out, plot_out)
    if parsed is not None and not all(c["passed"] for c in result["checks"]):
        raise typer.Exit(EXIT_FAILED)


def _int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        fail(f"{what} must be positive integers separated by commas, e.g. 1,2,4 (got {text!r})")
    return values


def _load_result(path: Path) -> dict[str, Any]:
    """A saved `--json` result (format edgecap-bench/1); a usage error when it is not one."""
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        fail(f"{path}: cannot read a bench result: {e}")
    if not isinstance(result, dict) or result.get("format") != "edgecap-bench/1":
        fail(f"{path}: not an edgecap bench result (format edgecap-bench/1)")
    return result


def _measure(
    run: Optional[str],
    bundles: list[str],
    modes: Optional[str],
    data: Optional[Path],
    threads: str,
    quick: bool,
    beam: int,
    inputs: int,
) -> dict[str, Any]:
    """benchmarks.bench.run_bench with the command's options; progress lines go to stderr."""
    from edgecap.benchmarks.bench import BenchOptions, run_bench
    from edgecap.benchmarks.variants import BenchError

    require_module(
        "tensorflow",
        "edgecap bench compares bundles with the Keras model and needs TensorFlow: pip "
        "install 'edgecap[train]' (the bundles themselves are measured in TensorFlow-free processes)",
    )
    opt = BenchOptions(
        run=run,
        bundles=list(bundles),
        modes=[m.strip() for m in modes.split(",") if m.strip()] if modes else None,
        data=str(data) if data else None,
        threads=_int_list(threads, "--threads"),
        quick=quick,
        beam=beam,
        min_inputs=inputs,
    )
    try:
        return run_bench(opt, log=lambda s: typer.echo(s, err=True))
    except BenchError as e:
        fail(str(e))


def _write(
    result: dict[str, Any], json_out: Optional[Path], markdown_out: Optional[Path], plot_out: Optional[Path]
) -> None:
    """The result on the terminal, then as each file asked for (a "wrote PATH" line each)."""
    from edgecap.benchmarks import render

    typer.echo(render.terminal(result))
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=1))
        typer.echo(f"wrote {json_out}")
    if markdown_out:
        markdown_out.parent.mkdir(parents=True, exist_ok=True)
        markdown_out.write_text(render.markdown(result))
        typer.echo(f"wrote {markdown_out}")
    if plot_out:
        try:
            render.plot(result, plot_out)
            typer.echo(f"wrote {plot_out}")
        except ImportError:
            fail("--plot needs matplotlib: pip install 'edgecap[train]'")
