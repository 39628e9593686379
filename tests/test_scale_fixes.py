"""What grew badly at full IU X-Ray size (issue 17, docs/scale.md), each checked at a size that shows it."""

from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from edgecap.config import Config
from edgecap.data import iu_xray
from edgecap.data.rehearsal import NOTICE
from edgecap.evaluation.clinical import clinical_scores
from edgecap.evaluation.diversity import diversity
from edgecap.evaluation.nlg import nlg_scores
from edgecap.runtime.text import clean_report
from edgecap.training.evaluate_run import EvalResult
from edgecap.training.report_html import write_html


@dataclass
class _Decoded:
    attention: np.ndarray  # (T, N)


@dataclass
class _Generated:  # the fields of training.generate.Generated that the page reads
    uid: str
    views: tuple
    decoded: _Decoded
    text: str


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.cards, self.links, self.imgs, self.tables = [], [], [], 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div" and a.get("class") == "card":
            self.cards.append(a["data-uid"])
        if tag == "a":
            self.links.append(a["href"])
        if tag == "img":
            self.imgs.append(a["src"])
        self.tables += tag == "table"


@pytest.fixture(scope="module")
def sample_studies(iu_data):
    """The real sample's studies with a frontal image and findings."""
    return [s for s in iu_xray.load(iu_data).studies if s.views()[0] and clean_report(s.text())]


def _studies(real, n):
    """n studies made of the real sample's studies (uids made unique), the model's 'report' another study's
    reference, attention drawn at random: what the page renders, at a chosen size."""
    cfg = Config.preset("edge")
    rng = np.random.default_rng(0)
    outputs, refs = [], {}
    for i in range(n):
        s, other = real[i % len(real)], real[(i + 1) % len(real)]
        uid = f"{s.uid}-{i}"
        refs[uid] = clean_report(s.text())
        text = clean_report(other.text())
        att = rng.dirichlet(np.ones(2 * cfg.positions_per_view), size=len(text.split()))
        outputs.append(_Generated(uid, (s.views()[0].path, None), _Decoded(att), text))
    return cfg, outputs, refs


def _scored(outputs, refs) -> dict:
    """The "systems" of an EvalResult with the model's scores (no METEOR JVM, no PTB tokenizer)."""
    hyps = {o.uid: o.text for o in outputs}
    return {
        "model": {
            "metrics": nlg_scores(refs, hyps, tokenize=False, meteor=False),
            "clinical": clinical_scores(refs, hyps),
            "diversity": diversity(list(hyps.values())),
        }
    }


def test_html_report_is_paged_and_bounded_per_study(sample_studies, tmp_path):
    """At 590 studies the one inline-PNG page was ~200 MB (3.0 MB for 9). Now: every study a card, 25 to a page
    here, each card a JPEG thumbnail: bytes per study bounded, pages linked, the rehearsal notice on each."""
    cfg, outputs, refs = _studies(sample_studies, 60)
    systems = _scored(outputs, refs)
    result = EvalResult("test", len(outputs), systems, [], ["a note"], [], NOTICE)
    pages = write_html(result, outputs, refs, cfg, tmp_path / "run", tmp_path / "e.html", per_page=25)
    assert [p.name for p in pages] == ["e.html", "e.html.p2.html", "e.html.p3.html"]
    seen = []
    for k, page in enumerate(pages):
        parsed = _Page()
        text = page.read_text()
        parsed.feed(text)
        assert len(parsed.cards) == (25, 25, 10)[k]
        seen += parsed.cards
        assert NOTICE in text
        assert set(parsed.links) == {p.name for p in pages if p != page}  # relative, to the others
        assert all((tmp_path / link).is_file() for link in parsed.links)
        assert all(src.startswith(("data:image/jpeg;base64,", "data:image/png;base64,")) for src in parsed.imgs)
        assert page.stat().st_size < 60_000 * len(parsed.cards) + 40_000, page  # was ~330 KB a card
        assert ("Clinical efficacy" in text) == (k == 0)  # the tables once, on the first page
    assert sorted(seen) == sorted(refs)  # every study once, none dropped (the old page kept the first 50)
    total = sum(p.stat().st_size for p in pages)
    assert total / len(outputs) < 60_000


