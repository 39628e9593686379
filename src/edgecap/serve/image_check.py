"""An upload's format and pixel count from its first bytes, before any decoder allocates the image.

    check_image(data, max_pixels=30_000_000, role="frontal") -> ImageInfo("png", width, height, len(data))

The format comes from the magic bytes (PNG, JPEG, DICOM Part 10 by runtime.formats.has_dicom_magic; anything
else is a 415 that names what it looks like), the size from the header: PNG IHDR, the first JPEG
start-of-frame, DICOM Rows x Columns (with pydicom, when installed). A 20,000 x 20,000 PNG is thus a 413 in
microseconds instead of a 1.2 GB decode. Errors are Problem 415 / 422 / 413 whose detail starts with the role.
Device-safe: stdlib only (and pydicom, when installed, to read a DICOM header).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

from edgecap.runtime.formats import DICOM_MAGIC, DICOM_PREAMBLE, has_dicom_magic
from edgecap.serve.problems import Problem

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
# start-of-frame markers carrying the frame size (not DHT C4, JPG C8, DAC CC)
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
# formats people send by mistake, named in the 415 message
_OTHER_FORMATS = (
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"%PDF", "PDF"),
    (b"PK\x03\x04", "ZIP"),
    (b"\x1f\x8b", "gzip"),
    (b"{", "JSON"),
    (b"<", "HTML / XML"),
)


@dataclass(frozen=True)
class ImageInfo:
    format: str  # "png" | "jpeg" | "dicom"
    width: int | None  # None: a DICOM whose header could not be read here (the decoder reports it)
    height: int | None
    bytes: int


def sniff(data: bytes) -> str:
    """Magic bytes -> "png" | "jpeg" | "dicom". Raises Problem 415 for anything else (and 422 when empty)."""
    if not data:
        raise Problem(422, "empty-image", "the file is empty")
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if has_dicom_magic(data):
        return "dicom"
    seen: str | None
    if data[4:12] == b"ftypavif" or data[8:12] == b"WEBP":
        seen = "AVIF / WebP"
    else:
        seen = next((name for magic, name in _OTHER_FORMATS if data.startswith(magic)), None)
    raise Problem(
        415,
        "unsupported-image-format",
        f"not a PNG, JPEG or DICOM (Part 10, '{DICOM_MAGIC.decode()}' at byte {DICOM_PREAMBLE}) file"
        + (f": it looks like {seen}" if seen else ""),
    )


def _png_size(data: bytes) -> tuple[int, int]:
    # signature (8) | length (4) | "IHDR" | width (4) | height (4) | ...: IHDR must be the first chunk
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise Problem(422, "unreadable-image", "a corrupt PNG: no IHDR header chunk")
    return struct.unpack(">II", data[16:24])


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """Walk the marker segments to the first start-of-frame: (width, height)."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise Problem(422, "unreadable-image", "a corrupt JPEG: bad marker structure before the frame header")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # TEM, RSTn, SOI: no length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # EOI or start of scan before any frame header
            break
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if length < 2:
            raise Problem(422, "unreadable-image", "a corrupt JPEG: bad segment length")
        if marker in _SOF:
            if i + 9 > n:
                break
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            if height == 0:  # height defined later by a DNL marker: libjpeg cannot decode it anyway
                raise Problem(422, "unreadable-image", "a JPEG whose height is defined by a DNL marker (unsupported)")
            return width, height
        i += 2 + length
    raise Problem(422, "unreadable-image", "a corrupt or truncated JPEG: no frame header")


def _dicom_size(data: bytes) -> tuple[int | None, int | None]:
    try:
        import pydicom
    except ImportError:  # no decoder either: runtime.dicom answers with its install hint
        return None, None
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
        rows, cols = ds.get("Rows"), ds.get("Columns")
        if rows is None or cols is None:
            return None, None
        return int(cols), int(rows)  # one frame: runtime.dicom decodes only the first
    except Exception:  # noqa: BLE001  pydicom raises many types for garbage; runtime.dicom gives the full message
        return None, None


def check_image(data: bytes, max_pixels: int, role: str) -> ImageInfo:
    """Format and size of one upload, from its first bytes only.

    Raises:
        Problem: 415 not PNG / JPEG / DICOM; 422 empty or a corrupt header; 413 more than max_pixels.
    """
    try:
        fmt = sniff(data)
        width, height = {"png": _png_size, "jpeg": _jpeg_size, "dicom": _dicom_size}[fmt](data)
    except Problem as p:
        p.detail = f"{role} image: {p.detail}"
        raise
    if width is not None and height is not None:
        if width == 0 or height == 0:
            raise Problem(
                422, "unreadable-image", f"{role} image: a corrupt {fmt.upper()} header ({width} x {height} pixels)"
            )
        if width * height > max_pixels:
            raise Problem(
                413,
                "image-too-large",
                f"{role} image: {width} x {height} pixels "
                f"({width * height / 1e6:.1f} MP) is more than the limit of "
                f"{max_pixels / 1e6:.1f} MP",
            )
    return ImageInfo(fmt, width, height, len(data))
