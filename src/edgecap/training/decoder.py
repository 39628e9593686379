"""Attention LSTM decoder (Show, Attend and Tell), written as ONE step.

    token (B,) int32, h (B, H), c (B, H), features (B, N, D), mask (B, N)
        -> logits (B, V), h' (B, H), c' (B, H), attention (B, N)

Attention is additive with the projected image features as keys and values (the encoder's projection
already learns the key space, so no per-step (N, D) x (D, A) product is needed):
    e = w . tanh(features + W_h h)              (B, N)
    a = softmax(e) * mask / sum(softmax(e) * mask)   absent views (mask 0) get no weight
    z = sum_n a_n features_n                    (B, D)
    h', c' = LSTMCell([embed(token), z], (h, c))
    logits = W_o dropout([h', z])               (B, V)
With mask all zero (text-only pre-training) z is 0 and the cell is a plain language model.

Training unrolls the same sublayers with teacher forcing (`unroll`); conversion exports `call` as is
(docs/toolchain.md: a one-step model is the only LSTM export that converts to full int8 without WHILE ops).
"""

from __future__ import annotations

import numpy as np

from edgecap.training.tf_env import keras, layers, ops


class AttentionLSTMDecoder(keras.layers.Layer):
    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        hidden: int,
        feature_dim: int,
        dropout: float = 0.0,
        embedding_init: np.ndarray | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocab_size, self.embed_dim, self.hidden, self.feature_dim = vocab_size, embed_dim, hidden, feature_dim
        init = keras.initializers.Constant(embedding_init) if embedding_init is not None else "uniform"
        self.embed = layers.Embedding(vocab_size, embed_dim, embeddings_initializer=init, name="embed")
        self.att_h = layers.Dense(feature_dim, name="att_h")  # W_h
        self.att_w = layers.Dense(1, use_bias=False, name="att_w")  # w
        self.cell = layers.LSTMCell(hidden, name="lstm")
        self.drop = layers.Dropout(dropout)
        self.out = layers.Dense(vocab_size, name="logits")

    def build(self, input_shape=None):
        self.embed.build((None,))
        self.att_h.build((None, self.hidden))
        self.att_w.build((None, None, self.feature_dim))
        self.cell.build((None, self.embed_dim + self.feature_dim))
        self.out.build((None, self.hidden + self.feature_dim))
        self.built = True

    # ---- pieces shared by `call` (one step) and `unroll` (teacher forcing) -------------------------
    def attend(self, h, features, mask):
        """h (B, H), features (B, N, D), mask (B, N) -> context (B, D), attention (B, N)."""
        e = ops.squeeze(self.att_w(ops.tanh(features + ops.expand_dims(self.att_h(h), 1))), -1)  # (B, N)
        a = ops.softmax(e, axis=-1) * mask
        a = a / (ops.sum(a, axis=-1, keepdims=True) + 1e-6)
        return ops.sum(ops.expand_dims(a, -1) * features, axis=1), a

    def advance(self, emb, h, c, features, mask, training=False):
        """emb (B, E) -> h', c', context, attention."""
        z, a = self.attend(h, features, mask)
        _, (h2, c2) = self.cell(ops.concatenate([emb, z], axis=-1), [h, c], training=training)
        return h2, c2, z, a

    def project(self, h, z, training=False):
        return self.out(self.drop(ops.concatenate([h, z], axis=-1), training=training))

    # ---- one step (the exported contract) -----------------------------------------------------------
    def call(self, token, h, c, features, mask, training=False):
        emb = self.embed(token)  # (B, E)
        h2, c2, z, a = self.advance(emb, h, c, features, mask, training)
        return self.project(h2, z, training), h2, c2, a

    def unroll(self, tokens, features, mask, training=False):
        """Teacher forcing. tokens (B, T) int32 starting with <bos> -> logits (B, T, V), attention (B, T, N)."""
        batch = ops.shape(tokens)[0]
        h = ops.zeros((batch, self.hidden))
        c = ops.zeros((batch, self.hidden))
        embs = self.embed(tokens)  # (B, T, E)
        hs, zs, atts = [], [], []
        for t in range(tokens.shape[1]):  # static T: a Python unroll traced once per shape
            h, c, z, a = self.advance(embs[:, t], h, c, features, mask, training)
            hs.append(h)
            zs.append(z)
            atts.append(a)
        hs, zs = ops.stack(hs, axis=1), ops.stack(zs, axis=1)
        logits = self.out(self.drop(ops.concatenate([hs, zs], axis=-1), training=training))
        return logits, ops.stack(atts, axis=1)
