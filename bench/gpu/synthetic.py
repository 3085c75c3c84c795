"""Synthetic vectors and texts of exact token lengths (see the package docstring for why)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def synthetic_vectors(n: int, dim: int, latent_dim: int, rng: np.random.Generator,
                      chunk: int = 100_000) -> np.ndarray:
    """Normalised float32 vectors: a random projection of `latent_dim` Gaussians plus noise,
    generated in chunks so memory stays at the output's size. latent_dim 0 = i.i.d."""
    out = np.empty((n, dim), np.float32)
    projection = (rng.standard_normal((latent_dim, dim), dtype=np.float32)
                  / np.float32(math.sqrt(latent_dim))) if latent_dim else None
    for start in range(0, n, chunk):
        rows = min(chunk, n - start)
        noise = rng.standard_normal((rows, dim), dtype=np.float32)
        if projection is not None:
            block = rng.standard_normal((rows, latent_dim), dtype=np.float32) @ projection
            block += np.float32(0.5) * noise
        else:
            block = noise
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:start + rows] = block
    return out


def single_token_words(tokenizer: Any, limit: int = 20_000) -> list[str]:
    """Vocabulary pieces that are a whole word and come back as exactly one token: a text of
    n of them, space-separated, is exactly n tokens (+2 for <s> and </s>)."""
    specials = set(tokenizer.all_special_tokens)
    pieces = [piece[1:] for piece in tokenizer.get_vocab()
              if piece.startswith("▁") and len(piece) > 1 and piece not in specials
              and piece[1:].isprintable() and " " not in piece[1:]]
    pieces = sorted(set(pieces))[:limit]
    ids = tokenizer(pieces, add_special_tokens=False)["input_ids"]
    words = [word for word, word_ids in zip(pieces, ids, strict=True) if len(word_ids) == 1]
    if len(words) < 50:
        raise RuntimeError(f"only {len(words)} single-token words in this tokenizer")
    return words


def make_texts(words: list[str], count: int, tokens: int | Sequence[int],
               rng: np.random.Generator) -> list[str]:
    """`count` different texts of `tokens` tokens each (an int, or one length per text)."""
    lengths = [tokens] * count if isinstance(tokens, int) else list(tokens)
    return [" ".join(rng.choice(words, size=max(1, length - 2)).tolist()) for length in lengths]


def token_lengths(tokenizer: Any, texts: Sequence[str], max_length: int) -> np.ndarray:
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    return np.asarray([len(ids) for ids in encoded])
