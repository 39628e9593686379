"""How close a model runs to this CPU's limit: operations counted from a .tflite file, against the peak
dense throughput of the same CPU measured through the same interpreter in the same run (`edgecap bench`).

    counts = count_ops(Path("encoder_int8.tflite").read_bytes())  # {"macs": 3.9e8, "ops": 7.8e8, ...}
    gops = achieved(counts["ops"], latency_ms=2.4)                 # what the encoder reaches
    peak = peak_int8(num_threads=2)                                # {"gops": ..., "median_ms": ..., ...}
    share = gops / peak["gops"]

What the figures mean:
- One multiply-accumulate (MAC) is two operations. Only CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED and
  BATCH_MATMUL are counted (from tensor shapes); element-wise ops, pooling, softmax, quantize / dequantize
  are not. "int8_macs" are the MACs of ops whose activation input is INT8; a float16 or dynamic-range model
  has none (its float16 weights are expanded to float32 at load and run on float32 kernels).
- The peak is one large dense int8 (or float32) matrix product through LiteRT with its default XNNPACK
  delegate: the best this CPU gives for compute-bound work, not a datasheet number (on a CPU with AMX or
  VNNI, XNNPACK's int8 GEMM uses them; the float32 peak is ~10x lower). It is built once with TensorFlow
  and cached as .tflite bytes; timing needs only the interpreter.

Limits:
- A real encoder cannot reach the dense peak: EfficientNet-Lite's depthwise convolutions do ~9 MACs per
  activation loaded and are memory-bound, and small late-stage maps (7x7) leave threads little to share.
  A low achieved / peak ratio is what the model's shape predicts, not by itself a defect of the runtime.
- The peak model has int8 input and output; a bundle encoder has float32 I/O, whose QUANTIZE / DEQUANTIZE
  time is in its latency but not in its counted operations.
- The peak is measured on whatever else the machine is doing: on a busy machine both numbers drop, and
  two-thread timings vary up to ~35 % between runs (docs/toolchain.md). Compare numbers from the same run.
- More threads than cores oversubscribe: the threads time-slice and throughput flattens or falls.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgecap.convert.flatbuffer import _schema
from edgecap.runtime.files import write_atomically

COUNTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL")

# (rows, in, out) of the peak models' one dense layer: a (rows, in) input times an (in, out) kernel.
# in = out >= 1024 keeps it compute-bound (>= 1024 MACs per value loaded); peak() times each candidate
# and keeps the best. Measured here (x86_64 with AMX, LiteRT 2.3, 1 thread): int8 512x1024x1024 ~1.5 TOPS,
# 512x2048x2048 ~1.6, 512x4096x4096 ~1.1 (the 16 MB kernel leaves the cache); float32 ~130 GOPS
# for both candidates (1 thread, quiet machine).
PEAK_SHAPES: dict[str, tuple[tuple[int, int, int], ...]] = {
    "int8": ((512, 1024, 1024), (512, 2048, 2048)),
    "float32": ((256, 1024, 1024), (512, 512, 512)),
}
CACHE_FORMAT = 1  # bump when build_peak_model changes, so stale cached models are not reused


# ---------------------------------------------------------------------------------------------- counting


def count_ops(tflite_bytes: bytes) -> dict:
    """Multiply-accumulates of one invoke of subgraph 0 of a .tflite model, from its tensor shapes.

    Returns:
        {"macs": int, "ops": 2 * macs, "by_op": {op name: macs}, "int8_macs": MACs of ops whose
         activation input (input 0) is INT8, "layers": number of counted operators}.
    The whole invoke is counted: a batch of B images counts B times the MACs of one.
    """
    schema = _schema()
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAs(bytearray(tflite_bytes), 0)
    graph = model.Subgraphs(0)
    by_op: dict[str, int] = {}
    int8 = layers = 0
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "")
        if name not in COUNTED:
            continue
        macs = _op_macs(schema, graph, op, name)
        by_op[name] = by_op.get(name, 0) + macs
        layers += 1
        if graph.Tensors(int(op.Inputs(0))).Type() == schema.TensorType.INT8:
            int8 += macs
    total = sum(by_op.values())
    return {"macs": total, "ops": 2 * total, "by_op": dict(sorted(by_op.items())), "int8_macs": int8, "layers": layers}


def _shape(graph, index: int) -> tuple[int, ...]:
    """Static shape of a tensor (the converter stores dynamic dimensions as 1 here, -1 in the signature)."""
    t = graph.Tensors(int(index))
    return tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()


def _op_macs(schema, graph, op, name: str) -> int:
    """MACs of one counted operator. Weight layouts (TFLite): CONV_2D (out_c, k_h, k_w, in_c / groups);
    DEPTHWISE_CONV_2D (1, k_h, k_w, out_c); FULLY_CONNECTED (out, in), input flattened to (rows, in)."""
    out = _shape(graph, op.Outputs(0))
    if name == "CONV_2D":  # (B, H, W, out_c) outputs, each k_h * k_w * in_c MACs
        _, k_h, k_w, in_c = _shape(graph, op.Inputs(1))
        return int(np.prod(out)) * k_h * k_w * in_c
    if name == "DEPTHWISE_CONV_2D":  # each output channel reads one input channel
        _, k_h, k_w, _ = _shape(graph, op.Inputs(1))
        return int(np.prod(out)) * k_h * k_w
    if name == "FULLY_CONNECTED":
        units, depth = _shape(graph, op.Inputs(1))
        rows = int(np.prod(_shape(graph, op.Inputs(0)))) // depth
        return rows * depth * units
    # BATCH_MATMUL: (..., M, K) x (..., K, N) -> (..., M, N); K from the first input, transposed if adj_x
    a = _shape(graph, op.Inputs(0))
    depth = a[-1]
    table = op.BuiltinOptions()
    if table is not None and op.BuiltinOptionsType() == schema.BuiltinOptions.BatchMatMulOptions:
        opts = schema.BatchMatMulOptions()
        opts.Init(table.Bytes, table.Pos)
        depth = a[-2] if opts.AdjX() else a[-1]
    return int(np.prod(out)) * depth


def achieved(encoder_ops: int, latency_ms: float) -> float:
    """Operations per invoke and the measured time of one invoke -> achieved GOPS (1e9 operations / s)."""
    if latency_ms <= 0:
        raise ValueError(f"latency must be positive, got {latency_ms} ms")
    return encoder_ops / (latency_ms * 1e-3) / 1e9


# ------------------------------------------------------------------------------------------------ timing


def time_model_bytes(data: bytes, num_threads: int, seconds: float = 1.0) -> dict:
    """Time invokes of a .tflite model on random inputs. Needs only a TFLite interpreter (no TensorFlow).

    Warms up (first invokes pay XNNPACK packing and page faults), then invokes for about `seconds` (at
    least 5 times) and keeps the median, which a busy machine disturbs less than the mean.
    Returns {"gops", "macs", "ops", "median_ms", "min_ms", "runs", "threads", "interpreter"}; gops from
    the median.
    """
    interp, package = _interpreter(data, num_threads)
    rng = np.random.default_rng(0)
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], _random_input(rng, tuple(d["shape"]), np.dtype(d["dtype"])))
    timed_calls(interp.invoke, max(0.1, 0.2 * seconds), min_runs=2)  # warm-up
    times = timed_calls(interp.invoke, seconds, min_runs=5)
    ops = count_ops(data)
    median_ms = statistics.median(times) * 1e3
    return {
        "gops": achieved(ops["ops"], median_ms),
        "macs": ops["macs"],
        "ops": ops["ops"],
        "median_ms": median_ms,
        "min_ms": min(times) * 1e3,
        "runs": len(times),
        "threads": num_threads,
        "interpreter": package,
    }


def _interpreter(data: bytes, num_threads: int):
    """-> (allocated interpreter, package name) from the runtime's own choice (ai-edge-litert first)."""
    from edgecap.runtime.interpreter import interpreter_class

    Interpreter, package = interpreter_class()
    interp = Interpreter(model_content=bytes(data), num_threads=num_threads)
    interp.allocate_tensors()
    return interp, package


