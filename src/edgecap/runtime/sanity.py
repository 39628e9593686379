"""Is this a chest X-ray at all? Cheap, explainable image statistics, no model (1-8 ms per image, mostly resizing).

A captioning model writes a fluent report for any input; a cat photo would get "no acute cardiopulmonary
abnormality". These checks catch the common wrong inputs. Each is one statistic with one threshold,
measured on a copy of the image resized to 256 px on its long side (so the numbers do not depend on
resolution), grey levels in [0, 1] after preprocess.to_gray:

    code            statistic (threshold)                                   what it catches
    not_grayscale   share of pixels whose R, G, B spread > 0.10 (> 5 %)      colour photos, screenshots
    blank_image     grey level 99th - 1st percentile (< 0.05)                blank, constant, black frames
    document_like   share of pixels with |Laplacian| > 0.2 (>= 10 %)         scanned / rendered pages
                    on a light page: median grey level (>= 0.6)
    unusual_aspect  width / height (> 2.2 or < 1 / 2.2)                      banners, panoramas, strips
    too_small       shorter side in pixels, of the image as given (< 256)    thumbnails, icons, crops

Calibration (tests/test_sanity.py keeps it true): on all 15 real X-rays of the shared IU X-Ray sample
(11 Open-i PNGs, 4 full-resolution Kaggle PNGs; also after JPEG quality 30) the statistics are: coloured
share 0.000, spread >= 0.60, sharp-edge share <= 0.024, aspect 0.81-1.41, shorter side >= 362 px (Open-i's
downsized PNGs; the Kaggle originals have >= 2,000). The model sees 224 px (the edge bundle) to 384 px; below
256 px a 43 cm chest has under 0.6 pixels per millimetre, and a thumbnail's report would be fluent guesswork.
Non-X-rays: the scikit-image cat 0.95 coloured, astronaut 0.42, coffee 0.92; a constant image spread 0.000;
the scanned page (skimage.data.page) sharp share 0.22 with median 0.70, a rendered page of report text 0.38
with median 1.0.

What it does not catch: grey-scale photographs (skimage's camera man, coins, the moon) and other
radiographs (a hand, a CT slice). Those need a learned out-of-distribution detector; this module makes
no claim there.

Device-safe: numpy + OpenCV.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from edgecap.runtime.preprocess import _check_array, to_gray

NOT_GRAYSCALE, BLANK, DOCUMENT, ASPECT = "not_grayscale", "blank_image", "document_like", "unusual_aspect"
TOO_SMALL = "too_small"
# Any of these sets Report.flagged: the report's text is withheld (runtime.report). All but too_small say
# "not a chest X-ray"; too_small says "too few pixels to read one".
FLAG_CODES = frozenset({NOT_GRAYSCALE, BLANK, DOCUMENT, ASPECT, TOO_SMALL})


@dataclass(frozen=True)
class ImageThresholds:
    side: int = 256  # statistics are measured on the image resized to this long side
    chroma: float = 0.10  # a pixel is coloured when max(R, G, B) - min(R, G, B) exceeds this (scale 0..1)
    colour_share: float = 0.05  # not_grayscale above this share of coloured pixels (X-rays: 0.000)
    blank_spread: float = 0.05  # blank_image below this 1st-99th percentile grey spread (X-rays: >= 0.60)
    sharp_level: float = 0.2  # a pixel is on a sharp edge when |3x3 Laplacian of grey| exceeds this
    document_sharp: float = 0.10  # document_like at or above this sharp-edge share (X-rays: <= 0.024) ...
    document_median: float = 0.6  # ... on a light page: median grey level at or above this
    aspect_max: float = 2.2  # unusual_aspect above this width/height ratio or below its inverse
    min_side: int = 256  # too_small below this shorter side, in pixels of the image as given (X-rays: >= 362)


DEFAULT = ImageThresholds()


@dataclass(frozen=True)
class ImageStats:
    colour_share: float  # share of coloured pixels (0 for single-channel images)
    spread: float  # 99th - 1st percentile of grey levels in [0, 1]
    median: float  # median grey level
    sharp_share: float  # share of pixels on sharp edges (text strokes, fine texture)
    aspect: float  # width / height
    short_side: int  # the shorter side of the image as given, in pixels

    def to_dict(self, decimals: int = 4) -> dict[str, float]:
        return {k: v if isinstance(v, int) else round(v, decimals) for k, v in asdict(self).items()}


def percentiles(values: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """np.percentile(values, qs) (its default linear interpolation) by partial sorts: the same values without
    np.percentile's call of np.unique, whose first use imports numpy.ma (~14 ms of a one-image caption's
    start)."""
    flat = values.ravel()
    n = flat.size
    pos = [(n - 1) * q / 100.0 for q in qs]
    lo = [int(np.floor(p)) for p in pos]
    hi = [min(i + 1, n - 1) for i in lo]
    part = np.partition(flat, sorted(set(lo + hi)))
    out = []
    for p, i, j in zip(pos, lo, hi):
        a, b, t = float(part[i]), float(part[j]), p - i
        out.append(a + (b - a) * t if t < 0.5 else b - (b - a) * (1 - t))  # numpy's _lerp, both halves
    return out


def measure(image: np.ndarray, thresholds: ImageThresholds = DEFAULT) -> ImageStats:
    """Decoded image (read_image output: (H, W) or (H, W, 3), uint8 / uint16 / float) -> ImageStats."""
    image = _check_array(image)
    h, w = image.shape[:2]
    small = _resize(image, _fit(w, h, thresholds.side))  # first: full-size arithmetic costs 10-100 ms
    colour = 0.0
    if small.ndim == 3:
        r, g, b = (np.ascontiguousarray(c) for c in np.moveaxis(_unit_scale(small), 2, 0))
        chroma = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)  # (h, w); max(axis=2) is 10x slower
        colour = float((chroma > thresholds.chroma).mean())
    gray = to_gray(small)
    p1, p50, p99 = percentiles(gray, (1, 50, 99))
    lap = np.abs(cv2.Laplacian(gray, cv2.CV_32F, ksize=1))
    sharp = float((lap > thresholds.sharp_level).mean())
    return ImageStats(colour, float(p99 - p1), float(p50), sharp, w / h, min(w, h))


def check(image: np.ndarray, thresholds: ImageThresholds = DEFAULT) -> tuple[list[tuple[str, str]], ImageStats]:
    """-> ([(code, message), ...] for every failed check, the statistics). No warnings: looks like an X-ray.

    Messages are predicates ("is a colour image: ..."), to follow a subject: "frontal image is a colour ..."."""
    s = measure(image, thresholds)
    t = thresholds
    out = []
    if s.colour_share > t.colour_share:
        out.append(
            (
                NOT_GRAYSCALE,
                f"is a colour image: {s.colour_share:.0%} of pixels are coloured (red, green and "
                f"blue differ by more than {t.chroma:.2f}); radiographs are grey",
            )
        )
    if s.spread < t.blank_spread:
        out.append(
            (
                BLANK,
                f"is blank or constant: its grey levels span {s.spread:.3f} of the range between "
                f"the 1st and 99th percentile (below {t.blank_spread})",
            )
        )
    elif s.sharp_share >= t.document_sharp and s.median >= t.document_median:
        out.append(
            (
                DOCUMENT,
                f"looks like a document: a light page (median grey {s.median:.2f}) with dense sharp "
                f"strokes ({s.sharp_share:.0%} of pixels on sharp edges; X-rays have under 3 %)",
            )
        )
    if s.aspect > t.aspect_max or s.aspect < 1.0 / t.aspect_max:
        out.append(
            (
                ASPECT,
                f"has an unusual shape: width / height = {s.aspect:.2f}; chest X-rays lie between "
                f"{1 / t.aspect_max:.2f} and {t.aspect_max:.1f}",
            )
        )
    if s.short_side < t.min_side:
        out.append(
            (
                TOO_SMALL,
                f"is too small to read: its shorter side is {s.short_side} pixels (below {t.min_side}); "
                f"send the original image, not a thumbnail",
            )
        )
    return out, s


def _fit(w: int, h: int, side: int) -> tuple[int, int]:
    scale = side / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def _resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Any dtype OpenCV resizes natively (uint8, uint16, float32) keeps it; others become float32."""
    if x.dtype not in (np.uint8, np.uint16, np.float32):
        x = x.astype(np.float32)
    grow = size[0] > x.shape[1]
    return cv2.resize(x, size, interpolation=cv2.INTER_LINEAR if grow else cv2.INTER_AREA)


def _unit_scale(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) of any dtype -> float32 in [0, 1] on the dtype's own scale (not stretched: a faint tint
    must stay faint)."""
    x = rgb.astype(np.float32)
    if rgb.dtype == np.uint8:
        return x / 255.0
    if rgb.dtype == np.uint16:
        return x / 65535.0
    top = float(x.max()) if x.size else 1.0
    return x / top if top > 1.0 else x
