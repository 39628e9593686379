"""Captioner on a real converted bundle (conftest.caption_bundle): one report whatever the image format, the
Report and its JSON, flagged non-X-rays, clear errors.

Images are the real IU X-Ray sample in ../shared/data/iu_xray; the DICOM, 16-bit PNG and JPEG copies are
derived from one of them (conftest.make_dicom, OpenCV).
"""

import json

import cv2
import numpy as np
import pytest

from edgecap.labeler import OBSERVATIONS
from edgecap.runtime.captioner import Captioner, CaptionError
from edgecap.runtime.preprocess import ImageError, read_image
from edgecap.runtime.report import Report

pytestmark = pytest.mark.tf  # building the bundle fixture needs TensorFlow; the code under test does not

FRONTAL = "CXR25_IM-1024-2001.png"  # grey levels span 0-255: its 16-bit copy stretches back to the same image


@pytest.fixture(scope="module")
def captioner(caption_bundle) -> Captioner:
    return Captioner.from_bundle(caption_bundle)


@pytest.fixture(scope="module")
def frontal(iu_data):
    return iu_data / "images" / FRONTAL


@pytest.fixture(scope="module")
def reference(captioner, frontal) -> Report:
    return captioner.caption(frontal, beam=3)


def test_report_for_a_real_image(captioner, reference, frontal):
    r = reference
    b = captioner.bundle
    assert r.text and r.text == b.vocab.render(b.vocab.encode(" ".join(r.tokens)))
    assert not r.flagged and r.warnings == [] and r.finished
    n = b.max_views * b.positions
    assert r.attention.shape == (len(r.tokens), n)
    p = b.positions
    np.testing.assert_allclose(r.attention[:, :p].sum(axis=1), 1.0, atol=1e-4)  # the frontal view's positions
    assert np.all(r.attention[:, p:] < 1e-6)  # no lateral view: masked out
    assert r.attention_layout == {"views": ["frontal", "lateral"], "positions_per_view": p, "grid": 8}
    assert set(r.findings) == set(OBSERVATIONS)
    assert set(r.findings.values()) <= {"positive", "negative", "uncertain", None}
    assert any(v is not None for v in r.findings.values())
    t = r.timings
    for k in ("read_ms", "sanity_ms", "preprocess_ms", "encoder_ms", "decoder_ms", "labeler_ms", "total_ms"):
        assert t[k] >= 0.0
    assert t["total_ms"] >= t["encoder_ms"] + t["decoder_ms"] and t["decoder_steps"] >= len(r.tokens)
    assert r.inputs == {"frontal": str(frontal), "lateral": None}
    assert r.bundle["mode"] == "float32" and r.bundle["interpreter"] == "ai-edge-litert"
    assert "not validated for clinical use" in r.bundle["notice"]
    assert r.image_stats["frontal"]["colour_share"] == 0.0


def test_json_round_trip(reference):
    d = json.loads(reference.to_json(attention_decimals=3))
    assert d["format"] == "edgecap-report/1" and d["text"] == reference.text
    assert np.asarray(d["attention"]).shape == reference.attention.shape
    assert np.abs(np.asarray(d["attention"]) - reference.attention).max() <= 5e-4
    back = Report.from_json(reference.to_json(attention_decimals=None))
    assert back.text == reference.text and back.findings == reference.findings
    np.testing.assert_array_equal(back.attention, reference.attention)
    assert "attention" not in reference.to_dict(attention=False)


def test_same_report_in_every_format(captioner, reference, frontal, make_dicom, tmp_path):
    """PNG path / bytes / arrays, 16-bit PNG, JPEG and DICOM (MONOCHROME2 and inverted MONOCHROME1 with a
    window) of the same real X-ray give the same report."""
    rgb = read_image(frontal)  # (H, W, 3) uint8, three equal channels
    gray = np.ascontiguousarray(rgb[..., 0])
    png16 = tmp_path / "x16.png"
    cv2.imwrite(str(png16), gray.astype(np.uint16) * 257)
    jpg = tmp_path / "x.jpg"
    cv2.imwrite(str(jpg), gray, [cv2.IMWRITE_JPEG_QUALITY, 95])
    dcm1 = tmp_path / "mono1.dcm"
    dcm1.write_bytes(make_dicom(gray, photometric="MONOCHROME1"))
    assert read_image(png16).dtype == np.uint16
    sources = {
        "png bytes": frontal.read_bytes(),
        "rgb array": rgb,
        "grey array": gray,
        "png16": png16,
        "jpeg": jpg,
        "dicom MONOCHROME2 bytes": make_dicom(gray),
        "dicom MONOCHROME1 file": dcm1,
        "dicom without extension": _write(tmp_path / "IM0001", make_dicom(gray)),
    }
    for name, src in sources.items():
        r = captioner.caption(src, beam=3)
        assert r.tokens == reference.tokens, name
        assert r.warnings == [] and not r.flagged, name


