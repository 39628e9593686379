"""The one decode loop: greedy and beam search over a step protocol.

Both the Keras reference (training.keras_step.KerasBundle) and every TFLite bundle (runtime.bundle) implement
`StepModel`, so any difference between their reports comes from conversion alone, never from two loops.

Two kinds of decoder run through the loop (the manifest's decoder.kind):

    recurrent   StepModel: token + LSTM state (h, c) + image memory -> logits, new state, attention
    sequence    SequenceModel: the padded prefix (<bos> + tokens so far) + the image's feature vector -> logits,
                no state and no attention (the "merge" / "inject" captioners of Keras notebooks, which call
                model.predict on the padded partial sequence)

The loop sees neither: `stepper(model)` wraps each in a `Stepper` whose per-row state is opaque ((h, c), or the
prefix) and which beam search reorders by row; attention is None for a decoder without it.

Shapes: N = attention positions (views x grid x grid), D = feature size, H = LSTM size, V = vocabulary,
B = beams decoded together, L = a sequence decoder's prefix length.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

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


class SequenceModel(Protocol):
    """A sequence-input decoder: padded prefixes + the image's feature vector -> next-token logits."""

    decoder_kind: Literal["sequence"]
    sequence_length: int  # L: prefix length the model reads
    padding: str  # "pre" (Keras pad_sequences' default: the prefix at the end) or "post"

    def predict_next(self, prefixes: np.ndarray, features: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """prefixes (B, L) int32 padded with 0, features (N, D), mask (N,) -> logits (B, V)."""
        ...


class Stepper(Protocol):
    """What the decode loop runs: a decoder behind an opaque per-row state."""

    def start(self) -> Any:
        """The state of one row before <bos>."""
        ...

    def advance(
        self, tokens: np.ndarray, state: Any, features: np.ndarray, mask: np.ndarray
    ) -> tuple[np.ndarray, Any, np.ndarray | None]:
        """tokens (B,) int32, each row's state -> logits (B, V), the new state, attention (B, N) or None."""
        ...

    def select(self, state: Any, rows: np.ndarray) -> Any:
        """The state of the given rows, in that order (beam search keeps, drops and copies hypotheses)."""
        ...


class RecurrentStepper:
    """A StepModel: the state is (h, c), each (B, H)."""

    def __init__(self, model: StepModel):
        self.model = model

    def start(self) -> tuple[np.ndarray, np.ndarray]:
        h = np.zeros((1, self.model.hidden_size), np.float32)
        return h, np.zeros_like(h)

    def advance(self, tokens, state, features, mask):
        logits, h, c, att = self.model.step(tokens, state[0], state[1], features, mask)
        return logits, (h, c), att

    def select(self, state, rows):
        return state[0][rows], state[1][rows]


class SequenceStepper:
    """A SequenceModel: the state is the tokens so far, (B, t) int32 (<bos> first); each call pads them to
    (B, L) with 0 (Keras pad_sequences' value; a Tokenizer never assigns id 0) on the model's side."""

    def __init__(self, model: SequenceModel):
        self.model = model
        self.length, self.pre = model.sequence_length, model.padding == "pre"

    def start(self) -> np.ndarray:
        return np.zeros((1, 0), np.int32)

    def advance(self, tokens, state, features, mask):
        seq = np.concatenate([state, np.asarray(tokens, np.int32)[:, None]], axis=1)  # (B, t + 1)
        t = seq.shape[1]
        if t > self.length:
            raise ValueError(f"a prefix of {t} tokens does not fit the decoder's sequence length {self.length}")
        padded = np.zeros((len(seq), self.length), np.int32)
        if self.pre:
            padded[:, self.length - t :] = seq
        else:
            padded[:, :t] = seq
        return self.model.predict_next(padded, features, mask), seq, None

    def select(self, state, rows):
        return state[rows]


def stepper(model: StepModel | SequenceModel | Stepper) -> Stepper:
    """The Stepper of a model: by its decoder_kind ("recurrent" when it has none); a Stepper as it is."""
    if hasattr(model, "advance") and hasattr(model, "select"):
        return model  # type: ignore[return-value]
    if getattr(model, "decoder_kind", "recurrent") == "sequence":
        return SequenceStepper(model)  # type: ignore[arg-type]
    return RecurrentStepper(model)  # type: ignore[arg-type]


# The default beam everywhere (caption, app, API, evaluate, bench, conversion verification): R2Gen's beam 3 with
# trigram blocking, the IU X-Ray convention. A bundle's decoder step advances this many rows per call.
DEFAULT_BEAM = 3
# The widest beam a front end accepts (caption, app, API): R2Gen's reports gain nothing past 3-5, and each
# extra row costs a decoder row per step; a beam of 1,000 is a mistake or an attack, not a setting.
MAX_BEAM = 5


@dataclass
class Decoded:
    ids: list[int]  # generated token ids, without <bos> and <eos>
    attention: np.ndarray | None  # (len(ids), N): the attention weights that produced each token; None: none
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


def greedy(model, features: np.ndarray, mask: np.ndarray, special: SpecialIds, max_len: int) -> Decoded:
    """Most likely token at each step until <eos> or max_len tokens. model: a StepModel, SequenceModel or
    Stepper."""
    run = stepper(model)
    state = run.start()
    token = np.array([special.bos], np.int32)
    ids: list[int] = []
    atts: list[np.ndarray] = []
    with_attention = True
    logprob = 0.0
    banned = list(special.banned)
    for t in range(max_len + 1):
        logits, state, att = run.advance(token, state, features, mask)
        with_attention = with_attention and att is not None
        logits = np.array(logits[0], np.float64)
        logits[banned] = -np.inf
        if t == max_len:  # out of room: only <eos> may follow
            break
        nxt = int(np.argmax(logits))
        logprob += float(log_softmax(logits)[nxt])
        if nxt == special.eos:
            return Decoded(ids, _stack(atts, mask) if with_attention else None, logprob, t + 1)
        ids.append(nxt)
        if att is not None:
            atts.append(att[0])
        token = np.array([nxt], np.int32)
    return Decoded(ids, _stack(atts, mask) if with_attention else None, logprob, max_len + 1, finished=False)


def beam_search(
    model,
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
    beam=1 equals greedy when blocking does not trigger. model: a StepModel, SequenceModel or Stepper."""
    if beam < 1:
        raise ValueError("beam must be >= 1")
    run = stepper(model)
    # Live hypotheses as parallel lists. Per step the arithmetic is vectorised over (B, V) once; the Python
    # loop touches only the 2 x beam best candidates, and trigram blocking looks up a per-hypothesis map
    # (first two tokens of each trigram -> third tokens) instead of rescanning the sequence. `edgecap bench`
    # measures what this loop costs next to the interpreter (its decode split).
    scores = np.zeros((1, 1))
    seqs: list[list[int]] = [[]]
    atts: list[list[np.ndarray]] = [[]]
    grams: list[dict[tuple[int, int], frozenset]] = [{}]
    state = run.start()
    with_attention = True
    finished: list[tuple[float, list[int], list[np.ndarray]]] = []
    banned = list(special.banned)
    eos, sep, k = special.eos, special.sep, 2 * beam
    steps = 0
    tokens = np.array([special.bos], np.int32)
    for t in range(max_len + 1):
        logits, state, att = run.advance(tokens, state, features, mask)
        with_attention = with_attention and att is not None
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
            new_atts.append(atts[b] + [att[b]] if att is not None else atts[b])
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
            state = run.select(state, np.array(new_rows))
        tokens = np.array([s[-1] for s in seqs], np.int32)
    if finished:
        score, ids, a = max(finished, key=lambda f: f[0])
        return Decoded(ids, _stack(a, mask) if with_attention else None, score, steps)
    return Decoded(
        seqs[0], _stack(atts[0], mask) if with_attention else None, float(scores[0, 0]), steps, finished=False
    )


def _top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values above -inf, largest first, ties broken by the lower index (as
    a stable sort of all B x V candidates would); fewer than k when fewer are above -inf (the caller stops at
    the first -inf anyway). Ties are common: int8 decoders emit quantised logits.

    k argmax passes over a copy (argmax returns the first of equal maxima: the lower index), each winner then
    set to -inf: ~11 us for k = 6 over 3 x 899 candidates, where a partition (introselect over all of them)
    took ~40 us, a third of the decode loop's Python time per step."""
    n = len(values)
    if k >= n:
        return np.lexsort((np.arange(n), -values))
    work = values.copy()
    out = []
    for _ in range(k):
        i = int(work.argmax())
        if work[i] == -math.inf:
            break
        out.append(i)
        work[i] = -math.inf
    return np.array(out, np.intp)


def _blocked_by_trigrams(seq: list[int], sep: int = -1) -> set[int]:
    """Tokens that would complete a trigram already present in seq (trigrams with `sep` never count).
    The reference definition of what beam_search's incremental map blocks (tests compare the two)."""
    if len(seq) < 3 or sep in seq[-2:]:
        return set()
    prefix = (seq[-2], seq[-1])
    return {seq[i + 2] for i in range(len(seq) - 2) if (seq[i], seq[i + 1]) == prefix} - {sep}


def _stack(atts: list[np.ndarray], mask: np.ndarray) -> np.ndarray:
    return np.stack(atts).astype(np.float32) if atts else np.zeros((0, len(mask)), np.float32)


def decode(model, features, mask, special: SpecialIds, max_len: int, beam: int = DEFAULT_BEAM) -> Decoded:
    """beam == 1: greedy; beam > 1: beam search with trigram blocking."""
    if beam == 1:
        return greedy(model, features, mask, special, max_len)
    return beam_search(model, features, mask, special, max_len, beam=beam)
