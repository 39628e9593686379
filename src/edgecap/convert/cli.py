"""`edgecap convert`: run directory -> verified TFLite bundle (the lead registers `convert` in edgecap.cli).

    edgecap convert --run runs/demo --out bundles/demo-int8 --int8 [--calibration DATA_OR_IMAGES] [--samples 200]

Modes (convert.modes.MODES): --float32, --float16, --dynamic, --int8 (float16 encoder + int8 decoder, the
edge default), --int8-full (int8 encoder too, where its verification passes).

One flag per row of convert.modes.MODES (the function's signature is built from the table). Exit status:
0 converted and verified; 1 converted, but verification missed the mode's thresholds (the manifest is still
written, with the failing verification) or the converter failed; 2 bad usage (not a run directory, no
images, no or several modes).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
from pathlib import Path
from typing import Optional

import typer

from edgecap.convert.modes import MODES

EXIT_FAILED, EXIT_USAGE = 1, 2


def _echo_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for j, r in enumerate(rows):
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if j == 0:
            typer.echo("  ".join("-" * w for w in widths))


def convert(
    run: Path = typer.Option(..., "--run", help="Run directory (edgecap train)."),
    out: Path = typer.Option(..., "--out", help="Bundle folder to write (one folder per mode)."),
    calibration: Optional[Path] = typer.Option(None, "--calibration", help="int8: an IU X-Ray data folder or a "
                                               "folder of images (default: the run's own data)."),
    samples: int = typer.Option(200, "--samples", min=1, help="int8 modes: calibration images (real ones first, "
                                "then augmentations of them), decoded by Keras to record the decoder's "
                                "calibration steps; --int8-full also calibrates the encoder on them."),
    decoder_samples: int = typer.Option(2000, "--decoder-samples", min=1, help="int8: recorded decoder steps "
                                        "used for calibration."),
    verify_studies: int = typer.Option(50, "--verify-studies", min=1, help="Studies whose reports are "
                                       "compared with the Keras model's (test split first)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Interpreter threads for verification."),
    step_batch: int = typer.Option(3, "--step-batch", min=1, help="Rows of one decoder call: a beam of this size "
                                   "advances in one call (smaller beams are padded; 1 = fastest greedy)."),
    **modes: bool,
) -> None:
    """Convert a trained run to an edge bundle (encoder + decoder step .tflite, vocab, manifest) and verify it
    against the Keras model on real images."""
    chosen = [_MODE_OF_PARAM[name] for name, on in modes.items() if on]
    if len(chosen) != 1:
        flags = " | ".join(m.flag for m in MODES.values())
        _fail(f"choose exactly one mode: {flags}" + (f" (got {len(chosen)})" if chosen else ""), EXIT_USAGE)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if importlib.util.find_spec("tensorflow") is None:
        _fail("edgecap convert needs TensorFlow: pip install 'edgecap[train]'", EXIT_USAGE)
    from edgecap.convert.pipeline import ConvertError, convert_run, pin_to_one_cpu

    pin_to_one_cpu()  # before TensorFlow is imported: calibration that does not depend on the core count
    from edgecap.convert.export import ConversionError
    from edgecap.convert.verify import table
    from edgecap.runtime.bundle import BundleError

    try:
        r = convert_run(run, out, chosen[0], calibration=calibration, samples=samples, verify_studies=verify_studies,
                        num_threads=threads, decoder_samples=decoder_samples, log=typer.echo,
                        step_batch=step_batch)
    except ConvertError as e:
        _fail(str(e), EXIT_USAGE)
    except (ConversionError, BundleError) as e:
        _fail(str(e), EXIT_FAILED)
    m = r.manifest
    typer.echo("")
    _echo_table(table(m.verification))
    typer.echo("")
    for part, f in m.files.items():
        typer.echo(f"{out / f.path}  {f.bytes / 1e6:.2f} MB  {f.precision}  {len(f.ops)} op types, builtin only")
    typer.echo(f"{out / 'manifest.json'}  (mode {m.mode}, tflite-runtime 2.14: "
               f"{'yes' if m.runtime['tflite_runtime_2_14'] else 'no'}; {m.notice})")
    if not r.passed:
        failed = ", ".join(k for k, ok in m.verification["checks"].items() if not ok)
        _fail(f"verification missed the {m.mode} thresholds ({failed}); the manifest records the failing "
              f"verification", EXIT_FAILED)
    typer.echo(f"converted and verified in {r.seconds:.0f} s\nnext: edgecap caption IMAGE --bundle {out}")


def _fail(message: str, code: int) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _param(mode: str) -> str:
    return mode.replace("-", "_")


_MODE_OF_PARAM = {_param(m): m for m in MODES}


def _with_mode_flags(func):
    """Replace **modes by one boolean option per row of MODES (Typer reads __signature__)."""
    sig = inspect.signature(func)
    params = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    for m in MODES.values():
        t = m.thresholds
        text = (f"{m.encoder.precision} encoder, {m.decoder.precision} decoder; reports must match Keras "
                f">= {t.min_identical:.0%}.")
        params.append(inspect.Parameter(_param(m.name), inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                                        default=typer.Option(False, m.flag, help=text)))
    func.__signature__ = sig.replace(parameters=params)
    return func


convert = _with_mode_flags(convert)
