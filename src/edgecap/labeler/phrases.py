"""Phrase lists as regexes: one character-trie regex per list, and one scan that runs many lists at once.

The labeler's vocabulary (mentions, triggers, qualifiers) is a few thousand phrases in dozens of lists.
:func:`compile_phrases` turns one list into a single regex shaped as a character trie, which stays fast on
long lists and prefers the longer phrase where phrases share a start. :class:`MultiMatcher` then runs all
those regexes in one pass over a report, giving each the same match spans as its own ``finditer``.

Phrase syntax: words separated by spaces match any run of whitespace, ``-`` or ``/``; a trailing ``*``
on a word matches any word ending ("opacit*"). Matching is on word boundaries; phrases are lower-cased, so
the caller lower-cases the text.
"""

from __future__ import annotations

import hashlib
import re
import weakref
from collections.abc import Iterable

from . import regex_cache

Span = tuple[int, int]

_SEP = r"[\s\-/]+"
_SEP_TOKEN = "\x00SEP"
_STAR_TOKEN = "\x00STAR"
# every regex from compile_phrases starts with this word-start guard
PREFIX = r"(?<![\w])"


def _phrase_tokens(phrase: str) -> list[str]:
    """A phrase as trie tokens: single characters, "\x00SEP" between words, "\x00STAR" for a trailing '*'."""
    words = phrase.strip().lower().split()
    toks: list[str] = []
    for i, w in enumerate(words):
        if i:
            toks.append(_SEP_TOKEN)
        star = w.endswith("*")
        toks.extend(w[:-1] if star else w)
        if star:
            toks.append(_STAR_TOKEN)
    return toks


def _trie_regex(node: dict) -> str:
    """Regex source for a trie node (token -> child; the key "" marks the end of a phrase)."""
    end = "" in node
    alts = []
    # literal characters first, wildcard last: the longer literal route is tried first
    for tok in sorted((k for k in node if k), key=lambda k: (k == _STAR_TOKEN, k == _SEP_TOKEN, k)):
        piece = _SEP if tok == _SEP_TOKEN else (r"\w*" if tok == _STAR_TOKEN else re.escape(tok))
        alts.append(piece + _trie_regex(node[tok]))
    if not alts:
        return ""
    body = alts[0] if len(alts) == 1 and not end and len(node) == 1 else "(?:" + "|".join(alts) + ")"
    return f"(?:{body})?" if end else body


# compiled regex -> its phrases (used to build the merged guard of MultiMatcher)
_PHRASES: weakref.WeakKeyDictionary[re.Pattern, tuple[str, ...]] = weakref.WeakKeyDictionary()


def compile_phrases(phrases: Iterable[str]) -> re.Pattern | None:
    """One regex for many phrases, built as a character trie (fast on long phrase lists).

    Matching is on word boundaries; where phrases share a start, the longer one is preferred.
    Returns None for an empty list.
    """
    uniq = sorted({p.strip().lower() for p in phrases if p and p.strip()})
    if not uniq:
        return None

    def build() -> str:
        trie: dict = {}
        for p in uniq:
            node = trie
            for tok in _phrase_tokens(p):
                node = node.setdefault(tok, {})
            node[""] = {}
        return PREFIX + _trie_regex(trie) + r"(?![\w])"

    key = "phrases:" + hashlib.sha256("\n".join(uniq).encode()).hexdigest()
    rx = regex_cache.compile(regex_cache.source(key, build))
    _PHRASES[rx] = tuple(uniq)
    return rx


class MultiMatcher:
    """Runs many phrase regexes (from :func:`compile_phrases`) in one pass over the text.

    Each regex becomes a capturing lookahead tried at every word start; per regex the matches are then
    made non-overlapping left to right, which gives the same spans as ``finditer`` on that regex alone.
    Regexes not built by :func:`compile_phrases` (no word-start guard) and None are left out.
    """

    def __init__(self, patterns: Iterable[re.Pattern | None]):
        self.patterns: list[re.Pattern] = []
        seen = set()
        for rx in patterns:
            if rx is None or id(rx) in seen or not rx.pattern.startswith(PREFIX):
                continue
            seen.add(id(rx))
            self.patterns.append(rx)
        body = "".join(f"(?:(?=({rx.pattern[len(PREFIX) :]}))|)" for rx in self.patterns)
        # guard: one merged trie of every phrase, so that words starting no phrase are skipped in C
        self._phrases = sorted({p for rx in self.patterns for p in _PHRASES.get(rx, ())})
        guard = compile_phrases(self._phrases) if self._phrases else None
        guard_src = f"(?={guard.pattern[len(PREFIX) :]})" if guard is not None else r"(?=\w)"
        self.rx = regex_cache.compile(PREFIX + guard_src + body + r"\w+")

    def scan(self, text: str) -> dict[int, list[Span]]:
        """``id(regex)`` -> its (start, end) match spans in ``text``, for every regex of the matcher."""
        n = len(self.patterns)
        found: list[list[Span]] = [[] for _ in range(n)]
        last_end = [-1] * n
        for m in self.rx.finditer(text):
            for i, g in enumerate(m.groups()):
                if g is not None:
                    s = m.start(i + 1)
                    if s >= last_end[i]:
                        e = m.end(i + 1)
                        found[i].append((s, e))
                        last_end[i] = e
        return {id(rx): found[i] for i, rx in enumerate(self.patterns)}


def spans(rx: re.Pattern | None, text: str) -> list[Span]:
    """(start, end) of every match of ``rx`` in ``text``; [] for no regex."""
    if rx is None:
        return []
    return [(m.start(), m.end()) for m in rx.finditer(text)]


def overlaps(a: Span, others: list[Span]) -> bool:
    """Whether span ``a`` shares at least one character with any of ``others``."""
    s, e = a
    return any(s < e2 and s2 < e for s2, e2 in others)
