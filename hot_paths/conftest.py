"""Fixtures of the hot-path benchmarks (pytest-benchmark). Not part of the test suite: see README.md here.

    pytest hot_paths/ --benchmark-only [--modes all] [--bench-threads 2] [--benchmark-json out.json]

Bundles: "default" is the bundle shipped in edgecap/resources/bundles/default (no conversion, no TensorFlow);
every other mode is the shipped reference run converted by edgecap.benchmarks.variants.convert_modes, cached
under ~/.cache/edgecap/bench ($EDGECAP_CACHE/bench) exactly as `edgecap bench` caches it: the first
conversion of a mode takes minutes (and TensorFlow), later runs re-use it.

This folder has no __init__.py on purpose: pytest imports it by its own folder ("rootdir/hot_paths" goes on
sys.path, modules `conftest` and `test_hot_paths`), so it never shadows a package.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # a first conversion imports TensorFlow

DEFAULT_MODES = "int8,float32"


def pytest_addoption(parser):
    group = parser.getgroup("edgecap-bench", "edgecap hot-path benchmarks (hot_paths/)")
    group.addoption(
        "--modes",
        default=DEFAULT_MODES,
        help="comma-separated bundle modes to benchmark: any of edgecap.benchmarks.variants.ALL_MODES "
        "(float32, float16, dynamic, int8, int8-full), 'default' (the shipped bundle, as "
        f"installed), or 'all' (= ALL_MODES). Default: {DEFAULT_MODES}",
    )
    group.addoption(
        "--bench-threads", type=int, default=1, help="num_threads of every interpreter (Bundle.load). Default: 1"
    )


def selected_modes(config) -> list[str]:
    from edgecap.benchmarks.variants import ALL_MODES

    raw = config.getoption("--modes")
    modes: list[str] = []
    for item in (m.strip() for m in raw.split(",")):
        if not item:
            continue
        for m in ALL_MODES if item == "all" else (item,):
            if m not in ALL_MODES and m != "default":
                raise pytest.UsageError(f"--modes: unknown mode {m!r}; known: {', '.join(ALL_MODES)}, default, all")
            if m not in modes:
                modes.append(m)
    if not modes:
        raise pytest.UsageError("--modes: no mode given")
    return modes


def pytest_configure(config):
    if config.getoption("--bench-threads") < 1:
        raise pytest.UsageError("--bench-threads must be >= 1")
    selected_modes(config)  # a bad --modes is a usage error before anything is collected


def pytest_generate_tests(metafunc):
    """Every benchmark that takes `mode` runs once per --modes entry (session-scoped: one bundle per mode)."""
    if "mode" in metafunc.fixturenames:
        metafunc.parametrize("mode", selected_modes(metafunc.config), scope="session")


@pytest.fixture(scope="session")
def threads(pytestconfig) -> int:
    return pytestconfig.getoption("--bench-threads")


@pytest.fixture(scope="session")
def _say(pytestconfig):
    """A log line shown live (conversions take minutes), not swallowed by output capture."""
    capman = pytestconfig.pluginmanager.getplugin("capturemanager")
    reporter = pytestconfig.pluginmanager.getplugin("terminalreporter")

    def say(msg: str) -> None:
        if capman is None or reporter is None:
            print(msg)
            return
        with capman.global_and_fixture_disabled():
            reporter.write_line(f"[edgecap-bench] {msg}")

    return say


@pytest.fixture(scope="session")
def shipped_bundle() -> Path:
    """The default bundle shipped with the package (edgecap/resources/bundles/default)."""
    from edgecap.runtime.captioner import default_bundle_path

    path = default_bundle_path()
    if not (path / "manifest.json").is_file():
        pytest.skip(f"no default bundle installed at {path}")
    return path


@pytest.fixture(scope="session")
def bundle_entry(request, mode, _say) -> dict:
    """mode -> {"path", "verified", ...}: the shipped bundle for "default", else the cached conversion of the
    shipped reference run (converted now when the cache does not have it). A failed conversion skips the mode."""
    if mode == "default":
        return {"path": str(request.getfixturevalue("shipped_bundle")), "verified": None, "cached": True}
    from edgecap.benchmarks.variants import Reference, convert_modes

    entry = convert_modes(Reference.load("default"), [mode], log=_say)[mode]
    if "error" in entry:
        pytest.skip(f"{mode}: {entry['error']}")
    if not entry.get("verified"):
        _say(f"{mode}: the bundle in {entry['path']} FAILED the converter's verification; benchmarking it anyway")
    return entry


@pytest.fixture(scope="session")
def captioner(bundle_entry, threads):
    """Captioner over the mode's bundle, interpreters with --bench-threads threads. Shared by every benchmark
    of the mode (one interpreter pair per mode; Bundle.step re-binds features whenever they change)."""
    from edgecap.runtime.captioner import Captioner

    return Captioner.from_bundle(bundle_entry["path"], num_threads=threads)


@pytest.fixture(scope="session")
def bundle(captioner):
    """The runtime.bundle.Bundle under `captioner`."""
    return captioner.bundle


@pytest.fixture
def info(benchmark, mode, bundle_entry, bundle, threads) -> dict:
    """benchmark.extra_info, filled with what identifies a bundle row (saved in --benchmark-json)."""
    benchmark.extra_info.update(
        mode=mode,
        threads=threads,
        bundle=bundle_entry["path"],
        verified=bundle_entry.get("verified"),
        interpreter=bundle.interpreter_name,
        step_batch=bundle.step_batch,
    )
    return benchmark.extra_info


@pytest.fixture(scope="session")
def sample_png() -> Path:
    """A real frontal chest X-ray PNG of the packaged IU X-Ray sample (CC BY-NC-ND 4.0)."""
    from edgecap.resources import sample_image

    path = sample_image()
    assert path.is_file(), path
    return path


@pytest.fixture(scope="session")
def sample_pngs() -> list[Path]:
    """Every PNG of the packaged IU X-Ray sample (sample_dir()/images)."""
    from edgecap.resources import sample_dir

    paths = sorted((sample_dir() / "images").glob("*.png"))
    assert paths, sample_dir()
    return paths


@pytest.fixture(scope="session")
def image_contract(shipped_bundle):
    """(size, mean, std) of the shipped bundle's input, from its manifest only (no interpreter): the
    preprocess benchmarks do not depend on a mode."""
    from edgecap.runtime.manifest import Manifest

    i = Manifest.load(shipped_bundle).input
    return i.size, i.mean, i.std


@pytest.fixture(scope="session")
def prepared(bundle, sample_png) -> np.ndarray:
    """The real sample PNG as the mode's encoder input (S, S, 3) float32."""
    from edgecap.runtime import preprocess

    return preprocess.load(sample_png, bundle.image_size, bundle.mean, bundle.std)


@pytest.fixture(scope="session")
def memory(bundle, prepared) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, D), mask (N,)) of one frontal view, from the bundle's own encoder on the real image."""
    from edgecap.runtime.study import fuse_views

    frontal = np.array(bundle.encode(prepared), copy=True)
    return fuse_views([frontal], bundle.max_views)
