"""Regenerate every generated section of docs/projection.md from one `edgecap bench --json` result.

    python scripts/projection_doc.py docs/bench/default-run.json           # rewrite docs/projection.md
    python scripts/projection_doc.py docs/bench/default-run.json --check   # exit 1 if the page is not current

The page's generated sections sit between ``<!-- BEGIN generated: NAME -->`` and ``<!-- END generated: NAME
-->``; everything outside them is left as it is. The measured figures come from the bench result through
``scripts/projection/device_projection.py``'s ``measured_from_bench`` (bundle rows int8, int8-full when
present, float32; thread counts above the host's cores left out), the ratios from ``device_ratios.json`` and
``reference_host.json`` beside it. No TensorFlow, no measurement: the same inputs always give the same page.

Exit status: 0 written (or, with --check, already current); 1 with --check when the page would change;
2 bad input (unreadable bench result, a section marker missing or unknown).
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECTION = ROOT / "scripts" / "projection"  # device_projection.py and its two data files (not a package)


def _load_projection():
    """scripts/projection/device_projection.py as a module, by its path."""
    spec = importlib.util.spec_from_file_location("device_projection", PROJECTION / "device_projection.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {PROJECTION / 'device_projection.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


P = _load_projection()

SECTIONS = ("source", "in-short", "host-line", "ratio-summary", "ratio-table", "example-input", "example")
_MARKER = re.compile(
    r"(<!-- BEGIN generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- END generated: (?P=name) -->)", re.DOTALL
)
_FLAG_NAMES = (
    ("avx512_vnni", "AVX-512 VNNI"),
    ("amx_int8", "AMX"),
    ("asimddp", "Arm dot product"),
    ("i8mm", "Arm i8mm"),
)


def _display_path(bench: Path) -> str:
    """The bench result's path as the page names it: relative to the repository when inside it."""
    try:
        return bench.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(bench)


def _link(path: str, doc: Path) -> str:
    target = ROOT / path
    if target.exists():
        rel = os.path.relpath(target, doc.resolve().parent)
        return f"[`{path}`]({Path(rel).as_posix()})"
    return f"`{path}`"


def _threads(ts: list[int]) -> str:
    return ", ".join(map(str, ts)) if ts else "none"


def _and(words: list[str]) -> str:
    return " and ".join(words) if len(words) < 3 else ", ".join(words[:-1]) + " and " + words[-1]


def _modes_phrase(row: dict) -> str:
    enc, dec = row["encoder_precision"], row["decoder_precision"]
    return f"{enc} encoder + {dec} decoder" if enc != dec else f"{enc} encoder and decoder"


# ------------------------------------------------------------------------------------------------ sections


def section_source(result: dict, measured: dict, doc: Path) -> str:
    b = measured["bench"]
    m = b["machine"]
    settings = result.get("settings", {})

    def drift(r: dict) -> str:
        out = "" if r.get("verified") is None else ", verified" if r["verified"] else ", NOT verified"
        if r.get("identical") is not None:
            out += f", {r['identical']:.0%} of reports token-identical to Keras's"
        return out

    rows = (
        "; ".join(
            f"`{r['mode']}` (row `{r['name']}`: {_modes_phrase(r)}, decoder_step takes "
            f"{r['decoder_rows']} rows a call{drift(r)})"
            for r in b["rows"]
        )
        or "none"
    )
    missing = [mode for mode in P.BENCH_MODES if mode not in {r["mode"] for r in b["rows"]}]
    lines = [
        (
            f"**Measured figures:** {_link(b['source'], doc)}, an `edgecap bench --json` result (format "
            f"{result.get('format', '?')}, edgecap {b.get('edgecap_version') or '?'}), created {b['created']}, on "
            f"{m.get('cpu') or '?'} ({m.get('cores')} logical CPUs, {m.get('platform') or '?'}), ai-edge-litert "
            f"{b.get('litert') or '?'}."
        ),
        (
            f"Bench settings: threads {_threads([int(t) for t in settings.get('threads', [])])}, beam {b['beam']}, "
            f"{b.get('inputs')} inputs{', quick run' if b.get('quick') else ''}."
        ),
    ]
    if b["left_out_threads"]:
        n = len(b["left_out_threads"])
        lines.append(
            f"Thread count{'s' if n > 1 else ''} {_threads(b['left_out_threads'])} "
            f"{'are' if n > 1 else 'is'} left out here: more threads than the "
            f"host's {m.get('cores')} cores oversubscribe it, and the host references are not timed "
            "oversubscribed either."
        )
    lines.append(
        f"Bundle rows used: {rows}." + (f" Not in this result (or failed): {', '.join(missing)}." if missing else "")
    )
    lines.append(
        "Every measured figure is a steady-state p50: the encoder file and one decoder_step call from "
        "the bench's five-figure timings (one fresh process per file and thread count), the whole "
        f"reports (read, checks, preprocess, encoder, beam-{b['beam']} decode loop, labeler) from its "
        "Captioner runs, one report per input."
    )
    return "\n".join(lines) + "\n"


