"""Run directory -> verified bundle folder, one mode (convert.modes) at a time.

    result = convert_run("runs/demo", "bundles/demo", "int8")                 # the defaults of `edgecap convert`
    result = convert_run(run, out, "int8", ConvertOptions(samples=400))       # or settings by keyword:
    result = convert_run(run, out, "float32", verify_studies=3, log=print)
    result.passed, result.manifest.verification

Stages, each a function below, the run opened once (training.run_dir.RunDir) and passed along:

    load         the run's config, vocabulary and Keras model, behind the runtime's protocols (KerasBundle)
    sources      real studies to verify on (the run's own data first) and to calibrate on
    calibration  int8 parts only: real + augmented images, decoder steps recorded while Keras decodes them
    export       each part converted (convert.export), its ops checked, written as a .tflite file
    manifest     vocab.json and manifest.json (convert.bundle_writer), the source run's weights hashed
    verify       the bundle loaded as a device loads it (runtime.bundle.Bundle), compared with Keras on real
                 images (convert.verify); the result written into the manifest
    sign         with a signing key only (--sign-key): manifest.sig over the final manifest
                 (runtime.signing), once verification has passed; a failed bundle is left unsigned

The manifest is written before verification and again with its result, so a failure can be inspected. The
signing key is loaded before anything is converted (a wrong path fails at once) and its path is never written
into the bundle.
Needs TensorFlow.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecap.convert.defaults import DECODER_SAMPLES, DEFAULT_SAMPLES, STEP_BATCH, VERIFY_STUDIES
from edgecap.convert.modes import Mode, by_name
from edgecap.data import rehearsal
from edgecap.runtime.manifest import DEFAULT_NOTICE, Manifest
from edgecap.training.run_dir import RunDir

if TYPE_CHECKING:
    from edgecap.config import Config
    from edgecap.convert.calibration import Calibration
    from edgecap.convert.sources import ImageStudy, Source
    from edgecap.runtime.manifest import ModelFile
    from edgecap.runtime.signing import Signer, SigningKey
    from edgecap.runtime.vocab import Vocabulary
    from edgecap.training.keras_step import KerasBundle
    from edgecap.training.model import CaptionModel


def pin_to_one_cpu() -> None:
    """Restrict this process to one CPU; call it before TensorFlow is imported (edgecap convert does).

    TensorFlow sizes its thread pools from the CPUs it may use, and the float sums of the Keras decoding that
    records int8 calibration data change in their last bits with the number of threads: a 2-thread and a
    1-thread conversion of one run gave int8 decoders with other quantisation ranges (and 1 report of 20
    flipped at a near tie). Pinned, every machine records the calibration of a 1-CPU machine, whatever its
    core count, and a conversion here is no slower (~40 s, mostly serial). Threads started later inherit the
    affinity. No-op where the OS has no CPU affinity (macOS, Windows).
    """
    get, set_ = getattr(os, "sched_getaffinity", None), getattr(os, "sched_setaffinity", None)
    if get is not None and set_ is not None:
        set_(0, {min(get(0))})


class ConvertError(ValueError):
    """Bad inputs to a conversion (not a run directory, no images): a usage error."""


@dataclass(frozen=True)
class ConvertOptions:
    """The settings of one conversion besides run, output folder and mode (the flags of `edgecap convert`)."""

    calibration: str | Path | None = None  # int8: an IU X-Ray folder or a folder of images; None: the run's data
    samples: int = DEFAULT_SAMPLES  # calibration images, real first, then augmented
    decoder_samples: int = DECODER_SAMPLES  # recorded decoder steps kept to calibrate an int8 decoder
    verify_studies: int = VERIFY_STUDIES  # studies whose reports are compared with Keras's
    num_threads: int | None = None  # interpreter threads for verification (None: the interpreter's default)
    notice: str = DEFAULT_NOTICE  # the manifest's notice, shown by every front end
    step_batch: int = STEP_BATCH  # rows of the decoder step file
    sign_key: str | Path | None = None  # a private key PEM (runtime.signing): sign the bundle once verified

    def check(self) -> None:
        """Raises ConvertError for a setting no conversion can use."""
        if self.samples < 1:
            raise ConvertError("--samples must be at least 1")
        if self.step_batch < 1:
            raise ConvertError("--step-batch must be at least 1")


@dataclass
class ConvertResult:
    out: Path
    mode: Mode
    manifest: Manifest
    passed: bool
    seconds: float
    signer: Signer | None = None  # who signed the bundle (ConvertOptions.sign_key), None: unsigned


@dataclass
class Reference:
    """Stage load: the run and the Keras model the bundle is made from and verified against."""

    run: RunDir
    cfg: Config
    vocab: Vocabulary
    model: CaptionModel
    keras: KerasBundle  # the model behind the runtime's protocols (training.keras_step)


@dataclass
class Studies:
    """Stage sources: where real images come from, and the readable studies verification decodes."""

    verify_pool: Source
    calibration_pool: Source
    checked: list[ImageStudy]


def convert_run(
    run: str | Path | RunDir,
    out: str | Path,
    mode: str,
    options: ConvertOptions | None = None,
    *,
    log: Callable[[str], None] = print,
    **settings: Any,
) -> ConvertResult:
    """Convert and verify one mode. `settings` are ConvertOptions fields by name (samples=, verify_studies=,
    step_batch=, sign_key=, ...), applied over `options`. Raises ConvertError (bad inputs, an unusable signing
    key), convert.export.ConversionError (the converter failed or wrote forbidden ops). Verification failing is
    not an exception: result.passed (and the bundle is left unsigned). `log` gets a line per stage (and
    warnings); an edgecap.progress.Progress also shows counts within the long ones on a terminal (calibration
    steps recorded, samples the converter calibrates on, verification studies), as `edgecap convert` does."""
    t0 = time.time()
    m = by_name(mode)
    opts = replace(options or ConvertOptions(), **settings)
    opts.check()
    if (notice := rehearsal.notice_of(RunDir.of(run).root)) and notice not in opts.notice:
        log(f"warning: {notice} (the run holds a REHEARSAL marker): the bundle's notice says so")
        opts = replace(opts, notice=f"{notice}; {opts.notice}")
    key = signing_key(opts)
    out = Path(out)
    ref = load(RunDir.of(run), log)
    studies = sources(ref, opts, log)
    calib, facts = calibrate(ref, studies, m, opts, out, log)
    files = export(ref, m, calib, opts.step_batch, out, log)
    manifest = write_manifest(ref, m, files, facts, opts, out)
    manifest.verification = verify_bundle(ref, studies, m, opts, out, log)
    manifest.save(out)
    passed = manifest.verification["passed"]
    return ConvertResult(out, m, manifest, passed, time.time() - t0, sign(out, key, passed, log))


def signing_key(opts: ConvertOptions) -> SigningKey | None:
    """The key of opts.sign_key, loaded before the conversion starts (ConvertError when it is unusable)."""
    from edgecap.runtime.signing import SignatureError, load_signing_key

    if opts.sign_key is None:
        return None
    try:
        return load_signing_key(opts.sign_key)
    except SignatureError as e:
        raise ConvertError(f"--sign-key: {e}") from None


def load(run: RunDir, log: Callable[[str], None] = print) -> Reference:
    """The run's config, vocabulary and Keras model (ConvertError when `run` is not a run directory)."""
    from edgecap.training.keras_step import KerasBundle
    from edgecap.training.run_dir import load_model

    log(f"loading the Keras model of {run.root}")
    try:
        cfg, vocab, model = load_model(run)
    except FileNotFoundError as e:
        raise ConvertError(str(e)) from None
    return Reference(run, cfg, vocab, model, KerasBundle(model, vocab, run.root))


