"""Diversity of generated reports: the check for "the same report for every image" (pure Python).

On IU X-Ray a near-constant "normal" report scores close to the state of the art on BLEU (docs/conventions.md),
so every quality table also carries these numbers:

* ``distinct_1`` / ``distinct_2``: unique n-grams / total n-grams over the whole corpus (corpus-level
  distinct-n, not the mean of per-report ratios). Tokens are whitespace-separated words, so with cleaned
  reports "." counts as a token; bigrams never cross report boundaries. 0.0 when there are no n-grams.
* ``distinct_reports``: unique report strings / number of reports (1.0: all different; 1/n: constant).
* ``most_common_report`` and ``most_common_share``: the most frequent report and the share of reports
  equal to it (ties: the one that occurs first).

Reports are compared after collapsing whitespace (" a  b " equals "a b"), nothing else: no lowercasing
or punctuation stripping, so pass texts cleaned the same way (``edgecap.runtime.text.clean_report``).
Empty reports count as reports (the empty string is a report, with no n-grams).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


def _distinct(ngrams: Counter) -> float:
    total = sum(ngrams.values())
    return len(ngrams) / total if total else 0.0


def diversity(hypotheses: Sequence[str]) -> dict:
    """Corpus diversity of `hypotheses` (one generated report per study); see the module docstring.

    Returns {"n_reports", "n_unique_reports", "distinct_reports", "distinct_1", "distinct_2",
    "n_unigrams", "n_bigrams", "most_common_report", "most_common_count", "most_common_share"}.
    Raises ValueError for an empty list.
    """
    if isinstance(hypotheses, str):
        raise TypeError("pass a list of reports, not a single string")
    reports = []
    for i, h in enumerate(hypotheses):
        if not isinstance(h, str):
            raise TypeError(f"report {i} is {type(h).__name__}, expected str")
        reports.append(" ".join(h.split()))
    if not reports:
        raise ValueError("diversity of no reports is undefined")

    unigrams: Counter = Counter()
    bigrams: Counter = Counter()
    for report in reports:
        tokens = report.split()
        unigrams.update(tokens)
        bigrams.update(zip(tokens, tokens[1:]))

    counts = Counter(reports)
    top, top_count = counts.most_common(1)[0]  # stable: first-seen wins a tie
    n = len(reports)
    return {
        "n_reports": n,
        "n_unique_reports": len(counts),
        "distinct_reports": len(counts) / n,
        "distinct_1": _distinct(unigrams),
        "distinct_2": _distinct(bigrams),
        "n_unigrams": sum(unigrams.values()),
        "n_bigrams": sum(bigrams.values()),
        "most_common_report": top,
        "most_common_count": top_count,
        "most_common_share": top_count / n,
    }
