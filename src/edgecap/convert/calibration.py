"""Real calibration data for int8 parts (the decoder of both int8 modes, the encoder of int8-full).

Encoder inputs: real images through the runtime's preprocessing, each first as it is, then augmented
(training.augment: small rotation / shift / scale, brightness, contrast; never a flip) until `samples`
inputs exist. Decoder inputs: the (token, h, c, features, mask) of every step the Keras model takes while
the runtime's own decode loop (runtime.decoding, beam 3) writes reports for those studies (real and
augmented), so the int8 ranges are those of real decoding, not noise. A sequence-input decoder (decoder kind
"sequence", training.keras_sequence) is recorded the same way: the padded prefix and feature vector of every
row it is called on.

    cal = collect(reference, studies, cfg, samples=200, seed=42)   # reference: training.keras_step.KerasBundle
    cal.encoder_dataset()   # -> iterator of {"image": (1, S, S, 3)}
    cal.decoder_dataset(3)  # -> iterator of {"token", "h", "c", "features", "mask"} (rows repeated to 3)
    cal.facts               # what goes into manifest["calibration"]
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgecap.config import Config
from edgecap.convert.sources import ImageStudy
from edgecap.progress import count
from edgecap.runtime.captioner import ReportModel
from edgecap.runtime.decoding import SequenceModel, SpecialIds, StepModel, decode
from edgecap.runtime.preprocess import ImageError, normalize, read_image, resize_square, to_gray
from edgecap.runtime.study import encode_study
from edgecap.training.augment import AUGMENT_IMPL, AugmentConfig, augment

SMALL_ENCODER_SAMPLES = 100  # fewer encoder samples than this: warn
SMALL_REAL_IMAGES = 50  # fewer distinct real images than this: warn (augmentation is not diversity)
CALIBRATION_BEAM = 3


class RecordingStep:
    """runtime.decoding.StepModel that passes every call to `inner` and keeps each row's inputs and logits."""

    kind = "recurrent"

    def __init__(self, inner: StepModel):
        self.inner, self.hidden_size = inner, inner.hidden_size
        self.rows: list[tuple] = []  # ({token, h (H,), c (H,)}, study index, logits (V,))
        self.study = -1

    def step(self, tokens, h, c, features, mask):
        out = self.inner.step(tokens, h, c, features, mask)
        for b in range(len(tokens)):
            self.rows.append(
                (
                    {"token": np.int32(tokens[b]), "h": np.array(h[b], np.float32), "c": np.array(c[b], np.float32)},
                    self.study,
                    np.array(out[0][b], np.float32),
                )
            )
        return out


class RecordingSequence:
    """runtime.decoding.SequenceModel that passes every call to `inner` and keeps each row's padded prefix (in
    the dtype of the model's sequence input) and logits."""

    kind = "sequence"
    decoder_kind = "sequence"

    def __init__(self, inner: SequenceModel, dtype: str = "int32"):
        self.inner, self.dtype = inner, np.dtype(dtype)
        self.sequence_length, self.padding = inner.sequence_length, inner.padding
        self.rows: list[tuple] = []  # ({sequence (L,)}, study index, logits (V,))
        self.study = -1

    def predict_next(self, prefixes, features, mask):
        out = self.inner.predict_next(prefixes, features, mask)
        for b in range(len(prefixes)):
            self.rows.append(
                ({"sequence": np.array(prefixes[b], self.dtype)}, self.study, np.array(out[b], np.float32))
            )
        return out


def recorder(reference) -> RecordingStep | RecordingSequence:
    """The recording wrapper of a reference's decoder kind."""
    if getattr(reference, "decoder_kind", "recurrent") == "sequence":
        dtype = getattr(getattr(reference, "info_", None), "sequence_dtype", "int32")
        return RecordingSequence(reference, dtype)
    return RecordingStep(reference)


