"""A rehearsal IU X-Ray folder at full size, from real material only: `edgecap data rehearsal OUT --reports TGZ`.

What it is: the real Open-i reports (NLMCXR_reports.tgz, 3,955 XMLs, extracted to OUT/ecgen-radiology/) and,
for every image those reports name (7,470 `parentImage` ids), a PNG under OUT/images/ with the real Open-i
name (`CXR<uid>_IM-xxxx-xxxx.png`, 512 x 512, 8-bit grey). Each PNG is derived from one of the 11 real
Open-i images shipped in edgecap.resources/iu_xray_sample: a frontal name from a frontal sample, a lateral
name from a lateral sample (projection from the packaged Kaggle table, resources/iu_xray_projections.csv;
the few names the table lacks take any sample), through

    a random square crop (85-97 % of the short side) -> resize to 512 -> training.augment.augment (rotation
    <= 5 degrees, scale, shift, contrast, brightness; never a left-right flip) -> Gaussian noise (sigma 1 %)

so the folder has the real counts, names, layout, splits, report texts and image sizes on disk, and images
that decode, look like chest X-rays and differ from one another. What it is not: images that match their
reports. A model trained on it learns the reports' language and nothing about the images: it measures cost
(time, memory, disk) and robustness at full size, never quality. Every output made from it says so: the
folder holds a `REHEARSAL` marker file (NOTICE), which data stats, train (the run directory gets a copy),
evaluate (JSON, HTML), convert (the bundle manifest's notice) and bench (its JSON) detect (notice_of) and
print.

Deterministic: image i is made by a generator seeded with (seed, crc32(name)), so the same reports and seed
give byte-identical PNGs whatever the number of worker processes or their order (multiprocessing, jobs).
"""

from __future__ import annotations

import csv
import json
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from edgecap.data.iu_xray import DataError, _iter_xml, image_key, packaged_projections

MARKER = "REHEARSAL"
NOTICE = "rehearsal data: measures cost and robustness, never quality"
IMAGE_SIZE = 512  # Open-i PNGs are 512 px wide
CROP_RANGE = (0.85, 0.97)  # side of the square crop, as a share of the source's short side
NOISE_SIGMA = 0.01  # Gaussian noise on the [0, 1] scale (about 2.5 grey levels)


@dataclass(frozen=True)
class Planned:
    """One image to write: its real Open-i name, the projection its name has, the sample it comes from."""

    name: str  # "CXR1000_IM-0003-2001.png"
    projection: str  # "frontal" | "lateral" | "unknown"
    source: str  # file name of the sample image under iu_xray_sample/images


@dataclass
class RehearsalResult:
    out: Path
    studies: int
    images: int
    written: int  # images written now (the rest already existed from an earlier, identical build)
    by_projection: dict[str, int]


# ---- the marker ------------------------------------------------------------------------------------------
def notice_of(path: str | Path | None) -> str | None:
    """NOTICE when `path` (a data folder, a run directory, or a file inside one) holds the REHEARSAL marker, or
    is a bundle whose manifest notice carries NOTICE (convert writes it there); else None. A stat or two."""
    if path is None:
        return None
    p = Path(path)
    folder = p.parent if p.is_file() else p
    if (folder / MARKER).is_file():
        return NOTICE
    manifest = folder / "manifest.json"
    if manifest.is_file():
        try:
            if NOTICE in str(json.loads(manifest.read_text(encoding="utf-8")).get("notice", "")):
                return NOTICE
        except (OSError, ValueError, AttributeError):
            return None  # not a readable manifest: the bundle loader says why, not this check
    return None


def mark(folder: str | Path, origin: str | Path) -> None:
    """Write the REHEARSAL marker into `folder` (a run directory or a bundle made from rehearsal data)."""
    Path(folder, MARKER).write_text(f"{NOTICE}\nmade from: {origin}\n", encoding="utf-8")


def carry(source: str | Path, folder: str | Path, log: Callable[[str], None] | None = None) -> str | None:
    """When `source` is rehearsal data (notice_of), mark `folder` with it and log the notice; returns it."""
    notice = notice_of(source)
    if notice is not None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        mark(folder, Path(source).resolve())
        if log is not None:
            log(f"warning: {notice} ({source} holds a {MARKER} marker)")
    return notice


# ---- the sources -----------------------------------------------------------------------------------------
def sample_images() -> dict[str, list[Path]]:
    """The real sample images shipped with edgecap by projection: {"frontal": [...], "lateral": [...]}, sorted
    by name (11 Open-i PNGs: 5 frontal, 6 lateral)."""
    folder = Path(str(resources.files("edgecap.resources").joinpath("iu_xray_sample", "images")))
    table = packaged_projections()
    out: dict[str, list[Path]] = {"frontal": [], "lateral": []}
    for path in sorted(folder.glob("CXR*.png")):
        proj = table.get(image_key(path.name) or "")
        if proj in out:
            out[proj].append(path)
    if not out["frontal"] or not out["lateral"]:
        raise DataError(f"{folder}: the packaged sample lacks a frontal or a lateral image")
    return out


