"""`edgecap bench`: a real --quick run of the CLI (schema, one row per variant, a failing variant as a status,
a live --check), --check exit codes on a saved result, the input set, and the measuring pieces on their own.

The quick run measures the shipped default bundle against its reference run (the Keras model it was
converted from, shipped head weights + the ImageNet backbone) on 20 studies derived from the real sample, plus
a corrupted copy of the same bundle that must come back as a failed row while the others are measured.
No assertion on any time or memory figure (machines here are noisy): only that each was measured and is sane.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecap.benchmarks import checks
from edgecap.benchmarks.inputs import TRANSFORMS, build_inputs, derive
from edgecap.resources import sample_dir
from edgecap.runtime.captioner import default_bundle_path

SCHEMA = Path(__file__).parents[1] / "src" / "edgecap" / "benchmarks" / "bench.schema.json"


def _validate(result: dict) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(result), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message[:200]}" for e in errors[:10])


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """One `edgecap bench --quick` of the default bundle + a corrupted copy, with a --check on the good row."""
    d = tmp_path_factory.mktemp("bench")
    broken = d / "broken"
    shutil.copytree(default_bundle_path(), broken)
    dec = broken / "decoder_step_int8.tflite"
    data = bytearray(dec.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: the sha256 check must refuse the bundle
    dec.write_bytes(bytes(data))
    out = d / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgecap.cli",
            "bench",
            "--quick",
            "--bundle",
            "default",
            "--bundle",
            str(broken),
            "--json",
            str(out),
            "--markdown",
            str(d / "bench.md"),
            "--plot",
            str(d / "bench.png"),
            "--check",
            "default:identical>=0.5,default:rss_mb<4000",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    return proc, out, d


@pytest.mark.slow
@pytest.mark.tf
def test_quick_run_schema_rows_and_failed_variant(quick_run):
    proc, out, d = quick_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    result = json.loads(out.read_text())
    _validate(result)
    assert result["settings"]["quick"] and result["settings"]["threads"] == [1]
    assert result["inputs"]["count"] >= 20 and "derived" in result["inputs"]["description"]
    rows = {v["name"]: v for v in result["variants"]}
    assert set(rows) == {"keras", "keras-eager", "default", "broken"}
    # the corrupted bundle is a status in its row, not a crash
    assert rows["broken"]["status"] == "failed" and "sha256" in rows["broken"]["error"]
    good = rows["default"]
    assert good["status"] == "ok" and good["mode"] == "int8"
    for part in ("encoder", "decoder_step"):
        f = good["models"][part]["1"]
        assert f["status"] == "ok" and f["steady"]["n"] >= 10 and 0 < f["steady"]["p50_ms"] <= f["steady"]["max_ms"]
        assert f["interpreter"] == "ai-edge-litert"
    rep = good["report"]["1"]
    assert rep["latency"]["n"] == result["inputs"]["count"] and rep["latency"]["p50_ms"] <= rep["latency"]["p95_ms"]
    assert rep["tensorflow_imported"] is False  # LiteRT children never load TensorFlow
    split = rep["decode_split"]
    assert 0 < split["overhead_share"] < 1 and split["interpreter_ms"] < split["decode_ms"]
    assert split["calls_per_report"] >= split["steps_per_report"]  # beam 3: up to 3 invokes per step
    # drift: Keras against itself is exact; the bundle's figures are real shares
    assert rows["keras"]["drift"]["identical"] == 1.0
    assert 0.5 <= good["drift"]["identical"] <= 1.0 and good["drift"]["n"] == result["inputs"]["count"]
    assert set(good["drift"]["nlg"]) >= {"bleu4", "rouge_l", "cider"}
    clinical = good["drift"]["clinical"]
    assert 0.0 <= clinical["label_agreement"] <= 1.0 and set(clinical["per_observation"]) >= {"Cardiomegaly"}
    assert 0.0 <= clinical["micro"]["f1"] <= 1.0 and 0.0 <= clinical["macro"]["recall"] <= 1.0
    # both evaluation baselines on the same inputs; nearest-neighbour never retrieves the input's own study
    base = result["baselines"]
    assert set(base) == {"most-common", "nearest-neighbour"} and "excluded" in base["nearest-neighbour"]["note"]
    for b in base.values():
        assert 0.0 <= b["clinical"]["micro"]["f1"] <= 1.0 and b["nlg"]["n"] == good["drift"]["nlg"]["n"]
    # process figures of a TensorFlow-free caption process, and the CPU peak the encoder is compared with
    assert good["process"]["status"] == "ok" and good["process"]["tensorflow_blocked"]
    assert 10 < good["process"]["peak_rss_mb"] < 4000
    assert result["peak"]["int8"]["status"] == "ok" and result["peak"]["int8"]["threads"]["1"]["gops"] > 0
    assert good["throughput"]["encoder_macs"] > 300e6  # EfficientNet-Lite0 at 224 px
    assert "1" in result["ratios"]["default"]["speedup_vs_keras"]
    # the ONNX Runtime peer ([peers] is in the dev extra): the reference exported and quantized by ORT's tools,
    # timed call by call against the int8 row's two files (no float32 row here)
    peer = result["peers"]["onnxruntime"]
    assert peer["status"] == "ok", peer.get("why")
    comps = peer["threads"]["1"]
    assert [(c["part"], c["precision"], c["row"]) for c in comps] == [
        ("encoder", "int8", "default"),
        ("decoder_step", "int8", "default"),
    ]
    for c in comps:
        assert c["litert_ms"] > 0 and c["ort_ms"] > 0 and c["ratio"] == pytest.approx(c["ort_ms"] / c["litert_ms"])
    assert result["ratios"]["default"]["vs_onnxruntime"]["1"] == pytest.approx(min(c["ratio"] for c in comps))
    # the live --check passed, and every output file was written
    assert result["checks"] and all(c["passed"] for c in result["checks"])
    assert (d / "bench.png").stat().st_size > 10_000
    md = (d / "bench.md").read_text()
    assert "| default |" in md and "| broken |" in md and "sha256" in md
    assert "## Peer: onnxruntime" in md and "| encoder | int8 | default | 1 |" in md


@pytest.mark.slow
@pytest.mark.tf
def test_terminal_table_has_one_row_per_variant(quick_run):
    proc, _, _ = quick_run
    table = proc.stdout.split("\n\n")[0].splitlines()
    names = [line.split()[0] for line in table[2:]]
    assert names == ["keras", "keras-eager", "default", "broken"]
    assert "failed" in table[-1]


def _bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgecap.cli", "bench", *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.slow
@pytest.mark.tf
def test_check_exit_codes(quick_run):
    _, out, _ = quick_run
    src = str(out)
    assert _bench("--from", src, "--check", "default:identical>=0").returncode == 0
    p = _bench("--from", src, "--check", "default:identical>1.01")
    assert p.returncode == 1 and "FAIL default" in p.stdout
    p = _bench("--from", src, "--check", "broken:speedup>=1")  # a failed variant never passes a gate
    assert p.returncode == 1 and "not measured" in p.stdout
    p = _bench("--from", src, "--check", "targets")  # no float32 row: size_ratio cannot be measured -> fail
    assert p.returncode == 1 and "size_ratio" in p.stdout
    for bad in ("identical=0.9", "int8:speed>=5", ""):
        p = _bench("--from", src, "--check", bad)
        assert p.returncode == 2 and "error:" in p.stderr and "Traceback" not in p.stderr


def test_check_usage_errors_without_measuring(tmp_path):
    p = _bench("--bundle", str(tmp_path / "nope"))
    assert p.returncode == 2 and "no such bundle folder" in p.stderr
    (tmp_path / "x.json").write_text("{}")
    p = _bench("--from", str(tmp_path / "x.json"))
    assert p.returncode == 2 and "not an edgecap bench result" in p.stderr
    p = _bench("--threads", "0,2")
    assert p.returncode == 2 and "--threads" in p.stderr


def test_check_parsing_and_evaluation():
    parsed = checks.parse("int8:identical>=0.95, speedup>5 ,rss_mb<200")
    assert [str(c) for c in parsed] == ["int8:identical>=0.95", "speedup>5", "rss_mb<200"]
    assert len(checks.parse("targets")) == len(checks.TARGETS.split(","))
    result = {
        "settings": {"threads": [2]},
        "variants": [
            {
                "name": "a",
                "kind": "bundle",
                "mode": "int8",
                "status": "ok",
                "drift": {"identical": 0.97, "relative": {"bleu4": -0.02}},
                "process": {"status": "ok", "peak_rss_mb": 90.0, "cold_start_ms": {"p50_ms": 900}},
            },
            {"name": "b", "kind": "bundle", "mode": "float32", "status": "failed", "error": "boom"},
            {"name": "keras", "kind": "keras", "mode": None, "status": "ok"},
        ],
        "ratios": {"a": {"speedup_vs_keras": {"2": 6.0}, "size_vs_float32": 0.4, "python_share": {"2": 0.2}}},
    }
    out = {
        (c["variant"], c["check"]): c
        for c in checks.evaluate(
            result,
            checks.parse(
                "int8:identical>=0.95,int8:bleu4_drop<=0.01,int8:speedup>=5,size_ratio<=0.5,python_share<=0.3"
            ),
        )
    }
    assert out[("a", "int8:identical>=0.95")]["passed"]
    assert not out[("a", "int8:bleu4_drop<=0.01")]["passed"]  # 2 % worse than Keras
    assert out[("a", "int8:speedup>=5")]["value"] == 6.0
    assert out[("a", "size_ratio<=0.5")]["passed"]
    assert not out[("b", "size_ratio<=0.5")]["passed"] and "boom" in out[("b", "size_ratio<=0.5")]["note"]
    assert ("keras", "python_share<=0.3") not in out  # checks apply to bundle rows
    miss = checks.evaluate(result, checks.parse("int8-full:identical>=0.9"))
    assert miss == [
        {
            "check": "int8-full:identical>=0.9",
            "variant": "int8-full",
            "value": None,
            "passed": False,
            "note": "no bundle row matches this variant",
        }
    ]
    for bad in ("identical", "x:identical>=", "identical>=0.9x", "foo>=1", "identical@2>=0.9"):
        with pytest.raises(checks.CheckSyntaxError):
            checks.parse(bad)
    # a per-thread figure at a chosen thread count; one not measured says so; a miss says by how much
    result["settings"]["threads"] = [1, 2]
    result["ratios"]["a"]["speedup_vs_keras"] = {"1": 4.5, "2": 6.0}
    per = {c["check"]: c for c in checks.evaluate(result, checks.parse("a:speedup@2>=7,a:speedup>=6,a:speedup@4>1"))}
    assert per["a:speedup@2>=7"]["value"] == 6.0 and per["a:speedup@2>=7"]["note"] == "misses by 14% of the threshold"
    assert per["a:speedup>=6"]["value"] == 4.5  # the first thread count measured
    assert per["a:speedup@4>1"]["note"] == "not measured at 4 thread(s) (--threads 1,2)"
    assert "int8:speedup@1>=6" in checks.TARGETS and "int8:cold_start_ms<=300" in checks.TARGETS


def test_typed_rows_and_ratios_give_back_the_committed_result():
    """benchmarks.rows.Variant.to_json and benchmarks.ratios rebuild docs/bench/default-run.json's rows (keys in
    their saved order) and its "ratios"; a row of a bundle folder keeps its own saved key order."""
    from dataclasses import fields

    from edgecap.benchmarks.ratios import ratios
    from edgecap.benchmarks.rows import Variant

    result = json.loads((Path(__file__).parents[1] / "docs" / "bench" / "default-run.json").read_text())
    names = {f.name for f in fields(Variant)}
    rows = [Variant(**{k: x for k, x in row.items() if k in names}) for row in result["variants"]]
    assert [list(v.to_json().items()) for v in rows] == [list(row.items()) for row in result["variants"]]
    assert ratios(rows, result.get("peers")) == result["ratios"]
    given = Variant("default", "bundle", "package:bundles/default", mode="int8", verified=True, drift_note="x")
    assert list(given.to_json()) == [
        "name",
        "kind",
        "path",
        "status",
        "error",
        "verified",
        "converted",
        "mode",
        "drift_note",
    ]


def test_peer_row_says_why_it_is_missing(monkeypatch):
    """Without the [peers] extra the bench still runs: the peer is {"status": "missing", "why"}, and a
    peer_speedup check fails saying so (a gate never passes on a figure that was not measured)."""
    import importlib.util
    from types import SimpleNamespace

    from edgecap.benchmarks import peers

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    plan = SimpleNamespace(reference=None, options=SimpleNamespace(quick=True, timeout_s=60), threads=[1])
    entry = peers.measure_peer(plan, [], None, log=lambda s: None)
    assert entry["status"] == "missing" and "onnxruntime not installed" in entry["why"] and "[peers]" in entry["why"]
    result = {
        "settings": {"threads": [1, 2]},
        "variants": [{"name": "int8", "kind": "bundle", "mode": "int8", "status": "ok"}],
        "ratios": {"int8": {"speedup_vs_keras": {}, "size_vs_float32": None, "python_share": {}}},
        "peers": {"onnxruntime": entry},
    }
    (c,) = checks.evaluate(result, checks.parse("int8:peer_speedup@1>1"))
    assert not c["passed"] and c["value"] is None and "peer is missing" in c["note"] and "[peers]" in c["note"]
    result["ratios"]["int8"]["vs_onnxruntime"] = {"1": 1.4, "2": 0.9}
    assert [
        x["passed"] for x in checks.evaluate(result, checks.parse("int8:peer_speedup@1>1,int8:peer_speedup@2>1"))
    ] == [True, False]


def test_cached_conversions_follow_the_mode_settings(monkeypatch):
    """A bench cache entry is per mode settings: a mode whose parts change (mode int8's encoder went from float16
    to int8) is converted again instead of reusing the old bundle."""
    from dataclasses import replace

    from edgecap.benchmarks.variants import Reference, conversion_key, shipped_reference
    from edgecap.convert import modes

    ref = Reference.load(shipped_reference())
    before = {m: conversion_key(ref, m) for m in modes.MODES}
    assert len(set(before.values())) == len(modes.MODES)
    assert conversion_key(ref, "int8") == before["int8"]  # stable
    changed = replace(modes.MODES["int8"], encoder=modes.Part("float16"))
    monkeypatch.setitem(modes.MODES, "int8", changed)
    assert conversion_key(ref, "int8") != before["int8"]
    assert conversion_key(ref, "int8-full") == before["int8-full"]


def test_inputs_derive_from_real_studies(tmp_path):
    s = build_inputs(sample_dir(), tmp_path, minimum=100, seed=0)
    d = s.describe()
    assert d["count"] >= 100 and d["real_studies"] == 10 and d["real_images"] == 11
    assert d["transforms"]["original"] == 10 and sum(d["transforms"].values()) == d["count"]
    assert set(d["transforms"]) == set(TRANSFORMS)
    by_uid = {}
    for i in s.inputs:
        by_uid.setdefault(i.uid, set()).add(i.reference)
        assert Path(i.frontal).is_file()
    assert all(len(refs) == 1 for refs in by_uid.values())  # every derived study keeps its real findings
    derived = [i for i in s.inputs if i.transform != "original"]
    assert all(str(tmp_path) in i.frontal for i in derived)
    two_view = [i for i in s.inputs if i.lateral]
    assert two_view and all(i.uid == "54" for i in two_view)  # the sample's one frontal + lateral study
    # deterministic: a second call reuses the same files and order
    again = build_inputs(sample_dir(), tmp_path, minimum=100, seed=0)
    assert [i.name for i in again.inputs] == [i.name for i in s.inputs]


def test_a_larger_folder_is_sampled_not_used_whole(tmp_path):
    """A folder with more studies than --inputs (the full collection) gives a seeded sample of real studies and no
    derived view: a full-size bench costs what the sample's does. Here the sample's 10 studies, asked for 4."""
    s = build_inputs(sample_dir(), tmp_path / "a", minimum=4, seed=0)
    d = s.describe()
    assert d["count"] == 4 and d["sampled_from"] == 10 and d["transforms"]["original"] == 4
    assert "a seeded sample of the 10 studies" in d["description"]
    uids = [i.uid for i in s.inputs]
    assert len(set(uids)) == 4 and uids == sorted(uids, key=int)  # the folder's order, each study once
    assert [i.uid for i in build_inputs(sample_dir(), tmp_path / "b", minimum=4, seed=0).inputs] == uids
    assert [i.uid for i in build_inputs(sample_dir(), tmp_path / "c", minimum=4, seed=1).inputs] != uids


def test_derive_keeps_an_xray_like_image():
    from edgecap.runtime import preprocess, sanity

    image = preprocess.read_image(sample_dir() / "images" / "CXR1000_IM-0003-2001.png")
    rng = np.random.default_rng(0)
    for t in TRANSFORMS:
        x = derive(image, t, rng)
        assert x.dtype == np.uint8 and x.ndim == 2
        assert x.shape[0] >= 0.88 * image.shape[0] - 1 and x.shape[1] >= 0.88 * image.shape[1] - 1
        assert sanity.check(x)[0] == []  # still passes the runtime's chest X-ray checks
        if t != "original":
            assert not np.array_equal(x, image[: x.shape[0], : x.shape[1]])


def test_five_figures_counts_runs():
    from edgecap.benchmarks.worker import five_figures, summary

    calls = []
    f = five_figures(
        lambda: calls.append("init"),
        lambda: calls.append("run"),
        warmup_runs=3,
        min_runs=7,
        min_seconds=0.0,
        max_runs=7,
    )
    assert calls[0] == "init" and calls.count("run") == 1 + 3 + 7
    assert f["status"] == "ok" and f["steady"]["n"] == 7 and f["memory"]["peak_mb"] >= 0
    s = summary([1.0, 2.0, 3.0, 4.0])
    assert s["p50_ms"] == 2.5 and s["min_ms"] == 1.0 and s["max_ms"] == 4.0


def test_caption_process_is_tensorflow_free():
    from edgecap.benchmarks.processes import caption_process
    from edgecap.resources import sample_image

    r = caption_process(str(default_bundle_path()), str(sample_image()), runs=1)
    assert r["status"] == "ok", r
    assert r["tensorflow_blocked"] and r["peak_rss_mb"] > 10 and r["cold_start_ms"]["p50_ms"] > 0
    assert r["runs"] == 1  # the untimed first run (bytecode) is not among them
    # the floor ran, in the same environment: the stack it imports is installed (a failing floor is None)
    assert r["floor_ms"] is not None and r["floor_ms"]["p50_ms"] > 0


def test_decode_split_accounts_for_the_loop():
    from edgecap.benchmarks.worker import decode_split
    from edgecap.resources import sample_image
    from edgecap.runtime.captioner import Captioner

    cap = Captioner.from_bundle(num_threads=1)
    plain = cap.caption(sample_image(), beam=3)
    split = decode_split(cap, [[str(sample_image()), None]], beam=3, keras=False)
    assert split["calls_per_report"] >= plain.timings["decoder_steps"]
    assert split["interpreter_ms"] > 0 and split["tensor_io_ms"] > 0 and split["python_ms"] >= 0
    assert split["decode_ms"] >= split["interpreter_ms"] + split["tensor_io_ms"]
    again = cap.caption(sample_image(), beam=3)  # the timing wrappers are removed afterwards
    assert again.tokens == plain.tokens and cap.bundle.decoder.invoke == cap.bundle.decoder.interpreter.invoke


def test_report_processes_take_turns_input_by_input(tmp_path):
    """run_interleaved: two real report processes on the shipped bundle, alive together, never run a block at
    the same time, and take turns on every input, the round's first turn rotating; a process whose task fails
    is that task's failure only."""
    from edgecap.benchmarks.processes import run_interleaved

    studies = [[str(p), None] for p in sorted((sample_dir() / "images").glob("CXR[1-3]*.png"))[:3]]
    task = {"kind": "reports", "threads": 1, "beam": 1, "warmup": 1, "inputs": studies, "split_inputs": 1}
    bundle = str(default_bundle_path())
    a, b, broken = run_interleaved(
        [
            ({**task, "bundle": bundle}, True),
            ({**task, "bundle": bundle}, True),
            ({**task, "bundle": str(tmp_path / "missing")}, True),
        ],  # fmt: skip
        timeout=300,
    )
    assert a["status"] == b["status"] == "ok" and broken["status"] == "failed"
    assert "missing" in broken["error"]
    spans = []  # (start, end, process, input): each measured report's wall-clock interval
    for who, r in (("a", a), ("b", b)):
        spans += [(x["started"], x["started"] + x["total_ms"] / 1e3, who, i) for i, x in enumerate(r["reports"])]
    spans.sort()
    assert all(end <= nxt[0] for (_, end, *_), nxt in zip(spans, spans[1:]))  # one report at a time
    order = [(who, i) for _, _, who, i in spans]
    assert [i for _, i in order] == [0, 0, 1, 1, 2, 2]  # every input of both before the next input of either
    firsts = [order[k][0] for k in (0, 2, 4)]
    assert firsts[0] != firsts[1] != firsts[2]  # the round's first turn rotates
    assert [x["tokens"] for x in a["reports"]] == [x["tokens"] for x in b["reports"]]


