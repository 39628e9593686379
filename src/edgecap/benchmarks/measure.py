"""The bench's measurement stage: every figure of every row, each from a child process (benchmarks.processes).

    peak = measure_all(rows, plan, inputs, log)   # fills the rows; -> the result's "peak"

Per row and thread count: benchmark_model's five figures of each model file (the Keras row: encoder and
decoder step, compiled and eager, in one TensorFlow task; the eager figures then move to the keras-eager row).
Then, per thread count, whole reports through runtime.captioner.Captioner with the decode loop's split, every
row's process alive at once and taking turns input by input (processes.run_interleaved), so that the ratios
between rows carry no machine drift; the first thread count's reports are kept for drift (Variant.reports).
Then the CPU's int8 / float32 matmul peak, a TensorFlow-free `edgecap caption` process per bundle (cold start,
peak RSS), and each bundle encoder's share of that peak.
A failed task is its row's status ("partial" / "failed") and error, never an exception.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from edgecap.benchmarks.plan import BenchOptions, Plan
from edgecap.benchmarks.processes import caption_process, run_interleaved, run_task
from edgecap.benchmarks.rows import Variant
from edgecap.runtime.manifest import Manifest, ManifestError

if TYPE_CHECKING:
    from edgecap.benchmarks.inputs import InputSet

_PARTS = ("encoder", "decoder_step")


def measure_all(rows: list[Variant], plan: Plan, inputs: InputSet, log: Callable[[str], None] = print) -> dict:
    """Measure every row that is not failed (see the module docstring) -> the CPU's matmul peak."""
    opt = plan.options
    studies, image = inputs.studies(), inputs.inputs[0].frontal
    live = [v for v in rows if v.status == "ok"]
    for v in rows:
        if v.status != "ok":
            log(f"{v.name}: {v.status}: {v.error}")
    failures: dict[str, list[str]] = {v.name: [] for v in live}
    for v in live:
        log(f"measuring {v.name}: model files ...")
        failures[v.name] += measure_models(v, image, plan)
    for n in plan.threads:
        # eager Keras: whole reports at one thread count only, on a few studies (each takes seconds)
        group = [v for v in live if not (v.kind == "keras" and v.eager and n != plan.first_threads)]
        log(f"whole reports at {n} thread(s), interleaved input by input: {', '.join(v.name for v in group)} ...")
        tasks = [(_reports_task(v, n, studies, opt), v.kind != "keras") for v in group]
        for v, r in zip(group, run_interleaved(tasks, opt.timeout_s)):
            failures[v.name] += _take_reports(v, r, n, n == plan.first_threads)
    for v in live:
        if failures[v.name]:
            v.status = "failed" if not v.report else "partial"
            v.error = "; ".join(failures[v.name])
    _move_eager_models(rows)
    peak = measure_peak(plan, log)
    for v in rows:
        if v.kind == "bundle" and v.status == "ok":
            v.process = caption_process(str(v.folder), image, 1 if opt.quick else opt.process_runs)
    for v in rows:
        add_throughput(v, peak)
    return peak


def measure_models(v: Variant, image: str, plan: Plan) -> list[str]:
    """Fill v.models (five figures per file and thread count) and v.size; v.report starts empty (whole reports
    are measured interleaved across variants, measure_all). -> failures."""
    keras = v.kind == "keras"
    models: dict = {}
    v.models, v.report = models, {}
    failures: list[str] = []
    manifest = None if keras else Manifest.load(v.folder)
    v.size = keras_size(v.folder) if keras else bundle_size(v.folder)
    for n in plan.threads:
        if keras and not v.eager:
            failures += _keras_models(v, models, n, image, plan.options)
        elif manifest is not None:
            failures += _bundle_models(v.folder, models, manifest, n, image, plan.options)
    return failures