def test_two_views(captioner, iu_data):
    r = captioner.caption(
        iu_data / "images" / "CXR54_IM-2145-1001.png", lateral=iu_data / "images" / "CXR54_IM-2145-1002.png", beam=3
    )
    p = captioner.bundle.positions
    assert r.attention[:, p:].sum() > 0.01 * len(r.tokens)  # the lateral view is attended
    np.testing.assert_allclose(r.attention.sum(axis=1), 1.0, atol=1e-4)
    assert r.inputs["lateral"].endswith("CXR54_IM-2145-1002.png")
    assert r.image_stats["lateral"] is not None


def test_beam_one_is_greedy(captioner, frontal):
    r = captioner.caption(frontal, beam=1)
    assert r.beam == 1 and r.text and r.timings["decoder_steps"] == len(r.tokens) + 1


def test_cat_photo_is_flagged_not_reported(captioner):
    skdata = pytest.importorskip("skimage.data")
    r = captioner.caption(skdata.chelsea())
    assert r.flagged and [w.code for w in r.warnings] == ["not_grayscale"]
    assert r.text  # decoded, but never presented as a report; no structured labels:
    assert r.findings == {}
    shown = r.render_text()
    assert shown.startswith("NOT A CHEST X-RAY") and "frontal image is a colour image" in shown
    assert r.text not in shown and "withheld" in shown
    asked = r.render_text(show_flagged_text=True)
    assert asked.index(r.text) > asked.index("does not describe this image")
    d = json.loads(r.to_json())  # what an integration stores: no text, a distinct status, the reasons
    assert d["status"] == "flagged" and d["text"] is None and d["text_withheld"] is True
    assert d["tokens"] == [] and "attention" not in d and "flagged_text" not in d
    assert [w["code"] for w in d["warnings"]] == ["not_grayscale"]
    d = json.loads(r.to_json(show_flagged_text=True))  # asked for explicitly: under its own, marked name
    assert d["text"] is None and d["text_withheld"] is False and d["flagged_text"] == r.text
    assert Report.from_dict(d).text == r.text


def test_blank_image_is_flagged(captioner):
    r = captioner.caption(np.full((512, 512), 200, np.uint8))
    assert r.flagged and r.warning_codes == ["blank_image"]


def test_multiframe_dicom_note_does_not_flag(captioner, reference, frontal, make_dicom):
    gray = np.ascontiguousarray(read_image(frontal)[..., 0])
    r = captioner.caption(make_dicom(gray, frames=2))
    assert r.warning_codes == ["dicom_multiframe"] and not r.flagged
    assert r.tokens == reference.tokens


def test_errors(captioner, frontal, tmp_path):
    with pytest.raises(CaptionError, match="beam"):
        captioner.caption(frontal, beam=0)
    bad = tmp_path / "truncated.png"
    bad.write_bytes(frontal.read_bytes()[:4000])
    with pytest.raises(ImageError, match="truncated"):
        captioner.caption(bad)
    with pytest.raises(ImageError, match="no such file"):
        captioner.caption(tmp_path / "missing.png")


def test_default_bundle(monkeypatch, tmp_path):
    from edgecap.runtime import captioner as mod
    from edgecap.runtime.bundle import BundleError

    monkeypatch.setattr(mod, "default_bundle_path", lambda: tmp_path / "bundles" / "default")
    with pytest.raises(BundleError, match="no default bundle installed.*--bundle"):
        Captioner.from_bundle()


def test_shipped_default_bundle_loads():
    from edgecap.runtime.captioner import default_bundle_path

    if not (default_bundle_path() / "manifest.json").is_file():
        pytest.skip("no default bundle in this checkout")
    from edgecap.resources import sample_image

    r = Captioner.from_bundle().caption(sample_image())
    assert r.text and not r.flagged


def _write(path, data: bytes):
    path.write_bytes(data)
    return path
