"""Time the reference architectures of the device projection on THIS machine (docs/projection.md).

The published per-device figures in ``scripts/projection/device_ratios.json`` are latencies of
standard TFLite models (MobileNet V1 / V2 / V3 at 224 px, EfficientNet-Lite0). To turn them into
device / host ratios the same architectures must be timed here, through the same interpreter the bundles
run on (ai-edge-litert, default XNNPACK delegate). This script:

1. builds each reference model with Keras, ``weights=None`` (random initialisation). Latency does not
   depend on weight values: the same operators run on the same shapes whatever the numbers are (XNNPACK's
   own published tables use "randomized weights and inputs" for the same reason);
2. converts it to a float32 .tflite and to a full-int8 .tflite (int8 input / output, like the published
   ``*_quant`` models; calibrated on random data, which only sets the quantisation scales);
3. times each file with ai-edge-litert at 1 / 2 / 4 threads: ``--warmup`` invokes discarded, then the
   median (and p10 / p90) of ``--runs`` single invokes;
4. writes one JSON (``--out``) with the host CPU model (/proc/cpuinfo), core count, load average before and
   after, package versions and the date.

Usage (TensorFlow is needed to build and convert; the projection itself, projection/device_projection.py, never
imports it):

    python scripts/projection_reference.py --out scripts/projection/reference_host.json
    python scripts/projection_reference.py --models mobilenet_v2 --threads 1 --runs 20 --out /tmp/ref.json

Keep runs short on a shared machine; note that more threads than cores oversubscribe (the JSON says so).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

IMAGE_SIZE = 224

# name -> (description, published counterpart). MACs are counted from the converted file when possible.
MODELS: dict[str, tuple[str, str]] = {
    "mobilenet_v1_1.0_224": (
        "keras.applications.MobileNet(alpha=1.0), 1000 classes",
        "mobilenet_v1_1.0_224(.tflite / _quant.tflite), TF-slim",
    ),
    "mobilenet_v2_1.0_224": (
        "keras.applications.MobileNetV2(alpha=1.0), 1000 classes",
        "mobilenet_v2_1.0_224(.tflite / _quant.tflite), TF-slim",
    ),
    "mobilenet_v3_large_224": (
        "keras.applications.MobileNetV3Large(include_preprocessing=False)",
        "MobileNet v3 Large 1.0 224",
    ),
    "mobilenet_v3_small_224": (
        "keras.applications.MobileNetV3Small(include_preprocessing=False)",
        "MobileNet v3 Small 1.0 224",
    ),
    "efficientnet_lite0_224": (
        "edgecap.training.efficientnet_lite.build_efficientnet_lite0(include_top=True)",
        "efficientnet-lite0 (tensorflow/tpu), the architecture of edgecap's encoder",
    ),
    "resnet18_224": (
        "hand-built torchvision resnet18 layout (basic blocks [2, 2, 2, 2]), 'same' padding",
        "torchvision / microsoft resnet-18",
    ),
    "resnet50_224": (
        "hand-built ResNet-50 v1.5 (stride on the 3x3 conv, as torchvision / microsoft resnet-50)",
        "torchvision / microsoft resnet-50",
    ),
    "squeezenet1_1_224": (
        "hand-built torchvision squeezenet1_1 (valid max-pools give the same 55/27/13 maps)",
        "torchvision squeezenet1_1",
    ),
}
SHORT = {
    "mobilenet_v1": "mobilenet_v1_1.0_224",
    "mobilenet_v2": "mobilenet_v2_1.0_224",
    "mobilenet_v3_large": "mobilenet_v3_large_224",
    "mobilenet_v3_small": "mobilenet_v3_small_224",
    "efficientnet_lite0": "efficientnet_lite0_224",
    "resnet18": "resnet18_224",
    "resnet50": "resnet50_224",
    "squeezenet1_1": "squeezenet1_1_224",
}
DEFAULT_MODELS = (
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "efficientnet_lite0",
    "resnet18",
    "resnet50",
    "squeezenet1_1",
)


def _resnet(name: str, block: str, repeats: tuple[int, ...]):
    """torchvision's ResNet layout in Keras (BatchNorm folds into the convolutions at conversion)."""
    import keras
    from keras import layers

    def bn_relu(x, relu=True):
        x = layers.BatchNormalization(epsilon=1e-5)(x)
        return layers.ReLU()(x) if relu else x

    inp = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="image")
    x = bn_relu(layers.Conv2D(64, 7, 2, padding="same", use_bias=False)(inp))
    x = layers.MaxPooling2D(3, 2, padding="same")(x)
    c_in = 64
    for stage, n in enumerate(repeats):
        planes = 64 * 2**stage
        for i in range(n):
            stride = 2 if (i == 0 and stage > 0) else 1
            c_out = planes * (4 if block == "bottleneck" else 1)
            shortcut = x
            if stride != 1 or c_in != c_out:
                shortcut = bn_relu(layers.Conv2D(c_out, 1, stride, use_bias=False)(x), relu=False)
            if block == "basic":
                y = bn_relu(layers.Conv2D(planes, 3, stride, padding="same", use_bias=False)(x))
                y = bn_relu(layers.Conv2D(planes, 3, 1, padding="same", use_bias=False)(y), relu=False)
            else:  # v1.5 bottleneck: the stride sits on the 3x3 convolution
                y = bn_relu(layers.Conv2D(planes, 1, 1, use_bias=False)(x))
                y = bn_relu(layers.Conv2D(planes, 3, stride, padding="same", use_bias=False)(y))
                y = bn_relu(layers.Conv2D(c_out, 1, 1, use_bias=False)(y), relu=False)
            x = layers.ReLU()(layers.Add()([y, shortcut]))
            c_in = c_out
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(1000)(x)
    return keras.Model(inp, x, name=name)


