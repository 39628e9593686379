"""The one decode loop: greedy and beam search over a step protocol.

Both the Keras reference (training.keras_step.KerasBundle) and every TFLite bundle (runtime.bundle) implement
`StepModel`, so any difference between their reports comes from conversion alone, never from two loops.

Shapes: N = attention positions (views x grid x grid), D = feature size, H = LSTM size, V = vocabulary,
B = beams decoded together.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


class StepModel(Protocol):
    """One decoder step: previous token and LSTM state + image features -> next-token logits."""

    hidden_size: int

    def step(
        self, tokens: np.ndarray, h: np.ndarray, c: np.ndarray, features: np.ndarray, mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """tokens (B,) int32, h/c (B, H), features (N, D), mask (N,) 1 = real position, 0 = absent view
        -> logits (B, V), h' (B, H), c' (B, H), attention (B, N)."""
        ...


# The default beam everywhere (caption, app, API, evaluate, bench, conversion verification): R2Gen's beam 3 with
# trigram blocking, the IU X-Ray convention. A bundle's decoder step advances this many rows per call.
DEFAULT_BEAM = 3
# The widest beam a front end accepts (caption, app, API): R2Gen's reports gain nothing past 3-5, and each
# extra row costs a decoder row per step; a beam of 1,000 is a mistake or an attack, not a setting.
MAX_BEAM = 5


@dataclass
class Decoded:
    ids: list[int]  # generated token ids, without <bos> and <eos>
    attention: np.ndarray  # (len(ids), N): the attention weights that produced each token
    logprob: float  # sum of log-probabilities of ids and the closing <eos>
    steps: int  # decoder step calls (batch rows counted once per call)
    finished: bool = True  # False when max_len was reached before <eos>
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SpecialIds:
    bos: int
    eos: int
    banned: tuple[int, ...]  # never generated: <pad>, <bos>, <unk>
    sep: int = -1  # the sentence separator "." (exempt from trigram blocking), -1 if none

    @classmethod
    def from_ids(cls, ids: Mapping[str, int]) -> SpecialIds:
        """A manifest's "special" object {pad, bos, eos, unk, sep} (runtime.vocab.Vocabulary.special_ids)."""
        return cls(ids["bos"], ids["eos"], (ids["pad"], ids["bos"], ids["unk"]), ids.get("sep", -1))

    @classmethod
    def from_vocab(cls, vocab) -> SpecialIds:
        return cls.from_ids(vocab.special_ids())


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities over the last axis, in the dtype of `logits` (callers wanting float64 pass it)."""
    z = logits - logits.max(axis=-1, keepdims=True)  # a new array
    z -= np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return z


def greedy(model: StepModel, features: np.ndarray, mask: np.ndarray, special: SpecialIds, max_len: int) -> Decoded:
    """Most likely token at each step until <eos> or max_len tokens."""
    h = np.zeros((1, model.hidden_size), np.float32)
    c = np.zeros_like(h)
    token = np.array([special.bos], np.int32)
    ids: list[int] = []
    atts: list[np.ndarray] = []
    logprob = 0.0
    banned = list(special.banned)
    for t in range(max_len + 1):
        logits, h, c, att = model.step(token, h, c, features, mask)
        logits = np.array(logits[0], np.float64)
        logits[banned] = -np.inf
        if t == max_len:  # out of room: only <eos> may follow
            break
        nxt = int(np.argmax(logits))
        logprob += float(log_softmax(logits)[nxt])
        if nxt == special.eos:
            return Decoded(ids, _stack(atts, mask), logprob, t + 1)
        ids.append(nxt)
        atts.append(att[0])
        token = np.array([nxt], np.int32)
    return Decoded(ids, _stack(atts, mask), logprob, max_len + 1, finished=False)


def beam_search(
    model: StepModel,
    features: np.ndarray,
    mask: np.ndarray,
    special: SpecialIds,
    max_len: int,
    beam: int = DEFAULT_BEAM,
    block_trigrams: bool = True,
) -> Decoded:
    """Beam search (sum of log-probabilities, no length penalty) with trigram blocking: a token that would
    repeat a trigram already in the hypothesis is not allowed (R2Gen), except trigrams that contain the
    sentence separator: radiology reports legitimately open several sentences the same way (". there is").
    beam=1 equals greedy when blocking does not trigger."""
    if beam < 1:
        raise ValueError("beam must be >= 1")
    hsz = model.hidden_size
    # Live hypotheses as parallel lists. Per step the arithmetic is vectorised over (B, V) once; the Python
    # loop touches only the 2 x beam best candidates, and trigram blocking looks up a per-hypothesis map
    # (first two tokens of each trigram -> third tokens) instead of rescanning the sequence. `edgecap bench`
    # measures what this loop costs next to the interpreter (its decode split).
    scores = np.zeros((1, 1))
    seqs: list[list[int]] = [[]]
    atts: list[list[np.ndarray]] = [[]]
    grams: list[dict[tuple[int, int], frozenset]] = [{}]
    h = np.zeros((1, hsz), np.float32)
    c = np.zeros_like(h)
    finished: list[tuple[float, list[int], list[np.ndarray]]] = []
    banned = list(special.banned)
    eos, sep, k = special.eos, special.sep, 2 * beam
    steps = 0
    tokens = np.array([special.bos], np.int32)
    for t in range(max_len + 1):
        logits, h, c, att = model.step(tokens, h, c, features, mask)
        steps += 1
        cand = log_softmax(logits) + scores  # (B, V) float64: hypothesis score + log-probability of each token
        cand[:, banned] = -np.inf
        if block_trigrams and t >= 3:
            for b, s in enumerate(seqs):
                blocked = grams[b].get((s[-2], s[-1]))
                if blocked:
                    cand[b, list(blocked)] = -np.inf
        if t == max_len:  # out of room: every live hypothesis must end here
            end = cand[:, eos].copy()
            cand.fill(-np.inf)
            cand[:, eos] = end
        v = cand.shape[1]
        flat = cand.ravel()
        best = _top_k(flat, k)
        new_rows, new_scores, new_seqs, new_atts, new_grams = [], [], [], [], []
        for idx, score in zip(best.tolist(), flat[best].tolist()):
            if score == -math.inf:
                break
            b, tok = divmod(idx, v)
            if tok == eos:
                finished.append((score, seqs[b], atts[b]))
                continue
            s = seqs[b]
            new_rows.append(b)
            new_scores.append(score)
            new_seqs.append(s + [tok])
            new_atts.append(atts[b] + [att[b]])
            g = grams[b]
            if block_trigrams and len(s) >= 2 and tok != sep and sep not in (s[-2], s[-1]):
                g = dict(g)  # copy-on-write: sibling hypotheses share their parent's map
                key = (s[-2], s[-1])
                g[key] = g.get(key, frozenset()) | {tok}
            new_grams.append(g)
            if len(new_rows) == beam:
                break
        if not new_rows or (len(finished) >= beam and max(f[0] for f in finished) >= new_scores[0]):
            break
        scores, seqs, atts, grams = np.array(new_scores)[:, None], new_seqs, new_atts, new_grams
        if new_rows != list(range(len(seqs))):
            rows = np.array(new_rows)
            h, c = h[rows], c[rows]
        tokens = np.array([s[-1] for s in seqs], np.int32)
    if finished:
        score, ids, a = max(finished, key=lambda f: f[0])
        return Decoded(ids, _stack(a, mask), score, steps)
    return Decoded(seqs[0], _stack(atts[0], mask), float(scores[0, 0]), steps, finished=False)


def _top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, largest first, ties broken by the lower index (as a stable sort of
    all B x V candidates would): the k-th largest value by partition, then a sort of the few candidates at or
    above it. Ties are common: int8 decoders emit quantised logits."""
    n = len(values)
    if k >= n:
        idx = np.arange(n)
    else:
        idx = np.flatnonzero(values >= np.partition(values, n - k)[n - k])
    return idx[np.lexsort((idx, -values[idx]))][:k]


def _blocked_by_trigrams(seq: list[int], sep: int = -1) -> set[int]:
    """Tokens that would complete a trigram already present in seq (trigrams with `sep` never count).
    The reference definition of what beam_search's incremental map blocks (tests compare the two)."""
    if len(seq) < 3 or sep in seq[-2:]:
        return set()
    prefix = (seq[-2], seq[-1])
    return {seq[i + 2] for i in range(len(seq) - 2) if (seq[i], seq[i + 1]) == prefix} - {sep}


def _stack(atts: list[np.ndarray], mask: np.ndarray) -> np.ndarray:
    return np.stack(atts).astype(np.float32) if atts else np.zeros((0, len(mask)), np.float32)


def decode(model: StepModel, features, mask, special: SpecialIds, max_len: int, beam: int = DEFAULT_BEAM) -> Decoded:
    """beam == 1: greedy; beam > 1: beam search with trigram blocking."""
    if beam == 1:
        return greedy(model, features, mask, special, max_len)
    return beam_search(model, features, mask, special, max_len, beam=beam)
