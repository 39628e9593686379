"""A study's views -> the decoder's attention memory: the one definition for every backend.

    features, mask = encode_study(bundle.encode, [frontal, lateral], bundle.max_views)   # prepared inputs
    features, mask = encode_study_files(bundle, [frontal_path, None])                   # files, preprocessed
    features, mask = fuse_views([frontal_map, None], max_views)                          # already encoded
    prepared = prepare_views(bundle, paths); maps = encode_views(keras.encode, prepared)  # the steps apart

Shapes: a prepared view is float32 (S, S, 3) (runtime.preprocess.prepare); an encoded view is (P, D);
the fused memory is features (max_views * P, D) with mask (max_views * P,), 1 at a real view's positions.
View order is fixed (frontal first); a missing view (None, or a list shorter than max_views) contributes
zeros with mask 0, so attention gives it no weight and one view works as well as two.

Used by the captioner, conversion (verification, calibration, bundle comparison), report generation from a
Keras run and the bench, so a bundle and its Keras reference always see the same memory. Verification
prepares each view once and encodes it with both models (prepare_views, encode_views) to measure the
encoder's error per view before fusing.

Imports OpenCV only when files are read (encode_study_files, prepare_views): the tflite-runtime 2.14 check
(scripts/check_tflite_runtime_214.py) fuses views in an environment with numpy and the interpreter alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

VIEW_ORDER = ("frontal", "lateral")  # view slots, in the order fuse_views lays them out (manifest input.view_order)


class ImageEncoder(Protocol):
    """What encode_study_files needs: the manifest's input contract and an encoder (runtime.bundle.Bundle,
    training.keras_step.KerasBundle)."""

    image_size: int
    mean: float
    std: float
    max_views: int

    def encode(self, prepared: np.ndarray) -> np.ndarray:
        """(S, S, 3) float32 -> (P, D) float32."""
        ...


def fuse_views(views: Sequence[np.ndarray | None], max_views: int) -> tuple[np.ndarray, np.ndarray]:
    """[frontal (P, D), lateral (P, D) or None, ...] (at most max_views; fewer are padded with None)
    -> features (max_views * P, D) float32, mask (max_views * P,) float32."""
    present = [v for v in views if v is not None]
    if not present:
        raise ValueError("at least one view is needed")
    if len(views) > max_views:
        raise ValueError(f"{len(views)} views given, the model takes at most {max_views}")
    p, d = present[0].shape
    feats = np.zeros((max_views * p, d), np.float32)
    mask = np.zeros((max_views * p,), np.float32)
    for i, v in enumerate(views):
        if v is not None:
            if v.shape != (p, d):
                raise ValueError(f"view {i} has shape {v.shape}, expected {(p, d)}")
            feats[i * p : (i + 1) * p] = v
            mask[i * p : (i + 1) * p] = 1.0
    return feats, mask


def encode_views(
    encode: Callable[[np.ndarray], np.ndarray], prepared: Sequence[np.ndarray | None]
) -> list[np.ndarray | None]:
    """Each present prepared view (S, S, 3) through `encode` -> (P, D); a missing view stays None."""
    return [encode(x) if x is not None else None for x in prepared]


def encode_study(
    encode: Callable[[np.ndarray], np.ndarray], prepared: Sequence[np.ndarray | None], max_views: int
) -> tuple[np.ndarray, np.ndarray]:
    """Encode each present prepared view (S, S, 3) with `encode` -> (P, D), then fuse_views."""
    return fuse_views(encode_views(encode, prepared), max_views)


def prepare_views(encoder: ImageEncoder, paths: Sequence[str | Path | None]) -> list[np.ndarray | None]:
    """Image files (None for a missing view) -> prepared (S, S, 3) float32 by the runtime's preprocessing,
    at the encoder's image size and normalisation."""
    from edgecap.runtime.preprocess import load

    return [load(p, encoder.image_size, encoder.mean, encoder.std) if p is not None else None for p in paths]


def encode_study_files(encoder: ImageEncoder, paths: Sequence[str | Path | None]) -> tuple[np.ndarray, np.ndarray]:
    """Image files (None for a missing view) through the runtime's preprocessing and `encoder`."""
    return encode_study(encoder.encode, prepare_views(encoder, paths), encoder.max_views)