@dataclass
class DecoderSteps:
    """Recorded decoder inputs, batch-1 rows; features / masks stored once per study.

    Recurrent rows: token (K,) int32, h, c (K, H); the step file reads features (1, N, D), mask (1, N).
    Sequence rows: sequence (K, L); the step file reads features (1, D), one vector per row."""

    inputs: dict[str, np.ndarray]  # role -> (K, ...): each row's own decoder inputs
    study: np.ndarray  # (K,) index into features / masks
    logits: np.ndarray  # (K, V) the reference's output for the row
    features: list[np.ndarray]  # (N, D) per study
    masks: list[np.ndarray]  # (N,) per study
    kind: str = "recurrent"  # the decoder kind (runtime.manifest.DECODER_KINDS)

    def __len__(self) -> int:
        return len(self.logits)

    def row(self, i: int) -> dict[str, np.ndarray]:
        """The decoder step file's inputs for row i, keyed by role, batch 1."""
        s = self.study[i]
        r = {k: v[i : i + 1] for k, v in self.inputs.items()}
        if self.kind == "sequence":
            return {**r, "features": self.features[s][:1]}
        return {**r, "features": self.features[s][None], "mask": self.masks[s][None]}

    def subset(self, n: int, seed: int) -> "DecoderSteps":
        if len(self) <= n:
            return self
        idx = np.sort(np.random.default_rng(seed).choice(len(self), n, replace=False))
        inputs = {k: v[idx] for k, v in self.inputs.items()}
        return DecoderSteps(inputs, self.study[idx], self.logits[idx], self.features, self.masks, self.kind)

    @classmethod
    def from_recorder(cls, rec: RecordingStep | RecordingSequence, features: list, masks: list) -> "DecoderSteps":
        ins, st, lg = zip(*rec.rows)
        inputs = {k: np.stack([r[k] for r in ins]) for k in ins[0]}
        return cls(inputs, np.array(st), np.stack(lg), features, masks, rec.kind)


def row_logits(model, r: dict[str, np.ndarray]) -> np.ndarray:
    """One recorded row (DecoderSteps.row) through a decoder of either kind -> logits (V,)."""
    if "sequence" in r:
        return model.predict_next(r["sequence"], r["features"], np.ones(1, np.float32))[0]
    return model.step(r["token"], r["h"], r["c"], r["features"][0], r["mask"][0])[0][0]


def record_decoding(
    reference: StepModel,
    fused,
    special: SpecialIds,
    max_len: int,
    beams: tuple[int, ...],
    max_rows: int | None = None,
    log: Callable[[str], None] = print,
    what: str = "decoder steps recorded",
) -> tuple[DecoderSteps, list[dict[int, list[int]]]]:
    """Decode each (features (N, D), mask (N,)) of the iterable `fused` with the runtime loop over
    `reference`, once per beam size; stop after the study during which max_rows rows were reached.
    Progress (edgecap.progress.count, a terminal only): `what` rows/max_rows, or studies/len(fused) without
    max_rows. -> recorded steps, and per decoded study {beam: token ids}."""
    rec = recorder(reference)
    ids, feats, masks = [], [], []
    total = max_rows if max_rows is not None else len(fused) if hasattr(fused, "__len__") else 0
    for i, (f, m) in enumerate(fused):
        rec.study = i
        feats.append(f)
        masks.append(m)
        ids.append({b: decode(rec, f, m, special, max_len, beam=b).ids for b in beams})
        if total:
            count(log, min(len(rec.rows), total) if max_rows is not None else i + 1, total, what)
        if max_rows is not None and len(rec.rows) >= max_rows:
            break
    return DecoderSteps.from_recorder(rec, feats, masks), ids


@dataclass
class Calibration:
    images: np.ndarray  # (M, S, S, 3) float32 encoder inputs
    steps: DecoderSteps
    facts: dict = field(default_factory=dict)

    def encoder_dataset(self) -> Iterator[dict[str, np.ndarray]]:
        for x in self.images:
            yield {"image": x[None]}

    def decoder_dataset(self, batch: int = 1) -> Iterator[dict[str, np.ndarray]]:
        """Recorded rows; for a step model of `batch` rows each row is repeated `batch` times (the
        per-tensor ranges int8 calibration collects are those of the rows themselves)."""
        shared = () if self.steps.kind == "sequence" else ("features", "mask")  # one study's memory, not per row
        for i in range(len(self.steps)):
            r = self.steps.row(i)
            if batch > 1:
                r = {k: v if k in shared else np.repeat(v, batch, axis=0) for k, v in r.items()}
            yield r


class ImagePrep:
    """Runtime preprocessing with optional augmentation between resize and normalise (as in training).
    ImagePrep(cfg, seed) for a run's config; ImagePrep.of(encoder, seed) for any runtime.study.ImageEncoder
    (a user's Keras model: its size and per-channel normalisation)."""

    def __init__(self, cfg: Config | None, seed: int, size: int = 0, mean=0.0, std=1.0):
        self.cfg, self.seed = cfg, seed
        self.size, self.mean, self.std = (cfg.image.size, cfg.image.mean, cfg.image.std) if cfg else (size, mean, std)
        self.aug = AugmentConfig(clahe=cfg.train.clahe if cfg else False)
        self._gray: dict[Path, np.ndarray] = {}

    @classmethod
    def of(cls, encoder, seed: int) -> "ImagePrep":
        """The preprocessing of an ImageEncoder (image_size, mean, std), no CLAHE."""
        return cls(None, seed, encoder.image_size, encoder.mean, encoder.std)

    def gray(self, path: Path) -> np.ndarray:
        if path not in self._gray:
            self._gray[path] = resize_square(to_gray(read_image(path)), self.size)
        return self._gray[path]

    def __call__(self, path: Path, variant: int) -> np.ndarray:
        """variant 0: the image as the runtime prepares it; k > 0: augmented, seeded by (seed, file, k)."""
        g = self.gray(path)
        if variant:
            s = int(hashlib.sha1(f"{self.seed}|{path.name}|{variant}".encode()).hexdigest()[:8], 16)
            g = augment(g, np.random.default_rng(s), self.aug)
        return normalize(g, self.mean, self.std)


