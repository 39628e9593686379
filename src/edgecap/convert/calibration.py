"""Real calibration data for int8 parts (the decoder of both int8 modes, the encoder of int8-full).

Encoder inputs: real images through the runtime's preprocessing, each first as it is, then augmented
(training.augment: small rotation / shift / scale, brightness, contrast; never a flip) until `samples`
inputs exist. Decoder inputs: the (token, h, c, features, mask) of every step the Keras model takes while
the runtime's own decode loop (runtime.decoding, beam 3) writes reports for those studies (real and
augmented), so the int8 ranges are those of real decoding, not noise.

    cal = collect(reference, studies, cfg, samples=200, seed=42)   # reference: training.keras_step.KerasBundle
    cal.encoder_dataset()   # -> iterator of {"image": (1, S, S, 3)}
    cal.decoder_dataset(3)  # -> iterator of {"token", "h", "c", "features", "mask"} (rows repeated to 3)
    cal.facts               # what goes into manifest["calibration"]
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgecap.config import Config
from edgecap.convert.sources import ImageStudy
from edgecap.runtime.captioner import ReportModel
from edgecap.runtime.decoding import SpecialIds, StepModel, decode
from edgecap.runtime.preprocess import ImageError, normalize, read_image, resize_square, to_gray
from edgecap.runtime.study import encode_study
from edgecap.training.augment import AUGMENT_IMPL, AugmentConfig, augment

SMALL_ENCODER_SAMPLES = 100  # fewer encoder samples than this: warn
SMALL_REAL_IMAGES = 50  # fewer distinct real images than this: warn (augmentation is not diversity)
CALIBRATION_BEAM = 3


class RecordingStep:
    """runtime.decoding.StepModel that passes every call to `inner` and keeps each row's inputs and logits."""

    def __init__(self, inner: StepModel):
        self.inner, self.hidden_size = inner, inner.hidden_size
        self.rows: list[tuple] = []  # (token, h (H,), c (H,), study index, logits (V,))
        self.study = -1

    def step(self, tokens, h, c, features, mask):
        out = self.inner.step(tokens, h, c, features, mask)
        for b in range(len(tokens)):
            self.rows.append(
                (
                    int(tokens[b]),
                    np.array(h[b], np.float32),
                    np.array(c[b], np.float32),
                    self.study,
                    np.array(out[0][b], np.float32),
                )
            )
        return out


@dataclass
class DecoderSteps:
    """Recorded decoder inputs, batch-1 rows; features / masks stored once per study."""

    tokens: np.ndarray  # (K,) int32
    h: np.ndarray  # (K, H)
    c: np.ndarray  # (K, H)
    study: np.ndarray  # (K,) index into features / masks
    logits: np.ndarray  # (K, V) the reference's output for the row
    features: list[np.ndarray]  # (N, D) per study
    masks: list[np.ndarray]  # (N,) per study

    def __len__(self) -> int:
        return len(self.tokens)

    def row(self, i: int) -> dict[str, np.ndarray]:
        s = self.study[i]
        return {
            "token": self.tokens[i : i + 1],
            "h": self.h[i : i + 1],
            "c": self.c[i : i + 1],
            "features": self.features[s][None],
            "mask": self.masks[s][None],
        }

    def subset(self, n: int, seed: int) -> "DecoderSteps":
        if len(self) <= n:
            return self
        idx = np.sort(np.random.default_rng(seed).choice(len(self), n, replace=False))
        return DecoderSteps(
            self.tokens[idx], self.h[idx], self.c[idx], self.study[idx], self.logits[idx], self.features, self.masks
        )

    @classmethod
    def from_recorder(cls, rec: RecordingStep, features: list, masks: list) -> "DecoderSteps":
        tok, h, c, st, lg = zip(*rec.rows)
        return cls(np.array(tok, np.int32), np.stack(h), np.stack(c), np.array(st), np.stack(lg), features, masks)


def record_decoding(
    reference: StepModel, fused, special: SpecialIds, max_len: int, beams: tuple[int, ...], max_rows: int | None = None
) -> tuple[DecoderSteps, list[dict[int, list[int]]]]:
    """Decode each (features (N, D), mask (N,)) of the iterable `fused` with the runtime loop over
    `reference`, once per beam size; stop after the study during which max_rows rows were reached.
    -> recorded steps, and per decoded study {beam: token ids}."""
    rec = RecordingStep(reference)
    ids, feats, masks = [], [], []
    for i, (f, m) in enumerate(fused):
        rec.study = i
        feats.append(f)
        masks.append(m)
        ids.append({b: decode(rec, f, m, special, max_len, beam=b).ids for b in beams})
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
        for i in range(len(self.steps)):
            r = self.steps.row(i)
            if batch > 1:
                r = {k: v if k in ("features", "mask") else np.repeat(v, batch, axis=0) for k, v in r.items()}
            yield r


class ImagePrep:
    """Runtime preprocessing with optional augmentation between resize and normalise (as in training)."""

    def __init__(self, cfg: Config, seed: int):
        self.cfg, self.seed = cfg, seed
        self.aug = AugmentConfig(clahe=cfg.train.clahe)
        self._gray: dict[Path, np.ndarray] = {}

    def gray(self, path: Path) -> np.ndarray:
        if path not in self._gray:
            self._gray[path] = resize_square(to_gray(read_image(path)), self.cfg.image.size)
        return self._gray[path]

    def __call__(self, path: Path, variant: int) -> np.ndarray:
        """variant 0: the image as the runtime prepares it; k > 0: augmented, seeded by (seed, file, k)."""
        g = self.gray(path)
        if variant:
            s = int(hashlib.sha1(f"{self.seed}|{path.name}|{variant}".encode()).hexdigest()[:8], 16)
            g = augment(g, np.random.default_rng(s), self.aug)
        return normalize(g, self.cfg.image.mean, self.cfg.image.std)


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
    cfg: Config,
    samples: int,
    seed: int,
    max_decoder_samples: int = 2000,
    source: str = "",
) -> Calibration:
    """Encoder inputs (real + augmented) and recorded decoder steps for int8 calibration.

    Args:
        reference: training.keras_step.KerasBundle (encoder, decoder step, special ids, max_len).
        studies: real studies (calibration pool).
        samples: encoder inputs wanted; studies are taken plain first, then augmented variants in turn.
        max_decoder_samples: recorded decoder rows kept (a seeded random subset).
    """
    prep = ImagePrep(cfg, seed)
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
            if len(images) >= samples:
                break
        variant += 1

    def fused():  # Keras features of the study variants, in a seeded order, encoded when decoded
        for i in np.random.default_rng(seed).permutation(len(variants)):
            yield encode_study(reference.encode, variants[i], reference.max_views)

    # decode until twice the rows needed are recorded, then keep a seeded random subset
    steps, decoded = record_decoding(
        reference, fused(), reference.special, reference.max_len, (CALIBRATION_BEAM,), max_rows=2 * max_decoder_samples
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
