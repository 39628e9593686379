"""`edgecap bench`: every figure of every variant, measured side by side in one run, as one JSON document.

    result = run_bench(BenchOptions(run="default", modes=list(ALL_MODES)))
    result["variants"]   # one row per variant: keras (compiled), keras-eager, then each bundle

Stages, each in its own module, on typed values:

    plan          benchmarks.plan      BenchOptions -> Plan (threads, bundles, modes, the Keras reference)
    variants      benchmarks.rows      Plan -> [Variant] (modes converted from the reference, cached)
    inputs        benchmarks.inputs    real studies + derived views, >= 100 -> InputSet
    measurements  benchmarks.measure   per row, in child processes (benchmarks.processes, .worker): the five
                                       benchmark_model figures per model file and thread count, whole reports
                                       with the decode loop's split, a TensorFlow-free `edgecap caption`
                                       process (cold start, peak RSS); the CPU's matmul peak (.throughput)
    peer          benchmarks.peers     ONNX Runtime models of the reference (tf2onnx; ORT's quantization),
                                       each component timed against a bundle row's LiteRT file, interleaved
    drift         benchmarks.drift     each row's reports against the Keras row's; the two baselines
    ratios        benchmarks.ratios    speed-up over Keras, size against float32, Python share, vs the peer

-> BenchResult, saved as its to_json(): the schema is benchmarks/bench.schema.json (docs/bench.md). Every
measurement runs in a child process: a crash of LiteRT on one variant (a segfault in a kernel) is that
variant's status, the other rows are still measured.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from edgecap import __version__
from edgecap.benchmarks.measure import measure_all
from edgecap.benchmarks.peers import PEER, measure_peer
from edgecap.benchmarks.plan import BenchOptions, Plan, make_plan
from edgecap.benchmarks.ratios import ratios
from edgecap.benchmarks.rows import Variant, list_variants
from edgecap.benchmarks.variants import BenchError, cache_root

if TYPE_CHECKING:
    from edgecap.benchmarks.inputs import InputSet

__all__ = ["FORMAT", "BenchOptions", "BenchResult", "machine", "run_bench"]

FORMAT = "edgecap-bench/1"


@dataclass
class BenchResult:
    """One bench run; to_json() is the saved document (format edgecap-bench/1, bench.schema.json)."""

    created: str  # ISO 8601 UTC, when the measurements ended
    machine: dict  # machine(): CPU, cores, platform, Python, package versions
    settings: dict  # Plan.settings()
    reference: dict | None  # Plan.reference_json()
    inputs: dict  # InputSet.describe()
    peak: dict  # the CPU's matmul peak per precision and thread count (benchmarks.measure)
    variants: list[Variant]
    baselines: dict  # scored evaluation baselines ({"error"} when they cannot be computed)
    ratios: dict  # benchmarks.ratios
    peers: dict  # {"onnxruntime": benchmarks.peers.measure_peer's entry}
    seconds: float | None = None  # the whole run's wall time
    edgecap_version: str = __version__

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "edgecap_version": self.edgecap_version,
            "created": self.created,
            "seconds": self.seconds,
            "machine": self.machine,
            "settings": self.settings,
            "reference": self.reference,
            "inputs": self.inputs,
            "peak": self.peak,
            "variants": [v.to_json() for v in self.variants],
            "baselines": self.baselines,
            "ratios": self.ratios,
            "peers": self.peers,
        }


def run_bench(opt: BenchOptions, log: Callable[[str], None] = print) -> dict:
    """Measure everything (see the module docstring) -> the result as saved (BenchResult.to_json()), machine
    paths made portable (resources.portable_paths): the JSON gets committed. BenchError: bad options."""
    from edgecap.resources import portable_paths

    started = time.time()
    plan = make_plan(opt, log)
    rows = list_variants(plan, log)
    inputs = _inputs(plan, log)
    peak = measure_all(rows, plan, inputs, log)
    peers = {PEER: measure_peer(plan, rows, inputs, log)}
    baselines = _drift(plan, rows, inputs, log)
    result = BenchResult(
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        machine=machine(),
        settings=plan.settings(),
        reference=plan.reference_json(),
        inputs=inputs.describe(),
        peak=peak,
        variants=rows,
        baselines=baselines,
        ratios=ratios(rows, peers),
        peers=peers,
    )
    result.seconds = round(time.time() - started, 1)
    return portable_paths(result.to_json())


def _inputs(plan: Plan, log: Callable[[str], None]) -> InputSet:
    """The input studies, written once into the bench cache per (minimum, seed) and reused."""
    from edgecap.benchmarks.inputs import build_inputs

    seed = plan.options.seed
    try:
        inputs = build_inputs(plan.data, cache_root() / "inputs" / f"n{plan.min_inputs}-s{seed}", plan.min_inputs, seed)
    except (ValueError, OSError) as e:
        raise BenchError(f"--data {plan.data}: {e}") from None
    log(f"inputs: {inputs.describe()['description']}")
    return inputs


def _drift(plan: Plan, rows: list[Variant], inputs: InputSet, log: Callable[[str], None]) -> dict:
    """Every row's drift against the Keras row -> the evaluation baselines' scores ({} without a reference)."""
    from edgecap.benchmarks import drift

    drift.add_drift(rows, inputs, log)
    if plan.reference is None:
        return {}
    if plan.reference.kind == "keras":  # the baselines read the run's training split and config
        return {"error": "no evaluation baselines for a user's Keras model: it has no run (training split)"}
    try:
        return drift.score_baselines(drift.baselines(plan.reference.path, inputs, log), inputs, log)
    except Exception as e:  # noqa: BLE001 - a baseline that cannot be computed is said, not fatal
        return {"error": f"{type(e).__name__}: {e}"}


def machine() -> dict:
    """The machine the figures belong to: CPU model, logical cores, platform, Python, package versions."""
    from importlib.metadata import PackageNotFoundError, version

    from edgecap.benchmarks.throughput import cpuinfo_field

    cpu = cpuinfo_field("model name") or platform.processor() or ""
    versions = {}
    for pkg in ("ai-edge-litert", "tensorflow-cpu", "tensorflow", "numpy", "opencv-python-headless"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
    }
