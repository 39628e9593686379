"""The bench's last stage: side-by-side ratios of one run's rows (the result's "ratios").

    ratios(rows) -> {bundle row name: {"speedup_vs_keras": {threads: x}, "size_vs_float32": x | None,
                                       "python_share": {threads: share}}}

speedup_vs_keras: compiled Keras whole-report p50 / the bundle's, per thread count both measured;
size_vs_float32: the bundle's bytes / the first float32 bundle row's; python_share: the decode loop's share
outside the interpreter (benchmarks.worker.decode_split). Failed rows get no entry.
"""

from __future__ import annotations

from edgecap.benchmarks.rows import Variant


def _p50(v: Variant, n: str) -> float | None:
    r = (v.report or {}).get(n)
    return r["latency"]["p50_ms"] if r else None


def ratios(rows: list[Variant], peers: dict | None = None) -> dict:
    """Each bundle row's speed-up over compiled Keras, size against float32, Python share and, where the ONNX
    Runtime peer timed components against the row (benchmarks.peers), the smallest ORT / LiteRT p50 ratio of
    those components per thread count ("vs_onnxruntime")."""
    keras = next((v for v in rows if v.reference), None)
    f32 = next((v for v in rows if v.mode == "float32" and v.status != "failed"), None)
    out = {}
    for v in rows:
        if v.kind != "bundle" or v.status == "failed":
            continue
        entry: dict = {"speedup_vs_keras": {}, "size_vs_float32": None, "python_share": {}}
        for n, figures in (v.report or {}).items():
            mine, theirs = _p50(v, n), _p50(keras, n) if keras else None
            if mine and theirs:
                entry["speedup_vs_keras"][n] = theirs / mine
            entry["python_share"][n] = figures["decode_split"]["overhead_share"]
        if f32 is not None and f32.size and v.size:
            entry["size_vs_float32"] = v.size["total_bytes"] / f32.size["total_bytes"]
        peer = (peers or {}).get("onnxruntime") or {}
        if peer.get("status") == "ok":
            entry["vs_onnxruntime"] = {
                n: min(c["ratio"] for c in mine)
                for n, comps in peer["threads"].items()
                if (mine := [c for c in comps if c["row"] == v.name])
            }
        out[v.name] = entry
    return out
