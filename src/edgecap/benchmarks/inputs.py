"""The bench's input set: real IU X-Ray studies plus views derived from them, written as PNG files.

Only 15 real images exist here (11 in the package sample), so drift over >= 100 inputs needs derived views.
Each derived study applies ONE transform to all its views (frontal and lateral alike), chosen from:

    original     the real image as stored
    crop         a random crop keeping 88-96 % of each side (positioning / collimation differences)
    rotate       a small rotation, -4..4 degrees, border replicated (patient rotation)
    noise        additive Gaussian noise, sigma 1-3 % of full scale (detector noise)
    crop+noise   both

A folder with more studies than the bench asks for (the full collection: 3,851 studies with images) is sampled
instead: a seeded choice of that many real studies, no derived ones, so a bench at full size costs what it costs
on the sample.

The reference report of a derived study is the real study's findings: none of these transforms changes
what a radiologist would write. No report text is ever invented. Derived images are 8-bit PNGs, like the
originals, so a benchmarked report reads and decodes a real file (preprocessing is part of its latency).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from edgecap.data import iu_xray
from edgecap.runtime import preprocess
from edgecap.runtime.text import clean_report

TRANSFORMS = ("original", "crop", "rotate", "noise", "crop+noise")


@dataclass(frozen=True)
class BenchInput:
    """One study to report on: paths of its views and the real study's reference findings."""

    name: str  # "<uid>/<transform>#<k>"
    uid: str  # the real study it derives from
    transform: str  # one of TRANSFORMS
    frontal: str  # PNG path
    lateral: str | None
    reference: str  # cleaned findings of the real study ("" when the study has none)


@dataclass(frozen=True)
class InputSet:
    """The bench's inputs (real studies first, then derived ones) and where they came from."""

    inputs: tuple[BenchInput, ...]
    source: str  # the data folder the real studies came from
    real_studies: int
    real_images: int
    sampled_from: int = 0  # the folder's studies with images when a seeded sample was taken (0: all were used)

    def studies(self) -> list[list[str | None]]:
        """[[frontal, lateral or None], ...]: the inputs as the worker's "reports" task reads them."""
        return [[i.frontal, i.lateral] for i in self.inputs]

    def describe(self) -> dict:
        counts = {t: sum(i.transform == t for i in self.inputs) for t in TRANSFORMS}
        return {
            "count": len(self.inputs),
            "real_studies": self.real_studies,
            "real_images": self.real_images,
            "with_reference": sum(bool(i.reference) for i in self.inputs),
            "two_view": sum(i.lateral is not None for i in self.inputs),
            "transforms": counts,
            "source": self.source,
            "sampled_from": self.sampled_from,
            "description": self._description(),
        }

    def _description(self) -> str:
        if self.sampled_from:
            return (
                f"{len(self.inputs)} real IU X-Ray studies ({self.real_images} images), a seeded sample of the "
                f"{self.sampled_from} studies with images in {self.source}"
            )
        return (
            f"{len(self.inputs)} studies: the {self.real_studies} real IU X-Ray studies with images "
            f"({self.real_images} images) from {self.source}, plus views derived from them "
            f"(crops keeping 88-96 % of each side, rotations within 4 degrees, Gaussian noise "
            f"of 1-3 % full scale); each derived study keeps its real study's findings as reference"
        )


def real_studies(data: str | Path, max_views: int = 2) -> list[tuple[str, tuple[Path | None, ...], str]]:
    """(uid, (frontal, lateral) paths, cleaned findings) for every study of `data` with an image on disk."""
    ds = iu_xray.load(data)
    out = []
    for s in sorted(ds.studies, key=lambda s: int(s.uid) if s.uid.isdigit() else 0):
        views = tuple(im.path if im is not None else None for im in s.views())[:max_views]
        if views and views[0] is None and len(views) > 1 and views[1] is not None:
            views = (views[1], None)  # a lateral-only study is reported from its one view, as `edgecap caption` does
        if views and views[0] is not None:
            out.append((s.uid, views, clean_report(s.text("findings"))))
    return out


