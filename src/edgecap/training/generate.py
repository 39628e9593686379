"""Reports from a Keras run, through the runtime's own preprocessing and decode loop.

The same path a bundle takes (runtime.preprocess -> encoder -> runtime.study.fuse_views ->
runtime.decoding), with the Keras model behind the step protocol: the reference for conversion drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecap.config import Config
from edgecap.runtime.decoding import Decoded, SpecialIds, decode
from edgecap.runtime.study import fuse_views
from edgecap.runtime.preprocess import load
from edgecap.runtime.vocab import Vocabulary
from edgecap.training.keras_step import KerasCaptioner


@dataclass
class Generated:
    uid: str
    views: tuple[Path | None, ...]
    features: np.ndarray  # (N, D) fused
    mask: np.ndarray  # (N,)
    decoded: Decoded
    text: str  # cleaned-token form ("the heart is normal .") for metrics
    pooled: np.ndarray  # (D,) mean of real positions: the retrieval baseline's study embedding


class ReportGenerator:
    def __init__(self, cfg: Config, vocab: Vocabulary, model):
        self.cfg, self.vocab = cfg, vocab
        self.keras = KerasCaptioner(model)
        self.special = SpecialIds.from_vocab(vocab)

    def encode(self, views: tuple[Path | None, ...]) -> tuple[np.ndarray, np.ndarray]:
        im = self.cfg.image
        feats = [self.keras.encode(load(p, im.size, im.mean, im.std)) if p else None for p in views]
        feats += [None] * (self.cfg.max_views - len(feats))
        return fuse_views(feats, self.cfg.max_views)

    def __call__(self, uid: str, views: tuple[Path | None, ...], beam: int = 3) -> Generated:
        features, mask = self.encode(views)
        d = decode(self.keras, features, mask, self.special, self.cfg.text.max_len, beam=beam)
        pooled = (features * mask[:, None]).sum(0) / max(mask.sum(), 1.0)
        return Generated(uid, views, features, mask, d, " ".join(self.vocab.decode(d.ids)), pooled)
