"""Studies -> training examples and fixed-shape batches.

tokens  (B, T+1) int32: <bos> w1 .. wn <pad>...        T = text.max_len
targets (B, T+1) int32: w1 .. wn <eos> <pad>...        (loss ignores <pad>)
x       (B, V, S, S, 3) float32 images, or (B, V, P, C) float16 cached CNN maps (frozen encoder)
view_mask (B, V) float32: 1 where the view exists
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecap.config import Config
from edgecap.data.iu_xray import Study
from edgecap.runtime.preprocess import ImageError, read_image, resize_square, to_gray
from edgecap.runtime.text import clean_report
from edgecap.runtime.vocab import Vocabulary


@dataclass
class Example:
    uid: str
    views: tuple[Path | None, ...]  # (frontal, lateral)
    text: str  # cleaned report
    ids: list[int]  # vocabulary ids, cut to max_len


def make_examples(studies: list[Study], vocab: Vocabulary, cfg: Config, need_images: bool = True) -> list[Example]:
    """Studies with a non-empty report (and, if need_images, at least one readable view)."""
    out = []
    for s in studies:
        text = clean_report(s.text(cfg.text.section), cfg.text.xxxx)
        if not text:
            continue
        frontal, lateral = s.views()
        views = (frontal.path if frontal else None, lateral.path if lateral else None)[: cfg.max_views]
        if need_images and not any(views):
            continue
        out.append(Example(s.uid, views, text, vocab.encode(text, cfg.text.max_len)))
    return out


def token_arrays(examples: list[Example], vocab: Vocabulary, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """-> tokens (B, T+1), targets (B, T+1) with T = max_len."""
    tokens = np.zeros((len(examples), max_len + 1), np.int32)
    targets = np.zeros_like(tokens)
    for i, ex in enumerate(examples):
        ids = ex.ids[:max_len]
        tokens[i, 0] = vocab.bos_id
        tokens[i, 1 : len(ids) + 1] = ids
        targets[i, : len(ids)] = ids
        targets[i, len(ids)] = vocab.eos_id
    return tokens, targets


def load_gray(path: Path, size: int) -> np.ndarray:
    """The runtime's contract up to the point where augmentation may step in: float32 (S, S) in [0, 1]."""
    return resize_square(to_gray(read_image(path)), size)


def view_mask(examples: list[Example], max_views: int) -> np.ndarray:
    return np.array(
        [[1.0 if i < len(ex.views) and ex.views[i] else 0.0 for i in range(max_views)] for ex in examples], np.float32
    )


def readable(examples: list[Example], size: int) -> tuple[list[Example], list[str]]:
    """Drop views that cannot be decoded (reported, not fatal); drop examples left without a view."""
    kept, problems = [], []
    for ex in examples:
        views = []
        for p in ex.views:
            if p is None:
                views.append(None)
                continue
            try:
                load_gray(p, 16)
                views.append(p)
            except ImageError as e:
                problems.append(str(e))
                views.append(None)
        if any(views):
            kept.append(Example(ex.uid, tuple(views), ex.text, ex.ids))
    return kept, problems
