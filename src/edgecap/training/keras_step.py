"""The Keras model of a run behind the runtime's interfaces: the reference every TFLite bundle is compared with.

    keras = KerasBundle(model, vocab, run)                 # model, vocab: training.run_dir.load_model(run)
    features, mask = encode_study_files(keras, paths)      # runtime.study, as for a bundle
    decoded = decode(keras, features, mask, keras.special, keras.max_len, beam=3)
    report = Captioner(keras).caption("frontal.png")       # the whole runtime flow, the Keras model inside

`KerasBundle` implements runtime.decoding.StepModel (hidden_size, step), runtime.study.ImageEncoder
(image_size, mean, std, max_views, encode) and what runtime.captioner.Captioner reads besides (special,
max_len, vocab, positions, view_order, info), so report generation from a run (training.generate),
conversion (calibration, verification) and the bench run it through the same preprocessing, view fusion
and decode loop as a bundle: a difference between their reports comes from conversion alone.

Calls go through `tf.function` graphs, traced once for any batch (the fastest way TensorFlow offers here);
`eager=True` calls the Keras layers directly instead (TensorFlow's slow path, for the bench's comparison).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecap.runtime.decoding import SpecialIds
from edgecap.runtime.study import VIEW_ORDER
from edgecap.runtime.vocab import Vocabulary
from edgecap.training.model import CaptionModel
from edgecap.training.tf_env import tf


class KerasBundle:
    """encode(prepared (S, S, 3)) -> (P, D); step(...) per runtime.decoding.StepModel."""

    def __init__(self, model: CaptionModel, vocab: Vocabulary, run: str | Path = "", eager: bool = False):
        cfg = model.cfg
        self.model, self.vocab, self.path = model, vocab, str(run)
        self.special = SpecialIds.from_vocab(vocab)
        self.image_size, self.mean, self.std = cfg.image.size, cfg.image.mean, cfg.image.std
        self.max_views, self.max_len, self.positions = cfg.max_views, cfg.text.max_len, model.positions
        self.hidden_size = cfg.decoder.hidden
        self.view_order = VIEW_ORDER[: cfg.max_views]
        self.interpreter_name = "keras-eager" if eager else "keras-compiled"
        self.info = {
            "path": self.path,
            "mode": "keras-eager" if eager else "keras",
            "interpreter": self.interpreter_name,
            "notice": "the Keras reference model",
            "edgecap_version": "",
        }
        if eager:
            encoder = model.encoder_model()
            self._encode = lambda x: encoder(x, training=False)
            self._step = model.decoder
            return
        s, n = cfg.image.size, cfg.max_views * model.positions
        d, h = cfg.encoder.feature_dim, cfg.decoder.hidden
        self._encode = tf.function(
            lambda x: model.features(model.maps(x[:, None]), tf.ones((tf.shape(x)[0], 1)))[0],
            input_signature=[tf.TensorSpec((None, s, s, 3), tf.float32)],
        )
        self._step = tf.function(
            lambda tok, hh, cc, f, m: model.decoder(tok, hh, cc, f, m),
            input_signature=[
                tf.TensorSpec((None,), tf.int32),
                tf.TensorSpec((None, h), tf.float32),
                tf.TensorSpec((None, h), tf.float32),
                tf.TensorSpec((None, n, d), tf.float32),
                tf.TensorSpec((None, n), tf.float32),
            ],
        )

    def encode(self, prepared: np.ndarray) -> np.ndarray:
        """One view: (S, S, 3) -> (P, D), as runtime.bundle.Bundle.encode."""
        return np.asarray(self._encode(np.asarray(prepared[None], np.float32)))[0]

    def step(self, tokens, h, c, features, mask):
        """tokens (B,), h/c (B, H), features (N, D), mask (N,) -> logits (B, V), h', c' (B, H), attention (B, N);
        the one study memory is broadcast over the B rows, as the bundle's decoder step does."""
        b = len(tokens)
        f = np.broadcast_to(features[None], (b,) + features.shape)
        m = np.broadcast_to(mask[None], (b,) + mask.shape)
        out = self._step(
            np.asarray(tokens, np.int32),
            np.asarray(h, np.float32),
            np.asarray(c, np.float32),
            np.asarray(f, np.float32),
            np.asarray(m, np.float32),
        )
        return tuple(np.asarray(o) for o in out)
