"""Training on the real sample: the path learns (overfit), resumes, pre-trains on text. (Mirrored training over
two logical CPUs is the reference run of tests/test_multiworker.py.)

The overfit run trains the tiny config on every local study with images and findings (10 real studies: 9
Open-i ones and uid 1001 from the Kaggle folder; uid 2779 has no findings) and must reproduce them. It proves
the training path learns; it says nothing about quality on the full data set.
"""

import numpy as np
import pytest

from edgecap.config import Config

pytestmark = [pytest.mark.tf, pytest.mark.slow]


def test_overfit_reproduces_findings(overfit_run, iu_data):
    from edgecap.data import iu_xray
    from edgecap.evaluation.nlg import nlg_scores
    from edgecap.training.dataset import make_examples
    from edgecap.training.generate import ReportGenerator
    from edgecap.training.run_dir import load_model

    out, result = overfit_run
    assert result.epochs_done == 120 and result.n_train == 10
    cfg, vocab, model = load_model(out)
    examples = make_examples(iu_xray.load(iu_data).studies, vocab, cfg)
    assert len(examples) == 10
    gen = ReportGenerator(cfg, vocab, model)
    refs = {ex.uid: ex.text for ex in examples}
    hyps = {ex.uid: gen(ex.uid, ex.views, beam=1).text for ex in examples}
    scores = nlg_scores(refs, hyps, meteor=False, tokenize=False)
    assert scores["bleu4"] >= 0.9, (scores, hyps)
    assert len(set(hyps.values())) == len(hyps), "the same report for different images"


def test_run_directory_is_self_contained(overfit_run):
    from edgecap.training.run_dir import RunDir

    out, _ = overfit_run
    rd = RunDir(out)
    for p in (rd.config, rd.vocab, rd.split, rd.best, rd.last, rd.optimizer, rd.state, rd.history, rd.curves):
        assert p.is_file(), p
    cfg = rd.load_config()
    from edgecap.training.demo import demo_config

    assert cfg.to_dict() == demo_config().to_dict()
    lines = rd.history.read_text().splitlines()
    assert lines[0].startswith("phase,epoch,train_loss,val_loss") and len(lines) == 121
    assert rd.curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_and_text_pretraining(iu_data, tmp_path, cache_dir):
    from edgecap.training.run_dir import RunDir
    from edgecap.training.train import train

    cfg = Config.preset("tiny")
    cfg.train.epochs, cfg.train.pretrain_text_epochs, cfg.train.batch_size = 1, 1, 64
    cfg.text.max_len = 24  # reports cut at 24 tokens: the unrolled decoder graph traces in a third of the time
    out = tmp_path / "run"
    first = train(iu_data, out, cfg, progress=False, log=lambda *a: None)
    assert first.epochs_done == 1 and first.text_val_perplexity is not None
    vocab_size = len(RunDir(out).load_vocab())
    # a language model that learned anything is far better than uniform guessing over the vocabulary
    assert 1.0 < first.text_val_perplexity < vocab_size / 4
    state1 = RunDir(out).load_state()
    cfg.train.epochs = 2
    lines = []
    second = train(iu_data, out, cfg, progress=False, log=lines.append)
    assert any(line.startswith("resuming") for line in lines)
    assert second.epochs_done == 2 and RunDir(out).load_state()["text_epochs_done"] == 1
    phases = [row.split(",")[0] for row in RunDir(out).history.read_text().splitlines()[1:]]
    assert phases == ["text", "image", "image"]
    assert state1["epochs_done"] == 1


def test_edge_config_trains_on_cached_imagenet_features(iu_data, tmp_path, cache_dir):
    """The product config: frozen EfficientNet-Lite0 (ImageNet), cached augmented feature maps, GloVe."""
    from edgecap.training.feature_cache import MapCache
    from edgecap.training.run_dir import load_model
    from edgecap.training.train import train

    cfg = Config.preset("edge")
    cfg.train.epochs, cfg.train.feature_variants = 1, 2
    lines = []
    r = train(iu_data, tmp_path / "edge", cfg, progress=False, log=lines.append)
    assert r.epochs_done == 1 and np.isfinite(r.best_val_loss)
    assert any(line.startswith("GloVe 6B 50d covers") for line in lines)
    cfg2, vocab, model = load_model(tmp_path / "edge")
    assert model.positions == 49 and model.map_channels == 1280
    cache = MapCache(model.cnn, cfg2)
    files = sorted(cache.dir.glob("*.npy"))
    variants = {f.stem.rsplit("_", 1)[1] for f in files}
    assert variants == {"0", "1"} and len(files) >= 2 * r.n_train  # plain + augmented map of each training image
    m = np.load(files[0])
    assert m.shape == (49, 1280) and m.dtype == np.float16 and np.isfinite(m.astype(np.float32)).all()
