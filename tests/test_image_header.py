"""runtime.image_header: format and size from the header, the pixel limit every front end shares (issue #13
item 4: a 392 KB PNG of 20,000 x 20,000 px cost the CLI 26.5 s and 3.5 GiB before it was refused anywhere
but the server).

Images are derived from a real IU X-Ray sample image (crops and re-encodings); the pixel bomb is a real PNG
whose rows are all black, written row by row so the test never holds it decoded.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecap.runtime import image_header
from edgecap.runtime.errors import ImageError, ImageTooLargeError, UnsupportedImageError
from edgecap.runtime.image_header import DEFAULT_MAX_PIXELS, check_header, read_header
from edgecap.runtime.preprocess import read_image

SAMPLE = Path(__file__).resolve().parents[1] / "src/edgecap/resources/iu_xray_sample/images/CXR25_IM-1024-2001.png"


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(width: int = 20_000, height: int = 20_000) -> bytes:
    """A valid 8-bit grey PNG of width x height black pixels (~400 KB for 20,000 x 20,000), built row by row."""
    z = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte 0 + the row
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def xray() -> np.ndarray:
    image = cv2.imread(str(SAMPLE), cv2.IMREAD_GRAYSCALE)
    return image[:500, :300]  # a real crop: width 300 != height 500, so swapped fields would show


@pytest.mark.parametrize("suffix, fmt", [(".png", "png"), (".jpg", "jpeg"), (".bmp", "bmp"), (".tif", "tiff")])
@pytest.mark.parametrize("colour", [False, True])
def test_header_size_matches_the_decoded_image(xray, suffix, fmt, colour):
    image = cv2.cvtColor(xray, cv2.COLOR_GRAY2BGR) if colour else xray
    ok, buf = cv2.imencode(suffix, image)
    assert ok
    header = read_header(buf.tobytes(), f"x{suffix}")
    decoded = read_image(buf.tobytes())
    assert (header.format, header.width, header.height) == (fmt, decoded.shape[1], decoded.shape[0]) == (fmt, 300, 500)


def test_big_endian_tiff_and_16_bit_png(xray):
    wide = (xray.astype(np.uint16) * 257)[:, :280]
    ok, buf = cv2.imencode(".png", wide)
    assert read_header(buf.tobytes()).pixels == 280 * 500
    # a big-endian ("MM") TIFF, written by hand: header, one IFD with ImageWidth (SHORT) and ImageLength (LONG)
    entries = struct.pack(">HHII", 256, 3, 1, 640 << 16) + struct.pack(">HHII", 257, 4, 1, 480)
    tiff = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 2) + entries + b"\x00\x00\x00\x00"
    assert (read_header(tiff).width, read_header(tiff).height) == (640, 480)


def test_pixel_bomb_is_refused_from_its_header_before_decoding(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb())
    assert bomb.stat().st_size < 1_000_000  # 20,000 x 20,000: 400 MB once decoded
    with pytest.raises(ImageTooLargeError, match=r"20000 x 20000 pixels \(400.0 MP\) is more than the limit of 30.0"):
        read_image(bomb)
    assert issubclass(ImageTooLargeError, ImageError)  # callers that catch ImageError record it and go on


def test_limit_is_configurable_and_can_be_lifted(xray):
    ok, buf = cv2.imencode(".png", xray)
    data = buf.tobytes()
    with pytest.raises(ImageTooLargeError, match="0.1 MP"):
        read_image(data, max_pixels=100_000)  # 300 x 500 = 150,000 pixels
    assert read_image(data, max_pixels=150_000).shape == (500, 300)
    assert read_image(data, max_pixels=None).shape == (500, 300)
    assert image_header.DEFAULT_MAX_PIXELS == DEFAULT_MAX_PIXELS == 30_000_000


@pytest.mark.parametrize(
    "data, seen",
    [
        (b"GIF89a" + b"\x00" * 40, "GIF"),
        (b"%PDF-1.7\n" + b"\x00" * 40, "PDF"),
        (b"PK\x03\x04" + b"\x00" * 40, "ZIP"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 40, "AVIF / WebP"),
    ],
)
def test_other_formats_are_named(data, seen):
    with pytest.raises(UnsupportedImageError, match=f"it looks like {seen}"):
        read_image(data)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, "no IHDR"),
        (b"\xff\xd8\xff\xe0\x00", "no frame header"),
        (b"II*\x00\x08\x00\x00\x00\x00\x00", "no image width"),
        (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 10, 8, 0, 0, 0, 0)), r"0 x 10"),
    ],
)
def test_corrupt_headers_are_clear_errors(data, message):
    with pytest.raises(ImageError, match=message) as info:
        check_header(data)
    assert info.value.kind == "unreadable-image"
