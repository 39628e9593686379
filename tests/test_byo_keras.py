"""Bring your own Keras captioner (issue 18): notebook-style "merge" and "inject" models, trained here on the
bundled sample's real reports, converted, verified and run by every front end.

The models are built as such notebooks build them: a Keras Tokenizer (keras_preprocessing, saved with
tokenizer.to_json()) over "startseq ... endseq" captions, image features from a CNN, pad_sequences prefixes,
Embedding(mask_zero=True) -> LSTM, softmax over the vocabulary; saved as .keras and as legacy .h5. The CNN is
a tiny one with random weights (no ImageNet weights can be downloaded here) and the captions are cut to their
first 20 words, so one training of both models takes seconds; one pair serves the whole session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from edgecap.runtime.decoding import SpecialIds, beam_search, decode, greedy
from edgecap.runtime.study import fuse_views
from edgecap.runtime.tokenizer import TokenizerError, vocabulary_from_keras_json
from edgecap.runtime.vocab import Vocabulary

WORDS = 20  # caption words kept per report
SIZE = 224  # the CNN's input, as notebooks use
EPOCHS = 60


# ---- the tokenizer and the vocabulary (no TensorFlow) ----------------------------------------------------------
def _tokenizer(texts, **kw):
    from keras_preprocessing.text import Tokenizer

    tok = Tokenizer(**kw)
    tok.fit_on_texts(texts)
    return tok


CAPTIONS = ["startseq the heart is normal in size endseq", "startseq the lungs are clear endseq"]


def test_keras_tokenizer_json_becomes_the_vocabulary(tmp_path):
    """tokenizer.to_json() -> vocab.json keeping the Tokenizer's ids: 0 pad, start / end words as bos / eos,
    the oov_token as unk; it round-trips through vocab.json and decodes without the markers."""
    tok = _tokenizer(CAPTIONS, oov_token="<unk>")
    path = tmp_path / "tokenizer.json"
    path.write_text(tok.to_json())
    v = vocabulary_from_keras_json(path)
    assert len(v) == len(tok.word_index) + 1
    assert all(v.tokens[i] == w for w, i in tok.word_index.items())
    assert v.special_ids() == {
        "pad": 0,
        "bos": tok.word_index["startseq"],
        "eos": tok.word_index["endseq"],
        "unk": tok.word_index["<unk>"],
        "sep": -1,
    }
    v.save(tmp_path / "vocab.json")
    again = Vocabulary.load(tmp_path / "vocab.json")
    assert again.tokens == v.tokens and again.special_ids() == v.special_ids()
    ids = tok.texts_to_sequences(["startseq the lungs are clear endseq the"])[0]
    assert again.decode(ids) == ["the", "lungs", "are", "clear"]


def test_tokenizer_num_words_and_no_oov(tmp_path):
    """num_words limits the ids a model knows; without an oov_token, unk is the padding id (never generated)."""
    tok = _tokenizer(CAPTIONS * 3 + ["startseq rare endseq"], num_words=8)
    path = tmp_path / "t.json"
    path.write_text(tok.to_json())
    v = vocabulary_from_keras_json(path)
    assert len(v) == 8 and v.special_ids()["unk"] == 0 and "rare" not in v.tokens


@pytest.mark.parametrize(
    "content, start, message",
    [
        (None, "begin", "the start token 'begin' is not in the Tokenizer's word_index"),
        ('{"class_name": "Sequential", "config": {}}', "startseq", "not a Keras Tokenizer"),
        ("not json", "startseq", "not a readable JSON file"),
        ('{"class_name": "Tokenizer", "config": {"word_index": "[1, 2]"}}', "startseq", "word_index must map"),
    ],
)
def test_tokenizer_errors_are_one_line(tmp_path, content, start, message):
    path = tmp_path / "t.json"
    path.write_text(_tokenizer(CAPTIONS).to_json() if content is None else content)
    with pytest.raises(TokenizerError) as e:
        vocabulary_from_keras_json(path, start=start)
    assert message in str(e.value) and "\n" not in str(e.value) and str(path) in str(e.value)


# ---- the decode loop over a sequence-input decoder (no TensorFlow) ----------------------------------------------
V = 9
SPECIAL = SpecialIds(1, 2, (0, 1, 3))


class TableStep:
    """Recurrent form of a Markov table: next-token logits from the previous token (h carries nothing)."""

    hidden_size = 2

    def __init__(self, logits):
        self.logits = logits

    def step(self, tokens, h, c, features, mask):
        return self.logits[tokens], h, c, np.broadcast_to(mask / mask.sum(), (len(tokens), len(mask)))


class TableSequence:
    """The same table as a sequence-input decoder: it reads the last token of the padded prefix."""

    decoder_kind = "sequence"

    def __init__(self, logits, length, padding):
        self.logits, self.sequence_length, self.padding = logits, length, padding
        self.prefixes: list[np.ndarray] = []

    def predict_next(self, prefixes, features, mask):
        self.prefixes.append(prefixes.copy())
        n = (prefixes != 0).sum(axis=1)
        last = prefixes[:, -1] if self.padding == "pre" else prefixes[np.arange(len(prefixes)), n - 1]
        return self.logits[last]


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("padding", ["pre", "post"])
def test_sequence_decoder_runs_the_same_loop(seed, padding):
    """A sequence decoder and a recurrent one computing the same distribution give the same reports, greedy and
    beam 3 with trigram blocking, through the one loop; the sequence decoder has no attention."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (V, V))
    logits[:, 2] += rng.normal(-1, 1)  # <eos> likely enough to end most reports
    feats, mask = fuse_views([np.ones((1, 4), np.float32)], 1)
    max_len = 12
    seq = TableSequence(logits, max_len + 1, padding)
    for beam in (1, 3):
        a = decode(TableStep(logits), feats, mask, SPECIAL, max_len, beam=beam)
        b = decode(seq, feats, mask, SPECIAL, max_len, beam=beam)
        assert (a.ids, a.finished, a.steps) == (b.ids, b.finished, b.steps) and np.isclose(a.logprob, b.logprob)
        assert b.attention is None and a.attention is not None
    first = seq.prefixes[0][0]
    assert first.tolist() == ([0] * max_len + [1] if padding == "pre" else [1] + [0] * max_len)


