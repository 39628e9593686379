"""Bundles converted once per test session (per run and mode), shared by test_convert.py and
test_bundle_runtime.py: a conversion with verification takes 5-40 s, so no test converts the same mode twice.

Both modules' fixtures call `converted(run, mode, tmp_path_factory)`; the first call converts, later calls
return the same ConvertResult.
"""

from __future__ import annotations

from pathlib import Path

_CACHE: dict[tuple[str, str], object] = {}

# int8 calibration sized for tests: 100 encoder inputs (13 real images of the sample + augmentations),
# 1,000 recorded decoder steps
TEST_SAMPLES, TEST_DECODER_SAMPLES = 100, 1000


def converted(run: Path, mode: str, tmp_path_factory):
    """-> convert.pipeline.ConvertResult of `run` in `mode` (converted on first use)."""
    key = (str(run), mode)
    if key not in _CACHE:
        from edgecap.convert.pipeline import convert_run

        out = tmp_path_factory.mktemp("bundles") / mode
        lines: list[str] = []
        result = convert_run(run, out, mode, samples=TEST_SAMPLES, decoder_samples=TEST_DECODER_SAMPLES,
                             log=lines.append)
        result.log = lines
        _CACHE[key] = result
    return _CACHE[key]
