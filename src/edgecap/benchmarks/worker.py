"""One measurement in a fresh process: `python -m edgecap.benchmarks.worker TASK.json OUT.json`.

Every figure of `edgecap bench` comes from a child process of its own, as LiteRT's `benchmark_model` runs
one model per process: memory figures are then the model's, not the bench's; thread counts are set before
any runtime starts (TensorFlow fixes its thread pools at first use); and a LiteRT child never imports
TensorFlow. Tasks (TASK.json "kind"):

    model     one .tflite file: the five benchmark_model figures (initialisation, first inference, warm-up
              average, steady-state average, memory) at `threads`
    keras     the Keras encoder and decoder step of a run, compiled (tf.function) and eager: the same figures
              (or of a user's Keras captioner, named by the manifest of a bundle converted from it)
    reports   whole reports (read + sanity + preprocess + encoder + decode loop + labeler, i.e.
              runtime.captioner.Captioner.caption) over a list of studies, on a bundle or on the Keras run,
              with per-stage times, the decode loop split into interpreter calls / tensor copies / Python,
              and each report's tokens (for drift)
    peak      a dense matrix-multiply model (benchmarks.throughput): the CPU's reachable peak

A failure is written as {"status": "failed", "error": ...}: the parent shows it in the variant's row.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback
from functools import partial
from pathlib import Path

import numpy as np

from edgecap.benchmarks.throughput import timed_calls


def rss_mb() -> float:
    """Current resident set size (Linux /proc; ru_maxrss elsewhere), MiB."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB: VmHWM of /proc/self/status on Linux.

    Not ru_maxrss: Linux carries the parent's peak RSS across fork + exec into the child's ru_maxrss, so a
    child of the bench (which holds TensorFlow, ~900 MB) would report the bench's memory, not its own."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024


def summary(times_ms: list[float]) -> dict:
    """Latency list -> {n, mean_ms, p50_ms, p95_ms, min_ms, max_ms, std_ms}."""
    a = np.asarray(times_ms, np.float64)
    if not len(a):
        return {"n": 0}
    return {
        "n": len(a),
        "mean_ms": float(a.mean()),
        "p50_ms": float(np.percentile(a, 50)),
        "p95_ms": float(np.percentile(a, 95)),
        "min_ms": float(a.min()),
        "max_ms": float(a.max()),
        "std_ms": float(a.std()),
    }


def five_figures(init, call, warmup_runs: int, min_runs: int, min_seconds: float, max_runs: int) -> dict:
    """benchmark_model's figures for any model: init() loads it, call() runs one inference.

    -> {init_ms, first_ms, warmup_ms (mean of warm-up runs), steady {n, mean_ms, p50_ms, p95_ms, ...},
        memory {baseline_mb, init_mb (RSS growth by init), overall_mb (RSS growth by the end),
        peak_mb (peak RSS growth)}}"""
    base = rss_mb()
    t0 = time.perf_counter()
    init()
    t1 = time.perf_counter()
    init_mem = rss_mb() - base
    call()
    t2 = time.perf_counter()
    warm = []
    for _ in range(warmup_runs):
        s = time.perf_counter()
        call()
        warm.append((time.perf_counter() - s) * 1e3)
    steady = [t * 1e3 for t in timed_calls(call, min_seconds, min_runs, max_runs)]
    return {
        "status": "ok",
        "init_ms": (t1 - t0) * 1e3,
        "first_ms": (t2 - t1) * 1e3,
        "warmup_ms": float(np.mean(warm)) if warm else None,
        "steady": summary(steady),
        "memory": {
            "baseline_mb": base,
            "init_mb": init_mem,
            "overall_mb": rss_mb() - base,
            "peak_mb": peak_rss_mb() - base,
        },
    }


