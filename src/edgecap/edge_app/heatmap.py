"""Attention heatmaps for the app: report.attention (T, N) + report.attention_layout -> one map per view,
drawn over the grey X-ray. Device-safe: numpy + OpenCV, no Kivy (the worker thread calls it).

    maps = view_maps(report.attention, report.attention_layout)   # {"frontal": (g, g) in [0, 1], ...}
    rgb = overlay(display_gray(image), maps["frontal"])           # (H, W, 3) uint8 for a texture

Position n of the decoder's attention is view n // g**2, row (n % g**2) // g, column n % g
(runtime.report, runtime.study.fuse_views). The map shown is the mean over the report's tokens; maps
share one scale across views, so a view the decoder barely looked at stays dim.
"""

from __future__ import annotations

import cv2
import numpy as np

from edgecap.runtime import preprocess

DISPLAY_SIDE = 1024  # long side of the images the app keeps for display and history (pixels)
THUMB_SIDE = 160  # long side of history thumbnails
MIN_MASS = 1e-6  # a view whose total attention is below this was absent (masked out by fuse_views)


def view_maps(attention: np.ndarray, layout: dict, tokens: slice | None = None) -> dict[str, np.ndarray]:
    """(T, N) attention -> {view name: (g, g) float32 in [0, 1]}, the mean over tokens[tokens].

    Returns {} when the layout has no square grid (nothing to draw) or the report has no tokens. Views with
    no attention at all (not given) are left out.
    """
    att = np.asarray(attention, np.float32)
    grid, views = layout.get("grid"), list(layout.get("views", []))
    if att.ndim != 2 or att.shape[0] == 0 or not grid or not views:
        return {}
    per = grid * grid
    if att.shape[1] != per * len(views):
        return {}
    mean = att[tokens if tokens is not None else slice(None)].mean(axis=0)  # (N,)
    maps = {v: mean[i * per : (i + 1) * per].reshape(grid, grid) for i, v in enumerate(views)}
    maps = {v: m for v, m in maps.items() if float(m.sum()) > MIN_MASS}
    top = max((float(m.max()) for m in maps.values()), default=0.0)
    if top <= 0.0:
        return {}
    return {v: (m / top).astype(np.float32) for v, m in maps.items()}


def display_gray(image: np.ndarray, side: int = DISPLAY_SIDE) -> np.ndarray:
    """Decoded image (preprocess.read_image output, any dtype, grey or RGB) -> uint8 (h, w) with long side
    <= side, the same grey levels the model sees (preprocess.to_gray), before its square resize."""
    gray = preprocess.to_gray(image)  # (H, W) float32 in [0, 1]
    h, w = gray.shape
    scale = min(1.0, side / max(h, w))
    if scale < 1.0:
        gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return np.clip(gray * 255.0 + 0.5, 0, 255).astype(np.uint8)


def display_rgb(image: np.ndarray, side: int = DISPLAY_SIDE) -> np.ndarray:
    """Decoded image -> uint8 (h, w, 3) for display; colour inputs keep their colour (a cat stays a cat:
    the person sees what was rejected), everything else is the grey image."""
    if image.ndim == 3:
        x = image.astype(np.float32)
        if image.dtype == np.uint16:
            x = x / 257.0
        elif image.dtype.kind == "f":
            x = x * 255.0 if float(x.max(initial=0.0)) <= 1.0 else x
        x = np.clip(x + 0.5, 0, 255).astype(np.uint8)
        h, w = x.shape[:2]
        scale = min(1.0, side / max(h, w))
        if scale < 1.0:
            x = cv2.resize(x, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        return x
    return np.repeat(display_gray(image, side)[:, :, None], 3, axis=2)


def overlay(rgb: np.ndarray, amap: np.ndarray, strength: float = 0.6, floor: float = 0.15) -> np.ndarray:
    """uint8 (H, W, 3) image + (g, g) map in [0, 1] -> uint8 (H, W, 3).

    The map is upsampled smoothly to the image (the encoder's grid covers the whole square-resized image,
    so the plain resize maps it back onto the original aspect). Colour: a warm ramp (amber to red) whose
    opacity grows from 0 at `floor` (attention below it leaves the image untouched, so the anatomy stays
    readable) to `strength` at the maximum.
    """
    h, w = rgb.shape[:2]
    m = cv2.resize(amap.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    m = np.clip((m - floor) / (1.0 - floor), 0.0, 1.0)[:, :, None]  # (H, W, 1)
    low = np.array([255, 196, 64], np.float32)  # amber
    high = np.array([220, 38, 38], np.float32)  # red
    colour = low + (high - low) * m  # (H, W, 3)
    alpha = strength * m
    out = rgb.astype(np.float32) * (1.0 - alpha) + colour * alpha
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def thumbnail(rgb: np.ndarray, side: int = THUMB_SIDE) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (h, w, 3) with long side <= side."""
    h, w = rgb.shape[:2]
    scale = min(1.0, side / max(h, w))
    if scale >= 1.0:
        return rgb
    return cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def encode_png(rgb: np.ndarray) -> bytes:
    """uint8 (H, W, 3) RGB -> PNG bytes (for the history database)."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes from encode_png -> uint8 (H, W, 3) RGB."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("not a PNG image")
    return np.ascontiguousarray(bgr[:, :, ::-1])