def _random_input(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -128), min(info.max, 127), size=shape, endpoint=True).astype(dtype)


def timed_calls(call, min_seconds: float, min_runs: int, max_runs: int | None = None) -> list[float]:
    """Call until `min_seconds` have passed and at least `min_runs` calls were made (at most `max_runs`)
    -> seconds per call. The one timing loop of the bench (also worker.five_figures' steady state)."""
    times: list[float] = []
    start = time.perf_counter()
    while (max_runs is None or len(times) < max_runs) and (
        len(times) < min_runs or time.perf_counter() - start < min_seconds
    ):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return times


# ------------------------------------------------------------------------------------------- peak models


def build_peak_model(kind: str, shape: tuple[int, int, int]) -> bytes:
    """One dense layer, a (rows, in) input times an (in, out) kernel, no bias -> .tflite bytes.
    Needs TensorFlow (imported here, not at module import).

    kind "int8": full int8 with int8 input and output, so the file is a single int8 FULLY_CONNECTED.
    Float32 I/O would add QUANTIZE / DEQUANTIZE of rows * (in + out) values: measured here they halved
    the figure at in = out = 1024, and a peak must time the GEMM, not the conversions. Calibrated on
    random normal inputs (the values do not change the speed). kind "float32": plain float32.
    """
    if kind not in PEAK_SHAPES:
        raise ValueError(f"unknown kind {kind!r}; expected one of {sorted(PEAK_SHAPES)}")
    import contextlib
    import io
    import warnings

    import keras
    import tensorflow as tf

    rows, depth, units = shape
    keras.utils.set_random_seed(0)
    x = keras.Input(shape=(depth,), batch_size=rows, name="x")
    model = keras.Model(x, keras.layers.Dense(units, use_bias=False, name="dense")(x), name=f"peak_{kind}")
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if kind == "int8":
        rng = np.random.default_rng(0)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.representative_dataset = lambda: (
            {"x": rng.standard_normal((rows, depth)).astype(np.float32)} for _ in range(4)
        )
        conv.inference_input_type = conv.inference_output_type = tf.int8
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # SavedModel listing, notices
        warnings.simplefilter("ignore")
        return bytes(conv.convert())


