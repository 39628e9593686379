"""`edgecap data stats`: what a data folder holds, and what is missing or unreadable."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from edgecap.data.iu_xray import Dataset
from edgecap.runtime.preprocess import ImageError, read_image
from edgecap.runtime.text import clean_report, tokenize


@dataclass
class DataStats:
    layout: str
    root: str
    split_source: str
    studies: int
    images_listed: int
    images_found: int
    images_missing: int
    images_unreadable: list[str]
    studies_with_images: int
    frontal_only: int
    lateral_only: int
    both_views: int
    empty_findings: int
    splits: dict[str, int]
    report_length: dict[str, float]  # cleaned findings, tokens: min / p25 / median / mean / p75 / p95 / max
    unreadable_reports: list[str] = field(default_factory=list)
    missing_examples: list[str] = field(default_factory=list)  # first missing image keys

    def table(self) -> list[tuple[str, str]]:
        rl = self.report_length
        return [
            ("layout", self.layout),
            ("root", self.root),
            ("split", f"{self.split_source}  " + " / ".join(f"{k} {v}" for k, v in self.splits.items())),
            ("studies", str(self.studies)),
            ("images listed / found / missing", f"{self.images_listed} / {self.images_found} / {self.images_missing}"),
            ("images unreadable", str(len(self.images_unreadable))),
            ("studies with images", str(self.studies_with_images)),
            ("frontal only / lateral only / both", f"{self.frontal_only} / {self.lateral_only} / {self.both_views}"),
            ("empty findings", str(self.empty_findings)),
            ("findings length (tokens)", ", ".join(f"{k} {v:g}" for k, v in rl.items())),
            ("unreadable report files", str(len(self.unreadable_reports))),
        ]


def compute_stats(ds: Dataset, check_images: bool = True, section: str = "findings") -> DataStats:
    """Counts over the whole folder. check_images decodes every found image (slow on the full set)."""
    listed = found = 0
    unreadable, missing = [], []
    views = Counter()
    lengths = []
    empty = 0
    for s in ds.studies:
        for im in s.images:
            listed += 1
            if im.path is None:
                missing.append(im.key)
                continue
            if check_images:
                try:
                    read_image(im.path)
                except ImageError as e:
                    unreadable.append(str(e))
                    im.path = None
                    continue
            found += 1
        frontal, lateral = s.views()
        views[(frontal is not None, lateral is not None)] += 1
        text = clean_report(s.text(section))
        if not text:
            empty += 1
        else:
            lengths.append(len(tokenize(text)))
    arr = np.array(lengths or [0])
    q = lambda p: float(np.percentile(arr, p))  # noqa: E731
    return DataStats(
        layout=ds.layout,
        root=str(ds.root),
        split_source=ds.split_source,
        studies=len(ds.studies),
        images_listed=listed,
        images_found=found,
        images_missing=len(missing),
        images_unreadable=unreadable,
        studies_with_images=sum(v for k, v in views.items() if any(k)),
        frontal_only=views[(True, False)],
        lateral_only=views[(False, True)],
        both_views=views[(True, True)],
        empty_findings=empty,
        splits=dict(sorted(Counter(s.split or "unassigned" for s in ds.studies).items())),
        report_length={
            "min": q(0),
            "p25": q(25),
            "median": q(50),
            "mean": round(float(arr.mean()), 1),
            "p75": q(75),
            "p95": q(95),
            "max": q(100),
        },
        unreadable_reports=list(ds.unreadable),
        missing_examples=missing[:20],
    )
