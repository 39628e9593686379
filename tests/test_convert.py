"""Conversion: the mode table, every mode converted from the overfit tiny run (tests/conftest.py) and verified
stage by stage against Keras on the real sample images, the manifest, and the `convert` command.

Each mode is converted once per session (tests/bundle_cache.py). The overfit run memorised the 10 studies
with findings; study 2779 (no findings) it never saw, so its report is the one where conversions can differ.
"""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import typer
from bundle_cache import converted
from typer.testing import CliRunner

from edgecap.convert.modes import MODES, PRECISIONS, Thresholds, by_name, table_rows

ALL_MODES = list(MODES)


# ---- the table (no TensorFlow) --------------------------------------------------------------------
def test_mode_table_is_consistent():
    assert set(ALL_MODES) == {"float32", "float16", "dynamic", "int8", "int8-full"}
    for field in ("flag", "suffix"):
        values = [getattr(m, field) for m in MODES.values()]
        assert len(set(values)) == len(values), field
    for m in MODES.values():
        assert m.flag == f"--{m.name}" and m.encoder.precision in PRECISIONS and m.decoder.precision in PRECISIONS
        assert m.file_name("encoder") == f"encoder_{m.suffix}.tflite"
        assert m.file_name("decoder_step") == f"decoder_step_{m.suffix}.tflite"
        t = m.thresholds
        assert 0 < t.min_identical <= 1 and t.tie_margin >= 0
        assert 0 < t.max_feature_error < 1 and 0 < t.max_logit_error < 1
        assert not (m.encoder.float_ops and m.encoder.precision != "int8")
    assert MODES["float32"].thresholds.min_identical == MODES["float16"].thresholds.min_identical == 1.0
    assert MODES["float32"].thresholds.tie_margin == MODES["float16"].thresholds.tie_margin == 0.0
    assert MODES["int8"].thresholds.min_identical >= 0.95 and MODES["int8"].needs_calibration
    # the measured decision: int8 = int8 encoder with its worst small layers in float32 + int8 decoder; int8-full
    # quantizes every encoder layer
    assert (MODES["int8"].encoder.precision, MODES["int8"].decoder.precision) == ("int8", "int8")
    assert MODES["int8"].encoder.float_layers > 0 and MODES["int8-full"].encoder.float_layers == 0
    assert (MODES["int8-full"].encoder.precision, MODES["int8-full"].decoder.precision) == ("int8", "int8")
    assert not MODES["dynamic"].tflite_runtime_214 and MODES["int8"].tflite_runtime_214
    assert len(table_rows()) == len(MODES) + 1
    with pytest.raises(ValueError, match="unknown mode"):
        by_name("int4")


def test_weights_per_output_reads_the_shipped_encoder():
    """Each operator's constant inputs, counted from the flatbuffer: EfficientNet-Lite0's stem is a 3x3 convolution
    from 3 to 32 channels (864 weights + 32 biases, batch norm folded in) and the projection 1280 -> 256."""
    from edgecap.convert.flatbuffer import weights_per_output
    from edgecap.runtime.captioner import default_bundle_path

    sizes = weights_per_output((default_bundle_path() / "encoder_int8.tflite").read_bytes())
    (stem,) = [n for name, n in sizes.items() if "/stem_relu6" in name.split(";")[0]]
    (projection,) = [n for name, n in sizes.items() if name.startswith("encoder_1/project_1/Tensordot/MatMul")]
    assert (stem, projection) == (3 * 3 * 3 * 32 + 32, 1280 * 256 + 256)


@pytest.mark.tf
def test_rank_layers_orders_small_layers_by_their_own_error():
    """rmse / scale, largest first; a layer over the weight limit or without weights is never picked."""
    from edgecap.convert.export import rank_layers

    columns = "op_name tensor_idx num_elements stddev mean_error max_abs_error mean_squared_error scale zero_point"
    header = ",".join(columns.split() + ["tensor_name"])
    rows = [
        ("CONV_2D", 0.0009, 0.01, "small_bad"),  # rmse 0.03, 3.0 steps
        ("CONV_2D", 0.0001, 0.02, "small_ok"),  # 0.5 steps
        ("CONV_2D", 0.01, 0.01, "big_worst"),  # 10 steps, but 200,000 weights
        ("ADD", 0.01, 0.01, "no_weights"),
        ("DEPTHWISE_CONV_2D", 0.0004, 0.01, "small_mid"),  # 2.0 steps
    ]
    csv = "\n".join([header] + [f"{op},0,1,0,0,0,{mse},{scale},0,{name}" for op, mse, scale, name in rows])
    weights = {"small_bad": 900, "small_ok": 900, "big_worst": 200_000, "small_mid": 300}
    assert rank_layers(csv, weights, max_weights=100_000) == ["small_bad", "small_mid", "small_ok"]


