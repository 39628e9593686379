"""The captioning model: CNN encoder (per view) -> projection -> attention LSTM decoder.

    images (B, V, S, S, 3) --cnn--> maps (B, V, g, g, C) --reshape--> (B, V*P, C) --project--> (B, V*P, D)
    view_mask (B, V) --repeat P--> mask (B, V*P)
    decoder step / unroll over (features, mask)

V = max_views (frontal, lateral); a missing view is zeros with mask 0, so one view works as well as two.
With a frozen CNN, training feeds cached maps (B, V, P, C) instead of images (training.feature_cache).
No training loop here (training.train); export builds on `encoder_model` and `step_model`.
"""

from __future__ import annotations

import numpy as np

from edgecap.config import Config
from edgecap.training.decoder import AttentionLSTMDecoder
from edgecap.training.tf_env import keras, layers, ops


def build_cnn(cfg: Config, load_pretrained: bool = True) -> keras.Model:
    """(B, S, S, 3) normalised image -> (B, g, g, C) feature map. load_pretrained=False skips reading the
    ImageNet file when a run's own weights are loaded next."""
    size = cfg.image.size
    if cfg.encoder.kind == "efficientnet_lite0":
        from edgecap.training.efficientnet_lite import build_efficientnet_lite0

        imagenet = cfg.encoder.pretrained and load_pretrained
        cnn = build_efficientnet_lite0(size, include_top=False, weights="imagenet" if imagenet else None)
    elif cfg.encoder.kind == "tiny":
        x = inp = keras.Input((size, size, 3), name="image")
        for i, f in enumerate(cfg.encoder.tiny_filters):
            x = layers.Conv2D(f, 3, strides=2, padding="same", use_bias=False, name=f"tiny{i}_down")(x)
            x = layers.BatchNormalization(momentum=0.9, name=f"tiny{i}_bn1")(x)
            x = layers.ReLU(6.0)(x)
            x = layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"tiny{i}_conv")(x)
            x = layers.BatchNormalization(momentum=0.9, name=f"tiny{i}_bn2")(x)
            x = layers.ReLU(6.0)(x)
        cnn = keras.Model(inp, x, name="tiny_cnn")
    else:
        raise ValueError(f"unknown encoder kind {cfg.encoder.kind!r}")
    cnn.trainable = cfg.encoder.trainable
    return cnn


class CaptionModel(keras.Model):
    def __init__(
        self,
        cfg: Config,
        vocab_size: int,
        embedding_init: np.ndarray | None = None,
        load_pretrained: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.cfg = cfg
        self.cnn = build_cnn(cfg, load_pretrained)
        self.map_channels = int(self.cnn.output.shape[-1])
        self.positions = int(self.cnn.output.shape[1] * self.cnn.output.shape[2])
        self.project = layers.Dense(cfg.encoder.feature_dim, activation="relu", name="project")
        self.decoder = AttentionLSTMDecoder(
            vocab_size,
            cfg.decoder.embed_dim,
            cfg.decoder.hidden,
            cfg.encoder.feature_dim,
            cfg.decoder.dropout,
            embedding_init,
            name="decoder",
        )
        self.project.build((None, None, self.map_channels))
        self.decoder.build()
        self.built = True

    # ---- encoder ------------------------------------------------------------------------------
    def maps(self, images, training=False):
        """(B, V, S, S, 3) -> (B, V, P, C)."""
        b, v = ops.shape(images)[0], images.shape[1]
        s = self.cfg.image.size
        m = self.cnn(ops.reshape(images, (-1, s, s, 3)), training=training and self.cfg.encoder.trainable)
        return ops.reshape(m, (b, v, self.positions, self.map_channels))

    def features(self, maps, view_mask):
        """maps (B, V, P, C), view_mask (B, V) -> features (B, V*P, D), mask (B, V*P)."""
        b, v = ops.shape(maps)[0], maps.shape[1]
        f = self.project(ops.cast(maps, "float32")) * ops.cast(view_mask, "float32")[:, :, None, None]
        mask = ops.repeat(ops.cast(view_mask, "float32"), self.positions, axis=1)
        return ops.reshape(f, (b, v * self.positions, self.cfg.encoder.feature_dim)), mask

    def call(self, inputs, training=False):
        """inputs: dict(x=images (B, V, S, S, 3) or cached maps (B, V, P, C), view_mask, tokens (B, T))
        -> logits (B, T, V), attention (B, T, N)."""
        x = inputs["x"]
        maps = self.maps(x, training) if len(x.shape) == 5 else x
        features, mask = self.features(maps, inputs["view_mask"])
        return self.decoder.unroll(inputs["tokens"], features, mask, training=training)

    # ---- export views (one image; one step of a fixed number of rows) ----------------------------------
    def encoder_model(self) -> keras.Model:
        """(1, S, S, 3) -> (1, P, D): one view; the runtime fuses views (runtime.study.fuse_views)."""
        s = self.cfg.image.size
        img = keras.Input((s, s, 3), batch_size=1, name="image")
        m = self.cnn(img, training=False)
        f = self.project(ops.reshape(m, (1, self.positions, self.map_channels)))
        return keras.Model(img, f, name="encoder")

    def step_model(self, batch: int = 1) -> keras.Model:
        """One decoder step for `batch` hypotheses sharing one image memory:
        token (B,), h (B, H), c (B, H), features (1, N, D), mask (1, N) -> logits (B, V), h_out, c_out (B, H),
        attention (B, N). The attention broadcasts the one memory over the B rows, so a beam of B advances in
        ONE interpreter call (the runtime pads a smaller batch); the memory is not copied per row."""
        n = self.cfg.max_views * self.positions
        d, h = self.cfg.encoder.feature_dim, self.cfg.decoder.hidden
        token = keras.Input((), batch_size=batch, dtype="int32", name="token")
        hin = keras.Input((h,), batch_size=batch, name="h")
        cin = keras.Input((h,), batch_size=batch, name="c")
        feats = keras.Input((n, d), batch_size=1, name="features")
        mask = keras.Input((n,), batch_size=1, name="mask")
        logits, h2, c2, att = self.decoder(token, hin, cin, feats, mask)
        outputs = {"logits": logits, "h_out": h2, "c_out": c2, "attention": att}
        return keras.Model([token, hin, cin, feats, mask], outputs, name="decoder_step")


def masked_token_loss(targets, logits):
    """Per-example mean cross-entropy over non-pad target tokens. targets (B, T), logits (B, T, V) -> (B,)."""
    ce = keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)  # (B, T)
    w = ops.cast(ops.not_equal(targets, 0), ce.dtype)
    return ops.sum(ce * w, axis=1) / ops.maximum(ops.sum(w, axis=1), 1.0)
