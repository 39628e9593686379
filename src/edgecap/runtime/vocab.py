"""Vocabulary: token <-> id, saved as JSON (never a pickled object) in every run and bundle.

Ids 0..3 are the specials <pad>, <bos>, <eos>, <unk>; then training tokens seen at least `min_count`
times, most frequent first (ties alphabetical), so the same training text always gives the same ids.
`special_ids()` is the one derivation of the ids the decode loop and a bundle's manifest name (the sentence
separator "." among them, exempt from trigram blocking).

A vocabulary imported from another tool keeps that tool's ids, because the model's embedding rows and output
columns are numbered by them: `Vocabulary(tokens, special={"pad": 0, "bos": 2, "eos": 3, "unk": 1})` (a Keras
Tokenizer's start / end words as <bos> / <eos>, runtime.tokenizer). vocab.json then records "special"; a
vocabulary without it has the four specials first, as above.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from edgecap.runtime.files import write_atomically
from edgecap.runtime.text import render_report, tokenize

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
SEP = "."  # the sentence separator token (runtime.text joins sentences with " . ")
FORMAT = "edgecap-vocab/1"


SPECIAL_KEYS = ("pad", "bos", "eos", "unk")


class Vocabulary:
    def __init__(
        self,
        tokens: list[str],
        counts: dict[str, int] | None = None,
        min_count: int = 1,
        special: dict[str, int] | None = None,
    ):
        """special: the ids of pad, bos, eos, unk when they are not 0..3 (an imported vocabulary; see the
        module docstring); None: tokens start with SPECIALS."""
        if special is None and tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"vocabulary must start with {SPECIALS}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("vocabulary has duplicate tokens")
        if special is not None:
            if set(special) != set(SPECIAL_KEYS) or not all(_is_int(i) for i in special.values()):
                raise ValueError(f"special must map {', '.join(SPECIAL_KEYS)} to integer ids")
            if not all(0 <= i < len(tokens) for i in special.values()):
                raise ValueError(f"special ids {special} outside the {len(tokens)} tokens")
        self.tokens = list(tokens)
        self.counts = dict(counts or {})
        self.min_count = min_count
        self.index = {t: i for i, t in enumerate(self.tokens)}
        self.special = dict(special) if special is not None else None
        ids = special or dict(zip(SPECIAL_KEYS, range(len(SPECIALS))))
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = (ids[k] for k in SPECIAL_KEYS)

    @classmethod
    def build(cls, cleaned_reports: Iterable[str], min_count: int = 3) -> Vocabulary:
        """From cleaned training reports (see runtime.text.clean_report)."""
        counts = Counter(tok for report in cleaned_reports for tok in tokenize(report))
        kept = sorted((t for t, n in counts.items() if n >= min_count), key=lambda t: (-counts[t], t))
        kept = [t for t in kept if t not in SPECIALS]
        return cls(list(SPECIALS) + kept, {t: counts[t] for t in kept}, min_count)

    def __len__(self) -> int:
        return len(self.tokens)

    def special_ids(self) -> dict[str, int]:
        """{pad, bos, eos, unk, sep}: a manifest's "special" object; sep is -1 when "." is not a token.
        runtime.decoding.SpecialIds.from_ids reads it."""
        return {
            "pad": self.pad_id,
            "bos": self.bos_id,
            "eos": self.eos_id,
            "unk": self.unk_id,
            "sep": self.index.get(SEP, -1),
        }

    def encode(self, cleaned: str, max_len: int | None = None) -> list[int]:
        """Cleaned report -> ids (no <bos>/<eos>), unknown words -> <unk>, cut to max_len."""
        ids = [self.index.get(t, self.unk_id) for t in tokenize(cleaned)]
        return ids[:max_len] if max_len is not None else ids

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Ids -> tokens, stopping at <eos> and skipping <pad>/<bos>."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i in (self.pad_id, self.bos_id):
                continue
            out.append(self.tokens[i] if 0 <= i < len(self.tokens) else UNK)
        return out

    def render(self, ids: Iterable[int]) -> str:
        return render_report(self.decode(ids))

    # ---- JSON ----------------------------------------------------------------------------------
    def to_json(self) -> dict:
        d = {"format": FORMAT, "min_count": self.min_count, "tokens": self.tokens, "counts": self.counts}
        if self.special is not None:
            d["special"] = self.special
        return d

    def save(self, path: Path) -> None:
        write_atomically(path, json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        """Read vocab.json; ValueError "<path>: <what is wrong>" for anything but an edgecap vocabulary
        (not JSON, not an object, another format, tokens not a list of strings, counts not str -> int)."""
        try:
            d = json.loads(Path(path).read_text())
        except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
            raise ValueError(f"{path}: not readable JSON ({e})") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path}: not an edgecap vocabulary (a JSON {type(d).__name__}, not an object)")
        if d.get("format") != FORMAT:
            raise ValueError(f"{path}: not an edgecap vocabulary (format {d.get('format')!r})")
        tokens, counts, min_count = d.get("tokens"), d.get("counts"), d.get("min_count", 1)
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise ValueError(f"{path}: tokens must be a list of strings")
        if counts is not None and not (isinstance(counts, dict) and all(_is_int(n) for n in counts.values())):
            raise ValueError(f"{path}: counts must map tokens to integers")
        if not _is_int(min_count):
            raise ValueError(f"{path}: min_count must be an integer")
        special = d.get("special")
        if special is not None and not isinstance(special, dict):
            raise ValueError(f"{path}: special must map {', '.join(SPECIAL_KEYS)} to integer ids")
        try:
            return cls(tokens, counts, min_count, special)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
