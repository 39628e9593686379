"""The runtime's error types, in one module that imports nothing, so every runtime module can raise them
without importing another (runtime.dicom and runtime.preprocess both raise ImageError)."""

from __future__ import annotations


class ImageError(ValueError):
    """An input that cannot be read as an image (missing, empty, corrupt, unsupported)."""
