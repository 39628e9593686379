"""The runtime decode loop on a hand-made step model whose best reports are known."""

import numpy as np
import pytest

from edgecap.runtime.decoding import SpecialIds, beam_search, decode, greedy
from edgecap.runtime.features import fuse_views

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