def test_sequence_prefix_never_overflows():
    feats, mask = fuse_views([np.ones((1, 4), np.float32)], 1)
    logits = np.zeros((V, V))
    logits[:, 4] = 5.0  # never ends by itself
    model = TableSequence(logits, 6, "pre")
    g = greedy(model, feats, mask, SPECIAL, max_len=5)
    assert g.ids == [4] * 5 and not g.finished and max(p.shape[1] for p in model.prefixes) == 6
    b = beam_search(model, feats, mask, SPECIAL, 5, beam=3, block_trigrams=False)
    assert len(b.ids) <= 5
    with pytest.raises(ValueError, match="does not fit the decoder's sequence length 6"):
        greedy(model, feats, mask, SPECIAL, max_len=6)


# ---- the preprocessing modes of Keras applications ---------------------------------------------------------------
@pytest.mark.tf
@pytest.mark.parametrize("mode", ["caffe", "torch", "tf"])
def test_normalization_modes_equal_keras_preprocess_input(mode):
    """The manifest's per-channel numbers reproduce imagenet_utils.preprocess_input on the grey image replicated
    to RGB, for each mode the applications use."""
    from keras.applications import imagenet_utils

    from edgecap.runtime.normalization import channel_stats
    from edgecap.runtime.preprocess import normalize

    gray = np.random.default_rng(0).random((16, 16), dtype=np.float32)
    rgb = np.repeat((gray * 255.0)[:, :, None], 3, axis=2)
    want = np.asarray(imagenet_utils.preprocess_input(rgb.copy(), mode=mode))
    mean, std = channel_stats(mode)
    assert np.allclose(normalize(gray, np.array(mean), np.array(std)), want, atol=1e-4)


# ---- real models, trained here ----------------------------------------------------------------------------------
def _sample_studies():
    """(uid, frontal image, findings) of the bundled sample's studies with a frontal view and findings."""
    from edgecap.data import iu_xray
    from edgecap.resources import sample_dir

    out = []
    for s in iu_xray.load(sample_dir()).studies:
        frontal = s.views()[0]
        if frontal is not None and s.findings:
            out.append((s.uid, frontal.path, s.findings))
    return out


