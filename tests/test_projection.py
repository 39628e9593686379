"""The device projection (scripts/projection/device_projection.py): its data files and its arithmetic.
No TensorFlow."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

PROJECTION = Path(__file__).parents[1] / "scripts" / "projection"  # the module and its data files, no package
_spec = importlib.util.spec_from_file_location("device_projection", PROJECTION / "device_projection.py")
assert _spec is not None and _spec.loader is not None
P = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(P)

MEASURED = {
    "label": "placeholder figures",
    "figures": [
        {"name": "encoder", "precision": "int8", "threads": 1, "ms": 17.0},
        {"name": "encoder", "precision": "int8", "threads": 2, "ms": 8.0},
        {"name": "decoder_step", "precision": "int8", "threads": 1, "ms": 0.28},
        {"name": "report_greedy_p50", "precision": "int8", "threads": 2, "ms": 21.0},
        {"name": "encoder", "precision": "float32", "threads": 1, "ms": 16.0},
        {"name": "decoder_step", "precision": "float32", "threads": 1, "ms": 0.81},
    ],
}


# ------------------------------------------------------------------------------------------ data files


def test_shipped_json_files_parse_and_every_entry_has_a_source():
    ratios = P.load_ratios()
    host = P.load_host()
    assert ratios["entries"] and host["results"]
    for e in ratios["entries"]:
        assert e["source_url"].startswith("https://"), e
        assert e["source"] in ratios["sources"], e
        src = ratios["sources"][e["source"]]
        assert src["url"].startswith("https://") and src["title"] and src["date"], e["source"]
        assert e["device"] in ratios["devices"], e
        assert e["variant"] in ("float32", "int8"), e
        assert e["latency_ms"] > 0 and int(e["threads"]) >= 1, e
        assert e.get("note"), e
    for n in ratios.get("not_used", []):
        assert n["url"].startswith("https://") and n["why"]
    assert host["host"]["cpu_model"] and host["date"]
    for r in host["results"]:
        assert r["variant"] in ("float32", "int8") and r["median_ms"] > 0 and r["threads"] >= 1, r


def test_every_used_published_figure_has_a_host_reference():
    index = P._host_index(P.load_host())
    for e in P.load_ratios()["entries"]:
        if e.get("use", True):
            assert (e["model"], e["variant"]) in index, f"no host timing for {e['model']} {e['variant']}"


def test_target_devices_are_present():
    devices = P.load_ratios()["devices"]
    assert {"rpi4", "rpi5", "android_midrange"} <= set(devices)


# -------------------------------------------------------------------------------------------- arithmetic


def _by_device(result):
    return {d["device"]: d for d in result}


def test_projection_scales_linearly_with_the_measured_figure():
    doubled = {"figures": [{**f, "ms": 2 * f["ms"]} for f in MEASURED["figures"]]}
    one, two = P.project(MEASURED), P.project(doubled)
    assert len(one) == len(two) == len(P.load_ratios()["devices"])
    checked = 0
    for d1, d2 in zip(one, two, strict=True):
        for f1, f2 in zip(d1["figures"], d2["figures"], strict=True):
            assert f1["ratio"] == f2["ratio"]
            for key in ("projected_ms", "projected_min_ms", "projected_max_ms"):
                if f1[key] is not None:
                    assert math.isclose(f2[key], 2 * f1[key], rel_tol=1e-12)
                    checked += 1
    assert checked > 0


def _toy(tmp_path, entries, host_rows):
    ratios = {
        "devices": {
            "d_float": {"name": "Float-only board", "role": "target"},
            "d_both": {"name": "Both-precision board", "role": "target"},
        },
        "sources": {"s": {"title": "toy source", "url": "https://example.org/toy", "date": "2020"}},
        "entries": entries,
    }
    rp, hp = tmp_path / "ratios.json", tmp_path / "host.json"
    rp.write_text(json.dumps(ratios))
    hp.write_text(json.dumps({"host": {"cpu_model": "toy"}, "date": "2025-01-01", "results": host_rows}))
    return rp, hp


def _e(model, variant, device, threads, ms):
    return {
        "model": model,
        "variant": variant,
        "device": device,
        "threads": threads,
        "latency_ms": ms,
        "source": "s",
        "source_url": "https://example.org/toy",
        "note": "toy",
    }


def _h(model, variant, threads, ms):
    return {"model": model, "variant": variant, "threads": threads, "median_ms": ms}


def test_ratio_arithmetic_geometric_mean_range_and_nearest_threads(tmp_path):
    rp, hp = _toy(
        tmp_path,
        [
            _e("a", "int8", "d_both", 4, 40.0),  # host 10 at 1 thread -> 4
            _e("b", "int8", "d_both", 4, 90.0),  # host 10 -> 9
            _e("b", "int8", "d_both", 1, 300.0),  # nearer to 1 host thread: used instead of the 4-thread figure
            _e("a", "float32", "d_both", 4, 10.0),
            _e("a", "float32", "d_float", 4, 10.0),
        ],
        [
            _h("a", "int8", 1, 10.0),
            _h("b", "int8", 1, 10.0),
            _h("a", "float32", 1, 5.0),
            _h("a", "int8", 2, 5.0),
            _h("b", "int8", 2, 5.0),
        ],
    )
    res = _by_device(
        P.project({"figures": [{"name": "encoder", "precision": "int8", "threads": 1, "ms": 2.0}]}, rp, hp)
    )
    f = res["d_both"]["figures"][0]
    # model a: 40/10 = 4 (only a 4-thread figure); model b: the 1-thread figure 300/10 = 30
    assert math.isclose(f["ratio"], math.sqrt(4 * 30))
    assert (f["ratio_min"], f["ratio_max"]) == (4.0, 30.0)
    assert math.isclose(f["projected_ms"], 2.0 * math.sqrt(120))
    assert f["precision_used"] == "int8" and f["device_threads"] == [1, 4]
    # at 2 host threads model b's 1-thread figure is still the nearer one: 300/5 = 60, a: 40/5 = 8
    f2 = _by_device(
        P.project({"figures": [{"name": "encoder", "precision": "int8", "threads": 2, "ms": 1.0}]}, rp, hp)
    )["d_both"]["figures"][0]
    assert (f2["ratio_min"], f2["ratio_max"]) == (8.0, 60.0)
    # at 3 threads: b's 4-thread figure is nearer (90), and the host has no 3-thread timing -> its 2-thread one
    f3 = _by_device(
        P.project({"figures": [{"name": "encoder", "precision": "int8", "threads": 3, "ms": 1.0}]}, rp, hp)
    )["d_both"]["figures"][0]
    assert (f3["ratio_min"], f3["ratio_max"]) == (8.0, 18.0)
    assert any("no host timing at 3 threads" in n for n in f3["notes"])


def test_device_without_the_precision_falls_back_with_a_note(tmp_path):
    rp, hp = _toy(
        tmp_path,
        [_e("a", "float32", "d_float", 2, 20.0), _e("a", "int8", "d_both", 2, 6.0)],
        [_h("a", "float32", 2, 10.0), _h("a", "int8", 2, 3.0)],
    )
    res = _by_device(
        P.project({"figures": [{"name": "encoder", "precision": "int8", "threads": 2, "ms": 5.0}]}, rp, hp)
    )
    f = res["d_float"]["figures"][0]
    assert f["precision_used"] == "float32"
    assert f["ratio"] == 2.0 and f["projected_ms"] == 10.0
    assert any("no int8 figure" in n for n in f["notes"])
    direct = res["d_both"]["figures"][0]
    assert direct["precision_used"] == "int8" and not any("no int8" in n for n in direct["notes"])
    assert "fallback to float32" in P.render_markdown(list(res.values()))


def test_shipped_midrange_android_int8_falls_back_to_float32():
    res = _by_device(P.project(MEASURED, devices=["android_midrange", "rpi5"]))
    int8_rows = [f for f in res["android_midrange"]["figures"] if f["precision"] == "int8"]
    assert int8_rows and all(f["precision_used"] == "float32" for f in int8_rows)
    assert all(any("no int8 figure" in n for n in f["notes"]) for f in int8_rows)
    float_rows = [f for f in res["rpi5"]["figures"] if f["precision"] == "float32"]
    assert all(f["precision_used"] == "int8" for f in float_rows)


def test_serial_figures_get_a_wider_upper_bound_when_the_device_used_more_threads(tmp_path):
    rp, hp = _toy(tmp_path, [_e("a", "int8", "d_both", 4, 8.0)], [_h("a", "int8", 1, 4.0)])
    figs = [
        {"name": "encoder", "precision": "int8", "threads": 1, "ms": 10.0},
        {"name": "decoder_step", "precision": "int8", "threads": 1, "ms": 10.0},
    ]
    enc, step = _by_device(P.project({"figures": figs}, rp, hp))["d_both"]["figures"]
    assert enc["projected_ms"] == enc["projected_min_ms"] == enc["projected_max_ms"] == 20.0
    assert step["projected_min_ms"] == 20.0  # the device's 4 threads give their full gain
    assert step["projected_max_ms"] == 80.0  # x4: they give the step nothing
    assert math.isclose(step["projected_ms"], 40.0)  # halfway on a log scale: x sqrt(4)
    assert step["thread_correction"] == 2.0 and enc["thread_correction"] == 1.0
    assert any("upper bound" in n for n in step["notes"])


def test_oversubscribed_host_timings_are_not_used(tmp_path):
    rp, hp = _toy(
        tmp_path,
        [_e("a", "int8", "d_both", 4, 8.0)],
        [_h("a", "int8", 2, 4.0), {**_h("a", "int8", 4, 1.0), "oversubscribed": True}],
    )
    f = _by_device(P.project({"figures": [{"name": "encoder", "precision": "int8", "threads": 4, "ms": 1.0}]}, rp, hp))[
        "d_both"
    ]["figures"][0]
    assert f["ratio"] == 2.0  # 8 / 4 (2-thread host timing), not 8 / 1
    assert any("no host timing at 4 threads" in n for n in f["notes"])


def test_no_reference_gives_none_not_a_guess(tmp_path):
    rp, hp = _toy(tmp_path, [_e("zzz", "int8", "d_both", 4, 8.0)], [_h("a", "int8", 1, 4.0)])
    f = _by_device(P.project({"figures": [{"name": "encoder", "precision": "int8", "threads": 1, "ms": 1.0}]}, rp, hp))[
        "d_both"
    ]["figures"][0]
    assert f["projected_ms"] is None and f["ratio"] is None
    assert any("zzz" in n for n in f["notes"])


def test_nested_measured_form_equals_the_figure_list():
    nested = {"int8": {"1": {"encoder_ms": 17.0, "decoder_step_ms": 0.28}, "2": {"encoder_ms": 8.0}}}
    flat = {
        "figures": [
            {"name": "encoder", "precision": "int8", "threads": 1, "ms": 17.0},
            {"name": "decoder_step", "precision": "int8", "threads": 1, "ms": 0.28},
            {"name": "encoder", "precision": "int8", "threads": 2, "ms": 8.0},
        ]
    }
    a, b = P.project(nested), P.project(flat)

    def key(f):
        return f["name"], f["host_threads"]

    for da, db in zip(a, b, strict=True):
        assert sorted(da["figures"], key=key) == sorted(db["figures"], key=key)
    _, figs = P.normalise_measured(nested)
    assert {f["name"]: f["scales_with_threads"] for f in figs} == {"encoder": True, "decoder_step": False}


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError):
        P.project({"figures": [{"name": "encoder", "precision": "int4", "threads": 1, "ms": 1.0}]})
    with pytest.raises(ValueError):
        P.normalise_measured({"figures": [{"name": "encoder", "precision": "int8", "ms": float("nan")}]})


# --------------------------------------------------------------------------------------------- rendering


def test_render_markdown_says_projection_and_cites_sources():
    md = P.render_markdown(P.project(MEASURED))
    assert "projection" in md.lower() and "not a measurement" in md.lower()
    assert "Raspberry Pi 4" in md and "Raspberry Pi 5" in md and "Android" in md
    assert "https://" in md
    for caveat in ("throttl", "single-core", "bandwidth"):
        assert caveat in md.lower()


def test_ratio_table_rows_have_sources():
    rows = P.ratio_table()
    assert rows and all(r["source_url"].startswith("https://") for r in rows)
    assert any(r["ratio"] for r in rows)
    assert "| device |" in P.render_ratio_table(rows)


def test_module_runs_without_tensorflow(tmp_path):
    m = tmp_path / "m.json"
    m.write_text(json.dumps(MEASURED))
    code = (
        "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
        f"sys.path.insert(0, {str(PROJECTION)!r})\n"
        "from device_projection import main\n"
        f"main([{str(m)!r}])\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "projection, not a measurement" in p.stdout.lower()


# ------------------------------------------------------------------------------------ from a bench result


def _five(p50, rows=None):
    return {"status": "ok", "steady": {"n": 50, "p50_ms": p50}, **({"rows": rows} if rows else {})}


def _bundle(name, mode, enc_precision, enc, step, report, encoder_stage):
    return {
        "name": name,
        "kind": "bundle",
        "mode": mode,
        "path": f"/b/{name}",
        "status": "ok",
        "error": None,
        "models": {
            "encoder": {t: _five(ms) for t, ms in enc.items()},
            "decoder_step": {t: _five(ms, 3) for t, ms in step.items()},
        },
        "report": {
            t: {
                "status": "ok",
                "latency": {"n": 100, "p50_ms": ms},
                "stages_mean_ms": {
                    "read_ms": 1.0,
                    "sanity_ms": 0.5,
                    "preprocess_ms": 0.5,
                    "encoder_ms": encoder_stage,
                    "decoder_ms": ms - encoder_stage - 3.0,
                    "labeler_ms": 1.0,
                },
            }
            for t, ms in report.items()
        },
        "throughput": {"encoder_precision": enc_precision},
    }


BENCH = {
    "format": "edgecap-bench/1",
    "edgecap_version": "0",
    "created": "2026-01-02T03:04:05+00:00",
    "machine": {"cpu": "toy cpu", "cores": 2, "platform": "toy", "packages": {"ai-edge-litert": "9"}},
    "settings": {"threads": [1, 2, 4], "beam": 3, "quick": False},
    "inputs": {"count": 100},
    "variants": [
        {
            "name": "keras",
            "kind": "keras",
            "mode": None,
            "status": "ok",
            "error": None,
            "models": {"encoder": {"1": _five(50.0)}},
        },
        {"name": "broken", "kind": "bundle", "mode": "int8", "status": "failed", "error": "sha256"},
        _bundle(
            "int8",
            "int8",
            "float16",
            {"1": 10.0, "2": 6.0, "4": 5.0},
            {"1": 0.3, "2": 0.25, "4": 0.2},
            {"1": 40.0, "2": 30.0, "4": 28.0},
            10.0,
        ),
        _bundle(
            "float32", "float32", "float32", {"1": 12.0, "2": 7.0}, {"1": 0.8, "2": 0.7}, {"1": 80.0, "2": 70.0}, 12.0
        ),
        _bundle("dyn", "dynamic", "dynamic", {"1": 11.0}, {"1": 0.5}, {"1": 60.0}, 11.0),
    ],
}


def test_measured_from_bench_picks_rows_threads_and_precisions():
    m = P.measured_from_bench(BENCH, source="docs/bench/x.json")
    b = m["bench"]
    assert b["threads"] == [1, 2] and b["left_out_threads"] == [4] and b["beam"] == 3  # 4 > 2 cores
    assert [r["mode"] for r in b["rows"]] == ["int8", "float32"]  # failed row skipped, dynamic not asked for
    assert b["rows"][0]["name"] == "int8" and b["rows"][0]["decoder_rows"] == 3
    assert "docs/bench/x.json" in m["label"] and "2026-01-02" in m["label"] and "4 left out" in m["label"]
    figs = {(f["name"], f["threads"]): f for f in m["figures"]}
    assert set(figs) == {
        (f"{mode}/{what}", t)
        for mode in ("int8", "float32")
        for t in (1, 2)
        for what in ("encoder", "decoder_call_3rows", "report_beam3_p50")
    }
    enc = figs[("int8/encoder", 2)]
    assert (enc["precision"], enc["ms"], enc["scales_with_threads"]) == ("float16", 6.0, True)
    step = figs[("int8/decoder_call_3rows", 1)]
    assert (step["precision"], step["ms"], step["scales_with_threads"]) == ("int8", 0.3, False)
    assert "3 hypotheses" in step["note"]
    rep = figs[("int8/report_beam3_p50", 1)]
    assert rep["ms"] == 40.0 and rep["precision"] == "float16+int8"
    parts = {p["name"]: p for p in rep["parts"]}
    # stages sum to the p50 here (40 ms), the encoder stage is 10 ms: a quarter of the report
    assert parts["encoder"] == {"name": "encoder", "precision": "float16", "ms": 10.0, "scales_with_threads": True}
    assert parts["rest"] == {"name": "rest", "precision": "int8", "ms": 30.0, "scales_with_threads": False}
    assert figs[("float32/report_beam3_p50", 2)]["precision"] == "float32"
    # int8-full, when present, takes its encoder precision from the result (int8)
    full = dict(
        BENCH,
        variants=BENCH["variants"] + [_bundle("full", "int8-full", "int8", {"1": 5.0}, {"1": 0.3}, {"1": 30.0}, 5.0)],
    )
    m2 = P.measured_from_bench(full)
    assert [r["mode"] for r in m2["bench"]["rows"]] == ["int8", "int8-full", "float32"]
    f2 = next(f for f in m2["figures"] if f["name"] == "int8-full/report_beam3_p50")
    assert f2["precision"] == "int8" and {p["precision"] for p in f2["parts"]} == {"int8"}
    assert P.project(m2)  # the shipped ratios project every figure it makes


def test_report_in_parts_is_the_sum_of_its_parts_projections(tmp_path):
    rp, hp = _toy(
        tmp_path,
        [
            _e("a", "int8", "d_both", 4, 8.0),
            _e("a", "float32", "d_both", 4, 30.0),
            _e("a", "float32", "d_float", 4, 30.0),
        ],
        [_h("a", "int8", 1, 4.0), _h("a", "float32", 1, 10.0)],
    )
    # int8 ratio 2, float32 ratio 3; device at 4 threads, measured at 1: serial parts x2 (central), x4 (upper)
    fig = {
        "name": "report",
        "precision": "float16+int8",
        "threads": 1,
        "ms": 40.0,
        "parts": [
            {"name": "encoder", "precision": "float16", "ms": 10.0, "scales_with_threads": True},
            {"name": "rest", "precision": "int8", "ms": 30.0, "scales_with_threads": False},
        ],
    }
    result = P.project({"figures": [fig]}, rp, hp)
    f = _by_device(result)["d_both"]["figures"][0]
    assert math.isclose(f["projected_ms"], 10 * 3 + 30 * 2 * 2)
    assert math.isclose(f["projected_min_ms"], 10 * 3 + 30 * 2)
    assert math.isclose(f["projected_max_ms"], 10 * 3 + 30 * 2 * 4)
    assert math.isclose(f["ratio"], f["projected_ms"] / 40.0) and f["thread_correction"] is None
    assert [p["precision_used"] for p in f["parts"]] == ["float32", "int8"]
    assert f["basis"] == "direct" and f["precision_used"] == "float32+int8"
    md = P.render_markdown(result)
    assert "eff." in md and "sum of its parts" in md
    # a device without int8 figures: the rest falls back to float32 (ratio 3), and the basis says so
    f_float = _by_device(result)["d_float"]["figures"][0]
    assert math.isclose(f_float["projected_ms"], 10 * 3 + 30 * 3 * 2)
    assert f_float["basis"] == "encoder: direct; rest: fallback to float32"
    with pytest.raises(ValueError):
        P.normalise_measured({"figures": [{**fig, "ms": 50.0}]})  # parts must sum to the figure
