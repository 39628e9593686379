"""DICOM -> the array `preprocess.to_gray` takes: float32 (H, W) in [0, 1], 0 = black as displayed.

`preprocess.read_image` routes a file here when it is DICOM (the "DICM" mark at byte 128, or a `.dcm`
name), so every caller (CLI, app, API, bench) reads DICOM the same way. The display pipeline of DICOM
PS3.3 C.11, in order:

    stored values -> modality LUT or RescaleSlope/Intercept (pydicom apply_modality_lut)
                  -> VOI LUT sequence, else WindowCenter/WindowWidth (pydicom apply_voi_lut, first window)
                  -> scaled to [0, 1] by the VOI output range (no VOI: min-max, as 16-bit PNGs are)
                  -> MONOCHROME1 inverted (1 - x), so bone is white as in every training image

Multi-frame files: the first frame, with a note. Colour (RGB / YBR / PALETTE COLOR) files come back as
(H, W, 3) in [0, 1] (pydicom converts YBR to RGB); the not-a-chest-X-ray check then judges them.

pydicom is optional (`pip install edgecap[dicom]`): it is imported only when a DICOM file arrives, and its
absence is a clear ImageError. It is imported through `import_pydicom`, with `requests` hidden: pydicom
imports its test-data downloader (pydicom.data), which imports requests -> urllib3, whose import-time IPv6
probe creates a socket bound to ::1. Without requests pydicom's downloader falls back to urllib (imported,
never called) and no socket is created at all (tests/test_no_network.py refuses every socket).

Compressed transfer syntaxes need a pydicom decoding plugin (Pillow for JPEG baseline / JPEG 2000,
pylibjpeg-libjpeg or python-gdcm for JPEG-LS / lossless JPEG); without one the error names the transfer
syntax and the packages to install. Device-safe: numpy (+ pydicom).
"""

from __future__ import annotations

import io
import struct
import sys
import threading
import warnings
from types import ModuleType

import numpy as np

from edgecap.runtime.errors import ImageError
from edgecap.runtime.formats import has_dicom_magic, is_dicom  # noqa: F401 - is_dicom: re-exported

_CODEC_HINT = "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg (or python-gdcm)"


_IMPORT_LOCK = threading.Lock()


def import_pydicom() -> ModuleType:
    """pydicom with pydicom.pixels, imported without `requests` (see the module docstring). Raises ImportError.

    `requests` is hidden only while pydicom is first imported and only when nothing imported it before (then
    urllib3's probe has run already and hiding it would change nothing)."""
    if "pydicom.pixels" in sys.modules:
        return sys.modules["pydicom"]
    with _IMPORT_LOCK:
        hide = "requests" not in sys.modules
        if hide:
            sys.modules["requests"] = None  # type: ignore[assignment]  # `import requests` raises ImportError
        try:
            import pydicom
            import pydicom.pixels  # noqa: F401
        finally:
            if hide:
                del sys.modules["requests"]
    return pydicom


def decode(data: bytes, name: str = "<bytes>", notes: list[tuple[str, str]] | None = None) -> np.ndarray:
    """DICOM bytes -> float32 (H, W) (or (H, W, 3) for colour) in [0, 1], ready for preprocess.to_gray.

    Args:
        data: the whole file.
        name: for messages.
        notes: if given, non-fatal remarks are appended as (code, message), e.g. ("dicom_multiframe", ...).

    Raises:
        ImageError: pydicom missing, not a DICOM file, no pixel data, or no decoder for its compression.
    """
    try:
        pydicom = import_pydicom()
        from pydicom.pixels import pixel_array
    except ImportError as e:
        raise ImageError(f"{name}: DICOM input needs pydicom: pip install 'edgecap[dicom]' ({e})") from None
    try:
        with warnings.catch_warnings():  # pydicom warns about what it works around; the errors below say it
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as e:  # pydicom raises many types for garbage input
        raise ImageError(f"{name}: not a readable DICOM file ({type(e).__name__}: {e})") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        if not has_dicom_magic(data):
            raise ImageError(f"{name}: not a DICOM file (no 'DICM' mark, no DICOM image data)")
        raise ImageError(f"{name}: {_why_no_pixels(ds, data)}")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    syntax = _transfer_syntax(ds)
    try:
        arr = pixel_array(ds, index=0 if frames > 1 else None)
    except (NotImplementedError, RuntimeError) as e:
        if syntax is not None and syntax.is_compressed:
            raise ImageError(
                f"{name}: DICOM pixel data compressed as {syntax.name} ({syntax}) and no decoder for "
                f"it is installed: {_CODEC_HINT}"
            ) from None
        raise ImageError(f"{name}: cannot decode the DICOM pixel data ({e})") from None
    except Exception as e:  # truncated pixel data, inconsistent Rows/Columns, ...
        raise ImageError(f"{name}: cannot decode the DICOM pixel data ({type(e).__name__}: {e})") from None
    if frames > 1 and notes is not None:
        notes.append(("dicom_multiframe", f"{name}: DICOM with {frames} frames: only the first frame was used"))
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR" and arr.ndim == 2:  # indices into a colour table -> (H, W, 3)
        from pydicom.pixels import apply_color_lut

        try:
            rgb = apply_color_lut(arr, ds)
        except Exception as e:
            raise ImageError(f"{name}: invalid DICOM palette ({type(e).__name__}: {e})") from None
        return rgb.astype(np.float32) / float(np.iinfo(rgb.dtype).max if rgb.dtype.kind == "u" else 1.0)
    if arr.ndim == 3 and arr.shape[-1] == 3:  # colour (pydicom returns RGB)
        bits = int(ds.get("BitsStored", 8) or 8)
        return np.clip(arr.astype(np.float32) / float(2**bits - 1), 0.0, 1.0)
    if arr.ndim != 2:
        raise ImageError(f"{name}: unsupported DICOM pixel array of shape {arr.shape}")
    return _display_gray(arr, ds, photometric, name)


