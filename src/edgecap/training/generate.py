"""Reports from a Keras run, through the runtime's own preprocessing and decode loop.

The same path a bundle takes (runtime.study.encode_study_files: runtime.preprocess -> encoder -> fuse_views;
then runtime.decoding), with the Keras model behind the runtime's protocols (training.keras_step.KerasBundle):
the reference for conversion drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecap.config import Config
from edgecap.runtime.decoding import Decoded, decode
from edgecap.runtime.study import encode_study_files
from edgecap.runtime.vocab import Vocabulary
from edgecap.training.keras_step import KerasBundle


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
        self.keras = KerasBundle(model, vocab)

    def encode(self, views: tuple[Path | None, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Image files (frontal, lateral or None) -> features (N, D), mask (N,)."""
        return encode_study_files(self.keras, views)

    def __call__(self, uid: str, views: tuple[Path | None, ...], beam: int = 3) -> Generated:
        features, mask = self.encode(views)
        k = self.keras
        d = decode(k, features, mask, k.special, k.max_len, beam=beam)
        pooled = (features * mask[:, None]).sum(0) / max(mask.sum(), 1.0)
        return Generated(uid, views, features, mask, d, " ".join(self.vocab.decode(d.ids)), pooled)
