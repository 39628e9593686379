"""A user's Keras captioner (the notebook "merge" / "inject" forms) behind the runtime's interfaces.

    decoder = load_keras_model("model.keras")               # .keras or legacy .h5 (KerasModelError otherwise)
    info = inspect_decoder(decoder)                          # which input is which, F, L, V (or KerasModelError)
    keras = KerasSequence(decoder, info, encoder, vocab, normalization, max_len)   # the reference
    report = Captioner(keras).caption("frontal.png")         # the runtime flow, the user's model inside

Such a decoder maps [image features (B, F), padded partial sequence (B, L)] -> softmax (B, V), and captions by
calling it on <bos> + the tokens so far. `KerasSequence` implements runtime.decoding.SequenceModel and
runtime.study.ImageEncoder (one view, one feature vector: P = 1), so verification, calibration and the bench
run it through the same decode loop as the bundle. Both return logits: the user's layers up to the last Dense,
whose softmax the decode loop applies itself (log_softmax), so a converted decoder's error is measured on the
logits and an int8 softmax never rounds small probabilities to zero.

For export, recurrent layers are rebuilt with unroll=True (the same weights): a Keras LSTM over a sequence
otherwise becomes a WHILE loop, which full-int8 calibration crashes on (docs/toolchain.md).
Needs TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecap.runtime.decoding import SpecialIds
from edgecap.runtime.vocab import Vocabulary
from edgecap.training.tf_env import keras, tf

RECURRENT_LAYERS = ("LSTM", "GRU", "SimpleRNN")


class KerasModelError(ValueError):
    """A file that is not a Keras model, or a model that is not a sequence-input captioner edgecap can run."""


def load_keras_model(path: str | Path, what: str = "model") -> keras.Model:
    """A .keras or legacy .h5 file -> the Keras model (not compiled). KerasModelError for anything else.

    Keras 3 writes the mask of Embedding(mask_zero=True) into a legacy .h5 as a NotEqual operation that its own
    .h5 reader does not know; it is passed in as a custom object."""
    from keras.src.ops import numpy as knp

    path = Path(path)
    if not path.is_file():
        raise KerasModelError(f"{path}: no such file")
    if path.suffix.lower() not in (".keras", ".h5", ".hdf5"):
        raise KerasModelError(f"{path}: not a Keras {what} file (.keras or .h5)")
    try:
        model = keras.models.load_model(path, compile=False, custom_objects={"NotEqual": knp.NotEqual})
    except Exception as e:  # noqa: BLE001 - zip, HDF5 and deserialisation errors of many types
        raise KerasModelError(f"{path}: not a readable Keras {what} ({type(e).__name__}: {_first_line(e)})") from None
    if not isinstance(model, keras.Model):
        raise KerasModelError(f"{path}: holds a {type(model).__name__}, not a Keras model")
    return model


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]


@dataclass(frozen=True)
class DecoderInfo:
    """What edgecap reads off a sequence-input decoder."""

    features_input: int  # index into model.inputs of the image features (B, F)
    sequence_input: int  # index of the padded token sequence (B, L): the input an Embedding reads
    feature_dim: int  # F
    sequence_length: int | None  # L (None: the model takes any length; --max-length decides)
    vocab_size: int  # V: units of the output Dense
    embedding_size: int  # input_dim of the Embedding that reads the sequence
    sequence_dtype: str  # the sequence input's dtype ("float32" for a plain keras.Input)


def inspect_decoder(model: keras.Model, name: str = "model") -> DecoderInfo:
    """Find the two inputs and the vocabulary size; KerasModelError (one line) for any other structure."""
    inputs = list(model.inputs)
    shapes = [tuple(x.shape) for x in inputs]
    if len(inputs) != 2:
        raise KerasModelError(
            f"{name}: expected 2 inputs (image features (batch, F) and the padded token sequence (batch, L)), "
            f"the model has {len(inputs)}: {', '.join(str(s) for s in shapes)}"
        )
    embeddings = [layer for layer in model.layers if isinstance(layer, keras.layers.Embedding)]
    reads = [next((e for e in embeddings if _reads(e, x)), None) for x in inputs]
    if sum(e is not None for e in reads) != 1:
        raise KerasModelError(
            f"{name}: no sequence input: expected exactly one input read by an Embedding layer (the padded token "
            f"sequence), found {sum(e is not None for e in reads)} among inputs {', '.join(str(s) for s in shapes)}"
        )
    seq = 0 if reads[0] is not None else 1
    feat = 1 - seq
    embedding = reads[seq]
    assert embedding is not None
    if len(shapes[feat]) != 2 or shapes[feat][1] is None:
        raise KerasModelError(
            f"{name}: the image input must be a feature vector (batch, F), got {shapes[feat]} (pool the CNN's "
            f"feature map: pooling='avg')"
        )
    if len(shapes[seq]) != 2:
        raise KerasModelError(f"{name}: the sequence input must be (batch, L), got {shapes[seq]}")
    head = _output_dense(model, name)
    return DecoderInfo(
        features_input=feat,
        sequence_input=seq,
        feature_dim=int(shapes[feat][1]),
        sequence_length=None if shapes[seq][1] is None else int(shapes[seq][1]),
        vocab_size=int(head.units),
        embedding_size=int(embedding.input_dim),
        sequence_dtype=str(inputs[seq].dtype),
    )


def _reads(layer: keras.layers.Layer, x: Any) -> bool:
    """Whether `layer` is called directly on the model input `x`."""
    try:
        return any(t is x for node in layer._inbound_nodes for t in node.input_tensors)
    except AttributeError:
        return False


def _output_dense(model: keras.Model, name: str) -> keras.layers.Dense:
    """The Dense layer whose softmax is the model's output (its activation, or a Softmax / Activation after)."""
    if len(model.outputs) != 1:
        raise KerasModelError(
            f"{name}: expected one output (the next-token softmax), the model has {len(model.outputs)}"
        )
    last = model.layers[-1]
    if _is_softmax(last) and not isinstance(last, keras.layers.Dense):
        last = _producer(last)
    if not isinstance(last, keras.layers.Dense) or (
        _activation(last) != "softmax" and not _is_softmax(model.layers[-1])
    ):
        raise KerasModelError(
            f"{name}: the output must be a Dense layer's softmax over the vocabulary, "
            f"got {type(model.layers[-1]).__name__}"
        )
    return last