def sources(ref: Reference, opts: ConvertOptions, log: Callable[[str], None]) -> Studies:
    """Verification studies from the run's data (held-out splits first), readable ones only; the calibration
    pool (opts.calibration, else the same data)."""
    from edgecap.convert.calibration import ImagePrep
    from edgecap.convert.sources import SourceError, find_studies, run_source

    max_views, seed = ref.cfg.max_views, ref.cfg.train.seed
    try:
        verify_pool = run_source(ref.run, max_views)
        cal_pool = find_studies(opts.calibration, max_views) if opts.calibration else verify_pool
    except SourceError as e:
        raise ConvertError(str(e)) from None
    return pick_studies(verify_pool, cal_pool, opts.verify_studies, ImagePrep(ref.cfg, seed), seed, log)


def pick_studies(verify_pool, cal_pool, count: int, prep, seed: int, log: Callable[[str], None]) -> Studies:
    """`count` verification studies of verify_pool (held-out splits first, seeded), readable ones only (the others
    said as warnings); ConvertError when none is left. Shared by a run's and a user's Keras model's conversion."""
    from edgecap.convert.calibration import readable_studies
    from edgecap.convert.sources import choose

    picked = choose(verify_pool.studies, count, ("test", "val", "train"), seed)
    checked, problems = readable_studies(picked, prep)
    for p in problems:
        log(f"warning: unreadable verification image skipped: {p}")
    if not checked:
        raise ConvertError(f"{verify_pool.describe()}: no readable image to verify the bundle on")
    return Studies(verify_pool, cal_pool, checked)