@pytest.fixture(scope="session")
def byo(tmp_path_factory):
    """Merge and inject captioners trained as a notebook trains them, with their tokenizer and CNN files."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("keras_preprocessing")
    from keras import layers
    from keras.utils import pad_sequences  # keras_preprocessing's own uses np.unicode_, gone in numpy 2

    from edgecap.runtime.preprocess import load
    from edgecap.training.tf_env import keras

    out = tmp_path_factory.mktemp("byo")
    keras.utils.set_random_seed(0)
    studies = _sample_studies()
    captions = ["startseq " + " ".join(text.split()[:WORDS]) + " endseq" for _, _, text in studies]
    tok = _tokenizer(captions)
    (out / "tokenizer.json").write_text(tok.to_json())
    vocab_size = len(tok.word_index) + 1
    seqs = tok.texts_to_sequences(captions)
    max_length = max(len(s) for s in seqs)

    image = keras.Input((SIZE, SIZE, 3))
    x = layers.Conv2D(16, 5, strides=4, activation="relu")(image)
    x = layers.Conv2D(32, 3, strides=2, activation="relu")(x)
    x = layers.Conv2D(64, 3, strides=2, activation="relu")(x)
    cnn = keras.Model(image, layers.GlobalAveragePooling2D()(x), name="tiny_cnn")
    cnn.save(out / "cnn.keras")
    feats = np.stack([np.asarray(cnn(load(path, SIZE, 127.5, 127.5)[None]))[0] for _, path, _ in studies])
    fdim = feats.shape[1]

    x1, x2, y = [], [], []
    for f, s in zip(feats, seqs):
        for i in range(1, len(s)):
            x1.append(f)
            x2.append(pad_sequences([s[:i]], maxlen=max_length)[0])
            y.append(s[i])

    def merge():
        i1 = keras.Input((fdim,))
        fe = layers.Dense(64, activation="relu")(layers.Dropout(0.2)(i1))
        i2 = keras.Input((max_length,))
        se = layers.Embedding(vocab_size, 64, mask_zero=True)(i2)
        se = layers.LSTM(64)(layers.Dropout(0.2)(se))
        d = layers.Dense(64, activation="relu")(layers.add([fe, se]))
        return keras.Model([i1, i2], layers.Dense(vocab_size, activation="softmax")(d))

    def inject():
        i1 = keras.Input((fdim,))
        h0 = layers.Dense(64, activation="tanh")(i1)
        i2 = keras.Input((max_length,))
        se = layers.Embedding(vocab_size, 64, mask_zero=True)(i2)
        lstm = layers.LSTM(64)(se, initial_state=[h0, h0])
        return keras.Model([i2, i1], layers.Dense(vocab_size, activation="softmax")(lstm))  # sequence first

    accuracy = {}
    for name, build in (("merge", merge), ("inject", inject)):
        model = build()
        model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", metrics=["accuracy"])
        inputs = [np.array(x1), np.array(x2)] if name == "merge" else [np.array(x2), np.array(x1)]
        h = model.fit(inputs, np.array(y), epochs=EPOCHS, batch_size=64, verbose=0)
        accuracy[name] = h.history["accuracy"][-1]
        model.save(out / f"{name}.keras")
        model.save(out / f"{name}.h5")  # legacy HDF5, as older notebooks saved
    return {"dir": out, "studies": studies, "captions": captions, "max_length": max_length, "accuracy": accuracy}


@pytest.fixture
def keep_affinity():
    """`edgecap convert` pins its process to one CPU (convert.pipeline.pin_to_one_cpu); give the test process
    its CPUs back afterwards."""
    get = getattr(os, "sched_getaffinity", None)
    cpus = get(0) if get else None
    yield
    if cpus is not None:
        os.sched_setaffinity(0, cpus)


def _convert_app():
    from edgecap.cli.convert import convert

    app = typer.Typer()
    app.command("convert")(convert)
    app.command("noop")(lambda: None)
    return app


def _keras_args(d: Path, model: str, out: Path, *extra: str, tokenizer: Path | None = None) -> list[str]:
    """`edgecap convert --keras` arguments for a model of folder d with the session's tokenizer and CNN."""
    return [
        "convert",
        "--keras",
        str(d / model),
        "--tokenizer",
        str(tokenizer or d / "tokenizer.json"),
        "--encoder",
        str(d / "cnn.keras"),
        "--normalization",
        "tf",
        "--out",
        str(out),
        *extra,
    ]


