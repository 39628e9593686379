"""A run directory holds everything needed to rebuild the model on its own:

    config.json        typed Config (edgecap.config)
    vocab.json         runtime.vocab.Vocabulary
    split.json         study uid -> split, and where the split came from
    best.weights.h5    weights of the epoch with the lowest validation loss
    last.weights.h5    + last.optimizer.npz + state.json: resume point after each epoch
    history.csv        one row per epoch (text pre-training and image training)
    curves.png         training curves
"""

from __future__ import annotations

import json
from pathlib import Path

from edgecap.config import Config
from edgecap.runtime.vocab import Vocabulary


class RunDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.config = self.root / "config.json"
        self.vocab = self.root / "vocab.json"
        self.split = self.root / "split.json"
        self.best = self.root / "best.weights.h5"
        self.last = self.root / "last.weights.h5"
        self.optimizer = self.root / "last.optimizer.npz"
        self.state = self.root / "state.json"
        self.history = self.root / "history.csv"
        self.curves = self.root / "curves.png"

    def exists(self) -> bool:
        return self.config.is_file() and self.vocab.is_file()

    def load_config(self) -> Config:
        return Config.load(self.config)

    def load_vocab(self) -> Vocabulary:
        return Vocabulary.load(self.vocab)

    def load_split(self) -> dict:
        return json.loads(self.split.read_text())

    def load_state(self) -> dict | None:
        return json.loads(self.state.read_text()) if self.state.is_file() else None


def load_model(run: str | Path, weights: str = "best"):
    """Rebuild (cfg, vocab, CaptionModel) from a run directory. Imports TensorFlow."""
    from edgecap.training.model import CaptionModel

    rd = RunDir(run)
    if not rd.exists():
        raise FileNotFoundError(f"{rd.root}: not a run directory (config.json / vocab.json missing)")
    cfg, vocab = rd.load_config(), rd.load_vocab()
    path = rd.best if weights == "best" else rd.last
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no weights (has training finished an epoch?)")
    model = CaptionModel(cfg, len(vocab), load_pretrained=False)
    model.load_weights(path)
    return cfg, vocab, model
