"""`edgecap convert`: run directory -> verified TFLite bundle.

    edgecap convert --run runs/demo --out bundles/demo-int8 --int8 [--calibration DATA_OR_IMAGES] [--samples 200]
    edgecap convert --run runs/demo --out bundles/demo-int8 --int8 --sign-key ~/keys/maintainers.pem
    edgecap convert --keras model.keras --tokenizer tokenizer.json --encoder-app DenseNet121 \
        --encoder-weights densenet121_notop.h5 --out bundles/mine-int8 --int8      (a user's Keras captioner)

Modes (convert.modes.MODES): --float32, --float16, --dynamic, --int8 (int8 encoder with its most error-prone small
layers in float32 + int8 decoder, the edge default), --int8-full (every encoder layer int8, where its
verification passes).

One flag per row of convert.modes.MODES (the function's signature is built from the table); the defaults of
--samples, --decoder-samples, --verify-studies and --step-batch are convert.pipeline's. --sign-key signs the
verified bundle (manifest.sig, runtime.signing); a bundle that fails verification is left unsigned. Exit status:
0 converted and verified; 1 converted, but verification missed the mode's thresholds (the manifest is still
written, with the failing verification) or the converter failed; 2 bad usage (not a run directory, no
images, no or several modes, an unusable signing key; with --keras: not a Keras file, a model whose inputs are
not image features + token sequence, a tokenizer whose size is not the model's vocabulary or that lacks the
start / end word, an encoder whose features do not fit: convert.keras_import).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from edgecap.cli.common import EXIT_FAILED, fail, print_table, quiet_tensorflow, require_module, threads_option
from edgecap.convert.defaults import DECODER_SAMPLES, DEFAULT_SAMPLES, STEP_BATCH, VERIFY_STUDIES
from edgecap.convert.modes import MODES, by_name, runtime_214_support


def convert(
    run: Optional[Path] = typer.Option(None, "--run", help="Run directory (edgecap train)."),
    out: Path = typer.Option(..., "--out", help="Bundle folder to write (one folder per mode)."),
    keras: Optional[Path] = typer.Option(None, "--keras", help="Instead of --run: your Keras captioner (.keras or "
                                                               ".h5): [image features, padded token sequence] -> "
                                                               "softmax (docs/bring-your-own-model.md)."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="--keras: the Keras Tokenizer, saved with "
                                                                       "tokenizer.to_json()."),
    encoder: Optional[Path] = typer.Option(None, "--encoder", help="--keras: the CNN giving the features (.keras / "
                                                                   ".h5, image -> (F,))."),
    encoder_app: Optional[str] = typer.Option(None, "--encoder-app", help="--keras: or a keras.applications name "
                                                                          "(DenseNet121, InceptionV3, ...) ..."),
    encoder_weights: Optional[Path] = typer.Option(None, "--encoder-weights", help="... with its downloaded "
                                                                                   "weights file (no top)."),
    normalization: Optional[str] = typer.Option(None, "--normalization", help="--encoder: its input mode, caffe | "
                                                                              "torch | tf | raw (preprocess_input)."),
    start: str = typer.Option("startseq", "--start", help="--keras: the word captions start with."),
    end: str = typer.Option("endseq", "--end", help="--keras: the word captions end with."),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="--keras: the padded sequence length "
                                                                        "(default: the model's)."),
    padding: str = typer.Option("pre", "--padding", help="--keras: pad_sequences' padding, pre | post."),
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
    if (run is None) == (keras is None):
        fail("give one model: --run RUN_DIR (edgecap train), or --keras MODEL --tokenizer TOKENIZER.json")
    if keras is not None and tokenizer is None:
        fail("--keras needs --tokenizer TOKENIZER.json (the Keras Tokenizer the model was trained with)")
    keras_only = {"--tokenizer": tokenizer, "--encoder": encoder, "--encoder-app": encoder_app,
                  "--encoder-weights": encoder_weights, "--normalization": normalization, "--max-length": max_length}
    if run is not None and any(v is not None for v in keras_only.values()):
        fail(f"{', '.join(k for k, v in keras_only.items() if v is not None)}: only with --keras")
    quiet_tensorflow()
    require_module("tensorflow", "edgecap convert needs TensorFlow: pip install 'edgecap[train]'")
    options = dict(calibration=calibration, samples=samples, verify_studies=verify_studies, num_threads=threads,
                   decoder_samples=decoder_samples, step_batch=step_batch, sign_key=sign_key)
    source: Any = run
    if keras is not None:
        from edgecap.convert.keras_import import KerasImport

        assert tokenizer is not None  # checked above
        source = KerasImport(keras, tokenizer, encoder, encoder_app, encoder_weights, start, end, max_length, padding,
                             normalization)
    r = _convert(source, out, chosen[0], options)
    from edgecap.convert.verify import table

    m = r.manifest
    typer.echo("")
    print_table(table(m.verification), align="l")
    typer.echo("")
    for f in m.files.values():
        typer.echo(f"{out / f.path}  {f.bytes / 1e6:.2f} MB  {f.precision}  {len(f.ops)} op types, builtin only")
    typer.echo(
        f"{out / 'manifest.json'}  (mode {m.mode}, tflite-runtime 2.14: "
        f"{runtime_214_support(by_name(m.mode)) if m.decoder.kind == 'recurrent' else 'not checked'}; {m.notice})"
    )
    if not r.passed:
        failed = ", ".join(k for k, ok in m.verification["checks"].items() if not ok)
        fail(
            f"verification missed the {m.mode} thresholds ({failed}); the manifest records the failing verification",
            EXIT_FAILED,
        )
    signed = f", signed by {r.signer.name} (key id {r.signer.key_id})" if r.signer else ""
    typer.echo(f"converted and verified in {r.seconds:.0f} s{signed}\nnext: edgecap caption IMAGE --bundle {out}")


def _convert(source: Any, out: Path, mode: str, options: dict[str, Any]) -> Any:
    """convert.pipeline.convert_run (a run folder) or convert.keras_import.convert_keras (a KerasImport) on one
    CPU; their errors as exit status 2 (bad input) or 1 (conversion)."""
    from edgecap.convert import pipeline

    pipeline.pin_to_one_cpu()  # before TensorFlow is imported: calibration that does not depend on the core count
    from edgecap.progress import Progress

    Progress()("loading TensorFlow")
    from edgecap.convert.export import ConversionError
    from edgecap.runtime.bundle import BundleError

    try:
        if isinstance(source, Path):
            return pipeline.convert_run(source, out, mode, log=Progress(), **options)
        from edgecap.convert.keras_import import convert_keras

        return convert_keras(source, out, mode, log=Progress(), **options)
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
