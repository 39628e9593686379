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
