"""A user's Keras captioner -> a verified bundle with a sequence-input decoder (`edgecap convert --keras`).

    src = KerasImport(decoder="model.keras", tokenizer="tokenizer.json", encoder_app="DenseNet121",
                      encoder_weights="densenet121_notop.h5")
    result = convert_keras(src, "bundles/mine-int8", "int8")          # convert.pipeline.ConvertResult

The notebook captioners this takes: [image features (B, F), padded partial sequence (B, L)] -> softmax (B, V),
"merge" (features and the sequence's LSTM output added) or "inject" (features as the LSTM's initial state),
trained on a Keras Tokenizer's ids with start / end words around each caption. The image features come from
a Keras CNN file (--encoder, its output pooled to (B, F)) or a keras.applications model built here from a
local weights file (--encoder-app, --encoder-weights; include_top=False, pooling="avg").

Stages, as convert.pipeline's for a run:

    load         tokenizer -> vocabulary (runtime.tokenizer); decoder and encoder loaded and checked against it
                 and each other (every mismatch a ConvertError, one line: `edgecap convert` exits 2)
    sources      the packaged real IU X-Ray sample (frontal views) to verify on; --calibration, else the same
    calibration  int8 parts: decoder rows (padded prefix + feature vector) recorded while the Keras model
                 decodes real and augmented images with the runtime's loop (convert.calibration.collect)
    export       encoder (1, S, S, 3) -> (1, 1, F); decoder step with unrolled LSTMs (training.keras_sequence)
    manifest     decoder kind "sequence", tokenizer-derived vocab.json, sequence length, padding, the encoder's
                 normalization and input size
    verify       convert.verify against the user's Keras model, the thresholds of convert.modes
    sign         as for a run
Needs TensorFlow.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecap.convert.modes import Mode, by_name
from edgecap.convert.pipeline import (
    ConvertError,
    ConvertOptions,
    ConvertResult,
    Studies,
    convert_parts,
    pick_studies,
    sign,
    signing_key,
)
from edgecap.runtime.manifest import DecoderSpec, InputSpec, Manifest
from edgecap.runtime.normalization import KERAS_APPS, NORMALIZATIONS, channel_stats

if TYPE_CHECKING:
    from edgecap.convert.calibration import Calibration
    from edgecap.runtime.manifest import ModelFile
    from edgecap.runtime.vocab import Vocabulary
    from edgecap.training.keras_sequence import DecoderInfo, KerasSequence

PADDINGS = ("pre", "post")
SEED = 0  # picks verification studies and augmentations: a user model has no training seed to reuse


@dataclass(frozen=True)
class KerasImport:
    """What `edgecap convert --keras` is given."""

    decoder: Path  # the captioner: .keras or legacy .h5
    tokenizer: Path  # tokenizer.to_json(), as written to a file
    encoder: Path | None = None  # a Keras CNN file: image (S, S, 3) -> features (F,)
    encoder_app: str | None = None  # or a keras.applications name (runtime.normalization.KERAS_APPS) ...
    encoder_weights: Path | None = None  # ... and its weights file (include_top=False)
    start: str = "startseq"  # the word each training caption started with
    end: str = "endseq"  # ... and ended with
    max_length: int | None = None  # the padded sequence length (default: the model's sequence input length)
    padding: str = "pre"  # where pad_sequences put the padding: "pre" (its default) or "post"
    normalization: str | None = None  # --encoder only: its preprocess_input mode (runtime.normalization)


@dataclass
class KerasReference:
    """Stage load: the user's models behind the runtime's protocols, and what the manifest says of them."""

    source: KerasImport
    vocab: Vocabulary
    info: DecoderInfo
    decoder: Any  # keras.Model, the user's
    encoder: Any  # keras.Model: image -> (B, F)
    keras: KerasSequence
    normalization: str
    image_size: int
    sequence_length: int  # L
    max_len: int  # tokens per report: L - 1 (or --max-length - 1)

    def model(self, eager: bool = False) -> KerasSequence:
        """Another KerasSequence over the same loaded models (eager: direct Keras calls, no tf.function)."""
        from edgecap.training.keras_sequence import KerasSequence

        k = self.keras
        return KerasSequence(
            self.decoder,
            self.info,
            self.encoder,
            self.vocab,
            k.mean,
            k.std,
            self.image_size,
            self.sequence_length,
            self.max_len,
            self.source.padding,
            str(self.source.decoder),
            eager,
        )


def source_of_bundle(folder: str | Path) -> tuple[KerasImport | None, str]:
    """The user's Keras files a bundle was converted from (its manifest's "source", kind "keras"), when they
    are still where the manifest says (relative to the bundle folder) with the recorded sha256 -> (KerasImport,
    "") or (None, why not). TensorFlow-free: `edgecap bench` finds its Keras reference with it."""
    from edgecap.resources import resolve_portable_path
    from edgecap.runtime.bundle import sha256_file
    from edgecap.runtime.manifest import ManifestError

    folder = Path(folder)
    try:
        m = Manifest.load(folder)
    except ManifestError as e:
        return None, str(e)
    src = m.source or {}
    if src.get("kind") != "keras":
        return None, f"{folder}: not converted from a user's Keras model"
    paths: dict[str, Path | None] = {}
    for key in ("keras_decoder", "tokenizer", "encoder", "encoder_weights"):
        value = src.get(key)
        paths[key] = resolve_portable_path(value, folder) if isinstance(value, str) and value else None
    checks = [("keras_decoder", "keras_decoder_sha256"), ("tokenizer", "tokenizer_sha256")]
    checks.append(("encoder" if paths["encoder"] else "encoder_weights", "encoder_sha256"))
    for key, sha in checks:
        path = paths[key]
        if path is None or not path.is_file():
            return None, f"the {key.replace('_', ' ')} named in {folder}/manifest.json is gone ({src.get(key)})"
        if sha256_file(path) != src.get(sha):
            return None, f"{path} changed since {folder} was converted from it (sha256)"
    d = m.decoder
    decoder, tokenizer = paths["keras_decoder"], paths["tokenizer"]
    assert decoder is not None and tokenizer is not None
    return KerasImport(
        decoder=decoder,
        tokenizer=tokenizer,
        encoder=paths["encoder"],
        encoder_app=src.get("encoder_app"),
        encoder_weights=paths["encoder_weights"],
        start=str(src.get("start", "startseq")),
        end=str(src.get("end", "endseq")),
        max_length=d.sequence_length,
        padding=d.padding or "pre",
        normalization=m.input.normalization,
    ), ""


def load_reference(src: KerasImport, log: Callable[[str], None] = print, eager: bool = False) -> KerasReference:
    """Load and cross-check tokenizer, decoder and encoder; ConvertError (one line) at the first mismatch.
    eager: the reference calls the Keras models directly (the bench's keras-eager row)."""
    from edgecap.runtime.tokenizer import TokenizerError, vocabulary_from_keras_json
    from edgecap.training.keras_sequence import KerasModelError, KerasSequence, inspect_decoder, load_keras_model

    if src.padding not in PADDINGS:
        raise ConvertError(f"--padding must be one of {', '.join(PADDINGS)}, got {src.padding!r}")
    try:
        vocab = vocabulary_from_keras_json(src.tokenizer, src.start, src.end)
        log(f"loading the Keras decoder {src.decoder}")
        decoder = load_keras_model(src.decoder, "model")
        info = inspect_decoder(decoder, str(src.decoder))
    except (TokenizerError, KerasModelError) as e:
        raise ConvertError(str(e)) from None
    if (info.vocab_size, info.embedding_size) != (len(vocab), len(vocab)):
        raise ConvertError(
            f"{src.tokenizer}: the Tokenizer gives {len(vocab)} ids (padding 0 included), but {src.decoder} has an "
            f"Embedding of {info.embedding_size} and an output Dense of {info.vocab_size}: not the tokenizer this "
            f"model was trained with"
        )
    length = _sequence_length(src, info)
    encoder, size, normalization = _encoder(src, log)
    features = int(encoder.outputs[0].shape[-1])
    if features != info.feature_dim:
        raise ConvertError(
            f"the encoder gives {features} features per image, {src.decoder} takes {info.feature_dim}: not the "
            f"feature extractor this model was trained on"
        )
    mean, std = _as_arrays(*channel_stats(normalization))  # (3,) each: runtime.preprocess.normalize per channel
    keras = KerasSequence(
        decoder, info, encoder, vocab, mean, std, size, length, length - 1, src.padding, str(src.decoder), eager
    )
    return KerasReference(src, vocab, info, decoder, encoder, keras, normalization, size, length, length - 1)


def _as_arrays(mean, std):
    import numpy as np

    return np.array(mean, np.float32), np.array(std, np.float32)


def _sequence_length(src: KerasImport, info: DecoderInfo) -> int:
    """L: the model's own sequence length; --max-length must match it (or set it for a model taking any)."""
    length = info.sequence_length
    if src.max_length is not None:
        if src.max_length < 2:
            raise ConvertError("--max-length must be at least 2 (<start> and one word)")
        if length is not None and src.max_length != length:
            raise ConvertError(
                f"--max-length {src.max_length}: {src.decoder} reads sequences of {length} tokens (leave it out)"
            )
        length = src.max_length
    if length is None:
        raise ConvertError(
            f"{src.decoder} takes sequences of any length: pass --max-length (the notebook's max_length)"
        )
    return length


def _encoder(src: KerasImport, log: Callable[[str], None]) -> tuple[Any, int, str]:
    """-> (encoder keras.Model image (B, S, S, 3) -> (B, F), S, normalization name)."""
    from edgecap.training.keras_sequence import KerasModelError, load_keras_model

    if (src.encoder is None) == (src.encoder_app is None):
        raise ConvertError("give the image encoder: --encoder CNN.keras, or --encoder-app NAME --encoder-weights FILE")
    if src.encoder_app is not None:
        model, normalization = _application(src, log)
    else:
        assert src.encoder is not None
        try:
            model = load_keras_model(src.encoder, "encoder")
        except KerasModelError as e:
            raise ConvertError(str(e)) from None
        app = next((a for a in KERAS_APPS.values() if model.name.lower().startswith(a.name.lower())), None)
        normalization = src.normalization or (app.normalization if app else "")
        if not normalization:
            raise ConvertError(
                f"--encoder {src.encoder}: say how its input is normalised: --normalization "
                f"{'|'.join(NORMALIZATIONS)} (the preprocess_input mode of the network it was built from)"
            )
    if normalization not in NORMALIZATIONS:
        raise ConvertError(f"--normalization must be one of {', '.join(NORMALIZATIONS)}, got {normalization!r}")
    where = src.encoder or src.encoder_app
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ConvertError(f"{where}: the encoder must take one image and give one feature vector")
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[1] is None or shape[1] != shape[2] or shape[3] != 3:
        raise ConvertError(f"{where}: the encoder must take square RGB images (batch, S, S, 3), it takes {shape}")
    out = tuple(model.outputs[0].shape)
    if len(out) != 2:
        raise ConvertError(
            f"{where}: the encoder must give a feature vector (batch, F), it gives {out} (pool it: pooling='avg')"
        )
    return model, int(shape[1]), normalization


def _application(src: KerasImport, log: Callable[[str], None]) -> tuple[Any, str]:
    """keras.applications.<NAME>(include_top=False, pooling="avg", weights=None) + the local weights file."""
    from edgecap.training.tf_env import keras

    app = KERAS_APPS.get(src.encoder_app or "")
    if app is None:
        raise ConvertError(f"--encoder-app {src.encoder_app!r}: one of {', '.join(KERAS_APPS)}")
    if src.encoder_weights is None or not Path(src.encoder_weights).is_file():
        raise ConvertError(
            f"--encoder-app {app.name} needs --encoder-weights FILE: the downloaded ImageNet weights "
            f"(the no-top .h5); edgecap downloads nothing"
        )
    log(f"building {app.name} ({app.size} px, {app.normalization} normalization) from {src.encoder_weights}")
    model = getattr(keras.applications, app.name)(
        include_top=False, pooling="avg", weights=None, input_shape=(app.size, app.size, 3)
    )
    try:
        model.load_weights(src.encoder_weights)
    except Exception as e:  # noqa: BLE001 - h5py / Keras raise many types for a file of other weights
        raise ConvertError(
            f"--encoder-weights {src.encoder_weights}: not {app.name} weights without the top "
            f"({type(e).__name__}: {str(e).strip().splitlines()[0][:160] if str(e).strip() else ''})"
        ) from None
    return model, src.normalization or app.normalization


def convert_keras(
    src: KerasImport,
    out: str | Path,
    mode: str,
    options: ConvertOptions | None = None,
    *,
    log: Callable[[str], None] = print,
    **settings: Any,
) -> ConvertResult:
    """Convert and verify one mode, as convert.pipeline.convert_run does for a run (the same options,
    thresholds and result). Raises ConvertError (bad inputs), convert.export.ConversionError."""
    t0 = time.time()
    m = by_name(mode)
    opts = replace(options or ConvertOptions(), **settings)
    opts.check()
    key = signing_key(opts)
    out = Path(out)
    ref = load_reference(src, log)
    studies = sources(ref, opts, log)
    calib, facts = calibrate(ref, studies, m, opts, log)
    files = export(ref, m, calib, opts.step_batch, out, log)
    manifest = write_manifest(ref, m, files, facts, opts, out)
    manifest.verification = verify_bundle(ref, studies, m, opts, out, log)
    manifest.save(out)
    passed = manifest.verification["passed"]
    return ConvertResult(out, m, manifest, passed, time.time() - t0, sign(out, key, passed, log))


def sources(ref: KerasReference, opts: ConvertOptions, log: Callable[[str], None]) -> Studies:
    """The packaged real sample's studies (frontal views) to verify on; --calibration (else the same) to
    calibrate on."""
    from edgecap.convert.calibration import ImagePrep
    from edgecap.convert.sources import SourceError, find_studies
    from edgecap.resources import sample_dir

    try:
        verify_pool = find_studies(sample_dir(), 1)
        cal_pool = find_studies(opts.calibration, 1) if opts.calibration else verify_pool
    except SourceError as e:
        raise ConvertError(str(e)) from None
    return pick_studies(verify_pool, cal_pool, opts.verify_studies, ImagePrep.of(ref.keras, SEED), SEED, log)


def calibrate(
    ref: KerasReference, studies: Studies, m: Mode, opts: ConvertOptions, log: Callable[[str], None]
) -> tuple[Calibration | None, dict | None]:
    """int8 parts: images and decoder rows recorded while the user's Keras model decodes them."""
    from edgecap.convert.calibration import ImagePrep, collect
    from edgecap.convert.sources import choose

    if not m.needs_calibration:
        return None, None
    pool = studies.calibration_pool
    log(f"calibration: {opts.samples} images (real, then augmented) from {pool.describe()}")
    cal_studies = choose(pool.studies, opts.samples, ("train", "val", "test"), SEED)
    try:
        calib = collect(
            ref.keras,
            cal_studies,
            ImagePrep.of(ref.keras, SEED),
            opts.samples,
            SEED,
            opts.decoder_samples,
            pool.describe(),
            log,
        )
    except ValueError as e:
        raise ConvertError(str(e)) from None
    for w in calib.facts["warnings"]:
        log(f"warning: {w}")
    return calib, {**calib.facts, "source_kind": pool.kind}


def export(
    ref: KerasReference, m: Mode, calib: Calibration | None, step_batch: int, out: Path, log: Callable[[str], None]
) -> dict[str, ModelFile]:
    """Encoder and decoder step converted at the mode's precisions, ops checked, written to out."""
    from edgecap.convert.bundle_writer import SEQUENCE_TENSOR_NAMES
    from edgecap.training.keras_sequence import export_decoder, export_encoder

    views = {
        "encoder": export_encoder(ref.encoder, ref.image_size),
        "decoder_step": export_decoder(ref.decoder, ref.info, ref.sequence_length, step_batch),
    }
    return convert_parts(views, m, calib, step_batch, out, log, SEQUENCE_TENSOR_NAMES)


def write_manifest(
    ref: KerasReference, m: Mode, files: dict[str, ModelFile], calibration: dict | None, opts: ConvertOptions, out: Path
) -> Manifest:
    """vocab.json and manifest.json (no verification yet): decoder kind "sequence", the models' hashes."""
    from edgecap.convert.bundle_writer import COLOR, RESIZE, build_sequence_manifest
    from edgecap.resources import portable_path
    from edgecap.runtime.bundle import sha256_file
    from edgecap.runtime.signing import SIGNATURE_NAME

    src, info = ref.source, ref.info
    mean, std = channel_stats(ref.normalization)
    encoder_file = src.encoder or src.encoder_weights
    assert encoder_file is not None
    source = {
        "kind": "keras",
        "keras_decoder": portable_path(src.decoder, out),
        "keras_decoder_sha256": sha256_file(src.decoder),
        "tokenizer": portable_path(src.tokenizer, out),
        "tokenizer_sha256": sha256_file(src.tokenizer),
        "encoder": portable_path(src.encoder, out) if src.encoder else None,
        "encoder_app": src.encoder_app,
        "encoder_weights": portable_path(src.encoder_weights, out) if src.encoder_weights else None,
        "encoder_sha256": sha256_file(encoder_file),
        "start": src.start,
        "end": src.end,
    }
    manifest = build_sequence_manifest(
        out,
        m,
        ref.vocab,
        files,
        source,
        calibration,
        opts.notice,
        image=InputSpec(
            size=ref.image_size,
            channels=3,
            mean=float(sum(mean) / 3),
            std=float(sum(std) / 3),
            color=COLOR,
            resize=RESIZE,
            max_views=1,
            view_order=("frontal",),
            normalization=ref.normalization,
            channel_mean=mean,
            channel_std=std,
        ),
        decoder=DecoderSpec(
            max_len=ref.max_len,
            positions_per_view=1,
            feature_dim=info.feature_dim,
            attention_positions=1,
            vocab_size=len(ref.vocab),
            step_batch=opts.step_batch,
            kind="sequence",
            sequence_length=ref.sequence_length,
            padding=src.padding,
        ),
    )
    # tflite-runtime 2.14 was checked on edgecap's own decoders only; an unrolled user LSTM has other ops
    manifest.runtime.update(tflite_runtime_2_14=False, tflite_runtime_2_14_aarch64=False)
    manifest.runtime["oldest"] = manifest.runtime["verified_with"]
    manifest.save(out)
    (out / SIGNATURE_NAME).unlink(missing_ok=True)
    return manifest


def verify_bundle(
    ref: KerasReference, studies: Studies, m: Mode, opts: ConvertOptions, out: Path, log: Callable[[str], None]
) -> dict:
    """The bundle in `out`, loaded as a device loads it, against the user's Keras model (convert.verify)."""
    from edgecap.convert.pipeline import verify_against_keras

    return verify_against_keras(ref.keras, studies, m, opts, out, SEED, log)