def readable_studies(studies: list[ImageStudy], prep: ImagePrep) -> tuple[list[ImageStudy], list[str]]:
    """Drop views that do not decode (reported); drop studies left without a view."""
    kept, problems = [], []
    for st in studies:
        views = []
        for p in st.views:
            if p is not None:
                try:
                    prep.gray(p)
                except (ImageError, OSError) as e:
                    problems.append(str(e))
                    p = None
            views.append(p)
        if any(v is not None for v in views):
            kept.append(ImageStudy(st.uid, tuple(views), st.split))
    return kept, problems


def collect(
    reference: ReportModel,
    studies: list[ImageStudy],
    cfg: Config | ImagePrep,
    samples: int,
    seed: int,
    max_decoder_samples: int = 2000,
    source: str = "",
    log: Callable[[str], None] = print,
) -> Calibration:
    """Encoder inputs (real + augmented) and recorded decoder steps for int8 calibration.

    Args:
        reference: training.keras_step.KerasBundle (encoder, decoder step, special ids, max_len).
        studies: real studies (calibration pool).
        cfg: the run's config (its image size and normalisation), or the ImagePrep to use.
        samples: encoder inputs wanted; studies are taken plain first, then augmented variants in turn.
        max_decoder_samples: recorded decoder rows kept (a seeded random subset).
        log: progress (edgecap.progress): images prepared, decoder steps recorded (rows / 2 x kept).
    """
    prep = cfg if isinstance(cfg, ImagePrep) else ImagePrep(cfg, seed)
    studies, problems = readable_studies(studies, prep)
    if not studies:
        raise ValueError(f"no readable calibration image in {source}: {'; '.join(problems[:3])}")
    images: list[np.ndarray] = []  # (S, S, 3) each
    variants: list[list[np.ndarray | None]] = []  # prepared views per study variant
    variant = plain = 0
    while len(images) < samples:
        for st in studies:
            views = [prep(p, variant) if p is not None else None for p in st.views]
            present = [v for v in views if v is not None]
            images += present
            plain += len(present) if variant == 0 else 0
            variants.append(views)
            count(log, min(len(images), samples), samples, "calibration: images prepared")
            if len(images) >= samples:
                break
        variant += 1

    def fused():  # Keras features of the study variants, in a seeded order, encoded when decoded
        for i in np.random.default_rng(seed).permutation(len(variants)):
            yield encode_study(reference.encode, variants[i], reference.max_views)

    # decode until twice the rows needed are recorded, then keep a seeded random subset
    steps, decoded = record_decoding(
        reference,
        fused(),
        reference.special,
        reference.max_len,
        (CALIBRATION_BEAM,),
        max_rows=2 * max_decoder_samples,
        log=log,
        what="calibration: decoder steps recorded",
    )
    kept = steps.subset(max_decoder_samples, seed)
    distinct = len({p for st in studies for p in st.views if p is not None})
    warnings = [f"unreadable calibration image skipped: {p}" for p in problems]
    if len(images) < SMALL_ENCODER_SAMPLES:
        warnings.append(
            f"only {len(images)} encoder calibration samples (< {SMALL_ENCODER_SAMPLES}): "
            "int8 ranges may not cover real inputs; pass --samples and --calibration"
        )
    if distinct < SMALL_REAL_IMAGES:
        warnings.append(
            f"only {distinct} distinct real images (< {SMALL_REAL_IMAGES}); the other encoder samples are "
            "augmentations of them: calibrate on more real images (--calibration DATA_FOLDER)"
        )
    facts = {
        "source": source,
        "real_images": distinct,
        "studies": len(studies),
        "encoder_samples": len(images),
        "encoder_plain": plain,
        "encoder_augmented": len(images) - plain,
        "augmentation": {
            **asdict(prep.aug),
            "seed": seed,
            "implementation": AUGMENT_IMPL,
            "preprocess": "runtime.preprocess then training.augment",
        },
        "decoder_decode": f"runtime.decoding beam {CALIBRATION_BEAM} over the Keras model, study variants in seeded "
        "random order; every row of every step recorded, then a seeded random subset kept",
        "decoder_studies": len(decoded),
        "decoder_steps_recorded": len(steps),
        "decoder_samples": len(kept),
        "warnings": warnings,
    }
    return Calibration(np.stack(images).astype(np.float32), kept, facts)
