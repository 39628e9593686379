"""Scale benchmark (issue #17, past one machine): what a large run costs per unit, measured on this machine.

    python scripts/scale_bench.py --out docs/bench/scale        # writes scale.json and scale.md
    python scripts/scale_bench.py --jobs 1 2 4 --images 96 --rows 512

Three figures, each from real images (the bundled IU X-Ray sample, or --data: an IU X-Ray folder):

  training    seconds per epoch per 1,000 studies: steady-state training steps (the second pass, after the
              first compiled the step), no validation, --config edge (frozen EfficientNet-Lite0, cached maps,
              batch 16) and tiny (trained end to end at 128 px, batch 8), default strategy. The data set's
              studies are cycled to --rows rows, so every batch is full as in a large run.
  features    EfficientNet-Lite0 feature maps per second (training.feature_cache.MapCache.ensure into an empty
              cache, after one warm-up batch): the one-off cost of a frozen encoder, per image and variant.
  caption     reports per second of `edgecap caption DIR --out FILE --jobs J` (the shipped default bundle,
              --threads 1 per process) on --images images derived from the real sample images (flips and
              crops: real pixels, distinct files), whole command wall time, start-up included.

Not a test: nothing is asserted. Timings move with the machine's load, so the load average (`uptime`) before
and after is written beside them; on a shared machine, run it more than once.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np


def load_average() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def derived_images(src: Path, into: Path, n: int) -> list[Path]:
    """n PNGs derived from the real images in src (flipped left-right, cropped to 90 %, both), each distinct."""
    into.mkdir(parents=True, exist_ok=True)
    sources = sorted(src.glob("*.png"))
    out = []
    for i in range(n):
        gray = cv2.imread(str(sources[i % len(sources)]), cv2.IMREAD_GRAYSCALE)
        k = i // len(sources)
        if k % 2:
            gray = gray[:, ::-1]
        for _ in range(k // 2):
            h, w = gray.shape
            gray = gray[h // 20 : h - h // 20, w // 20 : w - w // 20]
        out.append(into / f"derived_{i:04d}.png")
        cv2.imwrite(str(out[-1]), gray)
    return out


def training_rate(data: Path, preset: str, rows: int, work: Path) -> dict:
    """Seconds per epoch per 1,000 studies of training steps (no validation), default strategy."""
    from edgecap.config import Config
    from edgecap.training.dataset import make_examples, readable
    from edgecap.training.train import Trainer, _image_inputs, make_strategy, prepare_run

    cfg = Config.preset(preset)
    cfg.train.feature_variants = min(cfg.train.feature_variants, 2)
    cfg, vocab, ds = prepare_run(data, work / f"run-{preset}", cfg, "random", lambda *a: None)
    examples, _ = readable(make_examples(ds.studies, vocab, cfg), cfg.image.size)  # every split: more rows
    trainer = Trainer(cfg, vocab, make_strategy("default"), lambda *a: None)
    get_train, _ = _image_inputs(trainer, cfg, vocab, examples, examples, False, work / "cache")
    real = get_train(1)

    def cycled(idx):  # rows beyond the data set's studies repeat them
        return real(np.asarray(idx) % len(examples))

    trainer.run_epoch(cycled, rows, cfg.train.seed, False, "warm-up")  # compiles the step
    t0 = time.perf_counter()
    trainer.run_epoch(cycled, rows, cfg.train.seed + 1, False, "timed")
    seconds = time.perf_counter() - t0
    return {
        "config": preset,
        "batch_size": cfg.train.batch_size,
        "rows": rows,
        "distinct_studies": len(examples),
        "seconds": round(seconds, 3),
        "seconds_per_epoch_per_1000_studies": round(seconds / rows * 1000, 2),
    }


def feature_rate(images: list[Path], work: Path) -> dict:
    """EfficientNet-Lite0 maps per second into an empty cache (MapCache.ensure, batch 16), after a warm-up."""
    from edgecap.config import Config
    from edgecap.training.feature_cache import MapCache
    from edgecap.training.model import CaptionModel

    cfg = Config.preset("edge")
    cnn = CaptionModel(cfg, 10).cnn
    MapCache(cnn, cfg, work / "warm").ensure(images[:16], 1, progress=False)
    cache = MapCache(cnn, cfg, work / "features")
    t0 = time.perf_counter()
    cache.ensure(images, 1, progress=False)
    seconds = time.perf_counter() - t0
    return {"images": len(images), "seconds": round(seconds, 3), "features_per_second": round(len(images) / seconds, 2)}


def caption_rate(folder: Path, n: int, jobs: int, work: Path) -> dict:
    """Whole `edgecap caption --jobs J` over the folder: reports per second, start-up included."""
    out = work / f"reports-{jobs}.jsonl"
    argv = [sys.executable, "-m", "edgecap.cli", "caption", str(folder), "--out", str(out), "--jobs", str(jobs)]
    argv += ["--threads", "1", "--studies", "none", "--no-progress", "--no-attention"]
    t0 = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    records = out.read_text().count("\n") if out.exists() else 0
    if p.returncode not in (0, 3) or records != n:
        raise SystemExit(f"caption --jobs {jobs} failed (exit {p.returncode}, {records} records):\n{p.stderr[-2000:]}")
    return {"jobs": jobs, "reports": n, "seconds": round(seconds, 3), "reports_per_second": round(n / seconds, 2)}


def markdown(result: dict) -> str:
    lines = [
        f"Scale benchmark, {result['created']} on {result['machine']} ({result['cpus']} logical CPUs).",
        f"Load before: `{result['load_before']}`; after: `{result['load_after']}`.",
        "",
        "| training (steps only, default strategy) | batch | rows timed | s per epoch per 1,000 studies |",
        "|---|---|---|---|",
    ]
    for t in result["training"]:
        lines.append(f"| {t['config']} | {t['batch_size']} | {t['rows']} | {t['seconds_per_epoch_per_1000_studies']} |")
    f = result["features"]
    lines += ["", "| EfficientNet-Lite0 feature maps (224 px, batch 16) | images | per second |", "|---|---|---|"]
    lines.append(f"| MapCache.ensure, empty cache | {f['images']} | {f['features_per_second']} |")
    lines += ["", "| `edgecap caption --jobs` (default bundle, 1 thread each) | reports | s | reports per second |"]
    lines.append("|---|---|---|---|")
    for c in result["caption"]:
        lines.append(f"| {c['jobs']} | {c['reports']} | {c['seconds']} | {c['reports_per_second']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    from edgecap.resources import sample_dir

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=sample_dir(), help="IU X-Ray folder (default: the bundled sample)")
    ap.add_argument("--out", type=Path, default=Path("scale"), help="writes OUT.json and OUT.md")
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--images", type=int, default=48, help="derived images for features and caption")
    ap.add_argument("--rows", type=int, default=256, help="training rows timed per config")
    ap.add_argument("--skip", nargs="*", default=[], choices=["training", "features", "caption"])
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result: dict = {
        "format": "edgecap-scale-bench/1",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_before": load_average(),
        "data": "bundled sample" if args.data == sample_dir() else args.data.name,
    }
    with tempfile.TemporaryDirectory(prefix="edgecap-scale-") as tmp:
        work = Path(tmp)
        images = derived_images(args.data / "images", work / "images", args.images)
        if "caption" not in args.skip:  # first: no TensorFlow in this process yet, the cores are the workers'
            result["caption"] = [caption_rate(work / "images", len(images), j, work) for j in args.jobs]
        if "features" not in args.skip:
            result["features"] = feature_rate(images, work)
        if "training" not in args.skip:
            result["training"] = [training_rate(args.data, p, args.rows, work) for p in ("edge", "tiny")]
        shutil.rmtree(work / "images", ignore_errors=True)
    result["load_after"] = load_average()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    if not args.skip:
        args.out.with_suffix(".md").write_text(markdown(result))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
