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
