"""Golden tests of the report cleaning rules (runtime.text) on real IU X-Ray report text."""

import pytest

from edgecap.runtime.text import clean_report, render_report, tokenize

# uid 3321's report as it stands in the R2Gen-style annotation file (real text)
REAL = (
    "XXXX XXXX and lateral chest examination was obtained. The heart silhouette is normal in size and contour. "
    "Aortic XXXX appear unremarkable. Lungs demonstrate no acute findings. There is no effusion or pneumothorax. "
    "1. No acute pulmonary disease."
)


def test_golden_real_report_keep():
    assert clean_report(REAL) == (
        "xxxx and lateral chest examination was obtained . the heart silhouette is normal in size and contour . "
        "aortic xxxx appear unremarkable . lungs demonstrate no acute findings . there is no effusion or "
        "pneumothorax . no acute pulmonary disease ."
    )


def test_golden_real_report_drop():
    assert clean_report(REAL, xxxx="drop").startswith("and lateral chest examination was obtained . the heart")
    assert "xxxx" not in clean_report(REAL, xxxx="drop")


@pytest.mark.parametrize(
    "raw, cleaned",
    [
        # R2Gen's ".." clean-up and punctuation deletion (uid 54)
        (
            "Specifically, no evidence of focal consolidation, pneumothorax, or pleural effusion.. "
            "Minimal atelectasis noted.",
            "specifically no evidence of focal consolidation pneumothorax or pleural effusion . "
            "minimal atelectasis noted .",
        ),
        # list numbering removed, decimals and ordinals kept
        (
            "1. Nodule measures 2.5 cm. 2. Old left 5th rib fracture.",
            "nodule measures 2.5 cm . old left 5th rib fracture .",
        ),
        # slash becomes a space (R2Gen would glue the words), hyphen kept
        (
            "Granulomatous/tuberculous process. Well-expanded lungs.",
            "granulomatous tuberculous process . well-expanded lungs .",
        ),
        # glued anonymisation mark ("x-XXXX" = redacted "x-ray") is one mark
        ("Normal chest x-XXXX.", "normal chest xxxx ."),
        # quotes, parentheses, colons deleted
        ('Heart size is "normal" (stable): no change.', "heart size is normal stable no change ."),
        (None, ""),
        ("   ", ""),
        (float("nan"), ""),
        ("...", ""),
    ],
)
def test_golden_rules(raw, cleaned):
    assert clean_report(raw) == cleaned


def test_bad_xxxx_mode():
    with pytest.raises(ValueError):
        clean_report("text", xxxx="maybe")


def test_render_roundtrip():
    c = clean_report("The heart is normal. Lungs are clear.")
    assert tokenize(c) == ["the", "heart", "is", "normal", ".", "lungs", "are", "clear", "."]
    assert render_report(tokenize(c)) == "The heart is normal. Lungs are clear."
