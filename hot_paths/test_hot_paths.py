"""Hot paths of one report, each timed alone with pytest-benchmark (what each measures: README.md here).

preprocess    read_image (file -> decoded array), prepare (array -> model input), and both
encoder       Bundle.encode on one prepared view
decoder-step  Bundle.step at batch 1 (greedy) and batch 3 (a whole beam-3 step)
report        Captioner.caption of a real image, beam 3 and beam 1
decode-loop   runtime.decoding.decode replaying a real bundle's recorded steps: the loop's Python alone
"""

from __future__ import annotations

import numpy as np
import pytest

from edgecap.runtime import preprocess
from edgecap.runtime.decoding import decode

# ---- preprocess (no interpreter, no mode) -----------------------------------------------------------------


@pytest.mark.benchmark(group="preprocess")
def test_preprocess_read_and_prepare(benchmark, sample_png, image_contract):
    """File -> model input: preprocess.read_image + preprocess.prepare, as Captioner.caption does per view."""
    size, mean, std = image_contract

    def run():
        return preprocess.prepare(preprocess.read_image(sample_png), size, mean, std)

    x = benchmark(run)
    benchmark.extra_info.update(image=sample_png.name, size=size)
    assert x.shape == (size, size, 3) and x.dtype == np.float32
    assert np.isfinite(x).all() and float(x.std()) > 0.1  # a real, non-constant image


@pytest.mark.benchmark(group="preprocess")
def test_preprocess_read_only(benchmark, sample_png):
    """File -> decoded array: the read + PNG decode (cv2.imdecode) of preprocess.read_image."""
    image = benchmark(preprocess.read_image, sample_png)
    benchmark.extra_info.update(
        image=sample_png.name, shape=list(image.shape), dtype=str(image.dtype), bytes=sample_png.stat().st_size
    )
    assert image.ndim in (2, 3) and min(image.shape[:2]) >= 256
    assert int(image.max()) > int(image.min())


@pytest.mark.benchmark(group="preprocess")
def test_preprocess_prepare_only(benchmark, sample_png, image_contract):
    """Decoded array -> model input: to_gray, resize_square, normalize (preprocess.prepare)."""
    size, mean, std = image_contract
    image = preprocess.read_image(sample_png)
    x = benchmark(preprocess.prepare, image, size, mean, std)
    benchmark.extra_info.update(image=sample_png.name, shape=list(image.shape), size=size)
    assert x.shape == (size, size, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x, preprocess.load(sample_png, size, mean, std))


# ---- encoder ----------------------------------------------------------------------------------------------


@pytest.mark.benchmark(group="encoder")
def test_encoder(benchmark, info, bundle, prepared):
    """One Bundle.encode call (copy in, invoke, copy out) on the real prepared image."""
    features = benchmark(bundle.encode, prepared)
    assert features.shape == (bundle.positions, bundle.feature_dim)
    assert np.isfinite(features).all() and float(np.abs(features).max()) > 0


# ---- decoder step -----------------------------------------------------------------------------------------


@pytest.mark.benchmark(group="decoder-step")
@pytest.mark.parametrize("batch", [1, 3], ids=["b1", "b3"])
def test_decoder_step(benchmark, info, bundle, memory, batch):
    """One Bundle.step: batch 1 (greedy; padded to the model's step_batch rows) and batch 3 (one beam-3 step).
    The features are the same objects every round, as within one report: copied into the interpreter once,
    so this is the per-step cost, not the first step's."""
    features, mask = memory
    sp = bundle.special
    tokens = np.full((batch,), sp.bos, np.int32)
    h = np.zeros((batch, bundle.hidden_size), np.float32)
    c = np.zeros_like(h)
    logits, h2, c2, att = benchmark(bundle.step, tokens, h, c, features, mask)
    info.update(batch=batch, calls_per_step=-(-batch // bundle.step_batch))
    assert logits.shape == (batch, bundle.vocab_size)
    assert h2.shape == c2.shape == (batch, bundle.hidden_size)
    assert att.shape == (batch, len(mask))
    assert np.isfinite(logits).all()
    np.testing.assert_allclose(att.sum(axis=1), 1.0, atol=1e-2)  # attention is a distribution ...
    assert float(att[:, mask == 0].max(initial=0.0)) < 1e-3  # ... over the real view's positions only


# ---- one whole report ------------------------------------------------------------------------------------


@pytest.mark.benchmark(group="report")
@pytest.mark.parametrize("beam", [3, 1], ids=["beam3", "beam1"])
def test_report(benchmark, info, captioner, sample_png, beam):
    """Captioner.caption(path, beam): read, sanity check, preprocess, encode, decode, render, label."""
    report = benchmark(captioner.caption, sample_png, beam=beam)
    info.update(beam=beam, steps=report.timings["decoder_steps"], tokens=len(report.tokens), finished=report.finished)
    assert report.text.strip() and report.tokens
    assert not report.flagged, [w.message for w in report.warnings]  # a real chest X-ray
    assert report.beam == beam and report.timings["decoder_steps"] >= len(report.tokens)


# ---- the decode loop alone --------------------------------------------------------------------------------


class _Recorder:
    """StepModel around a real bundle: passes every call through and keeps copies of its outputs."""

    def __init__(self, bundle):
        self.bundle, self.hidden_size, self.calls = bundle, bundle.hidden_size, []

    def step(self, tokens, h, c, features, mask):
        out = self.bundle.step(tokens, h, c, features, mask)
        self.calls.append((np.array(tokens, copy=True), tuple(np.array(a, copy=True) for a in out)))
        return out


class _Replay:
    """StepModel that returns the recorded outputs in order: decode's own Python work, no interpreter."""

    def __init__(self, hidden_size, calls):
        self.hidden_size, self.calls, self.i, self.check = hidden_size, calls, 0, False

    def step(self, tokens, h, c, features, mask):
        expected, out = self.calls[self.i]
        if self.check:  # off while timed
            np.testing.assert_array_equal(tokens, expected, err_msg=f"replay diverged at step {self.i}")
        self.i += 1
        return out


@pytest.mark.benchmark(group="decode-loop")
@pytest.mark.parametrize("beam", [3, 1], ids=["beam3", "beam1"])
def test_decode_loop_replay(benchmark, info, bundle, memory, beam):
    """runtime.decoding.decode (greedy or beam search with trigram blocking) over a real bundle's recorded
    step outputs: the report's decode loop minus the interpreter, i.e. the Python overhead per report."""
    features, mask = memory
    recorder = _Recorder(bundle)
    real = decode(recorder, features, mask, bundle.special, bundle.max_len, beam=beam)
    replay = _Replay(bundle.hidden_size, recorder.calls)
    replay.check = True  # one untimed pass: the replayed loop asks for exactly the recorded tokens
    decode(replay, features, mask, bundle.special, bundle.max_len, beam=beam)
    replay.check = False

    def run():
        replay.i = 0
        return decode(replay, features, mask, bundle.special, bundle.max_len, beam=beam)

    out = benchmark(run)
    info.update(beam=beam, steps=out.steps, tokens=len(out.ids))
    assert replay.i == len(recorder.calls) == real.steps  # the same calls, in the same order
    assert out.ids == real.ids and out.ids  # the same (non-empty) report as the live decode
    assert out.logprob == pytest.approx(real.logprob)
    np.testing.assert_array_equal(out.attention, real.attention)
