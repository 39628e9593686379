"""A Keras `Tokenizer` saved with `tokenizer.to_json()` -> an edgecap Vocabulary, without TensorFlow.

    vocab = vocabulary_from_keras_json("tokenizer.json", start="startseq", end="endseq")

The file is what keras_preprocessing / tf.keras wrote: {"class_name": "Tokenizer", "config": {"word_index":
"<a JSON string>", "index_word": ..., "num_words", "oov_token", "lower", "filters", "split", ...}}. The
model's embedding rows and softmax columns are numbered by the Tokenizer's ids, so the vocabulary keeps them:
id 0 is padding (the Tokenizer never assigns it), the start and end words are <bos> and <eos>, the
oov_token is <unk> (without one, <unk> is the padding id: a token the decoder never generates either way).
With num_words set, only ids below it exist for the model (texts_to_sequences drops the others).

Device-safe (stdlib only). Errors are TokenizerError, one line naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgecap.runtime.vocab import PAD, Vocabulary


class TokenizerError(ValueError):
    """Not a Keras Tokenizer JSON file, or one without the start / end words."""


def read_keras_tokenizer(path: str | Path) -> dict[str, Any]:
    """tokenizer.json -> its config, with word_index parsed (word -> id); TokenizerError otherwise."""
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise TokenizerError(f"{path}: not a readable JSON file ({e})") from None
    if not isinstance(d, dict) or d.get("class_name") != "Tokenizer" or not isinstance(d.get("config"), dict):
        raise TokenizerError(f"{path}: not a Keras Tokenizer (expected the JSON of tokenizer.to_json())")
    cfg = dict(d["config"])
    if cfg.get("char_level"):
        raise TokenizerError(f"{path}: a character-level Tokenizer: edgecap decodes words")
    word_index = cfg.get("word_index")
    try:
        word_index = json.loads(word_index) if isinstance(word_index, str) else word_index
    except ValueError:
        word_index = None
    if not isinstance(word_index, dict) or not all(
        isinstance(w, str) and isinstance(i, int) and not isinstance(i, bool) and i >= 1 for w, i in word_index.items()
    ):
        raise TokenizerError(f"{path}: config.word_index must map words to ids >= 1")
    if len(set(word_index.values())) != len(word_index):
        raise TokenizerError(f"{path}: config.word_index gives two words the same id")
    num_words = cfg.get("num_words")
    if num_words is not None and (not isinstance(num_words, int) or isinstance(num_words, bool) or num_words < 2):
        raise TokenizerError(f"{path}: config.num_words must be null or an integer >= 2")
    cfg["word_index"] = word_index
    return cfg


def vocabulary_size(cfg: dict[str, Any]) -> int:
    """The ids a model trained with this Tokenizer must cover: num_words when set, else the largest id + 1."""
    largest = max(cfg["word_index"].values(), default=0)
    return cfg["num_words"] if cfg.get("num_words") is not None else largest + 1


def vocabulary_from_keras_json(path: str | Path, start: str = "startseq", end: str = "endseq") -> Vocabulary:
    """The Tokenizer's ids as an edgecap Vocabulary (module docstring). TokenizerError when the file is not a
    Tokenizer, or the start / end word is missing (or beyond num_words)."""
    cfg = read_keras_tokenizer(path)
    index: dict[str, int] = cfg["word_index"]
    size = vocabulary_size(cfg)
    for role, word in (("start", start), ("end", end)):
        i = index.get(word if not cfg.get("lower", True) else word.lower())
        if i is None:
            raise TokenizerError(
                f"{path}: the {role} token {word!r} is not in the Tokenizer's word_index (pass --{role} WORD: the "
                f"word your captions were wrapped in)"
            )
        if i >= size:
            raise TokenizerError(f"{path}: the {role} token {word!r} has id {i}, beyond num_words {size}")
    tokens = [f"<unused-{i}>" for i in range(size)]
    tokens[0] = PAD
    for word, i in index.items():
        if i < size:
            tokens[i] = word
    oov = cfg.get("oov_token")
    unk = index.get(oov, 0) if isinstance(oov, str) else 0
    low = (lambda w: w.lower()) if cfg.get("lower", True) else (lambda w: w)
    special = {"pad": 0, "bos": index[low(start)], "eos": index[low(end)], "unk": unk if unk < size else 0}
    counts = cfg.get("word_counts")
    try:
        counts = json.loads(counts) if isinstance(counts, str) else {}
    except ValueError:
        counts = {}
    kept = {w: n for w, n in counts.items() if w in index and index[w] < size and isinstance(n, int)}
    return Vocabulary(tokens, kept, 1, special)
