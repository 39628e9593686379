"""DICOM through preprocess.read_image: display pipeline, MONOCHROME1, frames, codecs, clear errors.

Every DICOM here is derived with pydicom from a real IU X-Ray PNG (the `make_dicom` fixture, conftest.py):
12-bit stored values, a CT-style rescale (intercept -1024) and the window that maps them back onto the
PNG's grey levels, so the decoded image must equal the PNG's.
"""

import io
import sys

import cv2
import numpy as np
import pytest

from edgecap.runtime import dicom
from edgecap.runtime.preprocess import ImageError, read_image, to_gray

pydicom = pytest.importorskip("pydicom")


def test_is_dicom(make_dicom, xray_gray, kaggle_png):
    assert dicom.is_dicom(make_dicom(xray_gray))
    assert dicom.is_dicom(b"\0" * 10, "scan.DCM")
    assert not dicom.is_dicom(kaggle_png.read_bytes(), kaggle_png.name)  # "*.dcm.png" is a PNG
    assert read_image(kaggle_png).dtype == np.uint8


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_window_and_rescale_reproduce_the_png(make_dicom, xray_gray, photometric):
    image = read_image(make_dicom(xray_gray, photometric=photometric))
    assert image.dtype == np.float32 and image.shape == xray_gray.shape
    np.testing.assert_allclose(to_gray(image), xray_gray / 255.0, atol=1e-6)


def test_window_clips_outside_values(make_dicom, xray_gray):
    """A narrow window: values below/above it are black/white, inside it linear (DICOM PS3.3 C.11.2.1.2)."""
    image = read_image(make_dicom(xray_gray, window=(2040.5 - 1024, 2041)))  # the middle half of the range
    rescaled = xray_gray.astype(np.float64) * 16 - 1024
    center, width = 2040.5 - 1024 - 0.5, 2041 - 1  # LINEAR: c - 0.5, w - 1
    expected = np.clip((rescaled - center) / width + 0.5, 0, 1)
    np.testing.assert_allclose(image, expected, atol=1e-6)
    assert (image == 0).mean() > 0.05 and (image == 1).mean() > 0.05


def test_no_window_is_stretched_like_a_16bit_png(make_dicom, xray_gray):
    image = read_image(make_dicom(xray_gray, window=None))
    np.testing.assert_allclose(image, to_gray(xray_gray.astype(np.uint16) * 16), atol=1e-6)


def test_voi_lut_sequence(make_dicom, xray_gray):
    from pydicom.dataelem import DataElement
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    lut = Dataset()
    lut.LUTDescriptor = [4096, 0, 12]
    lut["LUTData"] = DataElement(0x00283006, "OW", (4095 - np.arange(4096)).astype("<u2").tobytes())  # inverting
    data = make_dicom(xray_gray, window=None, intercept=0.0, extra={"VOILUTSequence": Sequence([lut])})
    image = read_image(data)
    np.testing.assert_allclose(image, (4095 - xray_gray.astype(np.float64) * 16) / 4095, atol=1e-6)


def test_multiframe_uses_the_first_frame_with_a_note(make_dicom, xray_gray):
    notes = []
    image = read_image(make_dicom(xray_gray, frames=3), notes)
    np.testing.assert_allclose(image, xray_gray / 255.0, atol=1e-6)
    assert [c for c, _ in notes] == ["dicom_multiframe"] and "3 frames" in notes[0][1]


def test_compressed_without_a_decoder_is_a_clear_error(make_dicom, xray_gray):
    """JPEG-LS has no decoder here (no pylibjpeg-libjpeg / gdcm): the message names it and what to install.
    The payload is a real JPEG of the X-ray; pydicom looks for a decoder before it reads the payload."""
    with pytest.raises(ImageError, match=r"JPEG-LS.*no decoder.*pylibjpeg"):
        read_image(make_dicom(xray_gray, jpeg_syntax="JPEGLSLossless"))


def test_jpeg_baseline_decodes_with_pillow(make_dicom, xray_gray):
    pytest.importorskip("PIL")
    image = read_image(make_dicom(xray_gray, jpeg_syntax="JPEGBaseline8Bit"))
    assert np.abs(image - xray_gray / 255.0).mean() < 0.01


