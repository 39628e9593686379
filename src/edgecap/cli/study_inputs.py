"""Batch inputs as studies: a study's frontal and lateral images captioned together, one record per study.

    studies, unmatched, how = group_inputs(["scans/"], "auto")   # folders, globs, files -> StudyInput
    studies = read_study_list(Path("studies.csv"))               # an explicit list (CSV or JSONL)
    report = captioner.caption(s.frontal, lateral=s.lateral)     # for each s

Grouping modes (`edgecap caption --studies`; STUDY_MODES):
    auto     the default: `names` for images with an IU X-Ray name; a folder input laid out as study folders
             (every other image in a first-level subfolder, each subfolder one or two images, at least one
             with two) grouped as `folders`; any other image is a study of its own. Nothing else is paired by
             guess: two images of different patients in one report would be worse than two reports.
    names    IU X-Ray / Open-i / Kaggle file names: CXR54_IM-2145-1001.png, 54_IM-2145-1002.dcm.png and
             CXR54_IM-2145-1002.png are study 54 (data.iu_xray.image_key; the number before "_IM-" is the
             study's uid), grouped within one folder. Other images: a study each.
    folders  a folder input: each first-level subfolder is one study (its images, searched recursively);
             images directly in the input folder form one study named after it. Files and globs: grouped by
             the folder holding them.
    none     one report per image, as before studies existed.
An image that makes a study alone (not in a study folder, not listed) stays a plain path: its record is an
image's, naming no study, as before studies existed; a StudyInput's record has "study" and "unused".

Which image is the frontal view (choose_views): the projection of the IU X-Ray table shipped in the package
(data.iu_xray.packaged_projections, Kaggle's indiana_projections.csv) for an IU X-Ray name; else a word of
the file name ("frontal", "pa", "ap" / "lateral", "lat", split at anything not a letter or digit); else
unknown. Then data.iu_xray.Study.views() decides, in file-name order: the first frontal and the first lateral;
an image of unknown projection is the frontal when none is known, else the lateral. A study with a lateral
view alone is captioned from it in the first slot, as `edgecap caption LATERAL` does. The model takes two
views: a third image (a second frontal, say) is left out and listed in the record's "unused".

Study lists (read_study_list; `edgecap caption --list FILE`), paths relative to the list file's folder:
    .csv     a header line naming the columns (any order, case-insensitive): frontal (required), lateral
             (optional, may be empty), study (optional: the name; default the frontal path as written);
             other columns are ignored (the caller is told which)
    .jsonl   one object per line: {"study": "54", "frontal": "a.png", "lateral": "b.png"} (lateral and study
             optional, lateral may be null); blank lines are skipped
A listed file that does not exist becomes an error record for its study (exit 1), as a missing input does.

No TensorFlow, no image decoding: grouping reads names (and, for a suffix-less file, its first bytes).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from edgecap.data import iu_xray

STUDY_MODES = ("auto", "names", "folders", "none")
LIST_SUFFIXES = (".csv", ".jsonl")
LIST_FIELDS = ("study", "frontal", "lateral")
FRONTAL_WORDS = frozenset({"frontal", "pa", "ap"})
LATERAL_WORDS = frozenset({"lateral", "lat"})
_WORD = re.compile(r"[a-z0-9]+")


class StudyListError(ValueError):
    """A study list that cannot be read (which line and why): a usage error, nothing captioned."""


@dataclass(frozen=True)
class StudyInput:
    """One study: the images a report is written from (frontal first), and those left out."""

    name: str
    frontal: Path
    lateral: Path | None = None
    unused: tuple[Path, ...] = ()

    @property
    def images(self) -> tuple[Path, ...]:
        """Every image of the study, used or not."""
        return (self.frontal,) + ((self.lateral,) if self.lateral is not None else ()) + self.unused


# ---- which view is which ----------------------------------------------------------------------------
def projection(path: Path) -> str:
    """The view of an image, "frontal", "lateral" or "unknown": from the IU X-Ray table for an IU X-Ray
    name, else from a word of the name."""
    key = iu_xray.image_key(path.name)
    if key is not None:
        known = iu_xray.packaged_projections().get(key)
        if known in ("frontal", "lateral"):
            return known
    words = set(_WORD.findall(path.name.lower()))
    if words & FRONTAL_WORDS and not words & LATERAL_WORDS:
        return "frontal"
    if words & LATERAL_WORDS and not words & FRONTAL_WORDS:
        return "lateral"
    return "unknown"


def choose_views(name: str, images: list[Path]) -> StudyInput:
    """A study's images (file-name order) -> frontal, lateral and the rest, by data.iu_xray.Study.views()."""
    xs = [iu_xray.XrayImage(str(p), p, projection(p)) for p in images]
    frontal, lateral = iu_xray.Study(name, None, None, xs).views()
    if frontal is None:  # a lateral view alone: reported from it, as `edgecap caption LATERAL` is
        frontal, lateral = lateral, None
    assert frontal is not None and frontal.path is not None  # images is not empty, every path is on disk
    used = {id(frontal), id(lateral)}
    return StudyInput(
        name,
        frontal.path,
        lateral.path if lateral is not None else None,
        tuple(x.path for x in xs if id(x) not in used and x.path is not None),
    )


