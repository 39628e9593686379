"""Read the Indiana University chest X-ray collection (IU X-Ray / Open-i NLMCXR) in its three layouts.

    openi   ecgen-radiology/<uid>.xml (or the NLMCXR_reports.tgz archive itself) + CXR<uid>_IM-....png
    kaggle  indiana_reports.csv + indiana_projections.csv + <uid>_IM-....dcm.png (images_normalized/)
    r2gen   annotation.json ({"train"|"val"|"test": [{id, report, image_path: [...]}]}) + images

Every layout yields the same `Study` for the same uid: reports keyed by uid, images keyed by their
Open-i id without prefix or suffix ("1000_IM-0003-2001"), projections from the layout's own table
(Kaggle) or from the packaged copy of that table (Open-i and R2Gen name no projection). Images are found
anywhere under the data folder by that key, so an Open-i or Kaggle image folder works with either
report source. Missing images are recorded (path None), never a crash.

The R2Gen layout carries one `report` string per study (in R2Gen's own file: the findings; in some
copies: findings + impression): it is used as is, whatever section is asked for.

Stdlib only: no TensorFlow, no pandas.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from edgecap.runtime.formats import is_image_name

LAYOUTS = ("openi", "kaggle", "r2gen")
# Open-i: CXR1000_IM-0003-2001(.png); Kaggle: 1000_IM-0003-2001.dcm.png; one Open-i study (uid 1) repeats its
# uid: CXR1_1_IM-0001-3001, which Kaggle names 1_IM-0001-3001
_KEY = re.compile(
    r"^(?:CXR)?(?:(\d+)_(?=\1_IM-))?(\d+_IM-[\dA-Za-z-]+?)(?:(?:\.dcm)?\.(?:png|jpe?g|dcm))?$", re.IGNORECASE
)


class DataError(ValueError):
    """The data folder is not a readable IU X-Ray layout."""


@dataclass
class XrayImage:
    key: str  # "1000_IM-0003-2001": Open-i id without "CXR" and without the file suffix
    path: Path | None  # None: listed by the reports but not found on disk
    projection: str  # "frontal" | "lateral" | "unknown"


@dataclass
class Study:
    uid: str
    findings: str | None  # raw text of the FINDINGS section (None: layout has no sections)
    impression: str | None
    images: list[XrayImage] = field(default_factory=list)
    report: str | None = None  # r2gen: the one report string of the annotation file
    mesh: list[str] = field(default_factory=list)  # human MeSH annotations (openi, kaggle)
    split: str | None = None  # "train" | "val" | "test" when the layout or an annotation file says

    def text(self, section: str = "findings") -> str:
        """Raw report text of `section` ("findings" or "findings+impression")."""
        if self.report is not None and self.findings is None:
            return self.report
        if section == "findings":
            return self.findings or ""
        if section == "findings+impression":
            return " ".join(t for t in (self.findings, self.impression) if t)
        raise ValueError(f"unknown section {section!r}: 'findings' or 'findings+impression'")

    def views(self) -> tuple[XrayImage | None, XrayImage | None]:
        """(frontal, lateral) among the images found on disk; an image of unknown projection serves as
        frontal when no known frontal exists, else as lateral."""
        found = [im for im in self.images if im.path is not None]
        frontal = next((im for im in found if im.projection == "frontal"), None)
        lateral = next((im for im in found if im.projection == "lateral"), None)
        for im in found:
            if im.projection == "unknown":
                if frontal is None:
                    frontal = im
                elif lateral is None:
                    lateral = im
        return frontal, lateral


@dataclass
class Dataset:
    layout: str
    root: Path
    studies: list[Study]
    split_source: str  # "layout", "annotation:<file>" or "none" (assigned later by splits.py)
    unreadable: list[str] = field(default_factory=list)  # report files that could not be parsed

    def by_uid(self) -> dict[str, Study]:
        return {s.uid: s for s in self.studies}


# ---------------------------------------------------------------------------------------------
def image_key(filename: str) -> str | None:
    """'CXR1000_IM-0003-2001.png', '1000_IM-0003-2001.dcm.png' and the Open-i id 'CXR1000_IM-0003-2001'
    -> '1000_IM-0003-2001'."""
    m = _KEY.match(Path(filename).name)
    return m.group(2) if m else None


def index_images(root: Path) -> dict[str, Path]:
    """All IU X-Ray image files under root, keyed by image_key (first found wins, sorted order)."""
    index: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):  # image folders are often symlinks
        dirnames.sort()
        for name in sorted(filenames):
            key = image_key(name)
            if key and key not in index and is_image_name(name):
                index[key] = Path(dirpath) / name
    return index


@functools.lru_cache(maxsize=1)
def packaged_projections() -> dict[str, str]:
    """Projection of every IU X-Ray image (key -> frontal/lateral), from the Kaggle table shipped in the
    package (resources/iu_xray_projections.csv, CC BY-NC-ND 4.0, Indiana University via Open-i/Kaggle)."""
    text = resources.files("edgecap.resources").joinpath("iu_xray_projections.csv").read_text()
    return _read_projections(io.StringIO(text))


def _read_projections(handle) -> dict[str, str]:
    out = {}
    for row in csv.DictReader(handle):
        key = image_key(row["filename"])
        if key:
            out[key] = row["projection"].strip().lower()
    return out


def detect_layout(root: Path) -> str:
    """openi (XML reports) > kaggle (CSV) > r2gen (annotation only): the richer report source wins."""
    if _openi_reports(root) is not None:
        return "openi"
    if (root / "indiana_reports.csv").is_file():
        return "kaggle"
    if _annotation_file(root) is not None:
        return "r2gen"
    raise DataError(
        f"{root}: no IU X-Ray layout found. Expected one of: ecgen-radiology/*.xml or NLMCXR_reports.tgz "
        "(Open-i), indiana_reports.csv + indiana_projections.csv (Kaggle), annotation.json (R2Gen)."
    )


def _openi_reports(root: Path) -> Path | None:
    for cand in (root / "ecgen-radiology", root / "NLMCXR_reports.tgz"):
        if cand.exists():
            return cand
    return None


def _annotation_file(root: Path) -> Path | None:
    if root.is_file() and root.suffix == ".json":
        return root
    for name in ("annotation.json",):
        if (root / name).is_file():
            return root / name
    found = sorted(root.glob("*annotation*.json"))
    return found[0] if found else None


def load(root: str | Path, layout: str = "auto", annotation: str | Path | None = "auto") -> Dataset:
    """Read a data folder. annotation="auto" uses an annotation.json found in the folder for the split
    (R2Gen's split), None ignores it, a path uses that file."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: no such file or folder")
    if layout == "auto":
        layout = detect_layout(root)
    if layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r}: one of {LAYOUTS}")
    if root.is_file():
        root = root.parent
    images = index_images(root)
    if layout == "openi":
        ds = _load_openi(root, images)
    elif layout == "kaggle":
        ds = _load_kaggle(root, images)
    else:
        ds = _load_r2gen(root, images)
    if layout != "r2gen" and annotation is not None:
        ann = _annotation_file(root) if annotation == "auto" else Path(annotation)
        if ann is not None:
            _apply_annotation_split(ds, ann)
    return ds


