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

What people read never holds the mark (`readable_tokens`, `readable_text`; docs/conventions.md has the
counts on IU X-Ray). Training targets and metrics keep it (R2Gen-comparable); only the rendering removes it,
so it works for bundles trained with `xxxx="keep"`. Per sentence, each mark is looked at with the word after it:

a. a content word follows ("no xxxx infiltrates", "xxxx opacity in the left midlung"): the mark stood before
   a noun phrase (a modifier) and is dropped; the sentence reads whole without it ("No infiltrates.");
b. a function or predicate word follows, or nothing ("pulmonary xxxx are normal", "lymph xxxx ."): the mark
   was the noun, verb or hedge the sentence is built on; dropping it would leave a broken sentence ("Pulmonary
   are normal.") and dropping the sentence would hide what it says, so the mark is written `REDACTED`
   ("Pulmonary [redacted] are normal."): a reader sees that a word is missing and what the sentence says;
c. a sentence of marks only says nothing and is dropped (a report of nothing else reads `REDACTED` + ".").

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
REDACTED = "[redacted]"  # what people read where the mark cannot be dropped (rule b of the module docstring)
# Words that, right after a mark, show it was the head of its phrase (rule b): function words, verbs and
# predicate words. Read off the words that follow "xxxx" in the 3,337 IU X-Ray FINDINGS (docs/conventions.md);
# any other word (a noun or adjective: "opacities", "focal", "sternotomy") makes the mark a droppable modifier.
HEAD_FOLLOWERS = frozenset(
    """
    - a about above after again along also an and appear appeared appears appreciated are as at be been before
    being below between bilaterally but by can clear compared compatible consistent could demonstrated due for
    from given has have identified in indicate indicates indicating intact into is it likely may measuring might
    near noted nor normal not of on onto or otherwise over overlie overlies overlying possibly present probably
    projecting projects reflect reflecting reflects related remain remained remains represent representing
    represents secondary seen sequela should similar since stable suggest suggesting suggests terminating than
    that the there these this those through throughout to under unchanged unremarkable visualized was were which
    who will with within without would
    """.split()
)
# Words after which a noun phrase starts (rule a needs one before the mark, or the sentence start): articles,
# negation, quantifiers, prepositions, conjunctions, copulas. After any other word ("lobe xxxx atelectasis",
# "costophrenic xxxx scarring") the mark may be a noun or a hedge ("likely") between two phrases: rule b.
PHRASE_OPENERS = frozenset(
    """
    a an and any are as at both but by few for from in into is many multiple no of on or several some than
    that the there these this those to two was were which with within without
    """.split()
)


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


def readable_tokens(tokens: list[str]) -> list[str]:
    """Tokens ("." included) -> the same report without the anonymisation mark, by rules a-c of the module
    docstring: the mark dropped before a content word, written REDACTED elsewhere, mark-only sentences
    dropped. A report without the mark comes back unchanged; one of marks only becomes [REDACTED, "."]."""
    if XXXX_TOKEN not in tokens:
        return list(tokens)
    out: list[str] = []
    sentence: list[str] = []
    for i, tok in enumerate(tokens):
        if tok != ".":
            sentence.append(tok)
        if tok == "." or i == len(tokens) - 1:  # a sentence ends at "." or where the decoder stopped
            words = _readable_sentence(sentence)
            out += words + (["."] if tok == "." and words else [])
            sentence = []
    if not out and any(t != "." for t in tokens):
        return [REDACTED, "."]  # never turn a report into no report
    return out


def _readable_sentence(words: list[str]) -> list[str]:
    """One sentence's words (no ".") -> the same without the mark (rules a-c); [] for a mark-only sentence."""
    if all(w == XXXX_TOKEN for w in words):
        return []
    out = []
    for i, w in enumerate(words):
        if w != XXXX_TOKEN:
            out.append(w)
            continue
        following = next((x for x in words[i + 1 :] if x != XXXX_TOKEN), None)
        opens_phrase = not out or out[-1] in PHRASE_OPENERS
        if not opens_phrase or following is None or following in HEAD_FOLLOWERS:
            if not out or out[-1] != REDACTED:  # "xxxx xxxx" (two marks in a row) is one gap
                out.append(REDACTED)
    return out


_RENDERED_SENTENCE_END = re.compile(r"(?<=\.)\s+")


def readable_text(text: str) -> str:
    """Rendered text (render_report's "A b. C.") -> the same without the mark (readable_tokens); idempotent.
    Case-insensitive on the mark ("Xxxx opacity ..." starts a sentence); text without the mark is unchanged."""
    if XXXX_TOKEN not in text.lower():
        return text
    tokens: list[str] = []
    for sentence in _RENDERED_SENTENCE_END.split(text.strip()):
        closed = sentence.endswith(".")
        words = sentence[:-1].split() if closed else sentence.split()
        if words:  # render_report capitalised the first letter of each sentence: cleaned tokens are lowercase
            words[0] = words[0][:1].lower() + words[0][1:]
        tokens += words + (["."] if closed else [])
    return render_report(readable_tokens(tokens))
