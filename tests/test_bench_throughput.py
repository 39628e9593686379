"""benchmarks.throughput: operation counts of the shipped bundle, the achieved-GOPS arithmetic, and the
cached peak microbenchmark (built with TensorFlow once, timed without it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecap.benchmarks import throughput
from edgecap.benchmarks.throughput import achieved, count_ops, peak_int8, peak_model_path

DEFAULT = Path(throughput.__file__).resolve().parents[1] / "resources" / "bundles" / "default"


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((DEFAULT / "manifest.json").read_text())


def _fc_macs_from_interpreter(path: Path) -> list[tuple[tuple[int, ...], tuple[int, ...], int]]:
    """Every FULLY_CONNECTED of a model as the interpreter (not the flatbuffer reader) sees it:
    (input shape, weight shape (out, in), MACs = input rows * in * out)."""
    from edgecap.runtime.interpreter import interpreter_class

    interp = interpreter_class()[0](model_path=str(path))
    interp.allocate_tensors()
    shapes = {d["index"]: tuple(int(s) for s in d["shape"]) for d in interp.get_tensor_details()}
    out = []
    for op in interp._get_ops_details():  # private but stable across tflite-runtime / LiteRT
        if op["op_name"] == "FULLY_CONNECTED":
            x, w = shapes[int(op["inputs"][0])], shapes[int(op["inputs"][1])]
            out.append((x, w, int(np.prod(x)) // w[1] * w[0] * w[1]))
    return out


def test_default_encoder_macs(manifest):
    counts = count_ops((DEFAULT / manifest["files"]["encoder"]["path"]).read_bytes())
    assert set(counts["by_op"]) == {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}
    assert counts["ops"] == 2 * counts["macs"]
    # EfficientNet-Lite0 at 224 px: ~384 M MACs to the 7x7x1280 map (docs/toolchain.md), plus the projection
    # to feature_dim, one FC over the P positions read from the model's own weight shape
    ((_, w, projection),) = _fc_macs_from_interpreter(DEFAULT / manifest["files"]["encoder"]["path"])
    dec = manifest["decoder"]
    assert w == (dec["feature_dim"], 1280) and projection == dec["positions_per_view"] * 1280 * dec["feature_dim"]
    assert counts["by_op"]["FULLY_CONNECTED"] == projection
    assert 380e6 <= counts["macs"] - projection <= 390e6
    assert 385e6 <= counts["macs"] <= 410e6
    # the default bundle's encoder is int8 with its most error-prone small layers in float32 (convert.modes): the
    # stem and a few early blocks run float kernels, ~10 % of the MACs
    assert manifest["files"]["encoder"]["precision"] == "int8"
    assert manifest["mode_settings"]["encoder"]["float_layers"] > 0
    assert 0.8 * counts["macs"] < counts["int8_macs"] < counts["macs"]


def test_default_decoder_step_macs(manifest):
    path = DEFAULT / manifest["files"]["decoder_step"]["path"]
    counts = count_ops(path.read_bytes())
    fcs = _fc_macs_from_interpreter(path)
    assert counts["by_op"] == {"FULLY_CONNECTED": sum(m for _, _, m in fcs)} and counts["layers"] == len(fcs)
    assert counts["int8_macs"] == counts["macs"]  # every matrix product of the int8 step runs int8
    # the same total from the architecture the manifest records: attention query H -> D and score D -> 1
    # over P positions, LSTM gates (E + D) -> 4H and H -> 4H, logits (H + D) -> V; per row, B rows per call
    d = manifest["decoder"]
    h, dim, p, v = d["hidden_size"], d["feature_dim"], d["attention_positions"], d["vocab_size"]
    e = manifest["source"]["config"]["decoder"]["embed_dim"]
    rows = manifest["files"]["decoder_step"]["inputs"]["token"]["shape"][0]
    assert counts["macs"] == rows * (h * dim + p * dim + (e + dim) * 4 * h + h * 4 * h + (h + dim) * v)


def test_achieved():
    assert achieved(800_000_000, 2.0) == pytest.approx(400.0)
    with pytest.raises(ValueError):
        achieved(1, 0.0)


@pytest.mark.tf
def test_peak_int8_builds_once_and_times(tmp_path, monkeypatch):
    shape = throughput.PEAK_SHAPES["int8"][0]
    monkeypatch.setitem(throughput.PEAK_SHAPES, "int8", (shape,))  # one shape keeps the test short
    first = peak_int8(1, seconds=0.2, cache_dir=tmp_path)
    assert first["gops"] > 0 and first["shape"] == shape and first["threads"] == 1
    rows, depth, units = shape
    assert first["macs"] == rows * depth * units
    cached = peak_model_path("int8", shape, tmp_path)
    counts = count_ops(cached.read_bytes())
    assert counts["int8_macs"] == counts["macs"] == rows * depth * units  # a fully int8 kernel

    def no_build(*args):
        raise AssertionError("the cached model was rebuilt")

    monkeypatch.setattr(throughput, "build_peak_model", no_build)
    stamp = cached.stat().st_mtime_ns
    second = peak_int8(1, seconds=0.2, cache_dir=tmp_path)
    assert second["gops"] > 0 and cached.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == [cached.name]  # no temporary files left


TF_FREE = r"""
import sys
sys.modules["tensorflow"] = None
sys.modules["keras"] = None
from pathlib import Path
from edgecap.benchmarks.throughput import time_model_bytes
r = time_model_bytes(Path(sys.argv[1]).read_bytes(), num_threads=1, seconds=0.1)
assert r["gops"] > 0 and r["runs"] >= 5, r
print("ok")
"""


def test_timing_needs_no_tensorflow(manifest):
    path = DEFAULT / manifest["files"]["decoder_step"]["path"]
    p = subprocess.run(
        [sys.executable, "-c", TF_FREE, str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr[-2000:]


def test_cpu_paths_name_the_gemm_family_an_edge_cpu_has():
    """The peak says which instruction family ran: the best the CPU's flags offer, AMX only where it exists."""
    from edgecap.benchmarks.throughput import cpu_paths

    assert cpu_paths({"avx2", "fma", "avx512f", "avx512_vnni", "amx_int8"})["int8"].startswith("AMX")
    assert cpu_paths({"avx2", "fma", "avx512f", "avx512_vnni"}) == {
        "int8": "AVX512-VNNI (int8 dot products, 512-bit)",
        "float32": "AVX-512 FMA",
    }
    assert cpu_paths({"avx2", "fma", "avx_vnni"})["int8"].startswith("AVX-VNNI")
    assert cpu_paths({"fp", "asimd", "asimddp"})["int8"].startswith("Arm dot product")  # Raspberry Pi 5
    assert cpu_paths({"fp", "asimd"})["int8"].startswith("Arm NEON without dot product")  # Raspberry Pi 4
    assert cpu_paths(set()) == {"int8": "unknown", "float32": "unknown"}
