"""Cache of frozen-CNN feature maps, so a frozen encoder runs once per image (and augmented variant).

On these 2 CPU cores EfficientNet-Lite0 encodes ~12 images/s: the 7,470-image set takes ~10 minutes per
pass, so every epoch re-encoding it would dominate training. Variant 0 is the plain image; variants
1..K-1 are augmentations seeded by (seed, image, variant), identical on every run.

Inputs are prepared (decoded once per image for all its variants, augmented) on a thread pool one batch ahead
of the CNN: a single-threaded preparation (~13 ms an input measured here) would otherwise bound the encoding on
a GPU, where the CNN itself takes ~1 ms an image (docs/scale.md).

Files: <cache_dir>/<signature>/<sha1(path, size, mtime)>_<variant>.npy, float16 (P, C).
The signature covers everything that changes the maps (encoder, image size, normalisation, augmentation).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edgecap.config import Config
from edgecap.runtime.files import write_atomically
from edgecap.runtime.preprocess import normalize
from edgecap.training.augment import AUGMENT_IMPL, AugmentConfig, augment
from edgecap.training.dataset import load_gray


def default_cache_dir() -> Path:
    return Path(os.environ.get("EDGECAP_CACHE", Path.home() / ".cache" / "edgecap")) / "features"


class MapCache:
    def __init__(self, cnn, cfg: Config, cache_dir: Path | None = None):
        self.cnn, self.cfg = cnn, cfg
        self.aug = AugmentConfig(clahe=cfg.train.clahe)
        sig = json.dumps(
            {
                "encoder": cfg.encoder.kind,
                "pretrained": cfg.encoder.pretrained,
                "image": asdict(cfg.image),
                "augment": asdict(self.aug),
                "augment_impl": AUGMENT_IMPL,
                "seed": cfg.train.seed,
            },
            sort_keys=True,
        )
        self.dir = Path(cache_dir or default_cache_dir()) / hashlib.sha1(sig.encode()).hexdigest()[:16]
        self.dir.mkdir(parents=True, exist_ok=True)

    def _file(self, path: Path, variant: int) -> Path:
        st = path.stat()
        h = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:20]
        return self.dir / f"{h}_{variant}.npy"

    def _input(self, path: Path, variant: int) -> np.ndarray:
        """float32 (S, S, 3): the encoder input of one (image, variant)."""
        return self._prepare(load_gray(path, self.cfg.image.size), path, variant)

    def _inputs(self, chunk: list[tuple[Path, int]], pool, recent: dict[Path, np.ndarray]) -> np.ndarray:
        """(B, S, S, 3) for a chunk of (image, variant): each image decoded once for all its variants (ensure
        lists an image's variants together; `recent` holds the previous chunk's images, for an image whose
        variants straddle two chunks, and is replaced by this chunk's), the variants augmented on the thread
        pool (numpy and OpenCV release the GIL), in order. Calls must come one at a time (ensure's `ahead`)."""
        paths = [p for p in dict.fromkeys(p for p, _ in chunk) if p not in recent]
        grays = {p: recent[p] for p, _ in chunk if p in recent}
        grays.update(zip(paths, pool.map(lambda p: load_gray(p, self.cfg.image.size), paths)))
        recent.clear()
        recent.update(grays)
        return np.stack(list(pool.map(lambda pv: self._prepare(grays[pv[0]], *pv), chunk)))

    def _prepare(self, gray: np.ndarray, path: Path, variant: int) -> np.ndarray:
        """gray (S, S) of `path` -> its variant: 0 as is, k > 0 augmented with a seed of (name, k, train seed)."""
        if variant:
            seed = int(hashlib.sha1(f"{path.name}|{variant}|{self.cfg.train.seed}".encode()).hexdigest()[:8], 16)
            gray = augment(gray, np.random.default_rng(seed), self.aug)
        return normalize(gray, self.cfg.image.mean, self.cfg.image.std)

    def ensure(
        self, paths: list[Path], variants: int, progress: bool = True, batch: int = 16, log: Callable | None = None
    ) -> None:
        """Encode every (path, variant) not cached yet: a line through `log` when there are some, and with
        `progress` a bar on stderr where stderr is a terminal (tqdm's disable=None: no bar in logs)."""
        todo = [(p, v) for p in paths for v in range(variants) if not self._file(p, v).exists()]
        if todo and log is not None:
            log(f"encoding {len(todo)} images with the frozen CNN (cached in {self.dir})")
        with tqdm(
            total=len(todo), desc="encoding images (cached)", disable=None if progress and todo else True, unit="img"
        ) as bar:
            chunks = [todo[i : i + batch] for i in range(0, len(todo), batch)]
            recent: dict[Path, np.ndarray] = {}
            with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool, ThreadPoolExecutor(1) as ahead:
                nxt = ahead.submit(self._inputs, chunks[0], pool, recent) if chunks else None
                for k, chunk in enumerate(chunks):
                    x = nxt.result()
                    if k + 1 < len(chunks):  # the next chunk is prepared on the CPU while the CNN encodes this one
                        nxt = ahead.submit(self._inputs, chunks[k + 1], pool, recent)
                    maps = np.asarray(self.cnn(x, training=False))
                    for (p, v), m in zip(chunk, maps):
                        _save_atomically(self._file(p, v), m.reshape(-1, m.shape[-1]).astype(np.float16))
                    bar.update(len(chunk))

    def get(self, path: Path, variant: int) -> np.ndarray:
        return np.load(self._file(path, variant))


def _save_atomically(target: Path, array: np.ndarray) -> None:
    """np.save, written whole or not at all (runtime.files): a run killed mid-write (or two workers encoding the
    same image) never leaves a truncated .npy that a later run would take as cached."""
    buf = io.BytesIO()
    np.save(buf, array)
    write_atomically(target, buf.getvalue())
