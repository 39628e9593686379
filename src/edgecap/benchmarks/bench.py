"""`edgecap bench`: every figure of every variant, measured side by side in one run, as one JSON document.

    result = run_bench(BenchOptions(run="default", modes=list(ALL_MODES)))
    result["variants"]   # one row per variant: keras (compiled), keras-eager, then each bundle

Flow: reference (variants.resolve_reference) -> bundles (given, or converted from the run in each mode) ->
inputs (benchmarks.inputs: real studies + derived views, >= 100) -> child processes (benchmarks.worker):
per model file and thread count the five benchmark_model figures; per variant and thread count whole reports
through runtime.captioner.Captioner with the decode loop's split; the Keras reference the same way
(compiled tf.function and eager) -> the CPU's int8 / float32 matmul peak (benchmarks.throughput) -> a
TensorFlow-free `edgecap caption` process per bundle (cold start, peak RSS) -> drift (benchmarks.drift)
-> ratios. The schema is benchmarks/bench.schema.json (docs/bench.md).

Every measurement runs in a child process: a crash of LiteRT on one variant (a segfault in a kernel) is
that variant's status, the other rows are still measured.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from edgecap import __version__
from edgecap.benchmarks.variants import ALL_MODES, BenchError, Reference, cache_root, convert_modes, resolve_reference
from edgecap.runtime.bundle import BundleError, check_files
from edgecap.runtime.manifest import Manifest, ManifestError

FORMAT = "edgecap-bench/1"


@dataclass
class BenchOptions:
    """Everything that decides a bench run (saved in the result's "settings")."""

    run: str | None = None  # reference run directory ("default": the one shipped with the default bundle)
    bundles: list[str] = field(default_factory=list)
    modes: list[str] | None = None  # convert the run into these modes (default: all when no bundle is given)
    data: str | None = None  # IU X-Ray folder for the inputs (default: the packaged real sample)
    threads: list[int] = field(default_factory=lambda: [1, 2, 4])
    quick: bool = False
    beam: int = 3
    min_inputs: int = 100
    seed: int = 0
    process_runs: int = 3
    timeout_s: float = 1800.0  # per child process

    def runs(self, kind: str) -> dict:
        """Repetitions of the five-figure benchmark (benchmark_model's defaults: 1 warm-up, >= 50 runs, 1 s)."""
        if self.quick:
            return {"warmup": 2, "min_runs": 10, "min_seconds": 0.2, "max_runs": 50 if kind == "encoder" else 300}
        return {"warmup": 5, "min_runs": 50, "min_seconds": 1.0, "max_runs": 500 if kind == "encoder" else 3000}


# ---- child processes ------------------------------------------------------------------------------------
_BLOCK_TF = """raise ImportError("blocked by edgecap bench: the runtime must not need TensorFlow")\n"""


def _tf_blocker() -> Path:
    """A folder with a `tensorflow` package that refuses to import: put first on PYTHONPATH of a LiteRT child,
    it proves the runtime path never touches TensorFlow (it would fail, not silently fall back)."""
    d = cache_root() / "block-tensorflow" / "tensorflow"
    d.mkdir(parents=True, exist_ok=True)
    (d / "__init__.py").write_text(_BLOCK_TF)
    return d.parent


def child_env(tf_free: bool) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    if tf_free:
        env["PYTHONPATH"] = os.pathsep.join([str(_tf_blocker())] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def run_task(task: dict, timeout: float, tf_free: bool) -> dict:
    """Run one benchmarks.worker task in a fresh Python; a crash or timeout becomes {"status": "failed"}."""
    with tempfile.TemporaryDirectory(prefix="edgecap-bench-") as d:
        tp, op = Path(d) / "task.json", Path(d) / "out.json"
        tp.write_text(json.dumps(task))
        try:
            proc = subprocess.run([sys.executable, "-m", "edgecap.benchmarks.worker", str(tp), str(op)],
                                  env=child_env(tf_free), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"status": "failed", "error": f"timed out after {timeout:.0f} s"}
        if not op.is_file():
            tail = (proc.stderr or "").strip().splitlines()[-3:]
            return {"status": "failed", "error": f"worker process died (exit {proc.returncode}): {' | '.join(tail)}"}
        return json.loads(op.read_text())


# Runs `edgecap caption ...` (edgecap.cli as __main__) and, at exit, writes the process's own peak RSS (VmHWM)
# to $EDGECAP_BENCH_HWM: ru_maxrss from wait4 would include the bench's memory (Linux carries the parent's
# peak across fork + exec).
_CAPTION_WRAPPER = (
    "import atexit, os, runpy, sys\n"
    "def _hwm():\n"
    "    with open('/proc/self/status') as f, open(os.environ['EDGECAP_BENCH_HWM'], 'w') as out:\n"
    "        out.write(next(l.split()[1] for l in f if l.startswith('VmHWM:')))\n"
    "atexit.register(_hwm)\n"
    "sys.argv = ['edgecap'] + sys.argv[1:]\n"
    "runpy.run_module('edgecap.cli', run_name='__main__')\n"
)


def caption_process(bundle: str, image: str, runs: int, timeout: float = 300.0) -> dict:
    """A TensorFlow-free `edgecap caption IMAGE --bundle B` (one report, beam 3) from process start to exit:
    cold start (wall time) and the process's peak RSS. TensorFlow is made unimportable in it (child_env)."""
    import numpy as np

    cold, peak, errors = [], [], []
    args = ["caption", image, "--bundle", bundle, "--format", "json", "--no-attention", "--no-progress"]
    with tempfile.TemporaryDirectory(prefix="edgecap-bench-") as d:
        hwm = Path(d) / "hwm"
        env = {**child_env(tf_free=True), "EDGECAP_BENCH_HWM": str(hwm)}
        for _ in range(runs):
            hwm.unlink(missing_ok=True)
            t0 = time.perf_counter()
            try:
                proc = subprocess.run([sys.executable, "-c", _CAPTION_WRAPPER, *args], env=env, capture_output=True,
                                      text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                errors.append(f"timed out after {timeout:.0f} s")
                continue
            wall = (time.perf_counter() - t0) * 1e3
            if proc.returncode != 0:
                errors.append(f"exit {proc.returncode}: {' '.join(proc.stderr.strip().splitlines()[-1:])}")
                continue
            if not proc.stdout.strip():
                errors.append("no report written")
                continue
            cold.append(wall)
            if hwm.is_file():
                peak.append(int(hwm.read_text()) / 1024)
    if not cold:
        return {"status": "failed", "error": "; ".join(errors) or "no run"}
    return {"status": "ok", "runs": len(cold),
            "cold_start_ms": {"p50_ms": float(np.median(cold)), "min_ms": float(min(cold)), "max_ms": float(max(cold))},
            "peak_rss_mb": float(max(peak)) if peak else None, "tensorflow_blocked": True,
            "command": "edgecap " + " ".join(args)}


# ---- the run --------------------------------------------------------------------------------------------
def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for pkg in ("ai-edge-litert", "tensorflow-cpu", "tensorflow", "numpy", "opencv-python-headless"):
        try:
            from importlib.metadata import version

            versions[pkg] = version(pkg)
        except Exception:  # noqa: BLE001 - not installed
            pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "packages": versions}


def _bundle_size(path: Path) -> dict:
    files = {}
    try:
        m = Manifest.load(path)
        for part, f in m.files.items():
            files[part] = {"path": f.path, "bytes": (path / f.path).stat().st_size}
        files["vocab"] = {"path": m.vocab.path, "bytes": (path / m.vocab.path).stat().st_size}
    except (ManifestError, OSError):
        for p in sorted(path.glob("*")):
            if p.is_file():
                files[p.name] = {"path": p.name, "bytes": p.stat().st_size}
    return {"files": files, "total_bytes": sum(f["bytes"] for f in files.values())}


def run_bench(opt: BenchOptions, log: Callable[[str], None] = print) -> dict:
    """Measure everything (see the module docstring) -> the result dict (bench.schema.json)."""
    from edgecap.benchmarks import drift
    from edgecap.benchmarks.inputs import build_inputs
    from edgecap.resources import portable_paths, sample_dir
    from edgecap.runtime.captioner import default_bundle_path

    started = time.time()
    if opt.beam < 1:
        raise BenchError("--beam must be >= 1")
    if not opt.threads or any(t < 1 for t in opt.threads):
        raise BenchError("--threads must list positive integers, e.g. 1,2,4")
    threads = opt.threads[:1] if opt.quick else opt.threads
    bundles = [Path(b) if b != "default" else default_bundle_path() for b in opt.bundles]
    for b in bundles:
        if not b.is_dir():
            raise BenchError(f"{b}: no such bundle folder")
    if opt.run is None and not bundles:
        bundles = [default_bundle_path()]
    modes = opt.modes
    if modes is None:
        modes = list(ALL_MODES) if (opt.run is not None and not opt.bundles) else []
    unknown = [m for m in modes if m not in ALL_MODES]
    if unknown:
        raise BenchError(f"unknown mode(s) {unknown}: choose from {', '.join(ALL_MODES)}")
    ref, ref_how = resolve_reference(opt.run, bundles)
    if modes and ref is None:
        raise BenchError("converting modes needs --run")
    log(f"reference: {ref.path if ref else 'none'} ({ref_how})")

    # ---- variants ----
    variants: list[dict] = []
    if ref is not None:
        for eager in (False, True):
            variants.append({"name": "keras-eager" if eager else "keras", "kind": "keras", "mode": None,
                             "path": str(ref.path), "status": "ok", "error": None, "verified": None,
                             "reference": not eager, "eager": eager})
    for mode, entry in convert_modes(ref, modes, log).items() if modes else []:
        row = {"name": mode, "kind": "bundle", "mode": mode, "path": entry.get("path"), "status": "ok",
               "error": entry.get("error"), "verified": entry.get("verified"), "converted": True}
        if "error" in entry:
            row["status"] = "failed"
        else:
            try:
                check_files(entry["path"])
            except BundleError as e:
                row.update(status="failed", error=str(e))
        variants.append(row)
    for b in bundles:
        row = {"name": b.name if b != default_bundle_path() else "default", "kind": "bundle", "path": str(b),
               "status": "ok", "error": None, "verified": None, "converted": False, "mode": None}
        try:  # a bundle a device would refuse (bad manifest, checksum) is measured no further
            m = Manifest.load(b)
            row["mode"] = m.mode
            row["verified"] = (m.verification or {}).get("passed")
            check_files(b)
            if ref is not None and (why := ref.matches(m)):
                row["drift_note"] = f"no drift figures: {why}"
        except (ManifestError, BundleError) as e:
            row.update(status="failed", error=str(e))
        variants.append(row)
    seen: dict[str, int] = {}
    for v in variants:  # unique row names: a second row called "int8" becomes "int8#2"
        seen[v["name"]] = count = seen.get(v["name"], 0) + 1
        if count > 1:
            v["name"] = f"{v['name']}#{count}"

    # ---- inputs ----
    data = Path(opt.data) if opt.data else sample_dir()
    minimum = 20 if opt.quick else opt.min_inputs
    try:
        inputs = build_inputs(data, cache_root() / "inputs" / f"n{minimum}-s{opt.seed}", minimum, opt.seed)
    except (ValueError, OSError) as e:
        raise BenchError(f"--data {data}: {e}") from None
    studies = [[i.frontal, i.lateral] for i in inputs.inputs]
    image = inputs.inputs[0].frontal
    log(f"inputs: {inputs.describe()['description']}")

    # ---- measurements ----
    for v in variants:
        if v["status"] != "ok":
            log(f"{v['name']}: {v['status']}: {v['error']}")
            continue
        log(f"measuring {v['name']} ...")
        _measure_variant(v, ref, studies, image, threads, opt)

    compiled = next((v for v in variants if v["kind"] == "keras" and not v["eager"]), None)
    for v in variants:  # the Keras task measured both; each row shows its own
        if v["kind"] == "keras" and v["eager"] and compiled is not None:
            v["models"] = {p.replace(" (eager)", ""): compiled["models"].pop(p)
                           for p in list(compiled.get("models", {})) if p.endswith("(eager)")}
    peak = _measure_peak(threads, opt, log)
    process = {}
    for v in variants:
        if v["kind"] == "bundle" and v["status"] == "ok":
            process[v["name"]] = caption_process(v["path"], image, 1 if opt.quick else opt.process_runs)
            v["process"] = process[v["name"]]

    # ---- drift, throughput, ratios ----
    drift.add_drift(variants, inputs, log)
    base = {}
    if ref is not None:
        try:
            base = drift.score_baselines(drift.baselines(ref.path, inputs, log), inputs, log)
        except Exception as e:  # noqa: BLE001 - a baseline that cannot be computed is said, not fatal
            base = {"error": f"{type(e).__name__}: {e}"}
    for v in variants:
        _add_throughput(v, peak)
    result = {
        "format": FORMAT,
        "edgecap_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": None,
        "machine": machine(),
        "settings": {**asdict(opt), "threads": threads, "modes": modes,
                     "bundles": [str(b) for b in bundles], "min_inputs": minimum},
        "reference": None if ref is None else {"path": str(ref.path), "chosen_by": ref_how,
                                               "config_hash": ref.config_hash, "weights_sha256": ref.weights_sha256},
        "inputs": inputs.describe(),
        "peak": peak,
        "variants": variants,
        "baselines": base,
    }
    result["ratios"] = ratios(result)
    result["seconds"] = round(time.time() - started, 1)
    return portable_paths(result)  # the JSON gets committed: no machine paths (resources.portable_text)


def _measure_variant(v: dict, ref: Reference | None, studies: list, image: str, threads: list[int],
                     opt: BenchOptions) -> None:
    """Fill v["models"] (five figures per file and thread count) and v["report"] (whole reports per thread
    count); the first thread count's reports also give the tokens for drift (v["_reports"])."""
    from edgecap.config import Config

    keras = v["kind"] == "keras"
    v["models"], v["report"], failures = {}, {}, []
    if keras:
        cfg = Config.load(Path(v["path"]) / "config.json")
        mean, std = cfg.image.mean, cfg.image.std
        v["size"] = _keras_size(Path(v["path"]))
    else:
        m = Manifest.load(v["path"])
        mean, std = m.input.mean, m.input.std
        v["size"] = _bundle_size(Path(v["path"]))
    for n in threads:
        if keras and not v["eager"]:
            r = run_task({"kind": "keras", "run": v["path"], "threads": n, "image": image,
                          "runs": opt.runs("encoder")}, opt.timeout_s, tf_free=False)
            if r["status"] != "ok":
                failures.append(f"{n} thread(s): keras models: {r['error']}")
            else:
                for part in ("encoder", "decoder_step"):
                    for variant in ("compiled", "eager"):
                        v["models"].setdefault(part if variant == "compiled" else f"{part} (eager)", {})[str(n)] = \
                            r[f"{variant}_{part}"]
                v["tensorflow"] = r.get("tensorflow")
        elif not keras:
            for part in ("encoder", "decoder_step"):
                f = m.files[part]
                r = run_task({"kind": "model", "path": str(Path(v["path"]) / f.path), "threads": n, "image": image,
                              "mean": mean, "std": std, "runs": opt.runs(part)}, opt.timeout_s, tf_free=True)
                if r["status"] != "ok":
                    failures.append(f"{part} at {n} thread(s): {r['error']}")
                v["models"].setdefault(part, {})[str(n)] = r
        eager_subset = keras and v["eager"]
        if eager_subset and n != threads[0]:
            continue  # eager whole reports: one thread count, a few studies (each takes seconds)
        task = {"kind": "reports", "threads": n, "beam": opt.beam, "warmup": 1 if eager_subset else 2,
                "inputs": studies[:3] if eager_subset else studies,
                "split_inputs": 2 if eager_subset else (5 if opt.quick else 20)}
        task.update({"keras_run": v["path"], "eager": v["eager"]} if keras else {"bundle": v["path"]})
        r = run_task(task, opt.timeout_s, tf_free=not keras)
        if r["status"] != "ok":
            failures.append(f"reports at {n} thread(s): {r['error']}")
            continue
        reports = r.pop("reports")
        if n == threads[0]:
            v["_reports"] = reports
        v["interpreter"] = r.pop("interpreter", None)
        v["report"][str(n)] = r
    if failures:
        v["status"] = "failed" if not v["report"] else "partial"
        v["error"] = "; ".join(failures)


def _keras_size(run: Path) -> dict:
    """The Keras model's size: its float32 parameters (backbone included, whatever files hold them), and the
    run's weight files on disk (head.weights.npz leaves the frozen ImageNet backbone to its own package)."""
    import numpy as np

    from edgecap.training.run_dir import load_model

    files = {p.name: {"path": p.name, "bytes": p.stat().st_size}
             for p in (run / "best.weights.h5", run / "head.weights.npz") if p.is_file()}
    _, _, model = load_model(run)
    params = int(sum(int(np.prod(w.shape)) for w in model.weights))
    return {"files": files, "total_bytes": 4 * params, "parameters": params,
            "note": "total_bytes = float32 parameters (4 bytes each), backbone included; files = the run's weight files"}


def _measure_peak(threads: list[int], opt: BenchOptions, log: Callable[[str], None]) -> dict:
    """The CPU's dense matmul peak through LiteRT (int8 and float32), per thread count."""
    from edgecap.benchmarks import throughput

    out: dict = {}
    for kind in ("int8", "float32"):
        try:
            for shape in throughput.PEAK_SHAPES[kind]:  # built here (TensorFlow), timed in a TF-free child
                throughput.peak_model_bytes(kind, shape)
        except Exception as e:  # noqa: BLE001 - no TensorFlow to build it: a status, not a crash
            out[kind] = {"status": "failed", "error": f"cannot build the {kind} peak model: {e}"}
            continue
        out[kind] = {"status": "ok", "threads": {}}
        for n in threads:
            # 1 s per candidate shape even with --quick: shorter runs under-read the peak (AMX / clock warm-up)
            r = run_task({"kind": "peak", "peak": kind, "threads": n, "seconds": 1.0},
                         opt.timeout_s, tf_free=True)
            out[kind]["threads"][str(n)] = r
        log(f"peak {kind}: " + ", ".join(f"{n} thr {r.get('gops', float('nan')):.0f} GOPS"
                                          for n, r in out[kind]["threads"].items()))
    return out


def _add_throughput(v: dict, peak: dict) -> None:
    """Encoder operations per second at each thread count and their share of the CPU's matmul peak of the
    encoder's precision (int8 encoder -> int8 peak; float16/float32 encoders compute in float32)."""
    from edgecap.benchmarks import throughput

    if v["kind"] != "bundle" or v["status"] == "failed":
        return
    m = Manifest.load(v["path"])
    f = m.files["encoder"]
    counted = throughput.count_ops((Path(v["path"]) / f.path).read_bytes())
    precision = f.precision
    pk = peak.get("int8" if precision == "int8" else "float32", {})
    per = {}
    for n, fig in v["models"].get("encoder", {}).items():
        if fig.get("status") != "ok":
            continue
        gops = throughput.achieved(counted["ops"], fig["steady"]["p50_ms"])
        p = pk.get("threads", {}).get(n, {}).get("gops") if pk.get("status") == "ok" else None
        per[n] = {"gops": gops, "peak_gops": p, "share_of_peak": gops / p if p else None}
    v["throughput"] = {"encoder_precision": precision, "peak_compared": "int8" if precision == "int8" else "float32",
                       "encoder_macs": counted["macs"], "encoder_ops": counted["ops"], "threads": per}


# ---- ratios ---------------------------------------------------------------------------------------------
def _p50(v: dict, n: str) -> float | None:
    r = v.get("report", {}).get(n)
    return r["latency"]["p50_ms"] if r else None


def ratios(result: dict) -> dict:
    """Side-by-side ratios of this run: each bundle's whole-report speed-up over compiled Keras (p50, per
    thread count), its size against the float32 bundle, and the decode loop's Python share."""
    rows = {v["name"]: v for v in result["variants"]}
    keras = next((v for v in result["variants"] if v["kind"] == "keras" and not v.get("eager")), None)
    f32 = next((v for v in result["variants"] if v.get("mode") == "float32" and v["status"] != "failed"), None)
    out = {}
    for name, v in rows.items():
        if v["kind"] != "bundle" or v["status"] == "failed":
            continue
        entry: dict = {"speedup_vs_keras": {}, "size_vs_float32": None, "python_share": {}}
        for n in v.get("report", {}):
            mine, theirs = _p50(v, n), _p50(keras, n) if keras else None
            if mine and theirs:
                entry["speedup_vs_keras"][n] = theirs / mine
            entry["python_share"][n] = v["report"][n]["decode_split"]["overhead_share"]
        if f32 is not None and f32.get("size"):
            entry["size_vs_float32"] = v["size"]["total_bytes"] / f32["size"]["total_bytes"]
        out[name] = entry
    return out
