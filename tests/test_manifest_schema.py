"""The manifest's schema (runtime.manifest: pydantic dataclasses, strict JSON mode) and the checks of its values
against vocab.json and the loaded models (runtime.bundle), issue #13 items 5 and 6.

Each bad bundle is a copy of the default bundle with manifest.json edited and, where the vocabulary changes,
vocab.json re-hashed into the manifest as an attacker would. Trust is off here (no trusted keys in the
environment), so the copies' stale manifest.sig is not what refuses them: the schema and the checks are.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgecap.runtime.bundle import Bundle, BundleError
from edgecap.runtime.captioner import default_bundle_path
from edgecap.runtime.manifest import MANIFEST_NAME, MAX_LEN_LIMIT, Manifest, ManifestError

DEFAULT = default_bundle_path()
EXIT_USAGE = 2  # edgecap.cli.common: unusable input, nothing done


@pytest.fixture(autouse=True)
def no_trust(monkeypatch, tmp_path):
    """No trusted keys: neither runtime.signing's environment variable nor a config folder of keys."""
    monkeypatch.delenv("EDGECAP_TRUSTED_KEYS", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def raw_manifest() -> dict:
    return json.loads((DEFAULT / MANIFEST_NAME).read_text())


def bad_bundle(tmp_path: Path, change, vocab: str | None = None) -> Path:
    """A copy of the default bundle, its manifest dict passed through `change`; `vocab`: new vocab.json text,
    re-hashed into the manifest (sha256 and bytes)."""
    dst = tmp_path / "bad"
    shutil.copytree(DEFAULT, dst)
    d = raw_manifest()
    if vocab is not None:
        data = vocab.encode()
        (dst / "vocab.json").write_bytes(data)
        d["vocab"].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    change(d)
    (dst / MANIFEST_NAME).write_text(json.dumps(d, indent=2) + "\n")
    return dst


def caption_cli(bundle: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """`edgecap caption IMG --bundle BUNDLE` as a user runs it (a separate process, trust off)."""
    from edgecap.resources import sample_image

    env = {**_env(), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    return subprocess.run(
        [sys.executable, "-m", "edgecap.cli", "caption", str(sample_image()), "--bundle", str(bundle), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "EDGECAP_TRUSTED_KEYS"}


def assert_refused(p: subprocess.CompletedProcess, *words: str) -> None:
    """Exit 2, one "error: ..." line naming the problem, no traceback, no report."""
    assert p.returncode == EXIT_USAGE, (p.returncode, p.stderr[-2000:])
    assert "Traceback" not in p.stderr and p.stdout.strip() == "", p.stderr[-2000:]
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, p.stderr
    for w in words:
        assert w in errors[0], errors[0]


# ---- the schema ---------------------------------------------------------------------------------------
def test_default_manifest_round_trips_byte_for_byte():
    """The shipped manifest validates, and load -> to_json -> save writes exactly the same bytes."""
    text = (DEFAULT / MANIFEST_NAME).read_text()
    m = Manifest.load(DEFAULT)
    assert json.dumps(m.to_json(), indent=2) + "\n" == text
    assert Manifest.from_json(m.to_json()).to_json() == json.loads(text)
    assert m.input.view_order == ("frontal", "lateral") and m.files["encoder"].inputs["image"].shape == (1, 224, 224, 3)


def test_json_schema_export_describes_the_manifest():
    """Manifest.json_schema(): the same schema as JSON Schema, for people and other tools; the default manifest
    (and one written before decoder.step_batch) validates against it, a wrongly typed one does not."""
    import jsonschema

    schema = Manifest.json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    raw = raw_manifest()
    validator.validate(raw)
    del raw["decoder"]["step_batch"]
    validator.validate(raw)
    raw["input"]["size"] = "224"
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(raw)
    dec = schema["$defs"]["DecoderSpec"]["properties"]["max_len"]
    assert (dec["minimum"], dec["maximum"]) == (1, MAX_LEN_LIMIT)
    assert "extra" not in schema["properties"] and schema["properties"]["format"]["const"] == "edgecap-bundle/1"
    p = subprocess.run([sys.executable, "-m", "edgecap.runtime.manifest"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and json.loads(p.stdout) == schema


def test_unknown_keys_are_kept_and_old_manifests_read():
    raw = raw_manifest()
    raw["future_field"] = {"a": [1, 2]}
    m = Manifest.from_json(raw)
    assert m.extra == {"future_field": {"a": [1, 2]}} and m.to_json() == raw
    del raw["decoder"]["step_batch"]  # written before the field: the decoder step's token rows
    assert Manifest.from_json(raw).decoder.step_batch == 3


# ---- item 5: wrongly typed fields ----------------------------------------------------------------------
TYPED = {
    "input.size": (lambda d: d["input"].update(size="224"), "input.size: Input should be a valid integer"),
    "vocab.bytes": (lambda d: d["vocab"].update(bytes="27774"), "vocab.bytes: Input should be a valid integer"),
    "vocab.sha256": (lambda d: d["vocab"].update(sha256=12345), "vocab.sha256: Input should be a valid string"),
    "vocab.path": (lambda d: d["vocab"].update(path=7), "vocab.path: Input should be a valid string"),
    "input.std": (lambda d: d["input"].update(std="x"), "input.std: Input should be a valid number"),
    "shape": (
        lambda d: d["files"]["encoder"]["inputs"]["image"].update(shape=[1, 224.0, 224, 3]),
        "files.encoder.inputs.image.shape[1]: Input should be a valid integer",
    ),
    "bool": (lambda d: d["decoder"].update(step_batch=True), "decoder.step_batch: Input should be a valid integer"),
    "special": (lambda d: d["special"].update(bos="1"), "special.bos: Input should be a valid integer"),
    "object": (lambda d: d.update(decoder=[60]), "decoder: Input should be an object"),
}


@pytest.mark.parametrize("case", TYPED)
def test_wrongly_typed_field_is_one_line_naming_it(case, tmp_path):
    change, message = TYPED[case]
    with pytest.raises(ManifestError, match="^manifest: " + _re(message)):
        Manifest.from_json(_changed(change))
    path = bad_bundle(tmp_path, change)
    with pytest.raises(BundleError, match=_re(message)) as e:
        Bundle.load(path)
    assert "\n" not in str(e.value)


def test_wrongly_typed_fields_exit_2_in_caption(tmp_path):
    """Each of the issue's typed fields, through the CLI: exit 2 and one error line, where a traceback was."""
    for case in ("input.size", "vocab.bytes", "vocab.sha256", "vocab.path"):
        change, message = TYPED[case]
        shutil.rmtree(tmp_path / "bad", ignore_errors=True)
        assert_refused(caption_cli(bad_bundle(tmp_path, change), tmp_path), message)


def test_wrongly_typed_field_exits_2_in_serve(tmp_path):
    """`edgecap serve` loads the bundle before it binds a port: the same one line and exit 2."""
    path = bad_bundle(tmp_path, TYPED["input.size"][0])
    p = subprocess.run(
        [sys.executable, "-m", "edgecap.cli", "serve", "--bundle", str(path), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**_env(), "XDG_CONFIG_HOME": str(tmp_path / "config")},
    )
    assert_refused(p, "input.size: Input should be a valid integer")


VOCABS = {
    "a list": ("[1, 2, 3]", "not an edgecap vocabulary (a JSON list, not an object)"),
    "tokens": ('{"format": "edgecap-vocab/1", "tokens": "abc"}', "tokens must be a list of strings"),
    "counts": (
        '{"format": "edgecap-vocab/1", "tokens": ["<pad>", "<bos>", "<eos>", "<unk>"], "counts": {"a": "1"}}',
        "counts must map tokens to integers",
    ),
    "not json": ("{tokens", "not readable JSON"),
}


@pytest.mark.parametrize("case", VOCABS)
def test_wrongly_typed_vocabulary_is_a_bundle_error(case, tmp_path):
    text, message = VOCABS[case]
    path = bad_bundle(tmp_path, lambda d: None, vocab=text)
    with pytest.raises(BundleError, match=_re(f"{path / 'vocab.json'}: {message}")):
        Bundle.load(path)


def test_list_vocabulary_exits_2_in_caption(tmp_path):
    path = bad_bundle(tmp_path, lambda d: None, vocab="[1,2,3]")
    assert_refused(caption_cli(path, tmp_path), "vocab.json: not an edgecap vocabulary")


# ---- item 6: values checked for sense at load ---------------------------------------------------------
SENSE = {
    "max_len -5": (lambda d: d["decoder"].update(max_len=-5), "decoder.max_len must be >= 1, got -5"),
    "max_len 10**9": (lambda d: d["decoder"].update(max_len=10**9), "decoder.max_len must be <= 1024"),
    "std 0": (lambda d: d["input"].update(std=0.0), "input.std must be > 0"),
    "size 0": (lambda d: d["input"].update(size=0), "input.size must be > 0"),
    "channels": (lambda d: d["input"].update(channels=1), "input.channels: Input should be 3"),
    "views": (lambda d: d["input"].update(view_order=["frontal"]), "input.view_order names 1 views, max_views is 2"),
    "eos outside": (lambda d: d["special"].update(eos=899), "special.eos missing or outside the vocabulary"),
    "sep outside": (lambda d: d["special"].update(sep=5000), "special.sep outside the vocabulary"),
}


@pytest.mark.parametrize("case", SENSE)
def test_senseless_value_is_refused_by_the_manifest(case, tmp_path):
    change, message = SENSE[case]
    with pytest.raises(ManifestError, match=_re(message)):
        Manifest.from_json(_changed(change))
    with pytest.raises(BundleError, match=_re(message)):
        Bundle.load(bad_bundle(tmp_path, change))


def test_nan_mean_is_refused(tmp_path):
    """json.loads reads NaN and Infinity; the schema refuses them (every pixel would become NaN)."""
    path = bad_bundle(tmp_path, lambda d: d["input"].update(mean=float("nan")))
    assert '"mean": NaN' in (path / MANIFEST_NAME).read_text()
    with pytest.raises(BundleError, match=r"input\.mean: Input should be a finite number"):
        Bundle.load(path)


def _more_tokens(n: int) -> str:
    v = json.loads((DEFAULT / "vocab.json").read_text())
    v["tokens"] += [f"extra{i}" for i in range(n)]
    return json.dumps(v, indent=1) + "\n"


MODEL = {
    # each manifest is self-consistent and re-hashed: only the loaded model's tensors can tell it is wrong
    "size": (lambda d: d["input"].update(size=256), None, "input 'image' is (1, 224, 224, 3)", "(1, 256, 256, 3)"),
    "positions": (
        lambda d: d["decoder"].update(positions_per_view=50, attention_positions=100),
        None,
        "output 'features' is (1, 49, 256)",
        "(1, 50, 256)",
    ),
    "feature_dim": (lambda d: d["decoder"].update(feature_dim=128), None, "output 'features'", "(1, 49, 128)"),
    "hidden_size": (lambda d: d["decoder"].update(hidden_size=256), None, "input 'h' is (3, 512)", "(3, 256)"),
    "vocab_size": (lambda d: d["decoder"].update(vocab_size=900), _more_tokens(1), "output 'logits'", "(3, 900)"),
}


@pytest.mark.parametrize("case", MODEL)
def test_manifest_sizes_must_match_the_loaded_models(case, tmp_path):
    change, vocab, actual, implied = MODEL[case]
    path = bad_bundle(tmp_path, change, vocab)
    Manifest.load(path)  # the manifest alone is consistent
    with pytest.raises(BundleError, match=_re(actual)) as e:
        Bundle.load(path)
    assert implied in str(e.value) and "the manifest's" in str(e.value)


def test_vocab_size_must_match_vocab_json(tmp_path):
    path = bad_bundle(tmp_path, lambda d: None, vocab=_more_tokens(2))
    with pytest.raises(BundleError, match="vocab.json has 901 tokens, the manifest says 899"):
        Bundle.load(path)


def test_special_ids_must_match_vocab_json(tmp_path):
    path = bad_bundle(tmp_path, lambda d: d["special"].update(unk=5))
    with pytest.raises(BundleError, match="special token ids in the manifest .* do not match vocab.json"):
        Bundle.load(path)


def test_senseless_values_exit_2_in_caption(tmp_path):
    """max_len -5 gave an empty report and exit 0; input.size 256 failed every image: now both stop at load."""
    assert_refused(caption_cli(bad_bundle(tmp_path, SENSE["max_len -5"][0]), tmp_path), "decoder.max_len")
    shutil.rmtree(tmp_path / "bad")
    assert_refused(caption_cli(bad_bundle(tmp_path, MODEL["size"][0]), tmp_path), "input.size")
    shutil.rmtree(tmp_path / "bad")
    assert_refused(caption_cli(bad_bundle(tmp_path, TYPED["input.std"][0]), tmp_path), "input.std")


def _changed(change) -> dict:
    d = raw_manifest()
    change(d)
    return d


def _re(text: str) -> str:
    import re

    return re.escape(text)


# ---- issue 18: the decoder kind ------------------------------------------------------------------------
def sequence_manifest() -> dict:
    """The default manifest turned into a sequence decoder's (a user's Keras captioner, one view, L = 22)."""
    raw = raw_manifest()
    dec = raw["decoder"]
    del dec["hidden_size"]
    dec.update(
        kind="sequence",
        sequence_length=22,
        padding="pre",
        max_len=21,
        positions_per_view=1,
        attention_positions=1,
        feature_dim=64,
    )
    raw["input"].update(
        max_views=1,
        view_order=["frontal"],
        normalization="torch",
        channel_mean=[123.675, 116.28, 103.53],
        channel_std=[58.395, 57.12, 57.375],
    )
    step = raw["files"]["decoder_step"]
    step["inputs"] = {
        "sequence": {"name": "sequence", "shape": [3, 22], "dtype": "float32"},
        "features": {"name": "features", "shape": [3, 64], "dtype": "float32"},
    }
    step["outputs"] = {"logits": {"name": "logits", "shape": [3, dec["vocab_size"]], "dtype": "float32"}}
    return raw


def test_decoder_kind_defaults_to_recurrent_and_stays_unwritten():
    """A manifest without decoder.kind (every bundle before issue 18) is recurrent, and saving it writes no new
    key: the default manifest round-trips byte for byte (test above)."""
    m = Manifest.from_json(raw_manifest())
    assert m.decoder.kind == "recurrent" and m.decoder.sequence_length is None and m.input.channel_mean is None
    assert "kind" not in m.to_json()["decoder"] and "normalization" not in m.to_json()["input"]


def test_sequence_manifest_validates_and_round_trips():
    import jsonschema

    raw = sequence_manifest()
    m = Manifest.from_json(raw)
    assert (m.decoder.kind, m.decoder.hidden_size, m.input.channel_std) == ("sequence", None, (58.395, 57.12, 57.375))
    assert m.to_json() == raw and set(m.decoder.roles()["decoder_step"][0]) == {"sequence", "features"}
    assert m.tensor_shapes()["decoder_step"]["inputs"] == {"sequence": (3, 22), "features": (3, 64)}
    jsonschema.Draft202012Validator(Manifest.json_schema()).validate(raw)


SEQUENCE_SENSELESS = {
    "no length": (lambda d: d["decoder"].pop("sequence_length"), "needs sequence_length and padding"),
    "max_len": (lambda d: d["decoder"].update(max_len=22), "does not fit sequence_length 22"),
    "two views": (
        lambda d: (
            d["input"].update(max_views=2, view_order=["frontal", "lateral"]),
            d["decoder"].update(attention_positions=2),
        ),
        "max_views 1",
    ),
    "padding": (lambda d: d["decoder"].update(padding="middle"), "decoder.padding"),
    "recurrent kind, sequence tensors": (
        lambda d: d["decoder"].update(kind="recurrent", hidden_size=64),
        "files.decoder_step.inputs lacks 'token'",
    ),
    "recurrent roles": (
        lambda d: d["files"]["decoder_step"]["inputs"].pop("sequence"),
        "files.decoder_step.inputs lacks 'sequence'",
    ),
    "channel std": (lambda d: d["input"].pop("channel_std"), "channel_mean and channel_std go together"),
    "kind": (lambda d: d["decoder"].update(kind="transformer"), "decoder.kind"),
}


@pytest.mark.parametrize("case", SEQUENCE_SENSELESS)
def test_senseless_sequence_manifest_is_one_line(case):
    change, words = SEQUENCE_SENSELESS[case]
    raw = sequence_manifest()
    change(raw)
    with pytest.raises(ManifestError) as e:
        Manifest.from_json(raw)
    assert words in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_recurrent_manifest_needs_hidden_size():
    raw = raw_manifest()
    del raw["decoder"]["hidden_size"]
    with pytest.raises(ManifestError, match="decoder lacks hidden_size"):
        Manifest.from_json(raw)