def _short_device(dev: dict) -> str:
    return dev["name"].split(" (")[0] + (" (fast bracket)" if dev.get("role") == "bracket" else "")


def _figure_label(name: str, row: dict, beam) -> str:
    mode, fig = name.split("/", 1)
    enc, dec = row["encoder_precision"], row["decoder_precision"]
    ref_enc = P._canonical_precision(enc)[0]
    if fig == "encoder":
        what = f"encoder ({enc}" + (f", {ref_enc} ratio" if ref_enc != enc else "") + ")"
    elif fig.startswith("decoder_call"):
        what = f"decoder call, {row['decoder_rows']} rows ({dec})"
    else:
        what = f"report, beam {beam} ({enc} encoder + {dec} rest)" if enc != dec else f"report, beam {beam} ({dec})"
    return f"{mode}: {what}"


def _cell(f: dict | None) -> str:
    if f is None or f["projected_ms"] is None:
        return "n/a"
    dagger = "†" if "fallback" in (f.get("basis") or "") else ""
    return f"{P._ms(f['projected_ms'])}{dagger} ({P._ms(f['projected_min_ms'])}..{P._ms(f['projected_max_ms'])})"


def section_in_short(measured: dict, projection: list[dict], threads: int) -> str:
    b = measured["bench"]
    rows = {r["mode"]: r for r in b["rows"]}
    names = list(dict.fromkeys(f["name"] for f in measured["figures"]))
    host_cells: dict[str, list[str]] = {}
    for f in measured["figures"]:
        host_cells.setdefault(f["name"], []).append(f"{P._ms(f['ms'])} ({f['threads']} t)")
    left = (
        f"; {_threads(b['left_out_threads'])} threads left out, oversubscribed on {b['machine']['cores']} cores"
        if b["left_out_threads"]
        else ""
    )
    lines = [
        (
            f"**In short** (ms; p50 measured here at {_threads(b['threads'])} thread(s){left}; each device: the "
            f"projection of the {threads}-thread measurement, central value and range, the device running with the "
            "thread count of its published figures, mostly 4; † = the other precision's ratio (or part of it), no "
            "figure of this precision was found for the device; full tables and notes below):"
        ),
        "",
        (
            "| figure (bundle: what, precision) | this host, measured (threads) | "
            + " | ".join(_short_device(d) for d in projection)
            + " |"
        ),
        "|---|---|" + "---|" * len(projection),
    ]
    for name in names:
        row = rows[name.split("/", 1)[0]]
        cells = []
        for dev in projection:
            f = next((x for x in dev["figures"] if x["name"] == name and x["host_threads"] == threads), None)
            cells.append(_cell(f))
        lines.append(
            f"| {_figure_label(name, row, b['beam'])} | {', '.join(host_cells[name])} | " + " | ".join(cells) + " |"
        )
    renamed = [d["name"] for d in projection if d["name"].split(" (")[0] != d["name"]]
    if renamed:
        lines.append("")
        lines.append("Devices in full: " + "; ".join(renamed) + ".")
    return "\n".join(lines) + "\n"


def section_host_line(host: dict, threads: list[int]) -> str:
    h = host.get("host", {})
    flags = [label for flag, label in _FLAG_NAMES if flag in h.get("cpu_flags", [])]
    ids = ", ".join(
        x
        for x in (
            h.get("machine"),
            f"family {h['cpu_family']} model {h['model']}" if h.get("cpu_family") else None,
            _and(flags) if flags else None,
        )
        if x
    )
    passes = len(host.get("merged_passes", [])) + 1 if host.get("merged_passes") else 1
    litert = (host.get("versions") or {}).get("ai_edge_litert", "?")
    ts = " or ".join(map(str, threads))
    return (
        f"{h.get('cpu_model', '?')} ({ids}), {h.get('logical_cpus', '?')} logical CPUs, ai-edge-litert {litert}, "
        f"{passes} pass{'es' if passes > 1 else ''} merged, last on {host.get('date', '?')}; the ratios "
        f"multiply figures measured with {ts} thread{'s' if threads != [1] else ''}):\n"
    )


