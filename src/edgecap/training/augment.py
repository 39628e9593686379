"""Training-only augmentation (OpenCV), applied between runtime.preprocess.resize_square and normalize.

Small geometric jitter (rotation, shift, scale), brightness / contrast, optional CLAHE. Never a
horizontal flip unless asked for explicitly: a flipped chest X-ray puts the heart on the wrong side,
and a report of "dextrocardia" or a right-sided finding would then be learned from a left-sided one.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    max_rotation_deg: float = 5.0
    max_shift: float = 0.05  # fraction of the side
    scale_range: tuple[float, float] = (0.95, 1.05)
    brightness: float = 0.08  # additive, on the [0, 1] scale
    contrast: float = 0.12  # multiplicative around the mean: 1 +- contrast
    clahe: bool = False
    horizontal_flip: bool = False  # False: laterality is preserved (see module docstring)


def augment(gray: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """float32 (S, S) in [0, 1] -> float32 (S, S) in [0, 1], randomly perturbed."""
    s = gray.shape[0]
    angle = rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg)
    scale = rng.uniform(*cfg.scale_range)
    m = cv2.getRotationMatrix2D((s / 2.0, s / 2.0), angle, scale)
    m[:, 2] += rng.uniform(-cfg.max_shift, cfg.max_shift, size=2) * s
    out = cv2.warpAffine(gray, m, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if cfg.clahe:
        u8 = np.clip(out * 255.0, 0, 255).astype(np.uint8)
        out = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(u8).astype(np.float32) / 255.0
    mean = float(out.mean())
    out = (out - mean) * (1.0 + rng.uniform(-cfg.contrast, cfg.contrast)) + mean
    out = out + rng.uniform(-cfg.brightness, cfg.brightness)
    if cfg.horizontal_flip and rng.random() < 0.5:
        out = out[:, ::-1]
    return np.clip(out, 0.0, 1.0).astype(np.float32)