def cache_folder(cache_dir: Path | None = None) -> Path:
    """Where peak models are kept: cache_dir, else the bench cache (variants.cache_root)."""
    from edgecap.benchmarks.variants import cache_root

    return Path(cache_dir) if cache_dir is not None else cache_root()


def peak_model_path(kind: str, shape: tuple[int, int, int], cache_dir: Path | None = None) -> Path:
    rows, depth, units = shape
    return cache_folder(cache_dir) / f"peak_{kind}_{rows}x{depth}x{units}_v{CACHE_FORMAT}.tflite"


def peak_model_bytes(kind: str, shape: tuple[int, int, int], cache_dir: Path | None = None) -> bytes:
    """The cached peak model, built (TensorFlow) and written on first use. Run this where TensorFlow is
    installed; afterwards a process without it can time the cached file with time_model_bytes."""
    path = peak_model_path(kind, shape, cache_dir)
    if path.is_file():
        return path.read_bytes()
    data = build_peak_model(kind, shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, data)  # a concurrent reader never sees half a file
    return data


def peak(
    kind: str,
    num_threads: int,
    seconds: float = 1.0,
    cache_dir: Path | None = None,
    shapes: Sequence[tuple[int, int, int]] | None = None,
) -> dict:
    """Peak dense throughput of this CPU for `kind` ("int8" | "float32"): every candidate shape timed for
    `seconds`, the highest GOPS kept. -> time_model_bytes's dict plus "shape", "kernel", "tried"."""
    best: dict | None = None
    tried: dict[str, float] = {}
    for shape in shapes or PEAK_SHAPES[kind]:
        result = time_model_bytes(peak_model_bytes(kind, shape, cache_dir), num_threads, seconds)
        label = "x".join(map(str, shape))
        tried[label] = round(result["gops"], 1)
        if best is None or result["gops"] > best["gops"]:
            rows, depth, units = shape
            best = {
                **result,
                "shape": tuple(shape),
                "kernel": f"{kind} FULLY_CONNECTED ({rows}, {depth}) x ({depth}, {units}), {kind} I/O",
            }
    if best is None:
        raise ValueError("no shapes to try")
    return {**best, "tried": tried}


# The matrix-multiply instructions a CPU's flags name, best first (what XNNPACK's int8 / float32 GEMMs pick at
# run time: it reads the same CPU features and uses the best microkernel family it has for them).
_INT8_PATHS = (
    ("amx_int8", "AMX (Intel tile matrix units: server Xeons only, no edge device has them)"),
    ("avx512_vnni", "AVX512-VNNI (int8 dot products, 512-bit)"),
    ("avx_vnni", "AVX-VNNI (int8 dot products, 256-bit: recent Intel Core / Atom)"),
    ("avx2", "AVX2 (no int8 dot-product instruction: multiply + add pairs)"),
    ("i8mm", "Arm I8MM (int8 matrix multiply: Cortex-A510 / A710 and later)"),
    ("asimddp", "Arm dot product (SDOT: Cortex-A55 / A76, Raspberry Pi 5)"),
    ("asimd", "Arm NEON without dot product (Cortex-A53 / A72, Raspberry Pi 3 / 4)"),
)
_FLOAT_PATHS = (("avx512f", "AVX-512 FMA"), ("fma", "AVX2 FMA"), ("asimd", "Arm NEON FMA"))


def cpu_paths(flags: set[str] | None = None) -> dict[str, str]:
    """The GEMM instruction family this CPU offers per precision, from its feature flags (/proc/cpuinfo on
    Linux; "unknown" elsewhere): the kernel path the peak and the encoders ran on. An edge CPU's int8 peak
    follows its own row of _INT8_PATHS: a Raspberry Pi 5 has SDOT, a Pi 4 plain NEON, none has AMX."""
    if flags is None:
        flags = _cpu_flags()
    found = {}
    for kind, table in (("int8", _INT8_PATHS), ("float32", _FLOAT_PATHS)):
        found[kind] = next((name for flag, name in table if flag in flags), "unknown")
    return found


def _cpu_flags() -> set[str]:
    return set((cpuinfo_field("flags", "Features") or "").split())  # x86 / Arm


def cpuinfo_field(*keys: str) -> str | None:
    """The value of the first line of /proc/cpuinfo whose key is one of `keys` (None: no such line, or no
    /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in keys:
            return value.strip()
    return None


def peak_int8(num_threads: int, seconds: float = 1.0, cache_dir: Path | None = None) -> dict:
    """Peak dense int8 throughput through LiteRT + XNNPACK (see peak)."""
    return peak("int8", num_threads, seconds, cache_dir)


def peak_float32(num_threads: int, seconds: float = 1.0, cache_dir: Path | None = None) -> dict:
    """Peak dense float32 throughput, the reference for float32 and float16 encoders (float16 weights run
    on float32 kernels)."""
    return peak("float32", num_threads, seconds, cache_dir)
