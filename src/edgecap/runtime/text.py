"""Report text cleaning: the one text contract between training targets, metrics and rendered reports.

Rules, applied in this order (R2Gen's `clean_report_iu_xray`, with the deviations marked *):

1. Missing text (None, NaN, whitespace) becomes the empty report "".
2. The anonymisation mark: IU X-Ray replaces names, dates and some words with "XXXX" (also glued, as in
   "x-XXXX"; a word glued to the mark by a hyphen is part of the mark). With `xxxx="keep"` every run of marks
   ("XXXX XXXX") becomes ONE token `xxxx` *(R2Gen keeps one token per mark)*, so the model can learn where
   text was redacted without stuttering; with `xxxx="drop"` the marks are removed and the model can never generate them.
3. List numbering ("1. ", " 2. ") is removed. Decimals ("2.5 cm") and ordinals ("5th") are kept.
4. Lowercase.
5. Sentences are split at "." followed by whitespace or the end of the text (this also absorbs R2Gen's
   ".." clean-up).
6. Inside a sentence, the characters " ' \\ are deleted, "/" becomes a space *(R2Gen deletes it, gluing
   "granulomatous/tuberculous" into one word)*, and the punctuation  , ? ; * ! % ^ & _ + ( ) : < = > @ [ ] { }
   is deleted (R2Gen's character class, whose range ":-[" keeps the hyphen: "well-expanded" is one token).
7. Whitespace is collapsed; empty sentences are dropped *(R2Gen keeps them as " .  . ")*.
8. Sentences are joined with " . " and the report ends with " ." (R2Gen). Tokens are the
   whitespace-separated words, "." included.

Device-safe: stdlib only.
"""

from __future__ import annotations

import math
import re

_XXXX_RUN = re.compile(r"[A-Za-z]*-?X{2,}(?:[\s,]*X{2,})*")
_NUMBERING = re.compile(r"(?:(?<=^)|(?<=[\s.]))\d{1,2}\.\s+")
_SENTENCE_END = re.compile(r"\.+(?:\s+|$)")
_DELETE = re.compile(r"[\"'\\,?;*!%^&_+():<=>@\[\]{}]")
_SPACE = re.compile(r"\s+")
XXXX_TOKEN = "xxxx"


def clean_report(text: str | None, xxxx: str = "keep") -> str:
    """Clean one report section per the rules in the module docstring. Returns "" for no text."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return ""
    if xxxx not in ("keep", "drop"):
        raise ValueError(f"xxxx must be 'keep' or 'drop', got {xxxx!r}")
    text = str(text)
    text = _XXXX_RUN.sub(f" {XXXX_TOKEN} " if xxxx == "keep" else " ", text)
    text = _NUMBERING.sub(" ", text)
    text = text.lower()
    sentences = []
    for sentence in _SENTENCE_END.split(text):
        sentence = _DELETE.sub("", sentence.replace("/", " "))
        sentence = _SPACE.sub(" ", sentence).strip(" .")
        if sentence:
            sentences.append(sentence)
    return " . ".join(sentences) + " ." if sentences else ""


def tokenize(cleaned: str) -> list[str]:
    """Tokens of a cleaned report (whitespace split; "." is a token)."""
    return cleaned.split()


def render_report(tokens: list[str]) -> str:
    """Human-readable text from tokens: sentences capitalised, "." attached. "a b . c ." -> "A b. C." """
    sentences: list[str] = []
    current: list[str] = []
    for tok in tokens:
        if tok == ".":
            if current:
                sentences.append(" ".join(current))
            current = []
        else:
            current.append(tok)
    if current:
        sentences.append(" ".join(current))
    return " ".join(s[:1].upper() + s[1:] + "." for s in sentences)
