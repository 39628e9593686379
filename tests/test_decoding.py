"""The runtime decode loop on a hand-made step model whose best reports are known."""

import numpy as np
import pytest

from edgecap.runtime.decoding import SpecialIds, beam_search, decode, greedy
from edgecap.runtime.study import fuse_views

PAD, BOS, EOS, UNK = 0, 1, 2, 3
V = 8
SPECIAL = SpecialIds(BOS, EOS, (PAD, BOS, UNK))


class TableStep:
    """A first-order Markov 'decoder': next-token log-probabilities depend on the previous token only.
    h carries nothing; attention is uniform over the unmasked positions."""

    hidden_size = 2

    def __init__(self, table: dict[int, dict[int, float]]):
        self.logits = np.full((V, V), -30.0)
        for prev, nxt in table.items():
            for tok, p in nxt.items():
                self.logits[prev, tok] = np.log(p)
        self.calls = 0

    def step(self, tokens, h, c, features, mask):
        self.calls += 1
        att = np.broadcast_to(mask / mask.sum(), (len(tokens), len(mask)))
        return self.logits[tokens], h, c, att


FEATS, MASK = fuse_views([np.ones((4, 3), np.float32), None], 2)


def test_greedy_follows_argmax():
    m = TableStep({BOS: {4: 0.9, 5: 0.1}, 4: {6: 0.8, EOS: 0.2}, 6: {EOS: 1.0}})
    d = greedy(m, FEATS, MASK, SPECIAL, max_len=10)
    assert d.ids == [4, 6] and d.finished
    assert np.isclose(d.logprob, np.log(0.9 * 0.8 * 1.0))
    assert d.attention.shape == (2, 8)
    assert np.allclose(d.attention[:, 4:], 0) and np.allclose(d.attention.sum(1), 1)


def test_beam_beats_greedy_trap():
    # greedy takes 4 (0.6) then must spread over 4 -> {6, 7} (0.5 each): total 0.3
    # the better report starts with 5 (0.4) then ends surely: total 0.4
    m = TableStep({BOS: {4: 0.6, 5: 0.4}, 4: {6: 0.5, 7: 0.5}, 5: {EOS: 1.0}, 6: {EOS: 1.0}, 7: {EOS: 1.0}})
    assert greedy(m, FEATS, MASK, SPECIAL, 10).ids == [4, 6]
    b = beam_search(m, FEATS, MASK, SPECIAL, 10, beam=3)
    assert b.ids == [5] and np.isclose(b.logprob, np.log(0.4))
    assert decode(m, FEATS, MASK, SPECIAL, 10, beam=1).ids == [4, 6]


def test_trigram_blocking():
    # 4 5 4 5 ... loops; blocking forbids repeating the trigram (4, 5, 4), so after "4 5 4 5" only <eos> is left
    m = TableStep({BOS: {4: 1.0}, 4: {5: 0.999, EOS: 0.001}, 5: {4: 0.999, EOS: 0.001}})
    assert beam_search(m, FEATS, MASK, SPECIAL, 20, beam=1, block_trigrams=True).ids == [4, 5, 4, 5]
    unblocked = beam_search(m, FEATS, MASK, SPECIAL, 20, beam=1, block_trigrams=False)
    assert unblocked.ids == [4, 5] * 10


def test_trigram_blocking_spares_sentence_separator():
    # ". 4 5" opens two sentences: allowed; 6 is the separator "."
    special = SpecialIds(BOS, EOS, (PAD, BOS, UNK), sep=6)
    m = TableStep({BOS: {4: 1.0}, 4: {5: 1.0}, 5: {6: 0.999, EOS: 0.001}, 6: {4: 0.6, EOS: 0.4}})
    b = beam_search(m, FEATS, MASK, special, 20, beam=1, block_trigrams=True)
    assert b.ids[:6] == [4, 5, 6, 4, 5, 6]  # "4 5 ." twice: separator trigrams are not blocked
    assert beam_search(m, FEATS, MASK, SPECIAL, 20, beam=1).ids == [4, 5, 6, 4, 5]  # without sep: blocked


def test_max_len_forces_end():
    m = TableStep({BOS: {4: 1.0}, 4: {4: 0.99, EOS: 0.01}})
    g = greedy(m, FEATS, MASK, SPECIAL, max_len=5)
    assert g.ids == [4] * 5 and not g.finished
    b = beam_search(m, FEATS, MASK, SPECIAL, 5, beam=3, block_trigrams=False)
    assert len(b.ids) <= 5 and b.finished