def _squeezenet1_1():
    import keras
    from keras import layers

    def fire(x, squeeze, e1, e3):
        s_ = layers.Conv2D(squeeze, 1, activation="relu")(x)
        a = layers.Conv2D(e1, 1, activation="relu")(s_)
        b = layers.Conv2D(e3, 3, padding="same", activation="relu")(s_)
        return layers.Concatenate()([a, b])

    inp = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="image")
    x = layers.Conv2D(64, 3, 2, activation="relu")(inp)  # 111 x 111
    x = layers.MaxPooling2D(3, 2)(x)  # 55
    x = fire(x, 16, 64, 64)
    x = fire(x, 16, 64, 64)
    x = layers.MaxPooling2D(3, 2)(x)  # 27
    x = fire(x, 32, 128, 128)
    x = fire(x, 32, 128, 128)
    x = layers.MaxPooling2D(3, 2)(x)  # 13
    x = fire(x, 48, 192, 192)
    x = fire(x, 48, 192, 192)
    x = fire(x, 64, 256, 256)
    x = fire(x, 64, 256, 256)
    x = layers.Conv2D(1000, 1, activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, x, name="squeezenet1_1")


def build(name: str):
    """The Keras reference model with a static batch of 1 (as the published .tflite files have).

    A dynamic batch leaves SHAPE / STRIDED_SLICE / PACK ops in front of Keras MobileNet's reshape; they split the
    graph away from XNNPACK and change what is being timed.
    """
    import keras

    model = _build(name)
    inp = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), batch_size=1, name="image")
    return keras.Model(inp, model(inp), name=model.name)


def _build(name: str):
    import keras

    shape = (IMAGE_SIZE, IMAGE_SIZE, 3)
    if name == "mobilenet_v1_1.0_224":
        return keras.applications.MobileNet(input_shape=shape, alpha=1.0, weights=None, classes=1000)
    if name == "mobilenet_v2_1.0_224":
        return keras.applications.MobileNetV2(input_shape=shape, alpha=1.0, weights=None, classes=1000)
    if name == "mobilenet_v3_large_224":
        return keras.applications.MobileNetV3Large(
            input_shape=shape, weights=None, classes=1000, include_preprocessing=False
        )
    if name == "mobilenet_v3_small_224":
        return keras.applications.MobileNetV3Small(
            input_shape=shape, weights=None, classes=1000, include_preprocessing=False
        )
    if name == "efficientnet_lite0_224":
        from edgecap.training.efficientnet_lite import build_efficientnet_lite0

        return build_efficientnet_lite0(IMAGE_SIZE, include_top=True, weights=None)
    if name == "resnet18_224":
        return _resnet("resnet18", "basic", (2, 2, 2, 2))
    if name == "resnet50_224":
        return _resnet("resnet50_v1_5", "bottleneck", (3, 4, 6, 3))
    if name == "squeezenet1_1_224":
        return _squeezenet1_1()
    raise KeyError(name)


