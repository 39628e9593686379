"""Bundles converted once per test session (per run and mode), shared by test_convert.py and
test_bundle_runtime.py: a conversion with verification takes 5-40 s, so no test converts the same mode twice.

Both modules' fixtures call `converted(run, mode, tmp_path_factory)`; the first call converts, later calls
return the same ConvertResult.
"""

from __future__ import annotations

from pathlib import Path

_CACHE: dict[tuple[str, str], object] = {}

# int8 calibration as the command ships it (convert.pipeline defaults: 200 images, 2,000 decoder steps).
# Smaller sets were tried: 100 / 1,000 gave the tiny int8 decoder a 7.1 max abs logit error on real steps
# (0.86 with the defaults), so the tests check what users get, at ~5 s more per int8 mode.


def converted(run: Path, mode: str, tmp_path_factory):
    """-> convert.pipeline.ConvertResult of `run` in `mode` (converted on first use)."""
    key = (str(run), mode)
    if key not in _CACHE:
        from edgecap.convert.pipeline import convert_run

        out = tmp_path_factory.mktemp("bundles") / mode
        lines: list[str] = []
        result = convert_run(run, out, mode, log=lines.append)
        result.log = lines
        _CACHE[key] = result
    return _CACHE[key]