def test_cli_flags_come_from_the_table():
    from edgecap.cli.convert import convert

    params = inspect.signature(convert).parameters
    for m in MODES.values():
        assert params[m.name.replace("-", "_")].default.param_decls == (m.flag,)


# ---- conversion matrix ------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=ALL_MODES)
def result(request, overfit_run, tmp_path_factory):
    return converted(overfit_run[0], request.param, tmp_path_factory)


@pytest.mark.tf
@pytest.mark.slow
def test_conversion_matrix(result):
    """Files named by the table, builtin ops only (no Flex, no WHILE), thresholds met stage by stage."""
    from edgecap.convert.flatbuffer import op_problems, read_ops

    m, manifest, out = result.mode, result.manifest, result.out
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [m.file_name("encoder"), m.file_name("decoder_step"), "vocab.json", "manifest.json"]
    )
    for part, f in manifest.files.items():
        ops = read_ops((out / f.path).read_bytes())
        assert ops == f.op_versions and tuple(ops) == f.ops
        assert op_problems(ops) == [] and "WHILE" not in ops and not any(o.startswith("CUSTOM") for o in ops)
        assert "FULLY_CONNECTED" in ops and f.precision == m.precision(part)
    v = manifest.verification
    t = m.thresholds
    assert v["passed"], (m.name, v)
    assert v["encoder"]["relative_error"] <= t.max_feature_error
    assert v["decoder_step"]["relative_error"] <= t.max_logit_error
    for key in ("greedy", "beam3"):
        r = v["reports"][key]
        assert r["total"] == 11 and r["share"] >= t.min_identical
    if m.name in ("float32", "float16"):  # exact modes: every report token-identical, no near-tie allowance
        assert all(r["identical"] == 11 for r in v["reports"].values()) and v["differences"] == []
        assert v["decoder_step"]["top1_agreement"] == 1.0
    if m.name == "float32":
        assert v["encoder"]["relative_error"] < 1e-5 and v["decoder_step"]["relative_error"] < 1e-5
    for d in v["differences"]:  # anything not identical must be a documented near tie
        assert d["near_tie"] and d["tie_gap"] < t.tie_margin


@pytest.mark.tf
@pytest.mark.slow
def test_file_sizes_follow_precision(overfit_run, tmp_path_factory):
    size = {
        mode: converted(overfit_run[0], mode, tmp_path_factory).manifest.files["decoder_step"].bytes
        for mode in ALL_MODES
    }
    assert 0.45 < size["float16"] / size["float32"] < 0.55
    assert size["int8"] < 0.35 * size["float32"] and size["dynamic"] < 0.35 * size["float32"]


@pytest.mark.tf
@pytest.mark.slow
def test_int8_calibration_is_real_and_recorded(overfit_run, tmp_path_factory):
    from edgecap.convert.pipeline import DECODER_SAMPLES, DEFAULT_SAMPLES

    for mode in ("int8", "int8-full"):
        r = converted(overfit_run[0], mode, tmp_path_factory)
        cal = r.manifest.calibration
        assert cal["encoder_samples"] == DEFAULT_SAMPLES and cal["real_images"] == 13 and cal["studies"] == 11
        assert cal["encoder_plain"] == 13 and cal["encoder_augmented"] == DEFAULT_SAMPLES - 13
        assert cal["augmentation"]["horizontal_flip"] is False and cal["augmentation"]["seed"] == 42
        assert cal["decoder_samples"] == DECODER_SAMPLES and cal["decoder_steps_recorded"] >= 2 * DECODER_SAMPLES
        assert any("distinct real images" in w for w in cal["warnings"])  # 13 images: warned, in manifest and log
        assert any(line.startswith("warning: only 13 distinct real images") for line in r.log)
        assert r.manifest.files["decoder_step"].precision == "int8"
        assert r.manifest.mode_settings["decoder"]["float_ops"] == list(MODES[mode].decoder.float_ops)
        assert "QUANTIZE" in r.manifest.files["decoder_step"].ops  # int8 kernels inside, float32 at the edges
    mixed = converted(overfit_run[0], "int8", tmp_path_factory)
    assert mixed.manifest.files["encoder"].precision == "int8"
    assert mixed.manifest.mode_settings["encoder"]["float_layers"] == MODES["int8"].encoder.float_layers > 0
    kept = [line for line in mixed.log if "(selective quantization)" in line]
    assert kept == [kept[0]] and f"with {MODES['int8'].encoder.float_layers} layers kept in float32" in kept[0]
    full = converted(overfit_run[0], "int8-full", tmp_path_factory).manifest.files["encoder"]
    assert full.precision == "int8" and "QUANTIZE" in full.ops
    assert converted(overfit_run[0], "float32", tmp_path_factory).manifest.calibration is None


