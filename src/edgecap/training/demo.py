"""`edgecap demo`: the training path end to end on the real sample shipped in the package.

Trains the tiny config on the studies that have images and findings in the bundled IU X-Ray sample (9), then writes a
report for a bundled X-ray through the runtime's preprocessing and decode loop. Ten studies teach a model
to recite its training reports: this demonstrates the machinery, it is not a medical model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgecap.config import Config
from edgecap.resources import sample_dir, sample_image


def demo_config(epochs: int = 120) -> Config:
    cfg = Config.preset("tiny")
    cfg.name = "demo"
    cfg.train.epochs = epochs
    cfg.train.batch_size = 4
    cfg.train.learning_rate = 6e-3
    cfg.train.augment = False
    cfg.train.val_fraction = cfg.train.test_fraction = 0.0  # 10 studies: all of them train
    cfg.decoder.dropout = 0.0
    cfg.text.min_count = 1
    return cfg


@dataclass
class DemoResult:
    run: Path
    image: Path
    report: str
    reference: str
    seconds_per_epoch: float


def run_demo(out: Path, epochs: int = 120, progress: bool = True, log: Callable = print) -> DemoResult:
    from edgecap.data import iu_xray
    from edgecap.runtime.text import clean_report, render_report, tokenize
    from edgecap.training.generate import ReportGenerator
    from edgecap.training.run_dir import load_model
    from edgecap.training.train import train

    data = sample_dir()
    result = train(data, out, demo_config(epochs), split_mode="random", progress=progress, log=log)
    cfg, vocab, model = load_model(out)
    image = sample_image()
    gen = ReportGenerator(cfg, vocab, model)(uid="25", views=(image, None), beam=3)
    study = iu_xray.load(data).by_uid()["25"]
    return DemoResult(
        out,
        image,
        vocab.render(gen.decoded.ids),
        render_report(tokenize(clean_report(study.text(cfg.text.section), cfg.text.xxxx))),
        result.seconds_per_epoch,
    )
