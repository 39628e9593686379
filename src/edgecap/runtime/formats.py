"""Which files are images: the one list of image file suffixes and the one DICOM check.

Used by the runtime (preprocess routes DICOM by is_dicom), the batch CLI (what a folder holds), conversion
(calibration images), the data loader (IU X-Ray image names), the app's file chooser and the HTTP API.

    IMAGE_SUFFIXES   lower-case suffixes of the image files edgecap reads (DICOM included)
    is_dicom(data, name)    DICOM Part 10 ("DICM" at byte 128), or a file named *.dcm
    is_image_name(path)     by suffix alone
"""

from __future__ import annotations

from pathlib import PurePath

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm")
DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom")
DICOM_PREAMBLE = 128  # bytes before the "DICM" magic in a DICOM Part 10 file
DICOM_MAGIC = b"DICM"
DICOM_HEAD = DICOM_PREAMBLE + len(DICOM_MAGIC)  # bytes to read to decide


def has_dicom_magic(data: bytes) -> bool:
    """True when `data` (the file's first DICOM_HEAD bytes or more) is DICOM Part 10."""
    return data[DICOM_PREAMBLE:DICOM_HEAD] == DICOM_MAGIC


def is_dicom(data: bytes, name: str | None = None) -> bool:
    """True for DICOM Part 10 data, or a file named *.dcm / *.dicom (last suffix only: Kaggle's `*.dcm.png`
    files are PNGs). A Part 10 file may lack its preamble in old archives; the name then decides."""
    if has_dicom_magic(data):
        return True
    return name is not None and PurePath(name).suffix.lower() in DICOM_SUFFIXES


def is_image_name(path: str | PurePath) -> bool:
    """True when the file's last suffix is one of IMAGE_SUFFIXES (or .dicom)."""
    suffix = PurePath(path).suffix.lower()
    return suffix in IMAGE_SUFFIXES or suffix in DICOM_SUFFIXES