def section_example_input(measured: dict) -> str:
    figs = ",\n".join("  " + json.dumps(f) for f in measured["figures"])
    return (
        "```json\n{\n" + f' "label": {json.dumps(measured["label"])},\n' + ' "figures": [\n' + figs + "\n ]\n}\n```\n"
    )


def build_sections(result: dict, bench_path: str, doc: Path, in_short_threads: int | None = None) -> dict[str, str]:
    measured = P.measured_from_bench(result, source=bench_path)
    threads = measured["bench"]["threads"]
    if not measured["figures"]:
        raise ValueError(
            "no usable bundle row (int8, int8-full or float32) at a thread count within the host's "
            "cores in this bench result"
        )
    t_short = in_short_threads if in_short_threads is not None else min(threads)
    if t_short not in threads:
        raise ValueError(f"--in-short-threads {t_short}: not a measured thread count ({_threads(threads)})")
    projection = P.project(measured)
    inp = {"label": measured["label"], "figures": measured["figures"]}
    return {
        "source": section_source(result, measured, doc),
        "in-short": section_in_short(measured, projection, t_short),
        "host-line": section_host_line(P.load_host(), threads),
        "ratio-summary": P.render_summary(P.summarise(host_threads=threads)) + "\n",
        "ratio-table": P.render_ratio_table(P.ratio_table(host_threads=threads)) + "\n",
        "example-input": section_example_input(inp),
        "example": P.render_markdown(projection, title="Projection of the measured bundles", level=3).rstrip("\n")
        + "\n",
    }


def fill(text: str, sections: dict[str, str]) -> str:
    """``text`` with the body of every generated section replaced; every section must be present once and
    every section of the page must be one this script writes."""
    found = [m.group("name") for m in _MARKER.finditer(text)]
    unknown = sorted(set(found) - set(sections))
    missing = sorted(set(sections) - set(found))
    dup = sorted({n for n in found if found.count(n) > 1})
    if unknown or missing or dup:
        raise ValueError(
            "generated sections: "
            + "; ".join(
                x
                for x in (
                    f"unknown {unknown}" if unknown else "",
                    f"missing {missing}" if missing else "",
                    f"repeated {dup}" if dup else "",
                )
                if x
            )
        )
    return _MARKER.sub(lambda m: m.group(1) + sections[m.group("name")] + m.group(4), text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Regenerate docs/projection.md's generated sections from an `edgecap bench --json` result."
    )
    ap.add_argument("bench", type=Path, help="the bench result (JSON, format edgecap-bench/1)")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "projection.md", help="the page (default: %(default)s)")
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if the page is not current")
    ap.add_argument(
        "--in-short-threads",
        type=int,
        default=None,
        help="host thread count whose projection the in-short table shows (default: the smallest)",
    )
    args = ap.parse_args(argv)
    try:
        result = json.loads(args.bench.read_text())
        if result.get("format") != "edgecap-bench/1":
            raise ValueError(f"{args.bench}: format {result.get('format')!r}, expected 'edgecap-bench/1'")
        old = args.doc.read_text()
        new = fill(old, build_sections(result, _display_path(args.bench), args.doc, args.in_short_threads))
    except (OSError, ValueError, KeyError) as e:
        print(f"projection_doc: {e}", file=sys.stderr)
        return 2
    if args.check:
        if new == old:
            print(f"{args.doc}: current")
            return 0
        sys.stdout.writelines(
            difflib.unified_diff(
                old.splitlines(True), new.splitlines(True), str(args.doc), f"{args.doc} (regenerated)", n=1
            )
        )
        doc_arg = "" if args.doc.resolve() == (ROOT / "docs" / "projection.md") else f" --doc {args.doc}"
        print(
            f"{args.doc}: not current; run: python scripts/projection_doc.py {_display_path(args.bench)}{doc_arg}",
            file=sys.stderr,
        )
        return 1
    if new != old:
        args.doc.write_text(new)
        print(f"{args.doc}: regenerated from {args.bench}")
    else:
        print(f"{args.doc}: unchanged")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