def test_bad_files_are_image_errors(make_dicom, xray_gray, tmp_path):
    data = make_dicom(xray_gray)
    with pytest.raises(ImageError, match="cannot decode the DICOM pixel data"):
        read_image(data[: len(data) // 2])  # truncated pixel data
    fake = tmp_path / "notes.dcm"
    fake.write_text("not a dicom file, just text " * 20)
    with pytest.raises(ImageError, match="not a DICOM file"):
        read_image(fake)


def _without_pixels(data: bytes, sop_class=None) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    del ds.PixelData
    if sop_class is not None:
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def test_dicom_without_pixel_data(make_dicom, xray_gray):
    """A DICOM that is no image (a text report) says so; an X-ray whose pixel data is gone says that instead."""
    report = _without_pixels(make_dicom(xray_gray), pydicom.uid.BasicTextSRStorage)
    with pytest.raises(ImageError, match=r"without pixel data \(Basic Text SR Storage\): a report"):
        read_image(report)
    with pytest.raises(ImageError, match=r"truncated or corrupt DICOM image \(Digital X-Ray Image Storage"):
        read_image(_without_pixels(make_dicom(xray_gray)))


def test_corrupt_dicom_header_is_not_called_a_dicom_without_pixels(make_dicom, xray_gray):
    """Issue #13 item 12: one damaged element length before the pixel data (pydicom's force=True reading stops
    there quietly) was reported as "DICOM file without pixel data"."""
    data = make_dicom(xray_gray)
    at = data.index(b"DX") - 2  # the 2-byte length of the Modality element's value ("DX")
    damaged = data[:at] + b"\xff\xff" + data[at + 2 :]
    with pytest.raises(ImageError, match="a corrupt DICOM header: the file holds pixel data") as e:
        read_image(damaged)
    assert "without pixel data" not in str(e.value)


def test_missing_pydicom_is_a_clear_error(make_dicom, xray_gray, monkeypatch):
    data = make_dicom(xray_gray)
    for name in [m for m in sys.modules if m == "pydicom" or m.startswith("pydicom.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(ImageError, match=r"pip install 'edgecap\[dicom\]'"):
        read_image(data)


def test_colour_dicom_is_rgb(make_dicom, xray_gray):
    rgb = cv2.applyColorMap(xray_gray, cv2.COLORMAP_JET)[..., ::-1]
    image = read_image(make_dicom(rgb, photometric="RGB"))
    assert image.shape == rgb.shape and image.dtype == np.float32
    np.testing.assert_allclose(image, rgb / 255.0, atol=1e-6)


@pytest.fixture(scope="module")
def xray_gray(iu_data) -> np.ndarray:
    """The grey levels of a real frontal X-ray (its PNG stores them as three equal channels, range 0-255)."""
    image = read_image(iu_data / "images" / "CXR25_IM-1024-2001.png")
    return np.ascontiguousarray(image[..., 0])


@pytest.fixture(scope="module")
def kaggle_png(iu_data):
    return iu_data / "images_kaggle" / "1001_IM-0004-1001.dcm.png"


def test_palette_colour_dicom(xray_gray):
    """PALETTE COLOR: stored values index a colour table; a grey table gives back the grey image as RGB."""
    from pydicom import uid
    from pydicom.datadict import tag_for_keyword
    from pydicom.dataelem import DataElement
    from pydicom.dataset import Dataset, FileMetaDataset

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = uid.SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = uid.generate_uid()
    ds.set_pixel_data(xray_gray, "PALETTE COLOR", 8)
    table = (np.arange(256) * 257).astype("<u2").tobytes()
    for c in ("Red", "Green", "Blue"):
        setattr(ds, f"{c}PaletteColorLookupTableDescriptor", [256, 0, 16])
        ds[f"{c}PaletteColorLookupTableData"] = DataElement(
            tag_for_keyword(f"{c}PaletteColorLookupTableData"), "OW", table
        )
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    image = read_image(buf.getvalue())
    assert image.shape == xray_gray.shape + (3,)
    np.testing.assert_allclose(image, np.repeat(xray_gray[..., None], 3, axis=2) / 255.0, atol=1e-6)
