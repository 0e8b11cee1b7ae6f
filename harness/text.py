"""Caption tokenisation exactly as CLIP4Clip does it (DATASETS.md §1.5, PAPER.md §1.1).

The BPE is OpenAI CLIP's (open_clip ships the vocab in its wheel, so this works offline): text is
ftfy-fixed, HTML-unescaped, whitespace-collapsed and lower-cased. Each sequence is
``<|startoftext|>`` (49406) + the first ``max_words - 2`` BPE tokens + ``<|endoftext|>`` (49407),
zero padded to exactly ``max_words``. We truncate ourselves rather than through open_clip's
``__call__`` so the rule is CLIP4Clip's by construction, whatever open_clip's default becomes.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from open_clip.tokenizer import SimpleTokenizer

__all__ = ["CONTEXT_LENGTH", "EOT_ID", "SOT_ID", "bpe_ids", "tokenize"]

SOT_ID = 49406
EOT_ID = 49407
CONTEXT_LENGTH = 77  # CLIP's positional table


@lru_cache(maxsize=1)
def _tokenizer() -> SimpleTokenizer:
    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer()
    if (tok.sot_token_id, tok.eot_token_id) != (SOT_ID, EOT_ID):  # a different vocab would be silent
        raise RuntimeError(f"open_clip's tokenizer has SOT/EOT {tok.sot_token_id}/{tok.eot_token_id}, "
                           f"expected {SOT_ID}/{EOT_ID} (OpenAI CLIP BPE)")
    return tok


def bpe_ids(text: str) -> list[int]:
    """The BPE ids of one text, without special tokens and without truncation."""
    return list(_tokenizer().encode(text))


def tokenize(texts: str | Sequence[str], max_words: int) -> torch.Tensor:
    """Token ids ``LongTensor[B, max_words]``: SOT + first max_words-2 BPE ids + EOT, zero padded."""
    if isinstance(texts, str):
        texts = [texts]
    if not 2 < max_words <= CONTEXT_LENGTH:
        raise ValueError(f"max_words must be in 3..{CONTEXT_LENGTH}, got {max_words}")
    out = torch.zeros(len(texts), max_words, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = [SOT_ID, *bpe_ids(text)[: max_words - 2], EOT_ID]
        out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out