def convert(model, variant: str, calib: int, seed: int) -> bytes:
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if variant == "int8":
        rng = np.random.default_rng(seed)

        def representative():
            for _ in range(calib):
                yield [rng.uniform(-1.0, 1.0, (1, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.representative_dataset = representative
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    elif variant != "float32":
        raise ValueError(variant)
    # the converter prints a SavedModel listing to stdout (docs/toolchain.md): keep the log readable
    with contextlib.redirect_stdout(io.StringIO()):
        return conv.convert()


def open_interpreter(path: Path, threads: int, warmup: int, seed: int):
    """An allocated ai-edge-litert interpreter with its input set once, warmed up; (interp, init_ms, first_ms)."""
    from ai_edge_litert.interpreter import Interpreter

    t0 = time.perf_counter()
    interp = Interpreter(model_path=str(path), num_threads=threads)
    interp.allocate_tensors()
    init_ms = (time.perf_counter() - t0) * 1e3
    inp = interp.get_input_details()[0]
    rng = np.random.default_rng(seed)
    if inp["dtype"] == np.int8:
        x = rng.integers(-128, 128, inp["shape"], dtype=np.int8)
    else:
        x = rng.uniform(-1.0, 1.0, inp["shape"]).astype(inp["dtype"])
    interp.set_tensor(inp["index"], x)
    t0 = time.perf_counter()
    interp.invoke()
    first_ms = (time.perf_counter() - t0) * 1e3
    for _ in range(warmup):
        interp.invoke()
    return interp, init_ms, first_ms


def timed_batch(interp, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        interp.invoke()
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def wait_for_quiet(max_load: float | None, max_wait_s: float) -> float:
    """Wait (at most max_wait_s) until the 1-minute load average is below max_load; return the load seen."""
    load = os.getloadavg()[0]
    if max_load is None:
        return load
    deadline = time.monotonic() + max_wait_s
    while load >= max_load and time.monotonic() < deadline:
        time.sleep(5)
        load = os.getloadavg()[0]
    return load


def time_model(path: Path, threads: list[int], warmup: int, runs: int, rounds: int, seed: int) -> dict[int, dict]:
    """Time one .tflite at each thread count: `rounds` interleaved batches of `runs` invokes per thread count.

    The reported median is the lowest of the batch medians: on a shared machine other work only ever adds time,
    so the quietest batch is the best estimate of the model's own cost (all batch medians are kept too).
    """
    opened = {t: open_interpreter(path, t, warmup, seed) for t in threads}
    batches: dict[int, list[list[float]]] = {t: [] for t in threads}
    for _ in range(rounds):
        for t in threads:  # interleaved, so a burst of outside load does not hit one thread count only
            batches[t].append(timed_batch(opened[t][0], runs))
    out = {}
    for t in threads:
        medians = [float(np.median(b)) for b in batches[t]]
        best = batches[t][int(np.argmin(medians))]
        q = np.percentile(best, [10, 90])
        every = [v for b in batches[t] for v in b]
        out[t] = {
            "median_ms": round(min(medians), 3),
            "batch_medians_ms": [round(m, 3) for m in medians],
            "p10_ms": round(float(q[0]), 3),
            "p90_ms": round(float(q[1]), 3),
            "mean_all_ms": round(statistics.fmean(every), 3),
            "min_ms": round(min(every), 3),
            "first_ms": round(opened[t][2], 3),
            "init_ms": round(opened[t][1], 3),
            "runs": runs,
            "rounds": rounds,
            "warmup": warmup,
        }
    return out


def count_macs(data: bytes) -> int | None:
    try:  # optional: the bench's op counter (reads the flatbuffer, no TensorFlow)
        from edgecap.benchmarks.throughput import count_ops
    except Exception:  # noqa: BLE001 - the counter is a nicety, never a reason to fail the run
        return None
    try:
        return int(count_ops(data)["macs"])
    except Exception:  # noqa: BLE001
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_ids() -> dict:
    """x86 family / model / stepping from /proc/cpuinfo (a KVM guest often reports only a generic name)."""
    out = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("cpu family", "model", "stepping", "cpu mhz") and key.replace(" ", "_") not in out:
                out[key.replace(" ", "_")] = value.strip()
            if not line.strip() and out:
                break
    except OSError:
        pass
    return out


def cpu_flags() -> list[str]:
    wanted = {
        "avx2",
        "fma",
        "avx512f",
        "avx512_vnni",
        "avx_vnni",
        "amx_int8",
        "amx_bf16",
        "avx512_bf16",
        "avx512_fp16",
        "asimd",
        "asimddp",
        "i8mm",
        "sve",
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("flags", "features")):
                return sorted(wanted & set(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return []


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "numpy": np.__version__}
    for key, dists in (
        ("ai_edge_litert", ("ai-edge-litert",)),
        ("tensorflow", ("tensorflow", "tensorflow-cpu")),
        ("keras", ("keras",)),
    ):
        out[key] = None
        for dist in dists:
            try:
                out[key] = version(dist)
                break
            except PackageNotFoundError:
                continue
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma list of: " + ", ".join(SHORT))
    ap.add_argument("--variants", default="float32,int8")
    ap.add_argument("--threads", default="1,2,4")
    ap.add_argument("--runs", type=int, default=30, help="timed invokes per (model, variant, threads)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved batches per thread count; best median kept")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--calib", type=int, default=8, help="random calibration samples for int8")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--max-load",
        type=float,
        default=None,
        help="before timing each model, wait until the 1-minute load average is below this",
    )
    ap.add_argument("--max-wait", type=float, default=120, help="seconds to wait for --max-load at most")
    ap.add_argument("--keep", help="folder to keep the .tflite files in (default: a temporary folder)")
    ap.add_argument(
        "--merge",
        action="append",
        default=[],
        help="earlier output(s) of this script: per (model, variant, threads) the row with the lowest "
        "median is kept (outside load only adds time, so repeated passes converge on the quiet value)",
    )
    args = ap.parse_args(argv)

    models = [SHORT.get(m.strip(), m.strip()) for m in args.models.split(",") if m.strip()]
    for m in models:
        if m not in MODELS:
            ap.error(f"unknown model {m!r}; choose from {', '.join(SHORT)}")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    cores = os.cpu_count() or 1

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    started = _dt.datetime.now(_dt.timezone.utc)
    load_before = os.getloadavg()
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for name in models:
            t_build = time.perf_counter()
            model = build(name)
            params = int(model.count_params())
            for variant in variants:
                t0 = time.perf_counter()
                data = convert(model, variant, args.calib, args.seed)
                conv_s = time.perf_counter() - t0
                path = folder / f"{name}_{variant}.tflite"
                path.write_bytes(data)
                macs = count_macs(data)
                load = wait_for_quiet(args.max_load, args.max_wait)
                timings = time_model(path, threads, args.warmup, args.runs, args.rounds, args.seed)
                for t in threads:
                    r = timings[t]
                    row = {
                        "model": name,
                        "variant": variant,
                        "threads": t,
                        **r,
                        "loadavg_1min": round(load, 2),
                        "oversubscribed": t > cores,
                        "file_bytes": len(data),
                        "params": params,
                        "macs": macs,
                        "convert_s": round(conv_s, 1),
                    }
                    results.append(row)
                    print(
                        f"{name:24s} {variant:8s} {t} thr  median {r['median_ms']:8.2f} ms  "
                        f"(p10 {r['p10_ms']:.2f}, p90 {r['p90_ms']:.2f})",
                        flush=True,
                    )
            print(f"  {name}: {time.perf_counter() - t_build:.0f} s in all", flush=True)
            del model

    merged_from = []
    for prev_path in args.merge:
        prev = json.loads(Path(prev_path).read_text())
        merged_from.append(
            {
                "file": Path(prev_path).name,
                "generated_utc": prev.get("generated_utc"),
                "host": prev.get("host", {}).get("cpu_model"),
                "loadavg_before": prev.get("host", {}).get("loadavg_before"),
            }
        )
        merged_from.extend(prev.get("merged_passes", []))  # passes that file had merged in turn
        best = {(r["model"], r["variant"], r["threads"]): r for r in results}
        for r in prev.get("results", []):
            key = (r["model"], r["variant"], r["threads"])
            if key not in best or r["median_ms"] < best[key]["median_ms"]:
                best[key] = {"from_pass": prev.get("generated_utc"), **r}  # keep an older pass's own label
        results = sorted(
            best.values(),
            key=lambda r: (list(MODELS).index(r["model"]) if r["model"] in MODELS else 99, r["variant"], r["threads"]),
        )

    out = {
        "what": "Reference architectures timed on this host through ai-edge-litert (default XNNPACK delegate); "
        "the denominators of the device / host ratios in docs/projection.md.",
        "generated_utc": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "date": started.strftime("%Y-%m-%d"),
        "host": {
            "cpu_model": cpu_model(),
            **cpu_ids(),
            "machine": platform.machine(),
            "logical_cpus": cores,
            "cpu_flags": cpu_flags(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "versions": versions(),
        "method": {
            "weights": "random initialisation (weights=None); latency does not depend on weight values",
            "int8": "full integer (TFLITE_BUILTINS_INT8), int8 input/output, calibrated on "
            f"{args.calib} uniform[-1, 1] random images",
            "float32": "TFLiteConverter.from_keras_model, no optimisation",
            "timing": f"per thread count: {args.warmup} warm-up invokes discarded, then {args.rounds} interleaved "
            f"batches of {args.runs} single invokes (time.perf_counter around interpreter.invoke, input "
            "set once); median_ms is the lowest batch median (outside load only adds time), p10 / p90 "
            "are of that batch",
            "image_size": IMAGE_SIZE,
            "script": "scripts/projection_reference.py",
        },
        "models": {
            m: {"built_from": MODELS[m][0], "published_counterpart": MODELS[m][1]}
            for m in sorted({r["model"] for r in results}, key=lambda m: list(MODELS).index(m))
        },
        "merged_passes": merged_from,
        **(
            {
                "passes": f"{len(merged_from) + 1} passes of this script merged, keeping per (model, variant, "
                "threads) the row with the lowest median; from_pass names the pass a row comes from "
                "(absent: the last pass)"
            }
            if merged_from
            else {}
        ),
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
