"""The reference run shipped with the default bundle (edgecap/resources/reference/default): the Keras model the
bundle was converted from, as head weights + the frozen ImageNet backbone (training.run_dir)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgecap.benchmarks.variants import Reference, resolve_reference, shipped_reference
from edgecap.runtime.captioner import default_bundle_path
from edgecap.runtime.manifest import Manifest


def test_shipped_reference_is_the_default_bundles_source():
    ref = Reference.load("default")
    assert ref.path == shipped_reference()
    assert ref.matches(Manifest.load(default_bundle_path())) is None
    vocab = json.loads((default_bundle_path() / "vocab.json").read_text())
    assert json.loads((ref.path / "vocab.json").read_text()) == vocab
    ref2, how = resolve_reference(None, [default_bundle_path()])
    assert ref2 is not None and ref2.config_hash == ref.config_hash and how


def test_reference_refuses_another_model(tmp_path):
    ref = Reference.load("default")
    m = Manifest.load(default_bundle_path())
    m.source = {**m.source, "config_hash": "0" * 64}
    assert "config" in ref.matches(m)
    m.source = {**Manifest.load(default_bundle_path()).source, "weights_sha256": "f" * 64}
    assert "other weights" in ref.matches(m)


@pytest.mark.tf
def test_head_weights_rebuild_the_trained_model(tmp_path):
    from edgecap.training.keras_step import KerasBundle
    from edgecap.training.run_dir import head_weights, load_head, load_model

    cfg, vocab, model = load_model(shipped_reference())
    saved = np.load(shipped_reference() / "head.weights.npz")
    for path, value in head_weights(model).items():
        assert np.array_equal(value, saved[path])
    # the rebuilt Keras model writes the same report as the int8 bundle made from it on a real image
    from edgecap.resources import sample_image
    from edgecap.runtime.captioner import Captioner

    keras_report = Captioner(KerasBundle(model, vocab)).caption(sample_image(), beam=3)
    bundle_report = Captioner.from_bundle().caption(sample_image(), beam=3)
    assert keras_report.tokens == bundle_report.tokens and len(keras_report.tokens) > 10
    # a head file of another shape is refused, naming the variable
    bad = {k: v for k, v in saved.items()}
    bad["decoder/logits/bias"] = np.zeros(3, np.float32)
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(ValueError, match="decoder/logits/bias"):
        load_head(model, tmp_path / "bad.npz")
