"""Operators of a .tflite file, read from its flatbuffer (the schema module ai-edge-litert ships; no
TensorFlow). The converter stores the list in the manifest, so a device never needs to parse the model.

    ops = read_ops(path.read_bytes())      # {"CONV_2D": 3, "FULLY_CONNECTED": 9, ...} name -> highest version
    problems = op_problems(ops)            # [] when every op is a builtin a plain interpreter runs
    sizes = weights_per_output(data)       # {output tensor name: weights of the op that writes it}
"""

from __future__ import annotations

# Operators an edge bundle must not contain: Flex (TensorFlow kernels, no runtime here can run them),
# custom ops (need registration), control flow (the LSTM must be exported as one step, docs/toolchain.md).
FORBIDDEN = ("WHILE", "IF", "CALL_ONCE", "CUSTOM")


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # TensorFlow's copy of the same generated module
        from tensorflow.lite.python import schema_py_generated as schema
    return schema


def read_ops(data: bytes) -> dict[str, int]:
    """.tflite bytes -> {operator name: highest version used}. Custom ops are named "CUSTOM:<code>"
    (Flex ops: "CUSTOM:FlexXxx")."""
    schema = _schema()
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAs(bytearray(data), 0)
    ops: dict[str, int] = {}
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        # builtin codes above 127 live in BuiltinCode; older files only fill DeprecatedBuiltinCode
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        name = names.get(code, f"BUILTIN_{code}")
        if name == "CUSTOM":
            name = f"CUSTOM:{(oc.CustomCode() or b'').decode()}"
        ops[name] = max(ops.get(name, 0), oc.Version())
    return dict(sorted(ops.items()))


def weights_per_output(data: bytes) -> dict[str, int]:
    """.tflite bytes -> {output tensor name of each operator of the main graph: elements of its constant inputs
    (weights and biases)}. Selective quantization (convert.export) uses it to keep only small layers in float."""
    schema = _schema()
    model = schema.Model.GetRootAs(bytearray(data), 0)
    graph = model.Subgraphs(0)

    def constant(t) -> bool:  # data inside the flatbuffer, or beyond it (files over 2 GB: offset + size)
        b = model.Buffers(t.Buffer()) if t.Buffer() > 0 else None
        return b is not None and (b.DataLength() > 0 or b.Size() > 0)

    out: dict[str, int] = {}
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        n = 0
        for j in range(op.InputsLength()):
            k = op.Inputs(j)
            if k < 0:
                continue
            t = graph.Tensors(k)
            if constant(t):
                n += int(_elements(t))
        for j in range(op.OutputsLength()):
            out[graph.Tensors(op.Outputs(j)).Name().decode()] = n
    return out


def _elements(t) -> int:
    n = 1
    for d in range(t.ShapeLength()):
        n *= max(int(t.Shape(d)), 1)
    return n


def op_problems(ops: dict[str, int] | list[str]) -> list[str]:
    """Operators that would stop the bundle running on a plain LiteRT / tflite-runtime interpreter."""
    out = []
    for name in ops:
        if name.startswith("CUSTOM:Flex"):
            out.append(f"{name}: a Flex (SELECT_TF_OPS) op")
        elif name.split(":")[0] in FORBIDDEN:
            out.append(f"{name}: not allowed in an edge bundle")
    return out