def test_html_one_page_without_rehearsal(sample_studies, tmp_path):
    cfg, outputs, refs = _studies(sample_studies, 3)
    systems = _scored(outputs, refs)
    result = EvalResult("test", 3, systems, [], [], [])
    pages = write_html(result, outputs, refs, cfg, Path("run"), tmp_path / "e.html")
    assert pages == [tmp_path / "e.html"]
    text = pages[0].read_text()
    assert NOTICE not in text and "<a href" not in text


def test_feature_cache_decodes_each_image_once_and_keeps_every_map(iu_data, tmp_path, monkeypatch):
    """MapCache.ensure decoded an image once per variant (4 per training image with the edge preset: 18k
    decodes at full size); now once per image, prepared on threads, with the same maps as one at a time."""
    from edgecap.training import feature_cache as fc

    decoded = []
    real_load = fc.load_gray
    monkeypatch.setattr(fc, "load_gray", lambda p, s: decoded.append(p) or real_load(p, s))

    def encoder(x, training=False):  # a fixed function of the input, standing in for the frozen CNN: (B, 4, 4, 3)
        return x[:, ::32, ::32, :] * 2.0 + 1.0

    cfg = Config.preset("tiny")  # 128 px
    cache = fc.MapCache(encoder, cfg, tmp_path)
    paths = sorted((iu_data / "images").glob("*.png"))[:3]
    cache.ensure(paths, 3, progress=False, batch=4)  # chunks cut across images: 9 inputs in 4 + 4 + 1
    assert sorted(decoded) == sorted(paths)  # once each (was 9 decodes)
    for p in paths:
        for v in range(3):
            want = encoder(cache._input(p, v)[None])[0]
            np.testing.assert_array_equal(cache.get(p, v), want.reshape(-1, 3).astype(np.float16))
    assert len({cache.get(p, v).tobytes() for p in paths for v in range(3)}) == 9  # variants differ


def test_feature_cache_write_killed_midway_leaves_nothing_cached(iu_data, tmp_path, monkeypatch):
    """A map is written under a temporary name and renamed: a run killed while writing (here: np.save raising
    halfway, after some bytes) leaves no .npy, so the next run encodes that image again instead of loading a
    truncated file."""
    from edgecap.training import feature_cache as fc

    cache = fc.MapCache(lambda x, training=False: x[:, ::32, ::32, :], Config.preset("tiny"), tmp_path)
    path = sorted((iu_data / "images").glob("*.png"))[0]
    real_save = np.save

    def dies_midway(f, array):
        f.write(b"\x93NUMPY partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(fc.np, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        cache.ensure([path], 1, progress=False)
    assert list(tmp_path.rglob("*")) == [cache.dir]  # neither a truncated map nor the temporary file
    monkeypatch.setattr(fc.np, "save", real_save)
    cache.ensure([path], 1, progress=False)
    assert [p.name for p in cache.dir.iterdir()] == [cache._file(path, 0).name] and cache.get(path, 0).ndim == 2


def test_trainable_encoder_loader_holds_images_only_within_its_budget(iu_data):
    """The trainable-encoder path held every decoded image (1.5 GB for the full collection at 224 px); it keeps
    them only while they fit its budget and decodes the rest on each use, to the same values."""
    from edgecap.training.dataset import load_gray
    from edgecap.training.train import BoundedGrays

    paths = sorted((iu_data / "images").glob("*.png"))[:3]
    two = BoundedGrays(128, budget=2 * 128 * 128 * 4)  # room for two float32 128 px images
    for _ in range(2):
        for p in paths:
            np.testing.assert_array_equal(two.get(p), load_gray(p, 128))
    assert list(two.grays) == paths[:2] and two.held == 2 * 128 * 128 * 4