def derive(image: np.ndarray, transform: str, rng: np.random.Generator) -> np.ndarray:
    """(H, W) uint8/uint16 image -> a transformed copy of the same dtype (see the module docstring)."""
    gray = preprocess.to_gray(image)  # float32 [0, 1]
    h, w = gray.shape
    if "crop" in transform:
        fh, fw = rng.uniform(0.88, 0.96, size=2)
        ch, cw = int(h * fh), int(w * fw)
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        gray = gray[y : y + ch, x : x + cw]
    if transform == "rotate":
        angle = float(rng.uniform(-4.0, 4.0))
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        gray = cv2.warpAffine(gray, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if "noise" in transform:
        gray = gray + rng.normal(0.0, rng.uniform(0.01, 0.03), size=gray.shape).astype(np.float32)
    return np.clip(np.rint(np.clip(gray, 0.0, 1.0) * 255.0), 0, 255).astype(np.uint8)


def build_inputs(
    data: str | Path, out_dir: str | Path, minimum: int = 100, seed: int = 0, max_views: int = 2
) -> InputSet:
    """Real studies of `data` + derived ones until there are at least `minimum`, as PNGs under out_dir; from a
    folder with more than `minimum` studies, a seeded sample of exactly `minimum` real ones.

    Each real study appears once as "original", then derived copies cycle through the other transforms.
    Deterministic in (data, minimum, seed); files already written by the same call are reused
    (out_dir/inputs.json records the set)."""
    data, out_dir = Path(data), Path(out_dir)
    studies = real_studies(data, max_views)
    if not studies:
        raise ValueError(f"{data}: no IU X-Ray study with an image on disk")
    sampled_from = 0
    if len(studies) > minimum:
        sampled_from = len(studies)
        keep = np.sort(np.random.default_rng([seed, 1]).choice(len(studies), size=minimum, replace=False))
        studies = [studies[i] for i in keep]
    key = hashlib.sha256(
        json.dumps(
            [str(data.resolve()), minimum, seed, max_views, [(u, [str(v) for v in vs]) for u, vs, _ in studies]]
        ).encode()
    ).hexdigest()[:16]
    index = out_dir / "inputs.json"
    if index.is_file():
        saved = json.loads(index.read_text())
        if saved.get("key") == key and all(Path(i["frontal"]).is_file() for i in saved["inputs"]):
            return InputSet(
                tuple(BenchInput(**i) for i in saved["inputs"]),
                saved["source"],
                saved["real_studies"],
                saved["real_images"],
                saved.get("sampled_from", 0),
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    per_study = max(1, math.ceil(minimum / len(studies)))
    rng = np.random.default_rng(seed)
    inputs: list[BenchInput] = []
    for k in range(per_study):
        for uid, views, reference in studies:
            transform = "original" if k == 0 else TRANSFORMS[1 + (k - 1) % (len(TRANSFORMS) - 1)]
            paths: list[str | None] = []
            for role, src in zip(("frontal", "lateral"), views):
                if src is None:
                    paths.append(None)
                    continue
                if transform == "original":
                    paths.append(str(src))
                    continue
                image = preprocess.read_image(src)
                view_rng = np.random.default_rng(rng.integers(1 << 32))
                target = out_dir / f"{uid}_{k:02d}_{role}.png"
                if not cv2.imwrite(str(target), derive(image, transform, view_rng)):
                    raise OSError(f"{target}: cannot write")
                paths.append(str(target))
            frontal, lateral = (paths + [None, None])[:2]
            if frontal is None:  # real_studies() never yields a study without a first view
                raise ValueError(f"study {uid}: no first view")
            inputs.append(BenchInput(f"{uid}/{transform}#{k}", uid, transform, frontal, lateral, reference))
    real_images = sum(v is not None for _, vs, _ in studies for v in vs)
    result = InputSet(tuple(inputs), str(data), len(studies), real_images, sampled_from)
    index.write_text(
        json.dumps(
            {
                "key": key,
                "source": str(data),
                "real_studies": len(studies),
                "real_images": real_images,
                "sampled_from": sampled_from,
                "inputs": [asdict(i) for i in inputs],
            },
            indent=1,
        )
    )
    return result