@pytest.mark.tf
@pytest.mark.slow
def test_manifest_describes_the_bundle(overfit_run, tmp_path_factory):
    from edgecap.config import Config
    from edgecap.runtime.bundle import sha256_file
    from edgecap.runtime.manifest import FORMAT, Manifest

    run = overfit_run[0]
    r = converted(run, "int8", tmp_path_factory)
    raw = json.loads((r.out / "manifest.json").read_text())
    m = Manifest.load(r.out)
    assert m.to_json() == raw  # round trip, nothing lost
    assert Manifest.from_json(json.loads(json.dumps(m.to_json()))).to_json() == raw
    cfg = Config.load(run / "config.json")
    assert raw["format"] == FORMAT and raw["mode"] == "int8" and "not validated for clinical use" in raw["notice"]
    assert raw["source"]["config_hash"] == cfg.model_hash()
    assert Config.from_dict(raw["source"]["config"]).to_dict() == cfg.to_dict()
    assert raw["input"] == {
        "size": 128,
        "channels": 3,
        "mean": 127.0,
        "std": 128.0,
        "color": raw["input"]["color"],
        "resize": raw["input"]["resize"],
        "max_views": 2,
        "view_order": ["frontal", "lateral"],
    }
    assert raw["decoder"]["positions_per_view"] == 64 and raw["decoder"]["attention_positions"] == 128
    assert raw["decoder"]["hidden_size"] == 128 and raw["decoder"]["max_len"] == 60
    assert raw["decoder"]["step_batch"] == 3
    assert raw["special"]["bos"] == 1 and raw["special"]["eos"] == 2
    for f in raw["files"].values():
        assert f["sha256"] == sha256_file(r.out / f["path"]) and f["bytes"] == (r.out / f["path"]).stat().st_size
        assert f["min_runtime"]["tflite-runtime"] == "2.14.0"
    dec = raw["files"]["decoder_step"]
    assert dec["inputs"]["h"]["name"] == "h" and dec["outputs"]["h"]["name"] == "h_out"
    # one call advances a beam of 3 hypotheses (convert.pipeline.STEP_BATCH); the image memory is one study's
    assert dec["inputs"]["token"] == {"name": "token", "shape": [3], "dtype": "int32"}
    assert dec["inputs"]["h"]["shape"] == [3, 128] and dec["outputs"]["logits"]["shape"][0] == 3
    assert dec["inputs"]["features"]["shape"][0] == 1 and dec["inputs"]["mask"]["shape"][0] == 1
    assert raw["runtime"]["tflite_runtime_2_14"] is True
    dyn = converted(run, "dynamic", tmp_path_factory).manifest
    assert dyn.runtime["tflite_runtime_2_14"] is False and dyn.files["encoder"].min_runtime["tflite-runtime"] is None
    assert dyn.files["decoder_step"].op_versions["FULLY_CONNECTED"] >= 12  # why tflite-runtime 2.14 refuses it


@pytest.mark.tf
@pytest.mark.slow
def test_bundle_reports_equal_the_keras_generator(overfit_run, iu_data, tmp_path_factory):
    """Independent of convert.verify: the float32 bundle against training.generate.ReportGenerator (the Keras
    reference the training code uses), study by study on the real sample, beam 3."""
    from edgecap.convert.sources import run_source
    from edgecap.runtime.bundle import Bundle
    from edgecap.runtime.decoding import decode
    from edgecap.runtime.study import encode_study_files
    from edgecap.training.generate import ReportGenerator
    from edgecap.training.run_dir import load_model

    run = overfit_run[0]
    b = Bundle.load(converted(run, "float32", tmp_path_factory).out)
    gen = ReportGenerator(*load_model(run))
    studies = run_source(run, 2).studies
    assert len(studies) == 11
    for st in studies:
        ref = gen(st.uid, st.views, beam=3)
        feats, mask = encode_study_files(b, st.views)
        assert np.abs(feats - ref.features).max() < 1e-3 and np.array_equal(mask, ref.mask)
        assert decode(b, feats, mask, b.special, b.max_len, beam=3).ids == ref.decoded.ids, st.uid


