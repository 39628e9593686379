"""An image's format and pixel count from its first bytes, before any decoder allocates it.

    header = check_header(data, "scan.png", max_pixels=DEFAULT_MAX_PIXELS)   # ImageHeader("png", 2048, 2500)

One check for every front end: `preprocess.read_image` calls it before decoding, so the CLI, the batch loop,
the app and the HTTP API (serve.image_check) refuse the same images with the same words.

The format comes from the magic bytes, the size from the header:

    PNG    IHDR, which must be the first chunk
    JPEG   the first start-of-frame segment (walked marker by marker)
    BMP    the DIB header (BITMAPCOREHEADER or any later one)
    TIFF   ImageWidth / ImageLength of the first image file directory (classic TIFF, either byte order)
    DICOM  Rows x Columns (pydicom, header only, when installed; else runtime.dicom says what to install)

Anything else is an UnsupportedImageError that names what the file looks like (a GIF, a PDF...).

Why a pixel limit at all: a PNG of 20,000 x 20,000 grey pixels compresses to ~400 KB and decodes to 400 MB
(1.2 GB as RGB, 3.5 GB of intermediate arrays on the way to the model): on a 4 GB tablet the process dies
before the failure is recorded, so every resumed batch retries it. DEFAULT_MAX_MEGAPIXELS is sized from two
sides: the largest flat-panel chest detectors (43 x 43 cm at 100 um pixels, ~4,300 x 4,300 = 18.5 MP; 3,000 x
3,000 for most) fit with room, and the decode peak of the worst case at the limit (a 16-bit RGBA PNG, see
docs/reliability.md for the measured figure) stays a fraction of a 4 GB device's memory.

Device-safe: stdlib (and pydicom, when installed, for a DICOM header).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

from edgecap.runtime.errors import EmptyImageError, ImageError, ImageTooLargeError, UnsupportedImageError
from edgecap.runtime.formats import DICOM_MAGIC, DICOM_PREAMBLE, is_dicom

DEFAULT_MAX_MEGAPIXELS = 30.0
DEFAULT_MAX_PIXELS = int(DEFAULT_MAX_MEGAPIXELS * 1e6)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
TIFF_MAGICS = (b"II*\x00", b"MM\x00*")
BMP_MAGIC = b"BM"
# JPEG start-of-frame markers carrying the frame size (not DHT C4, JPG C8, DAC CC)
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
# formats people send by mistake, named in the message
_OTHER_FORMATS = (
    (b"GIF8", "GIF"),
    (b"II+\x00", "BigTIFF"),
    (b"MM\x00+", "BigTIFF"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"%PDF", "PDF"),
    (b"PK\x03\x04", "ZIP"),
    (b"\x1f\x8b", "gzip"),
    (b"{", "JSON"),
    (b"<", "HTML / XML"),
)


@dataclass(frozen=True)
class ImageHeader:
    format: str  # "png" | "jpeg" | "bmp" | "tiff" | "dicom"
    width: int | None  # None: a DICOM header that could not be read here (runtime.dicom reports it)
    height: int | None

    @property
    def pixels(self) -> int | None:
        return None if self.width is None or self.height is None else self.width * self.height


def sniff(data: bytes, name: str = "<bytes>") -> str:
    """Magic bytes (or a .dcm name) -> "png" | "jpeg" | "bmp" | "tiff" | "dicom".

    Raises EmptyImageError for an empty file, UnsupportedImageError for anything else."""
    if not data:
        raise EmptyImageError(f"{name}: empty file")
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if data.startswith(TIFF_MAGICS):
        return "tiff"
    if data.startswith(BMP_MAGIC) and len(data) >= 26:
        return "bmp"
    if is_dicom(data, None if name == "<bytes>" else name):
        return "dicom"
    seen: str | None
    if data[4:12] == b"ftypavif" or data[8:12] == b"WEBP":
        seen = "AVIF / WebP"
    else:
        seen = next((what for magic, what in _OTHER_FORMATS if data.startswith(magic)), None)
    raise UnsupportedImageError(
        f"{name}: not a PNG, JPEG, BMP, TIFF or DICOM (Part 10, '{DICOM_MAGIC.decode()}' at byte "
        f"{DICOM_PREAMBLE}) file" + (f": it looks like {seen}" if seen else "")
    )


def read_header(data: bytes, name: str = "<bytes>") -> ImageHeader:
    """Format and size from the header alone. Raises ImageError (empty, corrupt header) or
    UnsupportedImageError."""
    fmt = sniff(data, name)
    width, height = _SIZE_READERS[fmt](data, name)
    if width is not None and height is not None and (width <= 0 or height <= 0):
        raise ImageError(f"{name}: a corrupt {fmt.upper()} header ({width} x {height} pixels)")
    return ImageHeader(fmt, width, height)


def check_header(data: bytes, name: str = "<bytes>", max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageHeader:
    """read_header, then the pixel limit (None: no limit). Raises ImageTooLargeError over it."""
    header = read_header(data, name)
    pixels = header.pixels
    if max_pixels is not None and pixels is not None and pixels > max_pixels:
        raise ImageTooLargeError(
            f"{name}: {header.width} x {header.height} pixels ({pixels / 1e6:.1f} MP) is more than the limit of "
            f"{max_pixels / 1e6:.1f} MP (--max-megapixels)"
        )
    return header


def _png_size(data: bytes, name: str) -> tuple[int, int]:
    # signature (8) | length (4) | "IHDR" | width (4) | height (4) | ...
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise ImageError(f"{name}: a corrupt PNG: no IHDR header chunk")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _jpeg_size(data: bytes, name: str) -> tuple[int, int]:
    """Walk the marker segments to the first start-of-frame: (width, height)."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise ImageError(f"{name}: a corrupt JPEG: bad marker structure before the frame header")
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
            raise ImageError(f"{name}: a corrupt JPEG: bad segment length")
        if marker in _SOF:
            if i + 9 > n:
                break
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            if height == 0:  # height defined later by a DNL marker: libjpeg cannot decode it anyway
                raise UnsupportedImageError(f"{name}: a JPEG whose height is defined by a DNL marker")
            return width, height
        i += 2 + length
    raise ImageError(f"{name}: a corrupt or truncated JPEG: no frame header")


