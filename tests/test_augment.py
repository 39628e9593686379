"""Augmentation keeps laterality: the heart of a real frontal X-ray stays on the image's right side."""

import numpy as np

from edgecap.runtime.preprocess import read_image, resize_square, to_gray
from edgecap.training.augment import AugmentConfig, augment


def _left_right_balance(gray):
    """Mean intensity of the marker's region minus its mirror image's region (> 0: marker still on the left)."""
    return float(gray[45:85, 12:34].mean() - gray[45:85, -34:-12].mean())


def test_never_flips_a_marked_real_image(iu_data):
    gray = resize_square(to_gray(read_image(iu_data / "images" / "CXR25_IM-1024-2001.png")), 128)
    marked = gray.copy()
    marked[40:90, 8:38] = 1.0  # bright marker in the image's left third (the patient's right, like an "R" marker)
    assert _left_right_balance(marked) > 0.3
    rng = np.random.default_rng(0)
    for _ in range(200):
        out = augment(marked, rng, AugmentConfig(clahe=True))
        assert out.shape == marked.shape and out.dtype == np.float32
        assert 0.0 <= out.min() and out.max() <= 1.0
        assert _left_right_balance(out) > 0.15, "augmentation moved the marker to the other side"


def test_flip_only_when_asked(iu_data):
    gray = resize_square(to_gray(read_image(iu_data / "images" / "CXR25_IM-1024-2001.png")), 128)
    gray[40:90, 8:38] = 1.0
    rng = np.random.default_rng(0)
    flipped = [_left_right_balance(augment(gray, rng, AugmentConfig(horizontal_flip=True))) < 0 for _ in range(50)]
    assert any(flipped) and not all(flipped)
    assert AugmentConfig().horizontal_flip is False


def test_augment_changes_pixels_but_not_much(iu_data):
    gray = resize_square(to_gray(read_image(iu_data / "images" / "CXR25_IM-1024-2001.png")), 128)
    out = augment(gray, np.random.default_rng(1))
    diff = np.abs(out - gray).mean()
    assert 0.001 < diff < 0.2


def test_warp_identity_and_integer_shift_are_exact():
    """The numpy warp (training.augment.warp_affine) against what an affine map must give, no library needed:
    identity -> the image itself; a whole-pixel shift -> the shifted image with the border replicated."""
    from edgecap.training.augment import rotation_matrix, warp_affine

    img = np.random.default_rng(3).random((40, 40)).astype(np.float32)
    assert np.array_equal(warp_affine(img, rotation_matrix((20.0, 20.0), 0.0, 1.0)), img)
    m = rotation_matrix((20.0, 20.0), 0.0, 1.0)
    m[:, 2] += (3.0, -2.0)  # content moves 3 px right, 2 px up
    out = warp_affine(img, m)
    assert np.array_equal(out[:38, 3:], img[2:, :37])
    assert np.array_equal(out[:38, :3], np.repeat(img[2:, :1], 3, axis=1))  # left border replicated
    assert np.array_equal(out[38:, 3:], np.repeat(img[-1:, :37], 2, axis=0))  # bottom border replicated


def test_warp_rotation_matches_opencv_on_a_real_image(iu_data):
    """A 90-degree turn is exact; a small rotation + scale + shift agrees with OpenCV's float warp (an
    independent implementation) to within interpolation rounding, so training saw the same kind of image."""
    import cv2

    from edgecap.training.augment import rotation_matrix, warp_affine

    gray = resize_square(to_gray(read_image(iu_data / "images" / "CXR25_IM-1024-2001.png")), 128)
    turned = warp_affine(gray, rotation_matrix((63.5, 63.5), 90.0, 1.0))
    assert np.allclose(turned, np.rot90(gray), atol=1e-5)
    m = rotation_matrix((64.0, 64.0), 3.7, 1.03)
    m[:, 2] += (2.4, -1.7)
    ref = cv2.warpAffine(gray, m, (128, 128), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    assert np.abs(warp_affine(gray, m) - ref).max() < 0.02  # OpenCV 4.x uses 1/32-pixel tables: up to ~3 levels


def test_seeded_augmentation_is_reproducible(iu_data):
    gray = resize_square(to_gray(read_image(iu_data / "images" / "CXR25_IM-1024-2001.png")), 128)
    a = augment(gray, np.random.default_rng(7))
    b = augment(gray, np.random.default_rng(7))
    assert np.array_equal(a, b)