def _projection(key: str, table: dict[str, str]) -> str:
    p = table.get(key, "unknown")
    return p if p in ("frontal", "lateral") else "unknown"


def _load_openi(root: Path, images: dict[str, Path]) -> Dataset:
    src = _openi_reports(root)
    assert src is not None
    import xml.etree.ElementTree as ET  # here: `edgecap caption` imports this module for image names only

    proj = packaged_projections()
    studies, bad = [], []
    for name, data in _iter_xml(src):
        try:
            studies.append(_parse_openi_xml(data, images, proj))
        except (ET.ParseError, DataError) as e:
            bad.append(f"{name}: {e}")
    studies.sort(key=lambda s: int(s.uid) if s.uid.isdigit() else s.uid)
    return Dataset("openi", root, studies, "none", bad)


def _iter_xml(src: Path):
    import tarfile

    if src.is_dir():
        for p in sorted(src.glob("*.xml")):
            yield p.name, p.read_bytes()
        return
    try:
        with tarfile.open(src, "r:*") as tar:
            for m in tar:
                if m.isfile() and m.name.endswith(".xml"):
                    f = tar.extractfile(m)
                    if f is not None:
                        yield Path(m.name).name, f.read()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"{src}: unreadable report archive ({e})") from e


def _parse_openi_xml(data: bytes, images: dict[str, Path], proj: dict[str, str]) -> Study:
    import xml.etree.ElementTree as ET

    tree = ET.fromstring(data)
    uid_el = tree.find("IUXRId")
    if uid_el is None or not uid_el.get("id"):
        raise DataError("no IUXRId")
    sections = {}
    for el in tree.iter("AbstractText"):
        sections[el.get("Label", "").upper()] = (el.text or "").strip() or None
    mesh = [el.text.strip() for el in tree.iter("major") if el.text]
    study_images = []
    for el in tree.iter("parentImage"):
        raw = el.get("id", "")
        key = image_key(raw) or raw.removeprefix("CXR")
        study_images.append(XrayImage(key, images.get(key), _projection(key, proj)))
    return Study(uid_el.get("id"), sections.get("FINDINGS"), sections.get("IMPRESSION"), study_images, mesh=mesh)


