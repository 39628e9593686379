"""An upload's format and pixel count from its first bytes, before any decoder allocates the image.

    check_image(data, max_pixels=30_000_000, role="frontal") -> ImageInfo("png", width, height, len(data))

The check itself is the runtime's (runtime.image_header: PNG, JPEG, BMP, TIFF, DICOM; the one check the CLI,
the batch loop and the app use too); here its errors become problems whose detail starts with the role:
415 not an image format edgecap reads, 413 more than max_pixels, 422 empty or a corrupt header. A 20,000 x
20,000 PNG is thus a 413 in microseconds instead of a 1.2 GB decode. Device-safe: no TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgecap.runtime.errors import ImageError
from edgecap.runtime.image_header import check_header
from edgecap.serve.problems import Problem

# ImageError.kind -> HTTP status of the problem
STATUS_OF_KIND = {"unsupported-image-format": 415, "image-too-large": 413, "empty-image": 422, "unreadable-image": 422}


@dataclass(frozen=True)
class ImageInfo:
    format: str  # "png" | "jpeg" | "bmp" | "tiff" | "dicom"
    width: int | None  # None: a DICOM whose header could not be read here (the decoder reports it)
    height: int | None
    bytes: int


def image_problem(error: ImageError, role: str) -> Problem:
    """A runtime ImageError -> Problem 415 / 413 / 422 "<role> image: <what>" (no file name: uploads have none)."""
    detail = str(error).removeprefix("<bytes>: ")
    return Problem(STATUS_OF_KIND.get(error.kind, 422), error.kind, f"{role} image: {detail}")


def check_image(data: bytes, max_pixels: int, role: str) -> ImageInfo:
    """Format and size of one upload, from its first bytes only.

    Raises:
        Problem: 415 not an image format edgecap reads; 422 empty or a corrupt header; 413 more than max_pixels.
    """
    try:
        header = check_header(data, "<bytes>", max_pixels)
    except ImageError as e:
        raise image_problem(e, role) from None
    return ImageInfo(header.format, header.width, header.height, len(data))