@pytest.mark.tf
def test_models_learned_the_reports(byo):
    """The trained models are real captioners: they predict the sample's next words."""
    assert min(byo["accuracy"].values()) > 0.8, byo["accuracy"]


def _bad_models(d: Path) -> None:
    """What users bring by mistake: a model with three inputs, one without a sequence input, an encoder of
    another feature size, files that are not Keras models."""
    from keras import layers

    from edgecap.training.tf_env import keras

    ins = [keras.Input((8,)), keras.Input((5,)), keras.Input((4,))]
    emb = layers.LSTM(4)(layers.Embedding(10, 4)(ins[1]))
    three = keras.Model(ins, layers.Dense(10, activation="softmax")(layers.concatenate([ins[0], emb, ins[2]])))
    three.save(d / "three.keras")
    a, b = keras.Input((8,)), keras.Input((5,))
    keras.Model([a, b], layers.Dense(10, activation="softmax")(layers.concatenate([a, b]))).save(d / "dense.keras")
    image = keras.Input((SIZE, SIZE, 3))
    pooled = layers.GlobalAveragePooling2D()(layers.Conv2D(8, 3, strides=8)(image))
    keras.Model(image, pooled).save(d / "cnn8.keras")
    (d / "notes.keras").write_text("not a model")
    (d / "model.txt").write_text("not a model")


@pytest.mark.tf
def test_bad_inputs_exit_2_with_one_line(byo, tmp_path, keep_affinity):
    """Each mistake a user can make is one error line and exit status 2, before anything is converted."""
    d, t = byo["dir"], tmp_path
    _bad_models(t)
    other = t / "other_tokenizer.json"
    other.write_text(_tokenizer(byo["captions"] + ["startseq extra words here endseq"]).to_json())
    out = t / "b"
    wrong_encoder = _keras_args(d, "merge.keras", out, "--float16")
    wrong_encoder[wrong_encoder.index("--encoder") + 1] = str(t / "cnn8.keras")
    no_encoder = _keras_args(d, "merge.keras", out, "--float16")
    del no_encoder[no_encoder.index("--encoder") : no_encoder.index("--encoder") + 2]
    cases = {
        "tokenizer size": (
            _keras_args(d, "merge.keras", out, "--float16", tokenizer=other),
            "not the tokenizer this model was trained with",
        ),
        "three inputs": (
            _keras_args(t, "three.keras", out, "--float16", tokenizer=d / "tokenizer.json"),
            "expected 2 inputs",
        ),
        "no sequence input": (
            _keras_args(t, "dense.keras", out, "--float16", tokenizer=d / "tokenizer.json"),
            "no sequence input",
        ),
        "start token": (
            _keras_args(d, "merge.keras", out, "--float16", "--start", "begin"),
            "the start token 'begin' is not in the Tokenizer's word_index",
        ),
        "end token": (
            _keras_args(d, "merge.keras", out, "--float16", "--end", "fin"),
            "the end token 'fin' is not in the Tokenizer's word_index",
        ),
        "not keras": (
            _keras_args(t, "notes.keras", out, "--float16", tokenizer=d / "tokenizer.json"),
            "not a readable Keras model",
        ),
        "not a model file": (
            _keras_args(t, "model.txt", out, "--float16", tokenizer=d / "tokenizer.json"),
            "not a Keras model file",
        ),
        "no encoder": (no_encoder, "give the image encoder"),
        "encoder features": (wrong_encoder, "the encoder gives 8 features per image"),
        "max length": (_keras_args(d, "merge.keras", out, "--float16", "--max-length", "3"), "reads sequences of"),
    }
    runner = CliRunner()
    for name, (args, message) in cases.items():
        r = runner.invoke(_convert_app(), args)
        lines = [line for line in r.output.splitlines() if line.startswith("error:")]
        assert r.exit_code == 2, (name, r.output)
        assert len(lines) == 1 and message in lines[0], (name, r.output)
        assert "Traceback" not in r.output
    assert not (out / "manifest.json").exists()


# ---- conversion, verification and every front end ------------------------------------------------------------
# (model file, mode): each form in both modes, each file format in both modes; the first through the CLI
CONVERSIONS = (("merge.keras", "int8"), ("merge.h5", "float16"), ("inject.keras", "float16"), ("inject.h5", "int8"))
CALIBRATION = ("--samples", "20", "--decoder-samples", "300")  # the sample's 5 studies, augmented: seconds


