"""`edgecap convert`: run directory -> verified TFLite bundle.

    edgecap convert --run runs/demo --out bundles/demo-int8 --int8 [--calibration DATA_OR_IMAGES] [--samples 200]
    edgecap convert --run runs/demo --out bundles/demo-int8 --int8 --sign-key ~/keys/maintainers.pem

Modes (convert.modes.MODES): --float32, --float16, --dynamic, --int8 (float16 encoder + int8 decoder, the
edge default), --int8-full (int8 encoder too, where its verification passes).

One flag per row of convert.modes.MODES (the function's signature is built from the table); the defaults of
--samples, --decoder-samples, --verify-studies and --step-batch are convert.pipeline's. --sign-key signs the
verified bundle (manifest.sig, runtime.signing); a bundle that fails verification is left unsigned. Exit status:
0 converted and verified; 1 converted, but verification missed the mode's thresholds (the manifest is still
written, with the failing verification) or the converter failed; 2 bad usage (not a run directory, no
images, no or several modes, an unusable signing key).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from edgecap.cli.common import EXIT_FAILED, fail, print_table, quiet_tensorflow, require_module, threads_option
from edgecap.convert.modes import MODES
from edgecap.convert.pipeline import DECODER_SAMPLES, DEFAULT_SAMPLES, STEP_BATCH, VERIFY_STUDIES


def convert(
    run: Path = typer.Option(..., "--run", help="Run directory (edgecap train)."),
    out: Path = typer.Option(..., "--out", help="Bundle folder to write (one folder per mode)."),
    calibration: Optional[Path] = typer.Option(None, "--calibration", help="int8: an IU X-Ray data folder or a "
                                                                           "folder of images (default: the run's own "
                                                                           "data)."),
    samples: int = typer.Option(DEFAULT_SAMPLES, "--samples", min=1, help="int8 modes: calibration images (real ones "
                                                                          "first, then augmentations of them), "
                                                                          "decoded by Keras to record the decoder's "
                                                                          "calibration steps; --int8-full also "
                                                                          "calibrates the encoder on them."),
    decoder_samples: int = typer.Option(DECODER_SAMPLES, "--decoder-samples", min=1, help="int8: recorded decoder "
                                                                                          "steps used for "
                                                                                          "calibration."),
    verify_studies: int = typer.Option(VERIFY_STUDIES, "--verify-studies", min=1, help="Studies whose reports are "
                                                                                       "compared with the Keras "
                                                                                       "model's (test split first)."),
    threads: Optional[int] = threads_option("Interpreter threads for verification."),
    step_batch: int = typer.Option(STEP_BATCH, "--step-batch", min=1, help="Rows of one decoder call: a beam of this "
                                                                           "size advances in one call (smaller beams "
                                                                           "are padded; 1 = fastest greedy)."),
    sign_key: Optional[Path] = typer.Option(None, "--sign-key", help="A private key (PEM, edgecap bundle keygen): "
                                                                     "sign the bundle once verified (manifest.sig)."),
    **modes: bool,
) -> None:
    """Convert a trained run to an edge bundle (encoder + decoder step .tflite, vocab, manifest) and verify it
    against the Keras model on real images."""
    chosen = [_MODE_OF_PARAM[name] for name, on in modes.items() if on]
    if len(chosen) != 1:
        flags = " | ".join(m.flag for m in MODES.values())
        fail(f"choose exactly one mode: {flags}" + (f" (got {len(chosen)})" if chosen else ""))
    quiet_tensorflow()
    require_module("tensorflow", "edgecap convert needs TensorFlow: pip install 'edgecap[train]'")
    options = dict(calibration=calibration, samples=samples, verify_studies=verify_studies, num_threads=threads,
                   decoder_samples=decoder_samples, step_batch=step_batch, sign_key=sign_key)
    r = _convert(run, out, chosen[0], options)
    from edgecap.convert.verify import table

    m = r.manifest
    typer.echo("")
    print_table(table(m.verification), align="l")
    typer.echo("")
    for f in m.files.values():
        typer.echo(f"{out / f.path}  {f.bytes / 1e6:.2f} MB  {f.precision}  {len(f.ops)} op types, builtin only")
    typer.echo(
        f"{out / 'manifest.json'}  (mode {m.mode}, tflite-runtime 2.14: "
        f"{'yes' if m.runtime['tflite_runtime_2_14'] else 'no'}; {m.notice})"
    )
    if not r.passed:
        failed = ", ".join(k for k, ok in m.verification["checks"].items() if not ok)
        fail(
            f"verification missed the {m.mode} thresholds ({failed}); the manifest records the failing verification",
            EXIT_FAILED,
        )
    signed = f", signed by {r.signer.name} (key id {r.signer.key_id})" if r.signer else ""
    typer.echo(f"converted and verified in {r.seconds:.0f} s{signed}\nnext: edgecap caption IMAGE --bundle {out}")


def _convert(run: Path, out: Path, mode: str, options: dict[str, Any]) -> Any:
    """convert.pipeline.convert_run on one CPU; its errors as exit status 2 (bad input) or 1 (conversion)."""
    from edgecap.convert import pipeline

    pipeline.pin_to_one_cpu()  # before TensorFlow is imported: calibration that does not depend on the core count
    from edgecap.convert.export import ConversionError
    from edgecap.runtime.bundle import BundleError

    try:
        return pipeline.convert_run(run, out, mode, log=typer.echo, **options)
    except pipeline.ConvertError as e:
        fail(str(e))
    except (ConversionError, BundleError) as e:
        fail(str(e), EXIT_FAILED)


def _param(mode: str) -> str:
    return mode.replace("-", "_")


_MODE_OF_PARAM = {_param(m): m for m in MODES}


def _with_mode_flags(func: Callable[..., None]) -> Callable[..., None]:
    """Replace **modes by one boolean option per row of MODES (Typer reads __signature__)."""
    sig = inspect.signature(func)
    params = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    for m in MODES.values():
        t = m.thresholds
        text = (
            f"{m.encoder.precision} encoder, {m.decoder.precision} decoder; reports must match Keras "
            f">= {t.min_identical:.0%}."
        )
        params.append(
            inspect.Parameter(
                _param(m.name),
                inspect.Parameter.KEYWORD_ONLY,
                annotation=bool,
                default=typer.Option(False, m.flag, help=text),
            )
        )
    func.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    return func


convert = _with_mode_flags(convert)
