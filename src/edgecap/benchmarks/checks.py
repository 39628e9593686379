"""`edgecap bench --check`: thresholds on a bench result, for CI or a release gate.

    --check "int8:identical>=0.95,int8:bleu4_drop<=0.01,int8:speedup>=5,int8:size_ratio<=0.3"
    --check targets            the project's targets (TARGETS below)

Each check is `[variant:]figure[@threads] OP number` with OP one of >=, <=, >, <. `variant` is a bundle's mode or
its row name (default: every bundle row); `@threads` picks the thread count of a per-thread figure (speedup,
python_share; default: the first measured). Figures (of a bundle row):

    identical      share of reports token-identical to the Keras model (drift)
    bleu4_drop     relative BLEU-4 drop against the Keras model: (keras - variant) / keras (0.01 = 1 % worse)
    label_agreement  share of (report, observation) labels equal to the Keras report's
    speedup        compiled-Keras whole-report p50 / this bundle's (measured interleaved: measure.py)
    size_ratio     bundle bytes / float32 bundle bytes (needs a float32 row)
    rss_mb         peak RSS of a TensorFlow-free `edgecap caption` process
    cold_start_ms  that process's start-to-exit time
    python_share   share of the decode loop spent outside the interpreter
    peer_speedup   ONNX Runtime p50 / this row's LiteRT p50 of the same component, the smallest over the
                   components timed against this row (benchmarks.peers): > 1 when LiteRT is faster on each

A figure that was not measured (failed variant, no float32 row, no Keras reference) FAILS its check, said so:
a gate must never pass because something did not run. Exit status: 0 all checks pass, 1 any fails.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass

# The targets of issue #15 (the table in docs/bench.md, `--check`): the int8 bundle's reports as good as
# Keras's, 6x / 7x faster than compiled Keras at 1 / 2 threads, under a third of float32's size, a decode loop
# that is mostly interpreter, a one-image `edgecap caption` that starts in 300 ms within 110 MB, and faster than
# ONNX Runtime (the peer row) on every component, float32 and int8, at 1 and 2 threads.
TARGETS = ",".join(
    [
        "int8:identical>=0.95",
        "int8:bleu4_drop<=0.01",
        "int8:speedup@1>=6",
        "int8:speedup@2>=7",
        "int8:size_ratio<=0.30",
        "int8:python_share@1<=0.25",
        "int8:cold_start_ms<=300",
        "int8:rss_mb<=110",
        "int8:peer_speedup@1>1",
        "int8:peer_speedup@2>1",
        "float32:peer_speedup@1>1",
        "float32:peer_speedup@2>1",
    ]
)
PER_THREAD = ("speedup", "python_share", "peer_speedup")

OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
FIGURES = (
    "identical",
    "bleu4_drop",
    "label_agreement",
    "speedup",
    "size_ratio",
    "rss_mb",
    "cold_start_ms",
    "python_share",
    "peer_speedup",
)
_CHECK = re.compile(
    r"^\s*(?:(?P<sel>[A-Za-z0-9_.#-]+)\s*:)?\s*(?P<fig>[a-z0-9_]+)(?:@(?P<threads>\d+))?\s*(?P<op>>=|<=|>|<)\s*"
    r"(?P<num>[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)\s*$"
)


class CheckSyntaxError(ValueError):
    """A --check string that cannot be parsed: a usage error (exit 2)."""


@dataclass(frozen=True)
class Check:
    selector: str | None
    figure: str
    op: str
    threshold: float
    threads: int | None = None

    def __str__(self) -> str:
        at = f"@{self.threads}" if self.threads is not None else ""
        return f"{self.selector + ':' if self.selector else ''}{self.figure}{at}{self.op}{self.threshold:g}"


def parse(spec: str) -> list[Check]:
    """'targets' or a comma-separated list of checks -> [Check]."""
    if spec.strip() == "targets":
        spec = TARGETS
    checks = []
    for part in [p for p in spec.split(",") if p.strip()]:
        m = _CHECK.match(part)
        if not m:
            raise CheckSyntaxError(
                f"cannot read check {part.strip()!r}: write [variant:]figure>=number, e.g. int8:identical>=0.95"
            )
        if m["fig"] not in FIGURES:
            raise CheckSyntaxError(f"unknown figure {m['fig']!r} in {part.strip()!r}: one of {', '.join(FIGURES)}")
        if m["threads"] is not None and m["fig"] not in PER_THREAD:
            raise CheckSyntaxError(f"{part.strip()!r}: only {', '.join(PER_THREAD)} are measured per thread count")
        threads = int(m["threads"]) if m["threads"] is not None else None
        checks.append(Check(m["sel"], m["fig"], m["op"], float(m["num"]), threads))
    if not checks:
        raise CheckSyntaxError("--check is empty")
    return checks


def figure(result: dict, v: dict, name: str, threads: int | None = None) -> float | None:
    """The value of one figure for one bundle row of a bench result (None: not measured); per-thread figures at
    `threads` (default: the first thread count measured)."""
    n = str(threads if threads is not None else result["settings"]["threads"][0])
    d = v.get("drift") or {}
    ratio = (result.get("ratios") or {}).get(v["name"], {})
    if name == "identical":
        return d.get("identical")
    if name == "bleu4_drop":
        rel = (d.get("relative") or {}).get("bleu4")
        return None if rel is None else -rel
    if name == "label_agreement":
        return (d.get("clinical") or {}).get("label_agreement")
    if name == "speedup":
        return ratio.get("speedup_vs_keras", {}).get(n)
    if name == "size_ratio":
        return ratio.get("size_vs_float32")
    if name in ("rss_mb", "cold_start_ms"):
        p = v.get("process") or {}
        if p.get("status") != "ok":
            return None
        return p["peak_rss_mb"] if name == "rss_mb" else p["cold_start_ms"]["p50_ms"]
    if name == "python_share":
        return ratio.get("python_share", {}).get(n)
    if name == "peer_speedup":
        return (ratio.get("vs_onnxruntime") or {}).get(n)
    raise KeyError(name)


def evaluate(result: dict, checks: list[Check]) -> list[dict]:
    """-> one entry per (check, matching bundle row): {check, variant, value, passed, note}."""
    rows = [v for v in result["variants"] if v["kind"] == "bundle"]
    out: list[dict] = []
    for c in checks:
        matched = [v for v in rows if c.selector is None or c.selector in (v["name"], v.get("mode"))]
        if not matched:
            out.append(
                {
                    "check": str(c),
                    "variant": c.selector,
                    "value": None,
                    "passed": False,
                    "note": "no bundle row matches this variant",
                }
            )
            continue
        for v in matched:
            value = figure(result, v, c.figure, c.threads) if v["status"] != "failed" else None
            passed = value is not None and OPS[c.op](value, c.threshold)
            note = _note(result, v, c, value)
            out.append({"check": str(c), "variant": v["name"], "value": value, "passed": passed, "note": note})
    return out


def _note(result: dict, v: dict, c: Check, value: float | None) -> str:
    """Why a figure is missing, or by how much a failed check misses its threshold."""
    if value is None:
        if v["status"] == "failed":
            return f"not measured ({v['status']}: {v.get('error')})"
        if c.threads is not None and c.threads not in result["settings"]["threads"]:
            return (
                f"not measured at {c.threads} thread(s) (--threads {','.join(map(str, result['settings']['threads']))})"
            )
        if c.figure == "peer_speedup":
            peer = (result.get("peers") or {}).get("onnxruntime") or {}
            if peer.get("status") != "ok":
                return f"not measured: the ONNX Runtime peer is {peer.get('status', 'absent')}: {peer.get('why', '')}"
        return "not measured"
    if OPS[c.op](value, c.threshold) or not c.threshold:
        return ""
    return f"misses by {abs(value - c.threshold) / abs(c.threshold):.0%} of the threshold"