def calibrate(
    ref: Reference, studies: Studies, m: Mode, opts: ConvertOptions, out: Path, log: Callable[[str], None]
) -> tuple[Calibration | None, dict | None]:
    """int8 parts: calibration data and the manifest's "calibration" facts; (None, None) for other modes."""
    from edgecap.convert.calibration import collect
    from edgecap.convert.sources import choose

    if not m.needs_calibration:
        return None, None
    pool, seed = studies.calibration_pool, ref.cfg.train.seed
    log(f"calibration: {opts.samples} images (real, then augmented) from {pool.describe()}")
    cal_studies = choose(pool.studies, opts.samples, ("train", "val", "test"), seed)
    try:
        calib = collect(
            ref.keras, cal_studies, ref.cfg, opts.samples, seed, opts.decoder_samples, pool.describe(out), log
        )
    except ValueError as e:
        raise ConvertError(str(e)) from None
    f = calib.facts
    log(
        f"calibration: {f['decoder_steps_recorded']} decoder steps recorded over {f['decoder_studies']} studies, "
        f"{f['decoder_samples']} kept"
    )
    cal_images = {p.resolve() for s in cal_studies for p in s.views if p is not None}
    facts = {
        **calib.facts,
        "source_kind": pool.kind,
        "verification_images_also_in_calibration": len(
            {p.resolve() for s in studies.checked for p in s.views if p is not None} & cal_images
        ),
    }
    for w in facts["warnings"]:
        log(f"warning: {w}")
    return calib, facts


def export(
    ref: Reference, m: Mode, calib: Calibration | None, step_batch: int, out: Path, log: Callable[[str], None]
) -> dict[str, ModelFile]:
    """Each part converted at its mode's precision (int8 parts on `calib`), its ops checked, written to out."""
    from edgecap.convert.export import export_views

    return convert_parts(export_views(ref.model, step_batch), m, calib, step_batch, out, log)


def convert_parts(
    views: dict,
    m: Mode,
    calib: Calibration | None,
    step_batch: int,
    out: Path,
    log: Callable[[str], None],
    names: dict | None = None,
) -> dict[str, ModelFile]:
    """Each Keras view {part: model} converted at its mode's precision (int8 parts on `calib`), its ops checked,
    written to out with the tensor `names` of its bundle kind (bundle_writer.write_model)."""
    from edgecap.convert.bundle_writer import write_model
    from edgecap.convert.export import ConversionError, convert_model
    from edgecap.convert.flatbuffer import op_problems

    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for part, keras_model in views.items():
        setting = m.part(part)
        rep = None
        if setting.precision == "int8":
            assert calib is not None  # m.needs_calibration
            rep = _counted_dataset(calib, part, step_batch, log)
        kept = f", {'/'.join(setting.float_ops)} in float32" if setting.float_ops else ""
        kept += f", its {setting.float_layers} most error-prone small layers in float32" if setting.float_layers else ""
        log(f"converting {part} ({setting.precision}{kept})")
        data = convert_model(keras_model, setting.precision, rep, setting.float_ops, setting.float_layers, log)
        files[part] = write_model(out, part, m, data, names)
        bad = op_problems(files[part].op_versions)
        if bad:
            raise ConversionError(f"{part}: {'; '.join(bad)}")
    return files


