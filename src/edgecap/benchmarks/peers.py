"""ONNX Runtime as a peer row: the runtime a user would pick instead of LiteRT, on the same Keras reference.

    peer = measure_peer(plan, rows, inputs, log)   # -> the result's "peers"["onnxruntime"]

What is compared, per component and thread count, in alternating blocks of calls in one TensorFlow-free
process (task "peer" of benchmarks.worker, so machine drift moves both alike; each ORT block on a session of its
own, closed before LiteRT's block: worker._alternate): the LiteRT file of a bundle row and the ONNX Runtime model
of the same precision, both exported from the bench's Keras reference:

    component               LiteRT file                       ONNX Runtime model
    encoder float32         float32 row's encoder             tf2onnx export, opset 17
    encoder int8            int8 row's encoder                the export, quantize_static (QDQ, int8 weights
                                                              per channel, int8 activations, MinMax) on the
                                                              calibration images the converter uses
    decoder_step float32    float32 row's decoder step        tf2onnx export
    decoder_step int8       int8 row's decoder step           quantize_dynamic (MatMul / Gemm weights int8)

Why these ORT recipes (docs/toolchain.md, "ONNX Runtime"): they are ORT's fastest int8 paths for these graphs.
Static QDQ makes the decoder step ~5x slower than float (tf2onnx writes its LSTM as a Gemm with a non-constant
bias, whose DequantizeLinear ORT cannot fold), so the decoder gets dynamic quantization; the encoder's static
int8 drifts like LiteRT's full-int8 encoder. A call is the whole model call on both sides: every input set,
one run, every output read.

Optional: the `[peers]` extra (tf2onnx, onnx, onnxruntime). Without it, or for a reference that is not a run
directory, the row is {"status": "missing", "why": ...}. The ONNX files are built once per reference in the
bench cache (TensorFlow, this process), like the bundles.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from edgecap.benchmarks.processes import run_task
from edgecap.benchmarks.variants import cache_root

if TYPE_CHECKING:
    from edgecap.benchmarks.inputs import InputSet
    from edgecap.benchmarks.plan import Plan
    from edgecap.benchmarks.rows import Variant

PEER = "onnxruntime"
PACKAGES = ("tf2onnx", "onnx", "onnxruntime")
OPSET = 17
CALIBRATION_IMAGES = 50  # encoder calibration samples: the converter's recipe (real views, then augmented)
FORMAT = 1  # bump when the export or quantization recipe changes: cached ONNX files are rebuilt
# (part, precision): each is timed against the LiteRT file of the bundle row whose mode is that precision's name
COMPONENTS = (("encoder", "float32"), ("encoder", "int8"), ("decoder_step", "float32"), ("decoder_step", "int8"))


def missing() -> str | None:
    """Why the peer cannot be measured here (a package of the extra is not installed), or None."""
    absent = [p for p in PACKAGES if importlib.util.find_spec(p) is None]
    if absent:
        return f"{', '.join(absent)} not installed: pip install -e '.[peers]' adds the ONNX Runtime peer row"
    return None


def versions() -> dict[str, str]:
    return {p: metadata.version(p) for p in PACKAGES}


def measure_peer(plan: Plan, rows: list[Variant], inputs: InputSet, log: Callable[[str], None] = print) -> dict:
    """Build the ONNX models (cached) and time them against the bundle rows' LiteRT files -> the peer's entry."""
    why = missing()
    ref = plan.reference
    if why is None and (ref is None or ref.kind != "run"):
        why = "the ONNX export needs a Keras run as reference (--run)"
    # rows of the reference's own model only: a bundle converted from another model (drift_note) has other files
    bundles = {v.mode: v for v in rows if v.kind == "bundle" and v.status != "failed" and not v.drift_note}
    wanted = [(part, p) for part, p in COMPONENTS if p in bundles]
    if why is None and not wanted:
        why = "no float32 or int8 bundle row to compare with (modes float32 / int8)"
    if why is not None:
        log(f"peer {PEER}: missing: {why}")
        return {"status": "missing", "why": why}
    assert ref is not None
    try:
        files = build(ref.path, ref.weights_sha256, inputs, log)
    except Exception as e:  # noqa: BLE001 - an export or quantization failure is the peer's status
        log(f"peer {PEER}: failed: {type(e).__name__}: {e}")
        return {"status": "failed", "why": f"building the ONNX models: {type(e).__name__}: {str(e)[-500:]}"}
    out: dict = {"status": "ok", "versions": versions(), "opset": OPSET, "recipes": files["recipes"], "threads": {}}
    runs = 50 if plan.options.quick else 300
    for n in plan.threads:
        task = {
            "kind": "peer",
            "threads": n,
            "runs": runs,
            "image": inputs.inputs[0].frontal,
            "components": [
                {
                    "part": part,
                    "precision": p,
                    "bundle": str(bundles[p].folder),
                    "row": bundles[p].name,
                    "onnx": files[part][p],
                }
                for part, p in wanted
            ],
        }
        r = run_task(task, plan.options.timeout_s, tf_free=True)
        if r.get("status") != "ok":
            return {**out, "status": "failed", "why": f"timing at {n} thread(s): {r.get('error')}"}
        out["threads"][str(n)] = r["components"]
        log(
            f"peer {PEER} at {n} thread(s): "
            + ", ".join(
                f"{c['part']} {c['precision']} LiteRT {c['litert_ms']:.3f} / ORT {c['ort_ms']:.3f} ms"
                for c in r["components"]
            )
        )
    return out


def build(ref: Path, weights_sha256: str, inputs: InputSet, log: Callable[[str], None]) -> dict:
    """ONNX float32 and int8 models of the reference's encoder and decoder step, in the bench cache
    -> {"encoder": {"float32": path, "int8": path}, "decoder_step": {...}, "recipes": {...}}."""
    real = sorted({Path(i.frontal) for i in inputs.inputs if i.transform == "original"})
    key = json.dumps([weights_sha256, FORMAT, OPSET, versions(), [str(p) for p in real]])
    folder = cache_root() / "peers" / f"{PEER}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    done = folder / "built.json"
    if done.is_file():
        return json.loads(done.read_text())
    log(f"peer {PEER}: exporting the reference with tf2onnx and quantizing with ONNX Runtime ...")
    from edgecap.convert.calibration import ImagePrep
    from edgecap.convert.defaults import STEP_BATCH
    from edgecap.convert.export import export_views
    from edgecap.runtime.files import write_atomically
    from edgecap.training.run_dir import load_model

    cfg, _, model = load_model(ref)
    views = export_views(model, STEP_BATCH)
    folder.mkdir(parents=True, exist_ok=True)
    files: dict = {"encoder": {}, "decoder_step": {}}
    for part, keras_model in views.items():
        path = folder / f"{part}.onnx"
        path.write_bytes(export_onnx(keras_model))
        files[part]["float32"] = str(path)
    prep = ImagePrep(cfg, cfg.train.seed)
    images = [prep(p, k)[None] for k in range(CALIBRATION_IMAGES) for p in real][:CALIBRATION_IMAGES]
    files["encoder"]["int8"] = quantize_static(files["encoder"]["float32"], [{"image": x} for x in images])
    files["decoder_step"]["int8"] = quantize_dynamic(files["decoder_step"]["float32"])
    files["recipes"] = {
        "encoder_int8": f"quantize_static: QDQ, int8 weights per channel, int8 activations, MinMax over "
        f"{len(images)} images ({len(real)} real views, then augmented)",
        "decoder_step_int8": "quantize_dynamic: MatMul / Gemm weights int8, activations quantized per call",
    }
    write_atomically(done, json.dumps(files))
    return files


def export_onnx(keras_model) -> bytes:
    """Keras model (dict in, dict out) -> ONNX bytes whose inputs and outputs carry the Keras names.

    tf2onnx's from_keras names outputs after layers (h_out and c_out would be indistinguishable); a tf.function
    returning the model's dict makes from_function name each output by its key."""
    import tf2onnx

    from edgecap.training.tf_env import tf

    sig = [tf.TensorSpec(tuple(i.shape), i.dtype, name=i.name) for i in keras_model.inputs]
    names = [s.name for s in sig]

    @tf.function(input_signature=sig)
    def call(*args):
        return keras_model(dict(zip(names, args)), training=False)

    proto, _ = tf2onnx.convert.from_function(call, input_signature=sig, opset=OPSET)
    return proto.SerializeToString()


def _pre_processed(path: str) -> str:
    """ORT's quantization pre-processing (graph optimisation); symbolic shape inference skipped: onnxruntime
    1.32 no longer installs sympy, and every shape here is static."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = str(Path(path).with_suffix(".pre.onnx"))
    quant_pre_process(path, pre, skip_symbolic_shape=True)
    return pre


def quantize_static(path: str, feeds: list[dict]) -> str:
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    out = str(Path(path).with_suffix(".int8.onnx"))
    ort_quantize_static(
        _pre_processed(path),
        out,
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        calibrate_method=CalibrationMethod.MinMax,
    )
    return out


def quantize_dynamic(path: str) -> str:
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    out = str(Path(path).with_suffix(".int8.onnx"))
    ort_quantize_dynamic(
        _pre_processed(path), out, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"]
    )
    return out
