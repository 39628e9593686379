"""Run directory -> verified bundle folder, one mode (convert.modes) at a time.

    result = convert_run("runs/demo", "bundles/demo", "int8")
    result.passed, result.manifest.verification

Steps: rebuild the Keras model from the run -> (int8 parts) collect real calibration data -> convert each
part -> check its ops -> write files, vocab.json, manifest.json -> load the bundle as a device does
(runtime.bundle.Bundle) -> verify against Keras on real images -> write the verification into the manifest.
The manifest is written even when verification fails, so the failure can be inspected. Needs TensorFlow.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgecap.convert.modes import Mode, by_name
from edgecap.runtime.manifest import DEFAULT_NOTICE, Manifest

DEFAULT_SAMPLES = 200  # calibration images (real first, then augmentations): encoder inputs, decoded by Keras
DECODER_SAMPLES = 2000  # recorded decoder steps used to calibrate an int8 decoder
VERIFY_STUDIES = 50  # studies whose reports are compared with Keras's
# Rows of the decoder step model: one call advances a whole beam of this size (the caption default, beam 3);
# a smaller batch is padded, a larger beam takes several calls (runtime.bundle.Bundle.step).
STEP_BATCH = 3


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


@dataclass
class ConvertResult:
    out: Path
    mode: Mode
    manifest: Manifest
    passed: bool
    seconds: float


def convert_run(run: str | Path, out: str | Path, mode: str, calibration: str | Path | None = None,
                samples: int = DEFAULT_SAMPLES, decoder_samples: int = DECODER_SAMPLES,
                verify_studies: int = VERIFY_STUDIES, num_threads: int | None = None, notice: str = DEFAULT_NOTICE,
                log: Callable[[str], None] = print, step_batch: int = STEP_BATCH) -> ConvertResult:
    """Convert and verify one mode. Raises ConvertError (bad inputs), convert.export.ConversionError (the
    converter failed or wrote forbidden ops). Verification failing is not an exception: result.passed."""
    from edgecap.convert import calibration as cal
    from edgecap.convert.bundle_writer import build_manifest, write_model
    from edgecap.convert.export import ConversionError, convert_model, export_views
    from edgecap.convert.flatbuffer import op_problems
    from edgecap.convert.sources import SourceError, choose, find_studies, run_source
    from edgecap.convert.verify import verify
    from edgecap.runtime.bundle import Bundle, sha256_file
    from edgecap.runtime.decoding import SpecialIds
    from edgecap.resources import portable_path
    from edgecap.training.keras_step import KerasCaptioner
    from edgecap.training.run_dir import RunDir, load_model

    t0 = time.time()
    m = by_name(mode)
    if samples < 1:
        raise ConvertError("--samples must be at least 1")
    if step_batch < 1:
        raise ConvertError("--step-batch must be at least 1")
    try:
        cfg, vocab, model = load_model(run)
    except FileNotFoundError as e:
        raise ConvertError(str(e)) from None
    reference = KerasCaptioner(model)
    special = SpecialIds.from_vocab(vocab)
    seed = cfg.train.seed
    try:
        verify_pool = run_source(run, cfg.max_views)
        cal_pool = find_studies(calibration, cfg.max_views) if calibration else verify_pool
    except SourceError as e:
        raise ConvertError(str(e)) from None
    prep = cal.ImagePrep(cfg, seed)
    picked = choose(verify_pool.studies, verify_studies, ("test", "val", "train"), seed)  # held-out splits first
    checked, problems = cal.readable_studies(picked, prep)
    for p in problems:
        log(f"warning: unreadable verification image skipped: {p}")
    if not checked:
        raise ConvertError(f"{verify_pool.describe()}: no readable image to verify the bundle on")

    calib, facts = None, None
    if m.needs_calibration:
        log(f"calibration: {samples} images (real, then augmented) from {cal_pool.describe()}")
        cal_studies = choose(cal_pool.studies, samples, ("train", "val", "test"), seed)
        try:
            calib = cal.collect(reference, cal_studies, cfg, special, samples, seed, decoder_samples,
                                source=cal_pool.describe(Path(out)))
        except ValueError as e:
            raise ConvertError(str(e)) from None
        cal_images = {p.resolve() for s in cal_studies for p in s.views if p is not None}
        facts = {**calib.facts, "source_kind": cal_pool.kind,
                 "verification_images_also_in_calibration": len(
                     {p.resolve() for s in checked for p in s.views if p is not None} & cal_images)}
        for w in facts["warnings"]:
            log(f"warning: {w}")

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for part, keras_model in export_views(model, step_batch).items():
        setting = m.part(part)
        rep = None
        if setting.precision == "int8":
            rep = calib.encoder_dataset if part == "encoder" else (lambda: calib.decoder_dataset(step_batch))
        kept = f", {'/'.join(setting.float_ops)} in float32" if setting.float_ops else ""
        log(f"converting {part} ({setting.precision}{kept})")
        data = convert_model(keras_model, setting.precision, rep, setting.float_ops)
        files[part] = write_model(out, part, m, data)
        bad = op_problems(files[part].op_versions)
        if bad:
            raise ConversionError(f"{part}: {'; '.join(bad)}")
    rd = RunDir(run)
    weights = rd.best if rd.best.is_file() else rd.head  # head.weights.npz: frozen pretrained backbone
    source = {"run": portable_path(run, out), "config_hash": cfg.model_hash(), "config": cfg.to_dict(),
              "weights": weights.name, "weights_sha256": sha256_file(weights)}
    manifest = build_manifest(out, m, cfg, vocab, files, model.positions, source, facts, notice)
    manifest.save(out)

    bundle = Bundle.load(out, num_threads)
    log(f"verifying on {len(checked)} studies of {verify_pool.describe()} ({bundle.interpreter_name})")
    manifest.verification = verify(bundle, reference, checked, m.thresholds, seed)
    manifest.verification["source"] = verify_pool.describe(out)
    manifest.save(out)
    return ConvertResult(out, m, manifest, manifest.verification["passed"], time.time() - t0)
