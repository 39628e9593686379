"""A study's views -> the decoder's attention memory: the one definition for every backend.

    features, mask = encode_study(bundle.encode, [frontal, lateral], bundle.max_views)   # prepared inputs
    features, mask = encode_study_files(bundle, [frontal_path, None])                   # files, preprocessed
    features, mask = fuse_views([frontal_map, None], max_views)                          # already encoded

Shapes: a prepared view is float32 (S, S, 3) (runtime.preprocess.prepare); an encoded view is (P, D);
the fused memory is features (max_views * P, D) with mask (max_views * P,), 1 at a real view's positions.
View order is fixed (frontal first); a missing view (None, or a list shorter than max_views) contributes
zeros with mask 0, so attention gives it no weight and one view works as well as two.

Used by the captioner, conversion (verification, calibration, bundle comparison), report generation from a
Keras run and the bench, so a bundle and its Keras reference always see the same memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from edgecap.runtime.preprocess import load


class ImageEncoder(Protocol):
    """What encode_study_files needs: the manifest's input contract and an encoder (a Bundle, a Keras
    adapter)."""

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
            feats[i * p:(i + 1) * p] = v
            mask[i * p:(i + 1) * p] = 1.0
    return feats, mask


def encode_study(encode: Callable[[np.ndarray], np.ndarray], prepared: Sequence[np.ndarray | None],
                 max_views: int) -> tuple[np.ndarray, np.ndarray]:
    """Encode each present prepared view (S, S, 3) with `encode` -> (P, D), then fuse_views."""
    return fuse_views([encode(x) if x is not None else None for x in prepared], max_views)


def encode_study_files(encoder: ImageEncoder, paths: Sequence[str | Path | None]) -> tuple[np.ndarray, np.ndarray]:
    """Image files (None for a missing view) through the runtime's preprocessing and `encoder`."""
    prepared = [load(p, encoder.image_size, encoder.mean, encoder.std) if p is not None else None for p in paths]
    return encode_study(encoder.encode, prepared, encoder.max_views)
