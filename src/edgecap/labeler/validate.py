"""Validate the rule-based labeler against the human MeSH annotations of IU X-Ray.

IU X-Ray ships, per study, the MeSH terms a human indexer assigned (``MeSH`` column of the Kaggle
``indiana_reports.csv``; ``<MeSH><major>`` in the Open-i XML). ``mesh_map.json`` turns them into reference
labels over the 14 CheXpert observations; :func:`validate` labels the full report text the indexers
read (FINDINGS + IMPRESSION) and reports, per observation, precision / recall / F1 of *positive versus
the rest* (uncertain and not-mentioned count as not positive), and the macro F1 over observations with
at least ``min_support`` positive reference reports.

Name the result "rule-based labeler (CheXpert-proxy) agreement with IU X-Ray MeSH", never "CheXpert F1".
"""

from __future__ import annotations

import csv
import json
import re
import tarfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Optional

from .labeler import NO_FINDING, OBSERVATIONS, POSITIVE, UNCERTAIN, Labeler

METRIC_NAME = "rule-based labeler (CheXpert-proxy) vs IU X-Ray MeSH"
CSV_NAME = "indiana_reports.csv"
TGZ_NAME = "NLMCXR_reports.tgz"


@dataclass
class Report:
    uid: str
    text: str
    terms: list[str]


# --------------------------------------------------------------------------- loading
def _csv_reports(path: Path) -> Iterator[Report]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = set(reader.fieldnames or [])
        need = {"findings", "impression"}
        if not need <= cols or not ({"MeSH", "Problems"} & cols):
            raise ValueError(
                f"{path}: expected the indiana_reports.csv columns findings, impression and MeSH (or Problems); "
                f"found {sorted(cols)}"
            )
        for i, row in enumerate(reader):
            text = " ".join(x.strip() for x in (row.get("findings") or "", row.get("impression") or "") if x.strip())
            raw = (row.get("MeSH") or "").strip() or (row.get("Problems") or "").strip()
            terms = [t.strip() for t in raw.split(";") if t.strip()]
            yield Report(str(row.get("uid", i)), text, terms)


def _xml_report(name: str, data: bytes) -> Report:
    root = ET.fromstring(data)
    parts = {}
    for node in root.iter("AbstractText"):
        parts[(node.get("Label") or "").upper()] = (node.text or "").strip()
    text = " ".join(x for x in (parts.get("FINDINGS", ""), parts.get("IMPRESSION", "")) if x)
    terms = [(n.text or "").strip() for n in root.iter("major") if (n.text or "").strip()]
    uid = Path(name).stem
    return Report(uid, text, terms)


def _xml_reports(path: Path) -> Iterator[Report]:
    if path.is_dir():
        for p in sorted(path.rglob("*.xml")):
            yield _xml_report(p.name, p.read_bytes())
        return
    with tarfile.open(path, "r:*") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".xml"):
                f = tar.extractfile(member)
                if f is not None:
                    yield _xml_report(member.name, f.read())


