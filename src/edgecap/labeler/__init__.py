"""Weight-free, rule-based findings labeler over the 14 CheXpert observations.

A *proxy* for the CheXpert labeler (which needs a parser model and cannot run on the device): call its
scores "rule-based labeler (CheXpert-proxy) F1", never "CheXpert F1". Rules live in ``rules/*.json``;
``validate`` measures the labeler against the human MeSH annotations that IU X-Ray ships.
"""

from .labeler import NEGATIVE, OBSERVATIONS, POSITIVE, UNCERTAIN, Labeler, label_report

__all__ = ["OBSERVATIONS", "Labeler", "label_report", "POSITIVE", "NEGATIVE", "UNCERTAIN", "validate"]


def validate(*args, **kwargs):
    """See :func:`edgecap.labeler.validate.validate` (imported lazily)."""
    from .validate import validate as _validate

    return _validate(*args, **kwargs)