def _keras_models(v: Variant, models: dict, n: int, image: str, opt: BenchOptions) -> list[str]:
    """The Keras encoder and decoder step at n threads into `models`, compiled and eager ("encoder (eager)",
    ...); sets v.tensorflow (its version). -> failures."""
    r = run_task(
        {"kind": "keras", "run": v.path, "threads": n, "image": image, "runs": opt.runs("encoder")},
        opt.timeout_s,
        tf_free=False,
    )
    if r["status"] != "ok":
        return [f"{n} thread(s): keras models: {r['error']}"]
    for part in _PARTS:
        for variant in ("compiled", "eager"):
            models.setdefault(part if variant == "compiled" else f"{part} (eager)", {})[str(n)] = r[f"{variant}_{part}"]
    v.tensorflow = r.get("tensorflow")
    return []


def _bundle_models(folder: Path, models: dict, manifest: Manifest, n: int, image: str, opt: BenchOptions) -> list[str]:
    """The bundle's encoder (on a real prepared X-ray) and decoder step files at n threads into `models`,
    TensorFlow-free. -> failures."""
    failures = []
    for part in _PARTS:
        r = run_task(
            {
                "kind": "model",
                "path": str(folder / manifest.files[part].path),
                "threads": n,
                "image": image,
                "mean": list(manifest.input.channel_mean or ()) or manifest.input.mean,
                "std": list(manifest.input.channel_std or ()) or manifest.input.std,
                "runs": opt.runs(part),
            },
            opt.timeout_s,
            tf_free=True,
        )
        if r["status"] != "ok":
            failures.append(f"{part} at {n} thread(s): {r['error']}")
        models.setdefault(part, {})[str(n)] = r
    return failures


def _reports_task(v: Variant, n: int, studies: list[list[str | None]], opt: BenchOptions) -> dict:
    """The worker's "reports" task of row v at n threads (eager Keras: 3 studies)."""
    few = v.kind == "keras" and v.eager
    task = {
        "kind": "reports",
        "threads": n,
        "beam": opt.beam,
        "warmup": 1 if few else 2,
        "inputs": studies[:3] if few else studies,
        "split_inputs": 2 if few else (5 if opt.quick else 20),
    }
    task.update({"keras_run": v.path, "eager": v.eager} if v.kind == "keras" else {"bundle": v.path})
    return task


def _take_reports(v: Variant, r: dict, n: int, keep: bool) -> list[str]:
    """Whole reports at n threads into v.report; `keep` stores their tokens and texts for drift (v.reports);
    sets v.interpreter. -> failures."""
    if r["status"] != "ok":
        return [f"reports at {n} thread(s): {r['error']}"]
    reports = r.pop("reports")
    if keep:
        v.reports = reports
    v.interpreter = r.pop("interpreter", None)
    v.report[str(n)] = r
    return []


def _move_eager_models(rows: list[Variant]) -> None:
    """The Keras task measured compiled and eager models together: each Keras row shows its own."""
    compiled = next((v for v in rows if v.kind == "keras" and not v.eager), None)
    if compiled is None:
        return
    for v in rows:
        if v.kind == "keras" and v.eager:
            both = compiled.models or {}
            v.models = {p.replace(" (eager)", ""): both.pop(p) for p in list(both) if p.endswith("(eager)")}


def bundle_size(path: Path) -> dict:
    """A bundle's files (manifest parts and vocabulary; every file when the manifest is unreadable) and bytes."""
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


def keras_size(run: Path) -> dict:
    """The Keras model's size: its float32 parameters (backbone included, whatever files hold them), and the
    run's weight files on disk (head.weights.npz leaves the frozen ImageNet backbone to its own package)."""
    import numpy as np

    from edgecap.training.run_dir import load_model

    if (run / "manifest.json").is_file():  # a bundle converted from a user's Keras model: that model's files
        return _user_keras_size(run)
    files = {
        p.name: {"path": p.name, "bytes": p.stat().st_size}
        for p in (run / "best.weights.h5", run / "head.weights.npz")
        if p.is_file()
    }
    _, _, model = load_model(run)
    params = int(sum(int(np.prod(w.shape)) for w in model.weights))
    return {
        "files": files,
        "total_bytes": 4 * params,
        "parameters": params,
        "note": "total_bytes = float32 parameters (4 bytes each), backbone included; files = the run's weight files",
    }