def _load_kaggle(root: Path, images: dict[str, Path]) -> Dataset:
    proj_csv = root / "indiana_projections.csv"
    if not proj_csv.is_file():
        raise DataError(f"{root}: indiana_reports.csv found but indiana_projections.csv is missing")
    with open(proj_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    by_uid: dict[str, list[XrayImage]] = {}
    for row in rows:
        key = image_key(row["filename"])
        if key:
            proj = row["projection"].strip().lower()
            by_uid.setdefault(row["uid"], []).append(
                XrayImage(key, images.get(key), proj if proj in ("frontal", "lateral") else "unknown")
            )
    studies = []
    with open(root / "indiana_reports.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            mesh = [m.strip() for m in (row.get("MeSH") or "").split(";") if m.strip()]
            ims = sorted(by_uid.get(row["uid"], []), key=lambda im: im.key)
            studies.append(
                Study(
                    row["uid"],
                    (row.get("findings") or "").strip() or None,
                    (row.get("impression") or "").strip() or None,
                    ims,
                    mesh=mesh,
                )
            )
    return Dataset("kaggle", root, studies, "none")


def _load_r2gen(root: Path, images: dict[str, Path]) -> Dataset:
    ann = _annotation_file(root)
    if ann is None:
        raise DataError(f"{root}: no annotation.json")
    try:
        data = json.loads(ann.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{ann}: not valid JSON ({e})") from e
    proj = packaged_projections()
    studies = []
    for split in ("train", "val", "test"):
        for entry in data.get(split, []):
            ims = []
            for rel in entry.get("image_path", []):
                path = root / "images" / rel
                if not path.is_file():
                    path = root / rel
                # R2Gen's own layout names images CXR<uid>_IM-xxxx/0.png: key from the folder name
                key = image_key(Path(rel).name) or f"{Path(rel).parent.name.removeprefix('CXR')}/{Path(rel).stem}"
                found = path if path.is_file() else images.get(key)
                ims.append(XrayImage(key, found, _projection(key, proj)))
            if ims and all(im.projection == "unknown" for im in ims) and len(ims) == 2:
                ims[0].projection, ims[1].projection = "frontal", "lateral"  # R2Gen's order: frontal, lateral
            studies.append(Study(str(entry["id"]), None, None, ims, report=entry.get("report", ""), split=split))
    return Dataset("r2gen", root, studies, f"annotation:{ann.name}")


def _apply_annotation_split(ds: Dataset, ann: Path) -> None:
    try:
        data = json.loads(Path(ann).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{ann}: unreadable annotation file ({e})") from e
    split_of = {str(e["id"]): split for split in ("train", "val", "test") for e in data.get(split, [])}
    for s in ds.studies:
        s.split = split_of.get(s.uid)
    ds.split_source = f"annotation:{Path(ann).name}"