# ---- folders, globs and files -> studies -----------------------------------------------------------------
def group_inputs(specs: list[str], mode: str) -> tuple[list[Path | StudyInput], list[str], str]:
    """Inputs as cli.batch.expand_inputs finds them -> (studies in the order of their first image; specs that
    matched nothing; how they were grouped, for a log line: "" when no study has more than one image).
    An image that is a study by itself is a plain path (its record names no study), unless it is a study
    folder's only image; mode "none" gives plain paths only."""
    if mode not in STUDY_MODES:
        raise ValueError(f"unknown --studies {mode!r}: choose {', '.join(STUDY_MODES)}")
    from edgecap.cli.batch import expand_inputs  # batch imports this module: not at the top

    found, unmatched, seen = [], [], set()
    for spec in specs:
        paths, missed = expand_inputs([spec])
        unmatched += missed
        base = Path(spec) if Path(spec).is_dir() else None
        for p in paths:
            if (r := str(p.resolve())) not in seen:
                seen.add(r)
                found.append((p, base))
    if mode == "none":
        return [p for p, _ in found], unmatched, ""
    folder_bases = {b for _, b in found if b is not None and _study_folders(b, found)} if mode == "auto" else set()
    groups: dict[tuple, list[Path]] = {}
    names: dict[tuple, str] = {}
    for p, base in found:
        key, name = _group_of(p, base, mode, folder_bases)
        groups.setdefault(key, []).append(p)
        names.setdefault(key, name)
    studies: list[Path | StudyInput] = [
        ps[0] if len(ps) == 1 and k[0] != "folder" else choose_views(names[k], sorted(ps, key=_name_order))
        for k, ps in groups.items()
    ]
    ways = {k[0] for k, ps in groups.items() if len(ps) > 1}
    paired = [w for k, w in (("names", "IU X-Ray file names"), ("folder", "folders")) if k in ways]
    how = ""
    if len(studies) < len(found):
        how = f"{len(found)} images -> {len(studies)} studies (by {' and '.join(paired)})"
    return studies, unmatched, how


def _group_of(p: Path, base: Path | None, mode: str, folder_bases: set[Path]) -> tuple[tuple, str]:
    """(group key: its first item says how, study name) of one image."""
    uid = _uid(p)
    if mode in ("auto", "names") and uid is not None:
        return ("names", str(p.resolve().parent), uid), uid
    if mode == "folders" or base in folder_bases:
        folder = _study_folder(p, base)
        return ("folder", str(folder.resolve())), folder.name or str(folder)
    return ("one", str(p.resolve())), p.stem


