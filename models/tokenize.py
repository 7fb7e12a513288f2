"""Tokenisation with the ``tokenizers`` library (no torch), shared by training and the runtime."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer


def load_tokenizer(path: str | Path, max_length: int) -> Tokenizer:
    """Load ``tokenizer.json`` and set truncation to ``max_length`` tokens, no fixed padding.

    :param path: the ``tokenizer.json`` file.
    :param max_length: longest sequence, special tokens included; longer texts are truncated.
    """
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.enable_truncation(max_length=max_length)
    return tok


def encode_batch(tokenizer: Tokenizer, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Encode ``texts`` padded to the longest of them.

    :returns: ``(input_ids, attention_mask, lengths)``; the first two are ``int64`` arrays of shape
        ``(len(texts), longest)``, ``lengths`` holds each text's token count before padding.
    """
    encs = tokenizer.encode_batch(list(texts))
    lengths = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(encs))
    width = int(lengths.max()) if len(encs) else 0
    ids = np.zeros((len(encs), width), dtype=np.int64)
    mask = np.zeros((len(encs), width), dtype=np.int64)
    for i, e in enumerate(encs):
        n = lengths[i]
        ids[i, :n] = e.ids
        mask[i, :n] = 1
    return ids, mask, lengths