def test_banned_tokens_never_generated():
    m = TableStep({BOS: {UNK: 0.9, 4: 0.1}, 4: {EOS: 1.0}})
    assert greedy(m, FEATS, MASK, SPECIAL, 5).ids == [4]
    assert beam_search(m, FEATS, MASK, SPECIAL, 5, beam=3).ids == [4]


def test_fuse_views():
    f, m = fuse_views([None, np.full((4, 3), 2.0, np.float32)], 2)
    assert f.shape == (8, 3) and m.tolist() == [0] * 4 + [1] * 4 and f[4:].min() == 2.0
    with pytest.raises(ValueError):
        fuse_views([None, None], 2)
    with pytest.raises(ValueError):
        fuse_views([np.ones((4, 3)), np.ones((5, 3))], 2)


def _reference_beam_search(model, features, mask, special, max_len, beam=3):
    """The straightforward beam search (full sort, trigram blocking by rescanning each hypothesis), kept as
    the definition the optimised runtime.decoding.beam_search must reproduce token for token."""
    from edgecap.runtime.decoding import _blocked_by_trigrams, log_softmax

    scores, seqs, h = np.zeros(1), [[]], np.zeros((1, model.hidden_size), np.float32)
    c, finished = h.copy(), []
    for t in range(max_len + 1):
        tokens = np.array([s[-1] if s else special.bos for s in seqs], np.int32)
        logits, h, c, _ = model.step(tokens, h, c, features, mask)
        logp = log_softmax(np.asarray(logits, np.float64))
        logp[:, list(special.banned)] = -np.inf
        for b, s in enumerate(seqs):
            for tok in _blocked_by_trigrams(s, special.sep):
                logp[b, tok] = -np.inf
        if t == max_len:
            only = np.full_like(logp, -np.inf)
            only[:, special.eos] = logp[:, special.eos]
            logp = only
        cand = scores[:, None] + logp
        rows, new_scores, new_seqs = [], [], []
        for idx in np.argsort(-cand, axis=None, kind="stable")[: 2 * beam]:
            b, tok = divmod(int(idx), cand.shape[1])
            score = float(cand[b, tok])
            if not np.isfinite(score):
                break
            if tok == special.eos:
                finished.append((score, seqs[b]))
            else:
                rows.append(b), new_scores.append(score), new_seqs.append(seqs[b] + [tok])
            if len(rows) == beam:
                break
        if not rows or (len(finished) >= beam and max(f[0] for f in finished) >= max(new_scores)):
            break
        scores, seqs, h, c = np.array(new_scores), new_seqs, h[rows], c[rows]
    return max(finished, key=lambda f: f[0])[1] if finished else seqs[0]


@pytest.mark.parametrize("seed", range(40))
def test_beam_search_matches_the_reference_definition(seed):
    """Random sparse Markov tables with loops (so trigram blocking fires often) and a separator token."""
    rng = np.random.default_rng(seed)
    table = {}
    for prev in range(V):
        nxt = rng.choice(np.arange(2, V), size=3, replace=False)
        p = rng.dirichlet(np.ones(3))
        table[prev] = dict(zip(nxt.tolist(), p.tolist()))
    m = TableStep(table)
    special = SpecialIds(BOS, EOS, (PAD, BOS, UNK), sep=int(rng.integers(4, V)))

    def score(ids):  # sum of log-probabilities of ids then <eos> under the table
        logp = m.logits - np.log(np.exp(m.logits).sum(axis=1, keepdims=True))
        path = [BOS] + ids + [EOS]
        return sum(logp[a, b] for a, b in zip(path, path[1:]))

    for beam in (1, 2, 3, 5):
        got = beam_search(m, FEATS, MASK, special, 25, beam=beam)
        ref = _reference_beam_search(m, FEATS, MASK, special, 25, beam=beam)
        if got.ids != ref:  # only an exact tie (the same transitions in another order) may differ
            assert abs(score(got.ids) - score(ref)) < 1e-9 and sorted(got.ids) == sorted(ref), (seed, beam)


def test_top_k_equals_a_stable_sort_with_ties_and_inf():
    """_top_k: the k largest values above -inf, largest first, equal values in index order, as a stable sort of
    every candidate gives them (int8 logits tie often; banned and blocked tokens are -inf)."""
    from edgecap.runtime.decoding import _top_k

    rng = np.random.default_rng(0)
    for _ in range(2000):
        v = np.round(rng.normal(size=int(rng.integers(2, 40))) * rng.choice([0.5, 3.0]))
        v[rng.random(len(v)) < 0.3] = -np.inf
        k = int(rng.integers(1, 8))
        expected = [int(i) for i in np.argsort(-v, kind="stable") if v[i] != -np.inf][:k]
        got = [int(i) for i in _top_k(v, k) if v[i] != -np.inf]
        assert got == expected, (v, k)
