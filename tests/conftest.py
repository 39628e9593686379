"""Shared fixtures. The real IU X-Ray sample lives in ../shared/data/iu_xray (beside the repository)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "iu_xray"

# ---- skips: none silent in CI ----------------------------------------------------------------------------
# With EDGECAP_STRICT_SKIPS=1 (set by .ci/run) a skipped test fails the run, unless its reason contains one of
# these phrases. Each is a skip that is intended on a machine where .ci/run installed everything.
ALLOWED_SKIPS: dict[str, str] = {
    # test_buildozer_spec: the spec test of a checkout without the shipped bundle (a source archive may omit it)
    "no bundle installed at": "the APK check needs the shipped default bundle; a checkout always has it"
}


def _strict_skips() -> bool:
    return os.environ.get("EDGECAP_STRICT_SKIPS") == "1"


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _unexpected(report) -> str | None:
    """The reason of a skip that strict mode turns into a failure, else None."""
    if not report.skipped or hasattr(report, "wasxfail"):
        return None
    reason = _skip_reason(report)
    return None if any(phrase in reason for phrase in ALLOWED_SKIPS) else reason


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if _strict_skips() and (reason := _unexpected(report)) is not None:
        report.outcome = "failed"
        report.longrepr = (
            f"unexpected skip (EDGECAP_STRICT_SKIPS=1): {reason}\n"
            "install what it needs (.ci/run does) or add an intended skip to ALLOWED_SKIPS in "
            "tests/conftest.py with its reason"
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if _strict_skips() and (reason := _unexpected(report)) is not None:  # a module-level importorskip
        report.outcome = "failed"
        report.longrepr = f"unexpected skip of {collector.nodeid} (EDGECAP_STRICT_SKIPS=1): {reason}"


@pytest.fixture(scope="session")
def iu_data() -> Path:
    if not (SHARED / "NLMCXR_reports.tgz").is_file():
        pytest.skip(f"real IU X-Ray sample not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """Feature cache for the test session (never the user's ~/.cache)."""
    d = tmp_path_factory.mktemp("edgecap_cache")
    os.environ["EDGECAP_CACHE"] = str(d)
    return d


@pytest.fixture(scope="session")
def overfit_run(iu_data, tmp_path_factory, cache_dir):
    """The demo settings (training.demo.demo_config: tiny model, no augmentation, every study trains, 120
    epochs) on the shared sample: memorising 10 real studies is the test that the training path learns."""
    from edgecap.training.demo import demo_config
    from edgecap.training.train import train

    out = tmp_path_factory.mktemp("runs") / "overfit"
    result = train(iu_data, out, demo_config(), split_mode="random", progress=False, log=lambda *a: None)
    return out, result


@pytest.fixture(scope="session")
def make_dicom():
    """A function: real image pixels -> DICOM Part 10 bytes (pydicom), as an X-ray modality would store them.

    Grey (H, W) uint8 -> 12-bit stored values g * 16 (MONOCHROME1: 4080 - g * 16), RescaleIntercept
    `intercept` and, by default, the window that maps the rescaled values back onto g / 255 exactly
    (center 2040.5 + intercept, width 4081). (H, W, 3) uint8 with photometric="RGB" -> an RGB DICOM.
    jpeg_syntax: a pydicom.uid name; the 8-bit grey pixels are stored as one real JPEG frame (cv2) under it.
    """
    pytest.importorskip("pydicom")
    import io

    import cv2
    import numpy as np
    from pydicom import uid
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate

    def make(
        pixels, photometric="MONOCHROME2", window="full", intercept=-1024.0, frames=1, jpeg_syntax=None, extra=None
    ) -> bytes:
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = uid.DigitalXRayImageStorageForPresentation
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = uid.generate_uid()
        ds.Modality = "DX"
        if photometric == "RGB":
            ds.set_pixel_data(np.ascontiguousarray(pixels), "RGB", 8)
        elif jpeg_syntax is not None:
            ds.set_pixel_data(pixels, "MONOCHROME2", 8)
            ds.file_meta.TransferSyntaxUID = getattr(uid, jpeg_syntax)
            ok, jpg = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 95])
            ds.PixelData = encapsulate([jpg.tobytes()])
            ds["PixelData"].VR = "OB"
            ds["PixelData"].is_undefined_length = True
        else:
            stored = pixels.astype(np.uint16) * 16
            if photometric == "MONOCHROME1":
                stored = 4080 - stored
            ds.set_pixel_data(np.stack([stored] * frames) if frames > 1 else stored, photometric, 12)
            ds.RescaleSlope, ds.RescaleIntercept = 1.0, intercept
            if window == "full":
                window = (2040.5 + intercept, 4081)
            if window is not None:
                ds.WindowCenter, ds.WindowWidth = window
        for k, v in (extra or {}).items():
            setattr(ds, k, v)
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        return buf.getvalue()

    return make


@pytest.fixture(scope="session")
def caption_bundle(tmp_path_factory, request) -> Path:
    """A real bundle for the runtime tests: the overfit demo run converted to float32 (convert.convert_run,
    verified against Keras on 3 real studies). Building it needs TensorFlow; using it does not."""
    pytest.importorskip("tensorflow")
    from edgecap.convert.pipeline import convert_run

    run, _ = request.getfixturevalue("overfit_run")
    out = tmp_path_factory.mktemp("bundles") / "demo_float32"
    result = convert_run(run, out, "float32", verify_studies=3, log=lambda *a: None)
    assert result.passed, result.manifest.verification
    return out
