#!/usr/bin/env python
"""Write the sample DICOM shipped with edgecap: a bundled real IU X-Ray PNG, its pixels unchanged, as DICOM.

    python scripts/make_sample_dicom.py            # writes src/edgecap/resources/iu_xray_sample/dicom/CXR25_frontal.dcm
    python scripts/make_sample_dicom.py --check    # exit 1 unless the shipped file is what this script writes

Source: images/CXR25_IM-1024-2001.png (IU X-Ray study 25, frontal view; 512 x 512, stored as RGB with three
equal channels). The DICOM holds its one grey channel, 8 bits, uncompressed (Explicit VR Little Endian), as a
Secondary Capture (what a conversion from another format is), with a window (center 128, width 256) that
maps the stored values 0..255 onto the display range exactly as the PNG is read (value / 255): edgecap
reads the same image from either file, so `edgecap caption` writes the same report for both. Nothing about
a patient is invented: the patient, study and date attributes the IOD needs are present and empty, the
patient ID is the Open-i image id. Every UID is derived from the source's name (a name-based UUID as a
2.25 UID), and the implementation attributes are fixed, so the bytes are the same on every run
(tests/test_newcomer_cli.py checks it).

The pixels are the distributed ones, byte for byte: a change of format, which the licence's section 2(a)(4)
allows ("technical modifications necessary to exercise the Licensed Rights in other media and formats"),
not an adaptation. Attribution: src/edgecap/resources/iu_xray_sample/ATTRIBUTION.md.
"""

from __future__ import annotations

import argparse
import io
import sys
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "src" / "edgecap" / "resources" / "iu_xray_sample"
SOURCE = SAMPLE / "images" / "CXR25_IM-1024-2001.png"
TARGET = SAMPLE / "dicom" / "CXR25_frontal.dcm"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
NOTICE = (
    "IU X-Ray (Open-i NLMCXR) image CXR25_IM-1024-2001, Indiana University via the U.S. National Library of "
    "Medicine; CC BY-NC-ND 4.0. Pixels unchanged from the PNG; written by edgecap scripts/make_sample_dicom.py"
)


def grey_pixels(png: Path) -> np.ndarray:
    """(H, W) uint8: the PNG's one grey channel (a PNG stored as RGB must have three equal channels)."""
    import cv2

    image = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise SystemExit(f"{png}: not a readable PNG")
    if image.ndim == 3:
        if not (image[..., :1] == image[..., :3]).all():
            raise SystemExit(f"{png}: its colour channels differ; a grey DICOM would change the image")
        image = image[..., 0]
    if image.dtype != np.uint8:
        raise SystemExit(f"{png}: {image.dtype} pixels; this script writes 8-bit DICOM")
    return np.ascontiguousarray(image)


def sample_dicom(png: Path = SOURCE) -> bytes:
    """DICOM Part 10 bytes of `png` (module docstring): the same bytes for the same PNG, on every run."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    def uid(what: str) -> str:  # a UUID-derived UID (2.25.<uuid as an integer>, PS3.5 B.2) of a name-based UUID
        return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, f'edgecap:sample-dicom/{png.name}/{what}').int}"

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = SECONDARY_CAPTURE
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = uid("instance")
    ds.file_meta.ImplementationClassUID = uid("implementation")
    ds.file_meta.ImplementationVersionName = "EDGECAP_SAMPLE"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid("study"), uid("series")
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "", png.stem, "", ""
    ds.StudyDate, ds.StudyTime, ds.ReferringPhysicianName, ds.StudyID, ds.AccessionNumber = "", "", "", "", ""
    ds.Modality, ds.ConversionType, ds.BodyPartExamined = "OT", "WSD", "CHEST"
    ds.SeriesNumber, ds.InstanceNumber, ds.PatientOrientation = 1, 1, ""
    ds.StudyDescription = "IU X-Ray study 25, frontal view (edgecap sample)"
    ds.ImageComments = NOTICE
    ds.BurnedInAnnotation = "NO"
    set_pixels(ds, grey_pixels(png))
    ds.WindowCenter, ds.WindowWidth = 128, 256  # stored value v -> v / 255 of the display range, as the PNG
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def set_pixels(ds, pixels: np.ndarray) -> None:
    """The Image Pixel module for 8-bit unsigned MONOCHROME2 pixels (Dataset.set_pixel_data where pydicom has
    it, 3.0+; the same attributes by hand on 2.4)."""
    if hasattr(ds, "set_pixel_data"):
        ds.set_pixel_data(pixels, "MONOCHROME2", 8, generate_instance_uid=False)  # the UID above stays
        return
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="Compare with the shipped file instead of writing.")
    parser.add_argument("--out", type=Path, default=TARGET, help=f"Where to write (default: {TARGET}).")
    args = parser.parse_args(argv)
    data = sample_dicom()
    if args.check:
        same = args.out.is_file() and args.out.read_bytes() == data
        print(f"{args.out}: {'as this script writes it' if same else 'DIFFERS from what this script writes'}")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    print(f"wrote {args.out} ({len(data):,} bytes) from {SOURCE.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