def _activation(layer: keras.layers.Layer) -> str:
    return str(layer.get_config().get("activation", ""))


def _is_softmax(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, keras.layers.Softmax) or (
        isinstance(layer, keras.layers.Activation) and _activation(layer) == "softmax"
    )


def _producer(layer: keras.layers.Layer) -> keras.layers.Layer:
    history = layer.input._keras_history
    return history.operation if hasattr(history, "operation") else history[0]


def logits_model(model: keras.Model, name: str = "logits") -> keras.Model:
    """The same inputs and layers up to the output Dense, without its softmax: -> logits (B, V)."""
    head = _output_dense(model, model.name)
    dense = keras.layers.Dense(head.units, use_bias=head.use_bias, name="logits_dense")
    out = dense(head.input)
    dense.set_weights(head.get_weights())
    return keras.Model(model.inputs, out, name=name)


def unrolled(model: keras.Model) -> keras.Model:
    """A copy whose LSTM / GRU / SimpleRNN layers run unroll=True, with the same weights (no WHILE loop)."""

    def clone(layer):
        config = layer.get_config()
        if type(layer).__name__ in RECURRENT_LAYERS:
            config = {**config, "unroll": True}
        return type(layer).from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def export_decoder(model: keras.Model, info: DecoderInfo, sequence_length: int, step_batch: int) -> keras.Model:
    """The bundle's decoder step: sequence (B, L), features (B, F) with a fixed batch -> {"logits": (B, V)}."""
    step = logits_model(unrolled(model), name="decoder_step")
    vec = keras.Input((info.feature_dim,), batch_size=step_batch, name="features")
    seq = keras.Input((sequence_length,), batch_size=step_batch, name="sequence", dtype=info.sequence_dtype)
    args = [vec, seq] if info.features_input == 0 else [seq, vec]
    return keras.Model([seq, vec], {"logits": step(args)}, name="decoder_step")


def export_encoder(encoder: keras.Model, size: int) -> keras.Model:
    """image (1, S, S, 3) -> {"features": (1, 1, F)}: the bundle's encoder, one position per view."""
    image = keras.Input((size, size, 3), batch_size=1, name="image")
    f = encoder(image)
    return keras.Model(image, {"features": keras.layers.Reshape((1, int(f.shape[-1])))(f)}, name="encoder")


class KerasSequence:
    """The user's encoder + decoder as a ReportModel: encode(prepared (S, S, 3)) -> (1, F); predict_next."""

    decoder_kind = "sequence"
    has_attention = False
    max_views, positions = 1, 1
    view_order = ("frontal",)

    def __init__(
        self,
        decoder: keras.Model,
        info: DecoderInfo,
        encoder: keras.Model,
        vocab: Vocabulary,
        mean: Any,
        std: Any,
        image_size: int,
        sequence_length: int,
        max_len: int,
        padding: str = "pre",
        path: str = "",
        eager: bool = False,
    ):
        """eager: call the Keras models directly instead of tf.function graphs (the bench's slow path)."""
        self.decoder_model, self.encoder_model, self.info_ = decoder, encoder, info
        self.vocab, self.special = vocab, SpecialIds.from_vocab(vocab)
        self.mean, self.std, self.image_size = mean, std, image_size
        self.sequence_length, self.max_len, self.padding = sequence_length, max_len, padding
        self.hidden_size = 0
        self.interpreter_name = "keras-eager" if eager else "keras-compiled"
        self.info = {
            "path": path,
            "mode": "keras-eager" if eager else "keras",
            "interpreter": self.interpreter_name,
            "notice": "the Keras reference model",
            "edgecap_version": "",
        }
        logits = logits_model(decoder)
        f, s = info.features_input, info.sequence_input
        dtype = tf.as_dtype(info.sequence_dtype)

        def encode(x):
            return encoder(x, training=False)

        def call(vec, seq):
            args = [None, None]
            args[f], args[s] = tf.convert_to_tensor(vec, tf.float32), tf.cast(seq, dtype)  # eager: no numpy mix
            return logits(args, training=False)

        if eager:
            self._encode, self._predict = encode, call
            return
        self._encode = tf.function(
            encode, input_signature=[tf.TensorSpec((None, image_size, image_size, 3), tf.float32)]
        )
        self._predict = tf.function(
            call,
            input_signature=[
                tf.TensorSpec((None, info.feature_dim), tf.float32),
                tf.TensorSpec((None, sequence_length), tf.int32),
            ],
        )

    def encode(self, prepared: np.ndarray) -> np.ndarray:
        """One view: (S, S, 3) -> (1, F), as runtime.bundle.SequenceBundle.encode."""
        return np.asarray(self._encode(np.asarray(prepared[None], np.float32)))[0][None]

    def predict_next(self, prefixes: np.ndarray, features: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """runtime.decoding.SequenceModel: prefixes (B, L), features (1, F), mask (1,) -> logits (B, V)."""
        vec = np.broadcast_to(np.asarray(features[:1], np.float32), (len(prefixes), features.shape[1]))
        return np.asarray(self._predict(np.ascontiguousarray(vec), np.asarray(prefixes, np.int32)))
