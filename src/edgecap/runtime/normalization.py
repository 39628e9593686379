"""How a Keras application wants its input, as numbers the manifest records. Device-safe (stdlib only).

Every Keras application's `preprocess_input` is one of four modes; on edgecap's grey image replicated to three
channels (runtime.preprocess) each is (255 * gray - mean_c) / std_c per channel, in the model's channel order:

    caffe   VGG16/19, ResNet50/101/152: RGB -> BGR, minus the ImageNet means (B, G, R), no scaling
    torch   DenseNet121/169/201: / 255, minus the ImageNet mean, divided by its std (R, G, B)
    tf      InceptionV3, Xception, MobileNet(V2), ResNet*V2, NASNet, InceptionResNetV2: [-1, 1]
    raw     EfficientNet*, MobileNetV3*, ConvNeXt*: 0-255, the model normalises inside itself

    mean, std = channel_stats("torch")    # ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375))
    KERAS_APPS["DenseNet121"]             # App("DenseNet121", "torch", 224, 1024)
"""

from __future__ import annotations

from dataclasses import dataclass

_IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB, of [0, 1] images
_IMAGENET_STD = (0.229, 0.224, 0.225)

# mode -> (mean per channel, std per channel), on 0-255 input
NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "caffe": ((103.939, 116.779, 123.68), (1.0, 1.0, 1.0)),
    "torch": (
        tuple(round(255.0 * m, 6) for m in _IMAGENET_MEAN),  # type: ignore[dict-item]
        tuple(round(255.0 * s, 6) for s in _IMAGENET_STD),
    ),
    "tf": ((127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
    "raw": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}


def channel_stats(mode: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(mean, std) per channel of a normalization mode; ValueError naming the modes for another name."""
    try:
        return NORMALIZATIONS[mode]
    except KeyError:
        raise ValueError(f"unknown normalization {mode!r}: one of {', '.join(NORMALIZATIONS)}") from None


@dataclass(frozen=True)
class App:
    """A keras.applications model used as a pooled feature extractor (include_top=False, pooling="avg")."""

    name: str  # the keras.applications constructor
    normalization: str  # NORMALIZATIONS key: what its preprocess_input does
    size: int  # the input size its ImageNet weights were trained at
    features: int  # F: the pooled feature size


KERAS_APPS: dict[str, App] = {
    a.name: a
    for a in (
        App("VGG16", "caffe", 224, 512),
        App("VGG19", "caffe", 224, 512),
        App("ResNet50", "caffe", 224, 2048),
        App("ResNet101", "caffe", 224, 2048),
        App("ResNet152", "caffe", 224, 2048),
        App("ResNet50V2", "tf", 224, 2048),
        App("ResNet101V2", "tf", 224, 2048),
        App("DenseNet121", "torch", 224, 1024),
        App("DenseNet169", "torch", 224, 1664),
        App("DenseNet201", "torch", 224, 1920),
        App("InceptionV3", "tf", 299, 2048),
        App("InceptionResNetV2", "tf", 299, 1536),
        App("Xception", "tf", 299, 2048),
        App("MobileNet", "tf", 224, 1024),
        App("MobileNetV2", "tf", 224, 1280),
        App("MobileNetV3Small", "raw", 224, 576),
        App("MobileNetV3Large", "raw", 224, 960),
        App("EfficientNetB0", "raw", 224, 1280),
        App("EfficientNetB1", "raw", 240, 1280),
        App("EfficientNetB2", "raw", 260, 1408),
        App("EfficientNetB3", "raw", 300, 1536),
        App("NASNetMobile", "tf", 224, 1056),
    )
}