def plan(names: list[str], seed: int, sources: dict[str, list[Path]]) -> list[Planned]:
    """Image names -> what each is made from. The sample is chosen by crc32(name) and the seed, so a name keeps
    its source whatever else is in the list (a subset plans its images as the full set does)."""
    table = packaged_projections()
    every = sources["frontal"] + sources["lateral"]
    out = []
    for name in names:
        proj = table.get(image_key(name) or "", "unknown")
        proj = proj if proj in ("frontal", "lateral") else "unknown"
        pool = sources.get(proj, every)
        pick = pool[(zlib.crc32(name.encode()) ^ seed) % len(pool)]
        out.append(Planned(name, proj, pick.name))
    return out


# ---- one image -------------------------------------------------------------------------------------------
def derive(source_gray: np.ndarray, name: str, seed: int, size: int = IMAGE_SIZE) -> np.ndarray:
    """float32 (H, W) in [0, 1], a real image -> uint8 (size, size), its rehearsal copy for `name`: crop,
    resize, training.augment.augment (no flip), noise; seeded by (seed, crc32(name))."""
    from edgecap.runtime.preprocess import resize_square
    from edgecap.training.augment import AugmentConfig, augment

    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    h, w = source_gray.shape
    side = int(min(h, w) * rng.uniform(*CROP_RANGE))
    y = int(rng.integers(0, h - side + 1))
    x = int(rng.integers(0, w - side + 1))
    gray = resize_square(np.ascontiguousarray(source_gray[y : y + side, x : x + side]), size)
    gray = augment(gray, rng, AugmentConfig(horizontal_flip=False))
    gray = gray + rng.normal(0.0, NOISE_SIGMA, gray.shape).astype(np.float32)
    return np.round(np.clip(gray, 0.0, 1.0) * 255.0).astype(np.uint8)


def _load_source(path: Path) -> np.ndarray:
    from edgecap.runtime.preprocess import read_image, to_gray

    return to_gray(read_image(path))


_SOURCES: dict[str, np.ndarray] = {}  # per worker process: decoded sample images, by file name


def _write_one(job: tuple[Planned, str, str, int]) -> bool:
    """Write one PNG (a worker's task); False when it already exists."""
    import cv2

    item, src_dir, out_dir, seed = job
    target = Path(out_dir) / item.name
    if target.is_file():
        return False
    if item.source not in _SOURCES:
        _SOURCES[item.source] = _load_source(Path(src_dir) / item.source)
    png = derive(_SOURCES[item.source], item.name, seed)
    tmp = target.with_suffix(".tmp.png")
    if not cv2.imwrite(str(tmp), png):
        raise OSError(f"{tmp}: could not write")
    os.replace(tmp, target)  # an interrupted build leaves no half-written image under a real name
    return True


# ---- the folder ------------------------------------------------------------------------------------------
def read_reports(reports: Path, limit: int | None = None) -> list[tuple[str, bytes, list[str]]]:
    """(xml file name, xml bytes, parentImage ids) per report of an NLMCXR_reports.tgz or ecgen-radiology
    folder, sorted by file name; `limit` keeps the first N (a small rehearsal for tests)."""
    import xml.etree.ElementTree as ET

    reports = Path(reports)
    if not reports.exists():
        raise DataError(f"{reports}: no such file or folder (the Open-i NLMCXR_reports.tgz or ecgen-radiology/)")
    out = []
    for name, data in sorted(_iter_xml(reports)):
        try:
            tree = ET.fromstring(data)
        except ET.ParseError as e:
            raise DataError(f"{reports}: {name}: not XML ({e})") from e
        out.append((name, data, [el.get("id", "") for el in tree.iter("parentImage") if el.get("id")]))
    if not out:
        raise DataError(f"{reports}: no report XML found")
    return out[:limit] if limit else out


