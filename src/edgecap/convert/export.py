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
import io
import warnings
from collections.abc import Callable, Iterator

from edgecap.convert.modes import PRECISIONS
from edgecap.runtime.native_logs import native_stderr
from edgecap.training.model import CaptionModel
from edgecap.training.tf_env import keras, tf


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
) -> bytes:
    """One Keras model -> .tflite bytes.

    Args:
        precision: float32 | float16 | dynamic | int8 (convert.modes.PRECISIONS).
        representative: int8 only: a function returning an iterator of dicts keyed by the model's input
            names (never lists: the converter's input order is not Keras's, and h / c share a shape).
        float_ops: int8 only: operator types to leave in float32 (selective quantization through
            tf.lite.experimental.QuantizationDebugger, which calibrates with the same representative data).
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
    elif float_ops:
        raise ValueError("float_ops needs precision int8")
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), native_stderr():
            warnings.simplefilter("ignore")  # the SavedModel listing (stdout), notices, the calibrator's C++ lines
            if float_ops:
                return _selective_int8(conv, representative, float_ops)
            return bytes(conv.convert())
    except Exception as e:  # the converter raises a variety of types (ConverterError, RuntimeError, ...)
        raise ConversionError(f"{model.name} ({precision}): {type(e).__name__}: {str(e)[-2000:]}") from e


def _selective_int8(conv, representative, float_ops: tuple[str, ...]) -> bytes:
    """Calibrate as usual, then quantize every operator except the types in float_ops (float32 I/O)."""
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # float kernels allowed for float_ops
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(float_ops))
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=conv, debug_dataset=representative, debug_options=options
    )
    return bytes(debugger.get_nondebug_quantized_model())