def resolve_source(path: str | Path) -> Path:
    """indiana_reports.csv itself, or an IU data folder holding it (else the Open-i XML archive/folder)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such file or folder: {p}")
    if p.is_dir():
        for cand in (p / CSV_NAME, p / TGZ_NAME, p / "ecgen-radiology"):
            if cand.exists():
                return cand
        if any(p.glob("*.xml")):
            return p
        raise FileNotFoundError(f"{p}: no {CSV_NAME}, {TGZ_NAME} or Open-i report XMLs found")
    return p


def load_reports(path: str | Path) -> list[Report]:
    """Reports with their MeSH terms, from indiana_reports.csv, NLMCXR_reports.tgz or an XML folder."""
    src = resolve_source(path)
    if src.is_dir() or src.name.endswith((".tgz", ".tar.gz", ".tar")):
        return list(_xml_reports(src))
    if src.suffix.lower() == ".xml":
        return [_xml_report(src.name, src.read_bytes())]
    return list(_csv_reports(src))


# --------------------------------------------------------------------------- reference labels
@lru_cache(maxsize=1)
def default_mesh_map() -> dict:
    return json.loads((resources.files("edgecap.labeler") / "mesh_map.json").read_text(encoding="utf-8"))


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s.strip().lower())


def _split(term: str) -> tuple[str, set[str]]:
    parts = [_norm(p) for p in term.split("/")]
    return parts[0], set(parts[1:])


def _paired(mods: set[str], others: Iterable[set[str]], descriptors: set[str]) -> bool:
    loc = mods - descriptors
    if not loc:
        return False
    for o in others:
        oloc = o - descriptors
        if oloc and (oloc <= loc or loc <= oloc):
            return True
    return False


def classify_term(term: str, mesh_map: Mapping, report_terms: Iterable[str] = ()) -> tuple[str, list[str], int]:
    """(class, observations, label) for one MeSH entry; class in observation/normal/neutral/exclude_report/other.

    ``report_terms``: all entries of the report, for rules with ``unless_paired_with``.
    """
    head, mods = _split(term)
    label = UNCERTAIN if mods & {_norm(m) for m in mesh_map.get("uncertain_modifiers", [])} else POSITIVE
    for rule in mesh_map.get("rules", []):
        if _norm(rule["term"]) != head:
            continue
        anym = {_norm(m) for m in rule.get("any_modifier", [])}
        nom = {_norm(m) for m in rule.get("no_modifier", [])}
        if anym and not (mods & anym):
            continue
        if nom and (mods & nom):
            continue
        pair_heads = {_norm(h) for h in rule.get("unless_paired_with", [])}
        if pair_heads:
            descriptors = {_norm(m) for m in mesh_map.get("descriptor_modifiers", [])}
            others = [m for h, m in map(_split, report_terms) if h in pair_heads]
            if _paired(mods, others, descriptors):
                return "other", [], label
        if "observations" in rule:
            return "observation", list(rule["observations"]), label
        return rule.get("class", "other"), [], label
    return "other", [], label


def reference_labels(
    terms: Iterable[str], mesh_map: Optional[Mapping] = None, no_finding_ignore: Iterable[str] = ("Support Devices",)
) -> Optional[dict[str, Optional[int]]]:
    """Reference labels from MeSH terms; None when the report has no usable annotation."""
    mesh_map = mesh_map or default_mesh_map()
    terms = [t for t in terms if t.strip()]
    if not terms:
        return None
    ignore = set(no_finding_ignore)
    per: dict[str, list[int]] = {}
    finding = False
    for t in terms:
        cls, obs, lab = classify_term(t, mesh_map, terms)
        if cls == "exclude_report":
            return None
        if cls == "other":
            finding = True
        for o in obs:
            per.setdefault(o, []).append(lab)
            if o not in ignore:
                finding = True
    out: dict[str, Optional[int]] = {}
    for o in OBSERVATIONS:
        labs = per.get(o, [])
        out[o] = POSITIVE if POSITIVE in labs else (UNCERTAIN if UNCERTAIN in labs else None)
    out[NO_FINDING] = 0 if finding else POSITIVE
    return out


# --------------------------------------------------------------------------- metrics
def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def compare(
    path: str | Path, labeler: Optional[Labeler] = None, mesh_map: Optional[Mapping] = None
) -> tuple[list[dict], dict]:
    """Per-report rows (uid, text, terms, reference, predicted) for error analysis, plus counts."""
    labeler = labeler or Labeler.default()
    rows, counts = [], {"reports_read": 0, "no_text": 0, "no_reference": 0}
    t0 = time.perf_counter()
    for rep in load_reports(path):
        counts["reports_read"] += 1
        if not rep.text.strip():
            counts["no_text"] += 1
            continue
        ref = reference_labels(rep.terms, mesh_map)
        if ref is None:
            counts["no_reference"] += 1
            continue
        rows.append(
            {
                "uid": rep.uid,
                "text": rep.text,
                "terms": rep.terms,
                "reference": ref,
                "predicted": labeler.label(rep.text),
            }
        )
    counts["seconds"] = time.perf_counter() - t0
    return rows, counts


def validate(
    csv_path: str | Path, labeler: Optional[Labeler] = None, mesh_map: Optional[Mapping] = None, min_support: int = 30
) -> dict:
    """Per-observation precision / recall / F1 (positive vs the rest) and macro F1 over well-supported ones.

    ``csv_path``: indiana_reports.csv, or a folder holding it (or the Open-i XML archive / folder).
    Reports without text, without MeSH terms or indexed "No Indexing" are left out (counted).
    ``u_ones_f1`` additionally counts uncertain predictions and uncertain references as positive
    (the CheXpert "U-Ones" reading), for information only.
    """
    rows, counts = compare(csv_path, labeler, mesh_map)
    per: dict[str, dict] = {}
    for o in OBSERVATIONS:
        tp = fp = fn = 0
        utp = ufp = ufn = 0
        pred_unc_on_pos = 0
        for r in rows:
            ref, pred = r["reference"][o], r["predicted"][o]
            rp, pp = ref == POSITIVE, pred == POSITIVE
            tp += rp and pp
            fp += pp and not rp
            fn += rp and not pp
            pred_unc_on_pos += rp and pred == UNCERTAIN
            urp, upp = ref in (POSITIVE, UNCERTAIN), pred in (POSITIVE, UNCERTAIN)
            utp += urp and upp
            ufp += upp and not urp
            ufn += urp and not upp
        p, rc, f = _prf(tp, fp, fn)
        per[o] = {
            "support": tp + fn,
            "predicted": tp + fp,
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "precision": p,
            "recall": rc,
            "f1": f,
            "fn_labelled_uncertain": pred_unc_on_pos,
            "u_ones_f1": _prf(utp, ufp, ufn)[2],
        }
    macro_obs = [o for o in OBSERVATIONS if per[o]["support"] >= min_support]
    macro = sum(per[o]["f1"] for o in macro_obs) / len(macro_obs) if macro_obs else 0.0
    macro_all = sum(per[o]["f1"] for o in OBSERVATIONS if per[o]["support"] > 0)
    n_all = sum(1 for o in OBSERVATIONS if per[o]["support"] > 0)
    return {
        "metric": METRIC_NAME,
        "source": str(resolve_source(csv_path)),
        "reports": len(rows),
        "reports_read": counts["reports_read"],
        "left_out_no_text": counts["no_text"],
        "left_out_no_reference": counts["no_reference"],
        "min_support": min_support,
        "per_observation": per,
        "macro_observations": macro_obs,
        "macro_f1": macro,
        "macro_f1_all_supported": macro_all / n_all if n_all else 0.0,
        "seconds": counts["seconds"],
    }


def format_table(result: Mapping) -> str:
    """Plain-text table of a :func:`validate` result."""
    lines = [
        f"{result['metric']}",
        f"source: {result['source']}  reports: {result['reports']} "
        f"(left out: {result['left_out_no_text']} without text, "
        f"{result['left_out_no_reference']} without MeSH reference)",
        "",
        f"{'observation':<28}{'support':>8}{'pred':>7}{'prec':>7}{'recall':>8}{'F1':>7}{'U-ones F1':>11}  in macro",
    ]
    for o, m in result["per_observation"].items():
        mark = "yes" if o in result["macro_observations"] else "-"
        lines.append(
            f"{o:<28}{m['support']:>8}{m['predicted']:>7}{m['precision']:>7.3f}{m['recall']:>8.3f}"
            f"{m['f1']:>7.3f}{m['u_ones_f1']:>11.3f}  {mark}"
        )
    lines += [
        "",
        f"macro F1 over {len(result['macro_observations'])} observations with >= {result['min_support']} "
        f"positive reports: {result['macro_f1']:.3f}",
        f"macro F1 over all observations with any positive report: {result['macro_f1_all_supported']:.3f}",
        f"labelling time: {result['seconds']:.2f} s",
    ]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    import sys

    print(format_table(validate(sys.argv[1] if len(sys.argv) > 1 else CSV_NAME)))
