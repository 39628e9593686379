"""Fusing per-view encoder outputs into the decoder's attention memory (one definition, all backends)."""

from __future__ import annotations

import numpy as np


def fuse_views(views: list[np.ndarray | None], max_views: int) -> tuple[np.ndarray, np.ndarray]:
    """[frontal (P, D), lateral (P, D) or None] -> features (max_views * P, D), mask (max_views * P,).

    View order is fixed (frontal first). An absent view contributes zeros with mask 0, so the decoder's
    attention gives it no weight: one view works as well as two.
    """
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
