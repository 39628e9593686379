"""The image contract on real sample images re-encoded as 8/16-bit PNG, JPEG, gray and RGB, any size."""

import cv2
import numpy as np
import pytest

from edgecap.runtime.preprocess import ImageError, load, read_image, to_gray

SIZE, MEAN, STD = 224, 127.0, 128.0


@pytest.fixture(scope="module")
def real_gray(iu_data):
    """A real Open-i PNG (stored as RGB with equal channels) as 8-bit gray."""
    return cv2.imread(str(iu_data / "images" / "CXR54_IM-2145-1001.png"), cv2.IMREAD_GRAYSCALE)


def test_real_png_shape_and_range(iu_data):
    x = load(iu_data / "images" / "CXR54_IM-2145-1001.png", SIZE, MEAN, STD)
    assert x.shape == (SIZE, SIZE, 3) and x.dtype == np.float32
    assert -1.0 <= x.min() < -0.5 and 0.5 < x.max() <= 1.0
    assert np.array_equal(x[..., 0], x[..., 2])


def test_formats_agree(tmp_path, real_gray):
    rgb = np.repeat(real_gray[:, :, None], 3, 2)
    cv2.imwrite(str(tmp_path / "g8.png"), real_gray)
    cv2.imwrite(str(tmp_path / "rgb8.png"), rgb)
    cv2.imwrite(str(tmp_path / "g16.png"), real_gray.astype(np.uint16) * 257)  # full 16-bit range
    cv2.imwrite(str(tmp_path / "g.jpg"), real_gray, [cv2.IMWRITE_JPEG_QUALITY, 95])
    ref = load(tmp_path / "g8.png", SIZE, MEAN, STD)
    assert np.allclose(load(tmp_path / "rgb8.png", SIZE, MEAN, STD), ref, atol=1e-5)
    # 16-bit is min-max stretched: equal to the 8-bit when the 8-bit image spans 0..255
    g = to_gray(read_image(tmp_path / "g8.png"))
    g16 = to_gray(read_image(tmp_path / "g16.png"))
    assert read_image(tmp_path / "g16.png").dtype == np.uint16
    assert np.allclose(g16, (g - g.min()) / (g.max() - g.min()), atol=1e-5)
    assert np.abs(load(tmp_path / "g.jpg", SIZE, MEAN, STD) - ref).mean() < 0.02


def test_twelve_bit_in_sixteen(tmp_path, real_gray):
    """A 12-bit detector image stored in a 16-bit PNG uses the full [0, 1] range after stretching."""
    cv2.imwrite(str(tmp_path / "g12.png"), real_gray.astype(np.uint16) * 16)
    g = to_gray(read_image(tmp_path / "g12.png"))
    assert g.min() == 0.0 and g.max() == 1.0


@pytest.mark.parametrize("shape", [(2500, 2048), (362, 512), (100, 700), (224, 224)])
def test_any_size(shape, real_gray):
    img = cv2.resize(real_gray, shape[::-1])
    assert load(img, SIZE, MEAN, STD).shape == (SIZE, SIZE, 3)


def test_bytes_and_arrays(iu_data):
    data = (iu_data / "images" / "CXR25_IM-1024-2001.png").read_bytes()
    assert np.array_equal(load(data, 64, MEAN, STD), load(iu_data / "images" / "CXR25_IM-1024-2001.png", 64, MEAN, STD))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_bytes(b"this is not an image at all"), "not a PNG, JPEG, BMP, TIFF or DICOM"),
        (lambda p: None, "no such file"),
    ],
)
def test_bad_files(tmp_path, make, message):
    p = tmp_path / "bad.png"
    make(p)
    with pytest.raises(ImageError, match=message):
        read_image(p)


def test_truncated_png(tmp_path, iu_data):
    p = tmp_path / "trunc.png"
    p.write_bytes((iu_data / "images" / "CXR25_IM-1024-2001.png").read_bytes()[:3000])
    with pytest.raises(ImageError):
        read_image(p)


def test_bad_arrays():
    with pytest.raises(ImageError):
        read_image(np.zeros((4, 4), np.uint8))
    with pytest.raises(ImageError):
        read_image(np.zeros((10, 10, 5), np.uint8))