# ---- tasks -----------------------------------------------------------------------------------------------
def step_inputs(batch: int, hidden: int, positions: int, feature_dim: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs of one decoder call for timing: `batch` rows of <bos> and zero state (a beam), one study's
    non-negative features (the encoder ends in ReLU) with one view present. Step latency does not depend on
    the values (no data-dependent control flow in the step graph)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((1, positions), np.float32)
    mask[:, : positions // 2 or positions] = 1.0
    return {
        "token": np.full((batch,), 1, np.int32),
        "h": np.zeros((batch, hidden), np.float32),
        "c": np.zeros((batch, hidden), np.float32),
        "features": np.abs(rng.normal(size=(1, positions, feature_dim))).astype(np.float32),
        "mask": mask,
    }


def sequence_inputs(shape: tuple, dtype: str, feature_dim: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs of one sequence-decoder call for timing: (B, L) prefixes of <bos> (id 1 stands for it: the values
    do not change the work of an unrolled step) padded in front, and B non-negative feature vectors."""
    rows, length = shape
    sequence = np.zeros((rows, length), dtype)
    sequence[:, -1] = 1
    features = np.abs(np.random.default_rng(seed).normal(size=(rows, feature_dim))).astype(np.float32)
    return {"sequence": sequence, "features": features}


def keras_reference(path: str):
    """-> make(eager) -> the Keras reference behind the runtime's protocols, its files loaded once: a run
    directory (training.keras_step.KerasBundle), or a bundle folder converted from a user's Keras captioner,
    whose manifest names that model (training.keras_sequence.KerasSequence)."""
    if (Path(path) / "manifest.json").is_file():
        from edgecap.convert.keras_import import load_reference, source_of_bundle

        src, why = source_of_bundle(path)
        if src is None:
            raise ValueError(why)
        ref = load_reference(src, log=lambda s: None)
        return ref.model
    from edgecap.training.keras_step import KerasBundle
    from edgecap.training.run_dir import load_model

    _, vocab, model = load_model(path)
    return lambda eager: KerasBundle(model, vocab, path, eager=eager)


BEAM_ROWS = 3  # Keras step timings use a beam-3 call, as the bundles' decoder_step (convert.pipeline.STEP_BATCH)


def task_model(t: dict) -> dict:
    """One .tflite file at t["threads"]: its input is a real prepared X-ray (encoder) or step_inputs (decoder)."""
    from edgecap.runtime.interpreter import SignatureModel

    holder: dict = {}
    path = Path(t["path"])

    def init():
        holder["m"] = m = SignatureModel.load(path, num_threads=t["threads"])
        feeds = {}
        for name, d in m.inputs.items():
            if name == "image":
                from edgecap.runtime import preprocess

                s = d["shape"][1]
                feeds[name] = preprocess.load(t["image"], s, t["mean"], t["std"])[None]
            else:
                feeds[name] = None
        if "sequence" in m.inputs:  # a sequence-input decoder: <bos> prefixes and one feature vector per row
            ins = m.inputs
            feeds = sequence_inputs(ins["sequence"]["shape"], ins["sequence"]["dtype"], ins["features"]["shape"][1])
            holder["rows"] = ins["sequence"]["shape"][0]
        elif any(v is None for v in feeds.values()):
            ins = m.inputs
            step = step_inputs(
                ins["token"]["shape"][0], ins["h"]["shape"][1], ins["features"]["shape"][1], ins["features"]["shape"][2]
            )
            feeds = {k: step[k] for k in ins}
            holder["rows"] = ins["token"]["shape"][0]
        for k, v in feeds.items():
            m.set(k, v)

    def call():
        holder["m"].invoke()

    r = t["runs"]
    out = five_figures(init, call, r["warmup"], r["min_runs"], r["min_seconds"], r["max_runs"])
    out["interpreter"] = holder["m"].package
    out["rows"] = holder.get("rows", 1)  # decoder: rows advanced per call (a beam of this size)
    return out


def task_keras(t: dict) -> dict:
    """Five figures of the Keras encoder and step, compiled (tf.function, traced at first call) and eager."""
    _tf_threads(t["threads"])
    t0 = time.perf_counter()
    base = rss_mb()
    make = keras_reference(t["run"])
    load_ms = (time.perf_counter() - t0) * 1e3
    out: dict = {"load_ms": load_ms, "load_mb": rss_mb() - base, "tensorflow": _tf_version()}
    for variant in ("compiled", "eager"):
        r = dict(t["runs"])
        if variant == "eager":  # 10-100x slower: fewer runs, same figures
            r = {**r, "min_runs": max(3, r["min_runs"] // 10), "max_runs": max(5, r["max_runs"] // 10)}
        out[f"{variant}_encoder"], out[f"{variant}_decoder_step"] = _keras_figures(
            make, variant == "eager", t["image"], r
        )
    return out


def _keras_figures(make, eager: bool, image_path: str, r: dict) -> tuple[dict, dict]:
    """Five figures of one Keras adapter (compiled or eager): its encoder on the prepared image (initialisation
    = building the adapter), then its decoder step on a beam-3 call of step_inputs or sequence_inputs (r's run
    counts x 5: a step is short)."""
    from edgecap.runtime import preprocess

    holder: dict = {}

    def init_enc():
        holder["b"] = make(eager)

    b0 = make(eager)
    image = preprocess.load(image_path, b0.image_size, b0.mean, b0.std)
    encoder = five_figures(
        init_enc, lambda: holder["b"].encode(image), r["warmup"], r["min_runs"], r["min_seconds"], r["max_runs"]
    )
    b = holder["b"]
    if getattr(b, "decoder_kind", "recurrent") == "sequence":
        x = sequence_inputs((BEAM_ROWS, b.sequence_length), "int32", b.info_.feature_dim)
        one = np.ones(1, np.float32)
        call = lambda: b.predict_next(x["sequence"], x["features"][:1], one)  # noqa: E731
    else:
        x = step_inputs(BEAM_ROWS, b.hidden_size, b.max_views * b.positions, b.model.cfg.encoder.feature_dim)
        feats, mask = x["features"][0], x["mask"][0]
        call = lambda: b.step(x["token"], x["h"], x["c"], feats, mask)  # noqa: E731
    step = five_figures(lambda: None, call, r["warmup"], r["min_runs"] * 5, r["min_seconds"], r["max_runs"] * 5)
    return encoder, {**step, "rows": BEAM_ROWS}


class Gate:
    """Turns shared with the other variants' report processes (benchmarks.processes.run_interleaved): wait()
    says "ready" on the gate's write pipe (the previous block is over) and blocks until the parent says "go".
    The parent lets one process run one block at a time, round-robin: every variant's reports are measured
    in the same minutes, so a machine that drifts (clock, other load) moves all of them alike. Without
    $EDGECAP_BENCH_GATE (a task run on its own) wait() returns at once."""

    def __init__(self, read_fd: int | None = None, write_fd: int | None = None):
        self.read_fd, self.write_fd = read_fd, write_fd

    @classmethod
    def from_env(cls) -> Gate:
        fds = os.environ.get("EDGECAP_BENCH_GATE")
        if not fds:
            return cls()
        r, w = (int(x) for x in fds.split(","))
        return cls(r, w)

    def wait(self) -> None:
        if self.read_fd is None or self.write_fd is None:
            return
        os.write(self.write_fd, b"r")
        if os.read(self.read_fd, 1) != b"g":  # the parent closed the pipe: it gave up on this process
            raise RuntimeError("the bench stopped interleaving this process")


def task_reports(t: dict) -> dict:
    """Whole reports through runtime.captioner.Captioner, on a bundle (t["bundle"]) or a Keras run
    (t["keras_run"], t["eager"]). -> init, first report, per-report latencies and stages, decode split, tokens."""
    keras = "keras_run" in t
    if keras:
        _tf_threads(t["threads"])
    from edgecap.runtime.captioner import Captioner

    base = rss_mb()
    turn = Gate.from_env()
    turn.wait()  # interleaved with the other variants' processes: one block at a time (Gate)
    t0 = time.perf_counter()
    if keras:
        captioner = Captioner(keras_reference(t["keras_run"])(t.get("eager", False)))
    else:
        captioner = Captioner.from_bundle(t["bundle"], num_threads=t["threads"])
    init_ms = (time.perf_counter() - t0) * 1e3
    init_mb = rss_mb() - base
    beam = t["beam"]
    # a one-view model (a user's Keras captioner) gets each study's frontal view only
    studies = [[f, lat if captioner.bundle.max_views > 1 else None] for f, lat in t["inputs"]]
    first = captioner.caption(studies[0][0], studies[0][1], beam=beam)  # first report: lazy allocations, tracing
    first_ms = first.timings["total_ms"]
    warm = [
        captioner.caption(frontal, lateral, beam=beam).timings["total_ms"]
        for frontal, lateral in studies[: t.get("warmup", 2)]
    ]
    rows: list[dict] = []
    totals: list[float] = []
    for frontal, lateral in studies:
        turn.wait()
        started = time.time()
        rep = captioner.caption(frontal, lateral, beam=beam)
        tm = rep.timings
        totals.append(tm["total_ms"])
        rows.append(
            {
                "started": started,  # wall clock: shows the turns taken with other variants (Gate)
                "tokens": rep.tokens,
                "text": rep.text,
                "total_ms": tm["total_ms"],
                "steps": tm["decoder_steps"],
                "flagged": rep.flagged,
                "stages": {
                    k: tm[k]
                    for k in ("read_ms", "sanity_ms", "preprocess_ms", "encoder_ms", "decoder_ms", "labeler_ms")
                },
            }
        )
    stages = {k: float(np.mean([r["stages"][k] for r in rows])) for k in rows[0]["stages"]}
    turn.wait()
    split = decode_split(captioner, studies[: t.get("split_inputs", 20)], beam, keras)
    return {
        "init_ms": init_ms,
        "init_mb": init_mb,
        "first_ms": first_ms,
        "warmup_ms": float(np.mean(warm)) if warm else None,
        "latency": summary(totals),
        "stages_mean_ms": stages,
        "decode_split": split,
        "reports": rows,
        "memory": {"overall_mb": rss_mb() - base, "peak_mb": peak_rss_mb() - base, "peak_rss_mb": peak_rss_mb()},
        "interpreter": captioner.bundle.info["interpreter"],
    }


def decode_split(captioner, studies, beam: int, keras: bool) -> dict:
    """Re-run reports with the decoder's calls timed: where the decode loop's time goes.

    interpreter_ms: inside invoke() (LiteRT) or the compiled graph call (Keras); tensor_io_ms: set_tensor /
    get_tensor copies (LiteRT only); python_ms: the rest of the loop (numpy log-softmax, beam bookkeeping,
    trigram blocking, argument conversion). Two passes over the same reports: one times invoke() alone (decode,
    interpreter and the overhead share), one also times every tensor call (tensor_io_ms; python_ms is what the
    first pass leaves). A timing wrapper adds ~0.7 us per call, counted outside the interpreter: one per step in
    the first pass, where timing all eight calls of a LiteRT step would overstate the share by ~3 points."""
    lean = _timed_pass(captioner, studies, beam, keras, tensor_io=False)
    io = 0.0 if keras else _timed_pass(captioner, studies, beam, keras, tensor_io=True)["io_ms"]
    total, interp = lean["decode_ms"], lean["interpreter_ms"]
    return {
        "reports": len(studies),
        "decode_ms": total,
        "interpreter_ms": interp,
        "tensor_io_ms": io,
        "python_ms": max(0.0, total - interp - io),
        "calls_per_report": lean["calls_per_report"],
        "steps_per_report": lean["steps_per_report"],
        "overhead_share": (total - interp) / total if total else None,
    }


def _timed_pass(captioner, studies, beam: int, keras: bool, tensor_io: bool) -> dict:
    """One pass of decode_split: the decoder's invoke() (or the Keras step) timed, with `tensor_io` its
    set_tensor / get_tensor as well; the wrappers are removed afterwards. Figures per report, ms."""
    b = captioner.bundle
    acc = {"interpreter": 0.0, "io": 0.0, "calls": 0}
    perf = time.perf_counter

    def timed(fn, key):
        def wrapper(*a, **k):
            s = perf()
            try:
                return fn(*a, **k)
            finally:
                acc[key] += perf() - s
                if key == "interpreter":
                    acc["calls"] += 1

        return wrapper

    if keras:
        call = "_predict" if getattr(b, "decoder_kind", "recurrent") == "sequence" else "_step"
        original = {call: getattr(b, call)}
        setattr(b, call, timed(getattr(b, call), "interpreter"))
        target = b
    else:
        target = b.decoder
        original = {"invoke": target.invoke}
        target.invoke = timed(target.invoke, "interpreter")
        if tensor_io:
            original.update(set_tensor=target.set_tensor, get_tensor=target.get_tensor)
            target.set_tensor = timed(target.set_tensor, "io")
            target.get_tensor = timed(target.get_tensor, "io")
    decode_ms = 0.0
    steps = 0
    try:
        for frontal, lateral in studies:
            rep = captioner.caption(frontal, lateral, beam=beam)
            decode_ms += rep.timings["decoder_ms"]
            steps += rep.timings["decoder_steps"]
    finally:
        for k, v in original.items():
            setattr(target, k, v)
    n = max(1, len(studies))
    return {
        "decode_ms": decode_ms / n,
        "interpreter_ms": acc["interpreter"] * 1e3 / n,
        "io_ms": acc["io"] * 1e3 / n,
        "calls_per_report": acc["calls"] / n,
        "steps_per_report": steps / n,
    }


def task_peak(t: dict) -> dict:
    from edgecap.benchmarks import throughput

    r = throughput.peak(t["peak"], t["threads"], t.get("seconds", 1.0))
    return {**r, "shape": list(r["shape"])}


def task_peer(t: dict) -> dict:
    """LiteRT file against ONNX Runtime model, per component (benchmarks.peers), at t["threads"]: the same inputs
    (a real image as the bundle prepares it; a beam-3 decoder step on its features), whole calls in alternating
    blocks LiteRT / ORT, t["runs"] each (_alternate) -> {"components": [{part, precision, row, litert_ms, ort_ms,
    ratio (ORT / LiteRT p50), litert_faster, runs}]}."""
    from edgecap.runtime.bundle import Bundle

    n, runs = t["threads"], t["runs"]
    out = []
    for c in t["components"]:
        b = Bundle.load(c["bundle"], num_threads=n)
        feeds = _peer_feeds(b, c["part"], t["image"])
        lite = partial(b.encoder if c["part"] == "encoder" else b.decoder, **feeds)
        # LiteRT's interpreter stays loaded across blocks; ORT gets a new session each block (_alternate)
        p50 = _alternate({"litert": lambda call=lite: call, "ort": partial(_ort_call, c["onnx"], n, feeds)}, runs)
        out.append(
            {
                "part": c["part"],
                "precision": c["precision"],
                "row": c["row"],
                "litert_ms": p50["litert"],
                "ort_ms": p50["ort"],
                "ratio": p50["ort"] / p50["litert"],
                "litert_faster": p50["litert"] < p50["ort"],
                "runs": runs,
            }
        )
    return {"components": out}


def _peer_feeds(b, part: str, image: str) -> dict[str, np.ndarray]:
    """The inputs of one call of `part`, by signature name: the image as the bundle prepares it (1, S, S, 3), or
    the first step of a beam-3 decode of its features (every row the start token, zero state)."""
    from edgecap.runtime.study import encode_study_files, prepare_views

    if part == "encoder":
        return {"image": np.ascontiguousarray(prepare_views(b, [image])[0][None], np.float32)}
    features, mask = encode_study_files(b, [image, None])
    return {
        **step_inputs(b.step_batch, b.hidden_size, *features.shape),
        "features": np.ascontiguousarray(features[None], np.float32),
        "mask": np.ascontiguousarray(mask[None], np.float32),
    }


def _ort_session(path: str, threads: int):
    """An ONNX Runtime CPU session as a user would tune it for latency: `threads` intra-op threads, one inter-op,
    sequential execution, every graph optimisation."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def _ort_call(path: str, threads: int, feeds: dict):
    """A whole ONNX Runtime call on a new session (_ort_session): every input fed, every output read."""
    sess = _ort_session(path, threads)
    names = [o.name for o in sess.get_outputs()]
    return lambda: sess.run(names, feeds)


def _alternate(blocks: dict, runs: int, block: int = 10) -> dict[str, float]:
    """Time the runtimes in alternating blocks of `block` calls (A-block B-block, B-block A-block, ...: neither
    always goes first), until each has `runs` timed calls -> p50 ms per name. `blocks` maps a name to a
    function that returns the call for one block: the ONNX Runtime one opens a new session each block, and the
    call is dropped, with its session and its threads, when the block ends. ONNX Runtime's intra-op threads keep
    spinning for up to seconds after a run (its default, for the next run's latency), so a session kept open
    across blocks takes a core from LiteRT's 2-thread calls on a 2-core machine: measured, LiteRT's 2-thread
    float32 decoder step 0.39-0.46 ms beside a kept session, 0.26-0.34 ms beside one closed after each block,
    as alone; ORT's own figures did not move. The first call of each block is a warm-up, not timed."""
    times: dict[str, list[float]] = {k: [] for k in blocks}
    order = list(blocks.items())
    k = 0
    while min(len(v) for v in times.values()) < runs:
        for name, open_block in order if k % 2 else order[::-1]:
            call = open_block()
            call()  # the block's warm-up: caches, and the other runtime's threads gone quiet
            times[name] += [s * 1e3 for s in timed_calls(call, 0.0, block, block)]
            del call  # an ONNX Runtime session and its spinning threads end with the block
        k += 1
    return {k: float(np.median(v)) for k, v in times.items()}


def _tf_threads(n: int) -> None:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(n)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def _tf_version() -> str:
    import tensorflow as tf

    return tf.__version__


TASKS = {"model": task_model, "keras": task_keras, "reports": task_reports, "peak": task_peak, "peer": task_peer}


def main(argv: list[str]) -> int:
    task_path, out_path = argv
    task = json.loads(Path(task_path).read_text())
    try:
        result = {"status": "ok", **TASKS[task["kind"]](task)}
    except Exception as e:  # noqa: BLE001 - reported as the variant's status, with the traceback kept
        result = {"status": "failed", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    result["tensorflow_imported"] = "tensorflow" in sys.modules
    Path(out_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
