"""A bench result as a terminal table, a Markdown page, and a latency-vs-size plot.

One row per variant in every form; a failed variant shows its status where the figures would be.
"""

from __future__ import annotations

from pathlib import Path

COLUMNS = (
    "variant",
    "mode",
    "status",
    "size MB",
    "encoder ms",
    "step ms",
    "report p50 ms",
    "report p95 ms",
    "vs Keras",
    "size vs f32",
    "identical",
    "BLEU-4 rel.",
    "labels agree",
    "Python share",
    "RSS MB",
    "cold start ms",
)


def _row(*cells: object) -> str:
    """One Markdown table row: | a | b | ... |"""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _fmt(x, spec: str = ".1f", suffix: str = "") -> str:
    return "-" if x is None else f"{x:{spec}}{suffix}"


def _steady(v: dict, part: str, n: str) -> float | None:
    fig = (v.get("models") or {}).get(part, {}).get(n) or {}
    if fig.get("status", "ok") != "ok" or "steady" not in fig:
        return None
    return fig["steady"].get("p50_ms")


def rows(result: dict, threads: str | None = None) -> list[list[str]]:
    """Table rows (strings) at one thread count (default: the first)."""
    n = threads or str(result["settings"]["threads"][0])
    ratios = result.get("ratios") or {}
    out = []
    for v in result["variants"]:
        rep = (v.get("report") or {}).get(n)
        d = v.get("drift") or {}
        r = ratios.get(v["name"], {})
        proc = v.get("process") or {}
        status = v["status"] if v["status"] == "ok" else f"{v['status']}: {v.get('error') or ''}"[:70]
        if v.get("verified") is False and v["status"] == "ok":
            status = "ok (failed convert verification)"
        size = (v.get("size") or {}).get("total_bytes")
        rel = (d.get("relative") or {}).get("bleu4")
        out.append(
            [
                v["name"],
                v.get("mode") or ("keras eager" if v.get("eager") else "keras compiled"),
                status,
                _fmt(size / 1e6 if size else None, ".2f"),
                _fmt(_steady(v, "encoder", n), ".2f"),
                _fmt(_steady(v, "decoder_step", n), ".3f"),
                _fmt(rep["latency"]["p50_ms"] if rep else None),
                _fmt(rep["latency"]["p95_ms"] if rep else None),
                _fmt(r.get("speedup_vs_keras", {}).get(n), ".2f", "x"),
                _fmt(r.get("size_vs_float32"), ".0%"),
                _fmt(d.get("identical"), ".0%"),
                _fmt(rel, "+.1%"),
                _fmt((d.get("clinical") or {}).get("label_agreement"), ".1%"),
                _fmt(rep["decode_split"]["overhead_share"] if rep else None, ".0%"),
                _fmt(proc.get("peak_rss_mb") if proc.get("status") == "ok" else None, ".0f"),
                _fmt(proc["cold_start_ms"]["p50_ms"] if proc.get("status") == "ok" else None, ".0f"),
            ]
        )
    return out


