"""Cache of frozen-CNN feature maps, so a frozen encoder runs once per image (and augmented variant).

On these 2 CPU cores EfficientNet-Lite0 encodes ~12 images/s: the 7,470-image set takes ~10 minutes per
pass, so every epoch re-encoding it would dominate training. Variant 0 is the plain image; variants
1..K-1 are augmentations seeded by (seed, image, variant), identical on every run.

Files: <cache_dir>/<signature>/<sha1(path, size, mtime)>_<variant>.npy, float16 (P, C).
The signature covers everything that changes the maps (encoder, image size, normalisation, augmentation).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edgecap.config import Config
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
        gray = load_gray(path, self.cfg.image.size)
        if variant:
            seed = int(hashlib.sha1(f"{path.name}|{variant}|{self.cfg.train.seed}".encode()).hexdigest()[:8], 16)
            gray = augment(gray, np.random.default_rng(seed), self.aug)
        return normalize(gray, self.cfg.image.mean, self.cfg.image.std)

    def ensure(self, paths: list[Path], variants: int, progress: bool = True, batch: int = 16) -> None:
        todo = [(p, v) for p in paths for v in range(variants) if not self._file(p, v).exists()]
        with tqdm(
            total=len(todo), desc="encoding images (cached)", disable=not progress or not todo, unit="img"
        ) as bar:
            for i in range(0, len(todo), batch):
                chunk = todo[i : i + batch]
                x = np.stack([self._input(p, v) for p, v in chunk])
                maps = np.asarray(self.cnn(x, training=False))
                for (p, v), m in zip(chunk, maps):
                    np.save(self._file(p, v), m.reshape(-1, m.shape[-1]).astype(np.float16))
                bar.update(len(chunk))

    def get(self, path: Path, variant: int) -> np.ndarray:
        return np.load(self._file(path, variant))
