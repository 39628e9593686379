"""The Keras model behind the runtime's step protocol (runtime.decoding.StepModel), compiled.

This is the reference every TFLite bundle is compared with: same decode loop, same preprocessing;
calls go through `tf.function` graphs (the fastest way TensorFlow offers here, not eager calls).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from edgecap.training.model import CaptionModel


class KerasCaptioner:
    """encode(image) -> (P, D); step(...) per runtime.decoding.StepModel."""

    def __init__(self, model: CaptionModel):
        self.model = model
        self.hidden_size = model.cfg.decoder.hidden
        s = model.cfg.image.size
        self._encode = tf.function(
            lambda x: model.features(model.maps(x[:, None]), tf.ones((tf.shape(x)[0], 1)))[0],
            input_signature=[tf.TensorSpec((None, s, s, 3), tf.float32)],
        )
        n = model.cfg.max_views * model.positions
        d, h = model.cfg.encoder.feature_dim, model.cfg.decoder.hidden
        self._step = tf.function(
            lambda tok, hh, cc, f, m: model.decoder(tok, hh, cc, f, m),
            input_signature=[
                tf.TensorSpec((None,), tf.int32), tf.TensorSpec((None, h), tf.float32),
                tf.TensorSpec((None, h), tf.float32), tf.TensorSpec((None, n, d), tf.float32),
                tf.TensorSpec((None, n), tf.float32),
            ],
        )

    def encode(self, images: np.ndarray) -> np.ndarray:
        """(B, S, S, 3) or (S, S, 3) prepared images -> (B, P, D) or (P, D) features of one view each."""
        single = images.ndim == 3
        out = self._encode(np.asarray(images if not single else images[None], np.float32)).numpy()
        return out[0] if single else out

    def step(self, tokens, h, c, features, mask):
        b = len(tokens)
        f = np.broadcast_to(features[None], (b,) + features.shape)
        m = np.broadcast_to(mask[None], (b,) + mask.shape)
        logits, h2, c2, att = self._step(np.asarray(tokens, np.int32), h, c, f, m)
        return logits.numpy(), h2.numpy(), c2.numpy(), att.numpy()


class KerasBundle(KerasCaptioner):
    """The Keras model behind the runtime's Bundle interface, so `runtime.captioner.Captioner` runs it
    unchanged: the same reading, sanity checks, preprocessing, view fusion, decode loop and labeler as
    every TFLite bundle. `edgecap bench` times and decodes the reference through it.

    `eager=True` calls the Keras layers directly instead of the compiled graphs (reported for comparison;
    TensorFlow's slow path)."""

    def __init__(self, model: CaptionModel, vocab, run: str = "", eager: bool = False):
        from types import SimpleNamespace

        from edgecap.runtime.decoding import SpecialIds

        super().__init__(model)
        cfg = model.cfg
        self.path, self.vocab = run, vocab
        self.special = SpecialIds.from_vocab(vocab)
        self.image_size, self.mean, self.std = cfg.image.size, cfg.image.mean, cfg.image.std
        self.max_views, self.max_len, self.positions = cfg.max_views, cfg.text.max_len, model.positions
        self.interpreter_name = "keras-eager" if eager else "keras-compiled"
        self.manifest = SimpleNamespace(
            mode="keras-eager" if eager else "keras", notice="the Keras reference model", edgecap_version="",
            input=SimpleNamespace(view_order=("frontal", "lateral")[:cfg.max_views]))
        if eager:
            encoder, step = model.encoder_model(), model.decoder
            self._encode = lambda x: encoder(x, training=False)
            self._step = lambda tok, hh, cc, f, m: step(tok, hh, cc, f, m)

    def encode(self, prepared: np.ndarray) -> np.ndarray:
        """One view: (S, S, 3) -> (P, D), as runtime.bundle.Bundle.encode."""
        return np.asarray(self._encode(np.asarray(prepared[None], np.float32)))[0]

    def step(self, tokens, h, c, features, mask):
        b = len(tokens)
        f = np.broadcast_to(features[None], (b,) + features.shape)
        m = np.broadcast_to(mask[None], (b,) + mask.shape)
        out = self._step(np.asarray(tokens, np.int32), np.asarray(h, np.float32), np.asarray(c, np.float32),
                         np.asarray(f, np.float32), np.asarray(m, np.float32))
        return tuple(np.asarray(o) for o in out)
