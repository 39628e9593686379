"""Study-level splits (never by image: both views of a study stay together).

Either the split an annotation file gives (R2Gen's), or a seeded random split of the study uids:
the uids are sorted, shuffled with numpy's PCG64 seeded generator, and cut into test / val / train,
so the same data and seed always give the same split on every machine.
"""

from __future__ import annotations

import numpy as np

from edgecap.data.iu_xray import Dataset, Study

SPLITS = ("train", "val", "test")


def assign_random_split(ds: Dataset, seed: int, val_fraction: float, test_fraction: float) -> None:
    """Overwrite every study's split with a seeded random split by study uid."""
    uids = sorted(s.uid for s in ds.studies)
    order = np.random.default_rng(seed).permutation(len(uids))
    n_test = int(round(len(uids) * test_fraction))
    n_val = int(round(len(uids) * val_fraction))
    split_of = {}
    for rank, i in enumerate(order):
        split_of[uids[i]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    for s in ds.studies:
        s.split = split_of[s.uid]
    ds.split_source = f"random:seed={seed},val={val_fraction},test={test_fraction}"


def ensure_split(ds: Dataset, mode: str, seed: int, val_fraction: float, test_fraction: float) -> None:
    """mode "auto": keep the layout's / annotation's split if there is one, else random; "random": random;
    "annotation": require the annotation's split."""
    if mode == "random" or (mode == "auto" and ds.split_source == "none"):
        assign_random_split(ds, seed, val_fraction, test_fraction)
    elif mode == "annotation" and ds.split_source == "none":
        raise ValueError("no annotation.json split found in the data folder; use --split-mode random")
    elif mode not in ("auto", "random", "annotation"):
        raise ValueError(f"unknown split mode {mode!r}: auto, random or annotation")


def studies_in(ds: Dataset, split: str) -> list[Study]:
    if split == "all":
        return list(ds.studies)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: one of {SPLITS + ('all',)}")
    return [s for s in ds.studies if s.split == split]