def _uid(p: Path) -> str | None:
    """The IU X-Ray study uid of an image name (the number before "_IM-"), else None."""
    key = iu_xray.image_key(p.name)
    return key.split("_IM-", 1)[0] if key is not None else None


def _study_folder(p: Path, base: Path | None) -> Path:
    """The folder that makes p's study: base's first-level subfolder holding p (base itself for an image
    directly in it); without a base (a file or glob input), p's own folder."""
    if base is None:
        return p.parent
    rel = p.relative_to(base)
    return base / rel.parts[0] if len(rel.parts) > 1 else base


def _study_folders(base: Path, found: list[tuple[Path, Path | None]]) -> bool:
    """Whether a folder input looks like one folder per study (auto): its images without an IU X-Ray name
    all lie in first-level subfolders, one or two in each, and some subfolder holds two."""
    counts: dict[Path, int] = {}
    for p, b in found:
        if b != base or _uid(p) is not None:
            continue
        folder = _study_folder(p, base)
        if folder == base:
            return False
        counts[folder] = counts.get(folder, 0) + 1
    return bool(counts) and max(counts.values()) == 2


def _name_order(p: Path) -> tuple[str, str]:
    return (p.name.lower(), str(p))


# ---- study lists -----------------------------------------------------------------------------------------
def read_study_list(path: Path) -> tuple[list[StudyInput], list[str]]:
    """A CSV or JSONL study list -> (studies in file order, names of the CSV columns ignored). Raises
    StudyListError (the file and line) for a missing or unreadable file, another suffix, a CSV without a
    'frontal' column, a line that is not a JSON object, or a study without a frontal image."""
    suffix = path.suffix.lower()
    if suffix not in LIST_SUFFIXES:
        raise StudyListError(f"{path}: a study list is a .csv or .jsonl file (columns / keys: study, frontal, lateral)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise StudyListError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise StudyListError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    rows, ignored = _csv_rows(path, text) if suffix == ".csv" else (_jsonl_rows(path, text), [])
    return [_listed_study(path, line, row) for line, row in rows], ignored


def _csv_rows(path: Path, text: str) -> tuple[list[tuple[int, dict]], list[str]]:
    reader = csv.reader(text.splitlines())
    header = [h.strip().lower() for h in next(reader, [])]
    if "frontal" not in header:
        raise StudyListError(
            f"{path}: line 1 must name the columns, 'frontal' among them (and optionally 'lateral', 'study')"
        )
    rows = []
    for line, cells in enumerate(reader, 2):
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(header):
            raise StudyListError(f"{path}: line {line} has {len(cells)} fields, the header names {len(header)}")
        rows.append((line, dict(zip(header, cells))))
    return rows, [h for h in header if h not in LIST_FIELDS]


def _jsonl_rows(path: Path, text: str) -> list[tuple[int, dict]]:
    rows = []
    for line, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except ValueError:
            row = None
        if not isinstance(row, dict):
            raise StudyListError(f'{path}: line {line} is not a JSON object like {{"frontal": "a.png"}}')
        rows.append((line, row))
    return rows


def _listed_study(path: Path, line: int, row: dict) -> StudyInput:
    """One row of a list -> a StudyInput, paths relative to the list's folder."""
    values = {}
    for field in LIST_FIELDS:
        v = row.get(field)
        if v is not None and not isinstance(v, (str, int)):
            raise StudyListError(f"{path}: line {line}: '{field}' must be a string")
        values[field] = str(v).strip() if v is not None else ""
    if not values["frontal"]:
        raise StudyListError(f"{path}: line {line} has no frontal image")
    lateral = values["lateral"]
    return StudyInput(
        values["study"] or values["frontal"],
        path.parent / values["frontal"],
        path.parent / lateral if lateral else None,
    )


def all_images(items: Iterable[Path | StudyInput]) -> list[Path]:
    """Every image path of a run's inputs (plain paths and studies' images, unused ones too)."""
    return [q for it in items for q in (it.images if isinstance(it, StudyInput) else (it,))]
