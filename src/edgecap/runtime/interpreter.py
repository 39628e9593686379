"""The TFLite interpreter, whichever is installed: ai-edge-litert (LiteRT), then tflite-runtime, then
TensorFlow's tf.lite (TensorFlow is imported only in that last fallback). Device-safe.

    model = SignatureModel.load("decoder_step_int8.tflite", num_threads=2)
    model.set("token", tokens); ...; model.invoke(); logits = model.get("logits")

Tensors are matched by signature name, never by position: the converter orders inputs its own way, and
h and c have the same shape, so a positional swap would run silently and wrongly (docs/toolchain.md).

Speed: a SignatureRunner call resizes and re-allocates every input on every call. A decoder runs ~60
steps per report (x beams), so `SignatureModel` resolves each signature name to its tensor index once and
then calls set_tensor / invoke / get_tensor directly (measured on the tiny step model: see
tests/test_bundle_runtime.py::test_step_overhead).

Quiet: LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." from C++ when a process's first
interpreter allocates its tensors, with no setting to turn it off; `load` runs creation and allocation inside
runtime.native_logs.native_stderr (~0.1 ms), which drops that line and shows any other (an error).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecap.runtime.native_logs import native_stderr


class InterpreterUnavailable(ImportError):
    """No TFLite interpreter is installed."""


INSTALL_HINT = "pip install ai-edge-litert (or tflite-runtime on older systems)"


def interpreter_class() -> tuple[type, str]:
    """-> (Interpreter class, package name) of the first interpreter that imports."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, "tflite-runtime"
    except ImportError:
        pass
    try:
        import tensorflow as tf

        return tf.lite.Interpreter, "tensorflow"
    except ImportError:
        pass
    raise InterpreterUnavailable(f"no TFLite interpreter found: {INSTALL_HINT}")


class SignatureModel:
    """The single signature of a .tflite model, inputs and outputs resolved by name once.

    Attributes:
        inputs / outputs: signature name -> {"index", "shape", "dtype"} as the interpreter reports them.
        package: the interpreter package ("ai-edge-litert", "tflite-runtime", "tensorflow").
    """

    def __init__(self, interpreter, package: str):
        self.interpreter, self.package = interpreter, package
        signatures = interpreter.get_signature_list()
        if len(signatures) != 1:
            raise ValueError(f"expected one signature, found {sorted(signatures)}")
        runner = interpreter.get_signature_runner(next(iter(signatures)))
        self.inputs = {k: _details(v) for k, v in runner.get_input_details().items()}
        self.outputs = {k: _details(v) for k, v in runner.get_output_details().items()}
        # The signature's tensors must be the primary subgraph's, which set_tensor / invoke / get_tensor act on.
        primary_in = {d["index"] for d in interpreter.get_input_details()}
        primary_out = {d["index"] for d in interpreter.get_output_details()}
        if {d["index"] for d in self.inputs.values()} != primary_in or {
            d["index"] for d in self.outputs.values()
        } != primary_out:
            raise ValueError("the signature does not run the primary subgraph")
        del runner  # a live runner holds the interpreter's buffers and blocks invoke()
        interpreter.allocate_tensors()
        self._in = {k: d["index"] for k, d in self.inputs.items()}
        self._out = {k: d["index"] for k, d in self.outputs.items()}
        # the interpreter's own bound methods, by tensor index: the fast path for loops (Bundle.step)
        self.set_tensor, self.get_tensor = interpreter.set_tensor, interpreter.get_tensor
        self.invoke = interpreter.invoke

    @classmethod
    def load(cls, model: str | Path | bytes, num_threads: int | None = None) -> "SignatureModel":
        """A .tflite path or its bytes -> SignatureModel on the first available interpreter (its info lines off)."""
        interp_cls, package = interpreter_class()
        source: dict[str, str | bytes] = (
            {"model_content": bytes(model)} if isinstance(model, (bytes, bytearray)) else {"model_path": str(model)}
        )
        with native_stderr():
            try:
                return cls(interp_cls(**source, num_threads=num_threads), package)
            except RuntimeError as e:
                if package != "ai-edge-litert" or "XNNPACK" not in str(e):
                    raise
            # XNNPACK refuses to prepare some int8 graphs that LiteRT's own kernels run (an int8 decoder step
            # with an unrolled Keras LSTM, convert.keras_import): the same file without the default delegate
            from ai_edge_litert.interpreter import OpResolverType

            plain = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            return cls(interp_cls(**source, num_threads=num_threads, experimental_op_resolver_type=plain), package)

    def index(self, name: str, output: bool = False) -> int:
        """Tensor index of a signature input (or output) name."""
        table = self._out if output else self._in
        if name not in table:
            raise KeyError(f"no {'output' if output else 'input'} {name!r}; the model has {sorted(table)}")
        return table[name]

    def set(self, name: str, value: np.ndarray) -> None:
        self.set_tensor(self._in[name], value)

    def get(self, name: str) -> np.ndarray:
        return self.get_tensor(self._out[name])

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        """All inputs by name -> all outputs by name (convenient, not the fast path)."""
        for name, value in inputs.items():
            self.set_tensor(self.index(name), value)
        self.invoke()
        return {name: self.get_tensor(i) for name, i in self._out.items()}


def _details(d: dict) -> dict:
    return {"index": int(d["index"]), "shape": tuple(int(s) for s in d["shape"]), "dtype": np.dtype(d["dtype"]).name}