@pytest.fixture(scope="session")
def byo_bundles(byo, tmp_path_factory):
    """The four conversions of CONVERSIONS -> {(model file, mode): bundle folder}; the first by `edgecap
    convert` itself (its exit status and last lines checked here), the others by convert_keras."""
    from edgecap.convert.keras_import import KerasImport, convert_keras

    d, root = byo["dir"], tmp_path_factory.mktemp("byo_bundles")
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    bundles, outputs = {}, {}
    for model, mode in CONVERSIONS:
        out = root / f"{model.replace('.', '-')}-{mode}"
        if not bundles:
            r = CliRunner().invoke(_convert_app(), _keras_args(d, model, out, f"--{mode}", *CALIBRATION))
            if cpus is not None:
                os.sched_setaffinity(0, cpus)
            assert r.exit_code == 0, r.output
            assert "converted and verified" in r.output and f"edgecap caption IMAGE --bundle {out}" in r.output
            outputs[(model, mode)] = r.output
        else:
            src = KerasImport(d / model, d / "tokenizer.json", encoder=d / "cnn.keras", normalization="tf")
            result = convert_keras(src, out, mode, log=lambda s: None, samples=20, decoder_samples=300)
            assert result.passed, result.manifest.verification
        bundles[(model, mode)] = out
    return bundles


@pytest.mark.tf
@pytest.mark.slow
def test_both_forms_convert_and_pass_verification(byo, byo_bundles):
    """int8 and float16 of both forms, from .keras and .h5, verified against the user's Keras model with the
    gates of edgecap's own bundles (convert.modes), greedy and beam 3, on the bundled sample's real images."""
    from edgecap.convert.modes import by_name
    from edgecap.runtime.manifest import Manifest

    vocab = vocabulary_from_keras_json(byo["dir"] / "tokenizer.json")
    for (model, mode), folder in byo_bundles.items():
        m = Manifest.load(folder)
        v = m.verification
        assert v["passed"] and v["thresholds"] == by_name(mode).thresholds.to_dict(), (model, mode)
        assert set(v["reports"]) == {"greedy", "beam3"} and v["studies"] == len(byo["studies"])
        d = m.decoder
        assert (d.kind, d.sequence_length, d.padding, d.max_len) == (
            "sequence",
            byo["max_length"],
            "pre",
            byo["max_length"] - 1,
        )
        assert (d.vocab_size, d.hidden_size, d.positions_per_view) == (len(vocab), None, 1)
        assert m.input.normalization == "tf" and m.input.channel_mean == (127.5,) * 3 and m.input.size == SIZE
        assert m.special == vocab.special_ids() and m.source["keras_decoder"].endswith(model)
        assert "decoder_step" in m.files and set(m.files["decoder_step"].inputs) == {"sequence", "features"}
        assert all("WHILE" not in f.ops for f in m.files.values())  # LSTMs exported unrolled
        assert m.files["decoder_step"].precision == ("int8" if mode == "int8" else "float16")


@pytest.mark.tf
@pytest.mark.slow
def test_reports_are_the_notebooks_own_greedy_loop(byo, byo_bundles):
    """The notebook's decoding (model.predict on the padded prefix, argmax, stop at endseq) and the bundle's
    greedy report through edgecap's loop write the same words for every sample image."""
    from keras.utils import pad_sequences
    from keras_preprocessing.text import tokenizer_from_json

    from edgecap.runtime.captioner import Captioner
    from edgecap.runtime.preprocess import load
    from edgecap.training.keras_sequence import load_keras_model
    from edgecap.training.tf_env import keras

    d = byo["dir"]
    tok = tokenizer_from_json((d / "tokenizer.json").read_text())
    cnn = keras.models.load_model(d / "cnn.keras")
    for model_file in ("merge.h5", "inject.keras"):
        model = load_keras_model(d / model_file)
        captioner = Captioner.from_bundle(byo_bundles[(model_file, "float16")])
        for _, path, _ in byo["studies"]:
            feature = np.asarray(cnn(load(path, SIZE, 127.5, 127.5)[None]))  # the runtime's image, the loop apart
            text = "startseq"
            for _ in range(byo["max_length"]):
                seq = pad_sequences(tok.texts_to_sequences([text]), maxlen=byo["max_length"])
                inputs = [feature, seq] if model_file.startswith("merge") else [seq, feature]  # as built above
                word = tok.index_word.get(int(np.argmax(model(inputs, training=False))))  # model.predict, faster
                if word is None or word == "endseq":
                    break
                text += " " + word
            report = captioner.caption(str(path), beam=1)
            assert report.tokens == text.split()[1:], (model_file, path.name)


