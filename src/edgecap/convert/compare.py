"""Two bundles side by side: are they the same, byte for byte, and if not, do they write the same reports?

    cmp = compare_bundles("runs/default-bundle", default_bundle_path(), studies)
    cmp.identical_files     # every file listed in the manifests has the same sha256
    cmp.same_reports        # every study, every beam: the same token ids
    cmp.same_or_near_ties   # ... or different only where the two models nearly tie (convert.verify.tie_gap)
    cmp.rows()              # a table for people

Why both: TensorFlow's int8 quantizer does not number the tensors of a model the same way twice (two
conversions of one run, on one machine, with the same calibration data, gave decoders whose DEQUANTIZE
operators read the four LSTM gate slices in a different order: the same graph, other bytes), and float16
weights folded from batch normalisation can round differently on another CPU. A rebuilt bundle is therefore
checked by its behaviour: the same reports on every sample study, greedy and beam 3, a difference counting
only where it is a near tie, by the rule conversion verification uses. TensorFlow-free: it loads both
bundles as a device does (runtime.bundle.Bundle).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edgecap.convert.modes import MODES, by_name
from edgecap.convert.verify import tie_gap
from edgecap.runtime.bundle import Bundle, sha256_file
from edgecap.runtime.decoding import decode
from edgecap.runtime.study import encode_study_files

COMPARE_BEAMS = (1, 3)


@dataclass
class FileComparison:
    part: str  # encoder | decoder_step | vocab | manifest
    name_a: str
    name_b: str
    sha256_a: str
    sha256_b: str

    @property
    def identical(self) -> bool:
        return self.sha256_a == self.sha256_b


@dataclass
class Comparison:
    files: list[FileComparison]
    reports: list[dict] = field(default_factory=list)  # {"study", "beam", "same", "a", "b"} per study and beam
    manifest_differences: list[str] = field(default_factory=list)  # top-level keys that differ, volatile ones aside

    @property
    def identical_files(self) -> bool:
        return all(f.identical for f in self.files if f.part != "manifest")

    @property
    def same_reports(self) -> bool:
        return bool(self.reports) and all(r["same"] for r in self.reports)

    @property
    def same_or_near_ties(self) -> bool:
        """Every report identical, or different only by a near tie (convert.verify.tie_gap of A's report and
        B's below the tie margin of B's mode: 0 for float modes, so those must be identical)."""
        return bool(self.reports) and all(r["same"] or r["near_tie"] for r in self.reports)

    def rows(self) -> list[list[str]]:
        out = [["what", "A", "B", "same"]]
        for f in self.files:
            out.append(
                [
                    f.part,
                    f"{f.name_a} {f.sha256_a[:12]}",
                    f"{f.name_b} {f.sha256_b[:12]}",
                    "yes" if f.identical else "no",
                ]
            )
        for beam in sorted({r["beam"] for r in self.reports}):
            rs = [r for r in self.reports if r["beam"] == beam]
            same, ties = sum(r["same"] for r in rs), sum(r["near_tie"] for r in rs)
            out.append(
                [
                    f"reports, {'greedy' if beam == 1 else f'beam {beam}'}",
                    f"{len(rs)} studies",
                    "",
                    f"{same}/{len(rs)}" + (f" + {ties} near tie" if ties else ""),
                ]
            )
        return out


# manifest fields that differ between two conversions of the same run by design (time, the files' own hashes)
VOLATILE_MANIFEST_KEYS = ("created", "files", "verification")


def compare_bundles(
    a: str | Path,
    b: str | Path,
    studies: Sequence[tuple[str, Sequence[Path | None]]],
    beams: Sequence[int] = COMPARE_BEAMS,
) -> Comparison:
    """Compare bundle folders a and b: files by sha256, then the reports both write for each
    (study id, (frontal, lateral)) at each beam size. Raises runtime.bundle.BundleError for a bad bundle."""
    ba, bb = Bundle.load(a), Bundle.load(b)
    ma, mb = ba.manifest, bb.manifest
    files = []
    for part in sorted(set(ma.files) | set(mb.files)):
        fa, fb = ma.files.get(part), mb.files.get(part)
        files.append(
            FileComparison(
                part, fa.path if fa else "-", fb.path if fb else "-", fa.sha256 if fa else "-", fb.sha256 if fb else "-"
            )
        )
    files.append(FileComparison("vocab", ma.vocab.path, mb.vocab.path, ma.vocab.sha256, mb.vocab.sha256))
    files.append(
        FileComparison(
            "manifest",
            "manifest.json",
            "manifest.json",
            sha256_file(Path(a) / "manifest.json"),
            sha256_file(Path(b) / "manifest.json"),
        )
    )
    da, db = ma.to_json(), mb.to_json()
    diff = sorted(k for k in set(da) | set(db) if k not in VOLATILE_MANIFEST_KEYS and da.get(k) != db.get(k))
    result = Comparison(files, manifest_differences=diff)
    margin = by_name(mb.mode).thresholds.tie_margin if mb.mode in MODES else 0.0
    for uid, views in studies:
        feats = [encode_study_files(bundle, views) for bundle in (ba, bb)]  # (features (N, D), mask (N,)) each
        for beam in beams:
            ids = [
                decode(bundle, f, m, bundle.special, bundle.max_len, beam=beam).ids
                for bundle, (f, m) in zip((ba, bb), feats)
            ]
            same = ids[0] == ids[1]
            gap = None if same else tie_gap(ba, bb, feats[0], feats[1], ba.special, ids[0], ids[1], beam)
            result.reports.append(
                {
                    "study": uid,
                    "beam": beam,
                    "same": same,
                    "tie_gap": gap,
                    "near_tie": gap is not None and gap < margin,
                    "a": ba.vocab.render(ids[0]),
                    "b": bb.vocab.render(ids[1]),
                }
            )
    return result