def build(
    reports: str | Path,
    out: str | Path,
    *,
    seed: int = 0,
    jobs: int | None = None,
    limit: int | None = None,
    split: str | Path | None = None,
    per_worker: int = 200,
    log: Callable[[str], None] = print,
) -> RehearsalResult:
    """Write the rehearsal folder (module docstring). Re-running with the same arguments only writes what is
    missing; `limit` takes the first N reports by file name (tests). jobs: worker processes (None: one per
    CPU), at most one per `per_worker` images (a process costs ~1 s to start). split: an R2Gen-style
    annotation file ({"train"|"val"|"test": [{"id": uid, ...}]}), copied in as annotation.json so that every
    stage uses its split, as it would on a download that has one."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and notice_of(out) is None:  # never mix into real data
        raise DataError(f"{out}: exists and is not a rehearsal folder (no {MARKER} marker): choose a new folder")
    split_text = _read_split(Path(split)) if split is not None else None
    parsed = read_reports(Path(reports), limit)
    (out / "ecgen-radiology").mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(exist_ok=True)
    mark(out, Path(reports).resolve())  # first: even a half-built folder says what it is
    for name, data, _ in parsed:
        (out / "ecgen-radiology" / name).write_bytes(data)
    names = sorted({f"{i}.png" for _, _, ids in parsed for i in ids})
    sources = sample_images()
    items = plan(names, seed, sources)
    src_dir = str(sources["frontal"][0].parent)
    jobs_list = [(it, src_dir, str(out / "images"), seed) for it in items]
    workers = max(1, min(jobs or os.cpu_count() or 1, -(-len(items) // per_worker)))
    log(f"writing {len(items)} images for {len(parsed)} reports with {workers} process(es)")
    if workers == 1:
        written = sum(_write_one(j) for j in jobs_list)
    else:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            written = sum(pool.imap_unordered(_write_one, jobs_list, chunksize=64))
    _write_sources(out / "rehearsal_sources.csv", items)
    if split_text is not None:
        (out / "annotation.json").write_text(split_text)
    by_proj = {p: sum(it.projection == p for it in items) for p in ("frontal", "lateral", "unknown")}
    info = {
        "notice": NOTICE,
        "reports": str(Path(reports).resolve()),
        "studies": len(parsed),
        "images": len(items),
        "by_projection": by_proj,
        "seed": seed,
        "image_size": IMAGE_SIZE,
        "derivation": "square crop 85-97% -> resize 512 -> training.augment (no flip) -> noise sigma 0.01",
        "sources": sorted({it.source for it in items}),
        "split": str(Path(split).resolve()) if split is not None else None,
    }
    (out / "rehearsal.json").write_text(json.dumps(info, indent=2) + "\n")
    (out / "README.md").write_text(_readme(info), encoding="utf-8")
    return RehearsalResult(out, len(parsed), len(items), written, by_proj)


def _read_split(path: Path) -> str:
    """The annotation file's text, once checked to be a split: {"train"|"val"|"test": [{"id": ...}, ...]}."""
    try:
        text = path.read_text()
        data = json.loads(text)
        ok = isinstance(data, dict) and any(k in data for k in ("train", "val", "test"))
        ok = ok and all(isinstance(e, dict) and "id" in e for k in ("train", "val", "test") for e in data.get(k, []))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"--split {path}: unreadable ({e})") from None
    if not ok:
        raise DataError(f'--split {path}: not an R2Gen-style split ({{"train"|"val"|"test": [{{"id": ...}}]}})')
    return text


def _write_sources(path: Path, items: list[Planned]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "projection", "source"])
        for it in items:
            w.writerow([it.name, it.projection, it.source])


def _split_line(info: dict) -> str:
    if not info.get("split"):
        return "No split file: training makes a seeded random split.\n"
    return f"`annotation.json` is a copy of {Path(info['split']).name}: training and evaluation use its split.\n"


def _readme(info: dict) -> str:
    return f"""# REHEARSAL: {NOTICE}

Built by `edgecap data rehearsal` (edgecap.data.rehearsal). The Open-i layout of the IU X-Ray collection:
`ecgen-radiology/` holds the {info["studies"]:,} real report XMLs, unchanged; `images/` holds {info["images"]:,} PNGs
with the real Open-i image names ({info["by_projection"]["frontal"]:,} frontal, {info["by_projection"]["lateral"]:,}
lateral, {info["by_projection"]["unknown"]:,} of unknown projection). No image is the image its name stands for:
each is derived from one of {len(info["sources"])} real sample images (`rehearsal_sources.csv` says which) by a
random crop, a small rotation / scale / shift, a contrast and brightness change and noise (never a left-right
flip); frontal names from frontal samples, lateral names from lateral samples. Seed {info["seed"]}.
{_split_line(info)}
Use it to measure time, memory and disk of every stage at full size, and to find what breaks. Never report a
score computed on it as a quality figure: the images do not match the reports. The `{MARKER}` file beside this
README makes every edgecap stage (data stats, train, evaluate, convert, bench) print and record that.

Source data: Indiana University Chest X-ray Collection (Demner-Fushman et al., JAMIA 23(2), 2016), via Open-i,
CC BY-NC-ND 4.0: non-commercial use, with attribution. The derived images are for local rehearsal; do not
distribute them.
"""