@pytest.mark.tf
def test_nearest_neighbour_baseline_encodes_each_study_once(tmp_path, monkeypatch):
    """drift.baselines encodes every input study once (it re-encoded an input for every bank entry: inputs x
    bank Keras calls, ~10,000 for a bench of 100 studies from a full-size folder), and each input's
    neighbour is the most similar other real study, never itself."""
    from edgecap.benchmarks import drift
    from edgecap.benchmarks.variants import shipped_reference
    from edgecap.runtime import study

    calls = []
    real = study.encode_study_files
    monkeypatch.setattr(study, "encode_study_files", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    inputs = build_inputs(sample_dir(), tmp_path, minimum=20, seed=0)
    with_reference = [i for i in inputs.inputs if i.reference]
    found = drift.baselines(shipped_reference(), inputs, log=lambda s: None)
    assert len(calls) == len(with_reference)  # once each
    nn = found["nearest-neighbour"]["hyps"]
    assert set(nn) == {i.name for i in with_reference}
    for i in with_reference:
        assert nn[i.name] != i.reference or sum(j.reference == i.reference for j in with_reference if j.uid != i.uid)


def test_peer_blocks_close_each_runtime_before_the_other_runs():
    """worker._alternate: each block opens its call afresh and drops it when the block ends, so an ONNX Runtime
    session (whose idle threads spin for up to seconds after a run) never lives through LiteRT's block; the
    order alternates and every name gets its timed calls."""
    import weakref

    from edgecap.benchmarks.worker import _alternate

    log: list[str] = []
    live: list[weakref.ref] = []

    class Session:  # stands in for a runtime's session: something whose lifetime matters
        def __init__(self, name: str):
            self.name = name

        def run(self) -> None:
            assert all(r() is None for r in live[:-1]), "an earlier block's session is still alive"
            log.append(self.name)

    def opener(name: str):
        def open_block():
            s = Session(name)
            live.append(weakref.ref(s))
            return s.run

        return open_block

    p50 = _alternate({"a": opener("a"), "b": opener("b")}, runs=6, block=3)
    assert set(p50) == {"a", "b"} and all(v >= 0 for v in p50.values())
    assert len(live) == 4  # two blocks each: 3 timed calls a block, 6 runs
    # blocks of 1 warm-up + 3 timed calls, in the order b a, a b (neither always first)
    assert log == ["b"] * 4 + ["a"] * 4 + ["a"] * 4 + ["b"] * 4
