"""A run directory holds everything needed to rebuild the model on its own:

config.json        typed Config (edgecap.config)
vocab.json         runtime.vocab.Vocabulary
split.json         study uid -> split, and where the split came from
best.weights.h5    weights of the epoch with the lowest validation loss
head.weights.npz   instead of best.weights.h5, for a frozen pretrained backbone: only the weights training
                   changed (projection + decoder); the backbone is rebuilt from its ImageNet file. The
                   reference run of the default bundle is shipped this way (edgecap.resources.reference)
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
    """The paths of one run directory (nothing is read until asked). Open a run once and pass the object
    along: load_model, convert.sources.run_source and the conversion take a RunDir or a path."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.config = self.root / "config.json"
        self.vocab = self.root / "vocab.json"
        self.split = self.root / "split.json"
        self.best = self.root / "best.weights.h5"
        self.head = self.root / "head.weights.npz"
        self.last = self.root / "last.weights.h5"
        self.optimizer = self.root / "last.optimizer.npz"
        self.state = self.root / "state.json"
        self.history = self.root / "history.csv"
        self.curves = self.root / "curves.png"

    @classmethod
    def of(cls, run: str | Path | RunDir) -> RunDir:
        """A RunDir as given, or one for a path."""
        return run if isinstance(run, RunDir) else cls(run)

    def exists(self) -> bool:
        return self.config.is_file() and self.vocab.is_file()

    @property
    def trained_weights(self) -> Path:
        """The file load_model(weights="best") reads: best.weights.h5, else head.weights.npz."""
        return self.best if self.best.is_file() else self.head

    def load_config(self) -> Config:
        return Config.load(self.config)

    def load_vocab(self) -> Vocabulary:
        return Vocabulary.load(self.vocab)

    def load_split(self) -> dict:
        return json.loads(self.split.read_text())

    def load_state(self) -> dict | None:
        return json.loads(self.state.read_text()) if self.state.is_file() else None


def load_model(run: str | Path | RunDir, weights: str = "best"):
    """Rebuild (cfg, vocab, CaptionModel) from a run directory. Imports TensorFlow."""
    from edgecap.training.model import CaptionModel

    rd = RunDir.of(run)
    if not rd.exists():
        raise FileNotFoundError(f"{rd.root}: not a run directory (config.json / vocab.json missing)")
    cfg, vocab = rd.load_config(), rd.load_vocab()
    path = rd.best if weights == "best" else rd.last
    if weights == "best" and not path.is_file() and rd.head.is_file():
        model = CaptionModel(cfg, len(vocab), load_pretrained=True)
        load_head(model, rd.head)
        return cfg, vocab, model
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no weights (has training finished an epoch?)")
    model = CaptionModel(cfg, len(vocab), load_pretrained=False)
    model.load_weights(path)
    return cfg, vocab, model


def head_weights(model) -> dict:
    """The weights training changes when the backbone is frozen: {variable path: array}."""
    if model.cfg.encoder.trainable or not model.cfg.encoder.pretrained:
        raise ValueError("head weights alone describe a model only when its backbone is frozen and pretrained")
    return {w.path: w.numpy() for w in model.project.weights + model.decoder.weights}


def save_head(model, path: str | Path) -> None:
    """Write head_weights(model) as an npz (float32, ~11.5 MB for the edge config instead of 25.6 MB)."""
    import numpy as np

    np.savez(path, **head_weights(model))


def load_head(model, path: str | Path) -> None:
    """Assign the projection + decoder weights saved by save_head; every variable must be present, same shape."""
    import numpy as np

    with np.load(path) as data:
        saved = {k: data[k] for k in data.files}
    variables = model.project.weights + model.decoder.weights
    missing = [w.path for w in variables if w.path not in saved]
    extra = sorted(set(saved) - {w.path for w in variables})
    if missing or extra:
        raise ValueError(f"{path}: head weights do not match the model (missing {missing}, unexpected {extra})")
    for w in variables:
        if tuple(saved[w.path].shape) != tuple(w.shape):
            raise ValueError(f"{path}: {w.path} has shape {saved[w.path].shape}, the model wants {tuple(w.shape)}")
        w.assign(saved[w.path])
