"""The one image contract: file or array -> model input. Used by training, conversion, bench, app and API.

    read_image      bytes/path/array -> array as stored: (H, W) or (H, W, 3) RGB, uint8 or uint16; DICOM
                    (runtime.dicom) -> float32 in [0, 1] after its modality / VOI transforms, MONOCHROME1 inverted
    to_gray         -> float32 (H, W) in [0, 1]; 16-bit images are min-max stretched (their real bit
                       depth, 10/12/16, is not recorded in a PNG), 8-bit images are divided by 255
    resize_square   -> float32 (S, S): a plain resize (no crop, no letterbox), INTER_AREA when shrinking
    normalize       -> float32 (S, S, 3): (255 * gray - mean) / std, replicated to 3 channels because the
                       ImageNet encoder expects RGB
    prepare         = normalize(resize_square(to_gray(image)))

Training inserts augmentation (training.augment) between resize_square and normalize; nothing else differs.
Device-safe: numpy + OpenCV only.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edgecap.runtime import dicom
from edgecap.runtime.errors import ImageError
from edgecap.runtime.image_header import DEFAULT_MAX_PIXELS, check_header

cv2.setNumThreads(1)  # predictable latency on small devices; batch parallelism happens above this layer


__all__ = ["ImageError", "read_image", "to_gray", "resize_square", "normalize", "prepare", "load"]


def read_image(
    source: str | Path | bytes | bytearray | memoryview | np.ndarray,
    notes: list[tuple[str, str]] | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode PNG (8- or 16-bit), JPEG, BMP, TIFF or DICOM.

    Returns (H, W) or (H, W, 3) RGB: uint8 or uint16 as stored (an alpha channel is dropped at decode);
    float32 in [0, 1] for DICOM, already through its display pipeline (see runtime.dicom). `notes`, if
    given, receives non-fatal remarks as (code, message), e.g. a multi-frame DICOM of which only the first
    frame is used. Files and bytes go through runtime.image_header first: a format edgecap does not read is
    an UnsupportedImageError, more than `max_pixels` (None: no limit) an ImageTooLargeError, both before any
    decoder allocates the image. Arrays are taken as given.
    """
    if isinstance(source, np.ndarray):
        return _check_array(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, name = bytes(source), "<bytes>"
    else:
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"{path}: no such file")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ImageError(f"{path}: cannot read ({e.strerror or e})") from None
        name = str(path)
    header = check_header(data, name, max_pixels)
    if header.format == "dicom":
        return _check_array(dicom.decode(data, name, notes))
    image = cv2.imdecode(np.frombuffer(data, np.uint8), _DECODE_FLAGS)
    if image is None:
        raise ImageError(f"{name}: not a readable image (a corrupt or truncated {header.format.upper()})")
    if image.ndim == 3:
        image = image[:, :, ::-1]  # OpenCV decodes BGR
    return _check_array(image)


# Depth and channels as stored (8 / 16 bit; grey stays one channel), but no alpha plane: a 16-bit RGBA image
# decodes to 6 bytes a pixel instead of 8. EXIF orientation is ignored, as it always was here: the training
# images have none, and a rotated report image must look the same to the model as its file does to a reader.
_DECODE_FLAGS = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR | cv2.IMREAD_IGNORE_ORIENTATION


def _check_array(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ImageError(f"expected an (H, W) or (H, W, 3) image, got shape {image.shape}")
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if min(image.shape[:2]) < 8:
        raise ImageError(f"image too small: {image.shape[1]}x{image.shape[0]} pixels")
    return image


def to_gray(image: np.ndarray) -> np.ndarray:
    """(H, W[, 3]) uint8 / uint16 / float -> float32 (H, W) in [0, 1]."""
    image = _check_array(image)
    dtype = image.dtype
    if image.ndim == 3 and _equal_channels(image):  # an X-ray stored as RGB: its luma is any one channel
        image = image[:, :, 0]
    x = _luma(image) if image.ndim == 3 else image.astype(np.float32)
    if dtype == np.uint8:
        x /= np.float32(255.0)
        return x
    if dtype.kind == "f" and x.min() >= 0.0 and x.max() <= 1.0:
        return x
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.zeros_like(x)
    x -= np.float32(lo)  # in place: a 30 MP image holds one float32 copy (120 MB), not three
    x /= np.float32(hi - lo)
    return x


def _luma(rgb: np.ndarray, rows: int = 256) -> np.ndarray:
    """(H, W, 3) -> float32 (H, W): ITU-R 601 luma, as cv2.COLOR_RGB2GRAY but not rounded. A block of rows at a
    time, so a 30 MP colour image needs its float32 grey (120 MB), not a float32 copy of all three channels."""
    weights = np.array([0.299, 0.587, 0.114], np.float32)
    out = np.empty(rgb.shape[:2], np.float32)
    for i in range(0, rgb.shape[0], rows):
        out[i : i + rows] = rgb[i : i + rows].astype(np.float32) @ weights
    return out


def _equal_channels(image: np.ndarray) -> bool:
    """True when R == G == B everywhere (8/16-bit): then the luma weights, which sum to 1, give that channel
    itself; taking it skips a float conversion and product of the whole RGB image (~2 ms per 512 px view)."""
    if image.dtype not in (np.uint8, np.uint16):
        return False
    r, g, b = image[:, :, 0], image[:, :, 1], image[:, :, 2]
    return cv2.countNonZero(cv2.absdiff(r, g)) == 0 and cv2.countNonZero(cv2.absdiff(r, b)) == 0


def resize_square(gray: np.ndarray, size: int) -> np.ndarray:
    """float32 (H, W) -> float32 (size, size); INTER_AREA when shrinking (no aliasing), linear otherwise."""
    h, w = gray.shape
    interp = cv2.INTER_AREA if (h >= size and w >= size) else cv2.INTER_LINEAR
    return cv2.resize(gray, (size, size), interpolation=interp)


def normalize(gray: np.ndarray, mean, std) -> np.ndarray:
    """float32 (S, S) in [0, 1] -> float32 (S, S, 3) model input. mean / std: one number for all channels, or
    three, one per channel in the model's channel order (a Keras application's mode, runtime.normalization)."""
    if np.ndim(mean) or np.ndim(std):
        x3 = gray[:, :, None] * np.float32(255.0)  # (S, S, 1), broadcast against the (3,) statistics
        return ((x3 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).astype(np.float32)
    x = (gray * 255.0 - mean) / std
    return np.repeat(x[:, :, None], 3, axis=2).astype(np.float32)


def prepare(image: np.ndarray, size: int, mean, std) -> np.ndarray:
    """Decoded image (any size, gray or RGB, 8/16-bit) -> float32 (size, size, 3) model input."""
    return normalize(resize_square(to_gray(image), size), mean, std)


def load(source: str | Path | bytes | np.ndarray, size: int, mean, std) -> np.ndarray:
    return prepare(read_image(source), size, mean, std)