def _user_keras_size(bundle: Path) -> dict:
    """The user's Keras decoder and encoder files (benchmarks.variants: the reference named by `bundle`), and
    their float32 parameters."""
    import numpy as np

    from edgecap.convert.keras_import import load_reference, source_of_bundle

    src, why = source_of_bundle(bundle)
    if src is None:
        raise ValueError(why)
    ref = load_reference(src, log=lambda s: None)
    paths = [p for p in (src.decoder, src.encoder, src.encoder_weights) if p is not None]
    files = {p.name: {"path": p.name, "bytes": p.stat().st_size} for p in paths}
    params = int(sum(int(np.prod(w.shape)) for m in (ref.decoder, ref.encoder) for w in m.weights))
    return {
        "files": files,
        "total_bytes": 4 * params,
        "parameters": params,
        "note": "total_bytes = float32 parameters of the Keras decoder and encoder; files = the user's model files",
    }


def measure_peak(plan: Plan, log: Callable[[str], None] = print) -> dict:
    """The CPU's dense matmul peak through LiteRT (int8 and float32), per thread count."""
    from edgecap.benchmarks import throughput

    out: dict = {}
    kernels = throughput.cpu_paths()
    for kind in ("int8", "float32"):
        try:
            for shape in throughput.PEAK_SHAPES[kind]:  # built here (TensorFlow), timed in a TF-free child
                throughput.peak_model_bytes(kind, shape)
        except Exception as e:  # noqa: BLE001 - no TensorFlow to build it: a status, not a crash
            out[kind] = {"status": "failed", "error": f"cannot build the {kind} peak model: {e}"}
            continue
        out[kind] = {"status": "ok", "kernel": kernels[kind], "threads": {}}
        for n in plan.threads:
            # 1 s per candidate shape even with --quick: shorter runs under-read the peak (AMX / clock warm-up)
            r = run_task(
                {"kind": "peak", "peak": kind, "threads": n, "seconds": 1.0}, plan.options.timeout_s, tf_free=True
            )
            out[kind]["threads"][str(n)] = r
        log(
            f"peak {kind} ({out[kind]['kernel']}): "
            + ", ".join(f"{n} thr {r.get('gops', float('nan')):.0f} GOPS" for n, r in out[kind]["threads"].items())
        )
    return out


def add_throughput(v: Variant, peak: dict) -> None:
    """Encoder operations per second at each thread count and their share of the CPU's matmul peak of the
    encoder's precision (int8 encoder -> int8 peak; float16/float32 encoders compute in float32)."""
    from edgecap.benchmarks import throughput

    if v.kind != "bundle" or v.status == "failed":
        return
    f = Manifest.load(v.folder).files["encoder"]
    counted = throughput.count_ops((v.folder / f.path).read_bytes())
    precision = f.precision
    compared = "int8" if precision == "int8" else "float32"
    pk = peak.get(compared, {})
    per = {}
    for n, fig in (v.models or {}).get("encoder", {}).items():
        if fig.get("status") != "ok":
            continue
        gops = throughput.achieved(counted["ops"], fig["steady"]["p50_ms"])
        p = pk.get("threads", {}).get(n, {}).get("gops") if pk.get("status") == "ok" else None
        per[n] = {"gops": gops, "peak_gops": p, "share_of_peak": gops / p if p else None}
    v.throughput = {
        "encoder_precision": precision,
        "peak_compared": compared,
        "encoder_macs": counted["macs"],
        "encoder_ops": counted["ops"],
        "threads": per,
    }
