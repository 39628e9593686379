"""The runtime's error types, in one module that imports nothing, so every runtime module can raise them
without importing another (runtime.dicom, runtime.image_header and runtime.preprocess all raise them).

Each ImageError carries a `kind`, a stable machine code that front ends map without parsing messages: the
HTTP API answers 415 for "unsupported-image-format", 413 for "image-too-large" and 422 for the rest
("empty-image", "unreadable-image"); the CLI writes an error record and goes on with the next input; the
app shows the message.
"""

from __future__ import annotations


class ImageError(ValueError):
    """An input that cannot be read as an image (missing, empty, corrupt)."""

    kind = "unreadable-image"


class EmptyImageError(ImageError):
    """A file of zero bytes (an interrupted copy, a failed download)."""

    kind = "empty-image"


class UnsupportedImageError(ImageError):
    """A readable file that is not an image format edgecap decodes (a GIF, a PDF, a ZIP...)."""

    kind = "unsupported-image-format"


class ImageTooLargeError(ImageError):
    """An image whose header declares more pixels than the limit (runtime.image_header): refused before any
    decoder allocates it, so a 20,000 x 20,000 px PNG of 400 KB costs microseconds, not gigabytes."""

    kind = "image-too-large"