@pytest.mark.tf
@pytest.mark.slow
def test_caption_cli_and_api(byo, byo_bundles):
    """`edgecap caption` and the HTTP API give the runtime's report of a sequence bundle, greedy and beam, with
    no attention in the JSON (the model has none)."""
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    from test_serve import running_server

    from edgecap.cli.caption import caption
    from edgecap.runtime.captioner import Captioner
    from edgecap.serve.app import create_app
    from edgecap.serve.settings import Settings

    app = typer.Typer()
    app.command()(caption)
    image = byo["studies"][0][1]
    for key in (("merge.keras", "int8"), ("inject.keras", "float16")):
        bundle = byo_bundles[key]
        expected = {b: Captioner.from_bundle(bundle).caption(str(image), beam=b) for b in (1, 3)}
        assert expected[3].text and expected[3].attention.shape == (len(expected[3].tokens), 0)
        for beam, report in expected.items():
            r = CliRunner().invoke(app, [str(image), "--bundle", str(bundle), "--format", "json", "--beam", str(beam)])
            assert r.exit_code == 0, r.output
            cli = json.loads(next(line for line in r.output.splitlines() if line.startswith("{")))
            assert cli["text"] == report.text and cli["status"] == "ok" and "attention" not in cli
        with running_server(create_app(Settings(bundle=bundle, workers=1))) as base:
            files = {"frontal": (image.name, image.read_bytes(), "image/png")}
            for beam, report in expected.items():
                api = httpx.post(f"{base}/v1/reports", files=files, data={"beam": str(beam)}, timeout=60)
                assert api.status_code == 200, api.text
                body = api.json()
                assert body["text"] == report.text and "attention" not in body and "attention_layout" not in body


APP_DRIVER = r"""
import json, sys
from edgecap.edge_app import headless

image, bundle, data_dir, out = sys.argv[1:5]
state = {}


def script(app, driver):
    yield from headless.study_script(image)(app, driver)
    r = app.root.ids.sm.get_screen("report").ids
    state.update(
        screen=app.root.ids.sm.current,
        text=r.report_text.text,
        has_heatmap=app.screen("report").report_has_heatmap,
        notices=[[c.title, c.detail, c.level] for c in reversed(r.notices.children)],
    )


code = headless.run(script, out + "/app.png", (412, 915), bundle, data_dir, timeout=60)
open(out + "/state.json", "w").write(json.dumps(state))
sys.exit(code)
"""


