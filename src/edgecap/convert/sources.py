"""Real images for calibration and verification: an IU X-Ray data folder, a plain folder of images, the
run's own data (split.json records where it was), or the sample shipped in the package as a last resort.

    studies, facts = find_studies(path)                 # every study with at least one image on disk
    pick = choose(studies, 50, prefer=("test", "val", "train"), seed=42)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecap.data import iu_xray
from edgecap.resources import portable_path, sample_dir
from edgecap.runtime.formats import IMAGE_SUFFIXES, is_image_name
from edgecap.training.run_dir import RunDir


class SourceError(ValueError):
    """A path that holds no usable images."""


@dataclass(frozen=True)
class ImageStudy:
    uid: str
    views: tuple[Path | None, ...]  # (frontal, lateral): the runtime's view order
    split: str | None = None  # the run's split of this study, when known


@dataclass(frozen=True)
class Source:
    path: Path
    kind: str  # "iu-data" | "image-folder" | "packaged-sample"
    studies: tuple[ImageStudy, ...]

    def describe(self, relative_to: Path | None = None) -> str:
        """For logs and manifests: the packaged sample as package:..., other folders relative to `relative_to`
        (the bundle folder) when given, so a manifest never records the machine it was made on."""
        return f"{self.kind} {portable_path(self.path, relative_to)} ({len(self.studies)} studies with images)"


def find_studies(path: str | Path, max_views: int, splits: dict[str, str] | None = None) -> Source:
    """An IU X-Ray data folder (any layout) or a folder of images (each image one single-view study)."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path}: no such file or folder")
    try:
        ds = iu_xray.load(path)
    except (iu_xray.DataError, ValueError, OSError):
        ds = None
    if ds is not None:
        studies = []
        for s in ds.studies:
            views = tuple(im.path if im is not None else None for im in s.views())[:max_views]
            if any(v is not None and is_image_name(v) for v in views):
                views = tuple(v if v is not None and is_image_name(v) else None for v in views)
                studies.append(ImageStudy(s.uid, views, (splits or {}).get(s.uid, s.split)))
        if studies:
            return Source(path, "iu-data", tuple(studies))
    files = sorted(p for p in (path.rglob("*") if path.is_dir() else [path]) if is_image_name(p))
    if not files:
        raise SourceError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) and no IU X-Ray study with images")
    return Source(path, "image-folder", tuple(ImageStudy(p.stem, (p,) + (None,) * (max_views - 1)) for p in files))


def run_source(run: str | Path | RunDir, max_views: int) -> Source:
    """The data the run was trained on (split.json), else the packaged real sample."""
    rd = RunDir.of(run)
    splits: dict[str, str] = {}
    if rd.split.is_file():
        info = rd.load_split()
        splits = {k: v for k, v in info.get("splits", {}).items() if v}
        data = info.get("data")
        if data and Path(data).exists():
            try:
                return find_studies(data, max_views, splits)
            except SourceError:
                pass
    src = find_studies(sample_dir(), max_views, splits)
    return Source(src.path, "packaged-sample", src.studies)


def choose(
    studies: tuple[ImageStudy, ...] | list[ImageStudy], n: int, prefer: tuple[str | None, ...], seed: int
) -> list[ImageStudy]:
    """Up to n studies: those of the preferred splits first (in that order), each group shuffled with seed."""
    rng = np.random.default_rng(seed)
    groups = [[s for s in studies if s.split == sp] for sp in prefer]
    rest = [s for s in studies if s.split not in prefer]
    out: list[ImageStudy] = []
    for g in groups + [rest]:
        out += [g[i] for i in rng.permutation(len(g))]
    return out[:n]
