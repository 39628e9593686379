"""Project bundle latencies measured on this machine to a Raspberry Pi 4 / 5 and mid-range Android CPUs.

This is a PROJECTION, NOT A MEASUREMENT. It is first-order: one ratio per device, taken from standard models.
It lives beside its generator, scripts/projection_doc.py (docs/projection.md), not in the edgecap package: no
device or command of edgecap needs it. Import it with this folder on sys.path, or run it:

    python scripts/projection/device_projection.py measured.json [--json]

    from device_projection import project, render_markdown
    measured = {"label": "default int8 bundle", "figures": [
        {"name": "encoder", "precision": "int8", "threads": 2, "ms": 8.0},
        {"name": "decoder_step", "precision": "int8", "threads": 1, "ms": 0.28},
        {"name": "report_greedy_p50", "precision": "int8", "threads": 2, "ms": 21.0},
    ]}
    print(render_markdown(project(measured)))

Method (docs/projection.md):
- ``device_ratios.json`` (in this folder) holds published CPU latencies of standard models (MobileNet V1 / V2 /
  V3, ResNet, SqueezeNet, EfficientNet-Lite0) on each device, each with its source. ``reference_host.json`` holds
  the same architectures timed on this host through ai-edge-litert (``scripts/projection_reference.py``).
- For a figure measured here with precision p at t threads, each published figure of the same precision on a
  device gives ``ratio = device_ms / host_ms(same model, same precision, t threads)``; of several thread counts
  published for one model on one device, the one nearest t is used. The device ratio is the geometric mean
  over models; min..max is kept as the range. ``projected = measured x ratio``, at the device's thread count.
- A device with no published figure of precision p falls back to the other precision, with a note.
- Figures that do not speed up with threads (the decoder step and anything containing the decode loop),
  measured with fewer threads than the device figures used (k = device_threads / host_threads > 1): the
  upper bound assumes the device's extra threads give nothing (ratio_max x k), the lower bound that they
  give their full gain (ratio_min), and the central value sits halfway on a log scale (ratio x sqrt(k)).

Why first-order (caveats, repeated in the rendered page):
- Ratios differ across op mixes: depthwise convolutions are memory-bound, dense convolutions and the LSTM's
  matrix products are compute-bound; one device's ratio spread over models (the min..max) shows how much.
- The decode loop is ~60 small invokes plus Python per report: its cost follows single-core scalar speed and
  interpreter call overhead, not SIMD throughput, which the reference models measure.
- The Raspberry Pi 4 throttles when hot (published figures are short runs); phones and tablets too.
- Memory bandwidth and caches differ far more than core counts (the host has a 300 MB L3).
- Published figures come from other runtimes and years (TFLite 1.x/2.x kernels, ExecuTorch, raw XNNPACK)
  than the host's LiteRT; int8 figures of the older sources are uint8 quantization-aware models.

No TensorFlow and no edgecap import here: the module reads two JSON files and does arithmetic (stdlib only).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = [
    "CAVEATS",
    "DEFAULT_HOST",
    "DEFAULT_RATIOS",
    "device_ratio",
    "load_host",
    "load_ratios",
    "measured_from_bench",
    "normalise_measured",
    "project",
    "ratio_table",
    "render_markdown",
    "render_ratio_table",
    "render_summary",
    "summarise",
]

HERE = Path(__file__).resolve().parent
DEFAULT_RATIOS = HERE / "device_ratios.json"
DEFAULT_HOST = HERE / "reference_host.json"

PRECISIONS = ("float32", "int8")
_FP16_NOTE = "float16 weights are expanded to float32 at load and run on float32 kernels: float32 references used"
# measured precision name -> (reference precision, note or None)
_PRECISION_ALIASES: dict[str, tuple[str, str | None]] = {
    "float32": ("float32", None),
    "float": ("float32", None),
    "fp32": ("float32", None),
    "f32": ("float32", None),
    "float16": ("float32", _FP16_NOTE),
    "fp16": ("float32", _FP16_NOTE),
    "dynamic": ("float32", "dynamic-range models have no published reference: float32 references used"),
    "dynamic_range": ("float32", "dynamic-range models have no published reference: float32 references used"),
    "int8": ("int8", None),
    "full_int8": ("int8", None),
    "full-int8": ("int8", None),
    "uint8": ("int8", None),
}

CAVEATS: tuple[str, ...] = (
    (
        "First-order projection: one ratio per device and precision, taken from standard image models. It is an "
        "estimate to plan with, not a measurement; run `edgecap bench` on the device to replace it."
    ),
    (
        "Ratios differ across op mixes: the spread (min..max) over reference models is shown; depthwise "
        "convolutions are memory-bound, while dense convolutions and the decoder's LSTM matrix products are "
        "compute-bound."
    ),
    (
        "The decode loop (~60 small invokes plus Python per report) follows single-core scalar speed and "
        "interpreter call overhead, not the SIMD throughput the reference models measure; its projection is the "
        "least reliable. Where the device figures used more threads than the measurement, the decoder step and "
        "the reports are corrected for threads that help little: upper bound as if they gave nothing, central "
        "value halfway (on a log scale)."
    ),
    (
        "Thermal throttling: a Raspberry Pi 4 without a heatsink, and passively cooled tablets, slow down under "
        "sustained load; published figures are short runs."
    ),
    (
        "Memory bandwidth and cache sizes differ much more between these devices and the host than core counts "
        "do; memory-bound layers (depthwise, the 7x7x1280 feature map) may scale worse than the ratio says."
    ),
    (
        "The published figures come from other runtimes and years (TFLite 1.x/2.x, ExecuTorch, raw XNNPACK) than "
        "the host's ai-edge-litert; the older int8 figures are uint8 quantization-aware models, not the "
        "per-channel int8 post-training quantization of edgecap bundles."
    ),
    (
        "The mid-range Android figures come from a Pixel 3a phone (Snapdragon 670, 2019); current mid-range "
        "tablets are likely faster. Pixel 3 and Pixel 4 (2018-2019 flagships) are shown as the fast bracket."
    ),
)


# --------------------------------------------------------------------------------------------- loading


def load_ratios(path: str | Path | None = None) -> dict:
    """The published per-device figures (``device_ratios.json``)."""
    return json.loads(Path(path or DEFAULT_RATIOS).read_text())


def load_host(path: str | Path | None = None) -> dict:
    """The reference architectures timed on the host (``reference_host.json``)."""
    return json.loads(Path(path or DEFAULT_HOST).read_text())


def _host_index(host: Mapping) -> dict[tuple[str, str], dict[int, float]]:
    """{(model, variant): {threads: median_ms}}; rows timed with more threads than host CPUs are left out."""
    index: dict[tuple[str, str], dict[int, float]] = {}
    for row in host.get("results", []):
        if row.get("oversubscribed"):
            continue
        index.setdefault((row["model"], row["variant"]), {})[int(row["threads"])] = float(row["median_ms"])
    return index


def _canonical_precision(precision: str) -> tuple[str, str | None]:
    key = str(precision).strip().lower()
    if key not in _PRECISION_ALIASES:
        raise ValueError(f"unknown precision {precision!r}; use one of {sorted(_PRECISION_ALIASES)}")
    return _PRECISION_ALIASES[key]


def normalise_measured(measured: Mapping | Iterable) -> tuple[str, list[dict]]:
    """(label, figures) from either accepted form of ``measured``.

    1. ``{"label": ..., "figures": [{"name", "precision", "threads", "ms"[, "scales_with_threads"]}, ...]}``
       (or the list of figures alone);
    2. nested by precision then threads: ``{"int8": {"1": {"encoder_ms": 17, "decoder_step_ms": 0.28},
       "2": {"encoder_ms": 8}}, "float32": {...}}``; every key ending in ``_ms`` is a figure named without it.

    ``scales_with_threads`` defaults to True for names starting with "encoder" and False otherwise (the
    decoder step and whole reports are dominated by small serial invokes).

    A figure of the first form may be split into ``parts`` (``[{"name", "precision", "ms"[,
    "scales_with_threads"]}, ...]``, their ms summing to the figure's): each part is projected with the ratio
    of its own precision and its own thread treatment, and the figure's projection is their sum (a whole
    report of a bundle whose encoder and decoder differ in precision, see :func:`measured_from_bench`).
    """
    label = ""
    figures: list[dict] = []
    if isinstance(measured, Mapping):
        label = str(measured.get("label", ""))
        if "figures" in measured:
            raw = list(measured["figures"])
        else:
            raw = []
            for precision, by_threads in measured.items():
                if precision == "label" or not isinstance(by_threads, Mapping):
                    continue
                for threads, values in by_threads.items():
                    for key, ms in values.items():
                        if key.endswith("_ms") and ms is not None:
                            raw.append({"name": key[:-3], "precision": precision, "threads": int(threads), "ms": ms})
    else:
        raw = list(measured)
    for f in raw:
        ms = float(f["ms"])
        if not math.isfinite(ms) or ms < 0:
            raise ValueError(f"figure {f.get('name')!r}: ms must be a finite, non-negative number")
        name = str(f["name"])
        threads = int(f.get("threads") or 1)
        parts: list[dict] = []
        for part in f.get("parts") or ():
            pms = float(part["ms"])
            if not math.isfinite(pms) or pms < 0:
                raise ValueError(
                    f"figure {name!r}, part {part.get('name')!r}: ms must be a finite, non-negative number"
                )
            pname = str(part["name"])
            _canonical_precision(part["precision"])
            parts.append(
                {
                    "name": pname,
                    "precision": str(part["precision"]),
                    "threads": threads,
                    "ms": pms,
                    "scales_with_threads": bool(part.get("scales_with_threads", pname.startswith("encoder"))),
                }
            )
        if parts and not math.isclose(sum(x["ms"] for x in parts), ms, rel_tol=1e-3, abs_tol=0.01):
            raise ValueError(f"figure {name!r}: its parts sum to {sum(x['ms'] for x in parts):g} ms, not {ms:g}")
        figures.append(
            {
                "name": name,
                "precision": str(f["precision"]),
                "threads": threads,
                "ms": ms,
                "scales_with_threads": bool(f.get("scales_with_threads", name.startswith("encoder"))),
                **({"parts": parts} if parts else {}),
                **({"note": f["note"]} if f.get("note") else {}),
            }
        )
    return label, figures


# A bundle mode's (encoder, decoder) precisions, where the bench result does not say (convert.modes).
_MODE_PRECISIONS: dict[str, tuple[str, str]] = {
    "float32": ("float32", "float32"),
    "float16": ("float16", "float16"),
    "dynamic": ("dynamic", "dynamic"),
    "int8": ("int8", "int8"),  # an int8 encoder with a few small layers in float32 (convert.modes)
    "int8-full": ("int8", "int8"),
}
BENCH_MODES = ("int8", "int8-full", "float32")


def measured_from_bench(result: Mapping, *, modes: Iterable[str] = BENCH_MODES, source: str = "") -> dict:
    """The measured figures of an ``edgecap bench --json`` result (format edgecap-bench/1), for :func:`project`.

    For the first bundle row of each of ``modes`` that did not fail, at each thread count of
    ``settings.threads`` not above the host's ``machine.cores`` (more threads oversubscribe the host: left
    out, listed under ``bench.left_out_threads``), the steady-state p50 of:

    - ``{mode}/encoder``: the encoder file (``models.encoder``), precision ``throughput.encoder_precision``
      (both int8 modes have an int8 encoder; mode ``int8`` keeps a few small layers of it in float32);
    - ``{mode}/decoder_call_{rows}rows``: one decoder_step call (``models.decoder_step``), which advances
      ``rows`` hypotheses (3: a whole beam-3 step), precision of the mode's decoder; serial;
    - ``{mode}/report_beam{beam}_p50``: whole reports (``report[threads].latency.p50_ms``), split by the
      report's mean stage times into ``encoder`` (``stages_mean_ms.encoder_ms``: encoder precision,
      thread-scalable) and ``rest`` (decode loop, read, preprocess, labeler: decoder precision, serial);
      without stage times, one serial figure at the decoder's precision.

    Returns ``{"label", "figures", "bench": {"created", "machine", "threads", "left_out_threads", "beam",
    "rows": [{"name", "mode", "encoder_precision", "decoder_precision", "decoder_rows", "verified",
    "identical"}], ...}}`` ("identical": the row's share of reports token-identical to Keras's, if measured).
    """
    settings = result.get("settings", {})
    machine = result.get("machine", {})
    cores = machine.get("cores")
    beam = settings.get("beam")
    threads = [int(t) for t in settings.get("threads", [])]
    used = [t for t in threads if not cores or t <= int(cores)]
    left_out = [t for t in threads if t not in used]
    figures: list[dict] = []
    rows: list[dict] = []

    def p50(fig: Mapping | None) -> float | None:
        if not isinstance(fig, Mapping) or fig.get("status", "ok") != "ok":
            return None
        v = (fig.get("steady") or fig.get("latency") or {}).get("p50_ms")
        return None if v is None else round(float(v), 4)

    for mode in modes:
        v = next(
            (
                v
                for v in result.get("variants", [])
                if v.get("kind") == "bundle" and v.get("mode") == mode and v.get("status") != "failed"
            ),
            None,
        )
        if v is None:
            continue
        enc_p, dec_p = _MODE_PRECISIONS.get(mode, (mode, mode))
        enc_p = (v.get("throughput") or {}).get("encoder_precision") or enc_p
        models = v.get("models", {})
        dec_rows = next(
            (
                int(f["rows"])
                for f in models.get("decoder_step", {}).values()
                if isinstance(f, Mapping) and f.get("rows")
            ),
            1,
        )
        rows.append(
            {
                "name": v.get("name"),
                "mode": mode,
                "path": v.get("path"),
                "encoder_precision": enc_p,
                "decoder_precision": dec_p,
                "decoder_rows": dec_rows,
                "verified": v.get("verified"),
                "identical": (v.get("drift") or {}).get("identical"),
            }
        )
        for t in used:
            n = str(t)
            enc = p50(models.get("encoder", {}).get(n))
            if enc is not None:
                figures.append(
                    {
                        "name": f"{mode}/encoder",
                        "precision": enc_p,
                        "threads": t,
                        "ms": enc,
                        "scales_with_threads": True,
                    }
                )
            dec = p50(models.get("decoder_step", {}).get(n))
            if dec is not None:
                figures.append(
                    {
                        "name": f"{mode}/decoder_call_{dec_rows}rows",
                        "precision": dec_p,
                        "threads": t,
                        "ms": dec,
                        "scales_with_threads": False,
                        "note": (
                            f"{mode}/decoder_call_{dec_rows}rows: one decoder_step call advances {dec_rows} "
                            f"hypotheses" + (" (a whole beam-3 step)" if dec_rows == 3 else "")
                        ),
                    }
                )
            rep = v.get("report", {}).get(n)
            total = p50(rep)
            if total is None:
                continue
            name = f"{mode}/report_beam{beam}_p50"
            stages = {k: float(x) for k, x in (rep.get("stages_mean_ms") or {}).items() if x is not None}
            stage_sum = sum(stages.values())
            if stage_sum > 0 and "encoder_ms" in stages:
                enc_ms = round(total * stages["encoder_ms"] / stage_sum, 4)
                figures.append(
                    {
                        "name": name,
                        "precision": enc_p if enc_p == dec_p else f"{enc_p}+{dec_p}",
                        "threads": t,
                        "ms": total,
                        "scales_with_threads": False,
                        "parts": [
                            {"name": "encoder", "precision": enc_p, "ms": enc_ms, "scales_with_threads": True},
                            {
                                "name": "rest",
                                "precision": dec_p,
                                "ms": round(total - enc_ms, 4),
                                "scales_with_threads": False,
                            },
                        ],
                    }
                )
            else:
                figures.append(
                    {
                        "name": name,
                        "precision": dec_p,
                        "threads": t,
                        "ms": total,
                        "scales_with_threads": False,
                        "note": f"{name}: no stage times, projected whole at the decoder's precision",
                    }
                )

    label = (
        f"`edgecap bench` result{' ' + source if source else ''} (created {result.get('created', '?')}, "
        f"{machine.get('cpu', '?')}, {cores} logical CPUs): steady-state p50 of "
        f"{', '.join(r['mode'] for r in rows) or 'no'} bundle rows at {', '.join(map(str, used))} thread(s)"
        + (
            f" ({', '.join(map(str, left_out))} left out: more threads than the host's {cores} cores)"
            if left_out
            else ""
        )
        + f"; whole reports with beam {beam}"
    )
    return {
        "label": label,
        "figures": figures,
        "bench": {
            "source": source,
            "created": result.get("created"),
            "edgecap_version": result.get("edgecap_version"),
            "machine": {k: machine.get(k) for k in ("cpu", "cores", "platform")},
            "litert": (machine.get("packages") or {}).get("ai-edge-litert"),
            "threads": used,
            "left_out_threads": left_out,
            "beam": beam,
            "inputs": (result.get("inputs") or {}).get("count"),
            "quick": settings.get("quick"),
            "rows": rows,
        },
    }


# ------------------------------------------------------------------------------------------ arithmetic


def _nearest(available: Iterable[int], wanted: int) -> int:
    # nearest thread count; on a tie the larger one (published multi-thread figures are the common case)
    return min(available, key=lambda t: (abs(t - wanted), -t))


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def device_ratio(
    device: str, precision: str, host_threads: int, ratios: Mapping, host: Mapping, *, allow_fallback: bool = True
) -> dict:
    """The ratio device_ms / host_ms for one device, precision and host thread count.

    Returns {"ratio", "ratio_min", "ratio_max", "precision_used", "device_threads" (list), "references"
    (one per model), "sources" (ids), "notes"}; "ratio" is None when no reference applies.
    """
    ref_precision, alias_note = _canonical_precision(precision)
    index = _host_index(host)
    notes = [alias_note] if alias_note else []
    entries = [e for e in ratios.get("entries", []) if e.get("device") == device and e.get("use", True)]
    order = [ref_precision] + [p for p in PRECISIONS if p != ref_precision] if allow_fallback else [ref_precision]
    for used in order:
        usable = [e for e in entries if e["variant"] == used and (e["model"], used) in index]
        if usable:
            break
    else:
        unmatched = sorted({e["model"] for e in entries} - {m for m, _ in index})
        why = f"no published figure for {device} has a host reference"
        if unmatched:
            why += f" (published models without one: {', '.join(unmatched)})"
        return {
            "ratio": None,
            "ratio_min": None,
            "ratio_max": None,
            "precision_used": None,
            "device_threads": [],
            "references": [],
            "sources": [],
            "notes": notes + [why],
        }
    if used != ref_precision:
        notes.append(
            f"no {ref_precision} figure published for this device: {used} ratio used instead (the "
            f"int8 / float32 speed-up differs between CPUs, so this can be off by 2x or more)"
        )

    by_model: dict[str, list[dict]] = {}
    for e in usable:
        by_model.setdefault(e["model"], []).append(e)
    references = []
    for model, group in sorted(by_model.items()):
        t_dev = _nearest([int(e["threads"]) for e in group], host_threads)
        entry = next(e for e in group if int(e["threads"]) == t_dev)
        host_threads_avail = index[(model, used)]
        t_host = host_threads if host_threads in host_threads_avail else _nearest(host_threads_avail, host_threads)
        if t_host != host_threads:
            notes.append(f"{model}: no host timing at {host_threads} threads, {t_host} used")
        host_ms = host_threads_avail[t_host]
        references.append(
            {
                "model": model,
                "device_ms": float(entry["latency_ms"]),
                "device_threads": t_dev,
                "threads_assumed": bool(entry.get("threads_assumed", False)),
                "host_ms": host_ms,
                "host_threads": t_host,
                "ratio": float(entry["latency_ms"]) / host_ms,
                "source": entry["source"],
                "precision": used,
            }
        )
    values = [r["ratio"] for r in references]
    return {
        "ratio": _geomean(values),
        "ratio_min": min(values),
        "ratio_max": max(values),
        "precision_used": used,
        "device_threads": sorted({r["device_threads"] for r in references}),
        "references": references,
        "sources": sorted({r["source"] for r in references}),
        "notes": notes,
    }


def project(
    measured: Mapping | Iterable,
    ratios_path: str | Path | None = None,
    host_path: str | Path | None = None,
    *,
    devices: Iterable[str] | None = None,
) -> list[dict]:
    """Project figures measured on this host to each device of ``device_ratios.json``.

    Args:
        measured: figures of one bundle measured here (see :func:`normalise_measured` for the two forms).
        ratios_path / host_path: the published figures and the host references (default: the files shipped
            next to this module).
        devices: device keys to project to (default: all, in file order).

    Returns one dict per device: {"device", "name", "cpu", "role", "device_note", "label", "figures": [...],
    "sources": [{"id", "title", "url", "date", "runtime"}], "projection": True}. Each figure: {"name",
    "precision", "precision_used", "host_threads", "device_threads", "measured_ms", "ratio", "ratio_min",
    "ratio_max", "thread_correction", "projected_ms", "projected_min_ms", "projected_max_ms", "basis",
    "references", "notes"}; projected_ms = measured_ms x ratio x thread_correction (1 except for serial
    figures); the projected values are None where no reference applies. A figure measured in ``parts`` is
    the sum of its parts' projections (its rows under "parts"; "ratio" is then the effective one and
    "thread_correction" None).
    """
    ratios = load_ratios(ratios_path)
    host = load_host(host_path)
    label, figures = normalise_measured(measured)
    device_keys = list(devices) if devices is not None else list(ratios.get("devices", {}))
    out = []
    for key in device_keys:
        info = ratios.get("devices", {}).get(key, {})
        rows = []
        used_sources: set[str] = set()
        for f in figures:
            if f.get("parts"):
                part_rows = [_project_figure(key, p, ratios, host) for p in f["parts"]]
                row = _combine_parts(f, part_rows)
            else:
                row = _project_figure(key, f, ratios, host)
            if f.get("note"):
                row["notes"].append(f["note"])
            for r in row["references"]:
                used_sources.add(r["source"])
            rows.append(row)
        srcs = ratios.get("sources", {})
        out.append(
            {
                "device": key,
                "name": info.get("name", key),
                "cpu": info.get("cpu", ""),
                "role": info.get("role", ""),
                "device_note": info.get("note", ""),
                "label": label,
                "projection": True,
                "figures": rows,
                "sources": [
                    {"id": s, **{k: srcs.get(s, {}).get(k, "") for k in ("title", "url", "date", "runtime")}}
                    for s in sorted(used_sources)
                ],
                "host": {k: host.get("host", {}).get(k) for k in ("cpu_model", "cpu_family", "model", "logical_cpus")}
                | {"date": host.get("date")},
            }
        )
    return out


def _basis(precision: str, precision_used: str | None) -> str:
    if precision_used is None:
        return "no reference"
    return "direct" if precision_used == _canonical_precision(precision)[0] else f"fallback to {precision_used}"


def _project_figure(device: str, f: Mapping, ratios: Mapping, host: Mapping) -> dict:
    """One normalised figure (without parts) projected to one device: a row of :func:`project`."""
    r = device_ratio(device, f["precision"], f["threads"], ratios, host)
    notes = list(r["notes"])
    row = {
        "name": f["name"],
        "precision": f["precision"],
        "precision_used": r["precision_used"],
        "basis": _basis(f["precision"], r["precision_used"]),
        "host_threads": f["threads"],
        "device_threads": r["device_threads"],
        "measured_ms": f["ms"],
        "ratio": r["ratio"],
        "ratio_min": r["ratio_min"],
        "ratio_max": r["ratio_max"],
        "projected_ms": None,
        "projected_min_ms": None,
        "projected_max_ms": None,
        "thread_correction": 1.0,
        "references": r["references"],
        "notes": notes,
    }
    if r["ratio"] is not None:
        central, upper = r["ratio"], r["ratio_max"]
        t_dev = max(r["device_threads"])
        if not f["scales_with_threads"] and t_dev > f["threads"]:
            k = t_dev / f["threads"]
            central *= math.sqrt(k)
            upper *= k
            row["thread_correction"] = math.sqrt(k)
            notes.append(
                f"serial work measured at {f['threads']} thread(s), device figures at {t_dev}: "
                f"central value x{math.sqrt(k):.2f} (the device's threads assumed to give half "
                f"of their ideal gain, on a log scale), upper bound x{k:g} (no gain at all), "
                f"lower bound x1 (full gain)"
            )
        if any(ref["threads_assumed"] for ref in r["references"]):
            notes.append("some device thread counts are not stated in their source (assumed: see device_ratios.json)")
        row.update(
            projected_ms=f["ms"] * central, projected_min_ms=f["ms"] * r["ratio_min"], projected_max_ms=f["ms"] * upper
        )
    return row


def _combine_parts(f: Mapping, part_rows: list[dict]) -> dict:
    """A figure split into parts: the sum of the parts' projections (central, lower and upper bounds each).

    Its ``ratio`` / ``ratio_min`` / ``ratio_max`` are effective (projected / measured, thread corrections
    included) and ``thread_correction`` is None; the parts' rows are kept under ``parts``.
    """
    ms = f["ms"]
    complete = all(p["projected_ms"] is not None for p in part_rows)
    total = {
        k: (sum(p[k] for p in part_rows) if complete else None)
        for k in ("projected_ms", "projected_min_ms", "projected_max_ms")
    }
    used = [p["precision_used"] for p in part_rows]
    split = (
        ", ".join(
            f"{p['name']} {p['measured_ms'] / ms:.0%} ({p['precision']}"
            f"{'' if p['basis'] == 'direct' else ', ' + p['basis']}, "
            f"{'thread-scalable' if fp['scales_with_threads'] else 'serial'})"
            for p, fp in zip(part_rows, f["parts"], strict=True)
        )
        if ms
        else ""
    )
    notes = [n for p in part_rows for n in p["notes"]]
    notes.append(
        f"{f['name']} ({f['threads']} thread{'s' if f['threads'] > 1 else ''}): sum of its parts, "
        f"each projected with its own precision's ratio: {split}; its ratio (eff.) is the effective one, "
        "projected / measured"
    )
    bases = {p["basis"] for p in part_rows}
    return {
        "name": f["name"],
        "precision": f["precision"],
        "precision_used": "+".join(dict.fromkeys(u for u in used if u)) or None,
        "basis": bases.pop() if len(bases) == 1 else "; ".join(f"{p['name']}: {p['basis']}" for p in part_rows),
        "host_threads": f["threads"],
        "device_threads": sorted({t for p in part_rows for t in p["device_threads"]}),
        "measured_ms": ms,
        "ratio": total["projected_ms"] / ms if complete and ms else None,
        "ratio_min": total["projected_min_ms"] / ms if complete and ms else None,
        "ratio_max": total["projected_max_ms"] / ms if complete and ms else None,
        **total,
        "thread_correction": None,
        "references": [r for p in part_rows for r in p["references"]],
        "notes": list(dict.fromkeys(notes)),
        "parts": part_rows,
    }


def ratio_table(
    ratios_path: str | Path | None = None, host_path: str | Path | None = None, host_threads: Iterable[int] = (1, 2)
) -> list[dict]:
    """Every usable published figure next to its host timing: one row per (entry, host threads)."""
    ratios = load_ratios(ratios_path)
    index = _host_index(load_host(host_path))
    rows = []
    for e in ratios.get("entries", []):
        if not e.get("use", True):
            continue
        for t in host_threads:
            host_ms = index.get((e["model"], e["variant"]), {}).get(t)
            rows.append(
                {
                    "device": e["device"],
                    "model": e["model"],
                    "variant": e["variant"],
                    "device_threads": int(e["threads"]),
                    "threads_assumed": bool(e.get("threads_assumed", False)),
                    "device_ms": float(e["latency_ms"]),
                    "host_threads": t,
                    "host_ms": host_ms,
                    "ratio": (float(e["latency_ms"]) / host_ms) if host_ms else None,
                    "source": e["source"],
                    "source_url": e["source_url"],
                }
            )
    return rows


# ------------------------------------------------------------------------------------------- rendering


def _ms(v: float | None) -> str:
    if v is None:
        return "n/a"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _x(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def render_markdown(
    projection: list[dict], *, title: str = "Projected latency on target devices", caveats: bool = True, level: int = 2
) -> str:
    """A Markdown page (or section) of a :func:`project` result, labelled as a projection throughout.

    ``level`` is the heading level of the title (devices and caveats one below it).
    """
    h1, h2 = "#" * level, "#" * (level + 1)
    lines = [f"{h1} {title} (projection, not a measurement)", ""]
    label = next((d.get("label") for d in projection if d.get("label")), "")
    host: Mapping = next((d["host"] for d in projection if d.get("host")), {})
    lines.append(
        "> **Projection, not a measurement.** Figures measured on this host multiplied by a device / "
        "host ratio from published latencies of standard models (sources below). Measure on the device "
        "before relying on them."
    )
    lines.append("")
    if label:
        lines.append(f"Measured figures: {label}.")
    if host.get("cpu_model"):
        ids = f" (family {host['cpu_family']} model {host['model']})" if host.get("cpu_family") else ""
        lines.append(
            f"Host references: {host.get('cpu_model')}{ids}, {host.get('logical_cpus')} logical CPUs, "
            f"timed {host.get('date')}."
        )
    lines.append("")
    for dev in projection:
        role = " (fast bracket)" if dev.get("role") == "bracket" else ""
        lines.append(f"{h2} {dev['name']}{role}")
        lines.append("")
        if dev.get("cpu"):
            lines.append(f"CPU: {dev['cpu']}." + (f" {dev['device_note']}" if dev.get("device_note") else ""))
            lines.append("")
        lines.append(
            "| figure | precision | measured here (threads) | ratio device/host (range) | "
            "projected on device, ms (range) | device threads | basis |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        for f in dev["figures"]:
            basis = f.get("basis") or _basis(f["precision"], f["precision_used"])
            ratio = (
                f"{_x(f['ratio'])} ({_x(f['ratio_min'])}..{_x(f['ratio_max'])})" + (" eff." if f.get("parts") else "")
                if f["ratio"] is not None
                else "n/a"
            )
            proj = (
                f"**{_ms(f['projected_ms'])}** ({_ms(f['projected_min_ms'])}..{_ms(f['projected_max_ms'])})"
                if f["projected_ms"] is not None
                else "n/a"
            )
            threads = ", ".join(str(t) for t in f["device_threads"]) or "n/a"
            lines.append(
                f"| {f['name']} | {f['precision']} | {_ms(f['measured_ms'])} ({f['host_threads']}) | "
                f"{ratio} | {proj} | {threads} | {basis} |"
            )
        notes = sorted({n for f in dev["figures"] for n in f["notes"]})
        if notes:
            lines.append("")
            lines.extend(f"- {n}" for n in notes)
        refs = {}
        for f in dev["figures"]:
            for r in f["references"]:
                refs[(r["model"], r.get("precision", f["precision_used"]), r["device_threads"], r["host_threads"])] = r
        if refs:
            lines.append("")
            lines.append("| reference model | precision | published ms (threads) | host ms (threads) | ratio |")
            lines.append("|---|---|---|---|---|")
            for (m, p, _, _), r in sorted(refs.items(), key=lambda kv: (kv[0][1], kv[0][3], kv[0][0])):
                t = f"{r['device_threads']}{'?' if r['threads_assumed'] else ''}"
                lines.append(
                    f"| {m} | {p} | {r['device_ms']:g} ({t}) | {r['host_ms']:.2f} ({r['host_threads']}) | "
                    f"{r['ratio']:.2f} |"
                )
        if dev["sources"]:
            lines.append("")
            lines.append(
                "Sources: " + "; ".join(f"[{s['title']}]({s['url']}), date: {s['date']}" for s in dev["sources"]) + "."
            )
        lines.append("")
    if caveats:
        lines.append(f"{h2} Why this is only a projection")
        lines.append("")
        lines.extend(f"- {c}" for c in CAVEATS)
        lines.append("")
    return "\n".join(lines)


def render_ratio_table(rows: list[dict], ratios: Mapping | None = None) -> str:
    """Markdown table of :func:`ratio_table` rows: one line per published figure, one column pair per host
    thread count (``?`` marks a thread count the source does not state)."""
    devices = (ratios or load_ratios()).get("devices", {})
    threads = sorted({r["host_threads"] for r in rows})
    grouped: dict[tuple, dict[int, dict]] = {}
    for r in rows:
        key = (r["device"], r["model"], r["variant"], r["device_threads"], r["device_ms"])
        grouped.setdefault(key, {})[r["host_threads"]] = r
    head = (
        "| device | model | precision | published ms (threads) | "
        + " | ".join(f"host ms @{t}t | ratio @{t}t" for t in threads)
        + " | source |"
    )
    out = [head, "|" + "---|" * (5 + 2 * len(threads))]
    for (device, model, variant, _, _), by_t in grouped.items():
        r0 = next(iter(by_t.values()))
        t = f"{r0['device_threads']}{'?' if r0['threads_assumed'] else ''}"
        cells = " | ".join(
            f"{_ms(by_t[h]['host_ms']) if h in by_t else 'n/a'} | {_x(by_t[h]['ratio']) if h in by_t else 'n/a'}"
            for h in threads
        )
        out.append(
            f"| {devices.get(device, {}).get('name', device)} | {model} | {variant} | "
            f"{r0['device_ms']:g} ({t}) | {cells} | [{r0['source']}]({r0['source_url']}) |"
        )
    return "\n".join(out)


def summarise(
    ratios_path: str | Path | None = None, host_path: str | Path | None = None, host_threads: Iterable[int] = (1, 2)
) -> list[dict]:
    """The ratio of every device for each precision and host thread count (what :func:`project` multiplies by)."""
    ratios, host = load_ratios(ratios_path), load_host(host_path)
    rows = []
    for key, info in ratios.get("devices", {}).items():
        for precision in PRECISIONS:
            for t in host_threads:
                r = device_ratio(key, precision, t, ratios, host)
                rows.append(
                    {
                        "device": key,
                        "name": info.get("name", key),
                        "precision": precision,
                        "host_threads": t,
                        **{k: r[k] for k in ("ratio", "ratio_min", "ratio_max", "precision_used", "device_threads")},
                        "models": [x["model"] for x in r["references"]],
                        "sources": r["sources"],
                    }
                )
    return rows


def render_summary(rows: list[dict]) -> str:
    """Markdown table of :func:`summarise` rows."""
    out = [
        "| device | precision | host threads | ratio device/host (range) | device threads | models | basis |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        basis = (
            "no reference"
            if r["precision_used"] is None
            else "direct"
            if r["precision_used"] == r["precision"]
            else f"fallback to {r['precision_used']}"
        )
        ratio = f"{_x(r['ratio'])} ({_x(r['ratio_min'])}..{_x(r['ratio_max'])})" if r["ratio"] is not None else "n/a"
        out.append(
            f"| {r['name']} | {r['precision']} | {r['host_threads']} | {ratio} | "
            f"{', '.join(map(str, r['device_threads'])) or 'n/a'} | {len(r['models'])} | {basis} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """``python scripts/projection/device_projection.py measured.json`` prints the projection as Markdown."""
    import argparse

    ap = argparse.ArgumentParser(
        description="Project measured bundle latencies to other devices (a projection, not a measurement)."
    )
    ap.add_argument("measured", help="JSON file with the measured figures (see normalise_measured)")
    ap.add_argument("--ratios", help="device_ratios.json (default: the shipped one)")
    ap.add_argument("--host", help="reference_host.json (default: the shipped one)")
    ap.add_argument("--json", action="store_true", help="print the projection as JSON instead of Markdown")
    args = ap.parse_args(argv)
    result = project(json.loads(Path(args.measured).read_text()), args.ratios, args.host)
    print(json.dumps(result, indent=1) if args.json else render_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