@pytest.mark.tf
@pytest.mark.slow
def test_headless_app_reports_and_says_there_is_no_attention(byo, byo_bundles, tmp_path):
    """The app (headless, its own process: Kivy runs one app per process) writes the runtime's report with a
    sequence bundle and says the model has no attention map instead of showing an empty overlay."""
    pytest.importorskip("kivy")
    from edgecap.edge_app.screens.report import NO_ATTENTION
    from edgecap.runtime.captioner import Captioner

    bundle, image = byo_bundles[("inject.h5", "int8")], byo["studies"][0][1]
    env = dict(os.environ, KIVY_HOME=str(tmp_path / "kivy"), KIVY_NO_ARGS="1", SDL_VIDEODRIVER="offscreen")
    env.pop("DISPLAY", None)
    driver = tmp_path / "driver.py"
    driver.write_text(APP_DRIVER)
    cmd = [sys.executable, str(driver), str(image), str(bundle), str(tmp_path / "data"), str(tmp_path)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    state = json.loads((tmp_path / "state.json").read_text())
    settings = (
        json.loads((tmp_path / "data" / "settings.json").read_text())
        if (tmp_path / "data" / "settings.json").is_file()
        else {}
    )
    expected = Captioner.from_bundle(bundle).caption(str(image), beam=int(settings.get("beam", 3)))
    assert state["screen"] == "report" and state["text"] == expected.text and expected.text
    assert not state["has_heatmap"]
    assert [NO_ATTENTION[0], NO_ATTENTION[1], "info"] in state["notices"]


@pytest.mark.tf
@pytest.mark.slow
def test_bench_measures_a_sequence_bundle_against_its_keras_model(byo, byo_bundles, tmp_path, monkeypatch):
    """`edgecap bench --bundle B` finds the user's Keras model named in B's manifest and measures the bundle
    against it: a Keras row (compiled and eager) and the bundle's row, with drift figures."""
    from edgecap.benchmarks.bench import BenchOptions, run_bench

    monkeypatch.setenv("EDGECAP_CACHE", str(tmp_path / "cache"))
    bundle = byo_bundles[("inject.keras", "float16")]
    opt = BenchOptions(bundles=[str(bundle)], threads=[1], quick=True, min_inputs=5, process_runs=1)
    result = run_bench(opt, log=lambda s: None)
    assert result["reference"]["chosen_by"] == f"the Keras model named in {bundle}/manifest.json"
    rows = {v["name"]: v for v in result["variants"]}
    assert set(rows) == {"keras", "keras-eager", bundle.name}
    assert all(v["status"] == "ok" for v in rows.values()), {k: v.get("error") for k, v in rows.items()}
    mine = rows[bundle.name]
    assert mine["drift"]["status"] == "ok" and mine["drift"]["identical"] == 1.0  # float16: the same reports
    assert mine["models"]["decoder_step"]["1"]["rows"] == 3 and rows["keras"]["size"]["parameters"] > 0
    assert "error" in result["baselines"]  # a user's model has no training split for the baselines


@pytest.mark.tf
def test_encoder_app_takes_a_local_weights_file(byo, tmp_path, keep_affinity):
    """--encoder-app NAME --encoder-weights FILE: the application is built without downloading anything and
    its weights read from the file a user downloaded (here: saved from a weights=None build); its input mode
    and size come from the table; a file of other weights is one error line."""
    from keras import layers

    from edgecap.convert.keras_import import KerasImport, load_reference
    from edgecap.runtime.preprocess import load
    from edgecap.training.tf_env import keras

    app = keras.applications.MobileNetV2(include_top=False, pooling="avg", weights=None, input_shape=(224, 224, 3))
    app.save_weights(tmp_path / "mobilenet_v2_notop.weights.h5")
    vocab = vocabulary_from_keras_json(byo["dir"] / "tokenizer.json")
    length = byo["max_length"]
    f_in, s_in = keras.Input((1280,)), keras.Input((length,))
    se = layers.LSTM(16)(layers.Embedding(len(vocab), 16, mask_zero=True)(s_in))
    out = layers.Dense(len(vocab), activation="softmax")(layers.add([layers.Dense(16)(f_in), se]))
    keras.Model([f_in, s_in], out).save(tmp_path / "decoder.keras")
    src = KerasImport(
        tmp_path / "decoder.keras",
        byo["dir"] / "tokenizer.json",
        encoder_app="MobileNetV2",
        encoder_weights=tmp_path / "mobilenet_v2_notop.weights.h5",
    )
    ref = load_reference(src, log=lambda s: None)
    assert (ref.normalization, ref.image_size) == ("tf", 224) and ref.keras.mean.tolist() == [127.5] * 3
    image = byo["studies"][0][1]
    want = np.asarray(app(load(image, 224, 127.5, 127.5)[None]))
    assert np.allclose(ref.keras.encode(load(image, 224, ref.keras.mean, ref.keras.std)), want, atol=1e-5)
    keras.applications.MobileNetV3Small(include_top=False, pooling="avg", weights=None).save_weights(
        tmp_path / "other.weights.h5"
    )
    args = ["convert", "--keras", str(tmp_path / "decoder.keras"), "--tokenizer", str(byo["dir"] / "tokenizer.json")]
    args += ["--encoder-app", "MobileNetV2", "--encoder-weights", str(tmp_path / "other.weights.h5")]
    r = CliRunner().invoke(_convert_app(), [*args, "--out", str(tmp_path / "b"), "--float16"])
    assert r.exit_code == 2 and "not MobileNetV2 weights without the top" in r.output, r.output
    r = CliRunner().invoke(_convert_app(), [*args[:-2], "--out", str(tmp_path / "b"), "--float16"])
    assert r.exit_code == 2 and "--encoder-app MobileNetV2 needs --encoder-weights FILE" in r.output, r.output