def _bmp_size(data: bytes, name: str) -> tuple[int, int]:
    """BITMAPFILEHEADER (14 bytes), then the DIB header: 12 bytes (OS/2, 16-bit sizes) or 40+ (32-bit signed;
    a negative height is a top-down bitmap)."""
    (dib,) = struct.unpack("<I", data[14:18])
    if dib == 12:
        width, height = struct.unpack("<HH", data[18:22])
        return width, height
    if dib < 40 or len(data) < 26:
        raise ImageError(f"{name}: a corrupt BMP: unknown DIB header of {dib} bytes")
    width, height = struct.unpack("<ii", data[18:26])
    return width, abs(height)


def _tiff_size(data: bytes, name: str) -> tuple[int, int]:
    """ImageWidth (tag 256) and ImageLength (257) of the first IFD; SHORT or LONG values."""
    order = "<" if data[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack(order + "I", data[4:8])
        (count,) = struct.unpack(order + "H", data[ifd : ifd + 2])
        size: dict[int, int] = {}
        for k in range(count):
            entry = data[ifd + 2 + 12 * k : ifd + 14 + 12 * k]
            tag, typ = struct.unpack(order + "HH", entry[:4])
            if tag in (256, 257):
                fmt = {3: "H", 4: "I"}.get(typ)
                if fmt is None:
                    raise ImageError(f"{name}: a corrupt TIFF: image size of type {typ}")
                (size[tag],) = struct.unpack(order + fmt, entry[8 : 8 + struct.calcsize(fmt)])
    except struct.error:
        raise ImageError(f"{name}: a corrupt or truncated TIFF header") from None
    if 256 not in size or 257 not in size:
        raise ImageError(f"{name}: a corrupt TIFF: no image width / length in its first directory")
    return size[256], size[257]


def _dicom_size(data: bytes, name: str) -> tuple[int | None, int | None]:
    """Columns x Rows of the header (one frame: runtime.dicom decodes only the first). None when pydicom is
    missing or the header is unreadable: runtime.dicom then gives the full message."""
    from edgecap.runtime.dicom import import_pydicom

    try:
        pydicom = import_pydicom()
    except ImportError:
        return None, None
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
        rows, cols = ds.get("Rows"), ds.get("Columns")
        if rows is None or cols is None:
            return None, None
        return int(cols), int(rows)
    except Exception:  # noqa: BLE001  pydicom raises many types for garbage; runtime.dicom reports it
        return None, None


_SIZE_READERS = {"png": _png_size, "jpeg": _jpeg_size, "bmp": _bmp_size, "tiff": _tiff_size, "dicom": _dicom_size}