# (7FE0,0010) Pixel Data, (7FE0,0008) Float and (7FE0,0009) Double Float Pixel Data, as stored little / big endian
_PIXEL_TAGS = tuple(
    struct.pack(order, 0x7FE0, element) for order in ("<HH", ">HH") for element in (0x0010, 0x0008, 0x0009)
)


def _why_no_pixels(ds, data: bytes) -> str:
    """Why a DICOM that pydicom read (force=True stops quietly at the first element it cannot parse) has no pixel
    data: a corrupt header hiding pixel data that is there, a truncated image, or a DICOM that is no image."""
    if any(tag in data for tag in _PIXEL_TAGS):
        return (
            "a corrupt DICOM header: the file holds pixel data, but an element before it cannot be parsed "
            "(a damaged length or value representation)"
        )
    sop = ds.get("SOPClassUID")
    kind = getattr(sop, "name", "") if sop is not None else ""
    if "Image" in kind or "X-Ray" in kind:
        return f"a truncated or corrupt DICOM image ({kind}): its pixel data is missing"
    what = f" ({kind})" if kind else ""
    return f"DICOM file without pixel data{what}: a report, a structured document or a series index, not an image"


def _display_gray(arr: np.ndarray, ds, photometric: str, name: str) -> np.ndarray:
    """Stored grey values -> float32 (H, W) in [0, 1] as displayed (modality, VOI, MONOCHROME1)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        x = apply_modality_lut(arr, ds)
        has_voi = bool(ds.get("VOILUTSequence")) or ("WindowCenter" in ds and "WindowWidth" in ds)
        if has_voi:
            if ds.get("VOILUTSequence") and x.dtype.kind == "f":  # LUT entries are indexed by integers
                x = np.rint(x).astype(np.int64)
            y = apply_voi_lut(x, ds, index=0)
            lo, hi = _voi_output_range(x, ds)
        else:
            y = x
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise ImageError(f"{name}: invalid DICOM display attributes ({type(e).__name__}: {e})") from None
    y = np.asarray(y, np.float64)
    if not has_voi:  # no display window: stretch like a 16-bit PNG
        lo, hi = float(y.min()), float(y.max())
    out = (y - lo) / (hi - lo) if hi > lo else np.zeros_like(y)
    out = np.clip(out, 0.0, 1.0).astype(np.float32)
    if photometric == "MONOCHROME1":  # minimum value shown white
        out = 1.0 - out
    return out


def _voi_output_range(x: np.ndarray, ds) -> tuple[float, float]:
    """The output range of the VOI transform pydicom applies (its values are scaled to this range).

    A VOI LUT sequence outputs [0, 2**bits - 1] (bits = 3rd LUT Descriptor value). A window outputs
    [y_min, y_max] of the modality range; pydicom derives it from BitsStored, PixelRepresentation and
    the rescale, so it is probed by windowing two values far outside any window.
    """
    from pydicom.pixels import apply_voi_lut

    seq = ds.get("VOILUTSequence")
    if seq:
        bits = int(seq[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    with np.errstate(over="ignore"):  # a SIGMOID window saturates the probe (exp overflow): intended
        probe = apply_voi_lut(np.array([-1e30, 1e30], dtype=np.float64), ds, index=0)
    lo, hi = float(probe[0]), float(probe[1])
    return (lo, hi) if hi > lo else (float(np.min(x)), float(np.max(x)))


def _transfer_syntax(ds):
    meta = getattr(ds, "file_meta", None)
    return getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