def _counted_dataset(calib: Calibration, part: str, step_batch: int, log: Callable[[str], None]) -> Callable:
    """The converter's representative dataset for `part` (a function -> iterator of input dicts), each sample
    counted as the converter's calibration reads it (edgecap.progress: on a terminal)."""
    from edgecap.progress import counted

    if part == "encoder":
        return lambda: counted(log, calib.encoder_dataset(), f"converting {part}: calibration", len(calib.images))
    return lambda: counted(log, calib.decoder_dataset(step_batch), f"converting {part}: calibration", len(calib.steps))


def write_manifest(
    ref: Reference, m: Mode, files: dict[str, ModelFile], calibration: dict | None, opts: ConvertOptions, out: Path
) -> Manifest:
    """vocab.json and manifest.json (no verification yet), naming the run and hashing its weights."""
    from edgecap.convert.bundle_writer import build_manifest
    from edgecap.resources import portable_path
    from edgecap.runtime.bundle import sha256_file
    from edgecap.runtime.signing import SIGNATURE_NAME

    weights = ref.run.trained_weights  # head.weights.npz: a frozen pretrained backbone
    source = {
        "run": portable_path(ref.run.root, out),
        "config_hash": ref.cfg.model_hash(),
        "config": ref.cfg.to_dict(),
        "weights": weights.name,
        "weights_sha256": sha256_file(weights),
    }
    manifest = build_manifest(
        out,
        m,
        ref.cfg,
        ref.vocab,
        files,
        source,
        calibration,
        opts.notice,
        positions=ref.model.positions,
        step_batch=opts.step_batch,
    )
    manifest.save(out)
    (out / SIGNATURE_NAME).unlink(missing_ok=True)  # a signature from an earlier conversion signs another manifest
    return manifest


def verify_bundle(
    ref: Reference, studies: Studies, m: Mode, opts: ConvertOptions, out: Path, log: Callable[[str], None]
) -> dict:
    """The bundle in `out`, loaded as a device loads it, against Keras -> the manifest's "verification"."""
    return verify_against_keras(ref.keras, studies, m, opts, out, ref.cfg.train.seed, log)


def verify_against_keras(
    keras, studies: Studies, m: Mode, opts: ConvertOptions, out: Path, seed: int, log: Callable[[str], None]
) -> dict:
    """The bundle in `out`, loaded as a device loads it, against the Keras step model `keras` (convert.verify):
    edgecap's own runs (verify_bundle) and a user's Keras captioner (convert.keras_import)."""
    from edgecap.convert.verify import verify
    from edgecap.runtime.bundle import Bundle
    from edgecap.runtime.signing import TrustStore

    # integrity only: the bundle was written by this process and is signed (stage sign) once verified; this
    # machine's trusted keys (EDGECAP_TRUSTED_KEYS) would refuse it as unsigned
    bundle = Bundle.load(out, opts.num_threads, trust=TrustStore.none())
    log(f"verifying on {len(studies.checked)} studies of {studies.verify_pool.describe()} ({bundle.interpreter_name})")
    verification = verify(bundle, keras, studies.checked, m.thresholds, seed, log)
    verification["source"] = studies.verify_pool.describe(out)
    return verification


def sign(out: Path, key: SigningKey | None, passed: bool, log: Callable[[str], None]) -> Signer | None:
    """Stage sign: manifest.sig for a verified bundle (runtime.signing.sign_bundle); None when there is no key or
    verification failed (a failed bundle is never signed: the signature vouches for a checked bundle)."""
    from edgecap.runtime.signing import sign_bundle

    if key is None:
        return None
    if not passed:
        log("not signed: verification failed")
        return None
    signer = sign_bundle(out, key)
    log(f"signed by {signer.name} (key id {signer.key_id})")
    return signer