@pytest.mark.tf
@pytest.mark.slow
def test_failed_verification_still_writes_the_manifest(overfit_run, tmp_path, monkeypatch):
    """Thresholds no conversion can meet: the bundle and a manifest with the failing verification are written."""
    import dataclasses

    from edgecap.convert import modes
    from edgecap.convert.pipeline import convert_run
    from edgecap.runtime.manifest import Manifest

    strict = dataclasses.replace(MODES["float32"], thresholds=Thresholds(1.0, 0.0, 0.0, 0.0))
    monkeypatch.setitem(modes.MODES, "float32", strict)
    r = convert_run(overfit_run[0], tmp_path / "b", "float32", verify_studies=2, log=lambda s: None)
    assert not r.passed
    v = Manifest.load(tmp_path / "b").verification
    assert v["passed"] is False and v["checks"]["encoder"] is False and v["checks"]["reports_greedy"] is True
    assert v["studies"] == 2


# ---- the command ------------------------------------------------------------------------------------
def _app():
    from edgecap.cli.convert import convert

    app = typer.Typer()
    app.command("convert")(convert)
    app.command("noop")(lambda: None)  # two commands, so `convert` is addressed by name as in edgecap
    return app


def test_cli_mode_flags_are_checked(tmp_path):
    runner = CliRunner()
    r = runner.invoke(_app(), ["convert", "--run", str(tmp_path), "--out", str(tmp_path / "b")])
    assert r.exit_code == 2
    assert "choose exactly one mode: --float32 | --float16 | --dynamic | --int8 | --int8-full" in r.output
    r = runner.invoke(_app(), ["convert", "--run", str(tmp_path), "--out", str(tmp_path / "b"), "--int8", "--float16"])
    assert r.exit_code == 2 and "(got 2)" in r.output


@pytest.mark.tf
def test_cli_bad_run_is_a_usage_error(tmp_path):
    r = CliRunner().invoke(_app(), ["convert", "--run", str(tmp_path / "nope"), "--out", str(tmp_path / "b"), "--int8"])
    assert r.exit_code == 2 and "not a run directory" in r.output and "Traceback" not in r.output


@pytest.mark.tf
@pytest.mark.slow
def test_cli_converts_and_exits_by_verification(overfit_run, tmp_path, tmp_path_factory, monkeypatch):
    runner = CliRunner()
    run = str(overfit_run[0])
    r = runner.invoke(
        _app(),
        [
            "convert",
            "--run",
            run,
            "--out",
            str(tmp_path / "missing-cal"),
            "--int8",
            "--calibration",
            str(tmp_path / "nowhere"),
        ],
    )
    assert r.exit_code == 2 and "no such file or folder" in r.output and "Traceback" not in r.output
    r = runner.invoke(
        _app(), ["convert", "--run", run, "--out", str(tmp_path / "f32"), "--float32", "--verify-studies", "3"]
    )
    assert r.exit_code == 0, r.output
    assert "token-identical to Keras, 3 studies" in r.output and "FAILED" not in r.output
    assert "next: edgecap caption IMAGE --bundle" in r.output
    assert (tmp_path / "f32" / "encoder_float32.tflite").is_file()

    # verification that misses its thresholds: exit 1 after the table (the pipeline already wrote the manifest)
    import copy

    from edgecap.convert import pipeline

    failed = copy.deepcopy(converted(overfit_run[0], "float16", tmp_path_factory))
    failed.passed = False
    failed.manifest.verification["checks"]["reports_greedy"] = False
    monkeypatch.setattr(pipeline, "convert_run", lambda *a, **k: failed)
    r = runner.invoke(_app(), ["convert", "--run", run, "--out", str(failed.out), "--float16"])
    assert r.exit_code == 1 and "verification missed the float16 thresholds (reports_greedy)" in r.output
    assert "Traceback" not in r.output
