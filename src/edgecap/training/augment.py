"""The one augmentation recipe, for training and for int8 calibration: between runtime.preprocess.resize_square
and normalize.

Small geometric jitter (rotation, shift, scale), brightness / contrast, optional CLAHE. Never a
horizontal flip unless asked for explicitly: a flipped chest X-ray puts the heart on the wrong side,
and a report of "dextrocardia" or a right-sided finding would then be learned from a left-sided one.

The geometric warp is computed here in numpy (float64 coordinates, bilinear, replicated border), not with
cv2.warpAffine: OpenCV's warp uses fixed-point interpolation tables that changed between releases (4.14 and
5.1 differ by up to 3 grey levels on the same input), and int8 calibration images must not depend on which
OpenCV a machine has, or `edgecap convert --int8` would not reproduce a bundle byte for byte. numpy's
element-wise float arithmetic is IEEE-exact, so the same seed gives the same image everywhere. Only the
optional CLAHE step (off by default) still uses OpenCV.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AUGMENT_IMPL = "numpy-affine-v1"  # part of every cache signature and calibration record: bump when results change


@dataclass(frozen=True)
class AugmentConfig:
    max_rotation_deg: float = 5.0
    max_shift: float = 0.05  # fraction of the side
    scale_range: tuple[float, float] = (0.95, 1.05)
    brightness: float = 0.08  # additive, on the [0, 1] scale
    contrast: float = 0.12  # multiplicative around the mean: 1 +- contrast
    clahe: bool = False
    horizontal_flip: bool = False  # False: laterality is preserved (see module docstring)


def rotation_matrix(center: tuple[float, float], angle_deg: float, scale: float) -> np.ndarray:
    """(2, 3) float64 forward affine map (source -> destination pixel coordinates), as cv2.getRotationMatrix2D:
    a rotation by angle_deg counter-clockwise (image y axis down) and a scale, about `center`."""
    a = np.deg2rad(angle_deg)
    alpha, beta = scale * np.cos(a), scale * np.sin(a)
    cx, cy = center
    return np.array(
        [[alpha, beta, (1 - alpha) * cx - beta * cy], [-beta, alpha, beta * cx + (1 - alpha) * cy]], np.float64
    )


def warp_affine(image: np.ndarray, m: np.ndarray) -> np.ndarray:
    """float32 (H, W) warped by the forward map m (2, 3): out[y, x] = image at m^-1 (x, y), bilinear, border
    replicated (coordinates clamped to the image, which is what replication gives for bilinear sampling)."""
    h, w = image.shape
    (a, b, tx), (c, d, ty) = m
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det  # inverse of the 2x2 part
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    u, v = xs - tx, ys - ty
    sx = np.clip(ia * u + ib * v, 0.0, w - 1.0)
    sy = np.clip(ic * u + id_ * v, 0.0, h - 1.0)
    x0 = np.minimum(np.floor(sx).astype(np.intp), w - 2)
    y0 = np.minimum(np.floor(sy).astype(np.intp), h - 2)
    fx, fy = sx - x0, sy - y0
    img = image.astype(np.float64)
    top = img[y0, x0] * (1.0 - fx) + img[y0, x0 + 1] * fx
    bottom = img[y0 + 1, x0] * (1.0 - fx) + img[y0 + 1, x0 + 1] * fx
    return (top * (1.0 - fy) + bottom * fy).astype(np.float32)


def augment(gray: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """float32 (S, S) in [0, 1] -> float32 (S, S) in [0, 1], randomly perturbed. The draws from `rng` are, in
    order: angle, scale, shift (2), contrast, brightness[, flip]: a seeded generator gives the same image."""
    s = gray.shape[0]
    angle = rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg)
    scale = rng.uniform(*cfg.scale_range)
    m = rotation_matrix((s / 2.0, s / 2.0), angle, scale)
    m[:, 2] += rng.uniform(-cfg.max_shift, cfg.max_shift, size=2) * s
    out = warp_affine(gray, m)
    if cfg.clahe:
        import cv2  # optional step; OpenCV's CLAHE (see module docstring)

        u8 = np.clip(out * 255.0, 0, 255).astype(np.uint8)
        out = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(u8).astype(np.float32) / 255.0
    mean = float(np.mean(out, dtype=np.float64))
    out = (out - np.float32(mean)) * np.float32(1.0 + rng.uniform(-cfg.contrast, cfg.contrast)) + np.float32(mean)
    out = out + np.float32(rng.uniform(-cfg.brightness, cfg.brightness))
    if cfg.horizontal_flip and rng.random() < 0.5:
        out = out[:, ::-1]
    return np.clip(out, 0.0, 1.0).astype(np.float32)
