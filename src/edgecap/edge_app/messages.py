"""Plain words for what the runtime reports: warning codes (runtime.report.Notice) and exceptions.

Each message is (title, detail): the title is what a clinician reads first, in everyday words; the detail
is the runtime's own sentence (numbers and thresholds), shown smaller beneath it. Also the small text helpers
every screen uses: sentence (a manifest notice as a sentence) and short_path. Device-safe, no Kivy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edgecap.runtime.sanity import ASPECT, BLANK, DOCUMENT, FLAG_CODES, NOT_GRAYSCALE, TOO_SMALL


@dataclass(frozen=True)
class Message:
    title: str
    detail: str
    level: str = "warning"  # "warning" (amber) | "error" (red) | "info" (grey)
    code: str = ""


WARNING_TITLES = {
    NOT_GRAYSCALE: "This looks like a colour photograph, not a chest X-ray.",
    BLANK: "This image is blank or almost uniform.",
    DOCUMENT: "This looks like a document or a screenshot, not a chest X-ray.",
    ASPECT: "This image has an unusual shape for a chest X-ray.",
    TOO_SMALL: "This image is too small to read: open the original, not a thumbnail.",
    "dicom_multiframe": "The DICOM file holds several frames: only the first was used.",
    "unfinished": "The report reached its maximum length and may be cut off.",
}

FLAGGED_TITLE = "Not a chest X-ray?"
FLAGGED_NOTE = (
    "The model writes fluent text for any picture, so no report is shown for this image, and it cannot be copied "
    "or exported."
)
WITHHELD_NOTE = "No report: this image does not look like a chest X-ray the model can read (see above)."


def warning_message(code: str, message: str) -> Message:
    """One runtime warning -> Message. Not-a-chest-X-ray codes are errors in colour: they void the text."""
    title = WARNING_TITLES.get(code, message[:1].upper() + message[1:])
    return Message(title, message, "error" if code in FLAG_CODES else "warning", code)


def error_message(exc: BaseException) -> Message:
    """An exception from loading a bundle or captioning -> Message (level "error")."""
    from edgecap.runtime.bundle import BundleError
    from edgecap.runtime.captioner import CaptionError
    from edgecap.runtime.interpreter import InterpreterUnavailable
    from edgecap.runtime.preprocess import ImageError

    text = str(exc) or type(exc).__name__
    if isinstance(exc, ImageError):
        if "no such file" in text:
            return Message("The file could not be found.", text, "error", "missing_file")
        if "DICOM" in text:
            return Message("This DICOM file could not be read.", text, "error", "unreadable_dicom")
        return Message(
            "This file could not be read as an image.",
            f"It may be damaged, cut short, or in a format the app does not open (PNG, JPEG and DICOM work). {text}",
            "error",
            "unreadable_file",
        )
    if isinstance(exc, BundleError):
        return Message(
            "The model bundle could not be loaded.",
            f"Choose another bundle in Settings or reinstall the app. {text}",
            "error",
            "bundle",
        )
    if isinstance(exc, InterpreterUnavailable):
        return Message("No TFLite interpreter is installed.", text, "error", "interpreter")
    if isinstance(exc, CaptionError):
        return Message("This request cannot be served by the selected bundle.", text, "error", "request")
    if isinstance(exc, MemoryError):
        return Message("The device ran out of memory.", "Close other apps and try again.", "error", "memory")
    return Message(
        "Something went wrong while writing the report.", f"{type(exc).__name__}: {text}", "error", "internal"
    )


FINDING_WORDS = {"positive": "present", "negative": "absent", "uncertain": "uncertain"}
NO_FINDING_WORDS = {"positive": "yes", "negative": "no", "uncertain": "uncertain"}  # "No Finding" reads as yes / no


def finding_rows(findings: dict[str, str | None]) -> list[tuple[str, str]]:
    """report.findings -> [(observation, word)] for the observations the text mentions, present first, then
    uncertain, then absent (the labeler's order within each group). Words: present / absent / uncertain;
    for "No Finding": yes / no / uncertain."""
    from edgecap.labeler import OBSERVATIONS

    no_finding = OBSERVATIONS[0]
    order = {"positive": 0, "uncertain": 1, "negative": 2}
    rows = [(name, value) for name, value in findings.items() if value in order]
    rows.sort(key=lambda r: order[r[1]])
    return [(name, (NO_FINDING_WORDS if name == no_finding else FINDING_WORDS)[value]) for name, value in rows]


def sentence(text: str) -> str:
    """'demonstration model' -> 'Demonstration model.' ('' stays '')."""
    text = (text or "").strip()
    if not text:
        return ""
    text = text[:1].upper() + text[1:]
    return text if text.endswith(".") else text + "."


def short_path(path) -> str:
    """'/home/pi/.config/edgecap' -> '~/.config/edgecap' (shorter on a phone, and no user name on screen)."""
    text, home = str(path), str(Path.home())
    inside = home not in ("", "/") and (text == home or text.startswith(home + os.sep))
    return "~" + text[len(home) :] if inside else text
