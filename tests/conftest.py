"""Shared fixtures. The real IU X-Ray sample lives in ../shared/data/iu_xray (beside the repository)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "iu_xray"


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
