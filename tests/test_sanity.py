"""The not-a-chest-X-ray check: every real X-ray of the shared sample passes, real non-X-rays are flagged.

Real X-rays: the 11 Open-i PNGs and 4 full-resolution Kaggle PNGs of ../shared/data/iu_xray, also re-encoded
(JPEG quality 30, 16-bit PNG). Non-X-rays: scikit-image's photographs (cat, astronaut, coffee) and scanned
page, a page rendered with real IU X-Ray report text, constant images.
"""

from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecap.runtime import sanity
from edgecap.runtime.preprocess import read_image

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "iu_xray"
XRAYS = sorted((SHARED / "images").glob("*.png")) + sorted((SHARED / "images_kaggle").glob("*.png"))
needs_data = pytest.mark.skipif(not XRAYS, reason=f"real IU X-Ray images not found at {SHARED}")


def _codes(image) -> list[str]:
    return [code for code, _ in sanity.check(image)[0]]


@pytest.fixture(scope="module")
def xrays() -> dict[str, np.ndarray]:
    if not XRAYS:
        pytest.skip(f"real IU X-Ray images not found at {SHARED}")
    return {p.name: read_image(p) for p in XRAYS}


@pytest.fixture(scope="module")
def skdata():
    return pytest.importorskip("skimage.data")


def rendered_report_page() -> np.ndarray:
    """A white A4-like page (1100 x 850) with the findings of real IU X-Ray reports typed on it."""
    import csv

    with open(SHARED / "indiana_reports.csv", newline="") as f:
        findings = [r["findings"] for r in csv.DictReader(f) if r["findings"]][:30]
    page = np.full((1100, 850), 255, np.uint8)
    y = 60
    for text in findings:
        for k in range(0, len(text), 70):
            if y > 1060:
                return page
            cv2.putText(page, text[k : k + 70], (40, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 0, 1, cv2.LINE_AA)
            y += 24
    return page


@needs_data
def test_all_real_xrays_pass(xrays):
    assert len(xrays) == 15
    for name, image in xrays.items():
        assert _codes(image) == [], (name, sanity.measure(image))


@needs_data
def test_real_xrays_pass_after_reencoding(xrays):
    for name, image in xrays.items():
        ok, jpg = cv2.imencode(".jpg", image[..., ::-1] if image.ndim == 3 else image, [cv2.IMWRITE_JPEG_QUALITY, 30])
        assert _codes(read_image(jpg.tobytes())) == [], name
        gray = image[..., 0] if image.ndim == 3 else image
        assert _codes(gray.astype(np.uint16) * 16) == [], name  # 12-bit values in a 16-bit container


@needs_data
def test_calibration_margins(xrays):
    """The thresholds sit well away from every real X-ray (the numbers of the module docstring)."""
    t = sanity.DEFAULT
    stats = [sanity.measure(im) for im in xrays.values()]
    assert max(s.colour_share for s in stats) == 0.0
    assert min(s.spread for s in stats) >= 10 * t.blank_spread  # measured 0.60
    assert max(s.sharp_share for s in stats) <= t.document_sharp / 3  # measured 0.024
    assert all(1 / 1.5 < s.aspect < 1.5 for s in stats)  # measured 0.81-1.41


@pytest.mark.parametrize("name", ["chelsea", "astronaut", "coffee"])
def test_colour_photos_are_flagged(skdata, name):
    image = getattr(skdata, name)()
    problems, stats = sanity.check(image)
    assert [c for c, _ in problems] == ["not_grayscale"], stats
    assert "colour" in problems[0][1]


def test_blank_images_are_flagged():
    assert _codes(np.full((512, 512), 128, np.uint8)) == ["blank_image"]
    assert _codes(np.zeros((600, 500), np.uint16)) == ["blank_image"]
    rng = np.random.default_rng(0)
    assert _codes(rng.integers(126, 129, (512, 512), dtype=np.uint8)) == ["blank_image"]  # 3 grey levels of noise


def test_scanned_page_is_flagged(skdata):
    assert "document_like" in _codes(skdata.page())


@needs_data
def test_rendered_document_is_flagged():
    problems, stats = sanity.check(rendered_report_page())
    assert [c for c, _ in problems] == ["document_like"], stats
    assert stats.median > 0.9 and stats.sharp_share > 0.3


@needs_data
def test_unusual_aspect_is_flagged(xrays, skdata):
    strip = next(iter(xrays.values()))[:150]  # a real X-ray cut into a 512 x 150 strip, enlarged 2x (1024 x 300):
    strip = cv2.resize(strip, None, fx=2.0, fy=2.0)  # wide, and large enough not to be too_small as well
    assert _codes(strip) == ["unusual_aspect"]
    assert "unusual_aspect" in _codes(skdata.text())  # handwriting on paper, 448 x 172


@needs_data
def test_too_small_is_flagged(xrays):
    """A real X-ray as a thumbnail (shorter side 200 px) is flagged; the smallest real one (362 px) is not."""
    image = next(iter(xrays.values()))
    h, w = image.shape[:2]
    thumb = cv2.resize(image, (round(w * 200 / min(h, w)), round(h * 200 / min(h, w))), interpolation=cv2.INTER_AREA)
    assert _codes(thumb) == ["too_small"]
    problems, stats = sanity.check(thumb)
    assert stats.short_side == 200 and "200 pixels" in problems[0][1]
    assert min(min(x.shape[:2]) for x in xrays.values()) >= sanity.DEFAULT.min_side


def test_messages_explain_the_number(skdata):
    ((code, message),) = sanity.check(skdata.chelsea())[0]
    assert code == "not_grayscale" and "95%" in message


def test_float_and_uint16_rgb_inputs(skdata):
    cat = skdata.chelsea()
    assert _codes(cat.astype(np.float32) / 255) == ["not_grayscale"]
    assert _codes(cat.astype(np.uint16) * 257) == ["not_grayscale"]


def test_percentiles_are_numpys():
    """sanity.percentiles (partial sorts, no numpy.ma import) gives np.percentile's values exactly, on the grey
    images the checks measure and on the edge cases of its interpolation (1 or 2 values, ties)."""
    rng = np.random.default_rng(0)
    cases = [rng.random((256, 300), dtype=np.float32), np.array([0.25], np.float32), np.array([0.0, 1.0], np.float32),
             np.repeat(np.float32(0.5), 99), (rng.random(1000) * 255).astype(np.uint8)]  # fmt: skip
    for x in cases:
        qs = (1, 50, 99)
        assert sanity.percentiles(x, qs) == [float(v) for v in np.percentile(x, qs)]
