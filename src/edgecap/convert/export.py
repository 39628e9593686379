"""Keras export views -> .tflite bytes, builtin ops only (docs/toolchain.md, "Exporting the LSTM decoder").

    parts = export_views(model)                      # {"encoder": keras.Model, "decoder_step": keras.Model}
    data = convert_model(parts["decoder_step"], "int8", representative=lambda: iter(dicts))

Only `tf.lite.TFLiteConverter.from_keras_model` on the fixed-batch one-step model converts all four precisions
without WHILE or Flex ops (`model.export(format="litert")` silently enables Flex; concrete functions drop
Keras 3 weights). The converter prints a SavedModel listing to stdout: it is captured, not shown; its C++ lines
on stderr ("fully_quantize: 0, inference_type: 6, ..." per int8 calibration) go through
runtime.native_logs.native_stderr, which shows only its errors.
Needs TensorFlow.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import math
import warnings
from collections.abc import Callable, Iterator

from edgecap.convert.flatbuffer import weights_per_output
from edgecap.convert.modes import FLOAT_LAYER_MAX_WEIGHTS, PRECISIONS
from edgecap.runtime.native_logs import native_stderr
from edgecap.training.model import CaptionModel
from edgecap.training.tf_env import keras, tf

DEBUG_SAMPLES = 60  # calibration samples the quantization debugger measures each layer's error on


class ConversionError(RuntimeError):
    """The TFLite converter failed or produced a model an edge runtime cannot run."""


def export_views(model: CaptionModel, step_batch: int = 1) -> dict[str, keras.Model]:
    """The two models a bundle holds, with signature names the manifest records: encoder image (1, S, S, 3)
    -> {"features": (1, P, D)}; decoder_step as CaptionModel.step_model(step_batch) (fixed shapes: no
    dynamic-shape ops, the same op list for every batch)."""
    enc = model.encoder_model()
    encoder = keras.Model(enc.inputs, {"features": enc.outputs[0]}, name="encoder")
    return {"encoder": encoder, "decoder_step": model.step_model(step_batch)}


def convert_model(
    model: keras.Model,
    precision: str,
    representative: Callable[[], Iterator[dict]] | None = None,
    float_ops: tuple[str, ...] = (),
    float_layers: int = 0,
    log: Callable[[str], None] | None = None,
) -> bytes:
    """One Keras model -> .tflite bytes.

    Args:
        precision: float32 | float16 | dynamic | int8 (convert.modes.PRECISIONS).
        representative: int8 only: a function returning an iterator of dicts keyed by the model's input
            names (never lists: the converter's input order is not Keras's, and h / c share a shape).
        float_ops: int8 only: operator types to leave in float32 (selective quantization through
            tf.lite.experimental.QuantizationDebugger, which calibrates with the same representative data).
        float_layers: int8 only: also leave in float32 this many layers, those of largest own quantization
            error among the small ones (rank_layers); `log` gets their names.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}")
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # never SELECT_TF_OPS (Flex)
    if precision != "float32":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision == "float16":
        conv.target_spec.supported_types = [tf.float16]
    if precision == "int8":
        if representative is None:
            raise ValueError("int8 needs a representative dataset")
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.representative_dataset = representative
        # inputs and outputs stay float32: int8 h / c would need re-quantising between steps (docs/toolchain.md)
        conv.inference_input_type = conv.inference_output_type = tf.float32
    elif float_ops or float_layers:
        raise ValueError("float_ops and float_layers need precision int8")
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), native_stderr():
            warnings.simplefilter("ignore")  # the SavedModel listing (stdout), notices, the calibrator's C++ lines
            if float_ops or float_layers:
                return _selective_int8(conv, representative, float_ops, float_layers, log or (lambda s: None))
            return bytes(conv.convert())
    except Exception as e:  # the converter raises a variety of types (ConverterError, RuntimeError, ...)
        raise ConversionError(f"{model.name} ({precision}): {type(e).__name__}: {str(e)[-2000:]}") from e


def _selective_int8(
    conv, representative, float_ops: tuple[str, ...], float_layers: int, log: Callable[[str], None]
) -> bytes:
    """Calibrate once, then quantize every operator except the types in float_ops and the `float_layers` layers
    rank_layers picks (float32 I/O)."""
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # float kernels allowed for float_ops
    order: list[str] = []  # the quantized model's input names: the debugger feeds lists in that order

    def as_lists():  # the first DEBUG_SAMPLES calibration samples: rankings are stable from ~50 on
        for sample in itertools.islice(representative(), DEBUG_SAMPLES):
            yield [sample[name] for name in order]

    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(float_ops))
    debugger = tf.lite.experimental.QuantizationDebugger(converter=conv, debug_dataset=as_lists, debug_options=options)
    if float_layers:
        names = [d["name"] for d in tf.lite.Interpreter(model_content=debugger.quant_model).get_input_details()]
        keys = list(next(iter(representative())))
        order[:] = [_input_key(n, keys) for n in names]
        debugger.run()  # each layer's output against its float computation from the same inputs
        stats = io.StringIO()
        debugger.layer_statistics_dump(stats)
        # the debug model the statistics were taken on names the same layers: no extra quantization pass
        kept = rank_layers(stats.getvalue(), weights_per_output(debugger.quant_model))[:float_layers]
        if not kept:  # the statistics' tensor names matched no layer of the model: nothing would be kept
            raise ConversionError("selective quantization: no quantized layer with weights found to keep in float32")
        listed = ", ".join(map(_short, kept))
        log(f"converting with {len(kept)} layers kept in float32 (selective quantization): {listed}")
        debugger.options = tf.lite.experimental.QuantizationDebugOptions(
            denylisted_ops=list(float_ops), denylisted_nodes=kept
        )
    return bytes(debugger.get_nondebug_quantized_model())


def rank_layers(stats_csv: str, weights: dict[str, int], max_weights: int = FLOAT_LAYER_MAX_WEIGHTS) -> list[str]:
    """Output tensor names of the quantized layers, largest own quantization error first: rmse / scale of the
    layer's int8 output against its float computation from the same int8 inputs (the debugger's layer statistics;
    ~0.29, uniform rounding, for a well-quantized layer). Layers with more than max_weights weights are left out
    (each kept layer stores float32 weights), and so are those with no weights (reshapes, additions: keeping
    them in float32 moves no error)."""
    rows = []
    for r in csv.DictReader(io.StringIO(stats_csv)):
        name, scale = r["tensor_name"], float(r["scale"] or 0)
        if scale > 0 and 0 < weights.get(name, 0) <= max_weights:
            rows.append((math.sqrt(float(r["mean_squared_error"])) / scale, name))
    return [name for _, name in sorted(rows, key=lambda x: -x[0])]


def _input_key(tensor: str, keys) -> str:
    """The representative dict's key of an interpreter input ("serving_default_image:0" -> "image")."""
    base = tensor.split(":")[0].removeprefix("serving_default_")
    for k in keys:
        if k == base:
            return k
    raise ConversionError(f"input {tensor!r} is not one of the calibration samples' {sorted(keys)}")


def _short(name: str) -> str:
    """A converter tensor name's first path, without the outer model's name: "efficientnet_lite0_1/stem_relu6_1/
    Relu6" (the full names repeat every fused operation)."""
    return name.split(";")[0].split("/", 1)[-1]