def terminal(result: dict) -> str:
    """Plain-text table at the first thread count, plus the notes a reader needs to trust it."""
    body = rows(result)
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(COLUMNS)]
    line = "  ".join(h.ljust(w) for h, w in zip(COLUMNS, widths))
    lines = [line, "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in body]
    lines += ["", *notes(result)]
    return "\n".join(lines)


def notes(result: dict) -> list[str]:
    s, inp = result["settings"], result["inputs"]
    out = [
        (
            f"threads {s['threads'][0]} in this table (see the JSON / Markdown for "
            f"{', '.join(map(str, s['threads']))}); beam {s['beam']}; inputs: {inp['description']}"
        ),
        f"machine: {result['machine']['cpu']} ({result['machine']['cores']} cores)",
    ]
    for kind, p in (result.get("peak") or {}).items():
        if p.get("status") == "ok":
            out.append(
                f"peak {kind} matmul"
                + (f" ({p['kernel']})" if p.get("kernel") else "")
                + ": "
                + ", ".join(f"{n} thr {r['gops']:.0f} GOPS" for n, r in p["threads"].items() if r.get("status") == "ok")
            )
    for v in result["variants"]:
        t = v.get("throughput") or {}
        per = t.get("threads") or {}
        if per:
            out.append(
                f"{v['name']}: {t['encoder_precision']} encoder "
                + ", ".join(
                    f"{n} thr {x['gops']:.0f} GOPS"
                    + (
                        f" ({x['share_of_peak']:.0%} of the {t['peak_compared']} peak)"
                        if x.get("share_of_peak")
                        else ""
                    )
                    for n, x in per.items()
                )
            )
        if v.get("drift_note"):
            out.append(f"{v['name']}: {v['drift_note']}")
    out += floor_lines(result)
    out += peer_lines(result)
    if result.get("checks"):
        failed = [c for c in result["checks"] if not c["passed"]]
        out.append(f"checks: {len(result['checks']) - len(failed)} passed, {len(failed)} failed")
        for c in result["checks"]:
            out.append(
                f"  {'PASS' if c['passed'] else 'FAIL'} {c['variant']}: {c['check']} "
                f"(value {_fmt(c['value'], '.4g')}) {c['note']}"
            )
    return out


def peer_lines(result: dict) -> list[str]:
    """One line per peer: why it is missing, or LiteRT against it per component and thread count."""
    out = []
    for name, peer in (result.get("peers") or {}).items():
        if peer.get("status") != "ok":
            out.append(f"peer {name}: {peer.get('status')}: {peer.get('why')}")
            continue
        for n, comps in peer["threads"].items():
            out.append(
                f"peer {name} at {n} thr: "
                + ", ".join(
                    f"{c['part']} {c['precision']} LiteRT {c['litert_ms']:.3f} ms / ORT {c['ort_ms']:.3f} ms"
                    for c in comps
                )
            )
    return out


def floor_lines(result: dict) -> list[str]:
    """Each bundle's cold start beside its floor (benchmarks.processes._FLOOR_PROGRAM, said once)."""
    out, what = [], None
    for v in result["variants"]:
        p = v.get("process") or {}
        if p.get("status") == "ok" and p.get("floor_ms"):
            cold, floor = p["cold_start_ms"]["p50_ms"], p["floor_ms"]["p50_ms"]
            out.append(f"{v['name']}: cold start {cold:.0f} ms, of which the floor {floor:.0f} ms")
            what = p["floor_ms"]["what"]
    return out + ([f"the floor: {what}"] if what else [])


def peer_section(result: dict) -> list[str]:
    """The Markdown section of the peers (benchmarks.peers): a table per peer, or why it is missing."""
    md: list[str] = []
    for name, peer in (result.get("peers") or {}).items():
        md += ["", f"## Peer: {name}", ""]
        if peer.get("status") != "ok":
            md.append(f"Not measured ({peer.get('status')}): {peer.get('why')}.")
            continue
        versions = ", ".join(f"{k} {v}" for k, v in peer.get("versions", {}).items())
        md += [
            f"The same Keras reference exported with tf2onnx (opset {peer.get('opset')}) and run by ONNX Runtime "
            f"({versions}); int8: {'; '.join(f'{k}: {v}' for k, v in peer.get('recipes', {}).items())}. "
            "Each component's LiteRT file (of the row named) and ONNX model take turns in blocks of 10 calls in one "
            "process; p50 of one whole call.",
            "",
            "| component | precision | LiteRT file of | threads | LiteRT ms | ONNX Runtime ms | ORT / LiteRT |",
            "|---|---|---|---|---|---|---|",
        ]
        for n, comps in peer["threads"].items():
            for c in comps:
                md.append(
                    _row(c["part"], c["precision"], c["row"], n, f"{c['litert_ms']:.3f}", f"{c['ort_ms']:.3f}",
                         f"{c['ratio']:.2f}x")
                )
    return md


def markdown(result: dict) -> str:
    """The whole result as a Markdown page: the table per thread count, the five figures per model file,
    the decode split, drift, process figures and the notes."""
    s = result["settings"]
    md = [
        f"# edgecap bench ({result['created']}, edgecap {result['edgecap_version']})",
        "",
        (
            f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, Python "
            f"{result['machine']['python']}; "
            f"{', '.join(f'{k} {v}' for k, v in result['machine']['packages'].items())}."
        ),
        "",
        (
            f"Reference: {(result.get('reference') or {}).get('path', 'none')}. "
            f"Inputs: {result['inputs']['description']}."
        ),
        "",
    ]
    for n in map(str, s["threads"]):
        md += [f"## {n} thread(s)", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        md += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows(result, n)]
        md.append("")
    md += [
        "## Per model file (LiteRT benchmark_model's five figures; Keras: compiled tf.function and eager)",
        "",
        (
            "| variant | file | threads | init ms | first ms | warm-up ms | steady mean ms | p50 ms | p95 ms | "
            "memory init MB | memory peak MB |"
        ),
        "|" + "---|" * 11,
    ]
    for v in result["variants"]:
        for part, per in (v.get("models") or {}).items():
            for n, f in per.items():
                if f.get("status", "ok") != "ok":
                    md.append(f"| {v['name']} | {part} | {n} | {f.get('error', 'failed')} |" + " |" * 7)
                    continue
                st, mem = f["steady"], f["memory"]
                md.append(_row(v["name"], part, n, f"{f['init_ms']:.1f}", f"{f['first_ms']:.2f}",
                               _fmt(f["warmup_ms"], ".2f"), f"{st['mean_ms']:.3f}", f"{st['p50_ms']:.3f}",
                               f"{st['p95_ms']:.3f}", f"{mem['init_mb']:.1f}", f"{mem['peak_mb']:.1f}"))
    md += [
        "",
        "## Whole report: stages and decode loop split (first thread count)",
        "",
        (
            "Stages: mean over all inputs. Split: the decode loop re-run on the first inputs with the interpreter's "
            "calls timed (interpreter = invoke() or the compiled graph call; tensor copies = set_tensor / "
            "get_tensor; Python = the rest of the loop)."
        ),
        "",
        (
            "| variant | read ms | sanity ms | preprocess ms | encoder ms | decode ms | labeler ms | split: decode ms "
            "| interpreter ms | tensor copies ms | Python ms | Python share | steps |"
        ),
        "|" + "---|" * 13,
    ]
    n0 = str(s["threads"][0])
    for v in result["variants"]:
        rep = (v.get("report") or {}).get(n0)
        if not rep:
            continue
        st, sp = rep["stages_mean_ms"], rep["decode_split"]
        stages = [f"{st[k]:.2f}" for k in ("read_ms", "sanity_ms", "preprocess_ms", "encoder_ms", "decoder_ms",
                                           "labeler_ms")]
        split = [f"{sp[k]:.2f}" for k in ("decode_ms", "interpreter_ms", "tensor_io_ms", "python_ms")]
        md.append(_row(v["name"], *stages, *split, f"{sp['overhead_share']:.0%}", f"{sp['steps_per_report']:.0f}"))
    md += peer_section(result)
    md += [
        "",
        "## Drift against the Keras model",
        "",
        (
            "| variant | identical | BLEU-4 | METEOR | ROUGE-L | CIDEr | BLEU-4 rel. | label agreement | "
            "CE micro-F1 | CE macro-F1 |"
        ),
        "|" + "---|" * 10,
    ]
    for v in result["variants"]:
        d = v.get("drift") or {}
        if d.get("status") != "ok":
            md.append(f"| {v['name']} | {d.get('reason', '-')} |" + " |" * 8)
            continue
        nlg, cl, rel = d.get("nlg") or {}, d.get("clinical") or {}, d.get("relative") or {}
        md.append(
            f"| {v['name']} | {d['identical']:.1%} ({d['identical_count']}/{d['n']}) | "
            f"{_fmt(nlg.get('bleu4'), '.4f')} | {_fmt(nlg.get('meteor'), '.4f')} | "
            f"{_fmt(nlg.get('rouge_l'), '.4f')} | {_fmt(nlg.get('cider'), '.4f')} | "
            f"{_fmt(rel.get('bleu4'), '+.2%')} | {_fmt(cl.get('label_agreement'), '.1%')} | "
            f"{_fmt((cl.get('micro') or {}).get('f1'), '.3f')} | "
            f"{_fmt((cl.get('macro') or {}).get('f1'), '.3f')} |"
        )
    for name, b in (result.get("baselines") or {}).items():
        if not isinstance(b, dict):
            continue
        nlg, cl = b["nlg"], b["clinical"]
        md.append(
            f"| baseline: {name} | - | {_fmt(nlg.get('bleu4'), '.4f')} | {_fmt(nlg.get('meteor'), '.4f')} | "
            f"{_fmt(nlg.get('rouge_l'), '.4f')} | {_fmt(nlg.get('cider'), '.4f')} | - | - | "
            f"{cl['micro']['f1']:.3f} | {cl['macro']['f1']:.3f} |"
        )
    notes_b = [f"{name}: {b['note']}" for name, b in (result.get("baselines") or {}).items() if isinstance(b, dict)]
    if notes_b:
        md += ["", "Baselines (same inputs and references): " + "; ".join(notes_b) + "."]
    per = [(v["name"], (v.get("drift") or {}).get("clinical", {}).get("per_observation")) for v in result["variants"]]
    per = [(n, p) for n, p in per if p]
    if per:
        obs = list(per[0][1])
        md += [
            "",
            (
                "Clinical efficacy per observation (F1 against the references, positive vs rest; support = "
                "positive references):"
            ),
            "",
            "| observation | support | " + " | ".join(n for n, _ in per) + " |",
            "|" + "---|" * (len(per) + 2),
        ]
        for o in obs:
            md.append(f"| {o} | {per[0][1][o]['support']} | " + " | ".join(f"{p[o]['f1']:.2f}" for _, p in per) + " |")
    md += ["", "## Notes", ""] + [f"- {x}" for x in notes(result)] + [""]
    return "\n".join(md)


def plot(result: dict, path: str | Path) -> None:
    """Whole-report p50 latency (first thread count) against bundle size, one point per variant, colour =
    share of reports identical to Keras. Needs matplotlib (the train extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = str(result["settings"]["threads"][0])
    fig, ax = plt.subplots(figsize=(7.5, 5))
    xs, ys, cs, labels = [], [], [], []
    for v in result["variants"]:
        rep = (v.get("report") or {}).get(n)
        size = (v.get("size") or {}).get("total_bytes")
        if not rep or not size:
            continue
        xs.append(size / 1e6)
        ys.append(rep["latency"]["p50_ms"])
        cs.append((v.get("drift") or {}).get("identical"))
        labels.append(v["name"])
    known = [c if c is not None else float("nan") for c in cs]
    sc = ax.scatter(xs, ys, c=known, cmap="RdYlGn", vmin=0.8, vmax=1.0, s=80, edgecolors="black")
    order = sorted(range(len(xs)), key=lambda i: (xs[i], ys[i]))
    for rank, i in enumerate(order):  # alternate label sides so close points stay readable
        c = cs[i]
        ax.annotate(
            f"{labels[i]}" + (f"\n{c:.0%} identical" if c is not None else ""),
            (xs[i], ys[i]),
            textcoords="offset points",
            xytext=(8, 6) if rank % 2 == 0 else (8, -18),
            fontsize=8,
        )
    ax.margins(x=0.15, y=0.25)
    ax.set_xlabel("size on disk (MB)")
    ax.set_ylabel(f"whole report p50 (ms, {n} thread(s), beam {result['settings']['beam']})")
    ax.set_yscale("log")
    ax.set_title("edgecap bench: latency vs size (colour: reports identical to Keras)")
    fig.colorbar(sc, ax=ax, label="share of reports token-identical to Keras")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
